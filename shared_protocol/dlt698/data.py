"""DL/T 698.45 ``Data``: the A-XDR tagged value every APDU carries, encoded and decoded.

A :class:`Data` is a tag (:class:`DataType`) and a Python value whose type the tag fixes
(see ``_VALUE_KINDS``). Composite protocol types (OAD, ROAD, OMD, TI, RSD, CSD, MS, RCSD,
…) are small frozen dataclasses here too, because the APDU layer reuses them outside
``Data``. ``encode_data``/``decode_data`` are exact inverses; a decoder never recurses
deeper than :data:`MAX_DEPTH`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from enum import IntEnum
from typing import Final, Union

from shared_protocol.errors import (
    LocalProtocolError,
    MalformedFrameError,
    UnsupportedError,
)

__all__ = [
    "CSD",
    "MAX_DEPTH",
    "MS",
    "OAD",
    "OMD",
    "RCSD",
    "ROAD",
    "RSD",
    "SID",
    "SIDMAC",
    "TI",
    "BitString",
    "ComDcb",
    "Data",
    "DataType",
    "DataValue",
    "Date698",
    "DateTime698",
    "DateTimeS",
    "Reader",
    "Region",
    "ScalerUnit",
    "Time698",
    "decode_data",
    "encode_data",
    "encode_date_time",
    "encode_date_time_s",
    "encode_length",
    "encode_rcsd",
    "encode_rsd",
    "encode_sid",
    "encode_ti",
    "read_data",
]

# Deepest Data nesting we accept. Real payloads nest at most ~5 levels (a report's
# array of records of structures of arrays); 16 leaves headroom while keeping a hostile
# "01 01 01 01 …" bomb from exhausting the Python stack.
MAX_DEPTH: Final = 16


class DataType(IntEnum):
    """Data CHOICE tags (DL/T 698.45 §7.3.1, asn1:361-400)."""

    NULL = 0x00
    ARRAY = 0x01
    STRUCTURE = 0x02
    BOOL = 0x03
    BIT_STRING = 0x04
    DOUBLE_LONG = 0x05
    DOUBLE_LONG_UNSIGNED = 0x06
    OCTET_STRING = 0x09
    VISIBLE_STRING = 0x0A
    UTF8_STRING = 0x0C
    INTEGER = 0x0F
    LONG = 0x10
    UNSIGNED = 0x11
    LONG_UNSIGNED = 0x12
    LONG64 = 0x14
    LONG64_UNSIGNED = 0x15
    ENUM = 0x16
    FLOAT32 = 0x17
    FLOAT64 = 0x18
    DATE_TIME = 0x19
    DATE = 0x1A
    TIME = 0x1B
    DATE_TIME_S = 0x1C
    OI = 0x50
    OAD = 0x51
    ROAD = 0x52
    OMD = 0x53
    TI = 0x54
    TSA = 0x55
    MAC = 0x56
    RN = 0x57
    REGION = 0x58
    SCALER_UNIT = 0x59
    RSD = 0x5A
    CSD = 0x5B
    MS = 0x5C
    SID = 0x5D
    SID_MAC = 0x5E
    COMDCB = 0x5F
    RCSD = 0x60


# --------------------------------------------------------------------------- reader


class Reader:
    """A cursor over received bytes; running off the end is a malformed frame."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise MalformedFrameError(
                f"truncated: needed {n} byte(s) at offset {self.pos}, {self.remaining} left"
            )
        chunk = self.buf[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        pos = self.pos
        buf = self.buf
        if pos >= len(buf):
            self.take(1)  # raises the truncation error
        self.pos = pos + 1
        return buf[pos]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def length(self) -> int:
        """An A-XDR length: one byte below 0x80, else 0x8n and n big-endian length bytes."""
        pos = self.pos
        buf = self.buf
        if pos >= len(buf):
            self.take(1)  # raises the truncation error
        first = buf[pos]
        self.pos = pos + 1
        if first < 0x80:
            return first
        count = first & 0x7F
        if count == 0 or count > 4:
            raise MalformedFrameError(f"A-XDR length prefix 0x{first:02X} is not valid")
        # Not checked against the bytes left here: a bit-string length counts bits.
        return int.from_bytes(self.take(count), "big")

    def count(self) -> int:
        """A SEQUENCE OF count; every element takes ≥1 byte, so it cannot exceed the rest."""
        n = self.length()
        if n > len(self.buf) - self.pos:
            raise MalformedFrameError(
                f"element count {n} exceeds the {self.remaining} byte(s) left"
            )
        return n

    def octets(self) -> bytes:
        return self.take(self.length())

    def optional(self) -> bool:
        pos = self.pos
        buf = self.buf
        if pos >= len(buf):
            self.take(1)  # raises the truncation error
        flag = buf[pos]
        self.pos = pos + 1
        if flag > 1:
            raise MalformedFrameError(f"OPTIONAL flag 0x{flag:02X} is neither 00 nor 01")
        return flag == 1


def encode_length(n: int) -> bytes:
    """A-XDR length prefix for ``n``."""
    if n < 0:
        raise LocalProtocolError(f"negative length {n}")
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if len(body) > 4:
        raise LocalProtocolError(f"length {n} does not fit an A-XDR length")
    return bytes([0x80 | len(body)]) + body


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LocalProtocolError(f"{name}={value!r} is outside {low}..{high}")


# --------------------------------------------------------------------- small types


_pack_oad: Final = struct.Struct(">HBB").pack
_new: Final = object.__new__


@dataclass(frozen=True)
class OAD:
    """Object attribute descriptor: OI, attribute (bits 0-4) + feature (bits 5-7), index."""

    oi: int
    attribute: int
    index: int = 0
    feature: int = 0

    def __post_init__(self) -> None:
        _check_range("OI", self.oi, 0, 0xFFFF)
        _check_range("attribute", self.attribute, 0, 31)
        _check_range("feature", self.feature, 0, 7)
        _check_range("index", self.index, 0, 255)

    @classmethod
    def parse(cls, text: str) -> OAD:
        """``OAD.parse("00100200")``: eight hex digits as written in the standard."""
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise LocalProtocolError(f"{text!r} is not an OAD like '00100200'") from None
        if len(raw) != 4:
            raise LocalProtocolError(f"{text!r} is not an OAD like '00100200' (8 hex digits)")
        return cls.from_bytes(raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> OAD:
        return cls(int.from_bytes(raw[:2], "big"), raw[2] & 0x1F, raw[3], raw[2] >> 5)

    def to_bytes(self) -> bytes:
        return _pack_oad(self.oi, self.feature << 5 | self.attribute, self.index)

    def with_index(self, index: int) -> OAD:
        return OAD(self.oi, self.attribute, index, self.feature)

    def __str__(self) -> str:
        return self.to_bytes().hex().upper()


@dataclass(frozen=True)
class OMD:
    """Object method descriptor: OI, method id, operation mode."""

    oi: int
    method: int
    mode: int = 0

    def __post_init__(self) -> None:
        _check_range("OI", self.oi, 0, 0xFFFF)
        _check_range("method", self.method, 0, 255)
        _check_range("mode", self.mode, 0, 255)

    @classmethod
    def parse(cls, text: str) -> OMD:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise LocalProtocolError(f"{text!r} is not an OMD like '80008100'") from None
        if len(raw) != 4:
            raise LocalProtocolError(f"{text!r} is not an OMD like '80008100' (8 hex digits)")
        return cls(int.from_bytes(raw[:2], "big"), raw[2], raw[3])

    def to_bytes(self) -> bytes:
        return self.oi.to_bytes(2, "big") + bytes([self.method, self.mode])

    def __str__(self) -> str:
        return self.to_bytes().hex().upper()


@dataclass(frozen=True)
class ROAD:
    """Record OAD: a record object and the column OADs associated with it."""

    oad: OAD
    columns: tuple[OAD, ...] = ()


class TIUnit(IntEnum):
    SECOND = 0
    MINUTE = 1
    HOUR = 2
    DAY = 3
    MONTH = 4
    YEAR = 5


@dataclass(frozen=True)
class TI:
    """Time interval: unit enum (0 s … 5 year) and a long-unsigned count."""

    unit: int
    interval: int

    def __post_init__(self) -> None:
        _check_range("TI unit", self.unit, 0, 5)  # second, minute, hour, day, month, year
        _check_range("TI interval", self.interval, 0, 0xFFFF)


@dataclass(frozen=True)
class BitString:
    """``bits`` bits, most significant first, packed into ``ceil(bits/8)`` bytes."""

    bits: int
    data: bytes

    def __post_init__(self) -> None:
        _check_range("bit count", self.bits, 0, 0xFFFFFFFF)
        if len(self.data) != (self.bits + 7) // 8:
            raise LocalProtocolError(
                f"a {self.bits}-bit string needs {(self.bits + 7) // 8} byte(s), "
                f"got {len(self.data)}"
            )

    def bit(self, n: int) -> bool:
        """Bit ``n`` counted from the first (most significant) bit on the wire."""
        if not 0 <= n < self.bits:
            raise LocalProtocolError(f"bit {n} outside 0..{self.bits - 1}")
        return bool(self.data[n // 8] & (0x80 >> (n % 8)))


@dataclass(frozen=True)
class DateTime698:
    """date_time (10 bytes). Fields are kept raw: 0xFF(FF) means 'not specified'."""

    year: int
    month: int
    day: int
    weekday: int
    hour: int
    minute: int
    second: int
    millisecond: int = 0

    def __post_init__(self) -> None:
        _check_range("year", self.year, 0, 0xFFFF)
        _check_range("millisecond", self.millisecond, 0, 0xFFFF)
        for name in ("month", "day", "weekday", "hour", "minute", "second"):
            _check_range(name, getattr(self, name), 0, 255)

    @classmethod
    def from_datetime(cls, value: datetime) -> DateTime698:
        # 698.45 weekday: 0 = Sunday … 6 = Saturday.
        return cls(
            value.year,
            value.month,
            value.day,
            (value.weekday() + 1) % 7,
            value.hour,
            value.minute,
            value.second,
            value.microsecond // 1000,
        )

    def to_datetime(self) -> datetime:
        try:
            return datetime(
                self.year,
                self.month,
                self.day,
                self.hour,
                self.minute,
                self.second,
                self.millisecond * 1000,
            )
        except ValueError as exc:
            raise UnsupportedError(f"date_time {self} is not a calendar time: {exc}") from None

    def __str__(self) -> str:
        return (
            f"{self.year:04d}-{self.month:02d}-{self.day:02d} wd{self.weekday} "
            f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}.{self.millisecond:03d}"
        )


@dataclass(frozen=True)
class DateTimeS:
    """date_time_s (7 bytes, no weekday)."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int

    def __post_init__(self) -> None:
        _check_range("year", self.year, 0, 0xFFFF)
        for name in ("month", "day", "hour", "minute", "second"):
            _check_range(name, getattr(self, name), 0, 255)

    @classmethod
    def from_datetime(cls, value: datetime) -> DateTimeS:
        return cls(value.year, value.month, value.day, value.hour, value.minute, value.second)

    def to_datetime(self) -> datetime:
        try:
            return datetime(self.year, self.month, self.day, self.hour, self.minute, self.second)
        except ValueError as exc:
            raise UnsupportedError(f"date_time_s {self} is not a calendar time: {exc}") from None

    def __str__(self) -> str:
        return (
            f"{self.year:04d}-{self.month:02d}-{self.day:02d} "
            f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}"
        )


@dataclass(frozen=True)
class Date698:
    """date (5 bytes): year, month, day, weekday."""

    year: int
    month: int
    day: int
    weekday: int

    def __post_init__(self) -> None:
        _check_range("year", self.year, 0, 0xFFFF)
        for name in ("month", "day", "weekday"):
            _check_range(name, getattr(self, name), 0, 255)

    def to_date(self) -> date:
        try:
            return date(self.year, self.month, self.day)
        except ValueError as exc:
            raise UnsupportedError(f"date {self} is not a calendar date: {exc}") from None

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"


@dataclass(frozen=True)
class Time698:
    """time (3 bytes): hour, minute, second."""

    hour: int
    minute: int
    second: int

    def __post_init__(self) -> None:
        for name in ("hour", "minute", "second"):
            _check_range(name, getattr(self, name), 0, 255)

    def to_time(self) -> time:
        try:
            return time(self.hour, self.minute, self.second)
        except ValueError as exc:
            raise UnsupportedError(f"time {self} is not a time of day: {exc}") from None

    def __str__(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}"


@dataclass(frozen=True)
class Region:
    """Region: boundary kind (0 [a,b), 1 (a,b], 2 [a,b], 3 (a,b)) and two Data ends."""

    kind: int
    start: Data
    end: Data

    def __post_init__(self) -> None:
        _check_range("region kind", self.kind, 0, 3)


@dataclass(frozen=True)
class ScalerUnit:
    """Scaler_Unit: power-of-ten scaler (integer) and unit enum."""

    scaler: int
    unit: int

    def __post_init__(self) -> None:
        _check_range("scaler", self.scaler, -128, 127)
        _check_range("unit", self.unit, 0, 255)


@dataclass(frozen=True)
class CSD:
    """Column selection descriptor: a plain OAD or a ROAD."""

    column: OAD | ROAD


@dataclass(frozen=True)
class RCSD:
    """Record column selection: the columns a record read returns, in order."""

    columns: tuple[CSD, ...] = ()

    @classmethod
    def of(cls, *oads: OAD | ROAD) -> RCSD:
        return cls(tuple(CSD(o) for o in oads))


class MSChoice(IntEnum):
    """MS (meter set) CHOICE."""

    NONE = 0
    ALL = 1
    USER_TYPES = 2
    ADDRESSES = 3
    CONFIG_NUMBERS = 4
    USER_TYPE_REGIONS = 5
    ADDRESS_REGIONS = 6
    CONFIG_NUMBER_REGIONS = 7


@dataclass(frozen=True)
class MS:
    """Meter set. ``items`` holds ints (2, 4), TSA bytes (3) or Regions (5-7)."""

    choice: int
    items: tuple[int | bytes | Region, ...] = ()

    def __post_init__(self) -> None:
        if self.choice not in _MS_ITEM_CODECS:
            raise LocalProtocolError(f"MS choice {self.choice} is not 0..7")
        if self.choice in (0, 1) and self.items:
            raise LocalProtocolError("MS choices 0 and 1 carry no items")


@dataclass(frozen=True)
class RSD:
    """Row selection descriptor: ``selector`` number and its fields (see ``_RSD_FIELDS``).

    Selector 1 = (OAD, Data): rows whose column equals the value.
    Selector 2 = (OAD, start, end, interval Data). Selector 3 = tuple of selector-2 tuples.
    Selectors 4/5 = (date_time_s, MS); 6/7/8 = (start, end date_time_s, TI, MS);
    9 = (last n,); 10 = (last n, MS); 0 = no selection.
    """

    selector: int
    fields: tuple[object, ...] = ()

    def __post_init__(self) -> None:
        if self.selector == 9:  # last n, the common selector: accept the plain case fast
            fields = self.fields
            if type(fields) is tuple and len(fields) == 1:
                n = fields[0]
                if type(n) is int and 0 <= n <= 255:
                    return
        if self.selector not in _RSD_FIELDS:
            raise LocalProtocolError(f"RSD selector {self.selector} is not 0..10")
        if self.selector == 3:
            for item in self.fields:
                if not isinstance(item, tuple):
                    raise LocalProtocolError("RSD selector 3 takes tuples of selector-2 fields")
                _check_fields(2, item)
        else:
            _check_fields(self.selector, self.fields)

    @classmethod
    def last(cls, n: int) -> RSD:
        """Selector 9: the ``n``-th most recent record (1 = the latest)."""
        return cls(9, (n,))

    @classmethod
    def equal(cls, column: OAD, value: Data) -> RSD:
        """Selector 1: rows whose ``column`` equals ``value``."""
        return cls(1, (column, value))


@dataclass(frozen=True)
class SID:
    """Security identifier: 4-byte identity and an octet-string of additional data."""

    identity: int
    additional: bytes = b""

    def __post_init__(self) -> None:
        _check_range("SID identity", self.identity, 0, 0xFFFFFFFF)


@dataclass(frozen=True)
class SIDMAC:
    sid: SID
    mac: bytes


@dataclass(frozen=True)
class ComDcb:
    """COMDCB serial settings: baud enum, parity, data bits, stop bits, flow control."""

    baud: int
    parity: int
    data_bits: int
    stop_bits: int
    flow_control: int

    def __post_init__(self) -> None:
        for name in ("baud", "parity", "data_bits", "stop_bits", "flow_control"):
            _check_range(name, getattr(self, name), 0, 255)


DataValue = Union[  # noqa: UP007 - holds a forward reference to Data
    None,
    tuple["Data", ...],
    bool,
    int,
    float,
    bytes,
    str,
    BitString,
    DateTime698,
    DateTimeS,
    Date698,
    Time698,
    OAD,
    ROAD,
    OMD,
    TI,
    Region,
    ScalerUnit,
    RSD,
    CSD,
    MS,
    SID,
    SIDMAC,
    ComDcb,
    RCSD,
]

# Integer tags: (struct format, low, high).
_INTEGERS: Final[dict[DataType, tuple[str, int, int]]] = {
    DataType.DOUBLE_LONG: (">i", -(2**31), 2**31 - 1),
    DataType.DOUBLE_LONG_UNSIGNED: (">I", 0, 2**32 - 1),
    DataType.INTEGER: (">b", -128, 127),
    DataType.LONG: (">h", -(2**15), 2**15 - 1),
    DataType.UNSIGNED: (">B", 0, 255),
    DataType.LONG_UNSIGNED: (">H", 0, 0xFFFF),
    DataType.LONG64: (">q", -(2**63), 2**63 - 1),
    DataType.LONG64_UNSIGNED: (">Q", 0, 2**64 - 1),
    DataType.ENUM: (">B", 0, 255),
    DataType.OI: (">H", 0, 0xFFFF),
}

_FLOATS: Final[dict[DataType, str]] = {DataType.FLOAT32: ">f", DataType.FLOAT64: ">d"}

_OCTETS: Final = frozenset({DataType.OCTET_STRING, DataType.TSA, DataType.MAC, DataType.RN})
_TEXTS: Final[dict[DataType, str]] = {
    DataType.VISIBLE_STRING: "ascii",
    DataType.UTF8_STRING: "utf-8",
}

# Integer tags: (low, high), for the constructor's fast path.
_INT_RANGES: Final[dict[DataType, tuple[int, int]]] = {
    t: (low, high) for t, (_, low, high) in _INTEGERS.items()
}

# Python type each remaining tag carries.
_VALUE_KINDS: Final[dict[DataType, type]] = {
    DataType.BOOL: bool,
    DataType.BIT_STRING: BitString,
    DataType.DATE_TIME: DateTime698,
    DataType.DATE: Date698,
    DataType.TIME: Time698,
    DataType.DATE_TIME_S: DateTimeS,
    DataType.OAD: OAD,
    DataType.ROAD: ROAD,
    DataType.OMD: OMD,
    DataType.TI: TI,
    DataType.REGION: Region,
    DataType.SCALER_UNIT: ScalerUnit,
    DataType.RSD: RSD,
    DataType.CSD: CSD,
    DataType.MS: MS,
    DataType.SID: SID,
    DataType.SID_MAC: SIDMAC,
    DataType.COMDCB: ComDcb,
    DataType.RCSD: RCSD,
}


# The exact Python type a tag's value has in the common case (``int`` means an integer
# tag, checked against _INT_RANGES; ``tuple`` an array/structure of Data; NoneType NULL).
# VISIBLE_STRING is absent on purpose: it also needs the ASCII check of the full path.
_EXACT_KINDS: Final[dict[DataType, type | None]] = {
    DataType.NULL: type(None),
    DataType.ARRAY: tuple,
    DataType.STRUCTURE: tuple,
    **dict.fromkeys(_INTEGERS, int),
    **dict.fromkeys(_FLOATS, float),
    **dict.fromkeys(_OCTETS, bytes),
    DataType.UTF8_STRING: str,
    DataType.VISIBLE_STRING: None,
    **_VALUE_KINDS,
}


@dataclass(frozen=True)
class Data:
    """One tagged A-XDR value; the constructor checks the value fits the tag."""

    type: DataType
    value: DataValue = None

    def __post_init__(self) -> None:
        # Fast acceptance of the common well-formed cases; anything else (including
        # every value that is refused) takes the full check below, which words the error.
        t = self.type
        if type(t) is DataType:
            v = self.value
            expected = _EXACT_KINDS.get(t)
            if expected is int:
                low, high = _INT_RANGES[t]
                if type(v) is int and low <= v <= high:
                    return
            elif expected is tuple:
                if type(v) is tuple:
                    for x in v:
                        if type(x) is not Data:
                            break
                    else:
                        return
            elif type(v) is expected:
                return
        self._check()

    def _check(self) -> None:
        t, v = self.type, self.value
        if not isinstance(t, DataType):
            raise LocalProtocolError(f"{t!r} is not a DataType")
        if t is DataType.NULL:
            ok = v is None
        elif t in (DataType.ARRAY, DataType.STRUCTURE):
            ok = isinstance(v, tuple) and all(isinstance(x, Data) for x in v)
        elif t in _INTEGERS:
            _, low, high = _INTEGERS[t]
            _check_range(t.name, v, low, high)  # type: ignore[arg-type]
            ok = True
        elif t in _FLOATS:
            ok = isinstance(v, float)
        elif t in _OCTETS:
            ok = isinstance(v, bytes)
        elif t in _TEXTS:
            ok = isinstance(v, str)
            if ok and t is DataType.VISIBLE_STRING:
                ok = str(v).isascii()
        else:
            ok = isinstance(v, _VALUE_KINDS[t])
        if not ok:
            raise LocalProtocolError(f"{t.name} cannot carry {v!r}")

    # Short constructors read better than Data(DataType.LONG_UNSIGNED, …) in tests/builders.
    @classmethod
    def array(cls, *items: Data) -> Data:
        return cls(DataType.ARRAY, tuple(items))

    @classmethod
    def structure(cls, *items: Data) -> Data:
        return cls(DataType.STRUCTURE, tuple(items))

    @property
    def items(self) -> tuple[Data, ...]:
        if not isinstance(self.value, tuple):
            raise LocalProtocolError(f"{self.type.name} is not an array or structure")
        return self.value


# ------------------------------------------------------------------------ encoding


def _enc_oad(o: OAD) -> bytes:
    return o.to_bytes()


def _enc_road(r: ROAD) -> bytes:
    return (
        r.oad.to_bytes() + encode_length(len(r.columns)) + b"".join(c.to_bytes() for c in r.columns)
    )


def _enc_csd(c: CSD) -> bytes:
    if isinstance(c.column, ROAD):
        return b"\x01" + _enc_road(c.column)
    return b"\x00" + c.column.to_bytes()


_pack_csd_oad: Final = struct.Struct(">BHBB").pack  # CSD choice 0, then the OAD


def encode_rcsd(r: RCSD) -> bytes:
    columns = r.columns
    out = [encode_length(len(columns))]
    for c in columns:
        column = c.column
        if type(column) is OAD:
            out.append(
                _pack_csd_oad(0, column.oi, column.feature << 5 | column.attribute, column.index)
            )
        else:
            out.append(_enc_csd(c))
    return b"".join(out)


def _enc_octets(b: bytes) -> bytes:
    return encode_length(len(b)) + b


def encode_date_time_s(d: DateTimeS) -> bytes:
    return d.year.to_bytes(2, "big") + bytes([d.month, d.day, d.hour, d.minute, d.second])


def encode_ti(t: TI) -> bytes:
    return bytes([t.unit]) + t.interval.to_bytes(2, "big")


def _enc_region(r: Region) -> bytes:
    return bytes([r.kind]) + encode_data(r.start) + encode_data(r.end)


def _enc_ms(m: MS) -> bytes:
    encode_item = _MS_ITEM_CODECS[m.choice][0]
    if m.choice in (0, 1):
        return bytes([m.choice])
    return (
        bytes([m.choice]) + encode_length(len(m.items)) + b"".join(encode_item(i) for i in m.items)
    )


def encode_sid(s: SID) -> bytes:
    return s.identity.to_bytes(4, "big") + _enc_octets(s.additional)


_FIELD_ENCODERS: dict[str, Callable[[object], bytes]] = {
    "oad": lambda v: _enc_oad(v),  # type: ignore[arg-type]
    "data": lambda v: encode_data(v),  # type: ignore[arg-type]
    "dts": lambda v: encode_date_time_s(v),  # type: ignore[arg-type]
    "ti": lambda v: encode_ti(v),  # type: ignore[arg-type]
    "ms": lambda v: _enc_ms(v),  # type: ignore[arg-type]
    "unsigned": lambda v: bytes([v]),  # type: ignore[list-item]
}


def _check_fields(selector: int, fields: tuple[object, ...]) -> None:
    kinds = _RSD_FIELDS[selector]
    if len(fields) != len(kinds):
        raise LocalProtocolError(
            f"RSD selector {selector} takes {len(kinds)} field(s) ({', '.join(kinds)}), "
            f"got {len(fields)}"
        )
    for kind, value in zip(kinds, fields, strict=True):
        expected = _FIELD_TYPES[kind]
        if type(value) is not expected and (
            not isinstance(value, expected) or isinstance(value, bool)
        ):
            raise LocalProtocolError(f"RSD selector {selector} field {kind} cannot be {value!r}")
        if kind == "unsigned" and not (type(value) is int and 0 <= value <= 255):
            _check_range("RSD last-n", value, 0, 255)  # type: ignore[arg-type]


def encode_rsd(r: RSD) -> bytes:
    if r.selector == 9:  # last n: the common case, one unsigned (checked 0..255)
        return bytes((9, r.fields[0]))  # type: ignore[arg-type]
    out = bytes([r.selector])
    if r.selector == 3:
        out += encode_length(len(r.fields))
        for item in r.fields:
            assert isinstance(item, tuple)
            out += b"".join(
                _FIELD_ENCODERS[k](v) for k, v in zip(_RSD_FIELDS[2], item, strict=True)
            )
        return out
    return out + b"".join(
        _FIELD_ENCODERS[k](v) for k, v in zip(_RSD_FIELDS[r.selector], r.fields, strict=True)
    )


def _enc_body(d: Data) -> bytes:
    t, v = d.type, d.value
    if t is DataType.NULL:
        return b""
    if t in (DataType.ARRAY, DataType.STRUCTURE):
        items = d.items
        return encode_length(len(items)) + b"".join(encode_data(x) for x in items)
    if t in _INTEGERS:
        return struct.pack(_INTEGERS[t][0], v)
    if t in _FLOATS:
        return struct.pack(_FLOATS[t], v)
    if t in _OCTETS:
        assert isinstance(v, bytes)
        return _enc_octets(v)
    if t in _TEXTS:
        assert isinstance(v, str)
        return _enc_octets(v.encode(_TEXTS[t]))
    return _BODY_ENCODERS[t](v)


def _enc_bits(b: BitString) -> bytes:
    return encode_length(b.bits) + b.data


def encode_date_time(d: DateTime698) -> bytes:
    return (
        d.year.to_bytes(2, "big")
        + bytes([d.month, d.day, d.weekday, d.hour, d.minute, d.second])
        + d.millisecond.to_bytes(2, "big")
    )


_BODY_ENCODERS: Final[dict[DataType, Callable[[object], bytes]]] = {
    DataType.BOOL: lambda v: b"\x01" if v else b"\x00",
    DataType.BIT_STRING: lambda v: _enc_bits(v),  # type: ignore[arg-type]
    DataType.DATE_TIME: lambda v: encode_date_time(v),  # type: ignore[arg-type]
    DataType.DATE: lambda v: v.year.to_bytes(2, "big") + bytes([v.month, v.day, v.weekday]),  # type: ignore[attr-defined]
    DataType.TIME: lambda v: bytes([v.hour, v.minute, v.second]),  # type: ignore[attr-defined]
    DataType.DATE_TIME_S: lambda v: encode_date_time_s(v),  # type: ignore[arg-type]
    DataType.OAD: lambda v: _enc_oad(v),  # type: ignore[arg-type]
    DataType.ROAD: lambda v: _enc_road(v),  # type: ignore[arg-type]
    DataType.OMD: lambda v: v.to_bytes(),  # type: ignore[attr-defined]
    DataType.TI: lambda v: encode_ti(v),  # type: ignore[arg-type]
    DataType.REGION: lambda v: _enc_region(v),  # type: ignore[arg-type]
    DataType.SCALER_UNIT: lambda v: struct.pack(">bB", v.scaler, v.unit),  # type: ignore[attr-defined]
    DataType.RSD: lambda v: encode_rsd(v),  # type: ignore[arg-type]
    DataType.CSD: lambda v: _enc_csd(v),  # type: ignore[arg-type]
    DataType.MS: lambda v: _enc_ms(v),  # type: ignore[arg-type]
    DataType.SID: lambda v: encode_sid(v),  # type: ignore[arg-type]
    DataType.SID_MAC: lambda v: encode_sid(v.sid) + _enc_octets(v.mac),  # type: ignore[attr-defined]
    DataType.COMDCB: lambda v: bytes(
        [v.baud, v.parity, v.data_bits, v.stop_bits, v.flow_control]  # type: ignore[attr-defined]
    ),
    DataType.RCSD: lambda v: encode_rcsd(v),  # type: ignore[arg-type]
}


_DataEncoder = Callable[[Data, list[bytes]], None]


def _int_encoder(fmt: str) -> _DataEncoder:
    pack = struct.Struct(">B" + fmt[1:]).pack  # tag byte and body in one go

    def encode(d: Data, out: list[bytes]) -> None:
        out.append(pack(d.type, d.value))

    return encode


def _encode_composite(d: Data, out: list[bytes]) -> None:
    items = d.items
    n = len(items)
    out.append(bytes((d.type, n)) if n < 0x80 else bytes([d.type]) + encode_length(n))
    for x in items:
        _ENCODERS[x.type](x, out)


def _encode_other(d: Data, out: list[bytes]) -> None:
    out.append(bytes([d.type]) + _enc_body(d))


_pack_tagged_dts: Final = struct.Struct(">BHBBBBB").pack


def _encode_dts(d: Data, out: list[bytes]) -> None:
    v: DateTimeS = d.value  # type: ignore[assignment]
    out.append(_pack_tagged_dts(d.type, v.year, v.month, v.day, v.hour, v.minute, v.second))


_ENCODERS: Final[dict[DataType, _DataEncoder]] = {
    t: _encode_composite
    if t in (DataType.ARRAY, DataType.STRUCTURE)
    else _int_encoder(_INTEGERS[t][0])
    if t in _INTEGERS
    else _encode_other
    for t in DataType
}
_ENCODERS[DataType.DATE_TIME_S] = _encode_dts


def encode_data_into(data: Data, out: list[bytes]) -> None:
    """Append the pieces of ``encode_data(data)`` to ``out`` (join them once at the end)."""
    _ENCODERS[data.type](data, out)


def encode_data(data: Data) -> bytes:
    """Tag + A-XDR body of ``data``."""
    out: list[bytes] = []
    _ENCODERS[data.type](data, out)
    return out[0] if len(out) == 1 else b"".join(out)


# ------------------------------------------------------------------------ decoding


# Decoded OADs by their 32-bit wire value. OADs are immutable, and a meter reads a few
# dozen distinct ones, so the table stays small; it stops growing at _OAD_CACHE_MAX so
# hostile input cannot inflate it.
_OAD_CACHE: Final[dict[int, OAD]] = {}
_OAD_CACHE_MAX: Final = 4096


def _oad_from_word(word: int) -> OAD:
    """The OAD for a 32-bit wire value (every value is valid: fields fit by construction)."""
    oad = _OAD_CACHE.get(word)
    if oad is None:
        oad = _new(OAD)
        fields = oad.__dict__
        fields["oi"] = word >> 16
        fields["attribute"] = (word >> 8) & 0x1F
        fields["index"] = word & 0xFF
        fields["feature"] = (word >> 13) & 0x07
        if len(_OAD_CACHE) < _OAD_CACHE_MAX:
            _OAD_CACHE[word] = oad
    return oad


def read_oad(r: Reader) -> OAD:
    pos = r.pos
    buf = r.buf
    if pos + 4 > len(buf):
        r.take(4)  # raises the truncation error
    r.pos = pos + 4
    word = buf[pos] << 24 | buf[pos + 1] << 16 | buf[pos + 2] << 8 | buf[pos + 3]
    oad = _OAD_CACHE.get(word)
    return _oad_from_word(word) if oad is None else oad


def read_omd(r: Reader) -> OMD:
    raw = r.take(4)
    return OMD(int.from_bytes(raw[:2], "big"), raw[2], raw[3])


def read_road(r: Reader) -> ROAD:
    oad = read_oad(r)
    return ROAD(oad, tuple(read_oad(r) for _ in range(r.count())))


def read_csd(r: Reader) -> CSD:
    pos = r.pos
    buf = r.buf
    if pos >= len(buf):
        r.take(1)  # raises the truncation error
    choice = buf[pos]
    r.pos = pos + 1
    column: OAD | ROAD
    if choice == 0:
        column = read_oad(r)
    elif choice == 1:
        column = read_road(r)
    else:
        raise MalformedFrameError(f"CSD choice {choice} is neither 0 (OAD) nor 1 (ROAD)")
    csd = _new(CSD)
    csd.__dict__["column"] = column
    return csd


def read_rcsd(r: Reader) -> RCSD:
    columns = []
    for _ in range(r.count()):
        pos = r.pos
        buf = r.buf
        if pos + 5 <= len(buf) and buf[pos] == 0:  # CSD choice 0 and a whole OAD
            r.pos = pos + 5
            word = buf[pos + 1] << 24 | buf[pos + 2] << 16 | buf[pos + 3] << 8 | buf[pos + 4]
            oad = _OAD_CACHE.get(word)
            csd = _new(CSD)
            csd.__dict__["column"] = _oad_from_word(word) if oad is None else oad
            columns.append(csd)
        else:
            columns.append(read_csd(r))
    rcsd = _new(RCSD)
    rcsd.__dict__["columns"] = tuple(columns)
    return rcsd


_unpack_dts: Final = struct.Struct(">HBBBBB").unpack_from
_unpack_dt: Final = struct.Struct(">HBBBBBBH").unpack_from


def read_dts(r: Reader) -> DateTimeS:
    pos = r.pos
    if pos + 7 > len(r.buf):
        r.take(7)  # raises the truncation error
    r.pos = pos + 7
    # Every field is a u8/u16 off the wire, so the constructor's range checks hold.
    d = _new(DateTimeS)
    fields = d.__dict__
    (
        fields["year"],
        fields["month"],
        fields["day"],
        fields["hour"],
        fields["minute"],
        fields["second"],
    ) = _unpack_dts(r.buf, pos)
    return d


def read_dt(r: Reader) -> DateTime698:
    pos = r.pos
    if pos + 10 > len(r.buf):
        r.take(10)  # raises the truncation error
    r.pos = pos + 10
    d = _new(DateTime698)
    fields = d.__dict__
    (
        fields["year"],
        fields["month"],
        fields["day"],
        fields["weekday"],
        fields["hour"],
        fields["minute"],
        fields["second"],
        fields["millisecond"],
    ) = _unpack_dt(r.buf, pos)
    return d


def read_ti(r: Reader) -> TI:
    raw = r.take(3)
    return TI(raw[0], int.from_bytes(raw[1:], "big"))


def read_region(r: Reader, depth: int) -> Region:
    kind = r.u8()
    return Region(kind, _decode(r, depth + 1), _decode(r, depth + 1))


def read_tsa(r: Reader) -> bytes:
    return r.octets()


_MS_ITEM_CODECS: Final[
    dict[int, tuple[Callable[[object], bytes], Callable[[Reader, int], int | bytes | Region]]]
] = {
    0: (lambda v: b"", lambda r, d: 0),
    1: (lambda v: b"", lambda r, d: 0),
    2: (lambda v: bytes([v]), lambda r, d: r.u8()),  # type: ignore[list-item]
    3: (lambda v: _enc_octets(v), lambda r, d: r.octets()),  # type: ignore[arg-type]
    4: (lambda v: v.to_bytes(2, "big"), lambda r, d: r.u16()),  # type: ignore[attr-defined]
    5: (lambda v: _enc_region(v), read_region),  # type: ignore[arg-type]
    6: (lambda v: _enc_region(v), read_region),  # type: ignore[arg-type]
    7: (lambda v: _enc_region(v), read_region),  # type: ignore[arg-type]
}


def read_ms(r: Reader, depth: int = 0) -> MS:
    choice = r.u8()
    if choice not in _MS_ITEM_CODECS:
        raise MalformedFrameError(f"MS choice {choice} is not 0..7")
    if choice in (0, 1):
        return MS(choice)
    decode_item = _MS_ITEM_CODECS[choice][1]
    return MS(choice, tuple(decode_item(r, depth) for _ in range(r.count())))


# What each RSD selector carries, in wire order.
_RSD_FIELDS: Final[dict[int, tuple[str, ...]]] = {
    0: (),
    1: ("oad", "data"),
    2: ("oad", "data", "data", "data"),
    3: (),  # SEQUENCE OF selector 2, handled specially
    4: ("dts", "ms"),
    5: ("dts", "ms"),
    6: ("dts", "dts", "ti", "ms"),
    7: ("dts", "dts", "ti", "ms"),
    8: ("dts", "dts", "ti", "ms"),
    9: ("unsigned",),
    10: ("unsigned", "ms"),
}
_FIELD_TYPES: Final[dict[str, type]] = {
    "oad": OAD,
    "data": Data,
    "dts": DateTimeS,
    "ti": TI,
    "ms": MS,
    "unsigned": int,
}
_FIELD_DECODERS: Final[dict[str, Callable[[Reader, int], object]]] = {
    "oad": lambda r, d: read_oad(r),
    "data": lambda r, d: _decode(r, d + 1),
    "dts": lambda r, d: read_dts(r),
    "ti": lambda r, d: read_ti(r),
    "ms": lambda r, d: read_ms(r, d),
    "unsigned": lambda r, d: r.u8(),
}


def read_rsd(r: Reader, depth: int = 0) -> RSD:
    selector = r.u8()
    if selector not in _RSD_FIELDS:
        raise UnsupportedError(f"RSD selector {selector} is not 0..10")
    fields: tuple[object, ...]
    if selector == 3:
        fields = tuple(
            tuple(_FIELD_DECODERS[k](r, depth) for k in _RSD_FIELDS[2]) for _ in range(r.count())
        )
    else:
        fields = tuple([_FIELD_DECODERS[k](r, depth) for k in _RSD_FIELDS[selector]])
    # Each field decoder returns the type _check_fields wants (a u8 for "unsigned").
    rsd = _new(RSD)
    rsd.__dict__.update(selector=selector, fields=fields)
    return rsd


def read_sid(r: Reader) -> SID:
    return SID(int.from_bytes(r.take(4), "big"), r.octets())


def _read_bits(r: Reader) -> BitString:
    bits = r.length()
    return BitString(bits, r.take((bits + 7) // 8))


def _read_text(r: Reader, t: DataType) -> str:
    raw = r.octets()
    try:
        return raw.decode(_TEXTS[t])
    except UnicodeDecodeError:
        raise MalformedFrameError(f"{t.name} holds bytes that are not {_TEXTS[t]}") from None


def _read_bool(r: Reader) -> bool:
    # A-XDR bool: 00 false, anything else true; we keep 01 canonical and refuse the rest
    # so that decode → encode stays byte-exact.
    b = r.u8()
    if b > 1:
        raise MalformedFrameError(f"bool byte 0x{b:02X} is neither 00 nor 01")
    return b == 1


_BODY_DECODERS: Final[dict[DataType, Callable[[Reader, int], DataValue]]] = {
    DataType.BOOL: lambda r, d: _read_bool(r),
    DataType.BIT_STRING: lambda r, d: _read_bits(r),
    DataType.DATE_TIME: lambda r, d: read_dt(r),
    DataType.DATE: lambda r, d: Date698(r.u16(), *r.take(3)),
    DataType.TIME: lambda r, d: Time698(*r.take(3)),
    DataType.DATE_TIME_S: lambda r, d: read_dts(r),
    DataType.OAD: lambda r, d: read_oad(r),
    DataType.ROAD: lambda r, d: read_road(r),
    DataType.OMD: lambda r, d: read_omd(r),
    DataType.TI: lambda r, d: read_ti(r),
    DataType.REGION: read_region,
    DataType.SCALER_UNIT: lambda r, d: ScalerUnit(*struct.unpack(">bB", r.take(2))),
    DataType.RSD: read_rsd,
    DataType.CSD: lambda r, d: read_csd(r),
    DataType.MS: read_ms,
    DataType.SID: lambda r, d: read_sid(r),
    DataType.SID_MAC: lambda r, d: SIDMAC(read_sid(r), r.octets()),
    DataType.COMDCB: lambda r, d: ComDcb(*r.take(5)),
    DataType.RCSD: lambda r, d: read_rcsd(r),
}


def _data(t: DataType, value: DataValue) -> Data:
    """A Data for a value a decoder produced: it fits the tag by construction, so the
    public constructor's checks are skipped."""
    d = _new(Data)
    fields = d.__dict__
    fields["type"] = t
    fields["value"] = value
    return d


_TagDecoder = Callable[[Reader, int], Data]


def _int_decoder(t: DataType, fmt: str) -> _TagDecoder:
    unpack_from = struct.Struct(fmt).unpack_from
    size = struct.calcsize(fmt)

    def decode(r: Reader, depth: int) -> Data:
        pos = r.pos
        if pos + size > len(r.buf):
            r.take(size)  # raises the truncation error
        r.pos = pos + size
        d = _new(Data)
        fields = d.__dict__
        fields["type"] = t
        fields["value"] = unpack_from(r.buf, pos)[0]
        return d

    return decode


def _composite_decoder(t: DataType) -> _TagDecoder:
    def decode(r: Reader, depth: int) -> Data:
        n = r.count()
        depth += 1
        items = []
        if n:
            # _decode inlined for each element: same checks in the same order.
            if depth > MAX_DEPTH:
                raise MalformedFrameError(f"Data nested deeper than {MAX_DEPTH} levels")
            buf = r.buf
            size = len(buf)
            decoders = _TAG_DECODERS
            integers = _FIXED_INTEGERS
            for _ in range(n):
                pos = r.pos
                if pos >= size:
                    r.take(1)  # raises the truncation error
                tag = buf[pos]
                r.pos = pos + 1
                fixed = integers[tag]
                if fixed is not None:  # an integer element: its decoder, inlined
                    element_type, unpack_from, width = fixed
                    pos += 1
                    if pos + width > size:
                        r.take(width)  # raises the truncation error
                    r.pos = pos + width
                    d = _new(Data)
                    fields = d.__dict__
                    fields["type"] = element_type
                    fields["value"] = unpack_from(buf, pos)[0]
                    items.append(d)
                    continue
                element = decoders[tag]
                if element is None:
                    raise UnsupportedError(f"unknown Data type tag 0x{tag:02X}")
                items.append(element(r, depth))
        d = _new(Data)
        fields = d.__dict__
        fields["type"] = t
        fields["value"] = tuple(items)
        return d

    return decode


def _null_decoder(r: Reader, depth: int) -> Data:
    return _data(_NULL, None)


def _octets_decoder(t: DataType) -> _TagDecoder:
    return lambda r, depth: _data(t, r.octets())


def _text_decoder(t: DataType) -> _TagDecoder:
    return lambda r, depth: _data(t, _read_text(r, t))


def _body_decoder(t: DataType, read: Callable[[Reader, int], DataValue]) -> _TagDecoder:
    return lambda r, depth: _data(t, read(r, depth))


_NULL: Final = DataType.NULL
_DATE_TIME_S: Final = DataType.DATE_TIME_S

# Tag byte → (type, unpack_from, size) for the integer tags, else None.
_FIXED_INTEGERS: Final[list[tuple[DataType, Callable[..., tuple[int]], int] | None]] = [None] * 256
for _t, (_fmt, _, _) in _INTEGERS.items():
    _FIXED_INTEGERS[_t] = (_t, struct.Struct(_fmt).unpack_from, struct.calcsize(_fmt))

# Tag byte → decoder of the body after it; ``None`` for tags that are not Data types.
_TAG_DECODERS: Final[list[_TagDecoder | None]] = [None] * 256
for _t in DataType:
    if _t is DataType.NULL:
        _TAG_DECODERS[_t] = _null_decoder
    elif _t in (DataType.ARRAY, DataType.STRUCTURE):
        _TAG_DECODERS[_t] = _composite_decoder(_t)
    elif _t in _INTEGERS:
        _TAG_DECODERS[_t] = _int_decoder(_t, _INTEGERS[_t][0])
    elif _t in _FLOATS:
        _TAG_DECODERS[_t] = _int_decoder(_t, _FLOATS[_t])
    elif _t in _OCTETS:
        _TAG_DECODERS[_t] = _octets_decoder(_t)
    elif _t in _TEXTS:
        _TAG_DECODERS[_t] = _text_decoder(_t)
    else:
        _TAG_DECODERS[_t] = _body_decoder(_t, _BODY_DECODERS[_t])
del _t


def _dts_decoder(r: Reader, depth: int) -> Data:
    v = read_dts(r)
    d = _new(Data)
    fields = d.__dict__
    fields["type"] = _DATE_TIME_S
    fields["value"] = v
    return d


_TAG_DECODERS[DataType.DATE_TIME_S] = _dts_decoder


def _decode(r: Reader, depth: int) -> Data:
    if depth > MAX_DEPTH:
        raise MalformedFrameError(f"Data nested deeper than {MAX_DEPTH} levels")
    pos = r.pos
    buf = r.buf
    if pos >= len(buf):
        r.take(1)  # raises the truncation error
    tag = buf[pos]
    r.pos = pos + 1
    decode = _TAG_DECODERS[tag]
    if decode is None:
        raise UnsupportedError(f"unknown Data type tag 0x{tag:02X}")
    return decode(r, depth)


def read_data(r: Reader) -> Data:
    """Decode one Data at the reader's position."""
    # _decode(r, 0), inlined: depth 0 is always within MAX_DEPTH.
    pos = r.pos
    buf = r.buf
    if pos >= len(buf):
        r.take(1)  # raises the truncation error
    tag = buf[pos]
    r.pos = pos + 1
    decode = _TAG_DECODERS[tag]
    if decode is None:
        raise UnsupportedError(f"unknown Data type tag 0x{tag:02X}")
    return decode(r, 0)


def decode_data(raw: bytes) -> Data:
    """Exactly one Data filling ``raw``; trailing bytes are malformed."""
    r = Reader(bytes(raw))
    try:
        data = read_data(r)
    except LocalProtocolError as exc:
        # A value our own constructors refuse came off the line: the peer's fault.
        raise MalformedFrameError(str(exc)) from None
    if r.remaining:
        raise MalformedFrameError(f"{r.remaining} byte(s) left after the Data value")
    return data
