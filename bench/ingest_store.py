"""Central ingest store throughput: readings/s through ``IngestStore.apply_batch``.

    python bench/ingest_store.py                      # SQLite file and PostgreSQL, table
    python bench/ingest_store.py --readings 200000 --batch 500 --json
    python bench/ingest_store.py --backend sqlite

Each batch is what one uplink message carries: ``--batch`` readings with consecutive seqs,
applied in one transaction (watermark row lock, natural-key upsert, seq range, COMMIT;
SQLite with WAL and ``synchronous=FULL``, so one fsync per batch). Batches arrive in order,
as a draining backlog does; 2 040 meters × hourly curve points, so the readings primary key
grows as it would in production.

Two store figures: one batch per transaction (``apply_batch``) and ``--group`` batches per
transaction (``apply_batches``: what a consumer does with the messages waiting for it; one
commit, so one fsync, per group). Next to them, the ceiling measured in the same run: the
same rows (already in database form) inserted by the bare driver (``executemany``, one
transaction per batch) into a table with the same columns and no key at all. PostgreSQL comes from
``--postgres-url`` (default: this machine's server); a database of its own is created and
dropped. Figures are the best of ``--repeats`` runs, each on a fresh database.
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from central.db import make_engine, upgrade
from central.db.types import decimal_text, utc_micros
from central.ingest.store import IncomingBatch, IncomingReading, IngestStore

BASE = datetime(2026, 1, 1, tzinfo=UTC)
METERS = 2040
GATEWAY = "gw-bench"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

BARE_COLUMNS = (
    "meter, obis, ts, value, unit, kind, source, quality, gateway, seq, read_at, received_at"
)


def make_batches(total: int, size: int) -> list[list[IncomingReading]]:
    batches = []
    for start in range(0, total, size):
        batch = []
        for seq in range(start + 1, min(start + size, total) + 1):
            hour = (seq - 1) // METERS
            ts = BASE + timedelta(hours=hour)
            batch.append(
                IncomingReading(
                    seq=seq,
                    meter=f"{(seq - 1) % METERS:012d}",
                    obis="1.8.0",
                    time=ts,
                    value=Decimal(seq) / 1000,
                    unit="kWh",
                    kind="curve",
                    source="scheduled",
                    quality="ok",
                    read_at=ts + timedelta(seconds=40),
                )
            )
        batches.append(batch)
    return batches


def run_store(url: str, batches: list[list[IncomingReading]], group: int = 1) -> float:
    upgrade(url)
    engine = make_engine(url)
    try:
        store = IngestStore(engine)
        store.enroll_gateway(GATEWAY)
        incoming = [IncomingBatch(GATEWAY, 1, b[0].seq, b[-1].seq, b) for b in batches]
        count = 0
        start = time.perf_counter()
        for first in range(0, len(incoming), group):
            for result in store.apply_batches(incoming[first : first + group]):
                count += result.inserted
        elapsed = time.perf_counter() - start
        assert store.watermark(GATEWAY) == batches[-1][-1].seq
        assert count == sum(len(b) for b in batches)
    finally:
        engine.dispose()
    return count / elapsed


def bare_rows(
    batches: list[list[IncomingReading]], sqlite_form: bool
) -> list[list[tuple[Any, ...]]]:
    now = datetime.now(UTC)
    out = []
    for batch in batches:
        rows = []
        for r in batch:
            if sqlite_form:
                rows.append(
                    (r.meter, r.obis, utc_micros(r.time), decimal_text(r.value), r.unit, r.kind,
                     r.source, r.quality, GATEWAY, r.seq, utc_micros(r.read_at), utc_micros(now))
                )  # fmt: skip
            else:
                rows.append(
                    (r.meter, r.obis, r.time, r.value, r.unit, r.kind, r.source, r.quality,
                     GATEWAY, r.seq, r.read_at, now)
                )  # fmt: skip
        out.append(rows)
    return out


def ceiling_sqlite(path: Path, batches: list[list[IncomingReading]]) -> float:
    rows = bare_rows(batches, sqlite_form=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"CREATE TABLE bare ({BARE_COLUMNS})")
    sql = f"INSERT INTO bare ({BARE_COLUMNS}) VALUES ({', '.join('?' * 12)})"
    start = time.perf_counter()
    for batch in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, batch)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return sum(len(b) for b in rows) / elapsed


def ceiling_postgres(url: str, batches: list[list[IncomingReading]]) -> float:
    import psycopg

    rows = bare_rows(batches, sqlite_form=False)
    parsed = make_url(url)
    with psycopg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
    ) as conn:
        conn.execute(
            "CREATE TABLE bare (meter text, obis text, ts timestamptz, value numeric(20,6), "
            "unit text, kind text, source text, quality text, gateway text, seq bigint, "
            "read_at timestamptz, received_at timestamptz)"
        )
        conn.commit()
        sql = f"INSERT INTO bare ({BARE_COLUMNS}) VALUES ({', '.join(['%s'] * 12)})"
        start = time.perf_counter()
        for batch in rows:
            with conn.cursor() as cursor:
                cursor.executemany(sql, batch)
            conn.commit()
        elapsed = time.perf_counter() - start
    return sum(len(b) for b in rows) / elapsed


def postgres_database(admin_url: str) -> str:
    name = f"m2c_bench_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(admin_url: str, url: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def bench_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    batches = make_batches(args.readings, args.batch)
    best = {"store": 0.0, "store_grouped": 0.0, "ceiling": 0.0}

    def measure(kind: str, url: str, path: Path | None) -> float:
        if kind == "store":
            return run_store(url, batches)
        if kind == "store_grouped":
            return run_store(url, batches, args.group)
        if path is not None:
            return ceiling_sqlite(path, batches)
        return ceiling_postgres(url, batches)

    # Interleaved, each on a fresh database, so a slow moment of the disk hits all three.
    for _ in range(args.repeats):
        for kind in best:
            if backend == "sqlite":
                with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                    path = Path(tmp) / "central.sqlite3"
                    best[kind] = max(best[kind], measure(kind, f"sqlite:///{path}", path))
            else:
                url = postgres_database(args.postgres_url)
                try:
                    best[kind] = max(best[kind], measure(kind, url, None))
                finally:
                    drop_postgres_database(args.postgres_url, url)
    return {
        "backend": backend,
        "readings": args.readings,
        "batch": args.batch,
        "group": args.group,
        "store_readings_per_s": round(best["store"]),
        "store_grouped_readings_per_s": round(best["store_grouped"]),
        "ceiling_readings_per_s": round(best["ceiling"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--group", type=int, default=8, help="batches per transaction for apply_batches"
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument("--dir", default=None, help="where the SQLite files go (default: $TMPDIR)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [bench_backend(b, args) for b in (args.backend or ["sqlite", "postgresql"])]
    if args.json:
        print(json.dumps({"python": platform.python_version(), "results": results}, indent=2))
        return
    print(
        f"{args.readings} readings in batches of {args.batch}, best of {args.repeats}; "
        f"readings/s committed"
    )
    header = (
        f"{'backend':<11} {'store, 1 batch/commit':>22} "
        f"{f'store, {args.group} batches/commit':>24} {'raw-insert ceiling':>19}"
    )
    print(header)
    for r in results:
        print(
            f"{r['backend']:<11} {r['store_readings_per_s']:>22,} "
            f"{r['store_grouped_readings_per_s']:>24,} {r['ceiling_readings_per_s']:>19,}"
        )


if __name__ == "__main__":
    main()
