"""The edge agent's MQTT uplink: birth/death, signed batches with end-to-end acks, commands.

One thread owns everything: it connects (mutual TLS, MQTT 5, ``clean_start=False`` with a
session expiry), drives paho's network loop by hand and, between loop passes, fills the
send window from the log, resends what timed out and answers commands. paho callbacks run
on that same thread, so the uplink's state needs no lock; only :meth:`Uplink.health`,
:meth:`Uplink.notify` and :meth:`Uplink.stop` are called from other threads. Collector
commands (read now, backfill, clock sync), which can take minutes, run on a helper thread
and hand their result back through a queue.

Records leave the gateway's log only on central's :class:`Ack` (``log.acknowledge``) —
never on PUBACK, never on a timeout. See ``docs/edge-uplink.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import random
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.store import EdgeLog, LogReader, ReadingRecord, Record
from edge_agent.uplink.convert import plain_detail, to_wire_records
from edge_agent.uplink.settings import BirthFacts, Keys, UplinkSettings
from shared_protocol.errors import LocalProtocolError, ProtocolError
from shared_protocol.wire import (
    CENTRAL_STATE,
    Ack,
    BackfillArgs,
    Birth,
    CentralState,
    ClockSyncArgs,
    Command,
    CommandGuard,
    CommandRefusedError,
    CommandResult,
    Death,
    Nack,
    ReadNowArgs,
    RebirthArgs,
    RecordBatch,
    ResendArgs,
    ResyncArgs,
    ack_topic,
    batch_topic,
    birth_topic,
    cmd_result_topic,
    cmd_topic,
    death_topic,
    decode,
    sign,
)

__all__ = ["CollectorLike", "InFlight", "Uplink", "UplinkHealth"]

log = logging.getLogger(__name__)

#: Nack reasons that are central's own trouble: resend later, unchanged.
_TRANSIENT_NACKS = frozenset({"storage"})


class CollectorLike(Protocol):
    """What commands need from ``edge_agent.tasks.Collector`` (any subset will do)."""

    def read_now(self, meter_key: str, what: str, *, store: bool = True) -> Any: ...

    def backfill(self, days: int | None = None, meters: Any = None) -> Any: ...

    def clock_check(self, meters: Any = None, *, sync: bool = True) -> Any: ...


@dataclass
class InFlight:
    """One batch sent and not yet covered by central's ack."""

    seq_from: int
    seq_to: int
    records: int
    historical: bool
    live: bool
    payload: bytes
    due: float  # monotonic time of the next resend
    attempts: int = 1
    nacks: int = 0


@dataclass(frozen=True)
class UplinkHealth:
    """The uplink's state for ``edge-agent status`` (JSON-ready via ``dataclasses.asdict``)."""

    connected: bool
    central_online: bool
    session: int | None
    in_flight: int
    in_flight_seqs: list[list[int]]
    last_ack_seq: int | None
    last_ack_at: str | None
    batches_sent: int
    records_sent: int
    resends: int
    nacks: int
    last_nack: dict[str, Any] | None
    commands_run: int
    refused_commands: int
    bad_messages: int
    connects: int
    connect_failures: int
    births: int
    clock_offset_s: str | None
    last_error: str | None


@dataclass
class _Counters:
    batches_sent: int = 0
    records_sent: int = 0
    resends: int = 0
    nacks: int = 0
    commands_run: int = 0
    refused_commands: int = 0
    bad_messages: int = 0
    connects: int = 0
    connect_failures: int = 0
    births: int = 0
    last_nack: dict[str, Any] | None = None
    last_error: str | None = None
    last_ack_seq: int | None = None
    last_ack_at: str | None = None


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Replay:
    """A resync below the ack mark: records served from retention, in seq chunks."""

    cursor: int  # last seq already sent
    end: int  # inclusive


@dataclass
class _Plan:
    """Where sending stands in this session."""

    boundary: int  # last_seq when the session began: above it is live, below is backlog
    backlog_cursor: int  # highest seq claimed by a backlog batch
    live_cursor: int  # highest seq claimed by a live batch
    window: dict[int, InFlight] = field(default_factory=dict)  # by seq_from
    replay: _Replay | None = None


class Uplink:
    """The gateway's MQTT uplink. ``start()`` it, ``notify()`` it after log commits, ``stop()``.

    ``log`` is the agent's :class:`EdgeLog` (writes: acknowledge, new_session, events);
    reads for batches go through a separate read-only :class:`LogReader` on the same file
    (``reader``; opened from ``log`` when not given) so the collector's writes never wait
    for the uplink's reads.
    """

    def __init__(
        self,
        settings: UplinkSettings,
        log: EdgeLog,
        keys: Keys,
        *,
        reader: LogReader | None = None,
        birth_facts: Callable[[], BirthFacts] | None = None,
        collector: CollectorLike | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.settings = settings
        self.gateway = settings.gateway_id
        self._log = log
        self._reader = reader
        self._keys = keys
        self._birth_facts = birth_facts or BirthFacts
        self.collector = collector
        self._clock = clock
        self._guard = CommandGuard(
            keys.central_key,
            clock,
            gateway=self.gateway,
            remembered=self._load_command_memory(),
        )
        self._topics = {
            "batch": batch_topic(self.gateway),
            "ack": ack_topic(self.gateway),
            "birth": birth_topic(self.gateway),
            "death": death_topic(self.gateway),
            "cmd": cmd_topic(self.gateway),
            "result": cmd_result_topic(self.gateway),
        }
        self._client: Any = None
        self._connected = False
        self._central_online = False
        self._session: int | None = None
        self._session_started_at: datetime | None = None
        self._plan: _Plan | None = None
        self._counters = _Counters()
        self._clock_offset: Decimal | None = None
        self._last_ack_progress = time.monotonic()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()
        self._health: UplinkHealth = self._snapshot()
        self._results: queue.Queue[CommandResult] = queue.Queue()
        self._jobs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uplink-cmd")
        self._next_poll = 0.0
        self._size = settings.batch_size  # halved when a batch would exceed the payload limit
        self._own_reader = reader is None
        self._nack_reasons_logged: set[str] = set()
        self._repeats = 0
        self._backoff = settings.reconnect_min_s
        self._next_connect = 0.0
        self._connack_deadline = 0.0
        self._lost: str | None = None

    # -- public ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the uplink is already running")
        if self._reader is None:
            self._reader = LogReader.open(self._log_path())
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish the death (retained), disconnect cleanly, stop the thread."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._jobs.shutdown(wait=False, cancel_futures=True)

    def notify(self) -> None:
        """New records were committed: look at the log now rather than at the next poll."""
        self._wake.set()

    def health(self) -> UplinkHealth:
        with self._state_lock:
            return self._health

    @property
    def session(self) -> int | None:
        return self._session

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self._step()
                except Exception as exc:  # the loop never dies of one bad pass
                    log.exception("uplink pass failed")
                    self._connect_failed(f"{type(exc).__name__}: {exc}")
                self._publish_health()
        finally:
            self._shutdown()

    def _step(self) -> None:
        now = time.monotonic()
        if self._client is None:
            if now < self._next_connect:
                # Not _wake: a notify() while disconnected must not turn this into a spin.
                self._stopping.wait(min(0.2, self._next_connect - now))
                return
            self._connect()
            return
        if not self._connected and not self._lost and now > self._connack_deadline:
            self._lost = "no CONNACK in time"
        if not self._lost:
            rc = self._client.loop(timeout=0.05)
            if rc != mqtt.MQTT_ERR_SUCCESS and not self._lost:
                self._lost = f"network loop: {mqtt.error_string(rc)}"
        if self._lost:
            self._connect_failed(self._lost)
            return
        if not self._connected:
            return
        while True:
            try:
                result = self._results.get_nowait()
            except queue.Empty:
                break
            self._publish_result(result)
        if self._wake.is_set() or now >= self._next_poll:
            self._wake.clear()
            self._next_poll = now + self.settings.poll_interval_s
            self._fill()
        self._resend_due(now)

    # -- connection -------------------------------------------------------------------------

    def _new_client(self) -> Any:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.gateway,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        settings = self.settings
        if settings.tls:
            client.tls_set(
                ca_certs=str(settings.ca_file),
                certfile=str(settings.cert_file),
                keyfile=str(settings.key_file),
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _connect(self) -> None:
        self._drop_connection()
        session = self._log.new_session()
        self._session = session
        self._session_started_at = self._clock()
        client = self._new_client()
        death = Death(self.gateway, session, self._session_started_at)
        client.will_set(
            self._topics["death"],
            sign(death, self._keys.signing_key, self._keys.key_id),
            qos=1,
            retain=True,
        )
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.settings.session_expiry_s
        self._client = client
        try:
            client.connect(
                self.settings.host,
                self.settings.port,
                keepalive=self.settings.keepalive_s,
                clean_start=False,
                properties=properties,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._connect_failed(f"{type(exc).__name__}: {exc}")
            return
        self._connack_deadline = time.monotonic() + 10.0
        self._lost = None

    def _connect_failed(self, why: str) -> None:
        """The connection attempt failed or the connection died: back off, then reconnect."""
        if self._connected:
            self._backoff = self.settings.reconnect_min_s  # it was up: retry soon
        else:
            self._counters.connect_failures += 1
        # The same failure again (the broker down for an hour) is logged now and then only.
        repeated = why == self._counters.last_error
        self._counters.last_error = why
        self._repeats = self._repeats + 1 if repeated else 0
        if self._repeats % 30 == 0:
            more = f" (x{self._repeats + 1})" if self._repeats else ""
            log.warning("uplink %s:%s: %s%s", self.settings.host, self.settings.port, why, more)
        self._drop_connection()
        self._next_connect = time.monotonic() + self._backoff * random.uniform(0.8, 1.2)
        self._backoff = min(self.settings.reconnect_max_s, self._backoff * 2)

    def _drop_connection(self) -> None:
        """Forget the client without a DISCONNECT (so the broker publishes our will)."""
        client, self._client = self._client, None
        self._connected = False
        self._central_online = False
        self._lost = None
        if client is not None:
            sock = client.socket()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()

    def _on_connect(self, client: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if client is not self._client:
            return
        if reason.is_failure:
            self._lost = f"broker refused: {reason}"
            return
        self._connected = True
        self._counters.connects += 1
        self._backoff = self.settings.reconnect_min_s
        log.info(
            "uplink connected to %s:%s as %s, session %s (broker session present: %s)",
            self.settings.host, self.settings.port, self.gateway, self._session,
            getattr(flags, "session_present", None),
        )  # fmt: skip
        for topic in (self._topics["ack"], self._topics["cmd"], CENTRAL_STATE):
            client.subscribe(topic, qos=1)
        # Everything not acknowledged is sent again, re-batched from the log: central is
        # idempotent, and a batch from the previous connection may be lost at the broker.
        acked = self._reader_().acked_seq()
        boundary = self._reader_().last_seq()
        self._plan = _Plan(boundary=boundary, backlog_cursor=acked, live_cursor=boundary)
        self._last_ack_progress = time.monotonic()
        self._publish_birth()
        self._wake.set()

    def _on_disconnect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if client is self._client and not self._stopping.is_set():
            self._lost = f"disconnected: {reason}"

    def _shutdown(self) -> None:
        client = self._client
        if client is not None and self._connected and self._session is not None:
            try:
                at = self._session_started_at or self._clock()
                death = Death(self.gateway, self._session, at)
                info = client.publish(
                    self._topics["death"],
                    sign(death, self._keys.signing_key, self._keys.key_id),
                    qos=1,
                    retain=True,
                )
                deadline = time.monotonic() + 2.0
                while not info.is_published() and time.monotonic() < deadline:
                    client.loop(timeout=0.05)
                client.disconnect()
                client.loop(timeout=0.1)
            except Exception:
                log.exception("uplink: clean disconnect failed")
        self._drop_connection()
        self._publish_health()
        if self._own_reader and self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- incoming ---------------------------------------------------------------------------

    def _on_message(self, client: Any, _u: Any, message: Any) -> None:
        if client is not self._client:
            return
        topic = message.topic
        try:
            if topic == self._topics["ack"]:
                self._on_ack(message.payload)
            elif topic == self._topics["cmd"]:
                self._on_command(message.payload)
            elif topic == CENTRAL_STATE:
                self._on_central_state(message.payload)
            else:
                raise ProtocolError(f"nothing expected on {topic!r}")
        except Exception as exc:  # a bad message never kills the loop
            self._counters.bad_messages += 1
            self._counters.last_error = f"bad message on {topic}: {exc}"
            log.warning("uplink: bad message on %s: %s", topic, exc)
        self._publish_health()

    def _on_central_state(self, payload: bytes) -> None:
        state = decode(payload, topic=CENTRAL_STATE)
        if not isinstance(state, CentralState):
            raise ProtocolError(f"a {state.TYPE} on the central state topic")
        was, self._central_online = self._central_online, state.online
        log.info("uplink: central is %s", "online" if state.online else "offline")
        if state.online and not was and self._plan is not None:
            # Central may have missed whatever was in flight while it was away.
            now = time.monotonic()
            for batch in self._plan.window.values():
                batch.due = min(batch.due, now)
            self._last_ack_progress = now
            self._wake.set()

    def _on_ack(self, payload: bytes) -> None:
        message = decode(payload, topic=self._topics["ack"])
        if isinstance(message, Nack):
            self._on_nack(message)
            return
        if not isinstance(message, Ack):
            raise ProtocolError(f"a {message.TYPE} on the ack topic")
        received = self._clock()
        # Central's clock vs ours (edge.md D5.1); includes one-way latency, ms on a LAN.
        offset = (received - message.received_at).total_seconds()
        self._clock_offset = Decimal(f"{offset:.3f}")
        acked = self._log.acknowledge(message.up_to_seq)
        self._counters.last_ack_seq = acked
        self._counters.last_ack_at = received.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        plan = self._plan
        if plan is None:
            return
        done = [key for key, batch in plan.window.items() if batch.seq_to <= acked]
        for key in done:
            del plan.window[key]
        if done or acked > plan.backlog_cursor:
            self._nack_reasons_logged.clear()
            now = time.monotonic()
            self._last_ack_progress = now
            for batch in plan.window.values():
                if batch.nacks == 0:
                    batch.due = max(batch.due, now + self._resend_delay(batch.attempts))
        plan.backlog_cursor = max(plan.backlog_cursor, acked)
        plan.live_cursor = max(plan.live_cursor, acked)
        self._wake.set()

    def _on_nack(self, nack: Nack) -> None:
        self._counters.nacks += 1
        self._counters.last_nack = {
            "reason": nack.reason,
            "detail": nack.detail[:200],
            "seq_from": nack.seq_from,
            "seq_to": nack.seq_to,
        }
        log.error(
            "central refused batch %s..%s: %s (%s)",
            nack.seq_from, nack.seq_to, nack.reason, nack.detail,
        )  # fmt: skip
        plan = self._plan
        batch = None
        if plan is not None and nack.seq_from is not None:
            batch = plan.window.get(nack.seq_from)
        # One event per reason until central accepts something again: the event is a record
        # itself, and an event per nacked batch would feed a loop of nacked event batches.
        first = nack.reason not in self._nack_reasons_logged
        self._nack_reasons_logged.add(nack.reason)
        if batch is not None:
            # Never resend unchanged in a tight loop: back off exponentially; a permanent
            # reason (signature, malformed, ...) waits much longer, raising an alarm.
            batch.nacks += 1
            base = self.settings.resend_timeout_s
            if nack.reason not in _TRANSIENT_NACKS:
                base *= 10
            batch.due = time.monotonic() + min(
                self.settings.max_backoff_s, base * 2 ** min(batch.nacks - 1, 16)
            )
        if first:
            with self._log.batch() as b:
                b.add_event(
                    None,
                    "uplink_nack",
                    {
                        "reason": nack.reason,
                        "detail": nack.detail[:500],
                        "seq_from": nack.seq_from,
                        "seq_to": nack.seq_to,
                        "session": nack.session,
                    },
                    self._clock(),
                )

    # -- sending ----------------------------------------------------------------------------

    def _reader_(self) -> LogReader:
        assert self._reader is not None
        return self._reader

    def _may_send_batches(self) -> bool:
        return self._connected and (
            self._central_online or not self.settings.require_central_online
        )

    def _fill(self) -> None:
        plan = self._plan
        if plan is None or not self._may_send_batches():
            return
        limit = self.settings.window
        reader = self._reader_()
        while len(plan.window) < limit:
            size = self._size
            if plan.replay is not None:
                self._send_replay_chunk(plan)
                continue
            backlog_left = plan.backlog_cursor < plan.boundary
            live_in_flight = sum(1 for b in plan.window.values() if b.live)
            # Live first, but never the whole window: the ack is contiguous, so live batches
            # are acknowledged only once the backlog below them is in.
            if not backlog_left or live_in_flight < limit - 1:
                batch = reader.next_batch(plan.live_cursor, size)
                if batch.records:
                    if not self._send(plan, batch.seq_from, batch.seq_to, batch.records, live=True):
                        continue
                    plan.live_cursor = batch.seq_to
                    if not backlog_left:
                        plan.backlog_cursor = plan.live_cursor
                    continue
                if not backlog_left and batch.seq_to >= batch.seq_from:
                    # Only holes at the tail (corrections, evictions): cover them anyway so
                    # central's contiguous watermark can pass.
                    self._send(plan, batch.seq_from, batch.seq_to, [], live=True)
                    plan.live_cursor = plan.backlog_cursor = batch.seq_to
                    continue
            if not backlog_left:
                return
            batch = reader.next_batch(plan.backlog_cursor, size)
            records = [r for r in batch.records if r.seq <= plan.boundary]
            if len(records) < len(batch.records) or batch.seq_to > plan.boundary:
                seq_to = plan.boundary
            else:
                seq_to = batch.seq_to
            if seq_to < batch.seq_from:
                plan.backlog_cursor = plan.boundary
                continue
            if not self._send(plan, batch.seq_from, seq_to, records, live=False):
                continue
            plan.backlog_cursor = seq_to
            if plan.live_cursor < plan.backlog_cursor:
                plan.live_cursor = plan.backlog_cursor

    def _batch_payload(
        self, seq_from: int, seq_to: int, records: list[Record], historical: bool
    ) -> bytes:
        assert self._session is not None
        message = RecordBatch(
            gateway=self.gateway,
            session=self._session,
            seq_from=seq_from,
            seq_to=seq_to,
            records=to_wire_records(records),
            historical=historical,
            sent_at=self._clock(),
        )
        return sign(message, self._keys.signing_key, self._keys.key_id)

    def _send(
        self, plan: _Plan, seq_from: int, seq_to: int, records: list[Record], *, live: bool
    ) -> bool:
        """Publish one batch and put it in the window; False when it was too big to sign
        (then the batch size is halved and the caller reads again)."""
        try:
            payload = self._batch_payload(seq_from, seq_to, records, historical=not live)
        except LocalProtocolError as exc:
            if len(records) <= 1:
                raise
            self._size = max(1, len(records) // 2)
            log.warning("uplink: %s; batch size now %d", exc, self._size)
            return False
        self._client.publish(self._topics["batch"], payload, qos=1)
        plan.window[seq_from] = InFlight(
            seq_from=seq_from,
            seq_to=seq_to,
            records=len(records),
            historical=not live,
            live=live,
            payload=payload,
            due=time.monotonic() + self.settings.resend_timeout_s,
        )
        self._counters.batches_sent += 1
        self._counters.records_sent += len(records)
        return True

    def _resend_delay(self, attempts: int) -> float:
        factor = float(2 ** min(max(attempts - 1, 0), 6))
        return min(self.settings.max_backoff_s, self.settings.resend_timeout_s * factor)

    def _resend_due(self, now: float) -> None:
        plan = self._plan
        if plan is None or not self._may_send_batches():
            return
        for batch in sorted(plan.window.values(), key=lambda b: b.seq_from):
            if batch.due > now:
                continue
            # The same bytes: the same range, the same session and sent_at (idempotent).
            self._client.publish(self._topics["batch"], batch.payload, qos=1)
            batch.attempts += 1
            batch.due = now + self._resend_delay(batch.attempts)
            self._counters.resends += 1
            log.info(
                "uplink: no ack for %s..%s, sent again (attempt %d)",
                batch.seq_from, batch.seq_to, batch.attempts,
            )  # fmt: skip

    def _send_replay_chunk(self, plan: _Plan) -> None:
        """One chunk of a resync below the ack mark (already released, so not windowed)."""
        replay = plan.replay
        assert replay is not None
        if replay.cursor >= replay.end:
            plan.replay = None
            return
        seq_from = replay.cursor + 1
        seq_to = min(replay.end, replay.cursor + self._size)
        records = self._reader_().records_between(seq_from, seq_to)
        payload = self._batch_payload(seq_from, seq_to, records, historical=True)
        self._client.publish(self._topics["batch"], payload, qos=1)
        self._counters.batches_sent += 1
        self._counters.records_sent += len(records)
        replay.cursor = seq_to
        if replay.cursor >= replay.end:
            plan.replay = None

    # -- birth ------------------------------------------------------------------------------

    def _birth(self) -> Birth:
        facts = self._birth_facts()
        reader = self._reader_()
        now = self._clock()
        age = reader.oldest_unacked_age(now)
        last = reader.last_seq()
        acked = min(reader.acked_seq(), last)
        offset = facts.clock_offset_s if facts.clock_offset_s is not None else self._clock_offset
        assert self._session is not None
        return Birth(
            gateway=self.gateway,
            session=self._session,
            software_version=facts.software_version,
            config_hash=facts.config_hash,
            archive_hash=facts.archive_hash,
            meter_count=facts.meter_count if facts.meter_count is not None else len(facts.meters),
            meters=facts.meters,
            log_depth=reader.depth(),
            oldest_unacked_s=None if age is None else max(0, int(age.total_seconds())),
            last_seq=last,
            acked_seq=acked,
            clock_offset_s=offset,
            boot_reason=facts.boot_reason,
            sent_at=now,
            tasks=facts.tasks,
        )

    def _publish_birth(self) -> None:
        payload = sign(self._birth(), self._keys.signing_key, self._keys.key_id)
        self._client.publish(self._topics["birth"], payload, qos=1, retain=True)
        self._counters.births += 1

    # -- commands ---------------------------------------------------------------------------

    def _on_command(self, payload: bytes) -> None:
        try:
            command = self._guard.check(payload, topic=self._topics["cmd"])
        except CommandRefusedError as exc:
            self._counters.refused_commands += 1
            log.warning("uplink: %s", exc)
            if exc.command is not None:
                self._answer(exc.command.id, exc.status, {"reason": exc.reason, "error": str(exc)})
            return
        self._save_command_memory()
        self._counters.commands_run += 1
        log.info("uplink: command %s %s", command.kind, command.id)
        try:
            self._run_command(command)
        except Exception as exc:
            log.exception("uplink: command %s failed", command.id)
            self._answer(command.id, "failed", {"error": f"{type(exc).__name__}: {exc}"})

    def _run_command(self, command: Command) -> None:
        args = command.args
        plan = self._plan
        if isinstance(args, RebirthArgs):
            self._publish_birth()
            self._answer(command.id, "ok", {"session": self._session})
        elif isinstance(args, ResyncArgs):
            assert plan is not None
            reader = self._reader_()
            acked, last = reader.acked_seq(), reader.last_seq()
            from_seq = max(1, args.from_seq)
            # Below the ack mark: served from retention as a replay; everything above it
            # is sent again from scratch (the window restarts at the ack mark).
            plan.replay = _Replay(from_seq - 1, acked) if from_seq <= acked else None
            plan.window.clear()
            plan.backlog_cursor = acked
            plan.live_cursor = max(plan.boundary, acked)
            self._wake.set()
            self._answer(
                command.id,
                "ok",
                {"from_seq": from_seq, "acked_seq": acked, "last_seq": last},
            )
        elif isinstance(args, ResendArgs):
            self._resend_readings(command, args)
        elif isinstance(args, ReadNowArgs | BackfillArgs | ClockSyncArgs):
            self._run_collector(command)
        else:  # pragma: no cover - the wire knows no other kinds
            self._answer(command.id, "refused", {"reason": f"unknown kind {command.kind}"})

    def _resend_readings(self, command: Command, args: ResendArgs) -> None:
        if not self._may_send_batches():
            self._answer(command.id, "failed", {"reason": "central is offline"})
            return
        reader = self._reader_()
        found = sorted(
            reader.find_readings(args.meter, args.obis, args.start, args.end),
            key=lambda r: r.seq,
        )
        acked = reader.acked_seq()
        # Acknowledged records go again under their own seqs, in batches whose covered
        # range central already holds. Unacknowledged ones are on their way anyway (they
        # are in the normal stream), and a batch of them would claim the seqs in between.
        done: list[ReadingRecord] = [r for r in found if r.seq <= acked]
        batches = 0
        size = self.settings.batch_size
        for start in range(0, len(done), size):
            chunk: list[Record] = list(done[start : start + size])
            payload = self._batch_payload(chunk[0].seq, chunk[-1].seq, chunk, historical=True)
            self._client.publish(self._topics["batch"], payload, qos=1)
            batches += 1
            self._counters.batches_sent += 1
            self._counters.records_sent += len(chunk)
        self._answer(
            command.id,
            "ok",
            {
                "queued_records": len(done),
                "batches": batches,
                "pending_records": len(found) - len(done),
            },
        )

    def _run_collector(self, command: Command) -> None:
        collector = self.collector
        args = command.args
        name = {"read_now": "read_now", "backfill": "backfill", "clock_sync": "clock_check"}[
            command.kind
        ]
        method = getattr(collector, name, None) if collector is not None else None
        if method is None:
            self._answer(command.id, "failed", {"reason": "not available"})
            return

        def job() -> None:
            try:
                if isinstance(args, ReadNowArgs):
                    value = method(args.meter, args.what)
                elif isinstance(args, BackfillArgs):
                    value = method(args.days, args.meters)
                else:
                    assert isinstance(args, ClockSyncArgs)
                    value = method(args.meters)
                detail = {"result": plain_detail(value)}
                status = "ok"
            except Exception as exc:
                detail = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
                status = "failed"
            self._results.put(self._result(command.id, status, detail))
            self._wake.set()

        self._jobs.submit(job)

    def _result(self, command_id: uuid.UUID, status: str, detail: dict[str, Any]) -> CommandResult:
        safe = plain_detail(detail)
        try:
            return CommandResult(command_id, self.gateway, status, safe, None, self._clock())
        except ProtocolError as exc:  # too big a detail: say so rather than nothing
            return CommandResult(
                command_id, self.gateway, status, {"detail_dropped": str(exc)[:200]}, None,
                self._clock(),
            )  # fmt: skip

    def _answer(self, command_id: uuid.UUID, status: str, detail: dict[str, Any]) -> None:
        self._publish_result(self._result(command_id, status, detail))

    def _publish_result(self, result: CommandResult) -> None:
        payload = sign(result, self._keys.signing_key, self._keys.key_id)
        if self._client is None:
            log.warning("uplink: result of %s lost: not connected", result.id)
            return
        self._client.publish(self._topics["result"], payload, qos=1)

    def _load_command_memory(self) -> list[tuple[uuid.UUID, datetime, datetime]]:
        path = self.settings.command_memory_file
        if path is None or not Path(path).exists():
            return []
        try:
            items = json.loads(Path(path).read_text(encoding="utf-8"))
            return [
                (uuid.UUID(i), datetime.fromisoformat(a), datetime.fromisoformat(b))
                for i, a, b in items
            ]
        except (OSError, ValueError, TypeError) as exc:
            log.error("uplink: command memory %s unreadable (%s); starting empty", path, exc)
            return []

    def _save_command_memory(self) -> None:
        path = self.settings.command_memory_file
        if path is None:
            return
        items = [[str(i), a.isoformat(), b.isoformat()] for i, a, b in self._guard.remembered()]
        target = Path(path)
        temporary = target.with_name(target.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(items, handle)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(target)

    # -- health -----------------------------------------------------------------------------

    def _snapshot(self) -> UplinkHealth:
        c = self._counters
        plan = self._plan
        window = sorted(plan.window.values(), key=lambda b: b.seq_from) if plan else []
        return UplinkHealth(
            connected=self._connected,
            central_online=self._central_online,
            session=self._session,
            in_flight=len(window),
            in_flight_seqs=[[b.seq_from, b.seq_to] for b in window],
            last_ack_seq=c.last_ack_seq,
            last_ack_at=c.last_ack_at,
            batches_sent=c.batches_sent,
            records_sent=c.records_sent,
            resends=c.resends,
            nacks=c.nacks,
            last_nack=None if c.last_nack is None else dict(c.last_nack),
            commands_run=c.commands_run,
            refused_commands=c.refused_commands,
            bad_messages=c.bad_messages,
            connects=c.connects,
            connect_failures=c.connect_failures,
            births=c.births,
            clock_offset_s=None if self._clock_offset is None else str(self._clock_offset),
            last_error=c.last_error,
        )

    def _publish_health(self) -> None:
        snapshot = self._snapshot()
        with self._state_lock:
            self._health = snapshot

    def _log_path(self) -> Path:
        return self._log.path
