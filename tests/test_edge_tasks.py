"""Collection tasks against simulated meters on a real pty, with real SQLite files.

Values are checked against the simulator's meter model (its freezes are the truth), data
times against the model's freeze times, never against what the collector read.
"""

from __future__ import annotations

import json
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from test_edge_bus_helpers import responders_645, sim_clock
from test_edge_tasks_helpers import (
    freeze_values,
    missing_meter,
    rig,
    tasks_config,
    utc_text,
)

from edge_agent.tasks import Ledger
from firmware_sim.faults import FaultPlan

BUS_SIZE = 32
JAN = 1


def day(n: int) -> date:
    return date(2026, JAN, n)


def test_daily_collection_fills_every_slot_with_the_freeze_time(tmp_path: Path) -> None:
    clock = sim_clock()  # 2026-01-10 12:00 Shanghai
    with rig(
        tmp_path, responders_645(BUS_SIZE, clock), tasks_config("daily_frozen"), clock=clock
    ) as r:
        started = time.monotonic()
        report = r.collector.run_due()
        elapsed = time.monotonic() - started
        print(f"{BUS_SIZE}-meter daily pass: {report.got}/{report.expected}, {elapsed:.2f} s")
        assert (report.expected, report.got, report.failed) == (BUS_SIZE, BUS_SIZE, 0)
        stats = r.ledger.success(task="daily_frozen", day=day(10))
        assert (stats.expected, stats.got, stats.rate, stats.gate) == (32, 32, Decimal(1), "all")
        assert r.ledger.success(task="daily_frozen", bus="rs485-1").rate == 1
        read_at = clock.now()
        for address, model in r.models.items():
            freeze_time, values = freeze_values(model, day(10))
            rows = r.readings(address)
            assert {row.obis: Decimal(row.value) for row in rows} == values
            for row in rows:
                assert row.period_ts == utc_text(freeze_time)  # the meter's freeze time
                assert row.read_ts != row.period_ts and row.read_ts <= utc_text(read_at)
                assert (row.kind, row.source) == ("daily", "scheduled")
        slots = r.ledger.slots(task="daily_frozen", state="got")
        assert len(slots) == BUS_SIZE and all(s.attempts == 1 for s in slots)
        # nothing more is due until tomorrow 00:05
        again = r.collector.run_due()
        assert again.expected == 0
        assert elapsed < 10


def test_two_day_outage_then_backfill_fills_every_daily_slot(tmp_path: Path) -> None:
    clock = sim_clock()
    devices = responders_645(8, clock)
    absent = missing_meter()
    with rig(
        tmp_path, devices, tasks_config("daily_frozen"), clock=clock, extra_meters=[absent],
        response_timeout_ms=100,
    ) as r:  # fmt: skip
        first = r.collector.run_due()  # Jan 10
        assert (first.parts[0].got, first.parts[0].failed) == (8, 1)
        r.set_bus_fault(FaultPlan.from_dict({"faults": [{"kind": "no_answer"}]}))
        for _ in range(2):  # Jan 11 and Jan 12: the bus is silent
            clock.fast_forward(timedelta(days=1))
            report = r.collector.run_due()
            assert report.parts[0].got == 0 and report.parts[0].failed == 9
        for n in (11, 12):
            failed = r.ledger.slots(task="daily_frozen", day=day(n), state="failed")
            assert len(failed) == 9
            assert all(s.reason.startswith("timeout") for s in failed)
        r.set_bus_fault(None)
        clock.fast_forward(timedelta(days=1))  # Jan 13 12:00: the line is back
        report = r.collector.run_due()

        backfill = report.parts[-1]
        # 8 meters × 2 days (+ any slot of today a loaded test machine let time out)
        assert backfill.task == "backfill" and backfill.got >= 16
        for address, model in r.models.items():
            rows = r.readings(address)
            for n in (10, 11, 12, 13):
                freeze_time, values = freeze_values(model, day(n))
                got = {x.obis: x for x in rows if x.period_ts == utc_text(freeze_time)}
                assert {k: Decimal(v.value) for k, v in got.items()} == values, (address, n)
                sources = {x.source for x in got.values()}
                assert sources == {"backfill"} if n in (11, 12) else len(sources) == 1
        # 补抄 went oldest day first: every Jan 11 reading was stored before any Jan 12 one
        model = next(iter(r.models.values()))
        by_day = {
            n: [x.seq for a in r.models for x in r.readings(a)
                if x.period_ts == utc_text(freeze_values(model, day(n))[0])]
            for n in (11, 12)
        }  # fmt: skip
        assert max(by_day[11]) < min(by_day[12])
        for n in (10, 11, 12, 13):
            stats = r.ledger.success(task="daily_frozen", day=day(n))
            assert (stats.expected, stats.got) == (9, 8), n
        # the absent meter's Jan 10 slot is older than the 3-day window (Jan 11-13)
        exhausted = r.events("backfill_exhausted")
        assert [(e.meter, e.detail["slot"], e.detail["task"]) for e in exhausted] == [
            (absent.key, "2026-01-09T16:00:00Z", "daily_frozen")
        ]
        assert exhausted[0].detail["reason"].split(":")[0] in ("timeout", "quarantined")
        assert r.ledger.slots(meter=absent.key, state="exhausted")[0].day == day(10)
        assert len(r.ledger.slots(meter=absent.key, state="failed")) == 3
        # every finished day's success went to the log as statistics
        overall = [
            (s.labels["day"], Decimal(s.value))
            for s in r.statistics()
            if s.labels.get("task") == "daily_frozen" and not set(s.labels) & {"bus", "meter"}
        ]
        # Jan 11 went out as 0 during the outage, then again as 8/9 once 补抄 recovered it
        assert overall == [
            ("2026-01-10", Decimal("0.8889")),
            ("2026-01-11", Decimal(0)),
            ("2026-01-11", Decimal("0.8889")),
            ("2026-01-12", Decimal("0.8889")),
        ]
        per_meter = [s for s in r.statistics() if s.labels.get("meter") == absent.key]
        assert per_meter and all(Decimal(s.value) == 0 for s in per_meter)


def test_restart_catches_up_the_daily_slot_missed_while_down(tmp_path: Path) -> None:
    clock = sim_clock()
    with rig(tmp_path, responders_645(4, clock), tasks_config("daily_frozen"), clock=clock) as r:
        assert r.collector.run_due().got == 4  # Jan 10
        clock.fast_forward(timedelta(hours=12))  # 00:00 Jan 11: not due yet
        assert r.collector.run_due().expected == 0
        # the agent is down over 00:05 and comes back at 09:00
        clock.fast_forward(timedelta(hours=9))
        collector = r.restart()
        report = collector.run_due()
        assert report.parts[0].slots == [r.ledger.slots(day=day(11))[0].slot]
        assert report.got == 4
        assert r.ledger.last_slot("daily_frozen") == report.parts[0].slots[0]
        for address, model in r.models.items():
            freeze_time, values = freeze_values(model, day(11))
            rows = [x for x in r.readings(address) if x.period_ts == utc_text(freeze_time)]
            assert {x.obis: Decimal(x.value) for x in rows} == values
            assert {x.source for x in rows} == {"scheduled"}
        # down for five days: catch-up stops at the 补抄 window (3 days: Jan 14-16)
        clock.fast_forward(timedelta(days=5))
        collector = r.restart()
        report = collector.run_due()
        caught = sorted({s.day for s in r.ledger.slots(task="daily_frozen")})
        assert caught == [day(10), day(11), day(14), day(15), day(16)]
        assert r.ledger.success(task="daily_frozen").rate == 1


def test_ledger_survives_a_restart_of_its_file(tmp_path: Path) -> None:
    clock = sim_clock()
    with rig(tmp_path, responders_645(2, clock), tasks_config("daily_frozen"), clock=clock) as r:
        r.collector.run_due()
        r.ledger.close()
        reopened = Ledger(tmp_path / "ledger.db")
        assert reopened.success(task="daily_frozen").got == 2
        assert reopened.last_slot("daily_frozen") is not None
        reopened.close()
        r.ledger = Ledger(tmp_path / "ledger.db")  # so the rig closes an open one


def test_collect_on_demand_read_now_and_status(tmp_path: Path) -> None:
    clock = sim_clock()
    with rig(tmp_path, responders_645(2, clock), tasks_config("daily_frozen"), clock=clock) as r:
        address = next(iter(r.models))
        report = r.collector.collect("daily_frozen", meters=[address])
        assert (report.got, report.source) == (1, "on_demand")
        rows = r.readings(address)
        assert rows and {x.source for x in rows} == {"on_demand"}
        realtime = r.collector.read_now(address, "realtime")
        assert any(x.obis == "1-0:1.8.0" for x in realtime)
        one = r.collector.read_now(address, "1-0:1.8.0")
        assert [x.obis for x in one] == ["1-0:1.8.0"]
        by_di = r.collector.read_now(address, "00010000")
        assert by_di[0].value == one[0].value or by_di[0].value >= one[0].value
        status = r.collector.status()
        daily = status["tasks"]["daily_frozen"]
        assert daily["enabled"] and daily["today"]["got"] == 1
        assert status["tasks"]["curve"]["enabled"] is False
        assert status["open_slots"] == 0


def test_a_crash_between_log_commit_and_ledger_mark_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    clock = sim_clock()
    with rig(tmp_path, responders_645(4, clock), tasks_config("daily_frozen"), clock=clock) as r:
        original = r.ledger.got
        calls = 0

        def crash_once(*args: object, **kwargs: object) -> None:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise RuntimeError("power cut after the log's COMMIT")
            original(*args, **kwargs)  # type: ignore[arg-type]

        r.ledger.got = crash_once  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="power cut"):
            r.collector.run_due()
        r.ledger.got = original  # type: ignore[method-assign]
        # the readings are committed; the ledger's cycle rolled back, so it has no mark for
        # them, and the pass never completed: the slot is still due
        assert all(r.readings(address) for address in r.models)
        assert r.ledger.slots() == []
        assert r.ledger.last_slot("daily_frozen") is None
        seq = r.log.last_seq()
        report = r.collector.run_due()  # the restarted agent
        assert report.got == 4 and report.readings == 0  # re-read, nothing new stored
        assert r.log.last_seq() == seq  # identical duplicates take no seq
        assert r.ledger.success(task="daily_frozen").rate == 1


def test_status_and_reports_are_json(tmp_path: Path) -> None:
    clock = sim_clock()
    tasks = tasks_config("daily_frozen", "events", "clock_check")
    with rig(tmp_path, responders_645(2, clock), tasks, clock=clock) as r:
        report = r.collector.run_due()
        json.dumps(report.to_dict())
        status = r.collector.status()
        assert json.loads(json.dumps(status)) == status
        assert status["tasks"]["daily_frozen"]["next_due"] == "2026-01-10T16:05:00Z"
        assert status["tasks"]["clock_check"]["last_run_at"] is not None  # power-up check
        rows = [s.to_dict() for s in r.ledger.slots()]
        json.dumps(rows)


def test_stop_ends_a_pass_at_the_next_meter_and_leaves_the_rest_expected(
    tmp_path: Path,
) -> None:
    clock = sim_clock()
    with rig(tmp_path, responders_645(8, clock), tasks_config("daily_frozen"), clock=clock) as r:
        collector = r.collector
        read = collector._read
        meters_read = 0

        def read_then_stop(*args: Any) -> Any:
            nonlocal meters_read
            meters_read += 1
            if meters_read == 3:
                collector.stop()  # SIGTERM arrives while the third meter is read
            return read(*args)

        collector._read = read_then_stop  # type: ignore[method-assign,assignment]
        report = collector.run_due()
        assert report.got == 3 and report.failed == 0
        states = [s.state for s in r.ledger.slots(task="daily_frozen")]
        assert sorted(states) == ["expected"] * 5 + ["got"] * 3
        assert r.ledger.last_slot("daily_frozen") is not None  # the pass ended; 补抄 picks up


def test_a_line_stopped_under_a_pass_is_not_the_meters_failure(tmp_path: Path) -> None:
    clock = sim_clock()
    with rig(tmp_path, responders_645(4, clock), tasks_config("daily_frozen"), clock=clock) as r:
        r.master.stop()
        report = r.collector.collect("daily_frozen")
        assert (report.got, report.failed) == (0, 0)
        assert {s.state for s in r.ledger.slots()} == {"expected"}


def test_collect_a_given_day_from_the_meters_freezes(tmp_path: Path) -> None:
    clock = sim_clock()
    with rig(tmp_path, responders_645(2, clock), tasks_config("daily_frozen"), clock=clock) as r:
        report = r.collector.collect("daily_frozen", day(8))
        assert report.got == 2
        assert r.collector.collect("daily_frozen", clock.now() - timedelta(days=1)).got == 2
        assert [s.day for s in r.ledger.slots(state="got")] == [day(8)] * 2 + [day(9)] * 2
        for address, model in r.models.items():
            freeze_time, values = freeze_values(model, day(8))
            rows = [x for x in r.readings(address) if x.period_ts == utc_text(freeze_time)]
            assert {x.obis: Decimal(x.value) for x in rows} == values
