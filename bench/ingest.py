"""Ingestion throughput: readings/s from MQTT publish to committed rows (and the ack back).

    python bench/ingest.py                          # SQLite, and PostgreSQL if reachable
    python bench/ingest.py --readings 200000 --gateways 4 --json
    python bench/ingest.py --backend sqlite --consumers 2   # 2 `central ingest run` processes

The consumer runs as deployed: a `central ingest run` process of its own (``--in-process``
runs it in this process instead, where it shares one GIL with the publisher).

Pre-signed, compressed batches of ``--batch`` readings (2 040 meters × hourly curve, like a
draining backlog) from ``--gateways`` gateways are published at QoS 1 to a local Mosquitto
(plaintext loopback; TLS is not measured yet). The clock runs from the first
publish until every gateway has received the ack for its last seq — i.e. every row is
committed (the ack is sent after COMMIT).

Each pipeline runs without and with the in-line VEE (``central ingest run --no-vee`` /
``--vee``), back to back, ``--rounds`` times (default 3); the table shows the medians, and
"VEE %" is the median over the rounds of the throughput with VEE as a share of the one
without it measured just before. The
readings are healthy registers (rising by each meter's own use) of archived meters (each
gateway's birth is stored first), so VEE checks every rule and raises nothing.

Measured in the same run, on the same payloads:

* ``broker``: the broker alone — the same payloads published and received by a bare
  shared-subscription member (no verify, no database);
* ``verify``: signature check + inflate + parse + schema into columnar batches on one core,
  as the consumer does (no broker, no DB);
* ``store``: ``IngestStore.apply_batches`` on the verified batches, grouped like the
  consumer groups them (no broker, no verify);
* ``raw insert``: the same rows inserted by the bare driver (bench/ingest_store.py's
  ceiling), one transaction per batch.

The consumer's own split (verify seconds vs DB seconds) is printed from its counters.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from ingest_store import (  # noqa: E402
    ceiling_postgres,
    ceiling_sqlite,
    drop_postgres_database,
    postgres_database,
)
from mosquitto_fixture import Broker, new_mqtt_client, start_broker  # noqa: E402

from central.db import make_engine, upgrade  # noqa: E402
from central.ingest.consumer import BrokerConfig, IngestConsumer  # noqa: E402
from central.ingest.store import IngestStore, MeterEntry  # noqa: E402
from central.vee import InlineValidator  # noqa: E402
from shared_protocol.wire import (  # noqa: E402
    INGEST_SUBSCRIPTION,
    Ack,
    RecordBatch,
    WireReading,
    ack_topic,
    batch_topic,
    decode,
    generate_private_key,
    public_key_pem,
    sign,
    verify_envelope,
)

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
METERS = 2040


def make_payloads(
    readings: int, size: int, gateways: int
) -> tuple[dict[str, Any], list[tuple[str, int, bytes]], list[RecordBatch]]:
    """Keys, then (gateway, seq_to, payload) interleaved across gateways, and the batches."""
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    base = datetime(2026, 1, 1, tzinfo=UTC)
    keys = {f"gw-b{g:03d}": generate_private_key() for g in range(gateways)}
    per_gateway = readings // gateways
    out: list[tuple[str, int, bytes]] = []
    batches: list[RecordBatch] = []
    for start in range(0, per_gateway, size):
        for index, (gateway, key) in enumerate(keys.items()):
            records = []
            for seq in range(start + 1, min(start + size, per_gateway) + 1):
                hour, meter = divmod(seq - 1, METERS)
                ts = base + timedelta(hours=hour)
                records.append(
                    WireReading(
                        seq=seq,
                        meter=f"{index:04d}{meter:08d}",
                        obis="1-0:1.8.0",
                        time=ts,
                        # A register that rises by the meter's own hourly use (what VEE
                        # expects of a healthy meter: nothing to flag).
                        value=Decimal(10_000 + meter * 3) + Decimal(hour * (meter % 9 + 1)) / 10,
                        unit="kWh",
                        kind="curve",
                        source="scheduled",
                        quality="ok",
                        read_at=ts + timedelta(seconds=40 + seq % 17),
                    )
                )
            batch = RecordBatch(
                gateway, 1, records[0].seq, records[-1].seq, tuple(records), True, base
            )
            batches.append(batch)
            out.append((gateway, batch.seq_to, sign(batch, key, gateway)))
    return keys, out, batches


# -- ceilings ---------------------------------------------------------------------------------


def broker_only(broker: Broker, payloads: list[tuple[str, int, bytes]]) -> float:
    """Publish → receive through the broker, no processing."""
    received = threading.Event()
    count = [0]
    sub = new_mqtt_client("bench-sub")
    sub.on_message = lambda *_: (
        count.__setitem__(0, count[0] + 1),
        count[0] == len(payloads) and received.set(),
    )
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    sub.subscribe(INGEST_SUBSCRIPTION, qos=1)
    subscribed.wait(5)
    pub = new_mqtt_client("bench-pub")
    pub.max_inflight_messages_set(100)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    time.sleep(0.2)
    start = time.perf_counter()
    for gateway, _, payload in payloads:
        pub.publish(batch_topic(gateway), payload, qos=1)
    assert received.wait(120), f"broker passed {count[0]} of {len(payloads)}"
    elapsed = time.perf_counter() - start
    for client in (pub, sub):
        client.disconnect()
        client.loop_stop()
    return elapsed


def verify_only(
    keys: dict[str, Any], payloads: list[tuple[str, int, bytes]]
) -> tuple[float, list[Any]]:
    """What the consumer does before the database: verify into columnar batches."""
    public = {gateway: key.public_key() for gateway, key in keys.items()}
    start = time.perf_counter()
    verified = [
        verify_envelope(payload, public.get, topic=batch_topic(gateway), columnar=True).message
        for gateway, _, payload in payloads
    ]
    return time.perf_counter() - start, verified


def store_only(
    url: str, keys: dict[str, Any], batches: list[Any], group: int, vee: bool = False
) -> float:
    prepare_database(url, keys)
    engine = make_engine(url)
    try:
        store = IngestStore(engine, InlineValidator(engine) if vee else None)
        start = time.perf_counter()
        for first in range(0, len(batches), group):
            store.apply_batches(batches[first : first + group])
        return time.perf_counter() - start
    finally:
        engine.dispose()


def prepare_database(url: str, keys: dict[str, Any]) -> None:
    """Migrated, the gateways enrolled, each with the birth of its meter archive."""
    from datetime import UTC, datetime

    upgrade(url)
    engine = make_engine(url)
    store = IngestStore(engine)
    for index, (gateway, key) in enumerate(keys.items()):
        store.enroll_gateway(gateway, public_key_pem(key).decode("ascii"), gateway)
        archive = [
            MeterEntry(f"{index:04d}{m:08d}", f"{index:04d}{m:08d}", "dlt645-2007")
            for m in range(METERS)
        ]
        store.record_birth(gateway, 1, {}, datetime(2025, 12, 1, tzinfo=UTC), archive)
    engine.dispose()


# -- the pipeline -------------------------------------------------------------------------------


def pipeline(
    broker: Broker,
    url: str,
    keys: dict[str, Any],
    payloads: list[tuple[str, int, bytes]],
    args: argparse.Namespace,
    vee: bool,
) -> tuple[float, dict[str, Any]]:
    prepare_database(url, keys)
    last = {}
    for gateway, seq_to, _ in payloads:
        last[gateway] = max(last.get(gateway, 0), seq_to)
    done = threading.Event()
    acked: dict[str, int] = dict.fromkeys(last, 0)
    replies: queue.Queue[Any] = queue.Queue()

    def on_ack(_c: Any, _u: Any, message: Any) -> None:
        reply = decode(message.payload)
        if isinstance(reply, Ack):
            acked[reply.gateway] = max(acked[reply.gateway], reply.up_to_seq)
            if all(acked[g] >= last[g] for g in last):
                done.set()
        else:
            replies.put(reply)

    gateway_client = new_mqtt_client("bench-gateways")
    gateway_client.max_inflight_messages_set(100)
    gateway_client.on_message = on_ack
    subscribed = threading.Event()
    gateway_client.on_subscribe = lambda *_: subscribed.set()
    gateway_client.connect(broker.host, broker.port)
    gateway_client.loop_start()
    gateway_client.subscribe([(ack_topic(g), 1) for g in last])
    subscribed.wait(5)

    consumers: list[IngestConsumer] = []
    processes: list[subprocess.Popen[str]] = []
    if args.in_process:
        engine = make_engine(url)
        consumer = IngestConsumer(
            IngestStore(engine, InlineValidator(engine) if vee else None),
            BrokerConfig(broker.host, broker.port),
            "bench-ingest",
            max_group=args.group,
            receive_maximum=args.group,
        )
        consumer.start()
        assert consumer.wait_connected(10)
        consumers.append(consumer)
    else:
        env = {
            **os.environ,
            "M2C_DATABASE_URL": url,
            "M2C_BROKER_URL": f"mqtt://{broker.host}:{broker.port}",
        }
        for n in range(args.consumers):
            process = subprocess.Popen(
                [sys.executable, "-m", "central", "ingest", "run", "--json",
                 "--consumer-id", f"bench-ingest-{n}", "--max-group", str(args.group),
                 "--vee" if vee else "--no-vee",
                 "--status-every", "3600"],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            processes.append(process)
        for process in processes:
            assert process.stdout is not None
            while json.loads(process.stdout.readline())["event"] != "ready":
                pass
    time.sleep(0.3)
    start = time.perf_counter()
    for gateway, _, payload in payloads:
        gateway_client.publish(batch_topic(gateway), payload, qos=1)
    assert done.wait(600), f"acked {acked} of {last}; replies {list(replies.queue)[:3]}"
    elapsed = time.perf_counter() - start
    split: dict[str, Any] = {}
    for consumer in consumers:
        split = consumer.stats().as_dict()
        consumer.stop()
        consumer.store.engine.dispose()
    for process in processes:
        process.send_signal(signal.SIGTERM)
        assert process.stdout is not None
        for line in process.stdout:
            status = json.loads(line)
            if status["event"] == "stopped":
                for key in ("verify_seconds", "db_seconds", "transactions", "batches"):
                    split[key] = round(split.get(key, 0) + status[key], 3)
        process.wait(10)
    gateway_client.disconnect()
    gateway_client.loop_stop()
    return elapsed, split


def bench_backend(backend: str, args: argparse.Namespace, broker: Broker) -> dict[str, Any]:
    keys, payloads, batches = make_payloads(args.readings, args.batch, args.gateways)
    total = sum(len(b.records) for b in batches)
    records = [list(b.records) for b in batches]
    result: dict[str, Any] = {"backend": backend, "readings": total}

    def database(kind: str) -> tuple[str, Path | None, Any]:
        if backend == "sqlite":
            tmp = tempfile.TemporaryDirectory(dir=args.dir)
            path = Path(tmp.name) / f"{kind}.sqlite3"
            return f"sqlite:///{path}", path, tmp.cleanup
        url = postgres_database(args.postgres_url)
        return url, None, lambda: drop_postgres_database(args.postgres_url, url)

    # Without and with VEE back to back, ``--rounds`` times: on a shared machine the load
    # drifts, and a pair measured together is the fair comparison.
    rounds: dict[str, list[float]] = {"pipeline": [], "pipeline_vee": []}
    for _ in range(args.rounds):
        for vee in (False, True):
            url, path, cleanup = database("pipeline")
            try:
                elapsed, split = pipeline(broker, url, keys, payloads, args, vee)
            finally:
                cleanup()
            name = "pipeline_vee" if vee else "pipeline"
            rounds[name].append(total / elapsed)
            result[f"{name}_split"] = split
    for name, rates in rounds.items():
        result[name] = statistics.median(rates)
        result[f"{name}_rounds"] = [round(rate) for rate in rates]
    ratios = [v / p for p, v in zip(rounds["pipeline"], rounds["pipeline_vee"], strict=True)]
    result["vee_ratio"] = statistics.median(ratios)
    result["vee_ratio_rounds"] = [round(r, 3) for r in ratios]
    result["broker"] = total / broker_only(broker, payloads)
    verify_seconds, verified = verify_only(keys, payloads)
    result["verify_1core"] = total / verify_seconds
    for vee in (False, True):
        url, path, cleanup = database("store")
        try:
            seconds = store_only(url, keys, verified, args.group, vee)
            result["store_vee" if vee else "store"] = total / seconds
        finally:
            cleanup()
    url, path, cleanup = database("raw")
    try:
        result["raw_insert"] = (
            ceiling_sqlite(path, records) if path is not None else ceiling_postgres(url, records)
        )
    finally:
        cleanup()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--gateways", type=int, default=4)
    parser.add_argument("--group", type=int, default=40, help="batches per transaction")
    parser.add_argument(
        "--consumers", type=int, default=1, help="`central ingest run` processes, as deployed"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="one consumer in this process instead (shares the GIL with the publisher)",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument("--dir", default=None, help="where SQLite files go (default: $TMPDIR)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="pipeline pairs (without, with VEE); medians"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    backends = args.backend or ["sqlite", "postgresql"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(Path(tmp), tls=False)
        try:
            for backend in backends:
                if backend == "postgresql":
                    sys.path.insert(0, str(ROOT / "tests"))
                    from central_fixtures import postgres_unreachable

                    reason = postgres_unreachable()
                    if reason:
                        print(f"skipping PostgreSQL: {reason}", file=sys.stderr)
                        continue
                results.append(bench_backend(backend, args, broker))
        finally:
            broker.stop()
    if args.json:
        print(
            json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "results": results})
        )
        return
    print(
        f"{args.readings} readings, batches of {args.batch}, {args.gateways} gateways, "
        f"{args.consumers} consumer(s), up to {args.group} batches per transaction"
    )
    columns = ("pipeline", "pipeline_vee", "broker", "verify_1core", "store", "store_vee")
    heads = ("pipeline", "+VEE", "broker", "verify", "store", "store+VEE", "raw ins", "VEE %")
    print(f"{'backend':<11}" + "".join(f"{h:>11}" for h in heads))
    for r in results:
        print(
            f"{r['backend']:<11}"
            + "".join(f"{r[c]:>11,.0f}" for c in columns)
            + f"{r['raw_insert']:>11,.0f}{r['vee_ratio'] * 100:>10.1f}%"
        )
        if args.rounds > 1:
            print(
                f"  {args.rounds} rounds (medians above): pipeline {r['pipeline_rounds']}, "
                f"+VEE {r['pipeline_vee_rounds']}, VEE % of its pair {r['vee_ratio_rounds']}"
            )
        print(f"  consumer split: {r['pipeline_split']}")
        print(f"  consumer split with VEE: {r['pipeline_vee_split']}")


if __name__ == "__main__":
    main()
