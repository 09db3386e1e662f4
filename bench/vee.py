"""VEE in-line pass: µs per reading of ``InlineValidator.validate`` with a warm cache.

    python bench/vee.py                         # SQLite file, every mix, a table
    python bench/vee.py --backend postgresql --json
    python bench/vee.py --mix register --steps 96

``--form columns`` (the default) hands the validator what the ingest store hands it: each
batch's rows in driver form, sorted by key, as columns (``central.ingest.store``'s
``_vee_columns``; SQLite's values stay text) — the timing includes making the columns.
``--form objects`` hands it ``shared_protocol.wire.WireReading`` objects (what
``central vee pending``/``rerun`` and the tests do). Readings are for ``--meters`` meters
(default 2 040: one concentrator's archive), all in the archive, in batches of ``--batch``
(500, the uplink's batch size), each quantity in rising time as a draining backlog
delivers them. Mixes:

* ``register`` — 15-minute register curve ``1-0:1.8.0`` (Decimal increment, V7/V8/V9 per
  reading);
* ``power`` — 15-minute active power ``1-0:16.7.0`` (V9 power bound);
* ``freeze`` — daily freeze blocks ``1-0:1.8.0…4`` and ``1-0:2.8.0…4`` (V10 sums);
* ``drain`` — bench/drain.py's traffic: per meter and day one ``1-0:1.8.0`` freeze and 24
  hourly ``1-0:16.7.0`` points.

Step 0 (every meter's first reading) is stored, step 1 is validated cold (every key
missing from the cache: its previous value is fetched, one query a batch), then
``--steps`` steps are timed one by one, each built just before it is checked (as a
consumer decodes a message) — the figure is the best and the median step. Timed batches
raise no exception, so this is the in-line pass itself: it writes nothing when nothing
fails. The floor is a plain Python loop reading the same eight attributes of the same
readings. Budget: ≤ 2.5 µs a reading.
"""

from __future__ import annotations

import argparse
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
from central.ingest.store import (  # the store's own row and column makers (private)
    IngestStore,
    MeterEntry,
    _reading_rows,
    _vee_columns,
)
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


def make_step(mix: str, meters: int, step: int) -> list[WireReading]:
    """One step's readings (a quarter hour, or a day for freeze/drain) of every meter."""
    readings: list[WireReading] = []
    seq = step * meters * 50
    # One datetime object per distinct time, as the wire decoder gives them (it caches
    # parsed times): an aware datetime computes its hash once per object.
    times: dict[timedelta, datetime] = {}

    def at(offset: timedelta) -> datetime:
        found = times.get(offset)
        if found is None:
            found = times[offset] = BASE + offset
        return found

    for m in range(meters):
        meter = f"{m:012d}"
        base = Decimal(1000 + m)
        if mix == "register":
            seq += 1
            value = base + Decimal(step * (m % 50 + 10)) / 100
            readings.append(_wire(seq, meter, "1-0:1.8.0", at(QUARTER * step), value, "curve"))
        elif mix == "power":
            seq += 1
            value = Decimal((step * 7 + m) % 90 + 10) / 10
            readings.append(_wire(seq, meter, "1-0:16.7.0", at(QUARTER * step), value, "curve"))
        elif mix == "freeze":
            day = at(timedelta(days=step))
            used = [Decimal(step * 3 + t) for t in range(1, 5)]
            for c, scale in ((1, 1), (2, 0)):
                tariffs = [base + u * scale for u in used]
                for t, value in enumerate([sum(tariffs), *tariffs]):
                    seq += 1
                    readings.append(_wire(seq, meter, f"1-0:{c}.8.{t}", day, value, "daily"))
        else:  # drain
            day = at(timedelta(days=step))
            seq += 1
            value = base + Decimal(step * 12)
            readings.append(_wire(seq, meter, "1-0:1.8.0", day, value, "daily"))
            for hour in range(24):
                seq += 1
                power = Decimal((hour * 13 + m) % 50 + 5) / 10
                ts = at(timedelta(days=step, hours=hour))
                readings.append(_wire(seq, meter, "1-0:16.7.0", ts, power, "curve"))
    return readings


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
        stored = make_step(mix, args.meters, 0)
        store.apply_batch(GATEWAY, 1, stored[0].seq, stored[-1].seq, stored)
        validator = InlineValidator(
            engine, RuleSet(), lambda: BASE + timedelta(days=400), refresh_s=3600
        )
        sqlite_form = engine.dialect.name == "sqlite"

        def handed(batch: list[WireReading]) -> Any:
            """The batch as the validator gets it (untimed): objects, or the store's rows."""
            if args.form == "objects":
                return batch
            rows = _reading_rows(GATEWAY, batch, BASE, sqlite_form)
            return sorted(rows.values())

        def validate(conn: Any, batch: Any) -> list[str]:
            if args.form == "objects":
                return validator.validate(conn, batch)
            return validator.validate(conn, _vee_columns(batch, sqlite_form))

        # Cold: every key's previous value comes from the database (one query a batch).
        first = [handed(b) for b in batched(make_step(mix, args.meters, 1), args.batch)]
        with engine.begin() as conn:
            start = time.perf_counter()
            for batch in first:
                statuses = validate(conn, batch)
            cold = time.perf_counter() - start
        assert set(statuses) == {"valid"}, set(statuses)
        cold_n = sum(len(b) for b in first)
        timings: list[float] = []
        floors: list[float] = []
        count = 0
        with engine.begin() as conn:
            for step in range(2, 2 + args.steps):
                # Built just before they are checked, as a consumer decodes a message.
                batches = batched(make_step(mix, args.meters, step), args.batch)
                given = [handed(b) for b in batches]
                n = sum(len(b) for b in batches)
                start = time.perf_counter()
                for batch in given:
                    statuses = validate(conn, batch)
                timings.append((time.perf_counter() - start) / n * 1e6)
                floors.append(floor(batches) / n * 1e6)
                assert set(statuses) == {"valid"}, set(statuses)
                count += n
        return {
            "mix": mix,
            "readings_timed": count,
            "us_per_reading_best": round(min(timings), 3),
            "us_per_reading_median": round(statistics.median(timings), 3),
            "cold_us_per_reading": round(cold / cold_n * 1e6, 3),
            "floor_us_per_reading": round(min(floors), 3),
        }
    finally:
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
    parser.add_argument("--steps", type=int, default=24, help="timed steps per mix")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--form",
        choices=("columns", "objects"),
        default="columns",
        help="what the validator is handed: the store's columns, or reading objects",
    )
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
        "form": args.form,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{args.backend}, {args.meters} meters, batches of {args.batch}, handed as {args.form}"
        " (µs per reading)"
    )
    print(f"{'mix':<10}{'best':>8}{'median':>8}{'cold':>8}{'floor':>8}  {'readings':>9}")
    for r in results:
        print(
            f"{r['mix']:<10}{r['us_per_reading_best']:>8}{r['us_per_reading_median']:>8}"
            f"{r['cold_us_per_reading']:>8}{r['floor_us_per_reading']:>8}  {r['readings_timed']:>9}"
        )


if __name__ == "__main__":
    main()
