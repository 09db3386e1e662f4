"""Helpers for the VEE tests: readings stored through the real ingest store, validated by
the real in-line validator, in a database of each backend (``central_fixtures``).

Times: the utility's zone is Asia/Shanghai (UTC+8), so local day D runs from D−1 16:00 UTC
to D 16:00 UTC and the daily freeze closing D is stamped D 16:00 UTC.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select

from central.db.schema import readings
from central.ingest.store import IncomingReading, IngestStore, MeterEntry
from central.vee import InlineValidator, RuleSet, day_window, list_exceptions
from central.vee.exceptions import write_statuses
from shared_protocol.quantities import QUANTITIES

GATEWAY = "gw-vee"
#: Tuesday 2026-03-03 00:00 in Shanghai.
DAY = date(2026, 3, 3)
T0 = day_window(DAY)[0]
QUARTER = timedelta(minutes=15)


def local_midnight(day: date) -> datetime:
    return day_window(day)[0]


def reading(
    meter: str,
    obis: str,
    time: datetime,
    value: Decimal | str | int,
    *,
    kind: str = "daily",
    unit: str | None = "",
    read_at: datetime | None = None,
) -> IncomingReading:
    """A reading; ``unit`` defaults to the quantity's own, ``read_at`` to ``time``."""
    if unit == "":
        unit = QUANTITIES[obis.split("*")[0]].unit
    return IncomingReading(
        0, meter, obis, time, Decimal(value), unit, kind, "scheduled", "ok", read_at or time
    )


class Feed:
    """Readings into a database as ingestion puts them there: stored by ``IngestStore``,
    then validated in-line and their statuses written, batch by batch."""

    def __init__(
        self,
        engine: Engine,
        meters: Iterable[str] = ("m1", "m2"),
        *,
        rules: RuleSet | None = None,
        clock: Callable[[], datetime] | None = None,
        vee: bool = True,
    ) -> None:
        self.engine = engine
        self.store = IngestStore(engine)
        self.store.enroll_gateway(GATEWAY)
        archive = [MeterEntry(m, m, "dlt645-2007") for m in meters]
        if archive:
            self.store.record_birth(GATEWAY, 1, {}, T0 - timedelta(days=60), archive)
        self.validator = InlineValidator(
            engine, rules, clock or (lambda: T0 + timedelta(days=60)), refresh_s=0
        )
        self.vee = vee
        self.seq = 0

    def send(self, *batch: IncomingReading) -> list[str]:
        """Store one batch and validate it; the statuses (empty with ``vee=False``)."""
        numbered = []
        for r in batch:
            self.seq += 1
            numbered.append(replace(r, seq=self.seq))
        self.store.apply_batch(GATEWAY, 1, numbered[0].seq, numbered[-1].seq, numbered)
        if not self.vee:
            return []
        with self.engine.begin() as conn:
            statuses = self.validator.validate(conn, numbered)
            write_statuses(
                conn,
                {(r.meter, r.obis, r.time): s for r, s in zip(numbered, statuses, strict=True)},
            )
        return statuses

    def send_all(self, items: Sequence[IncomingReading], size: int = 500) -> list[str]:
        out: list[str] = []
        for start in range(0, len(items), size):
            out += self.send(*items[start : start + size])
        return out


def exceptions(engine: Engine, **filters: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return list_exceptions(conn, limit=1000, **filters)


def rules_raised(engine: Engine, **filters: Any) -> list[str]:
    return [e["rule"] for e in exceptions(engine, **filters)]


def status_of(engine: Engine, meter: str, obis: str, ts: datetime) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            select(readings.c.vee_status).where(
                readings.c.meter == meter, readings.c.obis == obis, readings.c.ts == ts
            )
        ).scalar_one()


def freezes(
    meter: str, start_day: date, daily_kwh: Sequence[Decimal | str]
) -> list[IncomingReading]:
    """Daily freezes of 1-0:1.8.0: the register at local midnight of ``start_day``, then
    after each day's consumption in ``daily_kwh``."""
    value = Decimal(1000)
    out = [reading(meter, "1-0:1.8.0", local_midnight(start_day), value)]
    for n, used in enumerate(daily_kwh, start=1):
        value += Decimal(used)
        out.append(
            reading(meter, "1-0:1.8.0", local_midnight(start_day + timedelta(days=n)), value)
        )
    return out


def curve(
    meter: str, day: date, values: Sequence[Decimal | str | None], obis: str = "1-0:16.7.0"
) -> list[IncomingReading]:
    """A day's 15-minute curve points (None: missing)."""
    start = local_midnight(day)
    return [
        reading(meter, obis, start + QUARTER * k, v, kind="curve")
        for k, v in enumerate(values)
        if v is not None
    ]


def rising_values(start: str = "0.5", step: str = "0.001") -> list[Decimal | None]:
    """96 distinct rising values: no spike, no frozen run."""
    return [Decimal(start) + Decimal(step) * k for k in range(96)]
