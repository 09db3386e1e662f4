"""Column types that keep exact values on both backends.

* :class:`ExactDecimal` — energy and money are ``Decimal``, never float. PostgreSQL stores
  ``NUMERIC(20, 6)``; SQLite has no decimal type (its NUMERIC affinity turns values into
  8-byte floats), so there the value is canonical TEXT and comes back as the same
  ``Decimal``. A value that does not fit the column (more than 6 decimal places, more than
  14 integer digits, NaN, infinity) is refused rather than rounded: a silently rounded
  meter reading is a wrong bill.
* :class:`UTCDateTime` — timezone-aware UTC in, timezone-aware UTC out. PostgreSQL stores
  ``timestamptz``; SQLite stores fixed-width ISO-8601 text (``2026-11-29T00:05:00.000000Z``,
  the edge's form) that sorts as time. A naive datetime is refused, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from sqlalchemy import DateTime, Dialect, Numeric, String
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["DECIMAL_PRECISION", "DECIMAL_SCALE", "ExactDecimal", "UTCDateTime", "decimal_text"]

#: NUMERIC(20, 6): 14 integer digits hold any register (kWh to 6 decimals) or bill amount.
DECIMAL_PRECISION: Final = 20
DECIMAL_SCALE: Final = 6
_MAX_ADJUSTED: Final = DECIMAL_PRECISION - DECIMAL_SCALE - 1
_UTC_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


def decimal_text(value: object) -> str:
    """``value`` as canonical decimal text fitting NUMERIC(20, 6); ValueError if it does not.

    ``int``, ``str`` and ``Decimal`` are accepted; ``float`` is refused (it is already
    rounded by the time it gets here).
    """
    if isinstance(value, bool | float) or not isinstance(value, Decimal | int | str):
        raise ValueError(f"decimal value must be Decimal, int or str, not {type(value).__name__}")
    try:
        number = value if isinstance(value, Decimal) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"decimal value must be finite: {value!r}")
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -DECIMAL_SCALE and number != number.quantize(Decimal(1).scaleb(-DECIMAL_SCALE)):
        raise ValueError(f"{value!r} has more than {DECIMAL_SCALE} decimal places")
    if number and number.adjusted() > _MAX_ADJUSTED:
        raise ValueError(f"{value!r} does not fit NUMERIC({DECIMAL_PRECISION}, {DECIMAL_SCALE})")
    if not number:
        return "0"  # PostgreSQL has no negative zero
    # One written form per value ("1.50" -> "1.5", "1E+2" -> "100"), what PostgreSQL's
    # NUMERIC gives back after _result_decimal_normalised too.
    return format(number.normalize(), "f")


def utc_text(moment: object) -> str:
    """The SQLite form of an aware datetime."""
    if not isinstance(moment, datetime):
        raise ValueError(f"timestamp must be a datetime, not {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"timestamp must be timezone-aware (UTC), got naive {moment!r}")
    return moment.astimezone(UTC).strftime(_UTC_FORMAT)


def parse_utc_text(text: str) -> datetime:
    return datetime.strptime(text, _UTC_FORMAT).replace(tzinfo=UTC)


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
            return None if value is None else Decimal(decimal_text(value))

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
    """``timestamptz`` on PostgreSQL, fixed-width ISO-8601 UTC text on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(27))
        return dialect.type_descriptor(DateTime(timezone=True))

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _bind_utc_text
        return _bind_utc_datetime

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _result_utc_text
        return _result_utc_datetime


def _bind_utc_text(value: Any) -> str | None:
    return None if value is None else utc_text(value)


def _bind_utc_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    utc_text(value)  # the same refusals as on SQLite
    moment: datetime = value.astimezone(UTC)
    return moment


def _result_utc_text(value: Any) -> datetime | None:
    return None if value is None else parse_utc_text(value)


def _result_utc_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    moment: datetime = value.astimezone(UTC)
    return moment
