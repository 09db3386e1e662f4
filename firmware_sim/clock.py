"""Simulated time: one accelerated UTC clock for the whole simulation, and each meter's own clock.

All simulated instants are aware UTC ``datetime`` s. Inside the model they become integer
microseconds since the Unix epoch (``to_us``/``from_us``) so energy integrals stay exact.

A meter keeps local wall time (Asia/Shanghai by default) that runs fast or slow by its drift
(ppm) and may be off by an offset (a clock jump, or a set that missed): that local time, not
UTC, decides tariffs and freezes, as on a real meter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from shared_protocol.timebase import DEFAULT_METER_ZONE, meter_time_to_utc, utc_to_meter_time

__all__ = ["MeterClock", "SimClock", "from_us", "to_us"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(instant: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    if instant.tzinfo is None:
        raise ValueError("simulated instants must be aware UTC datetimes")
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class SimClock:
    """Simulated UTC time running ``acceleration`` times faster than a monotonic wall clock.

    ``fast_forward`` and ``advance_to`` jump ahead instantly (the meters integrate the jump
    piecewise when they are next advanced). ``wall`` is injectable for tests.
    """

    def __init__(
        self,
        start: datetime,
        acceleration: float = 1.0,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("SimClock start must be an aware UTC datetime")
        if acceleration <= 0:
            raise ValueError(f"acceleration must be positive, got {acceleration}")
        self._wall = wall
        self._wall_zero = wall()
        self._start_us = to_us(start)
        self._jumped_us = 0
        self.acceleration = acceleration

    def now(self) -> datetime:
        return from_us(self.now_us())

    def now_us(self) -> int:
        elapsed = (self._wall() - self._wall_zero) * self.acceleration
        return self._start_us + self._jumped_us + int(elapsed * 1_000_000)

    def fast_forward(self, delta: timedelta) -> datetime:
        """Jump ``delta`` ahead (never back: meters do not un-integrate)."""
        if delta < timedelta(0):
            raise ValueError("SimClock cannot go back in time")
        self._jumped_us += delta // timedelta(microseconds=1)
        return self.now()

    def advance_to(self, instant: datetime) -> datetime:
        """Jump to ``instant`` if it is ahead of now; otherwise stay."""
        ahead = to_us(instant) - self.now_us()
        if ahead > 0:
            self._jumped_us += ahead
        return self.now()

    def set_acceleration(self, acceleration: float) -> None:
        """Change the speed without a jump in simulated time."""
        if acceleration <= 0:
            raise ValueError(f"acceleration must be positive, got {acceleration}")
        now = self.now_us()
        self._wall_zero = self._wall()
        self._start_us, self._jumped_us = now, 0
        self.acceleration = acceleration


class MeterClock:
    """A meter's local clock: UTC + offset + drift, shown in the meter's zone.

    Seen as a "meter UTC" ``m(u) = u + offset + drift·(u − anchor)``; the local wall time is
    ``m(u)`` in ``zone``. Setting the clock moves ``offset`` and re-anchors the drift.
    """

    def __init__(
        self, zone: str = DEFAULT_METER_ZONE, drift_ppm: float = 0.0, offset_us: int = 0
    ) -> None:
        self.zone = zone
        self.drift_ppm = drift_ppm
        self.offset_us = offset_us
        self.anchor_us = 0  # where drift starts counting; a Meter sets it to its start

    @property
    def _rate(self) -> float:
        return self.drift_ppm * 1e-6

    def meter_us(self, utc_us: int) -> int:
        """The meter's idea of UTC (µs) at true ``utc_us``."""
        return utc_us + self.offset_us + round(self._rate * (utc_us - self.anchor_us))

    def utc_us_at(self, meter_us: int) -> int:
        """The true instant (µs, rounded up) at which the meter's idea of UTC is ``meter_us``."""
        u = self.anchor_us + (meter_us - self.offset_us - self.anchor_us) / (1 + self._rate)
        guess = int(u)
        while self.meter_us(guess) < meter_us:
            guess += 1
        while guess > 0 and self.meter_us(guess - 1) >= meter_us:
            guess -= 1
        return guess

    def local(self, utc_us: int) -> datetime:
        """The naive wall time the meter shows at true ``utc_us``."""
        return utc_to_meter_time(from_us(self.meter_us(utc_us)), self.zone)

    def set_local(self, local: datetime, at_utc_us: int) -> None:
        """Set the clock to show ``local`` at ``at_utc_us`` (drift continues from there)."""
        target = to_us(meter_time_to_utc(local, self.zone))
        self.anchor_us = at_utc_us
        self.offset_us = target - at_utc_us

    def jump(self, delta: timedelta, at_utc_us: int) -> None:
        """Clock-jump fault: the shown time moves by ``delta`` at ``at_utc_us``."""
        current = self.meter_us(at_utc_us)
        self.anchor_us = at_utc_us
        self.offset_us = current - at_utc_us + delta // timedelta(microseconds=1)

    def error(self, utc_us: int) -> timedelta:
        """How far the meter is off true time at ``utc_us`` (positive = fast)."""
        return timedelta(microseconds=self.meter_us(utc_us) - utc_us)
