"""Webhooks: every event POSTed, in order, to the URLs an admin configured.

A delivery is the event as JSON, with `X-Tern-Event-Id`, `X-Tern-Event`, `X-Tern-Timestamp`
(seconds since the epoch) and `X-Tern-Signature: sha256=<hex HMAC-SHA256 of
"<timestamp>.<body>" under the webhook's secret>`. Any 2xx answer delivers it; anything else
(or no answer within DELIVERY_TIMEOUT) is retried after WEBHOOK_BACKOFF_SECONDS, doubling
up to MAX_BACKOFF_SECONDS, and no later event goes to that webhook before it: a receiver
sees each webhook's events in id order, at least once (twice only if a server dies between
its delivery and its record of it).

`deliver_due` runs in a background thread of every server process (`start_background`).
Several processes and instances share the work without delivering twice: a process claims a
webhook by a conditional UPDATE of `claimed_until` (a lease longer than one round of
deliveries) and delivers its events alone; on PostgreSQL it first picks candidates with
SELECT ... FOR UPDATE SKIP LOCKED, so processes do not queue behind each other's rows.
"""
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from datetime import timedelta
from urllib.parse import urlsplit

import requests
from flask import Flask, current_app
from sqlalchemy import or_, select, update

from .. import audit
from ..database import db
from ..errors import ApiError
from ..models import Event, Webhook, utcnow
from . import service as events

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT = (5, 10)  # seconds: connect, answer
LEASE_SECONDS = 60  # longer than a round: ROUND_SECONDS plus one delivery's timeout
ROUND_SECONDS = 30
MAX_BACKOFF_SECONDS = 600
BATCH = 100
LOOP_SECONDS = 1.0
PURGE_EVERY_SECONDS = 300


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                                hashlib.sha256).hexdigest()


# -- management -------------------------------------------------------------------------------


def create(url: str, secret: str | None, types: list[str] | None) -> tuple[Webhook, str]:
    """A webhook receiving the events from now on; returns it and its secret (generated
    unless given), which is shown once."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2048:
        raise ApiError(400, "url must be an http:// or https:// URL of at most 2048 characters")
    if secret is not None and not 16 <= len(secret) <= 256:
        raise ApiError(400, "secret must have 16 to 256 characters")
    if types is not None and (not types or not all(isinstance(t, str) and t for t in types)):
        raise ApiError(400, "types must be a non-empty list of event types")
    secret = secret or secrets.token_urlsafe(32)
    webhook = Webhook(url=url, secret=secret, types=types, last_event_id=events.last_id())
    db.session.add(webhook)
    db.session.flush()
    audit.record("webhook.create", webhook.id, url=url, types=types)
    db.session.commit()
    return webhook, secret


def list_webhooks() -> list[Webhook]:
    return db.session.query(Webhook).order_by(Webhook.created_at, Webhook.id).all()


def get(webhook_id: str) -> Webhook:
    webhook = db.session.get(Webhook, webhook_id)
    if webhook is None:
        raise ApiError(404, f"no webhook {webhook_id}")
    return webhook


def delete(webhook_id: str) -> None:
    db.session.delete(get(webhook_id))
    audit.record("webhook.delete", webhook_id)
    db.session.commit()


def webhook_view(webhook: Webhook) -> dict:
    """Everything but the secret."""
    return {"id": webhook.id, "url": webhook.url, "types": webhook.types,
            "created_at": webhook.created_at.isoformat(),
            "last_event_id": webhook.last_event_id, "delivered": webhook.delivered,
            "failures": webhook.failures, "last_error": webhook.last_error,
            "next_attempt_at": webhook.next_attempt_at.isoformat()}


# -- delivery ---------------------------------------------------------------------------------


def deliver_due() -> int:
    """One round: claim each webhook that is due and free, and deliver its waiting events.
    Returns how many were delivered."""
    delivered = 0
    for webhook_id in _claim_due():
        delivered += _deliver(webhook_id)
    return delivered


def _claim_due() -> list[str]:
    now = utcnow()
    free = or_(Webhook.claimed_until.is_(None), Webhook.claimed_until < now)
    candidates = db.session.execute(
        select(Webhook.id).where(Webhook.next_attempt_at <= now, free)
        .with_for_update(skip_locked=True)).scalars().all()
    claimed = []
    for webhook_id in candidates:
        taken = db.session.execute(
            update(Webhook).where(Webhook.id == webhook_id, free)
            .values(claimed_until=now + timedelta(seconds=LEASE_SECONDS)))
        if taken.rowcount == 1:
            claimed.append(webhook_id)
    db.session.commit()
    return claimed


def _deliver(webhook_id: str) -> int:
    """Deliver the claimed webhook's events in order until one fails, none is left or the
    round's time is up; record each outcome; release the claim."""
    started, delivered = time.monotonic(), 0
    webhook = db.session.get(Webhook, webhook_id)
    try:
        while webhook is not None and time.monotonic() - started < ROUND_SECONDS:
            pending = (db.session.query(Event).filter(Event.id > webhook.last_event_id)
                       .order_by(Event.id).limit(BATCH).all())
            db.session.commit()  # no transaction stays open while a receiver answers
            if not pending:
                break
            for event in pending:
                if webhook.types is None or event.type in webhook.types:
                    error = _post(webhook, event)
                    if error is not None:
                        _failed(webhook, error)
                        return delivered
                    delivered += 1
                    webhook.delivered += 1
                webhook.last_event_id, webhook.failures, webhook.last_error = event.id, 0, None
                db.session.commit()
                if time.monotonic() - started >= ROUND_SECONDS:
                    break
    finally:
        if webhook is not None:
            db.session.execute(update(Webhook).where(Webhook.id == webhook_id)
                               .values(claimed_until=None))
            db.session.commit()
    return delivered


def _post(webhook: Webhook, event: Event) -> str | None:
    """Deliver one event; None when the receiver took it, else why not."""
    body = json.dumps(events.event_view(event), separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": "tern-server",
               "X-Tern-Event-Id": str(event.id), "X-Tern-Event": event.type,
               "X-Tern-Timestamp": timestamp,
               "X-Tern-Signature": signature(webhook.secret, timestamp, body)}
    try:
        response = requests.post(webhook.url, data=body, headers=headers,
                                 timeout=DELIVERY_TIMEOUT, allow_redirects=False)
    except requests.RequestException as error:
        return f"{type(error).__name__}: {error}"[:1000]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


def _failed(webhook: Webhook, error: str) -> None:
    webhook.failures += 1
    backoff = min(current_app.config["WEBHOOK_BACKOFF_SECONDS"] * 2 ** (webhook.failures - 1),
                  MAX_BACKOFF_SECONDS)
    webhook.next_attempt_at = utcnow() + timedelta(seconds=backoff)
    webhook.last_error = error
    db.session.commit()


# -- the background loop ----------------------------------------------------------------------


def start_background(app: Flask) -> threading.Thread:
    """Deliver webhooks and purge old events in a daemon thread of this process, for as long
    as it lives (every `serve` worker runs one)."""
    thread = threading.Thread(target=_loop, args=(app,), name="tern-webhooks", daemon=True)
    thread.start()
    return thread


def _loop(app: Flask) -> None:
    next_purge = 0.0
    while True:
        try:
            with app.app_context():
                deliver_due()
                if time.monotonic() >= next_purge:
                    events.purge()
                    next_purge = time.monotonic() + PURGE_EVERY_SECONDS
        except Exception:  # the database away for a moment: try again next round
            log.exception("webhook delivery round failed")
        time.sleep(LOOP_SECONDS)
