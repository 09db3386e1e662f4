"""A pasted 698.45 frame explained for a technician, as one JSON-ready dict.

Implements the contract in :mod:`shared_protocol.explain` (keys ``protocol``, ``valid``,
``error``, ``address``, ``control``, ``direction``, ``function``, ``values``) plus the
698 keys ``address_type``, ``logical_address``, ``ca``, ``apdu`` and ``fragment``. It never
raises: what cannot be accepted is reported with ``valid: false`` and a reason, and
whatever could still be read is filled in.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from shared_protocol.dlt698.apdu import (
    SERVICE_NAMES,
    ActionRequestNormal,
    ActionResponseNormal,
    Apdu,
    ErrorResponse,
    GetRequestNormal,
    GetRequestNormalList,
    GetRequestRecord,
    GetResponseNormal,
    GetResponseNormalList,
    GetResponseRecord,
    GetResult,
    LinkRequest,
    LinkResponse,
    ProxyTransCommandRequest,
    ProxyTransCommandResponse,
    RecordResult,
    ReportNotificationList,
    ReportNotificationRecordList,
    ReportResponseList,
    SecurityRequest,
    SecurityResponse,
    SetRequestNormal,
    SetResponseNormal,
    dar_name,
    decode_apdu,
)
from shared_protocol.dlt698.data import (
    OAD,
    OMD,
    BitString,
    Data,
    DataType,
    DateTime698,
    DateTimeS,
)
from shared_protocol.dlt698.frame import (
    FUNCTION_NAMES,
    PREAMBLE,
    START,
    AddressType,
    Control,
    Fragment,
    crc16,
    decode_frame,
)
from shared_protocol.dlt698.objects import display, find_object, meter_values
from shared_protocol.errors import ProtocolError, UnsupportedError

__all__ = ["data_to_json", "explain"]

Explanation = dict[str, Any]


def _hex(b: bytes) -> str:
    return b.hex().upper()


def data_to_json(data: Data) -> Any:
    """Data as plain JSON: numbers, strings, lists; octets as ``{"octets": hex}``."""
    v = data.value
    t = data.type
    if t is DataType.NULL:
        return None
    if t is DataType.ARRAY:
        return {"array": [data_to_json(x) for x in data.items]}
    if t is DataType.STRUCTURE:
        return {"structure": [data_to_json(x) for x in data.items]}
    if isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, bytes):
        key = "octets" if t is DataType.OCTET_STRING else t.name.lower()
        return {key: _hex(v)}
    if isinstance(v, BitString):
        return {"bits": "".join("1" if v.bit(i) else "0" for i in range(v.bits))}
    if isinstance(v, DateTimeS | DateTime698):
        return str(v)
    if isinstance(v, OAD | OMD):
        return {t.name.lower(): str(v)}
    return {t.name.lower(): _plain(v)}


def _plain(value: Any) -> Any:
    if isinstance(value, Data):
        return data_to_json(value)
    if isinstance(value, OAD | OMD):
        return str(value)
    if isinstance(value, bytes):
        return _hex(value)
    if isinstance(value, tuple | list):
        return [_plain(x) for x in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, int | str | float | bool) or value is None:
        return value
    return str(value)


_FUNCTIONS: dict[type[Apdu], str] = {
    LinkRequest: "link request (login / heartbeat / logout)",
    LinkResponse: "link response",
    GetRequestNormal: "read one attribute (GET-Request-Normal)",
    GetRequestNormalList: "read several attributes (GET-Request-NormalList)",
    GetRequestRecord: "read records (GET-Request-Record)",
    GetResponseNormal: "read reply (GET-Response-Normal)",
    GetResponseNormalList: "read reply, several attributes (GET-Response-NormalList)",
    GetResponseRecord: "record read reply (GET-Response-Record)",
    SetRequestNormal: "write one attribute (SET-Request-Normal)",
    SetResponseNormal: "write reply (SET-Response-Normal)",
    ActionRequestNormal: "invoke a method (ACTION-Request-Normal)",
    ActionResponseNormal: "method reply (ACTION-Response-Normal)",
    ReportNotificationList: "meter report (REPORT-Notification-List)",
    ReportNotificationRecordList: "meter report of records (REPORT-Notification-RecordList)",
    ReportResponseList: "report acknowledgement (REPORT-Response)",
    ProxyTransCommandRequest: "transparent forward (PROXY-Request 09 07)",
    ProxyTransCommandResponse: "transparent forward reply (PROXY-Response 89 07)",
    SecurityRequest: "secured request (SECURITY-Request)",
    SecurityResponse: "secured reply (SECURITY-Response)",
    ErrorResponse: "error reply (ERROR-Response)",
}

_REMOTE_CONTROL: dict[tuple[int, int], str] = {
    (0x8000, 0x7F): "remote control: alarm on",
    (0x8000, 0x80): "remote control: alarm off",
    (0x8000, 0x81): "remote control: trip relay",
    (0x8000, 0x82): "remote control: close relay",
    (0x8001, 0x7F): "keep power on",
    (0x8001, 0x80): "keep power off",
}


def _function(apdu: Apdu) -> str:
    if isinstance(apdu, ActionRequestNormal | ActionResponseNormal):
        special = _REMOTE_CONTROL.get((apdu.omd.oi, apdu.omd.method))
        if special:
            return special
    for cls in type(apdu).__mro__:
        if cls in _FUNCTIONS:
            return _FUNCTIONS[cls]
    return apdu.SERVICE


def _result_json(r: GetResult) -> dict[str, Any]:
    out: dict[str, Any] = {"oad": str(r.oad)}
    entry = find_object(r.oad)
    if entry is not None:
        out["name"] = entry.name
    if r.data is not None:
        out["data"] = data_to_json(r.data)
    else:
        assert r.dar is not None
        out["dar"] = r.dar
        out["dar_name"] = dar_name(r.dar)
    return out


def _record_json(r: RecordResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "oad": str(r.oad),
        "columns": [
            str(c.column) if isinstance(c.column, OAD) else _plain(c.column) for c in r.rcsd.columns
        ],
    }
    entry = find_object(r.oad)
    if entry is not None:
        out["name"] = entry.name
    if r.rows is not None:
        out["rows"] = [[data_to_json(d) for d in row] for row in r.rows]
    else:
        assert r.dar is not None
        out["dar"] = r.dar
        out["dar_name"] = dar_name(r.dar)
    return out


def _value_entry(oad: OAD, data: Data) -> dict[str, Any] | None:
    try:
        values = meter_values(oad, data)
    except ProtocolError:
        return None
    if not values:
        return None
    entry = find_object(oad)
    assert entry is not None
    if entry.is_array and oad.index == 0:
        return {
            "quantity": entry.name,
            "obis": [v.obis for v in values],
            "value": [display(v.value) for v in values],
            "unit": entry.unit,
        }
    v = values[0]
    return {"quantity": v.quantity.name, "obis": v.obis, "value": display(v.value), "unit": v.unit}


def _values(results: tuple[GetResult, ...], records: tuple[RecordResult, ...]) -> list[Any]:
    out = []
    for r in results:
        if r.data is not None:
            e = _value_entry(r.oad, r.data)
            if e:
                out.append(e)
    for rec in records:
        for row in rec.rows or ():
            for csd, cell in zip(rec.rcsd.columns, row, strict=True):
                if isinstance(csd.column, OAD):
                    e = _value_entry(csd.column, cell)
                    if e:
                        out.append(e)
    return out


def _apdu_json(apdu: Apdu) -> tuple[dict[str, Any], list[Any]]:
    """The ``apdu`` dict and the ``values`` list for one decoded APDU."""
    out: dict[str, Any] = {"service": apdu.SERVICE, "tag": f"{apdu.TAG:02X}"}
    if apdu.CHOICE is not None:
        out["choice"] = apdu.CHOICE
    piid = getattr(apdu, "piid", None)
    if piid is not None:
        out["piid"] = f"{piid:02X}"
    results: tuple[GetResult, ...] = ()
    records: tuple[RecordResult, ...] = ()
    values: list[Any] = []
    if isinstance(apdu, GetRequestNormal):
        out["oads"] = [str(apdu.oad)]
    elif isinstance(apdu, GetRequestNormalList | ReportResponseList):
        out["oads"] = [str(o) for o in apdu.oads]
    elif isinstance(apdu, GetRequestRecord):
        out["oads"] = [str(apdu.oad)]
        out["rsd"] = {"selector": apdu.rsd.selector, "fields": _plain(apdu.rsd.fields)}
        out["rcsd"] = [_plain(c.column) for c in apdu.rcsd.columns]
    elif isinstance(apdu, GetResponseNormal):
        results = (apdu.result,)
    elif isinstance(apdu, GetResponseNormalList | ReportNotificationList):
        results = apdu.results
    elif isinstance(apdu, GetResponseRecord):
        records = (apdu.result,)
    elif isinstance(apdu, ReportNotificationRecordList):
        records = apdu.records
    elif isinstance(apdu, SetRequestNormal):
        out["oads"] = [str(apdu.oad)]
        out["data"] = data_to_json(apdu.data)
    elif isinstance(apdu, SetResponseNormal):
        out["oads"] = [str(apdu.oad)]
        out["dar"], out["dar_name"] = apdu.dar, dar_name(apdu.dar)
    elif isinstance(apdu, ActionRequestNormal):
        out["omd"] = str(apdu.omd)
        out["data"] = data_to_json(apdu.data)
    elif isinstance(apdu, ActionResponseNormal):
        out["omd"] = str(apdu.omd)
        out["dar"], out["dar_name"] = apdu.dar, dar_name(apdu.dar)
        if apdu.data is not None:
            out["data"] = data_to_json(apdu.data)
    elif isinstance(apdu, LinkRequest):
        out["type"] = apdu.kind.name.lower()
        out["heartbeat_s"] = apdu.heartbeat_seconds
        out["request_time"] = str(apdu.request_time)
    elif isinstance(apdu, LinkResponse):
        out["result"] = f"{apdu.result:02X}"
        out["result_code"] = apdu.result_name
        out["clock_trusted"] = apdu.clock_trusted
        for name in ("request_time", "received_time", "response_time"):
            out[name] = str(getattr(apdu, name))
    elif isinstance(apdu, ProxyTransCommandRequest):
        out["port"] = str(apdu.port)
        out["comdcb"] = _plain(apdu.comdcb)
        out["frame_timeout_s"] = apdu.frame_timeout_s
        out["byte_timeout_ms"] = apdu.byte_timeout_ms
        out["command"] = _hex(apdu.command)
    elif isinstance(apdu, ProxyTransCommandResponse):
        out["port"] = str(apdu.port)
        if apdu.reply is not None:
            out["reply"] = _hex(apdu.reply)
        else:
            assert apdu.dar is not None
            out["dar"], out["dar_name"] = apdu.dar, dar_name(apdu.dar)
    elif isinstance(apdu, SecurityRequest | SecurityResponse):
        out["apdu_choice"] = "ciphertext" if apdu.ciphertext else "plaintext"
        if isinstance(apdu, SecurityRequest):
            out["verification"] = _plain(apdu.verification)
        else:
            if apdu.mac is not None:
                out["mac"] = _hex(apdu.mac)
            if apdu.dar is not None:
                out["dar"], out["dar_name"] = apdu.dar, dar_name(apdu.dar)
        if apdu.payload is not None and not apdu.ciphertext:
            try:
                inner, values = _apdu_json(decode_apdu(apdu.payload))
                out["inner"] = inner
            except ProtocolError as exc:
                out["inner_error"] = str(exc)
        elif apdu.payload is not None:
            out["ciphertext_hex"] = _hex(apdu.payload)
    elif isinstance(apdu, ErrorResponse):
        out["error"] = apdu.error
        out["error_name"] = apdu.error_name
    if results or records:
        out["oads"] = [str(r.oad) for r in results] + [str(r.oad) for r in records]
        if results:
            out["results"] = [_result_json(r) for r in results]
        if records:
            out["records"] = [_record_json(r) for r in records]
        values = _values(results, records)
    follow = getattr(apdu, "follow_report", None)
    if follow is not None:
        out["follow_report"] = _plain(follow)
    tag = getattr(apdu, "time_tag", None)
    if tag is not None:
        out["time_tag"] = {
            "send_time": str(tag.send_time),
            "allowed_delay": _plain(tag.allowed_delay),
        }
    return out, values


def _read_header(body: bytes, out: Explanation) -> int | None:
    """Fill address, control, CA from a possibly broken frame; return the APDU offset."""
    if len(body) < 4:
        return None
    control = Control.from_byte(body[3])
    out["control"] = f"{body[3]:02X}"
    # The exchange's starter sends the request: the client when PRM=1 (43 → C3), the
    # server when PRM=0 (a login 81 or a report 83, answered by 01 or 03).
    out["direction"] = "response" if control.from_server == control.client_started else "request"
    out["sender"] = "server" if control.from_server else "client"
    out["function"] = FUNCTION_NAMES.get(control.function, f"reserved function {control.function}")
    if len(body) < 5:
        return None
    af = body[4]
    sa_len = (af & 0x0F) + 1
    out["address_type"] = AddressType(af >> 6).name.lower()
    out["logical_address"] = (af >> 4) & 0x03
    if len(body) < 5 + sa_len + 1:
        return None
    out["address"] = body[5 : 5 + sa_len][::-1].hex().upper()
    out["ca"] = f"{body[5 + sa_len]:02X}"
    return 5 + sa_len + 3


def _checksum_advice(body: bytes) -> tuple[str, int | None] | None:
    """Why a frame fails its header check, in terms a technician can act on."""
    if len(body) < 5:
        return None
    af = body[4]
    sa_len = (af & 0x0F) + 1
    hcs_end = 5 + sa_len + 3
    if len(body) >= hcs_end and crc16(body[1 : hcs_end - 2]) == int.from_bytes(
        body[hcs_end - 2 : hcs_end], "little"
    ):
        return None  # the header is right; the problem is elsewhere
    for guess in range(1, 17):
        end = 5 + guess + 1
        if (
            guess != sa_len
            and len(body) >= end + 2
            and crc16(body[1:end]) == int.from_bytes(body[end : end + 2], "little")
        ):
            return (
                f"AF=0x{af:02X} announces {sa_len} server-address bytes but only {guess} "
                f"byte(s) follow (the HCS fits {guess}); the AF low nibble should be "
                f"{guess - 1:X}",
                guess,
            )
    if len(body) >= 5 + sa_len + 3:
        hcs = body[5 + sa_len + 1 : 5 + sa_len + 3]
        if hcs == b"\xff\xff":
            return "HCS is FF FF, a placeholder: the sender never computed the CRC-16/X-25", None
    return None


def explain(raw: bytes) -> Explanation:
    """Decode ``raw`` (one frame, FE preamble allowed) into the contract dict."""
    out: Explanation = {
        "protocol": "dlt698.45",
        "valid": False,
        "error": None,
        "address": None,
        "address_type": None,
        "logical_address": None,
        "ca": None,
        "control": None,
        "direction": None,
        "function": None,
        "apdu": None,
        "values": [],
    }
    try:
        _explain_into(bytes(raw), out)
    except Exception as exc:
        out["valid"] = False
        out["error"] = out["error"] or f"internal decoder error: {type(exc).__name__}: {exc}"
    return out


def _explain_into(raw: bytes, out: Explanation) -> None:
    body = raw.lstrip(bytes([PREAMBLE]))
    if not body:
        out["error"] = "no frame: only FE preamble bytes or nothing at all"
        return
    if body[0] != START:
        out["error"] = f"a 698.45 frame starts with 68, this one with {body[0]:02X}"
        return
    apdu_at = _read_header(body, out)
    try:
        frame = decode_frame(body)
    except ProtocolError as exc:
        advice = _checksum_advice(body)
        out["error"] = f"{exc}" + (f" — {advice[0]}" if advice else "")
        if advice and advice[1] is not None:
            # Read the rest as if AF had the length the HCS agrees with.
            fixed = body[:4] + bytes([body[4] & 0xF0 | (advice[1] - 1)]) + body[5:]
            apdu_at = _read_header(fixed, out)
        # Still show the APDU if it is there, flagged by valid=false.
        if apdu_at is not None and len(body) >= apdu_at + 3:
            _explain_apdu(body[apdu_at:-3], out, fragmented=bool(body[3] & 0x20))
        return
    out["valid"] = True
    out["address"] = frame.address.digits
    _explain_apdu(frame.apdu, out, fragmented=frame.control.fragmented)


def _explain_apdu(apdu_bytes: bytes, out: Explanation, *, fragmented: bool) -> None:
    if fragmented:
        try:
            fragment = Fragment.from_bytes(apdu_bytes)
        except ProtocolError as exc:
            out["error"] = out["error"] or f"bad fragment: {exc}"
            out["valid"] = False
            return
        out["fragment"] = {
            "sequence": fragment.sequence,
            "type": fragment.type.name.lower(),
            "data": _hex(fragment.data),
        }
        out["function"] = f"{out['function']} (fragment {fragment.type.name.lower()})"
        return
    try:
        apdu = decode_apdu(apdu_bytes)
    except ProtocolError as exc:
        tag = apdu_bytes[0] if apdu_bytes else None
        out["apdu"] = {
            "service": SERVICE_NAMES.get(tag, "unknown") if tag is not None else None,
            "raw": _hex(apdu_bytes),
        }
        if isinstance(exc, UnsupportedError):
            # The frame is sound; we just do not read this service. Say so, stay valid.
            out["apdu"]["error"] = str(exc)
        elif out["valid"]:
            out["valid"] = False
            out["error"] = f"the link frame is fine but its APDU is not: {exc}"
        return
    out["apdu"], out["values"] = _apdu_json(apdu)
    out["function"] = _function(apdu)
