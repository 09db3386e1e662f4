"""Backlog drain: a gateway's week of readings from its edge log into central's database.

    python bench/drain.py                       # 7 days × 2 040 meters, SQLite
    python bench/drain.py --backend postgresql  # central on PostgreSQL
    python bench/drain.py --days 1 --json       # smaller, JSON result

Issue 5's target: a gateway holding 7 days × 2 040 meters of readings (one daily frozen
register + 24 hourly curve points per meter and day, 357 000 records) drains to central in
≤ 60 s over loopback.

The chain is the production one:

* a device CA, one gateway enrolled with ``central.security.enroll_gateway`` and central's
  service identity, and a real ``mosquitto`` on the production TLS + ACL config
  (``tests/mosquitto_fixture.start_broker`` with that CA);
* central: ``IngestConsumer`` (verify thread + store thread) on ``IngestStore`` on a SQLite
  file (WAL) — or PostgreSQL — in this process, registry imported;
* the gateway: ``EdgeLog`` filled beforehand with ``log.batch()`` (one transaction per
  hourly bus cycle of 2 040 readings: daily frozen ``1-0:1.8.0`` kWh at local midnight,
  hourly ``1-0:16.7.0`` kW curve points), and ``edge_agent.uplink.Uplink`` with the
  enrolment bundle (mutual TLS, signed + compressed batches of ``--batch-size``, window
  ``--window``) in a **separate process**, as a gateway is a separate machine.

The clock starts when the edge process is told to start its uplink (TLS connect, birth and
central's retained state are part of the drain) and stops when central's watermark for the
gateway equals the log's last seq *and* the edge log's depth is 0 (the last ack arrived
and was applied).

Measured in the same run on the same records:

* ``edge prepare``: read the log in batches, convert to wire records, sign and compress
  (what the uplink does per batch), one core, no broker;
* ``ingestion only``: the same records as pre-signed batches published straight to the
  broker by a client with the gateway's certificate (100 in flight), into a fresh database,
  clocked from the first publish until the ack for the last seq — the ceiling for the
  drain, since central's side is the same;
* bytes: the signed payloads the uplink produced, and what mosquitto read from its sockets
  during the drain (``/proc/<pid>/io`` ``rchar``: TLS + MQTT framing of the gateway's
  batches plus the consumer's PUBACKs and acks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

GATEWAY = "gw-drain"
ZONE_OFFSET = timedelta(hours=8)  # Asia/Shanghai, no DST: local midnight = 16:00 UTC
FIRST_DAY = datetime(2026, 11, 1, tzinfo=UTC) - ZONE_OFFSET
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TARGET_S = 60.0


# -- the edge log ---------------------------------------------------------------------------


def meter_address(index: int) -> str:
    """8 RS-485 lines × 255 meters, 12-digit 645-style addresses."""
    line, position = divmod(index, 255)
    return f"{line + 1:02d}{position + 1:010d}"


def fill_log(path: Path, days: int, meters: int) -> dict[str, Any]:
    """Write the backlog: per day one daily freeze per meter (at local 00:00) and 24 hourly
    curve points per meter, one transaction per hourly cycle; returns counts and timing."""
    from edge_agent.store import EdgeLog

    addresses = [meter_address(m) for m in range(meters)]
    started = time.perf_counter()
    transactions = 0
    log = EdgeLog(path, check="quick")
    try:
        for day in range(days):
            midnight = FIRST_DAY + timedelta(days=day)
            with log.batch() as b:
                for m, address in enumerate(addresses):
                    # a cumulative register: 5–25 kWh a day, 2 decimals
                    register = (
                        Decimal(1000 + m % 997 * 3 + (day + 1) * (5 + m % 21))
                        + Decimal((m * 37 + day * 11) % 100) / 100
                    )
                    b.add_reading(
                        address, "1-0:1.8.0", midnight, register, "kWh",
                        read_ts=midnight + timedelta(minutes=5, seconds=m % 60),
                        source="scheduled", kind="daily",
                    )  # fmt: skip
            transactions += 1
            for hour in range(24):
                at = midnight + timedelta(hours=hour)
                with log.batch() as b:
                    for m, address in enumerate(addresses):
                        # active power, kW with 4 decimals (645 curve DI 06100300's format)
                        power = Decimal((m * 7919 + hour * 104729 + day * 13) % 60000) / 10000
                        b.add_reading(
                            address, "1-0:16.7.0", at, power, "kW",
                            read_ts=at + timedelta(minutes=2, seconds=m % 60),
                            source="scheduled", kind="curve",
                        )  # fmt: skip
                transactions += 1
        last = log.last_seq()
        depth = log.depth()
    finally:
        log.close()
    return {
        "records": last,
        "depth": depth,
        "transactions": transactions,
        "fill_seconds": round(time.perf_counter() - started, 2),
        "log_bytes": path.stat().st_size,
    }


def presign(
    log_path: Path, signing_key_file: Path, batch_size: int
) -> tuple[list[tuple[int, bytes]], float]:
    """The uplink's per-batch work on the whole log: read, convert, sign + compress."""
    from edge_agent.store import LogReader
    from edge_agent.uplink import to_wire_records
    from shared_protocol.wire import RecordBatch, load_private_key, sign

    key = load_private_key(signing_key_file.read_bytes())
    reader = LogReader.open(log_path)
    out: list[tuple[int, bytes]] = []
    started = time.perf_counter()
    after = 0
    last = reader.last_seq()
    while after < last:
        # records_between, not next_batch: after the drain the whole log is acknowledged
        seq_to = min(last, after + batch_size)
        records = reader.records_between(after + 1, seq_to)
        message = RecordBatch(
            gateway=GATEWAY,
            session=1,
            seq_from=after + 1,
            seq_to=seq_to,
            records=to_wire_records(records),
            historical=True,
            sent_at=datetime.now(UTC),
        )
        out.append((seq_to, sign(message, key, GATEWAY)))
        after = seq_to
    elapsed = time.perf_counter() - started
    reader.close()
    return out, elapsed


# -- the edge process -------------------------------------------------------------------------


def edge_child(config: dict[str, Any]) -> None:
    """Runs in its own process: the gateway's uplink on the filled log.

    stdout lines (JSON): ready → (stdin "go") → drained {…}; stdin "stop" ends it.
    """
    from edge_agent.store import EdgeLog
    from edge_agent.uplink import BirthFacts, Uplink, UplinkSettings, load_keys

    bundle = Path(config["bundle"])
    payload_bytes = [0]

    class CountingUplink(Uplink):
        def _batch_payload(self, *args: Any, **kwargs: Any) -> bytes:
            payload = super()._batch_payload(*args, **kwargs)
            payload_bytes[0] += len(payload)
            return payload

    def say(**fields: Any) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    log = EdgeLog(config["log"], check="quick")
    last = log.last_seq()
    settings = UplinkSettings(
        gateway_id=GATEWAY,
        host=config["host"],
        port=config["port"],
        ca_file=bundle / "ca.crt",
        cert_file=bundle / "gateway.crt",
        key_file=bundle / "gateway.key",
        batch_size=config["batch_size"],
        window=config["window"],
        resend_timeout_s=config["resend_timeout_s"],
        poll_interval_s=0.2,
    )
    keys = load_keys(bundle / "signing.key", Path(config["central_key"]), GATEWAY)
    facts = BirthFacts(software_version="bench", config_hash="sha256:bench", boot_reason="bench")
    uplink = CountingUplink(settings, log, keys, birth_facts=lambda: facts)
    say(event="ready", last_seq=last, depth=log.depth())
    if sys.stdin.readline().strip() != "go":
        return
    cpu0 = time.process_time()
    started = time.perf_counter()
    uplink.start()
    deadline = started + config["timeout_s"]
    while time.perf_counter() < deadline:
        if log.acked_seq() >= last and log.depth() == 0:
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    health = uplink.health()
    say(
        event="drained",
        seconds=elapsed,
        acked_seq=log.acked_seq(),
        depth=log.depth(),
        cpu_seconds=cpu,
        payload_bytes=payload_bytes[0],
        batches_sent=health.batches_sent,
        records_sent=health.records_sent,
        resends=health.resends,
        nacks=health.nacks,
        connects=health.connects,
    )
    sys.stdin.readline()
    uplink.stop()
    log.close()


# -- central ----------------------------------------------------------------------------------


class Central:
    """Central's ingestion on a fresh database, connected with the service identity."""

    def __init__(self, url: str, broker: Any, tls_dir: Path, state: Path, name: str) -> None:
        from central.db import make_engine, upgrade
        from central.ingest.consumer import BrokerConfig, IngestConsumer, import_registry
        from central.ingest.store import IngestStore
        from central.security import list_gateways

        upgrade(url)
        self.engine = make_engine(url)
        self.store = IngestStore(self.engine)
        import_registry(self.store, list_gateways(state))
        self.consumer = IngestConsumer(
            self.store,
            BrokerConfig(
                broker.host,
                broker.port,
                tls_dir / "ca.crt",
                tls_dir / "central.crt",
                tls_dir / "central.key",
            ),
            name,
        )
        self.consumer.start()
        if not self.consumer.wait_connected(10):
            raise RuntimeError(f"the ingestion consumer did not connect:\n{broker.log()[-2000:]}")

    def stop(self) -> dict[str, Any]:
        stats = self.consumer.stats().as_dict()
        self.consumer.stop()
        self.engine.dispose()
        return stats


def broker_io(broker: Any) -> tuple[int, int]:
    """mosquitto's cumulative read/written bytes (rchar, wchar) from /proc."""
    try:
        text = Path(f"/proc/{broker._process.pid}/io").read_text()
    except (OSError, AttributeError):
        return 0, 0
    fields = dict(line.split(": ") for line in text.splitlines())
    return int(fields["rchar"]), int(fields["wchar"])


def database(backend: str, work: Path, name: str, admin_url: str) -> tuple[str, Any]:
    if backend == "sqlite":
        return f"sqlite:///{work / (name + '.sqlite3')}", lambda: None
    from ingest_store import drop_postgres_database, postgres_database

    url = postgres_database(admin_url)
    return url, lambda: drop_postgres_database(admin_url, url)


def drain(args: argparse.Namespace, work: Path, rig: dict[str, Any]) -> dict[str, Any]:
    broker = rig["broker"]
    url, cleanup = database(args.backend, work, "central-drain", args.postgres_url)
    central = Central(url, broker, rig["tls_dir"], rig["state"], "ingest-drain")
    try:
        config = {
            "bundle": str(rig["bundle"]),
            "log": str(rig["log"]),
            "central_key": str(rig["central_key"]),
            "host": broker.host,
            "port": broker.port,
            "batch_size": args.batch_size,
            "window": args.window,
            "resend_timeout_s": args.resend_timeout,
            "timeout_s": args.timeout,
        }
        child = subprocess.Popen(
            [sys.executable, __file__, "--edge-child", json.dumps(config)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        try:
            ready = json.loads(child.stdout.readline())
            last = ready["last_seq"]
            io0 = broker_io(broker)
            cpu0 = time.process_time()
            started = time.perf_counter()
            child.stdin.write("go\n")
            child.stdin.flush()
            central_done: list[float] = []

            def watch() -> None:
                deadline = started + args.timeout
                while time.perf_counter() < deadline:
                    if central.store.watermark(GATEWAY) >= last:
                        central_done.append(time.perf_counter())
                        return
                    time.sleep(0.02)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            drained = json.loads(child.stdout.readline())
            edge_done = time.perf_counter()
            watcher.join(args.timeout)
            elapsed = max([edge_done, *central_done]) - started
            cpu = time.process_time() - cpu0
            io1 = broker_io(broker)
            watermark = central.store.watermark(GATEWAY)
            stored = central.store.count_readings(GATEWAY)
            child.stdin.write("stop\n")
            child.stdin.flush()
            child.wait(15)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(5)
    finally:
        stats = central.stop()
        cleanup()
    return {
        "seconds": elapsed,
        "records": last,
        "records_per_s": last / elapsed,
        "central_watermark": watermark,
        "central_readings": stored,
        "central_done_s": (central_done[0] - started) if central_done else None,
        "edge": drained,
        "central_cpu_seconds": cpu,
        "broker_read_bytes": io1[0] - io0[0],
        "broker_written_bytes": io1[1] - io0[1],
        "consumer": stats,
        "complete": watermark >= last and drained["depth"] == 0 and stored == last,
    }


def ingestion_only(
    args: argparse.Namespace, work: Path, rig: dict[str, Any], payloads: list[tuple[int, bytes]]
) -> dict[str, Any]:
    """The same records, pre-signed, published straight to the broker (gateway identity)."""
    import ssl

    from mosquitto_fixture import new_mqtt_client

    from shared_protocol.wire import Ack, ack_topic, batch_topic, decode

    broker = rig["broker"]
    url, cleanup = database(args.backend, work, "central-direct", args.postgres_url)
    central = Central(url, broker, rig["tls_dir"], rig["state"], "ingest-direct")
    last = payloads[-1][0]
    done = threading.Event()
    acked = [0]

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        reply = decode(message.payload)
        if isinstance(reply, Ack) and reply.up_to_seq > acked[0]:
            acked[0] = reply.up_to_seq
            if acked[0] >= last:
                done.set()

    bundle = rig["bundle"]
    client = new_mqtt_client(f"{GATEWAY}-direct")
    client.tls_set(
        ca_certs=str(bundle / "ca.crt"),
        certfile=str(bundle / "gateway.crt"),
        keyfile=str(bundle / "gateway.key"),
        cert_reqs=ssl.CERT_REQUIRED,
    )
    client.max_inflight_messages_set(100)
    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    try:
        client.connect(broker.host, broker.port)
        client.loop_start()
        client.subscribe(ack_topic(GATEWAY), qos=1)
        assert subscribed.wait(5), broker.log()[-2000:]
        started = time.perf_counter()
        for _, payload in payloads:
            client.publish(batch_topic(GATEWAY), payload, qos=1)
        assert done.wait(args.timeout), f"acked {acked[0]} of {last}"
        elapsed = time.perf_counter() - started
        stored = central.store.count_readings(GATEWAY)
    finally:
        client.disconnect()
        client.loop_stop()
        stats = central.stop()
        cleanup()
    return {
        "seconds": elapsed,
        "records_per_s": last / elapsed,
        "central_readings": stored,
        "consumer": stats,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from mosquitto_fixture import start_broker

    from central.security import DeviceCA, enroll_gateway, issue_central_service_identity
    from central.security.enrolment import ca_directory
    from shared_protocol.wire import public_key_pem

    with tempfile.TemporaryDirectory(prefix="m2c-drain-", dir=args.dir) as tmp:
        work = Path(tmp)
        state = work / "central-state"
        broker = start_broker(work, ca=DeviceCA.create(ca_directory(state)))
        try:
            bundle = enroll_gateway(state, GATEWAY).bundle_directory
            tls_dir = work / "central-tls"
            issue_central_service_identity(state, tls_dir)
            central_key = work / "central-command.pub"
            central_key.write_bytes(public_key_pem(Ed25519PrivateKey.generate()))
            log_path = work / "edge.db"
            fill = fill_log(log_path, args.days, args.meters)
            rig = {
                "broker": broker,
                "state": state,
                "bundle": bundle,
                "tls_dir": tls_dir,
                "central_key": central_key,
                "log": log_path,
            }
            result: dict[str, Any] = {"fill": fill}
            result["drain"] = drain(args, work, rig)
            payloads, prepare_s = presign(log_path, bundle / "signing.key", args.batch_size)
            result["edge_prepare"] = {
                "seconds": prepare_s,
                "records_per_s": fill["records"] / prepare_s,
                "batches": len(payloads),
                "payload_bytes": sum(len(p) for _, p in payloads),
            }
            if not args.skip_ceiling:
                result["ingestion_only"] = ingestion_only(args, work, rig, payloads)
        finally:
            broker.stop()
    return result


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--meters", type=int, default=2040)
    parser.add_argument("--batch-size", type=int, default=500, help="uplink batch_size")
    parser.add_argument("--window", type=int, default=4, help="uplink window")
    parser.add_argument(
        "--resend-timeout", type=float, default=30.0, help="uplink resend_timeout_s"
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--skip-ceiling", action="store_true", help="drain only")
    parser.add_argument("--dir", default=None, help="where the work files go (default: $TMPDIR)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--edge-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.edge_child:
        edge_child(json.loads(args.edge_child))
        return
    if args.backend == "postgresql":
        from central_fixtures import postgres_unreachable

        reason = postgres_unreachable()
        if reason:
            sys.exit(f"PostgreSQL unreachable: {reason}")
    result = run(args)
    d = result["drain"]
    result.update(
        machine=platform.machine(),
        cpus=os.cpu_count(),
        python=platform.python_version(),
        commit=git_commit(),
        backend=args.backend,
        days=args.days,
        meters=args.meters,
        batch_size=args.batch_size,
        window=args.window,
        target_s=TARGET_S,
        met=d["complete"] and d["seconds"] <= TARGET_S,
    )
    if args.json:
        print(json.dumps(result, default=str))
        return
    fill = result["fill"]
    edge = d["edge"]
    print(
        f"{fill['records']:,} records ({args.days} days × {args.meters} meters × 25), edge log "
        f"{fill['log_bytes'] / 1e6:.1f} MB filled in {fill['fill_seconds']} s "
        f"({fill['transactions']} transactions); central on {args.backend}; "
        f"uplink batch {args.batch_size}, window {args.window}; commit {result['commit']}"
    )
    print(f"{'what':<40}{'seconds':>10}{'records/s':>12}")
    print(
        f"{'drain (uplink start → all acked)':<40}{d['seconds']:>10.2f}{d['records_per_s']:>12,.0f}"
    )
    prep = result["edge_prepare"]
    print(f"{'edge prepare alone (read+convert+sign)':<40}{prep['seconds']:>10.2f}"
          f"{prep['records_per_s']:>12,.0f}")  # fmt: skip
    if "ingestion_only" in result:
        io = result["ingestion_only"]
        print(f"{'ingestion only (pre-signed, ceiling)':<40}{io['seconds']:>10.2f}"
              f"{io['records_per_s']:>12,.0f}")  # fmt: skip
    print(
        f"edge: {edge['batches_sent']} batches, {edge['resends']} resends, {edge['nacks']} nacks, "
        f"{edge['payload_bytes'] / 1e6:.2f} MB signed payloads "
        f"({edge['payload_bytes'] / fill['records']:.1f} B/record), edge CPU "
        f"{edge['cpu_seconds']:.1f} s; broker read {d['broker_read_bytes'] / 1e6:.2f} MB, "
        f"wrote {d['broker_written_bytes'] / 1e6:.2f} MB"
    )
    c = d["consumer"]
    print(
        f"central: {d['central_readings']:,} readings, watermark {d['central_watermark']}, "
        f"CPU {d['central_cpu_seconds']:.1f} s (verify {c.get('verify_seconds')} s, "
        f"db {c.get('db_seconds')} s, {c.get('transactions')} transactions)"
    )
    print(
        f"target ≤ {TARGET_S:.0f} s: {'MET' if result['met'] else 'NOT MET'} "
        f"({d['seconds']:.1f} s{'' if d['complete'] else ', INCOMPLETE'})"
    )


if __name__ == "__main__":
    main()
