"""Payment read model and per-organization payment statistics (seed 000), in Python: the same
documents as the Rust example, byte for byte. A PaymentFailed needs only its error; its amount
and currency are kept when present."""

from refold import Projection, ProjectionError, Update, cents, collection, manifest


class WitWorld(Projection):
    manifest = manifest(
        "payments",
        1,
        event_types=["PaymentProcessed", "PaymentFailed"],
        collections={
            "payments": [
                {"name": "by_organization", "fields": ["organizationId", "-processedAt"]},
                {"name": "by_status", "fields": ["status", "-processedAt"]},
            ],
            "org_stats": [],
        },
    )

    def on_event(self, event):
        meta, data = event.metadata, event.data
        organization = meta.get("organizationId")
        if not isinstance(organization, str):
            raise ProjectionError("invalid-event", "metadata.organizationId is not a string")
        payment = (
            Update()
            .set("paymentId", event.aggregate_id)
            .set("organizationId", organization)
            .set("userId", meta.get("userId"))
            .set("updatedAt", event.timestamp)
            .inc("attempts", 1)
        )
        if event.event_type == "PaymentProcessed":
            payment.set("amount", float(data["amount"])).set("currency", data["currency"])
            payment.set("method", data.get("method")).set("status", "completed")
            payment.set("processedAt", event.timestamp)
            collection("payments").update(event.aggregate_id, payment)
            stats = Update().set("organizationId", organization).inc("processedCount", 1)
            stats.inc(f"processedCents.{data['currency']}", cents(data["amount"]))
        elif event.event_type == "PaymentFailed":
            if data.get("amount") is not None:
                payment.set("amount", float(data["amount"]))
            if data.get("currency") is not None:
                payment.set("currency", data["currency"])
            payment.set("status", "failed").set("error", data["error"])
            collection("payments").update(event.aggregate_id, payment)
            stats = Update().set("organizationId", organization).inc("failedCount", 1)
            stats.inc(f"failuresByReason.{data['error']}", 1)
        else:
            return
        collection("org_stats").update(organization, stats)
