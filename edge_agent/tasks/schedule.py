"""When each collection task is due: slots aligned to the wall clock in the gateway's zone.

Pure functions of the configuration and an instant; no I/O. A *slot* is the instant the
data belongs to (aware UTC), and each slot has a *due* instant at which it can be read:

============== ============================================ ===============================
task           slot                                         due
============== ============================================ ===============================
daily_frozen   local 00:00 of day D (the freeze closing D-1) D at ``daily_frozen.at`` (00:05)
monthly_frozen local 00:00 on the 1st of month M             M's ``monthly_frozen.day`` at
               (the freeze closing M-1)                      ``monthly_frozen.at``
curve          every ``curve.interval_min`` boundary         slot + 2 min (the meter stores
                                                             the point first)
events         every ``events.interval_min`` (from 00:00)    the slot itself
clock_check    local ``clock_check.at`` every day            the slot itself
============== ============================================ ===============================

Local times are built in the gateway zone with ``fold=0`` and converted to UTC, so a DST
zone gets the first of a repeated hour and a skipped hour moves forward; China has no DST.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from edge_agent.config import TasksConfig

__all__ = [
    "CURVE_DELAY",
    "TASKS",
    "due_slots",
    "due_time",
    "enabled",
    "latest_slot",
    "next_due",
    "slot_of",
]

#: Task names in priority order (补抄 order within one day, too).
TASKS = ("daily_frozen", "monthly_frozen", "curve", "events", "clock_check")
#: A meter writes its curve point at the boundary; read a little after.
CURVE_DELAY = timedelta(minutes=2)


def _local(day: date, at: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def enabled(task: str, tasks: TasksConfig) -> bool:
    flags = {
        "daily_frozen": tasks.daily_frozen.enabled,
        "monthly_frozen": tasks.monthly_frozen.enabled,
        "curve": tasks.curve.enabled,
        "events": tasks.events.enabled,
        "clock_check": tasks.clock_check.enabled,
    }
    if task not in flags:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    return flags[task]


def _interval(task: str, tasks: TasksConfig) -> timedelta:
    minutes = tasks.curve.interval_min if task == "curve" else tasks.events.interval_min
    return timedelta(minutes=minutes)


def due_time(task: str, slot: datetime, tasks: TasksConfig, zone: ZoneInfo) -> datetime:
    """When ``slot`` of ``task`` can be read."""
    if task == "daily_frozen":
        return _local(slot.astimezone(zone).date(), tasks.daily_frozen.at, zone)
    if task == "monthly_frozen":
        first = slot.astimezone(zone).date()
        return _local(first.replace(day=tasks.monthly_frozen.day), tasks.monthly_frozen.at, zone)
    if task == "curve":
        return slot + CURVE_DELAY
    if task in ("events", "clock_check"):
        return slot
    raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")


def _slot_on_or_before(
    task: str, instant: datetime, tasks: TasksConfig, zone: ZoneInfo
) -> datetime:
    """The newest slot not after ``instant`` (not necessarily due yet)."""
    local = instant.astimezone(zone)
    if task == "daily_frozen":
        return _local(local.date(), time(0), zone)
    if task == "monthly_frozen":
        return _local(local.date().replace(day=1), time(0), zone)
    if task in ("curve", "events"):
        step = _interval(task, tasks)
        midnight = _local(local.date(), time(0), zone)
        return midnight + ((instant - midnight) // step) * step
    if task == "clock_check":
        today = _local(local.date(), tasks.clock_check.at, zone)
        return (
            today
            if today <= instant
            else _local(local.date() - timedelta(days=1), tasks.clock_check.at, zone)
        )
    raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")


def slot_of(task: str, instant: datetime, tasks: TasksConfig, zone: ZoneInfo) -> datetime:
    """The slot ``instant`` (aware) falls in: a daily freeze's local midnight, a month's 1st,
    a curve/event interval's start, the day's clock-check time (due or not)."""
    if instant.tzinfo is None:
        raise ValueError(f"{instant!r} must be an aware datetime")
    if task == "clock_check":
        local = instant.astimezone(zone)
        return _local(local.date(), tasks.clock_check.at, zone)
    return _slot_on_or_before(task, instant, tasks, zone)


def _previous(task: str, slot: datetime, tasks: TasksConfig, zone: ZoneInfo) -> datetime:
    local = slot.astimezone(zone)
    if task == "daily_frozen":
        return _local(local.date() - timedelta(days=1), time(0), zone)
    if task == "monthly_frozen":
        last_of_previous = local.date().replace(day=1) - timedelta(days=1)
        return _local(last_of_previous.replace(day=1), time(0), zone)
    if task in ("curve", "events"):
        return _slot_on_or_before(task, slot - _interval(task, tasks), tasks, zone)
    return _local(local.date() - timedelta(days=1), tasks.clock_check.at, zone)


def _next(task: str, slot: datetime, tasks: TasksConfig, zone: ZoneInfo) -> datetime:
    local = slot.astimezone(zone)
    if task == "daily_frozen":
        return _local(local.date() + timedelta(days=1), time(0), zone)
    if task == "monthly_frozen":
        first = local.date().replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return _local(following, time(0), zone)
    if task in ("curve", "events"):
        # stepping in UTC keeps intervals exact; slots stay on the local boundaries
        # because every supported interval divides the hour
        return slot + _interval(task, tasks)
    return _local(local.date() + timedelta(days=1), tasks.clock_check.at, zone)


def latest_slot(task: str, now: datetime, tasks: TasksConfig, zone: ZoneInfo) -> datetime:
    """The newest slot of ``task`` that is due at ``now``."""
    slot = _slot_on_or_before(task, now, tasks, zone)
    while due_time(task, slot, tasks, zone) > now:
        slot = _previous(task, slot, tasks, zone)
    return slot


def due_slots(
    task: str,
    now: datetime,
    tasks: TasksConfig,
    zone: ZoneInfo,
    *,
    after: datetime | None,
    not_before: datetime | None = None,
) -> list[datetime]:
    """Slots due at ``now`` newer than ``after`` (the last completed one), oldest first.

    ``not_before`` bounds a catch-up (the backfill window); without ``after`` only the
    newest due slot is returned (a fresh gateway does not walk history: 补抄 does that).
    """
    newest = latest_slot(task, now, tasks, zone)
    if after is None:
        return [newest] if not_before is None or newest >= not_before else []
    slots: list[datetime] = []
    slot = newest
    while slot > after and (not_before is None or slot >= not_before):
        slots.append(slot)
        slot = _previous(task, slot, tasks, zone)
    slots.reverse()
    return slots


def next_due(
    task: str, now: datetime, tasks: TasksConfig, zone: ZoneInfo, *, after: datetime | None
) -> datetime:
    """When the next not-yet-completed slot of ``task`` falls due (may be in the past)."""
    newest = latest_slot(task, now, tasks, zone)
    if after is None or after < newest:
        return due_time(task, newest, tasks, zone) if after is None else now
    return due_time(task, _next(task, newest, tasks, zone), tasks, zone)
