"""Helpers for the ingestion consumer tests (no tests here): signed batches, a gateway
double on a real broker, and a consumer wired to a database.

Imported by tests/test_central_ingest*.py (the tests directory is on sys.path).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mosquitto_fixture import Broker, MqttSession
from sqlalchemy import Engine, select

from central.db import gateway_events
from central.ingest.consumer import BrokerConfig, IngestConsumer
from central.ingest.store import IngestStore
from shared_protocol.wire import (
    Ack,
    Message,
    Nack,
    RecordBatch,
    WireReading,
    ack_topic,
    batch_topic,
    decode,
    generate_private_key,
    public_key_pem,
    sign,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def make_batch(
    gateway: str, seq_from: int, count: int, *, session: int = 1, meters: int = 50
) -> RecordBatch:
    """``count`` readings with seqs ``seq_from..seq_from+count-1``; reading seq ``s`` is
    meter ``s % meters`` at hour ``s // meters`` (so every seq has its own natural key)."""
    records = tuple(
        WireReading(
            seq=seq,
            meter=f"{seq % meters:012d}",
            obis="1-0:1.8.0",
            time=T0 + timedelta(hours=seq // meters),
            value=Decimal(seq) / 100,
            unit="kWh",
            kind="curve",
            source="scheduled",
            quality="ok",
            read_at=T0 + timedelta(hours=seq // meters, seconds=5),
        )
        for seq in range(seq_from, seq_from + count)
    )
    return RecordBatch(
        gateway=gateway,
        session=session,
        seq_from=seq_from,
        seq_to=seq_from + count - 1,
        records=records,
        historical=False,
        sent_at=T0,
    )


@dataclass
class GatewayDouble:
    """A gateway on the broker: its own certificate (CN = id), publishes signed batches,
    collects the acks and nacks central sends it."""

    gateway: str
    key: Ed25519PrivateKey
    session: MqttSession
    replies: queue.Queue[Message] = field(default_factory=queue.Queue)

    def sign(self, batch: RecordBatch, *, key: Ed25519PrivateKey | None = None) -> bytes:
        return sign(batch, key or self.key, self.gateway)

    def publish(self, payload: bytes, topic: str | None = None) -> None:
        assert self.session.publish(topic or batch_topic(self.gateway), payload)

    def next_reply(self, timeout: float = 10.0) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.session.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.gateway}: no ack/nack within {timeout} s") from None
            if message.topic == ack_topic(self.gateway):
                reply = decode(message.payload, topic=message.topic)
                assert isinstance(reply, Ack | Nack)
                return reply

    def wait_ack(self, up_to_seq: int, timeout: float = 20.0) -> Ack:
        """The first ack at or above ``up_to_seq`` (nacks fail the test)."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.next_reply(max(0.01, deadline - time.monotonic()))
            assert isinstance(reply, Ack), f"expected an ack, got {reply}"
            if reply.up_to_seq >= up_to_seq:
                return reply

    def close(self) -> None:
        self.session.close()


def gateway_double(broker: Broker, store: IngestStore | None, gateway: str) -> GatewayDouble:
    """Connect gateway ``gateway`` (enrolled in ``store`` unless None) and subscribe to its
    ack topic."""
    key = generate_private_key()
    if store is not None:
        store.enroll_gateway(gateway, public_key_pem(key).decode("ascii"), gateway)
    session = broker.session(gateway if broker.tls else None, client_id=gateway)
    session.subscribe(ack_topic(gateway))
    return GatewayDouble(gateway, key, session)


def broker_config(broker: Broker) -> BrokerConfig:
    if not broker.tls:
        return BrokerConfig(broker.host, broker.port)
    identity = broker.client_identity("central")
    return BrokerConfig(
        broker.host,
        broker.port,
        identity.ca_file,
        identity.certificate_file,
        identity.key_file,
    )


@contextmanager
def running_consumer(
    broker: Broker, engine: Engine, consumer_id: str = "ingest-1", **options: Any
) -> Iterator[IngestConsumer]:
    consumer = IngestConsumer(IngestStore(engine), broker_config(broker), consumer_id, **options)
    consumer.start()
    try:
        assert consumer.wait_connected(10), broker.log()
        yield consumer
    finally:
        consumer.stop()


def events(engine: Engine, gateway: str, code: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(gateway_events.c.detail).where(
                gateway_events.c.gateway == gateway, gateway_events.c.code == code
            )
        ).all()
    return [dict(row.detail) for row in rows]


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
