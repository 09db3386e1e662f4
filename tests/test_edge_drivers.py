"""Protocol drivers against simulated meters on real lines; values checked against the
simulator's meter model (the ground truth), never against what we sent."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import date, timedelta
from decimal import Decimal

import pytest
from test_edge_bus_helpers import (
    address_645,
    archive_meter,
    model_meter,
    responders_645,
    served,
    sim_clock,
)

from edge_agent.archive import Meter as ArchiveMeter
from edge_agent.bus import BusMaster, Dlt645Match, Outcome, Priority, TimingPolicy, Transaction
from edge_agent.drivers import (
    Dlt645Driver,
    Dlt645v1997Driver,
    Dlt698Driver,
    DriverError,
    ModbusDriver,
    NotSupported,
    ReadFailed,
    Reading,
    RecordNotFound,
    driver_for,
    read_address,
    read_address_698,
    scan_645,
    sync_clock_broadcast,
)
from firmware_sim.faults import FaultPlan
from firmware_sim.meter import EventKind
from firmware_sim.meter import Meter as ModelMeter
from firmware_sim.responders import Dlt645Responder, Dlt698Responder, ModbusResponder
from firmware_sim.responders.modbus import modbus_values
from firmware_sim.wiretime import FixedLatency, WireTime
from shared_protocol import dlt645, dlt698
from shared_protocol.dlt645 import Standard
from shared_protocol.dlt698 import OAD, Data, DataType
from shared_protocol.timebase import meter_time_to_utc

BUS_SIZE = 32


def expected_daily(model: ModelMeter, n: int) -> dict[str, Decimal]:
    record = model.daily_freeze(n)
    assert record is not None
    registers = record.registers
    out = {f"1-0:1.8.{t}": registers.import_kwh(t) for t in range(5)}
    out |= {f"1-0:2.8.{t}": registers.export_kwh(t) for t in range(5)}
    return out


def archive(count: int, protocol: str = "dlt645-2007") -> list[ArchiveMeter]:
    return [archive_meter(address_645(i), protocol) for i in range(1, count + 1)]


def daily_pass(
    driver: Dlt645Driver, meters: list[ArchiveMeter], day: date
) -> dict[str, list[Reading] | DriverError]:
    results: dict[str, list[Reading] | DriverError] = {}
    for meter in meters:
        try:
            results[meter.key] = driver.read_daily_frozen(meter, day)
        except DriverError as exc:
            results[meter.key] = exc
    return results


def check_against_truth(
    readings: list[Reading], model: ModelMeter, day: date, zone: str = "Asia/Shanghai"
) -> None:
    """Every reading equals the model's freeze of ``day`` 00:00 and carries its time."""
    n = (model.local_time().date() - day).days + 1
    expected = expected_daily(model, n)
    record = model.daily_freeze(n)
    assert record is not None
    assert {r.obis for r in readings} == set(expected)
    for reading in readings:
        assert reading.value == expected[reading.obis], (reading, model.address)
        assert reading.time == meter_time_to_utc(record.time, zone)
        assert reading.meter == model.address


# ---------------------------------------------------------------- 645-2007, 32 meters


def test_32_meter_daily_collection_over_a_pty() -> None:
    clock = sim_clock()
    responders = responders_645(BUS_SIZE, clock)
    models = {r.meter.address: r.meter for r in responders}
    with served(responders, "dlt645", "pty") as (master, _):
        driver = Dlt645Driver(master, now=clock.now)
        day = driver.gateway_date()  # the 00:00 freeze that closes yesterday
        started = time.monotonic()
        results = daily_pass(driver, archive(BUS_SIZE), day)
        elapsed = time.monotonic() - started
        good = [key for key, got in results.items() if isinstance(got, list)]
        assert len(good) / BUS_SIZE >= 0.999
        for key in good:
            got = results[key]
            assert isinstance(got, list)
            check_against_truth(got, models[key], day)
        # 4 frames a meter (date, freeze time, forward, reverse) and nothing else
        assert master.counters.tx_frames == 4 * BUS_SIZE
        assert master.counters.timeouts == 0
        print(f"32-meter daily pass: {elapsed:.3f} s, {len(good)}/{BUS_SIZE} meters")
        assert elapsed < 5.0
        # the older records too, each verified against its own freeze time
        older = daily_pass(driver, archive(4), day - timedelta(days=3))
        for key, got in older.items():
            assert isinstance(got, list)
            check_against_truth(got, models[key], day - timedelta(days=3))


def test_dead_meters_cost_at_most_one_timeout_per_pass() -> None:
    clock = sim_clock()
    responders = responders_645(BUS_SIZE, clock)
    dead = {responders[5].device_id, responders[20].device_id}  # 2 of 32 > 5 %
    faults = {key: FaultPlan.from_dict({"faults": [{"kind": "no_answer"}]}) for key in dead}
    models = {r.meter.address: r.meter for r in responders}
    with served(responders, "dlt645", "pty", per_device_faults=faults) as (master, _):
        driver = Dlt645Driver(master, now=clock.now)
        day = driver.gateway_date()
        for number in range(3):
            before = master.counters.timeouts
            started = time.monotonic()
            results = daily_pass(driver, archive(BUS_SIZE), day)
            elapsed = time.monotonic() - started
            timeouts = master.counters.timeouts - before
            assert timeouts <= len(dead), f"pass {number}: {timeouts} timeouts"
            live = [key for key in results if key not in dead]
            good = [key for key in live if isinstance(results[key], list)]
            assert len(good) / len(live) >= 0.999
            for key in good:
                got = results[key]
                assert isinstance(got, list)
                check_against_truth(got, models[key], day)
            for key in dead:
                assert isinstance(results[key], ReadFailed)
            print(f"pass {number}: {elapsed:.3f} s, {timeouts} timeouts")
        assert all(master.is_quarantined(key) for key in dead)
        assert master.counters.quarantined_meters == len(dead)


FAULT_KINDS = [
    {"kind": "garbage_before", "probability": 0.2},
    {"kind": "garbage_after", "probability": 0.2},
    {"kind": "bad_checksum", "probability": 0.1},
    {"kind": "wrong_address", "probability": 0.05},
    {"kind": "late", "delay": 0.06, "probability": 0.05},
    {"kind": "truncated", "probability": 0.05},
    {"kind": "intermittent", "probability": 0.05},
]


def mixed_faults(responders: list[Dlt645Responder], seed: int) -> dict[str, FaultPlan]:
    """One fault kind per meter, rotating (a late reply that also claims another meter's
    address is impersonation no master can detect, so those two never combine)."""
    return {
        r.device_id: FaultPlan.from_dict(
            {"seed": seed + i, "faults": [FAULT_KINDS[i % len(FAULT_KINDS)]]}
        )
        for i, r in enumerate(responders)
    }


def test_faulty_replies_never_attribute_a_value_to_the_wrong_meter() -> None:
    clock = sim_clock()
    responders = responders_645(BUS_SIZE, clock)
    models = {r.meter.address: r.meter for r in responders}
    with served(responders, "dlt645", "pty", per_device_faults=mixed_faults(responders, 3)) as (
        master,
        _,
    ):
        driver = Dlt645Driver(master, now=clock.now)
        day = driver.gateway_date()
        collected = 0
        for _ in range(3):  # 补抄-style re-passes pick up what faults cost
            for key, got in daily_pass(driver, archive(BUS_SIZE), day).items():
                if isinstance(got, list):
                    check_against_truth(got, models[key], day)
                    collected += 1
            for meter in archive(BUS_SIZE):
                master.release(meter.key)
        counters = master.counters
        assert counters.checksum_errors > 0 and counters.wrong_address > 0
        assert counters.bad_frames > 0
        assert collected >= BUS_SIZE * 3 * 0.8


def test_realtime_block_reads_cover_the_quantities_in_few_frames() -> None:
    clock = sim_clock()
    responders = responders_645(2, clock)
    with served(responders, "dlt645", "tcp://127.0.0.1:0") as (master, _):
        driver = Dlt645Driver(master, now=clock.now)
        meter = archive(1)[0]
        readings = driver.read_realtime(meter)
        by_obis = {r.obis: r.value for r in readings}
        model = responders[0].meter
        assert by_obis["1-0:1.8.0"] == model.snapshot().import_kwh()
        assert by_obis["1-0:32.7.0"] == model.instantaneous().voltage[0]
        assert "1-0:14.7.0" in by_obis
        assert master.counters.tx_frames == 7  # 6 blocks + frequency
        only = driver.read_realtime(meter, ["1-0:1.8.0", "1-0:1.8.3"])
        assert {r.obis for r in only} == {"1-0:1.8.0", "1-0:1.8.3"}
        assert master.counters.tx_frames == 8  # one block for both
        assert all(r.time.tzinfo is not None for r in readings)


def test_monthly_settlement_values_645() -> None:
    clock = sim_clock()
    responder = Dlt645Responder(model_meter(address_645(1), seed=1, days=40), clock)
    with served([responder], "dlt645", "pty") as (master, _):
        driver = Dlt645Driver(master, now=clock.now)
        meter = archive(1)[0]
        month = driver.gateway_date().replace(day=1)
        readings = driver.read_monthly_frozen(meter, month)
        record = responder.meter.monthly_freeze(1)
        assert record is not None
        by_obis = {r.obis: r for r in readings}
        assert by_obis["1-0:1.8.0"].value == record.registers.import_kwh()
        assert by_obis["1-0:1.8.0"].time == meter_time_to_utc(record.time)
        with pytest.raises(RecordNotFound):
            driver.read_monthly_frozen(meter, month.replace(year=month.year - 2))


def test_curve_points_carry_the_meters_quarter_hours() -> None:
    clock = sim_clock()
    responders = responders_645(1, clock)
    with served(responders, "dlt645", "pty") as (master, _):
        driver = Dlt645Driver(master, now=clock.now)
        start = clock.now() - timedelta(hours=2, minutes=7)
        points = driver.read_curve(archive(1)[0], start, 4)
        model_points = {meter_time_to_utc(p.time): p for p in responders[0].meter.curve}
        assert len(points) == 4
        for reading in points:
            assert reading.time.minute % 15 == 0
            assert reading.value == Decimal(model_points[reading.time].active_w) / 1000


def test_events_645_power_down_and_cover_open() -> None:
    clock = sim_clock()
    responder = Dlt645Responder(model_meter(address_645(1), seed=1), clock)
    model = responder.meter
    model.record_event(EventKind.COVER_OPEN)
    with served([responder], "dlt645", "pty") as (master, _):
        driver = Dlt645Driver(master, now=clock.now)
        events = driver.read_events(archive(1)[0])
        cover = [e for e in events if e.kind == "cover_open"]
        assert len(cover) == 1 and cover[0].sequence == 1 and cover[0].total == 1
        assert cover[0].start == meter_time_to_utc(model.events[EventKind.COVER_OPEN][0].start)
        # nothing new since the counter we already have
        assert driver.read_events(archive(1)[0], known={"cover_open": 1, "power_down": 0}) == [
            e for e in events if e.kind == "power_down"
        ]


def test_clock_read_and_broadcast_sync_645() -> None:
    clock = sim_clock()
    responders = responders_645(3, clock)
    responders[1].meter.clock.offset_us = 90_000_000  # 90 s fast
    with served(responders, "dlt645", "pty") as (master, _):
        driver = Dlt645Driver(master, now=clock.now)
        meters = archive(3)
        offsets = [driver.read_clock(m).offset.total_seconds() for m in meters]
        assert abs(offsets[0]) < 1.5 and abs(offsets[1] - 90) < 1.5
        result = sync_clock_broadcast(master, clock.now())
        assert result.outcome is Outcome.SENT
        time.sleep(0.05)
        assert abs(driver.read_clock(meters[1]).offset.total_seconds()) < 1.5
        with pytest.raises(NotSupported):
            driver.sync_clock(meters[0], clock.now())


def test_address_scan_finds_every_meter_and_read_address_the_only_one() -> None:
    clock = sim_clock()
    responders = responders_645(1, clock, start=12) + responders_645(1, clock, start=47)
    responders += responders_645(1, clock, start=3)
    with served(responders, "dlt645", "pty") as (master, _):
        assert scan_645(master) == sorted(r.meter.address for r in responders)
    with served(responders_645(1, clock, start=9), "dlt645", "pty") as (master, _):
        assert read_address(master) == address_645(9)


def test_priority_is_passed_to_the_bus() -> None:
    clock = sim_clock()
    with served(responders_645(1, clock), "dlt645", "pty") as (master, _):
        driver = Dlt645Driver(master, now=clock.now, priority=Priority.BACKFILL)
        assert driver.read_realtime(archive(1)[0], ["1-0:1.8.0"], priority=Priority.ON_DEMAND)


# ---------------------------------------------------------------- 645-1997


def test_dlt645_1997_meter_reads() -> None:
    clock = sim_clock()
    responder = Dlt645Responder(
        model_meter(address_645(1), seed=1, days=40), clock, standard=Standard.DLT645_1997
    )
    with served([responder], "dlt645", "pty") as (master, _):
        driver = driver_for("dlt645-1997", master, now=clock.now)
        assert isinstance(driver, Dlt645v1997Driver)
        meter = archive(1, "dlt645-1997")[0]
        by_obis = {r.obis: r.value for r in driver.read_realtime(meter)}
        assert by_obis["1-0:1.8.0"] == responder.meter.snapshot().import_kwh()
        assert "1-0:32.7.0" in by_obis
        month = driver.gateway_date().replace(day=1)
        monthly = {r.obis: r for r in driver.read_monthly_frozen(meter, month)}
        record = responder.meter.monthly_freeze(1)
        assert record is not None
        assert monthly["1-0:1.8.0"].value == record.registers.import_kwh()
        assert abs(driver.read_clock(meter).offset.total_seconds()) < 1.5
        with pytest.raises(NotSupported):
            driver.read_daily_frozen(meter, month)


# ---------------------------------------------------------------- 698.45 over TCP


def test_dlt698_over_tcp() -> None:
    clock = sim_clock()
    responder = Dlt698Responder(model_meter("000000000105", seed=3, days=40), clock)
    model = responder.meter
    with served([responder], "dlt698.45", "tcp://127.0.0.1:0") as (master, sim):
        assert sim.url.startswith("socket://")
        driver = driver_for("dlt698.45", master, now=clock.now)
        assert isinstance(driver, Dlt698Driver)
        meter = archive_meter("000000000105", "dlt698.45")
        realtime = {r.obis: r.value for r in driver.read_realtime(meter)}
        assert master.counters.tx_frames == 1  # one GetRequestNormalList
        assert realtime["1-0:1.8.0"] == model.snapshot().import_kwh()
        assert realtime["1-0:32.7.0"] == model.instantaneous().voltage[0]
        day = driver.gateway_date()
        for back in range(3):
            check_against_truth(
                driver.read_daily_frozen(meter, day - timedelta(days=back)),
                model,
                day - timedelta(days=back),
            )
        with pytest.raises(RecordNotFound):
            driver.read_daily_frozen(meter, day + timedelta(days=1))
        monthly = {r.obis: r for r in driver.read_monthly_frozen(meter, day.replace(day=1))}
        record = model.monthly_freeze(1)
        assert record is not None
        assert monthly["1-0:1.8.0"].value == record.registers.import_kwh()
        assert monthly["1-0:1.8.0"].time == meter_time_to_utc(record.time)
        curve = driver.read_curve(meter, clock.now() - timedelta(hours=1, minutes=1), 3)
        assert len(curve) == 3 and all(r.obis == "1-0:16.7.0" for r in curve)
        assert abs(driver.read_clock(meter).offset.total_seconds()) < 1.5
        result = driver.sync_clock(meter, clock.now() + timedelta(minutes=2))
        assert result.ok
        assert abs(driver.read_clock(meter).offset.total_seconds() - 120) < 1.5
        assert read_address_698(master) == "000000000105"


def test_dlt698_events_and_refusals() -> None:
    clock = sim_clock()
    responder = Dlt698Responder(model_meter("000000000105", seed=3), clock)
    responder.meter.record_event(EventKind.COVER_OPEN)
    with served([responder], "dlt698.45", "tcp://127.0.0.1:0") as (master, _):
        driver = Dlt698Driver(master, now=clock.now)
        meter = archive_meter("000000000105", "dlt698.45")
        events = driver.read_events(meter)
        assert [(e.kind, e.sequence) for e in events] == [("cover_open", 1)]
        recorded = responder.meter.events[EventKind.COVER_OPEN][0]
        assert events[0].start == meter_time_to_utc(recorded.start)
        with pytest.raises(ReadFailed) as caught:
            data = Data(DataType.OCTET_STRING, bytes(6))
            driver.request(
                meter,
                lambda piid: dlt698.SetRequestNormal(piid, OAD(0x4001, 2), data),
                "set address",
            )
        assert caught.value.outcome is Outcome.DAR
        assert caught.value.result.code is not None


# ---------------------------------------------------------------- Modbus over TCP


@pytest.mark.parametrize("model_name", ["sdm120", "sdm630", "ddsu666", "dtsu666"])
def test_modbus_over_tcp(model_name: str) -> None:
    responder = ModbusResponder(model_meter(address_645(7), seed=7), unit_id=7, model=model_name)
    with served([responder], "modbus-rtu", "tcp://127.0.0.1:0") as (master, _):
        driver = driver_for("modbus-rtu", master)
        assert isinstance(driver, ModbusDriver)
        meter = archive_meter("7", "modbus-rtu", modbus_model=model_name)
        readings = driver.read_realtime(meter)
        model = responder.meter
        truth = modbus_values(model.instantaneous(), model.snapshot())
        assert readings
        for reading in readings:
            assert reading.meter == "rs485-1#7"
            assert abs(reading.value - truth[reading.obis]) <= abs(truth[reading.obis]) * Decimal(
                "1e-6"
            ) + Decimal("0.001"), reading
        with pytest.raises(NotSupported):
            driver.read_daily_frozen(meter, date(2026, 1, 1))


# ---------------------------------------------------------------- 10⁵ transactions


def _soak(total: int, batch: int = 64) -> tuple[int, Counter[str], BusMaster]:
    """``total`` single-DI reads of static meters under mixed faults; every accepted value
    must be the asked meter's own. Returns (values checked, outcomes, master)."""
    responders = [Dlt645Responder(model_meter(address_645(i), seed=i)) for i in range(1, 33)]
    truth: dict[str, tuple[object, ...]] = {}
    for responder in responders:
        record = responder.meter.daily_freeze(1)
        assert record is not None
        registers = record.registers
        truth[responder.meter.address] = tuple(registers.import_kwh(t) for t in range(5))
    assert len(set(truth.values())) == len(truth)  # a misattribution would show
    outcomes: Counter[str] = Counter()
    checked = 0
    rng = random.Random(5)
    di = 0x05060101
    faults = mixed_faults(responders, 11)
    # a pty answers in well under a millisecond: tight timeouts keep 10^5 transactions short
    policy = TimingPolicy(min_response_timeout=0.02, max_response_timeout=0.04)
    with served(
        responders,
        "dlt645",
        "pty",
        per_device_faults=faults,
        policy=policy,
        inter_byte_timeout_ms=10,
    ) as (master, _):
        done = 0
        while done < total:
            futures = []
            for _ in range(min(batch, total - done)):
                address = rng.choice(responders).meter.address
                request = dlt645.encode_frame(dlt645.read_request(address, di))
                matcher = Dlt645Match(address, 0x11, di)
                futures.append(master.submit(Transaction(address, request, matcher)))
            for future in futures:
                result = future.result()
                outcomes[result.outcome.value] += 1
                if result.ok:
                    assert isinstance(result.reply, dlt645.Frame)
                    asked = result.transaction.meter
                    assert result.reply.address == asked
                    values = dlt645.decode_read_response(result.reply).values
                    got = tuple(v.value for v in values)
                    assert got == truth[asked], (asked, got)
                    checked += 1
            done += len(futures)
            for address in truth:  # keep every meter in play (no long quarantines)
                master.release(address)
    return checked, outcomes, master


def test_mixed_fault_soak_short() -> None:
    checked, _, master = _soak(3000)
    assert checked >= 2400
    assert master.counters.wrong_address > 0 and master.counters.checksum_errors > 0


@pytest.mark.slow
def test_mixed_fault_soak_100k_transactions() -> None:
    started = time.monotonic()
    checked, outcomes, master = _soak(100_000)
    print(f"10^5 transactions in {time.monotonic() - started:.1f} s: {dict(outcomes)}")
    print(master.stats())
    assert sum(outcomes.values()) == 100_000
    assert checked >= 80_000


def test_daily_pass_with_wire_time_and_line_echo_stays_near_the_theoretical_time() -> None:
    """8 meters at 9 600 baud 8E1 with wire-time emulation, 20 ms meter latency and a
    half-duplex adapter echoing our bytes: the pass costs little more than the wire."""
    clock = sim_clock()
    responders = responders_645(8, clock)
    latency = 0.02
    wire = WireTime(baud=9600, latency=FixedLatency(latency), echo=True)
    with served(responders, "dlt645", "pty", wire=wire, baud=9600, echo=True) as (master, _):
        driver = Dlt645Driver(master, now=clock.now)
        day = driver.gateway_date()
        started = time.monotonic()
        results = daily_pass(driver, archive(8), day)
        elapsed = time.monotonic() - started
        assert all(isinstance(got, list) for got in results.values())
        counters = master.counters
        assert counters.echo_bytes == counters.tx_bytes
        wire_bytes = counters.tx_bytes + counters.rx_bytes - counters.echo_bytes  # echo: same time
        theoretical = wire_bytes * 11 / 9600 + counters.tx_frames * latency
        print(f"wire-time pass: {elapsed:.3f} s, theoretical {theoretical:.3f} s")
        assert elapsed <= 1.3 * theoretical


def test_long_replies_are_joined_from_follow_up_frames() -> None:
    clock = sim_clock()
    responder = Dlt645Responder(model_meter(address_645(1), seed=1), clock, max_data=20)
    with served([responder], "dlt645", "pty") as (master, _):
        driver = Dlt645Driver(master, now=clock.now)
        start = clock.now() - timedelta(hours=6)
        points = driver.read_curve(archive(1)[0], start, 20)
        model_points = {meter_time_to_utc(p.time): p for p in responder.meter.curve}
        assert len(points) == 20
        for reading in points:
            assert reading.value == Decimal(model_points[reading.time].active_w) / 1000
        assert master.counters.tx_frames > 1  # the first reply said "more follows"
        # a freeze block (24 bytes) no longer fits one frame either: joined the same way
        day = driver.gateway_date()
        before = master.counters.tx_frames
        check_against_truth(driver.read_daily_frozen(archive(1)[0], day), responder.meter, day)
        assert master.counters.tx_frames - before > 4
