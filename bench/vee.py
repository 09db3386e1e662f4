"""VEE in-line pass: µs per reading of ``InlineValidator.validate`` with a warm cache.

    python bench/vee.py                         # SQLite file, every mix, a table
    python bench/vee.py --backend postgresql --json
    python bench/vee.py --mix register --steps 96 --repeats 9

Readings are ``shared_protocol.wire.WireReading`` (what the ingest consumer hands over),
for ``--meters`` meters (default 2 040: one concentrator's archive), all in the archive,
in batches of ``--batch`` (500, the uplink's batch size), each quantity in rising time as a
draining backlog delivers them. Mixes:

* ``register`` — 15-minute register curve ``1-0:1.8.0`` (the costliest: Decimal increment,
  V7/V8/V9 per reading);
* ``power`` — 15-minute active power ``1-0:16.7.0`` (V9 power bound);
* ``freeze`` — daily freeze blocks ``1-0:1.8.0…4`` and ``1-0:2.8.0…4`` (V10 sums);
* ``drain`` — bench/drain.py's traffic: per meter and day one ``1-0:1.8.0`` freeze and 24
  hourly ``1-0:16.7.0`` points.

The database holds what the validator would look up (the first step of every key, stored,
so the cold pass fetches it); timed batches validate without any exception, i.e. the
in-line pass itself: it writes nothing when nothing fails. The figure is the best of
``--repeats`` groups of batches (each group fresh times, so the cache stays warm but is
never ahead of the readings), next to the median, a cold first pass (every key missing
from the cache: one query per batch), and the floor — a plain Python loop reading the same
eight attributes of the same readings. Budget: ≤ 2.5 µs a reading.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from central.db import make_engine, upgrade
from central.ingest.store import IngestStore, MeterEntry
from central.vee import InlineValidator, RuleSet
from shared_protocol.wire import WireReading

GATEWAY = "gw-bench"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BASE = datetime(2026, 1, 1, 16, tzinfo=UTC)  # local midnight, Shanghai
QUARTER = timedelta(minutes=15)
MIXES = ("register", "power", "freeze", "drain")


def _wire(seq: int, meter: str, obis: str, ts: datetime, value: Decimal, kind: str) -> WireReading:
    unit = "kW" if ".7." in obis else "kWh"
    return WireReading(seq, meter, obis, ts, value, unit, kind, "scheduled", "ok", ts)


def make_steps(mix: str, meters: int, steps: int) -> list[list[WireReading]]:
    """The readings of each step (a quarter hour, or a day for freeze/drain), all meters."""
    out: list[list[WireReading]] = []
    seq = 0
    names = [f"{m:012d}" for m in range(meters)]
    for step in range(steps):
        readings: list[WireReading] = []
        for m, meter in enumerate(names):
            base = Decimal(1000 + m)
            if mix == "register":
                seq += 1
                value = base + Decimal(step * (m % 50 + 10)) / 100
                readings.append(
                    _wire(seq, meter, "1-0:1.8.0", BASE + QUARTER * step, value, "curve")
                )
            elif mix == "power":
                seq += 1
                value = Decimal((step * 7 + m) % 90 + 10) / 10
                readings.append(
                    _wire(seq, meter, "1-0:16.7.0", BASE + QUARTER * step, value, "curve")
                )
            elif mix == "freeze":
                day = BASE + timedelta(days=step)
                used = [Decimal(step * 3 + t) for t in range(1, 5)]
                for c, scale in ((1, 1), (2, 0)):
                    tariffs = [base + u * scale for u in used]
                    for t, value in enumerate([sum(tariffs), *tariffs]):
                        seq += 1
                        readings.append(_wire(seq, meter, f"1-0:{c}.8.{t}", day, value, "daily"))
            else:  # drain
                day = BASE + timedelta(days=step)
                seq += 1
                value = base + Decimal(step * 12)
                readings.append(_wire(seq, meter, "1-0:1.8.0", day, value, "daily"))
                for hour in range(24):
                    seq += 1
                    power = Decimal((hour * 13 + m) % 50 + 5) / 10
                    ts = day + timedelta(hours=hour)
                    readings.append(_wire(seq, meter, "1-0:16.7.0", ts, power, "curve"))
        out.append(readings)
    return out


def batched(readings: list[WireReading], size: int) -> list[list[WireReading]]:
    return [readings[i : i + size] for i in range(0, len(readings), size)]


def floor(batches: list[list[WireReading]]) -> float:
    """A plain loop reading the eight attributes the validator reads."""
    seen = []
    start = time.perf_counter()
    for batch in batches:
        for r in batch:
            seen.append((r.meter, r.obis, r.time, r.value, r.unit, r.kind, r.source, r.quality))
    elapsed = time.perf_counter() - start
    assert len(seen) == sum(len(b) for b in batches)
    return elapsed


def run_mix(url: str, mix: str, args: argparse.Namespace) -> dict[str, Any]:
    upgrade(url)
    engine = make_engine(url)
    try:
        store = IngestStore(engine)
        store.enroll_gateway(GATEWAY)
        names = [f"{m:012d}" for m in range(args.meters)]
        archive = [MeterEntry(n, n, "dlt645-2007") for n in names]
        store.record_birth(GATEWAY, 1, {}, BASE - timedelta(days=1), archive)
        steps = make_steps(mix, args.meters, args.steps)
        store.apply_batch(GATEWAY, 1, steps[0][0].seq, steps[0][-1].seq, steps[0])
        validator = InlineValidator(
            engine, RuleSet(), lambda: BASE + timedelta(days=400), refresh_s=3600
        )
        later = [b for step in steps[1:] for b in batched(step, args.batch)]
        # The pre-built readings (a million objects for some mixes) would make every
        # garbage collection walk them; a consumer holds one batch at a time.
        gc.collect()
        gc.freeze()
        # Cold: every key's previous value comes from the database (one query a batch).
        first_step = batched(steps[1], args.batch)
        with engine.begin() as conn:
            start = time.perf_counter()
            for batch in first_step:
                statuses = validator.validate(conn, batch)
            cold = time.perf_counter() - start
        assert set(statuses) == {"valid"}, set(statuses)
        cold_n = sum(len(b) for b in first_step)
        rest = later[len(first_step) :]
        groups = max(1, min(args.repeats, len(rest)))
        size = len(rest) // groups
        timings: list[float] = []
        floors: list[float] = []
        with engine.begin() as conn:
            for g in range(groups):
                group = rest[g * size : (g + 1) * size]
                n = sum(len(b) for b in group)
                start = time.perf_counter()
                for batch in group:
                    statuses = validator.validate(conn, batch)
                timings.append((time.perf_counter() - start) / n * 1e6)
                floors.append(floor(group) / n * 1e6)
                assert set(statuses) == {"valid"}, set(statuses)
        return {
            "mix": mix,
            "readings_timed": size * args.batch * groups,
            "us_per_reading_best": round(min(timings), 3),
            "us_per_reading_median": round(statistics.median(timings), 3),
            "cold_us_per_reading": round(cold / cold_n * 1e6, 3),
            "floor_us_per_reading": round(min(floors), 3),
        }
    finally:
        gc.unfreeze()
        engine.dispose()


def with_database(backend: str, postgres_url: str, body: Callable[[str], Any]) -> Any:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            return body(f"sqlite:///{Path(tmp) / 'vee.sqlite3'}")
    name = f"m2c_bench_{secrets.token_hex(4)}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        return body(make_url(postgres_url).set(database=name).render_as_string(False))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument("--mix", choices=(*MIXES, "all"), default="all")
    parser.add_argument("--meters", type=int, default=2040)
    parser.add_argument("--steps", type=int, default=24, help="time steps per mix")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7, help="timed groups of batches")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    mixes = MIXES if args.mix == "all" else (args.mix,)
    results = [
        with_database(args.backend, args.postgres_url, lambda url, m=m: run_mix(url, m, args))
        for m in mixes
    ]
    report = {
        "backend": args.backend,
        "meters": args.meters,
        "batch": args.batch,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.backend}, {args.meters} meters, batches of {args.batch} (µs per reading)")
    print(f"{'mix':<10}{'best':>8}{'median':>8}{'cold':>8}{'floor':>8}  {'readings':>9}")
    for r in results:
        print(
            f"{r['mix']:<10}{r['us_per_reading_best']:>8}{r['us_per_reading_median']:>8}"
            f"{r['cold_us_per_reading']:>8}{r['floor_us_per_reading']:>8}  {r['readings_timed']:>9}"
        )


if __name__ == "__main__":
    main()
