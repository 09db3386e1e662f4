"""VEE day close at scale: ``close_day`` for every meter of a reading day.

    python bench/vee_day.py                         # 10 000 meters, SQLite file
    python bench/vee_day.py --backend postgresql    # central on PostgreSQL
    python bench/vee_day.py --meters 2040 --json
    python bench/vee_day.py --backend postgresql --workers 2

The day close runs the meter-day rules (V1 completeness, V4–V6 use against history, V10,
V13–V15) and estimation for one local day, after the in-line pass has validated the
readings. This measures it as central runs it after midnight: one process, one core.

The database holds, for each of ``--meters`` meters (not timed, written directly as VEE
would have left them, ``vee_status = 'valid'``):

* 33 daily freezes of ``1-0:1.8.0`` (import kWh) and ``1-0:2.8.0`` (export, 0) at local
  midnight — V5's 28-day history plus V6's sustained days;
* the 15-minute ``1-0:16.7.0`` kW curve of the day (96 points) and of the same weekday a
  week before (the like day), each day's points adding up to its freeze delta exactly;
* gaps: ``--short-gaps`` of the meters miss 1–4 quarters of the day (LIN), ``--long-gaps``
  miss 8–24 (REG: the like day's shape scaled to the freeze delta).

Timed: ``close_day(engine, day, workers=N)`` on every meter (it finds them itself), then
the figure is curve points closed per second. In the same run, the floor: reading what the day close
reads (the day's curve points and the freeze history; not the like days of the few
meters with gaps) with the same queries' shape and nothing else. Reference (``../shared/reference/
central.md`` (d)): VEE of 10 M meters × 96 points in ≤ 20 min on a 16-core node, i.e.
≈ 50 000 points/s for each core.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from drain import DEFAULT_POSTGRES, database  # noqa: E402
from sqlalchemy import Engine, func, select  # noqa: E402

from central.db import make_engine, readings  # noqa: E402
from central.db.migrate import upgrade  # noqa: E402
from central.db.vee_tables import estimated_readings, vee_exceptions  # noqa: E402
from central.vee import close_day  # noqa: E402
from central.vee.day import day_window  # noqa: E402

ZONE = "Asia/Shanghai"
DAY = date(2026, 11, 18)  # a Wednesday
HISTORY_DAYS = 32  # freezes from DAY − 32 to DAY + 1
POWER, IMPORT, EXPORT = "1-0:16.7.0", "1-0:1.8.0", "1-0:2.8.0"
QUARTER = timedelta(minutes=15)
PER_CORE_TARGET = 960_000_000 / (20 * 60) / 16  # points/s: the reference's node, per core
ROWS_PER_INSERT = 20_000
CENT = Decimal("0.01")


def meter_id(n: int) -> str:
    return f"{n + 1:012d}"


def day_curve(rng: random.Random) -> list[Decimal]:
    """96 kW points (3 decimals) of a household-like day: low at night, evening peak."""
    base = rng.uniform(0.2, 1.5)
    points = []
    for k in range(96):
        hour = k / 4
        shape = 1.0 + 0.8 * (7 <= hour < 9) + 1.6 * (18 <= hour < 22)
        points.append(Decimal(f"{base * shape * rng.uniform(0.85, 1.15):.3f}"))
    return points


def fill(
    engine: Engine, meters: int, short_share: float, long_share: float, seed: int
) -> dict[str, int]:
    """Write the meters' freezes and curves; returns the counts (rows, gaps by kind)."""
    rng = random.Random(seed)
    tz = ZoneInfo(ZONE)
    midnight = {
        DAY + timedelta(days=d): datetime.combine(
            DAY + timedelta(days=d), datetime.min.time(), tz
        ).astimezone(UTC)
        for d in range(-HISTORY_DAYS, 2)
    }
    received = datetime(2026, 11, 19, 1, tzinfo=UTC)
    counts = {"rows": 0, "short_gaps": 0, "long_gaps": 0, "missing_points": 0}
    rows: list[dict[str, Any]] = []

    def row(meter: str, obis: str, ts: datetime, value: Decimal, unit: str, kind: str) -> None:
        rows.append(
            {
                "meter": meter, "obis": obis, "ts": ts, "value": value, "unit": unit,
                "kind": kind, "source": "scheduled", "quality": "ok", "gateway": "gw-day",
                "seq": len(rows) + 1, "read_at": ts, "received_at": received,
                "vee_status": "valid",
            }
        )  # fmt: skip

    def flush(force: bool = False) -> None:
        if rows and (force or len(rows) >= ROWS_PER_INSERT):
            with engine.begin() as conn:
                conn.execute(readings.insert(), rows)
            counts["rows"] += len(rows)
            rows.clear()

    for n in range(meters):
        meter = meter_id(n)
        curves = {d: day_curve(rng) for d in (DAY - timedelta(days=7), DAY)}
        register = Decimal(rng.randint(1000, 90000))
        typical = sum(curves[DAY], Decimal(0)) / 4
        for d in sorted(midnight):
            row(meter, IMPORT, midnight[d], register, "kWh", "freeze")
            row(meter, EXPORT, midnight[d], Decimal(0), "kWh", "freeze")
            if d in curves:
                register += sum(curves[d], Decimal(0)) / 4
            else:  # an ordinary day: the day's own use, give or take 10 %
                register += (typical * Decimal(rng.randint(90, 110)) / 100).quantize(CENT)
        draw = rng.random()
        missing: set[int] = set()
        if draw < short_share:
            first, length = rng.randrange(0, 92), rng.randint(1, 4)
            counts["short_gaps"] += 1
            missing = set(range(first, first + length))
        elif draw < short_share + long_share:
            first, length = rng.randrange(0, 72), rng.randint(8, 24)
            counts["long_gaps"] += 1
            missing = set(range(first, first + length))
        counts["missing_points"] += len(missing)
        for d, points in curves.items():
            for k, kw in enumerate(points):
                if d == DAY and k in missing:
                    continue
                row(meter, POWER, midnight[d] + QUARTER * k, kw, "kW", "curve")
        flush()
    flush(force=True)
    return counts


def read_floor(engine: Engine) -> tuple[float, int]:
    """The rows the day close reads, read and nothing else: seconds and rows."""
    start, end = day_window(DAY, ZONE)
    started = time.perf_counter()
    count = 0
    with engine.connect() as conn:
        columns = (readings.c.meter, readings.c.obis, readings.c.ts, readings.c.value)
        status = readings.c.vee_status
        queries = [
            select(*columns, status).where(
                readings.c.obis == POWER, readings.c.ts >= start - QUARTER, readings.c.ts <= end
            ),
            select(*columns, status).where(
                readings.c.obis.in_([IMPORT, EXPORT]),
                readings.c.ts >= start - timedelta(days=HISTORY_DAYS),
                readings.c.ts <= end,
            ),
        ]
        for query in queries:
            for _ in conn.execute(query):
                count += 1
    return time.perf_counter() - started, count


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vee-day-") as work:
        url, drop = database(args.backend, Path(work), "day", args.postgres_url)
        try:
            upgrade(url)
            engine = make_engine(url)
            started = time.perf_counter()
            counts = fill(engine, args.meters, args.short_gaps, args.long_gaps, args.seed)
            filled_s = time.perf_counter() - started
            print(
                f"  filled {counts['rows']:,} rows in {filled_s:.0f} s", file=sys.stderr, flush=True
            )
            floor_s, floor_rows = read_floor(engine)
            started = time.perf_counter()
            summary = close_day(engine, DAY, zone=ZONE, workers=args.workers)
            close_s = time.perf_counter() - started
            with engine.connect() as conn:
                estimates = conn.execute(
                    select(func.count()).select_from(estimated_readings)
                ).scalar_one()
                raised = conn.execute(select(func.count()).select_from(vee_exceptions)).scalar_one()
            engine.dispose()
        finally:
            drop()
    points = summary["expected"]
    return {
        "backend": args.backend,
        "workers": args.workers,
        "meters": summary["meters"],
        "points": points,
        "received": summary["received"],
        "estimated": summary["estimated"],
        "not_estimated": summary["not_estimated"],
        "estimate_rows": estimates,
        "exceptions": summary["exceptions"],
        "exception_rows": raised,
        "gaps": counts,
        "close_s": round(close_s, 2),
        "points_per_s": round(points / close_s),
        "floor_s": round(floor_s, 2),
        "floor_rows": floor_rows,
        "per_core_target": round(PER_CORE_TARGET),
        "machine": f"{platform.machine()} CPython {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument(
        "--short-gaps", type=float, default=0.02, help="share of meters with a ≤ 1 h gap"
    )
    parser.add_argument("--long-gaps", type=float, default=0.01, help="share with a 2–6 h gap")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="close_day's processes")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"VEE day close, {result['backend']}, {result['workers']} worker(s), {result['machine']}")
    print(
        f"  {result['meters']:,} meters, {result['points']:,} curve points "
        f"({result['received']:,} received); gaps {result['gaps']['short_gaps']} short, "
        f"{result['gaps']['long_gaps']} long"
    )
    print(f"  estimated {result['estimated']}, left open {result['not_estimated']}")
    print(f"  exceptions {result['exceptions']}")
    print(
        f"  close_day {result['close_s']} s = {result['points_per_s']:,} points/s "
        f"(reference per core: {result['per_core_target']:,})"
    )
    print(f"  floor: reading its {result['floor_rows']:,} rows {result['floor_s']} s")


if __name__ == "__main__":
    main()
