"""VEE on stored readings: the catch-up of readings never validated, and the re-run of a
range after the parameters changed.

Both run the per-reading rules with the same code as ingestion
(:class:`~central.vee.inline.InlineValidator`, fed the stored rows in (meter, obis, time)
order, "now" for V3 being each reading's ``received_at``), so a reading gets the same status
whichever path validated it. Then each reading's status is set from all its exceptions —
including those of the meter-day rules and operators' overrides.

* :func:`validate_pending` — readings whose ``vee_status`` is NULL (stored while VEE was
  off, or corrected since), oldest key first, through the partial index
  ``ix_readings_vee_pending``.
* :func:`rerun` — every reading in [start, end): open exceptions of the per-reading rules
  are replaced (V2, a fact of arrival, is kept), closed ones keep their audit fields and are
  not raised again for the same value; then :func:`~central.vee.day.close_day` for each
  local day of the range.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select
from sqlalchemy.engine import Connection

from central.db.schema import readings
from central.db.types import checked_utc
from central.vee.day import DEFAULT_ZONE, close_day, supersede_estimates
from central.vee.errors import InvalidVeeRequestError
from central.vee.exceptions import refresh_statuses, write_statuses
from central.vee.inline import InlineValidator, withdraw_exceptions
from central.vee.parameters import RuleSet

__all__ = ["StoredReading", "rerun", "validate_pending"]

#: Readings per transaction on the stored path.
ROWS_PER_TRANSACTION: Final = 5000


class StoredReading(NamedTuple):
    """A stored reading in the shape the validator reads."""

    meter: str
    obis: str
    time: datetime
    value: Any
    unit: str | None
    kind: str
    source: str
    quality: str
    read_at: datetime
    received_at: datetime


_COLUMNS: Final = (
    readings.c.meter,
    readings.c.obis,
    readings.c.ts,
    readings.c.value,
    readings.c.unit,
    readings.c.kind,
    readings.c.source,
    readings.c.quality,
    readings.c.read_at,
    readings.c.received_at,
)


def validate_pending(
    engine: Engine, limit: int = 100_000, *, rules: RuleSet | None = None
) -> dict[str, Any]:
    """Validate up to ``limit`` readings not validated yet; returns how many, their
    statuses, and how many are still pending."""
    if limit < 1:
        raise InvalidVeeRequestError(f"limit must be at least 1, got {limit}")
    validator = InlineValidator(engine, rules)
    done = 0
    statuses: dict[str, int] = {}
    while done < limit:
        with engine.begin() as conn:
            rows = [
                StoredReading._make(row)
                for row in conn.execute(
                    select(*_COLUMNS)
                    .where(readings.c.vee_status.is_(None))
                    .order_by(readings.c.meter, readings.c.obis, readings.c.ts)
                    .limit(min(ROWS_PER_TRANSACTION, limit - done))
                )
            ]
            if not rows:
                break
            for status in _validate_stored(conn, validator, rows).values():
                statuses[status] = statuses.get(status, 0) + 1
        done += len(rows)
    with engine.connect() as conn:
        remaining = conn.execute(
            select(func.count()).select_from(readings).where(readings.c.vee_status.is_(None))
        ).scalar_one()
    return {"validated": done, "statuses": dict(sorted(statuses.items())), "pending": remaining}


def rerun(
    engine: Engine,
    *,
    start: datetime,
    end: datetime,
    meters: Sequence[str] | None = None,
    zone: str = DEFAULT_ZONE,
    rules: RuleSet | None = None,
) -> dict[str, Any]:
    """Re-validate the readings with ``start <= ts < end`` (of ``meters``, or all) with the
    parameters now stored, then close each local day of the range again."""
    try:
        start, end = checked_utc(start), checked_utc(end)
    except ValueError as exc:
        raise InvalidVeeRequestError(f"rerun range: {exc}") from None
    if end <= start:
        raise InvalidVeeRequestError(f"rerun range is empty: {start} .. {end}")
    validator = InlineValidator(engine, rules)
    statuses: dict[str, int] = {}
    count = 0
    with engine.connect() as conn:
        chosen = (
            sorted(set(meters))
            if meters is not None
            else list(
                conn.execute(
                    select(readings.c.meter)
                    .where(readings.c.ts >= start, readings.c.ts < end)
                    .distinct()
                    .order_by(readings.c.meter)
                ).scalars()
            )
        )
    for meter in chosen:
        after: tuple[str, datetime] | None = None  # (obis, ts) of the last row done
        while True:
            with engine.begin() as conn:
                query = (
                    select(*_COLUMNS)
                    .where(readings.c.meter == meter, readings.c.ts >= start, readings.c.ts < end)
                    .order_by(readings.c.obis, readings.c.ts)
                    .limit(ROWS_PER_TRANSACTION)
                )
                if after is not None:
                    query = query.where(
                        (readings.c.obis > after[0])
                        | ((readings.c.obis == after[0]) & (readings.c.ts > after[1]))
                    )
                rows = [StoredReading._make(row) for row in conn.execute(query)]
                if not rows:
                    break
                for status in _validate_stored(conn, validator, rows).values():
                    statuses[status] = statuses.get(status, 0) + 1
                count += len(rows)
                after = (rows[-1].obis, rows[-1].time)
    days = []
    for day in _local_days(start, end, zone):
        days.append(close_day(engine, day, meters=meters, zone=zone, rules=rules))
    with engine.begin() as conn:
        if chosen:
            supersede_estimates(conn, chosen, start, end)
    return {
        "readings": count,
        "statuses": dict(sorted(statuses.items())),
        "days": days,
    }


def _validate_stored(
    conn: Connection, validator: InlineValidator, rows: list[StoredReading]
) -> dict[tuple[str, str | None, datetime], str]:
    keys = [(r.meter, r.obis, r.time) for r in rows]
    withdraw_exceptions(conn, keys)
    first = validator.check(
        conn, rows, now=datetime.now(UTC), arrivals=[r.received_at for r in rows]
    )
    write_statuses(conn, dict(zip(keys, first, strict=True)))
    # The meter-day rules' exceptions and operators' overrides count too.
    return refresh_statuses(conn, keys)


def _local_days(start: datetime, end: datetime, zone: str) -> list[date]:
    tz = ZoneInfo(zone)
    first = start.astimezone(tz).date()
    last = (end - timedelta(microseconds=1)).astimezone(tz).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
