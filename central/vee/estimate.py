"""Estimation of missing curve points for one meter, quantity and day — pure functions.

The order is the reference's (central.md b.1, "Estimation hierarchy"); the check/sibling
meter (step 1) is not available to us, and class profiles / temperature (steps 5–6) are not
built:

1. **LIN** — a gap of at most ``max_linear`` intervals (1 h at 15 min) with a real point on
   both sides is interpolated linearly (IESO point-to-point ≤ 1 h [S19], Oracle [S3]).
2. **REG** — register-constrained: where the day's energy is known (the daily-freeze delta;
   for a power curve the net of import and export), longer gaps take a like day's shape,
   and all the day's estimates are scaled by one factor so that real + estimated intervals
   add up to it exactly (Itron's flat-line difference [S18b], Oracle scalar proration [S3]).
   A register curve's gap between two real points is its own constraint: the like day's
   increments are scaled to the difference.
3. **LIKEDAY** — otherwise the like day's values are copied: the same weekday 1, 2, 3 weeks
   back first, then the nearest equivalent weekday (WA metering code: Tue→Wed/Thu,
   Wed→Tue/Thu, Thu→Wed/Tue [S19f]; IESO: the same day three weeks earlier [S19]).

A gap that none of these can fill is left open and listed in the V1 exception. Every
estimate carries its method and what it was made from (``based_on``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

__all__ = [
    "EQUIVALENT_WEEKDAYS",
    "Estimate",
    "LikeDay",
    "estimate_day",
    "like_day_candidates",
]

LIN: Final = "LIN"
REG: Final = "REG"
LIKEDAY: Final = "LIKEDAY"
_PLACES: Final = Decimal("0.000001")  # the readings column's scale
#: WA Electricity Industry (Metering) Code, App. 3 [S19f]: weekday → like weekdays, best first.
EQUIVALENT_WEEKDAYS: Final[Mapping[int, tuple[int, ...]]] = {
    0: (0,),
    1: (1, 2, 3),
    2: (2, 1, 3),
    3: (3, 2, 1),
    4: (4,),
    5: (5,),
    6: (6,),
}
#: A scale factor outside this range means the freeze and the curve disagree: no REG.
_MAX_FACTOR: Final = Decimal(10)


@dataclass(frozen=True, slots=True)
class Estimate:
    value: Decimal
    method: str
    based_on: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LikeDay:
    """A past day's real points: interval index (0..n-1 from local midnight) → value."""

    day: date
    points: Mapping[int, Decimal]


def like_day_candidates(day: date, lookback_days: int) -> list[date]:
    """Past days whose curves may stand in for ``day``, best first: the same weekday
    nearest first, then the other equivalent weekdays nearest first."""
    likes = EQUIVALENT_WEEKDAYS[day.weekday()]
    back = [day - timedelta(days=n) for n in range(1, lookback_days + 1)]
    return sorted(
        (d for d in back if d.weekday() in likes),
        key=lambda d: (likes.index(d.weekday()), day - d),
    )


def estimate_day(
    *,
    count: int,
    known: Mapping[int, Decimal],
    held: frozenset[int] = frozenset(),
    register: bool,
    hours_per_interval: Decimal,
    max_linear: int,
    like_days: Sequence[LikeDay] = (),
    day_energy: Decimal | None = None,
) -> dict[int, Estimate]:
    """Estimates for the missing intervals of one channel-day.

    ``known`` maps interval index → real value; index -1 (the point before the day) and
    ``count`` (the first point of the next day) may be given as anchors. ``held`` are
    indexes of real readings VEE failed: not estimated, not used as anchors. ``register``:
    cumulative values (a register curve) rather than rates (power). ``day_energy``: the
    day's energy from the freezes, for a power curve's constraint. ``like_days``: real
    points of candidate like days, best first.
    """
    missing = [k for k in range(count) if k not in known and k not in held]
    if not missing:
        return {}
    gaps = _runs(missing)
    result: dict[int, Estimate] = {}
    long_gaps: list[list[int]] = []
    for gap in gaps:
        left, right = gap[0] - 1, gap[-1] + 1
        if len(gap) <= max_linear and left in known and right in known:
            low, high = known[left], known[right]
            steps = len(gap) + 1
            for n, k in enumerate(gap, start=1):
                value = low + (high - low) * n / steps
                result[k] = Estimate(value, LIN, {"between": [left, right]})
        else:
            long_gaps.append(gap)
    if register:
        for gap in long_gaps:
            result.update(_register_gap(gap, known, like_days))
        return _rounded(result)
    shaped = {}
    for gap in long_gaps:
        shaped.update(_like_values(gap, like_days))
    constrained = (
        _constrain(result, shaped, known, held, count, hours_per_interval, day_energy)
        if day_energy is not None and not held
        else None
    )
    if constrained is not None:
        return constrained
    for k, (value, source) in shaped.items():
        result[k] = Estimate(value, LIKEDAY, {"like_day": source.isoformat()})
    return _rounded(result)


def _runs(indexes: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for k in indexes:
        if runs and runs[-1][-1] == k - 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    return runs


def _like_values(gap: list[int], like_days: Sequence[LikeDay]) -> dict[int, tuple[Decimal, date]]:
    """Each gap interval's value on the best like day that has it."""
    values: dict[int, tuple[Decimal, date]] = {}
    for k in gap:
        for like in like_days:
            value = like.points.get(k)
            if value is not None:
                values[k] = (value, like.day)
                break
    return values


def _constrain(
    linear: dict[int, Estimate],
    shaped: dict[int, tuple[Decimal, date]],
    known: Mapping[int, Decimal],
    held: frozenset[int],
    count: int,
    hours: Decimal,
    day_energy: Decimal,
) -> dict[int, Estimate] | None:
    """All estimates of the day scaled by one factor so that Σ intervals × h = the day's
    energy; None when that cannot be (a gap without a like value, or the freezes and the
    curve disagree)."""
    missing = {k for k in range(count) if k not in known and k not in held}
    if set(linear) | set(shaped) != missing:
        return None
    real = sum((known[k] for k in range(count) if k in known), Decimal(0)) * hours
    residual = day_energy - real
    estimated = (
        sum((e.value for e in linear.values()), Decimal(0))
        + sum((v for v, _ in shaped.values()), Decimal(0))
    ) * hours
    if residual < 0 or estimated <= 0 or residual / estimated > _MAX_FACTOR:
        return None
    factor = residual / estimated
    result: dict[int, Estimate] = {}
    for k, e in linear.items():
        based_on = dict(e.based_on, scaled_to_day_energy=str(day_energy))
        result[k] = Estimate(e.value * factor, LIN, based_on)
    for k, (value, source) in shaped.items():
        based_on = {"like_day": source.isoformat(), "scaled_to_day_energy": str(day_energy)}
        result[k] = Estimate(value * factor, REG, based_on)
    rounded = _rounded(result)
    # Rounding to the column's 6 places may leave a few µ-units: the largest estimate
    # takes them, so the day adds up exactly.
    target = residual / hours
    drift = target - sum((e.value for e in rounded.values()), Decimal(0))
    if drift:
        k = max(rounded, key=lambda k: rounded[k].value)
        e = rounded[k]
        rounded[k] = Estimate(e.value + drift, e.method, e.based_on)
    return rounded


def _register_gap(
    gap: list[int], known: Mapping[int, Decimal], like_days: Sequence[LikeDay]
) -> dict[int, Estimate]:
    """A register curve's long gap: the like day's increments, scaled to the real
    difference across the gap (REG), or accumulated from the last real value (LIKEDAY)."""
    left, right = gap[0] - 1, gap[-1] + 1
    if left not in known:
        return {}  # a register estimate needs a real value to start from
    closed = right in known
    needed = range(left, (right if closed else gap[-1]) + 1)
    like = next((d for d in like_days if all(k in d.points for k in needed)), None)
    increments = None
    if like is not None:
        increments = {k: like.points[k] - like.points[k - 1] for k in needed[1:]}
        if any(v < 0 for v in increments.values()) or not sum(increments.values()):
            increments = None
    result: dict[int, Estimate] = {}
    value = known[left]
    if closed:
        difference = known[right] - known[left]
        if difference < 0:
            return {}  # V7 holds one of the anchors; nothing sound to fill between
        based: dict[str, Any] = {"between": [left, right]}
        if increments is not None and like is not None:
            shape = increments
            based["like_day"] = like.day.isoformat()
        else:
            shape = dict.fromkeys(needed[1:], Decimal(1))
            based["shape"] = "flat"
        total = sum(shape.values(), Decimal(0))
        for k in gap:
            value += difference * shape[k] / total
            result[k] = Estimate(value, REG, dict(based))
        return result
    if increments is None or like is None:
        return {}
    for k in gap:
        value += increments[k]
        result[k] = Estimate(value, LIKEDAY, {"like_day": like.day.isoformat(), "from": left})
    return result


def _rounded(estimates: dict[int, Estimate]) -> dict[int, Estimate]:
    return {
        k: Estimate(e.value.quantize(_PLACES, rounding=ROUND_HALF_EVEN), e.method, e.based_on)
        for k, e in estimates.items()
    }
