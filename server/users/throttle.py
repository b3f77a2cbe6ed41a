"""Throttling failed logins, per account from one source, per source and per account.

Failures are rows in `login_failures`, so every gunicorn worker and every instance on one
database counts the same ones. A key is blocked once it has `failures` failures within its
`window`, until the oldest of them ages out (then one more try, and so on): a sliding window.
Concurrent guesses may each pass the check before the others are written, so a burst can
get a few tries past a limit (at most the requests served at once), never a steady rate.

The limits (the design is in server/README.md):
- the account from one source: the brute force itself; blocks only the guesser's address;
- the source: one address spraying many accounts;
- the account from everywhere: many addresses guessing one password, kept loose and short
  (a minute), so that it caps their rate without locking the real user out for long.
"""
from dataclasses import dataclass
from datetime import timedelta
from math import ceil

from sqlalchemy import delete, select

from ..database import db
from ..errors import ApiError
from ..models import LoginFailure, utcnow


@dataclass(frozen=True)
class Limit:
    kind: str
    failures: int
    window: timedelta

    def key(self, email: str, source: str) -> str:
        return {"account+source": f"account+source:{email}|{source}",
                "source": f"source:{source}", "account": f"account:{email}"}[self.kind]


LIMITS = (Limit("account+source", 5, timedelta(minutes=5)),
          Limit("source", 30, timedelta(minutes=5)),
          Limit("account", 30, timedelta(minutes=1)))
KEEP = max(limit.window for limit in LIMITS)


def check(email: str, source: str) -> None:
    """Refuse (429 with Retry-After) a login whose account or source is blocked."""
    now = utcnow()
    for limit in LIMITS:
        key = limit.key(email, source)
        # the limit-th newest failure within the window: blocked until it ages out
        blocking = db.session.scalar(
            select(LoginFailure.at)
            .where(LoginFailure.key == key, LoginFailure.at > now - limit.window)
            .order_by(LoginFailure.at.desc()).offset(limit.failures - 1).limit(1))
        if blocking is not None:
            seconds = max(1, ceil((blocking + limit.window - now).total_seconds()))
            raise ApiError(429, f"too many failed logins; try again in {seconds} s",
                           retry_after=seconds)


def record_failure(email: str, source: str) -> None:
    """Count a failed login under each key (in the caller's transaction), and forget
    failures older than every window."""
    now = utcnow()
    db.session.execute(delete(LoginFailure).where(LoginFailure.at < now - KEEP))
    db.session.add_all(LoginFailure(key=limit.key(email, source), at=now) for limit in LIMITS)


def forget_failures(email: str, source: str) -> None:
    """After a successful login: that account from that source starts afresh."""
    db.session.execute(delete(LoginFailure).where(
        LoginFailure.key == LIMITS[0].key(email, source)))
