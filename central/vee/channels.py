"""What VEE needs to know about a quantity (an OBIS code): which checks apply to it.

* **register** — a cumulative energy register (``C.8.E``: kWh, kvarh, kVAh). It only goes
  up, wraps at 999999.99 (V7, V8), rises at most as fast as the meter can measure (V9), and
  its tariff registers sum to its total (V10).
* **power** — kW, kvar or kVA (``C.7.0``, demand ``1.4.0``, max demand ``C.6.E``): bounded
  by the meter's rating (V9); active import power also by the contracted capacity.
* **other** — voltage, current, frequency, power factor, clock, status words: unit and
  timing checks only.

A power curve is also energy: ``1-0:16.7.0`` (signed active power) integrates to import
minus export energy, which is how a day's intervals are compared with the daily freezes
(V10) and how register-constrained estimation scales a power curve.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from shared_protocol.errors import LocalProtocolError
from shared_protocol.quantities import base_obis, quantity

__all__ = ["Channel", "ChannelClass", "channel"]


class ChannelClass:
    REGISTER: Final = "register"
    POWER: Final = "power"
    OTHER: Final = "other"


_REGISTER_UNITS: Final = frozenset({"kWh", "kvarh", "kVAh"})
_POWER_UNITS: Final = frozenset({"kW", "kvar", "kVA"})
_CODE: Final = re.compile(r"^(\d+)-(\d+):(\d+)\.(\d+)\.(\d+)(\*\d+)?$")
#: Active import power compared with the contracted capacity (Tianjin pre-filter [S40]).
_CONTRACT: Final = frozenset({"1-0:16.7.0", "1-0:1.4.0"})
#: Power curves whose integral is energy: (import register, export register).
_ENERGY_OF_POWER: Final = {"1-0:16.7.0": ("1-0:1.8.0", "1-0:2.8.0")}


@dataclass(frozen=True, slots=True)
class Channel:
    """VEE's view of one OBIS code."""

    obis: str
    cls: str
    unit: str | None  # the vocabulary's unit; None when the code is not in it
    known: bool  # in the canonical vocabulary
    group: str | None  # a tariff register's total (``1-0:1.8.2`` → ``1-0:1.8.0``), or itself
    tariff: int  # 0 for a total
    contract: bool  # active import power: compared with the contracted capacity
    energy: tuple[str, str] | None  # a power curve's energy registers (import, export)


@lru_cache(maxsize=4096)
def channel(obis: str) -> Channel:
    """The :class:`Channel` of ``obis``; a code outside the vocabulary is ``other`` and
    only its timing is checked."""
    try:
        known = quantity(obis)
    except LocalProtocolError:
        return Channel(obis, ChannelClass.OTHER, None, False, None, 0, False, None)
    unit = known.unit
    match = _CODE.match(obis)
    assert match is not None  # quantity() accepted it
    c, d, e = int(match.group(3)), int(match.group(4)), int(match.group(5))
    suffix = match.group(6) or ""
    base = base_obis(obis)
    if d == 8 and unit in _REGISTER_UNITS:
        group = f"{match.group(1)}-{match.group(2)}:{c}.8.0{suffix}"
        return Channel(obis, ChannelClass.REGISTER, unit, True, group, e, False, None)
    if unit in _POWER_UNITS:
        contract = base in _CONTRACT or (c == 1 and d == 6)
        return Channel(
            obis, ChannelClass.POWER, unit, True, None, 0, contract, _ENERGY_OF_POWER.get(base)
        )
    return Channel(obis, ChannelClass.OTHER, unit, True, None, 0, False, None)
