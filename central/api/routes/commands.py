"""Commands to gateways: list, one, and issue (read now, backfill, clock sync)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import Field

from central.api import services
from central.api.deps import Api, AuditLog, Conn, CurrentUser
from central.api.errors import ErrorResponse, NotFound
from central.api.routing import (
    ALL_ROLES,
    API_PREFIX,
    After,
    ApiRouter,
    Limit,
    Page,
    PublicModel,
    WriteModel,
    decode_cursor,
    encode_cursor,
)

__all__ = ["router"]

router = ApiRouter(prefix=f"{API_PREFIX}/commands", tags=["commands"])

READERS = frozenset({"collection_om", "supervisor", "read_only", "admin"})
ISSUERS = frozenset({"collection_om", "supervisor"})
assert READERS <= ALL_ROLES and ISSUERS <= ALL_ROLES

GatewayId = Annotated[str, Field(min_length=1, max_length=64)]
MeterId = Annotated[str, Field(min_length=1, max_length=64)]
TtlMinutes = Annotated[
    int, Field(ge=1, le=7 * 24 * 60, description="Minutes the gateway may still run it.")
]
MeterList = Annotated[
    list[MeterId] | None,
    Field(max_length=2040, description="Meters to include; null = every meter on the gateway."),
]
CommandStatus = Literal["queued", "sent", "succeeded", "failed", "expired", "refused", "duplicate"]


class CommandPublic(PublicModel):
    id: str
    gateway: str
    meter: str | None
    kind: str
    args: dict[str, Any]
    requested_by: str
    issued_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    status: str
    result_detail: Any = None
    result_at: datetime | None


class ReadNowCreate(WriteModel):
    kind: Literal["read_now"]
    gateway: GatewayId
    meter: MeterId
    what: str = Field(
        "1-0:1.8.0",
        min_length=1,
        max_length=32,
        description="An OBIS code, or realtime / daily / monthly.",
    )
    ttl_minutes: TtlMinutes = 60


class BackfillCreate(WriteModel):
    kind: Literal["backfill"]
    gateway: GatewayId
    days: int = Field(1, ge=1, le=31, description="Walk back this many days of slots (补抄).")
    meters: MeterList = None
    ttl_minutes: TtlMinutes = 60


class ClockSyncCreate(WriteModel):
    kind: Literal["clock_sync"]
    gateway: GatewayId
    meters: MeterList = None
    ttl_minutes: TtlMinutes = 60


CommandCreate = Annotated[
    ReadNowCreate | BackfillCreate | ClockSyncCreate, Field(discriminator="kind")
]


def _args(body: ReadNowCreate | BackfillCreate | ClockSyncCreate) -> dict[str, Any]:
    if isinstance(body, ReadNowCreate):
        return {"meter": body.meter, "what": body.what}
    if isinstance(body, BackfillCreate):
        return {"days": body.days, "meters": body.meters}
    return {"meters": body.meters}


@router.get("", roles=READERS, response_model=Page[CommandPublic])
def list_commands(
    conn: Conn,
    user: CurrentUser,
    gateway: Annotated[str | None, Query(max_length=64)] = None,
    meter: Annotated[str | None, Query(max_length=64)] = None,
    status: CommandStatus | None = None,
    limit: Limit = 100,
    after: After = None,
) -> Page[CommandPublic]:
    """Commands, newest first. A scoped user sees those of their gateways and meters (a
    page may then hold fewer than `limit`: follow `next` until it is null)."""
    from central.commands import list_commands as library_list

    cursor = decode_cursor(after, str)
    rows = services.call(
        library_list,
        conn,
        gateway=gateway,
        meter=meter,
        status=status,
        after=cursor[0] if cursor else None,
        limit=limit,
    )
    next_cursor = encode_cursor(rows[-1]["id"]) if len(rows) == limit else None
    visible = user.scope.filter_rows(
        conn, rows, meter=lambda row: row["meter"], gateway=lambda row: row["gateway"]
    )
    return Page[CommandPublic](
        items=[CommandPublic.model_validate(row) for row in visible], next=next_cursor
    )


@router.get("/{command_id}", roles=READERS, response_model=CommandPublic)
def get_command(conn: Conn, command_id: Annotated[str, Path(max_length=64)]) -> CommandPublic:
    """One command and what became of it (the gateway's result, when it came)."""
    from central.commands import get_command as library_get

    row = services.call(library_get, conn, command_id)
    if row is None:
        raise NotFound(f"command {command_id} not found")
    return CommandPublic.model_validate(row)


@router.post(
    "",
    roles=ISSUERS,
    action="command.issue",
    response_model=CommandPublic,
    status_code=201,
    responses={503: {"model": ErrorResponse, "description": "Commands cannot be signed/sent"}},
)
def issue_command(
    api: Api, user: CurrentUser, audit: AuditLog, body: CommandCreate
) -> CommandPublic:
    """Sign and send a command to a gateway: `read_now` (one meter, one quantity),
    `backfill` (补抄: walk back 1-31 days of missed slots), `clock_sync`. The answer is the
    stored command: `status` `sent` once the broker took it, `failed` when it could not be
    published (see `result_detail`); the gateway's result arrives later."""
    from central.commands import issue_command as library_issue

    publisher = services.command_publisher(api)
    # The engine, not a transaction: the command is committed before it is published, so
    # central never sends a command it has no record of.
    row = services.call(
        library_issue,
        api.engine,
        publisher,
        gateway=body.gateway,
        kind=body.kind,
        args=_args(body),
        requested_by=f"api:{user.name}",
        ttl=timedelta(minutes=body.ttl_minutes),
    )
    with api.engine.begin() as conn:
        audit(
            conn,
            object_type="command",
            object_id=row["id"],
            after={
                "gateway": row["gateway"],
                "kind": row["kind"],
                "args": row["args"],
                "status": row["status"],
            },
        )
    return CommandPublic.model_validate(row)
