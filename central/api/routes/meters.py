"""Meters: the archive (list, one), latest values, a quantity's time series, events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Final

from fastapi import Query, Response

from central.api import queries
from central.api.deps import Conn, CurrentUser
from central.api.errors import Invalid, NotFound
from central.api.routing import (
    ALL_ROLES,
    API_PREFIX,
    After,
    ApiRouter,
    Limit,
    Moment,
    Page,
    PublicModel,
    cursor_time,
    decode_cursor,
    encode_cursor,
)

__all__ = ["SERIES_MAX_LIMIT", "router"]

router = ApiRouter(prefix=f"{API_PREFIX}/meters", tags=["meters"])

#: A month of 15-minute points (31 × 96 = 2 976) fits one page of a time series.
SERIES_MAX_LIMIT: Final = 3000


class MeterPublic(PublicModel):
    meter: str
    gateway: str
    address: str
    protocol: str
    bus: str | None
    transformer_area: str | None
    customer_class: str | None
    protected: bool
    prepaid: bool
    first_seen_at: datetime
    last_seen_at: datetime


class LatestValuePublic(PublicModel):
    obis: str
    ts: datetime
    value: Decimal
    unit: str | None
    kind: str
    source: str
    quality: str
    vee_status: str | None
    received_at: datetime


class LatestPublic(PublicModel):
    meter: str
    values: list[LatestValuePublic]


class SeriesPointPublic(PublicModel):
    ts: datetime
    value: Decimal
    quality: str
    source: str
    vee_status: str | None


class SeriesPublic(PublicModel):
    meter: str
    obis: str
    unit: str | None
    start: datetime
    end: datetime
    items: list[SeriesPointPublic]
    next: str | None = None


class MeterEventPublic(PublicModel):
    id: int
    gateway: str
    code: str
    detail: dict[str, Any]
    at: datetime
    received_at: datetime


def _meter_or_404(conn: Conn, meter: str) -> Any:
    row = queries.get_meter(conn, meter)
    if row is None:
        raise NotFound(f"meter {meter} not found")
    return row


@router.get("", roles=ALL_ROLES, response_model=Page[MeterPublic])
def list_meters(
    conn: Conn,
    user: CurrentUser,
    gateway: Annotated[str | None, Query(max_length=64, description="Only this gateway's.")] = None,
    area: Annotated[
        str | None, Query(max_length=64, description="Only this transformer area's.")
    ] = None,
    limit: Limit = 100,
    after: After = None,
) -> Page[MeterPublic]:
    """The meter archive (as gateways report it in their births), in your scope, by id."""
    cursor = decode_cursor(after, str)
    rows = queries.list_meters(
        conn,
        user.scope,
        gateway=gateway,
        area=area,
        after=cursor[0] if cursor else None,
        limit=limit,
    )
    items = [MeterPublic.model_validate(row) for row in rows]
    next_cursor = encode_cursor(rows[-1]["meter"]) if len(rows) == limit else None
    return Page[MeterPublic](items=items, next=next_cursor)


@router.get("/{meter}", roles=ALL_ROLES, response_model=MeterPublic)
def get_meter(conn: Conn, meter: str) -> MeterPublic:
    """One meter of the archive."""
    return MeterPublic.model_validate(_meter_or_404(conn, meter))


@router.get("/{meter}/latest", roles=ALL_ROLES, response_model=LatestPublic)
def latest(conn: Conn, meter: str) -> LatestPublic:
    """The newest value of every quantity the meter reported (energy registers, voltage…)."""
    _meter_or_404(conn, meter)
    rows = queries.latest_values(conn, meter)
    return LatestPublic(meter=meter, values=[LatestValuePublic.model_validate(r) for r in rows])


@router.get("/{meter}/series", roles=ALL_ROLES, response_model=SeriesPublic)
def series(
    conn: Conn,
    meter: str,
    obis: Annotated[
        str, Query(min_length=1, max_length=32, description="Quantity, e.g. 1-0:1.8.0")
    ],
    start: Annotated[Moment, Query(description="From (inclusive). With a time zone.")],
    end: Annotated[Moment, Query(description="To (exclusive). With a time zone.")],
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=SERIES_MAX_LIMIT,
            description=f"Points per page (1-{SERIES_MAX_LIMIT}).",
        ),
    ] = SERIES_MAX_LIMIT,
    after: After = None,
) -> Response:
    """One quantity of one meter over `[start, end)`, in time order; values are exact
    decimals (strings in JSON). A month of 15-minute data fits one page."""
    if end <= start:
        raise Invalid(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    _meter_or_404(conn, meter)
    cursor = decode_cursor(after, str)
    after_ts = cursor_time(cursor[0]) if cursor is not None else None
    rows = queries.series(conn, meter, obis, start, end, after=after_ts, limit=limit)
    body = {
        "meter": meter,
        "obis": obis,
        "unit": rows[0][2] if rows else None,
        "start": _utc_json(start),
        "end": _utc_json(end),
        "items": [
            {
                "ts": _utc_json(ts),
                "value": str(value),
                "quality": quality,
                "source": source,
                "vee_status": vee_status,
            }
            for ts, value, _unit, quality, source, vee_status in rows
        ],
        "next": encode_cursor(rows[-1][0].isoformat()) if len(rows) == limit else None,
    }
    # The hot path of the fee-collection screens (bench/api_latency.py): the rows come
    # typed from our own table, so the points are written straight to JSON — building and
    # validating a model per point cost more than the query. ``response_model`` still
    # documents the shape, and the schemathesis test checks every answer against it.
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


def _utc_json(moment: datetime) -> str:
    """An aware time as the API writes times everywhere (pydantic's form): UTC, ``Z``, the
    fraction only when there is one. (``isoformat`` is C and several times faster than
    ``strftime``: this runs once per point of every series.)"""
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat() + "Z"


@router.get("/{meter}/events", roles=ALL_ROLES, response_model=Page[MeterEventPublic])
def events(
    conn: Conn, meter: str, limit: Limit = 100, after: After = None
) -> Page[MeterEventPublic]:
    """Events the meter raised (cover open, power failure, clock set…), newest first."""
    _meter_or_404(conn, meter)
    cursor = decode_cursor(after, int)
    rows = queries.list_meter_events(
        conn, meter, before_id=cursor[0] if cursor else None, limit=limit
    )
    items = [MeterEventPublic.model_validate(row) for row in rows]
    next_cursor = encode_cursor(rows[-1]["id"]) if len(rows) == limit else None
    return Page[MeterEventPublic](items=items, next=next_cursor)
