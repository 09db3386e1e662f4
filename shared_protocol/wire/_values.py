"""Field checks and wire forms shared by every message: ids, times, decimals, JSON detail.

Every check raises :class:`LocalProtocolError` (the caller built a bad message); the
decoders turn that into :class:`MalformedFrameError` at the one boundary where wire bytes
become messages (:func:`shared_protocol.wire.messages.body_error`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Final

from shared_protocol.errors import LocalProtocolError

#: A gateway id is a certificate CN and an MQTT topic level: lower-case, no wildcards,
#: no separators, at most 63 characters (a DNS label, so it fits everywhere a host name does).
GATEWAY_ID_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
#: "central" names central's own keys (``key_id`` owner), so no gateway may take it.
RESERVED_GATEWAY_IDS: Final = frozenset({"central"})

#: Seqs, sessions and counters are stored as signed 64-bit integers (SQLite INTEGER,
#: PostgreSQL BIGINT), so the wire refuses anything that would not fit.
MAX_INT64: Final = 2**63 - 1

#: Decimal text: plain fixed-point, no exponent, at most this many characters. A meter
#: register has at most ~12 digits; 40 leaves room for money and ratios, and a bound
#: stops ``1E+999999`` from turning into a million digits when formatted.
MAX_DECIMAL_CHARS: Final = 40
MAX_DECIMAL_EXPONENT: Final = 30
_DECIMAL_TEXT: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?")

#: Times on the wire: UTC, microseconds, 'Z' — one fixed width, so they sort as text.
_UTC_TEXT: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")

#: Free text (meter keys, codes, units, versions) is short and has no control characters
#: (they would garble a technician's terminal and a log line) and no lone surrogates
#: (they have no UTF-8 form).
MAX_TEXT_CHARS: Final = 256
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: Event detail / statistic labels: JSON objects nested at most this deep and this large,
#: so one record cannot hold the decoder (a gateway event never needs more).
MAX_DETAIL_DEPTH: Final = 8
MAX_DETAIL_CHARS: Final = 16_384


def check_gateway_id(value: object, what: str = "gateway") -> str:
    """A valid gateway id, or :class:`LocalProtocolError` saying why not."""
    if not isinstance(value, str):
        raise LocalProtocolError(f"{what} must be a string, not {type(value).__name__}")
    if not GATEWAY_ID_PATTERN.fullmatch(value):
        raise LocalProtocolError(
            f"{what} {value!r} is not a gateway id: use 1–63 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit (it is a certificate CN and an MQTT topic level, "
            "so '+', '#', '/' and upper case are refused)"
        )
    if value in RESERVED_GATEWAY_IDS:
        raise LocalProtocolError(f"{what} {value!r} is reserved for central's keys")
    return value


def check_int(value: object, what: str, *, minimum: int = 0, maximum: int = MAX_INT64) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LocalProtocolError(f"{what} must be an integer, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise LocalProtocolError(f"{what} {value} is outside {minimum}..{maximum}")
    return value


def check_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise LocalProtocolError(f"{what} must be true or false, not {type(value).__name__}")
    return value


def check_text(
    value: object, what: str, *, max_chars: int = MAX_TEXT_CHARS, allow_empty: bool = False
) -> str:
    if not isinstance(value, str):
        raise LocalProtocolError(f"{what} must be a string, not {type(value).__name__}")
    if not value and not allow_empty:
        raise LocalProtocolError(f"{what} must not be empty")
    if len(value) > max_chars:
        raise LocalProtocolError(f"{what} is {len(value)} characters; the limit is {max_chars}")
    if _CONTROL.search(value):
        raise LocalProtocolError(f"{what} {value!r} contains control characters")
    return value


def check_optional_text(value: object, what: str) -> str | None:
    return None if value is None else check_text(value, what)


def check_choice(value: object, what: str, choices: frozenset[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise LocalProtocolError(f"{what} {value!r} is not one of {', '.join(sorted(choices))}")
    return value


# -- times -------------------------------------------------------------------------------


def check_time(value: object, what: str) -> datetime:
    """An aware datetime, converted to UTC; naive ones are refused, never guessed."""
    if not isinstance(value, datetime):
        raise LocalProtocolError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise LocalProtocolError(f"{what} {value.isoformat()} is naive; pass an aware UTC time")
    return value.astimezone(UTC)


def check_optional_time(value: object, what: str) -> datetime | None:
    return None if value is None else check_time(value, what)


def time_text(moment: datetime) -> str:
    """``2026-11-29T00:05:00.000000Z``: the one wire form of a time."""
    return _utc_text(moment.astimezone(UTC))


# A batch stamps hundreds of readings with one meter period: cache both directions.
@lru_cache(maxsize=4096)
def _utc_text(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(value: object, what: str) -> datetime:
    moment = _parse_utc_text(value) if isinstance(value, str) else None
    if moment is None:
        raise LocalProtocolError(
            f"{what} {value!r} is not a valid UTC time of the form 2026-11-29T00:05:00.000000Z"
        )
    return moment


@lru_cache(maxsize=4096)
def _parse_utc_text(value: str) -> datetime | None:
    if not _UTC_TEXT.fullmatch(value):
        return None
    try:
        return datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_optional_time(value: object, what: str) -> datetime | None:
    return None if value is None else parse_time(value, what)


# -- decimals ----------------------------------------------------------------------------


def check_decimal(value: object, what: str) -> Decimal:
    """A finite Decimal (an int is accepted and converted); floats are refused."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise LocalProtocolError(
            f"{what} must be a Decimal, not {type(value).__name__} ({value!r}); "
            "floats cannot carry meter values exactly"
        )
    number = value if type(value) is Decimal else Decimal(value)
    if not number.is_finite():
        raise LocalProtocolError(f"{what} must be finite, not {number}")
    if number.is_zero() and number.is_signed():
        number = number.copy_abs()  # -0 and 0 are the same reading; one wire form
    _sign, digits, exponent = number.as_tuple()
    if len(digits) > MAX_DECIMAL_CHARS or abs(exponent) > MAX_DECIMAL_EXPONENT:  # type: ignore[arg-type]
        raise LocalProtocolError(f"{what} {number} is too large or too precise for the wire")
    return number


def check_optional_decimal(value: object, what: str) -> Decimal | None:
    return None if value is None else check_decimal(value, what)


def decimal_text(number: Decimal) -> str:
    """Fixed-point text that keeps the register's scale (``"0.50"`` stays ``"0.50"``)."""
    return format(number, "f")


def parse_decimal(value: object, what: str) -> Decimal:
    if not isinstance(value, str) or len(value) > MAX_DECIMAL_CHARS:
        raise LocalProtocolError(
            f"{what} {value!r} must be a decimal string of at most {MAX_DECIMAL_CHARS} characters"
        )
    if not _DECIMAL_TEXT.fullmatch(value):
        raise LocalProtocolError(f"{what} {value!r} is not plain decimal text like '1234.56'")
    try:
        # Range and sign of zero are checked once, by the message that receives it.
        return Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only valid text
        raise LocalProtocolError(f"{what} {value!r} is not a decimal") from exc


def parse_optional_decimal(value: object, what: str) -> Decimal | None:
    return None if value is None else parse_decimal(value, what)


# -- JSON detail -------------------------------------------------------------------------


def check_detail(value: object, what: str) -> dict[str, Any]:
    """A JSON object of strings, ints, bools, nulls, lists and objects — no floats.

    Returned as a deep copy, so a frozen message cannot be changed through the caller's
    dict. Decimal and datetime values are turned into their wire text.
    """
    if not isinstance(value, dict):
        raise LocalProtocolError(f"{what} must be a dict, not {type(value).__name__}")
    budget = [MAX_DETAIL_CHARS]
    result = _detail_value(value, what, 0, budget)
    assert isinstance(result, dict)
    return result


def _detail_value(value: object, what: str, depth: int, budget: list[int]) -> Any:
    if depth > MAX_DETAIL_DEPTH:
        raise LocalProtocolError(f"{what} is nested deeper than {MAX_DETAIL_DEPTH} levels")
    budget[0] -= 1
    if budget[0] < 0:
        raise LocalProtocolError(f"{what} is larger than {MAX_DETAIL_CHARS} units")
    if value is None or isinstance(value, bool | int):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT64:
            raise LocalProtocolError(f"{what} holds an integer beyond 64 bits")
        return value
    if isinstance(value, str):
        budget[0] -= len(value)
        if budget[0] < 0:
            raise LocalProtocolError(f"{what} is larger than {MAX_DETAIL_CHARS} units")
        _check_encodable(value, what)
        return value
    if isinstance(value, Decimal):
        return decimal_text(check_decimal(value, what))
    if isinstance(value, datetime):
        return time_text(check_time(value, what))
    if isinstance(value, list | tuple):
        return [_detail_value(item, what, depth + 1, budget) for item in value]
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise LocalProtocolError(f"{what} has a non-string key {key!r}")
            budget[0] -= len(key)
            _check_encodable(key, what)
            result[key] = _detail_value(item, what, depth + 1, budget)
        return result
    raise LocalProtocolError(
        f"{what} holds a {type(value).__name__} ({value!r}); use str, int, bool, None, "
        "Decimal, datetime, lists and dicts (floats are never sent)"
    )


def _check_encodable(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{what} holds text that is not valid Unicode: {exc}") from exc


def check_names(value: object, what: str) -> tuple[str, ...]:
    """A tuple of short texts (meter keys, task names); a list is accepted and frozen."""
    if not isinstance(value, tuple | list):
        raise LocalProtocolError(f"{what} must be a list, not {type(value).__name__}")
    return tuple(check_text(item, f"{what}[{index}]") for index, item in enumerate(value))
