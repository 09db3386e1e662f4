"""Technician view of one DL/T 645 frame: bytes → the JSON-ready dict of shared_protocol.explain.

Never raises for any bytes. Besides the shared keys it fills ``di``, ``abnormal``,
``error_code``, ``error_bits``, ``follow_up`` and ``data`` (hex after −33H), plus
``warnings`` (acceptable oddities) and ``details`` (command fields: password level, baud,
valid-until time, reported address …).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from shared_protocol.dlt645.control import (
    ENCRYPTED_PASSWORD_LEVEL,
    RemoteCommand,
    Standard,
    baud_from_feature,
    error_bit_names,
    function_spec,
)
from shared_protocol.dlt645.di_table import DataItem, Field, data_item, format_di
from shared_protocol.dlt645.formats import YYMMDDHHMM, YYMMDDHHMMSS, Clock
from shared_protocol.dlt645.frame import (
    PREAMBLE_BYTE,
    START,
    Control,
    Frame,
    address_from_wire,
    count_preamble,
    decode_frame,
)
from shared_protocol.dlt645.messages import Password, detect_standard
from shared_protocol.errors import MalformedFrameError, ProtocolError
from shared_protocol.quantities import ScalarValue, quantity

__all__ = ["explain"]

Explanation = dict[str, Any]
_DI_SIZE = {Standard.DLT645_2007: 4, Standard.DLT645_1997: 2}


def _text(value: ScalarValue) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def _hex(data: bytes) -> str:
    return data.hex(" ").upper()


def _skeleton(raw: bytes, standard: Standard | None) -> Explanation:
    result: Explanation = {
        "protocol": (standard or Standard.DLT645_2007).protocol,
        "valid": False,
        "error": None,
        "warnings": [],
        "address": None,
        "control": None,
        "direction": None,
        "function": None,
        "di": None,
        "abnormal": None,
        "error_code": None,
        "error_bits": [],
        "follow_up": None,
        "data": None,
        "values": [],
        "details": {},
        "preamble": count_preamble(raw),
    }
    body = raw.lstrip(bytes([PREAMBLE_BYTE]))
    if len(body) >= 7 and body[0] == START:
        result["address"] = address_from_wire(body[1:7])
    if len(body) >= 9 and body[0] == START and body[7] == START:
        control = body[8]
        result["control"] = f"{control:02X}"
        result["direction"] = "response" if control & 0x80 else "request"
        if standard is None:
            probe = Frame("000000000000", Control.from_byte(control), body[10:14])
            result["protocol"] = detect_standard(probe).protocol
    return result


def explain(raw: bytes, standard: str | None = None) -> Explanation:
    """Explain ``raw`` as DL/T 645 (``standard`` "2007", "1997" or ``None`` = detect)."""
    try:
        chosen = None if standard is None else Standard(standard)
    except ValueError:
        chosen = None
    result = _skeleton(bytes(raw), chosen)
    if standard is not None and chosen is None:
        result["error"] = f"unknown DL/T 645 edition {standard!r}; use '2007' or '1997'"
        return result
    try:
        frame = decode_frame(bytes(raw))
    except ProtocolError as exc:
        result["error"] = str(exc)
        return result
    edition = chosen or detect_standard(frame)
    control = frame.control
    result.update(
        protocol=edition.protocol,
        valid=True,
        address=frame.address,
        control=f"{control.byte:02X}",
        direction="response" if control.response else "request",
        abnormal=control.abnormal,
        follow_up=control.follow_up,
        data=_hex(frame.data),
    )
    spec = function_spec(control.function, edition)
    if spec is None:
        result["function"] = f"unknown function {control.function:02X}"
        result["warnings"].append(
            f"function code {control.function:02X} is not defined in {edition.protocol}"
        )
        return result
    result["function"] = spec.name
    try:
        if control.abnormal:
            _abnormal(frame, edition, result)
        else:
            handler = _HANDLERS.get((edition, control.function))
            if handler is not None:
                handler(frame, edition, result)
    except ProtocolError as exc:
        result["valid"] = False
        result["error"] = str(exc)
    return result


def _abnormal(frame: Frame, edition: Standard, result: Explanation) -> None:
    if not frame.data:
        result["warnings"].append("abnormal reply without an error byte")
        return
    code = frame.data[0]
    result["error_code"] = f"{code:02X}"
    result["error_bits"] = error_bit_names(code, edition)
    if len(frame.data) > 1:
        result["warnings"].append(
            f"abnormal reply carries {len(frame.data)} bytes; only the first is decoded [U]"
        )


def _values(item: DataItem, decoded: list[tuple[Field, ScalarValue]]) -> list[dict[str, Any]]:
    if len(decoded) == 1:
        field, value = decoded[0]
        name = field.name if field.obis is None else quantity(field.obis).name
        return [{"quantity": name, "obis": field.obis, "value": _text(value), "unit": field.unit}]
    units = {f.unit for f, _ in decoded}
    return [
        {
            "quantity": item.name,
            "obis": [f.obis for f, _ in decoded],
            "value": [_text(v) for _, v in decoded],
            "unit": units.pop() if len(units) == 1 else [f.unit for f, _ in decoded],
        }
    ]


def _item_values(di: int, body: bytes, edition: Standard, result: Explanation) -> None:
    item = data_item(di, edition)
    if item is None:
        result["warnings"].append(
            f"DI {format_di(di, edition)} is not in our {edition.protocol} table"
        )
        return
    result["item"] = item.name
    if item.uncertain:
        result["warnings"].append(f"the layout of DI {format_di(di, edition)} is not confirmed [U]")
    try:
        decoded = item.decode_fields(body)
    except ProtocolError as exc:
        if len(body) > item.size and not item.block:
            decoded = item.decode_fields(body[: item.size])
            result["warnings"].append(
                f"{exc}; decoded the first {item.size} bytes and ignored the rest"
                " (a non-conformant meter or simulator)"
            )
        else:
            raise
    result["values"] = _values(item, decoded)


def _split_di(frame: Frame, edition: Standard, result: Explanation) -> tuple[int, bytes] | None:
    size = _DI_SIZE[edition]
    if len(frame.data) < size:
        if frame.control.response or frame.data:
            raise _malformed(
                f"the data field has {len(frame.data)} bytes, too short for a {size}-byte DI"
            )
        return None
    di = int.from_bytes(frame.data[:size], "little")
    result["di"] = format_di(di, edition)
    return di, frame.data[size:]


def _malformed(reason: str) -> ProtocolError:
    return MalformedFrameError(reason)


def _read(frame: Frame, edition: Standard, result: Explanation) -> None:
    split = _split_di(frame, edition, result)
    if split is None:
        return
    di, rest = split
    if not frame.control.response:
        if edition is Standard.DLT645_2007 and rest:
            result["details"]["record_count"] = rest[0]
            if len(rest) == 6:
                result["details"]["from"] = _text(YYMMDDHHMM.decode(rest[1:]))
            elif len(rest) != 1:
                result["warnings"].append(f"read request with {len(rest)} bytes after the DI")
        elif rest:
            result["warnings"].append(f"read request with {len(rest)} extra bytes after the DI")
        return
    _item_values(di, rest, edition, result)


def _read_follow_up(frame: Frame, edition: Standard, result: Explanation) -> None:
    split = _split_di(frame, edition, result)
    if split is None:
        return
    di, rest = split
    if edition is Standard.DLT645_2007:
        if not rest:
            raise _malformed("a follow-up frame must end with its SEQ byte")
        rest, seq = rest[:-1], rest[-1]
        result["details"]["seq"] = seq
    if frame.control.response:
        _item_values(di, rest, edition, result)


def _read_address(frame: Frame, edition: Standard, result: Explanation) -> None:
    if frame.control.response:
        if len(frame.data) != 6:
            raise _malformed(f"a read-address reply carries 6 bytes, got {len(frame.data)}")
        result["details"]["reported_address"] = address_from_wire(frame.data)


def _write(frame: Frame, edition: Standard, result: Explanation) -> None:
    if frame.control.response:
        return
    split = _split_di(frame, edition, result)
    if split is None:
        return
    di, rest = split
    head = 8 if edition is Standard.DLT645_2007 else 4
    if len(rest) < head:
        raise _malformed("a write request needs DI + password + operator code before the data")
    result["details"]["password_level"] = f"{rest[0]:02X}"
    if edition is Standard.DLT645_2007:
        result["details"]["operator"] = _hex(rest[4:8][::-1]).replace(" ", "")
    item = data_item(di, edition)
    if item is not None:
        try:
            result["values"] = _values(item, item.decode_fields(rest[head:]))
        except ProtocolError as exc:
            result["warnings"].append(
                f"written data does not fit DI {format_di(di, edition)}: {exc}"
            )


def _write_address(frame: Frame, edition: Standard, result: Explanation) -> None:
    if len(frame.data) == 6:
        result["details"]["new_address"] = address_from_wire(frame.data)
    elif frame.data:
        raise _malformed(f"write-address data must be 6 bytes, got {len(frame.data)}")


def _time_sync(frame: Frame, edition: Standard, result: Explanation) -> None:
    if len(frame.data) != 6:
        raise _malformed(f"time sync carries ss mm hh DD MM YY (6 bytes), got {len(frame.data)}")
    result["details"]["time"] = _text(YYMMDDHHMMSS.decode(frame.data))
    if frame.address != "999999999999":
        result["warnings"].append("time sync is normally broadcast to 999999999999")


def _freeze(frame: Frame, edition: Standard, result: Explanation) -> None:
    if frame.control.response:
        return
    if len(frame.data) != 4:
        raise _malformed(f"freeze carries mm hh DD MM (4 bytes), got {len(frame.data)}")
    digits = Clock("MMDDhhmm").decode(frame.data)
    result["details"]["schedule_MMDDhhmm"] = digits


def _baud(frame: Frame, edition: Standard, result: Explanation) -> None:
    if len(frame.data) != 1:
        raise _malformed(f"change-baud carries one feature byte, got {len(frame.data)}")
    result["details"]["baud"] = baud_from_feature(frame.data[0])


def _change_password(frame: Frame, edition: Standard, result: Explanation) -> None:
    if frame.control.response or edition is not Standard.DLT645_2007:
        return
    split = _split_di(frame, edition, result)
    if split is None:
        return
    _, rest = split
    if len(rest) != 8:
        raise _malformed(
            f"change password carries DI + old + new password (12 bytes), got {len(frame.data)}"
        )
    result["details"]["old_level"] = f"{rest[0]:02X}"
    result["details"]["new_level"] = f"{rest[4]:02X}"


def _authorised(frame: Frame, edition: Standard, result: Explanation) -> None:
    if frame.control.response:
        return
    data = frame.data
    if len(data) < 8:
        raise _malformed(
            f"this command carries password + operator code (8 bytes), got {len(data)}"
        )
    result["details"]["password_level"] = f"{data[0]:02X}"
    result["details"]["operator"] = data[4:8][::-1].hex().upper()
    if frame.control.function == 0x1B and len(data) >= 12:
        result["di"] = format_di(int.from_bytes(data[8:12], "little"))


def _remote_control(frame: Frame, edition: Standard, result: Explanation) -> None:
    if frame.control.response:
        return
    data = frame.data
    if len(data) < 8:
        raise _malformed(f"remote control needs password + operator code, got {len(data)} bytes")
    details = result["details"]
    details["password_level"] = f"{data[0]:02X}"
    details["operator"] = data[4:8][::-1].hex().upper()
    if data[0] == ENCRYPTED_PASSWORD_LEVEL:
        details["encrypted"] = True
        details["ciphertext"] = _hex(data[8:])
        return
    if len(data) != 16:
        raise _malformed(f"plaintext remote control is 16 bytes (L=10), got {len(data)}")
    details["password"] = Password.from_bytes(data[:4]).digits
    try:
        details["command"] = RemoteCommand(data[8]).name.lower()
    except ValueError:
        raise _malformed(f"remote-control command N1={data[8]:02X} is not a known code") from None
    details["valid_until"] = _text(YYMMDDHHMMSS.decode(data[10:16]))


Handler = Callable[[Frame, Standard, Explanation], None]
_V7, _V97 = Standard.DLT645_2007, Standard.DLT645_1997
_HANDLERS: dict[tuple[Standard, int], Handler] = {
    (_V7, 0x08): _time_sync,
    (_V7, 0x11): _read,
    (_V7, 0x12): _read_follow_up,
    (_V7, 0x13): _read_address,
    (_V7, 0x14): _write,
    (_V7, 0x15): _write_address,
    (_V7, 0x16): _freeze,
    (_V7, 0x17): _baud,
    (_V7, 0x18): _change_password,
    (_V7, 0x19): _authorised,
    (_V7, 0x1A): _authorised,
    (_V7, 0x1B): _authorised,
    (_V7, 0x1C): _remote_control,
    (_V97, 0x01): _read,
    (_V97, 0x02): _read_follow_up,
    (_V97, 0x04): _write,
    (_V97, 0x08): _time_sync,
    (_V97, 0x0A): _write_address,
    (_V97, 0x0C): _baud,
}
