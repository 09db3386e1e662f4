"""The collector: runs the collection tasks over the bus masters, into the log and the ledger.

One :class:`Collector` per agent. The daemon calls :meth:`Collector.run_due` on a timer (every
few seconds is fine: it only works when a slot is due); technicians and central reach the
other methods through the control socket.

A *pass* over a task and its slots runs the buses in parallel (one thread each; every line
has its own :class:`~edge_agent.bus.BusMaster`) and, on each bus, the meters one after the
other. The readings of each *collection cycle* — every bus's reads of up to
:data:`CYCLE_SECONDS` of the pass (or :data:`CYCLE_METERS` meters) — go to the log in one
group-commit batch, together with the raw frames of the exchanges that went wrong; once
the pass's last cycle has committed, its slots are marked got or failed in the ledger, in
one transaction. A crash before that leaves the scheduled slot uncompleted, so the pass
runs again after the restart (the log drops the identical duplicates); slots a stopping
pass did not reach are written *expected*, so 补抄 reads them.

Data time: frozen readings carry the freeze time the meter keeps in its record (from the
driver's :class:`~edge_agent.drivers.Reading`), never the time we read them.

补抄 (:meth:`Collector.backfill`) walks the ledger's expected and failed slots of the last
``tasks.backfill_days`` days, oldest day first, by task priority within a day, from the
meters' own frozen records at the bus's lowest priority; a slot the window has passed
becomes ``exhausted`` and a ``backfill_exhausted`` event.
"""

from __future__ import annotations

import logging
import re
import threading
import time as monotonic_time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.archive import Meter, MeterArchive
from edge_agent.bus import BusMaster, Outcome, Priority
from edge_agent.bus.master import FailedExchange
from edge_agent.config import EdgeConfig
from edge_agent.drivers import (
    ClockReading,
    Dlt645Driver,
    Dlt698Driver,
    Driver,
    DriverError,
    MeterEvent,
    NotSupported,
    ReadFailed,
    Reading,
    RecordNotFound,
    driver_for,
    sync_clock_broadcast,
)
from edge_agent.drivers.base import readings_from
from edge_agent.store import EdgeLog, LogBatch
from edge_agent.tasks import schedule
from edge_agent.tasks.clock import ClockCheck, ClockDecision, decide, next_allowed
from edge_agent.tasks.ledger import Ledger, Slot, SuccessStats, slot_text
from shared_protocol import dlt698
from shared_protocol.dlt698 import OAD

__all__ = [
    "BACKFILL_EVERY",
    "BACKFILL_TASKS",
    "CYCLE_METERS",
    "CYCLE_READINGS",
    "CYCLE_SECONDS",
    "FRAMES_BATCH",
    "FRAMES_WAIT_S",
    "SUPPORTED",
    "TASK_KINDS",
    "Collector",
    "RunReport",
    "utc_now",
]

logger = logging.getLogger(__name__)

#: The log's reading kind of each ledger task (events go to the log as events).
TASK_KINDS = {"daily_frozen": "daily", "monthly_frozen": "monthly", "curve": "curve"}
#: Driver ``Reading.kind`` → log kind.
READING_KINDS = {"realtime": "instant", "daily": "daily", "monthly": "monthly", "curve": "curve"}
#: Tasks 补抄 re-reads (the firmware patches neither events nor real-time tasks).
BACKFILL_TASKS = ("daily_frozen", "monthly_frozen", "curve")
#: Which meter protocols keep the data each task reads.
SUPPORTED: dict[str, frozenset[str]] = {
    "daily_frozen": frozenset({"dlt645-2007", "dlt698.45"}),
    "monthly_frozen": frozenset({"dlt645-2007", "dlt645-1997", "dlt698.45"}),
    "curve": frozenset({"dlt645-2007", "dlt698.45"}),
    "events": frozenset({"dlt645-2007", "dlt698.45"}),
    "clock_check": frozenset({"dlt645-2007", "dlt645-1997", "dlt698.45"}),
}
#: A collection cycle — the readings of one group commit, from every bus of a pass — ends
#: after :data:`CYCLE_SECONDS` of the pass or this many meters read, whichever comes first,
#: and at the end of the pass. Each commit rewrites the log's partly filled pages and
#: fsyncs, and one bus's cycle alone would interleave its keys with seven others': fewer,
#: fuller commits are what keeps the flash writes of 2 040 meters read hourly under the
#: budget (edge.md D1.6; a commit per 32 meters of one bus wrote several times as much).
#: A crash loses at most one cycle of reading work, never a committed reading: the slots
#: are read again after the restart. At 2 400 baud an hourly curve pass of 255 meters a
#: bus takes about 90 s: one commit.
CYCLE_METERS = 2048
CYCLE_SECONDS = 120.0
#: … or once this many readings wait: what a cycle holds in memory is bounded too (a daily
#: pass brings ten values a meter; the agent's RSS budget is 48 MB, edge.md D8).
CYCLE_READINGS = 4096
#: Frames of failed exchanges ride along with a cycle's readings; when none come (events
#: passes, on-demand reads, a dead line) they are written on their own after this long or
#: once this many wait.
FRAMES_WAIT_S = 900.0
FRAMES_BATCH = 256
#: How often run_due retries the ledger's open slots (besides right after a scheduled pass).
BACKFILL_EVERY = timedelta(hours=1)
#: Curve catch-up and 补抄 never reach further back than this (firmware: today's curve).
CURVE_CATCH_UP = timedelta(days=1)
#: Curve points per 645 load-profile request.
CURVE_CHUNK = 16
#: How long the ledger keeps slots (a month of statistics for ``edge-agent ledger``).
LEDGER_KEEP = timedelta(days=62)
EVENT_KINDS = ("power_down", "cover_open")
#: A failure reason that says the bus master did not ask the meter (see ``_reason``).
_QUARANTINED = f"{Outcome.QUARANTINED.value}:"
EVENT_DEPTH = 10
MAX_REPORTED_FAILURES = 200


def utc_now() -> datetime:
    return datetime.now(UTC)


def _add_frames(batch: LogBatch, bus: str, exchanges: Sequence[FailedExchange]) -> None:
    """The raw frames of exchanges that went wrong (the log keeps only these; the trace
    ring in memory has the rest)."""
    for exchange in exchanges:
        for request in exchange.tx:
            batch.add_raw_frame(bus, "tx", request, exchange.at, meter=exchange.meter or None,
                                note=exchange.note)  # fmt: skip
        if exchange.rx:
            end = exchange.at + timedelta(seconds=exchange.duration_s)
            batch.add_raw_frame(bus, "rx", exchange.rx, end, meter=exchange.meter or None,
                                note=exchange.note)  # fmt: skip


@dataclass
class RunReport:
    """What a pass (or several) did; JSON-ready through :meth:`to_dict`."""

    task: str
    source: str
    slots: list[datetime] = field(default_factory=list)
    bus: str | None = None  # set on the per-bus parts of a pass
    expected: int = 0
    got: int = 0
    failed: int = 0
    skipped: int = 0  # meters whose protocol does not keep this data
    exhausted: int = 0
    readings: int = 0
    events: int = 0
    duration_s: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)  # "meter@slot" → reason
    parts: list[RunReport] = field(default_factory=list)
    clock: list[ClockCheck] = field(default_factory=list)
    power_restored: list[str] = field(default_factory=list)  # meters back from a power cut

    def add(self, other: RunReport) -> None:
        self.parts.append(other)
        self.expected += other.expected
        self.got += other.got
        self.failed += other.failed
        self.skipped += other.skipped
        self.exhausted += other.exhausted
        self.readings += other.readings
        self.events += other.events
        for key, reason in other.failures.items():
            if len(self.failures) < MAX_REPORTED_FAILURES:
                self.failures[key] = reason
        self.power_restored += [m for m in other.power_restored if m not in self.power_restored]

    @property
    def rate(self) -> Decimal:
        return SuccessStats(self.expected, self.got, self.failed, 0).rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "source": self.source,
            "bus": self.bus,
            "slots": [slot_text(slot) for slot in self.slots],
            "expected": self.expected,
            "got": self.got,
            "failed": self.failed,
            "skipped": self.skipped,
            "exhausted": self.exhausted,
            "rate": str(self.rate),
            "readings": self.readings,
            "events": self.events,
            "duration_s": round(self.duration_s, 3),
            "failures": dict(self.failures),
            "parts": [part.to_dict() for part in self.parts],
            "clock": [check.to_dict() for check in self.clock],
            "power_restored": list(self.power_restored),
        }


class _Cycle:
    """The log commits of one pass: every bus thread adds each meter's outcomes; the thread
    that finds the cycle due (:data:`CYCLE_SECONDS` since the last commit, or
    :data:`CYCLE_METERS` meters waiting) commits everything waiting, for all buses, while
    the others go on reading. The pass commits the rest at its end."""

    def __init__(self, collector: Collector, task: str, source: str) -> None:
        self._collector = collector
        self._task = task
        self._source = source
        self._lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._pending: list[tuple[RunReport, list[_Outcome]]] = []
        self._meters = 0
        self._readings = 0
        self._since = monotonic_time.monotonic()

    def add(self, report: RunReport, outcomes: list[_Outcome]) -> None:
        with self._lock:
            self._pending.append((report, outcomes))
            self._meters += 1
            self._readings += sum(len(o.readings) for o in outcomes)
            due = (
                self._meters >= CYCLE_METERS
                or self._readings >= CYCLE_READINGS
                or monotonic_time.monotonic() - self._since >= CYCLE_SECONDS
            )
        if due:
            self.commit()

    def commit(self) -> None:
        with self._commit_lock:  # commits in the order their outcomes were taken
            with self._lock:
                pending, self._pending = self._pending, []
                self._meters = self._readings = 0
                self._since = monotonic_time.monotonic()
            if pending:
                self._collector._store(self._task, pending, self._source)
            # stored: the ledger needs only how each slot went, not the values any more
            for _, outcomes in pending:
                for outcome in outcomes:
                    outcome.readings = []
                    outcome.events = []


@dataclass
class _Outcome:
    """One (meter, slot) attempt: readings, or why not."""

    meter: Meter
    slot: datetime
    readings: list[Reading] = field(default_factory=list)
    events: list[MeterEvent] = field(default_factory=list)
    reason: str | None = None  # None = got
    skipped: bool = False
    interrupted: bool = False  # the line was stopped under the read
    reached: bool = True  # False: a stopping pass never read it (marked expected)


_HEX8 = re.compile(r"^[0-9A-Fa-f]{8}$")
_HEX4 = re.compile(r"^[0-9A-Fa-f]{4}$")


class Collector:
    """Runs the tasks of ``config`` for the meters of ``archive`` over ``masters`` (by bus)."""

    def __init__(
        self,
        config: EdgeConfig,
        archive: MeterArchive,
        log: EdgeLog,
        masters: Mapping[str, BusMaster],
        ledger: Ledger,
        *,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.config = config
        self.archive = archive
        self.log = log
        self.masters = dict(masters)
        self.ledger = ledger
        self.now = now
        self.zone = ZoneInfo(config.gateway.timezone)
        self._drivers: dict[tuple[str, str], Driver] = {}
        self._drivers_lock = threading.Lock()
        # One pass at a time (the schedule, a technician's collect, 补抄); read_now does not
        # wait for it: the bus queue puts on-demand requests first.
        self._pass_lock = threading.RLock()
        self._stopping = threading.Event()
        self._powered_up = False
        self._last_backfill: datetime | None = None

    # ------------------------------------------------------------ plumbing

    def stop(self) -> None:
        """Make a running pass end at the next meter (thread-safe; the daemon calls it on
        SIGTERM before stopping the lines). Slots not reached stay expected and are read
        after the restart; nothing is marked failed because the agent is stopping."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def archive_changed(self, changes: Iterable[object] = ()) -> None:
        """The archive changed (the daemon polls its revision): forget per-meter driver
        state such as a cached meter date, so a replaced meter starts clean. Meter lists
        are read from the archive at every pass, so nothing else is needed."""
        with self._drivers_lock:
            self._drivers.clear()

    def driver(self, meter: Meter) -> Driver:
        master = self.masters.get(meter.bus)
        if master is None:
            raise KeyError(meter.bus)
        key = (meter.bus, meter.protocol)
        with self._drivers_lock:
            driver = self._drivers.get(key)
            if driver is None:
                driver = driver_for(
                    meter.protocol, master, zone=self.config.gateway.timezone, now=self.now
                )
                self._drivers[key] = driver
        return driver

    def _meters(self, task: str | None, keys: Iterable[str] | None) -> list[Meter]:
        if keys is None:
            meters = [meter for meter in self.archive.list() if meter.enabled]
        else:
            meters = [self.archive.get(key) for key in keys]
        if task is not None:
            meters = [meter for meter in meters if meter.protocol in SUPPORTED[task]]
        return meters

    def _local_day(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def _midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(0), tzinfo=self.zone).astimezone(UTC)

    def _window_start(self, days: int, now: datetime) -> datetime:
        """Oldest daily slot 补抄 still reads: local midnight ``days`` − 1 days ago, so
        ``days`` = 3 covers the freezes that closed the last three days."""
        return self._midnight(self._local_day(now) - timedelta(days=max(days, 1) - 1))

    def _task_window(self, task: str, days: int, now: datetime) -> datetime:
        """Oldest slot of ``task`` that catch-up and 补抄 still read.

        Daily: the last ``days`` freezes. Monthly: the newest due month (a month's freeze
        stays open until the next one falls due, whatever ``days`` says). Curves: the last
        :data:`CURVE_CATCH_UP` (the firmware patches today's curve), within ``days``.
        """
        daily = self._window_start(days, now)
        if task == "monthly_frozen":
            newest = schedule.latest_slot(task, now, self.config.tasks, self.zone)
            return min(newest, daily)
        if task == "curve":
            return max(daily, now - CURVE_CATCH_UP)
        return daily

    # ------------------------------------------------------------ the schedule

    def run_due(self) -> RunReport:
        """Run every task whose slot is due, catching up slots missed while down.

        Catch-up reaches back at most ``tasks.backfill_days`` (curves one day; events and
        clock checks only run once however many slots were missed). After power-up the
        clock check runs once when ``clock_check.after_power_up``. Open slots are retried
        (补抄) after a scheduled pass and at least every :data:`BACKFILL_EVERY`; each
        finished day's success statistics go to the log once.
        """
        with self._pass_lock:
            now = self.now()
            started = monotonic_time.monotonic()
            report = RunReport("due", "scheduled")
            self.keep_failed_frames()
            tasks = self.config.tasks
            ran_scheduled = False
            for task in ("daily_frozen", "monthly_frozen", "curve", "events"):
                if not schedule.enabled(task, tasks) or self.stopping:
                    continue
                bound = self._task_window(task, tasks.backfill_days, now)
                slots = schedule.due_slots(
                    task, now, tasks, self.zone, after=self.ledger.last_slot(task), not_before=bound
                )
                if task == "events":
                    slots = slots[-1:]
                if not slots:
                    continue
                part = self._pass(task, slots, None, "scheduled", Priority.SCHEDULED)
                self.ledger.completed(task, slots[-1], self.now())
                report.add(part)
                # 补抄 follows the frozen-data passes, as on a concentrator; curves and
                # events alone do not trigger it (they come every few minutes)
                ran_scheduled = ran_scheduled or task in ("daily_frozen", "monthly_frozen")
            if self.stopping:
                report.duration_s = monotonic_time.monotonic() - started
                return report
            report.clock = self._clock_due(now)
            # a meter back from a power cut may have lost time on its battery (D5.2:
            # check at power-up); the meters the scheduled check just read are skipped
            checked = {c.meter for c in report.clock}
            restored = [m for m in report.power_restored if m not in checked]
            if restored and self.config.tasks.clock_check.enabled:
                report.clock += self.clock_check(restored)
            if tasks.backfill_days > 0 and (
                ran_scheduled
                or self._last_backfill is None
                or now - self._last_backfill >= BACKFILL_EVERY
            ):
                if self._has_open_slots(now) or self._last_backfill is None:
                    report.add(self.backfill())
                self._last_backfill = now
            self._publish_finished_days(now)
            if self.ledger.mark_published("pruned", self._local_day(now)):
                self.ledger.prune(now - LEDGER_KEEP)
            report.duration_s = monotonic_time.monotonic() - started
            return report

    def _clock_due(self, now: datetime) -> list[ClockCheck]:
        check = self.config.tasks.clock_check
        if not check.enabled:
            return []
        last = self.ledger.last_slot("clock_check")
        newest = schedule.latest_slot("clock_check", now, self.config.tasks, self.zone)
        # A fresh ledger runs today's check only if its time passed within the hour.
        scheduled = newest > last if last is not None else now - newest < timedelta(hours=1)
        power_up = check.after_power_up and not self._powered_up
        self._powered_up = True
        if scheduled or power_up:
            checks = self.clock_check()
            self.ledger.completed("clock_check", newest, self.now())
            return checks
        pending = self.ledger.pending_syncs()
        if pending and not self.config.clock.is_forbidden(now.astimezone(self.zone).time()):
            return self.clock_check(list(pending))
        return []

    def _has_open_slots(self, now: datetime) -> bool:
        return bool(self._open_slots(now))

    # ------------------------------------------------------------ one pass

    def collect(
        self,
        task: str,
        slot: datetime | date | None = None,
        meters: Iterable[str] | None = None,
        *,
        source: str = "on_demand",
    ) -> RunReport:
        """Collect one task's ``slot`` (default: the newest due) now, for ``meters`` (default:
        every enabled meter that keeps the data).

        ``slot`` may be any instant in the slot (it is aligned: e.g. the daily freeze of its
        local day) or a local ``date`` (the daily freeze of that day 00:00, the month of
        that day, the day's first curve/event interval)."""
        if task not in schedule.TASKS:
            raise ValueError(f"unknown task {task!r}; use one of {', '.join(schedule.TASKS)}")
        if task == "clock_check":
            report = RunReport(task, source)
            report.clock = self.clock_check(meters)
            return report
        now = self.now()
        if slot is None:
            chosen = schedule.latest_slot(task, now, self.config.tasks, self.zone)
        else:
            if not isinstance(slot, datetime):
                slot = self._midnight(slot)
            chosen = schedule.slot_of(task, slot, self.config.tasks, self.zone)
        priority = Priority.ON_DEMAND if source == "on_demand" else Priority.SCHEDULED
        with self._pass_lock:
            return self._pass(task, [chosen], meters, source, priority)

    def _pass(
        self,
        task: str,
        slots: Sequence[datetime],
        keys: Iterable[str] | None,
        source: str,
        priority: Priority,
    ) -> RunReport:
        jobs = {meter.key: (meter, list(slots)) for meter in self._meters(task, keys)}
        report = self._execute(task, jobs, source, priority)
        report.slots = list(slots)
        return report

    def _execute(
        self,
        task: str,
        jobs: Mapping[str, tuple[Meter, list[datetime]]],
        source: str,
        priority: Priority,
    ) -> RunReport:
        """Read ``jobs`` (meter key → its slots), the buses in parallel."""
        started = monotonic_time.monotonic()
        report = RunReport(task, source)
        by_bus: dict[str, list[tuple[Meter, list[datetime]]]] = defaultdict(list)
        for meter, slots in jobs.values():
            by_bus[meter.bus].append((meter, slots))
        if not by_bus:
            return report
        # number new meters bus by bus: one bus cycle's rows then sit together in the log's
        # and the ledger's keys (a commit rewrites few pages; edge.md D1.6)
        ordered = sorted((meter.bus, meter.key) for meter, _ in jobs.values())
        self.log.register_meters(key for _, key in ordered)
        self.ledger.register_meters([(key, bus) for bus, key in ordered])
        cycle = _Cycle(self, task, source)
        with ThreadPoolExecutor(max_workers=len(by_bus), thread_name_prefix="collect") as pool:
            futures = [
                pool.submit(self._bus_pass, task, bus, work, source, priority, cycle)
                for bus, work in sorted(by_bus.items())
            ]
            passes = [future.result() for future in futures]
        cycle.commit()  # what the last cycle gathered
        self._mark(task, source, passes)
        for part, _ in passes:
            report.add(part)
        report.duration_s = monotonic_time.monotonic() - started
        return report

    def _bus_pass(
        self,
        task: str,
        bus: str,
        work: list[tuple[Meter, list[datetime]]],
        source: str,
        priority: Priority,
        cycle: _Cycle,
    ) -> tuple[RunReport, list[_Outcome]]:
        """Read one bus's meters into the pass's cycle (which commits the log); returns the
        bus's report and its outcomes, for the ledger once everything is committed, with
        an expected outcome for every slot a stopping pass did not reach."""
        report = RunReport(task, source, bus=bus)
        started = monotonic_time.monotonic()
        reached: list[_Outcome] = []
        for meter, slots in work:
            if self.stopping:
                break
            outcomes = self._read(task, meter, slots, priority)
            # a read cut short by a stopping line (or by stop()) is not the meter's
            # failure: its slot stays expected and is read after the restart
            outcomes = [o for o in outcomes if not o.interrupted]
            if self.stopping:
                outcomes = [o for o in outcomes if o.reason is None or o.skipped]
            cycle.add(report, outcomes)
            reached += outcomes
        if task in TASK_KINDS or task == "events":
            # slots a stopping pass did not reach (or cut short): expected, so 补抄 reads them
            done = {(o.meter.key, o.slot) for o in reached}
            reached += [
                _Outcome(meter, slot, reached=False)
                for meter, slots in work
                for slot in slots
                if (meter.key, slot) not in done
            ]
        report.duration_s = monotonic_time.monotonic() - started
        return report, reached

    def _read(
        self, task: str, meter: Meter, slots: list[datetime], priority: Priority
    ) -> list[_Outcome]:
        """Attempt every slot of one meter; never raises for a meter's failure."""
        if meter.bus not in self.masters:
            return [
                _Outcome(meter, slot, reason=f"bus {meter.bus} has no master") for slot in slots
            ]
        driver = self.driver(meter)
        if task == "curve":
            return self._read_curve(driver, meter, slots, priority)
        outcomes: list[_Outcome] = []
        for slot in slots:
            outcome = _Outcome(meter, slot)
            try:
                if task == "daily_frozen":
                    day = self._local_day(slot)
                    outcome.readings = driver.read_daily_frozen(meter, day, priority=priority)
                elif task == "monthly_frozen":
                    month = self._local_day(slot)
                    outcome.readings = driver.read_monthly_frozen(meter, month, priority=priority)
                elif task == "events":
                    outcome.events = self._read_events(driver, meter, priority)
                else:
                    raise ValueError(f"task {task!r} has no slot reader")
                if task in TASK_KINDS and not outcome.readings:
                    outcome.reason = "empty: the meter's record had no values"
            except NotSupported as exc:
                outcome.skipped = True
                outcome.reason = f"not_supported: {exc}"
            except Exception as exc:  # a meter's failure is a ledger row, never a crash
                outcome.reason = _reason(exc)
                outcome.interrupted = _interrupted(exc)
            outcomes.append(outcome)
        return outcomes

    def _read_curve(
        self, driver: Driver, meter: Meter, slots: list[datetime], priority: Priority
    ) -> list[_Outcome]:
        found: dict[datetime, list[Reading]] = defaultdict(list)
        reasons: dict[datetime, str] = {}
        interrupted: set[datetime] = set()
        ordered = sorted(slots)
        step = timedelta(minutes=15)
        runs: list[list[datetime]] = []
        for slot in ordered:
            if runs and slot - runs[-1][-1] == step and len(runs[-1]) < CURVE_CHUNK:
                runs[-1].append(slot)
            else:
                runs.append([slot])
        for run in runs:
            try:
                readings = driver.read_curve(meter, run[0], len(run), priority=priority)
            except NotSupported as exc:
                return [
                    _Outcome(meter, slot, reason=f"not_supported: {exc}", skipped=True)
                    for slot in slots
                ]
            except Exception as exc:  # a failure is recorded, never raised
                for slot in run:
                    reasons[slot] = _reason(exc)
                    if _interrupted(exc):
                        interrupted.add(slot)
                continue
            for reading in readings:
                found[reading.time].append(reading)
        outcomes = []
        for slot in slots:
            if slot in interrupted:
                outcomes.append(_Outcome(meter, slot, reason=reasons[slot], interrupted=True))
            elif found.get(slot):
                outcomes.append(_Outcome(meter, slot, readings=found[slot]))
            else:
                outcomes.append(
                    _Outcome(meter, slot, reason=reasons.get(slot, "no curve point at the slot"))
                )
        return outcomes

    def _read_events(self, driver: Driver, meter: Meter, priority: Priority) -> list[MeterEvent]:
        events: list[MeterEvent] = []
        for kind in EVENT_KINDS:
            total, last_start = self.ledger.event_mark(meter.key, kind)
            if isinstance(driver, Dlt645Driver):
                got = driver.read_events(
                    meter, (kind,), EVENT_DEPTH, known={kind: total or 0}, priority=priority
                )
            elif isinstance(driver, Dlt698Driver):
                # 698 keeps no counter we read: look at the newest record first (one frame
                # when nothing happened), and go deeper only when it is new
                got = driver.read_events(meter, (kind,), 1, priority=priority)
                if got and (last_start is None or got[0].start > last_start):
                    got = driver.read_events(meter, (kind,), EVENT_DEPTH, priority=priority)
            else:
                raise NotSupported(f"{meter.protocol} has no event records")
            events += [e for e in got if last_start is None or e.start > last_start]
        return events

    def _store(
        self, task: str, pending: Sequence[tuple[RunReport, list[_Outcome]]], source: str
    ) -> None:
        """One cycle's readings and events (every bus's, as ``(bus report, outcomes)``),
        with the frames of those buses' exchanges that went wrong, in one log batch — none
        when the cycle brought no record: the frames then wait for the next one. Events
        also move the ledger's event counters at once, so a restart never collects them
        twice."""
        if not any(o.readings or o.events for _, outcomes in pending for o in outcomes):
            return
        read_ts = self.now()
        kind = TASK_KINDS.get(task)
        buses = sorted({report.bus or "" for report, _ in pending})
        failed = {bus: self._failed_exchanges(bus) for bus in buses}
        with self.log.batch() as batch:
            for bus in buses:
                _add_frames(batch, bus, failed[bus])
            for report, outcome in ((r, o) for r, outcomes in pending for o in outcomes):
                for reading in outcome.readings:
                    stored = batch.add_reading(
                        reading.meter,
                        reading.obis,
                        reading.time,
                        reading.value,
                        reading.unit,
                        read_ts=read_ts,
                        source=source,
                        kind=kind or READING_KINDS.get(reading.kind, "instant"),
                    )
                    report.readings += stored is not None
                for event in outcome.events:
                    batch.add_event(
                        event.meter,
                        f"meter.{event.kind}",
                        {
                            "sequence": event.sequence,
                            "end": event.end.isoformat() if event.end else None,
                            "total": event.total,
                        },
                        event.start,
                    )
                    report.events += 1
                    if event.kind == "power_down" and event.end is not None:
                        report.power_restored.append(event.meter)
        if task == "events":
            with self.ledger.transaction():
                self._advance_event_marks([o for _, outcomes in pending for o in outcomes])

    def _mark(
        self, task: str, source: str, passes: Sequence[tuple[RunReport, list[_Outcome]]]
    ) -> None:
        """The ledger marks of a whole pass in one transaction, after the log committed the
        readings: got, failed, forgotten (the meter does not keep the data) or expected
        (not reached). One commit a pass instead of one a cycle: each ledger commit
        rewrites a few pages whatever it holds (edge.md D1.6). A crash before it leaves the
        scheduled slot uncompleted, so the pass runs again (the log drops the duplicates)."""
        with self.ledger.transaction():
            for report, outcomes in passes:
                bus = report.bus or ""
                for outcome in outcomes:
                    meter = outcome.meter.key
                    if not outcome.reached:
                        self.ledger.expect(task, meter, outcome.slot, bus=bus)
                        continue
                    if outcome.skipped:
                        report.skipped += 1
                        if task in TASK_KINDS or task == "events":
                            # not expected of this meter after all
                            self.ledger.forget(task, meter, outcome.slot)
                        continue
                    report.expected += 1
                    if outcome.reason is None:
                        report.got += 1
                        self.ledger.got(task, meter, outcome.slot, source=source, bus=bus)
                        continue
                    report.failed += 1
                    if len(report.failures) < MAX_REPORTED_FAILURES:
                        report.failures[f"{meter}@{slot_text(outcome.slot)}"] = outcome.reason
                    self.ledger.failed(
                        task, meter, outcome.slot, outcome.reason, source=source, bus=bus,
                        attempted=not outcome.reason.startswith(_QUARANTINED),
                    )  # fmt: skip

    def _failed_exchanges(self, bus: str) -> list[FailedExchange]:
        take = getattr(self.masters.get(bus), "take_failed", None)
        return take() if take is not None else []

    def keep_failed_frames(self, *, now: bool = False) -> int:
        """Write the frames of failed exchanges no cycle has written (on-demand reads,
        scans, clock checks, passes that stored nothing) once the oldest has waited
        :data:`FRAMES_WAIT_S` or :data:`FRAMES_BATCH` are waiting (``now``: whatever
        waits); returns how many exchanges."""
        pending: dict[str, list[FailedExchange]] = {}
        for bus, master in self.masters.items():
            waiting = getattr(master, "failed_waiting", None)
            if waiting is None:
                continue
            count, age = waiting()
            if count and (now or age >= FRAMES_WAIT_S or count >= FRAMES_BATCH):
                pending[bus] = self._failed_exchanges(bus)
        pending = {bus: exchanges for bus, exchanges in pending.items() if exchanges}
        if not pending:
            return 0
        with self.log.batch() as batch:
            for bus, exchanges in pending.items():
                _add_frames(batch, bus, exchanges)
        return sum(len(exchanges) for exchanges in pending.values())

    def _advance_event_marks(self, outcomes: list[_Outcome]) -> None:
        for outcome in outcomes:
            if outcome.reason is not None:
                continue
            newest: dict[str, MeterEvent] = {}
            for event in outcome.events:
                current = newest.get(event.kind)
                if current is None or event.start > current.start:
                    newest[event.kind] = event
            for kind, event in newest.items():
                total = event.total
                self.ledger.set_event_mark(outcome.meter.key, kind, total, event.start)

    # ------------------------------------------------------------ 补抄

    def backfill(self, days: int | None = None, meters: Iterable[str] | None = None) -> RunReport:
        """Re-collect the open (expected, failed) slots of the last ``days`` days (default
        ``tasks.backfill_days``), oldest day first and by task priority within a day, at
        backfill priority. Open slots older than the configured window are given up:
        ``exhausted`` in the ledger and a ``backfill_exhausted`` event in the log."""
        window_days = self.config.tasks.backfill_days if days is None else days
        with self._pass_lock:
            now = self.now()
            started = monotonic_time.monotonic()
            report = RunReport("backfill", "backfill")
            keys = None if meters is None else set(meters)
            give_up = max(window_days, self.config.tasks.backfill_days)
            report.exhausted = self._exhaust(give_up, keys, now)
            if window_days <= 0:
                return report
            open_slots = [
                row
                for row in self._open_slots(now)
                if row.slot >= self._task_window(row.task, window_days, now)
                and (keys is None or row.meter in keys)
            ]
            by_day: dict[date, dict[str, dict[str, list[datetime]]]] = defaultdict(
                lambda: defaultdict(lambda: defaultdict(list))
            )
            for row in open_slots:
                due = schedule.due_time(row.task, row.slot, self.config.tasks, self.zone)
                if due > now:
                    continue
                by_day[row.day][row.task][row.meter].append(row.slot)
            recovered: set[date] = set()
            for day in sorted(by_day):
                for task in BACKFILL_TASKS:
                    if self.stopping:
                        break
                    per_meter = by_day[day].get(task)
                    if not per_meter:
                        continue
                    jobs: dict[str, tuple[Meter, list[datetime]]] = {}
                    for key, slots in per_meter.items():
                        if key not in self.archive:
                            continue
                        jobs[key] = (self.archive.get(key), sorted(slots))
                    part = self._execute(task, jobs, "backfill", Priority.BACKFILL)
                    part.slots = sorted({s for _, slots in jobs.values() for s in slots})
                    report.add(part)
                    if part.got and self.ledger.is_published("success", day):
                        recovered.add(day)
            # central already has these days' rates: send the better ones
            for day in sorted(recovered):
                self.publish_statistics(day)
            report.duration_s = monotonic_time.monotonic() - started
            self._last_backfill = now
            self.ledger.completed("backfill", None, now)
            return report

    def _open_slots(self, now: datetime) -> list[Slot]:
        """Expected and failed slots of the tasks 补抄 re-reads, oldest first."""
        rows = [
            row
            for task in BACKFILL_TASKS
            for row in self.ledger.slots(task=task, state=("expected", "failed"), before=now)
        ]
        rows.sort(key=lambda row: (row.slot, BACKFILL_TASKS.index(row.task), row.meter))
        return rows

    def _exhaust(self, days: int, keys: set[str] | None, now: datetime) -> int:
        rows = [
            row
            for row in self._open_slots(now)
            if row.slot < self._task_window(row.task, days, now)
            and (keys is None or row.meter in keys)
        ]
        if not rows:
            return 0
        with self.log.batch() as batch:
            for row in rows:
                batch.add_event(
                    row.meter,
                    "backfill_exhausted",
                    {
                        "task": row.task,
                        "slot": slot_text(row.slot),
                        "bus": row.bus,
                        "attempts": row.attempts,
                        "reason": row.reason or "never attempted",
                        "window_days": self.config.tasks.backfill_days,
                    },
                    now,
                )
        with self.ledger.transaction():
            for row in rows:
                reason = f"backfill window passed; last: {row.reason or 'never attempted'}"
                self.ledger.exhaust(row.task, row.meter, row.slot, reason)
        return len(rows)

    # ------------------------------------------------------------ statistics

    def publish_statistics(self, day: date) -> int:
        """Write ``day``'s success statistics to the log: per task, per task and bus, and
        per task and meter for meters below 100 %. Returns the number of records."""
        at = self.now()
        count = 0
        with self.log.batch() as batch:
            for task in ("daily_frozen", "monthly_frozen", "curve", "events"):
                stats = self.ledger.success(task=task, day=day)
                if stats.expected == 0:
                    continue
                batch.add_statistic(
                    "collection.success_rate",
                    {"task": task, "day": day.isoformat(), **_counts(stats)},
                    stats.rate,
                    at,
                )
                count += 1
            summaries: dict[str, dict[str, Any]] = {}
            for by in ("bus", "meter"):
                for (task, key), stats in sorted(self.ledger.breakdown(day, by).items()):
                    if by == "meter" and stats.got == stats.expected:
                        continue
                    labels = {"task": task, "day": day.isoformat(), by: key, **_counts(stats)}
                    if by == "meter":
                        if task not in summaries:
                            summaries[task] = {
                                m: s.to_dict() for m, s in self.ledger.meters(task).items()
                            }
                        summary = summaries[task].get(key, {})
                        labels["consecutive_failures"] = summary.get("consecutive_failures")
                        labels["last_got_slot"] = summary.get("last_got_slot")
                    batch.add_statistic("collection.success_rate", labels, stats.rate, at)
                    count += 1
        return count

    def _publish_finished_days(self, now: datetime) -> None:
        today = self._local_day(now)
        for day in self.ledger.days():
            if day < today and self.ledger.mark_published("success", day):
                self.publish_statistics(day)

    # ------------------------------------------------------------ clocks

    def clock_check(
        self, meters: Iterable[str] | None = None, *, sync: bool = True
    ) -> list[ClockCheck]:
        """Read every meter's clock offset; with ``sync``, set the clocks that need it by
        the rules (threshold, forbidden window → deferred, daily cap)."""
        chosen = self._meters("clock_check", meters)
        by_bus: dict[str, list[Meter]] = defaultdict(list)
        for meter in chosen:
            by_bus[meter.bus].append(meter)
        if not by_bus:
            return []
        checks: list[ClockCheck] = []
        with ThreadPoolExecutor(max_workers=len(by_bus), thread_name_prefix="clock") as pool:
            futures = [
                pool.submit(self._clock_bus, bus, group, sync)
                for bus, group in sorted(by_bus.items())
            ]
            for future in futures:
                checks += future.result()
        return checks

    def _read_clock(self, meter: Meter) -> ClockReading | str:
        try:
            return self.driver(meter).read_clock(meter, priority=Priority.SCHEDULED)
        except Exception as exc:  # a failure is recorded, never raised
            return _reason(exc)

    def _clock_bus(self, bus: str, meters: list[Meter], sync: bool) -> list[ClockCheck]:
        checks: dict[str, ClockCheck] = {}
        to_sync: list[tuple[Meter, float]] = []
        events: list[tuple[str, str, dict[str, Any]]] = []
        config = self.config.clock
        if bus not in self.masters:
            return [
                ClockCheck(m.key, bus, ClockDecision.UNREADABLE, None, reason="no bus master")
                for m in meters
            ]
        for meter in meters:
            if self.stopping:
                break
            now = self.now()
            reading = self._read_clock(meter)
            if isinstance(reading, str):
                # a deferred sync is dropped, not retried on every run: the next
                # scheduled check finds the meter again
                self.ledger.clear_pending_sync(meter.key)
                checks[meter.key] = ClockCheck(
                    meter.key, bus, ClockDecision.UNREADABLE, None, reason=reading, at=now
                )
                continue
            offset = reading.offset.total_seconds()
            syncs = self.ledger.syncs_on(meter.key, self._local_day(now))
            decision = decide(reading.offset, now, config, self.zone, syncs)
            if decision is ClockDecision.OK:
                self.ledger.clear_pending_sync(meter.key)
                checks[meter.key] = ClockCheck(meter.key, bus, decision, offset, at=now)
                continue
            detail: dict[str, Any] = {
                "offset_s": round(offset, 3),
                "threshold_s": config.threshold_s,
                "decision": decision.value,
                "syncs_today": syncs,
            }
            if not sync:
                checks[meter.key] = ClockCheck(
                    meter.key, bus, decision, offset, reason="check only", at=now
                )
                events.append((meter.key, "clock_offset", detail))
                continue
            if decision is ClockDecision.DEFERRED:
                until = next_allowed(now, config, self.zone)
                self.ledger.defer_sync(meter.key, bus, offset, now)
                detail["until"] = until.isoformat()
                checks[meter.key] = ClockCheck(
                    meter.key,
                    bus,
                    decision,
                    offset,
                    reason=f"forbidden window; until {until:%H:%M:%S}Z",
                    at=now,
                )
            elif decision is ClockDecision.CAPPED:
                self.ledger.clear_pending_sync(meter.key)
                detail["cap"] = config.max_syncs_per_meter_per_day
                checks[meter.key] = ClockCheck(
                    meter.key, bus, decision, offset, reason="daily sync cap reached", at=now
                )
            else:
                to_sync.append((meter, offset))
            events.append((meter.key, "clock_offset", detail))
        if to_sync:
            for check, event in self._sync(bus, to_sync):
                checks[check.meter] = check
                events.append(event)
        if events:
            at = self.now()
            with self.log.batch() as batch:
                for key, code, detail in events:
                    batch.add_event(key, code, detail, at)
        return [checks[m.key] for m in meters if m.key in checks]

    def _sync(
        self, bus: str, to_sync: list[tuple[Meter, float]]
    ) -> list[tuple[ClockCheck, tuple[str, str, dict[str, Any]]]]:
        master = self.masters[bus]
        config = self.config.clock
        done: list[tuple[Meter, float, str, str]] = []  # meter, before, method, error
        broadcast = [m for m, _ in to_sync if m.family == "dlt645"]
        if broadcast and config.broadcast:
            # One C=08 broadcast sets every 645 meter on the line (edge.md b.6).
            result = sync_clock_broadcast(master, self.now(), self.config.gateway.timezone)
            error = "" if result.outcome.value == "sent" else f"broadcast {result.outcome.value}"
            done += [(m, off, "broadcast", error) for m, off in to_sync if m.family == "dlt645"]
        for meter, offset in to_sync:
            if meter.family == "dlt645" and config.broadcast:
                continue
            error = ""
            try:
                driver = self.driver(meter)
                if not isinstance(driver, Dlt698Driver):
                    raise NotSupported(f"{meter.protocol} is set by broadcast only")
                result = driver.sync_clock(meter, self.now(), priority=Priority.SCHEDULED)
                if not result.ok:
                    error = result.outcome.value
            except Exception as exc:  # a failure is recorded, never raised
                error = _reason(exc)
            done.append((meter, offset, "set", error))
        out = []
        for meter, before, method, error in done:
            after_reading = self._read_clock(meter)
            after = None if isinstance(after_reading, str) else after_reading.offset.total_seconds()
            at = self.now()
            synced = not error
            if synced:
                self.ledger.record_sync(meter.key, at, before, after, method)
            self.ledger.clear_pending_sync(meter.key)
            check = ClockCheck(
                meter.key,
                bus,
                ClockDecision.SYNC,
                before,
                offset_after_s=after,
                synced=synced,
                method=method,
                reason=error,
                at=at,
            )
            event = (
                meter.key,
                "clock_synced" if synced else "clock_sync_failed",
                {
                    "offset_before_s": round(before, 3),
                    "offset_after_s": None if after is None else round(after, 3),
                    "method": method,
                    "error": error or None,
                },
            )
            out.append((check, event))
        return out

    # ------------------------------------------------------------ on demand

    def read_now(self, meter_key: str, what: str, *, store: bool = True) -> list[Reading]:
        """Read ``what`` from one meter now, at on-demand priority: an OBIS code
        (``1-0:1.8.0``), a 645 DI (``00010000``, 1997: ``9010``), a 698 OAD
        (``00100200``), or a named set: ``realtime``, ``daily`` (the newest freeze),
        ``monthly``. With ``store`` the readings go to the log (source ``on_demand``).

        Raises ``KeyError`` for an unknown meter, ``ValueError`` for an unknown ``what``,
        and the driver's :class:`~edge_agent.drivers.DriverError` when the read fails.
        """
        meter = self.archive.get(meter_key)
        driver = self.driver(meter)
        priority = Priority.ON_DEMAND
        now = self.now()
        name = what.strip()
        readings: list[Reading]
        if name.lower() == "realtime":
            readings = driver.read_realtime(meter, priority=priority)
        elif name.lower() == "daily":
            slot = schedule.latest_slot("daily_frozen", now, self.config.tasks, self.zone)
            readings = driver.read_daily_frozen(meter, self._local_day(slot), priority=priority)
        elif name.lower() == "monthly":
            slot = schedule.latest_slot("monthly_frozen", now, self.config.tasks, self.zone)
            readings = driver.read_monthly_frozen(meter, self._local_day(slot), priority=priority)
        elif ":" in name or name.count(".") >= 2:
            readings = driver.read_realtime(meter, [name], priority=priority)
            if not readings:
                raise ValueError(f"{meter.protocol} meter {meter.key} gave no {name}")
        elif isinstance(driver, Dlt645Driver) and (_HEX8.match(name) or _HEX4.match(name)):
            values, _ = driver.read_di(meter, int(name, 16), priority)
            readings = readings_from(meter.key, values, self.now(), "realtime")
        elif isinstance(driver, Dlt698Driver) and _HEX8.match(name):
            oad = OAD.parse(name)
            result = driver.request(
                meter, lambda piid: dlt698.GetRequestNormal(piid, oad), f"read {name}", priority
            )
            assert isinstance(result.reply, dlt698.Apdu)
            readings = readings_from(
                meter.key, dlt698.apdu_values(result.reply), self.now(), "realtime"
            )
        else:
            raise ValueError(
                f"cannot read {what!r} from a {meter.protocol} meter; give an OBIS code "
                "(1-0:1.8.0), a 645 DI or 698 OAD in hex, or realtime/daily/monthly"
            )
        if store and readings:
            with self.log.batch() as batch:
                for reading in readings:
                    batch.add_reading(
                        reading.meter,
                        reading.obis,
                        reading.time,
                        reading.value,
                        reading.unit,
                        read_ts=self.now(),
                        source="on_demand",
                        kind=READING_KINDS.get(reading.kind, "instant"),
                    )
        return readings

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """JSON-ready: per task its schedule, last and next run, today's and yesterday's
        success; pending clock syncs; the 补抄 window."""
        now = self.now()
        today = self._local_day(now)
        yesterday = today - timedelta(days=1)
        tasks: dict[str, Any] = {}
        for task in schedule.TASKS:
            on = schedule.enabled(task, self.config.tasks)
            last_slot = self.ledger.last_slot(task)
            last_run = self.ledger.last_run(task)
            entry: dict[str, Any] = {
                "enabled": on,
                "last_slot": slot_text(last_slot) if last_slot else None,
                "last_run_at": slot_text(last_run) if last_run else None,
                "next_due": (
                    slot_text(
                        schedule.next_due(task, now, self.config.tasks, self.zone, after=last_slot)
                    )
                    if on
                    else None
                ),
            }
            if task != "clock_check":
                entry["today"] = self.ledger.success(task=task, day=today).to_dict()
                entry["yesterday"] = self.ledger.success(task=task, day=yesterday).to_dict()
            tasks[task] = entry
        pending = {
            meter: {"bus": bus, "offset_s": offset, "since": slot_text(since)}
            for meter, (bus, offset, since) in self.ledger.pending_syncs().items()
        }
        open_slots = len(self._open_slots(now))
        last_backfill = self.ledger.last_run("backfill")
        return {
            "now": slot_text(now),
            "timezone": self.config.gateway.timezone,
            "backfill_days": self.config.tasks.backfill_days,
            "open_slots": open_slots,
            "last_backfill": slot_text(last_backfill) if last_backfill else None,
            "tasks": tasks,
            "pending_clock_syncs": pending,
            "buses": sorted(self.masters),
        }


def _counts(stats: SuccessStats) -> dict[str, Any]:
    return {
        "expected": stats.expected,
        "got": stats.got,
        "failed": stats.failed,
        "pending": stats.pending,
        "gate": stats.gate,
    }


def _interrupted(exc: BaseException) -> bool:
    """The line was stopped under the read (agent shutdown): not the meter's failure."""
    if isinstance(exc, CancelledError):
        return True
    return isinstance(exc, RuntimeError) and str(exc).endswith("is stopped")


def _reason(exc: BaseException) -> str:
    """A short, stable failure reason for the ledger: the outcome, then the detail."""
    if isinstance(exc, ReadFailed):
        # "timeout: read 04000101" — the outcome first, so reasons group by it
        what = str(exc).removeprefix(f"meter {exc.meter}: ").rsplit(": ", 1)[0]
        return f"{exc.outcome.value}: {what}"
    if isinstance(exc, RecordNotFound):
        return f"record_not_found: {exc}"
    if isinstance(exc, DriverError):
        return f"driver_error: {exc}"
    return f"{type(exc).__name__}: {exc}"
