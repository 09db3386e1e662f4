"""The idempotent ingest store: a gateway's batch goes into the database exactly once in
effect, however many times and in whatever order it arrives.

Two mechanisms, both inside one transaction per batch:

* **Per-gateway sequence watermark.** Every record in a gateway's log has a sequence number
  (seq); a batch covers a range ``seq_from..seq_to``. Central keeps the highest seq below
  which every range has been committed (``up_to_seq``) and the ranges received above it
  (merged). A batch entirely at or below the watermark is a pure duplicate: nothing is
  written and the watermark is returned so the gateway still gets its acknowledgement.
* **Natural-key upsert.** Readings are keyed by (meter, obis, ts); a reading stored again
  is ignored unless it carries a higher seq (the edge gives a corrected reading a new,
  higher seq), in which case the new value replaces the old. Events and statistics are
  inserted if their (gateway, seq) is absent.

The caller publishes the acknowledgement (``ApplyResult.up_to_seq``) only *after*
:meth:`IngestStore.apply_batch` returns, i.e. after COMMIT: an ack for data that is not yet
durable is how brokers and pipelines lose acknowledged writes (reliability.md B.5).

Concurrency: any number of consumers may apply batches of the same gateway at once (MQTT 5
shared subscriptions deliver duplicates across consumers, reliability.md B.4). Writers of one
gateway serialise on its watermark row — ``SELECT … FOR UPDATE`` on PostgreSQL,
``BEGIN IMMEDIATE`` (the database write lock) on SQLite — so the watermark is never computed
from a stale view.

The store takes plain values (:class:`IncomingReading`, :class:`IncomingEvent`,
:class:`IncomingStatistic`); the MQTT consumer maps the wire contract onto them.

Exceptions: :class:`UnknownGatewayError` (a batch or birth from a gateway never enrolled)
and :class:`InvalidBatchError` (a record outside its batch's range, a naive time, a value
that does not fit NUMERIC(20, 6)); both are ``ValueError``. Database errors propagate as
SQLAlchemy's.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import chain, repeat
from operator import itemgetter
from sqlite3 import sqlite_version_info
from typing import TYPE_CHECKING, Any, Final, Protocol

from sqlalchemy import Engine, and_, bindparam, delete, func, literal_column, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from central.db.schema import (
    gateway_events,
    gateways,
    ingest_seq_ranges,
    ingest_watermarks,
    meters,
    readings,
    statistics,
    transformer_areas,
)
from central.db.types import checked_decimal, checked_utc, from_utc_micros, utc_micros
from central.db.vee_tables import vee_exceptions
from central.vee.inline import ReadingColumns
from shared_protocol.wire import (
    Birth,
    ColumnarBatch,
    Death,
    RecordBatch,
    WireEvent,
    WireReading,
    WireStatistic,
)

if TYPE_CHECKING:
    from central.vee import InlineValidator

__all__ = [
    "ApplyResult",
    "EventLike",
    "GatewayInfo",
    "IncomingBatch",
    "IncomingEvent",
    "IncomingReading",
    "IncomingStatistic",
    "IngestStore",
    "InvalidBatchError",
    "MeterEntry",
    "PreparedBatch",
    "ReadingLike",
    "StatisticLike",
    "StoredReading",
    "UnknownGatewayError",
]


class UnknownGatewayError(ValueError):
    """A batch, birth or event names a gateway that was never enrolled."""


class InvalidBatchError(ValueError):
    """A batch that cannot be stored as sent; the message says which record and why."""


@dataclass(frozen=True, slots=True)
class IncomingReading:
    """One meter value as a gateway sent it; (meter, obis, time) is its natural key.

    The same fields as :class:`shared_protocol.wire.WireReading`, so wire records can be
    passed to :meth:`IngestStore.apply_batch` as they are."""

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


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """Something that happened on a meter (``meter`` set) or on the gateway."""

    seq: int
    code: str
    at: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)
    meter: str | None = None


@dataclass(frozen=True, slots=True)
class IncomingStatistic:
    """A counter or ratio the gateway reported."""

    seq: int
    name: str
    value: Decimal
    at: datetime
    labels: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MeterEntry:
    """One meter of the archive a gateway reports in its birth."""

    meter: str
    address: str
    protocol: str
    bus: str | None = None
    transformer_area: str | None = None
    customer_class: str | None = None
    protected: bool = False
    prepaid: bool = False


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one batch did. ``up_to_seq`` is the contiguous watermark to acknowledge;
    ``inserted + updated + duplicates`` is the number of records in the batch."""

    up_to_seq: int
    inserted: int
    duplicates: int
    updated: int


@dataclass(frozen=True, slots=True)
class StoredReading:
    meter: str
    obis: str
    ts: datetime
    value: Decimal
    unit: str | None
    kind: str
    source: str
    quality: str
    gateway: str
    seq: int
    read_at: datetime
    received_at: datetime
    corrections: int
    vee_status: str | None = None  # None: not validated yet


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    id: str
    public_key_pem: str | None
    key_id: str | None
    enrolled_at: datetime
    online: bool
    session: str | None
    last_birth: dict[str, Any] | None
    last_birth_at: datetime | None
    last_death_at: datetime | None


#: Columns a correction (higher seq) replaces; received_at stays the first arrival's.
_CORRECTED_COLUMNS: Final = (
    "value",
    "unit",
    "kind",
    "source",
    "quality",
    "gateway",
    "seq",
    "read_at",
)


class ReadingLike(Protocol):
    """What :meth:`IngestStore.apply_batch` reads from a reading (``IncomingReading``,
    ``shared_protocol.wire.WireReading``)."""

    @property
    def seq(self) -> int: ...
    @property
    def meter(self) -> str: ...
    @property
    def obis(self) -> str: ...
    @property
    def time(self) -> datetime: ...
    @property
    def value(self) -> Decimal: ...
    @property
    def unit(self) -> str | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def quality(self) -> str: ...
    @property
    def read_at(self) -> datetime: ...


class EventLike(Protocol):
    """``IncomingEvent`` or ``shared_protocol.wire.WireEvent``."""

    @property
    def seq(self) -> int: ...
    @property
    def meter(self) -> str | None: ...
    @property
    def code(self) -> str: ...
    @property
    def detail(self) -> Mapping[str, Any]: ...
    @property
    def at(self) -> datetime: ...


class StatisticLike(Protocol):
    """``IncomingStatistic`` or ``shared_protocol.wire.WireStatistic``."""

    @property
    def seq(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, Any]: ...
    @property
    def value(self) -> Decimal: ...
    @property
    def at(self) -> datetime: ...


#: The readings columns in the order the fast path binds them.
_READING_COLUMNS: Final = (
    "meter",
    "obis",
    "ts",
    "value",
    "unit",
    "kind",
    "source",
    "quality",
    "gateway",
    "seq",
    "read_at",
    "received_at",
    "corrections",
    "vee_status",
)
_SEQ_INDEX: Final = _READING_COLUMNS.index("seq")
_GATEWAY_INDEX: Final = _READING_COLUMNS.index("gateway")
#: A prepared row holds every column but the last, ``vee_status``: the statement supplies
#: it — NULL without VEE, a literal when a whole chunk has one status (the usual case, no
#: per-row copy), else a parameter per row.
_ROW_WIDTH: Final = len(_READING_COLUMNS) - 1
assert _READING_COLUMNS[_ROW_WIDTH] == "vee_status"
#: Statuses the store may write as SQL literals (``central.vee.Status`` values).
_STATUS_LITERALS: Final = {status: f"'{status}'" for status in ("valid", "flagged", "failed")}
_PG_ARRAY_TYPES: Final = {
    "meter": "varchar",
    "obis": "varchar",
    "ts": "timestamptz",
    "value": "numeric",
    "unit": "varchar",
    "kind": "varchar",
    "source": "varchar",
    "quality": "varchar",
    "gateway": "varchar",
    "seq": "bigint",
    "read_at": "timestamptz",
    "received_at": "timestamptz",
    "corrections": "integer",
    "vee_status": "varchar",
}
#: SQLite's default SQLITE_MAX_VARIABLE_NUMBER since 3.32 (older builds: 999).
_SQLITE_MAX_VARIABLES: Final = 32766 if sqlite_version_info >= (3, 32) else 999


class IngestStore:
    """Stores gateways' batches, births, deaths and events idempotently on ``engine``
    (SQLite or PostgreSQL, made by :func:`central.db.make_engine`, already migrated)."""

    def __init__(self, engine: Engine, validator: InlineValidator | None = None) -> None:
        """``validator``: in-line VEE (``central.vee.InlineValidator``) run on every stored
        reading in the same transaction; None stores readings unvalidated (``vee_status``
        NULL, for ``central vee pending`` to catch up)."""
        self.engine = engine
        self.validator = validator
        # Held around the in-line VEE pass (see IngestConsumer: its verify thread waits on
        # it between messages, so VEE's numpy work never waits for the GIL).
        self.exclusive: AbstractContextManager[Any] = contextlib.nullcontext()
        self._dialect = engine.dialect.name
        if self._dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database backend {self._dialect!r}")
        self._upsert_readings = self._build_reading_upsert()
        if self._dialect == "sqlite":
            self._insert_new_readings = self._build_reading_insert()
        # RETURNING counts the rows inserted: executemany's rowcount is -1 on psycopg.
        self._insert_events = (
            self._insert(gateway_events)
            .on_conflict_do_nothing(index_elements=["gateway", "seq"])
            .returning(gateway_events.c.gateway, gateway_events.c.seq)
        )
        self._insert_statistics = (
            self._insert(statistics)
            .on_conflict_do_nothing(index_elements=["gateway", "seq"])
            .returning(statistics.c.gateway, statistics.c.seq)
        )

    # -- gateways --------------------------------------------------------------------------

    def enroll_gateway(
        self,
        gateway: str,
        public_key_pem: str | None = None,
        key_id: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Create the gateway (identity = certificate CN) or replace its key."""
        at = _aware(at or _now(), "enrolled_at")
        with self.engine.begin() as conn:
            stmt = self._insert(gateways).values(
                id=gateway, public_key_pem=public_key_pem, key_id=key_id, enrolled_at=at
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["id"],
                    set_={"public_key_pem": public_key_pem, "key_id": key_id},
                )
            )
            conn.execute(
                self._insert(ingest_watermarks)
                .values(gateway=gateway, up_to_seq=0)
                .on_conflict_do_nothing(index_elements=["gateway"])
            )

    def gateway(self, gateway: str) -> GatewayInfo | None:
        with self._reader() as conn:
            row = conn.execute(select(gateways).where(gateways.c.id == gateway)).one_or_none()
        if row is None:
            return None
        return GatewayInfo(
            id=row.id,
            public_key_pem=row.public_key_pem,
            key_id=row.key_id,
            enrolled_at=row.enrolled_at,
            online=bool(row.online),
            session=row.session,
            last_birth=row.last_birth,
            last_birth_at=row.last_birth_at,
            last_death_at=row.last_death_at,
        )

    def record_birth(
        self,
        gateway: str,
        session: str | int,
        birth: Mapping[str, Any],
        at: datetime,
        archive: Iterable[MeterEntry] | None = None,
        acked_seq: int | None = None,
    ) -> bool:
        """A gateway came online: store its birth and (when sent) its meter archive.

        Births are retained and redelivered, so one older than the stored birth (by time,
        or by session number) is stale and changes nothing (returns False).

        ``acked_seq`` is the gateway's own acknowledged seq. Above central's watermark it
        means records central will never receive — the gateway released them on an ack
        this database does not remember (a restore from backup, a gateway moved from
        another central) — so waiting for them would stall the gateway for ever. The
        watermark moves up to it and a ``watermark_adopted`` event records the lost range.
        """
        at = _aware(at, "birth time")
        with self.engine.begin() as conn:
            current = self._lock_gateway(conn, gateway)
            if current.last_birth_at is not None and at < current.last_birth_at:
                return False
            if current.session is not None and _session_older(session, current.session):
                return False
            conn.execute(
                update(gateways)
                .where(gateways.c.id == gateway)
                .values(last_birth=dict(birth), last_birth_at=at, online=True, session=str(session))
            )
            if archive is not None:
                self._upsert_archive(conn, gateway, list(archive), at)
            if acked_seq is not None:
                watermark, ranges = self._lock_watermark(conn, gateway)
                if acked_seq > watermark:
                    lost = (watermark + 1, acked_seq)
                    new, merged = _advance_ranges(watermark, ranges, *lost)
                    self._write_watermark(conn, gateway, session, new, merged, ranges)
                    conn.execute(
                        self._insert_events,
                        [
                            {
                                "gateway": gateway,
                                "seq": None,
                                "meter": None,
                                "code": "watermark_adopted",
                                "detail": {
                                    "reason": "gateway acked_seq above central's watermark",
                                    "seq_from": lost[0],
                                    "seq_to": lost[1],
                                    "up_to_seq": new,
                                },
                                "at": at,
                                "received_at": _now(),
                            }
                        ],
                    ).all()
        return True

    def record_death(
        self, gateway: str, at: datetime | None = None, session: str | int | None = None
    ) -> bool:
        """A gateway went offline (its will, or a clean disconnect); ``at`` defaults to now.

        A death from an older session than the last birth (a will delivered after the
        gateway reconnected) changes nothing (returns False). Without a session, a death
        older than the last birth changes nothing.
        """
        at = _aware(at or _now(), "death time")
        with self.engine.begin() as conn:
            current = self._lock_gateway(conn, gateway)
            if session is not None:
                if current.session is not None and (
                    _session_older(session, current.session)
                    or (str(session) != current.session and not _numeric(session))
                ):
                    return False
            elif current.last_birth_at is not None and at < current.last_birth_at:
                return False
            conn.execute(
                update(gateways)
                .where(gateways.c.id == gateway)
                .values(online=False, last_death_at=at)
            )
        return True

    # -- wire messages (shared_protocol.wire), already verified by the consumer ---------------

    def apply_record_batch(self, batch: RecordBatch) -> ApplyResult:
        """:meth:`apply_batch` for a verified :class:`~shared_protocol.wire.RecordBatch`."""
        return self.apply_batches([batch])[0]

    def record_birth_message(self, birth: Birth) -> bool:
        """:meth:`record_birth` for a verified :class:`~shared_protocol.wire.Birth`; a light
        birth (no meters) keeps the archive central has."""
        archive = [
            MeterEntry(
                meter=entry.address,
                address=entry.address,
                protocol=entry.protocol,
                bus=entry.bus,
                transformer_area=entry.area or None,
                customer_class=entry.customer_class or None,
                protected=entry.protected,
                prepaid=entry.prepaid,
            )
            for entry in birth.meters
        ]
        # The archive lives in ``meters``; the stored birth keeps everything else.
        body = {key: value for key, value in birth.to_wire().items() if key != "meters"}
        return self.record_birth(
            birth.gateway,
            birth.session,
            body,
            birth.sent_at,
            archive or None,
            acked_seq=birth.acked_seq,
        )

    def record_death_message(self, death: Death, at: datetime | None = None) -> bool:
        """:meth:`record_death` for a :class:`~shared_protocol.wire.Death` (its ``at`` is
        when the session began, so the death is stamped ``at`` or now)."""
        return self.record_death(death.gateway, at, session=death.session)

    def record_gateway_event(
        self,
        gateway: str,
        code: str,
        detail: Mapping[str, Any] | None = None,
        at: datetime | None = None,
        meter: str | None = None,
        seq: int | None = None,
    ) -> bool:
        """An event about a gateway; central's own (a rejected batch) have ``seq=None``.
        An event with a seq already stored is a duplicate (returns False)."""
        row = {
            "gateway": gateway,
            "seq": seq,
            "meter": meter,
            "code": code,
            "detail": dict(detail or {}),
            "at": _aware(at or _now(), "event time"),
            "received_at": _now(),
        }
        with self.engine.begin() as conn:
            self._lock_gateway(conn, gateway)
            inserted = conn.execute(self._insert_events, [row]).all()
        return bool(inserted)

    # -- batches ---------------------------------------------------------------------------

    def apply_batch(
        self,
        gateway: str,
        session: str | int | None,
        seq_from: int,
        seq_to: int,
        readings: Sequence[ReadingLike] = (),
        events: Sequence[EventLike] = (),
        statistics: Sequence[StatisticLike] = (),
    ) -> ApplyResult:
        """Store one batch covering ``seq_from..seq_to`` in one transaction; return the
        contiguous watermark to acknowledge once this call has returned."""
        batch = IncomingBatch(gateway, session, seq_from, seq_to, readings, events, statistics)
        return self.apply_batches([batch])[0]

    def prepare(self, batch: IncomingBatch | RecordBatch | ColumnarBatch) -> PreparedBatch:
        """``batch`` checked and turned into rows without touching the database: a consumer
        does this on its verify thread, so the writer only writes. InvalidBatchError when
        it cannot be stored as sent."""
        return self._prepare(0, batch)

    def apply_batches(
        self, batches: Sequence[IncomingBatch | RecordBatch | ColumnarBatch | PreparedBatch]
    ) -> list[ApplyResult]:
        """Store several batches (any gateways, any order, duplicates allowed) in ONE
        transaction: one commit — one fsync on SQLite — for all of them. A consumer hands
        over whatever messages are waiting, then acknowledges each result after this call
        returns. The stored state and the watermarks are those applying the batches one by
        one would give; so are the counts, except when one group holds two versions of a
        reading: only the higher seq is written, and the other counts as a duplicate.

        A malformed batch raises :class:`InvalidBatchError` (naming its position) before
        anything is written; the consumer then applies the others one by one.
        """
        prepared = [
            batch if type(batch) is PreparedBatch else self._prepare(i, batch)
            for i, batch in enumerate(batches)
        ]
        if not prepared:
            return []
        try:
            return self._apply_prepared(prepared)
        except BaseException:
            if self.validator is not None:
                self.validator.invalidate()  # its cache may hold values never committed
            raise

    def _apply_prepared(self, prepared: list[PreparedBatch]) -> list[ApplyResult]:
        results: list[ApplyResult] = []
        counts = [[0, 0] for _ in prepared]  # per batch: inserted, updated
        kept: list[tuple[int, str, dict[tuple[Any, ...], tuple[Any, ...]], list[Any]]] = []
        # Per batch: its rows in the statement, while no key is in two batches.
        written: list[int] | None = [0] * len(prepared)
        by_key: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        # Keys a batch gave twice with different values: its row, and the values.
        doubled: dict[tuple[Any, ...], tuple[tuple[Any, ...], tuple[str, ...]]] = {}
        event_rows: list[dict[str, Any]] = []
        statistic_rows: list[dict[str, Any]] = []
        with self.engine.begin() as conn:
            # Lock in a fixed order so two consumers with overlapping gateway sets cannot
            # deadlock on PostgreSQL.
            state = {
                g: self._lock_watermark(conn, g) for g in sorted({p.gateway for p in prepared})
            }
            before = {g: (w, [list(r) for r in ranges]) for g, (w, ranges) in state.items()}
            sessions: dict[str, str | int | None] = {}
            for index, p in enumerate(prepared):
                watermark, ranges = state[p.gateway]
                if p.seq_to <= watermark or _covered(ranges, p.seq_from, p.seq_to):
                    continue
                rows, events, stats = p.readings, p.events, p.statistics
                # Records already committed by an earlier batch (same seq, same content:
                # the edge never reuses a seq) are skipped, not rewritten.
                if p.seq_from <= watermark or any(
                    a <= p.seq_to and p.seq_from <= b for a, b in ranges
                ):
                    fresh = _not_yet_applied(watermark, ranges)
                    rows = {k: r for k, r in rows.items() if fresh(r[_SEQ_INDEX])}
                    events = [r for r in events if fresh(r["seq"])]
                    stats = [r for r in stats if fresh(r["seq"])]
                kept.append((index, p.gateway, rows, [*events, *stats]))
                for key, values in p.doubled.items():
                    if key in rows:
                        doubled[key] = (rows[key], values)
                if by_key.keys().isdisjoint(rows):
                    by_key.update(rows)
                    if written is not None:
                        written[index] = len(rows)
                else:
                    written = None  # a key in two batches: count row by row
                    for key, row in rows.items():
                        previous = by_key.get(key)
                        # One statement may not touch a key twice (PostgreSQL refuses): the
                        # higher seq goes in, the lower counts as a duplicate.
                        if previous is None or previous[_SEQ_INDEX] <= row[_SEQ_INDEX]:
                            by_key[key] = row
                event_rows.extend(events)
                statistic_rows.extend(stats)
                state[p.gateway] = _advance_ranges(watermark, ranges, p.seq_from, p.seq_to)
                sessions[p.gateway] = p.session
            # Rows written in natural-key order: neighbouring keys share index pages (fewer
            # pages touched on SQLite), and two PostgreSQL transactions touching the same
            # keys lock them in the same order, so they cannot deadlock on each other. A
            # row starts with its key and keys are unique here, so tuple order is key order.
            rows_in_key_order = sorted(by_key.values())
            # V2 for a key a batch gave twice, if that batch's version is the one written.
            flagged = (
                {
                    i: doubled[row[:3]][1]
                    for i, row in enumerate(rows_in_key_order)
                    if row[:3] in doubled and doubled[row[:3]][0] is row
                }
                if doubled
                else {}
            )
            statuses, mark = self._validate(conn, rows_in_key_order, flagged)
            returned = self._store_readings(conn, rows_in_key_order, statuses)
            if mark is not None and returned is not None:
                self._settle_validation(conn, rows_in_key_order, returned, mark)
            all_new = written is not None and (
                returned is None
                or (
                    len(returned) == len(rows_in_key_order)
                    and not any(map(_returned_corrections, returned))
                )
            )
            owners = _owners(kept, readings=not all_new)
            if all_new:
                assert written is not None
                # Every row went in as new, and each batch's rows all went into the
                # statement: its count is its number of rows.
                for index, number in enumerate(written):
                    counts[index][0] += number
            else:
                if returned is None:  # every row new, but some key came in two batches
                    returned = [(r[_GATEWAY_INDEX], r[_SEQ_INDEX], 0) for r in rows_in_key_order]
                for gateway_id, seq, corrections in returned:
                    counts[owners[gateway_id][seq]][0 if corrections == 0 else 1] += 1
            for statement, rows_ in (
                (self._insert_events, event_rows),
                (self._insert_statistics, statistic_rows),
            ):
                if rows_:
                    for gateway_id, seq in conn.execute(statement, rows_).all():
                        counts[owners[gateway_id][seq]][0] += 1
            for gateway_id, session in sessions.items():
                self._write_watermark(
                    conn, gateway_id, session, *state[gateway_id], before[gateway_id][1]
                )
        # Each result carries the watermark after the whole group: it is what is durable
        # once this call returns, and acknowledging more than a batch asked is harmless.
        for p, (inserted, updated) in zip(prepared, counts, strict=True):
            results.append(
                ApplyResult(state[p.gateway][0], inserted, p.total - inserted - updated, updated)
            )
        return results

    def watermark(self, gateway: str) -> int:
        """The highest seq up to which every record of ``gateway`` is committed (0: none)."""
        with self._reader() as conn:
            value = conn.execute(
                select(ingest_watermarks.c.up_to_seq).where(ingest_watermarks.c.gateway == gateway)
            ).scalar_one_or_none()
        return int(value or 0)

    def pending_ranges(self, gateway: str) -> list[tuple[int, int]]:
        """Seq ranges committed above the watermark (a gap below them holds it back)."""
        with self._reader() as conn:
            rows = conn.execute(
                select(ingest_seq_ranges.c.seq_from, ingest_seq_ranges.c.seq_to)
                .where(ingest_seq_ranges.c.gateway == gateway)
                .order_by(ingest_seq_ranges.c.seq_from)
            ).all()
        return [(int(a), int(b)) for a, b in rows]

    # -- queries ---------------------------------------------------------------------------

    def readings(
        self, meter: str, obis: str | None, start: datetime, end: datetime
    ) -> list[StoredReading]:
        """A meter's readings with ``start <= ts < end`` (every quantity if ``obis`` is
        None), ordered by quantity then time."""
        conditions = [
            readings.c.meter == meter,
            readings.c.ts >= _aware(start, "start"),
            readings.c.ts < _aware(end, "end"),
        ]
        if obis is not None:
            conditions.append(readings.c.obis == obis)
        with self._reader() as conn:
            rows = conn.execute(
                select(readings).where(and_(*conditions)).order_by(readings.c.obis, readings.c.ts)
            ).all()
        return [StoredReading(**row._mapping) for row in rows]

    def count_readings(self, gateway: str | None = None) -> int:
        query = select(func.count()).select_from(readings)
        if gateway is not None:
            query = query.where(readings.c.gateway == gateway)
        with self._reader() as conn:
            return int(conn.execute(query).scalar_one())

    # -- internals -------------------------------------------------------------------------

    def _insert(self, table: Any) -> Any:
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def _build_reading_upsert(self) -> str:
        """The readings upsert as driver SQL, compiled once from the Core construct.

        The hot path bypasses SQLAlchemy's per-row parameter processing (which costs more
        than the database work): rows arrive already checked and in driver form, and one
        statement stores a whole batch — a multi-row VALUES on SQLite, ``unnest`` of one
        array per column on PostgreSQL (a single prepared statement whatever the size).
        """
        # Only the columns the fast path binds: vee_status starts NULL (waiting for VEE).
        stmt = self._insert(readings).values({name: bindparam(name) for name in _READING_COLUMNS})
        excluded = stmt.excluded
        set_: dict[str, Any] = {name: excluded[name] for name in _CORRECTED_COLUMNS}
        set_["corrections"] = readings.c.corrections + literal_column("1")
        # A corrected value carries its own VEE outcome (NULL when VEE is off: queued).
        set_["vee_status"] = excluded.vee_status
        upsert = stmt.on_conflict_do_update(
            index_elements=["meter", "obis", "ts"],
            set_=set_,
            where=readings.c.seq < excluded.seq,
        )
        # RETURNING tells an insert (corrections = 0) from a correction (> 0); a duplicate
        # (older or equal seq) returns no row at all.
        upsert = upsert.returning(readings.c.gateway, readings.c.seq, readings.c.corrections)
        if self._dialect == "sqlite":
            sql = str(upsert.compile(dialect=self.engine.dialect))
            group = "(" + ", ".join(["?"] * len(_READING_COLUMNS)) + ")"
            if sql.count(group) != 1:
                raise RuntimeError(f"unexpected upsert SQL: {sql}")
            return sql.replace(group, "{values}")
        sql = str(upsert.compile(dialect=self.engine.dialect))
        head, _, tail = sql.partition(" VALUES ")
        _, _, tail = tail.partition(") ON CONFLICT")
        arrays = ", ".join(f"%s::{_PG_ARRAY_TYPES[name]}[]" for name in _READING_COLUMNS)
        return f"{head} SELECT * FROM unnest({arrays}) ON CONFLICT{tail}"

    def _validate(
        self,
        conn: Connection,
        rows: list[tuple[Any, ...]],
        doubled: Mapping[int, Sequence[str]],
    ) -> tuple[list[str] | None, int | None]:
        """Each row's ``vee_status`` — the in-line VEE's outcome, whose exceptions it
        inserts through ``conn`` — or None when VEE is off (stored as NULL: waiting for
        validation). Also the highest exception id before this pass (None when VEE did not
        run), for :meth:`_settle_validation`. The rows go to VEE as columns: it screens the
        common case a column at a time."""
        if self.validator is None or not rows:
            return None, None
        mark = conn.execute(select(func.coalesce(func.max(vee_exceptions.c.id), 0))).scalar()
        columns = _vee_columns(rows, self._dialect == "sqlite")
        with self.exclusive:
            statuses = self.validator.validate(conn, columns, doubled=doubled)
        return statuses, int(mark or 0)

    def _settle_validation(
        self,
        conn: Connection,
        rows: list[tuple[Any, ...]],
        returned: list[tuple[str, int, int]],
        mark: int,
    ) -> None:
        """After the upsert: VEE checked every row, but a row the store did not write (an
        older version of a stored key) must leave no exception, and a row that replaced a
        stored value withdraws the old value's open per-reading exceptions. Neither happens
        when every row went in new (the usual case: nothing to do)."""
        if len(returned) == len(rows) and not any(map(_returned_corrections, returned)):
            return
        written = {(gateway, seq): corrections for gateway, seq, corrections in returned}
        unwritten = [
            row[:3] for row in rows if (row[_GATEWAY_INDEX], row[_SEQ_INDEX]) not in written
        ]
        replaced = [
            row[:3] for row in rows if written.get((row[_GATEWAY_INDEX], row[_SEQ_INDEX]), 0) > 0
        ]
        table = vee_exceptions
        key = tuple_(table.c.meter, table.c.obis, table.c.ts)
        for keys, condition in (
            (unwritten, table.c.id > mark),
            (
                replaced,
                and_(
                    table.c.id <= mark,
                    table.c.status == "open",
                    table.c.day.is_(None),
                    table.c.rule != "V2",
                ),
            ),
        ):
            for start in range(0, len(keys), 500):
                part = [_key_value(k, self._dialect == "sqlite") for k in keys[start : start + 500]]
                conn.execute(delete(table).where(condition, key.in_(part)))
        if unwritten:
            self.validator.invalidate()  # type: ignore[union-attr]  # it saw values not stored

    def _build_reading_insert(self) -> str:
        """SQLite: the readings insert that skips existing keys, as driver SQL with a
        ``{values}`` slot (see :meth:`_store_readings` for why it exists)."""
        stmt = (
            self._insert(readings)
            .values({name: bindparam(name) for name in _READING_COLUMNS})
            .on_conflict_do_nothing(index_elements=["meter", "obis", "ts"])
        )
        sql = str(stmt.compile(dialect=self.engine.dialect))
        group = "(" + ", ".join(["?"] * len(_READING_COLUMNS)) + ")"
        if sql.count(group) != 1:
            raise RuntimeError(f"unexpected insert SQL: {sql}")
        return sql.replace(group, "{values}")

    def _store_readings(
        self, conn: Connection, rows: list[tuple[Any, ...]], statuses: list[str] | None
    ) -> list[tuple[str, int, int]] | None:
        """Upsert ``rows`` with their ``statuses``; (gateway, seq, corrections) of each row
        inserted or corrected — or None when every row went in new (SQLite's usual case,
        counted without a list)."""
        returned: list[tuple[str, int, int]] = []
        if not rows:
            return returned
        if self._dialect != "sqlite":
            columns = [list(column) for column in zip(*rows, strict=True)]
            columns.append(list(statuses) if statuses is not None else [None] * len(rows))
            result = conn.exec_driver_sql(self._upsert_readings, tuple(columns))
            returned.extend(tuple(r) for r in result.all())
            return returned
        per_statement = _SQLITE_MAX_VARIABLES // len(_READING_COLUMNS)
        # The driver's own cursor, inside this transaction: its rows are plain tuples.
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        all_new = True
        try:
            for start in range(0, len(rows), per_statement):
                chunk = rows[start : start + per_statement]
                chunk_statuses = (
                    None if statuses is None else statuses[start : start + per_statement]
                )
                status_sql, params = _chunk_params(chunk, chunk_statuses)
                group = _row_group(status_sql)
                # New keys are the rule: insert them with one step of the statement and
                # count them from rowcount. A RETURNING row per reading would cost a step
                # each, and the sqlite3 module releases the GIL around every step — with
                # the verify thread running, each reacquisition can wait a switch
                # interval (the convoy that kept the pipeline far below the store alone).
                values = ", ".join([group] * len(chunk))
                cursor.execute(self._insert_new_readings.format(values=values), params)
                if cursor.rowcount == len(chunk):
                    if not all_new:
                        returned.extend((r[_GATEWAY_INDEX], r[_SEQ_INDEX], 0) for r in chunk)
                    continue
                if all_new:  # the chunks before were all new: list them now
                    all_new = False
                    returned.extend((r[_GATEWAY_INDEX], r[_SEQ_INDEX], 0) for r in rows[:start])
                returned.extend(self._settle_conflicts(cursor, chunk, chunk_statuses))
        finally:
            cursor.close()
        return None if all_new else returned

    def _settle_conflicts(
        self, cursor: Any, chunk: list[tuple[Any, ...]], statuses: list[str] | None
    ) -> list[tuple[str, int, int]]:
        """SQLite, after the insert skipped some keys of ``chunk``: which rows went in just
        now, and the upsert (higher seq wins, RETURNING) for the others."""
        keys = [row[:3] for row in chunk]
        stored: dict[tuple[Any, ...], tuple[str, int]] = {}
        for start in range(0, len(keys), _SQLITE_MAX_VARIABLES // 3):
            part = keys[start : start + _SQLITE_MAX_VARIABLES // 3]
            sql = (
                "SELECT meter, obis, ts, gateway, seq FROM readings WHERE (meter, obis, ts) IN "
                f"(VALUES {', '.join(['(?, ?, ?)'] * len(part))})"
            )
            for meter, obis, ts, gateway, seq in cursor.execute(
                sql, tuple(chain.from_iterable(part))
            ):
                stored[(meter, obis, ts)] = (gateway, seq)

        # Fresh rows only reach here (resent seqs were filtered out), so a stored row with
        # this row's gateway and seq is the one just inserted.
        def stored_now(row: tuple[Any, ...]) -> bool:
            return stored.get(row[:3]) == (row[_GATEWAY_INDEX], row[_SEQ_INDEX])

        returned = [(row[_GATEWAY_INDEX], row[_SEQ_INDEX], 0) for row in chunk if stored_now(row)]
        others = [
            (*row, None if statuses is None else statuses[i])
            for i, row in enumerate(chunk)
            if not stored_now(row)
        ]
        if others:
            sql = self._upsert_readings.format(values=", ".join([_row_group("?")] * len(others)))
            returned.extend(cursor.execute(sql, tuple(chain.from_iterable(others))))
        return returned

    def _reader(self) -> Any:
        return self.engine.connect().execution_options(read_only=True)

    def _lock_gateway(self, conn: Connection, gateway: str) -> Any:
        query = select(gateways).where(gateways.c.id == gateway)
        if self._dialect == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).one_or_none()
        if row is None:
            raise UnknownGatewayError(f"gateway {gateway!r} is not enrolled")
        return row

    def _lock_watermark(self, conn: Connection, gateway: str) -> tuple[int, list[list[int]]]:
        """The gateway's watermark and ranges, with the gateway's writers shut out until
        this transaction ends (SQLite: already, by BEGIN IMMEDIATE)."""
        query = select(ingest_watermarks.c.up_to_seq).where(ingest_watermarks.c.gateway == gateway)
        if self._dialect == "postgresql":
            query = query.with_for_update()
        watermark = conn.execute(query).scalar_one_or_none()
        if watermark is None:
            self._lock_gateway(conn, gateway)  # raises for an unknown gateway
            conn.execute(
                self._insert(ingest_watermarks)
                .values(gateway=gateway, up_to_seq=0)
                .on_conflict_do_nothing(index_elements=["gateway"])
            )
            watermark = conn.execute(query).scalar_one()
        ranges = conn.execute(
            select(ingest_seq_ranges.c.seq_from, ingest_seq_ranges.c.seq_to)
            .where(ingest_seq_ranges.c.gateway == gateway)
            .order_by(ingest_seq_ranges.c.seq_from)
        ).all()
        return int(watermark), [[int(a), int(b)] for a, b in ranges]

    def _write_watermark(
        self,
        conn: Connection,
        gateway: str,
        session: str | int | None,
        watermark: int,
        ranges: list[list[int]],
        ranges_before: list[list[int]],
    ) -> None:
        if ranges != ranges_before:
            conn.execute(ingest_seq_ranges.delete().where(ingest_seq_ranges.c.gateway == gateway))
            if ranges:
                conn.execute(
                    ingest_seq_ranges.insert(),
                    [{"gateway": gateway, "seq_from": a, "seq_to": b} for a, b in ranges],
                )
        conn.execute(
            update(ingest_watermarks)
            .where(ingest_watermarks.c.gateway == gateway)
            .values(
                up_to_seq=watermark,
                session=None if session is None else str(session),
                updated_at=_now(),
            )
        )

    def _prepare(
        self, index: int, batch: IncomingBatch | RecordBatch | ColumnarBatch | PreparedBatch
    ) -> PreparedBatch:
        if type(batch) is ColumnarBatch:
            try:
                return _prepare_columns(batch, self._dialect == "sqlite")
            except InvalidBatchError as exc:
                raise InvalidBatchError(
                    f"batch {index} ({batch.gateway} {batch.seq_from}..{batch.seq_to}): {exc}"
                ) from None
        if type(batch) is RecordBatch:
            try:
                return _prepare_record_batch(batch, self._dialect == "sqlite")
            except InvalidBatchError as exc:
                raise InvalidBatchError(
                    f"batch {index} ({batch.gateway} {batch.seq_from}..{batch.seq_to}): {exc}"
                ) from None
        assert not isinstance(batch, ColumnarBatch | PreparedBatch)
        if isinstance(batch, RecordBatch):
            records = batch.records
            batch = IncomingBatch(
                batch.gateway,
                batch.session,
                batch.seq_from,
                batch.seq_to,
                [r for r in records if isinstance(r, WireReading)],
                [r for r in records if isinstance(r, WireEvent)],
                [r for r in records if isinstance(r, WireStatistic)],
            )
        try:
            return _prepare(batch, self._dialect == "sqlite")
        except InvalidBatchError as exc:
            raise InvalidBatchError(
                f"batch {index} ({batch.gateway} {batch.seq_from}..{batch.seq_to}): {exc}"
            ) from None

    def _upsert_archive(
        self, conn: Connection, gateway: str, archive: list[MeterEntry], at: datetime
    ) -> None:
        if not archive:
            return
        rows = [
            {
                "meter": m.meter,
                "gateway": gateway,
                "address": m.address,
                "protocol": m.protocol,
                "bus": m.bus,
                "transformer_area": m.transformer_area,
                "customer_class": m.customer_class,
                "protected": m.protected,
                "prepaid": m.prepaid,
                "first_seen_at": at,
                "last_seen_at": at,
            }
            for m in archive
        ]
        areas = sorted({m.transformer_area for m in archive if m.transformer_area})
        if areas:
            # An area first named by a birth gets a row (named after its id until an
            # operator names it), so the meter can point at it.
            conn.execute(
                self._insert(transformer_areas).on_conflict_do_nothing(index_elements=["id"]),
                [{"id": area, "name": area} for area in areas],
            )
        stmt = self._insert(meters)
        replaced = [c.name for c in meters.c if c.name not in ("meter", "first_seen_at")]
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["meter"], set_={name: stmt.excluded[name] for name in replaced}
            ),
            rows,
        )


def _numeric(session: str | int) -> bool:
    return isinstance(session, int) or str(session).isdigit()


def _session_older(session: str | int, than: str) -> bool:
    """Sessions are numbered upwards by the gateway (wire contract); text ones only differ."""
    if _numeric(session) and than.isdigit():
        return int(session) < int(than)
    return False


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime, what: str) -> datetime:
    try:
        checked_utc(moment)
    except ValueError as exc:
        raise InvalidBatchError(f"{what}: {exc}") from None
    return moment


def _check_seqs(
    seq_from: int,
    seq_to: int,
    readings: Sequence[ReadingLike],
    events: Sequence[EventLike],
    statistics: Sequence[StatisticLike],
) -> None:
    seen: set[int] = set()
    records: list[ReadingLike | EventLike | StatisticLike] = [
        *readings,
        *events,
        *statistics,
    ]
    for record in records:
        if not seq_from <= record.seq <= seq_to:
            raise InvalidBatchError(
                f"record seq {record.seq} outside the batch range {seq_from}..{seq_to}"
            )
        if record.seq in seen:
            raise InvalidBatchError(f"seq {record.seq} appears twice in one batch")
        seen.add(record.seq)


def _reading_rows(
    gateway: str,
    incoming: Sequence[ReadingLike],
    received_at: datetime,
    sqlite_form: bool,
    doubled: dict[tuple[Any, ...], tuple[str, ...]] | None = None,
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Checked rows in :data:`_READING_COLUMNS` order and driver form (SQLite: integer
    microseconds for times and text for values, as the column types store them). Of two
    versions of one key in a batch, the higher seq wins; ``doubled`` gets the keys given
    twice with different values (:func:`_doubled`)."""
    times: dict[datetime, Any] = {}
    convert_time: Callable[[object], Any] = utc_micros if sqlite_form else checked_utc

    def moment(value: datetime) -> Any:
        # A batch's readings share a handful of period and read times; format each once.
        try:
            return times[value]
        except KeyError:
            times[value] = converted = convert_time(value)
            return converted
        except TypeError:  # unhashable: not a datetime at all
            return convert_time(value)

    received = moment(received_at)
    by_key: dict[tuple[str, str, Any], tuple[Any, ...]] = {}
    for r in incoming:
        try:
            ts = moment(r.time)
            value = checked_decimal(r.value)
            row = (
                r.meter,
                r.obis,
                ts,
                format(value, "f") if sqlite_form else value,
                r.unit,
                r.kind,
                r.source,
                r.quality,
                gateway,
                r.seq,
                moment(r.read_at),
                received,
                0,
            )
        except ValueError as exc:
            raise InvalidBatchError(f"reading seq {r.seq} ({r.meter} {r.obis}): {exc}") from None
        key = (r.meter, r.obis, ts)
        previous = by_key.get(key)
        if previous is None or previous[_SEQ_INDEX] < r.seq:
            by_key[key] = row
    if doubled is not None and len(by_key) < len(incoming):
        keys = ((r.meter, r.obis, moment(r.time)) for r in incoming)
        doubled.update(_doubled(keys, (r.value for r in incoming)))
    return by_key


def _doubled(
    keys: Iterable[tuple[Any, ...]], values: Iterable[Any]
) -> dict[tuple[Any, ...], tuple[str, ...]]:
    """The keys a batch gives more than once with different values, each with the values
    it was given (the store keeps the higher seq; VEE's V2 flags the key). Called only
    when a batch has fewer keys than readings."""
    seen: dict[tuple[Any, ...], set[Decimal]] = {}
    for key, value in zip(keys, values, strict=True):
        seen.setdefault(key, set()).add(checked_decimal(value))
    return {
        key: tuple(format(v, "f") for v in sorted(found))
        for key, found in seen.items()
        if len(found) > 1
    }


@dataclass(frozen=True, slots=True)
class IncomingBatch:
    """One batch as plain values (what :meth:`IngestStore.apply_batches` takes besides a
    ``RecordBatch``): the records of ``gateway``'s log covering ``seq_from..seq_to``."""

    gateway: str
    session: str | int | None
    seq_from: int
    seq_to: int
    readings: Sequence[ReadingLike] = ()
    events: Sequence[EventLike] = ()
    statistics: Sequence[StatisticLike] = ()


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch checked and turned into rows, before the transaction starts
    (:meth:`IngestStore.prepare`)."""

    gateway: str
    session: str | int | None
    seq_from: int
    seq_to: int
    total: int
    readings: dict[tuple[Any, ...], tuple[Any, ...]]  # natural key -> row (higher seq won)
    events: list[dict[str, Any]]
    statistics: list[dict[str, Any]]
    # Keys the batch gave twice with different values, with the values (VEE's V2).
    doubled: dict[tuple[Any, ...], tuple[str, ...]] = field(default_factory=dict)


def _prepare(batch: IncomingBatch, sqlite_form: bool) -> PreparedBatch:
    seq_from, seq_to = batch.seq_from, batch.seq_to
    if seq_from < 1 or seq_to < seq_from - 1:
        raise InvalidBatchError(f"bad seq range {seq_from}..{seq_to}")
    _check_seqs(seq_from, seq_to, batch.readings, batch.events, batch.statistics)
    received_at = _now()
    gateway = batch.gateway
    doubled: dict[tuple[Any, ...], tuple[str, ...]] = {}
    rows = _reading_rows(gateway, batch.readings, received_at, sqlite_form, doubled)
    return PreparedBatch(
        gateway=gateway,
        session=batch.session,
        seq_from=seq_from,
        seq_to=seq_to,
        total=len(batch.readings) + len(batch.events) + len(batch.statistics),
        readings=rows,
        doubled=doubled,
        events=[
            {
                "gateway": gateway,
                "seq": e.seq,
                "meter": e.meter,
                "code": e.code,
                "detail": dict(e.detail),
                "at": _aware(e.at, f"event seq {e.seq} time"),
                "received_at": received_at,
            }
            for e in batch.events
        ],
        statistics=[
            {
                "gateway": gateway,
                "seq": s.seq,
                "name": s.name,
                "labels": dict(s.labels),
                "value": s.value,
                "at": _aware(s.at, f"statistic seq {s.seq} time"),
                "received_at": received_at,
            }
            for s in batch.statistics
        ],
    )


_DECIMAL_LIMIT: Final = Decimal(10) ** 14  # NUMERIC(20, 6): checked_decimal's bound
_DECIMAL_QUANTUM: Final = Decimal("0.000001")
_ZERO: Final = Decimal(0)
_row_seq: Final = itemgetter(_SEQ_INDEX)
_returned_corrections: Final = itemgetter(2)  # of (gateway, seq, corrections)


def _prepare_record_batch(batch: RecordBatch, sqlite_form: bool) -> PreparedBatch:
    """:func:`_prepare` for a :class:`RecordBatch`, whose own checks make most of the store's
    redundant: its seqs rise strictly within ``seq_from..seq_to`` (so none repeats or
    falls outside), its times are aware UTC datetimes and its values finite Decimals. What
    the wire does not promise — a value fitting NUMERIC(20, 6) — is checked here, as
    :func:`central.db.types.checked_decimal` does (and with its words when it fails)."""
    gateway = batch.gateway
    received_at = _now()
    convert_time: Callable[[datetime], Any] = utc_micros if sqlite_form else checked_utc
    received = convert_time(received_at)
    times: dict[datetime, Any] = {}
    by_key: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    others: list[WireEvent | WireStatistic] = []
    limit, quantum = _DECIMAL_LIMIT, _DECIMAL_QUANTUM
    low = -limit
    for r in batch.records:
        if type(r) is not WireReading:
            others.append(r)  # type: ignore[arg-type]
            continue
        moment = r.time
        ts = times.get(moment)
        if ts is None:
            ts = times[moment] = convert_time(moment)
        moment = r.read_at
        read_at = times.get(moment)
        if read_at is None:
            read_at = times[moment] = convert_time(moment)
        value = r.value
        if low < value < limit and value.quantize(quantum) == value:
            value = value.normalize() if value else _ZERO
        else:
            try:
                value = checked_decimal(value)
            except ValueError as exc:
                raise InvalidBatchError(
                    f"reading seq {r.seq} ({r.meter} {r.obis}): {exc}"
                ) from None
        # Seqs rise, so a later version of a key (a correction) replaces an earlier one.
        by_key[(r.meter, r.obis, ts)] = (
            r.meter,
            r.obis,
            ts,
            format(value, "f") if sqlite_form else value,
            r.unit,
            r.kind,
            r.source,
            r.quality,
            gateway,
            r.seq,
            read_at,
            received,
            0,
        )
    events: list[dict[str, Any]] = []
    statistics_: list[dict[str, Any]] = []
    for record in others:
        if isinstance(record, WireEvent):
            events.append(
                {
                    "gateway": gateway,
                    "seq": record.seq,
                    "meter": record.meter,
                    "code": record.code,
                    "detail": dict(record.detail),
                    "at": record.at,
                    "received_at": received_at,
                }
            )
        else:
            statistics_.append(
                {
                    "gateway": gateway,
                    "seq": record.seq,
                    "name": record.name,
                    "labels": dict(record.labels),
                    "value": record.value,
                    "at": record.at,
                    "received_at": received_at,
                }
            )
    doubled = {}
    if len(by_key) < len(batch.records) - len(others):
        read = [r for r in batch.records if type(r) is WireReading]
        keys = ((r.meter, r.obis, times[r.time]) for r in read)
        doubled = _doubled(keys, (r.value for r in read))
    return PreparedBatch(
        gateway=gateway,
        session=batch.session,
        seq_from=batch.seq_from,
        seq_to=batch.seq_to,
        total=len(batch.records),
        readings=by_key,
        events=events,
        statistics=statistics_,
        doubled=doubled,
    )


#: Decimal text already in the one form SQLite stores (what ``checked_decimal`` +
#: ``format(…, "f")`` would give) and fitting NUMERIC(20, 6): no sign on zero, no leading
#: zeros, no trailing zeros after the point, at most 14 integer and 6 fraction digits.
_CANONICAL_DECIMAL: Final = re.compile(
    r"-?[1-9][0-9]{0,13}(?:\.[0-9]{0,5}[1-9])?|-?0\.[0-9]{0,5}[1-9]|0"
)
_canonical_match: Final = _CANONICAL_DECIMAL.fullmatch


def _prepare_columns(batch: ColumnarBatch, sqlite_form: bool) -> PreparedBatch:
    """:func:`_prepare_record_batch` for a :class:`ColumnarBatch`: the readings' rows are
    built a column at a time (one conversion per distinct time, values passed through when
    their text is already the stored form), the hot path of ingestion."""
    others = batch.others
    if any(type(r) is WireReading for r in others.records):
        # Both forms in one batch (no gateway sends that): the record path keeps seq order.
        return _prepare_record_batch(batch.to_record_batch(), sqlite_form)
    prepared = _prepare_record_batch(others, sqlite_form)
    gateway = batch.gateway
    convert_time: Callable[[datetime], Any] = utc_micros if sqlite_form else checked_utc
    moments = {text: convert_time(moment) for text, moment in batch.moments.items()}
    received = convert_time(_now())
    values: list[Any] = batch.value
    if not sqlite_form or not all(map(_canonical_match, values)):
        values = [
            _stored_value(text, seq, sqlite_form)
            for text, seq in zip(values, batch.seq, strict=True)
        ]
    times = [moments[text] for text in batch.time]
    rows = zip(
        batch.meter,
        batch.obis,
        times,
        values,
        batch.unit,
        batch.kind,
        batch.source,
        batch.quality,
        repeat(gateway),
        batch.seq,
        [moments[text] for text in batch.read_at],
        repeat(received),
        repeat(0),
        strict=False,  # the repeats are endless; every column has the same length
    )
    # Seqs rise, so a later version of a key (a correction) replaces an earlier one.
    keys = list(zip(batch.meter, batch.obis, times, strict=True))
    by_key = dict(zip(keys, rows, strict=True))
    doubled = _doubled(keys, values) if len(by_key) < len(keys) else {}
    return PreparedBatch(
        gateway=gateway,
        session=batch.session,
        seq_from=batch.seq_from,
        seq_to=batch.seq_to,
        total=len(batch),
        readings=by_key,
        events=prepared.events,
        statistics=prepared.statistics,
        doubled=doubled,
    )


_VEE_COLUMNS: Final = tuple(
    itemgetter(_READING_COLUMNS.index(name))
    for name in ("meter", "obis", "ts", "value", "unit", "kind", "read_at")
)


def _vee_columns(rows: list[tuple[Any, ...]], sqlite_form: bool) -> ReadingColumns:
    """The rows (driver form, sorted by key, each key once) as the columns the in-line VEE
    reads. SQLite's values stay their text: VEE's screen reads them as floats, and makes a
    ``Decimal`` only of those it must decide exactly."""
    meter, obis, ts, value, unit, kind, read_at = (
        list(map(column, rows)) for column in _VEE_COLUMNS
    )
    if sqlite_form:  # times are µs already; values are their text
        return ReadingColumns(
            meter, obis, ts, value, unit, kind, read_at_micros=read_at, in_key_order=True
        )
    micros = {moment: utc_micros(moment) for moment in set(ts)}
    return ReadingColumns(
        meter,
        obis,
        list(map(micros.__getitem__, ts)),
        value,
        unit,
        kind,
        time=ts,
        read_at=read_at,
        in_key_order=True,
    )


def _key_value(key: tuple[Any, ...], sqlite_form: bool) -> tuple[Any, ...]:
    """A readings key in driver form as the bound value of a ``vee_exceptions`` key."""
    meter, obis, ts = key
    return (meter, obis, from_utc_micros(ts) if sqlite_form else ts)


def _stored_value(text: str, seq: int, sqlite_form: bool) -> Any:
    try:
        value = checked_decimal(Decimal(text))
    except ValueError as exc:
        raise InvalidBatchError(f"reading seq {seq}: {exc}") from None
    return format(value, "f") if sqlite_form else value


def _row_group(status_sql: str) -> str:
    """One row's VALUES group on SQLite: a parameter per prepared column, then the status."""
    return "(" + "?, " * _ROW_WIDTH + status_sql + ")"


def _chunk_params(
    chunk: list[tuple[Any, ...]], statuses: list[str] | None
) -> tuple[str, tuple[Any, ...]]:
    """The status's SQL in the chunk's VALUES groups, and the parameters: NULL without VEE,
    a literal when the whole chunk has one known status, else one parameter per row."""
    if statuses is None:
        return "NULL", tuple(chain.from_iterable(chunk))
    first = statuses[0]
    literal = _STATUS_LITERALS.get(first)
    if literal is not None and statuses.count(first) == len(statuses):
        return literal, tuple(chain.from_iterable(chunk))
    return "?", tuple(chain.from_iterable(map(tuple.__add__, chunk, zip(statuses, strict=True))))


def _owners(
    kept: list[tuple[int, str, dict[tuple[Any, ...], tuple[Any, ...]], list[Any]]],
    *,
    readings: bool,
) -> dict[str, dict[int, int]]:
    """gateway -> seq -> index of the batch that brought it, for counting record by record:
    events and statistics always, readings only when they must be counted one by one.
    Seqs are unique per gateway here: an applied range is never fresh again."""
    owners: dict[str, dict[int, int]] = {}
    for index, gateway, rows, others in kept:
        owner = owners.setdefault(gateway, {})
        if readings:
            owner.update(zip(map(_row_seq, rows.values()), repeat(index)))
        owner.update((record["seq"], index) for record in others)
    return owners


def _advance_ranges(
    watermark: int, ranges: list[list[int]], seq_from: int, seq_to: int
) -> tuple[int, list[list[int]]]:
    """The watermark and pending ranges once ``seq_from..seq_to`` is committed too."""
    if seq_to < seq_from:  # an empty batch covers nothing
        return watermark, ranges
    merged = _merge([*ranges, [seq_from, seq_to]])
    while merged and merged[0][0] <= watermark + 1:
        watermark = max(watermark, merged.pop(0)[1])
    return watermark, merged


def _merge(ranges: list[list[int]]) -> list[list[int]]:
    """Overlapping or adjacent ranges joined, in order."""
    merged: list[list[int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged


def _covered(ranges: list[list[int]], seq_from: int, seq_to: int) -> bool:
    return any(a <= seq_from and seq_to <= b for a, b in ranges)


def _not_yet_applied(watermark: int, ranges: list[list[int]]) -> Any:
    def fresh(seq: int) -> bool:
        return seq > watermark and not any(a <= seq <= b for a, b in ranges)

    return fresh
