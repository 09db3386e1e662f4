"""Household and business loads: power as a function of time, piecewise constant.

A load is constant over each 15-minute UTC slot, so integrals over any interval are exact
sums of ``watts × microseconds`` (integers). The slot's value comes from the customer class's
daily and seasonal shape, a per-slot noise factor drawn from ``random.Random`` seeded with
``(seed, slot)`` — the same slot always gives the same power, whatever order it is asked in —
and, optionally, rooftop PV that exports when the sun outruns the house.

Power is in whole watts (import positive, export negative) and reactive power in whole var.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Final, Protocol

from firmware_sim.clock import from_us

__all__ = [
    "SLOT_US",
    "CompositeLoad",
    "ConstantLoad",
    "CustomerClass",
    "Load",
    "LoadProfile",
    "ScaledLoad",
    "SwitchedLoad",
    "integrate",
]

SLOT_US: Final = 15 * 60 * 1_000_000
LOCAL_SHIFT_US: Final = 8 * 3600 * 1_000_000  # shapes are drawn in China Standard Time


class Load(Protocol):
    """Anything that draws power: constant over [slot start, ``next_change``)."""

    def power(self, utc_us: int) -> tuple[int, int]:
        """(active W, reactive var) at ``utc_us``."""
        ...

    def next_change(self, utc_us: int) -> int:
        """The first instant after ``utc_us`` at which the power may change."""
        ...


def _next_slot(utc_us: int) -> int:
    return (utc_us // SLOT_US + 1) * SLOT_US


class CustomerClass(StrEnum):
    RESIDENTIAL = "residential"
    COMMERCIAL = "commercial"
    SMALL_INDUSTRIAL = "small_industrial"


@dataclass(frozen=True)
class ClassShape:
    """Hourly shape (24 factors of the mean), weekend factor, monthly factors, power factor."""

    hourly: tuple[float, ...]
    weekend: float
    monthly: tuple[float, ...]
    power_factor: float
    mean_watts: int


# Shapes as data. Residential: evening peak, summer air conditioning and winter heating.
# Commercial: business hours, quiet weekends. Small industrial: two shifts, flat seasons.
SHAPES: Final[dict[CustomerClass, ClassShape]] = {
    CustomerClass.RESIDENTIAL: ClassShape(
        hourly=(0.5, 0.4, 0.35, 0.35, 0.35, 0.4, 0.7, 1.1, 1.0, 0.8, 0.7, 0.9,
                1.1, 0.9, 0.7, 0.7, 0.9, 1.3, 1.9, 2.2, 2.1, 1.8, 1.3, 0.8),
        weekend=1.15,
        monthly=(1.3, 1.2, 0.9, 0.8, 0.85, 1.05, 1.45, 1.5, 1.05, 0.85, 0.9, 1.2),
        power_factor=0.95,
        mean_watts=450,
    ),
    CustomerClass.COMMERCIAL: ClassShape(
        hourly=(0.3, 0.3, 0.3, 0.3, 0.3, 0.35, 0.5, 0.9, 1.4, 1.7, 1.8, 1.8,
                1.6, 1.7, 1.8, 1.8, 1.7, 1.5, 1.2, 1.0, 0.8, 0.5, 0.35, 0.3),
        weekend=0.6,
        monthly=(1.1, 1.0, 0.95, 0.9, 0.95, 1.1, 1.3, 1.3, 1.05, 0.9, 0.95, 1.05),
        power_factor=0.9,
        mean_watts=6_000,
    ),
    CustomerClass.SMALL_INDUSTRIAL: ClassShape(
        hourly=(0.4, 0.4, 0.4, 0.4, 0.4, 0.5, 0.9, 1.3, 1.4, 1.4, 1.4, 1.3,
                1.0, 1.3, 1.4, 1.4, 1.4, 1.3, 1.2, 1.1, 1.0, 0.8, 0.5, 0.4),
        weekend=0.5,
        monthly=(0.95, 0.8, 1.0, 1.0, 1.0, 1.05, 1.05, 1.05, 1.0, 1.0, 1.05, 1.05),
        power_factor=0.85,
        mean_watts=40_000,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class LoadProfile:
    """A customer's load: class shape × ``scale`` × seeded noise, minus rooftop PV.

    ``pv_peak_watts`` > 0 adds PV generation (a clear-sky bell from 06:00 to 18:00 local
    with a seeded cloud factor per slot); the meter sees the net, exporting when negative.
    """

    customer_class: CustomerClass = CustomerClass.RESIDENTIAL
    seed: int = 0
    scale: float = 1.0
    noise: float = 0.15
    pv_peak_watts: int = 0
    shape: ClassShape = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", SHAPES[CustomerClass(self.customer_class)])
        key = (self.customer_class, self.seed, self.scale, self.noise, self.pv_peak_watts)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        # Hashed once: the slot cache below looks a profile up for every meter at every
        # step, and the generated hash would rehash the whole class shape each time.
        return self._hash  # type: ignore[attr-defined, no-any-return]

    def power(self, utc_us: int) -> tuple[int, int]:
        return _slot_power(self, utc_us // SLOT_US)

    def next_change(self, utc_us: int) -> int:
        return _next_slot(utc_us)

    def consumption_watts(self, slot: int) -> int:
        local = from_us(slot * SLOT_US + LOCAL_SHIFT_US)
        shape = self.shape
        factor = shape.hourly[local.hour] * shape.monthly[local.month - 1]
        if local.weekday() >= 5:
            factor *= shape.weekend
        rng = random.Random(f"load:{self.seed}:{slot}")
        factor *= max(0.05, rng.gauss(1.0, self.noise))
        return round(shape.mean_watts * self.scale * factor)

    def pv_watts(self, slot: int) -> int:
        if self.pv_peak_watts <= 0:
            return 0
        local = from_us(slot * SLOT_US + LOCAL_SHIFT_US + SLOT_US // 2)
        hour = local.hour + local.minute / 60
        if not 6.0 <= hour <= 18.0:
            return 0
        season = 0.75 + 0.25 * math.cos(2 * math.pi * (local.timetuple().tm_yday - 172) / 365)
        clouds = random.Random(f"pv:{self.seed}:{slot}").uniform(0.3, 1.0)
        return round(self.pv_peak_watts * math.sin(math.pi * (hour - 6) / 12) * season * clouds)


@lru_cache(maxsize=200_000)
def _slot_power(profile: LoadProfile, slot: int) -> tuple[int, int]:
    consumed = profile.consumption_watts(slot)
    pf = profile.shape.power_factor
    reactive = round(consumed * math.tan(math.acos(pf)))  # the house's own, inductive
    return consumed - profile.pv_watts(slot), reactive


@dataclass(frozen=True)
class ConstantLoad:
    """A fixed draw (tests, street lights, an illegal tap)."""

    watts: int
    var: int = 0

    def power(self, utc_us: int) -> tuple[int, int]:
        return self.watts, self.var

    def next_change(self, utc_us: int) -> int:
        return _next_slot(utc_us)


@dataclass(frozen=True)
class ScaledLoad:
    """``load`` × ``numerator / denominator`` (floored): a bypass that hides part of a load."""

    load: Load
    numerator: int
    denominator: int

    def power(self, utc_us: int) -> tuple[int, int]:
        p, q = self.load.power(utc_us)
        return p * self.numerator // self.denominator, q * self.numerator // self.denominator

    def next_change(self, utc_us: int) -> int:
        return self.load.next_change(utc_us)


class SwitchedLoad:
    """A load behind a switch (the meter's relay, a fuse): zero while ``on`` is False."""

    def __init__(self, load: Load, on: bool = True) -> None:
        self.load = load
        self.on = on

    def power(self, utc_us: int) -> tuple[int, int]:
        return self.load.power(utc_us) if self.on else (0, 0)

    def next_change(self, utc_us: int) -> int:
        return self.load.next_change(utc_us)


@dataclass(frozen=True)
class CompositeLoad:
    """The sum of several loads (what a supply meter sees)."""

    parts: tuple[Load, ...]

    def power(self, utc_us: int) -> tuple[int, int]:
        p = q = 0
        for part in self.parts:
            dp, dq = part.power(utc_us)
            p += dp
            q += dq
        return p, q

    def next_change(self, utc_us: int) -> int:
        return min((part.next_change(utc_us) for part in self.parts), default=_next_slot(utc_us))


def integrate(load: Load, start_us: int, end_us: int) -> tuple[int, int]:
    """∫ P dt and ∫ Q dt over [start, end) in W·µs (= µJ) and var·µs, exactly."""
    p_total = q_total = 0
    t = start_us
    while t < end_us:
        nxt = min(load.next_change(t), end_us)
        p, q = load.power(t)
        p_total += p * (nxt - t)
        q_total += q * (nxt - t)
        t = nxt
    return p_total, q_total
