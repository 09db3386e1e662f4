"""The edge agent's durable log, against real SQLite files: seq, group commit, ack,
retention, quota eviction, quarantine. Crash safety is in ``test_edge_store_crash.py``."""

from __future__ import annotations

import random
import sqlite3
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edge_agent.store as store
from edge_agent.store import (
    SCHEMA_VERSION,
    AcknowledgementError,
    EdgeLog,
    EventRecord,
    InvalidRecordError,
    LogBatch,
    LogReader,
    ReadingRecord,
    RetentionRules,
    SchemaVersionError,
    StatisticRecord,
)
from edge_agent.store.records import format_utc, utc_micros

T0 = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
ENERGY = "1-0:1.8.0"


class FakeClock:
    """The gateway clock, moved by the test."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def reading(
    batch: LogBatch,
    meter: str = "000000000001",
    period: datetime = T0,
    value: Decimal | int = Decimal("1234.56"),
    *,
    obis: str = ENERGY,
    kind: str = "daily",
    quality: str = "ok",
    unit: str | None = "kWh",
) -> int | None:
    return batch.add_reading(
        meter,
        obis,
        period,
        value,
        unit,
        read_ts=period + timedelta(minutes=3),
        source="scheduled",
        kind=kind,
        quality=quality,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def log(tmp_path: Path, clock: FakeClock) -> Any:
    with EdgeLog(tmp_path / "edge.db", clock=clock) as opened:
        yield opened


def all_seqs(log: EdgeLog) -> list[int]:
    return [r.seq for r in log.records_between(0, 2**63 - 1)]


# -- the file ----------------------------------------------------------------------------


def test_public_names() -> None:
    assert set(store.__all__) == {
        "EVICTION_ORDER",
        "KINDS",
        "SCHEMA_VERSION",
        "SOURCES",
        "AcknowledgementError",
        "Batch",
        "EdgeLog",
        "EventRecord",
        "Health",
        "InvalidRecordError",
        "LogBatch",
        "LogReader",
        "ReadingRecord",
        "Record",
        "RetentionRules",
        "SchemaVersionError",
        "StatisticRecord",
        "StoreError",
    }


def test_pragmas_and_schema_version(log: EdgeLog) -> None:
    pragma = {
        name: log._conn.execute(f"PRAGMA {name}").fetchone()[0]
        for name in (
            "journal_mode",
            "synchronous",
            "foreign_keys",
            "busy_timeout",
            "journal_size_limit",
            "user_version",
            "auto_vacuum",
        )
    }
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL
        "foreign_keys": 1,
        "busy_timeout": 5000,
        "journal_size_limit": 4 << 20,
        "user_version": SCHEMA_VERSION,
        "auto_vacuum": 2,  # incremental
    }
    assert log.integrity == "ok"
    assert log.quarantined_to is None


def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    EdgeLog(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaVersionError, match="newer"):
        EdgeLog(path)
    assert not list(tmp_path.glob("*quarantine*"))


def test_an_unopenable_path_is_an_error_not_a_quarantine(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError):
        EdgeLog(tmp_path / "missing" / "edge.db")
    with pytest.raises(sqlite3.OperationalError):
        EdgeLog(tmp_path)  # a directory
    assert not list(tmp_path.glob("*quarantine*"))


def test_reader_is_read_only(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    with EdgeLog(path) as log, log.batch() as b:
        reading(b)
    reader = LogReader.open(path)
    try:
        assert [r.seq for r in reader.pending()] == [1]
        assert reader.depth() == 1
        with pytest.raises(sqlite3.OperationalError):
            reader._conn.execute("DELETE FROM records")
    finally:
        reader.close()


def test_reader_sees_only_committed_batches_and_is_not_blocked(tmp_path: Path) -> None:
    """The uplink and the CLI read while the collector writes (WAL: readers never wait)."""
    path = tmp_path / "edge.db"
    with EdgeLog(path) as log:
        with log.batch() as b:
            reading(b)
        reader = LogReader.open(path, busy_timeout_ms=0)
        try:
            with log.batch() as b:
                reading(b, period=T0 + timedelta(days=1))
                assert [r.seq for r in reader.pending()] == [1]  # not the open batch
            assert [r.seq for r in reader.pending()] == [1, 2]
            assert reader.last_seq() == 2
            health = reader.health(quota_bytes=log.size_bytes() * 10)
            assert (health.depth, health.integrity, health.quota_alarm) == (2, "unchecked", "ok")
            assert health.wal_bytes > 0
            batch = reader.next_batch()
            assert (batch.seq_from, batch.seq_to, len(batch.records)) == (1, 2, 2)
            assert not reader._conn.in_transaction  # the snapshot ended
        finally:
            reader.close()


# -- seq ---------------------------------------------------------------------------------


def test_seq_is_gapless_across_batches_and_restarts(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    seqs: list[int | None] = []
    for restart in range(3):
        with EdgeLog(path) as log:
            for n in range(4):
                with log.batch() as b:
                    period = T0 + timedelta(days=restart * 10 + n)
                    seqs.append(reading(b, period=period))
                    seqs.append(b.add_event("000000000001", "cover_open", {"n": n}, period))
                    seqs.append(b.add_statistic("success", {"bus": "1"}, Decimal("99.5"), period))
                    b.add_raw_frame("bus1", "tx", "68 01 02", period)  # takes no seq
                    assert (b.first_seq, b.last_seq) == (seqs[-3], seqs[-1])
    assert seqs == list(range(1, 37))
    with EdgeLog(path) as log:
        assert all_seqs(log) == seqs
        assert log.last_seq() == 36


def test_seq_is_never_reused_after_deletion(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "edge.db"
    with EdgeLog(path, clock=clock) as log:
        with log.batch() as b:
            for day in range(5):
                reading(b, period=T0 + timedelta(days=day))
        log.acknowledge(5)
        clock.now = T0 + timedelta(days=400)
        assert log.apply_retention(clock.now)["daily"] == 5
        assert all_seqs(log) == []
    with EdgeLog(path, clock=clock) as log, log.batch() as b:
        assert reading(b, period=T0 + timedelta(days=399)) == 6


def test_session_ids_persist_and_grow(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    with EdgeLog(path) as log:
        assert [log.new_session(), log.new_session()] == [1, 2]
    with EdgeLog(path) as log:
        assert log.new_session() == 3
        assert log.last_seq() == 0  # sessions take no seq


def test_rolled_back_batch_stores_nothing_and_takes_no_seq(log: EdgeLog) -> None:
    with pytest.raises(RuntimeError), log.batch() as b:
        reading(b)
        raise RuntimeError("bus cycle aborted")
    with log.batch() as b:
        assert reading(b, period=T0 + timedelta(days=1)) == 1
    assert all_seqs(log) == [1]


def test_a_batch_is_unusable_after_commit(log: EdgeLog) -> None:
    with log.batch() as b:
        reading(b)
    with pytest.raises(InvalidRecordError, match="closed"):
        reading(b, period=T0 + timedelta(days=1))


# -- readings ----------------------------------------------------------------------------


def test_identical_duplicate_returns_none_and_takes_no_seq(log: EdgeLog) -> None:
    with log.batch() as b:
        assert reading(b) == 1
        assert reading(b) is None
        assert reading(b, value=Decimal("1234.560")) is None  # same number, same reading
    with log.batch() as b:
        assert reading(b) is None
        assert b.first_seq is None
        assert reading(b, period=T0 + timedelta(days=1)) == 2
    assert log.corrections() == 0


def test_correction_updates_the_row_with_a_new_seq(log: EdgeLog) -> None:
    with log.batch() as b:
        assert reading(b) == 1
        assert reading(b, period=T0 + timedelta(days=1)) == 2
    log.acknowledge(2)
    with log.batch() as b:
        assert reading(b, value=Decimal("1234.57")) == 3
    with log.batch() as b:
        assert reading(b, value=Decimal("1234.57"), quality="estimated") == 4
    [record] = log.pending()
    assert isinstance(record, ReadingRecord)
    assert (record.seq, record.value, record.quality, record.corrections) == (
        4,
        "1234.57",
        "estimated",
        2,
    )
    assert all_seqs(log) == [2, 4]  # one row per natural key; seq 1 and 3 were superseded
    assert log.corrections() == 2
    assert log.health().corrections == 2


def test_decimal_values_round_trip_exactly(log: EdgeLog) -> None:
    values: list[Decimal | int] = [
        Decimal("0.1") + Decimal("0.2"),
        Decimal("0.1") * 3,
        Decimal("123456789012345678.000001"),
        Decimal("-0.00"),
        Decimal("1E-9"),
        Decimal(7),
        42,
    ]
    with log.batch() as b:
        for day, value in enumerate(values):
            reading(b, period=T0 + timedelta(days=day), value=value)
    got = [r.value for r in log.pending() if isinstance(r, ReadingRecord)]
    assert got == [str(Decimal(v)) for v in values]
    assert got[0] == "0.3"
    assert [Decimal(v) for v in got] == [Decimal(v) for v in values]
    types = {row[0] for row in log._conn.execute("SELECT DISTINCT typeof(value) FROM records")}
    assert types == {"text"}


@pytest.mark.parametrize(
    "bad", [0.1, float("nan"), Decimal("NaN"), Decimal("Infinity"), True, "1.5"]
)
def test_non_decimal_values_are_refused(log: EdgeLog, bad: Any) -> None:
    with pytest.raises(InvalidRecordError), log.batch() as b:
        reading(b, value=bad)
    assert log.last_seq() == 0


@pytest.mark.parametrize("field", ["period_ts", "read_ts"])
def test_naive_datetimes_are_refused(log: EdgeLog, field: str) -> None:
    naive = datetime(2026, 11, 1, 0, 5)
    times = {"period_ts": T0, "read_ts": T0, field: naive}
    with pytest.raises(InvalidRecordError, match=f"{field} .* is naive"), log.batch() as b:
        b.add_reading(
            "000000000001",
            ENERGY,
            times["period_ts"],
            Decimal(1),
            "kWh",
            read_ts=times["read_ts"],
            source="scheduled",
            kind="daily",
        )
    with pytest.raises(ValueError, match="naive"), log.batch() as b:
        b.add_event(None, "boot", {}, naive)
    assert log.last_seq() == 0


def test_period_is_stored_in_utc(log: EdgeLog) -> None:
    shanghai = datetime(2026, 11, 1, 8, 5, tzinfo=ZoneInfo("Asia/Shanghai"))
    with log.batch() as b:
        reading(b, period=shanghai)
        assert reading(b, period=T0) is None  # the same instant in UTC: a duplicate
    [record] = log.pending()
    assert isinstance(record, ReadingRecord)
    assert record.period_ts == "2026-11-01T00:05:00.000000Z"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"obis": "1-0:999.8.0"}, "OBIS|vocabulary"),
        ({"obis": "energy"}, "OBIS"),
        ({"source": "cron"}, "source"),
        ({"kind": "hourly"}, "kind"),
        ({"kind": "event"}, "kind"),
        ({"meter": ""}, "meter"),
    ],
)
def test_bad_readings_are_refused(log: EdgeLog, change: dict[str, str], message: str) -> None:
    args: dict[str, Any] = {
        "meter": "000000000001",
        "obis": ENERGY,
        "source": "scheduled",
        "kind": "daily",
    }
    args.update(change)
    with pytest.raises(InvalidRecordError, match=message), log.batch() as b:
        b.add_reading(
            args["meter"],
            args["obis"],
            T0,
            Decimal(1),
            "kWh",
            read_ts=T0,
            source=args["source"],
            kind=args["kind"],
        )


def test_events_statistics_and_raw_frames(log: EdgeLog) -> None:
    with log.batch() as b:
        b.add_event("000000000001", "power_down", {"duration_s": Decimal("12.5"), "at": T0}, T0)
        b.add_event(None, "agent.start", {}, T0)
        b.add_statistic("collection_success", {"task": "daily", "bus": "1"}, Decimal("99.8"), T0)
        b.add_raw_frame("bus1", "rx", "68 11 22 33 16", T0)
        with pytest.raises(InvalidRecordError):
            b.add_raw_frame("bus1", "rx", "zz", T0)
        with pytest.raises(InvalidRecordError):
            b.add_raw_frame("bus1", "sideways", "68", T0)
        with pytest.raises(InvalidRecordError, match="JSON"):
            b.add_event(None, "x", {"bad": object()}, T0)
    first, second, stat = log.pending()
    assert first == EventRecord(
        1,
        "event",
        first.created_at,
        "000000000001",
        "power_down",
        {"at": "2026-11-01T00:05:00.000000Z", "duration_s": "12.5"},
        "2026-11-01T00:05:00.000000Z",
    )
    assert isinstance(second, EventRecord) and second.meter is None
    assert stat == StatisticRecord(
        3,
        "event",
        stat.created_at,
        "collection_success",
        {"bus": "1", "task": "daily"},
        "99.8",
        "2026-11-01T00:05:00.000000Z",
    )
    frames = log._conn.execute("SELECT bus, direction, frame FROM raw_frames").fetchall()
    assert frames == [("bus1", "rx", bytes.fromhex("6811223316"))]


# -- delivery ----------------------------------------------------------------------------


def test_pending_and_acknowledge(log: EdgeLog, clock: FakeClock) -> None:
    with log.batch() as b:
        for day in range(10):
            reading(b, period=T0 + timedelta(days=day))
    assert [r.seq for r in log.pending(limit=4)] == [1, 2, 3, 4]
    assert [r.seq for r in log.pending(after_seq=4, limit=4)] == [5, 6, 7, 8]
    assert log.depth() == 10
    assert log.acknowledge(3) == 3
    assert log.acknowledge(2) == 3  # an older ack changes nothing
    assert log.acknowledge(3) == 3
    assert [r.seq for r in log.pending(limit=2)] == [4, 5]
    assert [r.seq for r in log.pending(after_seq=1, limit=2)] == [4, 5]  # never below the ack
    assert log.depth() == 7
    with pytest.raises(AcknowledgementError, match="beyond"):
        log.acknowledge(11)
    with pytest.raises(AcknowledgementError):
        log.acknowledge(-1)
    assert log.acked_seq() == 3
    clock.now = T0 + timedelta(hours=2)
    assert log.oldest_unacked_age(clock.now) == timedelta(hours=2)
    assert log.acknowledge(10) == 10
    assert log.depth() == 0
    assert log.pending() == []
    assert log.oldest_unacked_age(clock.now) is None
    # acked records stay for resend until retention removes them
    assert [r.seq for r in log.records_between(2, 4)] == [2, 3, 4]


def test_records_serialise_as_plain_data(log: EdgeLog) -> None:
    import json

    with log.batch() as b:
        reading(b, value=Decimal("0.1"))
    payload = json.loads(json.dumps(asdict(log.pending()[0])))
    assert payload["value"] == "0.1"
    assert payload["type"] == "reading"
    assert set(payload) >= {"seq", "meter", "obis", "period_ts", "read_ts", "source", "quality"}


def test_next_batch_covers_holes(log: EdgeLog) -> None:
    with log.batch() as b:
        for day in range(4):
            reading(b, period=T0 + timedelta(days=day))
    with log.batch() as b:  # seq 5 supersedes seq 4: seq 4 becomes a hole
        reading(b, period=T0 + timedelta(days=3), value=Decimal(1))
    with log.batch() as b:  # seq 6 supersedes seq 5 at the tail
        reading(b, period=T0 + timedelta(days=3), value=Decimal(2))
    batch = log.next_batch(limit=2)
    assert (batch.seq_from, batch.seq_to, [r.seq for r in batch.records]) == (1, 2, [1, 2])
    batch = log.next_batch(after_seq=2, limit=10)
    assert (batch.seq_from, batch.seq_to, [r.seq for r in batch.records]) == (3, 6, [3, 6])
    log.acknowledge(6)
    batch = log.next_batch()
    assert batch.records == [] and batch.seq_to < batch.seq_from


def test_find_readings_for_resend(log: EdgeLog) -> None:
    with log.batch() as b:
        for day in range(5):
            reading(b, period=T0 + timedelta(days=day))
            reading(b, period=T0 + timedelta(days=day), obis="1-0:2.8.0")
            reading(b, meter="000000000002", period=T0 + timedelta(days=day))
    found = log.find_readings(
        "000000000001", ENERGY, T0 + timedelta(days=1), T0 + timedelta(days=3)
    )
    assert [(r.meter, r.obis, r.period_ts[:10]) for r in found] == [
        ("000000000001", ENERGY, "2026-11-02"),
        ("000000000001", ENERGY, "2026-11-03"),
    ]
    assert len(log.find_readings("000000000001", None, T0, T0 + timedelta(days=5))) == 10
    with pytest.raises(InvalidRecordError):
        log.find_readings("000000000001", ENERGY, datetime(2026, 1, 1), T0)


def test_collector_and_uplink_threads_share_one_log(log: EdgeLog) -> None:
    import threading

    errors: list[BaseException] = []

    def collect() -> None:
        try:
            for n in range(50):
                with log.batch() as b:
                    for m in range(10):
                        reading(b, meter=f"{m:012d}", period=T0 + timedelta(hours=n))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    collector = threading.Thread(target=collect)
    collector.start()
    sent: list[int] = []
    while collector.is_alive() or log.depth():
        batch = log.next_batch(limit=37)
        sent += [r.seq for r in batch.records]
        if batch.records:
            log.acknowledge(batch.seq_to)
    collector.join()
    assert not errors
    assert sent == list(range(1, 501))
    assert log.acked_seq() == 500


# -- retention ---------------------------------------------------------------------------


def test_retention_purges_acked_rows_past_the_rule_and_keeps_unacked(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The ThingsBoard bug: its TTL compared ms with s, so a 30-day-old row survived TTL 7."""
    now = T0 + timedelta(days=30)
    clock.now = now
    rules = RetentionRules(daily=timedelta(days=7))
    with EdgeLog(tmp_path / "edge.db", retention=rules, clock=clock) as log:
        with log.batch() as b:
            acked_old = reading(b, meter="000000000001", period=T0)
            recent = reading(b, meter="000000000001", period=now - timedelta(days=1))
            unacked_old = reading(b, meter="000000000002", period=T0)
        assert (acked_old, recent, unacked_old) == (1, 2, 3)
        log.acknowledge(2)
        assert log.apply_retention(now)["daily"] == 1
        assert all_seqs(log) == [2, 3]
        log.acknowledge(3)
        assert log.apply_retention(now)["daily"] == 1
        assert all_seqs(log) == [2]


def test_retention_defaults_per_kind(log: EdgeLog, clock: FakeClock) -> None:
    ages = {"daily": 31, "monthly": 403, "curve": 10, "instant": 2, "clock": 31}
    now = T0 + timedelta(days=500)
    with log.batch() as b:
        for n, (kind, days) in enumerate(ages.items()):
            meter = f"{n:012d}"
            reading(b, meter=meter, kind=kind, period=now - timedelta(days=days, hours=1))
            reading(b, meter=meter, kind=kind, period=now - timedelta(days=days, hours=-1))
        b.add_event(None, "old", {}, now - timedelta(days=91))
        b.add_event(None, "young", {}, now - timedelta(days=89))
        b.add_raw_frame("bus1", "tx", "68", now - timedelta(days=3))
        b.add_raw_frame("bus1", "tx", "68", now - timedelta(days=1))
    log.acknowledge(log.last_seq())
    deleted = log.apply_retention(now)
    assert deleted == {k: 1 for k in (*ages, "event", "raw_frame")}
    assert log._conn.execute("SELECT count(*) FROM raw_frames").fetchone() == (1,)
    assert len(all_seqs(log)) == 6


# -- quota -------------------------------------------------------------------------------


def fill(log: EdgeLog, clock: FakeClock) -> dict[str, int]:
    """Raw frames, instants, curves, events and dailies; returns how many of each."""
    counts = {"raw_frame": 0, "instant": 0, "curve": 0, "event": 0, "daily": 0}
    with log.batch() as b:
        for i in range(600):
            at = T0 + timedelta(minutes=i)
            b.add_raw_frame("bus1", "rx", "68" + "AA" * 250 + "16", at)
            counts["raw_frame"] += 1
            meter = f"{i % 20:012d}"
            reading(b, meter=meter, period=at, kind="instant", obis="1-0:32.7.0", unit="V")
            reading(b, meter=meter, period=at, kind="curve", obis="1-0:16.7.0")
            counts["instant"] += 1
            counts["curve"] += 1
            if i % 10 == 0:
                b.add_event(meter, "cover_open", {"i": i}, at)
                counts["event"] += 1
            if i < 40:
                reading(b, meter=meter, period=T0 - timedelta(days=1 + i // 20))
                counts["daily"] += 1
    return counts


def test_quota_evicts_raw_frames_first_and_billing_data_last(
    tmp_path: Path, clock: FakeClock
) -> None:
    with EdgeLog(tmp_path / "edge.db", clock=clock) as log:
        fill(log, clock)
        log.quota_bytes = 1 << 40
        log.enforce_quota()
        full = log.size_bytes()
        log.quota_bytes = full * 3 // 4  # frames are about a third of the file
        evicted = log.enforce_quota()
        assert log.size_bytes() <= log.quota_bytes
        assert set(evicted) == {"raw_frame"}
        oldest_left = log._conn.execute("SELECT min(at) FROM raw_frames").fetchone()[0]
        assert oldest_left == utc_micros(T0 + timedelta(minutes=evicted["raw_frame"]))
        assert log.eviction_counts() == evicted
        assert log.depth() > 0  # unacked readings untouched while frames could go
        event = log.pending(after_seq=log.last_seq() - 1)[0]
        assert isinstance(event, EventRecord) and event.code == "store.evicted"
        assert event.detail["evicted"] == evicted

        log.quota_bytes = 80 << 10  # squeeze: frames, instants and curves go, events stay
        assert log.enforce_quota() == {
            "raw_frame": 600 - evicted["raw_frame"],
            "instant": 600,
            "curve": 600,
        }
        log.quota_bytes = log.size_bytes() - (10 << 10)  # then events; billing data last
        assert set(log.enforce_quota()) == {"event"}
        kinds = dict(log._conn.execute("SELECT kind, count(*) FROM records_text GROUP BY kind"))
        assert kinds == {"daily": 40, "event": 1}  # the last store.evicted event
        totals = log.eviction_counts()
        assert totals["raw_frame"] == 600
        assert log.health().eviction_counts == totals


def test_quota_evicts_acked_before_unacked_and_oldest_first(
    tmp_path: Path, clock: FakeClock
) -> None:
    with EdgeLog(tmp_path / "edge.db", clock=clock) as log:
        with log.batch() as b:
            for i in range(400):  # seq order = period order reversed for the acked half
                period = T0 + timedelta(minutes=(400 - i) if i < 200 else i)
                reading(b, meter=f"{i:012d}", period=period, kind="instant", obis="1-0:32.7.0")
        log.acknowledge(200)
        log.quota_bytes = 1 << 40
        log.enforce_quota()
        log.quota_bytes = log.size_bytes() - (4 << 10)
        evicted = log.enforce_quota()
        assert 0 < evicted["instant"] <= 200
        remaining = set(all_seqs(log))
        gone = set(range(1, 401)) - remaining
        assert gone and max(gone) <= 200  # only acked ones went
        # oldest period first: the acked half was written newest-first, so the highest seqs go
        assert gone == set(range(201 - len(gone), 201))


def test_quota_evicts_unacked_when_it_must_and_says_which_seqs(
    tmp_path: Path, clock: FakeClock
) -> None:
    with EdgeLog(tmp_path / "edge.db", clock=clock) as log:
        with log.batch() as b:
            for i in range(300):
                reading(b, meter=f"{i:012d}", period=T0, kind="curve", obis="1-0:16.7.0")
        log.quota_bytes = 1 << 40
        log.enforce_quota()
        log.quota_bytes = log.size_bytes() - (8 << 10)
        evicted = log.enforce_quota()
        assert evicted["curve"] > 0
        events = [
            r for r in log.pending() if isinstance(r, EventRecord) and r.code == "store.evicted"
        ]
        assert events  # one per round: the event itself can tip the file over again
        assert sum(e.detail["unacked_evicted"] for e in events) == evicted["curve"]
        assert min(e.detail["unacked_seq_min"] for e in events) == 1
        batch = log.next_batch(limit=1000)
        assert batch.seq_from == 1 and batch.seq_to == log.last_seq()  # holes covered


def test_quota_is_enforced_after_each_batch(tmp_path: Path, clock: FakeClock) -> None:
    with EdgeLog(tmp_path / "edge.db", clock=clock, quota_bytes=96 << 10) as log:
        for n in range(30):
            with log.batch() as b:
                for i in range(50):
                    b.add_raw_frame("bus1", "rx", "AB" * 100, T0 + timedelta(seconds=n * 50 + i))
                reading(b, period=T0 + timedelta(days=n))
        assert log.size_bytes() <= 96 << 10
        assert log.eviction_counts()["raw_frame"] > 0
        assert "daily" not in log.eviction_counts()
        assert len(log.find_readings("000000000001", ENERGY, T0, T0 + timedelta(days=30))) == 30


@pytest.mark.parametrize(("use", "alarm"), [(0.5, "ok"), (0.8, "warning"), (0.95, "critical")])
def test_health_quota_alarms(log: EdgeLog, clock: FakeClock, use: float, alarm: str) -> None:
    with log.batch() as b:
        reading(b)
    size = log.size_bytes()
    log.quota_bytes = int(size / use)
    clock.now = T0 + timedelta(minutes=5)
    health = log.health()
    assert health.quota_alarm == alarm
    assert health.quota_use_percent == pytest.approx(use * 100, rel=0.01)
    assert (health.depth, health.last_seq, health.acked_seq) == (1, 1, 0)
    assert health.oldest_unacked_age_s == 300.0
    assert health.integrity == "ok"


# -- quarantine --------------------------------------------------------------------------


def write_readings(path: Path, count: int) -> None:
    with EdgeLog(path) as log, log.batch() as b:
        for i in range(count):
            reading(b, meter=f"{i % 10:012d}", period=T0 + timedelta(hours=i // 10), value=i)
        b.add_event(None, "marker", {}, T0)
        log_last = b.last_seq
    assert log_last == count + 1


def corrupt_page(path: Path, page: int, seed: int = 7) -> None:
    garbage = random.Random(seed).randbytes(4096)
    with path.open("r+b") as f:
        f.seek((page - 1) * 4096)
        f.write(garbage)


def test_corrupt_page_two_is_quarantined_and_salvaged(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "edge.db"
    write_readings(path, 500)
    corrupt_page(path, 2)
    log = EdgeLog(path, clock=clock)
    try:
        assert log.integrity != "ok"
        assert log.quarantined_to is not None and log.quarantined_to.exists()
        assert log.quarantined_to.name.startswith("edge.db.quarantine-20261101T000500Z")
        assert log._conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        event = log.pending(limit=10_000)[-1]
        assert isinstance(event, EventRecord) and event.code == "store.quarantined"
        stored = log._conn.execute("SELECT count(*) FROM records").fetchone()[0] - 1
        assert event.detail["salvaged"]["records"] == stored
        assert event.detail["salvaged_rows"] == stored
        assert stored > 0
        assert log.health().quarantined_to == str(log.quarantined_to)
        assert event.seq > 501 or event.detail["seq_gap"] > 0  # no seq is ever reused
        for record in log.pending(limit=10_000):
            if isinstance(record, ReadingRecord):
                i = int(record.value)
                assert record.meter == f"{i % 10:012d}"
    finally:
        log.close()
    with EdgeLog(path, clock=clock) as reopened:  # the rebuilt file is healthy
        assert reopened.integrity == "ok"


def test_corrupt_records_leaf_loses_only_nearby_rows(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "edge.db"
    write_readings(path, 2000)
    with sqlite3.connect(path) as conn:
        leaves = [
            page
            for (page,) in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 'records' AND pagetype = 'leaf' "
                "ORDER BY pageno"
            )
        ]
    conn.close()
    corrupt_page(path, leaves[len(leaves) // 2])
    with EdgeLog(path, clock=clock) as log:
        assert log.quarantined_to is not None
        event = log.pending(limit=10_000)[-1]
        assert isinstance(event, EventRecord)
        salvaged = event.detail["salvaged"]["records"]
        assert 1500 < salvaged < 2001
        assert event.detail["seq_gap"] == 0  # meta survived: seqs continue after 2001
        assert event.seq == 2002
        values = sorted(
            int(r.value) for r in log.pending(limit=5000) if isinstance(r, ReadingRecord)
        )
        assert values[0] == 0 and values[-1] == 1999


def test_garbage_header_is_quarantined(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "edge.db"
    write_readings(path, 50)
    corrupt_page(path, 1)
    with EdgeLog(path, clock=clock) as log:
        assert log.integrity.startswith("cannot open")
        assert log.quarantined_to is not None
        event = log.pending(limit=10_000)[-1]
        assert isinstance(event, EventRecord) and event.code == "store.quarantined"
        assert event.detail["salvaged_rows"] == 0
        assert event.detail["seq_gap"] > 0
        with log.batch() as b:
            assert reading(b) == event.seq + 1


@pytest.mark.parametrize("seed", range(12))
def test_any_corrupt_page_leaves_a_working_log(tmp_path: Path, clock: FakeClock, seed: int) -> None:
    """Whatever page is hit, opening never fails, and the rebuilt log works and never
    hands out a seq it may already have used."""
    path = tmp_path / "edge.db"
    write_readings(path, 1000)
    pages = path.stat().st_size // 4096
    rng = random.Random(seed)
    for _ in range(1 + seed % 3):
        corrupt_page(path, rng.randint(1, pages), seed=rng.randrange(2**32))
    with EdgeLog(path, clock=clock) as log:
        assert log._conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = [r.seq for r in log.records_between(0, 2**63 - 1)]
        assert stored == sorted(set(stored))
        with log.batch() as b:
            seq = reading(b, meter="999999999999")
        assert seq is not None and seq > 1001 and seq > max(stored)
    with EdgeLog(path, clock=clock) as reopened:
        assert reopened.integrity == "ok"


# -- the natural-key model ---------------------------------------------------------------

VALUES = st.sampled_from([Decimal("1.0"), Decimal("1.00"), Decimal("2"), Decimal("0.1"), 3])
OPS = st.lists(
    st.tuples(
        st.integers(0, 2),  # meter
        st.integers(0, 2),  # period (days)
        VALUES,
        st.sampled_from(["ok", "estimated"]),
        st.booleans(),  # commit the batch after this op
    ),
    max_size=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_readings_follow_the_natural_key_model(tmp_path: Path, ops: list[Any]) -> None:
    """Against a dict model: one row per key with the last distinct value; a seq for every
    insert and every correction, none for a duplicate; seqs strictly increasing."""
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "edge.db"  # a fresh file per example
    model: dict[tuple[str, str], tuple[Decimal, str]] = {}
    seq_of: dict[tuple[str, str], int] = {}
    assigned: list[int] = []
    with EdgeLog(path) as log:
        pending_ops = list(ops)
        while pending_ops:
            with log.batch() as b:
                while pending_ops:
                    meter_n, day, value, quality, commit = pending_ops.pop(0)
                    meter = f"{meter_n:012d}"
                    period = T0 + timedelta(days=day)
                    key = (meter, format_utc(period))
                    seq = reading(b, meter=meter, period=period, value=value, quality=quality)
                    new = (Decimal(value), quality)
                    if model.get(key) == new:
                        assert seq is None
                    else:
                        assert seq is not None
                        assigned.append(seq)
                        model[key] = new
                        seq_of[key] = seq
                    if commit:
                        break
        assert assigned == list(range(1, len(assigned) + 1))
        stored = {
            (r.meter, r.period_ts): (Decimal(r.value), r.quality, r.seq)
            for r in log.pending(limit=1000)
            if isinstance(r, ReadingRecord)
        }
        assert stored == {k: (*v, seq_of[k]) for k, v in model.items()}
        assert log.corrections() == len(assigned) - len(model)
