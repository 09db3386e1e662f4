"""The expected-slot ledger (the 补抄 file, in SQLite): what should have been read, and what was.

For every (task, meter, slot) the ledger records whether the slot was *got* or *failed*
(reason, attempts); a failed slot the backfill window has passed becomes *exhausted* (an
event in the log says so). A slot is the instant the data belongs to: the freeze instant
for daily and monthly frozen records (local 00:00, which closes the previous day / month),
the interval point for curves, the run instant for events and clock checks. *Expected*
marks a slot that is due and was not attempted: the collector writes it for the meters a
pass did not reach (the agent was stopping), and :meth:`Ledger.expect` can be called for
any slot.

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

On disk (version 1, ``PRAGMA user_version``) a slot row is about 35 bytes: times in seconds,
task, state and source as small codes, the meter and bus by number (``meters``, ``buses``),
keyed time first — ``(slot, task, meter number)`` — with meters numbered bus by bus
(:meth:`Ledger.register_meters`), so the rows one bus cycle marks sit together on a few
pages. Two thousand meters read hourly for curves and events make a hundred thousand slots
a day, and the pages each commit rewrites are what wears the flash (edge.md D1.6). The
ledger of the previous version (text columns, keyed meter first) is converted in place
when the writer opens it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

__all__ = [
    "STATES",
    "Ledger",
    "LedgerFormatError",
    "MeterSummary",
    "Slot",
    "SuccessStats",
    "slot_text",
]

STATES = ("expected", "got", "failed", "exhausted")
_STATE_CODES: Final = {name: code for code, name in enumerate(STATES)}
_EXPECTED, _GOT, _FAILED, _EXHAUSTED = range(4)
#: Task and source names stored as small codes; any other name is stored as text.
_TASK_CODES: Final = {"daily_frozen": 0, "monthly_frozen": 1, "curve": 2, "events": 3}
_SOURCE_CODES: Final = {"": 0, "scheduled": 1, "backfill": 2, "on_demand": 3, "event": 4}
_TASK_NAMES: Final = {code: name for name, code in _TASK_CODES.items()}
_SOURCE_NAMES: Final = {code: name for name, code in _SOURCE_CODES.items()}
_VERSION: Final = 1
#: Old-format rows converted per transaction when the ledger is upgraded.
MIGRATION_CHUNK: Final = 20_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meters (
    mid   INTEGER PRIMARY KEY,
    meter TEXT NOT NULL UNIQUE
) STRICT;
CREATE TABLE IF NOT EXISTS buses (
    bid INTEGER PRIMARY KEY,
    bus TEXT NOT NULL UNIQUE
) STRICT;
CREATE TABLE IF NOT EXISTS slots (
    slot        INTEGER NOT NULL,   -- UTC seconds since 1970
    task        ANY NOT NULL,       -- _TASK_CODES (other tasks by name)
    mid         INTEGER NOT NULL,   -- meters.mid
    bid         INTEGER NOT NULL,   -- buses.bid: the bus the slot was first marked on
    state       INTEGER NOT NULL,   -- index in STATES
    reason      TEXT NOT NULL DEFAULT '',
    attempts    INTEGER NOT NULL DEFAULT 0,
    source      ANY NOT NULL,       -- _SOURCE_CODES (other sources by name)
    expected_at INTEGER NOT NULL,   -- when the row was first written
    updated_at  INTEGER NOT NULL,   -- the last change; when got, the got time
    PRIMARY KEY (slot, task, mid)
) WITHOUT ROWID, STRICT;
-- Only open slots (expected, failed) are in it: what 补抄 looks for.
CREATE INDEX IF NOT EXISTS slots_open ON slots (task, slot) WHERE state IN (0, 2);
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

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class LedgerFormatError(RuntimeError):
    """A read-only view was asked of a ledger in the previous version's format."""


def slot_text(instant: datetime) -> str:
    """The ledger's key text of an aware instant: fixed-width UTC, sorts as time."""
    if instant.tzinfo is None:
        raise ValueError(f"slot {instant!r} must be an aware datetime (UTC)")
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _now_text() -> str:
    return slot_text(datetime.now(UTC))


def _seconds(instant: datetime) -> int:
    """An aware instant as stored: whole seconds since 1970 UTC."""
    if instant.tzinfo is None:
        raise ValueError(f"slot {instant!r} must be an aware datetime (UTC)")
    delta = instant - _EPOCH
    return delta.days * 86_400 + delta.seconds


def _instant(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


def _now() -> int:
    return _seconds(datetime.now(UTC))


def _code(codes: dict[str, int], name: str) -> int | str:
    return codes.get(name, name)


def _name(names: dict[int, str], value: int | str) -> str:
    return value if isinstance(value, str) else names[value]


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

    @classmethod
    def of(cls, counts: dict[int, int]) -> SuccessStats:
        """From row counts per state code."""
        return cls(
            expected=sum(counts.values()),
            got=counts.get(_GOT, 0),
            failed=counts.get(_FAILED, 0) + counts.get(_EXHAUSTED, 0),
            pending=counts.get(_EXPECTED, 0),
        )


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


_TASK_ORDER: Final = (
    "CASE s.task "
    + " ".join(f"WHEN {code} THEN '{name}'" for name, code in _TASK_CODES.items())
    + " ELSE s.task END"
)
_SLOT_SELECT: Final = (
    "SELECT s.task, m.meter, s.slot, b.bus, s.state, s.reason, s.attempts, s.source, "
    "s.expected_at, s.updated_at FROM slots AS s "
    "JOIN meters AS m ON m.mid = s.mid JOIN buses AS b ON b.bid = s.bid"
)
#: A mark: insert the row in its state, or move an existing row (``{guard}``: from which
#: states). One statement and one row write per slot: the collector no longer writes every
#: slot as expected first and marks it after (half the bytes per pass).
_UPSERT: Final = (
    "INSERT INTO slots (slot, task, mid, bid, state, reason, attempts, source, expected_at, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?) "
    "ON CONFLICT (slot, task, mid) DO UPDATE SET state = excluded.state, "
    "reason = excluded.reason, attempts = attempts + 1, source = excluded.source, "
    "updated_at = excluded.updated_at{guard}"
)
_MARK_GOT: Final = _UPSERT.format(guard="")
_MARK_FAILED: Final = _UPSERT.format(guard=" WHERE state IN (0, 2)")
_MARK_UNTRIED: Final = (
    "INSERT INTO slots (slot, task, mid, bid, state, reason, attempts, source, expected_at, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT (slot, task, mid) DO NOTHING"
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
        self._mids: dict[str, int] = {}
        self._bids: dict[str, int] = {}
        if readonly:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA query_only = ON")
            if _old_format(self._db):
                self._db.close()
                raise LedgerFormatError(
                    f"the ledger {self.path} is in the previous version's format; start the "
                    "agent once (edge-agent run) to convert it, then ask again"
                )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
            self._db.execute("PRAGMA journal_mode = WAL")
            # NORMAL, not FULL: a ledger row lost to power failure only makes the
            # collector read a slot again; the readings themselves are in the FULL log.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA journal_size_limit = 4194304")  # bounded -wal on flash
            if _old_format(self._db):
                _convert(self._db)
            else:
                self._db.executescript(_SCHEMA)
                self._db.execute(f"PRAGMA user_version = {_VERSION}")
        self._load_names()
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
                self._new_names: dict[tuple[str, str], int] = {}
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("ROLLBACK")
                    self._forget_new_names()
                raise
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("COMMIT")

    def _day(self, slot: datetime) -> str:
        return slot.astimezone(self.zone).date().isoformat()

    def _local_day(self, seconds: int) -> date:
        return _instant(seconds).astimezone(self.zone).date()

    def _day_range(self, day: date) -> tuple[int, int]:
        """Seconds of local midnight of ``day`` and of the next day."""
        start = datetime.combine(day, time(0), tzinfo=self.zone)
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.zone)
        return _seconds(start), _seconds(end)

    # ------------------------------------------------------------ meters and buses

    def _load_names(self) -> None:
        with self._lock:
            self._mids = dict(self._db.execute("SELECT meter, mid FROM meters"))
            self._bids = dict(self._db.execute("SELECT bus, bid FROM buses"))

    def _forget_new_names(self) -> None:
        for (table, name), _ in getattr(self, "_new_names", {}).items():
            (self._mids if table == "meters" else self._bids).pop(name, None)
        self._new_names = {}

    def _mid(self, meter: str) -> int:
        mid = self._mids.get(meter)
        if mid is None:
            mid = self._new_id("meters", "mid", "meter", meter)
            self._mids[meter] = mid
        return mid

    def _bid(self, bus: str) -> int:
        bid = self._bids.get(bus)
        if bid is None:
            bid = self._new_id("buses", "bid", "bus", bus)
            self._bids[bus] = bid
        return bid

    def _new_id(self, table: str, key: str, column: str, name: str) -> int:
        """Number a new meter or bus (inside the caller's transaction)."""
        (number,) = self._db.execute(
            f"INSERT INTO {table} ({column}) VALUES (?) RETURNING {key}", (name,)
        ).fetchone()
        self._new_names[(table, name)] = number
        return int(number)

    def register_meters(self, meters: Sequence[tuple[str, str]]) -> int:
        """Number the meters not yet known, in the order given (``(meter, bus)`` pairs);
        returns how many were new. The collector lists every pass's meters bus by bus
        first, so one bus's slots sit together and a cycle's marks rewrite few pages."""
        new = [meter for meter, _ in meters if meter not in self._mids]
        if not new:
            return 0
        with self.transaction():
            for meter in dict.fromkeys(new):
                self._mid(meter)
        return len(new)

    # ------------------------------------------------------------ marks

    def expect(self, task: str, meter: str, slot: datetime, *, bus: str = "") -> bool:
        """Record that ``slot`` should be read; True if it was new (an existing row stays)."""
        now = _now()
        key = _seconds(slot)
        with self.transaction():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO slots (slot, task, mid, bid, state, source, "
                "expected_at, updated_at) VALUES (?, ?, ?, ?, 0, 0, ?, ?)",
                (key, _code(_TASK_CODES, task), self._mid(meter), self._bid(bus), now, now),
            )
            return cursor.rowcount == 1

    def got(
        self, task: str, meter: str, slot: datetime, *, source: str = "scheduled", bus: str = ""
    ) -> None:
        """The slot's data is in the log (call after the log's batch committed)."""
        now = _now()
        with self.transaction():
            self._db.execute(
                _MARK_GOT,
                (_seconds(slot), _code(_TASK_CODES, task), self._mid(meter), self._bid(bus),
                 _GOT, "", _code(_SOURCE_CODES, source), now, now),
            )  # fmt: skip

    def failed(
        self,
        task: str,
        meter: str,
        slot: datetime,
        reason: str,
        *,
        source: str = "scheduled",
        bus: str = "",
        attempted: bool = True,
    ) -> None:
        """An attempt gave no data; a slot already got stays got.

        ``attempted=False``: the meter was not even asked (the bus master has it in
        quarantine). A new slot is written failed with no attempt; a slot already in the
        ledger is left as it is — 补抄 of a dead meter would otherwise rewrite every open
        slot of it every hour for nothing."""
        now = _now()
        sql = _MARK_FAILED if attempted else _MARK_UNTRIED
        with self.transaction():
            self._db.execute(
                sql,
                (_seconds(slot), _code(_TASK_CODES, task), self._mid(meter), self._bid(bus),
                 _FAILED, reason, _code(_SOURCE_CODES, source), now, now),
            )  # fmt: skip

    def _key(self, task: str, meter: str, slot: datetime) -> tuple[int, int | str, int] | None:
        mid = self._mids.get(meter)
        return None if mid is None else (_seconds(slot), _code(_TASK_CODES, task), mid)

    def exhaust(self, task: str, meter: str, slot: datetime, reason: str) -> None:
        """Give the slot up: the backfill window has passed it."""
        key = self._key(task, meter, slot)
        if key is None:
            return
        with self.transaction():
            self._db.execute(
                "UPDATE slots SET state = 3, reason = ?, updated_at = ? "
                "WHERE slot = ? AND task = ? AND mid = ? AND state IN (0, 2)",
                (reason, _now(), *key),
            )

    def forget(self, task: str, meter: str, slot: datetime) -> None:
        """Drop an expected slot the meter turned out not to keep (protocol/model lacks
        the data): it is not a failure and must not count against the success rate."""
        key = self._key(task, meter, slot)
        if key is None:
            return
        with self.transaction():
            self._db.execute(
                "DELETE FROM slots WHERE slot = ? AND task = ? AND mid = ? AND state = 0", key
            )

    # ------------------------------------------------------------ queries

    def _row(self, row: tuple[Any, ...]) -> Slot:
        task, meter, slot, bus, state, reason, attempts, source, expected_at, updated_at = row
        return Slot(
            task=_name(_TASK_NAMES, task),
            meter=meter,
            slot=_instant(slot),
            day=self._local_day(slot),
            bus=bus,
            state=STATES[state],
            reason=reason,
            attempts=attempts,
            source=_name(_SOURCE_NAMES, source),
            expected_at=_instant(expected_at),
            updated_at=_instant(updated_at),
            got_at=_instant(updated_at) if state == _GOT else None,
        )

    def slot(self, task: str, meter: str, slot: datetime) -> Slot | None:
        key = self._key(task, meter, slot)
        if key is None:
            return None
        with self._lock:
            row = self._db.execute(
                f"{_SLOT_SELECT} WHERE s.slot = ? AND s.task = ? AND s.mid = ?", key
            ).fetchone()
        return self._row(row) if row else None

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
            where.append("s.slot < ?")
            params.append(_seconds(before))
        if since is not None:
            where.append("s.slot >= ?")
            params.append(_seconds(since))
        sql = _SLOT_SELECT
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY s.slot, {_TASK_ORDER}, m.meter"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [self._row(row) for row in rows]

    def _where(
        self,
        task: str | None,
        meter: str | None,
        day: date | None,
        state: str | Iterable[str] | None,
        bus: str | None,
    ) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if day is not None:
            where.append("s.slot >= ? AND s.slot < ?")
            params.extend(self._day_range(day))
        if task is not None:
            where.append("s.task = ?")
            params.append(_code(_TASK_CODES, task))
        for column, value, numbers in (("mid", meter, self._mids), ("bid", bus, self._bids)):
            if value is not None:
                where.append(f"s.{column} = ?")
                params.append(numbers.get(value, -1))  # an unknown name matches nothing
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            unknown = set(states) - set(STATES)
            if unknown:
                raise ValueError(f"unknown slot state(s) {sorted(unknown)}; use {STATES}")
            where.append(f"s.state IN ({', '.join('?' * len(states))})")
            params.extend(_STATE_CODES[name] for name in states)
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
        sql = "SELECT s.state, count(*) FROM slots AS s"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " GROUP BY s.state"
        with self._lock:
            counts = dict(self._db.execute(sql, params).fetchall())
        return SuccessStats.of(counts)

    def breakdown(self, day: date, by: str) -> dict[tuple[str, str], SuccessStats]:
        """Success per (task, ``by``) for one day; ``by`` is ``bus`` or ``meter``."""
        if by not in ("bus", "meter"):
            raise ValueError("breakdown by 'bus' or 'meter'")
        join = "buses AS n ON n.bid = s.bid" if by == "bus" else "meters AS n ON n.mid = s.mid"
        with self._lock:
            rows = self._db.execute(
                f"SELECT s.task, n.{by}, s.state, count(*) FROM slots AS s JOIN {join} "
                f"WHERE s.slot >= ? AND s.slot < ? GROUP BY s.task, n.{by}, s.state",
                self._day_range(day),
            ).fetchall()
        counts: dict[tuple[str, str], dict[int, int]] = {}
        for task, key, state, count in rows:
            counts.setdefault((_name(_TASK_NAMES, task), key), {})[state] = count
        return {key: SuccessStats.of(c) for key, c in counts.items()}

    def meters(self, task: str) -> dict[str, MeterSummary]:
        """Per meter for ``task``: success, consecutive failures, last success.

        One pass over the task's slots (every day the ledger keeps), grouped by meter."""
        code = _code(_TASK_CODES, task)
        with self._lock:
            rows = self._db.execute(
                "SELECT m.meter, b.bus, s.state, s.count, s.last_got, s.last_got_at "
                "FROM (SELECT mid, max(bid) AS bid, state, count(*) AS count, "
                "max(CASE WHEN state = 1 THEN slot END) AS last_got, "
                "max(CASE WHEN state = 1 THEN updated_at END) AS last_got_at "
                "FROM slots WHERE task = ? GROUP BY mid, state) AS s "
                "JOIN meters AS m ON m.mid = s.mid JOIN buses AS b ON b.bid = s.bid",
                (code,),
            ).fetchall()
            streaks = dict(
                self._db.execute(
                    "WITH last AS (SELECT mid, max(slot) AS got FROM slots "
                    "WHERE task = ? AND state = 1 GROUP BY mid) "
                    "SELECT m.meter, count(*) FROM slots AS s "
                    "LEFT JOIN last AS l ON l.mid = s.mid JOIN meters AS m ON m.mid = s.mid "
                    "WHERE s.task = ? AND s.state IN (2, 3) AND s.slot > coalesce(l.got, -1) "
                    "GROUP BY s.mid",
                    (code, code),
                ).fetchall()
            )
        counts: dict[str, dict[int, int]] = {}
        buses: dict[str, str] = {}
        last: dict[str, tuple[int | None, int | None]] = {}
        for meter, bus, state, count, got_slot, got_at in rows:
            counts.setdefault(meter, {})[state] = count
            buses[meter] = max(bus, buses.get(meter, bus))
            if state == _GOT:
                last[meter] = (got_slot, got_at)
        out: dict[str, MeterSummary] = {}
        for meter, c in counts.items():
            got_slot, got_at = last.get(meter, (None, None))
            out[meter] = MeterSummary(
                meter=meter,
                bus=buses[meter],
                stats=SuccessStats.of(c),
                consecutive_failures=streaks.get(meter, 0),
                last_got_slot=_instant(got_slot) if got_slot is not None else None,
                last_got_at=_instant(got_at) if got_at is not None else None,
            )
        return out

    def days(self) -> list[date]:
        """The local days that have slots, oldest first (a probe per day between the first
        and the last slot: no scan of the rows)."""
        with self._lock:
            first, last = self._db.execute("SELECT min(slot), max(slot) FROM slots").fetchone()
            if first is None:
                return []
            out: list[date] = []
            day, end = self._local_day(first), self._local_day(last)
            while day <= end:
                start, stop = self._day_range(day)
                found = self._db.execute(
                    "SELECT 1 FROM slots WHERE slot >= ? AND slot < ? LIMIT 1", (start, stop)
                ).fetchone()
                if found:
                    out.append(day)
                day += timedelta(days=1)
        return out

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
            deleted = self._db.execute(
                "DELETE FROM slots WHERE slot < ?", (_seconds(before),)
            ).rowcount
            deleted += self._db.execute("DELETE FROM clock_syncs WHERE at < ?", (cut,)).rowcount
            deleted += self._db.execute("DELETE FROM published WHERE day < ?", (day,)).rowcount
        return deleted


# ------------------------------------------------------------ the previous version's file


def _old_format(db: sqlite3.Connection) -> bool:
    """Whether the file is the previous version's ledger (text slots keyed meter first),
    possibly half converted."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(slots)")}
    aside = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'slots_v0'"
    ).fetchone()
    return "day" in columns or aside is not None


def _convert(db: sqlite3.Connection) -> None:
    """The previous version's ledger → this one, in place, in steps that each commit and
    resume after a crash (like the log's migration):

    1. ``slots`` is renamed ``slots_v0`` (its indexes dropped), the new tables created,
       and every meter numbered bus by bus (the old rows say which bus);
    2. rows move :data:`MIGRATION_CHUNK` at a time, converted and deleted from
       ``slots_v0`` in the same transaction;
    3. ``slots_v0`` is dropped and ``user_version`` set.

    The other tables (task state, event counters, clock syncs, publications) keep their
    form and their rows.
    """

    def step(work: Callable[[], Any]) -> Any:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return result

    def set_aside() -> None:
        db.execute("DROP INDEX IF EXISTS slots_by_state")
        db.execute("DROP INDEX IF EXISTS slots_by_day")
        db.execute("ALTER TABLE slots RENAME TO slots_v0")
        for statement in _SCHEMA.split(";\n"):
            if statement.strip():
                db.execute(statement)
        db.execute(
            "INSERT OR IGNORE INTO meters (meter) SELECT meter FROM slots_v0 "
            "GROUP BY meter ORDER BY max(bus), meter"
        )
        db.execute(
            "INSERT OR IGNORE INTO buses (bus) SELECT DISTINCT bus FROM slots_v0 ORDER BY bus"
        )

    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "slots_v0" not in tables:
        step(set_aside)
    mids = dict(db.execute("SELECT meter, mid FROM meters"))
    bids = dict(db.execute("SELECT bus, bid FROM buses"))

    def move() -> int:
        rows = db.execute(
            "SELECT task, meter, slot, bus, state, reason, attempts, source, expected_at, "
            "updated_at, got_at FROM slots_v0 ORDER BY task, meter, slot LIMIT ?",
            (MIGRATION_CHUNK,),
        ).fetchall()
        converted = []
        for task, meter, slot, bus, state, reason, attempts, source, exp, upd, got in rows:
            updated = got if state == "got" and got else upd
            converted.append(
                (_seconds(_parse(slot)), _code(_TASK_CODES, task), mids[meter], bids[bus],
                 _STATE_CODES[state], reason, attempts, _code(_SOURCE_CODES, source),
                 _seconds(_parse(exp)), _seconds(_parse(updated)))
            )  # fmt: skip
        db.executemany(
            "INSERT OR REPLACE INTO slots (slot, task, mid, bid, state, reason, attempts, "
            "source, expected_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            converted,
        )
        db.executemany(
            "DELETE FROM slots_v0 WHERE task = ? AND meter = ? AND slot = ?",
            [(row[0], row[1], row[2]) for row in rows],
        )
        return len(rows)

    while step(move) == MIGRATION_CHUNK:
        pass

    def finish() -> None:
        db.execute("DROP TABLE slots_v0")
        db.execute(f"PRAGMA user_version = {_VERSION}")

    step(finish)
