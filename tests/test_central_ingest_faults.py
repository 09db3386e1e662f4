"""Faults around the ingestion consumer, on a real Mosquitto and both databases.

Two consumers share the subscription; one (a real `central ingest run` process) is
SIGKILLed mid-stream. Mosquitto 2.0 does not hand a dead clean-session member's
unacknowledged deliveries to the other member (measured: tests below and
docs/central-ingest.md), so the gateway double does what the edge does — resends every
batch above the last ack after a timeout — and every reading must be stored exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from central_ingest_support import (
    GatewayDouble,
    gateway_double,
    make_batch,
    running_consumer,
    wait_for,
)
from mosquitto_fixture import Broker, start_broker
from sqlalchemy import Engine, select

from central.db import readings
from central.ingest.store import IngestStore
from shared_protocol.wire import Ack

pytest_plugins = ["central_fixtures"]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = start_broker(tmp_path)
    yield broker
    broker.stop()


def spawn_consumer(broker: Broker, database_url: str, consumer_id: str) -> subprocess.Popen[str]:
    """`central ingest run` as its own process; returns once it says it is ready."""
    identity = broker.client_identity("central")
    env = {
        **os.environ,
        "M2C_DATABASE_URL": database_url,
        "M2C_BROKER_URL": f"mqtts://{broker.host}:{broker.port}",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "central",
            "ingest",
            "run",
            "--json",
            "--status-every",
            "0.2",
            "--consumer-id",
            consumer_id,
            "--ca-file",
            str(identity.ca_file),
            "--cert-file",
            str(identity.certificate_file),
            "--key-file",
            str(identity.key_file),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if json.loads(line)["event"] == "ready":
            return process
    process.kill()
    errors = process.stderr.read() if process.stderr else ""
    raise AssertionError(f"consumer did not start: {errors}")


def drain(gw: GatewayDouble, payloads: list[tuple[int, bytes]], total: int) -> int:
    """The edge's rule: wait for acks; after 2 s of silence resend every batch above the
    highest ack. Returns how many batches were resent."""
    acked = 0
    resent = 0
    deadline = time.monotonic() + 40
    while acked < total:
        assert time.monotonic() < deadline, f"stuck at ack {acked} of {total}"
        try:
            reply = gw.next_reply(2.0)
        except AssertionError:
            for seq_to, payload in payloads:
                if seq_to > acked:
                    gw.publish(payload)
                    resent += 1
            continue
        assert isinstance(reply, Ack), reply
        acked = max(acked, reply.up_to_seq)
    return resent


def test_two_consumers_one_killed_mid_stream_every_reading_once(
    broker: Broker, engine: Engine, database_url: str
) -> None:
    store = IngestStore(engine)
    gw = gateway_double(broker, store, "gw-0001")
    size, count = 250, 40
    payloads = [
        (1 + i * size + size - 1, gw.sign(make_batch("gw-0001", 1 + i * size, size)))
        for i in range(count)
    ]
    total = size * count
    victim = spawn_consumer(broker, database_url, "ingest-victim")
    try:
        with running_consumer(broker, engine, "ingest-survivor") as survivor:
            for _, payload in payloads[: count // 2]:
                gw.publish(payload)
            # Kill the victim while it is working: it has committed something, not all.
            wait_for(lambda: store.count_readings("gw-0001") >= size, what="first commits")
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(5)
            for _, payload in payloads[count // 2 :]:
                gw.publish(payload)
            resent = drain(gw, payloads, total)
            print(f"resent {resent} batches; survivor stats {survivor.stats().as_dict()}")
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(5)
    assert store.count_readings("gw-0001") == total
    assert store.watermark("gw-0001") == total
    with engine.connect() as conn:
        seqs = conn.execute(select(readings.c.seq).order_by(readings.c.seq)).scalars().all()
    assert seqs == list(range(1, total + 1))  # every reading, each once
    gw.close()


def test_a_consumer_restarted_with_its_persistent_session_gets_its_deliveries_back(
    broker: Broker, engine: Engine
) -> None:
    """persistent_session=True: the broker keeps the session of a consumer that died and
    gives its unacknowledged deliveries back when the same consumer id reconnects."""
    store = IngestStore(engine)
    gw = gateway_double(broker, store, "gw-0001")
    with running_consumer(broker, engine, "ingest-p", persistent_session=True) as consumer:
        # Hold the worker so deliveries sit unacknowledged, then drop the link hard.
        # The worker takes whatever has arrived as one group, so the held group may hold
        # more than one batch: count both the held and the queued deliveries.
        gate = threading.Event()
        held: list[int] = []
        original = consumer._verify_stage

        def hold(deliveries: Any) -> Any:
            held.append(len(deliveries))
            gate.wait()
            return original(deliveries)

        consumer._verify_stage = hold  # type: ignore[method-assign]
        for i in range(5):
            gw.publish(gw.sign(make_batch("gw-0001", 1 + i * 10, 10)))
        wait_for(lambda: sum(held) + consumer.backlog == 5, what="all deliveries received")
        consumer._client.loop_stop()
        sock = consumer._client.socket()
        if sock is not None:
            sock.close()
        consumer._stopping.set()
        gate.set()
    # At most the held group was stored (its PUBACKs went nowhere); the queued ones not.
    assert store.count_readings("gw-0001") <= 10 * held[0] < 50
    with running_consumer(broker, engine, "ingest-p", persistent_session=True):
        assert gw.wait_ack(50).up_to_seq == 50
    assert store.count_readings("gw-0001") == 50
    gw.close()
