"""Back-office API latency: a meter's 30-day time series under 50 concurrent clients.

    python bench/api_latency.py          # SQLite, 2 000 meters × 30 days hourly, 50 clients
    python bench/api_latency.py --database-url postgresql+psycopg://postgres@127.0.0.1/m2c_bench
    python bench/api_latency.py --interval 15 --seconds 30 --json

1. Seeds a database (``--meters`` meters on gateways of 200, ``--days`` days of
   ``1-0:1.8.0`` curve points every ``--interval`` minutes) through the ingest store, as
   ingestion would; ``--reuse`` skips seeding when the database already holds it.
2. Starts the API as deployed: ``central api serve`` (uvicorn, a real process, ``--workers``
   workers) on that database.
3. Logs in (``POST /api/v1/auth/token``) as a read-only user.
4. Load: ``--clients`` concurrent clients (asyncio, one keep-alive HTTP/1.1 connection each)
   each fetching random meters' ``--days``-day series back to back for ``--seconds``
   seconds after a warm-up; then the ceiling in the same run: the same clients on
   ``GET /healthz`` (no login, one ``SELECT 1``), i.e. what the server does when the
   route itself costs nothing.

Reports p50 / p95 / p99 latency and requests/s for both, and the CPU the server (uvicorn
and its workers) and the load generator used in each phase. The load generator runs on the
same machine and takes CPU from the server; server CPU ms per request is the figure that
does not depend on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select

from central.api import users as user_library
from central.db import make_engine, readings, upgrade
from central.ingest.store import IncomingBatch, IncomingReading, IngestStore, MeterEntry

OBIS = "1-0:1.8.0"
END = datetime(2026, 11, 1, tzinfo=UTC)
METERS_PER_GATEWAY = 200
BATCH = 20_000
USER = "bench-reader"
PASSWORD = "bench reader passphrase"
SECRET = "bench-secret-" + "s" * 40


def meter_id(n: int) -> str:
    return f"{n + 1:012d}"


def gateway_batches(
    gateway: str, ids: list[str], start: datetime, step: timedelta, points: int
) -> Iterator[IncomingBatch]:
    """A gateway's readings as batches of BATCH consecutive seqs."""
    batch: list[IncomingReading] = []
    seq = 0
    for meter in ids:
        base = Decimal(int(meter) % 9000 + 1000)
        for point in range(points):
            seq += 1
            ts = start + step * point
            value = base + Decimal(point) * Decimal("0.25")
            batch.append(
                IncomingReading(seq, meter, OBIS, ts, value, "kWh", "curve", "scheduled", "ok", ts)
            )
            if len(batch) >= BATCH:
                yield IncomingBatch(gateway, 1, batch[0].seq, batch[-1].seq, batch)
                batch = []
    if batch:
        yield IncomingBatch(gateway, 1, batch[0].seq, batch[-1].seq, batch)


def seed(url: str, meters: int, days: int, interval_min: int) -> int:
    """Gateways, archive and readings; returns the readings stored."""
    upgrade(url)
    engine = make_engine(url)
    store = IngestStore(engine)
    points = days * 24 * 60 // interval_min
    start = END - timedelta(days=days)
    stored = 0
    try:
        for first in range(0, meters, METERS_PER_GATEWAY):
            gateway = f"gw-{first // METERS_PER_GATEWAY:03d}"
            ids = [meter_id(n) for n in range(first, min(first + METERS_PER_GATEWAY, meters))]
            store.enroll_gateway(gateway, at=start)
            archive = [MeterEntry(m, m, "dlt645-2007", "bus1", f"TA-{gateway}") for m in ids]
            store.record_birth(gateway, 1, {"software_version": "bench"}, start, archive=archive)
            step = timedelta(minutes=interval_min)
            for batch in gateway_batches(gateway, ids, start, step, points):
                stored += store.apply_batches([batch])[0].inserted
            print(f"  seeded {gateway}: {len(ids)} meters", file=sys.stderr, flush=True)
        with engine.begin() as conn, contextlib.suppress(user_library.UserExists):
            user_library.add_user(conn, USER, "read_only", password=PASSWORD)
    finally:
        engine.dispose()
    return stored


def count_readings(url: str) -> int:
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(readings)).scalar_one())
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(url: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    central = shutil.which("central") or "central"
    env = {
        **os.environ,
        "M2C_DATABASE_URL": url,
        "M2C_SECRET_KEY": SECRET,
        "M2C_ENV": "development",
    }
    process = subprocess.Popen(
        [
            central,
            "api",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"the API server exited with {process.returncode}")
        time.sleep(0.2)
    stop_server(process)
    raise SystemExit("the API server did not answer /healthz within 60 s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def group_cpu_seconds(group: int) -> float:
    """CPU time (user + system) of every process in process group ``group`` (the server:
    uvicorn and its workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # field 5 of stat: pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class KeepAliveClient:
    """One HTTP/1.1 keep-alive connection: GET with fixed headers, a Content-Length body.

    The load generator shares the machine with the server; httpx's async client spent a
    whole core on ~200 requests/s here, so the "ceiling" it measured was its own. This one
    does only what the benchmark needs and refuses anything else (no chunked bodies)."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host = host
        self.port = port
        lines = [f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
        self.head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {target} HTTP/1.1\r\n".encode() + self.head)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lowered = head.lower()
        marker = lowered.find(b"\r\ncontent-length:")
        if marker < 0:
            raise RuntimeError(f"answer without Content-Length: {head[:200]!r}")
        end = lowered.index(b"\r\n", marker + 2)
        body = await self.reader.readexactly(int(lowered[marker + 17 : end]))
        if b"\r\nconnection: close" in lowered:
            self.writer.close()
            self.reader = self.writer = None
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(
    port: int,
    clients: int,
    seconds: float,
    warmup: float,
    requests: Iterator[str],
    headers: dict[str, str],
    server_group: int,
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    points = 0
    connections = [KeepAliveClient("127.0.0.1", port, headers) for _ in range(clients)]
    measuring = False
    stop_at = 0.0

    async def worker(client: KeepAliveClient) -> None:
        nonlocal errors, points
        while not (measuring and time.monotonic() >= stop_at):
            target = next(requests)
            started = time.perf_counter()
            status, body = await client.get(target)
            elapsed = time.perf_counter() - started
            if not measuring:
                continue
            if status != 200:
                errors += 1
                continue
            latencies.append(elapsed)
            if b'"items"' in body:
                points += body.count(b'"ts"')

    tasks = [asyncio.create_task(worker(client)) for client in connections]
    await asyncio.sleep(warmup)
    measuring = True
    began = time.monotonic()
    client_cpu = time.process_time()
    server_cpu = group_cpu_seconds(server_group)
    stop_at = began + seconds
    await asyncio.gather(*tasks)
    wall = time.monotonic() - began
    client_cpu = time.process_time() - client_cpu
    server_cpu = group_cpu_seconds(server_group) - server_cpu
    for client in connections:
        client.close()
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "points_per_response": round(points / len(latencies), 1) if latencies else 0,
        "server_cpu_percent": round(100 * server_cpu / wall),
        "client_cpu_percent": round(100 * client_cpu / wall),
        "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, len(latencies)), 2),
    }


def series_requests(meters: int, days: int) -> Iterator[str]:
    rng = random.Random(7)
    query = urlencode(
        {
            "obis": OBIS,
            "start": (END - timedelta(days=days)).isoformat(),
            "end": END.isoformat(),
        }
    )
    while True:
        yield f"/api/v1/meters/{meter_id(rng.randrange(meters))}/series?{query}"


def health_requests() -> Iterator[str]:
    while True:
        yield "/healthz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="default: a new SQLite file (deleted after)")
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--interval", type=int, default=60, help="minutes between points")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0, help="per measured phase")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--reuse", action="store_true", help="do not seed if already seeded")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    workdir = None
    url = args.database_url
    if url is None:
        workdir = Path(tempfile.mkdtemp(prefix="m2c-api-bench-"))
        url = f"sqlite:///{workdir / 'central.sqlite3'}"
    points = args.days * 24 * 60 // args.interval
    try:
        wanted = args.meters * points
        have = count_readings(url) if args.reuse else 0
        seeding = 0.0
        if have < wanted:
            print(f"seeding {args.meters} meters × {points} points …", file=sys.stderr)
            began = time.perf_counter()
            seed(url, args.meters, args.days, args.interval)
            seeding = time.perf_counter() - began
        port = free_port()
        server = start_server(url, port, args.workers)
        try:
            token = httpx.post(
                f"http://127.0.0.1:{port}/api/v1/auth/token",
                data={"username": USER, "password": PASSWORD},
            ).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            series = asyncio.run(
                load(
                    port,
                    args.clients,
                    args.seconds,
                    args.warmup,
                    series_requests(args.meters, args.days),
                    auth,
                    server.pid,
                )
            )
            ceiling = asyncio.run(
                load(
                    port, args.clients, args.seconds, args.warmup, health_requests(), {}, server.pid
                )
            )
        finally:
            stop_server(server)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPU, Python {platform.python_version()}",
        "backend": url.split(":", 1)[0],
        "meters": args.meters,
        "points_per_series": points,
        "clients": args.clients,
        "workers": args.workers,
        "seeding_s": round(seeding, 1),
        "series_30d": series,
        "ceiling_healthz": ceiling,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['backend']}: {args.meters} meters, {points}-point series, "
        f"{args.clients} clients, {args.workers} worker(s)"
    )
    for name in ("series_30d", "ceiling_healthz"):
        r = result[name]
        print(
            f"  {name:16} {r['requests_per_s']:8.1f} req/s  p50 {r['p50_ms']} ms  "
            f"p95 {r['p95_ms']} ms  p99 {r['p99_ms']} ms  errors {r['errors']}"
        )


if __name__ == "__main__":
    main()
