"""How long things take on an RS-485 line: byte time, turnaround and meter latency.

A meter UART sends 8E1 (start, 8 data, even parity, stop): 11 bits per byte, so one byte
takes ``11 / baud`` seconds — 4.58 ms at 2400 baud. (pymodbus' ``_t0`` omits the parity bit
and is ~9 % short for 8E1; see ``../shared/reference/edge.md`` b.7.)

Everything here is arithmetic and seeded random draws: the bus core computes *when* each
byte is due and the transport sleeps until then, so tests check the numbers without
sleeping.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "BITS_PER_BYTE",
    "FixedLatency",
    "Latency",
    "NormalLatency",
    "UniformLatency",
    "WireTime",
    "byte_time",
    "latency_from_dict",
]

BITS_PER_BYTE: Final = 11
"""8E1: start bit + 8 data bits + even parity + stop bit."""


def byte_time(baud: int) -> float:
    """Seconds one 8E1 byte occupies the line at ``baud``."""
    return BITS_PER_BYTE / baud


@dataclass(frozen=True)
class FixedLatency:
    """The meter always answers after ``seconds``."""

    seconds: float = 0.0

    def __post_init__(self) -> None:
        _check_non_negative("seconds", self.seconds)

    def draw(self, rng: random.Random) -> float:
        return self.seconds


@dataclass(frozen=True)
class UniformLatency:
    """Latency uniformly distributed in ``[low, high]`` seconds."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_non_negative("low", self.low)
        if self.high < self.low:
            raise ValueError(f"high: {self.high} is below low ({self.low})")

    def draw(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class NormalLatency:
    """Gaussian latency clipped to ``[low, high]`` (a meter never answers before it can)."""

    mean: float
    stdev: float
    low: float = 0.0
    high: float = 2.0

    def __post_init__(self) -> None:
        _check_non_negative("mean", self.mean)
        _check_non_negative("stdev", self.stdev)
        _check_non_negative("low", self.low)
        if self.high < self.low:
            raise ValueError(f"high: {self.high} is below low ({self.low})")

    def draw(self, rng: random.Random) -> float:
        return min(self.high, max(self.low, rng.gauss(self.mean, self.stdev)))


Latency = FixedLatency | UniformLatency | NormalLatency

_DISTRIBUTIONS: Final[dict[str, type[Latency]]] = {
    "fixed": FixedLatency,
    "uniform": UniformLatency,
    "normal": NormalLatency,
}


def latency_from_dict(spec: Mapping[str, Any] | float | int, where: str = "latency") -> Latency:
    """``0.02`` (fixed), or ``{"distribution": "uniform", "low": 0.02, "high": 0.08}``.

    Errors name the field (``latency.high: …``) so a TOML config error is easy to find.
    """
    if isinstance(spec, bool):
        raise ValueError(f"{where}: expected seconds or a table, got {spec!r}")
    if isinstance(spec, int | float):
        try:
            return FixedLatency(float(spec))
        except ValueError as exc:
            raise ValueError(f"{where}.{exc}") from None
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected seconds or a table, got {type(spec).__name__}")
    kind = spec.get("distribution", "fixed")
    cls = _DISTRIBUTIONS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(
            f"{where}.distribution: {kind!r} is not one of {', '.join(sorted(_DISTRIBUTIONS))}"
        )
    params = {key: value for key, value in spec.items() if key != "distribution"}
    allowed = set(cls.__dataclass_fields__)
    for key, value in params.items():
        if key not in allowed:
            names = ", ".join(sorted(allowed))
            raise ValueError(f"{where}.{key}: unknown for a {kind} latency (allowed: {names})")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}.{key}: expected seconds (a number), got {value!r}")
    try:
        return cls(**{key: float(value) for key, value in params.items()})
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None


@dataclass(frozen=True)
class WireTime:
    """Wire-time emulation for one bus.

    ``turnaround`` is the pause between the last request byte and the meter driving the
    line (its transceiver switching direction); ``latency`` is the meter's own processing
    time on top of it, drawn per reply (per-meter overrides live on the bus). ``echo``
    makes the line return the master's own bytes as a half-duplex adapter without echo
    suppression does.
    """

    baud: int = 2400
    turnaround: float = 0.0
    latency: Latency = field(default_factory=FixedLatency)
    echo: bool = False

    def __post_init__(self) -> None:
        if self.baud <= 0:
            raise ValueError(f"baud: must be positive, got {self.baud}")
        _check_non_negative("turnaround", self.turnaround)

    @property
    def byte_time(self) -> float:
        return byte_time(self.baud)

    def transmit_time(self, size: int) -> float:
        """Seconds ``size`` bytes occupy the line."""
        return size * BITS_PER_BYTE / self.baud

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], where: str = "wire_time") -> WireTime:
        """``{"baud": 2400, "turnaround": 0.005, "latency": {...}, "echo": false}``."""
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where}: expected a table, got {type(spec).__name__}")
        unknown = set(spec) - {"baud", "turnaround", "latency", "echo"}
        if unknown:
            raise ValueError(f"{where}.{sorted(unknown)[0]}: unknown field")
        baud = spec.get("baud", 2400)
        if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"{where}.baud: expected a positive integer, got {baud!r}")
        turnaround = spec.get("turnaround", 0.0)
        if isinstance(turnaround, bool) or not isinstance(turnaround, int | float):
            raise ValueError(f"{where}.turnaround: expected seconds, got {turnaround!r}")
        if turnaround < 0:
            raise ValueError(f"{where}.turnaround: must not be negative, got {turnaround}")
        echo = spec.get("echo", False)
        if not isinstance(echo, bool):
            raise ValueError(f"{where}.echo: expected true or false, got {echo!r}")
        latency = latency_from_dict(spec.get("latency", 0.0), f"{where}.latency")
        return cls(baud=baud, turnaround=float(turnaround), latency=latency, echo=echo)


def _check_non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ValueError(f"{name}: must not be negative, got {value}")
