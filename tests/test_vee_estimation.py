"""Estimation: the methods in the reference's order, every estimate flagged with its method
and kept out of ``readings``, and accuracy on the simulator's load curves.

Accuracy, on what the simulator's meter model measures (``firmware_sim.meter.Meter`` with a
seeded ``LoadProfile``): its 15-minute active-power curve and its daily freezes. The
simulator draws each quarter hour's load with independent noise (σ = 15 %), so no method
can guess a single missing point to 5 %; what estimation can get right — and what billing
uses — is the energy: with the daily freeze known, a day's estimates are scaled so that the
day adds up to the freeze exactly, and a ≤ 1 h gap's energy then comes out within 5 % (plus
the freeze's own 0.01 kWh resolution).
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select
from vee_support import (
    DAY,
    QUARTER,
    Feed,
    curve,
    exceptions,
    local_midnight,
    reading,
    rules_raised,
)

from central.db.schema import readings
from central.db.vee_tables import estimated_readings
from central.ingest.store import IncomingReading
from central.vee import channel_series, close_day, set_meter_settings
from central.vee.estimate import LikeDay, estimate_day, like_day_candidates
from firmware_sim.load import CustomerClass, LoadProfile
from firmware_sim.meter import Meter

pytest_plugins = ["central_fixtures"]

P = "1-0:16.7.0"
H = Decimal("0.25")  # hours in a quarter


def estimates(engine: Engine) -> dict[tuple[str, datetime], tuple[Decimal, str, dict[str, object]]]:
    with engine.connect() as conn:
        return {
            (r.meter, r.ts): (r.value, r.method, r.based_on)
            for r in conn.execute(select(estimated_readings))
        }


def test_like_day_candidates_follow_the_equivalent_day_table() -> None:
    tuesday = date(2026, 3, 3)
    # Same weekday nearest first (1, 2, 3 weeks back), then Wednesdays, then Thursdays.
    assert like_day_candidates(tuesday, 21)[:4] == [
        date(2026, 2, 24),
        date(2026, 2, 17),
        date(2026, 2, 10),
        date(2026, 2, 25),
    ]
    monday = date(2026, 3, 2)
    assert like_day_candidates(monday, 21) == [
        date(2026, 2, 23),
        date(2026, 2, 16),
        date(2026, 2, 9),
    ]


def test_linear_values_are_exact() -> None:
    known = {k: Decimal(k) for k in range(96) if not 10 <= k <= 13}
    made = estimate_day(count=96, known=known, register=False, hours_per_interval=H, max_linear=4)
    # Between 9 and 14 over 5 steps: 10, 11, 12, 13.
    assert {k: (e.value, e.method) for k, e in made.items()} == {
        k: (Decimal(k), "LIN") for k in range(10, 14)
    }


def test_order_lin_then_reg_then_likeday() -> None:
    values = {k: Decimal("1.0") + Decimal(k % 5) / 10 for k in range(96)}
    known = {k: v for k, v in values.items() if not (10 <= k <= 13 or 40 <= k <= 59)}
    like = [LikeDay(date(2026, 2, 24), values)]
    # No freeze: the 4-point gap is LIN, the 20-point gap is copied from the like day.
    made = estimate_day(
        count=96, known=known, register=False, hours_per_interval=H, max_linear=4, like_days=like
    )
    assert {e.method for k, e in made.items() if k < 20} == {"LIN"}
    assert {e.method for k, e in made.items() if k >= 40} == {"LIKEDAY"}
    assert all(made[k].value == values[k] for k in range(40, 60))
    # With the day's energy known, the long gap is REG and the day adds up exactly.
    day_energy = sum(values.values()) * H + Decimal("1.00")
    made = estimate_day(
        count=96,
        known=known,
        register=False,
        hours_per_interval=H,
        max_linear=4,
        like_days=like,
        day_energy=day_energy,
    )
    assert {e.method for k, e in made.items() if k >= 40} == {"REG"}
    total = (sum(known.values()) + sum(e.value for e in made.values())) * H
    assert total == day_energy
    # Without a like day or a freeze, a long gap stays open.
    made = estimate_day(count=96, known=known, register=False, hours_per_interval=H, max_linear=4)
    assert sorted(made) == [10, 11, 12, 13]


def test_register_curve_gap_scaled_to_the_registers() -> None:
    registers = {k: Decimal(100) + Decimal(k) / 4 for k in range(-1, 97)}
    known = {k: v for k, v in registers.items() if not 20 <= k <= 39}
    made = estimate_day(count=96, known=known, register=True, hours_per_interval=H, max_linear=4)
    assert {e.method for e in made.values()} == {"REG"}
    assert [made[k].value for k in range(20, 40)] == [registers[k] for k in range(20, 40)]


def test_estimates_stay_out_of_readings_and_carry_their_method(engine: Engine) -> None:
    feed = Feed(engine)
    values = [Decimal("0.4") + Decimal(k % 9) / 20 for k in range(96)]
    feed.send_all(curve("m1", DAY - timedelta(days=7), values))  # the like day
    holed: list[Decimal | None] = list(values)
    for k in (*range(5, 8), *range(30, 42)):
        holed[k] = None
    feed.send_all(curve("m1", DAY, holed))
    summary = close_day(engine, DAY)
    assert summary["estimated"] == {"LIKEDAY": 12, "LIN": 3}
    made = estimates(engine)
    assert len(made) == 15
    assert all(based_on for _, _, based_on in made.values())
    with engine.connect() as conn:
        stored = set(conn.execute(select(readings.c.ts).where(readings.c.meter == "m1")).scalars())
        assert not stored & {ts for _, ts in made}
        series = channel_series(
            conn, "m1", P, local_midnight(DAY), local_midnight(DAY) + 96 * QUARTER
        )
    assert len(series) == 96
    assert sum(1 for p in series if p["estimated"]) == 15
    assert {p.get("method") for p in series if p["estimated"]} == {"LIN", "LIKEDAY"}
    [v1] = exceptions(engine, rule="V1")
    assert v1["detail"]["estimated"] == {"LIN": 3, "LIKEDAY": 12}


def simulated_area(
    days: int, seeds: tuple[int, ...]
) -> tuple[list[IncomingReading], dict[tuple[str, datetime], Decimal]]:
    """Meters of the simulator with their 15-minute power curve (kW, as the 645 load
    profile gives it) and daily freezes, over ``days`` local days from DAY − days."""
    first = DAY - timedelta(days=days)
    start = local_midnight(first)
    zone = ZoneInfo("Asia/Shanghai")
    classes = (CustomerClass.RESIDENTIAL, CustomerClass.COMMERCIAL, CustomerClass.SMALL_INDUSTRIAL)
    out: list[IncomingReading] = []
    truth: dict[tuple[str, datetime], Decimal] = {}
    for n, seed in enumerate(seeds):
        meter = f"sim{n}"
        model = Meter(meter, LoadProfile(classes[n % 3], seed=seed), start - QUARTER, seed=seed)
        model.advance(start + timedelta(days=days, minutes=1))
        for point in model.curve:
            ts = point.time.replace(tzinfo=zone).astimezone(UTC)
            if start <= ts < start + timedelta(days=days):
                value = (Decimal(point.active_w) / 1000).quantize(Decimal("0.0001"))
                truth[meter, ts] = value
                out.append(reading(meter, P, ts, value, kind="curve"))
        for frozen in model.daily:
            ts = frozen.time.replace(tzinfo=zone).astimezone(UTC)
            out.append(reading(meter, "1-0:1.8.0", ts, frozen.registers.import_kwh()))
            out.append(reading(meter, "1-0:2.8.0", ts, frozen.registers.export_kwh()))
    return out, truth


@pytest.mark.parametrize("gaps_per_day", [1, 3])
def test_accuracy_on_simulated_curves(engine: Engine, gaps_per_day: int) -> None:
    data, truth = simulated_area(days=4, seeds=(11, 12, 13))
    rng = random.Random(gaps_per_day)
    removed: list[list[tuple[str, datetime]]] = []
    for meter in ("sim0", "sim1", "sim2"):
        for back in (3, 2, 1):
            start = local_midnight(DAY - timedelta(days=back))
            taken: set[int] = set()
            placed = 0
            while placed < gaps_per_day:  # gaps of 1–4 quarters with real points around
                length = rng.randint(1, 4)
                first = rng.randint(1, 94 - length)
                span = set(range(first - 1, first + length + 1))
                if span & taken:
                    continue
                taken |= span
                placed += 1
                removed.append([(meter, start + QUARTER * k) for k in range(first, first + length)])
    gone = {key for gap in removed for key in gap}
    feed = Feed(engine, meters=["sim0", "sim1", "sim2"])
    with engine.begin() as conn:  # business meters are three-phase: 3 × 220 V × 100 A
        for meter in ("sim1", "sim2"):
            since = local_midnight(DAY - timedelta(days=30))
            set_meter_settings(
                conn, meter, effective_from=since, by="t", phases=3, max_current_a=100
            )
    feed.send_all([r for r in data if (r.meter, r.time) not in gone])
    assert rules_raised(engine) == []  # the simulator's data is clean
    for back in (3, 2, 1):
        close_day(engine, DAY - timedelta(days=back))
    made = estimates(engine)
    assert set(made) == gone  # every removed point estimated, nothing else
    assert {method for _, method, _ in made.values()} == {"LIN"}
    with engine.connect() as conn:
        real = set(
            conn.execute(select(readings.c.meter, readings.c.ts).where(readings.c.obis == P)).all()
        )
    assert not real & gone
    gap_energy_errors = []
    for gap in removed:
        true = sum(truth[key] for key in gap) * H
        guess = sum(made[key][0] for key in gap) * H
        gap_energy_errors.append((guess, true))
        if gaps_per_day == 1:
            # The day adds up to the freeze, so the one gap carries the rest: within 5 %
            # plus the two truncated freezes' 0.01 kWh.
            assert abs(guess - true) <= true * Decimal("0.05") + Decimal("0.01"), gap
    total_true = sum(t for _, t in gap_energy_errors)
    total_guess = sum(g for g, _ in gap_energy_errors)
    # Over all gaps the estimated energy is unbiased: within 5 % of the truth.
    assert abs(total_guess - total_true) <= total_true * Decimal("0.05")
    # Each day's real and estimated intervals add up to its freezes exactly.
    frozen = {(r.meter, r.obis, r.time): r.value for r in data if r.kind == "daily"}
    for meter in ("sim0", "sim1", "sim2"):
        for back in (3, 2, 1):
            begin, end = (local_midnight(DAY - timedelta(days=back - n)) for n in (0, 1))
            energy = (frozen[meter, "1-0:1.8.0", end] - frozen[meter, "1-0:1.8.0", begin]) - (
                frozen[meter, "1-0:2.8.0", end] - frozen[meter, "1-0:2.8.0", begin]
            )
            day = [begin + QUARTER * k for k in range(96)]
            points = [made[meter, t][0] if (meter, t) in gone else truth[meter, t] for t in day]
            assert sum(points) * H == energy
    point_errors = [abs(made[key][0] - truth[key]) / truth[key] for key in gone]
    print(
        f"gaps/day {gaps_per_day}: {len(removed)} gaps, {len(gone)} points; gap energy error "
        f"mean {sum(abs(g - t) / t for g, t in gap_energy_errors) / len(removed):.4f}; "
        f"total {(total_guess - total_true) / total_true:.4f}; point MAPE "
        f"{sum(point_errors) / len(point_errors):.4f}"
    )
