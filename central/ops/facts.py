"""Per meter and reading day, the five facts every figure counts — one SQL query.

For each meter of the archive (``meters``) and a reading day D (``ReadingDay``):

* ``expected`` — 1 when the meter's protocol keeps daily freezes
  (``OpsSettings.daily_freeze_protocols``): central expects D's daily frozen reading of it;
* ``reached`` — 1 when central holds any energy-register reading of the meter (any kind,
  import or export, total or tariff) for a time in (D 00:00, D+1 00:00] local: the
  collection system talked to the meter about that day;
* ``received`` — 1 when expected and central holds the billing register
  (``1-0:1.8.0``) at D's freeze instant (local 00:00 of D+1) from a gateway (a collected
  source, not an estimate central wrote);
* ``timely`` — 1 when received and central received it (``readings.received_at``, central's
  clock) by the deadline (default local 06:00 of D+1);
* ``passed`` — 1 when received and its ``vee_status`` is one of the passed statuses.

A meter belongs to D's archive when a birth listed it by D's deadline
(``first_seen_at``) — or when it delivered D's reading anyway (a gateway enrolled later
draining its history). Both lookups go through the readings primary key
(meter, obis, ts), so the query costs a few index probes per meter.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, case, exists, literal, or_, select
from sqlalchemy.sql.elements import ColumnElement

from central.db.schema import meters, readings
from central.ops.settings import OpsSettings, ReadingDay

__all__ = ["FACTS", "meter_facts"]

#: The fact columns (0/1 integers) of :func:`meter_facts`, in the order figures use them.
FACTS = ("reached", "expected", "received", "timely", "passed")


def _flag(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return case((condition, literal(1)), else_=literal(0))


def meter_facts(
    settings: OpsSettings,
    day: ReadingDay,
    *,
    gateway: str | None = None,
    area: str | None = None,
    meter: str | None = None,
) -> Select[Any]:
    """One row per meter of the day's archive: identity, the reading, and the 0/1 facts."""
    daily = readings.alias("daily")
    seen = readings.alias("seen")
    reached = exists().where(
        seen.c.meter == meters.c.meter,
        seen.c.obis.in_(settings.energy_obis),
        seen.c.ts > day.start,
        seen.c.ts <= day.freeze,
    )
    expected = meters.c.protocol.in_(sorted(settings.daily_freeze_protocols))
    received = and_(
        expected,
        daily.c.meter.is_not(None),
        daily.c.source.in_(sorted(settings.collected_sources)),
    )
    query = (
        select(
            meters.c.meter,
            meters.c.gateway,
            meters.c.transformer_area.label("area"),
            meters.c.protocol,
            meters.c.bus,
            daily.c.value,
            daily.c.source,
            daily.c.vee_status,
            daily.c.received_at,
            daily.c.read_at,
            _flag(reached).label("reached"),
            _flag(expected).label("expected"),
            _flag(received).label("received"),
            _flag(and_(received, daily.c.received_at <= day.deadline)).label("timely"),
            _flag(
                and_(received, daily.c.vee_status.in_(sorted(settings.passed_vee_statuses)))
            ).label("passed"),
        )
        .select_from(
            meters.outerjoin(
                daily,
                and_(
                    daily.c.meter == meters.c.meter,
                    daily.c.obis == settings.billing_obis,
                    daily.c.ts == day.freeze,
                ),
            )
        )
        .where(or_(meters.c.first_seen_at <= day.deadline, daily.c.meter.is_not(None)))
    )
    if gateway is not None:
        query = query.where(meters.c.gateway == gateway)
    if area is not None:
        query = query.where(meters.c.transformer_area == area)
    if meter is not None:
        query = query.where(meters.c.meter == meter)
    return query
