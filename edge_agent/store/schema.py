"""The log's schema and its migrations, versioned by ``PRAGMA user_version``.

One ``records`` table with typed columns holds every replicated record (reading, event,
statistic): the seq is its primary key (SQLite's 64-bit rowid), so pending/ack/resend are
range scans on the primary key and the hot write path is one insert. A partial unique
index gives readings their natural key. Raw frames live apart: no seq, never replicated,
first to go. ``meta`` keeps the counters that must move in the same transaction as the
rows they count.

Version 2 stores times as integer microseconds since 1970 UTC, the record type, kind and
source as small integers (:data:`~edge_agent.store.records.TYPE_CODES` …) and a reading's
OBIS code as its index in the frozen :data:`~edge_agent.store.obis_codes.OBIS_CODES`: a
reading and its index entry take about half the bytes of version 1's text, and the bytes
written per day are what wears a gateway's flash (edge.md D1.6). The views
``records_text`` and ``raw_frames_text`` show both tables with names and ISO times for a
technician at the ``sqlite3`` prompt.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Final

from edge_agent.store.errors import SchemaVersionError
from edge_agent.store.obis_codes import OBIS_CODES, OBIS_INDEX
from edge_agent.store.records import KIND_CODES, SOURCE_CODES, TYPE_CODES, text_micros

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "TABLE_COLUMNS",
    "migrate",
    "sync_obis_codes",
    "upgrade_row",
]

_V1: Final = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value ANY NOT NULL
) STRICT;

CREATE TABLE records (
    seq         INTEGER PRIMARY KEY,        -- assigned from meta.last_seq, never reused
    type        TEXT NOT NULL CHECK (type IN ('reading', 'event', 'statistic')),
    kind        TEXT NOT NULL
                CHECK (kind IN ('daily', 'monthly', 'curve', 'instant', 'event', 'clock')),
    created_at  TEXT NOT NULL,              -- gateway UTC when stored (or corrected)
    data_ts     TEXT NOT NULL,              -- reading: meter period; event/statistic: when
    meter       TEXT,                       -- reading, meter event; NULL for the gateway
    obis        TEXT,                       -- reading
    code        TEXT,                       -- event
    name        TEXT,                       -- statistic
    value       TEXT,                       -- reading, statistic: Decimal as text
    unit        TEXT,                       -- reading
    read_ts     TEXT,                       -- reading: gateway UTC when read
    source      TEXT CHECK (source IN ('scheduled', 'backfill', 'on_demand', 'event')),
    quality     TEXT,                       -- reading
    detail      TEXT,                       -- event detail / statistic labels, JSON
    corrections INTEGER NOT NULL DEFAULT 0, -- reading: times the value changed
    CHECK (type != 'reading' OR (meter IS NOT NULL AND obis IS NOT NULL
                                 AND value IS NOT NULL AND source IS NOT NULL))
) STRICT;

-- Time first: a bus cycle's readings share a period, so they land on the same few index
-- pages instead of one page per meter (a quarter of the bytes written per day; D1.6).
CREATE UNIQUE INDEX readings_natural_key ON records (data_ts, meter, obis)
    WHERE type = 'reading';
CREATE INDEX records_kind_age ON records (kind, data_ts);

-- Frames arrive in time order (stamped as seen on the line), so id order is age order:
-- no index on "at" (flash wear: edge.md D1.6), and the frame is bytes, not hex text.
CREATE TABLE raw_frames (
    id        INTEGER PRIMARY KEY,
    bus       TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('tx', 'rx')),
    frame     BLOB NOT NULL,
    at        TEXT NOT NULL
) STRICT;

CREATE TABLE evictions (
    kind  TEXT PRIMARY KEY,
    count INTEGER NOT NULL
) STRICT;

INSERT INTO meta (key, value) VALUES
    ('last_seq', 0), ('acked_seq', 0), ('corrections', 0);
"""


def _case(column: str, codes: dict[str, int]) -> str:
    arms = " ".join(f"WHEN '{name}' THEN {code}" for name, code in codes.items())
    return f"CASE {column} {arms} END"


def _names(column: str, codes: dict[str, int]) -> str:
    arms = " ".join(f"WHEN {code} THEN '{name}'" for name, code in codes.items())
    return f"CASE {column} {arms} END"


def _iso(column: str) -> str:
    return f"strftime('%Y-%m-%dT%H:%M:%fZ', {column} / 1000000.0, 'unixepoch')"


_V2_RECORDS: Final = f"""
CREATE TABLE records (
    seq         INTEGER PRIMARY KEY,        -- assigned from meta.last_seq, never reused
    type        INTEGER NOT NULL CHECK (type BETWEEN 0 AND 2),   -- TYPE_CODES
    kind        INTEGER NOT NULL CHECK (kind BETWEEN 0 AND 5),   -- KIND_CODES
    created_at  INTEGER NOT NULL,           -- gateway UTC when stored (µs since 1970)
    data_ts     INTEGER NOT NULL,           -- reading: meter period; event/statistic: when
    meter       TEXT,                       -- reading, meter event; NULL for the gateway
    mrank       INTEGER,                    -- reading: meters.rank of its meter
    obis        ANY,                        -- reading: index in OBIS_CODES (else text)
    code        TEXT,                       -- event
    name        TEXT,                       -- statistic
    value       TEXT,                       -- reading, statistic: Decimal as text
    unit        TEXT,                       -- reading
    read_ts     INTEGER,                    -- reading: gateway UTC when read (µs)
    source      INTEGER CHECK (source BETWEEN 0 AND 3),          -- SOURCE_CODES
    quality     TEXT,                       -- reading
    detail      TEXT,                       -- event detail / statistic labels, JSON
    corrections INTEGER NOT NULL DEFAULT 0, -- reading: times the value changed
    CHECK (type != 0 OR (meter IS NOT NULL AND mrank IS NOT NULL AND obis IS NOT NULL
                         AND value IS NOT NULL AND source IS NOT NULL))
) STRICT;

-- A meter's rank: numbered in the order the collector first lists them, bus by bus, so
-- one bus's meters sit together in the natural key below.
CREATE TABLE meters (
    rank  INTEGER PRIMARY KEY,
    meter TEXT NOT NULL UNIQUE
) STRICT;

-- Time first: a bus cycle's readings share a period, so they land on the same few index
-- pages instead of one page per meter; then the rank, so the cycles of eight buses do
-- not interleave within a period and each commit touches its own pages (D1.6).
CREATE UNIQUE INDEX readings_natural_key ON records (data_ts, mrank, obis) WHERE type = 0;
-- Retention and eviction walk readings by that index (its first column is their age) and
-- events and statistics (a few per bus cycle) by this one: no index over every row by
-- kind, which each commit would have to update as well.
CREATE INDEX records_other_age ON records (data_ts) WHERE type != 0;

-- Frames arrive in time order (stamped as seen on the line), so id order is age order:
-- no index on "at". Only frames of exchanges that went wrong are kept (edge-storage.md).
CREATE TABLE raw_frames (
    id        INTEGER PRIMARY KEY,
    bus       TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('tx', 'rx')),
    frame     BLOB NOT NULL,
    at        INTEGER NOT NULL,             -- µs since 1970 UTC
    meter     TEXT,                         -- the meter the exchange was with
    note      TEXT                          -- how the exchange went (outcome: detail)
) STRICT;

-- OBIS_CODES for a reader at the sqlite3 prompt (the code's tuple is the authority; the
-- agent adds the codes a newer version appended when it opens the file).
CREATE TABLE obis_codes (
    code INTEGER PRIMARY KEY,
    obis TEXT NOT NULL
) STRICT;

CREATE VIEW records_text AS
SELECT seq, {_names("type", TYPE_CODES)} AS type, {_names("kind", KIND_CODES)} AS kind,
       {_iso("created_at")} AS created_at, {_iso("data_ts")} AS data_ts, meter,
       coalesce((SELECT o.obis FROM obis_codes AS o WHERE o.code = r.obis), r.obis) AS obis,
       code, name, value, unit, {_iso("read_ts")} AS read_ts,
       {_names("source", SOURCE_CODES)} AS source, quality, detail, corrections
FROM records AS r;

CREATE VIEW raw_frames_text AS
SELECT id, bus, direction, upper(hex(frame)) AS frame, {_iso("at")} AS at, meter, note
FROM raw_frames;
"""

#: Rows moved per transaction when version 1 becomes 2: each chunk is one bounded commit
#: (a bounded -wal on flash), and a crash or power cut in the middle resumes where it was.
MIGRATION_CHUNK: Final = 20_000


def _v1_time(column: str) -> str:
    """SQL turning version 1's ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` into microseconds."""
    return (
        f"(CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000 "
        f"+ CAST(substr({column}, 21, 6) AS INTEGER))"
    )


_RANK_METERS: Final = """
INSERT OR IGNORE INTO meters (meter)
SELECT meter FROM records_v1 WHERE type = 'reading' AND seq > ? AND seq <= ? ORDER BY seq
"""
_MOVE_RECORDS: Final = f"""
INSERT INTO records (seq, type, kind, created_at, data_ts, meter, mrank, obis, code, name,
                     value, unit, read_ts, source, quality, detail, corrections)
SELECT seq, {_case("type", TYPE_CODES)}, {_case("kind", KIND_CODES)},
       {_v1_time("created_at")}, {_v1_time("data_ts")}, r.meter,
       CASE WHEN type = 'reading' THEN (SELECT rank FROM meters AS m WHERE m.meter = r.meter)
       END,
       obis_code(obis), code, name, value, unit,
       CASE WHEN read_ts IS NULL THEN NULL ELSE {_v1_time("read_ts")} END,
       {_case("source", SOURCE_CODES)}, quality, detail, corrections
FROM records_v1 AS r WHERE seq > ? AND seq <= ?
"""
_MOVE_FRAMES: Final = f"""
INSERT INTO raw_frames (id, bus, direction, frame, at)
SELECT id, bus, direction, frame, {_v1_time("at")} FROM raw_frames_v1 WHERE id > ? AND id <= ?
"""


def _obis_code(obis: str | None) -> int | str | None:
    """What the log stores for an OBIS code: its index in OBIS_CODES, else the text."""
    return obis if obis is None else OBIS_INDEX.get(obis, obis)


def sync_obis_codes(conn: sqlite3.Connection) -> None:
    """Give the ``obis_codes`` table (for the ``records_text`` view) the codes it lacks; in
    the caller's transaction (or its own, when there is none)."""
    (known,) = conn.execute("SELECT count(*) FROM obis_codes").fetchone()
    if known < len(OBIS_CODES):
        conn.executemany(
            "INSERT OR IGNORE INTO obis_codes (code, obis) VALUES (?, ?)",
            list(enumerate(OBIS_CODES))[known:],
        )


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _in_transaction(conn: sqlite3.Connection, step: Callable[[], None]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        step()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _to_v1(conn: sqlite3.Connection) -> None:
    def create() -> None:
        for statement in _V1.split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")

    _in_transaction(conn, create)


def _to_v2(conn: sqlite3.Connection) -> None:
    """Version 1 → 2 in place, in steps that each commit and that resume after a crash.

    1. The v1 tables are renamed ``records_v1`` / ``raw_frames_v1`` (their indexes
       dropped) and the v2 tables created empty.
    2. Rows are copied in seq (id) order, :data:`MIGRATION_CHUNK` per transaction,
       converted; the new table's highest seq says where an interrupted run stopped.
    3. The v1 tables are dropped and ``user_version`` becomes 2, in one transaction.

    A file left between steps (the agent was killed) is still version 1 with
    ``records_v1`` present; opening it again carries on from where it stopped. The old
    rows are never rewritten (deleting them chunk by chunk would write every page of the
    old table once more): the file holds both copies until step 3.
    """
    conn.create_function("obis_code", 1, _obis_code, deterministic=True)
    if "records_v1" not in _tables(conn):

        def set_aside() -> None:
            conn.execute("DROP INDEX readings_natural_key")
            conn.execute("DROP INDEX records_kind_age")
            conn.execute("ALTER TABLE records RENAME TO records_v1")
            conn.execute("ALTER TABLE raw_frames RENAME TO raw_frames_v1")
            for statement in _V2_RECORDS.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            sync_obis_codes(conn)

        _in_transaction(conn, set_aside)
    for old, new, key, moves in (
        ("records_v1", "records", "seq", (_RANK_METERS, _MOVE_RECORDS)),
        ("raw_frames_v1", "raw_frames", "id", (_MOVE_FRAMES,)),
    ):
        # where a previous, interrupted run stopped: the new table's highest key
        (done,) = conn.execute(f"SELECT coalesce(max({key}), -1) FROM {new}").fetchone()
        while True:
            row = conn.execute(
                f"SELECT {key} FROM {old} WHERE {key} > ? ORDER BY {key} LIMIT 1 OFFSET ?",
                (done, MIGRATION_CHUNK - 1),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    f"SELECT max({key}) FROM {old} WHERE {key} > ?", (done,)
                ).fetchone()
            bound = row[0]
            if bound is None:
                break

            def move_chunk(
                moves: tuple[str, ...] = moves, done: int = done, bound: int = bound
            ) -> None:
                for move in moves:
                    conn.execute(move, (done, bound))

            _in_transaction(conn, move_chunk)
            done = bound

    def finish() -> None:
        conn.execute("DROP TABLE records_v1")
        conn.execute("DROP TABLE raw_frames_v1")
        conn.execute("PRAGMA user_version = 2")

    # The old tables' pages go to the free list and take the new records of the next days;
    # they are handed back to the file system only when the quota needs them (moving every
    # new page to the front of the file now would write the whole log twice more).
    _in_transaction(conn, finish)


#: ``MIGRATIONS[n]`` takes a file from user_version ``n`` to ``n + 1``; add, never edit.
#: Each step runs its own transaction(s) on an autocommit connection; the last one sets
#: ``user_version``, so an interrupted step runs again (and must cope) at the next open.
MIGRATIONS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {0: _to_v1, 1: _to_v2}
SCHEMA_VERSION: Final = len(MIGRATIONS)

#: Columns per table, in the order salvage copies them.
TABLE_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "meta": ("key", "value"),
    "meters": ("rank", "meter"),
    "records": (
        "seq",
        "type",
        "kind",
        "created_at",
        "data_ts",
        "meter",
        "mrank",
        "obis",
        "code",
        "name",
        "value",
        "unit",
        "read_ts",
        "source",
        "quality",
        "detail",
        "corrections",
    ),
    "raw_frames": ("id", "bus", "direction", "frame", "at", "meter", "note"),
    "evictions": ("kind", "count"),
}

_TIME_COLUMNS: Final = frozenset({"created_at", "data_ts", "read_ts", "at"})
_CODES: Final = {"type": TYPE_CODES, "kind": KIND_CODES, "source": SOURCE_CODES}


def upgrade_row(table: str, columns: list[str], row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row read from an older file in the current form (salvage copies by column name
    whatever version the damaged file had): text times become microseconds, type, kind
    and source names their codes. Values already in the current form pass unchanged; a
    value that cannot be converted raises ``ValueError`` or ``KeyError``."""
    if table not in ("records", "raw_frames"):
        return row
    out = list(row)
    for index, column in enumerate(columns):
        value = out[index]
        if not isinstance(value, str):
            continue
        if column in _TIME_COLUMNS:
            out[index] = text_micros(value)
        elif table == "records" and column in _CODES:
            out[index] = _CODES[column][value]
        elif table == "records" and column == "obis":
            out[index] = _obis_code(value)
    return tuple(out)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file to :data:`SCHEMA_VERSION`.

    ``conn`` must be in autocommit mode (``isolation_level=None``); returns the version the
    file had before.
    """
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"log schema version {found} is newer than this agent's {SCHEMA_VERSION}; "
            "upgrade the agent (the file was left untouched)"
        )
    for version in range(found, SCHEMA_VERSION):
        MIGRATIONS[version](conn)
    return int(found)
