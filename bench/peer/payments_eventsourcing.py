"""Refold's peer in the benchmark suite: the payment read model (seed 000) folded by the Python
`eventsourcing` library's projection runner (eventsourcing 9.5), into a view on SQLite.

Usage: payments_eventsourcing.py REFOLD_STORE_FILE WORK_FOLDER

1. Reads the payment events (PaymentProcessed, PaymentFailed) of a Refold embedded store, in
   position order, and records them in an eventsourcing application (set-up, not timed). The
   application's event store is the library's in-memory one (POPO): its SQLite event store does
   not support the subscriptions a ProjectionRunner needs in 9.5, and reading from memory only
   flatters the peer.
2. Times a ProjectionRunner that folds them into a materialised view (SQLite tables `payments`
   and `org_stats`, same documents as Refold's payment projection) with its tracking record
   committed in the same transaction as each event's writes: the library's exactly-once
   projection pattern.
3. Prints one JSON object: events, seconds, events per second, documents written.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from eventsourcing.application import Application
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import get_topic


@dataclass(frozen=True)
class PaymentProcessed(DomainEvent):
    payment_id: str
    organization_id: str
    user_id: str | None
    amount: float
    currency: str
    method: str | None


@dataclass(frozen=True)
class PaymentFailed(DomainEvent):
    payment_id: str
    organization_id: str
    user_id: str | None
    # A failure may carry its error alone (seed 000): amount and currency are kept when present.
    amount: float | None
    currency: str | None
    error: str


class PaymentsApp(Application):
    """Every instance shares one in-memory event store, so the runner's own instance sees the
    events loaded before it started."""

    shared_recorder = None

    def construct_recorder(self):
        if PaymentsApp.shared_recorder is None:
            PaymentsApp.shared_recorder = super().construct_recorder()
        return PaymentsApp.shared_recorder


def iso(ts: datetime) -> dict:
    return {"$date": ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"}


class PaymentsView(SQLiteTrackingRecorder):
    def construct_create_table_statements(self) -> list[str]:
        statements = super().construct_create_table_statements()
        for table in ("payments", "org_stats"):
            statements.append(
                f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID"
            )
        return statements

    @staticmethod
    def _get(c, table: str, key: str) -> dict:
        c.execute(f"SELECT body FROM {table} WHERE id = ?", (key,))
        row = c.fetchone()
        return json.loads(row[0]) if row else {"_id": key}

    @staticmethod
    def _put(c, table: str, key: str, doc: dict) -> None:
        c.execute(
            f"INSERT INTO {table} (id, body) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            (key, json.dumps(doc)),
        )

    def apply(self, event: PaymentProcessed | PaymentFailed, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as c:
            payment = self._get(c, "payments", event.payment_id)
            stats = self._get(c, "org_stats", event.organization_id)
            payment.update(
                paymentId=event.payment_id,
                organizationId=event.organization_id,
                userId=event.user_id,
                updatedAt=iso(event.timestamp),
            )
            if event.amount is not None:
                payment["amount"] = event.amount
            if event.currency is not None:
                payment["currency"] = event.currency
            payment["attempts"] = payment.get("attempts", 0) + 1
            stats["organizationId"] = event.organization_id
            if isinstance(event, PaymentProcessed):
                payment.update(method=event.method, status="completed", processedAt=iso(event.timestamp))
                stats["processedCount"] = stats.get("processedCount", 0) + 1
                cents = stats.setdefault("processedCents", {})
                cents[event.currency] = cents.get(event.currency, 0) + round(event.amount * 100)
            else:
                payment.update(status="failed", error=event.error)
                stats["failedCount"] = stats.get("failedCount", 0) + 1
                reasons = stats.setdefault("failuresByReason", {})
                reasons[event.error] = reasons.get(event.error, 0) + 1
            self._put(c, "payments", event.payment_id, payment)
            self._put(c, "org_stats", event.organization_id, stats)
            self._insert_tracking(c, tracking)

    def count(self, table: str) -> int:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT count(*) FROM {table}")
            return c.fetchone()[0]


class PaymentsProjection(Projection[PaymentsView]):
    topics = (get_topic(PaymentProcessed), get_topic(PaymentFailed))

    def process_event(self, domain_event, tracking: Tracking) -> None:
        self.view.apply(domain_event, tracking)


def load(refold_db: str, app: PaymentsApp) -> int:
    source = sqlite3.connect(f"file:{refold_db}?mode=ro", uri=True)
    rows = source.execute(
        "SELECT aggregate_id, event_type, version, timestamp_ms, data, metadata FROM events "
        "WHERE event_type IN ('PaymentProcessed', 'PaymentFailed') ORDER BY position"
    )
    count, chunk = 0, []
    for aggregate_id, event_type, version, timestamp_ms, data, metadata in rows:
        data, metadata = json.loads(data), json.loads(metadata)
        common = dict(
            originator_id=uuid.uuid5(uuid.NAMESPACE_URL, aggregate_id),
            originator_version=version,
            timestamp=datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc),
            payment_id=aggregate_id,
            organization_id=metadata["organizationId"],
            user_id=metadata.get("userId"),
            amount=data.get("amount"),
            currency=data.get("currency"),
        )
        if event_type == "PaymentProcessed":
            event = PaymentProcessed(**common, method=data.get("method"))
        else:
            event = PaymentFailed(**common, error=data["error"])
        chunk.append(app.mapper.to_stored_event(event))
        count += 1
        if len(chunk) == 1000:
            app.recorder.insert_events(chunk)
            chunk = []
    if chunk:
        app.recorder.insert_events(chunk)
    return count


def main() -> None:
    refold_db, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    env = {
        "PAYMENTSAPP_PERSISTENCE_MODULE": "eventsourcing.popo",
        "PAYMENTSPROJECTION_PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "PAYMENTSPROJECTION_SQLITE_DBNAME": os.path.join(work, "view.db"),
    }
    app = PaymentsApp(env)
    events = load(refold_db, app)
    last = app.recorder.max_notification_id()
    started = time.perf_counter()
    with ProjectionRunner(
        application_class=PaymentsApp,
        projection_class=PaymentsProjection,
        view_class=PaymentsView,
        env=env,
    ) as runner:
        runner.wait(last, timeout=3600)
        seconds = time.perf_counter() - started
        payments, stats = runner.view.count("payments"), runner.view.count("org_stats")
    print(json.dumps({
        "library": "eventsourcing 9.5 (Python), ProjectionRunner over SQLite",
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "payments_documents": payments,
        "org_stats_documents": stats,
    }))


if __name__ == "__main__":
    main()
