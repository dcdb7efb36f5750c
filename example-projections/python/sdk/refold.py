"""A small layer over the Refold contract for Python projections (componentize-py).

A projection is a class ``WitWorld(Projection)`` with a ``manifest`` and an ``on_event(event)``
method; this module decodes events, offers the projection's collections and update operators,
and turns failures into the contract's errors. Documents come out as the Rust SDK writes them.

Time and randomness are deterministic: ``time.time()`` reads the timestamp of the event being
handled, ``os.urandom`` (and ``uuid4``) draw from a stream the host seeds per projection and
event, and this layer seeds the ``random`` module per projection and event, so a replay gives
exactly what live processing gave.
"""

import json
import math
import random
from datetime import datetime, timedelta, timezone

from componentize_py_types import Err
from wit_world.imports import collections as _collections
from wit_world.imports import log as _log
from wit_world.imports import types as _types

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class ProjectionError(Exception):
    """Raised by ``on_event`` to fail the event; the host applies the failure policy.

    ``kind`` is one of ``invalid-event``, ``invalid-state``, ``host`` and ``other``.
    """

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


_KINDS = {
    "invalid-event": _types.ErrorKind.INVALID_EVENT,
    "invalid-state": _types.ErrorKind.INVALID_STATE,
    "host": _types.ErrorKind.HOST,
    "other": _types.ErrorKind.OTHER,
}


class Event:
    """One event: ``position``, ``id``, ``aggregate_id``, ``aggregate_type``, ``event_type``,
    ``version``, ``timestamp_ms``, and ``data`` and ``metadata`` decoded as dicts."""

    def __init__(self, raw):
        self.position = raw.position
        self.id = raw.id
        self.aggregate_id = raw.aggregate_id
        self.aggregate_type = raw.aggregate_type
        self.event_type = raw.event_type
        self.version = raw.version
        self.timestamp_ms = raw.timestamp_ms
        self._data, self._metadata = raw.data, raw.metadata
        self._iso8601 = None

    @property
    def data(self):
        return _decode(self._data, "data")

    @property
    def metadata(self):
        return _decode(self._metadata, "metadata")

    @property
    def iso8601(self):
        """``YYYY-MM-DDTHH:MM:SS.mmmZ`` of the event's time."""
        if self._iso8601 is None:
            when = _EPOCH + timedelta(milliseconds=self.timestamp_ms)
            self._iso8601 = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.timestamp_ms % 1000:03d}Z"
        return self._iso8601

    @property
    def timestamp(self):
        """The event's time as a date value (``{"$date": ...}``)."""
        return {"$date": self.iso8601}


def _decode(text, what):
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ProjectionError("invalid-event", f"event {what} is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ProjectionError("invalid-event", f"event {what} is not a JSON object")
    return value


# One encoder for every call: `json.dumps` with these options would make one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _json(value):
    return _ENCODER.encode(value)


class Update:
    """Update operators, grouped by operator in the order they are first used."""

    def __init__(self):
        self.ops = {}

    def _with(self, op, path, value):
        self.ops.setdefault(op, {})[path] = value
        return self

    def set(self, path, value):
        return self._with("$set", path, value)

    def unset(self, path):
        return self._with("$unset", path, "")

    def inc(self, path, by):
        return self._with("$inc", path, by)

    def push(self, path, value):
        return self._with("$push", path, value)

    def add_to_set(self, path, value):
        return self._with("$addToSet", path, value)

    def pull(self, path, value):
        return self._with("$pull", path, value)


def _call(function, *args):
    try:
        return function(*args)
    except Err as error:
        refusal = error.value
        raise ProjectionError("host", f"{type(refusal).__name__.split('_')[-1]}: {refusal.value}") from None


class Collection:
    """One of the projection's collections. Refusals raise ``ProjectionError('host', ...)``."""

    def __init__(self, name):
        self.name = name

    def get(self, id):
        text = _call(_collections.get, self.name, id)
        return None if text is None else json.loads(text)

    def put(self, id, document):
        _call(_collections.put, self.name, id, _json(document))

    def delete(self, id):
        return _call(_collections.delete, self.name, id)

    def update(self, id, update, upsert=True):
        """Apply ``update``; a missing document is created (or left absent with
        ``upsert=False``). Returns whether a document exists afterwards."""
        return _call(_collections.update, self.name, id, _json(update.ops), upsert)

    def update_existing(self, id, update):
        return self.update(id, update, upsert=False)


def collection(name):
    return Collection(name)


def manifest(name, version, collections, event_types=(), aggregate_types=()):
    """A manifest: ``collections`` maps each name to its indexes, each
    ``{"name": ..., "fields": ["field", "-descending"], "unique": False}``."""

    def keys(fields):
        return [
            _types.IndexKey(field=f[1:], descending=True) if f.startswith("-") else _types.IndexKey(field=f, descending=False)
            for f in fields
        ]

    return _types.Manifest(
        name=name,
        version=version,
        event_types=list(event_types),
        aggregate_types=list(aggregate_types),
        collections=[
            _types.CollectionSpec(
                name=collection,
                indexes=[
                    _types.IndexSpec(name=i["name"], keys=keys(i["fields"]), unique=i.get("unique", False))
                    for i in indexes
                ],
            )
            for collection, indexes in collections.items()
        ],
        batch_size=None,
        failure_policy=None,
    )


def cents(amount):
    """Integer cents of an amount, rounded half away from zero as Rust's ``f64::round``."""
    scaled = abs(amount * 100)
    whole = math.floor(scaled)
    rounded = whole + 1 if scaled - whole >= 0.5 else whole
    return int(math.copysign(rounded, amount))


def log(message, level="info"):
    """Write a line to the host's log, tagged with the projection and the event's position."""
    _log.write(getattr(_log.Level, level.upper()), message)


class Projection:
    """Base of a projection: set ``manifest`` (from :func:`manifest`) and define
    ``on_event(self, event)``."""

    manifest = None

    def describe(self):
        return self.manifest

    def handle(self, events):
        for raw in events:
            # The `random` module keeps its own state across events: seeded per projection and
            # event, it draws the same numbers live and on a replay, however events are batched.
            random.seed(f"{self.manifest.name}/{raw.position}")
            try:
                self.on_event(Event(raw))
            except ProjectionError as error:
                raise Err(_types.HandleError(position=raw.position, kind=_KINDS[error.kind], message=error.message))

    def on_event(self, event):
        raise NotImplementedError
