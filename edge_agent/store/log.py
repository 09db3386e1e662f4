"""The edge agent's durable log: every reading, event and statistic, with its seq.

A reading counts as collected only once its transaction commits (edge.md D1.1), so the
collector writes straight into this log, one group-commit transaction per bus cycle::

    log = EdgeLog("/var/lib/meter2cash/edge.db", quota_bytes=512 << 20)
    with log.batch() as b:
        b.add_reading("000012345678", "1-0:1.8.0", period, Decimal("1234.56"), "kWh",
                      read_ts=now, source="scheduled", kind="daily")
    for record in log.pending(limit=500): ...   # the uplink sends these
    log.acknowledge(up_to_seq)                   # only central's ack releases records

Three rules keep replication exact:

* **seq** – every record gets the next 64-bit seq in the transaction that stores it; the
  counter lives in ``meta`` and moves in the same transaction, so it is gapless as
  assigned, monotone across restarts, and never reused after a delete.
* **ack** – ``acked_seq`` is central's high-water mark. Nothing is deleted because it was
  sent, published or PUBACKed; only acknowledged records are eligible for retention.
* **retention and quota** – retention deletes acknowledged records past their age; the
  quota evicts by priority (raw frames first, billing data last), counts every eviction and
  says so in an event. They are the only two ways a record leaves.

One :class:`EdgeLog` holds the single writer connection (``BEGIN IMMEDIATE`` for every
write). Other processes (the technician CLI) read through :meth:`LogReader.open`, a
read-only connection.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

from edge_agent.store.errors import AcknowledgementError, InvalidRecordError, StoreError
from edge_agent.store.obis_codes import OBIS_CODES, OBIS_INDEX
from edge_agent.store.records import (
    DIRECTIONS,
    EVICTION_ORDER,
    KIND_CODES,
    KIND_NAMES,
    KINDS,
    RAW_FRAME,
    SOURCE_CODES,
    SOURCE_NAMES,
    SOURCES,
    TYPE_NAMES,
    Batch,
    EventRecord,
    Health,
    ReadingRecord,
    Record,
    RetentionRules,
    StatisticRecord,
    decimal_text,
    format_utc,
    json_text,
    micros_text,
    micros_utc,
    parse_utc,
    utc_micros,
)
from edge_agent.store.schema import migrate, sync_obis_codes
from shared_protocol.errors import LocalProtocolError
from shared_protocol.quantities import quantity

__all__ = ["EdgeLog", "LogBatch", "LogReader"]

_COLUMNS: Final = (
    "seq, type, kind, created_at, data_ts, meter, obis, code, name, value, unit, read_ts, "
    "source, quality, detail, corrections"
)
_INSERT_READING: Final = (
    "INSERT INTO records (seq, type, kind, created_at, data_ts, meter, mrank, obis, value, "
    "unit, read_ts, source, quality) VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (data_ts, mrank, obis) WHERE type = 0 DO NOTHING"
)
_FIND_READING: Final = (
    "SELECT seq, value, unit, quality FROM records "
    "WHERE type = 0 AND data_ts = ? AND mrank = ? AND obis = ?"
)
_CORRECT_READING: Final = (
    "UPDATE records SET seq = ?, kind = ?, created_at = ?, value = ?, unit = ?, read_ts = ?, "
    "source = ?, quality = ?, corrections = corrections + 1 WHERE seq = ?"
)
#: Bounded so a burst cannot grow the -wal file without limit on flash (edge.md D1.6).
DEFAULT_JOURNAL_SIZE_LIMIT: Final = 4 << 20
DEFAULT_BUSY_TIMEOUT_MS: Final = 5000
#: STRICT tables (3.37) keep values TEXT; DELETE … RETURNING (3.35) counts evictions.
#: Debian 12, Ubuntu 22.04 and current Yocto ship newer; Debian 11 (3.34) does not.
MIN_SQLITE: Final = (3, 37, 0)
#: SQLITE_CORRUPT and SQLITE_NOTADB: the primary result codes that mean a damaged file.
_CORRUPTION_CODES: Final = frozenset({11, 26})
#: Quota alarm thresholds (edge.md D1.5), as fractions of the quota.
WARNING_USE: Final = 0.70
CRITICAL_USE: Final = 0.90


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _row_to_record(row: tuple[Any, ...]) -> Record:
    (seq, type_, kind, created_at, data_ts, meter, obis, code, name, value, unit, read_ts,
     source, quality, detail, corrections) = row  # fmt: skip
    if isinstance(obis, int):
        obis = OBIS_CODES[obis]
    if isinstance(type_, int):  # version 2: codes and microseconds (version 1: names, text)
        type_, kind = TYPE_NAMES[type_], KIND_NAMES[kind]
        source = None if source is None else SOURCE_NAMES[source]
        created_at, data_ts = micros_text(created_at), micros_text(data_ts)
        read_ts = None if read_ts is None else micros_text(read_ts)
    if type_ == "reading":
        return ReadingRecord(
            seq, kind, created_at, meter, obis, data_ts, value, unit, read_ts, source,
            quality, corrections,
        )  # fmt: skip
    if type_ == "event":
        return EventRecord(seq, kind, created_at, meter, code, json.loads(detail), data_ts)
    return StatisticRecord(seq, kind, created_at, name, json.loads(detail), value, data_ts)


def _configure(conn: sqlite3.Connection, busy_timeout_ms: int, journal_size_limit: int) -> None:
    # auto_vacuum only takes effect on a file with no tables yet; it lets the quota give
    # freed pages back to the file system (PRAGMA incremental_vacuum) without a VACUUM.
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode != "wal":
        raise StoreError(f"the log needs WAL mode; SQLite stayed in {mode!r}")
    # FULL: a commit survives power loss, not only a process crash (reliability.md B.1).
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute(f"PRAGMA journal_size_limit = {int(journal_size_limit)}")
    # Deleted rows are zeroed only where the page is written anyway: Debian's SQLite is
    # built with secure_delete on, which writes every page a retention run or an eviction
    # frees once more (flash wear, edge.md D1.6); nothing deleted here is a secret the
    # file's owner could not read before.
    conn.execute("PRAGMA secure_delete = FAST")


class LogReader:
    """Queries over the log; :class:`EdgeLog` is one, :meth:`open` gives a read-only one."""

    # What a read-only reader reports; EdgeLog sets its own in __init__.
    integrity: str = "unchecked"
    integrity_checked_at: str | None = None
    quarantined_to: Path | None = None
    quota_bytes: int | None = None
    _clock: Callable[[], datetime] = staticmethod(_utc_now)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        # A reader may be handed a version-1 file the daemon has not upgraded yet (the CLI
        # with the daemon stopped right after a software update): it reads that form too.
        columns = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(records)")}
        self._text_times = columns.get("created_at") == "TEXT"

    def _time(self, moment: datetime, what: str) -> int | str:
        """A datetime as the file stores it (a query parameter)."""
        return format_utc(moment, what) if self._text_times else utc_micros(moment, what)

    @classmethod
    def open(cls, path: str | Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> LogReader:
        """A read-only view of a log another process writes (the daemon)."""
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA query_only = ON")
        return cls(conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Several reads as one: on a reader's own connection a commit could otherwise land
        between them (a batch claiming to cover seqs it does not carry would lose them)."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            self._conn.execute("COMMIT")

    def _meta(self, key: str) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def last_seq(self) -> int:
        """The highest seq ever assigned (0 for a new log); deleted records keep theirs."""
        with self._lock:
            return self._meta("last_seq")

    def acked_seq(self) -> int:
        """Central's high-water mark: every seq up to it is stored on central."""
        with self._lock:
            return self._meta("acked_seq")

    def corrections(self) -> int:
        """How many times a stored reading's value was replaced by a different one."""
        with self._lock:
            return self._meta("corrections")

    def pending(self, after_seq: int | None = None, limit: int = 500) -> list[Record]:
        """The next unacknowledged records in seq order.

        ``after_seq`` lets the uplink skip what it already has in flight; it never reaches
        below the ack mark (use :meth:`records_between` to resend from retention).
        """
        with self._lock:
            start = max(self._meta("acked_seq"), after_seq or 0)
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                (start, int(limit)),
            ).fetchall()
        return [_row_to_record(row) for row in rows]

    def next_batch(self, after_seq: int | None = None, limit: int = 500) -> Batch:
        """:meth:`pending` with the seq range the batch covers (holes included).

        A short batch covers up to :meth:`last_seq`, so seqs freed by a correction or an
        eviction at the tail do not hold central's contiguous watermark back. An empty batch
        has ``seq_to < seq_from``.
        """
        with self._lock, self._snapshot():
            start = max(self._meta("acked_seq"), after_seq or 0)
            records = self.pending(start, limit)
            last = self._meta("last_seq")
        seq_to = records[-1].seq if len(records) >= limit else last
        return Batch(start + 1, max(seq_to, start), records)

    def records_between(self, seq_from: int, seq_to: int) -> list[Record]:
        """Every record still stored with ``seq_from <= seq <= seq_to``, acked or not."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM records WHERE seq BETWEEN ? AND ? ORDER BY seq",
                (int(seq_from), int(seq_to)),
            ).fetchall()
        return [_row_to_record(row) for row in rows]

    def find_readings(
        self, meter: str, obis: str | None, start: datetime, end: datetime
    ) -> list[ReadingRecord]:
        """A meter's readings with ``start <= period_ts < end`` (all quantities if ``obis``
        is None), in period order: what central's "resend" command asks for."""
        lo, hi = self._time(start, "start"), self._time(end, "end")
        sql = (
            f"SELECT {_COLUMNS} FROM records WHERE type = ? AND meter = ? "
            "AND data_ts >= ? AND data_ts < ?"
        )
        params: list[Any] = ["reading" if self._text_times else 0, meter, lo, hi]
        if obis is not None:
            sql += " AND obis = ?"
            params.append(obis if self._text_times else OBIS_INDEX.get(obis, obis))
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        found = [r for r in map(_row_to_record, rows) if isinstance(r, ReadingRecord)]
        return sorted(found, key=lambda r: (r.period_ts, r.obis))

    def depth(self) -> int:
        """How many stored records central has not acknowledged."""
        with self._lock:
            (count,) = self._conn.execute(
                "SELECT count(*) FROM records WHERE seq > ?", (self._meta("acked_seq"),)
            ).fetchone()
        return int(count)

    def oldest_unacked_age(self, now: datetime) -> timedelta | None:
        """How long the oldest unacknowledged record has waited (None when none waits)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT created_at FROM records WHERE seq > ? ORDER BY seq LIMIT 1",
                (self._meta("acked_seq"),),
            ).fetchone()
        if row is None:
            return None
        created = row[0]
        return now - (parse_utc(created) if isinstance(created, str) else micros_utc(created))

    def raw_frames(self, meter: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` raw frames kept (only ``meter``'s when given), oldest first:
        ``{id, bus, direction, hex, at, meter, note}``. The agent keeps the frames of
        exchanges that went wrong (edge-storage.md, raw frames)."""
        with self._lock:
            present = {row[1] for row in self._conn.execute("PRAGMA table_info(raw_frames)")}
            extra = "meter, note" if "meter" in present else "NULL, NULL"
            where, params = ("WHERE meter = ? ", [meter]) if meter is not None else ("", [])
            if meter is not None and "meter" not in present:
                return []  # version 1 did not say which meter a frame was for
            rows = self._conn.execute(
                f"SELECT id, bus, direction, frame, at, {extra} FROM raw_frames {where}"
                "ORDER BY id DESC LIMIT ?",
                (*params, int(limit)),
            ).fetchall()
        return [
            {
                "id": id_,
                "bus": bus,
                "direction": direction,
                "hex": bytes(frame).hex(" ").upper(),
                "at": at if isinstance(at, str) else micros_text(at),
                "meter": who,
                "note": note,
            }
            for id_, bus, direction, frame, at, who, note in reversed(rows)
        ]

    def eviction_counts(self) -> dict[str, int]:
        """Records (and raw frames) evicted under disk pressure since the log was made."""
        with self._lock:
            rows = self._conn.execute("SELECT kind, count FROM evictions ORDER BY kind")
            return {kind: int(count) for kind, count in rows}

    def size_bytes(self) -> int:
        """The database's size as SQLite sees it (page_count × page_size, WAL included)."""
        with self._lock:
            (pages,) = self._conn.execute("PRAGMA page_count").fetchone()
            (page_size,) = self._conn.execute("PRAGMA page_size").fetchone()
        return int(pages) * int(page_size)

    def health(self, now: datetime | None = None, *, quota_bytes: int | None = None) -> Health:
        """Depth, age, size, quota use and alarm, evictions, corrections, integrity.

        ``quota_bytes`` defaults to the log's own; a read-only reader (the CLI while the
        daemon runs) passes the configured one. A reader reports ``integrity`` as
        ``"unchecked"``: only the writer checks at open.
        """
        moment = now if now is not None else self._clock()
        quota = quota_bytes if quota_bytes is not None else self.quota_bytes
        with self._lock, self._snapshot():
            age = self.oldest_unacked_age(moment)
            size = self.size_bytes()
            main_file = self._conn.execute("PRAGMA database_list").fetchone()[2]
            wal = Path(f"{main_file}-wal")
            wal_bytes = wal.stat().st_size if main_file and wal.exists() else 0
            use: float | None = None
            alarm: Literal["ok", "warning", "critical"] | None = None
            if quota is not None:
                use = 100.0 * size / quota
                alarm = (
                    "critical"
                    if use >= CRITICAL_USE * 100
                    else "warning"
                    if use >= WARNING_USE * 100
                    else "ok"
                )
            return Health(
                last_seq=self.last_seq(),
                acked_seq=self.acked_seq(),
                depth=self.depth(),
                oldest_unacked_age_s=age.total_seconds() if age is not None else None,
                size_bytes=size,
                wal_bytes=wal_bytes,
                quota_bytes=quota,
                quota_use_percent=use,
                quota_alarm=alarm,
                eviction_counts=self.eviction_counts(),
                corrections=self.corrections(),
                integrity=self.integrity,
                integrity_checked_at=self.integrity_checked_at,
                quarantined_to=str(self.quarantined_to) if self.quarantined_to else None,
            )


class LogBatch:
    """One open transaction of :meth:`EdgeLog.batch`; everything added commits together."""

    def __init__(
        self, conn: sqlite3.Connection, last_seq: int, created_at: int, ranks: dict[str, int]
    ) -> None:
        self._conn = conn
        self._last_seq = last_seq
        self._created_at = created_at
        self._ranks = ranks  # the log's meter → rank (read only here)
        self.new_ranks: dict[str, int] = {}  # ranks this batch gave (the log's once committed)
        self._first_seq: int | None = None
        self._corrections = 0
        self._open = True

    def _rank(self, meter: str) -> int:
        rank = self._ranks.get(meter)
        if rank is None:
            rank = self.new_ranks.get(meter)
            if rank is None:
                (rank,) = self._conn.execute(
                    "INSERT INTO meters (meter) VALUES (?) RETURNING rank", (meter,)
                ).fetchone()
                self.new_ranks[meter] = rank
        return rank

    @property
    def first_seq(self) -> int | None:
        """The first seq this batch assigned (None if it assigned none)."""
        return self._first_seq

    @property
    def last_seq(self) -> int | None:
        """The last seq this batch assigned (None if it assigned none)."""
        return self._last_seq if self._first_seq is not None else None

    def _take_seq(self) -> int:
        if not self._open:
            raise InvalidRecordError("this batch is closed; open a new one with log.batch()")
        self._last_seq += 1
        if self._first_seq is None:
            self._first_seq = self._last_seq
        return self._last_seq

    def add_reading(
        self,
        meter: str,
        obis: str,
        period_ts: datetime,
        value: Decimal | int,
        unit: str | None,
        *,
        read_ts: datetime,
        source: str,
        kind: str,
        quality: str = "ok",
    ) -> int | None:
        """Store one reading; its seq, or None for an identical duplicate (no seq taken).

        ``period_ts`` is the meter's freeze/interval time (aware, UTC), never the time it
        was read. A different value, unit or quality for a stored (meter, obis, period_ts)
        is a correction: the row takes the new value and a new seq so it replicates again.
        """
        if not self._open:
            raise InvalidRecordError("this batch is closed; open a new one with log.batch()")
        if not isinstance(meter, str) or not meter:
            raise InvalidRecordError(f"meter must be a non-empty string, not {meter!r}")
        try:
            quantity(obis)
        except LocalProtocolError as exc:
            raise InvalidRecordError(str(exc)) from exc
        if source not in SOURCES:
            raise InvalidRecordError(f"source {source!r} is not one of {sorted(SOURCES)}")
        if kind not in KINDS or kind == "event":
            raise InvalidRecordError(
                f"reading kind {kind!r} is not one of {sorted(KINDS - {'event'})}"
            )
        if unit is not None and not isinstance(unit, str):
            raise InvalidRecordError(f"unit must be a string or None, not {unit!r}")
        if not isinstance(quality, str) or not quality:
            raise InvalidRecordError(f"quality must be a non-empty string, not {quality!r}")
        period = utc_micros(period_ts, "period_ts")
        read = utc_micros(read_ts, "read_ts")
        text = decimal_text(value)
        seq = self._last_seq + 1
        kind_code, source_code = KIND_CODES[kind], SOURCE_CODES[source]
        rank = self._rank(meter)
        obis_code = OBIS_INDEX.get(obis, obis)
        cursor = self._conn.execute(
            _INSERT_READING,
            (seq, kind_code, self._created_at, period, meter, rank, obis_code, text, unit, read,
             source_code, quality),
        )  # fmt: skip
        if cursor.rowcount == 1:
            return self._take_seq()
        old_seq, old_value, old_unit, old_quality = self._conn.execute(
            _FIND_READING, (period, rank, obis_code)
        ).fetchone()
        if Decimal(old_value) == Decimal(text) and old_unit == unit and old_quality == quality:
            return None
        seq = self._take_seq()
        self._conn.execute(
            _CORRECT_READING,
            (seq, kind_code, self._created_at, text, unit, read, source_code, quality, old_seq),
        )
        self._corrections += 1
        return seq

    def add_event(self, meter: str | None, code: str, detail: dict[str, Any], at: datetime) -> int:
        """Store an event of a meter (or of the gateway when ``meter`` is None); its seq."""
        if meter is not None and (not isinstance(meter, str) or not meter):
            raise InvalidRecordError(f"meter must be a non-empty string or None, not {meter!r}")
        if not isinstance(code, str) or not code:
            raise InvalidRecordError(f"event code must be a non-empty string, not {code!r}")
        when = utc_micros(at, "at")
        body = json_text(detail, "event detail")
        seq = self._take_seq()
        self._conn.execute(
            "INSERT INTO records (seq, type, kind, created_at, data_ts, meter, code, detail) "
            "VALUES (?, 1, 4, ?, ?, ?, ?, ?)",
            (seq, self._created_at, when, meter, code, body),
        )
        return seq

    def add_statistic(
        self,
        name: str,
        labels: dict[str, Any],
        value: Decimal | int,
        at: datetime,
        *,
        kind: str = "event",
    ) -> int:
        """Store a statistic (kept and evicted like events unless ``kind`` says other)."""
        if not isinstance(name, str) or not name:
            raise InvalidRecordError(f"statistic name must be a non-empty string, not {name!r}")
        if kind not in KINDS:
            raise InvalidRecordError(f"kind {kind!r} is not one of {sorted(KINDS)}")
        when = utc_micros(at, "at")
        body = json_text(labels, "statistic labels")
        text = decimal_text(value)
        seq = self._take_seq()
        self._conn.execute(
            "INSERT INTO records (seq, type, kind, created_at, data_ts, name, value, detail) "
            "VALUES (?, 2, ?, ?, ?, ?, ?, ?)",
            (seq, KIND_CODES[kind], self._created_at, when, name, text, body),
        )
        return seq

    def add_raw_frame(
        self,
        bus: str,
        direction: str,
        hex: str | bytes,
        at: datetime,
        *,
        meter: str | None = None,
        note: str | None = None,
    ) -> None:
        """Keep a frame as seen on the line, for forensics: no seq, never replicated.

        ``hex`` is the frame as hex text (spaces allowed) or as bytes; ``meter`` the meter
        the exchange was with, ``note`` how it went (the agent writes ``outcome: detail``).
        """
        if not self._open:
            raise InvalidRecordError("this batch is closed; open a new one with log.batch()")
        if direction not in DIRECTIONS:
            raise InvalidRecordError(f"direction {direction!r} is not one of {sorted(DIRECTIONS)}")
        if isinstance(hex, bytes):
            frame = hex
        else:
            try:
                frame = bytes.fromhex(hex)
            except (TypeError, ValueError) as exc:
                raise InvalidRecordError(f"raw frame is not hex: {hex!r}") from exc
        self._conn.execute(
            "INSERT INTO raw_frames (bus, direction, frame, at, meter, note) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (bus, direction, frame, utc_micros(at, "at"), meter, note),
        )

    def _finish(self) -> None:
        """Move the counters in the same transaction as the rows (called before COMMIT)."""
        self._open = False
        if self._first_seq is not None:
            self._conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'last_seq'", (self._last_seq,)
            )
        if self._corrections:
            self._conn.execute(
                "UPDATE meta SET value = value + ? WHERE key = 'corrections'",
                (self._corrections,),
            )


class EdgeLog(LogReader):
    """The durable log file and its one writer connection.

    Opening runs ``PRAGMA integrity_check`` (``check="quick"``: ``quick_check``, which skips
    the index-against-table comparison and is several times faster on a large file on slow
    flash); a corrupt file is moved aside to
    ``<path>.quarantine-<UTC time>`` (with its -wal and -shm), what can be read is salvaged
    into a fresh file, and an event ``store.quarantined`` says how much.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        quota_bytes: int | None = None,
        retention: RetentionRules = RetentionRules(),  # noqa: B008 - frozen, shared safely
        clock: Callable[[], datetime] = _utc_now,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        journal_size_limit: int = DEFAULT_JOURNAL_SIZE_LIMIT,
        check: Literal["integrity", "quick"] = "integrity",
    ) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                f"the log needs SQLite ≥ {'.'.join(map(str, MIN_SQLITE))} (STRICT tables, "
                f"RETURNING); this Python links {sqlite3.sqlite_version}"
            )
        if check not in ("integrity", "quick"):
            raise InvalidRecordError(f"check must be 'integrity' or 'quick', not {check!r}")
        if quota_bytes is not None and quota_bytes <= 0:
            raise InvalidRecordError(f"quota_bytes must be positive, not {quota_bytes}")
        self.path = Path(path)
        self.quota_bytes = quota_bytes
        self.retention = retention
        self._clock = clock
        self._busy_timeout_ms = busy_timeout_ms
        self._journal_size_limit = journal_size_limit
        self._enforcing = False
        self._check = check
        self.quarantined_to: Path | None = None
        self.integrity_checked_at = format_utc(clock(), "clock()")
        self._ranks: dict[str, int] = {}  # meter → rank (meters table), loaded once open
        conn, self.integrity = self._open_checked()
        if conn is None:
            from edge_agent.store.salvage import quarantine_files, salvage_into

            self.quarantined_to = quarantine_files(self.path, clock())
            super().__init__(self._fresh_connection())
            self._load_ranks()
            self.salvage_report: dict[str, Any] | None = salvage_into(
                self, self.quarantined_to, self.integrity
            )
        else:
            super().__init__(conn)
            self.salvage_report = None
            self._repair_counters()
            (known,) = self._conn.execute("SELECT count(*) FROM obis_codes").fetchone()
            if known < len(OBIS_CODES):  # a newer agent appended codes: the view learns them
                with self._lock:
                    self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        sync_obis_codes(self._conn)
                        self._conn.execute("COMMIT")
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
        self._load_ranks()

    def _load_ranks(self) -> None:
        with self._lock:
            self._ranks.clear()
            self._ranks.update(self._conn.execute("SELECT meter, rank FROM meters"))

    def register_meters(self, meters: Iterable[str]) -> int:
        """Give the meters not yet known their ranks, in the order given; returns how many
        were new. The collector lists its meters bus by bus before a pass, so that one
        bus's readings of a period sit together in the natural-key index (a commit then
        touches a few pages, not every page of the period). A meter first seen in
        ``add_reading`` is ranked then."""
        new = [m for m in dict.fromkeys(meters) if isinstance(m, str) and m not in self._ranks]
        if not new:
            return 0
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR IGNORE INTO meters (meter) VALUES (?)", [(m,) for m in new]
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._load_ranks()
        return len(new)

    # -- opening ---------------------------------------------------------------------------

    def _fresh_connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
            check_same_thread=False,  # guarded by self._lock
            timeout=self._busy_timeout_ms / 1000,
        )
        try:
            _configure(conn, self._busy_timeout_ms, self._journal_size_limit)
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_checked(self) -> tuple[sqlite3.Connection | None, str]:
        """The writer connection and ``"ok"``, or None and what integrity_check said."""
        conn: sqlite3.Connection | None = None
        try:
            conn = self._fresh_connection()
            rows = conn.execute(f"PRAGMA {self._check}_check(20)").fetchall()
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            # Only a damaged file is quarantined; a missing directory, a permission or a
            # lock problem is the operator's to see, and moving the file would not help.
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _CORRUPTION_CODES:
                raise
            return None, f"cannot open: {exc}"
        result = "; ".join(str(row[0]) for row in rows)
        if result != "ok":
            conn.close()
            return None, result
        return conn, "ok"

    def _repair_counters(self) -> None:
        """meta.last_seq never lags the stored seqs (it cannot, but a seq must never repeat)."""
        with self._lock:
            (top,) = self._conn.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()
            if top > self._meta("last_seq"):
                self._write("UPDATE meta SET value = ? WHERE key = 'last_seq'", (top,))

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(sql, params)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the writer connection; SQLite checkpoints and removes the -wal file."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> EdgeLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[LogBatch]:
        """One group-commit transaction: ``BEGIN IMMEDIATE`` … ``COMMIT`` (rollback on error).

        When the ``with`` block ends normally the batch is durable (``synchronous=FULL``).
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                batch = LogBatch(
                    self._conn, self._meta("last_seq"), utc_micros(self._clock()), self._ranks
                )
                yield batch
                batch._finish()
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._ranks.update(batch.new_ranks)
            over = self.quota_bytes is not None and self.size_bytes() > self.quota_bytes
            if over and not self._enforcing:
                self.enforce_quota()

    def acknowledge(self, up_to_seq: int) -> int:
        """Central stored everything up to ``up_to_seq``; returns the new high-water mark.

        An older (or repeated) ack is ignored; an ack beyond the highest assigned seq is
        refused, because central cannot have stored what was never written here.
        """
        if isinstance(up_to_seq, bool) or not isinstance(up_to_seq, int) or up_to_seq < 0:
            raise AcknowledgementError(f"an ack is a seq (int ≥ 0), not {up_to_seq!r}")
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                last, acked = self._meta("last_seq"), self._meta("acked_seq")
                if up_to_seq > last:
                    raise AcknowledgementError(
                        f"ack up to seq {up_to_seq} is beyond this log's highest seq {last}; "
                        "central is acknowledging records this gateway never wrote"
                    )
                if up_to_seq > acked:
                    self._conn.execute(
                        "UPDATE meta SET value = ? WHERE key = 'acked_seq'", (up_to_seq,)
                    )
                    acked = up_to_seq
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return acked

    def new_session(self) -> int:
        """The next uplink session id (64-bit, persisted, never reused): the uplink takes one
        per MQTT CONNECT and puts it in birth, death and every batch (edge.md D2.1)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                session = self._meta("session_id") + 1
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('session_id', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (session,),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return session

    # -- retention and quota ---------------------------------------------------------------

    def apply_retention(self, now: datetime) -> dict[str, int]:
        """Delete *acknowledged* records older than their kind's rule, and old raw frames.

        An unacknowledged record is never removed here, however old. Returns the number
        deleted per kind (``raw_frame`` included).
        """
        deleted: dict[str, int] = {}
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                acked = self._meta("acked_seq")
                cutoffs = {
                    KIND_CODES[kind]: utc_micros(now - self.retention.age_for(kind), "now")
                    for kind in KINDS
                }
                latest = max(cutoffs.values())
                per_kind = " ".join(f"WHEN {code} THEN {cut}" for code, cut in cutoffs.items())
                # one range scan of each age index: readings (the natural key starts with
                # the time) and events/statistics
                gone: Counter[str] = Counter({kind: 0 for kind in KINDS})
                for readings in ("type = 0", "type != 0"):
                    rows = self._conn.execute(
                        f"DELETE FROM records WHERE {readings} AND data_ts < ? AND seq <= ? "
                        f"AND data_ts < CASE kind {per_kind} END RETURNING kind",
                        (latest, acked),
                    ).fetchall()
                    gone.update(KIND_NAMES[kind] for (kind,) in rows)
                deleted.update(sorted(gone.items()))
                cutoff = utc_micros(now - self.retention.raw_frame, "now")
                # frames are in time order: delete the prefix older than the cut-off
                cursor = self._conn.execute(
                    "DELETE FROM raw_frames WHERE id < coalesce("
                    "(SELECT id FROM raw_frames WHERE at >= ? ORDER BY id LIMIT 1), "
                    "(SELECT max(id) + 1 FROM raw_frames))",
                    (cutoff,),
                )
                deleted[RAW_FRAME] = cursor.rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return deleted

    def _compact(self) -> int:
        """Checkpoint, give free pages back, and return the size the quota is judged on."""
        # executescript steps the pragma to completion; execute() frees one page per call.
        self._conn.executescript("PRAGMA incremental_vacuum;")
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return self.size_bytes()

    def _evict_chunk(self, kinds: tuple[str, ...], limit: int) -> tuple[Counter[str], list[int]]:
        """Delete up to ``limit`` rows of one eviction class, oldest first, acked first."""
        counts: Counter[str] = Counter()
        unacked: list[int] = []
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            if kinds == (RAW_FRAME,):
                cursor = self._conn.execute(
                    "DELETE FROM raw_frames WHERE id IN "
                    "(SELECT id FROM raw_frames ORDER BY id LIMIT ?)",
                    (limit,),
                )
                counts[RAW_FRAME] = cursor.rowcount
            else:
                acked = self._meta("acked_seq")
                chosen = self._oldest(kinds, acked, limit)
                for seq, code in chosen:
                    counts[KIND_NAMES[code]] += 1
                    if seq > acked:
                        unacked.append(seq)
                self._conn.executemany(
                    "DELETE FROM records WHERE seq = ?", [(seq,) for seq, _ in chosen]
                )
            for kind, count in counts.items():
                if count:
                    self._conn.execute(
                        "INSERT INTO evictions (kind, count) VALUES (?, ?) "
                        "ON CONFLICT (kind) DO UPDATE SET count = count + excluded.count",
                        (kind, count),
                    )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return counts, unacked

    def _oldest(self, kinds: tuple[str, ...], acked: int, limit: int) -> list[tuple[int, int]]:
        """``(seq, kind)`` of up to ``limit`` records of ``kinds`` to evict: acknowledged
        before unacknowledged, then oldest data time first. Each query walks an age index
        (readings: the natural key; events and statistics: their own) and stops at
        ``limit``, so a large log is never sorted whole."""
        codes = ", ".join(str(KIND_CODES[kind]) for kind in kinds)
        found: list[tuple[bool, int, int, int]] = []
        for acked_part in ("seq <= ?", "seq > ?"):
            for index, readings in (
                ("readings_natural_key", "type = 0"),
                ("records_other_age", "type != 0"),
            ):
                found += [
                    (acked_part == "seq > ?", data_ts, seq, kind)
                    for data_ts, seq, kind in self._conn.execute(
                        f"SELECT data_ts, seq, kind FROM records INDEXED BY {index} "
                        f"WHERE {readings} AND data_ts IS NOT NULL AND kind IN ({codes}) "
                        f"AND {acked_part} ORDER BY data_ts, seq LIMIT ?",
                        (acked, limit),
                    )
                ]
            if len(found) >= limit:
                break  # enough acknowledged ones: the unacknowledged stay
        found.sort()
        return [(seq, kind) for _, _, seq, kind in found[:limit]]

    def enforce_quota(self) -> dict[str, int]:
        """Evict by priority until the file fits the quota; returns what was evicted per kind.

        Order: raw frames → instant and clock → curve → event → daily and monthly; within
        a class the oldest go first and acknowledged before unacknowledged. Every eviction is
        counted (:meth:`eviction_counts`) and summarised in a ``store.evicted`` event.
        """
        if self.quota_bytes is None:
            return {}
        quota = self.quota_bytes
        total: Counter[str] = Counter()
        with self._lock:
            self._enforcing = True
            try:
                # The store.evicted event can itself tip the file over again: a few rounds.
                for _round in range(3):
                    evicted, unacked, size = self._evict_to(quota)
                    if not evicted:
                        break
                    total.update(evicted)
                    self._record_eviction(evicted, unacked, size)
                    if self._compact() <= quota:
                        break
            finally:
                self._enforcing = False
        return dict(total)

    def _evict_to(self, quota: int) -> tuple[Counter[str], list[int], int]:
        """One pass down the eviction order until the file fits: what went, the unacked
        seqs among it, and the size reached."""
        evicted: Counter[str] = Counter()
        unacked: list[int] = []
        size = self._compact()
        for kinds in EVICTION_ORDER:
            step = 0
            while size > quota:
                step = self._eviction_step(size - quota, step)
                counts, lost = self._evict_chunk(kinds, step)
                if sum(counts.values()) == 0:
                    break
                evicted.update(counts)
                unacked.extend(lost)
                size = self._compact()
            if size <= quota:
                break
        return evicted, unacked, size

    def _eviction_step(self, excess: int, previous: int) -> int:
        """Rows to evict next: the excess over the average row size, doubling when a
        previous step freed too little (rows share pages with rows of other kinds)."""
        (rows,) = self._conn.execute(
            "SELECT (SELECT count(*) FROM records) + (SELECT count(*) FROM raw_frames)"
        ).fetchone()
        average = max(self.size_bytes() / max(int(rows), 1), 16.0)
        estimate = max(math.ceil(excess / average), 16)
        return max(estimate, previous * 2)

    def _record_eviction(self, evicted: Counter[str], unacked: list[int], size: int) -> None:
        detail: dict[str, Any] = {
            "evicted": dict(sorted(evicted.items())),
            "unacked_evicted": len(unacked),
            "size_bytes": size,
            "quota_bytes": self.quota_bytes,
        }
        if unacked:
            # Central sees these seqs as holes in a batch's covered range; this says why.
            detail["unacked_seq_min"] = min(unacked)
            detail["unacked_seq_max"] = max(unacked)
        now = self._clock()
        with self.batch() as batch:
            batch.add_event(None, "store.evicted", detail, now)
