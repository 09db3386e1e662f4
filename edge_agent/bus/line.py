"""One RS-485 line as the bus master sees it: bytes out, parser events in, with deadlines.

:class:`Line` wraps pyserial's ``serial_for_url`` so one class serves a device path
(``/dev/ttyUSB0``), a pty from the simulator, an RS-485-to-Ethernet converter
(``socket://host:port``) and ``rfc2217://``. The port is opened non-blocking
(``timeout=0``) and waits happen in ``select`` on the port's file descriptor: changing
``Serial.timeout`` per read would re-apply termios on every call (a syscall, and on some
ptys an EINVAL), and a fixed poll interval would add its period to every reply.

Exceptions::

    OSError
     └── LineError       the port cannot be opened, read or written (pyserial's
                         SerialException and OSError are translated here, at one boundary)

Only a :class:`LineError` means "reopen the port". A silent meter is a ``None`` from
:meth:`Line.read_event`, never an error: a port is never closed because one meter is quiet
(pymodbus #2431, ``../shared/reference/edge.md`` b.7).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import serial
import serial.rs485

try:  # the plain device/pty port class; absent on Windows
    from serial.serialposix import Serial as _PosixSerial
except ImportError:  # pragma: no cover
    _PosixSerial = None

from edge_agent.config import BusConfig
from shared_protocol.stream import NEED_DATA, Discarded

__all__ = ["FrameSize", "Line", "LineError", "LineEvent", "ReplyHint", "StreamParserLike"]

logger = logging.getLogger(__name__)

_READ_CHUNK: Final = 4096
_WRITE_TIMEOUT: Final = 5.0
# Without a file descriptor (rfc2217://) we poll; 2 ms is below one character at 4800 baud.
_POLL_INTERVAL: Final = 0.002
_PARITY: Final = {"E": serial.PARITY_EVEN, "N": serial.PARITY_NONE, "O": serial.PARITY_ODD}
_STOP_BITS: Final = {1: serial.STOPBITS_ONE, 2: serial.STOPBITS_TWO}
_PREAMBLE: Final = 0xFE  # 645 / 698 wake-up bytes before the 68
_DLT645_MIN: Final = 12  # 68 A0..A5 68 C L CS 16 with L = 0
_DLT645_MAX_L: Final = 200
_DLT698_MIN: Final = 10  # lower bound until the length field has arrived
_MODBUS_MIN: Final = 5  # an exception response: unit, function, code, CRC


#: A frame's size as far as its first bytes tell: ``(total, exact)``. ``total`` counts the
#: preamble; when ``exact`` is False it is a lower bound (the length field is not in yet).
FrameSize = tuple[int, bool]


def _dlt645_length(head: bytes) -> FrameSize | None:
    """How many bytes the 645 frame starting at ``head`` (preamble included) will have."""
    i, n = 0, len(head)
    while i < n and head[i] == _PREAMBLE:
        i += 1
    if i < n and head[i] != 0x68:
        return None
    if n - i < 10:
        return i + _DLT645_MIN, False
    length = head[i + 9]
    return None if length > _DLT645_MAX_L else (i + _DLT645_MIN + length, True)


def _dlt698_length(head: bytes) -> FrameSize | None:
    """How many bytes the 698 frame starting at ``head`` will have: 68, L (14 bits), …, 16."""
    i, n = 0, len(head)
    while i < n and head[i] == _PREAMBLE:
        i += 1
    if i < n and head[i] != 0x68:
        return None
    if n - i < 3:
        return i + _DLT698_MIN, False
    return i + 2 + (head[i + 1] | (head[i + 2] & 0x3F) << 8), True


def _modbus_length(head: bytes) -> FrameSize | None:
    """How many bytes the Modbus RTU response starting at ``head`` will have."""
    from shared_protocol.errors import ProtocolError
    from shared_protocol.modbus.framing import Direction, expected_length

    try:
        length = expected_length(head, Direction.RESPONSE)
    except ProtocolError:
        return None
    return (_MODBUS_MIN, False) if length is None else (length, True)


_FRAME_LENGTHS: Final[dict[str, Callable[[bytes], FrameSize | None]]] = {
    "dlt645": _dlt645_length,
    "dlt698.45": _dlt698_length,
    "modbus-rtu": _modbus_length,
}


def frame_length(family: str) -> Callable[[bytes], FrameSize | None] | None:
    """How to tell, from a reply's first bytes, how long it will be (``None``: unknown
    family). The callable gives ``(total, exact)`` — total bytes, a lower bound until the
    length is on the wire — or ``None`` when the bytes start no frame of the family."""
    return _FRAME_LENGTHS.get(family)


def preamble_length(data: bytes | bytearray) -> int:
    """How many 645/698 wake-up bytes (FE) ``data`` starts with."""
    i = 0
    while i < len(data) and data[i] == _PREAMBLE:
        i += 1
    return i


@dataclass
class ReplyHint:
    """What the master expects of the reply, and what the line learns while reading it.

    ``size``: the whole reply in bytes (preamble included) when the same request was
    answered before — used until the reply's own length field is in, so one sleep can
    cover the whole frame. ``pace``: seconds per byte the sender actually achieves (at
    least the character time; slower when a meter leaves gaps between bytes); the line
    raises it when a sleep ended before the bytes it waited for were in.
    """

    size: int | None = None
    pace: float = 0.0


#: A sender slower than this many character times a byte is pausing, not slow: its pace
#: estimate stops there.
_MAX_PACE: Final = 1.25
#: After a sleep that found every byte it waited for, the pace estimate drifts back toward
#: the character time by this fraction of the difference (one slow reply must not make
#: every later sleep too long).
_PACE_DECAY: Final = 1 / 16
#: Bytes a frame must have brought before its pace counts.
_PACE_SAMPLE: Final = 8


def _remaining(
    window: bytearray,
    buffered: int,
    frame_length: Callable[[bytes], FrameSize | None],
    expected: int | None,
) -> int:
    """Bytes still to come of the frame being received (0: unknown, do not sleep).

    ``window`` holds the bytes this read received; the parser holds the last ``buffered``
    of them (it dropped the FE preamble before them, which the frame's size counts).
    """
    if buffered > len(window):
        return 0
    start = len(window) - buffered
    while start and window[start - 1] == _PREAMBLE:
        start -= 1
    if start == len(window):
        return 0
    head = bytes(window[start:])
    sized = frame_length(head)
    if sized is None:
        return 0
    total, exact = sized
    if not exact and expected is not None:
        total = max(total, expected)
    return max(total - len(head), 0)


def _new_pace(
    pace: float, char_time: float, short: bool, left: int, received: int, took: float
) -> float:
    """The sender's pace after a sleep: ``short`` when it found fewer bytes than it waited
    for, with ``left`` of the frame still to come, ``received`` bytes in ``took`` seconds
    since the first.

    Short with the frame not complete: the bytes come slower than assumed (a simulator, a
    meter that leaves gaps between bytes); the estimate moves a quarter of the way to the
    frame's own pace so far — measured over the whole frame (at least
    :data:`_PACE_SAMPLE` bytes), never over the few bytes of one sleep, and at most
    :data:`_MAX_PACE` character times. Complete: the estimate drifts back toward the
    character time (a frame shorter than expected says nothing about pace).
    """
    if short and left > 0:
        if received < _PACE_SAMPLE:
            return pace
        seen = min(took / (received - 1), _MAX_PACE * char_time)
        return max(pace + (seen - pace) / 4, char_time)
    if left == 0 and not short:
        return pace - (pace - char_time) * _PACE_DECAY
    return pace


class LineError(OSError):
    """The port failed (open, read or write): the master reopens it with backoff."""


class StreamParserLike(Protocol):
    """What the line needs of a protocol's stream parser (645, 698 and Modbus all fit)."""

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> Any: ...

    @property
    def buffered(self) -> int: ...


@dataclass(frozen=True)
class LineEvent:
    """A frame (or a ``Discarded`` run of bytes) and when its last byte arrived."""

    event: object
    at: float  # time.monotonic()
    first_byte_at: float  # when the first byte of the read window arrived
    # an inter-byte gap ended a partial frame: the caller starts a fresh parser
    parser_spent: bool = False


class Line:
    """A serial line from a pyserial URL, opened with the bus's character format.

    ``on_bytes(direction, data)`` is called with every byte run sent (``"tx"``) and
    received (``"rx"``) so the master can count and trace them.
    """

    def __init__(
        self,
        config: BusConfig,
        *,
        on_bytes: Callable[[str, bytes], None] | None = None,
        open_port: Callable[..., Any] = serial.serial_for_url,
    ) -> None:
        self.config = config
        self._open_port = open_port
        self._port: Any = None
        self._fd: int | None = None
        self._raw_fd: int | None = None  # a device/pty fd we read with os.read
        self._on_bytes = on_bytes or (lambda direction, data: None)
        self.rs485_unsupported = 0  # times kernel RS-485 mode was asked for and refused
        self.echo_pending = b""

    # ------------------------------------------------------------ open / close

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        config = self.config
        try:
            port = self._open_port(
                config.port,
                baudrate=config.baud,
                parity=_PARITY[config.parity],
                bytesize=config.data_bits,
                stopbits=_STOP_BITS[config.stop_bits],
                timeout=0,
                write_timeout=_WRITE_TIMEOUT,
                exclusive=True,
            )
        except TypeError:
            # URL handlers (socket://, rfc2217://) do not take ``exclusive``
            try:
                port = self._open_port(
                    config.port,
                    baudrate=config.baud,
                    parity=_PARITY[config.parity],
                    bytesize=config.data_bits,
                    stopbits=_STOP_BITS[config.stop_bits],
                    timeout=0,
                    write_timeout=_WRITE_TIMEOUT,
                )
            except (serial.SerialException, OSError, ValueError) as exc:
                raise LineError(f"bus {config.name}: cannot open {config.port}: {exc}") from exc
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LineError(f"bus {config.name}: cannot open {config.port}: {exc}") from exc
        self._port = port
        try:
            self._fd = port.fileno()
        except (AttributeError, NotImplementedError, OSError, serial.SerialException):
            self._fd = None
        # pyserial's read on a device or pty is select + os.read; do the os.read ourselves
        # (socket:// and rfc2217:// keep pyserial's read: they have their own protocol)
        posix = _PosixSerial is not None and isinstance(port, _PosixSerial)
        self._raw_fd = self._fd if posix else None
        if config.rs485_kernel_mode:
            self._enable_rs485(port)

    def _enable_rs485(self, port: Any) -> None:
        """Kernel RS-485 mode (TIOCSRS485) drives DE from the UART, with exact timing.

        A pty, a socket or an adapter without it refuses; we count that and go on, since
        many USB adapters switch direction in hardware anyway.
        """
        try:
            port.rs485_mode = serial.rs485.RS485Settings(
                rts_level_for_tx=True,
                rts_level_for_rx=False,
                delay_before_tx=0.0,
                delay_before_rx=0.0,
            )
        except Exception:  # termios.error, ioctl errors: the types differ per platform
            self.rs485_unsupported += 1
            with contextlib.suppress(Exception):
                port.rs485_mode = None
            logger.warning(
                "bus %s: %s does not support kernel RS-485 mode; using it as a plain port",
                self.config.name,
                self.config.port,
            )

    def close(self) -> None:
        port, self._port, self._fd, self._raw_fd = self._port, None, None, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()

    # ------------------------------------------------------------ bytes

    def write(self, data: bytes) -> float:
        """Send ``data``; returns when its last bit should have left the wire (monotonic)."""
        port = self._require()
        try:
            if self._raw_fd is not None:
                self._write_fd(self._raw_fd, data)
            else:
                port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise LineError(f"bus {self.config.name}: write failed: {exc}") from exc
        self._on_bytes("tx", data)
        if self.config.echo:
            self.echo_pending = data
        return time.monotonic() + len(data) * self.config.char_time_ms / 1000

    def wait_quiet(self, until: float) -> bytes:
        """Wait until ``until`` (monotonic) and drop whatever arrives meanwhile or waits
        already (a late reply, noise); returns those bytes. On a port with a file
        descriptor one ``select`` does both the wait and the look (no separate read)."""
        fd = self._fd
        if fd is None:
            left = until - time.monotonic()
            if left > 0:
                time.sleep(left)
            return self.flush_input()
        stale = bytearray()
        while True:
            left = max(until - time.monotonic(), 0.0)
            try:
                ready, _, _ = select.select([fd], [], [], left)
            except (OSError, ValueError) as exc:
                raise LineError(f"bus {self.config.name}: select failed: {exc}") from exc
            if not ready:
                break
            data = self._read_now()
            if not data:
                raise LineError(f"bus {self.config.name}: {self.config.port} closed")
            stale += data
        self.echo_pending = b""
        return bytes(stale)

    def flush_input(self) -> bytes:
        """Drop whatever is waiting (a late reply, noise) before we send; returns it."""
        stale = bytearray()
        while True:
            chunk = self._read_now()
            if not chunk:
                break
            stale += chunk
        self.echo_pending = b""
        return bytes(stale)

    def read_event(
        self,
        parser: StreamParserLike,
        deadline: float,
        inter_byte_timeout: float,
        frame_length: Callable[[bytes], FrameSize | None] | None = None,
        hint: ReplyHint | None = None,
    ) -> LineEvent | None:
        """The next parser event (a frame or ``Discarded``) before ``deadline``, else None.

        Once bytes of a frame are in, a gap longer than ``inter_byte_timeout`` ends it: the
        partial frame is handed back as ``Discarded`` (a truncated reply) instead of waiting
        for bytes that will never come.

        ``frame_length`` (from :func:`frame_length`) tells how long the frame being received
        will be, and ``hint.size`` how long the same request's reply was last time (used
        until the frame's own length field is in). Then, instead of waking for every byte
        (at 2 400 baud they arrive one at a time, 4.6 ms apart), the line sleeps out the
        remaining bytes' time at ``hint.pace`` and reads them in one go: typically one
        wake-up for the first byte and one for the rest. A sleep may run past the
        inter-byte deadline; what it brings back tells whether the bytes kept coming:
        ``k`` bytes after a sleep are taken to have arrived at ``pace`` after the previous
        read, so a reply that stopped part way is still cut — when the sleep ends, at most
        the rest of the expected frame's time later than a byte-by-byte reader would.
        """
        first_byte_at = 0.0
        last_byte_at = 0.0
        char_time = self.config.char_time_ms / 1000
        pace = max(hint.pace, char_time) if hint is not None else char_time
        expected = hint.size if hint is not None else None
        # bytes received in this call: the frame being received is their tail (the parser
        # only ever drops bytes from the front); a parser already holding older bytes
        # gets no hint
        window: bytearray | None = None
        if frame_length is not None and not parser.buffered:
            window = bytearray()
        try:
            while True:
                event = parser.next_event()
                if event is not NEED_DATA:
                    return LineEvent(event, time.monotonic(), first_byte_at)
                now = time.monotonic()
                wait_until = deadline
                buffered = parser.buffered
                if buffered and last_byte_at:
                    gap_end = last_byte_at + inter_byte_timeout
                    if now >= gap_end:
                        return self._cut(parser, now, first_byte_at)
                    wait_until = min(deadline, gap_end)
                if now >= deadline:
                    if buffered and last_byte_at:
                        return self._cut(parser, now, first_byte_at)
                    return None
                if window is not None and frame_length is not None and last_byte_at:
                    remaining = _remaining(window, buffered, frame_length, expected)
                    hold_until = min(last_byte_at + remaining * pace, deadline)
                    if remaining >= 2 and hold_until - now > char_time:
                        time.sleep(hold_until - now)
                        data = self._read_now()
                        if data:
                            arrived = time.monotonic()
                            got = len(data)
                            data = self._strip_echo(data)
                            if data:
                                window += data
                                parser.receive_data(data)
                            left = _remaining(window, parser.buffered, frame_length, None)
                            pace = _new_pace(
                                pace, char_time, got < remaining, left, len(window),
                                arrived - first_byte_at,
                            )  # fmt: skip
                            last_byte_at = min(arrived, last_byte_at + got * pace)
                        continue
                data = self._read_wait(wait_until - now)
                if data:
                    arrived = time.monotonic()
                    first_byte_at = first_byte_at or arrived
                    last_byte_at = arrived
                    data = self._strip_echo(data)
                    if data:
                        if window is not None:
                            window += data
                        parser.receive_data(data)
        finally:
            if hint is not None:
                hint.pace = pace

    # ------------------------------------------------------------ internals

    def _cut(self, parser: StreamParserLike, now: float, first_byte_at: float) -> LineEvent:
        """End a partial frame after an inter-byte gap."""
        line_idle = getattr(parser, "line_idle", None)
        if callable(line_idle):  # Modbus: t3.5 ends a frame; the parser flushes it itself
            line_idle()
            event = parser.next_event()
            if event is not NEED_DATA:
                return LineEvent(event, now, first_byte_at)
        reason = "inter-byte timeout: the frame stopped part way"
        return LineEvent(Discarded(b"", reason), now, first_byte_at, parser_spent=True)

    def _strip_echo(self, data: bytes) -> bytes:
        """Half-duplex adapters hand our own bytes back; drop them where they match."""
        pending = self.echo_pending
        if not pending:
            return data
        common = 0
        limit = min(len(pending), len(data))
        while common < limit and pending[common] == data[common]:
            common += 1
        if common == limit:
            self.echo_pending = pending[common:]
            self._on_bytes("echo", data[:common])
            return data[common:]
        # not our echo after all: the line carries something else; stop stripping
        self.echo_pending = b""
        return data

    def _require(self) -> Any:
        if self._port is None:
            raise LineError(f"bus {self.config.name}: the port is not open")
        return self._port

    def _write_fd(self, fd: int, data: bytes) -> None:
        """pyserial's posix write without its select after every write: ``os.write`` until
        all is out, waiting for room only when the tty buffer is full (same 5 s limit)."""
        view = memoryview(data)
        give_up = time.monotonic() + _WRITE_TIMEOUT
        while view:
            with contextlib.suppress(BlockingIOError):
                view = view[os.write(fd, view) :]
            if view:
                left = give_up - time.monotonic()
                if left <= 0:
                    raise serial.SerialTimeoutException("write timeout")
                select.select([], [fd], [], left)

    def _read_now(self) -> bytes:
        fd = self._raw_fd
        if fd is not None:
            try:
                data = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                return b""
            except OSError as exc:
                raise LineError(f"bus {self.config.name}: read failed: {exc}") from exc
        else:
            port = self._require()
            try:
                data = bytes(port.read(_READ_CHUNK))
            except (serial.SerialException, OSError) as exc:
                raise LineError(f"bus {self.config.name}: read failed: {exc}") from exc
        if data:
            self._on_bytes("rx", data)
        return data

    def _read_wait(self, timeout: float) -> bytes:
        """Bytes that arrive within ``timeout`` seconds (whatever came first), else b""."""
        timeout = max(timeout, 0.0)
        if self._fd is not None:
            try:
                ready, _, _ = select.select([self._fd], [], [], timeout)
            except (OSError, ValueError) as exc:
                raise LineError(f"bus {self.config.name}: select failed: {exc}") from exc
            if not ready:
                return b""
            data = self._read_now()
            if not data:
                # readable with nothing to read: the peer hung up (TCP) or the device went away
                raise LineError(f"bus {self.config.name}: {self.config.port} closed")
            return data
        end = time.monotonic() + timeout
        while True:
            data = self._read_now()
            if data or time.monotonic() >= end:
                return data
            time.sleep(_POLL_INTERVAL)
