"""Collection O&M: the daily figures, the worklist of failing meters with one-click
remedies, the reading-day readiness check, and gateway health."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Query

from central.api import services
from central.api.deps import Api, Conn
from central.api.errors import NotFound
from central.api.routing import (
    ALL_ROLES,
    API_PREFIX,
    After,
    ApiRouter,
    Day,
    Limit,
    Page,
    PublicModel,
    decode_cursor,
    encode_cursor,
)

__all__ = ["gateway_health_router", "router"]

router = ApiRouter(prefix=f"{API_PREFIX}/ops", tags=["ops"])
gateway_health_router = ApiRouter(prefix=f"{API_PREFIX}/gateways", tags=["gateways"])

WORKLIST_ROLES = frozenset({"collection_om", "supervisor", "read_only", "admin"})
READINESS_ROLES = frozenset({"collection_om", "billing", "supervisor", "read_only", "admin"})

GatewayFilter = Annotated[str | None, Query(max_length=64, description="Only this gateway.")]
AreaFilter = Annotated[str | None, Query(max_length=64, description="Only this transformer area.")]
DayQuery = Annotated[Day, Query(description="The reading day (local date), e.g. 2026-12-01.")]


class FigurePublic(PublicModel):
    numerator: int
    denominator: int
    ratio: Decimal | None
    target: Decimal | None
    meets_target: bool | None


class FiguresRowPublic(PublicModel):
    day: dt.date
    by: str
    gateway: str | None = None
    area: str | None = None
    meter: str | None = None
    meters: int
    expected: int
    coverage: FigurePublic
    success: FigurePublic
    timeliness: FigurePublic
    accuracy: FigurePublic


class RemedyPublic(PublicModel):
    action: str
    label: str
    command: dict[str, Any]


class WorklistItemPublic(PublicModel):
    day: dt.date
    meter: str
    gateway: str
    area: str | None
    protocol: str | None
    problems: list[str]
    cause: str | None
    explanation: str
    advice: str
    causes: list[dict[str, Any]]
    remedies: list[RemedyPublic]
    reading: dict[str, Any] | None


class ReadinessMeterPublic(PublicModel):
    meter: str
    gateway: str
    area: str | None
    problems: list[dict[str, Any]]
    remedies: list[RemedyPublic]


class ReadinessPublic(PublicModel):
    reading_day: dt.date
    mode: str
    based_on: dt.date
    freeze_at: dt.datetime
    deadline: dt.datetime
    checked_at: dt.datetime
    meters_checked: int
    meters_ready: int
    meters_not_ready: int
    ready: bool
    problems: dict[str, int]
    meters: list[ReadinessMeterPublic]


class GatewayHealthPublic(PublicModel):
    gateway: str
    status: str
    online: bool
    last_birth_at: dt.datetime | None
    last_death_at: dt.datetime | None
    software_version: str | None
    boot_reason: str | None
    session: Any = None
    meters_in_archive: int
    log_depth: int | None
    oldest_unacked_s: int | None
    clock_offset_s: Decimal | None
    acked_up_to_seq: int | None
    last_batch_at: dt.datetime | None
    daily_success: Any = None
    commands_waiting: int
    trouble_24h: dict[str, int]
    warnings: list[dict[str, Any]]


def _remedies(remedies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each remedy's command as the body of POST /api/v1/commands (one click: post it)."""
    return [
        {
            "action": remedy["action"],
            "label": remedy["label"],
            "command": {
                "kind": remedy["command"]["kind"],
                "gateway": remedy["command"]["gateway"],
                **remedy["command"].get("args", {}),
            },
        }
        for remedy in remedies
    ]


@router.get("/figures", roles=ALL_ROLES, narrow=True, response_model=list[FiguresRowPublic])
def figures(
    api: Api,
    conn: Conn,
    day: DayQuery,
    by: Literal["total", "gateway", "area", "meter"] = "total",
    gateway: GatewayFilter = None,
    area: AreaFilter = None,
) -> list[FiguresRowPublic]:
    """Coverage, collection success, timeliness and accuracy of a reading day, with their
    targets (≥ 99 %, ≥ 98 %, ≥ 99 %, ≥ 99 %), in total or per gateway, area or meter."""
    from central.ops import daily_figures

    rows = services.call(
        daily_figures, conn, day, by=by, gateway=gateway, area=area, settings=api.ops_settings
    )
    return [FiguresRowPublic.model_validate(row) for row in rows]


@router.get("/worklist", roles=WORKLIST_ROLES, narrow=True, response_model=Page[WorklistItemPublic])
def worklist(
    api: Api,
    conn: Conn,
    day: DayQuery,
    gateway: GatewayFilter = None,
    area: AreaFilter = None,
    limit: Limit = 100,
    after: After = None,
) -> Page[WorklistItemPublic]:
    """Meters that failed the reading day, by meter: what failed, the likely cause with its
    evidence, and remedies whose `command` is ready to POST to /api/v1/commands."""
    from central.ops import worklist as library_worklist

    cursor = decode_cursor(after, str)
    rows = services.call(
        library_worklist,
        conn,
        day,
        gateway=gateway,
        area=area,
        limit=limit,
        after=cursor[0] if cursor else None,
        settings=api.ops_settings,
    )
    items = [
        WorklistItemPublic.model_validate({**row, "remedies": _remedies(row["remedies"])})
        for row in rows
    ]
    next_cursor = encode_cursor(rows[-1]["meter"]) if len(rows) == limit else None
    return Page[WorklistItemPublic](items=items, next=next_cursor)


@router.get("/readiness", roles=READINESS_ROLES, narrow=True, response_model=ReadinessPublic)
def readiness(
    api: Api,
    conn: Conn,
    reading_day: Annotated[Day, Query(description="The reading day to check (local date).")],
    gateway: GatewayFilter = None,
    area: AreaFilter = None,
) -> ReadinessPublic:
    """Before a reading day: every meter that would not bill cleanly and why (gateway
    offline, no daily reading, clock drift, open VEE exception…), with remedies."""
    from central.ops import readiness as library_readiness

    result = services.call(
        library_readiness,
        conn,
        reading_day,
        gateway=gateway,
        area=area,
        settings=api.ops_settings,
    )
    result["meters"] = [
        {**item, "remedies": _remedies(item["remedies"])} for item in result["meters"]
    ]
    return ReadinessPublic.model_validate(result)


@gateway_health_router.get("/{gateway}/health", roles=ALL_ROLES, response_model=GatewayHealthPublic)
def gateway_health(api: Api, conn: Conn, gateway: str) -> GatewayHealthPublic:
    """A gateway's health from its births and deaths: status, warnings (offline, clock
    offset, uplink backlog, low success, uplink trouble), backlog and waiting commands."""
    from central.ops import gateway_health as library_health

    rows = services.call(library_health, conn, gateway, settings=api.ops_settings)
    if not rows:
        raise NotFound(f"gateway {gateway} not found")
    return GatewayHealthPublic.model_validate(rows[0])
