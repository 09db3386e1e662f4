"""Durable-log write throughput: group commit of N readings per transaction.

    python bench/edge_log.py                 # table: batch 50 and batch 1
    python bench/edge_log.py --json
    python bench/edge_log.py --batch 50 --batch 200 --seconds 3
    python bench/edge_log.py --day           # bytes written in a simulated 2 040-meter day

Each transaction is what a bus cycle does: ``with log.batch()`` (BEGIN IMMEDIATE), N new
readings (natural-key check, seq, insert), COMMIT with WAL and ``synchronous=FULL`` (one
fsync of the -wal per commit). The file lives in ``--dir`` (default: a temporary directory,
so the disk under ``$TMPDIR``); on a gateway, run it on the eMMC/SD card, where fsync is
slower. Next to each figure, the same commits with bare ``sqlite3`` (no natural-key check,
no seq, no validation, no index) measured in the same run: the ceiling this disk allows.
Figures are the best of five runs of about ``--seconds / 5``, interleaved with the ceiling.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.store import EdgeLog

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
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
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
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return {
        "records": records,
        "seconds": elapsed,
        "file_bytes": size,
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
    args = parser.parse_args()
    if args.day:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            days = {
                "with raw frames": one_day(Path(tmp)),
                "without raw frames": one_day(Path(tmp), frames=False),
            }
        if args.json:
            print(json.dumps(days, indent=2))
            return
        for label, day in days.items():
            print(
                f"one day, 2 040 meters, {label}: {day['records']:.0f} records "
                f"in {day['seconds']:.1f} s, file {day['file_bytes'] / 1e6:.1f} MB, "
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
