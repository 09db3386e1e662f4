"""VEE exceptions (list, one, resolve, override with a reason) and the rule table."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import Field

from central.api import services
from central.api.deps import AuditLog, Conn, CurrentUser
from central.api.errors import NotFound
from central.api.routing import (
    ALL_ROLES,
    API_PREFIX,
    After,
    ApiRouter,
    Limit,
    Moment,
    Page,
    PublicModel,
    WriteModel,
    decode_cursor,
    encode_cursor,
)

__all__ = ["router"]

router = ApiRouter(prefix=f"{API_PREFIX}/vee", tags=["vee"])

READERS = frozenset({"collection_om", "billing", "supervisor", "read_only", "admin"})
#: Who closes exceptions: the reading & billing team and the supervisor (approver).
DECIDERS = frozenset({"billing", "supervisor"})
ExceptionId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The exception's id.")]
Reason = Annotated[
    str, Field(min_length=3, max_length=2000, description="Why: kept with the exception.")
]


class VeeExceptionPublic(PublicModel):
    id: int
    meter: str
    obis: str | None
    ts: datetime
    day: date | None
    rule: str
    severity: str
    value_before: Decimal | None
    value_after: Decimal | None
    detail: dict[str, Any]
    raised_at: datetime
    status: str
    resolved_by: str | None
    resolved_at: datetime | None
    reason: str | None


class ResolveRequest(WriteModel):
    reason: Reason


class OverrideRequest(WriteModel):
    reason: Reason
    value: Decimal | None = Field(
        None,
        max_digits=20,
        decimal_places=6,
        description='Replace the reading\'s value (send it as a string, e.g. "1234.5"); '
        "leave out to accept the reading as it is.",
    )


class RuleParameterPublic(PublicModel):
    name: str
    kind: str
    unit: str | None
    description: str
    default: str
    value: str
    history: list[dict[str, Any]]


class RulePublic(PublicModel):
    id: str
    name: str
    scope: str
    severity: str
    logic: str
    source: str
    parameters: list[RuleParameterPublic]


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": row["status"],
        "meter": row["meter"],
        "rule": row["rule"],
        "value_after": None if row["value_after"] is None else str(row["value_after"]),
        "reason": row["reason"],
    }


@router.get("/exceptions", roles=READERS, response_model=Page[VeeExceptionPublic])
def list_exceptions(
    conn: Conn,
    user: CurrentUser,
    meter: Annotated[str | None, Query(max_length=64)] = None,
    rule: Annotated[str | None, Query(max_length=8, description="e.g. V4")] = None,
    status: Literal["open", "resolved", "overridden"] | None = None,
    since: Annotated[
        Moment | None, Query(description="Data time from (inclusive). With a time zone.")
    ] = None,
    until: Annotated[
        Moment | None, Query(description="Data time to (exclusive). With a time zone.")
    ] = None,
    limit: Limit = 100,
    after: After = None,
) -> Page[VeeExceptionPublic]:
    """Exceptions oldest first. A scoped user sees those of their meters (a page may then
    hold fewer than `limit`: follow `next` until it is null)."""
    from central.vee import list_exceptions as library_list

    cursor = decode_cursor(after, int)
    rows = services.call(
        library_list,
        conn,
        meter=meter,
        rule=rule,
        status=status,
        since=since,
        until=until,
        after_id=cursor[0] if cursor else None,
        limit=limit,
    )
    next_cursor = encode_cursor(rows[-1]["id"]) if len(rows) == limit else None
    visible = user.scope.filter_rows(conn, rows, meter=lambda row: row["meter"])
    return Page[VeeExceptionPublic](
        items=[VeeExceptionPublic.model_validate(row) for row in visible], next=next_cursor
    )


def _exception(conn: Conn, exception_id: int) -> dict[str, Any]:
    from central.vee import get_exception

    row = services.call(get_exception, conn, exception_id)
    if row is None:
        raise NotFound(f"VEE exception {exception_id} not found")
    return row


@router.get("/exceptions/{exception_id}", roles=READERS, response_model=VeeExceptionPublic)
def get_exception(conn: Conn, exception_id: ExceptionId) -> VeeExceptionPublic:
    """One exception: the rule, its severity, the value before VEE, its detail."""
    return VeeExceptionPublic.model_validate(_exception(conn, exception_id))


@router.post(
    "/exceptions/{exception_id}/resolve",
    roles=DECIDERS,
    action="vee.resolve",
    response_model=VeeExceptionPublic,
)
def resolve(
    conn: Conn,
    user: CurrentUser,
    audit: AuditLog,
    exception_id: ExceptionId,
    body: ResolveRequest,
) -> VeeExceptionPublic:
    """Close an open exception as dealt with (the reading's VEE status is recomputed);
    409 when it is already closed."""
    from central.vee import resolve_exception

    before = _exception(conn, exception_id)
    row = services.call(resolve_exception, conn, exception_id, by=user.name, reason=body.reason)
    return _closed(conn, audit, before, row)


@router.post(
    "/exceptions/{exception_id}/override",
    roles=DECIDERS,
    action="vee.override",
    response_model=VeeExceptionPublic,
)
def override(
    conn: Conn,
    user: CurrentUser,
    audit: AuditLog,
    exception_id: ExceptionId,
    body: OverrideRequest,
) -> VeeExceptionPublic:
    """Accept the reading as billable despite the exception, with a reason; with `value`,
    replace the reading's value (the exception keeps the value before VEE)."""
    from central.vee import override_exception

    before = _exception(conn, exception_id)
    row = services.call(
        override_exception,
        conn,
        exception_id,
        by=user.name,
        reason=body.reason,
        value=body.value,
    )
    return _closed(conn, audit, before, row)


def _closed(
    conn: Conn, audit: AuditLog, before: dict[str, Any], after: dict[str, Any]
) -> VeeExceptionPublic:
    """The audit row of a closed exception, and the answer."""
    audit(
        conn,
        object_type="vee_exception",
        object_id=after["id"],
        before=_summary(before),
        after=_summary(after),
    )
    return VeeExceptionPublic.model_validate(after)


@router.get("/rules", roles=ALL_ROLES, response_model=list[RulePublic])
def rules(conn: Conn) -> list[RulePublic]:
    """The VEE rules V1–V16 with each parameter's default, current value and changes."""
    from central.vee import rule_table

    return [RulePublic.model_validate(row) for row in services.call(rule_table, conn)]
