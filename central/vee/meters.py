"""What VEE knows about a meter beyond its readings: whether a gateway has it in its archive,
and its settings over time (``vee_meter_settings``): rating (phases, Un, Imax), CT and PT
ratios, contracted capacity, and whether it is in service.

The rules use them for the largest plausible increment (V9), a multiplier change (V11) and
data from a removed meter (V16). A meter without settings is rated by V9's defaults
(single phase, 220 V, 60 A, CT = PT = 1).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from central.db.schema import meters
from central.db.types import checked_decimal, checked_utc, utc_micros
from central.db.vee_tables import vee_meter_settings
from central.vee.errors import InvalidVeeRequestError
from central.vee.parameters import Parameters
from central.vee.queries import meters_present

__all__ = ["MeterInfo", "MeterSettings", "load_meter_info", "meter_settings", "set_meter_settings"]

_THOUSAND: Final = Decimal(1000)


@dataclass(frozen=True, slots=True)
class MeterSettings:
    """One row of a meter's settings, in force from ``effective_from``."""

    effective_from: datetime
    phases: int
    voltage_v: Decimal
    max_current_a: Decimal
    ct_ratio: Decimal
    pt_ratio: Decimal
    contract_kw: Decimal | None
    active: bool
    ratio: Decimal = field(init=False)  # CT × PT
    rating_kw: Decimal = field(init=False)  # Imax · Un · phases · CT · PT: the most it measures

    def __post_init__(self) -> None:
        ratio = self.ct_ratio * self.pt_ratio
        object.__setattr__(self, "ratio", ratio)
        rating = self.max_current_a * self.voltage_v * self.phases * ratio / _THOUSAND
        object.__setattr__(self, "rating_kw", rating)


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """A meter as the in-line validator sees it."""

    meter: str
    in_archive: bool
    settings: tuple[MeterSettings, ...] = ()  # oldest first
    starts: tuple[int, ...] = ()  # µs of each row's effective_from

    def at(self, micros: int) -> MeterSettings | None:
        """The settings in force at ``micros``; None before the first row (defaults)."""
        index = bisect_right(self.starts, micros) - 1
        return self.settings[index] if index >= 0 else None


def default_rating_kw(params: Parameters) -> Decimal:
    voltage = params.decimal("V9", "default_voltage_v")
    current = params.decimal("V9", "default_max_current_a")
    return current * voltage * params.integer("V9", "default_phases") / _THOUSAND


def load_meter_info(conn: Connection, meter_ids: Iterable[str]) -> dict[str, MeterInfo]:
    """Archive presence and settings of ``meter_ids`` (two queries)."""
    wanted = sorted(set(meter_ids))
    if not wanted:
        return {}
    archived = meters_present(conn, meters.name, wanted)
    with_settings = sorted(meters_present(conn, vee_meter_settings.name, wanted))
    rows: dict[str, list[MeterSettings]] = {}
    for r in (
        conn.execute(
            select(vee_meter_settings)
            .where(vee_meter_settings.c.meter.in_(with_settings))
            .order_by(vee_meter_settings.c.meter, vee_meter_settings.c.effective_from)
        )
        if with_settings
        else ()
    ):
        rows.setdefault(r.meter, []).append(
            MeterSettings(
                r.effective_from,
                r.phases,
                r.voltage_v,
                r.max_current_a,
                r.ct_ratio,
                r.pt_ratio,
                r.contract_kw,
                bool(r.active),
            )
        )
    return {
        m: MeterInfo(
            m,
            m in archived,
            tuple(rows.get(m, ())),
            tuple(utc_micros(s.effective_from) for s in rows.get(m, ())),
        )
        if m in rows
        else MeterInfo(m, m in archived)
        for m in wanted
    }


def set_meter_settings(
    conn: Connection,
    meter: str,
    *,
    effective_from: datetime,
    by: str,
    phases: int = 1,
    voltage_v: Decimal | int | str = Decimal(220),
    max_current_a: Decimal | int | str = Decimal(60),
    ct_ratio: Decimal | int | str = Decimal(1),
    pt_ratio: Decimal | int | str = Decimal(1),
    contract_kw: Decimal | int | str | None = None,
    active: bool = True,
) -> dict[str, Any]:
    """Record ``meter``'s settings from ``effective_from`` on (a row with the same start is
    replaced). Returns the stored row."""
    try:
        start = checked_utc(effective_from)
        row: dict[str, Any] = {
            "meter": meter,
            "effective_from": start,
            "phases": phases,
            "voltage_v": checked_decimal(voltage_v),
            "max_current_a": checked_decimal(max_current_a),
            "ct_ratio": checked_decimal(ct_ratio),
            "pt_ratio": checked_decimal(pt_ratio),
            "contract_kw": None if contract_kw is None else checked_decimal(contract_kw),
            "active": bool(active),
            "set_by": by,
            "set_at": datetime.now(UTC),
        }
    except ValueError as exc:
        raise InvalidVeeRequestError(f"meter {meter} settings: {exc}") from None
    if not meter.strip():
        raise InvalidVeeRequestError("meter: give the meter id")
    if phases not in (1, 3):
        raise InvalidVeeRequestError(f"phases must be 1 or 3, got {phases}")
    for name in ("voltage_v", "max_current_a", "ct_ratio", "pt_ratio"):
        if row[name] <= 0:
            raise InvalidVeeRequestError(f"{name} must be positive, got {row[name]}")
    if row["contract_kw"] is not None and row["contract_kw"] <= 0:
        raise InvalidVeeRequestError(f"contract_kw must be positive, got {row['contract_kw']}")
    if not by.strip():
        raise InvalidVeeRequestError("by: say who changes the settings")
    table = vee_meter_settings
    key = (table.c.meter == meter) & (table.c.effective_from == start)
    if conn.execute(select(table.c.meter).where(key)).first() is None:
        conn.execute(table.insert().values(**row))
    else:
        conn.execute(update(table).where(key).values(**row))
    return row


def meter_settings(conn: Connection, meter: str) -> list[dict[str, Any]]:
    """``meter``'s settings rows, oldest first."""
    return [
        dict(r._mapping)
        for r in conn.execute(
            select(vee_meter_settings)
            .where(vee_meter_settings.c.meter == meter)
            .order_by(vee_meter_settings.c.effective_from)
        )
    ]
