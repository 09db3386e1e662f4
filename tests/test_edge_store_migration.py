"""An edge log written by the previous version (schema 1: ISO text times, names for type,
kind and source) opens with this one: migrated in place, chunk by chunk, resuming after an
interruption, with every record reading back exactly as version 1 gave it; a read-only
reader reads the old form as it is; a damaged old file is salvaged into the new form."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from edge_agent.store import EdgeLog, LogReader, ReadingRecord, SchemaVersionError
from edge_agent.store import schema as log_schema
from edge_agent.store.records import format_utc

T0 = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
READINGS = 120  # 3 periods × 40 meters, then an event, a statistic and frames


def v1_log(path: Path) -> list[dict[str, Any]]:
    """A version-1 file as version 1 wrote it (its DDL is migration step 0; the rows in its
    text form); returns the records as version 1's reader returned them, in seq order."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    log_schema.MIGRATIONS[0](conn)
    records: list[dict[str, Any]] = []
    created = format_utc(T0 + timedelta(minutes=1))
    for seq in range(1, READINGS + 1):
        period = format_utc(T0 + timedelta(hours=(seq - 1) // 40))
        read = format_utc(T0 + timedelta(hours=(seq - 1) // 40, seconds=1, microseconds=seq))
        meter, value = f"{seq % 40:012d}", f"{seq}.25"
        conn.execute(
            "INSERT INTO records (seq, type, kind, created_at, data_ts, meter, obis, value, "
            "unit, read_ts, source, quality, corrections) "
            "VALUES (?, 'reading', 'curve', ?, ?, ?, '1-0:1.8.0', ?, 'kWh', ?, ?, 'ok', ?)",
            (seq, created, period, meter, value, read, "backfill" if seq % 7 else "scheduled",
             seq % 3 == 0),
        )  # fmt: skip
        records.append(
            {"seq": seq, "kind": "curve", "created_at": created, "meter": meter,
             "obis": "1-0:1.8.0", "period_ts": period, "value": value, "unit": "kWh",
             "read_ts": read, "source": "backfill" if seq % 7 else "scheduled",
             "quality": "ok", "corrections": int(seq % 3 == 0), "type": "reading"}
        )  # fmt: skip
    event_at = format_utc(T0 + timedelta(hours=5))
    conn.execute(
        "INSERT INTO records (seq, type, kind, created_at, data_ts, meter, code, detail) "
        "VALUES (?, 'event', 'event', ?, ?, NULL, 'store.quarantined', '{\"x\":1}')",
        (READINGS + 1, created, event_at),
    )
    records.append(
        {"seq": READINGS + 1, "kind": "event", "created_at": created, "meter": None,
         "code": "store.quarantined", "detail": {"x": 1}, "at": event_at, "type": "event"}
    )  # fmt: skip
    conn.execute(
        "INSERT INTO records (seq, type, kind, created_at, data_ts, name, value, detail) "
        "VALUES (?, 'statistic', 'event', ?, ?, 'collection.success_rate', '0.9950', "
        '\'{"bus":"b1"}\')',
        (READINGS + 2, created, event_at),
    )
    records.append(
        {"seq": READINGS + 2, "kind": "event", "created_at": created,
         "name": "collection.success_rate", "labels": {"bus": "b1"}, "value": "0.9950",
         "at": event_at, "type": "statistic"}
    )  # fmt: skip
    for n in range(30):
        conn.execute(
            "INSERT INTO raw_frames (bus, direction, frame, at) VALUES ('bus1', 'rx', ?, ?)",
            (bytes([0x68, n, 0x16]), format_utc(T0 + timedelta(seconds=n))),
        )
    conn.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (READINGS + 5,))
    conn.execute("UPDATE meta SET value = 50 WHERE key = 'acked_seq'")
    conn.execute("UPDATE meta SET value = 40 WHERE key = 'corrections'")
    conn.execute("INSERT INTO evictions (kind, count) VALUES ('raw_frame', 12)")
    conn.close()
    return records


def as_dicts(log: LogReader) -> list[dict[str, Any]]:
    return [dataclasses.asdict(record) for record in log.records_between(0, 10**9)]


def test_a_version_1_log_is_migrated_in_place_and_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    before = v1_log(path)
    with EdgeLog(path) as log:
        conn = log._conn
        assert conn.execute("PRAGMA user_version").fetchone() == (log_schema.SCHEMA_VERSION,)
        assert log.integrity == "ok"
        assert as_dicts(log) == before
        assert (log.last_seq(), log.acked_seq(), log.corrections()) == (READINGS + 5, 50, 40)
        assert log.eviction_counts() == {"raw_frame": 12}
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "records_v1" not in tables and "raw_frames_v1" not in tables
        assert conn.execute(
            "SELECT typeof(data_ts), typeof(type) FROM records LIMIT 1"
        ).fetchone() == (
            "integer",
            "integer",
        )
        frames = conn.execute("SELECT frame, at FROM raw_frames_text ORDER BY id").fetchall()
        assert frames[3] == ("680316", "2026-11-01T00:05:03.000Z")
        # the natural key still holds across the migration, and new seqs continue
        with log.batch() as b:
            again = b.add_reading(
                "000000000001", "1-0:1.8.0", T0, Decimal("1.25"), "kWh",
                read_ts=T0, source="scheduled", kind="curve",
            )  # fmt: skip
            assert again is None  # seq 1 stored exactly this value for this key
            new = b.add_reading(
                "000000000001", "1-0:1.8.0", T0 + timedelta(days=1), 7, "kWh",
                read_ts=T0, source="scheduled", kind="curve",
            )  # fmt: skip
        assert new == READINGS + 6
        found = log.find_readings("000000000002", None, T0, T0 + timedelta(hours=1))
        assert [r.seq for r in found] == [2]


def test_a_read_only_reader_reads_a_version_1_file_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    before = v1_log(path)
    reader = LogReader.open(path)
    try:
        assert as_dicts(reader) == before
        found = reader.find_readings("000000000002", "1-0:1.8.0", T0, T0 + timedelta(hours=1))
        assert [(r.seq, r.period_ts) for r in found] == [(2, format_utc(T0))]
        assert reader.depth() == READINGS + 2 - 50
        age = reader.oldest_unacked_age(T0 + timedelta(minutes=11))
        assert age == timedelta(minutes=10)
    finally:
        reader.close()
    # the reader changed nothing: still version 1
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    conn.close()


class Interrupted(Exception):
    pass


def test_an_interrupted_migration_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between two chunk commits (or inside one, which rolls back) leaves a file
    the next open finishes migrating; nothing is lost or doubled."""
    path = tmp_path / "edge.db"
    before = v1_log(path)
    monkeypatch.setattr(log_schema, "MIGRATION_CHUNK", 25)
    real = log_schema._in_transaction
    calls = 0

    def dies_at_the_fourth(conn: sqlite3.Connection, step: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:  # set-aside, two chunks committed, the third rolls back
            conn.execute("BEGIN IMMEDIATE")
            step()
            conn.execute("ROLLBACK")
            raise Interrupted
        real(conn, step)

    monkeypatch.setattr(log_schema, "_in_transaction", dies_at_the_fourth)
    with pytest.raises(Interrupted):
        EdgeLog(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    moved = conn.execute("SELECT count(*) FROM records").fetchone()[0]
    left = conn.execute("SELECT count(*) FROM records_v1").fetchone()[0]
    conn.close()
    assert (moved, left) == (50, READINGS + 2)  # copied, the old rows untouched
    monkeypatch.setattr(log_schema, "_in_transaction", real)
    reader = LogReader.open(path)  # half-migrated: it reads what is in the new table
    assert [r.seq for r in reader.pending(after_seq=0, limit=10)] == []  # all moved ≤ ack 50
    reader.close()
    with EdgeLog(path) as log:
        assert log.integrity == "ok"
        assert as_dicts(log) == before
        assert log._conn.execute("SELECT count(*) FROM raw_frames").fetchone() == (30,)


def test_a_damaged_version_1_file_is_salvaged_into_the_new_form(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    before = v1_log(path)
    with path.open("r+b") as f:  # page 2: the pointer map (auto_vacuum), every row readable
        f.seek(4096)
        f.write(b"\xa5" * 4096)
    with EdgeLog(path) as log:
        assert log.quarantined_to is not None
        records = as_dicts(log)
        assert records[: len(before)] == before
        assert records[-1]["code"] == "store.quarantined"
        readings = [r for r in log.records_between(0, 10**9) if isinstance(r, ReadingRecord)]
        assert len(readings) == READINGS


def test_a_newer_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    EdgeLog(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {log_schema.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaVersionError, match="newer than this agent"):
        EdgeLog(path)


def test_upgrade_row_converts_only_what_is_in_the_old_form() -> None:
    columns = ["seq", "type", "kind", "data_ts", "source", "value"]
    old = (5, "reading", "daily", "1970-01-01T00:00:01.000002Z", "on_demand", "1.5")
    assert log_schema.upgrade_row("records", columns, old) == (5, 0, 0, 1_000_002, 2, "1.5")
    new = (5, 0, 0, 1_000_002, 2, "1.5")
    assert log_schema.upgrade_row("records", columns, new) == new
    assert log_schema.upgrade_row("meta", ["key", "value"], ("x", "y")) == ("x", "y")
    with pytest.raises(KeyError):
        log_schema.upgrade_row("records", ["kind"], ("weekly",))


def test_obis_codes_are_stored_by_their_frozen_index_and_others_as_text(tmp_path: Path) -> None:
    from edge_agent.store.obis_codes import OBIS_CODES, OBIS_INDEX

    assert OBIS_CODES[0] == "1-0:1.8.0" and len(OBIS_INDEX) == len(OBIS_CODES)  # append only
    with EdgeLog(tmp_path / "edge.db") as log:
        with log.batch() as b:
            for obis in ("1-0:2.8.3", "1-0:1.8.0*1"):  # a settlement-period code: text
                b.add_reading("000000000001", obis, T0, Decimal(1), "kWh", read_ts=T0,
                              source="scheduled", kind="monthly")  # fmt: skip
        stored = log._conn.execute("SELECT obis FROM records ORDER BY seq").fetchall()
        assert stored == [(OBIS_INDEX["1-0:2.8.3"],), ("1-0:1.8.0*1",)]
        found = log.find_readings("000000000001", "1-0:2.8.3", T0, T0 + timedelta(hours=1))
        assert [r.obis for r in found] == ["1-0:2.8.3"]
        both = log.find_readings("000000000001", None, T0, T0 + timedelta(hours=1))
        assert [r.obis for r in both] == ["1-0:1.8.0*1", "1-0:2.8.3"]  # text order
        view = log._conn.execute("SELECT obis FROM records_text ORDER BY seq").fetchall()
        assert view == [("1-0:2.8.3",), ("1-0:1.8.0*1",)]
