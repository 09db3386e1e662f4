"""Durable-log write throughput, and the flash a gateway's day writes.

    python bench/edge_log.py                 # table: batch 50 and batch 1
    python bench/edge_log.py --json
    python bench/edge_log.py --batch 50 --batch 200 --seconds 3
    python bench/edge_log.py --day           # bytes written in a simulated 2 040-meter day
    python bench/edge_log.py --day --split   # … and how much of it is the log, the ledger

Each transaction is what a bus cycle does: ``with log.batch()`` (BEGIN IMMEDIATE), N new
readings (natural-key check, seq, insert), COMMIT with WAL and ``synchronous=FULL`` (one
fsync of the -wal per commit). The file lives in ``--dir`` (default: a temporary directory,
so the disk under ``$TMPDIR``); on a gateway, run it on the eMMC/SD card, where fsync is
slower. Next to each figure, the same commits with bare ``sqlite3`` (no natural-key check,
no seq, no validation, no index) measured in the same run: the ceiling this disk allows.
Figures are the best of five runs of about ``--seconds / 5``, interleaved with the ceiling.

``--day`` measures the flash-wear budget (edge.md D1.6, ≤ 50 MB a day at 2 040 meters with
hourly curves) two ways; "written" is this process's ``write_bytes`` (``/proc/self/io``):

* **agent**: the agent's own storage path for one day — the real ``Collector``,
  ``Ledger`` and ``EdgeLog`` driven by ``run_due`` every five simulated minutes over
  2 040 meters on 8 buses (meter ``n`` on bus ``n mod 8``: the buses' meters interleave,
  the worst case for the keys), with stub drivers in place of the RS-485 lines: hourly
  curves and events, the 00:05 daily freeze (10 values a meter), the 03:30 clock check,
  1 % dead meters (a timeout per read, 补抄 retrying them hourly) and one exchange in 250
  needing a retry — the frames of those failed exchanges go to the log. Each stub read
  advances its bus's clock by the wire time it would take at 2 400 baud, so bus cycles
  commit where they would. The uplink acknowledges and retention runs hourly.
* **log only** (the model this page used before): two raw frames per meter read, one
  daily and one curve reading per meter, one commit per bus and hour — the log alone.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import platform
import sqlite3
import sys
import tempfile
import threading
import time
import time as time_module
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.store import EdgeLog, LogBatch

BASE = datetime(2026, 1, 1, tzinfo=UTC)
REPEATS = 5


def run(directory: Path, batch_size: int, seconds: float) -> dict[str, float]:
    """Write batches for about ``seconds``; rows/s, commits/s and ms per commit."""
    path = directory / f"bench-{batch_size}-{time.monotonic_ns()}.db"
    rows = commits = 0
    with EdgeLog(path) as log:
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            with log.batch() as batch:
                for _ in range(batch_size):
                    period = BASE + timedelta(minutes=15 * (rows // 2040))
                    batch.add_reading(
                        f"{rows % 2040:012d}",
                        "1-0:1.8.0",
                        period,
                        Decimal(rows) / 100,
                        "kWh",
                        read_ts=period,
                        source="scheduled",
                        kind="curve",
                    )
                    rows += 1
            commits += 1
        elapsed = time.perf_counter() - start
    _remove_database(path)
    return {
        "rows_per_s": rows / elapsed,
        "commits_per_s": commits / elapsed,
        "ms_per_commit": 1000 * elapsed / commits,
    }


def ceiling(directory: Path, batch_size: int, seconds: float) -> dict[str, float]:
    """The same commits with plain sqlite3 (one table, executemany, no checks): what the
    disk and SQLite allow, measured in the same run so the log's overhead shows."""
    path = directory / f"raw-{batch_size}-{time.monotonic_ns()}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE r (seq INTEGER PRIMARY KEY, meter TEXT, value TEXT)")
    rows = commits = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO r (meter, value) VALUES (?, ?)",
            [(f"{n % 2040:012d}", str(n)) for n in range(rows, rows + batch_size)],
        )
        conn.execute("COMMIT")
        rows += batch_size
        commits += 1
    elapsed = time.perf_counter() - start
    conn.close()
    return {
        "rows_per_s": rows / elapsed,
        "commits_per_s": commits / elapsed,
        "ms_per_commit": 1000 * elapsed / commits,
    }


def _written_bytes() -> int | None:
    """Bytes this process caused to be written to storage (Linux /proc/self/io)."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def one_day(
    directory: Path, meters: int = 2040, buses: int = 8, *, frames: bool = True
) -> dict[str, float]:
    """A simulated day of a full concentrator, for the flash-wear budget (edge.md D1.6):
    hourly curve readings and the 00:05 daily freeze for every meter, one commit per bus
    per cycle, two raw frames per meter read, a success statistic per bus and cycle, the
    uplink acknowledging everything each hour and retention running hourly."""
    path = directory / f"day-{time.monotonic_ns()}.db"
    per_bus = [list(range(b, meters, buses)) for b in range(buses)]
    before = _written_bytes()
    start = time.perf_counter()
    records = 0
    with EdgeLog(path) as log:
        for hour in range(24):
            now = BASE + timedelta(hours=hour, minutes=5)
            for bus, members in enumerate(per_bus):
                with log.batch() as batch:
                    for meter in members:
                        address = f"{meter:012d}"
                        for kind in ("curve", "daily") if hour == 0 else ("curve",):
                            period = BASE + timedelta(hours=hour) if kind == "curve" else BASE
                            batch.add_reading(
                                address, "1-0:1.8.0", period, Decimal(meter * 24 + hour) / 100,
                                "kWh", read_ts=now, source="scheduled", kind=kind,
                            )  # fmt: skip
                            records += 1
                        if frames:
                            batch.add_raw_frame(f"bus{bus}", "tx", "68" + "11" * 15 + "16", now)
                            batch.add_raw_frame(f"bus{bus}", "rx", "68" + "22" * 40 + "16", now)
                    batch.add_statistic("collection_success", {"bus": str(bus)}, 100, now)
                    records += 1
            log.acknowledge(log.last_seq())
            log.apply_retention(now)
        elapsed = time.perf_counter() - start
        size = log.size_bytes()
    after = _written_bytes()
    _remove_database(path)
    return {
        "records": records,
        "seconds": elapsed,
        "file_bytes": size,
        "written_bytes": float(after - before) if after is not None and before is not None else -1,
    }


class _BusClock(threading.local):
    seconds = 0.0


class _FakeTime:
    """Simulated line time for the collector (its ``monotonic_time``): each bus thread's
    stub reads advance that bus's own clock by the seconds a 2 400-baud line would take,
    and the pass's clock is the furthest of them (the buses run side by side), so the
    collection cycles (``CYCLE_SECONDS``) commit where they would on a gateway."""

    def __init__(self) -> None:
        self.line = _BusClock()
        self._lock = threading.Lock()
        self._furthest = 0.0

    def advance(self, seconds: float) -> None:
        self.line.seconds += seconds
        with self._lock:
            self._furthest = max(self._furthest, self.line.seconds)

    def monotonic(self) -> float:
        return self._furthest


def _remove_database(*paths: Path | str) -> None:
    """Delete SQLite files with their -wal and -shm (each run starts from nothing)."""
    for path in paths:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def _fill_history(log: Any, ledger: Any, archive: Any, start: datetime, zone: str) -> None:
    """What months of running leave in the files, all acknowledged: the daily freezes of
    the last 31 days (10 values a meter), the hourly curves of the last 10 days, two days
    of failed-exchange frames; in the ledger the slots of the day that is 62 days old (the
    one the day's pruning removes). Checkpointed, so none of it counts as the day's."""
    meters = sorted(archive.list(), key=lambda m: (m.bus, m.key))
    if hasattr(log, "register_meters"):  # (an agent before this change has none)
        log.register_meters(m.key for m in meters)
        ledger.register_meters([(m.key, m.bus) for m in meters])
    local = ZoneInfo(zone)
    labelled = "meter" in inspect.signature(LogBatch.add_raw_frame).parameters

    def labels(n: int) -> dict[str, str]:  # (an agent before this change has no labels)
        return {"meter": meters[n].key, "note": "timeout"} if labelled else {}

    for day in range(-31, 0):
        freeze = start + timedelta(days=day)
        with log.batch() as batch:
            for meter in meters:
                for d in (1, 2):
                    for t in range(5):
                        batch.add_reading(
                            meter.key, f"1-0:{d}.8.{t}", freeze, Decimal(t), "kWh",
                            read_ts=freeze, source="scheduled", kind="daily",
                        )  # fmt: skip
        if day < -10:
            continue
        for hour in range(24):
            slot = freeze + timedelta(hours=hour)
            with log.batch() as batch:
                for meter in meters:
                    batch.add_reading(
                        meter.key, "1-0:16.7.0", slot, Decimal(hour), "kW",
                        read_ts=slot, source="scheduled", kind="curve",
                    )  # fmt: skip
                if day >= -2:
                    for n in range(100):
                        batch.add_raw_frame(meter.bus, "tx", bytes(20).hex(), slot, **labels(n))
    log.acknowledge(log.last_seq())
    old = start - timedelta(days=62)
    with ledger.transaction():
        for hour in range(24):
            for task in ("curve", "events"):
                for meter in meters:
                    ledger.got(task, meter.key, old + timedelta(hours=hour), bus=meter.bus)
        for meter in meters:
            ledger.got("daily_frozen", meter.key, old, bus=meter.bus)
    del local
    log._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ledger._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def agent_day(
    directory: Path,
    *,
    meters: int = 2040,
    buses: int = 8,
    dead_share: float = 0.01,
    retry_every: int = 250,
    log_dir: Path | None = None,
    ledger_dir: Path | None = None,
    curve_min: int = 60,
    history: bool = True,
) -> dict[str, float]:
    """One simulated day of the agent's storage path (see the module docstring); with
    ``history`` the files first get what a gateway running for months holds (not
    counted), so retention and the ledger's pruning delete as much as the day adds."""
    from edge_agent.archive import Meter, MeterArchive
    from edge_agent.bus import Outcome, Transaction, TransactionResult
    from edge_agent.config import (
        BusConfig,
        ClockCheckTask,
        CurveTask,
        DailyFrozenTask,
        EdgeConfig,
        EventTask,
        GatewayConfig,
        MonthlyFrozenTask,
        TasksConfig,
    )
    from edge_agent.drivers import ClockReading, Dlt645Driver, MeterEvent, ReadFailed, Reading
    from edge_agent.tasks import Collector, Ledger
    from edge_agent.tasks import collector as collector_module

    try:
        from edge_agent.bus.master import FailedExchange
    except ImportError:  # an agent that keeps no failed exchanges (before this change)
        FailedExchange = None  # type: ignore[assignment,misc]

    zone = "Asia/Shanghai"
    start = datetime(2026, 1, 9, 16, 0, tzinfo=UTC)  # 2026-01-10 00:00 in Shanghai
    now = [start]
    fake = _FakeTime()
    request = bytes.fromhex("FEFEFEFE68" + "11" * 6 + "681104333334333416")
    reply = bytes.fromhex("FEFEFEFE68" + "11" * 6 + "689108333334333356341216")
    dead = {f"{n:012d}" for n in range(0, meters, round(1 / dead_share))} if dead_share else set()
    counter = itertools.count(1)
    probed: dict[str, datetime] = {}

    class StubMaster:
        def __init__(self) -> None:
            self.failed: list[Any] = []

        def take_failed(self) -> list[Any]:
            taken, self.failed = self.failed, []
            return taken

    masters = {f"rs485-{b}": StubMaster() for b in range(buses)}

    class StubDriver(Dlt645Driver):
        """The 645 driver's answers without a line: values from the meter number and time."""

        def _exchange(self, meter: Meter, seconds: float) -> None:
            master = masters[meter.bus]
            if meter.key in dead:
                # the bus master quarantines a silent meter: one probe (a timeout) an hour
                # at most, the other reads end at once without touching the line
                outcome = Outcome.QUARANTINED
                if now[0] >= probed.get(meter.key, start):
                    probed[meter.key] = now[0] + timedelta(hours=1)
                    outcome = Outcome.TIMEOUT
                    fake.advance(1.0)
                    if FailedExchange is not None:
                        note = "timeout: no reply"
                        master.failed.append(
                            FailedExchange(now[0], meter.key, note, (request,), b"", 1.0)
                        )
                result = TransactionResult(Transaction(meter.key, request, None), outcome)
                raise ReadFailed(meter.key, "read", result)
            fake.advance(seconds)
            if next(counter) % retry_every == 0 and FailedExchange is not None:
                note = "ok: (2 attempts, 3 noise bytes)"
                master.failed.append(
                    FailedExchange(now[0], meter.key, note, (request, request), reply, 0.5)
                )

        def read_daily_frozen(
            self, meter: Meter, day: date, *, reverse: bool = True, priority: Any = None
        ) -> list[Reading]:
            self._exchange(meter, 1.2)  # date, freeze time, forward and reverse blocks
            when = datetime.combine(day, time_of_day(0), tzinfo=ZoneInfo(zone)).astimezone(UTC)
            base = Decimal(int(meter.key)) + Decimal(day.toordinal() % 1000)
            return [
                Reading(meter.key, f"1-0:{d}.8.{t}", base + t, "kWh", when, "daily")
                for d in (1, 2)
                for t in range(5)
            ]

        def read_curve(
            self,
            meter: Meter,
            start: datetime,
            count: int,
            quantity: str = "1-0:16.7.0",
            priority: Any = None,
        ) -> list[Reading]:
            self._exchange(meter, 0.35)
            return [
                Reading(meter.key, quantity, Decimal(start.hour) / 10, "kW",
                        start + timedelta(minutes=15 * i), "curve")
                for i in range(count)
            ]  # fmt: skip

        def read_events(
            self,
            meter: Meter,
            kinds: Any = ("power_down", "cover_open"),
            depth: int = 10,
            known: Any = None,
            priority: Any = None,
        ) -> list[MeterEvent]:
            self._exchange(meter, 0.3 * len(kinds))
            return []

        def read_clock(self, meter: Meter, priority: Any = None) -> ClockReading:
            self._exchange(meter, 0.6)
            shown = now[0].astimezone(ZoneInfo(zone)).replace(tzinfo=None)
            return ClockReading(meter.key, shown, now[0], now[0], timedelta(0))

    class StubCollector(Collector):
        def driver(self, meter: Meter) -> Any:
            return drivers[meter.bus]

    tasks = TasksConfig(
        daily_frozen=DailyFrozenTask(),
        monthly_frozen=MonthlyFrozenTask(enabled=False),
        curve=CurveTask(interval_min=curve_min),
        events=EventTask(interval_min=60),
        clock_check=ClockCheckTask(after_power_up=False),
    )
    config = EdgeConfig(
        gateway=GatewayConfig(id="gw-day", timezone=zone),
        buses=tuple(BusConfig(name=name, port=f"/dev/null{n}") for n, name in
                    enumerate(masters)),
        tasks=tasks,
    )  # fmt: skip
    stamp = time_module.monotonic_ns()
    log_path = (log_dir or directory) / f"agent-{stamp}.db"
    ledger_path = (ledger_dir or directory) / f"ledger-{stamp}.db"
    archive = MeterArchive(directory / f"archive-{stamp}.db")
    for n in range(meters):
        archive.add(Meter(address=f"{n:012d}", protocol="dlt645-2007", bus=f"rs485-{n % buses}"))
    drivers = {name: StubDriver(master, zone=zone, now=lambda: now[0])  # type: ignore[arg-type]
               for name, master in masters.items()}  # fmt: skip
    real_time = collector_module.monotonic_time
    collector_module.monotonic_time = fake  # type: ignore[assignment]
    log = EdgeLog(log_path, clock=lambda: now[0])
    ledger = Ledger(ledger_path, zone=zone)
    try:
        collector = StubCollector(config, archive, log, masters, ledger, now=lambda: now[0])  # type: ignore[arg-type]
        # the day before ran normally: no catch-up of yesterday's curves on the first call
        for task in ("curve", "events"):
            ledger.completed(task, start - timedelta(hours=1), start)
        ledger.completed("daily_frozen", start - timedelta(days=1), start)
        ledger.completed("clock_check", start - timedelta(days=1), start)
        collector._last_backfill = start
        if history:
            _fill_history(log, ledger, archive, start, zone)
        seq0 = log.last_seq()
        (frames0,) = log._conn.execute("SELECT coalesce(max(id), 0) FROM raw_frames").fetchone()
        before = _written_bytes()
        wall = time_module.perf_counter()
        for step in range(24 * 12):  # every five minutes (curves every 15: at :02, :17 …)
            now[0] = start + timedelta(minutes=5 * step + 3)
            collector.run_due()
            if step % 12 == 11:  # the uplink's ack and the agent's hourly retention
                log.acknowledge(log.last_seq())
                log.apply_retention(now[0])
        elapsed = time_module.perf_counter() - wall
        after = _written_bytes()
        records = log.last_seq() - seq0
        (frames,) = log._conn.execute(
            "SELECT count(*) FROM raw_frames WHERE id > ?", (frames0,)
        ).fetchone()
        size = log.size_bytes()
        ledger_size = ledger_path.stat().st_size
    finally:
        collector_module.monotonic_time = real_time  # type: ignore[assignment]
        log.close()
        ledger.close()
        archive.close()
    _remove_database(log_path, ledger_path)
    return {
        "records": records,
        "raw_frames": frames,
        "seconds": elapsed,
        "file_bytes": size,
        "ledger_bytes": ledger_size,
        "written_bytes": float(after - before) if after is not None and before is not None else -1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, action="append", help="readings per commit")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per batch size")
    parser.add_argument("--dir", type=Path, help="where the database file goes")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--day", action="store_true", help="bytes written by a simulated 2 040-meter day"
    )
    parser.add_argument(
        "--curve-min",
        type=int,
        default=60,
        help="with --day: the curve interval (the D1.6 budget is stated for 60; the "
        "agent's default is 15)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="with --day: start from empty files (no months of history: nothing to delete)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="with --day: also the agent's day with the ledger, then the log, on tmpfs "
        "(/dev/shm, whose writes are not counted), to show each file's share",
    )
    args = parser.parse_args()
    if args.day:
        days: dict[str, dict[str, float]] = {}
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            options: dict[str, Any] = {"curve_min": args.curve_min, "history": not args.fresh}
            days["agent (log + ledger)"] = agent_day(Path(tmp), **options)
            if args.split:
                with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
                    days["agent, log only"] = agent_day(Path(tmp), ledger_dir=Path(shm), **options)
                    days["agent, ledger only"] = agent_day(Path(tmp), log_dir=Path(shm), **options)
            days["log only, with raw frames"] = one_day(Path(tmp))
            days["log only, without raw frames"] = one_day(Path(tmp), frames=False)
        if args.json:
            print(json.dumps(days, indent=2))
            return
        every = "hourly" if args.curve_min == 60 else f"{args.curve_min}-minute"
        state = "from empty files" if args.fresh else "in steady state (months of history)"
        print(f"one simulated day, 2 040 meters on 8 buses, {every} curves, {state}:")
        for label, day in days.items():
            extra = f", {day['raw_frames']:.0f} kept frames" if "raw_frames" in day else ""
            print(
                f"  {label}: {day['records']:.0f} new records{extra} in {day['seconds']:.1f} s, "
                f"log file {day['file_bytes'] / 1e6:.1f} MB, "
                f"written {day['written_bytes'] / 1e6:.1f} MB"
            )
        return
    sizes = args.batch or [50, 1]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for size in sizes:
            # interleaved, because fsync time on a shared disk drifts from second to second
            runs: dict[str, list[dict[str, float]]] = {}
            for _ in range(REPEATS):
                for name, bench in (("EdgeLog", run), ("sqlite3 ceiling", ceiling)):
                    label = f"{name} batch {size}"
                    runs.setdefault(label, []).append(bench(Path(tmp), size, args.seconds / 5))
            for label, measured in runs.items():
                results[label] = max(measured, key=lambda r: r["rows_per_s"])
    if args.json:
        print(json.dumps({"sqlite": sqlite3.sqlite_version, "results": results}, indent=2))
        return
    print(f"SQLite {sqlite3.sqlite_version}, Python {platform.python_version()}, WAL, FULL")
    print(f"{'':<24} {'rows/s':>10} {'commits/s':>10} {'ms/commit':>10}")
    for label, r in results.items():
        print(
            f"{label:<24} {r['rows_per_s']:>10.0f} {r['commits_per_s']:>10.0f} "
            f"{r['ms_per_commit']:>10.2f}"
        )


if __name__ == "__main__":
    main()
