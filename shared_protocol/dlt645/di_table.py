"""The data-identifier tables: which DI carries which quantity, in which format.

2007 DIs are 4 bytes (``DI3 DI2 DI1 DI0``, written ``0x00010000``), 1997 DIs 2 bytes
(``0x9010``). Both tables are generated from compact rows below and map every meter-data
item to a canonical OBIS code (:mod:`shared_protocol.quantities`), so the code above never
sees a DI. Rows marked ``uncertain`` ([U]) are not confirmed against the standard text; see
/work/shared/reference/protocols.md §1a and §4.

Block items (DI1 or DI0 = FF) repeat their fields: a meter answers with as many tariffs or
periods as it has, so a block reply may hold any whole number of leading fields.
Settlement periods (DI0 = 01..0C on energy and demand) become OBIS group F
(``1-0:1.8.0*3``). Freeze records (DI3 = 05) keep the plain register code: the freeze time
item (``0-0:1.0.3``) says when the register was captured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from types import MappingProxyType
from typing import Final

from shared_protocol.dlt645.control import Standard
from shared_protocol.dlt645.formats import (
    YYMMDDHHMM,
    YYMMDDHHMMSS,
    YYMMDDWW,
    Ascii,
    Bcd,
    BitString,
    Clock,
    DataFormat,
    Digits,
)
from shared_protocol.errors import LocalProtocolError, MalformedFrameError
from shared_protocol.quantities import MeterValue, ScalarValue, quantity, with_billing_period

__all__ = [
    "DATA_ITEMS",
    "DataItem",
    "Field",
    "data_item",
    "format_di",
]


@dataclass(frozen=True)
class Field:
    """One value inside a data item: a label, a format and (for meter data) an OBIS code."""

    name: str
    format: DataFormat
    obis: str | None = None

    def __post_init__(self) -> None:
        if self.obis is not None:
            quantity(self.obis)  # refuses a code missing from the vocabulary

    @property
    def unit(self) -> str | None:
        return None if self.obis is None else quantity(self.obis).unit


@dataclass(frozen=True)
class DataItem:
    """What one DI means: its fields in wire order.

    ``block``: the reply holds any whole number of leading fields (≥ 1).
    ``opaque_tail``: we decode the leading fields and leave the rest undecoded [U].
    """

    di: int
    name: str
    fields: tuple[Field, ...]
    block: bool = False
    opaque_tail: bool = False
    uncertain: bool = False

    def __post_init__(self) -> None:
        if not self.fields:
            raise LocalProtocolError(f"data item {self.di:X} has no fields")

    @property
    def size(self) -> int:
        """Bytes of a complete reply (every field of a block)."""
        return sum(f.format.size for f in self.fields)

    def decode_fields(self, data: bytes) -> list[tuple[Field, ScalarValue]]:
        """Split ``data`` (after the DI) into fields; strict about the length."""
        out: list[tuple[Field, ScalarValue]] = []
        offset = 0
        for field in self.fields:
            if offset == len(data) and (self.block or self.opaque_tail) and out:
                break
            end = offset + field.format.size
            if end > len(data):
                raise MalformedFrameError(self._length_reason(len(data)))
            out.append((field, field.format.decode(data[offset:end])))
            offset = end
        if offset != len(data) and not self.opaque_tail:
            raise MalformedFrameError(self._length_reason(len(data)))
        return out

    def decode(self, data: bytes) -> list[MeterValue]:
        """Meter values in ``data``; fields that are parameters (no OBIS) are left out."""
        return list(self._decode_values(data))

    @cached_property
    def _plan(self) -> _Plan:
        """Precomputed once per item: field count per accepted length, and per field its
        slice, decoder, OBIS code and unit (what :meth:`decode` looks up every time)."""
        counts: dict[int, int] = {}
        steps: list[_Step] = []
        end = 0
        for n, field in enumerate(self.fields, start=1):
            fmt = field.format
            start, end = end, end + fmt.size
            steps.append((start, end, fmt._exact_decoder(), field.obis, field.unit))
            if self.block or self.opaque_tail:
                counts.setdefault(end, n)  # the loop in decode_fields stops at the first
        counts.setdefault(end, len(steps))
        texts: dict[int, tuple[_TextStep, ...]] = {}
        if _meter_value is _fast_meter_value and all(
            type(f.format) is Bcd and not f.format.signed for f in self.fields
        ):
            # Unsigned BCD only: one hex string of the whole (reversed) data holds every
            # value's digits; per accepted length, where each value's digits sit in it.
            for length, count in counts.items():
                text_steps = []
                for (start, end, _, obis, unit), field in zip(
                    steps[:count], self.fields, strict=False
                ):
                    if obis is None:
                        continue  # valid BCD digits cannot fail to decode: nothing to check
                    decimals = field.format.decimals  # type: ignore[attr-defined]
                    point = 2 * (length - start) - decimals
                    text_steps.append(
                        (
                            2 * (length - end),
                            point,
                            "." if decimals else "",
                            2 * (length - start),
                            obis,
                            unit,
                        )
                    )
                texts[length] = tuple(text_steps)
        bulk: dict[int, _Bulk] = {}
        formats = {f.format for f in self.fields}
        if texts and len(formats) == 1 and all(f.obis is not None for f in self.fields):
            # Every field the same unsigned BCD format with an OBIS code (energy blocks):
            # the hex text splits into the values' digit strings in one call each way.
            (fmt,) = formats
            decimals = fmt.decimals  # type: ignore[attr-defined]
            scale = Decimal(1).scaleb(-decimals) if decimals else None
            labels = tuple((f.obis or "", f.unit) for f in self.fields)
            for length, count in counts.items():
                if count > 1:  # one value is quicker by the per-step text path
                    bulk[length] = (fmt.size, scale, labels[:count])
        return counts, tuple(steps), texts, bulk

    def _decode_values(self, data: bytes) -> tuple[MeterValue, ...]:
        """:meth:`decode` as a tuple; same values, same errors, less work per call."""
        counts, steps, texts, bulk = self._plan
        spec = bulk.get(len(data))
        if spec is not None:
            backwards = data[::-1]
            if backwards.hex().isdigit():
                size, scale, labels = spec
                digits = backwards.hex(" ", size).split()  # one string per value, last first
                digits.reverse()
                # Decimal("23093") × Decimal("0.01") is exactly Bcd.decode's
                # Decimal(23093).scaleb(-2): same digits, same exponent, same context.
                values = (
                    map(Decimal, digits)
                    if scale is None
                    else map(scale.__mul__, map(Decimal, digits))
                )
                out = []
                for (obis, unit), value in zip(labels, values, strict=True):
                    meter_value = _new(MeterValue)  # _fast_meter_value, inlined
                    fields = meter_value.__dict__
                    fields["obis"] = obis
                    fields["value"] = value
                    fields["unit"] = unit
                    out.append(meter_value)
                return tuple(out)
        text_steps = texts.get(len(data))
        if text_steps is not None:
            text = data[::-1].hex()
            if text.isdigit():
                # Decimal("230.93") is exactly what Bcd.decode builds as 23093 × 10⁻²
                out = []
                for a, b, point, c, obis, unit in text_steps:
                    meter_value = _new(MeterValue)  # _fast_meter_value, inlined
                    fields = meter_value.__dict__
                    fields["obis"] = obis
                    fields["value"] = Decimal(text[a:b] + point + text[b:c])
                    fields["unit"] = unit
                    out.append(meter_value)
                return tuple(out)
        count = counts.get(len(data))
        if count is None:
            if not (self.opaque_tail and len(data) > steps[-1][1]):
                # a length error (or a field error before it): let decode_fields say which
                return tuple(
                    MeterValue(field.obis, value, field.unit)
                    for field, value in self.decode_fields(data)
                    if field.obis is not None
                )
            count = len(steps)
        decoded: list[MeterValue] = []
        for start, end, decode, code, field_unit in steps[:count] if count < len(steps) else steps:
            field_value = decode(data[start:end])
            if code is not None:
                decoded.append(_meter_value(code, field_value, field_unit))
        return tuple(decoded)

    def encode(self, values: Sequence[ScalarValue]) -> bytes:
        """Data bytes (before +33H) for ``values``, one per leading field."""
        if not values or len(values) > len(self.fields):
            raise LocalProtocolError(
                f"{format_di(self.di)} ({self.name}) takes 1..{len(self.fields)} values,"
                f" got {len(values)}"
            )
        if len(values) != len(self.fields) and not (self.block or self.opaque_tail):
            raise LocalProtocolError(
                f"{format_di(self.di)} ({self.name}) takes {len(self.fields)} values"
            )
        return b"".join(f.format.encode(v) for f, v in zip(self.fields, values, strict=False))

    def _length_reason(self, got: int) -> str:
        sizes = "+".join(str(f.format.size) for f in self.fields)
        kind = " (or a whole number of leading fields)" if self.block else ""
        return (
            f"DI {format_di(self.di)} ({self.name}) carries {self.size} data bytes"
            f" ({sizes}){kind}, the reply has {got}"
        )


_Step = tuple[int, int, Callable[[bytes], ScalarValue], str | None, str | None]
# (digits from, decimal point at, "." or "", digits to, OBIS, unit) in the reversed hex text
_TextStep = tuple[int, int, str, int, str, str | None]
# (field size, 10**-decimals or None, (OBIS, unit) per value)
_Bulk = tuple[int, Decimal | None, tuple[tuple[str, str | None], ...]]
_Plan = tuple[dict[int, int], tuple[_Step, ...], dict[int, tuple[_TextStep, ...]], dict[int, _Bulk]]
_new = object.__new__


def _fast_meter_value(obis: str, value: ScalarValue, unit: str | None) -> MeterValue:
    """``MeterValue(obis, value, unit)`` without the frozen-dataclass ``__init__`` cost."""
    meter_value: MeterValue = _new(MeterValue)
    fields = meter_value.__dict__
    fields["obis"] = obis
    fields["value"] = value
    fields["unit"] = unit
    return meter_value


# The shortcut is only right while MeterValue is a plain frozen dataclass with no checks.
_meter_value: Callable[[str, ScalarValue, str | None], MeterValue] = (
    _fast_meter_value
    if not hasattr(MeterValue, "__post_init__")
    and "__slots__" not in vars(MeterValue)
    and list(vars(MeterValue)["__dataclass_fields__"]) == ["obis", "value", "unit"]
    else MeterValue
)


def format_di(di: int, standard: Standard = Standard.DLT645_2007) -> str:
    """``0x00010000`` → ``"00010000"``; 1997 DIs have 4 hex digits."""
    return f"{di:08X}" if standard is Standard.DLT645_2007 else f"{di:04X}"


# ---------------------------------------------------------------- 2007 rows

ENERGY: Final = Bcd(4, 2)
SIGNED_ENERGY: Final = Bcd(4, 2, signed=True)
TARIFFS: Final = 8  # quantities.py names tariffs 1..8; DL/T 645 allows up to 63 (3F)
SETTLEMENTS: Final = 12

# DI2 → (OBIS group C, name, signed?) for DI3 = 00 energy
_ENERGY_KINDS: Final = {
    0x00: (15, "combined active energy", True),
    0x01: (1, "forward active energy", False),
    0x02: (2, "reverse active energy", False),
    0x03: (3, "combined reactive energy 1", True),
    0x04: (4, "combined reactive energy 2", True),
    0x05: (5, "reactive energy quadrant I", False),
    0x06: (6, "reactive energy quadrant II", False),
    0x07: (7, "reactive energy quadrant III", False),
    0x08: (8, "reactive energy quadrant IV", False),
    0x09: (9, "forward apparent energy", False),
    0x0A: (10, "reverse apparent energy", False),
}
# DI2 → (OBIS group C, name, signed?) for DI3 = 01 max demand (XX.XXXX + YYMMDDhhmm)
_DEMAND_KINDS: Final = {
    0x01: (1, "forward active max demand", False),
    0x02: (2, "reverse active max demand", False),
    0x03: (3, "combined reactive 1 max demand", True),
    0x04: (4, "combined reactive 2 max demand", True),
}


def _tariff_label(t: int) -> str:
    return "total" if t == 0 else f"tariff {t}"


def _period_label(p: int) -> str:
    return "current" if p == 0 else f"settlement −{p}"


def _energy_items() -> Iterator[DataItem]:
    for di2, (c, what, signed) in _ENERGY_KINDS.items():
        fmt = SIGNED_ENERGY if signed else ENERGY

        def field(t: int, p: int, c: int = c, what: str = what, fmt: Bcd = fmt) -> Field:
            obis = with_billing_period(f"1-0:{c}.8.{t}", p)
            return Field(f"{what} {_tariff_label(t)} ({_period_label(p)})", fmt, obis)

        for p in range(SETTLEMENTS + 1):
            for t in range(TARIFFS + 1):
                yield DataItem(
                    (di2 << 16) | (t << 8) | p,
                    f"{what} {_tariff_label(t)}, {_period_label(p)}",
                    (field(t, p),),
                )
            yield DataItem(
                (di2 << 16) | 0xFF00 | p,
                f"{what} block (total + tariffs), {_period_label(p)}",
                tuple(field(t, p) for t in range(TARIFFS + 1)),
                block=True,
            )
        for t in range(TARIFFS + 1):
            yield DataItem(
                (di2 << 16) | (t << 8) | 0xFF,
                f"{what} {_tariff_label(t)} block (current + settlements)",
                tuple(field(t, p) for p in range(SETTLEMENTS + 1)),
                block=True,
            )


def _demand_items() -> Iterator[DataItem]:
    for di2, (c, what, signed) in _DEMAND_KINDS.items():
        fmt = Bcd(3, 4, signed=signed)

        def pair(t: int, p: int, c: int = c, what: str = what, fmt: Bcd = fmt) -> tuple[Field, ...]:
            label = f"{what} {_tariff_label(t)} ({_period_label(p)})"
            return (
                Field(label, fmt, with_billing_period(f"1-0:{c}.6.{t}", p)),
                Field(
                    f"{label} time", YYMMDDHHMM, with_billing_period(f"0-0:96.62.{10 * c + t}", p)
                ),
            )

        for p in range(SETTLEMENTS + 1):
            for t in range(TARIFFS + 1):
                yield DataItem(
                    0x01000000 | (di2 << 16) | (t << 8) | p,
                    f"{what} {_tariff_label(t)} and time, {_period_label(p)}",
                    pair(t, p),
                    uncertain=True,  # byte layout per peer config demand_types.py [U]
                )
            yield DataItem(
                0x01000000 | (di2 << 16) | 0xFF00 | p,
                f"{what} block (total + tariffs) and times, {_period_label(p)}",
                tuple(f for t in range(TARIFFS + 1) for f in pair(t, p)),
                block=True,
                uncertain=True,
            )


_PHASES: Final = ("A", "B", "C")
# (DI2, name, format, OBIS of total or None, OBIS of phase A/B/C)
_INSTANT_ROWS: Final = (
    (0x01, "voltage", Bcd(2, 1), None, ("1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0")),
    (0x02, "current", Bcd(3, 3, signed=True), None, ("1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0")),
    (
        0x03,
        "active power",
        Bcd(3, 4, True),
        "1-0:16.7.0",
        ("1-0:36.7.0", "1-0:56.7.0", "1-0:76.7.0"),
    ),
    (
        0x04,
        "reactive power",
        Bcd(3, 4, True),
        "1-0:3.7.0",
        ("1-0:23.7.0", "1-0:43.7.0", "1-0:63.7.0"),
    ),
    (
        0x05,
        "apparent power",
        Bcd(3, 4, True),
        "1-0:9.7.0",
        ("1-0:29.7.0", "1-0:49.7.0", "1-0:69.7.0"),
    ),
    (
        0x06,
        "power factor",
        Bcd(2, 3, True),
        "1-0:13.7.0",
        ("1-0:33.7.0", "1-0:53.7.0", "1-0:73.7.0"),
    ),
)


def _instant_items() -> Iterator[DataItem]:
    for di2, what, fmt, total, phases in _INSTANT_ROWS:
        fields: list[Field] = []
        if total is not None:
            fields.append(Field(f"{what} total", fmt, total))
            yield DataItem(0x02000000 | (di2 << 16), f"{what} total", (fields[0],))
        for n, (phase, obis) in enumerate(zip(_PHASES, phases, strict=True), start=1):
            field = Field(f"{what} {phase}", fmt, obis)
            fields.append(field)
            yield DataItem(0x02000000 | (di2 << 16) | (n << 8), field.name, (field,))
        yield DataItem(
            0x02000000 | (di2 << 16) | 0xFF00, f"{what} block", tuple(fields), block=True
        )


def _single(
    di: int, name: str, fmt: DataFormat, obis: str | None, uncertain: bool = False
) -> DataItem:
    return DataItem(di, name, (Field(name, fmt, obis),), uncertain=uncertain)


_SINGLE_ROWS_2007: Final[tuple[tuple[int, str, DataFormat, str, bool], ...]] = (
    # (DI, name, format, OBIS, uncertain)
    (0x02800001, "neutral current", Bcd(3, 3, True), "1-0:91.7.0", False),
    (0x02800002, "grid frequency", Bcd(2, 2), "1-0:14.7.0", False),
    (0x02800004, "active demand (current)", Bcd(3, 4, True), "1-0:1.4.0", True),
    (0x00900200, "prepaid remaining amount", Bcd(4, 2), "0-0:96.60.10", True),
    (0x00900201, "prepaid overdraft amount", Bcd(4, 2), "0-0:96.60.11", True),
    (0x04000101, "date and weekday", YYMMDDWW, "0-0:1.0.1", False),
    (0x04000102, "time", Clock("hhmmss"), "0-0:1.0.2", False),
    (0x04000401, "comm address", Digits(6), "0-0:96.1.0", False),
    (0x04000402, "meter number", Digits(6), "0-0:96.1.1", False),
    (0x04000403, "asset number", Ascii(32), "0-0:96.1.2", False),
    (0x04000404, "rated voltage", Ascii(6), "0-0:96.1.3", False),
    (0x04000405, "rated current", Ascii(6), "0-0:96.1.4", False),
    (0x04000406, "maximum current", Ascii(6), "0-0:96.1.5", False),
    (0x04000407, "active accuracy class", Ascii(4), "0-0:96.1.6", False),
    (0x04000408, "reactive accuracy class", Ascii(4), "0-0:96.1.11", False),
    (0x04000409, "active constant", Bcd(3, 0), "1-0:0.3.0", False),
    (0x0400040A, "reactive constant", Bcd(3, 0), "1-0:0.3.1", False),
    (0x0400040B, "meter model", Ascii(10), "0-0:96.1.7", False),
    (0x0400040C, "production date", Ascii(10), "0-0:96.1.8", False),
    (0x0400040D, "protocol version", Ascii(16), "0-0:96.1.9", False),
    (0x04000B01, "settlement day 1 (DDhh)", Digits(2), "0-0:96.61.2", True),
    (0x04001203, "daily freeze time (hhmm)", Clock("hhmm"), "0-0:96.61.1", True),
    (0x04001001, "alarm amount 1", Bcd(4, 2), "0-0:96.60.1", False),
    (0x04001002, "alarm amount 2", Bcd(4, 2), "0-0:96.60.2", False),
    (0x04001003, "overdraft limit", Bcd(4, 2), "0-0:96.60.3", False),
    (0x04001004, "hoarding limit", Bcd(4, 2), "0-0:96.60.4", False),
    (0x04001005, "close-allowed threshold", Bcd(4, 2), "0-0:96.60.5", False),
    (0x03110000, "power-down event count", Bcd(3, 0), "0-0:96.7.21", False),
    (0x03300000, "programming event count", Bcd(3, 0), "0-0:96.52.0", True),
    (0x03300100, "meter clear event count", Bcd(3, 0), "0-0:96.54.0", True),
    (0x03300400, "clock set event count", Bcd(3, 0), "0-0:96.53.0", True),
    (0x03300D00, "meter cover open event count", Bcd(3, 0), "0-0:96.51.0", False),
    (0x1D000001, "relay trip event count", Bcd(3, 0), "0-0:96.55.0", True),
    (0x1E000001, "relay close event count", Bcd(3, 0), "0-0:96.56.0", True),
)


def _parameter_items() -> Iterator[DataItem]:
    for di, name, fmt, obis, uncertain in _SINGLE_ROWS_2007:
        yield _single(di, name, fmt, obis, uncertain)
    words = [Field(f"running status word {n}", BitString(2), f"0-0:96.5.{n}") for n in range(1, 8)]
    for n, word in enumerate(words, start=1):
        yield DataItem(0x04000500 | n, word.name, (word,))
    yield DataItem(0x040005FF, "running status words block", tuple(words), block=True)
    for level in range(10):
        # passwords are parameters, not meter data: no OBIS code
        yield _single(0x04000C01 + level, f"level {level} password", Digits(4), None)


# Freeze families (DI3 = 05): DI2 → (name, how many records, forward/reverse as blocks?)
_FREEZES: Final = {
    0x00: ("timed freeze", 60, True),
    0x01: ("instantaneous freeze", 3, True),
    0x04: ("hourly freeze", 254, False),  # [U] brief called 0504 "monthly"; 2007 has hourly
    0x06: ("daily freeze", 62, True),
}


def _freeze_items() -> Iterator[DataItem]:
    for di2, (what, records, as_block) in _FREEZES.items():
        for n in range(1, records + 1):
            base = 0x05000000 | (di2 << 16) | n
            yield _single(base, f"{what} time, last-{n}", YYMMDDHHMM, "0-0:1.0.3")
            for di1, c, direction in ((0x01, 1, "forward"), (0x02, 2, "reverse")):
                tariffs = range(TARIFFS + 1) if as_block else range(1)
                fields = tuple(
                    Field(f"{what} {direction} active {_tariff_label(t)}", ENERGY, f"1-0:{c}.8.{t}")
                    for t in tariffs
                )
                yield DataItem(
                    base | (di1 << 8),
                    f"{what} {direction} active energy{' block' if as_block else ''}, last-{n}",
                    fields,
                    block=as_block,
                    uncertain=di2 == 0x04,
                )


# Load-profile curves (DI 0610xxyy). Reply layout: N points of the item's format [U: some
# meters put a YYMMDDhhmm start time first]. Requests are DI + N or DI + N + mmhhDDMMYY.
_CURVES: Final = (
    (0x0101, "A voltage curve", Bcd(2, 1), "1-0:32.7.0"),
    (0x0102, "B voltage curve", Bcd(2, 1), "1-0:52.7.0"),
    (0x0103, "C voltage curve", Bcd(2, 1), "1-0:72.7.0"),
    (0x0201, "A current curve", Bcd(3, 3, True), "1-0:31.7.0"),
    (0x0202, "B current curve", Bcd(3, 3, True), "1-0:51.7.0"),
    (0x0203, "C current curve", Bcd(3, 3, True), "1-0:71.7.0"),
    (0x0300, "total active power curve", Bcd(3, 4, True), "1-0:16.7.0"),
    (0x0301, "A active power curve", Bcd(3, 4, True), "1-0:36.7.0"),
    (0x0302, "B active power curve", Bcd(3, 4, True), "1-0:56.7.0"),
    (0x0303, "C active power curve", Bcd(3, 4, True), "1-0:76.7.0"),
    (0x0400, "total reactive power curve", Bcd(3, 4, True), "1-0:3.7.0"),
    (0x0500, "total power factor curve", Bcd(2, 3, True), "1-0:13.7.0"),
)


def _curve_items() -> Iterator[DataItem]:
    for low, name, fmt, obis in _CURVES:
        points = 196 // fmt.size  # 200-byte data field minus the 4-byte DI
        yield DataItem(
            0x06100000 | low,
            name,
            tuple(Field(f"{name} point {i + 1}", fmt, obis) for i in range(points)),
            block=True,
            uncertain=True,
        )


def _event_items() -> Iterator[DataItem]:
    for n in range(1, 11):
        yield DataItem(
            0x03110000 | n,
            f"power-down record, last-{n}",
            (
                Field("power-down start", YYMMDDHHMMSS, with_billing_period("0-0:96.7.22", n - 1)),
                Field("power-down end", YYMMDDHHMMSS),
            ),
            uncertain=True,
        )
        yield DataItem(
            0x03300D00 | n,
            f"meter cover open record, last-{n}",
            (
                Field("cover opened", YYMMDDHHMMSS, with_billing_period("0-0:96.51.1", n - 1)),
                Field("cover closed", YYMMDDHHMMSS),
            ),
            opaque_tail=True,  # followed by energies before/after [U], left undecoded
            uncertain=True,
        )


# ---------------------------------------------------------------- 1997 rows

# DI1 high nibble 9 = energy; DI1 low nibble 0 current, 4 last month, 8 month before [U];
# DI0 high nibble kind, low nibble 0 total, 1-4 tariffs, F block.
_ENERGY_1997: Final = {0x1: (1, "forward active energy"), 0x2: (2, "reverse active energy")}
_REACTIVE_1997: Final = {0x1: (3, "forward reactive energy"), 0x2: (4, "reverse reactive energy")}


def _items_1997() -> Iterator[DataItem]:
    for di1_low, period in ((0x0, 0), (0x4, 1), (0x8, 2)):
        for group, kinds, unit_fmt in (
            (0x90, _ENERGY_1997, ENERGY),
            (0x91, _REACTIVE_1997, ENERGY),
        ):
            for kind, (c, what) in kinds.items():
                di_base = ((group | di1_low) << 8) | (kind << 4)
                fields = tuple(
                    Field(
                        f"{what} {_tariff_label(t)} ({_period_label(period)})",
                        unit_fmt,
                        with_billing_period(f"1-0:{c}.8.{t}", period),
                    )
                    for t in range(5)
                )
                for t, field in enumerate(fields):
                    yield DataItem(di_base | t, field.name, (field,), uncertain=period > 0)
                yield DataItem(
                    di_base | 0xF, f"{what} block ({_period_label(period)})", fields, block=True
                )
    # Seen from real DTSD22 meters (KTS-Intek log, vector 645-088) but not in our 1997 DI
    # list; read as combined active total [U].
    yield _single(0x9000, "combined active energy total", ENERGY, "1-0:15.8.0", uncertain=True)
    for base, what, fmt, obis_list in (
        (0xB610, "voltage", Bcd(2, 0), ("1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0")),
        (0xB620, "current", Bcd(2, 2), ("1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0")),
    ):
        fields = tuple(
            Field(f"{what} {p}", fmt, o) for p, o in zip(_PHASES, obis_list, strict=True)
        )
        for n, field in enumerate(fields, start=1):
            yield DataItem(base | n, field.name, (field,))
        yield DataItem(base | 0xF, f"{what} block", fields, block=True)
    power = Bcd(3, 4)
    power_fields = tuple(
        Field(f"active power {label}", power, obis)
        for label, obis in (
            ("total", "1-0:16.7.0"),
            ("A", "1-0:36.7.0"),
            ("B", "1-0:56.7.0"),
            ("C", "1-0:76.7.0"),
        )
    )
    for n, field in enumerate(power_fields):
        yield DataItem(0xB630 | n, field.name, (field,), uncertain=True)
    yield DataItem(0xB63F, "active power block", power_fields, block=True, uncertain=True)
    rows_1997: tuple[tuple[int, str, DataFormat, str, bool], ...] = (
        (0xC010, "date and weekday", YYMMDDWW, "0-0:1.0.1", False),
        (0xC011, "time", Clock("hhmmss"), "0-0:1.0.2", False),
        (0xC030, "active constant", Bcd(3, 0), "1-0:0.3.0", False),
        (0xC031, "reactive constant", Bcd(3, 0), "1-0:0.3.1", False),
        (0xC032, "meter number", Digits(6), "0-0:96.1.1", False),
        (0xC033, "customer number", Digits(6), "0-0:96.1.10", True),
        (0xC034, "device code", Digits(6), "0-0:96.1.2", True),
    )
    for di, name, row_format, obis, uncertain in rows_1997:
        yield _single(di, name, row_format, obis, uncertain)


def _index(items: Iterator[DataItem]) -> dict[int, DataItem]:
    table: dict[int, DataItem] = {}
    for item in items:
        if item.di in table:
            raise LocalProtocolError(f"DI {item.di:08X} declared twice")
        table[item.di] = item
    return table


def _items_2007() -> Iterator[DataItem]:
    yield from _energy_items()
    yield from _demand_items()
    yield from _instant_items()
    yield from _parameter_items()
    yield from _freeze_items()
    yield from _curve_items()
    yield from _event_items()


# The plain dicts behind the read-only views, for this package's hot paths (a dict lookup
# is about half the cost of one through MappingProxyType).
_ITEMS_2007: Final = _index(_items_2007())
_ITEMS_1997: Final = _index(_items_1997())

DATA_ITEMS: Final[Mapping[Standard, Mapping[int, DataItem]]] = MappingProxyType(
    {
        Standard.DLT645_2007: MappingProxyType(_ITEMS_2007),
        Standard.DLT645_1997: MappingProxyType(_ITEMS_1997),
    }
)


def data_item(di: int, standard: Standard = Standard.DLT645_2007) -> DataItem | None:
    """The table entry for ``di``, or ``None`` when we do not know it."""
    if standard is Standard.DLT645_2007:
        return _ITEMS_2007.get(di)
    return DATA_ITEMS[standard].get(di)
