"""One RS-485 line with many meters on it, sans I/O: master bytes in, line bytes out.

The bus frames the master's bytes (any chunking) with the line protocol's stream parser,
hands every complete request to every meter on the line, and schedules whatever comes
back. Only the addressed meter answers (the meters decide that, as real ones do); when two
or more answer at once — an AA wildcard with several meters — their bytes collide and the
master receives a garbled overlay, as on a real line.

Time is a number the caller passes in (``now``, seconds on any monotonic clock). With
wire-time emulation (:class:`~firmware_sim.wiretime.WireTime`) every byte occupies the
line for 11 bits at the baud rate: a request is complete when its last byte has been
clocked in, a reply starts after turnaround + the meter's latency (+ a late fault's
delay), and each reply byte is due when its stop bit ends. The transport sleeps until
:meth:`Bus.next_due` and writes :meth:`Bus.take_due`; tests read the same numbers
without sleeping. Without wire-time everything is due at once.

Collisions, following what the line physically does: where two drivers send the same bit
it comes through; where they disagree the receiver sees either (a seeded coin per bit).
With wire-time, bytes collide when their byte times overlap — two replies, or a new
request sent while a reply is still on the wire (the meters then hear a garbled request
too). Without wire-time the line is infinitely fast, so only replies to the same request
collide.

Nothing the line or a meter does raises out of :meth:`Bus.feed`: bad frames are counted,
and a meter that raises is counted and stays silent for that request. Its exception is
kept for the transport to log (:meth:`Bus.take_failures`); the core does no logging.

Usage::

    bus = Bus("dlt645", [meter_a, meter_b])
    bus.feed(request_bytes, now)
    line_bytes = bus.take_due(now)
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from firmware_sim.device import Device
from firmware_sim.faults import FaultPlan, FaultState
from firmware_sim.wiretime import Latency, WireTime
from shared_protocol import dlt645, dlt698, modbus
from shared_protocol.stream import NEED_DATA, Discarded

__all__ = [
    "LINE_FAMILIES",
    "Bus",
    "BusCounters",
    "DeviceFailure",
    "Transmission",
    "line_family",
]

LINE_FAMILIES: Final[dict[str, str]] = {
    # Both 645 editions share the link frame, so they share a line.
    "dlt645-2007": "dlt645",
    "dlt645-1997": "dlt645",
    "dlt698.45": "dlt698.45",
    "modbus-rtu": "modbus-rtu",
}
_LINES: Final = frozenset(LINE_FAMILIES.values())
# Float slack when comparing due times computed along different sums.
_EPSILON: Final = 1e-9
_FEED_SLICE: Final = 256

Parser = dlt645.StreamParser | dlt698.StreamParser | modbus.StreamParser


def line_family(protocol: str) -> str:
    """The line a device protocol (or a line name) runs on: ``dlt645-1997`` → ``dlt645``."""
    if protocol in _LINES:
        return protocol
    try:
        return LINE_FAMILIES[protocol]
    except KeyError:
        choices = ", ".join(sorted(set(LINE_FAMILIES) | _LINES))
        raise ValueError(f"protocol {protocol!r} is not one of {choices}") from None


@dataclass
class BusCounters:
    """What happened on the line, for the run summary and the tests."""

    requests: int = 0  # complete request frames the meters saw
    replies: int = 0  # reply frames put on the line (a collision counts each meter's)
    silences: int = 0  # requests nobody answered
    collisions: int = 0  # events where two drivers were on the line at once
    faults_injected: int = 0  # replies changed or suppressed by a fault plan
    device_errors: int = 0  # meters that raised instead of answering (a simulator bug)
    bad_frames: int = 0  # runs of master bytes the parser discarded
    discarded_bytes: int = 0


@dataclass(frozen=True)
class Transmission:
    """Something a driver put on the line: a meter's reply or the master's echo."""

    kind: str  # "reply" | "echo"
    data: bytes
    start: float  # first start bit
    end: float  # last stop bit
    device_id: str = ""
    faults: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceFailure:
    """A meter raised while answering; the transport logs it with the traceback."""

    device_id: str
    request: bytes
    error: Exception


@dataclass(order=True)
class _Pending:
    due: float
    order: int
    data: bytes = field(compare=False)


@dataclass
class _Attached:
    device: Device
    faults: FaultState | None
    latency: Latency | None
    rng: random.Random


class Bus:
    """Meters on one line; see the module docstring."""

    def __init__(
        self,
        line: str,
        devices: Iterable[Device] = (),
        *,
        wire: WireTime | None = None,
        faults: FaultPlan | None = None,
        seed: int = 0,
    ) -> None:
        self.line = line_family(line)
        self.wire = wire
        self.seed = seed
        self.counters = BusCounters()
        self._faults = faults.start() if faults is not None else None
        self._devices: list[_Attached] = []
        self._collision_rng = random.Random(f"{seed}:collision")
        self._order = itertools.count()
        self._pending: list[_Pending] = []
        self._failures: list[DeviceFailure] = []
        self._master_end = float("-inf")
        self._parser = self._new_parser()
        for device in devices:
            self.attach(device)

    # ------------------------------------------------------------ configuration

    @classmethod
    def from_dict(
        cls, spec: Mapping[str, Any], devices: Iterable[Device] = (), where: str = "bus"
    ) -> Bus:
        """A bus from a config table; errors name the field (``bus.wire_time.baud: …``).

        ``{"line": "dlt645", "seed": 1, "wire_time": {...}, "faults": {...}}`` — see
        :meth:`WireTime.from_dict` and :meth:`FaultPlan.from_dict` for the sub-tables.
        Per-meter plans go to :meth:`attach`.
        """
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where}: expected a table, got {type(spec).__name__}")
        unknown = set(spec) - {"line", "seed", "wire_time", "faults"}
        if unknown:
            raise ValueError(
                f"{where}.{sorted(unknown)[0]}: unknown field (use line, seed, wire_time, faults)"
            )
        if "line" not in spec:
            raise ValueError(f"{where}.line: missing (dlt645, dlt698.45 or modbus-rtu)")
        try:
            line = line_family(str(spec["line"]))
        except ValueError as exc:
            raise ValueError(f"{where}.line: {exc}") from None
        seed = spec.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"{where}.seed: expected an integer, got {seed!r}")
        wire = spec.get("wire_time")
        faults = spec.get("faults")
        return cls(
            line,
            devices,
            wire=WireTime.from_dict(wire, f"{where}.wire_time") if wire is not None else None,
            faults=FaultPlan.from_dict(faults, f"{where}.faults") if faults is not None else None,
            seed=seed,
        )

    @property
    def devices(self) -> tuple[Device, ...]:
        return tuple(attached.device for attached in self._devices)

    def attach(
        self, device: Device, *, faults: FaultPlan | None = None, latency: Latency | None = None
    ) -> None:
        """Hang ``device`` on the line, with its own fault plan and latency if given."""
        family = line_family(device.protocol)
        if family != self.line:
            raise ValueError(
                f"meter {device.device_id} speaks {device.protocol}, which cannot share"
                f" a {self.line} line"
            )
        rng = random.Random(f"{self.seed}:latency:{device.device_id}")
        state = faults.start() if faults is not None else None
        self._devices.append(_Attached(device, state, latency, rng))

    def reset_line(self) -> None:
        """Forget half-received bytes and unsent output (a new master connected)."""
        self._parser = self._new_parser()
        self._pending.clear()
        self._master_end = float("-inf")

    # ------------------------------------------------------------ master → line

    def feed(self, data: bytes, now: float = 0.0) -> list[Transmission]:
        """Bytes the master wrote at ``now``; returns what the line will carry in reply."""
        if not data:
            return []
        start = max(now, self._master_end)
        self._master_end = start + (self.wire.transmit_time(len(data)) if self.wire else 0.0)
        sent: list[Transmission] = []
        heard = data
        if self.wire:
            heard, collided = self._place(start, data, self.wire.byte_time, emit=self.wire.echo)
            self.counters.collisions += collided
            if self.wire.echo:
                sent.append(Transmission("echo", data, start, self._master_end))
        # Feed in slices so a flood of noise never exceeds a parser's buffer bound.
        for offset in range(0, len(heard), _FEED_SLICE):
            self._parser.receive_data(heard[offset : offset + _FEED_SLICE])
            sent += self._drain()
        return sent

    def line_idle(self) -> None:
        """The master's line has been quiet long enough that a partial frame is dead.

        Modbus: t3.5 ends any frame. 645/698 meters drop their receive buffer after an
        inter-byte timeout in the same way, so a stray byte cannot wedge the line.
        """
        if self.line == "modbus-rtu":
            assert isinstance(self._parser, modbus.StreamParser)
            self._parser.line_idle()
            self._drain()
        elif self._parser.buffered:
            self._drain()
            leftover = self._parser.buffered
            if leftover:
                self.counters.bad_frames += 1
                self.counters.discarded_bytes += leftover
                self._parser = self._new_parser()

    # ------------------------------------------------------------ line → master

    def next_due(self) -> float | None:
        """When the next byte for the master is due, or ``None`` when nothing is pending."""
        return self._pending[0].due if self._pending else None

    def take_due(self, now: float) -> bytes:
        """The bytes whose last bit has arrived by ``now``, in line order."""
        pending = self._pending
        count = 0
        while count < len(pending) and pending[count].due <= now + _EPSILON:
            count += 1
        if not count:
            return b""
        out = b"".join(item.data for item in pending[:count])
        del pending[:count]
        return out

    def take_failures(self) -> list[DeviceFailure]:
        """Meter exceptions since the last call (for the transport to log)."""
        failures, self._failures = self._failures, []
        return failures

    # ------------------------------------------------------------ internals

    def _new_parser(self) -> Parser:
        if self.line == "dlt645":
            return dlt645.StreamParser()
        if self.line == "dlt698.45":
            return dlt698.StreamParser()
        return modbus.StreamParser(modbus.Direction.REQUEST)

    def _drain(self) -> list[Transmission]:
        sent: list[Transmission] = []
        while True:
            event = self._parser.next_event()
            if event is NEED_DATA:
                return sent
            if isinstance(event, Discarded):
                self.counters.bad_frames += 1
                self.counters.discarded_bytes += len(event.data)
                continue
            sent += self._dispatch(_raw_request(event))

    def _dispatch(self, request: bytes) -> list[Transmission]:
        self.counters.requests += 1
        request_end = self._master_end
        replies: list[Transmission] = []
        for attached in self._devices:
            answer = self._ask(attached, request)
            if answer is not None:
                timed = self._timed(attached, request, answer, request_end)
                if timed.data:
                    replies.append(timed)
        if not replies:
            self.counters.silences += 1
            return []
        self.counters.replies += len(replies)
        if self.wire:
            collided = False
            for timed in replies:
                collided |= self._place(timed.start, timed.data, self.wire.byte_time, emit=True)[1]
            self.counters.collisions += collided
        else:
            self._place_instant(replies)
        return replies

    def _ask(self, attached: _Attached, request: bytes) -> bytes | None:
        try:
            reply = attached.device.respond(request)
        except Exception as exc:  # a meter that raises is a simulator bug: count, stay silent
            self.counters.device_errors += 1
            self._failures.append(DeviceFailure(attached.device.device_id, request, exc))
            return None
        return bytes(reply) if reply is not None else None

    def _timed(
        self, attached: _Attached, request: bytes, reply: bytes, request_end: float
    ) -> Transmission:
        data: bytes | None = reply
        delay = 0.0
        applied: tuple[str, ...] = ()
        for state in (attached.faults, self._faults):
            if state is None or data is None:
                continue
            outcome = state.apply(self.line, request, data)
            data, delay, applied = outcome.reply, delay + outcome.delay, applied + outcome.applied
        if applied:
            self.counters.faults_injected += 1
        start = request_end + delay
        end = start
        if self.wire:
            latency = attached.latency or self.wire.latency
            start += self.wire.turnaround + latency.draw(attached.rng)
            end = start + self.wire.transmit_time(len(data or b""))
        return Transmission("reply", data or b"", start, end, attached.device.device_id, applied)

    def _place(
        self, start: float, data: bytes, byte_time: float, *, emit: bool
    ) -> tuple[bytes, bool]:
        """Put ``data`` on the line from ``start``; return what a receiver hears, and
        whether it collided with anything.

        A byte whose time slot overlaps a pending byte collides with it: both become the
        overlay. Non-colliding bytes join the output only when ``emit`` (a reply, an echo);
        the master's bytes without echo only matter where they spoil a reply.
        """
        heard = bytearray(data)
        pending = self._pending
        collided = False
        for index, value in enumerate(data):
            due = start + (index + 1) * byte_time
            hit = self._overlapping(due, byte_time)
            if hit is not None:
                garbled = _overlay(pending[hit].data[0], value, self._collision_rng)
                pending[hit] = _Pending(pending[hit].due, pending[hit].order, bytes([garbled]))
                heard[index] = garbled
                collided = True
            elif emit:
                bisect.insort(pending, _Pending(due, next(self._order), bytes([value])))
        return bytes(heard), collided

    def _overlapping(self, due: float, byte_time: float) -> int | None:
        """Index of the pending byte sharing (most of) this byte's time slot."""
        pending = self._pending
        position = bisect.bisect_left(pending, _Pending(due - byte_time + _EPSILON, -1, b""))
        best: int | None = None
        best_gap = byte_time
        for index in range(position, len(pending)):
            gap = abs(pending[index].due - due)
            if pending[index].due >= due + byte_time - _EPSILON:
                break
            if gap < best_gap - _EPSILON:
                best, best_gap = index, gap
        return best

    def _place_instant(self, replies: list[Transmission]) -> None:
        """No wire-time: replies due at the same instant collide byte by byte."""
        by_time: dict[float, list[bytes]] = {}
        for reply in replies:
            by_time.setdefault(reply.start, []).append(reply.data)
        for due, group in sorted(by_time.items()):
            data = group[0]
            if len(group) > 1:
                self.counters.collisions += 1
                for other in group[1:]:
                    data = _overlay_bytes(data, other, self._collision_rng)
            bisect.insort(self._pending, _Pending(due, next(self._order), data))


def _raw_request(frame: dlt645.Frame | dlt698.Frame | modbus.Frame) -> bytes:
    """The request's bytes as sent (checks re-encode identically; FE preamble dropped)."""
    if isinstance(frame, dlt645.Frame):
        return dlt645.encode_frame(frame, preamble=0)
    if isinstance(frame, dlt698.Frame):
        return dlt698.encode_frame(frame)
    return frame.raw


def _overlay(first: int, second: int, rng: random.Random) -> int:
    """Two drivers on one byte slot: agreeing bits pass, disagreeing bits are a coin flip."""
    disagree = first ^ second
    return (first & ~disagree & 0xFF) | (rng.getrandbits(8) & disagree)


def _overlay_bytes(first: bytes, second: bytes, rng: random.Random) -> bytes:
    longer, shorter = (first, second) if len(first) >= len(second) else (second, first)
    mixed = bytes(_overlay(a, b, rng) for a, b in zip(longer, shorter, strict=False))
    return mixed + longer[len(shorter) :]
