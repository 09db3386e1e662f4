"""Readings with their VEE status, across meters (for one meter's curve use
``/meters/{meter}/series``)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import Query

from central.api import queries
from central.api.deps import Conn, CurrentUser
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

__all__ = ["router"]

router = ApiRouter(prefix=f"{API_PREFIX}/readings", tags=["readings"])


class ReadingPublic(PublicModel):
    meter: str
    gateway: str
    obis: str
    ts: datetime
    value: Decimal
    unit: str | None
    kind: str
    source: str
    quality: str
    vee_status: str | None
    received_at: datetime
    corrections: int


@router.get("", roles=ALL_ROLES, response_model=Page[ReadingPublic])
def list_readings(
    conn: Conn,
    user: CurrentUser,
    meter: Annotated[str | None, Query(max_length=64)] = None,
    gateway: Annotated[str | None, Query(max_length=64)] = None,
    obis: Annotated[
        str | None, Query(max_length=32, description="Quantity, e.g. 1-0:1.8.0")
    ] = None,
    vee_status: Annotated[
        str | None,
        Query(
            max_length=16,
            description=f"VEE outcome; `{queries.PENDING}` = not validated yet.",
        ),
    ] = None,
    start: Annotated[
        Moment | None, Query(description="From (inclusive). With a time zone.")
    ] = None,
    end: Annotated[Moment | None, Query(description="To (exclusive). With a time zone.")] = None,
    limit: Limit = 100,
    after: After = None,
) -> Page[ReadingPublic]:
    """Readings in your scope in key order (meter, quantity, time), with VEE status."""
    cursor = decode_cursor(after, str, str, str)
    after_key = None if cursor is None else (cursor[0], cursor[1], cursor_time(cursor[2]))
    rows = queries.list_readings(
        conn,
        user.scope,
        meter=meter,
        gateway=gateway,
        obis=obis,
        vee_status=vee_status,
        start=start,
        end=end,
        after=after_key,
        limit=limit,
    )
    items = [ReadingPublic.model_validate(row) for row in rows]
    next_cursor = None
    if len(rows) == limit:
        last = rows[-1]
        next_cursor = encode_cursor(last["meter"], last["obis"], last["ts"].isoformat())
    return Page[ReadingPublic](items=items, next=next_cursor)
