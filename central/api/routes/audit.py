"""The audit log (admins and supervisors): who changed what, when, from where."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Query

from central import audit as library
from central.api.deps import Conn
from central.api.routing import (
    API_PREFIX,
    After,
    ApiRouter,
    Limit,
    Moment,
    Page,
    PublicModel,
    decode_cursor,
    encode_cursor,
)

__all__ = ["router"]

router = ApiRouter(prefix=f"{API_PREFIX}/audit", tags=["audit"])


class AuditEntryPublic(PublicModel):
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


@router.get("", roles=frozenset({"admin", "supervisor"}), response_model=Page[AuditEntryPublic])
def list_audit(
    conn: Conn,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. vee.resolve")] = None,
    object_type: Annotated[str | None, Query(max_length=32)] = None,
    object_id: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[
        Moment | None, Query(description="From (inclusive). With a time zone.")
    ] = None,
    until: Annotated[Moment | None, Query(description="To (exclusive). With a time zone.")] = None,
    limit: Limit = 100,
    after: After = None,
) -> Page[AuditEntryPublic]:
    """Audit rows, newest first."""
    cursor = decode_cursor(after, int)
    rows = library.list_entries(
        conn,
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        since=since,
        until=until,
        before_id=cursor[0] if cursor else None,
        limit=limit,
    )
    next_cursor = encode_cursor(rows[-1].id) if len(rows) == limit else None
    return Page[AuditEntryPublic](
        items=[AuditEntryPublic.model_validate(row) for row in rows], next=next_cursor
    )
