"""Column types that keep exact values on both backends.

* :class:`ExactDecimal` — energy and money are ``Decimal``, never float. PostgreSQL stores
  ``NUMERIC(20, 6)``; SQLite has no decimal type (its NUMERIC affinity turns values into
  8-byte floats), so there the value is canonical TEXT and comes back as the same
  ``Decimal``. A value that does not fit the column (more than 6 decimal places, more than
  14 integer digits, NaN, infinity) is refused rather than rounded: a silently rounded
  meter reading is a wrong bill.
* :class:`UTCDateTime` — timezone-aware UTC in, timezone-aware UTC out. PostgreSQL stores
  ``timestamptz``; SQLite stores INTEGER microseconds since 1970-01-01 UTC, which sorts as
  time and makes the readings key about a third cheaper to insert into than ISO-8601 text
  (``bench/ingest_store.py``; read it with ``datetime(ts / 1e6, 'unixepoch')``). A naive
  datetime is refused, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from sqlalchemy import BigInteger, DateTime, Dialect, Numeric, String
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = [
    "DECIMAL_PRECISION",
    "DECIMAL_SCALE",
    "ExactDecimal",
    "UTCDateTime",
    "checked_decimal",
    "checked_utc",
    "decimal_text",
    "from_utc_micros",
    "utc_micros",
    "utc_text",
]

#: NUMERIC(20, 6): 14 integer digits hold any register (kWh to 6 decimals) or bill amount.
DECIMAL_PRECISION: Final = 20
DECIMAL_SCALE: Final = 6
_DECIMAL_LIMIT: Final = Decimal(10) ** (DECIMAL_PRECISION - DECIMAL_SCALE)
_DECIMAL_QUANTUM: Final = Decimal(1).scaleb(-DECIMAL_SCALE)
_ZERO: Final = Decimal(0)
_UTC_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def checked_decimal(value: object) -> Decimal:
    """``value`` as a ``Decimal`` fitting NUMERIC(20, 6), normalised; ValueError if it does
    not fit. ``int``, ``str`` and ``Decimal`` are accepted; ``float`` is refused (it is
    already rounded by the time it gets here)."""
    if type(value) is not Decimal:
        if isinstance(value, bool | float) or not isinstance(value, Decimal | int | str):
            raise ValueError(
                f"decimal value must be Decimal, int or str, not {type(value).__name__}"
            )
        try:
            value = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r}") from None
    assert isinstance(value, Decimal)
    if not value.is_finite():
        raise ValueError(f"decimal value must be finite: {value!r}")
    if not -_DECIMAL_LIMIT < value < _DECIMAL_LIMIT:
        raise ValueError(f"{value!r} does not fit NUMERIC({DECIMAL_PRECISION}, {DECIMAL_SCALE})")
    if value.quantize(_DECIMAL_QUANTUM) != value:
        raise ValueError(f"{value!r} has more than {DECIMAL_SCALE} decimal places")
    if not value:
        return _ZERO  # PostgreSQL has no negative zero
    # One written form per value ("1.50" -> "1.5", "1E+2" -> "100"), what PostgreSQL's
    # NUMERIC gives back after _result_decimal_normalised too.
    return value.normalize()


def decimal_text(value: object) -> str:
    """The canonical text of :func:`checked_decimal` (how SQLite stores it)."""
    return format(checked_decimal(value), "f")


def checked_utc(moment: object) -> datetime:
    """``moment`` in UTC; ValueError for a naive datetime or not a datetime at all."""
    if not isinstance(moment, datetime):
        raise ValueError(f"timestamp must be a datetime, not {type(moment).__name__}")
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError(f"timestamp must be timezone-aware (UTC), got naive {moment!r}")
    if offset or moment.tzinfo is not UTC:
        moment = (moment - offset).replace(tzinfo=UTC)
    return moment


def utc_text(moment: object) -> str:
    """An aware datetime as fixed-width ISO-8601 UTC text (``2026-11-29T00:05:00.000000Z``)."""
    return checked_utc(moment).strftime(_UTC_FORMAT)


def utc_micros(moment: object) -> int:
    """The SQLite form of an aware datetime: microseconds since 1970-01-01 UTC."""
    return (checked_utc(moment) - _EPOCH) // _MICROSECOND


def from_utc_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC(20, 6) on PostgreSQL, canonical TEXT on SQLite; ``Decimal`` both ways."""

    impl = Numeric(DECIMAL_PRECISION, DECIMAL_SCALE, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String())
        return dialect.type_descriptor(Numeric(DECIMAL_PRECISION, DECIMAL_SCALE, asdecimal=True))

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _bind_decimal_text

        def bind(value: Any) -> Any:
            return None if value is None else checked_decimal(value)

        return bind

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _result_decimal_text
        return _result_decimal_normalised


def _bind_decimal_text(value: Any) -> str | None:
    return None if value is None else decimal_text(value)


def _result_decimal_text(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def _result_decimal_normalised(value: Any) -> Decimal | None:
    # NUMERIC(20, 6) pads to six places ("1.500000"); give back decimal_text's form, as
    # SQLite does, so both backends return equal *and* identically written Decimals.
    if value is None:
        return None
    number = Decimal(value)
    if number == number.to_integral_value():
        return number.quantize(Decimal(1))
    return number.normalize()


class UTCDateTime(TypeDecorator[datetime]):
    """``timestamptz`` on PostgreSQL, INTEGER microseconds since the epoch on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(DateTime(timezone=True))

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _bind_utc_micros
        return _bind_utc_datetime

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _result_utc_micros
        return _result_utc_datetime


def _bind_utc_micros(value: Any) -> int | None:
    return None if value is None else utc_micros(value)


def _bind_utc_datetime(value: Any) -> datetime | None:
    return None if value is None else checked_utc(value)


def _result_utc_micros(value: Any) -> datetime | None:
    return None if value is None else from_utc_micros(value)


def _result_utc_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    moment: datetime = value.astimezone(UTC)
    return moment
