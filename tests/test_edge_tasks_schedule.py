"""The wall-clock schedule as a table: which slot each task has due at which instant."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from edge_agent.config import (
    ClockCheckTask,
    CurveTask,
    DailyFrozenTask,
    EventTask,
    MonthlyFrozenTask,
    TasksConfig,
)
from edge_agent.tasks import due_slots, due_time, latest_slot, next_due

SHANGHAI = ZoneInfo("Asia/Shanghai")
TASKS = TasksConfig(
    daily_frozen=DailyFrozenTask(at=time(0, 5)),
    monthly_frozen=MonthlyFrozenTask(day=1, at=time(0, 15)),
    curve=CurveTask(interval_min=15),
    events=EventTask(interval_min=60),
    clock_check=ClockCheckTask(at=time(3, 30)),
)


def at(text: str) -> datetime:
    """Shanghai local "YYYY-MM-DD HH:MM" as aware UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).astimezone(UTC)


@pytest.mark.parametrize(
    ("task", "now", "slot"),
    [
        # the daily freeze of D 00:00 is due from D 00:05
        ("daily_frozen", "2026-01-10 00:04", "2026-01-09 00:00"),
        ("daily_frozen", "2026-01-10 00:05", "2026-01-10 00:00"),
        ("daily_frozen", "2026-01-10 23:59", "2026-01-10 00:00"),
        # the monthly freeze of the 1st is due on the configured day and time
        ("monthly_frozen", "2026-02-01 00:14", "2026-01-01 00:00"),
        ("monthly_frozen", "2026-02-01 00:15", "2026-02-01 00:00"),
        ("monthly_frozen", "2026-03-31 12:00", "2026-03-01 00:00"),
        ("monthly_frozen", "2026-01-01 00:10", "2025-12-01 00:00"),
        # curve points are read 2 min after their quarter hour
        ("curve", "2026-01-10 10:16", "2026-01-10 10:00"),
        ("curve", "2026-01-10 10:17", "2026-01-10 10:15"),
        ("curve", "2026-01-10 00:01", "2026-01-09 23:45"),
        ("events", "2026-01-10 10:59", "2026-01-10 10:00"),
        ("clock_check", "2026-01-10 03:29", "2026-01-09 03:30"),
        ("clock_check", "2026-01-10 03:30", "2026-01-10 03:30"),
    ],
)
def test_latest_due_slot(task: str, now: str, slot: str) -> None:
    assert latest_slot(task, at(now), TASKS, SHANGHAI) == at(slot)
    assert due_time(task, at(slot), TASKS, SHANGHAI) <= at(now)


def test_monthly_on_a_later_day() -> None:
    tasks = TasksConfig(monthly_frozen=MonthlyFrozenTask(day=3, at=time(1, 0)))
    assert latest_slot("monthly_frozen", at("2026-02-02 12:00"), tasks, SHANGHAI) == at(
        "2026-01-01 00:00"
    )
    assert latest_slot("monthly_frozen", at("2026-02-03 01:00"), tasks, SHANGHAI) == at(
        "2026-02-01 00:00"
    )


def test_catch_up_lists_missed_slots_oldest_first_within_the_bound() -> None:
    now = at("2026-01-15 09:00")
    slots = due_slots(
        "daily_frozen", now, TASKS, SHANGHAI, after=at("2026-01-10 00:00"), not_before=None
    )
    assert slots == [at(f"2026-01-{d} 00:00") for d in (11, 12, 13, 14, 15)]
    bounded = due_slots(
        "daily_frozen",
        now,
        TASKS,
        SHANGHAI,
        after=at("2026-01-10 00:00"),
        not_before=at("2026-01-13 00:00"),
    )
    assert bounded == [at(f"2026-01-{d} 00:00") for d in (13, 14, 15)]
    # a fresh ledger starts with the newest slot only (补抄 walks history, not the schedule)
    assert due_slots("daily_frozen", now, TASKS, SHANGHAI, after=None) == [at("2026-01-15 00:00")]
    # nothing new
    assert due_slots("daily_frozen", now, TASKS, SHANGHAI, after=at("2026-01-15 00:00")) == []


def test_curve_catch_up_steps_on_the_quarter_hours() -> None:
    slots = due_slots(
        "curve", at("2026-01-10 11:02"), TASKS, SHANGHAI, after=at("2026-01-10 10:00")
    )
    assert slots == [at(f"2026-01-10 {t}") for t in ("10:15", "10:30", "10:45", "11:00")]
    assert all(s.minute % 15 == 0 and s.second == 0 for s in slots)


def test_next_due() -> None:
    now = at("2026-01-10 12:00")
    done = at("2026-01-10 00:00")
    assert next_due("daily_frozen", now, TASKS, SHANGHAI, after=done) == at("2026-01-11 00:05")
    assert next_due("daily_frozen", now, TASKS, SHANGHAI, after=done - timedelta(days=1)) == now
    assert next_due("clock_check", now, TASKS, SHANGHAI, after=at("2026-01-10 03:30")) == at(
        "2026-01-11 03:30"
    )
    assert next_due("monthly_frozen", now, TASKS, SHANGHAI, after=at("2026-01-01 00:00")) == at(
        "2026-02-01 00:15"
    )


def test_unknown_task_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown task 'hourly'"):
        latest_slot("hourly", at("2026-01-10 12:00"), TASKS, SHANGHAI)


def test_public_names_are_pinned() -> None:
    import edge_agent.tasks

    assert set(edge_agent.tasks.__all__) == {
        "STATES",
        "TASKS",
        "TASK_KINDS",
        "ClockCheck",
        "ClockDecision",
        "Collector",
        "Ledger",
        "MeterSummary",
        "RunReport",
        "Slot",
        "SuccessStats",
        "decide",
        "due_slots",
        "due_time",
        "latest_slot",
        "next_due",
        "utc_now",
    }
    for name in edge_agent.tasks.__all__:
        assert hasattr(edge_agent.tasks, name)


def test_slot_of_aligns_any_instant() -> None:
    from edge_agent.tasks.schedule import slot_of

    assert slot_of("daily_frozen", at("2026-01-10 17:33"), TASKS, SHANGHAI) == at(
        "2026-01-10 00:00"
    )
    assert slot_of("monthly_frozen", at("2026-01-10 17:33"), TASKS, SHANGHAI) == at(
        "2026-01-01 00:00"
    )
    assert slot_of("curve", at("2026-01-10 17:33"), TASKS, SHANGHAI) == at("2026-01-10 17:30")
    assert slot_of("clock_check", at("2026-01-10 01:00"), TASKS, SHANGHAI) == at("2026-01-10 03:30")
