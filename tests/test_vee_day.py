"""Meter-day VEE (close_day), rule by rule at the reference's thresholds (central.md b.1),
on SQLite and PostgreSQL. The day is Tuesday 2026-03-03 in Shanghai."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from vee_support import (
    DAY,
    GATEWAY,
    QUARTER,
    T0,
    Feed,
    curve,
    exceptions,
    freezes,
    local_midnight,
    reading,
    rising_values,
    rules_raised,
    status_of,
)

from central.db import make_engine
from central.db.schema import readings
from central.db.vee_tables import estimated_readings, vee_exceptions
from central.vee import close_day, list_exceptions, override_exception

pytest_plugins = ["central_fixtures"]

E = "1-0:1.8.0"
P = "1-0:16.7.0"


def test_v1_completeness_lists_the_gaps(engine: Engine) -> None:
    feed = Feed(engine)
    full = rising_values()
    holed = list(full)
    holed[30] = None
    feed.send_all(curve("m1", DAY, full) + curve("m2", DAY, holed))
    summary = close_day(engine, DAY)
    assert summary["expected"] == 2 * 96 and summary["received"] == 2 * 96 - 1
    assert summary["estimated"] == {"LIN": 1}
    [raised] = exceptions(engine, rule="V1")
    assert raised["meter"] == "m2" and raised["obis"] is None and raised["day"] == DAY
    assert raised["detail"]["obis"] == P
    assert raised["detail"]["gaps"] == [
        {
            "from": (T0 + 30 * QUARTER).isoformat(),
            "to": (T0 + 31 * QUARTER).isoformat(),
            "points": 1,
        }
    ]
    assert raised["detail"]["estimated"] == {"LIN": 1}


def test_v4_spike_max_against_third_max(engine: Engine) -> None:
    feed = Feed(engine)
    # Rising 0.500 … 0.595: with a spike at k = 40 the third highest is 0.594, and
    # 1.5 × 0.594 = 0.891. 0.891 passes; 0.8911 is a spike.
    ok, spiked = rising_values(), rising_values()
    ok[40], spiked[40] = Decimal("0.891"), Decimal("0.8911")
    feed.send_all(curve("m1", DAY, ok) + curve("m2", DAY, spiked))
    close_day(engine, DAY)
    [raised] = exceptions(engine, rule="V4")
    assert raised["meter"] == "m2" and raised["ts"] == T0 + 40 * QUARTER
    assert raised["detail"]["third_max"] == "0.594"
    assert status_of(engine, "m2", P, T0 + 40 * QUARTER) == "failed"
    assert status_of(engine, "m1", P, T0 + 40 * QUARTER) == "valid"


def test_v4_judges_only_a_day_with_half_its_intervals(engine: Engine) -> None:
    """A meter removed at 11:45 (47 quarters) or one that came at 12:00 (48): the same
    ramp, 2 × its third highest, is a spike only on the day with half its intervals."""
    feed = Feed(engine)
    ramp = rising_values()
    ramp[20] = Decimal("2")
    feed.send_all(curve("m1", DAY, ramp[:47]) + curve("m2", DAY, ramp[:48]))
    close_day(engine, DAY)
    assert [e["meter"] for e in exceptions(engine, rule="V4")] == ["m2"]


def test_v5_high_low_against_the_same_day_type(engine: Engine) -> None:
    feed = Feed(engine, meters=["m1", "m2", "m3", "m4"])
    first = DAY - timedelta(days=28)
    history = ["20" if (first + timedelta(days=n)).weekday() >= 5 else "10" for n in range(28)]
    # Weekday average 10 kWh: 30 (× 3.0) and 2 (× 0.2) pass; 30.01 and 1.99 do not.
    for meter, today in (("m1", "30"), ("m2", "30.01"), ("m3", "2"), ("m4", "1.99")):
        feed.send_all(freezes(meter, first, [*history, today]))
    close_day(engine, DAY)
    raised = {e["meter"]: e for e in exceptions(engine, rule="V5")}
    assert sorted(raised) == ["m2", "m4"]
    assert raised["m2"]["detail"]["direction"] == "high"
    assert raised["m2"]["detail"]["average_kwh"] == "10.0000"
    assert raised["m4"]["detail"]["direction"] == "low"
    closing = local_midnight(DAY + timedelta(days=1))
    assert raised["m2"]["ts"] == closing and raised["m2"]["obis"] == E
    assert status_of(engine, "m2", E, closing) == "failed"  # held for review
    assert status_of(engine, "m1", E, closing) == "valid"


def test_v5_knows_weekends(engine: Engine) -> None:
    """A Saturday of 60 kWh is 3 × the weekend average (20), though 6 × the weekdays'."""
    feed = Feed(engine)
    saturday = date(2026, 2, 28)
    first = saturday - timedelta(days=28)
    history = ["20" if (first + timedelta(days=n)).weekday() >= 5 else "10" for n in range(28)]
    feed.send_all(freezes("m1", first, [*history, "60"]))
    feed.send_all(freezes("m2", first, [*history, "60.01"]))
    close_day(engine, saturday)
    assert [e["meter"] for e in exceptions(engine, rule="V5")] == ["m2"]


def test_v6_zero_and_sustained_zero(engine: Engine) -> None:
    feed = Feed(engine, meters=["m1", "m2", "m3"])
    first = DAY - timedelta(days=10)
    feed.send_all(freezes("m1", first, ["10"] * 10 + ["0"]))  # one zero day
    feed.send_all(freezes("m2", first, ["10"] * 8 + ["0", "0", "0"]))  # three
    feed.send_all(freezes("m3", first, ["10"] * 10 + ["0"]))  # zero, but power was down
    feed.store.record_gateway_event(
        GATEWAY, "meter.power_down", {"end": None}, T0 + timedelta(hours=3), meter="m3", seq=None
    )
    close_day(engine, DAY)
    raised = {e["meter"]: e for e in exceptions(engine, rule="V6")}
    assert sorted(raised) == ["m1", "m2"]
    assert raised["m1"]["severity"] == "information"
    assert raised["m2"]["severity"] == "issue" and raised["m2"]["detail"]["zero_days"] == 3
    closing = local_midnight(DAY + timedelta(days=1))
    assert status_of(engine, "m1", E, closing) == "flagged"
    assert status_of(engine, "m2", E, closing) == "failed"


def test_v10_intervals_against_the_daily_freeze(engine: Engine) -> None:
    feed = Feed(engine, meters=["m1", "m2", "m3"])
    # 0.9 / 1.1 kW alternating: Σ P × 0.25 h = 96 × 1.0 × 0.25 = 24 kWh.
    alternating = [Decimal("0.9") if k % 2 else Decimal("1.1") for k in range(96)]
    # Freeze deltas 24.00 (exact), 25.26 (1.26 off: 4.99 %) pass; 25.30 (5.14 %) fails.
    for meter, delta in (("m1", "24.00"), ("m2", "25.26"), ("m3", "25.30")):
        feed.send_all(curve(meter, DAY, alternating) + freezes(meter, DAY, [delta]))
    close_day(engine, DAY)
    [raised] = exceptions(engine, rule="V10")
    assert raised["meter"] == "m3"
    assert Decimal(raised["detail"]["intervals_kwh"]) == 24
    assert Decimal(raised["detail"]["freeze_delta_kwh"]) == Decimal("25.3")


def test_a_failed_point_of_the_next_day_does_not_switch_the_day_off(engine: Engine) -> None:
    """The next day's 00:00 point is loaded as the day's right-hand anchor; VEE failing it
    (99 kW > the 15.84 kW single-phase rating: V9) must not stop V10 and the scaling of
    estimates to the freeze for the day before (found by bench/vee_quality.py)."""
    feed = Feed(engine, meters=["m1", "m2"])
    flat = [Decimal("0.952") + Decimal("0.001") * k for k in range(96)]  # Σ × 0.25 = 24 kWh
    holed: list[Decimal | None] = list(flat)
    holed[40] = holed[41] = None
    feed.send_all(curve("m1", DAY, flat) + freezes("m1", DAY, ["30.00"]))  # 25 % off: V10
    feed.send_all(curve("m2", DAY, holed) + freezes("m2", DAY, ["24.30"]))
    following = local_midnight(DAY + timedelta(days=1))
    assert feed.send(*curve("m1", DAY + timedelta(days=1), ["99"])) == ["failed"]
    assert feed.send(*curve("m2", DAY + timedelta(days=1), ["99"])) == ["failed"]
    assert status_of(engine, "m2", P, following) == "failed"
    close_day(engine, DAY)
    assert rules_raised(engine, rule="V10") == ["V10"]
    [v10] = exceptions(engine, rule="V10")
    assert v10["meter"] == "m1"
    with engine.connect() as conn:
        made = conn.execute(select(estimated_readings.c.value)).scalars().all()
    real = sum((v for v in holed if v is not None), Decimal(0))
    assert (real + sum(made)) * Decimal("0.25") == Decimal("24.30")  # the freeze, exactly


def test_v13_frozen_non_zero_values(engine: Engine) -> None:
    feed = Feed(engine)
    seven, eight = rising_values(), rising_values()
    for k in range(10, 17):
        seven[k] = Decimal("0.7")
    for k in range(10, 18):
        eight[k] = Decimal("0.7")
    feed.send_all(curve("m1", DAY, seven) + curve("m2", DAY, eight))
    close_day(engine, DAY)
    [raised] = exceptions(engine, rule="V13")
    assert raised["meter"] == "m2" and raised["detail"]["intervals"] == 8
    assert raised["ts"] == T0 + 10 * QUARTER


def test_v13_leaves_a_registers_quiet_night_alone(engine: Engine) -> None:
    """A register read to 0.01 kWh rises by the same 0.02 kWh a quarter for hours at
    night: its last digit repeating, not a frozen value. Increments at or below the floor
    (0.2 kW × 0.25 h = 0.05 kWh a quarter) are not judged; 0.06 kWh eight times is."""
    feed = Feed(engine, meters=["m1", "m2", "m3"])

    def register(step: str, run: int) -> list[Decimal | None]:
        values: list[Decimal | None] = []
        value = Decimal(100)
        for k in range(97):  # to the next day's 00:00: the day's last increment
            values.append(value)
            value += Decimal(step) if k < run else Decimal("0.1") + Decimal("0.001") * k
        return values

    for meter, step in (("m1", "0.02"), ("m2", "0.05"), ("m3", "0.06")):
        points = register(step, 24)
        feed.send_all(
            curve(meter, DAY, points[:96], E)
            + curve(meter, DAY + timedelta(days=1), points[96:], E)
        )
    close_day(engine, DAY)
    [raised] = exceptions(engine, rule="V13")
    assert raised["meter"] == "m3" and raised["detail"]["value"] == "0.06"


def test_v14_prolonged_estimation(engine: Engine) -> None:
    feed = Feed(engine)
    holed = rising_values()
    holed[50] = None
    for back in range(3, -1, -1):  # m1: a gap on 4 days in a row, m2: on 3
        day = DAY - timedelta(days=back)
        feed.send_all(
            curve("m1", day, holed) + curve("m2", day, holed if back < 3 else rising_values())
        )
        close_day(engine, day)
    [raised] = exceptions(engine, rule="V14")
    assert raised["meter"] == "m1" and raised["day"] == DAY
    assert raised["detail"]["estimated_days"] == 4


def test_v15_meter_events_are_routed(engine: Engine) -> None:
    feed = Feed(engine)
    for code, hours in (("meter.cover_open", 2), ("meter.power_down", 3), ("uplink_nack", 4)):
        feed.store.record_gateway_event(
            GATEWAY, code, {"n": hours}, T0 + timedelta(hours=hours), meter="m1", seq=None
        )
    close_day(engine, DAY)
    raised = [
        (e["detail"]["code"], e["severity"], e["detail"]["route"]) for e in exceptions(engine)
    ]
    assert raised == [
        ("meter.cover_open", "issue", "theft"),
        ("meter.power_down", "information", "o&m"),
    ]


def test_close_day_again_replaces_open_exceptions_and_estimates(engine: Engine) -> None:
    feed = Feed(engine)
    holed = rising_values()
    holed[30] = None
    feed.send_all(curve("m1", DAY, holed))
    close_day(engine, DAY)
    close_day(engine, DAY)
    assert rules_raised(engine) == ["V1"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(estimated_readings)).scalar() == 1
    # The real point arrives late: it supersedes the estimate, and V1 goes away.
    feed.send_all(curve("m1", DAY, [None] * 30 + [Decimal("0.53")]))
    close_day(engine, DAY)
    assert rules_raised(engine) == []
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(estimated_readings)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(readings)).scalar() == 96


def test_closing_a_day_again_keeps_its_outcome(engine: Engine) -> None:
    """A spike and a high day held by close_day stay held when the day is closed again
    (the day's own earlier outcome is withdrawn before it is judged anew)."""
    feed = Feed(engine)
    spiked = rising_values()
    spiked[40] = Decimal("2")
    first = DAY - timedelta(days=28)
    history = ["20" if (first + timedelta(days=n)).weekday() >= 5 else "10" for n in range(28)]
    feed.send_all(curve("m1", DAY, spiked) + freezes("m1", first, [*history, "300"]))
    closing = local_midnight(DAY + timedelta(days=1))
    for _ in range(3):
        close_day(engine, DAY)
        assert sorted(rules_raised(engine)) == ["V10", "V4", "V5"]  # V10: 300 kWh vs the curve
        assert status_of(engine, "m1", P, T0 + 40 * QUARTER) == "failed"
        assert status_of(engine, "m1", E, closing) == "failed"
    # The held day is no history for the next: 4.5 kWh is within 0.2 × the weekday
    # average of 10 — it would not be within 0.2 × 24.5 with the 300 kWh day counted.
    register = 1000 + sum(Decimal(h) for h in history) + 300 + Decimal("4.5")
    after = local_midnight(DAY + timedelta(days=2))
    assert feed.send(reading("m1", E, after, register)) == ["valid"]
    summary = close_day(engine, DAY + timedelta(days=1), meters=["m1"])
    assert "V5" not in summary["exceptions"]
    # …whereas counting it (the override below accepts the 300 kWh day) makes 4.5 low.
    with engine.begin() as conn:
        [held] = list_exceptions(conn, rule="V5")
        override_exception(conn, held["id"], by="ops", reason="party")
    summary = close_day(engine, DAY + timedelta(days=1), meters=["m1"])
    assert summary["exceptions"].get("V5") == 1


def _outcome(engine: Engine) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The day's open exceptions and estimates, without ids and times of writing."""
    with engine.connect() as conn:
        raised = sorted(
            (r.meter, r.obis or "", r.ts, r.rule, r.severity, str(r.value_before), repr(r.detail))
            for r in conn.execute(select(vee_exceptions).where(vee_exceptions.c.status == "open"))
        )
        made = sorted(
            (r.meter, r.obis, r.ts, r.value, r.method)
            for r in conn.execute(select(estimated_readings))
        )
    return raised, made


def test_close_day_in_worker_processes_gives_the_one_process_outcome(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """workers=3 splits the meters (chunks of 2 here, so 9 meters are 5 chunks) across
    processes; the summary, exceptions and estimates equal those of one process."""
    monkeypatch.setattr("central.vee.day.METERS_PER_CHUNK", 2)
    names = [f"m{n}" for n in range(9)]
    feed = Feed(engine, names)
    first = DAY - timedelta(days=28)
    history = ["20" if (first + timedelta(days=n)).weekday() >= 5 else "10" for n in range(28)]
    for n, meter in enumerate(names):
        values = rising_values()
        if n % 3 == 0:
            values[10 + n] = None  # a quarter missing: LIN
        if n % 4 == 1:
            values[50:60] = [None] * 10  # 2½ h missing: like day or left open
        if n == 5:
            values[40] = Decimal("2")  # V4 spike
        closing = "300" if n == 7 else "12.2"  # V5 high (and V10) on m7
        feed.send_all(curve(meter, DAY, values) + freezes(meter, first, [*history, closing]))
    alone = close_day(engine, DAY)
    assert alone["meters"] == 9 and alone["estimated"].get("LIN") == 3
    assert {"V1", "V4", "V5"} <= set(alone["exceptions"])
    expected = _outcome(engine)

    def not_here(*_: object) -> None:
        raise AssertionError("workers=3 closed a chunk in the calling process")

    # The spawned workers import the module afresh: only this process's copy is replaced.
    monkeypatch.setattr("central.vee.day._close_chunk", not_here)
    together = close_day(engine, DAY, workers=3)
    assert together == alone
    assert _outcome(engine) == expected


def test_close_day_refuses_workers_it_cannot_have(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers must be 1 or more"):
        close_day(make_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}"), DAY, workers=0)
    with pytest.raises(ValueError, match="in-memory SQLite database cannot be shared"):
        close_day(make_engine("sqlite://"), DAY, workers=2)
