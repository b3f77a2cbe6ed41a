"""The audit log: one row per management action, written in the same transaction."""
from flask import g

from .database import db
from .models import AuditEntry


def record(action: str, target: str, actor: str | None = None, **detail) -> None:
    """`actor`: who, when no one is logged in (e.g. `source:<address>` of a failed login)."""
    principal = g.get("principal")
    actor = actor or (f"{principal.kind}:{principal.name}" if principal else "system")
    db.session.add(AuditEntry(actor=actor, action=action, target=target, detail=detail))


def entries(limit: int, offset: int) -> list[dict]:
    rows = (db.session.query(AuditEntry).order_by(AuditEntry.id.desc())
            .limit(limit).offset(offset))
    return [{"id": row.id, "at": row.at.isoformat(), "actor": row.actor, "action": row.action,
             "target": row.target, "detail": row.detail} for row in rows]
