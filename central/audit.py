"""The audit log: one row for every write made through the API, and for every write refused.

A row says who (user name and role), when (UTC), what (``action`` such as ``vee.resolve``,
the HTTP method and route template), on which object (type and id), the state before and
after as a small summary (never a password or key), the outcome (``ok`` or ``denied``) and
the request id the client saw in ``X-Request-ID``, so an operator can join a complaint, a
log line and the row.

A successful write's row is written in the same transaction as the write, so there is never
a change without its row nor a row without its change. A refused write (403) gets its own
transaction: there is nothing else to commit. IEC 62351-14 asks for security events as a
first-class audit stream; refusals are those events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from central.db.auth_tables import audit_log

__all__ = ["OUTCOMES", "AuditEntry", "list_entries", "record"]

OUTCOMES: Final = ("ok", "denied")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str | None
    actor_role: str | None
    action: str
    outcome: str
    method: str | None
    route: str | None
    object_type: str | None
    object_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None


def record(
    conn: Connection,
    *,
    actor: str | None,
    actor_role: str | None,
    action: str,
    outcome: str = "ok",
    method: str | None = None,
    route: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    request_id: str | None = None,
    at: datetime | None = None,
) -> int:
    """Write one row in ``conn``'s transaction; its id."""
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome {outcome!r}: expected one of {', '.join(OUTCOMES)}")
    return int(
        conn.execute(
            insert(audit_log)
            .values(
                at=at or datetime.now(UTC),
                actor=actor,
                actor_role=actor_role,
                action=action,
                outcome=outcome,
                method=method,
                route=route,
                object_type=object_type,
                object_id=None if object_id is None else str(object_id)[:200],
                before=before,
                after=after,
                request_id=request_id,
            )
            .returning(audit_log.c.id)
        ).scalar_one()
    )


def list_entries(
    conn: Connection,
    *,
    actor: str | None = None,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Rows newest first, ``limit`` of them with an id below ``before_id``; ``since`` is
    inclusive, ``until`` exclusive."""
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if actor is not None:
        query = query.where(audit_log.c.actor == actor)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    if object_type is not None:
        query = query.where(audit_log.c.object_type == object_type)
    if object_id is not None:
        query = query.where(audit_log.c.object_id == object_id)
    if since is not None:
        query = query.where(audit_log.c.at >= since)
    if until is not None:
        query = query.where(audit_log.c.at < until)
    if before_id is not None:
        query = query.where(audit_log.c.id < before_id)
    return [AuditEntry(**row._mapping) for row in conn.execute(query).all()]
