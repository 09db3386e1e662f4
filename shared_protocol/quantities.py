"""The canonical quantity vocabulary: one OBIS-style code per kind of meter data.

Every protocol table (645 DIs, 698 OADs, Modbus register maps) names its items by these
codes, so the edge agent and central never deal in protocol details. Codes follow
IEC 62056-61 (``A-B:C.D.E``); the optional ``*F`` suffix is the billing period (settlement
day −F), the same meaning OBIS gives group F. Where OBIS has no code for a Chinese-meter
item (status words, event counters), we use the country/manufacturer-specific ``C = 96``
range and say so in the name.

Tariff numbering follows DL/T 645 and 698.45: tariff 1 = sharp (尖), 2 = peak (峰),
3 = flat (平), 4 = valley (谷).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal

from shared_protocol.errors import LocalProtocolError

__all__ = [
    "QUANTITIES",
    "MeterValue",
    "Quantity",
    "ScalarValue",
    "base_obis",
    "quantity",
    "vocabulary_markdown",
    "with_billing_period",
]

ScalarValue = Decimal | str | datetime | date | time


@dataclass(frozen=True)
class Quantity:
    """One kind of meter data: its code, a readable name and its unit."""

    obis: str
    name: str
    unit: str | None


@dataclass(frozen=True)
class MeterValue:
    """One value read from a meter, named in the canonical vocabulary.

    ``value`` is a ``Decimal`` for every measured number (never float), a ``str`` for
    identifiers and nameplate text, and a naive ``datetime``/``date``/``time`` for meter
    clock values: meters keep local time, and the caller converts to UTC with the meter's
    configured zone (see :func:`shared_protocol.timebase.meter_time_to_utc`).
    """

    obis: str
    value: ScalarValue
    unit: str | None

    @property
    def quantity(self) -> Quantity:
        return quantity(self.obis)


_OBIS_RE = re.compile(r"^\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}(\*\d{1,3})?$")


def _energy(c: int, what: str, unit: str) -> list[Quantity]:
    rows = [Quantity(f"1-0:{c}.8.0", f"{what} total", unit)]
    names = ("sharp", "peak", "flat", "valley")
    for tariff in range(1, 9):
        label = names[tariff - 1] if tariff <= 4 else f"tariff {tariff}"
        rows.append(Quantity(f"1-0:{c}.8.{tariff}", f"{what} tariff {tariff} ({label})", unit))
    return rows


def _demand(c: int, what: str, unit: str) -> list[Quantity]:
    rows = [Quantity(f"1-0:{c}.6.0", f"{what} max demand total", unit)]
    rows += [Quantity(f"1-0:{c}.6.{t}", f"{what} max demand tariff {t}", unit) for t in range(1, 9)]
    return rows


def _phases(total_c: int | None, first_c: int, what: str, unit: str | None) -> list[Quantity]:
    rows = [] if total_c is None else [Quantity(f"1-0:{total_c}.7.0", f"{what} total", unit)]
    for n, phase in enumerate(("L1", "L2", "L3")):
        rows.append(Quantity(f"1-0:{first_c + 20 * n}.7.0", f"{what} {phase}", unit))
    return rows


_TABLE: list[Quantity] = [
    *_energy(1, "import active energy", "kWh"),
    *_energy(2, "export active energy", "kWh"),
    *_energy(15, "combined active energy", "kWh"),
    *_energy(3, "combined reactive energy 1 (import)", "kvarh"),
    *_energy(4, "combined reactive energy 2 (export)", "kvarh"),
    *_energy(5, "reactive energy Q1", "kvarh"),
    *_energy(6, "reactive energy Q2", "kvarh"),
    *_energy(7, "reactive energy Q3", "kvarh"),
    *_energy(8, "reactive energy Q4", "kvarh"),
    *_energy(9, "import apparent energy", "kVAh"),
    *_energy(10, "export apparent energy", "kVAh"),
    *_demand(1, "import active", "kW"),
    *_demand(2, "export active", "kW"),
    *_demand(3, "combined reactive 1", "kvar"),
    *_demand(4, "combined reactive 2", "kvar"),
    *_phases(None, 32, "voltage", "V"),
    *_phases(None, 31, "current", "A"),
    Quantity("1-0:91.7.0", "current neutral", "A"),
    *_phases(16, 36, "active power", "kW"),
    *_phases(3, 23, "reactive power", "kvar"),
    *_phases(9, 29, "apparent power", "kVA"),
    *_phases(13, 33, "power factor", None),
    Quantity("1-0:14.7.0", "frequency", "Hz"),
    Quantity("1-0:1.4.0", "import active demand (current)", "kW"),
    Quantity("0-0:1.0.0", "meter clock", None),
    Quantity("0-0:1.0.1", "meter date", None),
    Quantity("0-0:1.0.2", "meter time of day", None),
    Quantity("0-0:1.0.3", "freeze time", None),
    Quantity("0-0:96.1.0", "meter communication address", None),
    Quantity("0-0:96.1.1", "meter number", None),
    Quantity("0-0:96.1.2", "asset number", None),
    Quantity("0-0:96.1.3", "rated voltage (nameplate)", None),
    Quantity("0-0:96.1.4", "rated current (nameplate)", None),
    Quantity("0-0:96.1.5", "maximum current (nameplate)", None),
    Quantity("0-0:96.1.6", "accuracy class (nameplate)", None),
    Quantity("0-0:96.1.7", "meter model (nameplate)", None),
    Quantity("0-0:96.1.8", "production date (nameplate)", None),
    Quantity("0-0:96.1.9", "protocol version (nameplate)", None),
    Quantity("1-0:0.3.0", "active energy meter constant", "imp/kWh"),
    Quantity("1-0:0.3.1", "reactive energy meter constant", "imp/kvarh"),
    *[Quantity(f"0-0:96.5.{n}", f"meter running status word {n}", None) for n in range(1, 8)],
    Quantity("0-0:96.7.21", "power-down event count", None),
    Quantity("0-0:96.7.22", "last power-down record", None),
    Quantity("0-0:96.51.0", "meter cover open event count", None),
    Quantity("0-0:96.51.1", "last meter cover open record", None),
    Quantity("0-0:96.52.0", "programming event count", None),
    Quantity("0-0:96.53.0", "clock set event count", None),
    Quantity("0-0:96.54.0", "meter clear event count", None),
    Quantity("0-0:96.55.0", "relay trip event count", None),
    Quantity("0-0:96.56.0", "relay close event count", None),
    Quantity("0-0:96.3.10", "relay state", None),
    Quantity("0-0:96.60.1", "prepaid alarm amount 1", "CNY"),
    Quantity("0-0:96.60.2", "prepaid alarm amount 2", "CNY"),
    Quantity("0-0:96.60.3", "prepaid overdraft limit", "CNY"),
    Quantity("0-0:96.60.4", "prepaid hoarding limit", "CNY"),
    Quantity("0-0:96.60.5", "prepaid close-allowed threshold", "CNY"),
    Quantity("0-0:96.60.10", "prepaid remaining amount", "CNY"),
    Quantity("0-0:96.60.11", "prepaid overdraft amount", "CNY"),
    Quantity("0-0:96.61.1", "daily freeze time of day", None),
    Quantity("0-0:96.61.2", "monthly settlement day", None),
    # DL/T 645 max demand comes with its time of occurrence; OBIS has no group for that
    # pairing, so each demand register gets a country-specific time code
    # (C = 96, D = 62, E = 10·C + tariff of the demand register).
    *[
        Quantity(f"0-0:96.62.{10 * c + t}", f"max demand time (1-0:{c}.6.{t})", None)
        for c in range(1, 5)
        for t in range(9)
    ],
    Quantity("0-0:96.1.10", "customer number", None),
    Quantity("0-0:96.1.11", "reactive accuracy class (nameplate)", None),
]

QUANTITIES: dict[str, Quantity] = {q.obis: q for q in _TABLE}


def base_obis(code: str) -> str:
    """``1-0:1.8.0*3`` → ``1-0:1.8.0``."""
    return code.split("*", 1)[0]


def with_billing_period(code: str, period: int) -> str:
    """Name a value from settlement day −``period`` (0 = current) in OBIS group F."""
    if not 0 <= period <= 99:
        raise LocalProtocolError(f"billing period {period} is outside 0..99")
    return code if period == 0 else f"{base_obis(code)}*{period}"


def quantity(code: str) -> Quantity:
    """The vocabulary entry for ``code``; a billing-period suffix keeps the base's unit."""
    if not _OBIS_RE.match(code):
        raise LocalProtocolError(f"{code!r} is not an OBIS-style code like '1-0:1.8.0'")
    base = QUANTITIES.get(base_obis(code))
    if base is None:
        raise LocalProtocolError(f"{code!r} is not in the canonical quantity vocabulary")
    if base.obis == code:
        return base
    period = code.split("*", 1)[1]
    return Quantity(code, f"{base.name} (settlement −{period})", base.unit)


def vocabulary_markdown() -> str:
    """The vocabulary as a Markdown table; ``docs/protocols.md`` carries this exact text."""
    lines = ["| OBIS code | quantity | unit |", "|---|---|---|"]
    lines += [f"| `{q.obis}` | {q.name} | {q.unit or ''} |" for q in _TABLE]
    return "\n".join(lines)
