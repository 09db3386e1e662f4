"""Clock discipline against simulated drifting and jumping meters on a real pty.

Rules (edge.md D5, b.6): |offset| > threshold (60 s) ⇒ sync — 645 by one C=08 broadcast per
bus, 698 by SET 40000200 per meter; never within ±5 min of the hour or midnight (deferred
to the next allowed moment); at most N syncs per meter per day; every check that leads to a
sync decision and every sync is an event with the offsets before and after.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from test_edge_bus_helpers import Dlt698Responder, model_meter, responders_645, sim_clock
from test_edge_tasks_helpers import Rig, rig, tasks_config

from edge_agent.config import ClockConfig
from edge_agent.tasks import ClockDecision, decide
from edge_agent.tasks.clock import next_allowed
from firmware_sim.faults import FaultPlan
from firmware_sim.meter import FaultKind, MeterFault

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(hh: int, mm: int, ss: int = 0, day: int = 10) -> datetime:
    return datetime(2026, 1, day, hh, mm, ss, tzinfo=SHANGHAI).astimezone(UTC)


def jump(r: Rig, address: str, seconds: float) -> None:
    """A clock-jump fault on the meter, effective at once."""
    model = r.models[address]
    fault = MeterFault(r.clock.now(), FaultKind.CLOCK_JUMP, delta=timedelta(seconds=seconds))
    r.line.call(model.apply_fault, fault)


def true_offset(r: Rig, address: str) -> float:
    model = r.models[address]
    us = int(r.clock.now().timestamp() * 1_000_000)
    return float(r.line.call(model.clock.error, us).total_seconds())


# ---------------------------------------------------------------- the rule, as a table

CONFIG = ClockConfig(threshold_s=60, forbidden_window_min=5, max_syncs_per_meter_per_day=2)


@pytest.mark.parametrize(
    ("offset_s", "at", "syncs_today", "decision"),
    [
        (30, local(12, 20), 0, ClockDecision.OK),
        (-60, local(12, 20), 0, ClockDecision.OK),  # at the threshold: no sync
        (61, local(12, 20), 0, ClockDecision.SYNC),
        (-90, local(12, 20), 0, ClockDecision.SYNC),
        (90, local(12, 56), 0, ClockDecision.DEFERRED),  # 4 min before the hour
        (90, local(13, 4, 59), 0, ClockDecision.DEFERRED),
        (90, local(13, 5), 0, ClockDecision.SYNC),
        (90, local(0, 2), 0, ClockDecision.DEFERRED),  # midnight
        (90, local(23, 55), 0, ClockDecision.SYNC),  # exactly 5 min before is allowed
        (90, local(12, 20), 2, ClockDecision.CAPPED),
        (30, local(12, 20), 2, ClockDecision.OK),
    ],
)
def test_decision_table(
    offset_s: float, at: datetime, syncs_today: int, decision: ClockDecision
) -> None:
    assert decide(timedelta(seconds=offset_s), at, CONFIG, SHANGHAI, syncs_today) is decision


def test_next_allowed_moment() -> None:
    assert next_allowed(local(12, 57), CONFIG, SHANGHAI) == local(13, 5)
    assert next_allowed(local(23, 58), CONFIG, SHANGHAI) == local(0, 5, day=11)
    assert next_allowed(local(12, 20), CONFIG, SHANGHAI) == local(12, 20)


# ---------------------------------------------------------------- against simulated meters


def test_645_over_threshold_syncs_by_broadcast_under_threshold_not(tmp_path: Path) -> None:
    clock = sim_clock()
    clock.advance_to(local(12, 20))
    with rig(tmp_path, responders_645(4, clock), tasks_config(), clock=clock) as r:
        fast, slow, slight, _ = list(r.models)
        jump(r, fast, 90)
        jump(r, slow, -150)
        jump(r, slight, 30)
        checks = {c.meter: c for c in r.collector.clock_check()}
        assert checks[fast].decision is ClockDecision.SYNC and checks[fast].synced
        assert checks[fast].method == "broadcast"
        assert checks[slow].synced and abs(checks[slow].offset_s + 150) < 2  # type: ignore[operator]
        assert checks[slight].decision is ClockDecision.OK and not checks[slight].synced
        for address in (fast, slow):
            assert abs(checks[address].offset_after_s or 99) < 2
            assert abs(true_offset(r, address)) < 2
            assert r.ledger.syncs_on(address, local(12, 20).astimezone(SHANGHAI).date()) == 1
        synced = r.events("clock_synced")
        assert sorted(e.meter for e in synced) == sorted([fast, slow])  # type: ignore[type-var]
        for event in synced:
            assert abs(event.detail["offset_before_s"]) > 60
            assert abs(event.detail["offset_after_s"]) < 2
        offsets = {e.meter: e.detail for e in r.events("clock_offset")}
        assert set(offsets) == {fast, slow}
        assert r.master.stats()["tx_frames"] >= 1
        # under threshold after the sync: a second check changes nothing
        again = r.collector.clock_check()
        assert all(c.decision is ClockDecision.OK for c in again)
        assert len(r.events("clock_synced")) == 2


def test_inside_the_forbidden_window_the_sync_is_deferred(tmp_path: Path) -> None:
    clock = sim_clock()
    clock.advance_to(local(12, 57))
    with rig(tmp_path, responders_645(2, clock), tasks_config("clock_check"), clock=clock) as r:
        address = next(iter(r.models))
        jump(r, address, 120)
        report = r.collector.run_due()  # power-up check, at 12:57
        (check,) = [c for c in report.clock if c.meter == address]
        assert check.decision is ClockDecision.DEFERRED and not check.synced
        assert abs(true_offset(r, address) - 120) < 2
        (event,) = r.events("clock_offset")
        assert event.detail["decision"] == "deferred"
        assert event.detail["until"] == local(13, 5).isoformat()
        assert address in r.collector.status()["pending_clock_syncs"]
        clock.advance_to(local(13, 2))  # still forbidden: nothing happens
        assert r.collector.run_due().clock == []
        assert abs(true_offset(r, address) - 120) < 2
        clock.advance_to(local(13, 6))  # allowed again: the deferred sync runs
        report = r.collector.run_due()
        assert [c.meter for c in report.clock if c.synced] == [address]
        assert abs(true_offset(r, address)) < 2
        assert r.ledger.pending_syncs() == {}
        assert len(r.events("clock_synced")) == 1


def test_daily_cap_is_respected(tmp_path: Path) -> None:
    clock = sim_clock()
    with rig(tmp_path, responders_645(1, clock), tasks_config(), clock=clock) as r:
        address = next(iter(r.models))
        for hour in (12, 13):
            clock.advance_to(local(hour, 20))
            jump(r, address, 300)
            (check,) = r.collector.clock_check()
            assert check.synced
        clock.advance_to(local(14, 20))
        jump(r, address, 300)
        (check,) = r.collector.clock_check()
        assert check.decision is ClockDecision.CAPPED and not check.synced
        assert abs(true_offset(r, address) - 300) < 2
        assert r.events("clock_offset")[-1].detail["decision"] == "capped"
        assert len(r.events("clock_synced")) == 2
        # a new day, a new allowance
        clock.advance_to(local(10, 20, day=11))
        (check,) = r.collector.clock_check()
        assert check.synced and abs(true_offset(r, address)) < 2


def test_drifting_meter_is_synced_by_the_scheduled_check(tmp_path: Path) -> None:
    clock = sim_clock()
    clock.advance_to(local(12, 20))
    with rig(tmp_path, responders_645(2, clock), tasks_config("clock_check"), clock=clock) as r:
        drifting = next(iter(r.models))
        model = r.models[drifting]

        def drift() -> None:
            model.advance(clock.now())
            model.clock.anchor_us = int(clock.now().timestamp() * 1_000_000)
            model.clock.offset_us = (
                model.clock.meter_us(model.clock.anchor_us) - model.clock.anchor_us
            )
            model.clock.drift_ppm = 2000.0  # 173 s a day fast

        r.line.call(drift)
        first = r.collector.run_due()  # the power-up check: still on time
        assert all(c.decision is ClockDecision.OK for c in first.clock)
        clock.advance_to(local(3, 31, day=11))  # the 03:30 check, 15 h (109 s) later
        report = r.collector.run_due()
        (check,) = [c for c in report.clock if c.meter == drifting]
        assert check.synced and check.offset_s is not None and check.offset_s > 60
        assert abs(true_offset(r, drifting)) < 2
        # no second check the same day
        clock.advance_to(local(9, 31, day=11))
        assert r.collector.run_due().clock == []


def test_698_meters_are_set_one_by_one(tmp_path: Path) -> None:
    clock = sim_clock()
    clock.advance_to(local(12, 20))
    devices = [Dlt698Responder(model_meter(f"{i:012d}", seed=i), clock) for i in (101, 102)]
    with rig(tmp_path, devices, tasks_config(), clock=clock) as r:
        off, fine = list(r.models)
        jump(r, off, -200)
        checks = {c.meter: c for c in r.collector.clock_check()}
        assert checks[off].synced and checks[off].method == "set"
        assert not checks[fine].synced
        assert abs(true_offset(r, off)) < 2
        (event,) = r.events("clock_synced")
        assert event.meter == off and event.detail["method"] == "set"


def test_a_deferred_sync_of_a_meter_gone_silent_is_dropped(tmp_path: Path) -> None:
    clock = sim_clock()
    clock.advance_to(local(12, 58))
    with rig(tmp_path, responders_645(1, clock), tasks_config("clock_check"), clock=clock) as r:
        address = next(iter(r.models))
        jump(r, address, 120)
        r.collector.run_due()
        assert address in r.ledger.pending_syncs()
        r.set_bus_fault(FaultPlan.from_dict({"faults": [{"kind": "no_answer"}]}))
        clock.advance_to(local(13, 6))
        (check,) = r.collector.run_due().clock
        assert check.decision is ClockDecision.UNREADABLE
        assert r.ledger.pending_syncs() == {}
        assert r.collector.run_due().clock == []  # no re-read on every run


def test_a_meter_back_from_a_power_cut_gets_its_clock_checked(tmp_path: Path) -> None:
    clock = sim_clock()
    clock.advance_to(local(12, 20))
    tasks = tasks_config("events", "clock_check")
    with rig(tmp_path, responders_645(2, clock), tasks, clock=clock) as r:
        cut, _ = list(r.models)
        r.collector.run_due()  # the gateway's own power-up check
        model = r.models[cut]
        now = clock.now()
        r.line.call(model.apply_fault, MeterFault(now, FaultKind.POWER_DOWN))
        r.line.call(model.apply_fault, MeterFault(now, FaultKind.POWER_UP))
        jump(r, cut, -100)  # the RTC battery did not keep time through the cut
        clock.advance_to(local(13, 20))  # the 13:00 events run is due
        report = r.collector.run_due()
        assert report.power_restored == [cut]
        assert [(c.meter, c.synced) for c in report.clock] == [(cut, True)]
        assert abs(true_offset(r, cut)) < 2
        assert [e.meter for e in r.events("meter.power_down")] == [cut]
        assert [e.meter for e in r.events("clock_synced")] == [cut]
