"""Quarantine of a corrupt log file and salvage of what can still be read.

A gateway must keep collecting after its flash misbehaved (Kura#2169: a corrupt store
stopped the service). So a file that fails ``PRAGMA integrity_check`` is never repaired in
place: it is moved aside whole (main file with its -wal and -shm, which belong together),
a fresh log is made at the old path, and the readable rows are copied over table by table,
walking each table by rowid so one damaged page costs only the rows on it. Rows of an
older schema version (a file that went bad before its upgrade) are converted on the way.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from edge_agent.store.records import format_utc
from edge_agent.store.schema import TABLE_COLUMNS, upgrade_row

if TYPE_CHECKING:
    from edge_agent.store.log import EdgeLog

__all__ = ["SALVAGE_SEQ_GAP", "quarantine_files", "salvage_into"]

#: When the seq counter itself was lost, new seqs start this far above the highest
#: salvaged one: records central already holds may have been on the lost pages, and a
#: reused seq would make central drop a new record as a duplicate. The gap is a hole in
#: the covered range, which central accepts (see ``Batch``).
SALVAGE_SEQ_GAP: Final = 1_000_000
#: Tables version 1 did not have: their absence from an old file is no loss.
_SINCE_V2: Final = frozenset({"meters"})
#: Give up on a table after this many unreadable regions; the jump doubles each time.
_MAX_SKIPS: Final = 64


def quarantine_files(path: Path, now: datetime) -> Path:
    """Move ``path`` and its -wal/-shm to ``<path>.quarantine-<UTC time>``; the new name."""
    stamp = format_utc(now, "now").replace("-", "").replace(":", "").split(".")[0] + "Z"
    target = path.with_name(f"{path.name}.quarantine-{stamp}")
    suffix = 1
    while target.exists():
        suffix += 1
        target = path.with_name(f"{path.name}.quarantine-{stamp}-{suffix}")
    for extra in ("-wal", "-shm"):
        companion = path.with_name(path.name + extra)
        if companion.exists():
            companion.rename(target.with_name(target.name + extra))
    if path.exists():
        path.rename(target)
    return target


def _walk(conn: sqlite3.Connection, table: str, columns: list[str]) -> Iterator[tuple[Any, ...]]:
    """Every readable row of ``table`` in rowid order, jumping over damaged regions."""
    select = f"SELECT rowid, {', '.join(columns)} FROM {table} WHERE rowid > ? ORDER BY rowid"
    try:
        (top,) = conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()
    except sqlite3.DatabaseError:
        top = None
    last, jump, skips = -(2**63), 1, 0
    while skips <= _MAX_SKIPS:
        try:
            for row in conn.execute(select, (last,)):
                last = row[0]
                jump = 1
                yield row[1:]
            return
        except sqlite3.DatabaseError:
            skips += 1
            last = max(last, 0) + jump
            jump *= 2
            if last >= (top if top is not None else 2**63 - 1):
                return


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """The columns ``table`` has in ``conn`` (none when it is missing or unreadable)."""
    try:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    except sqlite3.DatabaseError:
        return set()


def _ranked(log: EdgeLog, columns: list[str], row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A salvaged reading's rank taken from the new file's meters table: the rank of its
    meter there, given one if it has none."""
    values = dict(zip(columns, row, strict=True))
    meter = values.get("meter")
    if values.get("type") not in ("reading", 0) or not isinstance(meter, str):
        return row
    conn = log._conn
    found = conn.execute("SELECT rank FROM meters WHERE meter = ?", (meter,)).fetchone()
    if found is None:
        found = conn.execute(
            "INSERT INTO meters (meter) VALUES (?) RETURNING rank", (meter,)
        ).fetchone()
    values["mrank"] = found[0]
    return tuple(values[column] for column in columns)


def salvage_into(log: EdgeLog, source: Path, reason: str) -> dict[str, Any]:
    """Copy the readable rows of the quarantined ``source`` into ``log`` (fresh), fix its
    counters, and record a ``store.quarantined`` event; returns that event's detail."""
    salvaged: dict[str, int] = {}
    lost_tables: list[str] = []
    meta: dict[str, int] = {}
    conn = log._conn
    try:
        src = sqlite3.connect(source, isolation_level=None)
    except sqlite3.DatabaseError:
        src = None
    conn.execute("BEGIN IMMEDIATE")
    try:
        ranked = src is not None and "mrank" in _columns(src, "records")
        # a file damaged in the middle of its upgrade still has version-1 rows aside
        sources = [(t, t, c) for t, c in TABLE_COLUMNS.items()] + [
            (f"{t}_v1", t, TABLE_COLUMNS[t])
            for t in ("records", "raw_frames")
            if src is not None and _columns(src, f"{t}_v1")
        ]
        for name, table, wanted in sources:
            if src is None:
                lost_tables.append(table)
                continue
            present = _columns(src, name)
            columns = [c for c in wanted if c in present]
            if not columns:
                if table not in _SINCE_V2 or ranked:
                    lost_tables.append(name)
                continue  # a version-1 file: it never had this table
            # readings get their rank from the new file's meters table (older files have
            # none, and a damaged one may have lost rows)
            out = columns + (["mrank"] if table == "records" and "mrank" not in columns else [])
            marks = ", ".join("?" for _ in out)
            insert = f"INSERT OR IGNORE INTO {table} ({', '.join(out)}) VALUES ({marks})"
            count = 0
            for row in _walk(src, name, columns):
                if table == "meta":
                    with contextlib.suppress(TypeError, ValueError):  # damaged: treat as lost
                        meta[str(row[0])] = int(row[1])
                    continue
                if table == "records":
                    row = _ranked(log, out, (*row, None) if len(out) > len(columns) else row)
                try:
                    conn.execute(insert, upgrade_row(table, out, row))
                except (sqlite3.DatabaseError, ValueError, KeyError):
                    continue  # readable but not valid (a damaged value): not salvageable
                count += 1
            salvaged[table] = salvaged.get(table, 0) + (count if table != "meta" else len(meta))
        (top,) = conn.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()
        gap = 0
        if "last_seq" in meta:
            last_seq = max(meta["last_seq"], top)
        else:
            gap = SALVAGE_SEQ_GAP
            last_seq = top + gap
        acked = min(meta.get("acked_seq", 0), last_seq)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (last_seq,))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'acked_seq'", (acked,))
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'corrections'", (meta.get("corrections", 0),)
        )
        # A lost session counter jumps too: central must never see a session id twice.
        session = meta.get("session_id", 0 if "last_seq" in meta else SALVAGE_SEQ_GAP)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('session_id', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (session,),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        if src is not None:
            src.close()
    detail: dict[str, Any] = {
        "reason": reason,
        "quarantined_to": str(source),
        "salvaged": salvaged,
        "salvaged_rows": sum(v for k, v in salvaged.items() if k not in ("meta", "meters")),
        "unreadable_tables": lost_tables,
        "seq_gap": gap,
    }
    with log.batch() as batch:
        batch.add_event(None, "store.quarantined", detail, log._clock())
    return detail
