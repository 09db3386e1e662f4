"""The edge uplink against a real mosquitto (production TLS config, an enrolled gateway) and
a test peer standing in for central: it verifies every batch with the wire layer, keeps the
contiguous watermark the way central does, and acknowledges — or, when told, does not."""

from __future__ import annotations

import itertools
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from mosquitto_fixture import Broker, new_mqtt_client, start_broker

from central.security import DeviceCA, enroll_gateway, issue_central_service_identity
from central.security.enrolment import ca_directory
from edge_agent.store import EdgeLog, EventRecord
from edge_agent.uplink import BirthFacts, Uplink, UplinkSettings, load_keys
from shared_protocol.wire import (
    Ack,
    Birth,
    CentralState,
    Command,
    CommandArgs,
    CommandResult,
    Death,
    Nack,
    ReadNowArgs,
    RebirthArgs,
    RecordBatch,
    ResendArgs,
    ResyncArgs,
    WireReading,
    canonical_bytes,
    decode,
    encode,
    gateway_filter,
    generate_private_key,
    load_public_key,
    public_key_pem,
    sign,
    verify,
)
from shared_protocol.wire.topics import CENTRAL_STATE, ack_topic, cmd_topic

GW = "gw-0001"
T0 = datetime(2026, 11, 20, tzinfo=UTC)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or predicate}")


class CentralPeer:
    """Central's part of the contract, small: verify, watermark, ack, state, commands."""

    def __init__(self, broker: Broker, files: tuple[Path, Path, Path], gateway_pub: Any) -> None:
        self.broker = broker
        self.key = generate_private_key()
        self.gateway_pub = gateway_pub
        self.lock = threading.Lock()
        self.acking = True
        self.nacking: str | None = None  # a nack reason: refuse every batch with it
        self.batches: list[RecordBatch] = []
        self.payloads: list[bytes] = []
        self.records: dict[int, Any] = {}
        self.ranges: list[tuple[int, int]] = []
        self.watermark = 0
        self.births: list[Birth] = []
        self.deaths: list[Death] = []
        self.results: list[CommandResult] = []
        self.errors: list[str] = []
        self.online: bool | None = None
        ca_file, certificate_file, key_file = files
        self.client = new_mqtt_client("central-test")
        self.client.tls_set(
            ca_certs=str(ca_file), certfile=str(certificate_file), keyfile=str(key_file)
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.connected = threading.Event()
        self.client.connect(broker.host, broker.port, keepalive=5)
        self.client.loop_start()
        assert self.connected.wait(5), broker.log()

    def _on_connect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            return
        for kind in ("batch", "birth", "death", "cmd_result"):
            client.subscribe(gateway_filter(kind), qos=1)
        if self.online is not None:  # like central: state again after every connect
            state = CentralState(self.online, datetime.now(UTC))
            client.publish(CENTRAL_STATE, encode(state), qos=1, retain=True)
        self.connected.set()

    def _lookup(self, key_id: str) -> Any:
        return self.gateway_pub if key_id == GW else None

    def _on_message(self, _client: Any, _u: Any, message: Any) -> None:
        try:
            parsed = verify(message.payload, self._lookup, topic=message.topic)
        except Exception as exc:  # a test peer records, the test asserts
            self.errors.append(f"{message.topic}: {exc}")
            return
        with self.lock:
            if isinstance(parsed, RecordBatch):
                self._on_batch(parsed, message.payload)
            elif isinstance(parsed, Birth):
                self.births.append(parsed)
            elif isinstance(parsed, Death):
                self.deaths.append(parsed)
            elif isinstance(parsed, CommandResult):
                self.results.append(parsed)

    def _on_batch(self, batch: RecordBatch, payload: bytes) -> None:
        self.batches.append(batch)
        if self.nacking is not None:
            nack = Nack(
                GW, batch.session, batch.seq_from, batch.seq_to, self.nacking, "test refusal",
                datetime.now(UTC),
            )  # fmt: skip
            self.client.publish(ack_topic(GW), encode(nack), qos=1)
            return
        self.payloads.append(payload)
        for record in batch.records:
            self.records[record.seq] = record
        self.ranges.append((batch.seq_from, batch.seq_to))
        moved = True
        while moved:
            moved = False
            for seq_from, seq_to in self.ranges:
                if seq_from <= self.watermark + 1 <= seq_to + 1 and seq_to > self.watermark:
                    self.watermark = seq_to
                    moved = True
        if self.acking:
            self._ack(batch.session)

    def _ack(self, session: int) -> None:
        ack = Ack(GW, session, self.watermark, datetime.now(UTC))
        self.client.publish(ack_topic(GW), encode(ack), qos=1)

    def ack_now(self, session: int) -> None:
        with self.lock:
            self.acking = True
            self._ack(session)

    def set_online(self, online: bool) -> None:
        self.online = online
        state = CentralState(online, datetime.now(UTC))
        self.client.publish(CENTRAL_STATE, encode(state), qos=1, retain=True).wait_for_publish(5)

    def command(
        self, args: CommandArgs, *, issued: datetime | None = None, signed: bool = True
    ) -> Command:
        issued = issued or datetime.now(UTC)
        command = Command(uuid.uuid4(), GW, args, issued, issued + timedelta(minutes=10))
        self.send(command, signed=signed)
        return command

    def send(self, command: Command, *, signed: bool = True) -> None:
        payload = sign(command, self.key, "central") if signed else canonical_bytes(command)
        self.client.publish(cmd_topic(GW), payload, qos=1).wait_for_publish(5)

    def result_for(self, command: Command, count: int = 1) -> list[CommandResult]:
        def found() -> list[CommandResult]:
            with self.lock:
                return [r for r in self.results if r.id == command.id]

        wait_until(lambda: len(found()) >= count, what=f"result of {command.kind}")
        return found()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Rig:
    broker: Broker
    central: CentralPeer
    log: EdgeLog
    bundle: Path
    central_key_file: Path
    tmp_path: Path
    uplinks: list[Uplink]

    def uplink(self, **overrides: Any) -> Uplink:
        collector = overrides.pop("collector", None)
        settings = UplinkSettings(
            gateway_id=GW,
            host=self.broker.host,
            port=self.broker.port,
            ca_file=self.bundle / "ca.crt",
            cert_file=self.bundle / "gateway.crt",
            key_file=self.bundle / "gateway.key",
            keepalive_s=5,
            batch_size=overrides.pop("batch_size", 100),
            resend_timeout_s=overrides.pop("resend_timeout_s", 30.0),
            reconnect_min_s=0.1,
            reconnect_max_s=0.5,
            poll_interval_s=0.1,
            **overrides,
        )
        keys = load_keys(self.bundle / "signing.key", self.central_key_file, GW)
        facts = BirthFacts(software_version="test", config_hash="sha256:c", boot_reason="test")
        uplink = Uplink(settings, self.log, keys, birth_facts=lambda: facts, collector=collector)
        self.uplinks.append(uplink)
        uplink.start()
        return uplink


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    state_dir = tmp_path / "state"
    broker = start_broker(tmp_path, ca=DeviceCA.create(ca_directory(state_dir)))
    bundle = enroll_gateway(state_dir, GW).bundle_directory
    files = issue_central_service_identity(state_dir, tmp_path / "central")
    gateway_pub = load_public_key((bundle / "signing.pub").read_bytes())
    central = CentralPeer(broker, files, gateway_pub)
    central_key_file = tmp_path / "central.pub"
    central_key_file.write_bytes(public_key_pem(central.key))
    log = EdgeLog(tmp_path / "edge.db")
    rig = Rig(broker, central, log, bundle, central_key_file, tmp_path, [])
    yield rig
    for uplink in rig.uplinks:
        uplink.stop()
    central.close()
    log.close()
    broker.stop()


def write(log: EdgeLog, count: int, *, meter: str = "000000000001", start: int = 0) -> list[int]:
    seqs: list[int] = []
    with log.batch() as b:
        for i in range(start, start + count):
            seq = b.add_reading(
                meter,
                "1-0:1.8.0",
                T0 + timedelta(minutes=15 * i),
                Decimal(i) / 100,
                "kWh",
                read_ts=T0 + timedelta(minutes=15 * i, seconds=5),
                source="scheduled",
                kind="curve",
            )
            assert seq is not None
            seqs.append(seq)
    return seqs


def test_records_are_released_only_by_central_ack_and_arrive_once(rig: Rig) -> None:
    central = rig.central
    central.acking = False
    central.set_online(True)
    seqs = write(rig.log, 1000)
    uplink = rig.uplink()
    wait_until(lambda: len(central.batches) >= 4, what="a full window")
    time.sleep(0.5)
    # The window holds: four batches in flight, nothing more without an ack; nothing freed.
    assert len(central.batches) == 4
    assert rig.log.depth() == 1000 and rig.log.acked_seq() == 0
    assert uplink.health().in_flight == 4
    birth = central.births[-1]
    assert (birth.log_depth, birth.last_seq, birth.acked_seq) == (1000, seqs[-1], 0)
    assert birth.session == uplink.session and birth.oldest_unacked_s is not None
    # Live before backlog: with nothing new since the session began, all of it is backlog.
    assert all(batch.historical for batch in central.batches)

    central.ack_now(uplink.session or 0)
    wait_until(lambda: rig.log.depth() == 0, what="drain")
    assert rig.log.acked_seq() == seqs[-1]
    assert sorted(central.records) == seqs
    reading = central.records[seqs[7]]
    assert isinstance(reading, WireReading) and reading.value == Decimal("0.07")
    wait_until(lambda: uplink.health().last_ack_seq == seqs[-1], what="health up to date")
    health = uplink.health()
    assert health.connected and health.central_online
    assert health.resends == 0 and not central.errors

    # New records while connected are live (not historical) and go too.
    more = write(rig.log, 10, start=1000)
    uplink.notify()
    wait_until(lambda: rig.log.acked_seq() == more[-1], what="live records")
    assert central.batches[-1].historical is False


def test_no_ack_means_the_same_range_again_after_the_timeout(rig: Rig) -> None:
    central = rig.central
    central.acking = False
    central.set_online(True)
    write(rig.log, 150)
    uplink = rig.uplink(resend_timeout_s=0.5)

    def seen_twice() -> bool:
        with central.lock:
            return [(b.seq_from, b.seq_to) for b in central.batches].count((1, 100)) >= 2

    wait_until(seen_twice, what="the first range again")
    wait_until(lambda: uplink.health().resends >= 1, what="resends counted")
    with central.lock:
        ranges = [(b.seq_from, b.seq_to) for b in central.batches]
        payloads = list(central.payloads)
    assert set(ranges) == {(1, 100), (101, 150)}
    assert ranges.count((1, 100)) >= 2
    first = payloads[ranges.index((1, 100))]
    assert payloads.count(first) >= 2  # the very same bytes: range, session, sent_at
    assert rig.log.acked_seq() == 0 and rig.log.depth() == 150


def test_broker_killed_mid_stream_loses_nothing_and_releases_nothing_early(rig: Rig) -> None:
    central = rig.central
    central.set_online(True)
    first = write(rig.log, 3000)
    uplink = rig.uplink(batch_size=50, resend_timeout_s=1.0)
    violations: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            acked = rig.log.acked_seq()
            with central.lock:
                mark = central.watermark
            if acked > mark:
                violations.append(f"acked {acked} > central watermark {mark}")
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        wait_until(lambda: rig.log.acked_seq() > 200, what="some progress")
        rig.broker.kill()
        later = write(rig.log, 500, meter="000000000002")
        time.sleep(0.5)
        rig.broker.start()
        wait_until(lambda: rig.log.acked_seq() == later[-1], timeout=30, what="full drain")
    finally:
        stop.set()
        watcher.join()
    assert not violations, violations[:3]
    assert sorted(central.records) == first + later
    assert rig.log.depth() == 0
    assert uplink.health().connects >= 2
    assert len({birth.session for birth in central.births}) >= 2


def test_central_offline_means_birth_but_no_batches(rig: Rig) -> None:
    central = rig.central
    central.set_online(False)
    write(rig.log, 50)
    uplink = rig.uplink()
    wait_until(lambda: len(central.births) >= 1, what="birth")
    time.sleep(1.0)
    assert central.batches == [] and uplink.health().central_online is False
    assert central.births[-1].log_depth == 50
    central.set_online(True)
    wait_until(lambda: rig.log.depth() == 0, what="drain once central is online")


class FakeCollector:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def read_now(self, meter_key: str, what: str, *, store: bool = True) -> list[Any]:
        self.calls.append((meter_key, what))
        return [{"obis": what, "value": Decimal("1.5"), "ratio": 0.5}]


def test_commands_signed_ones_run_and_bad_ones_are_refused(rig: Rig) -> None:
    central = rig.central
    central.set_online(True)
    seqs = write(rig.log, 40, meter="000000000007")
    collector = FakeCollector()
    uplink = rig.uplink(collector=collector)
    wait_until(lambda: rig.log.depth() == 0, what="drain")

    births = len(central.births)
    rebirth = central.command(RebirthArgs())
    assert central.result_for(rebirth)[0].status == "ok"
    wait_until(lambda: len(central.births) > births, what="rebirth")

    before = len(central.batches)
    resync = central.command(ResyncArgs(from_seq=11))
    assert central.result_for(resync)[0].status == "ok"
    wait_until(lambda: len(central.batches) > before, what="resync batches")
    replayed = {r.seq for b in central.batches[before:] for r in b.records}
    assert replayed == set(seqs[10:])
    assert all(b.historical for b in central.batches[before:])

    before = len(central.batches)
    start, end = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    resend = central.command(ResendArgs("000000000007", "1-0:1.8.0", start, end))
    result = central.result_for(resend)[0]
    assert result.status == "ok" and result.detail["queued_records"] == 4
    wait_until(lambda: len(central.batches) > before, what="resend batch")
    assert [r.seq for r in central.batches[-1].records] == seqs[4:8]  # original seqs

    read = central.command(ReadNowArgs("000000000007", "1-0:1.8.0"))
    result = central.result_for(read)[0]
    assert result.status == "ok" and collector.calls == [("000000000007", "1-0:1.8.0")]
    assert result.detail["result"][0]["ratio"] == "0.5"  # no float on the wire

    # Replayed: the same signed command again → duplicate, not run twice.
    central.send(decode_command(rebirth))
    results = central.result_for(rebirth, count=2)
    assert results[1].status == "duplicate"
    # Expired.
    expired = central.command(RebirthArgs(), issued=datetime.now(UTC) - timedelta(hours=1))
    assert central.result_for(expired)[0].status == "expired"
    # Unsigned and signed by the wrong key.
    unsigned = central.command(RebirthArgs(), signed=False)
    refusal = central.result_for(unsigned)[0]
    assert refusal.status == "refused" and refusal.detail["reason"] == "unsigned"
    real_key, central.key = central.key, generate_private_key()
    forged = central.command(RebirthArgs())
    central.key = real_key
    refusal = central.result_for(forged)[0]
    assert refusal.status == "refused" and refusal.detail["reason"] == "bad_signature"
    # health() is a snapshot taken after each loop pass: it may trail the last result.
    wait_until(lambda: uplink.health().refused_commands == 4, what="refusals counted")
    assert uplink.health().commands_run == 4


def decode_command(command: Command) -> Command:
    return command  # the same id, issued/expiry: a replay of the accepted command


def test_collector_commands_without_a_collector_fail_not_available(rig: Rig) -> None:
    central = rig.central
    central.set_online(True)
    rig.uplink()
    wait_until(lambda: len(central.births) >= 1, what="birth")
    read = central.command(ReadNowArgs("000000000007", "1-0:1.8.0"))
    result = central.result_for(read)[0]
    assert result.status == "failed" and result.detail["reason"] == "not available"


def test_bad_messages_do_not_kill_the_loop(rig: Rig) -> None:
    central = rig.central
    central.set_online(True)
    uplink = rig.uplink()
    wait_until(lambda: uplink.health().connected, what="connect")
    for payload in (b"garbage", b"{}", encode(CentralState(True, datetime.now(UTC)))):
        central.client.publish(ack_topic(GW), payload, qos=1).wait_for_publish(5)
    central.client.publish(cmd_topic(GW), b"\xff\x00", qos=1).wait_for_publish(5)
    # An ack beyond anything this gateway wrote.
    central.client.publish(
        ack_topic(GW), encode(Ack(GW, 1, 99, datetime.now(UTC))), qos=1
    ).wait_for_publish(5)
    wait_until(lambda: uplink.health().bad_messages >= 4, what="bad messages counted")
    write(rig.log, 5)
    uplink.notify()
    wait_until(lambda: rig.log.depth() == 0, what="still working")


def test_death_is_the_will_when_the_connection_dies_and_sent_on_stop(rig: Rig) -> None:
    central = rig.central
    central.set_online(True)
    uplink = rig.uplink()
    wait_until(lambda: uplink.health().connected, what="connect")
    first = uplink.session
    sock = uplink._client.socket()  # the TCP connection dies under the client
    sock.shutdown(socket.SHUT_RDWR)
    wait_until(lambda: any(d.session == first for d in central.deaths), what="will")
    wait_until(lambda: (uplink.session or 0) > (first or 0) and uplink.health().connected)
    second = uplink.session
    uplink.stop()
    wait_until(lambda: any(d.session == second for d in central.deaths), what="death on stop")
    retained = [b for b in central.births if b.session == second]
    assert retained and not central.errors


def test_retained_birth_decodes_with_the_wire_layer(rig: Rig) -> None:
    central = rig.central
    central.set_online(True)
    write(rig.log, 3)
    rig.uplink()
    wait_until(lambda: rig.log.depth() == 0)
    # A late subscriber gets the retained birth.
    got: list[bytes] = []
    client = new_mqtt_client("central-late")
    client.tls_set(*[str(p) for p in central_files(rig)])
    client.on_message = lambda _c, _u, m: got.append(m.payload)
    client.connect(rig.broker.host, rig.broker.port)
    client.loop_start()
    client.subscribe(f"m2c/v1/gw/{GW}/birth", qos=1)
    wait_until(lambda: bool(got), what="retained birth")
    client.disconnect()
    client.loop_stop()
    birth = decode(got[0])
    assert isinstance(birth, Birth) and birth.software_version == "test"


def central_files(rig: Rig) -> tuple[Path, Path, Path]:
    directory = rig.tmp_path / "central"
    return directory / "ca.crt", directory / "central.crt", directory / "central.key"


def test_live_records_overtake_the_backlog(rig: Rig) -> None:
    central = rig.central
    central.set_online(True)
    backlog = write(rig.log, 6000)
    uplink = rig.uplink(batch_size=50)
    wait_until(lambda: len(central.batches) >= 1, what="first batch")
    live = write(rig.log, 5, meter="000000000009")
    uplink.notify()
    wait_until(lambda: rig.log.acked_seq() == live[-1], timeout=30, what="drain")
    with central.lock:
        order = [(b.historical, b.seq_from, b.seq_to) for b in central.batches]
    first_live = next(i for i, (historical, *_rest) in enumerate(order) if not historical)
    last_backlog = max(i for i, (historical, *_rest) in enumerate(order) if historical)
    assert first_live < last_backlog, "live data waited for the whole backlog"
    assert order[first_live][1] == backlog[-1] + 1
    assert sorted(central.records) == backlog + live
    wait_until(lambda: uplink.health().in_flight == 0, what="empty window")


def test_uplink_from_the_config_file_section(rig: Rig) -> None:
    from edge_agent.config import parse_config
    from edge_agent.uplink import uplink_from_config

    central = rig.central
    central.set_online(True)
    text = f"""
[gateway]
id = "{GW}"
[storage]
path = "{rig.tmp_path / "edge.db"}"
[uplink]
enabled = true
host = "{rig.broker.host}"
port = {rig.broker.port}
ca_file = "{rig.bundle / "ca.crt"}"
cert_file = "{rig.bundle / "gateway.crt"}"
key_file = "{rig.bundle / "gateway.key"}"
signing_key_file = "{rig.bundle / "signing.key"}"
central_key_file = "{rig.central_key_file}"
batch_size = 20
"""
    config = parse_config(text)
    write(rig.log, 45)
    uplink = uplink_from_config(config, rig.log, software_version="9.9")
    rig.uplinks.append(uplink)
    uplink.start()
    wait_until(lambda: rig.log.depth() == 0, what="drain")
    assert central.births[-1].software_version == "9.9"
    assert central.births[-1].config_hash.startswith("sha256:")
    assert [(b.seq_from, b.seq_to) for b in central.batches] == [(1, 20), (21, 40), (41, 45)]
    rig.uplinks.remove(uplink)
    uplink.stop()
    assert rig.tmp_path.joinpath("uplink-commands.json").exists() is False  # no command yet


def test_a_nack_releases_nothing_is_logged_and_backs_off(rig: Rig) -> None:
    central = rig.central
    central.set_online(True)
    central.nacking = "storage"
    seqs = write(rig.log, 30)
    uplink = rig.uplink(resend_timeout_s=1.0)
    wait_until(lambda: uplink.health().nacks >= 1, what="nack")
    time.sleep(0.3)
    health = uplink.health()
    assert health.last_nack is not None and health.last_nack["reason"] == "storage"
    assert rig.log.acked_seq() == 0
    events = [
        r
        for r in rig.log.records_between(1, 10_000)
        if isinstance(r, EventRecord) and r.code == "uplink_nack"
    ]
    assert len(events) == 1 and events[0].detail["seq_from"] == 1
    with central.lock:
        early = len(central.batches)
    assert early <= 2  # not resent in a tight loop
    central.nacking = None
    wait_until(lambda: rig.log.depth() == 0, what="accepted after the back-off")
    assert set(seqs) <= set(central.records)


def test_collector_writing_concurrently_loses_and_doubles_nothing(rig: Rig) -> None:
    central = rig.central
    central.set_online(True)
    uplink = rig.uplink(batch_size=40)
    written: list[int] = []

    def collector() -> None:  # the bus threads commit while the uplink reads and acks
        for round_ in range(30):
            written.extend(write(rig.log, 25, meter=f"{round_:012d}"))
            uplink.notify()
            time.sleep(0.01)

    threads = [threading.Thread(target=collector)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_until(lambda: rig.log.acked_seq() == written[-1], what="drain")
    assert sorted(central.records) == sorted(written) == list(range(1, 751))
    with central.lock:
        covered = sorted((b.seq_from, b.seq_to) for b in central.batches)
    # Batches tile the seq space: no gap and, without resends, no overlap.
    assert covered[0][0] == 1 and covered[-1][1] == 750
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(covered))
