"""Events: what happened to deployments and devices, in a table every instance shares.

`publish(type, data)` adds an event to the caller's transaction, so the event exists if and
only if the change does. Ids must grow in commit order, or a reader resuming after id N could
miss an N-1 committed later: on PostgreSQL `publish` takes a transaction-scoped advisory
lock, so event-publishing transactions commit one at a time from that point (callers publish
just before they commit); SQLite has a single writer anyway.

Readers: the server-sent events stream (`stream`, one thread per open stream, bounded) and
the webhooks (`events.webhooks`). Events older than EVENT_RETENTION_DAYS are deleted.
"""
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

from flask import Flask, current_app
from sqlalchemy import delete, select, text

from ..database import db
from ..errors import ApiError
from ..models import Event, utcnow

# pg_advisory_xact_lock key ("evnt"): one event-publishing transaction commits at a time.
EVENTS_LOCK = 0x65766E74
READ_BATCH = 500
HEARTBEAT_SECONDS = 5.0  # a write: also finds a client gone whose closing was not seen
RECONNECT_MILLISECONDS = 2000

# What the server publishes.
DEPLOYMENT_CREATED = "deployment.created"
DEPLOYMENT_PHASE_STARTED = "deployment.phase_started"
DEPLOYMENT_PAUSED = "deployment.paused"
DEPLOYMENT_RESUMED = "deployment.resumed"
DEPLOYMENT_FINISHED = "deployment.finished"
DEPLOYMENT_ABORTED = "deployment.aborted"
DEPLOYMENT_DEVICE_ADDED = "deployment.device_added"  # a device joined its dynamic group
DEPLOYMENT_DEVICE_STATUS = "deployment.device_status"  # progress: downloading, installing...
DEPLOYMENT_DEVICE_FINISHED = "deployment.device_finished"
DEVICE_ACCEPTED = "device.accepted"
DEVICE_DECOMMISSIONED = "device.decommissioned"


def publish(type: str, data: dict) -> None:
    """Add an event to the current transaction; the caller commits it with its change."""
    session = db.session
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENTS_LOCK})
    session.add(Event(type=type, data=data))
    session.flush()


def event_view(event: Event) -> dict:
    return {"id": event.id, "at": event.at.isoformat(), "type": event.type, "data": event.data}


def read_after(after: int, limit: int = READ_BATCH) -> list[dict]:
    """Events with ids above `after`, oldest first, on a connection of their own: a stream
    holds no transaction between its reads."""
    with db.engine(current_app).connect() as connection:
        rows = connection.execute(select(Event.id, Event.at, Event.type, Event.data)
                                  .where(Event.id > after).order_by(Event.id).limit(limit))
        return [{"id": row.id, "at": row.at.isoformat(), "type": row.type, "data": row.data}
                for row in rows]


def last_id() -> int:
    return db.session.query(Event.id).order_by(Event.id.desc()).limit(1).scalar() or 0


def purge(now=None) -> int:
    """Delete the events older than EVENT_RETENTION_DAYS; return how many."""
    cutoff = (now or utcnow()) - timedelta(days=current_app.config["EVENT_RETENTION_DAYS"])
    deleted = db.session.execute(delete(Event).where(Event.at < cutoff)).rowcount
    db.session.commit()
    return deleted


# -- the server-sent events stream ------------------------------------------------------------


def init_app(app: Flask) -> None:
    app.extensions["tern.event_streams"] = threading.BoundedSemaphore(
        app.config["EVENT_STREAMS"])


def open_stream(after: int, wanted: Callable[[dict], bool],
                still_allowed: Callable[[], bool],
                client_gone: Callable[[], bool] = lambda: False) -> Iterator[str]:
    """A `text/event-stream` body: events after `after` that are `wanted`, as they are
    committed, and a heartbeat (re-checking `still_allowed`: a revoked token ends its stream)
    every HEARTBEAT_SECONDS. A stream holds one of the worker's threads: at most
    EVENT_STREAMS per process are open at once (503 beyond), each for at most
    EVENT_STREAM_SECONDS, after which the browser's EventSource reconnects on its own,
    resuming from its Last-Event-ID. `client_gone` is asked at each read of the table (every
    EVENT_POLL_SECONDS): a page the browser left frees its slot within that, not at the
    next heartbeat's failed write."""
    slots = current_app.extensions["tern.event_streams"]
    if not slots.acquire(blocking=False):
        raise ApiError(503, "too many event streams are open; retry later", retry_after=5)
    db.session.close()  # nothing of the request's own transaction stays open
    config = current_app.config
    return _stream(after, wanted, still_allowed, client_gone, slots,
                   config["EVENT_STREAM_SECONDS"], config["EVENT_POLL_SECONDS"])


def _stream(after: int, wanted, still_allowed, client_gone, slots, lifetime: float,
            poll: float) -> Iterator[str]:
    try:
        started = time.monotonic()
        heartbeat = started + HEARTBEAT_SECONDS
        yield f"retry: {RECONNECT_MILLISECONDS}\n\n"
        while time.monotonic() - started < lifetime and not client_gone():
            events = read_after(after)
            for event in events:
                after = event["id"]
                if wanted(event):
                    yield (f"id: {event['id']}\nevent: {event['type']}\n"
                           f"data: {json.dumps(event, separators=(',', ':'))}\n\n")
            if time.monotonic() >= heartbeat:
                if not still_allowed():
                    return
                # the id moves the client's Last-Event-ID past events it did not want
                yield f"id: {after}\n: heartbeat\n\n"
                heartbeat = time.monotonic() + HEARTBEAT_SECONDS
            if len(events) < READ_BATCH:
                time.sleep(poll)
    finally:
        slots.release()


def resume_point(last_event_id: str | None, after: str | None) -> int:
    """Where a stream starts: the Last-Event-ID header (a reconnecting EventSource), else the
    `after` query argument, else now (only events from here on)."""
    for value in (last_event_id, after):
        if value is not None and value != "":
            if not value.isdigit() or len(value) > 18:
                raise ApiError(400, "Last-Event-ID and 'after' must be event ids")
            return int(value)
    return last_id()
