"""Read queries behind the gateways, meters and readings routes, with the user's scope
applied in SQL and keyset pagination (every page is an index range scan, however deep).

Each function takes a ``Connection`` and a :class:`~central.api.access.Scope` and returns
plain row mappings; the routes turn them into Public models.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, and_, func, literal, select, tuple_
from sqlalchemy.engine import Connection, RowMapping

from central.api.access import Scope
from central.db.schema import gateway_events, gateways, meters, readings
from central.db.types import UTCDateTime

__all__ = [
    "PENDING",
    "get_gateway",
    "get_meter",
    "latest_values",
    "list_gateways",
    "list_meter_events",
    "list_meters",
    "list_readings",
    "series",
]

Row = RowMapping

#: ``vee_status=pending`` selects readings VEE has not validated yet (stored as NULL).
PENDING = "pending"

_BIRTH_FIELDS = ("software_version", "log_depth", "oldest_unacked_s", "clock_offset_s")


def _gateway_row(row: Any, meter_count: int) -> dict[str, Any]:
    birth = row.last_birth or {}
    return {
        "id": row.id,
        "online": bool(row.online),
        "enrolled_at": row.enrolled_at,
        "session": row.session,
        "last_birth_at": row.last_birth_at,
        "last_death_at": row.last_death_at,
        "meter_count": meter_count,
        **{name: birth.get(name) for name in _BIRTH_FIELDS},
    }


def _meter_counts(conn: Connection, ids: Sequence[str]) -> dict[str, int]:
    if not ids:
        return {}
    rows = conn.execute(
        select(meters.c.gateway, func.count())
        .where(meters.c.gateway.in_(list(ids)))
        .group_by(meters.c.gateway)
    ).all()
    return {gateway: int(count) for gateway, count in rows}


def list_gateways(
    conn: Connection,
    scope: Scope,
    *,
    online: bool | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    query = select(gateways).where(scope.gateway_clause()).order_by(gateways.c.id).limit(limit)
    if online is not None:
        query = query.where(gateways.c.online == online)
    if after is not None:
        query = query.where(gateways.c.id > after)
    rows = conn.execute(query).all()
    counts = _meter_counts(conn, [row.id for row in rows])
    return [_gateway_row(row, counts.get(row.id, 0)) for row in rows]


def get_gateway(conn: Connection, gateway: str) -> dict[str, Any] | None:
    """One gateway (the caller has checked the scope), with its last birth in full."""
    row = conn.execute(select(gateways).where(gateways.c.id == gateway)).first()
    if row is None:
        return None
    item = _gateway_row(row, _meter_counts(conn, [gateway]).get(gateway, 0))
    item["last_birth"] = row.last_birth
    return item


def list_meters(
    conn: Connection,
    scope: Scope,
    *,
    gateway: str | None = None,
    area: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[Row]:
    query = select(meters).where(scope.meter_clause()).order_by(meters.c.meter).limit(limit)
    if gateway is not None:
        query = query.where(meters.c.gateway == gateway)
    if area is not None:
        query = query.where(meters.c.transformer_area == area)
    if after is not None:
        query = query.where(meters.c.meter > after)
    return [row._mapping for row in conn.execute(query).all()]


def get_meter(conn: Connection, meter: str) -> Row | None:
    row = conn.execute(select(meters).where(meters.c.meter == meter)).first()
    return None if row is None else row._mapping


_READING_COLUMNS = (
    readings.c.obis,
    readings.c.ts,
    readings.c.value,
    readings.c.unit,
    readings.c.kind,
    readings.c.source,
    readings.c.quality,
    readings.c.vee_status,
    readings.c.received_at,
)


def latest_values(conn: Connection, meter: str) -> list[Row]:
    """The newest reading of each quantity the meter has."""
    newest = (
        select(readings.c.obis, func.max(readings.c.ts).label("ts"))
        .where(readings.c.meter == meter)
        .group_by(readings.c.obis)
        .subquery()
    )
    query = (
        select(*_READING_COLUMNS)
        .join(newest, and_(readings.c.obis == newest.c.obis, readings.c.ts == newest.c.ts))
        .where(readings.c.meter == meter)
        .order_by(readings.c.obis)
    )
    return [row._mapping for row in conn.execute(query).all()]


def series(
    conn: Connection,
    meter: str,
    obis: str,
    start: datetime,
    end: datetime,
    *,
    after: datetime | None = None,
    limit: int,
) -> list[tuple[Any, ...]]:
    """One quantity of one meter with ``start <= ts < end`` in time order, as tuples
    ``(ts, value, unit, quality, source, vee_status)`` (the API's hot path: no mapping per
    row). The primary key is exactly (meter, obis, ts), so this is one index range scan."""
    conditions = [
        readings.c.meter == meter,
        readings.c.obis == obis,
        readings.c.ts >= start,
        readings.c.ts < end,
    ]
    if after is not None:
        conditions.append(readings.c.ts > after)
    query = (
        select(
            readings.c.ts,
            readings.c.value,
            readings.c.unit,
            readings.c.quality,
            readings.c.source,
            readings.c.vee_status,
        )
        .where(*conditions)
        .order_by(readings.c.ts)
        .limit(limit)
    )
    return [tuple(row) for row in conn.execute(query).all()]


def list_readings(
    conn: Connection,
    scope: Scope,
    *,
    meter: str | None = None,
    gateway: str | None = None,
    obis: str | None = None,
    vee_status: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    after: tuple[str, str, datetime] | None = None,
    limit: int = 100,
) -> list[Row]:
    """Readings with their VEE status in key order (meter, quantity, time)."""
    conditions: list[ColumnElement[bool]] = [scope.meter_id_clause(readings.c.meter)]
    if meter is not None:
        conditions.append(readings.c.meter == meter)
    if gateway is not None:
        conditions.append(readings.c.gateway == gateway)
    if obis is not None:
        conditions.append(readings.c.obis == obis)
    if vee_status == PENDING:
        conditions.append(readings.c.vee_status.is_(None))
    elif vee_status is not None:
        conditions.append(readings.c.vee_status == vee_status)
    if start is not None:
        conditions.append(readings.c.ts >= start)
    if end is not None:
        conditions.append(readings.c.ts < end)
    if after is not None:
        conditions.append(
            tuple_(readings.c.meter, readings.c.obis, readings.c.ts)
            > tuple_(
                literal(after[0], String()),
                literal(after[1], String()),
                literal(after[2], UTCDateTime()),
            )
        )
    query = (
        select(readings.c.meter, readings.c.gateway, *_READING_COLUMNS, readings.c.corrections)
        .where(*conditions)
        .order_by(readings.c.meter, readings.c.obis, readings.c.ts)
        .limit(limit)
    )
    return [row._mapping for row in conn.execute(query).all()]


def list_meter_events(
    conn: Connection, meter: str, *, before_id: int | None = None, limit: int = 100
) -> list[Row]:
    """A meter's events as its gateway reported them, newest first."""
    query = (
        select(
            gateway_events.c.id,
            gateway_events.c.gateway,
            gateway_events.c.code,
            gateway_events.c.detail,
            gateway_events.c.at,
            gateway_events.c.received_at,
        )
        .where(gateway_events.c.meter == meter)
        .order_by(gateway_events.c.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(gateway_events.c.id < before_id)
    return [row._mapping for row in conn.execute(query).all()]
