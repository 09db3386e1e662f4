"""The lookups the in-line validator makes for a whole batch at once, as driver SQL.

They run only for what the validator's cache does not hold (a meter's first batch after a
start, a backfilled reading older than the newest one seen), one statement per lookup for
the whole batch: the previous accepted value of each register (meter, obis) before a given
time, stored readings by key (the tariff registers completing a freeze block that a
batch boundary split), and which of the batch's meters are archived or have settings.

PostgreSQL gets one array per column (``unnest``), a single prepared statement whatever
the size; SQLite gets a ``VALUES`` list in chunks. Times are µs since the epoch on the way
in and out, as SQLite stores them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from sqlalchemy.engine import Connection

from central.db.types import from_utc_micros

__all__ = ["fetch_any_tariff", "fetch_previous", "fetch_readings", "meters_present"]

_SQLITE_CHUNK: Final = 300  # 3 variables per key, well under SQLite's limit
_SQLITE_NAMES: Final = 500  # 1 variable per name
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)

# The newest reading of (meter, obis) before a time that VEE did not fail: pending (NULL)
# readings count, they are presumed good until shown otherwise.
_PREVIOUS_PG: Final = """
SELECT q.meter, q.obis, r.ts, r.value
FROM unnest(%(meters)s::varchar[], %(obises)s::varchar[], %(befores)s::timestamptz[])
     AS q(meter, obis, before)
CROSS JOIN LATERAL (
    SELECT x.ts, x.value FROM readings x
    WHERE x.meter = q.meter AND x.obis = q.obis AND x.ts < q.before
      AND (x.vee_status IS NULL OR x.vee_status <> 'failed')
    ORDER BY x.ts DESC LIMIT 1
) r
"""
_PREVIOUS_SQLITE: Final = """
WITH q(meter, obis, before) AS (VALUES {values})
SELECT q.meter, q.obis, r.ts, r.value FROM q JOIN readings r ON r.rowid = (
    SELECT x.rowid FROM readings x
    WHERE x.meter = q.meter AND x.obis = q.obis AND x.ts < q.before
      AND (x.vee_status IS NULL OR x.vee_status <> 'failed')
    ORDER BY x.ts DESC LIMIT 1
)
"""
_BY_KEY_PG: Final = """
SELECT r.meter, r.obis, r.ts, r.value, r.vee_status
FROM unnest(%(meters)s::varchar[], %(obises)s::varchar[], %(befores)s::timestamptz[])
     AS q(meter, obis, ts)
JOIN readings r ON r.meter = q.meter AND r.obis = q.obis AND r.ts = q.ts
"""
_BY_KEY_SQLITE: Final = """
WITH q(meter, obis, ts) AS (VALUES {values})
SELECT r.meter, r.obis, r.ts, r.value, r.vee_status
FROM q JOIN readings r ON r.meter = q.meter AND r.obis = q.obis AND r.ts = q.ts
"""


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _US


def _rows(
    conn: Connection, pg_sql: str, sqlite_sql: str, keys: Sequence[tuple[str, str, int]]
) -> Iterable[Any]:
    if conn.dialect.name == "postgresql":
        params = {
            "meters": [k[0] for k in keys],
            "obises": [k[1] for k in keys],
            "befores": [from_utc_micros(k[2]) for k in keys],
        }
        for row in conn.exec_driver_sql(pg_sql, params):
            yield (row[0], row[1], _micros(row[2]), *row[3:])
        return
    for start in range(0, len(keys), _SQLITE_CHUNK):
        part = keys[start : start + _SQLITE_CHUNK]
        sql = sqlite_sql.format(values=",".join(["(?, ?, ?)"] * len(part)))
        flat = tuple(value for key in part for value in key)
        for row in conn.exec_driver_sql(sql, flat):
            yield (row[0], row[1], row[2], Decimal(row[3]), *row[4:])


def fetch_previous(
    conn: Connection, before: Mapping[tuple[str, str], int]
) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """For each (meter, obis) → µs: the newest reading before that time that VEE did not
    fail, as (µs, value); keys without one are absent."""
    keys = [(meter, obis, us) for (meter, obis), us in before.items()]
    return {
        (meter, obis): (ts, _normal(value))
        for meter, obis, ts, value in _rows(conn, _PREVIOUS_PG, _PREVIOUS_SQLITE, keys)
    }


def fetch_readings(
    conn: Connection, keys: Iterable[tuple[str, str, int]]
) -> dict[tuple[str, str, int], tuple[Decimal, str | None]]:
    """Stored readings at the keys (meter, obis, µs) → (value, vee_status)."""
    wanted = sorted(set(keys))
    return {
        (meter, obis, ts): (_normal(value), status)
        for meter, obis, ts, value, status in _rows(conn, _BY_KEY_PG, _BY_KEY_SQLITE, wanted)
    }


def _normal(value: Decimal) -> Decimal:
    # NUMERIC(20, 6) pads to six places; one written form, as central.db.types gives back.
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def fetch_any_tariff(conn: Connection, meter: str, obis_codes: Sequence[str]) -> bool:
    """Whether ``meter`` has any stored reading of ``obis_codes`` (its tariff registers)."""
    placeholders = ", ".join(["%s" if conn.dialect.name == "postgresql" else "?"] * len(obis_codes))
    marker = "%s" if conn.dialect.name == "postgresql" else "?"
    sql = f"SELECT 1 FROM readings WHERE meter = {marker} AND obis IN ({placeholders}) LIMIT 1"
    return conn.exec_driver_sql(sql, (meter, *obis_codes)).first() is not None


def meters_present(conn: Connection, table: str, wanted: list[str]) -> set[str]:
    """Which of ``wanted`` appear in ``table.meter`` (``table`` is one of ours): a meter
    cache filling cold asks for thousands at once, and an expanding IN of that many costs
    more to compile than to run."""
    if conn.dialect.name == "postgresql":
        sql = f"SELECT DISTINCT meter FROM {table} WHERE meter = ANY(%(wanted)s)"
        return {row[0] for row in conn.exec_driver_sql(sql, {"wanted": wanted})}
    found: set[str] = set()
    for start in range(0, len(wanted), _SQLITE_NAMES):
        part = wanted[start : start + _SQLITE_NAMES]
        sql = f"SELECT DISTINCT meter FROM {table} WHERE meter IN ({', '.join('?' * len(part))})"
        found.update(row[0] for row in conn.exec_driver_sql(sql, tuple(part)))
    return found
