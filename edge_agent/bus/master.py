"""The bus master: the one owner of an RS-485 line, and the queue every meter read waits in.

One :class:`BusMaster` per line runs one worker thread that does all the line's blocking
I/O; everybody else hands it :class:`Transaction` s through :meth:`BusMaster.submit` and
gets a :class:`concurrent.futures.Future` of a :class:`TransactionResult`. A thread (not
asyncio) because pyserial's URL handlers (``socket://``, ``rfc2217://``) are blocking
objects, the line is strictly one request at a time anyway, and a thread sleeping in
``select`` costs nothing between frames; the rest of the agent may be asyncio and wraps
the future (``asyncio.wrap_future``). :meth:`BusMaster.transact` (submit and wait, the
drivers' way in) runs the transaction in the calling thread instead when the line is free
and nothing is queued — still one transaction at a time — which saves two thread
hand-offs per transaction (edge.md D8: CPU per transaction).

What happens to one transaction, in order:

1. **Queue**: priority classes ``ON_DEMAND`` > ``SCHEDULED`` > ``BACKFILL``, FIFO within one.
2. **Quarantine**: a meter that failed ``quarantine_after`` times in a row is probed at
   most once per probe period (doubling up to ``max_probe_interval``); in between its
   transactions end at once as ``QUARANTINED`` without touching the line. The first
   answer ends the quarantine. So a dead meter costs at most one timeout per period.
3. **Silence**: wait until the line has been quiet for ``pre_send_silence_ms`` after our
   last frame and ``turnaround_ms`` after the last received byte (pymodbus enforces
   neither; ``../shared/reference/edge.md`` D4.2).
4. **Stale flush**: bytes still waiting (a late reply, noise) are dropped and counted.
5. **Send**, then read frames until one matches (:mod:`edge_agent.bus.framing`) or the
   adaptive deadline passes; wrong-address and stale replies are counted and skipped;
   our own echo is stripped when the bus has ``echo = true``.
6. **Retry** (bounded by ``retries``): after a garbled reply always; after silence only
   when the meter is in good standing (answered before, last transaction fine). A meter
   that is already suspect gets one attempt — retrying a dead meter is what makes
   pymodbus-style masters spend retries × items on it.

The port is closed only when the port itself fails (:class:`~edge_agent.bus.line.LineError`),
then reopened with backoff; never because a meter is silent.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, Final

from edge_agent.bus.framing import ListenOnly, Match, Outcome, ReplyMatcher, Verdict, new_parser
from edge_agent.bus.line import Line, LineError, ReplyHint, frame_length, preamble_length
from edge_agent.config import BusConfig
from shared_protocol.stream import Discarded

__all__ = [
    "BusCounters",
    "BusMaster",
    "FailedExchange",
    "MeterHealth",
    "Priority",
    "TimingPolicy",
    "TraceEntry",
    "Transaction",
    "TransactionResult",
]

logger = logging.getLogger(__name__)

_EWMA_ALPHA: Final = 0.2
#: Reply sizes remembered per request shape (a few per meter model and data item).
_MAX_REPLY_SHAPES: Final = 512


def _shape(transaction: Transaction) -> tuple[str, str, int]:
    """What makes replies the same size: the family, what is asked (the label names the
    data item, not the meter) and the request's length."""
    family = transaction.matcher.family if transaction.matcher is not None else ""
    return family, transaction.label, len(transaction.request)


_CHECKSUM_WORDS: Final = ("checksum", "crc", "fcs", "hcs")


class Priority(IntEnum):
    """Queue classes; a lower value is served first."""

    ON_DEMAND = 0  # a technician or central asked: answer now
    SCHEDULED = 1  # today's tasks
    BACKFILL = 2  # 补抄 of past days


@dataclass(frozen=True)
class Transaction:
    """One request and how to recognise its reply.

    ``meter``: the archive key (quarantine and timeouts are per meter); ``""`` for a
    broadcast. ``matcher`` ``None`` means nothing comes back (645 broadcast time sync).
    ``reply_bytes``: the longest reply expected, so its wire time extends the deadline.
    """

    meter: str
    request: bytes
    matcher: ReplyMatcher | None
    label: str = ""
    reply_bytes: int = 64
    retries: int | None = None  # None: the bus's configured retries


@dataclass(frozen=True)
class TransactionResult:
    """How a transaction went; ``reply`` is the decoded reply when ``outcome`` has one."""

    transaction: Transaction
    outcome: Outcome
    reply: object = None
    detail: str = ""
    code: int | None = None  # 645 error bits, 698 DAR, Modbus exception code
    attempts: int = 0
    tx_hex: tuple[str, ...] = ()  # one per attempt
    rx_hex: str = ""  # every byte received while the transaction was on the line
    started_at: datetime | None = None  # when it reached the line (UTC)
    queued_s: float = 0.0
    duration_s: float = 0.0
    latency_s: float | None = None  # end of our frame → first reply byte
    wrong_address: int = 0
    noise_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def answered(self) -> bool:
        """The meter answered (even if it refused): it is alive."""
        return self.outcome in (Outcome.OK, Outcome.ABNORMAL, Outcome.DAR, Outcome.EXCEPTION)


@dataclass
class BusCounters:
    """Per-bus counters for ``edge-agent bus stats`` (monotonic since start)."""

    transactions: int = 0
    tx_frames: int = 0
    rx_frames: int = 0
    tx_bytes: int = 0
    rx_bytes: int = 0
    timeouts: int = 0
    retries: int = 0
    checksum_errors: int = 0
    bad_frames: int = 0  # all Discarded runs (checksum errors included)
    noise_bytes: int = 0
    wrong_address: int = 0
    stale_replies: int = 0
    stale_flushed_bytes: int = 0
    echo_bytes: int = 0
    abnormal_replies: int = 0
    quarantine_skips: int = 0
    quarantined_meters: int = 0  # now
    io_errors: int = 0
    reopens: int = 0
    busy_s: float = 0.0  # time the line spent on transactions
    unkept_exchanges: int = 0  # failed exchanges dropped before the log took their frames

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TraceEntry:
    """One run of raw bytes on the line, for ``edge-agent bus trace``."""

    direction: str  # "tx" | "rx"
    hex: str
    at: datetime  # UTC
    monotonic: float
    meter: str


@dataclass(frozen=True)
class FailedExchange:
    """An exchange that went wrong (no answer, garbled bytes, a refusal, a retry, noise or
    a wrong-address reply on the way), with its raw bytes: what the durable log keeps of
    the line (edge-storage.md, raw frames). Successful exchanges stay in the trace ring."""

    at: datetime  # UTC, when it reached the line
    meter: str
    note: str  # "outcome: detail (n attempts)"
    tx: tuple[bytes, ...]  # one request per attempt
    rx: bytes  # everything received meanwhile
    duration_s: float


#: Failed exchanges a master holds until the collector's next commit takes them.
FAILED_KEPT: Final = 1024


@dataclass(frozen=True)
class TimingPolicy:
    """Bounds of the adaptive per-meter response timeout and the quarantine rhythm.

    The timeout for a meter is ``clamp(2 × (ewma + 3 × deviation), min, max)`` of its
    observed response latency, plus the expected reply's wire time; a meter never heard
    gets ``max`` (the bus's ``response_timeout_ms`` unless given). 200 ms / 2 s bound the
    field figure (645 meters answer in 20-500 ms; edge.md D4.5).
    """

    min_response_timeout: float = 0.2
    max_response_timeout: float | None = None
    quarantine_after: int = 2  # consecutive failures (State Grid firmware: 2 per round)
    probe_interval: float = 300.0
    max_probe_interval: float = 3600.0
    reopen_backoff: float = 0.1
    max_reopen_backoff: float = 30.0


@dataclass
class MeterHealth:
    """What the master knows about one meter's behaviour on the line."""

    answered: int = 0
    failures: int = 0  # consecutive
    quarantined: bool = False
    next_probe: float = 0.0
    probe_interval: float = 0.0
    latency_ewma: float | None = None
    latency_dev: float = 0.0
    last_ok: datetime | None = None
    preamble: int | None = None  # FE bytes before its last clean reply (None: not seen)
    pace: float = 0.0  # seconds per byte its replies arrive at (0: the character time)

    def timeout(self, policy: TimingPolicy, ceiling: float) -> float:
        if self.latency_ewma is None:
            return ceiling
        estimate = 2 * (self.latency_ewma + 3 * self.latency_dev)
        return min(max(estimate, policy.min_response_timeout), ceiling)

    def observe(self, latency: float) -> None:
        if self.latency_ewma is None:
            self.latency_ewma, self.latency_dev = latency, latency / 2
            return
        error = latency - self.latency_ewma
        self.latency_ewma += _EWMA_ALPHA * error
        self.latency_dev += _EWMA_ALPHA * (abs(error) - self.latency_dev)


#: The future of a transaction run in its caller's thread (never resolved: nobody waits).
_NO_FUTURE: Final[Future[TransactionResult]] = Future()


@dataclass(order=True)
class _Queued:
    priority: int
    sequence: int
    transaction: Transaction = field(compare=False)
    future: Future[TransactionResult] = field(compare=False)
    queued_at: float = field(compare=False)


class BusMaster:
    """The single owner of one line; see the module docstring.

    Usage::

        master = BusMaster(bus_config)
        master.start()
        result = master.submit(transaction, Priority.SCHEDULED).result()
        master.stop()
    """

    def __init__(
        self,
        config: BusConfig,
        *,
        policy: TimingPolicy | None = None,
        trace_size: int = 256,
        line: Line | None = None,
    ) -> None:
        self.config = config
        self.policy = policy or TimingPolicy()
        self.counters = BusCounters()
        # raw runs as (direction, bytes, wall clock, monotonic, meter); formatted into
        # TraceEntry only when asked for (:meth:`trace`), not on every read
        self._trace: deque[tuple[str, bytes, float, float, str]] = deque(maxlen=trace_size)
        self._failed_exchanges: deque[FailedExchange] = deque()
        self._failed_since = 0.0  # monotonic time the oldest waiting one was kept
        self._health: dict[str, MeterHealth] = {}
        self._line = line or Line(config, on_bytes=self._on_bytes)
        if line is not None:
            line._on_bytes = self._on_bytes
        self._queue: list[_Queued] = []
        self._sequence = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._busy = False  # a transaction is on the line (the worker's or a caller's)
        self._thread: threading.Thread | None = None
        self._quiet_until = 0.0
        self._reopen_at = 0.0
        self._reopen_backoff = self.policy.reopen_backoff
        self._current_meter = ""
        self._rx_log = bytearray()
        self._new_config: BusConfig | None = None
        # reply size (without preamble) by request shape: how long to sleep for a reply
        # before its length field is in (edge-bus.md, "Reading a reply in few wake-ups")
        self._reply_sizes: dict[tuple[str, str, int], int] = {}
        self._preamble = 0  # FE bytes before the line's last clean reply

    # ------------------------------------------------------------ lifecycle

    @property
    def name(self) -> str:
        return self.config.name

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name=f"bus-{self.config.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the transaction on the line, cancel the queue, close the port."""
        with self._wake:
            self._stopping = True
            pending, self._queue = self._queue, []
            self._wake.notify_all()
        for item in pending:
            item.future.cancel()
        give_up = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._wake:  # a caller's own transaction (transact) finishes too
            while self._busy and time.monotonic() < give_up:
                self._wake.wait(give_up - time.monotonic())
        self._line.close()

    def __enter__(self) -> BusMaster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------ the API

    def submit(
        self, transaction: Transaction, priority: Priority = Priority.SCHEDULED
    ) -> Future[TransactionResult]:
        """Queue ``transaction``; the future resolves when it has been on the line."""
        future: Future[TransactionResult] = Future()
        item = _Queued(int(priority), next(self._sequence), transaction, future, time.monotonic())
        with self._wake:
            if self._stopping:
                raise RuntimeError(f"bus {self.name} is stopped")
            heapq.heappush(self._queue, item)
            self._wake.notify()
        return future

    def transact(
        self, transaction: Transaction, priority: Priority = Priority.SCHEDULED
    ) -> TransactionResult:
        """:meth:`submit` and wait (the drivers' way in).

        When the line is free and nobody is queued, the transaction runs in the calling
        thread, under the same one-at-a-time rule: two thread hand-offs (to the worker and
        back) cost more CPU than the rest of a transaction's work. A request queued
        meanwhile waits for it as it would for the worker's, and is served by the worker.
        """
        with self._wake:
            if self._stopping:
                raise RuntimeError(f"bus {self.name} is stopped")
            inline = self._thread is not None and not self._busy and not self._queue
            if inline:
                self._busy = True
                new_config, self._new_config = self._new_config, None
        if not inline:
            return self.submit(transaction, priority).result()
        try:
            if new_config is not None:
                self._apply_config(new_config)
            item = _Queued(int(priority), next(self._sequence), transaction, _NO_FUTURE, 0.0)
            item.queued_at = time.monotonic()
            return self._serve(item)
        finally:
            with self._wake:
                self._busy = False
                if self._queue or self._stopping:
                    self._wake.notify_all()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def health(self, meter: str) -> MeterHealth:
        health = self._health.get(meter)
        if health is None:
            health = self._health[meter] = MeterHealth()
        return health

    def is_quarantined(self, meter: str) -> bool:
        health = self._health.get(meter)
        return bool(health and health.quarantined)

    def release(self, meter: str) -> None:
        """Forget a meter's quarantine (the archive changed it, a technician asked)."""
        health = self._health.pop(meter, None)
        if health and health.quarantined:
            self.counters.quarantined_meters -= 1

    def take_failed(self) -> list[FailedExchange]:
        """The failed exchanges since the last call, oldest first (thread-safe): the
        collector writes their frames in its next commit."""
        taken: list[FailedExchange] = []
        while True:
            try:
                taken.append(self._failed_exchanges.popleft())
            except IndexError:
                return taken

    def failed_waiting(self) -> tuple[int, float]:
        """How many failed exchanges wait for the log, and for how many seconds the oldest
        has (0 when none)."""
        waiting = len(self._failed_exchanges)
        return waiting, time.monotonic() - self._failed_since if waiting else 0.0

    def _keep_failed(self, exchange: FailedExchange) -> None:
        if not self._failed_exchanges:
            self._failed_since = time.monotonic()
        if len(self._failed_exchanges) >= FAILED_KEPT:
            self._failed_exchanges.popleft()
            self.counters.unkept_exchanges += 1
        self._failed_exchanges.append(exchange)

    def trace(self, meter: str | None = None) -> list[TraceEntry]:
        """The recent raw frames, oldest first (only ``meter``'s when given)."""
        entries = list(self._trace)
        return [
            TraceEntry(
                direction, data.hex(" ").upper(), datetime.fromtimestamp(wall, UTC), mono, who
            )
            for direction, data, wall, mono, who in entries
            if meter is None or who == meter
        ]

    def reconfigure(self, config: BusConfig) -> None:
        """Apply a changed bus config without a restart: timing at once (next
        transaction), port settings (``line_settings``) by a reopen in the worker."""
        with self._wake:
            self._new_config = config
            self._wake.notify()

    def detect_echo(self, request: bytes, family: str) -> bool:
        """Whether the line hands our own bytes back (a half-duplex adapter without echo
        suppression): send ``request`` to an address nobody has and look at what returns.
        """
        echo_before = self.counters.echo_bytes
        transaction = Transaction("", request, ListenOnly(family), label="echo probe", retries=0)
        result = self.transact(transaction, Priority.ON_DEMAND)
        if self.counters.echo_bytes > echo_before:
            return True  # echo = true already, and the line stripped it
        sent = request.hex(" ").upper()
        return bool(result.rx_hex) and result.rx_hex.startswith(sent)

    def stats(self) -> dict[str, Any]:
        out = self.counters.as_dict()
        out["bus"] = self.name
        out["queue_depth"] = self.queue_depth
        out["rs485_mode_refused"] = self._line.rs485_unsupported
        return out

    # ------------------------------------------------------------ the worker

    def _run(self) -> None:
        while True:
            # Sit out the line's silence first: the next request (the reply's reader
            # submits it within a millisecond) is then taken without a second wake-up.
            self._wait_quiet()
            with self._wake:
                while (not self._queue or self._busy) and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                item = heapq.heappop(self._queue)
                new_config, self._new_config = self._new_config, None
                self._busy = True
            try:
                if new_config is not None:
                    self._apply_config(new_config)
                if not item.future.set_running_or_notify_cancel():
                    continue
                try:
                    result = self._serve(item)
                except Exception as exc:  # a bug must not kill the line's only owner
                    logger.exception("bus %s: transaction %s failed", self.name, item.transaction)
                    item.future.set_exception(exc)
                    continue
            finally:
                with self._wake:
                    self._busy = False
            item.future.set_result(result)

    def _serve(self, item: _Queued) -> TransactionResult:
        transaction = item.transaction
        started = time.monotonic()
        queued_s = started - item.queued_at
        self.counters.transactions += 1
        health = self.health(transaction.meter) if transaction.meter else None
        if health is not None and health.quarantined and started < health.next_probe:
            self.counters.quarantine_skips += 1
            return TransactionResult(
                transaction, Outcome.QUARANTINED, detail="quarantined", queued_s=queued_s
            )
        if not self._ensure_open():
            return TransactionResult(
                transaction, Outcome.IO_ERROR, detail="port not open", queued_s=queued_s
            )
        try:
            result = self._attempts(transaction, health, queued_s)
        except LineError as exc:
            self._line_failed(exc)
            result = TransactionResult(
                transaction, Outcome.IO_ERROR, detail=str(exc), queued_s=queued_s
            )
        self.counters.busy_s += time.monotonic() - started
        return result

    def _attempts(
        self, transaction: Transaction, health: MeterHealth | None, queued_s: float
    ) -> TransactionResult:
        config = self.config
        retries = config.retries if transaction.retries is None else transaction.retries
        good_standing = health is None or (
            health.answered > 0 and health.failures == 0 and not health.quarantined
        )
        self._current_meter = transaction.meter
        self._rx_log = bytearray()
        started_at = datetime.now(UTC)
        start = time.monotonic()
        tx_hex: list[str] = []
        wrong = noise = 0
        flushed = False
        attempt = 0
        final: Match | None = None
        latency: float | None = None
        last_outcome = Outcome.TIMEOUT
        while True:
            attempt += 1
            stale = self._line.wait_quiet(self._quiet_until)
            if stale:
                self.counters.stale_flushed_bytes += len(stale)
                flushed = True  # the log holds bytes that are not this reply's
            sent_end = self._line.write(transaction.request)
            self.counters.tx_frames += 1
            tx_hex.append(transaction.request.hex(" ").upper())
            if transaction.matcher is None:
                self._quiet_until = sent_end + config.pre_send_silence_ms / 1000
                return TransactionResult(
                    transaction,
                    Outcome.SENT,
                    attempts=attempt,
                    tx_hex=tuple(tx_hex),
                    started_at=started_at,
                    queued_s=queued_s,
                    duration_s=time.monotonic() - start,
                )
            match, first_byte, w, n = self._listen(transaction, health, sent_end)
            wrong += w
            noise += n
            if match is not None and match.outcome is not Outcome.BAD_FRAME:
                final = match
                if first_byte:
                    latency = max(first_byte - sent_end, 0.0)
                break
            last_outcome = Outcome.BAD_FRAME if (match is not None or n) else Outcome.TIMEOUT
            if last_outcome is Outcome.TIMEOUT:
                self.counters.timeouts += 1
            may_retry = attempt <= retries and (last_outcome is Outcome.BAD_FRAME or good_standing)
            if not may_retry:
                break
            self.counters.retries += 1
        self._current_meter = ""
        received = bytes(self._rx_log)
        rx_hex = received.hex(" ").upper()
        duration = time.monotonic() - start
        clean = attempt == 1 and not (wrong or noise or flushed or config.echo)
        if final is None or final.outcome is not Outcome.OK or not clean:
            outcome = last_outcome if final is None else final.outcome
            detail = "no reply" if last_outcome is Outcome.TIMEOUT else "only garbled replies"
            detail = detail if final is None else final.detail
            extras = [f"{attempt} attempts"] if attempt > 1 else []
            extras += [f"{noise} noise bytes"] if noise else []
            extras += [f"{wrong} wrong-address replies"] if wrong else []
            note = f"{outcome.value}: {detail}" + (f" ({', '.join(extras)})" if extras else "")
            requests = (transaction.request,) * attempt
            self._keep_failed(
                FailedExchange(started_at, transaction.meter, note, requests, received, duration)
            )
        if final is None:
            if health is not None:
                self._failed(transaction.meter, health)
            return TransactionResult(
                transaction,
                last_outcome,
                detail="no reply" if last_outcome is Outcome.TIMEOUT else "only garbled replies",
                attempts=attempt,
                tx_hex=tuple(tx_hex),
                rx_hex=rx_hex,
                started_at=started_at,
                queued_s=queued_s,
                duration_s=duration,
                wrong_address=wrong,
                noise_bytes=noise,
            )
        if health is not None:
            self._answered(health, latency)
        if clean and final.outcome is Outcome.OK:
            self._learn_size(transaction, health)
        if final.outcome is Outcome.ABNORMAL:
            self.counters.abnormal_replies += 1
        return TransactionResult(
            transaction,
            final.outcome,
            reply=final.reply,
            detail=final.detail,
            code=final.code,
            attempts=attempt,
            tx_hex=tuple(tx_hex),
            rx_hex=rx_hex,
            started_at=started_at,
            queued_s=queued_s,
            duration_s=duration,
            latency_s=latency,
            wrong_address=wrong,
            noise_bytes=noise,
        )

    def _listen(
        self, transaction: Transaction, health: MeterHealth | None, sent_end: float
    ) -> tuple[Match | None, float, int, int]:
        """Read until the reply or the deadline: (match, first byte time, wrong, noise)."""
        config = self.config
        ceiling = self.policy.max_response_timeout or config.response_timeout_ms / 1000
        timeout = health.timeout(self.policy, ceiling) if health is not None else ceiling
        timeout += transaction.reply_bytes * config.char_time_ms / 1000
        deadline = sent_end + timeout
        inter_byte = max(config.inter_byte_timeout_ms / 1000, 2 * config.char_time_ms / 1000)
        assert transaction.matcher is not None
        matcher = transaction.matcher
        parser = new_parser(matcher.family)
        length_of = frame_length(matcher.family)
        hint: ReplyHint | None = None
        if length_of is not None:
            size = self._reply_sizes.get(_shape(transaction))
            if size is not None:
                known = health.preamble if health is not None else None
                size += self._preamble if known is None else known
            hint = ReplyHint(size, health.pace if health is not None else 0.0)
        wrong = noise = 0
        first_byte = 0.0
        bad: Match | None = None
        try:
            while True:
                read = self._line.read_event(parser, deadline, inter_byte, length_of, hint)
                if read is None:
                    return bad, first_byte, wrong, noise
                first_byte = first_byte or read.first_byte_at
                event = read.event
                if isinstance(event, Discarded):
                    size = len(event.data) or parser.buffered
                    noise += size
                    self.counters.bad_frames += 1
                    self.counters.noise_bytes += size
                    if any(word in event.reason.lower() for word in _CHECKSUM_WORDS):
                        self.counters.checksum_errors += 1
                        # a whole frame came and was corrupted: most likely our meter's
                        # reply, and nothing else is coming; retry soon instead of idling
                        deadline = min(deadline, time.monotonic() + 2 * inter_byte)
                    if read.parser_spent:
                        parser = new_parser(matcher.family)
                    continue
                self.counters.rx_frames += 1
                match = matcher.classify(event)
                if match.verdict is Verdict.REPLY:
                    if match.outcome is Outcome.BAD_FRAME:
                        self.counters.bad_frames += 1
                        bad = match
                        continue
                    return match, first_byte, wrong, noise
                if match.verdict is Verdict.WRONG_ADDRESS:
                    wrong += 1
                    self.counters.wrong_address += 1
                elif match.verdict is Verdict.STALE:
                    self.counters.stale_replies += 1
        finally:
            gap = max(config.turnaround_ms, config.pre_send_silence_ms) / 1000
            self._quiet_until = time.monotonic() + gap
            if health is not None and hint is not None:
                health.pace = hint.pace

    def _learn_size(self, transaction: Transaction, health: MeterHealth | None) -> None:
        """Remember how long a clean reply to this kind of request was (its preamble per
        meter): the next one can then be read in one sleep from its first byte."""
        received = self._rx_log
        preamble = preamble_length(received)
        self._preamble = preamble  # a meter not heard yet likely shares its line's vendor
        if health is not None:
            health.preamble = preamble
        if len(self._reply_sizes) >= _MAX_REPLY_SHAPES:
            self._reply_sizes.clear()  # many distinct requests: start over, never grow
        self._reply_sizes[_shape(transaction)] = len(received) - preamble

    # ------------------------------------------------------------ meter health

    def _answered(self, health: MeterHealth, latency: float | None) -> None:
        health.answered += 1
        health.failures = 0
        health.last_ok = datetime.now(UTC)
        if latency is not None:
            health.observe(latency)
        if health.quarantined:
            health.quarantined = False
            health.probe_interval = 0.0
            self.counters.quarantined_meters -= 1

    def _failed(self, meter: str, health: MeterHealth) -> None:
        health.failures += 1
        now = time.monotonic()
        policy = self.policy
        if health.quarantined:
            health.probe_interval = min(health.probe_interval * 2, policy.max_probe_interval)
            health.next_probe = now + health.probe_interval
        elif health.failures >= policy.quarantine_after:
            health.quarantined = True
            health.probe_interval = policy.probe_interval
            health.next_probe = now + health.probe_interval
            self.counters.quarantined_meters += 1
            logger.info(
                "bus %s: meter %s quarantined after %d failures; probing every %.0f s",
                self.name,
                meter,
                health.failures,
                health.probe_interval,
            )

    # ------------------------------------------------------------ the port

    def _apply_config(self, config: BusConfig) -> None:
        reopen = config.line_settings != self.config.line_settings
        self.config = config
        self._line.config = config
        if reopen and self._line.is_open:
            logger.info("bus %s: port settings changed; reopening %s", self.name, config.port)
            self._line.close()

    def _ensure_open(self) -> bool:
        if self._line.is_open:
            return True
        now = time.monotonic()
        if now < self._reopen_at:
            time.sleep(self._reopen_at - now)
        try:
            self._line.open()
        except LineError as exc:
            self.counters.io_errors += 1
            logger.warning("bus %s: %s; retrying in %.1f s", self.name, exc, self._reopen_backoff)
            self._reopen_at = time.monotonic() + self._reopen_backoff
            self._reopen_backoff = min(self._reopen_backoff * 2, self.policy.max_reopen_backoff)
            return False
        if self.counters.tx_frames or self.counters.io_errors:
            self.counters.reopens += 1
        self._reopen_backoff = self.policy.reopen_backoff
        return True

    def _line_failed(self, exc: LineError) -> None:
        self.counters.io_errors += 1
        logger.warning("bus %s: %s; reopening the port", self.name, exc)
        self._line.close()
        self._reopen_at = time.monotonic() + self._reopen_backoff

    def _wait_quiet(self) -> None:
        silence = self._quiet_until - time.monotonic()
        if silence > 0:
            time.sleep(silence)

    def _on_bytes(self, direction: str, data: bytes) -> None:
        if direction == "echo":
            self.counters.echo_bytes += len(data)
            return
        if direction == "tx":
            self.counters.tx_bytes += len(data)
        else:
            self.counters.rx_bytes += len(data)
            self._rx_log += data
        self._trace.append((direction, data, time.time(), time.monotonic(), self._current_meter))
