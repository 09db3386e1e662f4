"""Typed DL/T 645 requests and replies: builders for the master and the meter, and readers.

Master side (bus master, edge agent): :func:`read_request`, :func:`read_follow_up_request`,
:func:`read_load_profile_request`, :func:`read_address_request`, :func:`write_request`,
:func:`write_address_request`, :func:`time_sync_request`, :func:`freeze_request`,
:func:`change_baud_request`, :func:`change_password_request`, :func:`demand_reset_request`,
:func:`meter_clear_request`, :func:`event_clear_request`, :func:`remote_control_request`,
:func:`encrypted_remote_control_request`, :func:`security_request`.

Meter side (simulator): :func:`read_response`, :func:`read_follow_up_response`,
:func:`read_address_response`, :func:`ack_response`, :func:`abnormal_response`.

Readers: :func:`decode_read_response` (values named by OBIS), :func:`decode_read_request`,
:func:`detect_standard`. Every builder returns a :class:`~.frame.Frame`; encode it with
:func:`~.frame.encode_frame`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from shared_protocol.dlt645.control import (
    ENCRYPTED_PASSWORD_LEVEL,
    RemoteCommand,
    Standard,
    baud_to_feature,
)
from shared_protocol.dlt645.di_table import (
    _ITEMS_2007,
    DATA_ITEMS,
    DataItem,
    data_item,
    format_di,
)
from shared_protocol.dlt645.formats import YYMMDDHHMM, YYMMDDHHMMSS, Digits
from shared_protocol.dlt645.frame import (
    _CONTROLS,
    BROADCAST_ADDRESS,
    WILDCARD_ADDRESS,
    Control,
    Frame,
    _checked_frame,
    _normalized,
    address_from_wire,
    address_to_wire,
    normalize_address,
)
from shared_protocol.errors import (
    LocalProtocolError,
    MalformedFrameError,
    UnsupportedError,
)
from shared_protocol.quantities import MeterValue, ScalarValue

__all__ = [
    "Password",
    "ReadRequest",
    "ReadResponse",
    "abnormal_response",
    "ack_response",
    "change_baud_request",
    "change_password_request",
    "decode_read_request",
    "decode_read_response",
    "demand_reset_request",
    "detect_standard",
    "di_bytes",
    "encode_values",
    "encrypted_remote_control_request",
    "event_clear_request",
    "freeze_request",
    "meter_clear_request",
    "read_address_request",
    "read_address_response",
    "read_follow_up_request",
    "read_follow_up_response",
    "read_load_profile_request",
    "read_request",
    "read_response",
    "remote_control_request",
    "reported_address",
    "security_request",
    "time_sync_request",
    "write_address_request",
    "write_request",
]

V2007 = Standard.DLT645_2007
V1997 = Standard.DLT645_1997

# function codes per edition, by role (FUNCTIONS in control.py names them)
_READ = {V2007: 0x11, V1997: 0x01}
_READ_FOLLOW_UP = {V2007: 0x12, V1997: 0x02}
_WRITE = {V2007: 0x14, V1997: 0x04}
_WRITE_ADDRESS = {V2007: 0x15, V1997: 0x0A}
_CHANGE_BAUD = {V2007: 0x17, V1997: 0x0C}
_DI_SIZE = {V2007: 4, V1997: 2}
_TABLE_2007 = _ITEMS_2007
_DI_2007 = struct.Struct("<I")  # DI0 first; unpack_from reads it without slicing
_READ_REQUEST_2007 = _CONTROLS[0x11]  # the shared instances decode_frame hands out
_READ_REPLY_2007 = _CONTROLS[0x91]
_new = object.__new__


def di_bytes(di: int, standard: Standard = V2007) -> bytes:
    """The DI as the data field carries it: DI0 first."""
    size = 4 if standard is V2007 else _DI_SIZE[standard]
    if not 0 <= di < 1 << (8 * size):
        raise LocalProtocolError(f"DI {di:#x} does not fit {size} bytes ({standard.protocol})")
    return di.to_bytes(size, "little")


@dataclass(frozen=True)
class Password:
    """PA P0 P1 P2: the level byte and a 6-digit password (P0 low byte first)."""

    level: int = 2
    digits: str = "000000"

    def __post_init__(self) -> None:
        if not 0 <= self.level <= 0xFF:
            raise LocalProtocolError(f"password level {self.level} is not a byte")
        Digits(3).encode(self.digits)

    def to_bytes(self) -> bytes:
        return bytes([self.level]) + Digits(3).encode(self.digits)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Password:
        return cls(raw[0], Digits(3).decode(raw[1:4]))


def _operator_bytes(operator: str) -> bytes:
    """C0..C3: 8 hex digits as written, sent low byte first."""
    try:
        raw = bytes.fromhex(operator)
    except ValueError:
        raw = b""
    if len(raw) != 4:
        raise LocalProtocolError(f"operator code {operator!r} must be 8 hex digits")
    return raw[::-1]


def _request(address: str, function: int, data: bytes = b"") -> Frame:
    # ``function`` is one of this module's request codes (0..1FH): its control byte is itself
    return _checked_frame(normalize_address(address), _CONTROLS[function], data)


# ---------------------------------------------------------------- master → meter


def read_request(address: str, di: int, standard: Standard = V2007) -> Frame:
    """Read one DI (C=11H; 1997: C=01H)."""
    if standard is V2007 and 0 <= di <= 0xFFFFFFFF:
        # the common case, inlined: a valid DI, so only the address can still be refused
        data = di.to_bytes(4, "little")
        try:
            normal = _normalized[address]
        except (KeyError, TypeError):
            normal = normalize_address(address)
        frame: Frame = _new(Frame)  # frame._frame(), inlined: both fields are valid
        fields = frame.__dict__
        fields["address"] = normal
        fields["control"] = _READ_REQUEST_2007
        fields["data"] = data
        return frame
    return _request(address, _READ[standard], di_bytes(di, standard))


def read_follow_up_request(
    address: str, di: int, seq: int | None = None, standard: Standard = V2007
) -> Frame:
    """Ask for the next part of a reply that had D5 set (C=12H DI + SEQ; 1997: C=02H DI)."""
    data = di_bytes(di, standard)
    if standard is V2007:
        if seq is None or not 0 <= seq <= 0xFF:
            raise LocalProtocolError("a 2007 follow-up read needs SEQ 0..255")
        data += bytes([seq])
    return _request(address, _READ_FOLLOW_UP[standard], data)


def read_load_profile_request(
    address: str, di: int, count: int, start: datetime | None = None
) -> Frame:
    """Read ``count`` load-profile records: DI + N (L=05) or DI + N + mmhhDDMMYY (L=0A) [U]."""
    if not 1 <= count <= 0xFF:
        raise LocalProtocolError(f"record count {count} must be 1..255")
    data = di_bytes(di) + bytes([count])  # [U] N as a plain byte, not BCD
    if start is not None:
        data += YYMMDDHHMM.encode(start)
    return _request(address, 0x11, data)


def read_address_request() -> Frame:
    """Ask the only meter on the line for its address (C=13H to AA…AA)."""
    return _request(WILDCARD_ADDRESS, 0x13)


def write_request(
    address: str,
    di: int,
    data: bytes,
    password: Password | None = None,
    operator: str = "00000000",
    standard: Standard = V2007,
) -> Frame:
    """Write ``data`` (already formatted, before +33H) to DI (C=14H; 1997: C=04H)."""
    secret = (password or Password()).to_bytes()
    if standard is V2007:
        payload = di_bytes(di) + secret + _operator_bytes(operator) + data
    else:
        payload = di_bytes(di, standard) + secret + data  # [U] 1997 has no operator code
    return _request(address, _WRITE[standard], payload)


def write_address_request(new_address: str, standard: Standard = V2007) -> Frame:
    """Give the only meter on the line a new address (C=15H; 1997: C=0AH)."""
    wire = address_to_wire(new_address)
    if "A" in normalize_address(new_address) or wire == b"\x99" * 6:
        raise LocalProtocolError(f"{new_address!r} is a wildcard or broadcast, not a meter address")
    return _request(WILDCARD_ADDRESS, _WRITE_ADDRESS[standard], wire)


def time_sync_request(moment: datetime) -> Frame:
    """Broadcast time sync (C=08H to 99…99): data ss mm hh DD MM YY, never answered."""
    return _request(BROADCAST_ADDRESS, 0x08, YYMMDDHHMMSS.encode(moment.replace(microsecond=0)))


def freeze_request(
    address: str = BROADCAST_ADDRESS,
    *,
    month: int | None = None,
    day: int | None = None,
    hour: int | None = None,
    minute: int | None = None,
) -> Frame:
    """Freeze (C=16H): data mm hh DD MM; a field left ``None`` is 99 = every.

    All four ``None`` (99999999) is an instantaneous freeze; ``address`` 99…99 broadcasts.
    """
    fields = []
    for name, value, top in (
        ("minute", minute, 59),
        ("hour", hour, 23),
        ("day", day, 31),
        ("month", month, 12),
    ):
        if value is None:
            fields.append(0x99)
        elif 0 <= value <= top:
            fields.append(int(str(value), 16))
        else:
            raise LocalProtocolError(f"freeze {name} {value} is outside 0..{top}")
    return _request(address, 0x16, bytes(fields))


def change_baud_request(address: str, baud: int, standard: Standard = V2007) -> Frame:
    """Change the line speed (C=17H; 1997: C=0CH) with the bit-flag feature byte Z."""
    return _request(address, _CHANGE_BAUD[standard], bytes([baud_to_feature(baud)]))


def change_password_request(address: str, old: Password, new: Password) -> Frame:
    """Set the level-``new.level`` password (C=18H, DI 04000C01 + level) [U: level mapping]."""
    if not 0 <= new.level <= 9:
        raise LocalProtocolError(f"password level {new.level} must be 0..9")
    di = 0x04000C01 + new.level
    return _request(address, 0x18, di_bytes(di) + old.to_bytes() + new.to_bytes())


def _authorised(
    address: str, function: int, password: Password | None, operator: str, tail: bytes = b""
) -> Frame:
    secret = (password or Password()).to_bytes()
    return _request(address, function, secret + _operator_bytes(operator) + tail)


def demand_reset_request(
    address: str, password: Password | None = None, operator: str = "00000000"
) -> Frame:
    """Max-demand reset (C=19H): PA..P2 + C0..C3 [U]."""
    return _authorised(address, 0x19, password, operator)


def meter_clear_request(
    address: str, password: Password | None = None, operator: str = "00000000"
) -> Frame:
    """Meter clear (C=1AH): PA..P2 + C0..C3 [U]."""
    return _authorised(address, 0x1A, password, operator)


def event_clear_request(
    address: str, di: int = 0xFFFFFFFF, password: Password | None = None, operator: str = "00000000"
) -> Frame:
    """Event clear (C=1BH): PA..P2 + C0..C3 + DI; DI FFFFFFFF clears all [U]."""
    return _authorised(address, 0x1B, password, operator, di_bytes(di))


def remote_control_request(
    address: str,
    command: RemoteCommand,
    valid_until: datetime,
    password: Password | None = None,
    operator: str = "00000000",
) -> Frame:
    """Plaintext remote control (C=1CH): PA..P2 C0..C3 N1 N2 + valid-until ss mm hh DD MM YY.

    Only password level 02 is plaintext; State Grid smart meters want the 98H ciphertext
    form (:func:`encrypted_remote_control_request`).
    """
    secret = password or Password(level=2)
    if secret.level == ENCRYPTED_PASSWORD_LEVEL:
        raise LocalProtocolError("level 98 means ciphertext; use encrypted_remote_control_request")
    tail = bytes([RemoteCommand(command), 0x00]) + YYMMDDHHMMSS.encode(
        valid_until.replace(microsecond=0)
    )
    return _authorised(address, 0x1C, secret, operator, tail)


def encrypted_remote_control_request(
    address: str, ciphertext: bytes, operator: str = "00000000"
) -> Frame:
    """C=1CH with password level 98H: N1..N8 + MAC come from the security module, opaque."""
    head = bytes([ENCRYPTED_PASSWORD_LEVEL, 0, 0, 0]) + _operator_bytes(operator)
    return _request(address, 0x1C, head + ciphertext)


def security_request(address: str, payload: bytes) -> Frame:
    """ESAM security authentication (C=03H), payload carried opaquely [U]."""
    return _request(address, 0x03, payload)


# ---------------------------------------------------------------- meter → master


def encode_values(di: int, values: Sequence[ScalarValue], standard: Standard = V2007) -> bytes:
    """The data bytes a meter sends for ``di`` (blocks: one value per leading field)."""
    item = data_item(di, standard)
    if item is None:
        raise LocalProtocolError(
            f"DI {format_di(di, standard)} is not in the {standard.protocol} table"
        )
    return item.encode(values)


def read_response(
    address: str, di: int, data: bytes, *, more: bool = False, standard: Standard = V2007
) -> Frame:
    """Normal read reply (91H, B1H when ``more`` parts follow; 1997: 81H/A1H): DI + data."""
    if more is False and standard is V2007:
        try:
            normal = _normalized[address]
        except (KeyError, TypeError):
            normal = normalize_address(address)
        if 0 <= di <= 0xFFFFFFFF:
            return _checked_frame(normal, _READ_REPLY_2007, di.to_bytes(4, "little") + data)
        control = _READ_REPLY_2007
    else:
        control = Control(_READ[standard], response=True, follow_up=more)
    return _checked_frame(normalize_address(address), control, di_bytes(di, standard) + data)


def read_follow_up_response(
    address: str, di: int, data: bytes, seq: int, *, more: bool = False
) -> Frame:
    """Follow-up reply (92H/B2H): DI + data + SEQ."""
    if not 0 <= seq <= 0xFF:
        raise LocalProtocolError(f"SEQ {seq} is not a byte")
    control = Control(0x12, response=True, follow_up=more)
    return _checked_frame(normalize_address(address), control, di_bytes(di) + data + bytes([seq]))


def read_address_response(address: str) -> Frame:
    """Reply to C=13H (93H): the meter's address in the frame and in the data."""
    normal = normalize_address(address)
    return Frame(normal, Control(0x13, response=True), address_to_wire(normal))


def ack_response(address: str, function: int, data: bytes = b"") -> Frame:
    """Normal reply to a command (94H write, 96H freeze, 97H+Z baud, 9CH remote control …)."""
    return Frame(normalize_address(address), Control(function, response=True), data)


def abnormal_response(address: str, function: int, error_bits: int) -> Frame:
    """Abnormal reply (C | C0H) with the error byte; bit meanings in control.ERROR_BITS."""
    if not 0 < error_bits <= 0xFF:
        raise LocalProtocolError(f"error byte {error_bits:#x} must set at least one of bits 0..7")
    control = Control(function, response=True, abnormal=True)
    return Frame(normalize_address(address), control, bytes([error_bits]))


# ---------------------------------------------------------------- readers


_ONLY_1997 = frozenset({0x01, 0x02, 0x04, 0x0A, 0x0C, 0x0F, 0x10})


def detect_standard(frame: Frame) -> Standard:
    """2007 or 1997 from the function code (and, for the shared 03H, the data length)."""
    function = frame.control.function
    if function in _ONLY_1997:
        return V1997
    if function == 0x03 and len(frame.data) < 4 and not frame.control.abnormal:
        return V1997  # 1997 re-read has no data; 2007 security auth starts with a DI
    return V2007


@dataclass(frozen=True)
class ReadResponse:
    """A decoded normal read reply."""

    di: int
    values: tuple[MeterValue, ...]
    data: bytes  # the item's bytes after the DI (and before SEQ)
    more: bool = False
    seq: int | None = None


def _read_response(
    di: int, values: tuple[MeterValue, ...], data: bytes, more: bool, seq: int | None
) -> ReadResponse:
    """``ReadResponse(...)`` without the dataclass ``__init__`` overhead (decoder only)."""
    response: ReadResponse = _new(ReadResponse)
    fields = response.__dict__
    fields["di"] = di
    fields["values"] = values
    fields["data"] = data
    fields["more"] = more
    fields["seq"] = seq
    return response


def decode_read_response(frame: Frame, standard: Standard | None = None) -> ReadResponse:
    """Values of a normal read or follow-up reply, named in the canonical vocabulary.

    Raises :class:`~shared_protocol.errors.UnsupportedError` for a DI not in our table,
    :class:`~shared_protocol.errors.MalformedFrameError` when the reply does not fit it.
    """
    control = frame.control
    if control is _READ_REPLY_2007 and (standard is None or standard is V2007):
        # The common case (a decoded 2007 reply, 91H, one known DI), in one pass; any
        # surprise falls through to the general code below, which explains it.
        data = frame.data
        if len(data) >= 4:
            di = _DI_2007.unpack_from(data)[0]
            item = _TABLE_2007.get(di)
            if item is not None:
                body = data[4:]
                response: ReadResponse = _new(ReadResponse)  # _read_response(), inlined
                fields = response.__dict__
                fields["di"] = di
                fields["values"] = item._decode_values(body)
                fields["data"] = body
                fields["more"] = False
                fields["seq"] = None
                return response
    standard = standard or detect_standard(frame)
    function = control.function
    table: Mapping[int, DataItem]
    if standard is V2007:
        read, read_follow_up, size, table = 0x11, 0x12, 4, _TABLE_2007
    else:
        read, read_follow_up = _READ[standard], _READ_FOLLOW_UP[standard]
        size, table = _DI_SIZE[standard], DATA_ITEMS[standard]
    follow = function == read_follow_up
    if not control.response or control.abnormal or function not in (read, read_follow_up):
        raise MalformedFrameError(
            f"control {control.byte:02X} is not a normal read reply ({standard.protocol})"
        )
    data = frame.data
    if len(data) < size:
        raise MalformedFrameError(
            f"read reply has {len(data)} data bytes, fewer than the {size}-byte DI"
        )
    di = int.from_bytes(data[:size], "little")
    seq = None
    body = data[size:]
    if follow and standard is V2007:
        if not body:
            raise MalformedFrameError("follow-up reply lacks its SEQ byte")
        body, seq = body[:-1], body[-1]
    item = table.get(di)
    if item is None:
        raise UnsupportedError(
            f"DI {format_di(di, standard)} is not in the {standard.protocol} table"
        )
    return _read_response(di, item._decode_values(body), body, control.follow_up, seq)


@dataclass(frozen=True)
class ReadRequest:
    """A decoded read request (what the simulator must answer)."""

    di: int
    count: int | None = None  # load-profile record count (L=05/0A)
    start: datetime | None = None  # load-profile start time (L=0A)
    seq: int | None = None  # follow-up sequence (C=12H)


def _plain_read_request(di: int) -> ReadRequest:
    """``ReadRequest(di)`` without the dataclass ``__init__`` overhead (decoder only)."""
    request: ReadRequest = _new(ReadRequest)
    fields = request.__dict__
    fields["di"] = di
    fields["count"] = None
    fields["start"] = None
    fields["seq"] = None
    return request


def decode_read_request(frame: Frame, standard: Standard | None = None) -> ReadRequest:
    control = frame.control
    if (
        control is _READ_REQUEST_2007
        and len(frame.data) == 4
        and (standard is None or standard is V2007)
    ):
        # the common case, a plain 2007 read of one DI: _plain_read_request(), inlined
        request: ReadRequest = _new(ReadRequest)
        fields = request.__dict__
        fields["di"] = _DI_2007.unpack_from(frame.data)[0]
        fields["count"] = None
        fields["start"] = None
        fields["seq"] = None
        return request
    standard = standard or detect_standard(frame)
    function = control.function
    if standard is V2007:
        read, read_follow_up, size = 0x11, 0x12, 4
    else:
        read, read_follow_up, size = _READ[standard], _READ_FOLLOW_UP[standard], _DI_SIZE[standard]
    if control.response or function not in (read, read_follow_up):
        raise MalformedFrameError(f"control {control.byte:02X} is not a read request")
    data = frame.data
    if len(data) < size:
        raise MalformedFrameError(f"read request has {len(data)} data bytes; the DI needs {size}")
    di = int.from_bytes(data[:size], "little")
    rest = data[size:]
    if function == read_follow_up and standard is V2007:
        if len(rest) != 1:
            raise MalformedFrameError("a follow-up read is DI + SEQ (L=05)")
        return ReadRequest(di, seq=rest[0])
    if standard is V1997 or not rest:
        return _plain_read_request(di)
    if len(rest) not in (1, 6):
        raise MalformedFrameError(
            f"read request L={len(data):02X}: expected 04, 05 (DI+N) or 0A (DI+N+mmhhDDMMYY)"
        )
    count = rest[0]
    start = YYMMDDHHMM.decode(rest[1:]) if len(rest) == 6 else None
    if start is not None and not isinstance(start, datetime):
        raise MalformedFrameError("load-profile start time is not a date and time")
    return ReadRequest(di, count=count, start=start)


def reported_address(frame: Frame) -> str:
    """The address in a C=93H reply's data field, nameplate order."""
    if len(frame.data) != 6:
        raise MalformedFrameError(f"a read-address reply carries 6 bytes, got {len(frame.data)}")
    return address_from_wire(frame.data)
