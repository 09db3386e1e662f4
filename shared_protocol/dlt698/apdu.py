"""DL/T 698.45 application PDUs: one frozen dataclass per service, encoded and decoded.

``decode_apdu(raw)`` reads any supported APDU (tag, choice, body, then the optional
tails: TimeTag for client APDUs, FollowReport + TimeTag for server APDUs);
``encode_apdu(apdu)`` is its exact inverse. The services and their (tag, choice) are
the table ``SERVICES``. Builders for remote control (OI 8000/8001) are at the end.
SECURITY APDUs carry their inner APDU as bytes; the crypto is a :class:`SecurityBackend`
supplied from outside this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Final, Protocol, Self, TypeVar

from shared_protocol.dlt698.data import (
    OAD,
    OMD,
    RCSD,
    RSD,
    SID,
    TI,
    ComDcb,
    Data,
    DataType,
    DateTime698,
    DateTimeS,
    Reader,
    encode_data,
    encode_data_into,
    encode_date_time,
    encode_date_time_s,
    encode_length,
    encode_rcsd,
    encode_rsd,
    encode_sid,
    encode_ti,
    read_data,
    read_dt,
    read_dts,
    read_oad,
    read_omd,
    read_rcsd,
    read_rsd,
    read_sid,
    read_ti,
)
from shared_protocol.errors import (
    LocalProtocolError,
    MalformedFrameError,
    ProtocolError,
    UnsupportedError,
)

__all__ = [
    "DAR_NAMES",
    "SERVICES",
    "ActionRequestNormal",
    "ActionResponseNormal",
    "Apdu",
    "ErrorResponse",
    "FollowReport",
    "GetRequestNormal",
    "GetRequestNormalList",
    "GetRequestRecord",
    "GetResponseNormal",
    "GetResponseNormalList",
    "GetResponseRecord",
    "GetResult",
    "LinkRequest",
    "LinkRequestType",
    "LinkResponse",
    "ProxyTransCommandRequest",
    "ProxyTransCommandResponse",
    "RecordResult",
    "ReportNotificationList",
    "ReportNotificationRecordList",
    "ReportResponseList",
    "ReportResponseRecordList",
    "SecurityBackend",
    "SecurityRequest",
    "SecurityResponse",
    "SecurityVerification",
    "SetRequestNormal",
    "SetResponseNormal",
    "TimeTag",
    "alarm_off",
    "alarm_on",
    "close_relay",
    "dar_name",
    "decode_apdu",
    "encode_apdu",
    "keep_power_off",
    "keep_power_on",
    "make_piid",
    "piid_parts",
    "trip_relay",
]

_T = TypeVar("_T")

# DAR (data access result) codes, DL/T 698.45 asn1:203-240.
DAR_NAMES: Final[dict[int, str]] = {
    0: "success",
    1: "hardware failure",
    2: "temporary failure",
    3: "read/write refused",
    4: "object undefined",
    5: "interface class mismatch",
    6: "object does not exist",
    7: "type mismatch",
    8: "out of range",
    9: "data block unavailable",
    10: "fragmented transfer cancelled",
    11: "not in fragmented transfer",
    12: "block write cancelled",
    13: "no block write in progress",
    14: "invalid data block number",
    15: "password error / unauthorised",
    16: "baud rate cannot be changed",
    17: "too many yearly time zones",
    18: "too many daily time segments",
    19: "too many tariffs",
    20: "security authentication mismatch",
    21: "duplicate recharge",
    22: "ESAM verification failed",
    23: "security authentication failed",
    24: "customer number mismatch",
    25: "recharge count error",
    26: "purchase exceeds hoarding limit",
    27: "address abnormal",
    28: "symmetric decryption error",
    29: "asymmetric decryption error",
    30: "signature error",
    31: "meter suspended",
    32: "invalid time tag",
    255: "other",
}


def dar_name(code: int) -> str:
    return DAR_NAMES.get(code, f"reserved DAR {code}")


def make_piid(sequence: int, high_priority: bool = False) -> int:
    """PIID byte: bit 7 priority, bits 0-5 the service sequence number 0-63."""
    if not 0 <= sequence <= 63:
        raise LocalProtocolError(f"PIID sequence {sequence} is outside 0..63")
    return high_priority << 7 | sequence


def piid_parts(piid: int) -> tuple[bool, bool, int]:
    """(high priority, ACD, sequence) of a PIID / PIID-ACD byte; ACD (bit 6) is only
    meaningful in server replies, where it asks the client to read pending reports."""
    return bool(piid & 0x80), bool(piid & 0x40), piid & 0x3F


def _check_byte(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise LocalProtocolError(f"{name}={value!r} is outside 0..255")


def _check_u16(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise LocalProtocolError(f"{name}={value!r} is outside 0..65535")


_new: Final = object.__new__


def _built(cls: type[_T], fields: dict[str, object]) -> _T:
    """An instance of frozen dataclass ``cls`` holding ``fields`` (every field, in order),
    without its checks: for decoders whose values fit by construction."""
    obj = _new(cls)
    obj.__dict__.update(fields)
    return obj


def _octets(b: bytes) -> bytes:
    return encode_length(len(b)) + b


def _seq(items: Sequence[bytes]) -> bytes:
    return encode_length(len(items)) + b"".join(items)


# ------------------------------------------------------------------ shared pieces


@dataclass(frozen=True)
class TimeTag:
    """When the client sent the request and how long it stays valid."""

    send_time: DateTimeS
    allowed_delay: TI

    def to_bytes(self) -> bytes:
        return encode_date_time_s(self.send_time) + encode_ti(self.allowed_delay)


@dataclass(frozen=True)
class GetResult:
    """A-ResultNormal: an OAD and either its Data or a DAR."""

    oad: OAD
    data: Data | None = None
    dar: int | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.dar is None):
            raise LocalProtocolError("a result carries exactly one of data or dar")
        if self.dar is not None:
            _check_byte("DAR", self.dar)

    def to_bytes(self) -> bytes:
        if self.data is not None:
            out = [self.oad.to_bytes(), b"\x01"]
            encode_data_into(self.data, out)
            return b"".join(out)
        assert self.dar is not None
        return self.oad.to_bytes() + bytes([0, self.dar])

    @classmethod
    def read(cls, r: Reader) -> GetResult:
        oad = read_oad(r)
        choice = r.u8()
        if choice == 1:
            return _built(cls, {"oad": oad, "data": read_data(r), "dar": None})
        if choice == 0:
            return _built(cls, {"oad": oad, "data": None, "dar": r.u8()})
        raise MalformedFrameError(f"Get-Result choice {choice} is neither 0 (DAR) nor 1 (Data)")


@dataclass(frozen=True)
class RecordResult:
    """A-ResultRecord: a record OAD, its columns, and rows (one Data per column) or a DAR."""

    oad: OAD
    rcsd: RCSD
    rows: tuple[tuple[Data, ...], ...] | None = None
    dar: int | None = None

    def __post_init__(self) -> None:
        if (self.rows is None) == (self.dar is None):
            raise LocalProtocolError("a record result carries exactly one of rows or dar")
        if self.dar is not None:
            _check_byte("DAR", self.dar)
        for row in self.rows or ():
            if len(row) != len(self.rcsd.columns):
                raise LocalProtocolError(
                    f"a record row has {len(row)} value(s) for {len(self.rcsd.columns)} column(s)"
                )

    def to_bytes(self) -> bytes:
        head = self.oad.to_bytes() + encode_rcsd(self.rcsd)
        if self.rows is None:
            assert self.dar is not None
            return head + bytes([0, self.dar])
        out = [head, b"\x01", encode_length(len(self.rows))]
        for row in self.rows:
            for d in row:
                encode_data_into(d, out)
        return b"".join(out)

    @classmethod
    def read(cls, r: Reader) -> RecordResult:
        oad = read_oad(r)
        rcsd = read_rcsd(r)
        choice = r.u8()
        if choice == 0:
            return _built(cls, {"oad": oad, "rcsd": rcsd, "rows": None, "dar": r.u8()})
        if choice != 1:
            raise MalformedFrameError(f"record result choice {choice} is neither 0 nor 1")
        width = len(rcsd.columns)
        count = r.count()
        if width == 0 and count:
            raise MalformedFrameError("record rows returned for an empty column selection")
        rows = []
        for _ in range(count):
            row = []
            for _ in range(width):
                row.append(read_data(r))
            rows.append(tuple(row))
        return _built(cls, {"oad": oad, "rcsd": rcsd, "rows": tuple(rows), "dar": None})


@dataclass(frozen=True)
class FollowReport:
    """Reports the server piggybacks on a reply: normal results or record results."""

    results: tuple[GetResult, ...] = ()
    records: tuple[RecordResult, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.results) == bool(self.records) and (self.results or self.records):
            raise LocalProtocolError("a follow report carries results or records, not both")

    def to_bytes(self) -> bytes:
        if self.records:
            return b"\x02" + _seq([x.to_bytes() for x in self.records])
        return b"\x01" + _seq([x.to_bytes() for x in self.results])

    @classmethod
    def read(cls, r: Reader) -> FollowReport:
        choice = r.u8()
        if choice == 1:
            return cls(results=tuple(GetResult.read(r) for _ in range(r.count())))
        if choice == 2:
            return cls(records=tuple(RecordResult.read(r) for _ in range(r.count())))
        raise MalformedFrameError(f"FollowReport choice {choice} is neither 1 nor 2")


# ------------------------------------------------------------------- APDU classes


class Tails(IntEnum):
    NONE = 0
    CLIENT = 1  # TimeTag OPTIONAL
    SERVER = 2  # FollowReport OPTIONAL, TimeTag OPTIONAL


@dataclass(frozen=True)
class Apdu:
    """Base of every APDU: ``TAG`` and ``CHOICE`` name the service on the wire."""

    TAG: ClassVar[int]
    CHOICE: ClassVar[int | None] = None
    TAILS: ClassVar[Tails] = Tails.NONE
    SERVICE: ClassVar[str]

    def _body(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def _read(cls, r: Reader) -> Self:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        return encode_apdu(self)


def _piid_field(value: int) -> None:
    _check_byte("PIID", value)


@dataclass(frozen=True)
class ClientApdu(Apdu):
    TAILS: ClassVar[Tails] = Tails.CLIENT


@dataclass(frozen=True)
class ServerApdu(Apdu):
    TAILS: ClassVar[Tails] = Tails.SERVER


class LinkRequestType(IntEnum):
    LOGIN = 0
    HEARTBEAT = 1
    LOGOUT = 2


@dataclass(frozen=True)
class LinkRequest(Apdu):
    """Server → client login / heartbeat / logout (C=81)."""

    TAG: ClassVar[int] = 0x01
    SERVICE: ClassVar[str] = "LINK-Request"
    piid: int
    kind: LinkRequestType
    heartbeat_seconds: int
    request_time: DateTime698

    def __post_init__(self) -> None:
        _piid_field(self.piid)
        _check_u16("heartbeat", self.heartbeat_seconds)
        if not isinstance(self.kind, LinkRequestType):
            raise LocalProtocolError(f"{self.kind!r} is not a LinkRequestType")

    def _body(self) -> bytes:
        return (
            bytes([self.piid, self.kind])
            + self.heartbeat_seconds.to_bytes(2, "big")
            + encode_date_time(self.request_time)
        )

    @classmethod
    def _read(cls, r: Reader) -> Self:
        piid, kind = r.u8(), r.u8()
        try:
            link_type = LinkRequestType(kind)
        except ValueError:
            raise UnsupportedError(
                f"LINK-Request type {kind} is not login/heartbeat/logout"
            ) from None
        return cls(piid, link_type, r.u16(), read_dt(r))


LINK_RESULT_NAMES: Final[dict[int, str]] = {
    0: "success",
    1: "duplicate address",
    2: "illegal device",
    3: "capacity full",
}


@dataclass(frozen=True)
class LinkResponse(Apdu):
    """Client → server answer to a LINK-Request (C=01)."""

    TAG: ClassVar[int] = 0x81
    SERVICE: ClassVar[str] = "LINK-Response"
    piid: int
    result: int
    request_time: DateTime698
    received_time: DateTime698
    response_time: DateTime698

    def __post_init__(self) -> None:
        _piid_field(self.piid)
        _check_byte("result", self.result)

    @property
    def clock_trusted(self) -> bool:
        return bool(self.result & 0x80)

    @property
    def result_name(self) -> str:
        return LINK_RESULT_NAMES.get(self.result & 0x07, f"reserved {self.result & 0x07}")

    def _body(self) -> bytes:
        return bytes([self.piid, self.result]) + b"".join(
            encode_date_time(t) for t in (self.request_time, self.received_time, self.response_time)
        )

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u8(), r.u8(), read_dt(r), read_dt(r), read_dt(r))


@dataclass(frozen=True)
class GetRequestNormal(ClientApdu):
    TAG: ClassVar[int] = 0x05
    CHOICE: ClassVar[int | None] = 1
    SERVICE: ClassVar[str] = "GET-Request"
    piid: int
    oad: OAD
    time_tag: TimeTag | None = None

    def __post_init__(self) -> None:
        _piid_field(self.piid)

    def _body(self) -> bytes:
        return bytes([self.piid]) + self.oad.to_bytes()

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return _built(cls, {"piid": r.u8(), "oad": read_oad(r), "time_tag": None})


@dataclass(frozen=True)
class GetRequestNormalList(ClientApdu):
    TAG: ClassVar[int] = 0x05
    CHOICE: ClassVar[int | None] = 2
    SERVICE: ClassVar[str] = "GET-Request"
    piid: int
    oads: tuple[OAD, ...]
    time_tag: TimeTag | None = None

    def __post_init__(self) -> None:
        _piid_field(self.piid)

    def _body(self) -> bytes:
        return bytes([self.piid]) + _seq([o.to_bytes() for o in self.oads])

    @classmethod
    def _read(cls, r: Reader) -> Self:
        piid = r.u8()
        return cls(piid, tuple(read_oad(r) for _ in range(r.count())))


@dataclass(frozen=True)
class GetRequestRecord(ClientApdu):
    TAG: ClassVar[int] = 0x05
    CHOICE: ClassVar[int | None] = 3
    SERVICE: ClassVar[str] = "GET-Request"
    piid: int
    oad: OAD
    rsd: RSD
    rcsd: RCSD
    time_tag: TimeTag | None = None

    def __post_init__(self) -> None:
        _piid_field(self.piid)

    def _body(self) -> bytes:
        return (
            bytes([self.piid]) + self.oad.to_bytes() + encode_rsd(self.rsd) + encode_rcsd(self.rcsd)
        )

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return _built(
            cls,
            {
                "piid": r.u8(),
                "oad": read_oad(r),
                "rsd": read_rsd(r),
                "rcsd": read_rcsd(r),
                "time_tag": None,
            },
        )


@dataclass(frozen=True)
class GetResponseNormal(ServerApdu):
    TAG: ClassVar[int] = 0x85
    CHOICE: ClassVar[int | None] = 1
    SERVICE: ClassVar[str] = "GET-Response"
    piid: int
    result: GetResult
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None

    def __post_init__(self) -> None:
        _piid_field(self.piid)

    def _body(self) -> bytes:
        return bytes([self.piid]) + self.result.to_bytes()

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return _built(
            cls,
            {"piid": r.u8(), "result": GetResult.read(r), "follow_report": None, "time_tag": None},
        )


@dataclass(frozen=True)
class GetResponseNormalList(ServerApdu):
    TAG: ClassVar[int] = 0x85
    CHOICE: ClassVar[int | None] = 2
    SERVICE: ClassVar[str] = "GET-Response"
    piid: int
    results: tuple[GetResult, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None

    def __post_init__(self) -> None:
        _piid_field(self.piid)

    def _body(self) -> bytes:
        return bytes([self.piid]) + _seq([x.to_bytes() for x in self.results])

    @classmethod
    def _read(cls, r: Reader) -> Self:
        piid = r.u8()
        return cls(piid, tuple(GetResult.read(r) for _ in range(r.count())))


@dataclass(frozen=True)
class GetResponseRecord(ServerApdu):
    TAG: ClassVar[int] = 0x85
    CHOICE: ClassVar[int | None] = 3
    SERVICE: ClassVar[str] = "GET-Response"
    piid: int
    result: RecordResult
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None

    def __post_init__(self) -> None:
        _piid_field(self.piid)

    def _body(self) -> bytes:
        return bytes([self.piid]) + self.result.to_bytes()

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return _built(
            cls,
            {
                "piid": r.u8(),
                "result": RecordResult.read(r),
                "follow_report": None,
                "time_tag": None,
            },
        )


@dataclass(frozen=True)
class SetRequestNormal(ClientApdu):
    TAG: ClassVar[int] = 0x06
    CHOICE: ClassVar[int | None] = 1
    SERVICE: ClassVar[str] = "SET-Request"
    piid: int
    oad: OAD
    data: Data
    time_tag: TimeTag | None = None

    def __post_init__(self) -> None:
        _piid_field(self.piid)

    def _body(self) -> bytes:
        return bytes([self.piid]) + self.oad.to_bytes() + encode_data(self.data)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u8(), read_oad(r), read_data(r))


@dataclass(frozen=True)
class SetResponseNormal(ServerApdu):
    TAG: ClassVar[int] = 0x86
    CHOICE: ClassVar[int | None] = 1
    SERVICE: ClassVar[str] = "SET-Response"
    piid: int
    oad: OAD
    dar: int
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None

    def __post_init__(self) -> None:
        _piid_field(self.piid)
        _check_byte("DAR", self.dar)

    def _body(self) -> bytes:
        return bytes([self.piid]) + self.oad.to_bytes() + bytes([self.dar])

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u8(), read_oad(r), r.u8())


@dataclass(frozen=True)
class ActionRequestNormal(ClientApdu):
    TAG: ClassVar[int] = 0x07
    CHOICE: ClassVar[int | None] = 1
    SERVICE: ClassVar[str] = "ACTION-Request"
    piid: int
    omd: OMD
    data: Data
    time_tag: TimeTag | None = None

    def __post_init__(self) -> None:
        _piid_field(self.piid)

    def _body(self) -> bytes:
        return bytes([self.piid]) + self.omd.to_bytes() + encode_data(self.data)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u8(), read_omd(r), read_data(r))


@dataclass(frozen=True)
class ActionResponseNormal(ServerApdu):
    TAG: ClassVar[int] = 0x87
    CHOICE: ClassVar[int | None] = 1
    SERVICE: ClassVar[str] = "ACTION-Response"
    piid: int
    omd: OMD
    dar: int
    data: Data | None = None
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None

    def __post_init__(self) -> None:
        _piid_field(self.piid)
        _check_byte("DAR", self.dar)

    def _body(self) -> bytes:
        out = bytes([self.piid]) + self.omd.to_bytes() + bytes([self.dar])
        return out + (b"\x00" if self.data is None else b"\x01" + encode_data(self.data))

    @classmethod
    def _read(cls, r: Reader) -> Self:
        piid, omd, dar = r.u8(), read_omd(r), r.u8()
        return cls(piid, omd, dar, read_data(r) if r.optional() else None)


@dataclass(frozen=True)
class ReportNotificationList(ServerApdu):
    TAG: ClassVar[int] = 0x88
    CHOICE: ClassVar[int | None] = 1
    SERVICE: ClassVar[str] = "REPORT-Notification"
    piid: int
    results: tuple[GetResult, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None

    def __post_init__(self) -> None:
        _piid_field(self.piid)

    def _body(self) -> bytes:
        return bytes([self.piid]) + _seq([x.to_bytes() for x in self.results])

    @classmethod
    def _read(cls, r: Reader) -> Self:
        piid = r.u8()
        return cls(piid, tuple(GetResult.read(r) for _ in range(r.count())))


@dataclass(frozen=True)
class ReportNotificationRecordList(ServerApdu):
    TAG: ClassVar[int] = 0x88
    CHOICE: ClassVar[int | None] = 2
    SERVICE: ClassVar[str] = "REPORT-Notification"
    piid: int
    records: tuple[RecordResult, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None

    def __post_init__(self) -> None:
        _piid_field(self.piid)

    def _body(self) -> bytes:
        return bytes([self.piid]) + _seq([x.to_bytes() for x in self.records])

    @classmethod
    def _read(cls, r: Reader) -> Self:
        piid = r.u8()
        return cls(piid, tuple(RecordResult.read(r) for _ in range(r.count())))


@dataclass(frozen=True)
class ReportResponseList(ClientApdu):
    """Client acknowledges a REPORT-Notification List (C=03)."""

    TAG: ClassVar[int] = 0x08
    CHOICE: ClassVar[int | None] = 1
    SERVICE: ClassVar[str] = "REPORT-Response"
    piid: int
    oads: tuple[OAD, ...]
    time_tag: TimeTag | None = None

    def __post_init__(self) -> None:
        _piid_field(self.piid)

    def _body(self) -> bytes:
        return bytes([self.piid]) + _seq([o.to_bytes() for o in self.oads])

    @classmethod
    def _read(cls, r: Reader) -> Self:
        piid = r.u8()
        return cls(piid, tuple(read_oad(r) for _ in range(r.count())))


@dataclass(frozen=True)
class ReportResponseRecordList(ReportResponseList):
    """Client acknowledges a REPORT-Notification RecordList."""

    CHOICE: ClassVar[int | None] = 2


@dataclass(frozen=True)
class ProxyTransCommandRequest(ClientApdu):
    """PROXY 09 07: forward ``command`` (e.g. a 645 frame) out of serial ``port``."""

    TAG: ClassVar[int] = 0x09
    CHOICE: ClassVar[int | None] = 7
    SERVICE: ClassVar[str] = "PROXY-Request"
    piid: int
    port: OAD
    comdcb: ComDcb
    frame_timeout_s: int
    byte_timeout_ms: int
    command: bytes
    time_tag: TimeTag | None = None

    def __post_init__(self) -> None:
        _piid_field(self.piid)
        _check_u16("frame timeout", self.frame_timeout_s)
        _check_u16("byte timeout", self.byte_timeout_ms)

    def _body(self) -> bytes:
        c = self.comdcb
        return (
            bytes([self.piid])
            + self.port.to_bytes()
            + bytes([c.baud, c.parity, c.data_bits, c.stop_bits, c.flow_control])
            + self.frame_timeout_s.to_bytes(2, "big")
            + self.byte_timeout_ms.to_bytes(2, "big")
            + _octets(self.command)
        )

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u8(), read_oad(r), ComDcb(*r.take(5)), r.u16(), r.u16(), r.octets())


@dataclass(frozen=True)
class ProxyTransCommandResponse(ServerApdu):
    TAG: ClassVar[int] = 0x89
    CHOICE: ClassVar[int | None] = 7
    SERVICE: ClassVar[str] = "PROXY-Response"
    piid: int
    port: OAD
    reply: bytes | None = None
    dar: int | None = None
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None

    def __post_init__(self) -> None:
        _piid_field(self.piid)
        if (self.reply is None) == (self.dar is None):
            raise LocalProtocolError("a proxy response carries exactly one of reply or dar")

    def _body(self) -> bytes:
        head = bytes([self.piid]) + self.port.to_bytes()
        if self.reply is not None:
            return head + b"\x01" + _octets(self.reply)
        assert self.dar is not None
        return head + bytes([0, self.dar])

    @classmethod
    def _read(cls, r: Reader) -> Self:
        piid, port, choice = r.u8(), read_oad(r), r.u8()
        if choice == 1:
            return cls(piid, port, reply=r.octets())
        if choice == 0:
            return cls(piid, port, dar=r.u8())
        raise MalformedFrameError(f"proxy response choice {choice} is neither 0 nor 1")


class VerificationKind(IntEnum):
    SID_MAC = 0
    RN = 1
    RN_MAC = 2
    SID = 3


@dataclass(frozen=True)
class SecurityVerification:
    """How a secured request is verified: SID_MAC, RN, RN + MAC, or SID."""

    kind: VerificationKind
    sid: SID | None = None
    rn: bytes | None = None
    mac: bytes | None = None

    def __post_init__(self) -> None:
        needs = _VERIFICATION_FIELDS.get(self.kind)
        if needs is None:
            raise LocalProtocolError(f"{self.kind!r} is not a VerificationKind")
        present = {n for n in ("sid", "rn", "mac") if getattr(self, n) is not None}
        if present != needs:
            raise LocalProtocolError(
                f"{self.kind.name} verification needs {sorted(needs)}, got {sorted(present)}"
            )

    def to_bytes(self) -> bytes:
        if self.kind is VerificationKind.SID_MAC:
            assert self.sid is not None and self.mac is not None
            return b"\x00" + encode_sid(self.sid) + _octets(self.mac)
        if self.kind is VerificationKind.RN:
            assert self.rn is not None
            return b"\x01" + _octets(self.rn)
        if self.kind is VerificationKind.RN_MAC:
            assert self.rn is not None and self.mac is not None
            return b"\x02" + _octets(self.rn) + _octets(self.mac)
        assert self.sid is not None
        return b"\x03" + encode_sid(self.sid)

    @classmethod
    def read(cls, r: Reader) -> SecurityVerification:
        choice = r.u8()
        if choice == 0:
            sid = read_sid(r)
            return cls(VerificationKind.SID_MAC, sid=sid, mac=r.octets())
        if choice == 1:
            return cls(VerificationKind.RN, rn=r.octets())
        if choice == 2:
            rn = r.octets()
            return cls(VerificationKind.RN_MAC, rn=rn, mac=r.octets())
        if choice == 3:
            return cls(VerificationKind.SID, sid=read_sid(r))
        raise MalformedFrameError(f"security verification choice {choice} is not 0..3")


_VERIFICATION_FIELDS: Final[dict[VerificationKind, set[str]]] = {
    VerificationKind.SID_MAC: {"sid", "mac"},
    VerificationKind.RN: {"rn"},
    VerificationKind.RN_MAC: {"rn", "mac"},
    VerificationKind.SID: {"sid"},
}


@dataclass(frozen=True)
class SecurityRequest(Apdu):
    """SECURITY-Request (10): an inner APDU in plaintext or ciphertext, plus verification."""

    TAG: ClassVar[int] = 0x10
    SERVICE: ClassVar[str] = "SECURITY-Request"
    payload: bytes
    verification: SecurityVerification
    ciphertext: bool = False

    @classmethod
    def plaintext_rn(cls, inner: Apdu, rn: bytes) -> SecurityRequest:
        """Plaintext + RN: the meter answers with plaintext + MAC over its reply."""
        return cls(encode_apdu(inner), SecurityVerification(VerificationKind.RN, rn=rn))

    def inner(self) -> Apdu:
        if self.ciphertext:
            raise UnsupportedError("ciphertext needs a SecurityBackend to unwrap")
        return decode_apdu(self.payload)

    def _body(self) -> bytes:
        return bytes([self.ciphertext]) + _octets(self.payload) + self.verification.to_bytes()

    @classmethod
    def _read(cls, r: Reader) -> Self:
        choice = r.u8()
        if choice > 1:
            raise MalformedFrameError(f"security APDU choice {choice} is neither plain nor cipher")
        payload = r.octets()
        return cls(payload, SecurityVerification.read(r), choice == 1)


@dataclass(frozen=True)
class SecurityResponse(Apdu):
    """SECURITY-Response (90): plaintext/ciphertext inner APDU or a DAR, optional MAC."""

    TAG: ClassVar[int] = 0x90
    SERVICE: ClassVar[str] = "SECURITY-Response"
    payload: bytes | None = None
    ciphertext: bool = False
    dar: int | None = None
    mac: bytes | None = None

    def __post_init__(self) -> None:
        if (self.payload is None) == (self.dar is None):
            raise LocalProtocolError("a security response carries exactly one of payload or dar")
        if self.dar is not None:
            _check_byte("DAR", self.dar)

    def inner(self) -> Apdu:
        if self.payload is None or self.ciphertext:
            raise UnsupportedError("no plaintext inner APDU (ciphertext or error)")
        return decode_apdu(self.payload)

    def _body(self) -> bytes:
        if self.payload is not None:
            out = bytes([self.ciphertext]) + _octets(self.payload)
        else:
            assert self.dar is not None
            out = bytes([2, self.dar])
        if self.mac is None:
            return out + b"\x00"
        return out + b"\x01\x00" + _octets(self.mac)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        choice = r.u8()
        payload: bytes | None = None
        dar: int | None = None
        if choice in (0, 1):
            payload = r.octets()
        elif choice == 2:
            dar = r.u8()
        else:
            raise MalformedFrameError(f"security response choice {choice} is not 0..2")
        mac: bytes | None = None
        if r.optional():
            kind = r.u8()
            if kind != 0:
                raise MalformedFrameError(f"security response verification {kind} is not 0 (MAC)")
            mac = r.octets()
        return cls(payload, choice == 1, dar, mac)


class SecurityBackend(Protocol):
    """What an ESAM (or a simulated one) provides; this package has no crypto of its own."""

    def wrap(self, apdu: bytes) -> SecurityRequest:
        """Protect a client APDU for sending."""
        ...

    def unwrap(self, response: SecurityResponse) -> bytes:
        """Check (and decrypt) a server reply; return the inner APDU bytes."""
        ...


ERROR_NAMES: Final[dict[int, str]] = {
    1: "APDU cannot be parsed",
    2: "service not supported",
    255: "other",
}


@dataclass(frozen=True)
class ErrorResponse(Apdu):
    """ERROR-Response: 6E from the client, EE from the server. [U] no tails assumed."""

    TAG: ClassVar[int] = 0xEE
    SERVICE: ClassVar[str] = "ERROR-Response"
    piid: int
    error: int

    def __post_init__(self) -> None:
        _piid_field(self.piid)
        _check_byte("error", self.error)

    @property
    def error_name(self) -> str:
        return ERROR_NAMES.get(self.error, f"reserved {self.error}")

    def _body(self) -> bytes:
        return bytes([self.piid, self.error])

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u8(), r.u8())


@dataclass(frozen=True)
class ClientErrorResponse(ErrorResponse):
    TAG: ClassVar[int] = 0x6E


_APDU_CLASSES: Final[tuple[type[Apdu], ...]] = (
    LinkRequest,
    LinkResponse,
    GetRequestNormal,
    GetRequestNormalList,
    GetRequestRecord,
    GetResponseNormal,
    GetResponseNormalList,
    GetResponseRecord,
    SetRequestNormal,
    SetResponseNormal,
    ActionRequestNormal,
    ActionResponseNormal,
    ReportNotificationList,
    ReportNotificationRecordList,
    ReportResponseList,
    ReportResponseRecordList,
    ProxyTransCommandRequest,
    ProxyTransCommandResponse,
    SecurityRequest,
    SecurityResponse,
    ErrorResponse,
    ClientErrorResponse,
)

# (tag, choice or None) → class; the one table both encode and decode use.
SERVICES: Final[dict[tuple[int, int | None], type[Apdu]]] = {
    (c.TAG, c.CHOICE): c for c in _APDU_CLASSES
}
_CHOICE_TAGS: Final = frozenset(tag for tag, choice in SERVICES if choice is not None)
# Class → its tag (and choice) bytes, the start of every encoding.
_HEADS: Final[dict[type[Apdu], bytes]] = {
    c: bytes([c.TAG]) if c.CHOICE is None else bytes([c.TAG, c.CHOICE]) for c in _APDU_CLASSES
}

SERVICE_NAMES: Final[dict[int, str]] = {
    0x01: "LINK-Request",
    0x02: "CONNECT-Request",
    0x03: "RELEASE-Request",
    0x05: "GET-Request",
    0x06: "SET-Request",
    0x07: "ACTION-Request",
    0x08: "REPORT-Response",
    0x09: "PROXY-Request",
    0x10: "SECURITY-Request",
    0x6E: "ERROR-Response",
    0x81: "LINK-Response",
    0x82: "CONNECT-Response",
    0x83: "RELEASE-Response",
    0x84: "RELEASE-Notification",
    0x85: "GET-Response",
    0x86: "SET-Response",
    0x87: "ACTION-Response",
    0x88: "REPORT-Notification",
    0x89: "PROXY-Response",
    0x90: "SECURITY-Response",
    0xEE: "ERROR-Response",
}


def _read_time_tag(r: Reader) -> TimeTag | None:
    if not r.optional():
        return None
    return TimeTag(read_dts(r), read_ti(r))


def encode_apdu(apdu: Apdu) -> bytes:
    """The bytes of ``apdu`` including its optional tails."""
    head = _HEADS.get(type(apdu))  # only exact APDU classes are encodable
    if head is None:
        raise LocalProtocolError(f"{apdu!r} is not an encodable APDU")
    tails = apdu.TAILS
    if tails is Tails.NONE:
        return head + apdu._body()
    out = [head, apdu._body()]
    if tails is Tails.SERVER:
        follow: FollowReport | None = getattr(apdu, "follow_report", None)
        out.append(b"\x00" if follow is None else b"\x01" + follow.to_bytes())
    tag: TimeTag | None = getattr(apdu, "time_tag", None)
    out.append(b"\x00" if tag is None else b"\x01" + tag.to_bytes())
    return b"".join(out)


def _with_tails(apdu: Apdu, r: Reader) -> Apdu:
    if r.pos >= len(r.buf):  # no tails at all
        return apdu
    follow: FollowReport | None = None
    tails = apdu.TAILS
    if tails is Tails.SERVER and r.optional():
        follow = FollowReport.read(r)
    tag: TimeTag | None = None
    if tails is not Tails.NONE and r.pos < len(r.buf):
        tag = _read_time_tag(r)
    if follow is None and tag is None:
        return apdu
    fields = dict(apdu.__dict__)
    if follow is not None:
        fields["follow_report"] = follow
    if tag is not None:
        fields["time_tag"] = tag
    return type(apdu)(**fields)


def decode_apdu(raw: bytes) -> Apdu:
    """One APDU filling ``raw``. Tails that are absent altogether are accepted (some
    devices omit them) but re-encode as explicit ``00``. [U]"""
    buf = bytes(raw)
    r = Reader(buf)
    try:
        if not buf:
            r.take(1)  # raises the truncation error
        tag = buf[0]
        choice: int | None = None
        if tag in _CHOICE_TAGS:
            if len(buf) < 2:
                r.pos = 1
                r.take(1)  # raises the truncation error
            choice = buf[1]
            r.pos = 2
        else:
            r.pos = 1
        cls = SERVICES.get((tag, choice))
        if cls is None:
            name = SERVICE_NAMES.get(tag, f"unknown APDU tag 0x{tag:02X}")
            what = name if choice is None else f"{name} choice {choice}"
            raise UnsupportedError(f"{what} is not supported by this codec")
        apdu = _with_tails(cls._read(r), r)
        if r.pos < len(r.buf):
            raise MalformedFrameError(f"{r.remaining} byte(s) left after the {cls.SERVICE} APDU")
        return apdu
    except (ProtocolError, ValueError) as exc:
        if isinstance(exc, LocalProtocolError | ValueError):
            # A value our own constructors refuse came off the line: the peer's fault.
            raise MalformedFrameError(str(exc)) from None
        raise


# ------------------------------------------------------------- remote control (8000)

RELAY_1: Final = OAD(0xF205, 2, 1)


def trip_relay(
    piid: int,
    *,
    alarm_delay_min: int = 0,
    duration_min: int = 0,
    auto_close: bool = False,
    relay: OAD = RELAY_1,
    time_tag: TimeTag | None = None,
) -> ActionRequestNormal:
    """ACTION 80008100 trip: duration 0 = stay open; auto_close True = close directly after.

    The parameter types (unsigned delay, long-unsigned duration) come from vendor code,
    not the standard text [U]. Real meters want this inside SECURITY with a TimeTag.
    """
    param = Data.array(
        Data.structure(
            Data(DataType.OAD, relay),
            Data(DataType.UNSIGNED, alarm_delay_min),
            Data(DataType.LONG_UNSIGNED, duration_min),
            Data(DataType.BOOL, auto_close),
        )
    )
    return ActionRequestNormal(piid, OMD(0x8000, 0x81), param, time_tag)


class CloseCommand(IntEnum):
    CLOSE_ALLOWED = 0
    CLOSE_DIRECTLY = 1


def close_relay(
    piid: int,
    command: CloseCommand = CloseCommand.CLOSE_ALLOWED,
    *,
    relay: OAD = RELAY_1,
    time_tag: TimeTag | None = None,
) -> ActionRequestNormal:
    """ACTION 80008200 close: enum 0 close-allowed (customer presses) / 1 close directly."""
    param = Data.array(Data.structure(Data(DataType.OAD, relay), Data(DataType.ENUM, int(command))))
    return ActionRequestNormal(piid, OMD(0x8000, 0x82), param, time_tag)


def _null_action(oi: int, method: int) -> NullActionBuilder:
    def build(piid: int, *, time_tag: TimeTag | None = None) -> ActionRequestNormal:
        return ActionRequestNormal(piid, OMD(oi, method), Data(DataType.NULL), time_tag)

    build.__doc__ = f"ACTION {oi:04X}{method:02X}00 with a NULL parameter."
    return build


class NullActionBuilder(Protocol):
    def __call__(self, piid: int, *, time_tag: TimeTag | None = None) -> ActionRequestNormal: ...


alarm_on = _null_action(0x8000, 0x7F)
alarm_off = _null_action(0x8000, 0x80)
keep_power_on = _null_action(0x8001, 0x7F)
keep_power_off = _null_action(0x8001, 0x80)
