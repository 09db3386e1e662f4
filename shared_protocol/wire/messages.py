"""The messages of the edge→central contract: small frozen dataclasses that check themselves.

Each message has a ``TYPE`` (the envelope's ``type``), ``to_wire()`` giving its JSON body
(decimals as strings, times as ``2026-11-29T00:05:00.000000Z``) and ``from_wire(body)``.
Building a bad message raises :class:`LocalProtocolError`; a bad body from the wire raises
:class:`MalformedFrameError` naming the message type and the field. Bodies are strict:
an unknown or missing field is refused, so everything a signature covers is understood.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import islice
from operator import ge
from typing import Any, ClassVar, Final, TypeVar

from shared_protocol.errors import LocalProtocolError, MalformedFrameError
from shared_protocol.wire._values import (
    _CONTROL,
    GATEWAY_ID_PATTERN,
    MAX_DECIMAL_CHARS,
    MAX_INT64,
    MAX_TEXT_CHARS,
    RESERVED_GATEWAY_IDS,
    _parse_utc_text,
    check_bool,
    check_choice,
    check_decimal,
    check_detail,
    check_gateway_id,
    check_int,
    check_names,
    check_optional_decimal,
    check_optional_text,
    check_text,
    check_time,
    decimal_text,
    parse_decimal,
    parse_optional_decimal,
    parse_time,
    time_text,
)

__all__ = [
    "COMMAND_KINDS",
    "COMMAND_STATUSES",
    "MAX_COMMAND_LIFETIME",
    "MAX_RECORDS_PER_BATCH",
    "MESSAGE_TYPES",
    "NACK_REASONS",
    "READING_COLUMNS",
    "READING_KINDS",
    "READING_SOURCES",
    "Ack",
    "ArchiveEntry",
    "BackfillArgs",
    "Birth",
    "CentralState",
    "ClockSyncArgs",
    "ColumnarBatch",
    "Command",
    "CommandArgs",
    "CommandResult",
    "Death",
    "Message",
    "Nack",
    "ReadNowArgs",
    "RebirthArgs",
    "RecordBatch",
    "ResendArgs",
    "ResyncArgs",
    "WireEvent",
    "WireReading",
    "WireRecord",
    "WireStatistic",
    "reading_columns",
]

#: The edge log's reading kinds (an event is its own record type).
READING_KINDS: Final = frozenset({"daily", "monthly", "curve", "instant", "clock"})
#: Why a reading was taken (edge task types).
READING_SOURCES: Final = frozenset({"scheduled", "backfill", "on_demand", "event"})
#: D2.6 batches hold 200–1000 records; 10 000 bounds one message's memory on both sides.
MAX_RECORDS_PER_BATCH: Final = 10_000
#: A gateway remembers command ids until they expire, so a command may not live longer
#: than this: the replay memory stays bounded (see CommandGuard).
MAX_COMMAND_LIFETIME: Final = timedelta(days=7)
#: Meter response frames carried back in a command result (hex text), at most 4 KiB of
#: bytes: a 645 frame is ≤ 200 bytes, a 698 APDU for a read of a few items < 2 KiB.
MAX_METER_RESPONSE_BYTES: Final = 4096
#: Archive size of real concentrator firmware (MTR_MAX_NUM 2040), with headroom.
MAX_ARCHIVE_ENTRIES: Final = 4096

_T = TypeVar("_T")


def body_error(type_name: str, build: Callable[[], _T]) -> _T:
    """Run ``build``; a field check failing on wire input becomes MalformedFrameError."""
    try:
        return build()
    except LocalProtocolError as exc:
        raise MalformedFrameError(f"{type_name}: {exc}") from exc


def _fields(
    body: object, what: str, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise LocalProtocolError(f"{what} must be a JSON object, not {type(body).__name__}")
    keys = body.keys()
    missing = required - keys
    if missing:
        raise LocalProtocolError(f"{what} lacks {', '.join(sorted(missing))}")
    unknown = keys - required - optional
    if unknown:
        raise LocalProtocolError(
            f"{what} has unknown field(s) {', '.join(sorted(unknown))}; "
            "a new field needs a new protocol version"
        )
    return body


def _set(instance: object, name: str, value: object) -> None:
    object.__setattr__(instance, name, value)


# -- records -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireReading:
    """One meter value at the meter's period time; natural key (meter, obis, time)."""

    TYPE: ClassVar[str] = "reading"
    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"type", "seq", "meter", "obis", "time", "value", "unit", "kind", "source", "quality"}
        | {"read_at"}
    )

    seq: int
    meter: str
    obis: str
    time: datetime
    value: Decimal
    unit: str | None
    kind: str
    source: str
    quality: str
    read_at: datetime

    def __post_init__(self) -> None:
        check_int(self.seq, "seq", minimum=1)
        check_text(self.meter, "meter")
        check_text(self.obis, "obis")
        _set(self, "time", check_time(self.time, "time"))
        _set(self, "value", check_decimal(self.value, "value"))
        check_optional_text(self.unit, "unit")
        check_choice(self.kind, "reading kind", READING_KINDS)
        check_choice(self.source, "source", READING_SOURCES)
        check_text(self.quality, "quality")
        _set(self, "read_at", check_time(self.read_at, "read_at"))

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "reading",
            "seq": self.seq,
            "meter": self.meter,
            "obis": self.obis,
            "time": time_text(self.time),
            "value": decimal_text(self.value),
            "unit": self.unit,
            "kind": self.kind,
            "source": self.source,
            "quality": self.quality,
            "read_at": time_text(self.read_at),
        }

    @classmethod
    def from_wire(cls, body: object) -> WireReading:
        reading = _reading_fast(body)
        if reading is not None:
            return reading
        # Something is wrong (or unusual): the generic path finds it and says what.
        data = _fields(body, "reading", cls._KEYS)
        return cls(
            seq=data["seq"],
            meter=data["meter"],
            obis=data["obis"],
            time=parse_time(data["time"], "time"),
            value=parse_decimal(data["value"], "value"),
            unit=data["unit"],
            kind=data["kind"],
            source=data["source"],
            quality=data["quality"],
            read_at=parse_time(data["read_at"], "read_at"),
        )


# The hot path of ingestion: a batch holds hundreds of readings. ``_reading_fast`` makes
# exactly the checks of ``_fields`` + ``from_wire`` + ``__post_init__`` with direct type
# tests, and builds the frozen instance without running them a second time. It returns
# None as soon as anything is not plainly valid; the caller then takes the generic path,
# which refuses the body with the usual message (or accepts an unusual valid one). So the
# fast path may only ever be stricter, never more lenient: tests compare the two.
_new = object.__new__
_READING_SETTERS: Final = tuple(
    WireReading.__dict__[name].__set__
    for name in (
        "seq", "meter", "obis", "time", "value", "unit", "kind", "source", "quality", "read_at"
    )
)  # fmt: skip
_SET_SEQ, _SET_METER, _SET_OBIS, _SET_TIME, _SET_VALUE = _READING_SETTERS[:5]
_SET_UNIT, _SET_KIND, _SET_SOURCE, _SET_QUALITY, _SET_READ_AT = _READING_SETTERS[5:]
_READING_KEYS: Final = WireReading._KEYS
_READING_KEY_COUNT: Final = len(_READING_KEYS)
#: ``parse_decimal`` + ``check_decimal`` in one pattern: plain text, ≤ 30 decimal places
#: (``check_decimal``'s exponent bound); the length bound is tested apart.
_FAST_DECIMAL: Final = re.compile(r"-?[0-9]+(?:\.[0-9]{1,30})?")
_decimal_match = _FAST_DECIMAL.fullmatch
_control_search = _CONTROL.search


def _reading_fast(body: object) -> WireReading | None:
    if type(body) is not dict or len(body) != _READING_KEY_COUNT or body.keys() != _READING_KEYS:
        return None
    return _reading_checked(
        body["seq"],
        body["meter"],
        body["obis"],
        body["time"],
        body["value"],
        body["unit"],
        body["kind"],
        body["source"],
        body["quality"],
        body["read_at"],
    )


#: A reading's keys in canonical (sorted) order, as the edge sends them.
_READING_PAIR_KEYS: Final = tuple(sorted(WireReading._KEYS))


def _reading_from_pairs(pairs: tuple[tuple[str, Any], ...]) -> WireReading | None:
    """``_reading_fast`` for a JSON object parsed as its (key, value) pairs: it must have
    exactly the keys of a reading in canonical order (so none twice), typed ``reading``."""
    if len(pairs) != _READING_KEY_COUNT:
        return None
    (
        (k0, kind),
        (k1, meter),
        (k2, obis),
        (k3, quality),
        (k4, read_at),
        (k5, seq),
        (k6, source),
        (k7, time_),
        (k8, tag),
        (k9, unit),
        (k10, value),
    ) = pairs
    if (k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10) != _READING_PAIR_KEYS or tag != "reading":
        return None
    return _reading_checked(seq, meter, obis, time_, value, unit, kind, source, quality, read_at)


def _reading_checked(
    seq: Any,
    meter: Any,
    obis: Any,
    time_: Any,
    value: Any,
    unit: Any,
    kind: Any,
    source: Any,
    quality: Any,
    read_at: Any,
) -> WireReading | None:
    if (
        type(seq) is not int
        or not 1 <= seq <= MAX_INT64
        or type(meter) is not str
        or type(obis) is not str
        or type(quality) is not str
        or not (0 < len(meter) <= MAX_TEXT_CHARS)
        or not (0 < len(obis) <= MAX_TEXT_CHARS)
        or not (0 < len(quality) <= MAX_TEXT_CHARS)
        or type(kind) is not str
        or kind not in READING_KINDS
        or type(source) is not str
        or source not in READING_SOURCES
        or type(value) is not str
        or len(value) > MAX_DECIMAL_CHARS
        or type(time_) is not str
        or type(read_at) is not str
    ):
        return None
    if unit is None:
        texts = meter + obis + quality
    elif type(unit) is str and 0 < len(unit) <= MAX_TEXT_CHARS:
        texts = meter + obis + quality + unit
    else:
        return None
    if _control_search(texts) is not None or _decimal_match(value) is None:
        return None
    moment = _parse_utc_text(time_)
    read_moment = _parse_utc_text(read_at)
    if moment is None or read_moment is None:
        return None
    number = Decimal(value)
    if value[0] == "-" and not number:
        number = number.copy_abs()  # -0 and 0 are the same reading (check_decimal)
    reading: WireReading = _new(WireReading)
    _SET_SEQ(reading, seq)
    _SET_METER(reading, meter)
    _SET_OBIS(reading, obis)
    _SET_TIME(reading, moment)
    _SET_VALUE(reading, number)
    _SET_UNIT(reading, unit)
    _SET_KIND(reading, kind)
    _SET_SOURCE(reading, source)
    _SET_QUALITY(reading, quality)
    _SET_READ_AT(reading, read_moment)
    return reading


@dataclass(frozen=True, slots=True)
class WireEvent:
    """Something that happened on a meter (``meter`` set) or on the gateway (``None``)."""

    TYPE: ClassVar[str] = "event"
    _KEYS: ClassVar[frozenset[str]] = frozenset({"type", "seq", "meter", "code", "detail", "at"})

    seq: int
    meter: str | None
    code: str
    detail: dict[str, Any] = field(hash=False)
    at: datetime

    def __post_init__(self) -> None:
        check_int(self.seq, "seq", minimum=1)
        check_optional_text(self.meter, "meter")
        check_text(self.code, "event code")
        _set(self, "detail", check_detail(self.detail, "event detail"))
        _set(self, "at", check_time(self.at, "at"))

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "event",
            "seq": self.seq,
            "meter": self.meter,
            "code": self.code,
            "detail": self.detail,
            "at": time_text(self.at),
        }

    @classmethod
    def from_wire(cls, body: object) -> WireEvent:
        data = _fields(body, "event", cls._KEYS)
        return cls(
            seq=data["seq"],
            meter=data["meter"],
            code=data["code"],
            detail=data["detail"],
            at=parse_time(data["at"], "at"),
        )


@dataclass(frozen=True, slots=True)
class WireStatistic:
    """A counter or ratio the gateway reports (collection success, bus errors)."""

    TYPE: ClassVar[str] = "statistic"
    _KEYS: ClassVar[frozenset[str]] = frozenset({"type", "seq", "name", "labels", "value", "at"})

    seq: int
    name: str
    labels: dict[str, Any] = field(hash=False)
    value: Decimal
    at: datetime

    def __post_init__(self) -> None:
        check_int(self.seq, "seq", minimum=1)
        check_text(self.name, "statistic name")
        _set(self, "labels", check_detail(self.labels, "statistic labels"))
        _set(self, "value", check_decimal(self.value, "value"))
        _set(self, "at", check_time(self.at, "at"))

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "statistic",
            "seq": self.seq,
            "name": self.name,
            "labels": self.labels,
            "value": decimal_text(self.value),
            "at": time_text(self.at),
        }

    @classmethod
    def from_wire(cls, body: object) -> WireStatistic:
        data = _fields(body, "statistic", cls._KEYS)
        return cls(
            seq=data["seq"],
            name=data["name"],
            labels=data["labels"],
            value=parse_decimal(data["value"], "value"),
            at=parse_time(data["at"], "at"),
        )


WireRecord = WireReading | WireEvent | WireStatistic
_RECORD_TYPES: Final[dict[str, type[WireReading] | type[WireEvent] | type[WireStatistic]]] = {
    "reading": WireReading,
    "event": WireEvent,
    "statistic": WireStatistic,
}


def _record_from_wire(item: object, index: int) -> WireRecord:
    if not isinstance(item, dict):
        raise LocalProtocolError(f"records[{index}] must be a JSON object")
    tag = item.get("type")
    record_type = _RECORD_TYPES.get(tag) if isinstance(tag, str) else None
    if record_type is None:
        raise LocalProtocolError(
            f"records[{index}] has type {item.get('type')!r}; "
            f"use one of {', '.join(sorted(_RECORD_TYPES))}"
        )
    try:
        return record_type.from_wire(item)
    except LocalProtocolError as exc:
        raise LocalProtocolError(f"records[{index}]: {exc}") from exc


# -- batch and acknowledgement -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """Records of the gateway's log covering ``[seq_from, seq_to]``, signed by the gateway.

    The range may hold seqs with no record (a reading corrected later under a new seq, an
    unacknowledged record evicted under disk pressure); central's contiguous watermark moves
    over the whole covered range, so a hole never stalls replication. A resend of the same
    range is the same batch: central's storage is idempotent. ``historical`` marks backlog
    (sent while catching up) so dashboards do not take it for live data.
    """

    TYPE: ClassVar[str] = "batch"
    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"gateway", "session", "seq_from", "seq_to", "records", "historical", "sent_at"}
    )
    #: Readings travel as columns (one JSON array per field) beside the other records.
    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"readings"})

    gateway: str
    session: int
    seq_from: int
    seq_to: int
    records: tuple[WireRecord, ...]
    historical: bool
    sent_at: datetime

    def __post_init__(self) -> None:
        check_gateway_id(self.gateway)
        check_int(self.session, "session")
        check_int(self.seq_from, "seq_from", minimum=1)
        check_int(self.seq_to, "seq_to", minimum=1)
        if self.seq_from > self.seq_to:
            raise LocalProtocolError(
                f"empty seq range: seq_from {self.seq_from} > seq_to {self.seq_to}"
            )
        if not isinstance(self.records, tuple | list):
            raise LocalProtocolError("records must be a tuple of WireReading/Event/Statistic")
        records = tuple(self.records)
        if len(records) > MAX_RECORDS_PER_BATCH:
            raise LocalProtocolError(
                f"{len(records)} records in one batch; the limit is {MAX_RECORDS_PER_BATCH}"
            )
        previous = self.seq_from - 1
        for index, record in enumerate(records):
            if not isinstance(record, WireReading | WireEvent | WireStatistic):
                raise LocalProtocolError(
                    f"records[{index}] is a {type(record).__name__}, not a wire record"
                )
            if record.seq <= previous:
                raise LocalProtocolError(
                    f"records[{index}] has seq {record.seq} after {previous}: seqs must rise "
                    f"strictly from seq_from {self.seq_from}"
                )
            if record.seq > self.seq_to:
                raise LocalProtocolError(
                    f"records[{index}] has seq {record.seq} beyond seq_to {self.seq_to}"
                )
            previous = record.seq
        _set(self, "records", records)
        check_bool(self.historical, "historical")
        _set(self, "sent_at", check_time(self.sent_at, "sent_at"))

    def to_wire(self) -> dict[str, Any]:
        readings = [r for r in self.records if type(r) is WireReading]
        body = {
            "gateway": self.gateway,
            "session": self.session,
            "seq_from": self.seq_from,
            "seq_to": self.seq_to,
            "records": [
                record.to_wire() for record in self.records if type(record) is not WireReading
            ],
            "historical": self.historical,
            "sent_at": time_text(self.sent_at),
        }
        if readings:
            body["readings"] = reading_columns(readings)
        return body

    @classmethod
    def from_wire(cls, body: object) -> RecordBatch:
        batch = _batch_fast(body)
        if batch is not None:
            return batch

        # Something is wrong (or unusual): the generic path finds it and says what.
        def build() -> RecordBatch:
            data = _fields(body, "batch", cls._KEYS, cls._OPTIONAL)
            items = data["records"]
            if not isinstance(items, list):
                raise LocalProtocolError("records must be a JSON array")
            records = [_record_from_wire(item, i) for i, item in enumerate(items)]
            if "readings" in data:
                records.extend(_readings_from_columns(data["readings"]))
                records.sort(key=_record_seq)
            if len(records) > MAX_RECORDS_PER_BATCH:
                raise LocalProtocolError(
                    f"{len(records)} records in one batch; the limit is {MAX_RECORDS_PER_BATCH}"
                )
            return cls(
                gateway=data["gateway"],
                session=data["session"],
                seq_from=data["seq_from"],
                seq_to=data["seq_to"],
                records=tuple(records),
                historical=data["historical"],
                sent_at=parse_time(data["sent_at"], "sent_at"),
            )

        return body_error(cls.TYPE, build)


# -- readings as columns ---------------------------------------------------------------------
#
# A batch carries hundreds of readings with the same ten fields; as one JSON array per field
# they parse several times faster than as objects and check with whole-column operations
# (the ingest hot path, central.ingest.store), and compress better.

#: The columns of ``readings`` in a batch body, in the order of WireReading's fields.
READING_COLUMNS: Final = (
    "seq", "meter", "obis", "time", "value", "unit", "kind", "source", "quality", "read_at"
)  # fmt: skip
_READING_COLUMN_KEYS: Final = frozenset(READING_COLUMNS)


def reading_columns(readings: Sequence[WireReading]) -> dict[str, list[Any]]:
    """The wire form of ``readings``: one array per field, index i for reading i."""
    return {
        "seq": [r.seq for r in readings],
        "meter": [r.meter for r in readings],
        "obis": [r.obis for r in readings],
        "time": [time_text(r.time) for r in readings],
        "value": [decimal_text(r.value) for r in readings],
        "unit": [r.unit for r in readings],
        "kind": [r.kind for r in readings],
        "source": [r.source for r in readings],
        "quality": [r.quality for r in readings],
        "read_at": [time_text(r.read_at) for r in readings],
    }


def _record_seq(record: WireRecord) -> int:
    return record.seq


def _readings_from_columns(columns: object) -> list[WireReading]:
    """The generic (slow, precise) decoding of ``readings``: every reading checked with the
    usual words, named by its index in the columns."""
    data = _fields(columns, "readings", _READING_COLUMN_KEYS)
    count = None
    for name in READING_COLUMNS:
        column = data[name]
        if not isinstance(column, list):
            raise LocalProtocolError(f"readings.{name} must be a JSON array")
        if count is None:
            count = len(column)
        elif len(column) != count:
            raise LocalProtocolError(
                f"readings.{name} has {len(column)} items, readings.seq has {count}: "
                "every column must have one item per reading"
            )
    if count is not None and count > MAX_RECORDS_PER_BATCH:
        raise LocalProtocolError(
            f"{count} readings in one batch; the limit is {MAX_RECORDS_PER_BATCH}"
        )
    readings: list[WireReading] = []
    for index in range(count or 0):
        item = {"type": "reading", **{name: data[name][index] for name in READING_COLUMNS}}
        try:
            reading = WireReading.from_wire(item)
        except LocalProtocolError as exc:
            raise LocalProtocolError(f"readings[{index}]: {exc}") from exc
        if readings and reading.seq <= readings[-1].seq:
            raise LocalProtocolError(
                f"readings[{index}] has seq {reading.seq} after {readings[-1].seq}: "
                "seqs must rise strictly"
            )
        readings.append(reading)
    return readings


_BATCH_SETTERS: Final = tuple(
    RecordBatch.__dict__[name].__set__
    for name in ("gateway", "session", "seq_from", "seq_to", "records", "historical", "sent_at")
)
_BATCH_KEYS: Final = RecordBatch._KEYS
_gateway_match = GATEWAY_ID_PATTERN.fullmatch


def _batch_fast(body: object) -> RecordBatch | None:
    """``RecordBatch.from_wire`` for a plainly valid body, or None (see ``_reading_fast``)."""
    if type(body) is not dict or body.keys() != _BATCH_KEYS:
        return None
    return _batch_checked(
        body["gateway"],
        body["session"],
        body["seq_from"],
        body["seq_to"],
        body["records"],
        body["historical"],
        body["sent_at"],
        pairs=False,
    )


_BATCH_PAIR_KEYS: Final = tuple(sorted(RecordBatch._KEYS))


def _batch_from_pairs(tree: object, columnar: bool = False) -> RecordBatch | ColumnarBatch | None:
    """A batch body parsed with ``object_pairs_hook=tuple`` (every JSON object a tuple of
    its (key, value) pairs, every array a list) when it is plainly valid and canonical:
    objects with exactly their keys in sorted order (so no key twice), and everything
    ``RecordBatch.from_wire`` checks. Otherwise None, and the caller decodes the body the
    generic way (which refuses it with the usual error, or accepts an unusual valid one).
    The envelope uses it for compressed batches: no dict is built for a reading at all.
    With ``columnar``, a body with reading columns comes back as a :class:`ColumnarBatch`
    (no object per reading either)."""
    if type(tree) is not tuple:
        return None
    if len(tree) == len(_BATCH_PAIR_KEYS):
        (
            (k0, gateway),
            (k1, historical),
            (k2, items),
            (k3, sent_at),
            (k4, seq_from),
            (k5, seq_to),
            (k6, session),
        ) = tree
        if (k0, k1, k2, k3, k4, k5, k6) != _BATCH_PAIR_KEYS:
            return None
        return _batch_checked(
            gateway, session, seq_from, seq_to, items, historical, sent_at, pairs=True
        )
    if len(tree) != len(_COLUMNAR_BATCH_PAIR_KEYS):
        return None
    (
        (k0, gateway),
        (k1, historical),
        (k2, columns),
        (k3, items),
        (k4, sent_at),
        (k5, seq_from),
        (k6, seq_to),
        (k7, session),
    ) = tree
    if (k0, k1, k2, k3, k4, k5, k6, k7) != _COLUMNAR_BATCH_PAIR_KEYS:
        return None
    others = _batch_checked(
        gateway, session, seq_from, seq_to, items, historical, sent_at, pairs=True
    )
    if others is None or type(columns) is not tuple or len(columns) != len(_COLUMN_PAIR_KEYS):
        return None
    if tuple(key for key, _ in columns) != _COLUMN_PAIR_KEYS:
        return None
    checked = _columns_checked(dict(columns), others)
    if checked is None:
        return None
    if columnar:
        return ColumnarBatch(others, *checked)
    return _merged_batch(others, checked)


_COLUMNAR_BATCH_PAIR_KEYS: Final = tuple(sorted(RecordBatch._KEYS | RecordBatch._OPTIONAL))
_COLUMN_PAIR_KEYS: Final = tuple(sorted(READING_COLUMNS))
_TEXT_TYPES: Final = {str}
_UNIT_TYPES: Final = frozenset({str, type(None)})
_INT_TYPES: Final = {int}

_Checked = tuple[
    list[int], list[str], list[str], list[str], list[str], list[str | None], list[str],
    list[str], list[str], list[str], dict[str, datetime],
]  # fmt: skip


def _columns_checked(columns: dict[str, Any], others: RecordBatch) -> _Checked | None:
    """Reading columns that pass every check ``WireReading`` makes, made on whole columns
    (C loops: ``set(map(type, …))``, one regex pass, one parse per distinct time), or None.
    ``others`` is the rest of the batch: together the seqs must rise strictly within it."""
    seq = columns["seq"]
    meter = columns["meter"]
    obis = columns["obis"]
    time_ = columns["time"]
    value = columns["value"]
    unit = columns["unit"]
    kind = columns["kind"]
    source = columns["source"]
    quality = columns["quality"]
    read_at = columns["read_at"]
    all_columns = (seq, meter, obis, time_, value, unit, kind, source, quality, read_at)
    if any(type(column) is not list for column in all_columns):
        return None
    count = len(seq)
    if not 0 < count <= MAX_RECORDS_PER_BATCH - len(others.records):
        return None
    if any(len(column) != count for column in all_columns):
        return None
    if set(map(type, seq)) != _INT_TYPES:
        return None
    if seq[0] < others.seq_from or seq[-1] > others.seq_to:
        return None
    if any(map(ge, seq, islice(seq, 1, None))):  # not strictly rising
        return None
    if others.records and not {r.seq for r in others.records}.isdisjoint(seq):
        return None
    for column in (meter, obis, quality, value, time_, read_at, kind, source):
        if set(map(type, column)) != _TEXT_TYPES:
            return None
    for column in (meter, obis, quality):
        if min(map(len, column)) == 0 or max(map(len, column)) > MAX_TEXT_CHARS:
            return None
    units = [u for u in unit if u is not None]
    if not _UNIT_TYPES.issuperset(map(type, unit)):
        return None
    if units and (min(map(len, units)) == 0 or max(map(len, units)) > MAX_TEXT_CHARS):
        return None
    if _control_search("".join((*meter, *obis, *quality, *units))) is not None:
        return None
    if not READING_KINDS.issuperset(kind) or not READING_SOURCES.issuperset(source):
        return None
    if max(map(len, value)) > MAX_DECIMAL_CHARS or not all(map(_decimal_match, value)):
        return None
    moments = {text: _parse_utc_text(text) for text in {*time_, *read_at}}
    if None in moments.values():
        return None
    return (seq, meter, obis, time_, value, unit, kind, source, quality, read_at, moments)  # type: ignore[return-value]


def _merged_batch(others: RecordBatch, checked: _Checked) -> RecordBatch:
    """The RecordBatch of checked columns and the other records, in seq order."""
    seq, meter, obis, time_, value, unit, kind, source, quality, read_at, moments = checked
    records: list[WireRecord] = list(others.records)
    append = records.append
    for i in range(len(seq)):
        text = value[i]
        number = Decimal(text)
        if text[0] == "-" and not number:
            number = number.copy_abs()  # -0 and 0 are the same reading (check_decimal)
        reading: WireReading = _new(WireReading)
        _SET_SEQ(reading, seq[i])
        _SET_METER(reading, meter[i])
        _SET_OBIS(reading, obis[i])
        _SET_TIME(reading, moments[time_[i]])
        _SET_VALUE(reading, number)
        _SET_UNIT(reading, unit[i])
        _SET_KIND(reading, kind[i])
        _SET_SOURCE(reading, source[i])
        _SET_QUALITY(reading, quality[i])
        _SET_READ_AT(reading, moments[read_at[i]])
        append(reading)
    if others.records:
        records.sort(key=_record_seq)
    batch: RecordBatch = _new(RecordBatch)
    for setter, field_value in zip(
        _BATCH_SETTERS,
        (
            others.gateway,
            others.session,
            others.seq_from,
            others.seq_to,
            tuple(records),
            others.historical,
            others.sent_at,
        ),
        strict=True,
    ):
        setter(batch, field_value)
    return batch


@dataclass(frozen=True, slots=True, eq=False)
class ColumnarBatch:
    """A verified batch whose readings are still the checked columns of the wire (central's
    ingest hot path: no object per reading). ``others`` holds the batch's header and its
    events and statistics; the columns hold what ``WireReading`` would, with ``time`` and
    ``read_at`` as wire text and ``moments`` the parsed datetime of every such text.
    :meth:`to_record_batch` gives the ordinary :class:`RecordBatch`."""

    TYPE: ClassVar[str] = "batch"

    others: RecordBatch
    seq: list[int]
    meter: list[str]
    obis: list[str]
    time: list[str]
    value: list[str]
    unit: list[str | None]
    kind: list[str]
    source: list[str]
    quality: list[str]
    read_at: list[str]
    moments: dict[str, datetime]

    @property
    def gateway(self) -> str:
        return self.others.gateway

    @property
    def session(self) -> int:
        return self.others.session

    @property
    def seq_from(self) -> int:
        return self.others.seq_from

    @property
    def seq_to(self) -> int:
        return self.others.seq_to

    @property
    def historical(self) -> bool:
        return self.others.historical

    def __len__(self) -> int:
        """How many records the batch holds (readings and others)."""
        return len(self.seq) + len(self.others.records)

    def to_record_batch(self) -> RecordBatch:
        return _merged_batch(
            self.others,
            (
                self.seq, self.meter, self.obis, self.time, self.value, self.unit, self.kind,
                self.source, self.quality, self.read_at, self.moments,
            ),
        )  # fmt: skip


def _pairs_to_objects(value: Any) -> Any:
    """Pairs-parsed JSON back to dicts and lists; ValueError for a key given twice."""
    if type(value) is tuple:
        result = {key: _pairs_to_objects(item) for key, item in value}
        if len(result) != len(value):
            raise ValueError("a key appears twice in one object")
        return result
    if type(value) is list:
        return [_pairs_to_objects(item) for item in value]
    return value


def _batch_checked(
    gateway: Any,
    session: Any,
    seq_from: Any,
    seq_to: Any,
    items: Any,
    historical: Any,
    sent_at: Any,
    *,
    pairs: bool,
) -> RecordBatch | None:
    if (
        type(gateway) is not str
        or _gateway_match(gateway) is None
        or gateway in RESERVED_GATEWAY_IDS
        or type(session) is not int
        or not 0 <= session <= MAX_INT64
        or type(seq_from) is not int
        or type(seq_to) is not int
        or not 1 <= seq_from <= seq_to <= MAX_INT64
        or type(items) is not list
        or len(items) > MAX_RECORDS_PER_BATCH
        or type(historical) is not bool
        or type(sent_at) is not str
    ):
        return None
    sent_moment = _parse_utc_text(sent_at)
    if sent_moment is None:
        return None
    records: list[WireRecord] = []
    append = records.append
    previous = seq_from - 1
    for index, item in enumerate(items):
        record: WireRecord | None
        if pairs:
            if type(item) is not tuple:
                return None
            if len(item) == _READING_KEY_COUNT:
                record = _reading_from_pairs(item)
            else:
                try:
                    record = _record_from_wire(_pairs_to_objects(item), index)
                except (LocalProtocolError, ValueError, RecursionError):
                    return None
        elif type(item) is dict and item.get("type") == "reading":
            record = _reading_fast(item)
        else:
            try:
                record = _record_from_wire(item, index)
            except LocalProtocolError:
                return None
        if record is None:
            return None
        seq = record.seq
        if seq <= previous or seq > seq_to:
            return None
        previous = seq
        append(record)
    batch: RecordBatch = _new(RecordBatch)
    for setter, value in zip(
        _BATCH_SETTERS,
        (gateway, session, seq_from, seq_to, tuple(records), historical, sent_moment),
        strict=True,
    ):
        setter(batch, value)
    return batch


@dataclass(frozen=True, slots=True)
class Ack:
    """Central has committed every record of this gateway up to ``up_to_seq`` (contiguous).

    The gateway releases records only on this message — never on PUBACK or a timeout. A
    smaller ``up_to_seq`` than one already seen is stale (acks may arrive out of order) and
    is ignored by the gateway, never treated as a regression. ``received_at`` is central's
    clock, which the gateway compares with its own (D5 clock offset check).
    """

    TYPE: ClassVar[str] = "ack"
    _KEYS: ClassVar[frozenset[str]] = frozenset({"gateway", "session", "up_to_seq", "received_at"})

    gateway: str
    session: int
    up_to_seq: int
    received_at: datetime

    def __post_init__(self) -> None:
        check_gateway_id(self.gateway)
        check_int(self.session, "session")
        check_int(self.up_to_seq, "up_to_seq")
        _set(self, "received_at", check_time(self.received_at, "received_at"))

    def to_wire(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "session": self.session,
            "up_to_seq": self.up_to_seq,
            "received_at": time_text(self.received_at),
        }

    @classmethod
    def from_wire(cls, body: object) -> Ack:
        def build() -> Ack:
            data = _fields(body, "ack", cls._KEYS)
            return cls(
                gateway=data["gateway"],
                session=data["session"],
                up_to_seq=data["up_to_seq"],
                received_at=parse_time(data["received_at"], "received_at"),
            )

        return body_error(cls.TYPE, build)


#: Why central refused a batch. ``storage`` is central's own fault (retry later); the others
#: mean the batch as sent will never be accepted and the gateway must raise an alarm.
NACK_REASONS: Final = frozenset(
    {"signature", "malformed", "unsupported_version", "too_large", "wrong_gateway", "storage"}
)


@dataclass(frozen=True, slots=True)
class Nack:
    """Central refused a batch (on the ack topic); the records stay on the gateway.

    ``seq_from``/``seq_to`` are ``None`` when the batch could not be read far enough to
    know them. The gateway keeps the records (a nack never releases anything) and reports.
    """

    TYPE: ClassVar[str] = "nack"
    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"gateway", "session", "seq_from", "seq_to", "reason", "detail", "at"}
    )

    gateway: str
    session: int | None
    seq_from: int | None
    seq_to: int | None
    reason: str
    detail: str
    at: datetime

    def __post_init__(self) -> None:
        check_gateway_id(self.gateway)
        if self.session is not None:
            check_int(self.session, "session")
        if (self.seq_from is None) != (self.seq_to is None):
            raise LocalProtocolError("seq_from and seq_to are both known or both None")
        if self.seq_from is not None and self.seq_to is not None:
            check_int(self.seq_from, "seq_from", minimum=1)
            check_int(self.seq_to, "seq_to", minimum=self.seq_from)
        check_choice(self.reason, "nack reason", NACK_REASONS)
        check_text(self.detail, "detail", max_chars=1024, allow_empty=True)
        _set(self, "at", check_time(self.at, "at"))

    def to_wire(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "session": self.session,
            "seq_from": self.seq_from,
            "seq_to": self.seq_to,
            "reason": self.reason,
            "detail": self.detail,
            "at": time_text(self.at),
        }

    @classmethod
    def from_wire(cls, body: object) -> Nack:
        def build() -> Nack:
            data = _fields(body, "nack", cls._KEYS)
            return cls(
                gateway=data["gateway"],
                session=data["session"],
                seq_from=data["seq_from"],
                seq_to=data["seq_to"],
                reason=data["reason"],
                detail=data["detail"],
                at=parse_time(data["at"], "at"),
            )

        return body_error(cls.TYPE, build)


# -- birth, death, central state -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """One meter of the gateway's archive as central needs to know it.

    ``address`` is the meter's key on the gateway — the same text readings carry as
    ``meter`` (the address, or ``BUS#UNIT`` for Modbus).
    """

    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"address", "protocol", "bus", "area", "customer_class", "protected", "prepaid"}
    )

    address: str
    protocol: str
    bus: str
    area: str
    customer_class: str
    protected: bool
    prepaid: bool

    def __post_init__(self) -> None:
        check_text(self.address, "address")
        check_text(self.protocol, "protocol")
        check_text(self.bus, "bus")
        check_text(self.area, "area", allow_empty=True)
        check_text(self.customer_class, "customer_class")
        check_bool(self.protected, "protected")
        check_bool(self.prepaid, "prepaid")

    def to_wire(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "protocol": self.protocol,
            "bus": self.bus,
            "area": self.area,
            "customer_class": self.customer_class,
            "protected": self.protected,
            "prepaid": self.prepaid,
        }

    @classmethod
    def from_wire(cls, body: object) -> ArchiveEntry:
        data = _fields(body, "archive entry", cls._KEYS)
        return cls(**{key: data[key] for key in cls._KEYS})


@dataclass(frozen=True, slots=True)
class Birth:
    """The gateway's state, published retained after every connect and on ``rebirth``.

    ``meters`` may be empty when the gateway sends a light birth (central keeps the last
    full archive and compares ``archive_hash``); when present it holds ``meter_count``
    entries. ``oldest_unacked_s`` is ``None`` with nothing unacknowledged;
    ``clock_offset_s`` (gateway − reference, seconds) is ``None`` when not yet measured.
    """

    TYPE: ClassVar[str] = "birth"
    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "gateway",
            "session",
            "software_version",
            "config_hash",
            "archive_hash",
            "meter_count",
            "meters",
            "tasks",
            "log_depth",
            "oldest_unacked_s",
            "last_seq",
            "acked_seq",
            "clock_offset_s",
            "boot_reason",
            "sent_at",
        }
    )

    gateway: str
    session: int
    software_version: str
    config_hash: str
    archive_hash: str
    meter_count: int
    meters: tuple[ArchiveEntry, ...]
    log_depth: int
    oldest_unacked_s: int | None
    last_seq: int
    acked_seq: int
    clock_offset_s: Decimal | None
    boot_reason: str
    sent_at: datetime
    tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_gateway_id(self.gateway)
        check_int(self.session, "session")
        check_text(self.software_version, "software_version")
        check_text(self.config_hash, "config_hash")
        check_text(self.archive_hash, "archive_hash")
        check_int(self.meter_count, "meter_count", maximum=MAX_ARCHIVE_ENTRIES)
        if not isinstance(self.meters, tuple | list) or not all(
            isinstance(entry, ArchiveEntry) for entry in self.meters
        ):
            raise LocalProtocolError("meters must be a tuple of ArchiveEntry")
        _set(self, "meters", tuple(self.meters))
        if self.meters and len(self.meters) != self.meter_count:
            raise LocalProtocolError(
                f"meter_count {self.meter_count} but {len(self.meters)} archive entries"
            )
        addresses = {entry.address for entry in self.meters}
        if len(addresses) != len(self.meters):
            raise LocalProtocolError("the archive lists a meter address twice")
        _set(self, "tasks", check_names(self.tasks, "tasks"))
        check_int(self.log_depth, "log_depth")
        if self.oldest_unacked_s is not None:
            check_int(self.oldest_unacked_s, "oldest_unacked_s")
        check_int(self.last_seq, "last_seq")
        check_int(self.acked_seq, "acked_seq", maximum=self.last_seq)
        _set(self, "clock_offset_s", check_optional_decimal(self.clock_offset_s, "clock_offset_s"))
        check_text(self.boot_reason, "boot_reason")
        _set(self, "sent_at", check_time(self.sent_at, "sent_at"))

    def to_wire(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "session": self.session,
            "software_version": self.software_version,
            "config_hash": self.config_hash,
            "archive_hash": self.archive_hash,
            "meter_count": self.meter_count,
            "meters": [entry.to_wire() for entry in self.meters],
            "tasks": list(self.tasks),
            "log_depth": self.log_depth,
            "oldest_unacked_s": self.oldest_unacked_s,
            "last_seq": self.last_seq,
            "acked_seq": self.acked_seq,
            "clock_offset_s": (
                None if self.clock_offset_s is None else decimal_text(self.clock_offset_s)
            ),
            "boot_reason": self.boot_reason,
            "sent_at": time_text(self.sent_at),
        }

    @classmethod
    def from_wire(cls, body: object) -> Birth:
        def build() -> Birth:
            data = _fields(body, "birth", cls._KEYS)
            meters = data["meters"]
            if not isinstance(meters, list) or len(meters) > MAX_ARCHIVE_ENTRIES:
                raise LocalProtocolError(
                    f"meters must be a JSON array of at most {MAX_ARCHIVE_ENTRIES} entries"
                )
            return cls(
                gateway=data["gateway"],
                session=data["session"],
                software_version=data["software_version"],
                config_hash=data["config_hash"],
                archive_hash=data["archive_hash"],
                meter_count=data["meter_count"],
                meters=tuple(ArchiveEntry.from_wire(entry) for entry in meters),
                tasks=data["tasks"],
                log_depth=data["log_depth"],
                oldest_unacked_s=data["oldest_unacked_s"],
                last_seq=data["last_seq"],
                acked_seq=data["acked_seq"],
                clock_offset_s=parse_optional_decimal(data["clock_offset_s"], "clock_offset_s"),
                boot_reason=data["boot_reason"],
                sent_at=parse_time(data["sent_at"], "sent_at"),
            )

        return body_error(cls.TYPE, build)


@dataclass(frozen=True, slots=True)
class Death:
    """The gateway's MQTT will: session ``session`` is gone.

    The will is registered at CONNECT, so ``at`` is when that session began; the broker
    publishes it when the connection dies. Central ignores a death whose session is older
    than the gateway's latest birth (a late will after a fast reconnect).
    """

    TYPE: ClassVar[str] = "death"
    _KEYS: ClassVar[frozenset[str]] = frozenset({"gateway", "session", "at"})

    gateway: str
    session: int
    at: datetime

    def __post_init__(self) -> None:
        check_gateway_id(self.gateway)
        check_int(self.session, "session")
        _set(self, "at", check_time(self.at, "at"))

    def to_wire(self) -> dict[str, Any]:
        return {"gateway": self.gateway, "session": self.session, "at": time_text(self.at)}

    @classmethod
    def from_wire(cls, body: object) -> Death:
        def build() -> Death:
            data = _fields(body, "death", cls._KEYS)
            return cls(data["gateway"], data["session"], parse_time(data["at"], "at"))

        return body_error(cls.TYPE, build)


@dataclass(frozen=True, slots=True)
class CentralState:
    """Central's retained online state; its MQTT will publishes ``online: false``.

    Gateways publish batches only while central is online (D2.5); births and command
    results go out regardless.
    """

    TYPE: ClassVar[str] = "central_state"
    _KEYS: ClassVar[frozenset[str]] = frozenset({"online", "at"})

    online: bool
    at: datetime

    def __post_init__(self) -> None:
        check_bool(self.online, "online")
        _set(self, "at", check_time(self.at, "at"))

    def to_wire(self) -> dict[str, Any]:
        return {"online": self.online, "at": time_text(self.at)}

    @classmethod
    def from_wire(cls, body: object) -> CentralState:
        def build() -> CentralState:
            data = _fields(body, "central_state", cls._KEYS)
            return cls(data["online"], parse_time(data["at"], "at"))

        return body_error(cls.TYPE, build)


# -- commands --------------------------------------------------------------------------------


def _optional_meters(value: object) -> tuple[str, ...] | None:
    return None if value is None else check_names(value, "meters")


@dataclass(frozen=True, slots=True)
class RebirthArgs:
    """Publish a fresh birth; never drops or replaces data (Sparkplug lesson)."""

    KIND: ClassVar[str] = "rebirth"

    def to_wire(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> RebirthArgs:
        _fields(data, "rebirth args", frozenset())
        return cls()


@dataclass(frozen=True, slots=True)
class ResyncArgs:
    """Send the log again from ``from_seq`` (records still kept by retention)."""

    KIND: ClassVar[str] = "resync"
    from_seq: int

    def __post_init__(self) -> None:
        check_int(self.from_seq, "from_seq")

    def to_wire(self) -> dict[str, Any]:
        return {"from_seq": self.from_seq}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ResyncArgs:
        return cls(_fields(data, "resync args", frozenset({"from_seq"}))["from_seq"])


@dataclass(frozen=True, slots=True)
class ResendArgs:
    """Send again one meter's readings (of one quantity, or all) with ``start <= time < end``."""

    KIND: ClassVar[str] = "resend"
    meter: str
    obis: str | None
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        check_text(self.meter, "meter")
        check_optional_text(self.obis, "obis")
        _set(self, "start", check_time(self.start, "start"))
        _set(self, "end", check_time(self.end, "end"))
        if self.start >= self.end:
            raise LocalProtocolError(f"resend range is empty: start {self.start} >= end")

    def to_wire(self) -> dict[str, Any]:
        return {
            "meter": self.meter,
            "obis": self.obis,
            "start": time_text(self.start),
            "end": time_text(self.end),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ResendArgs:
        data = _fields(data, "resend args", frozenset({"meter", "obis", "start", "end"}))
        return cls(
            data["meter"],
            data["obis"],
            parse_time(data["start"], "start"),
            parse_time(data["end"], "end"),
        )


@dataclass(frozen=True, slots=True)
class ReadNowArgs:
    """Read ``what`` (an OBIS code of the quantity vocabulary) from one meter now."""

    KIND: ClassVar[str] = "read_now"
    meter: str
    what: str

    def __post_init__(self) -> None:
        check_text(self.meter, "meter")
        check_text(self.what, "what")

    def to_wire(self) -> dict[str, Any]:
        return {"meter": self.meter, "what": self.what}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ReadNowArgs:
        data = _fields(data, "read_now args", frozenset({"meter", "what"}))
        return cls(data["meter"], data["what"])


#: Meters keep a few days of daily freezes; 31 days covers the longest (monthly) window.
MAX_BACKFILL_DAYS: Final = 31


@dataclass(frozen=True, slots=True)
class BackfillArgs:
    """Walk the last ``days`` days of expected slots (all meters, or the ones listed)."""

    KIND: ClassVar[str] = "backfill"
    days: int
    meters: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_int(self.days, "days", minimum=1, maximum=MAX_BACKFILL_DAYS)
        _set(self, "meters", _optional_meters(self.meters))

    def to_wire(self) -> dict[str, Any]:
        return {"days": self.days, "meters": None if self.meters is None else list(self.meters)}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> BackfillArgs:
        data = _fields(data, "backfill args", frozenset({"days", "meters"}))
        return cls(data["days"], data["meters"])


@dataclass(frozen=True, slots=True)
class ClockSyncArgs:
    """Check and, past the threshold, set the clocks of all meters (or the ones listed)."""

    KIND: ClassVar[str] = "clock_sync"
    meters: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _set(self, "meters", _optional_meters(self.meters))

    def to_wire(self) -> dict[str, Any]:
        return {"meters": None if self.meters is None else list(self.meters)}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ClockSyncArgs:
        return cls(_fields(data, "clock_sync args", frozenset({"meters"}))["meters"])


CommandArgs = RebirthArgs | ResyncArgs | ResendArgs | ReadNowArgs | BackfillArgs | ClockSyncArgs
_ARGS_BY_KIND: Final[dict[str, Any]] = {
    cls.KIND: cls
    for cls in (RebirthArgs, ResyncArgs, ResendArgs, ReadNowArgs, BackfillArgs, ClockSyncArgs)
}
COMMAND_KINDS: Final = frozenset(_ARGS_BY_KIND)


@dataclass(frozen=True, slots=True)
class Command:
    """A command from central, signed by central; ``kind`` follows from ``args``' type.

    ``id`` makes it idempotent: the gateway runs an id at most once and answers a repeat
    with status ``duplicate``. It is valid from ``issued_at`` until ``expires_at``.
    """

    TYPE: ClassVar[str] = "cmd"
    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"id", "gateway", "kind", "args", "issued_at", "expires_at"}
    )

    id: uuid.UUID
    gateway: str
    args: CommandArgs
    issued_at: datetime
    expires_at: datetime

    def __post_init__(self) -> None:
        if not isinstance(self.id, uuid.UUID):
            raise LocalProtocolError(f"id must be a uuid.UUID, not {type(self.id).__name__}")
        check_gateway_id(self.gateway)
        if not isinstance(self.args, tuple(_ARGS_BY_KIND.values())):
            raise LocalProtocolError(
                f"args must be one of {', '.join(sorted(COMMAND_KINDS))} arguments, "
                f"not {type(self.args).__name__}"
            )
        _set(self, "issued_at", check_time(self.issued_at, "issued_at"))
        _set(self, "expires_at", check_time(self.expires_at, "expires_at"))
        lifetime = self.expires_at - self.issued_at
        if lifetime <= timedelta(0):
            raise LocalProtocolError("expires_at must be after issued_at")
        if lifetime > MAX_COMMAND_LIFETIME:
            raise LocalProtocolError(
                f"a command may live at most {MAX_COMMAND_LIFETIME}, not {lifetime}"
            )

    @property
    def kind(self) -> str:
        return self.args.KIND

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "gateway": self.gateway,
            "kind": self.kind,
            "args": self.args.to_wire(),
            "issued_at": time_text(self.issued_at),
            "expires_at": time_text(self.expires_at),
        }

    @classmethod
    def from_wire(cls, body: object) -> Command:
        def build() -> Command:
            data = _fields(body, "cmd", cls._KEYS)
            kind = check_choice(data["kind"], "command kind", COMMAND_KINDS)
            args = _ARGS_BY_KIND[kind].from_wire(data["args"])
            return cls(
                id=_parse_uuid(data["id"]),
                gateway=data["gateway"],
                args=args,
                issued_at=parse_time(data["issued_at"], "issued_at"),
                expires_at=parse_time(data["expires_at"], "expires_at"),
            )

        return body_error(cls.TYPE, build)


def _parse_uuid(value: object) -> uuid.UUID:
    if not isinstance(value, str) or len(value) != 36:
        raise LocalProtocolError(f"id {value!r} is not a UUID in its 36-character form")
    try:
        parsed = uuid.UUID(value)
    except ValueError as exc:
        raise LocalProtocolError(f"id {value!r} is not a UUID") from exc
    if str(parsed) != value:
        raise LocalProtocolError(f"id {value!r} is not in canonical lower-case form")
    return parsed


#: ``ok`` done; ``refused`` not allowed (unsigned, bad signature, unknown meter, rate
#: limit); ``failed`` tried and failed (meter silent); ``expired`` arrived after its expiry;
#: ``duplicate`` an id already run (the earlier result stands).
COMMAND_STATUSES: Final = frozenset({"ok", "refused", "failed", "expired", "duplicate"})


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The gateway's answer to one command, with the meter's own response when there is one.

    ``detail`` is a small JSON object (a reason, counts, values read); ``meter_response_hex``
    is the meter's response frame as lower-case hex, so central can audit exactly what the
    meter said.
    """

    TYPE: ClassVar[str] = "cmd_result"
    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"id", "gateway", "status", "detail", "meter_response_hex", "at"}
    )

    id: uuid.UUID
    gateway: str
    status: str
    detail: dict[str, Any] = field(hash=False)
    meter_response_hex: str | None
    at: datetime

    def __post_init__(self) -> None:
        if not isinstance(self.id, uuid.UUID):
            raise LocalProtocolError(f"id must be a uuid.UUID, not {type(self.id).__name__}")
        check_gateway_id(self.gateway)
        check_choice(self.status, "status", COMMAND_STATUSES)
        _set(self, "detail", check_detail(self.detail, "detail"))
        if self.meter_response_hex is not None:
            _check_hex(self.meter_response_hex)
        _set(self, "at", check_time(self.at, "at"))

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "gateway": self.gateway,
            "status": self.status,
            "detail": self.detail,
            "meter_response_hex": self.meter_response_hex,
            "at": time_text(self.at),
        }

    @classmethod
    def from_wire(cls, body: object) -> CommandResult:
        def build() -> CommandResult:
            data = _fields(body, "cmd_result", cls._KEYS)
            return cls(
                id=_parse_uuid(data["id"]),
                gateway=data["gateway"],
                status=data["status"],
                detail=data["detail"],
                meter_response_hex=data["meter_response_hex"],
                at=parse_time(data["at"], "at"),
            )

        return body_error(cls.TYPE, build)


_HEX_DIGITS: Final = frozenset("0123456789abcdef")


def _check_hex(value: object) -> None:
    if not isinstance(value, str):
        raise LocalProtocolError("meter_response_hex must be a string")
    if len(value) % 2 or len(value) > 2 * MAX_METER_RESPONSE_BYTES or not set(value) <= _HEX_DIGITS:
        raise LocalProtocolError(
            "meter_response_hex must be lower-case hex of whole bytes, "
            f"at most {MAX_METER_RESPONSE_BYTES} bytes"
        )


Message = RecordBatch | Ack | Nack | Birth | Death | CentralState | Command | CommandResult
MESSAGE_TYPES: Final[dict[str, Any]] = {
    cls.TYPE: cls
    for cls in (RecordBatch, Ack, Nack, Birth, Death, CentralState, Command, CommandResult)
}
