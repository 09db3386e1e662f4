"""The rules collection O&M counts by: reading-day zone and deadline, which reading is
expected, what "passed VEE" means, clock tolerance, targets — one frozen value.

Every figure, worklist cause and readiness problem is computed against an
:class:`OpsSettings`; the defaults below are the utility's published rules (MISSION.md),
and ``OpsSettings.from_env()`` lets a deployment move the zone and the deadline:

* ``M2C_OPS_ZONE`` — the reading day's time zone [Asia/Shanghai]
* ``M2C_OPS_DEADLINE`` — when a reading day's reading is due, ``D+N HH:MM`` [D+1 06:00]

A **reading day** D (a local date) is closed by the meter's daily freeze at local 00:00 of
D+1: that freeze is D's daily reading, the edge collects it at about 00:05 of D+1 and it
counts as timely when central has it by the deadline (default D+1 06:00 local).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared_protocol.timebase import meter_time_to_utc
from shared_protocol.wire import READING_SOURCES

__all__ = [
    "BILLING_OBIS",
    "DAILY_FREEZE_PROTOCOLS",
    "ENERGY_OBIS",
    "ESTIMATED_VEE_STATUSES",
    "PASSED_VEE_STATUSES",
    "TARGETS",
    "OpsSettings",
    "OpsSettingsError",
    "ReadingDay",
]

#: The register a bill is computed from: forward active energy, total of all tariffs.
BILLING_OBIS: Final = "1-0:1.8.0"

#: Energy registers (import/export, total and tariffs 1–4). A reading of any of them for a
#: reading day means the collection system reached the meter that day (coverage).
ENERGY_OBIS: Final = tuple(f"1-0:{d}.8.{t}" for d in (1, 2) for t in range(5))

#: Protocols whose meters keep daily freezes, so a daily frozen reading is expected of them.
#: Modbus meters and DL/T 645-1997 meters keep none (docs/edge-tasks.md: "not expected"), so
#: they count for coverage only.
DAILY_FREEZE_PROTOCOLS: Final = frozenset({"dlt645-2007", "dlt698.45"})

#: ``readings.vee_status`` values that count as "passed VEE" (accuracy). NULL is "not
#: validated yet"; the VEE engineer owns the values (central/vee) — adjust here if they move.
PASSED_VEE_STATUSES: Final = frozenset({"valid", "flagged", "overridden"})

#: ``readings.vee_status`` values of a value VEE estimated: never a collected reading.
ESTIMATED_VEE_STATUSES: Final = frozenset({"estimated"})

#: Sources of readings a gateway collected (the wire's sources); any other source (an
#: estimate central wrote, say) is not a received reading.
COLLECTED_SOURCES: Final = frozenset(READING_SOURCES)

#: The figures the utility is judged by (MISSION.md): coverage ≥ 99 %, collection success
#: ≥ 98 %, reading timeliness and accuracy ≥ 99 %.
TARGETS: Final[Mapping[str, Decimal]] = {
    "coverage": Decimal("0.99"),
    "success": Decimal("0.98"),
    "timeliness": Decimal("0.99"),
    "accuracy": Decimal("0.99"),
}

_DEADLINE = re.compile(r"^\s*D\s*\+\s*(\d{1,2})\s+(\d{1,2}):(\d{2})\s*$", re.IGNORECASE)


class OpsSettingsError(ValueError):
    """A setting of the O&M rules is malformed; the message names it and shows the form."""


@dataclass(frozen=True)
class OpsSettings:
    """How reading days, figures, causes and readiness are judged (see the module doc)."""

    zone: str = "Asia/Shanghai"
    #: A reading day D's reading is due ``deadline_days`` after D at ``deadline_time``.
    deadline_days: int = 1
    deadline_time: time = time(6, 0)
    billing_obis: str = BILLING_OBIS
    energy_obis: tuple[str, ...] = ENERGY_OBIS
    daily_freeze_protocols: frozenset[str] = DAILY_FREEZE_PROTOCOLS
    passed_vee_statuses: frozenset[str] = PASSED_VEE_STATUSES
    estimated_vee_statuses: frozenset[str] = ESTIMATED_VEE_STATUSES
    collected_sources: frozenset[str] = COLLECTED_SOURCES
    #: A meter clock off by more than this is drift (the edge's sync threshold, edge.md D5).
    clock_threshold_s: Decimal = Decimal(60)
    #: How far around a reading day events and edge statistics count as evidence.
    evidence_days: int = 3
    targets: Mapping[str, Decimal] = field(default_factory=lambda: dict(TARGETS))

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise OpsSettingsError(
                f"zone {self.zone!r} is not a time zone name (e.g. Asia/Shanghai)"
            ) from exc
        if not 0 <= self.deadline_days <= 31:
            raise OpsSettingsError(
                f"deadline_days must be 0..31 days after the reading day, not {self.deadline_days}"
            )
        if not 0 <= self.evidence_days <= 31:
            raise OpsSettingsError(f"evidence_days must be 0..31, not {self.evidence_days}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OpsSettings:
        """Defaults, with ``M2C_OPS_ZONE`` and ``M2C_OPS_DEADLINE`` applied when set."""
        source = os.environ if environ is None else environ
        zone = source.get("M2C_OPS_ZONE", "").strip() or cls.zone
        deadline = source.get("M2C_OPS_DEADLINE", "").strip()
        if not deadline:
            return cls(zone=zone)
        days, at = parse_deadline(deadline, "M2C_OPS_DEADLINE")
        return cls(zone=zone, deadline_days=days, deadline_time=at)

    def with_deadline(self, text: str) -> OpsSettings:
        """A copy with the deadline ``D+N HH:MM`` (the CLI's ``--deadline``)."""
        days, at = parse_deadline(text, "--deadline")
        return replace(self, deadline_days=days, deadline_time=at)

    def with_zone(self, zone: str) -> OpsSettings:
        return replace(self, zone=zone)

    @property
    def deadline_text(self) -> str:
        return f"D+{self.deadline_days} {self.deadline_time:%H:%M}"

    def local_midnight(self, day: date) -> datetime:
        """Local 00:00 of ``day`` in the reading zone, as aware UTC."""
        return meter_time_to_utc(datetime(day.year, day.month, day.day), self.zone)

    def local_date(self, moment: datetime) -> date:
        """The local date (reading zone) of an aware instant."""
        return moment.astimezone(ZoneInfo(self.zone)).date()

    def reading_day(self, day: date) -> ReadingDay:
        return ReadingDay.of(day, self)


def parse_deadline(text: str, name: str) -> tuple[int, time]:
    """``D+1 06:00`` → (1, 06:00); :class:`OpsSettingsError` naming ``name`` otherwise."""
    match = _DEADLINE.match(text)
    if match is None:
        raise OpsSettingsError(
            f"{name}={text!r}: expected 'D+N HH:MM', e.g. 'D+1 06:00' (the reading day's "
            "reading is due N days later at that local time)"
        )
    days, hour, minute = (int(part) for part in match.groups())
    if hour > 23 or minute > 59:
        raise OpsSettingsError(f"{name}={text!r}: {hour:02d}:{minute:02d} is not a time of day")
    if days > 31:
        raise OpsSettingsError(f"{name}={text!r}: at most 31 days after the reading day")
    return days, time(hour, minute)


@dataclass(frozen=True)
class ReadingDay:
    """One reading day's instants (all aware UTC), from local dates in the reading zone.

    ``start`` local 00:00 of D; ``freeze`` local 00:00 of D+1 — the daily freeze that
    closes D, the timestamp of D's daily reading; ``deadline`` when that reading is due;
    ``evidence_from`` / ``evidence_to`` the window where events and edge statistics count
    as evidence about the day.
    """

    day: date
    start: datetime
    freeze: datetime
    deadline: datetime
    evidence_from: datetime
    evidence_to: datetime

    @classmethod
    def of(cls, day: date, settings: OpsSettings) -> ReadingDay:
        if not isinstance(day, date) or isinstance(day, datetime):
            raise OpsSettingsError(f"a reading day is a date (2026-12-01), not {day!r}")
        start = settings.local_midnight(day)
        freeze = settings.local_midnight(day + timedelta(days=1))
        due = day + timedelta(days=settings.deadline_days)
        deadline = meter_time_to_utc(datetime.combine(due, settings.deadline_time), settings.zone)
        evidence = timedelta(days=settings.evidence_days)
        return cls(
            day=day,
            start=start,
            freeze=freeze,
            deadline=deadline,
            evidence_from=start - evidence,
            evidence_to=freeze + evidence + timedelta(days=1),
        )

    @property
    def freeze_date(self) -> date:
        """The local date of the freeze (D+1): the edge ledger's day for this slot."""
        return self.day + timedelta(days=1)
