"""The log's schema and its migrations, versioned by ``PRAGMA user_version``.

One ``records`` table with typed columns holds every replicated record (reading, event,
statistic): the seq is its primary key (SQLite's 64-bit rowid), so pending/ack/resend are
range scans on the primary key and the hot write path is one insert. A partial unique
index gives readings their natural key. Raw frames live apart: no seq, never replicated,
first to go. ``meta`` keeps the counters that must move in the same transaction as the
rows they count.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Final

from edge_agent.store.errors import SchemaVersionError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "TABLE_COLUMNS", "migrate"]

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

#: Columns per table, in the order salvage copies them.
TABLE_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "meta": ("key", "value"),
    "records": (
        "seq",
        "type",
        "kind",
        "created_at",
        "data_ts",
        "meter",
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
    "raw_frames": ("id", "bus", "direction", "frame", "at"),
    "evictions": ("kind", "count"),
}


def _to_v1(conn: sqlite3.Connection) -> None:
    for statement in _V1.split(";\n"):
        if statement.strip():
            conn.execute(statement)


#: ``MIGRATIONS[n]`` takes a file from user_version ``n`` to ``n + 1``; add, never edit.
MIGRATIONS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {0: _to_v1}
SCHEMA_VERSION: Final = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file to :data:`SCHEMA_VERSION`, each step in its own transaction.

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
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version](conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return int(found)
