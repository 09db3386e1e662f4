"""Monthly frozen, curves, events, 698 meters and dead meters through the Collector."""

from __future__ import annotations

import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from test_edge_bus_helpers import (
    Dlt698Responder,
    address_645,
    model_meter,
    responders_645,
    sim_clock,
)
from test_edge_tasks_helpers import freeze_values, rig, tasks_config, utc_text

from firmware_sim.faults import FaultPlan
from firmware_sim.meter import EventKind
from firmware_sim.responders import Dlt645Responder
from shared_protocol.timebase import meter_time_to_utc


def test_monthly_frozen_carries_the_settlement_time(tmp_path: Path) -> None:
    clock = sim_clock()
    devices = [Dlt645Responder(model_meter(address_645(i), seed=i, days=40), clock) for i in (1, 2)]
    with rig(tmp_path, devices, tasks_config("monthly_frozen"), clock=clock) as r:
        report = r.collector.run_due()
        assert (report.parts[0].task, report.got) == ("monthly_frozen", 2)
        for address, model in r.models.items():
            record = model.monthly_freeze(1)
            assert record is not None
            rows = {x.obis: x for x in r.readings(address)}
            assert Decimal(rows["1-0:1.8.0"].value) == record.registers.import_kwh()
            assert rows["1-0:1.8.0"].period_ts == utc_text(meter_time_to_utc(record.time))
            assert {x.kind for x in rows.values()} == {"monthly"}
        (slot,) = {s.slot for s in r.ledger.slots(task="monthly_frozen")}
        first = next(iter(r.models.values())).monthly_freeze(1)
        assert first is not None
        assert slot == meter_time_to_utc(first.time.replace(day=1, hour=0))


def test_curve_points_and_catch_up_in_one_read_per_meter(tmp_path: Path) -> None:
    clock = sim_clock()  # 12:00: the newest due point is 11:45
    with rig(tmp_path, responders_645(3, clock), tasks_config("curve"), clock=clock) as r:
        first = r.collector.run_due()
        assert first.got == 3 and len(first.parts[0].slots) == 1
        clock.fast_forward(timedelta(hours=1, minutes=2))  # 13:02: 12:00 … 13:00 are due
        frames = r.master.counters.tx_frames
        report = r.collector.run_due()
        assert len(report.parts[0].slots) == 5 and report.parts[0].got == 15
        assert r.master.counters.tx_frames - frames == 3  # one load-profile read per meter
        for address, model in r.models.items():
            truth = {meter_time_to_utc(p.time): p for p in model.curve}
            rows = r.readings(address)
            assert len(rows) == 6
            for row in rows:
                point = [p for t, p in truth.items() if utc_text(t) == row.period_ts]
                assert point and Decimal(row.value) == Decimal(point[0].active_w) / 1000
                assert row.kind == "curve"
        assert r.ledger.success(task="curve").rate == 1


def test_events_are_collected_once(tmp_path: Path) -> None:
    clock = sim_clock()
    devices = responders_645(2, clock)
    model = devices[0].meter
    model.record_event(EventKind.COVER_OPEN)
    with rig(tmp_path, devices, tasks_config("events"), clock=clock) as r:
        r.collector.run_due()
        covers = r.events("meter.cover_open")
        assert [(e.meter, e.at) for e in covers] == [
            (
                model.address,
                utc_text(meter_time_to_utc(model.events[EventKind.COVER_OPEN][0].start)),
            )
        ]
        clock.fast_forward(timedelta(hours=1))
        r.collector.run_due()
        assert len(r.events("meter.cover_open")) == 1  # nothing new, nothing repeated
        r.line.call(model.record_event, EventKind.COVER_OPEN)
        clock.fast_forward(timedelta(hours=1))
        r.collector.run_due()
        assert len(r.events("meter.cover_open")) == 2
        assert r.ledger.success(task="events").rate == 1


def test_698_meters_daily_frozen(tmp_path: Path) -> None:
    clock = sim_clock()
    devices = [Dlt698Responder(model_meter(f"{i:012d}", seed=i), clock) for i in (201, 202, 203)]
    with rig(tmp_path, devices, tasks_config("daily_frozen"), clock=clock) as r:
        assert r.collector.run_due().got == 3
        clock.fast_forward(timedelta(days=1))
        assert r.collector.run_due().got == 3
        for address, model in r.models.items():
            for n in (10, 11):
                freeze_time, values = freeze_values(model, date(2026, 1, n))
                rows = {x.obis: Decimal(x.value) for x in r.readings(address)
                        if x.period_ts == utc_text(freeze_time)}  # fmt: skip
                # 698 daily 5004 carries total import and export
                assert rows and all(values[obis] == value for obis, value in rows.items())


def test_dead_meters_do_not_hold_up_the_live_ones(tmp_path: Path) -> None:
    clock = sim_clock()
    devices = responders_645(32, clock)
    dead = {devices[5].device_id, devices[20].device_id}
    faults = {key: FaultPlan.from_dict({"faults": [{"kind": "no_answer"}]}) for key in dead}
    with rig(
        tmp_path, devices, tasks_config("daily_frozen"), clock=clock, per_device_faults=faults
    ) as r:
        started = time.monotonic()
        report = r.collector.run_due()
        elapsed = time.monotonic() - started
        scheduled = report.parts[0]
        print(f"32 meters, 2 dead: {scheduled.got}/{scheduled.expected} in {elapsed:.2f} s")
        assert (scheduled.got, scheduled.failed) == (30, 2)
        live = [m for m in r.models if m not in dead]
        for meter in live:
            assert r.ledger.success(task="daily_frozen", meter=meter).rate == 1
        for meter in dead:
            (slot,) = r.ledger.slots(meter=meter)
            assert slot.state == "failed" and slot.reason.startswith(("timeout", "quarantined"))
        assert r.master.counters.timeouts <= 2 * len(dead) * 2  # scheduled pass + 补抄
        assert r.ledger.success(task="daily_frozen").rate == Decimal("0.9375")


def test_missed_curve_points_are_backfilled_from_the_meters_profile(tmp_path: Path) -> None:
    clock = sim_clock()
    with rig(tmp_path, responders_645(2, clock), tasks_config("curve"), clock=clock) as r:
        r.collector.run_due()  # 11:45
        r.set_bus_fault(FaultPlan.from_dict({"faults": [{"kind": "no_answer"}]}))
        clock.fast_forward(timedelta(minutes=31))  # 12:31: 12:00 and 12:15 fail
        assert r.collector.run_due().failed == 4
        r.set_bus_fault(None)
        report = r.collector.backfill()
        assert (report.got, report.failed) == (4, 0)
        for address, model in r.models.items():
            truth = {utc_text(meter_time_to_utc(p.time)): p for p in model.curve}
            for row in r.readings(address):
                assert Decimal(row.value) == Decimal(truth[row.period_ts].active_w) / 1000
            sources = sorted(x.source for x in r.readings(address))
            assert sources == ["backfill", "backfill", "scheduled"]
        assert r.ledger.success(task="curve").rate == 1


def test_698_events_cost_one_frame_per_kind_when_nothing_happened(tmp_path: Path) -> None:
    clock = sim_clock()
    device = Dlt698Responder(model_meter("000000000301", seed=3), clock)
    device.meter.record_event(EventKind.COVER_OPEN)
    with rig(tmp_path, [device], tasks_config("events"), clock=clock) as r:
        r.collector.run_due()
        assert len(r.events("meter.cover_open")) == 1
        clock.fast_forward(timedelta(hours=1))
        frames = r.master.counters.tx_frames
        r.collector.run_due()
        assert r.master.counters.tx_frames - frames == 2  # power_down, cover_open: newest only
        assert len(r.events("meter.cover_open")) == 1
