"""The expected-slot ledger (the 补抄 file, in SQLite): what should have been read, and what was.

For every (task, meter, slot) the collector first records the slot as *expected*, then
*got* or *failed* (reason, attempts); a failed slot the backfill window has passed becomes
*exhausted* (an event in the log says so). A slot is the instant the data belongs to: the
freeze instant for daily and monthly frozen records (local 00:00, which closes the previous
day / month), the interval point for curves, the run instant for events and clock checks.

The ledger is its own small SQLite file (WAL, one writer connection, ``BEGIN IMMEDIATE``),
separate from the durable log: it is bookkeeping of the gateway, never replicated, and can
be rebuilt (re-expecting every slot) without losing a reading. It also keeps what the
collector must remember across restarts: the last completed slot per task, 645 event
counters already collected, and clock syncs done per meter and day (the daily cap).

States::

    expected ──► got
        │
        └──► failed ──► got            (a later attempt, e.g. 补抄)
                  └──► exhausted       (older than the backfill window; terminal)
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "STATES",
    "Ledger",
    "MeterSummary",
    "Slot",
    "SuccessStats",
    "slot_text",
]

STATES = ("expected", "got", "failed", "exhausted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS slots (
    task TEXT NOT NULL,
    meter TEXT NOT NULL,
    slot TEXT NOT NULL,
    day TEXT NOT NULL,
    bus TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL DEFAULT '',
    expected_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    got_at TEXT,
    PRIMARY KEY (task, meter, slot)
) WITHOUT ROWID, STRICT;
CREATE INDEX IF NOT EXISTS slots_by_state ON slots (state, slot);
CREATE INDEX IF NOT EXISTS slots_by_day ON slots (day, task);
CREATE TABLE IF NOT EXISTS task_state (
    task TEXT PRIMARY KEY,
    last_slot TEXT,
    last_run_at TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
) STRICT;
CREATE TABLE IF NOT EXISTS event_marks (
    meter TEXT NOT NULL,
    kind TEXT NOT NULL,
    total INTEGER,
    last_start TEXT,
    PRIMARY KEY (meter, kind)
) STRICT;
CREATE TABLE IF NOT EXISTS clock_syncs (
    meter TEXT NOT NULL,
    day TEXT NOT NULL,
    at TEXT NOT NULL,
    offset_before_s REAL,
    offset_after_s REAL,
    method TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS clock_syncs_by_meter ON clock_syncs (meter, day);
CREATE TABLE IF NOT EXISTS clock_pending (
    meter TEXT PRIMARY KEY,
    bus TEXT NOT NULL,
    offset_s REAL NOT NULL,
    since TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS published (
    what TEXT NOT NULL,
    day TEXT NOT NULL,
    PRIMARY KEY (what, day)
) STRICT;
"""


def slot_text(instant: datetime) -> str:
    """The ledger's key text of an aware instant: fixed-width UTC, sorts as time."""
    if instant.tzinfo is None:
        raise ValueError(f"slot {instant!r} must be an aware datetime (UTC)")
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _now_text() -> str:
    return slot_text(datetime.now(UTC))


@dataclass(frozen=True)
class Slot:
    """One (task, meter, slot) row of the ledger."""

    task: str
    meter: str
    slot: datetime
    day: date  # the slot's local date (gateway zone)
    bus: str
    state: str
    reason: str
    attempts: int
    source: str
    expected_at: datetime
    updated_at: datetime
    got_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("slot", "expected_at", "updated_at", "got_at"):
            data[key] = slot_text(data[key]) if data[key] is not None else None
        data["day"] = self.day.isoformat()
        return data


@dataclass(frozen=True)
class SuccessStats:
    """Should-read / read: ``rate`` is got / expected (1 when nothing was expected)."""

    expected: int
    got: int
    failed: int  # failed or exhausted
    pending: int  # still expected (not tried yet, or in flight)

    @property
    def rate(self) -> Decimal:
        if self.expected == 0:
            return Decimal(1)
        return (Decimal(self.got) / Decimal(self.expected)).quantize(
            Decimal("0.0001"), ROUND_HALF_EVEN
        )

    @property
    def gate(self) -> str:
        """The firmware's SucRateState: ``all``, ``>=95%`` or ``<95%``."""
        if self.got == self.expected:
            return "all"
        return ">=95%" if self.rate >= Decimal("0.95") else "<95%"

    def to_dict(self) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "got": self.got,
            "failed": self.failed,
            "pending": self.pending,
            "rate": str(self.rate),
            "gate": self.gate,
        }


@dataclass(frozen=True)
class MeterSummary:
    """One meter's record for one task (D3.4): should-read / read, how long it has been
    failing, and when it last gave data."""

    meter: str
    bus: str
    stats: SuccessStats
    consecutive_failures: int  # failed/exhausted slots since the newest got one
    last_got_slot: datetime | None
    last_got_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "meter": self.meter,
            "bus": self.bus,
            **self.stats.to_dict(),
            "consecutive_failures": self.consecutive_failures,
            "last_got_slot": slot_text(self.last_got_slot) if self.last_got_slot else None,
            "last_got_at": slot_text(self.last_got_at) if self.last_got_at else None,
        }


_SLOT_COLUMNS = (
    "task, meter, slot, day, bus, state, reason, attempts, source, expected_at, updated_at, got_at"
)


def _slot(row: tuple[Any, ...]) -> Slot:
    return Slot(
        task=row[0],
        meter=row[1],
        slot=_parse(row[2]),
        day=date.fromisoformat(row[3]),
        bus=row[4],
        state=row[5],
        reason=row[6],
        attempts=row[7],
        source=row[8],
        expected_at=_parse(row[9]),
        updated_at=_parse(row[10]),
        got_at=_parse(row[11]) if row[11] else None,
    )


class Ledger:
    """The ledger file. Thread-safe (one connection behind a lock); one process writes."""

    def __init__(
        self,
        path: str | Path,
        *,
        zone: str = "Asia/Shanghai",
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.zone = ZoneInfo(zone)
        self.readonly = readonly
        self._lock = threading.RLock()
        if readonly:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA query_only = ON")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
            self._db.execute("PRAGMA journal_mode = WAL")
            # NORMAL, not FULL: a ledger row lost to power failure only makes the
            # collector read a slot again; the readings themselves are in the FULL log.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)
        self._depth = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several marks into one commit (nested calls join the outer one)."""
        with self._lock:
            if self._depth == 0:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("COMMIT")

    def _day(self, slot: datetime) -> str:
        return slot.astimezone(self.zone).date().isoformat()

    # ------------------------------------------------------------ marks

    def expect(self, task: str, meter: str, slot: datetime, *, bus: str = "") -> bool:
        """Record that ``slot`` should be read; True if it was new (an existing row stays)."""
        now = _now_text()
        with self.transaction():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO slots (task, meter, slot, day, bus, state, expected_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, 'expected', ?, ?)",
                (task, meter, slot_text(slot), self._day(slot), bus, now, now),
            )
            return cursor.rowcount == 1

    def got(
        self, task: str, meter: str, slot: datetime, *, source: str = "scheduled", bus: str = ""
    ) -> None:
        """The slot's data is in the log (call after the log's batch committed)."""
        now = _now_text()
        with self.transaction():
            self.expect(task, meter, slot, bus=bus)
            self._db.execute(
                "UPDATE slots SET state = 'got', reason = '', attempts = attempts + 1, "
                "source = ?, updated_at = ?, got_at = ? WHERE task = ? AND meter = ? AND slot = ?",
                (source, now, now, task, meter, slot_text(slot)),
            )

    def failed(
        self,
        task: str,
        meter: str,
        slot: datetime,
        reason: str,
        *,
        source: str = "scheduled",
        bus: str = "",
    ) -> None:
        """An attempt gave no data; a slot already got stays got."""
        now = _now_text()
        with self.transaction():
            self.expect(task, meter, slot, bus=bus)
            self._db.execute(
                "UPDATE slots SET state = 'failed', reason = ?, attempts = attempts + 1, "
                "source = ?, updated_at = ? "
                "WHERE task = ? AND meter = ? AND slot = ? AND state IN ('expected', 'failed')",
                (reason, source, now, task, meter, slot_text(slot)),
            )

    def exhaust(self, task: str, meter: str, slot: datetime, reason: str) -> None:
        """Give the slot up: the backfill window has passed it."""
        with self.transaction():
            self._db.execute(
                "UPDATE slots SET state = 'exhausted', reason = ?, updated_at = ? "
                "WHERE task = ? AND meter = ? AND slot = ? AND state IN ('expected', 'failed')",
                (reason, _now_text(), task, meter, slot_text(slot)),
            )

    def forget(self, task: str, meter: str, slot: datetime) -> None:
        """Drop an expected slot the meter turned out not to keep (protocol/model lacks
        the data): it is not a failure and must not count against the success rate."""
        with self.transaction():
            self._db.execute(
                "DELETE FROM slots "
                "WHERE task = ? AND meter = ? AND slot = ? AND state = 'expected'",
                (task, meter, slot_text(slot)),
            )

    # ------------------------------------------------------------ queries

    def slot(self, task: str, meter: str, slot: datetime) -> Slot | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_SLOT_COLUMNS} FROM slots WHERE task = ? AND meter = ? AND slot = ?",
                (task, meter, slot_text(slot)),
            ).fetchone()
        return _slot(row) if row else None

    def slots(
        self,
        task: str | None = None,
        meter: str | None = None,
        day: date | None = None,
        state: str | Iterable[str] | None = None,
        *,
        before: datetime | None = None,
        since: datetime | None = None,
        bus: str | None = None,
        limit: int | None = None,
    ) -> list[Slot]:
        """Rows matching every given filter, oldest slot first."""
        where, params = self._where(task, meter, day, state, bus)
        if before is not None:
            where.append("slot < ?")
            params.append(slot_text(before))
        if since is not None:
            where.append("slot >= ?")
            params.append(slot_text(since))
        sql = f"SELECT {_SLOT_COLUMNS} FROM slots"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY slot, task, meter"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [_slot(row) for row in rows]

    @staticmethod
    def _where(
        task: str | None,
        meter: str | None,
        day: date | None,
        state: str | Iterable[str] | None,
        bus: str | None,
    ) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("task", task), ("meter", meter), ("bus", bus)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if day is not None:
            where.append("day = ?")
            params.append(day.isoformat())
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            unknown = set(states) - set(STATES)
            if unknown:
                raise ValueError(f"unknown slot state(s) {sorted(unknown)}; use {STATES}")
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(states)
        return where, params

    def success(
        self,
        task: str | None = None,
        day: date | None = None,
        bus: str | None = None,
        meter: str | None = None,
    ) -> SuccessStats:
        """Should-read / read over the matching slots."""
        where, params = self._where(task, meter, day, None, bus)
        sql = "SELECT state, count(*) FROM slots"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " GROUP BY state"
        with self._lock:
            counts = dict(self._db.execute(sql, params).fetchall())
        return SuccessStats(
            expected=sum(counts.values()),
            got=counts.get("got", 0),
            failed=counts.get("failed", 0) + counts.get("exhausted", 0),
            pending=counts.get("expected", 0),
        )

    def breakdown(self, day: date, by: str) -> dict[tuple[str, str], SuccessStats]:
        """Success per (task, ``by``) for one day; ``by`` is ``bus`` or ``meter``."""
        if by not in ("bus", "meter"):
            raise ValueError("breakdown by 'bus' or 'meter'")
        with self._lock:
            rows = self._db.execute(
                f"SELECT task, {by}, state, count(*) FROM slots WHERE day = ? "
                f"GROUP BY task, {by}, state",
                (day.isoformat(),),
            ).fetchall()
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for task, key, state, count in rows:
            counts.setdefault((task, key), {})[state] = count
        return {
            key: SuccessStats(
                expected=sum(c.values()),
                got=c.get("got", 0),
                failed=c.get("failed", 0) + c.get("exhausted", 0),
                pending=c.get("expected", 0),
            )
            for key, c in counts.items()
        }

    def meters(self, task: str) -> dict[str, MeterSummary]:
        """Per meter for ``task``: success, consecutive failures, last success."""
        with self._lock:
            rows = self._db.execute(
                "SELECT meter, max(bus), state, count(*), "
                "max(CASE WHEN state = 'got' THEN slot END), max(got_at) "
                "FROM slots WHERE task = ? GROUP BY meter, state",
                (task,),
            ).fetchall()
            streaks = dict(
                self._db.execute(
                    "SELECT meter, count(*) FROM slots AS s WHERE task = ? "
                    "AND state IN ('failed', 'exhausted') AND slot > coalesce("
                    "(SELECT max(slot) FROM slots AS g WHERE g.task = s.task "
                    "AND g.meter = s.meter AND g.state = 'got'), '') GROUP BY meter",
                    (task,),
                ).fetchall()
            )
        counts: dict[str, dict[str, int]] = {}
        buses: dict[str, str] = {}
        last: dict[str, tuple[str | None, str | None]] = {}
        for meter, bus, state, count, got_slot, got_at in rows:
            counts.setdefault(meter, {})[state] = count
            buses[meter] = bus
            if state == "got":
                last[meter] = (got_slot, got_at)
        out: dict[str, MeterSummary] = {}
        for meter, c in counts.items():
            got_slot, got_at = last.get(meter, (None, None))
            out[meter] = MeterSummary(
                meter=meter,
                bus=buses[meter],
                stats=SuccessStats(
                    expected=sum(c.values()),
                    got=c.get("got", 0),
                    failed=c.get("failed", 0) + c.get("exhausted", 0),
                    pending=c.get("expected", 0),
                ),
                consecutive_failures=streaks.get(meter, 0),
                last_got_slot=_parse(got_slot) if got_slot else None,
                last_got_at=_parse(got_at) if got_at else None,
            )
        return out

    def days(self) -> list[date]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT day FROM slots ORDER BY day").fetchall()
        return [date.fromisoformat(row[0]) for row in rows]

    # ------------------------------------------------------------ task state

    def last_slot(self, task: str) -> datetime | None:
        """The newest slot the schedule has completed a pass for (survives restarts)."""
        with self._lock:
            row = self._db.execute(
                "SELECT last_slot FROM task_state WHERE task = ?", (task,)
            ).fetchone()
        return _parse(row[0]) if row and row[0] else None

    def last_run(self, task: str) -> datetime | None:
        with self._lock:
            row = self._db.execute(
                "SELECT last_run_at FROM task_state WHERE task = ?", (task,)
            ).fetchone()
        return _parse(row[0]) if row and row[0] else None

    def completed(self, task: str, slot: datetime | None, at: datetime) -> None:
        """Record a finished pass; ``last_slot`` only moves forward."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO task_state (task, last_slot, last_run_at) VALUES (?, ?, ?) "
                "ON CONFLICT (task) DO UPDATE SET last_run_at = excluded.last_run_at, "
                "last_slot = CASE WHEN excluded.last_slot IS NOT NULL AND "
                "(task_state.last_slot IS NULL OR excluded.last_slot > task_state.last_slot) "
                "THEN excluded.last_slot ELSE task_state.last_slot END",
                (task, slot_text(slot) if slot else None, slot_text(at)),
            )

    # ------------------------------------------------------------ event counters

    def event_mark(self, meter: str, kind: str) -> tuple[int | None, datetime | None]:
        """The meter's event counter and newest event start already collected."""
        with self._lock:
            row = self._db.execute(
                "SELECT total, last_start FROM event_marks WHERE meter = ? AND kind = ?",
                (meter, kind),
            ).fetchone()
        if not row:
            return None, None
        return row[0], _parse(row[1]) if row[1] else None

    def set_event_mark(
        self, meter: str, kind: str, total: int | None, last_start: datetime | None
    ) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT INTO event_marks (meter, kind, total, last_start) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (meter, kind) DO UPDATE SET total = excluded.total, "
                "last_start = excluded.last_start",
                (meter, kind, total, slot_text(last_start) if last_start else None),
            )

    # ------------------------------------------------------------ clock syncs

    def record_sync(
        self,
        meter: str,
        at: datetime,
        offset_before_s: float | None,
        offset_after_s: float | None,
        method: str,
    ) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT INTO clock_syncs (meter, day, at, offset_before_s, offset_after_s, "
                "method) VALUES (?, ?, ?, ?, ?, ?)",
                (meter, self._day(at), slot_text(at), offset_before_s, offset_after_s, method),
            )

    def syncs_on(self, meter: str, day: date) -> int:
        """Clock syncs of ``meter`` on local ``day`` (for the daily cap)."""
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM clock_syncs WHERE meter = ? AND day = ?",
                (meter, day.isoformat()),
            ).fetchone()
        return int(row[0])

    def defer_sync(self, meter: str, bus: str, offset_s: float, since: datetime) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT INTO clock_pending (meter, bus, offset_s, since) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (meter) DO UPDATE SET offset_s = excluded.offset_s",
                (meter, bus, offset_s, slot_text(since)),
            )

    def pending_syncs(self) -> dict[str, tuple[str, float, datetime]]:
        """Deferred syncs: meter → (bus, offset seen, since)."""
        with self._lock:
            rows = self._db.execute("SELECT meter, bus, offset_s, since FROM clock_pending")
            return {row[0]: (row[1], row[2], _parse(row[3])) for row in rows.fetchall()}

    def clear_pending_sync(self, meter: str) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM clock_pending WHERE meter = ?", (meter,))

    # ------------------------------------------------------------ daily publication

    def mark_published(self, what: str, day: date) -> bool:
        """True the first time ``what`` is published for ``day``."""
        with self.transaction():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO published (what, day) VALUES (?, ?)",
                (what, day.isoformat()),
            )
            return cursor.rowcount == 1

    def is_published(self, what: str, day: date) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM published WHERE what = ? AND day = ?", (what, day.isoformat())
            ).fetchone()
        return row is not None

    def prune(self, before: datetime) -> int:
        """Forget slots, syncs and publications older than ``before``; rows deleted.

        The ledger is bookkeeping, not data: the readings stay in the log under its own
        retention rules. Open slots that old were exhausted long ago.
        """
        cut = slot_text(before)
        day = self._day(before)
        with self.transaction():
            deleted = self._db.execute("DELETE FROM slots WHERE slot < ?", (cut,)).rowcount
            deleted += self._db.execute("DELETE FROM clock_syncs WHERE at < ?", (cut,)).rowcount
            deleted += self._db.execute("DELETE FROM published WHERE day < ?", (day,)).rowcount
        return deleted
