"""Central's MQTT ingestion consumer: verify, store, commit, *then* acknowledge.

One :class:`IngestConsumer` is one member of the MQTT 5 shared subscription
``$share/ingest/m2c/v1/gw/+/batch``; run as many as you like (processes or machines), the
broker hands each batch to one of them, and duplicates across members are harmless because
:class:`~central.ingest.store.IngestStore` is idempotent. Besides batches every member also
subscribes (not shared) to births, deaths and command results — the store ignores stale and
repeated ones — and to ``m2c/v1/central/state``.

The path of a batch::

    paho network thread     verify thread                     store thread
    on_message ─ queue ─►  take what is waiting   ─ queue ─►  merge waiting groups
                           (≤ max_group messages)  (2 groups)  (≤ max_group batches)
                           verify signature +                 IngestStore.apply_batches
                           schema against the                   ONE transaction, COMMIT
                           gateway's key                      publish Ack(up_to_seq =
                                                                contiguous watermark)
                                                              PUBACK each delivery

* The network thread never touches the database, so keepalive is answered however long a
  commit takes.
* PUBACK only after COMMIT (``manual_ack=True``). A consumer killed mid-batch never
  acknowledged the delivery. With a clean session (the default here) Mosquitto 2.0 drops the
  member's session and its unacknowledged in-flight messages with it — it does **not**
  hand them to another member (measured, see docs/central-ingest.md and
  tests/test_central_ingest_faults.py). Nothing is lost: the gateway holds every record
  until central's application ack and resends after its timeout with the same seq range.
  With ``persistent_session=True`` and a stable ``consumer_id``, Mosquitto keeps the
  session and redelivers the unacknowledged messages when that consumer comes back.
* A batch that fails verification (unknown gateway or key, bad signature, malformed or
  unsupported payload, wrong topic) is answered with a :class:`Nack` on the gateway's ack
  topic, recorded as a ``batch_rejected`` gateway event (when the gateway is enrolled),
  logged, and PUBACKed; the consumer carries on. A database failure is retried once, then
  nacked with reason ``storage`` (the gateway resends later).
* Central's retained ``central/state`` is published ``online`` after every connect, and
  the will publishes ``offline``. With several members, one member's will would tell
  gateways central is gone while the others still run, so every member watches the topic
  and republishes ``online`` when it sees ``offline`` while it is connected.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy.exc import SQLAlchemyError

from central.ingest.store import (
    IngestStore,
    InvalidBatchError,
    PreparedBatch,
    UnknownGatewayError,
)
from shared_protocol.errors import ProtocolError
from shared_protocol.wire import (
    CENTRAL_STATE,
    INGEST_SUBSCRIPTION,
    Ack,
    Birth,
    CentralState,
    ColumnarBatch,
    CommandResult,
    Death,
    Nack,
    RecordBatch,
    ack_topic,
    decode,
    encode,
    gateway_filter,
    load_public_key,
    nack_reason,
    parse_topic,
    verify,
    verify_envelope,
)

__all__ = [
    "BrokerConfig",
    "ConsumerStats",
    "GatewayKeys",
    "IngestConsumer",
    "import_registry",
]

log = logging.getLogger("central.ingest")

#: How long an unknown key id is remembered as unknown before the database is asked again.
NEGATIVE_KEY_TTL_S: Final = 5.0


@dataclass(frozen=True)
class BrokerConfig:
    """Where the broker is and who we are on it.

    ``ca_file``/``cert_file``/``key_file`` set mutual TLS (central's identity, CN
    ``central``, from ``central broker service-cert``); without them the connection is
    plaintext (tests and the embedded demo only).
    """

    host: str = "127.0.0.1"
    port: int = 8883
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = 30

    @property
    def tls(self) -> bool:
        return self.ca_file is not None

    @classmethod
    def from_tls_dir(cls, host: str, port: int, directory: Path, **kwargs: Any) -> BrokerConfig:
        """The files ``central broker service-cert --out DIRECTORY`` writes."""
        return cls(
            host,
            port,
            directory / "ca.crt",
            directory / "central.crt",
            directory / "central.key",
            **kwargs,
        )


@dataclass
class ConsumerStats:
    """Counters since start; read them with :meth:`IngestConsumer.stats`."""

    batches: int = 0
    readings_inserted: int = 0
    duplicates: int = 0
    updated: int = 0
    transactions: int = 0
    acks: int = 0
    nacks: int = 0
    births: int = 0
    deaths: int = 0
    command_results: int = 0
    dropped: int = 0
    connects: int = 0
    db_seconds: float = 0.0
    verify_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            name: round(value, 3) if isinstance(value, float) else value
            for name, value in self.__dict__.items()
        }


class GatewayKeys:
    """``key_id -> Ed25519PublicKey | None`` from the gateways table, cached.

    A key id is ``OWNER`` or ``OWNER:LABEL``; it resolves when the gateway OWNER is
    enrolled with exactly that key id. A miss is asked of the database again after
    :data:`NEGATIVE_KEY_TTL_S` (a gateway enrolled while we run is picked up; an unknown
    gateway sending a flood does not cost a query per message). A re-enrolled gateway's new
    key id is a miss, so it is found at once.
    """

    def __init__(self, store: IngestStore, *, clock: Callable[[], float] = time.monotonic):
        self._store = store
        self._clock = clock
        self._known: dict[str, Ed25519PublicKey] = {}
        self._unknown: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, key_id: str) -> Ed25519PublicKey | None:
        with self._lock:
            key = self._known.get(key_id)
            if key is not None:
                return key
            since = self._unknown.get(key_id)
            if since is not None and self._clock() - since < NEGATIVE_KEY_TTL_S:
                return None
        owner = key_id.split(":", 1)[0]
        info = self._store.gateway(owner)
        key = None
        if info is not None and info.key_id == key_id and info.public_key_pem:
            key = load_public_key(info.public_key_pem.encode("ascii"))
        with self._lock:
            if key is None:
                self._unknown[key_id] = self._clock()
            else:
                # The gateway's previous key ids are no longer valid.
                for old in [k for k in self._known if k.split(":", 1)[0] == owner]:
                    del self._known[old]
                self._known[key_id] = key
                self._unknown.pop(key_id, None)
        return key

    def forget(self, gateway: str | None = None) -> None:
        """Drop cached keys (of one gateway, or all): after an enrolment or a revocation."""
        with self._lock:
            for cache in (self._known, self._unknown):
                for key_id in [k for k in cache if gateway in (None, k.split(":", 1)[0])]:
                    del cache[key_id]


@dataclass
class _Delivery:
    message: Any  # paho MQTTMessage
    generation: int  # which connection delivered it (a PUBACK belongs to that one)


@dataclass
class _Outcome:
    delivery: _Delivery
    batch: RecordBatch | ColumnarBatch | None = None
    prepared: PreparedBatch | None = None  # the batch as rows, made on the verify thread
    reply: Ack | Nack | None = None


@dataclass
class _Group:
    batches: list[_Outcome] = field(default_factory=list)
    others: list[_Delivery] = field(default_factory=list)  # births, deaths, results


def _now() -> datetime:
    return datetime.now(UTC)


class IngestConsumer:
    """One member of the ingestion shared subscription.

    ``consumer_id`` is the MQTT client id (unique per member). ``max_group`` bounds how
    many waiting batches share one transaction (one commit, one fsync on SQLite);
    ``receive_maximum`` is how many unacknowledged deliveries the broker may have
    outstanding with us (MQTT 5 Receive Maximum; Mosquitto also applies its own
    ``max_inflight_messages``).

    Use::

        consumer = IngestConsumer(IngestStore(engine), BrokerConfig(...), "ingest-1")
        consumer.start()
        consumer.wait_connected(10)
        ...
        consumer.stop()
    """

    def __init__(
        self,
        store: IngestStore,
        broker: BrokerConfig,
        consumer_id: str,
        *,
        share_group: str = "ingest",
        max_group: int = 40,
        receive_maximum: int = 40,
        persistent_session: bool = False,
        session_expiry_s: int = 3600,
    ) -> None:
        if not consumer_id:
            raise ValueError("consumer_id must name this consumer (it is the MQTT client id)")
        self.store = store
        self.broker = broker
        self.consumer_id = consumer_id
        self.batch_subscription = INGEST_SUBSCRIPTION.replace(
            "$share/ingest/", f"$share/{share_group}/", 1
        )
        self.max_group = max(1, max_group)
        self.receive_maximum = max(1, receive_maximum)
        self.persistent_session = persistent_session
        self.session_expiry_s = session_expiry_s
        self.keys = GatewayKeys(store)
        self._stats = ConsumerStats()
        self._stats_lock = threading.Lock()
        self._queue: queue.Queue[_Delivery] = queue.Queue()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._generation = 0
        self._subscribe_mid: int | None = None
        self._worker: threading.Thread | None = None
        self._store_thread: threading.Thread | None = None
        # Verified groups waiting for the store thread; bounded so verification cannot run
        # far ahead of the database (the deliveries stay unacknowledged meanwhile).
        self._verified: queue.Queue[_Group | None] = queue.Queue(maxsize=2)
        # The store thread holds this through the in-line VEE pass, and the verify thread
        # takes it between messages: the two Python-bound stages share one GIL anyway, and
        # VEE's numpy calls give the GIL up on every array — with the verify thread running
        # the store thread then waited up to a switch interval for it each time
        # (docs/central-ingest.md). Pausing verification for those milliseconds loses
        # nothing: the GIL was busy either way.
        self._exclusive = threading.Lock()
        if store.validator is not None:
            store.exclusive = self._exclusive
        self._client = self._make_client()

    # -- lifecycle -------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.consumer_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if self.broker.tls:
            client.tls_set(
                ca_certs=str(self.broker.ca_file),
                certfile=str(self.broker.cert_file) if self.broker.cert_file else None,
                keyfile=str(self.broker.key_file) if self.broker.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.will_set(CENTRAL_STATE, encode(CentralState(False, _now())), qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        """Connect (in the background, retrying) and start the worker; returns at once."""
        if self._worker is not None:
            raise RuntimeError("consumer already started")
        self._worker = threading.Thread(
            target=self._work, name=f"ingest-worker-{self.consumer_id}", daemon=True
        )
        self._worker.start()
        self._store_thread = threading.Thread(
            target=self._store_work, name=f"ingest-store-{self.consumer_id}", daemon=True
        )
        self._store_thread.start()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.ReceiveMaximum = self.receive_maximum
        properties.SessionExpiryInterval = self.session_expiry_s if self.persistent_session else 0
        self._client.connect_async(
            self.broker.host,
            self.broker.port,
            keepalive=self.broker.keepalive,
            clean_start=not self.persistent_session,
            properties=properties,
        )
        self._client.loop_start()

    def wait_connected(self, timeout: float | None = None) -> bool:
        """True once connected and subscribed (False on timeout)."""
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the group in hand, then leave: the will (``offline``) goes out, so the
        other members republish ``online`` if any still run. Deliveries not yet processed
        are not acknowledged (the gateway resends them)."""
        self._stopping.set()
        for thread in (self._worker, self._store_thread):
            if thread is not None:
                thread.join(timeout)
        # MQTT 5 reason 0x04 "Disconnect with Will Message": this member is going, say so.
        self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
        self._client.loop_stop()
        self._connected.clear()

    def __enter__(self) -> IngestConsumer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> ConsumerStats:
        with self._stats_lock:
            return ConsumerStats(**self._stats.__dict__)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def backlog(self) -> int:
        """Deliveries received and not yet processed."""
        return self._queue.qsize()

    def _count(self, **increments: float) -> None:
        with self._stats_lock:
            for name, value in increments.items():
                setattr(self._stats, name, getattr(self._stats, name) + value)

    # -- paho network thread ---------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if reason.is_failure:
            log.warning("ingest %s: broker refused the connection: %s", self.consumer_id, reason)
            return
        self._generation += 1
        no_local = SubscribeOptions(qos=1, noLocal=True)
        _result, self._subscribe_mid = client.subscribe(
            [
                (self.batch_subscription, SubscribeOptions(qos=1)),
                (gateway_filter("birth"), SubscribeOptions(qos=1)),
                (gateway_filter("death"), SubscribeOptions(qos=1)),
                (gateway_filter("cmd_result"), SubscribeOptions(qos=1)),
                (CENTRAL_STATE, no_local),
            ]
        )
        # The broker handles SUBSCRIBE before this PUBLISH (one connection is in order), so
        # a gateway that sees `online` publishes into a subscription that already exists.
        self._publish_online()
        self._count(connects=1)
        log.info(
            "ingest %s: connected to %s:%d, subscribed to %s",
            self.consumer_id,
            self.broker.host,
            self.broker.port,
            self.batch_subscription,
        )

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, mid: int, codes: list[ReasonCode], _p: Any
    ) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [str(code) for code in codes if code.is_failure]
        if refused:
            log.error("ingest %s: subscriptions refused: %s", self.consumer_id, refused)
        self._connected.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            log.warning("ingest %s: disconnected (%s); reconnecting", self.consumer_id, reason)

    def _publish_online(self) -> None:
        self._client.publish(CENTRAL_STATE, encode(CentralState(True, _now())), qos=1, retain=True)

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: Any) -> None:
        if message.topic == CENTRAL_STATE:
            # Cheap, and must not wait behind a long commit: handle it here.
            self._on_central_state(message)
            self._ack(_Delivery(message, self._generation))
            return
        self._queue.put(_Delivery(message, self._generation))

    def _on_central_state(self, message: Any) -> None:
        try:
            state = decode(message.payload, topic=CENTRAL_STATE)
        except ProtocolError as error:
            log.warning("ingest %s: unreadable central state: %s", self.consumer_id, error)
            return
        if isinstance(state, CentralState) and not state.online and not self._stopping.is_set():
            log.info("ingest %s: central state says offline; republishing online", self.consumer_id)
            self._publish_online()

    def _ack(self, delivery: _Delivery) -> None:
        """PUBACK a delivery, on the connection that delivered it (a packet id belongs to
        its connection; after a reconnect the broker redelivers or has dropped it)."""
        message = delivery.message
        if message.qos == 0 or delivery.generation != self._generation:
            return
        result = self._client.ack(message.mid, message.qos)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.debug("ingest %s: PUBACK %d not sent: %s", self.consumer_id, message.mid, result)

    # -- worker thread ---------------------------------------------------------------------

    def _work(self) -> None:
        """Stage 1 (verify thread): take what is waiting, verify the batches, hand the
        group to the store thread. Signature checks, inflating and parsing of the next
        group overlap with the commit of the previous one."""
        while not self._stopping.is_set():
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            deliveries = [first]
            while len(deliveries) < self.max_group:
                try:
                    deliveries.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                group = self._verify_stage(deliveries)
            except Exception:  # the consumer must survive anything one group does
                log.exception("ingest %s: unexpected failure verifying a group", self.consumer_id)
                self._count(dropped=len(deliveries))
                continue
            self._verified.put(group)
        self._verified.put(None)

    def _store_work(self) -> None:
        """Stage 2 (store thread): merge the verified groups that are waiting (up to
        max_group batches), one transaction, replies, PUBACKs."""
        finished = False
        while not finished:
            first = self._verified.get()
            if first is None:
                return
            group = first
            while len(group.batches) < self.max_group:
                try:
                    more = self._verified.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    finished = True
                    break
                group.batches.extend(more.batches)
                group.others.extend(more.others)
            try:
                self._store_stage(group)
            except Exception:
                log.exception("ingest %s: unexpected failure storing a group", self.consumer_id)
                self._count(dropped=len(group.batches) + len(group.others))

    def process(self, deliveries: Sequence[_Delivery]) -> None:
        """Handle a group of deliveries in the calling thread (both stages)."""
        self._store_stage(self._verify_stage(deliveries))

    def _verify_stage(self, deliveries: Sequence[_Delivery]) -> _Group:
        group = _Group()
        for delivery in deliveries:
            with self._exclusive:  # not while the store thread runs VEE
                pass
            if _topic_kind(delivery.message.topic) == "batch":
                group.batches.append(self._verify_batch(delivery))
            else:
                group.others.append(delivery)
        return group

    def _store_stage(self, group: _Group) -> None:
        """Births, deaths and results one by one; batches in one transaction; publish each
        reply, then PUBACK each delivery."""
        for delivery in group.others:
            self._handle_other(_topic_kind(delivery.message.topic), delivery)
        good = [o for o in group.batches if o.batch is not None]
        if good:
            self._apply(good)
        for outcome in group.batches:
            if outcome.reply is not None:
                self._publish_reply(outcome.reply)
        for delivery in (*(o.delivery for o in group.batches), *group.others):
            self._ack(delivery)

    def _verify_batch(self, delivery: _Delivery) -> _Outcome:
        message = delivery.message
        outcome = _Outcome(delivery)
        started = time.perf_counter()
        try:
            # Columnar: the readings stay checked columns all the way into the store.
            batch = verify_envelope(
                message.payload, self.keys, topic=message.topic, columnar=True
            ).message
            if not isinstance(batch, RecordBatch | ColumnarBatch):  # topic= guarantees it
                raise TypeError(f"{type(batch).__name__} on a batch topic")
            outcome.batch = batch
            # Rows are made here, in parallel with the writer.
            # A batch the store cannot take is left for the store stage to refuse.
            with contextlib.suppress(InvalidBatchError):
                outcome.prepared = self.store.prepare(batch)
        except ProtocolError as error:
            outcome.reply = self._reject(message.topic, message.payload, error)
        finally:
            self._count(verify_seconds=time.perf_counter() - started)
        return outcome

    def _apply(self, outcomes: list[_Outcome]) -> None:
        batches = [o.prepared or o.batch for o in outcomes if o.batch is not None]
        started = time.perf_counter()
        try:
            results = self._apply_with_retry(batches)
        except InvalidBatchError as error:
            # One batch is wrong in a way the schema cannot see (e.g. a record outside its
            # range): store the others one by one and nack that one.
            if len(outcomes) > 1:
                for outcome in outcomes:
                    self._apply([outcome])
            else:
                self._refuse_invalid(outcomes[0], error)
            return
        except SQLAlchemyError as error:
            log.error("ingest %s: storage failed twice: %s", self.consumer_id, error)
            for outcome in outcomes:
                assert outcome.batch is not None
                outcome.reply = _nack(outcome.batch, "storage", f"central storage: {error}"[:1024])
                self._count(nacks=1)
            return
        finally:
            self._count(db_seconds=time.perf_counter() - started)
        received = _now()
        self._count(transactions=1)
        for outcome, result in zip(outcomes, results, strict=True):
            batch = outcome.batch
            assert batch is not None
            outcome.reply = Ack(batch.gateway, batch.session, result.up_to_seq, received)
            self._count(
                batches=1,
                readings_inserted=result.inserted,
                duplicates=result.duplicates,
                updated=result.updated,
            )

    def _refuse_invalid(self, outcome: _Outcome, error: InvalidBatchError) -> None:
        batch = outcome.batch
        assert batch is not None
        detail = str(error)[:1024]
        outcome.reply = _nack(batch, "malformed", detail)
        self._record_rejection(batch.gateway, "malformed", detail, batch)
        self._count(nacks=1)
        log.warning("ingest %s: refused batch from %s: %s", self.consumer_id, batch.gateway, detail)

    def _apply_with_retry(
        self, batches: list[RecordBatch | ColumnarBatch | PreparedBatch]
    ) -> list[Any]:
        try:
            return self.store.apply_batches(batches)
        except UnknownGatewayError:
            raise SQLAlchemyError("a gateway disappeared from the database") from None
        except SQLAlchemyError as error:
            log.warning("ingest %s: storage failed (%s); retrying once", self.consumer_id, error)
            time.sleep(0.5)
            return self.store.apply_batches(batches)

    def _reject(self, topic: str, payload: bytes, error: ProtocolError) -> Nack | None:
        """The Nack for a payload that failed verification, plus its event and log line."""
        reason = nack_reason(error)
        try:
            gateway = parse_topic(topic).gateway
        except ProtocolError:
            gateway = None
        if gateway is None:
            log.warning("ingest %s: dropped a payload on %r: %s", self.consumer_id, topic, error)
            self._count(dropped=1)
            return None
        # Best effort, for the gateway's benefit: the range it sent, read without trusting it.
        claimed: RecordBatch | None = None
        try:
            unverified = decode(payload)
            if isinstance(unverified, RecordBatch) and unverified.gateway == gateway:
                claimed = unverified
        except ProtocolError:
            pass
        detail = str(error)[:1024]
        log.warning(
            "ingest %s: refused batch from %s (%s): %s", self.consumer_id, gateway, reason, detail
        )
        self._record_rejection(gateway, reason, detail, claimed)
        self._count(nacks=1)
        if claimed is not None:
            return _nack(claimed, reason, detail)
        return Nack(gateway, None, None, None, reason, detail, _now())

    def _record_rejection(
        self, gateway: str, reason: str, detail: str, batch: RecordBatch | ColumnarBatch | None
    ) -> None:
        event: dict[str, Any] = {"reason": reason, "detail": detail}
        if batch is not None:
            event.update(session=batch.session, seq_from=batch.seq_from, seq_to=batch.seq_to)
        try:
            self.store.record_gateway_event(gateway, "batch_rejected", event)
        except UnknownGatewayError:
            pass  # not enrolled: the log line is all there is
        except SQLAlchemyError as failure:
            log.error("ingest %s: could not record the rejection: %s", self.consumer_id, failure)

    def _publish_reply(self, reply: Ack | Nack) -> None:
        self._count(**({"acks": 1} if isinstance(reply, Ack) else {}))
        self._client.publish(ack_topic(reply.gateway), encode(reply), qos=1)

    def _handle_other(self, kind: str | None, delivery: _Delivery) -> None:
        message = delivery.message
        try:
            if kind == "birth":
                birth = verify(message.payload, self.keys, topic=message.topic)
                assert isinstance(birth, Birth)
                if self.store.record_birth_message(birth):
                    log.info("ingest: %s born (session %d)", birth.gateway, birth.session)
                self._count(births=1)
            elif kind == "death":
                if not message.payload:
                    return  # a retained death cleared by an operator
                death = decode(message.payload, topic=message.topic)
                assert isinstance(death, Death)
                if self.store.record_death_message(death):
                    log.info("ingest: %s died (session %d)", death.gateway, death.session)
                self._count(deaths=1)
            elif kind == "cmd_result":
                result = verify(message.payload, self.keys, topic=message.topic)
                assert isinstance(result, CommandResult)
                self.store.record_gateway_event(
                    result.gateway,
                    "command_result",
                    {"id": str(result.id), "status": result.status, "detail": result.detail},
                    at=result.at,
                )
                self._count(command_results=1)
            else:
                log.warning("ingest %s: unexpected topic %r", self.consumer_id, message.topic)
                self._count(dropped=1)
        except (ProtocolError, UnknownGatewayError) as error:
            log.warning(
                "ingest %s: ignored %s on %s: %s", self.consumer_id, kind, message.topic, error
            )
            self._count(dropped=1)
        except SQLAlchemyError as error:
            log.error(
                "ingest %s: storage failed for %s: %s", self.consumer_id, message.topic, error
            )
            self._count(dropped=1)


def _topic_kind(topic: str) -> str | None:
    try:
        return parse_topic(topic).kind
    except ProtocolError:
        return None


def _nack(batch: RecordBatch | ColumnarBatch, reason: str, detail: str) -> Nack:
    return Nack(batch.gateway, batch.session, batch.seq_from, batch.seq_to, reason, detail, _now())


def import_registry(store: IngestStore, entries: Iterable[dict[str, Any]]) -> list[str]:
    """Enrol the gateways of registry entries (``central.security.list_gateways``) into the
    database with their signing keys; a revoked gateway is kept with no key, so its batches
    are refused. Returns the gateway ids imported."""
    imported = []
    for entry in entries:
        revoked = entry.get("revoked_at") is not None
        store.enroll_gateway(
            entry["gateway_id"],
            None if revoked else entry["signing_public_key_pem"],
            None if revoked else entry["signing_key_id"],
        )
        imported.append(entry["gateway_id"])
    return imported
