"""The DL/T 645 link frame: address, control code, +33H data field, checksum, FE preamble.

One frame layout serves 645-2007 and 645-1997 alike::

    [FE FE FE FE]  68  A0 A1 A2 A3 A4 A5  68  C  L  DATA(L bytes, each +33H)  CS  16

:class:`Frame` holds the address as printed on the nameplate (most significant digit
first), the control byte split into its bits, and the data field *after* removing the
+33H offset. :func:`encode_frame` and :func:`decode_frame` convert between that and bytes.
Meaning (which function, which DI) lives in :mod:`.control` and :mod:`.messages`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

from shared_protocol.errors import (
    ChecksumError,
    FrameTooLargeError,
    LocalProtocolError,
    MalformedFrameError,
)

__all__ = [
    "BROADCAST_ADDRESS",
    "DEFAULT_REQUEST_PREAMBLE",
    "MAX_DATA_LENGTH",
    "MAX_FRAME_SIZE",
    "WILDCARD_ADDRESS",
    "Control",
    "Frame",
    "address_from_wire",
    "address_to_wire",
    "checksum",
    "count_preamble",
    "decode_frame",
    "encode_frame",
    "normalize_address",
    "parse_frame_at",
]

START: Final = 0x68
END: Final = 0x16
PREAMBLE_BYTE: Final = 0xFE
DATA_OFFSET: Final = 0x33
HEADER_SIZE: Final = 10  # 68 + 6 address bytes + 68 + C + L
# The standard allows L ≤ 200 for reads and ≤ 50 for writes (coloradmin.cn/o/1939562.html;
# xgbt/dlt645-go client2007.go:17-18). We accept up to 200 in either direction: anything
# longer is a corrupted L byte, and waiting for 255 bytes would stall the bus.
MAX_DATA_LENGTH: Final = 200
# Masters send 4×FE to wake the receiver's UART; slaves send 0–4.
DEFAULT_REQUEST_PREAMBLE: Final = 4
MAX_PREAMBLE: Final = 4
MAX_FRAME_SIZE: Final = MAX_PREAMBLE + HEADER_SIZE + MAX_DATA_LENGTH + 2

BROADCAST_ADDRESS: Final = "999999999999"
"""Broadcast time sync and freeze only; meters never answer it."""
WILDCARD_ADDRESS: Final = "AAAAAAAAAAAA"
"""Read/write comm address and single-meter links; the meter answers with its real address."""

_ADDRESS_RE = re.compile(r"^[0-9A-F]{12}$")
_USER_ADDRESS_RE = re.compile(r"^[0-9A]{1,12}$")


# Address conversions are pure functions of a short string / 6 bytes, and a master talks to
# a handful of meters, so their results are memoised (bounded: the caches are dropped when
# they reach _MEMO_LIMIT entries, so odd callers cannot grow memory).
_MEMO_LIMIT: Final = 4096
_normalized: dict[str, str] = {}
_from_wire: dict[bytes, str] = {}
_heads: dict[str, bytes] = {}  # Frame.address → 68 A0..A5 68


def _memo(cache: dict[Any, Any], key: object, value: object) -> None:
    if len(cache) >= _MEMO_LIMIT:
        cache.clear()
    cache[key] = value


def normalize_address(address: str) -> str:
    """A nameplate address as 12 characters; short ("compressed") ones are padded with A.

    ``"123456789"`` → ``"AAA123456789"``: the high-order nibbles become AA wildcards, which
    a meter matches against any digit (peace0phmind/dlt645 frame_test.go:36-40).
    """
    try:
        return _normalized[address]
    except (KeyError, TypeError):
        pass
    cleaned = address.replace(" ", "").upper()
    if not _USER_ADDRESS_RE.match(cleaned):
        raise LocalProtocolError(
            f"meter address {address!r} must be 1-12 decimal digits (A = wildcard nibble)"
        )
    normal = cleaned.rjust(12, "A")
    if type(address) is str:
        _memo(_normalized, address, normal)
    return normal


def address_to_wire(address: str) -> bytes:
    """Nameplate ``"000006605518"`` → wire bytes ``18 55 60 06 00 00`` (low byte first)."""
    return bytes.fromhex(normalize_address(address))[::-1]


def address_from_wire(wire: bytes) -> str:
    """Wire bytes (low byte first) → the 12 characters printed on the nameplate."""
    try:
        return _from_wire[wire]
    except (KeyError, TypeError):
        pass
    if len(wire) != 6:
        raise LocalProtocolError(f"an address is 6 bytes on the wire, got {len(wire)}")
    address = wire[::-1].hex().upper()
    if type(wire) is bytes:
        _memo(_from_wire, wire, address)
    return address


def checksum(body: bytes) -> int:
    """Sum of every byte from the first 68H through the last data byte, modulo 256."""
    return sum(body) & 0xFF


# bytes.translate tables for the +33H data offset (added on the wire, removed on reading)
_ADD_TABLE: Final = bytes((b + DATA_OFFSET) & 0xFF for b in range(256))
_REMOVE_TABLE: Final = bytes((b - DATA_OFFSET) & 0xFF for b in range(256))


def _add_offset(data: bytes) -> bytes:
    return bytes(data).translate(_ADD_TABLE)


def _remove_offset(data: bytes) -> bytes:
    return bytes(data).translate(_REMOVE_TABLE)


@dataclass(frozen=True)
class Control:
    """The control byte C: D7 direction, D6 abnormal reply, D5 follow-up, D4..D0 function."""

    function: int
    response: bool = False
    abnormal: bool = False
    follow_up: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.function <= 0x1F:
            raise LocalProtocolError(f"function code {self.function:#x} does not fit D4..D0")

    @classmethod
    def from_byte(cls, value: int) -> Control:
        if cls is Control:
            try:
                return _CONTROLS[value & 0xFF]  # equal to a fresh one, and immutable
            except TypeError:
                pass
        return cls(
            function=value & 0x1F,
            response=bool(value & 0x80),
            abnormal=bool(value & 0x40),
            follow_up=bool(value & 0x20),
        )

    @cached_property  # computed once per (immutable) instance
    def byte(self) -> int:
        return (
            self.function
            | (0x80 if self.response else 0)
            | (0x40 if self.abnormal else 0)
            | (0x20 if self.follow_up else 0)
        )


_new = object.__new__


def _control_of(value: int) -> Control:
    control: Control = _new(Control)
    control.__dict__.update(
        function=value & 0x1F,
        response=bool(value & 0x80),
        abnormal=bool(value & 0x40),
        follow_up=bool(value & 0x20),
    )
    control.__dict__["byte"] = value  # what the cached property would compute
    return control


# Every control byte, built once: decoders and builders share these immutable instances.
_CONTROLS: Final[tuple[Control, ...]] = tuple(_control_of(value) for value in range(256))


@dataclass(frozen=True)
class Frame:
    """One DL/T 645 frame. ``data`` is the data field with the +33H offset already removed."""

    address: str
    control: Control
    data: bytes = b""

    def __post_init__(self) -> None:
        if not _ADDRESS_RE.match(self.address):
            raise LocalProtocolError(
                f"Frame.address must be 12 upper-case hex characters, got {self.address!r};"
                " use normalize_address() for user input"
            )
        if len(self.data) > MAX_DATA_LENGTH:
            raise LocalProtocolError(
                f"data field of {len(self.data)} bytes exceeds the {MAX_DATA_LENGTH}-byte limit"
            )

    @property
    def wire_address(self) -> bytes:
        return bytes.fromhex(self.address)[::-1]


def _frame(address: str, control: Control, data: bytes) -> Frame:
    """A :class:`Frame` whose address and data length the caller has already checked.

    Only for this package's decoders and builders, which produce valid fields by
    construction; everyone else goes through ``Frame(...)`` and its validation.
    """
    frame: Frame = _new(Frame)
    fields = frame.__dict__
    fields["address"] = address
    fields["control"] = control
    fields["data"] = data
    return frame


def _checked_frame(address: str, control: Control, data: bytes) -> Frame:
    """:func:`_frame` for an address that is known valid but data of any length."""
    if len(data) > MAX_DATA_LENGTH:
        raise LocalProtocolError(
            f"data field of {len(data)} bytes exceeds the {MAX_DATA_LENGTH}-byte limit"
        )
    return _frame(address, control, data)


_START_BYTES: Final = bytes([START])
_TAILS: Final = tuple(bytes((cs, END)) for cs in range(256))  # CS 16, by checksum


def encode_frame(frame: Frame, preamble: int = DEFAULT_REQUEST_PREAMBLE) -> bytes:
    """Bytes on the wire for ``frame``, preceded by ``preamble`` FE wake-up bytes."""
    if not 0 <= preamble <= MAX_PREAMBLE:
        raise LocalProtocolError(f"preamble must be 0..{MAX_PREAMBLE} FE bytes, got {preamble}")
    data = frame.data
    plain = type(frame) is Frame
    head = _heads.get(frame.address) if plain else None
    if head is None:
        head = _START_BYTES + frame.wire_address + _START_BYTES
        if plain:
            _memo(_heads, frame.address, head)
    body = head + bytes((frame.control.byte, len(data))) + bytes(data).translate(_ADD_TABLE)
    return b"\xfe" * preamble + body + _TAILS[sum(body) & 0xFF]


def parse_frame_at(buffer: bytes | bytearray, start: int = 0) -> tuple[Frame, int] | None:
    """Parse the frame whose first 68H is at ``start``; return it and the index after 16H.

    ``None`` means the bytes so far are a valid beginning but the frame is incomplete.
    Raises a :class:`~shared_protocol.errors.RemoteProtocolError` subclass when the bytes
    cannot be a frame, with a reason a technician can act on.
    """
    available = len(buffer) - start
    if available < 1:
        return None
    if buffer[start] != START:
        raise MalformedFrameError(f"a frame starts with 68, not {buffer[start]:02X}")
    if available < HEADER_SIZE:
        if available > 7 and buffer[start + 7] != START:
            raise MalformedFrameError(_second_start_reason(buffer[start + 7]))
        return None
    if buffer[start + 7] != START:
        raise MalformedFrameError(_second_start_reason(buffer[start + 7]))
    length = buffer[start + 9]
    if length > MAX_DATA_LENGTH:
        raise FrameTooLargeError(
            f"length byte L is {length}, above the {MAX_DATA_LENGTH}-byte limit of DL/T 645:"
            " the L byte is corrupted or this is not a 645 frame"
        )
    end = start + HEADER_SIZE + length + 2
    if len(buffer) < end:
        return None
    body = bytes(buffer[start : end - 2])
    expected = sum(body) & 0xFF
    received = buffer[end - 2]
    if received != expected:
        raise ChecksumError(
            f"checksum is 0x{received:02X} but the bytes add up to 0x{expected:02X}:"
            " a byte was corrupted or edited"
        )
    if buffer[end - 1] != END:
        raise MalformedFrameError(
            f"frame must end with 16 but ends with {buffer[end - 1]:02X}:"
            " the L byte disagrees with the frame's real length"
        )
    wire = body[1:7]
    address = _from_wire.get(wire)
    if address is None:
        address = address_from_wire(wire)
    # every field is valid by construction: 12 hex digits, L ≤ MAX_DATA_LENGTH
    frame = _frame(address, _CONTROLS[body[8]], body[HEADER_SIZE:].translate(_REMOVE_TABLE))
    return frame, end


def _second_start_reason(found: int) -> str:
    return (
        f"byte 8 must be the second 68 after the 6 address bytes, found {found:02X}:"
        " address field truncated or not a 645 frame"
    )


_PREAMBLE_BYTES: Final = bytes([PREAMBLE_BYTE])


def count_preamble(raw: bytes) -> int:
    """How many FE wake-up bytes precede the frame."""
    return len(raw) - len(raw.lstrip(_PREAMBLE_BYTES))


def decode_frame(raw: bytes) -> Frame:
    """Decode exactly one frame (any number of leading FE) from ``raw``."""
    start = len(raw) - len(raw.lstrip(_PREAMBLE_BYTES))
    if type(raw) is bytes:
        # The usual case in one pass: exactly one complete, well-formed frame. Anything
        # else takes the careful path below, which says what is wrong.
        size = len(raw)
        end = size - 2
        if (
            size - start >= HEADER_SIZE + 2
            and raw[start] == START
            and raw[start + 7] == START
            and start + HEADER_SIZE + raw[start + 9] == end
            and raw[start + 9] <= MAX_DATA_LENGTH
            and raw[-1] == END
        ):
            body = raw[start:end]
            if sum(body) & 0xFF == raw[end]:
                wire = body[1:7]
                address = _from_wire.get(wire)
                if address is None:
                    address = address_from_wire(wire)
                frame: Frame = _new(Frame)  # _frame(), inlined
                fields = frame.__dict__
                fields["address"] = address
                fields["control"] = _CONTROLS[body[8]]
                fields["data"] = body[HEADER_SIZE:].translate(_REMOVE_TABLE)
                return frame
    if start == len(raw):
        raise MalformedFrameError("no frame: only FE preamble bytes or nothing at all")
    parsed = parse_frame_at(raw, start)
    if parsed is None:
        raise MalformedFrameError(
            f"frame is truncated: {len(raw) - start} bytes after the preamble, the header"
            " and L byte promise more"
        )
    frame, end = parsed
    if end != len(raw):
        raise MalformedFrameError(f"{len(raw) - end} unexpected bytes after the closing 16")
    return frame
