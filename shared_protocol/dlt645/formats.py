"""DL/T 645 data formats: bytes (already −33H, low byte first) ⇄ Python values, both ways.

Each format is a small frozen object with ``size``, ``decode(raw)`` and ``encode(value)``:

* :class:`Bcd` — unsigned or signed packed BCD with a fixed number of decimals
  (``XXXXXX.XX``); signed items carry the sign in bit 7 of the most significant byte.
  Values are :class:`~decimal.Decimal` keeping the format's decimals (``Decimal("0.00")``).
* :class:`Clock` — date/time patterns written most significant first (``YYMMDDhhmmss``,
  ``YYMMDDWW``, ``hhmmss``, ``YYMMDDhhmm``, ``MMDDhhmm``, ``hhmm``); on the wire they are
  low byte first, so ``YYMMDDhhmmss`` *is* the ``ss mm hh DD MM YY`` order of time sync.
* :class:`Digits` — ``NNNN…`` BCD digit strings (addresses, meter numbers, passwords).
* :class:`Ascii` — nameplate text, sent reversed.
* :class:`BitString` — status words, as upper-case hex most significant first.

Bad bytes from the line raise :class:`~shared_protocol.errors.MalformedFrameError`;
values that do not fit raise :class:`~shared_protocol.errors.LocalProtocolError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Final

from shared_protocol.errors import LocalProtocolError, MalformedFrameError
from shared_protocol.quantities import ScalarValue

__all__ = [
    "YYMMDDHHMM",
    "YYMMDDHHMMSS",
    "YYMMDDWW",
    "Ascii",
    "Bcd",
    "BitString",
    "Clock",
    "DataFormat",
    "Digits",
    "bcd_digits",
    "digits_to_bcd",
]


def bcd_digits(raw: bytes) -> str:
    """Low-byte-first BCD → decimal digit string, most significant first."""
    text = raw[::-1].hex()
    if not text.isdigit() and text:
        raise MalformedFrameError(f"{raw[::-1].hex(' ').upper()} is not BCD (a nibble above 9)")
    return text


def digits_to_bcd(digits: str, size: int) -> bytes:
    """Decimal digit string → ``size`` low-byte-first BCD bytes."""
    if not digits.isdigit() or len(digits) > 2 * size or not digits.isascii():
        raise LocalProtocolError(f"{digits!r} is not up to {2 * size} decimal digits")
    return bytes.fromhex(digits.zfill(2 * size))[::-1]


class DataFormat:
    """Base of every format: a fixed size and two conversions."""

    size: int
    label: str

    def decode(self, raw: bytes) -> ScalarValue:
        raise NotImplementedError

    def encode(self, value: ScalarValue) -> bytes:
        raise NotImplementedError

    def _exact_decoder(self) -> Callable[[bytes], ScalarValue]:
        """``decode`` for input already known to be ``size`` bytes (same values, same
        errors); formats override it with something quicker."""
        return self.decode

    def _check_size(self, raw: bytes) -> None:
        if len(raw) != self.size:
            raise MalformedFrameError(
                f"{self.label} takes {self.size} bytes, got {len(raw)} ({raw.hex(' ').upper()})"
            )


@dataclass(frozen=True)
class Bcd(DataFormat):
    """Packed BCD number with ``decimals`` implied decimals; optionally signed (bit 7)."""

    size: int
    decimals: int = 0
    signed: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.size <= 8 or not 0 <= self.decimals <= 2 * self.size:
            raise LocalProtocolError(f"impossible BCD format size={self.size}")

    @property
    def label(self) -> str:  # type: ignore[override]
        whole = "X" * (2 * self.size - self.decimals)
        text = whole + ("." + "X" * self.decimals if self.decimals else "")
        return ("±" if self.signed else "") + text

    @property
    def max_magnitude(self) -> int:
        # bit 7 of the top byte is the sign, so its top digit can only go to 7
        top = 8 if self.signed else 10
        magnitude: int = top * 10 ** (2 * self.size - 1) - 1
        return magnitude

    def decode(self, raw: bytes) -> Decimal:
        self._check_size(raw)
        negative = self.signed and bool(raw[-1] & 0x80)
        if negative:
            raw = raw[:-1] + bytes([raw[-1] & 0x7F])
        magnitude = int(bcd_digits(raw))
        value = Decimal(-magnitude if negative and magnitude else magnitude)
        return value.scaleb(-self.decimals)

    def _exact_decoder(self) -> Callable[[bytes], ScalarValue]:
        if type(self).decode is not Bcd.decode:
            return self.decode
        decimals = self.decimals
        signed = self.signed
        slow = self.decode

        def decode(raw: bytes) -> ScalarValue:
            # The digits as text, the decimal point put in: Decimal("230.93") is exactly
            # Decimal(23093).scaleb(-2), without the integer detour and the scaling.
            text = raw[::-1].hex()
            negative = False
            if signed and text[:1] > "7":
                text = "01234567"[int(text[0], 16) - 8] + text[1:]
                negative = text.strip("0") != ""  # −0 reads as 0, as in decode()
            if not text.isdigit():
                return slow(raw)  # raises decode()'s error
            if decimals:
                text = text[:-decimals] + "." + text[-decimals:]
            return Decimal("-" + text if negative else text)

        return decode

    def encode(self, value: ScalarValue) -> bytes:
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise LocalProtocolError(f"{self.label} needs a Decimal, got {value!r}")
        scaled = Decimal(value).scaleb(self.decimals)
        if scaled != scaled.to_integral_value():
            raise LocalProtocolError(f"{value} has more than {self.decimals} decimals")
        number = int(scaled)
        if number < 0 and not self.signed:
            raise LocalProtocolError(f"{value} is negative but {self.label} is unsigned")
        if abs(number) > self.max_magnitude:
            raise LocalProtocolError(f"{value} does not fit {self.label}")
        raw = bytearray(digits_to_bcd(str(abs(number)), self.size))
        if number < 0:
            raw[-1] |= 0x80
        return bytes(raw)


_FIELDS: Final = ("YY", "MM", "DD", "WW", "hh", "mm", "ss")


@dataclass(frozen=True)
class Clock(DataFormat):
    """A date/time pattern such as ``YYMMDDhhmmss``, written most significant field first."""

    pattern: str

    def __post_init__(self) -> None:
        parts = self.fields
        if len(self.pattern) % 2 or any(p not in _FIELDS for p in parts):
            raise LocalProtocolError(f"unknown clock pattern {self.pattern!r}")

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.pattern[i : i + 2] for i in range(0, len(self.pattern), 2))

    @property
    def size(self) -> int:  # type: ignore[override]
        return len(self.pattern) // 2

    @property
    def label(self) -> str:  # type: ignore[override]
        return self.pattern

    def decode(self, raw: bytes) -> ScalarValue:
        self._check_size(raw)
        digits = bcd_digits(raw)
        parts = {f: int(digits[2 * i : 2 * i + 2]) for i, f in enumerate(self.fields)}
        try:
            if "YY" in parts:
                day = date(2000 + parts["YY"], parts.get("MM", 1), parts.get("DD", 1))
                if "hh" not in parts:
                    return day
                return datetime.combine(
                    day, time(parts["hh"], parts.get("mm", 0), parts.get("ss", 0))
                )
            if "MM" in parts or "DD" in parts:
                # no year: keep the digits (freeze schedules use 99 = every)
                return digits
            return time(parts.get("hh", 0), parts.get("mm", 0), parts.get("ss", 0))
        except ValueError as exc:
            raise MalformedFrameError(
                f"{self.pattern} bytes {digits} are not a real date/time ({exc})"
            ) from None

    def encode(self, value: ScalarValue) -> bytes:
        if isinstance(value, str):
            return (
                digits_to_bcd(value, self.size)
                if len(value) == 2 * self.size
                else _bad(self, value)
            )
        moment = datetime.combine(value, time()) if type(value) is date else value
        if isinstance(moment, datetime):
            values = {
                "YY": moment.year - 2000,
                "MM": moment.month,
                "DD": moment.day,
                "WW": (moment.weekday() + 1) % 7,  # WW: 0 = Sunday
                "hh": moment.hour,
                "mm": moment.minute,
                "ss": moment.second,
            }
            if not 0 <= values["YY"] <= 99:
                raise LocalProtocolError(f"{moment.year} is outside 2000-2099")
        elif isinstance(moment, time):
            if "YY" in self.fields or "DD" in self.fields:
                raise LocalProtocolError(f"{self.pattern} needs a date, got a time")
            values = {"hh": moment.hour, "mm": moment.minute, "ss": moment.second}
        else:
            return _bad(self, value)
        return digits_to_bcd("".join(f"{values[f]:02d}" for f in self.fields), self.size)


def _bad(fmt: DataFormat, value: object) -> bytes:
    raise LocalProtocolError(f"{value!r} cannot be written as {fmt.label}")


YYMMDDHHMMSS: Final = Clock("YYMMDDhhmmss")
YYMMDDHHMM: Final = Clock("YYMMDDhhmm")
YYMMDDWW: Final = Clock("YYMMDDWW")


@dataclass(frozen=True)
class Digits(DataFormat):
    """``NNNN…``: a string of BCD digits, e.g. a meter number."""

    size: int

    @property
    def label(self) -> str:  # type: ignore[override]
        return "N" * (2 * self.size)

    def decode(self, raw: bytes) -> str:
        self._check_size(raw)
        return bcd_digits(raw)

    def encode(self, value: ScalarValue) -> bytes:
        if not isinstance(value, str) or len(value) != 2 * self.size:
            return _bad(self, value)
        return digits_to_bcd(value, self.size)


@dataclass(frozen=True)
class Ascii(DataFormat):
    """Nameplate text (``"220.0V"``), sent reversed; NUL bytes pad it on the right [U]."""

    size: int

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"ASCII×{self.size}"

    def decode(self, raw: bytes) -> str:
        self._check_size(raw)
        try:
            return raw[::-1].decode("ascii").rstrip("\x00")
        except UnicodeDecodeError:
            raise MalformedFrameError(f"{raw[::-1].hex(' ').upper()} is not ASCII text") from None

    def encode(self, value: ScalarValue) -> bytes:
        if not isinstance(value, str) or not value.isascii() or len(value) > self.size:
            return _bad(self, value)
        return value.encode("ascii").ljust(self.size, b"\x00")[::-1]


@dataclass(frozen=True)
class BitString(DataFormat):
    """A status word; the value is upper-case hex, most significant byte first."""

    size: int

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"bit string×{self.size}"

    def decode(self, raw: bytes) -> str:
        self._check_size(raw)
        return raw[::-1].hex().upper()

    def encode(self, value: ScalarValue) -> bytes:
        if not isinstance(value, str) or len(value) != 2 * self.size:
            return _bad(self, value)
        try:
            return bytes.fromhex(value)[::-1]
        except ValueError:
            return _bad(self, value)
