"""DL/T 698.45 link frames: ``68 L C AF SA CA HCS APDU FCS 16``, encoded and decoded.

Also the pieces of the link layer that live next to the frame: the server address
(:class:`ServerAddress`, all four address types), the control byte (:class:`Control`),
the CRC-16/X-25 used for HCS and FCS, and APDU fragmentation (:class:`Fragment`,
:func:`split_apdu`, :class:`Reassembler`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

import crcmod.predefined

from shared_protocol.errors import (
    ChecksumError,
    FrameTooLargeError,
    LocalProtocolError,
    MalformedFrameError,
)

__all__ = [
    "MAX_FRAME_LENGTH",
    "MAX_REASSEMBLED_APDU",
    "AddressType",
    "Control",
    "Fragment",
    "FragmentType",
    "Frame",
    "LinkFunction",
    "Reassembler",
    "ServerAddress",
    "crc16",
    "decode_frame",
    "encode_frame",
    "split_apdu",
]

START: Final = 0x68
END: Final = 0x16
PREAMBLE: Final = 0xFE

# L has 14 length bits, so no frame can count more than 0x3FFF bytes between 68 and 16.
MAX_FRAME_LENGTH: Final = 0x3FFF
# A reassembled APDU larger than this is refused: the biggest real replies (a month of
# 15-minute load profile) stay well below 64 KiB, and the bound keeps a peer from making
# us buffer without end.
MAX_REASSEMBLED_APDU: Final = 64 * 1024
# L bit 14 is the length unit; 0 = bytes is the only value seen on any meter. [U: 1]
_L_UNIT_BIT: Final = 0x4000

_crc_x25 = crcmod.predefined.mkCrcFun("x-25")


def _x25_parts() -> tuple[Callable[[bytes, int, Any], int], int, Any]:
    """(core, start, table) with ``0xFFFF ^ core(data, start, table) == crc16(data)``.

    crcmod's function is a Python wrapper ``xor_out ^ core(data, xor_out ^ init, table)``
    around its C (or Python) core; the hot paths call the core directly, saving a Python
    call per CRC. When that shape cannot be confirmed, the core is crcmod's own function.
    """
    try:
        init, table, core = _crc_x25.__defaults__
        start = 0xFFFF ^ init
        samples = (b"", b"123456789", bytes(range(256)), b"\x68\x17\x00\x43")
        if all(0xFFFF ^ core(s, start, table) == _crc_x25(s) for s in samples):
            return core, start, table
    except (TypeError, ValueError):
        pass
    return (lambda data, start, table: 0xFFFF ^ _crc_x25(data)), 0, None


_x25_core, _X25_START, _X25_TABLE = _x25_parts()


def crc16(data: bytes) -> int:
    """CRC-16/X-25 as used for HCS and FCS (check('123456789') = 0x906E)."""
    return int(_crc_x25(bytes(data)))


class LinkFunction(IntEnum):
    """C bits 0-2."""

    LINK_MANAGEMENT = 1  # login / heartbeat / logout
    USER_DATA = 3


FUNCTION_NAMES: Final[dict[int, str]] = {
    1: "link management",
    3: "user data",
}


@dataclass(frozen=True)
class Control:
    """The C byte: DIR (server sent it), PRM (client started the exchange), flags, function."""

    from_server: bool
    client_started: bool
    function: int = LinkFunction.USER_DATA
    fragmented: bool = False
    scrambled: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.function <= 7:
            raise LocalProtocolError(f"link function {self.function} is outside 0..7")

    @classmethod
    def from_byte(cls, value: int) -> Control:
        return cls(
            from_server=bool(value & 0x80),
            client_started=bool(value & 0x40),
            function=value & 0x07,
            fragmented=bool(value & 0x20),
            scrambled=bool(value & 0x08),
        )

    def to_byte(self) -> int:
        return (
            self.from_server << 7
            | self.client_started << 6
            | self.fragmented << 5
            | self.scrambled << 3
            | self.function
        )

    # The six combinations real equipment uses.
    @classmethod
    def client_request(cls) -> Control:
        if cls is Control:
            return _CLIENT_REQUEST
        return cls(False, True)  # 43

    @classmethod
    def server_response(cls) -> Control:
        if cls is Control:
            return _SERVER_RESPONSE
        return cls(True, True)  # C3

    @classmethod
    def server_report(cls) -> Control:
        return cls(True, False)  # 83

    @classmethod
    def client_report_reply(cls) -> Control:
        return cls(False, False)  # 03

    @classmethod
    def server_link_request(cls) -> Control:
        return cls(True, False, LinkFunction.LINK_MANAGEMENT)  # 81

    @classmethod
    def client_link_reply(cls) -> Control:
        return cls(False, False, LinkFunction.LINK_MANAGEMENT)  # 01


# Every C byte decoded once: Control is immutable, so decoders share these.
_CONTROLS: Final[tuple[Control, ...]] = tuple(Control.from_byte(b) for b in range(256))
_CLIENT_REQUEST: Final = Control(False, True)
_SERVER_RESPONSE: Final = Control(True, True)


class AddressType(IntEnum):
    """AF bits 6-7."""

    SINGLE = 0
    WILDCARD = 1
    GROUP = 2
    BROADCAST = 3


def _is_bcd_or_wild(wire: bytes) -> bool:
    return all(n <= 9 or n == 0xA for b in wire for n in (b >> 4, b & 0x0F))


@dataclass(frozen=True)
class ServerAddress:
    """SA with its AF: type, logical address 0-3 and 1-16 address bytes in wire order.

    ``wire`` is low byte first as sent; :attr:`digits` is the nameplate order (most
    significant digit first). Wildcard digits are ``A`` nibbles; broadcast is ``AA``.
    """

    wire: bytes
    type: AddressType = AddressType.SINGLE
    logical: int = 0

    def __post_init__(self) -> None:
        if not 1 <= len(self.wire) <= 16:
            raise LocalProtocolError(f"a server address has 1..16 bytes, got {len(self.wire)}")
        if not 0 <= self.logical <= 3:
            raise LocalProtocolError(f"logical address {self.logical} is outside 0..3")
        if not isinstance(self.type, AddressType):
            raise LocalProtocolError(f"{self.type!r} is not an AddressType")

    @classmethod
    def single(cls, digits: str, logical: int = 0) -> ServerAddress:
        """``ServerAddress.single("123456789012")`` → wire ``12 90 78 56 34 12``."""
        return cls(_digits_to_wire(digits), AddressType.SINGLE, logical)

    @classmethod
    def wildcard(cls, digits: str = "AAAAAAAAAAAA", logical: int = 0) -> ServerAddress:
        """Wildcard: unknown digits are ``A`` (the only meter on a bus answers)."""
        return cls(_digits_to_wire(digits), AddressType.WILDCARD, logical)

    @classmethod
    def group(cls, digits: str, logical: int = 0) -> ServerAddress:
        return cls(_digits_to_wire(digits), AddressType.GROUP, logical)

    @classmethod
    def broadcast(cls, logical: int = 0) -> ServerAddress:
        return cls(b"\xaa", AddressType.BROADCAST, logical)

    @property
    def digits(self) -> str:
        return self.wire[::-1].hex().upper()

    @property
    def af(self) -> int:
        return self.type << 6 | self.logical << 4 | (len(self.wire) - 1)

    def to_bytes(self) -> bytes:
        return bytes([self.af]) + self.wire

    def __str__(self) -> str:
        return self.digits


def _digits_to_wire(digits: str) -> bytes:
    text = digits.strip().upper()
    if len(text) % 2:
        text = "0" + text
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise LocalProtocolError(f"{digits!r} is not an address of BCD digits") from None
    if not raw or not _is_bcd_or_wild(raw):
        raise LocalProtocolError(f"{digits!r} is not an address of BCD digits (or A wildcards)")
    return raw[::-1]


@dataclass(frozen=True)
class Frame:
    """One link frame. ``apdu`` is the APDU field as carried (with the fragment word
    first when ``control.fragmented``)."""

    control: Control
    address: ServerAddress
    client_address: int
    apdu: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.client_address <= 255:
            raise LocalProtocolError(f"client address {self.client_address} is outside 0..255")
        if len(self.address.wire) + 9 + len(self.apdu) > MAX_FRAME_LENGTH:
            raise LocalProtocolError(f"APDU of {len(self.apdu)} bytes does not fit one frame")

    @property
    def header_length(self) -> int:
        """Bytes from L to HCS inclusive."""
        return 2 + 1 + 1 + len(self.address.wire) + 1 + 2


_pack_head: Final = struct.Struct("<HBB").pack  # L, C, AF
_pack_crc: Final = struct.Struct("<H").pack
_START_BYTE: Final = bytes([START])
_END_BYTE: Final = bytes([END])
_PREAMBLE_BYTE: Final = bytes([PREAMBLE])
_ADDRESS_TYPES: Final = tuple(AddressType)
_new: Final = object.__new__


def encode_frame(frame: Frame, preamble: int = 0) -> bytes:
    """Bytes on the line for ``frame``, optionally after ``preamble`` FE bytes."""
    address = frame.address
    wire = address.wire
    apdu = frame.apdu
    # L counts L itself (2), C, AF, SA, CA, HCS (2), the APDU and FCS (2).
    head = (
        _pack_head(len(wire) + 9 + len(apdu), frame.control.to_byte(), address.af)
        + wire
        + bytes((frame.client_address,))
    )
    body = head + _pack_crc(0xFFFF ^ _x25_core(head, _X25_START, _X25_TABLE)) + apdu
    return b"".join(
        (
            _PREAMBLE_BYTE * preamble,
            _START_BYTE,
            body,
            _pack_crc(0xFFFF ^ _x25_core(body, _X25_START, _X25_TABLE)),
            _END_BYTE,
        )
    )


@dataclass(frozen=True)
class FrameHeader:
    """What can be read before the APDU; the stream parser checks it early."""

    length: int
    control: Control
    address: ServerAddress
    client_address: int
    header_end: int  # offset (from 68) of the first APDU byte


def _check_header(raw: bytes) -> tuple[int, int]:
    """Check 68 … HCS of ``raw`` (starting at 68); return (L length, header end)."""
    if len(raw) < 1 or raw[0] != START:
        raise MalformedFrameError("a 698.45 frame starts with 68")
    if len(raw) < 5:
        raise MalformedFrameError("truncated before the address flag")
    l_field = raw[1] | raw[2] << 8
    if l_field & _L_UNIT_BIT:
        raise MalformedFrameError("L bit 14 set (length unit not bytes) is not supported [U]")
    length = l_field & 0x3FFF
    af = raw[4]
    sa_len = (af & 0x0F) + 1
    header_end = 1 + 2 + 1 + 1 + sa_len + 1 + 2
    if length < header_end - 1 + 2:
        raise MalformedFrameError(
            f"L={length} is shorter than the header ({header_end - 1} bytes) plus FCS"
        )
    if len(raw) < header_end:
        raise MalformedFrameError(
            f"truncated in the header: AF=0x{af:02X} announces a {sa_len}-byte server "
            f"address, but the frame ends before CA and HCS"
        )
    hcs_wire = raw[header_end - 2] | raw[header_end - 1] << 8
    hcs = 0xFFFF ^ _x25_core(bytes(raw[1 : header_end - 2]), _X25_START, _X25_TABLE)
    if hcs != hcs_wire:
        raise ChecksumError(f"HCS is {hcs_wire:04X} but the header computes to {hcs:04X}")
    return length, header_end


def _address(wire: bytes, af: int) -> ServerAddress:
    """The SA for a checked header: 1-16 bytes and AF fields in range by construction."""
    address = _new(ServerAddress)
    fields = address.__dict__
    fields["wire"] = wire
    fields["type"] = _ADDRESS_TYPES[af >> 6]
    fields["logical"] = (af >> 4) & 0x03
    return address


def decode_header(raw: bytes) -> FrameHeader:
    """Read and check 68 … HCS. ``raw`` starts at 68 and may stop after the HCS."""
    length, header_end = _check_header(raw)
    sa_end = header_end - 3
    address = _address(raw[5:sa_end], raw[4])
    return FrameHeader(length, _CONTROLS[raw[3]], address, raw[sa_end], header_end)


def decode_frame(raw: bytes) -> Frame:
    """One complete frame (FE preamble allowed), checks L, HCS, FCS and the 16 end byte."""
    data = bytes(raw).lstrip(_PREAMBLE_BYTE)
    if not data:
        raise MalformedFrameError("no frame: empty input")
    length, header_end = _check_header(data)
    total = length + 2
    if total > MAX_FRAME_LENGTH + 2:
        raise FrameTooLargeError(f"L={length} exceeds {MAX_FRAME_LENGTH}")
    if len(data) < total:
        raise MalformedFrameError(f"truncated: L says {total} bytes, got {len(data)}")
    if len(data) > total:
        raise MalformedFrameError(f"{len(data) - total} byte(s) after the end of the frame")
    if data[total - 1] != END:
        raise MalformedFrameError(f"frame ends with {data[total - 1]:02X}, not 16")
    fcs_wire = data[total - 3] | data[total - 2] << 8
    fcs = 0xFFFF ^ _x25_core(data[1 : total - 3], _X25_START, _X25_TABLE)
    if fcs != fcs_wire:
        raise ChecksumError(f"FCS is {fcs_wire:04X} but the frame computes to {fcs:04X}")
    # Every field fits by construction (CA is a byte, L ≤ 0x3FFF bounds the APDU).
    sa_end = header_end - 3
    frame = _new(Frame)
    fields = frame.__dict__
    fields["control"] = _CONTROLS[data[3]]
    fields["address"] = _address(data[5:sa_end], data[4])
    fields["client_address"] = data[sa_end]
    fields["apdu"] = data[header_end : total - 3]
    return frame


# ------------------------------------------------------------------- fragmentation


class FragmentType(IntEnum):
    """Bits 14-15 of the fragment format word."""

    START = 0
    END = 1
    CONFIRM = 2
    MIDDLE = 3


@dataclass(frozen=True)
class Fragment:
    """One fragment: sequence number 0-4095, type, and the piece of APDU it carries."""

    sequence: int
    type: FragmentType
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.sequence <= 0x0FFF:
            raise LocalProtocolError(f"fragment sequence {self.sequence} is outside 0..4095")

    def to_bytes(self) -> bytes:
        word = self.type << 14 | self.sequence
        return word.to_bytes(2, "little") + self.data

    @classmethod
    def from_bytes(cls, raw: bytes) -> Fragment:
        if len(raw) < 2:
            raise MalformedFrameError("a fragmented APDU field needs its 2-byte format word")
        word = int.from_bytes(raw[:2], "little")
        if word & 0x3000:
            raise MalformedFrameError(f"fragment word {word:04X} sets reserved bits 12-13")
        return cls(word & 0x0FFF, FragmentType(word >> 14), bytes(raw[2:]))


def split_apdu(apdu: bytes, max_piece: int, first_sequence: int = 0) -> list[Fragment]:
    """Cut ``apdu`` into start/middle…/end fragments of at most ``max_piece`` bytes.

    An APDU that fits in one piece is not fragmented at all, so that is refused.
    """
    if max_piece < 1:
        raise LocalProtocolError("fragment size must be at least 1 byte")
    if len(apdu) <= max_piece:
        raise LocalProtocolError("the APDU fits one frame; send it unfragmented")
    pieces = [apdu[i : i + max_piece] for i in range(0, len(apdu), max_piece)]
    fragments = []
    for n, piece in enumerate(pieces):
        kind = (
            FragmentType.START
            if n == 0
            else FragmentType.END
            if n == len(pieces) - 1
            else FragmentType.MIDDLE
        )
        fragments.append(Fragment((first_sequence + n) & 0x0FFF, kind, piece))
    return fragments


class Reassembler:
    """Rebuilds an APDU from fragments; out-of-order or oversized input is refused.

    ``add`` returns the whole APDU on the END fragment, else ``None``. After an error the
    reassembler is empty again, ready for a new START.
    """

    def __init__(self, max_apdu: int = MAX_REASSEMBLED_APDU) -> None:
        self._max = max_apdu
        self._parts: list[bytes] = []
        self._size = 0
        self._next: int | None = None

    @property
    def in_progress(self) -> bool:
        return self._next is not None

    def _reset(self) -> None:
        self._parts, self._size, self._next = [], 0, None

    def add(self, fragment: Fragment) -> bytes | None:
        if fragment.type is FragmentType.CONFIRM:
            raise MalformedFrameError("a confirm fragment carries no APDU data to reassemble")
        if fragment.type is FragmentType.START:
            self._reset()
            self._next = fragment.sequence
        elif self._next is None:
            raise MalformedFrameError(
                f"{fragment.type.name.lower()} fragment {fragment.sequence} without a start"
            )
        if fragment.sequence != self._next:
            expected = self._next
            self._reset()
            raise MalformedFrameError(
                f"fragment {fragment.sequence} out of order, expected {expected}"
            )
        self._size += len(fragment.data)
        if self._size > self._max:
            self._reset()
            raise FrameTooLargeError(f"reassembled APDU exceeds {self._max} bytes")
        self._parts.append(fragment.data)
        self._next = (fragment.sequence + 1) & 0x0FFF
        if fragment.type is FragmentType.END:
            apdu = b"".join(self._parts)
            self._reset()
            return apdu
        return None
