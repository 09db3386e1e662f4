"""What the durable log stores and hands out: record kinds, retention rules and the
plain dataclasses the uplink serialises.

Everything a reader gets back is made of ``int``, ``str``, ``dict`` and ``None``: values are
``Decimal`` rendered as text exactly as stored (never float), times are UTC ISO-8601 text in
one fixed-width form (``2026-11-29T00:05:00.000000Z``) so they sort as text and parse back
with :func:`parse_utc`. On disk the times are integer microseconds and type, kind and
source small integers (:data:`TYPE_CODES`, :data:`KIND_CODES`, :data:`SOURCE_CODES`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final, Literal

from edge_agent.store.errors import InvalidRecordError

__all__ = [
    "EVICTION_ORDER",
    "KINDS",
    "SOURCES",
    "Batch",
    "EventRecord",
    "Health",
    "ReadingRecord",
    "Record",
    "RetentionRules",
    "StatisticRecord",
    "format_utc",
    "parse_utc",
]

#: What a record is about; it decides how long the record is kept and when it is evicted.
KINDS: Final = frozenset({"daily", "monthly", "curve", "instant", "event", "clock"})
#: Why a reading was taken (issue 4 task types).
SOURCES: Final = frozenset({"scheduled", "backfill", "on_demand", "event"})
#: Raw frames are not records (no seq, never replicated); their retention/eviction key.
RAW_FRAME: Final = "raw_frame"
DIRECTIONS: Final = frozenset({"tx", "rx"})

#: Eviction classes under disk pressure, first evicted first. Forensic frames go first,
#: billing data (daily and monthly freezes) last: a utility bills from them and the meter
#: keeps only a few days of freezes to re-read (edge.md D1.5).
EVICTION_ORDER: Final[tuple[tuple[str, ...], ...]] = (
    (RAW_FRAME,),
    ("instant", "clock"),
    ("curve",),
    ("event",),
    ("daily", "monthly"),
)

_UTC_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

#: How the log stores the names of record types, kinds and sources: small integers (a 0 or
#: 1 takes no byte in a SQLite row, others one), decoded back to the names on every read.
TYPE_CODES: Final = {"reading": 0, "event": 1, "statistic": 2}
KIND_CODES: Final = {"daily": 0, "monthly": 1, "curve": 2, "instant": 3, "event": 4, "clock": 5}
SOURCE_CODES: Final = {"scheduled": 0, "backfill": 1, "on_demand": 2, "event": 3}
TYPE_NAMES: Final = {code: name for name, code in TYPE_CODES.items()}
KIND_NAMES: Final = {code: name for name, code in KIND_CODES.items()}
SOURCE_NAMES: Final = {code: name for name, code in SOURCE_CODES.items()}


def format_utc(moment: datetime, what: str = "timestamp") -> str:
    """The stored form of an aware datetime; a naive one is refused, never guessed."""
    if not isinstance(moment, datetime):
        raise InvalidRecordError(f"{what} must be a datetime, not {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidRecordError(
            f"{what} {moment.isoformat()} is naive; pass an aware UTC datetime "
            "(meter local time converts with shared_protocol.timebase.meter_time_to_utc)"
        )
    # Converted before the cache: same-zone datetimes compare equal across a DST fold.
    return _utc_text(moment.astimezone(UTC))


@lru_cache(maxsize=4096)  # a bus cycle stamps hundreds of readings with one freeze time
def _utc_text(moment: datetime) -> str:
    return moment.strftime(_UTC_FORMAT)


def parse_utc(text: str) -> datetime:
    """The aware datetime of a timestamp in its text form."""
    return datetime.strptime(text, _UTC_FORMAT).replace(tzinfo=UTC)


def utc_micros(moment: datetime, what: str = "timestamp") -> int:
    """The stored form of an aware datetime: microseconds since 1970-01-01 UTC (8 bytes in
    a row and an index instead of 27 of text; edge.md D1.6). A naive one is refused."""
    if not isinstance(moment, datetime):
        raise InvalidRecordError(f"{what} must be a datetime, not {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidRecordError(
            f"{what} {moment.isoformat()} is naive; pass an aware UTC datetime "
            "(meter local time converts with shared_protocol.timebase.meter_time_to_utc)"
        )
    return _micros(moment.astimezone(UTC))


@lru_cache(maxsize=4096)  # a bus cycle stamps hundreds of readings with one freeze time
def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@lru_cache(maxsize=4096)
def micros_text(micros: int) -> str:
    """The text form (``2026-11-29T00:05:00.000000Z``) of a stored time."""
    return (_EPOCH + timedelta(microseconds=micros)).strftime(_UTC_FORMAT)


def micros_utc(micros: int) -> datetime:
    """The aware datetime of a stored time."""
    return _EPOCH + timedelta(microseconds=micros)


def text_micros(text: str) -> int:
    """A time in the text form (version 1 of the log) as microseconds."""
    return _micros(parse_utc(text))


def decimal_text(value: object, what: str = "value") -> str:
    """A number as exact text: ``Decimal`` or ``int`` only, finite, never float."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise InvalidRecordError(
            f"{what} must be a Decimal (or int), not {type(value).__name__}: {value!r}; "
            "floats cannot carry meter values exactly"
        )
    number = Decimal(value)
    if not number.is_finite():
        raise InvalidRecordError(f"{what} must be finite, not {number}")
    return str(number)


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return format_utc(value, "a datetime inside detail")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_text(value: dict[str, Any], what: str) -> str:
    """A dict as canonical JSON (sorted keys); Decimal and aware datetimes become text."""
    if not isinstance(value, dict):
        raise InvalidRecordError(f"{what} must be a dict, not {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError) as exc:
        raise InvalidRecordError(f"{what} cannot be stored as JSON: {exc}") from exc


@dataclass(frozen=True, slots=True)
class RetentionRules:
    """How long an *acknowledged* record stays for central to re-request, per kind.

    Ages count from the record's data time (a reading's meter period, an event's time).
    Defaults match what Chinese concentrators keep (edge.md D1.4); ``monthly`` is 13
    months taken as 13 × 31 days so a full year plus the current month is always there.
    """

    daily: timedelta = timedelta(days=31)
    monthly: timedelta = timedelta(days=13 * 31)
    curve: timedelta = timedelta(days=10)
    instant: timedelta = timedelta(days=2)
    event: timedelta = timedelta(days=90)
    clock: timedelta = timedelta(days=31)
    raw_frame: timedelta = timedelta(days=2)

    def age_for(self, kind: str) -> timedelta:
        age: timedelta = getattr(self, kind)
        return age


@dataclass(frozen=True, slots=True)
class ReadingRecord:
    """One meter value at the meter's period time (its natural key: meter, obis, period)."""

    seq: int
    kind: str
    created_at: str
    meter: str
    obis: str
    period_ts: str
    value: str
    unit: str | None
    read_ts: str
    source: str
    quality: str
    corrections: int
    type: Literal["reading"] = "reading"


@dataclass(frozen=True, slots=True)
class EventRecord:
    """Something that happened on a meter (``meter`` set) or on the gateway (``None``)."""

    seq: int
    kind: str
    created_at: str
    meter: str | None
    code: str
    detail: dict[str, Any]
    at: str
    type: Literal["event"] = "event"


@dataclass(frozen=True, slots=True)
class StatisticRecord:
    """A counter or ratio the gateway reports (collection success, bus errors)."""

    seq: int
    kind: str
    created_at: str
    name: str
    labels: dict[str, Any]
    value: str
    at: str
    type: Literal["statistic"] = "statistic"


Record = ReadingRecord | EventRecord | StatisticRecord


@dataclass(frozen=True, slots=True)
class Batch:
    """What the uplink sends next: the records and the seq range they *cover*.

    ``seq_from``..``seq_to`` may contain seqs with no record: a reading corrected later
    (its new seq carries the newer value), or an unacknowledged record evicted under disk
    pressure (counted, and an event says which range). Central advances its contiguous
    watermark over the whole covered range, so a hole never stalls replication.
    """

    seq_from: int
    seq_to: int
    records: list[Record] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Health:
    """The log's state for ``edge-agent log``, the birth message and alarms."""

    last_seq: int
    acked_seq: int
    depth: int
    oldest_unacked_age_s: float | None
    size_bytes: int
    wal_bytes: int
    quota_bytes: int | None
    quota_use_percent: float | None
    quota_alarm: Literal["ok", "warning", "critical"] | None
    eviction_counts: dict[str, int]
    corrections: int
    integrity: str
    integrity_checked_at: str | None
    quarantined_to: str | None
