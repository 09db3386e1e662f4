"""Meter model physics: tariffs, freezes, relay, fast-forward, events, meter-state faults."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest

from firmware_sim.clock import MeterClock, SimClock, to_us
from firmware_sim.load import ConstantLoad, CustomerClass, LoadProfile, integrate
from firmware_sim.meter import (
    UJ_PER_KWH,
    EventKind,
    FaultKind,
    Meter,
    MeterFault,
    PrepaidParameters,
    RelayResult,
    RelayState,
    Tariff,
    TariffSchedule,
    kwh,
    random_faults,
)
from shared_protocol.timebase import meter_time_to_utc

# 2026-01-01 00:00 in Shanghai is 2025-12-31 16:00 UTC
LOCAL_MIDNIGHT = datetime(2025, 12, 31, 16, 0, tzinfo=UTC)
START = LOCAL_MIDNIGHT


def residential(seed: int = 7, **kwargs: object) -> Meter:
    load = LoadProfile(CustomerClass.RESIDENTIAL, seed=seed, pv_peak_watts=2500)
    return Meter("000000001234", load, START, seed=seed, **kwargs)  # type: ignore[arg-type]


def test_constant_kilowatt_day_splits_by_the_default_time_of_use_table() -> None:
    # Hand computation for 1000 W over one meter day with DEFAULT_TARIFF_SCHEDULE:
    # valley 00-08 + 23-24 = 9 h, flat 08-10 + 12-17 + 22-23 = 8 h,
    # peak 10-12 + 17-19 + 21-22 = 5 h, sharp 19-21 = 2 h.
    meter = Meter("1", ConstantLoad(1000), START)
    meter.advance(START + timedelta(days=1))
    s = meter.snapshot()
    assert [s.import_kwh(t) for t in Tariff] == [Decimal("2.00"), Decimal("5.00"),
                                                 Decimal("8.00"), Decimal("9.00")]  # fmt: skip
    assert s.import_kwh() == Decimal("24.00")
    assert s.import_uj[0] == 24 * UJ_PER_KWH


def test_tariffs_follow_the_meters_own_clock() -> None:
    # A meter one hour fast shows 01:00-09:00 during true 00:00-08:00: 7 h valley + 1 h flat.
    fast = Meter("1", ConstantLoad(1000), START, clock=MeterClock(offset_us=3_600_000_000))
    fast.advance(START + timedelta(hours=8))
    assert fast.snapshot().import_kwh(Tariff.VALLEY) == Decimal("7.00")
    assert fast.snapshot().import_kwh(Tariff.FLAT) == Decimal("1.00")


def test_tariff_registers_sum_to_the_total_exactly() -> None:
    meter = residential()
    meter.advance(START + timedelta(days=20, minutes=7, seconds=13))
    s = meter.snapshot()
    assert s.import_uj[0] == sum(s.import_uj[1:])
    assert s.export_uj[0] == sum(s.export_uj[1:])
    assert s.import_kwh() == sum(s.import_kwh(t) for t in Tariff)
    assert s.export_uj[0] > 0  # the PV exported on some days


def test_registers_integrate_the_load_exactly() -> None:
    load = LoadProfile(CustomerClass.COMMERCIAL, seed=3)
    meter = Meter("1", load, START)
    end = START + timedelta(days=3, hours=5)
    meter.advance(end)
    energy, _ = integrate(load, to_us(START), to_us(end))
    assert meter.snapshot().import_uj[0] == energy == meter.circuit_import_uj


def test_fast_forward_equals_stepping_exactly() -> None:
    jumped, stepped = residential(), residential()
    end = START + timedelta(days=10)
    jumped.advance(end)
    rng = random.Random(1)
    t = START
    while t < end:
        t = min(
            end, t + timedelta(seconds=rng.randrange(1, 3600), microseconds=rng.randrange(10**6))
        )
        stepped.advance(t)
    assert jumped.snapshot() == stepped.snapshot()
    assert list(jumped.daily) == list(stepped.daily)
    assert list(jumped.curve) == list(stepped.curve)


def test_daily_freeze_equals_the_register_at_meter_midnight() -> None:
    for drift in (0.0, 250.0):
        meter = residential(clock=MeterClock(drift_ppm=drift))
        meter.advance(START + timedelta(days=5, hours=3))
        assert len(meter.daily) == 5
        for record in meter.daily:
            assert record.time.time() == time(0, 0)
            twin = residential(clock=MeterClock(drift_ppm=drift))
            instant = twin.clock.utc_us_at(to_us(meter_time_to_utc(record.time)))
            twin.advance(instant)
            assert twin.snapshot() == record.registers


def test_history_depths_and_monthly_freeze_on_the_settlement_day() -> None:
    meter = residential(settlement_day=1)
    meter.advance(START + timedelta(days=400))
    assert len(meter.daily) == 62
    assert len(meter.monthly) == 12
    assert len(meter.curve) == 960
    assert all(r.time.day == 1 and r.time.hour == 0 for r in meter.monthly)
    assert meter.monthly_freeze(1).time == datetime(2027, 2, 1)
    assert meter.daily_freeze(1).time == datetime(2027, 2, 5)
    # curve points are 15 minutes apart in meter time
    times = [p.time for p in meter.curve]
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(times))


def test_a_tripped_meter_stops_and_close_allowed_waits_for_the_button() -> None:
    meter = residential()
    meter.advance(START + timedelta(days=1))
    assert meter.trip() is RelayResult.DONE
    frozen, circuit = meter.snapshot(), meter.circuit_import_uj
    meter.advance(START + timedelta(days=2))
    assert meter.snapshot() == frozen and meter.circuit_import_uj == circuit
    assert meter.instantaneous().active_kw == 0
    meter.close(directly=False)
    assert meter.relay is RelayState.CLOSE_ALLOWED
    meter.advance(START + timedelta(days=3))
    assert meter.snapshot() == frozen
    assert meter.press_button()
    meter.advance(START + timedelta(days=4))
    assert meter.snapshot().import_uj[0] > frozen.import_uj[0]
    assert meter.event_counts[EventKind.RELAY_TRIP] == 1
    assert meter.event_counts[EventKind.RELAY_CLOSE] == 1


def test_keep_power_blocks_a_trip() -> None:
    meter = residential()
    meter.set_keep_power(True)
    assert meter.trip() is RelayResult.KEEP_POWER
    assert meter.relay is RelayState.CLOSED


def test_same_seed_same_meter_other_seed_other_meter() -> None:
    a, b, c = residential(seed=5), residential(seed=5), residential(seed=6)
    for m in (a, b, c):
        m.advance(START + timedelta(days=3))
    assert a.snapshot() == b.snapshot()
    assert a.instantaneous() == b.instantaneous()
    assert a.snapshot() != c.snapshot()


def test_instantaneous_values_are_consistent_with_the_load() -> None:
    meter = Meter("1", ConstantLoad(2200, 0), START)
    inst = meter.instantaneous()
    assert inst.active_kw == Decimal("2.2000")
    assert inst.power_factor == Decimal("1.000")
    assert abs(inst.current[0] * inst.voltage[0] - 2200) < 1
    assert Decimal("49.9") < inst.frequency < Decimal("50.1")


def test_clock_set_power_down_and_clear_are_recorded() -> None:
    meter = residential()
    meter.advance(START + timedelta(hours=5))
    meter.set_clock(datetime(2026, 1, 1, 6, 0))
    assert meter.local_time() == datetime(2026, 1, 1, 6, 0)
    meter.apply_fault(MeterFault(START, FaultKind.POWER_DOWN))
    before = meter.snapshot()
    meter.advance(START + timedelta(hours=9))
    assert meter.snapshot() == before  # no supply, nothing registers
    meter.apply_fault(MeterFault(START, FaultKind.POWER_UP))
    record = meter.events[EventKind.POWER_DOWN][0]
    assert record.end is not None and record.end - record.start == timedelta(hours=4)
    meter.clear()
    assert meter.snapshot().import_uj[0] == 0
    assert meter.event_counts == {
        **dict.fromkeys(EventKind, 0),
        EventKind.CLOCK_SET: 1,
        EventKind.POWER_DOWN: 1,
        EventKind.METER_CLEAR: 1,
    }


def test_scheduled_faults_apply_at_their_instant() -> None:
    at = START + timedelta(days=1)
    faults = [
        MeterFault(at, FaultKind.CLOCK_JUMP, delta=timedelta(minutes=-30)),
        MeterFault(at + timedelta(hours=1), FaultKind.STUCK_REGISTER),
        MeterFault(at + timedelta(hours=3), FaultKind.UNSTICK_REGISTER),
        MeterFault(at + timedelta(hours=4), FaultKind.METER_RESET),
        MeterFault(at + timedelta(hours=5), FaultKind.METER_REPLACED, new_address="000000009999"),
    ]
    meter = Meter("000000001234", ConstantLoad(1000), START, faults=faults)
    meter.advance(at + timedelta(minutes=1))
    assert meter.clock.error(meter.now_us) == timedelta(minutes=-30)
    meter.advance(at + timedelta(hours=3))
    assert meter.snapshot().import_uj[0] == 25 * UJ_PER_KWH  # stuck for two of 27 hours
    assert meter.circuit_import_uj == 27 * UJ_PER_KWH
    meter.advance(at + timedelta(hours=4, minutes=30))
    assert meter.snapshot().import_kwh() == Decimal("0.50")
    assert meter.event_counts[EventKind.METER_CLEAR] == 1
    meter.advance(at + timedelta(hours=6))
    assert meter.address == "000000009999"
    assert meter.snapshot().import_kwh() == Decimal("1.00")
    assert meter.address_history[0][1] == "000000001234"


def test_relay_that_fails_to_operate_keeps_registering() -> None:
    meter = Meter("1", ConstantLoad(1000), START, faults=[MeterFault(START, FaultKind.RELAY_FAILS)])
    meter.advance(START + timedelta(hours=1))
    assert meter.trip() is RelayResult.DONE  # the command is accepted …
    meter.advance(START + timedelta(hours=2))
    assert meter.relay is RelayState.CLOSED  # … the contacts never moved
    assert meter.snapshot().import_kwh() == Decimal("2.00")
    assert meter.status_words()[2] & (1 << 6)  # relay command: trip
    assert not meter.status_words()[2] & (1 << 4)  # relay state: closed


def test_random_fault_plans_are_reproducible_by_seed() -> None:
    kinds = (FaultKind.CLOCK_JUMP, FaultKind.STUCK_REGISTER, FaultKind.METER_REPLACED)
    a = random_faults(11, START, 60, kinds, per_day=0.3)
    assert a == random_faults(11, START, 60, kinds, per_day=0.3)
    assert a != random_faults(12, START, 60, kinds, per_day=0.3)
    meters = [residential(faults=random_faults(11, START, 60, kinds, 0.3)) for _ in range(2)]
    for m in meters:
        m.advance(START + timedelta(days=60))
    assert meters[0].snapshot() == meters[1].snapshot()
    assert meters[0].address == meters[1].address


def test_tariff_schedule_refuses_bad_tables() -> None:
    with pytest.raises(ValueError, match="00:00"):
        TariffSchedule(((time(1, 0), Tariff.FLAT),))
    with pytest.raises(ValueError, match="15-minute"):
        TariffSchedule(((time(0, 0), Tariff.FLAT), (time(8, 10), Tariff.PEAK)))


def test_kwh_truncates_like_a_display() -> None:
    assert kwh(UJ_PER_KWH * 199 // 100 + UJ_PER_KWH // 1000 * 9) == Decimal("1.99")
    assert kwh(-UJ_PER_KWH // 2) == Decimal("-0.50")


def test_prepaid_remaining_credit_falls_with_import() -> None:
    meter = Meter("1", ConstantLoad(1000), START, prepaid=PrepaidParameters(credit=Decimal(10)))
    meter.advance(START + timedelta(hours=10))
    # 10 yuan − 10 kWh × 0.5283 yuan/kWh = 4.717 → shown to the fen: 4.72
    assert meter.remaining_credit() == Decimal("4.72")


def test_sim_clock_accelerates_an_injected_wall_clock() -> None:
    wall = [100.0]
    clock = SimClock(START, acceleration=1440, wall=lambda: wall[0])  # a day per minute
    wall[0] += 60
    assert clock.now() == START + timedelta(days=1)
    clock.fast_forward(timedelta(days=2))
    assert clock.now() == START + timedelta(days=3)
    clock.advance_to(START + timedelta(days=1))  # never back
    assert clock.now() == START + timedelta(days=3)
    with pytest.raises(ValueError):
        clock.fast_forward(timedelta(seconds=-1))
