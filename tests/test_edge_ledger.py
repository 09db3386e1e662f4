"""The expected-slot ledger on a real SQLite file: states, statistics, restart state."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from edge_agent.tasks import Ledger, SuccessStats
from edge_agent.tasks.ledger import LedgerFormatError

# 2026-01-10 00:00 Shanghai = the freeze that closes Jan 9
SLOT = datetime(2026, 1, 9, 16, 0, tzinfo=UTC)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.db")


def test_states_expected_got_failed_exhausted(ledger: Ledger) -> None:
    assert ledger.expect("daily_frozen", "m1", SLOT, bus="b1") is True
    assert ledger.expect("daily_frozen", "m1", SLOT, bus="b1") is False  # idempotent
    (row,) = ledger.slots()
    assert (row.state, row.attempts, row.day, row.bus) == ("expected", 0, date(2026, 1, 10), "b1")

    ledger.failed("daily_frozen", "m1", SLOT, "timeout: read 04000101", bus="b1")
    ledger.failed("daily_frozen", "m1", SLOT, "timeout: read 05060001", source="backfill")
    row = ledger.slots(state="failed")[0]
    assert (row.attempts, row.reason, row.source) == (2, "timeout: read 05060001", "backfill")

    ledger.got("daily_frozen", "m1", SLOT, source="backfill")
    row = ledger.slot("daily_frozen", "m1", SLOT)  # type: ignore[assignment]
    assert row is not None
    assert (row.state, row.attempts, row.reason, row.got_at is not None) == ("got", 3, "", True)
    # a got slot never goes back to failed or exhausted
    ledger.failed("daily_frozen", "m1", SLOT, "late duplicate failure")
    ledger.exhaust("daily_frozen", "m1", SLOT, "window passed")
    assert ledger.slot("daily_frozen", "m1", SLOT).state == "got"  # type: ignore[union-attr]

    ledger.failed("daily_frozen", "m2", SLOT, "timeout")
    ledger.exhaust("daily_frozen", "m2", SLOT, "backfill window passed")
    assert [s.meter for s in ledger.slots(state="exhausted")] == ["m2"]
    with pytest.raises(ValueError, match="unknown slot state"):
        ledger.slots(state="lost")


def test_success_per_task_day_bus_and_meter(ledger: Ledger) -> None:
    with ledger.transaction():
        for day in range(3):
            slot = SLOT + timedelta(days=day)
            for meter in range(20):
                bus = "b1" if meter < 10 else "b2"
                key = f"m{meter}"
                if meter == 19 and day > 0:
                    ledger.failed("daily_frozen", key, slot, "timeout", bus=bus)
                else:
                    ledger.got("daily_frozen", key, slot, bus=bus)
        ledger.expect("curve", "m1", SLOT, bus="b1")
    total = ledger.success(task="daily_frozen")
    assert (total.expected, total.got, total.failed, total.pending) == (60, 58, 2, 0)
    assert total.rate == Decimal("0.9667") and total.gate == ">=95%"
    assert ledger.success(task="daily_frozen", day=date(2026, 1, 10)).gate == "all"
    assert ledger.success(task="daily_frozen", bus="b2", day=date(2026, 1, 11)).rate == Decimal(
        "0.9"
    )
    assert ledger.success(meter="m19").got == 1
    assert ledger.success(task="curve").pending == 1
    assert ledger.success(task="monthly_frozen").rate == 1  # nothing expected
    by_bus = ledger.breakdown(date(2026, 1, 12), "bus")
    assert by_bus[("daily_frozen", "b1")].rate == 1
    assert by_bus[("daily_frozen", "b2")].got == 9
    assert SuccessStats(100, 94, 6, 0).gate == "<95%"
    assert ledger.days() == [date(2026, 1, 10), date(2026, 1, 11), date(2026, 1, 12)]


def test_task_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger(path)
    run = datetime(2026, 1, 10, 4, 0, tzinfo=UTC)
    ledger.completed("daily_frozen", SLOT, run)
    ledger.completed("daily_frozen", SLOT - timedelta(days=1), run)  # never moves back
    ledger.set_event_mark("m1", "power_down", 7, SLOT)
    ledger.record_sync("m1", run, 90.0, 0.2, "broadcast")
    ledger.defer_sync("m2", "b1", 120.0, run)
    assert ledger.mark_published("success", date(2026, 1, 9)) is True
    ledger.close()

    again = Ledger(path)
    assert again.last_slot("daily_frozen") == SLOT
    assert again.last_run("daily_frozen") == run
    assert again.last_slot("curve") is None
    assert again.event_mark("m1", "power_down") == (7, SLOT)
    assert again.event_mark("m9", "power_down") == (None, None)
    assert again.syncs_on("m1", date(2026, 1, 10)) == 1
    assert again.syncs_on("m1", date(2026, 1, 11)) == 0
    assert again.pending_syncs() == {"m2": ("b1", 120.0, run)}
    assert again.mark_published("success", date(2026, 1, 9)) is False
    assert again.is_published("success", date(2026, 1, 9))
    again.close()


def test_wal_and_a_read_only_view(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    writer = Ledger(path)
    writer.got("daily_frozen", "m1", SLOT)
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    reader = Ledger(path, readonly=True)
    assert reader.success().got == 1
    with pytest.raises(sqlite3.OperationalError):
        reader.expect("daily_frozen", "m2", SLOT)
    reader.close()
    writer.close()


def test_a_failed_transaction_leaves_nothing(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError), ledger.transaction():
        ledger.expect("daily_frozen", "m1", SLOT)
        raise RuntimeError("bus cycle aborted")
    assert ledger.slots() == []


def test_threads_share_one_writer(ledger: Ledger) -> None:
    def mark(bus: int) -> None:
        for meter in range(50):
            with ledger.transaction():
                ledger.expect("daily_frozen", f"b{bus}m{meter}", SLOT, bus=f"b{bus}")
                ledger.got("daily_frozen", f"b{bus}m{meter}", SLOT, bus=f"b{bus}")

    threads = [threading.Thread(target=mark, args=(bus,)) for bus in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ledger.success().got == 400


def test_naive_slot_is_refused(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="aware"):
        ledger.expect("daily_frozen", "m1", datetime(2026, 1, 10))


def test_prune_forgets_old_bookkeeping(ledger: Ledger) -> None:
    for day in range(5):
        ledger.got("daily_frozen", "m1", SLOT + timedelta(days=day))
    ledger.record_sync("m1", SLOT, 90.0, 0.1, "broadcast")
    assert ledger.prune(SLOT + timedelta(days=3)) == 4
    assert [s.day for s in ledger.slots()] == [date(2026, 1, 13), date(2026, 1, 14)]


def test_per_meter_consecutive_failures_and_last_success(ledger: Ledger) -> None:
    for day in range(5):
        slot = SLOT + timedelta(days=day)
        ledger.got("daily_frozen", "good", slot, bus="b1")
        if day < 2:
            ledger.got("daily_frozen", "flaky", slot, bus="b1")
        else:
            ledger.failed("daily_frozen", "flaky", slot, "timeout", bus="b1")
        ledger.failed("daily_frozen", "dead", slot, "timeout", bus="b2")
    meters = ledger.meters("daily_frozen")
    assert meters["good"].consecutive_failures == 0
    assert meters["good"].last_got_slot == SLOT + timedelta(days=4)
    assert meters["flaky"].consecutive_failures == 3
    assert meters["flaky"].last_got_slot == SLOT + timedelta(days=1)
    assert meters["flaky"].stats.rate == Decimal("0.4")
    assert meters["dead"].consecutive_failures == 5 and meters["dead"].last_got_at is None
    assert meters["dead"].to_dict()["bus"] == "b2"


def test_forget_drops_only_an_expected_slot(ledger: Ledger) -> None:
    ledger.expect("curve", "m1", SLOT)
    ledger.got("curve", "m2", SLOT)
    ledger.forget("curve", "m1", SLOT)
    ledger.forget("curve", "m2", SLOT)
    assert [(s.meter, s.state) for s in ledger.slots()] == [("m2", "got")]


# -- the previous version's ledger file -------------------------------------------------

V0_SLOTS = """
CREATE TABLE slots (
    task TEXT NOT NULL, meter TEXT NOT NULL, slot TEXT NOT NULL, day TEXT NOT NULL,
    bus TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0, source TEXT NOT NULL DEFAULT '',
    expected_at TEXT NOT NULL, updated_at TEXT NOT NULL, got_at TEXT,
    PRIMARY KEY (task, meter, slot)
) WITHOUT ROWID, STRICT;
CREATE INDEX slots_by_state ON slots (state, slot);
CREATE INDEX slots_by_day ON slots (day, task);
CREATE TABLE task_state (
    task TEXT PRIMARY KEY, last_slot TEXT, last_run_at TEXT, detail TEXT NOT NULL DEFAULT '{}'
) STRICT;
CREATE TABLE event_marks (
    meter TEXT NOT NULL, kind TEXT NOT NULL, total INTEGER, last_start TEXT,
    PRIMARY KEY (meter, kind)
) STRICT;
"""


def v0_ledger(path: Path, days: int = 3) -> None:
    """A ledger as the previous version wrote it: text columns, keyed meter first."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(V0_SLOTS)
    for n in range(days):
        slot = SLOT + timedelta(days=n)
        text = slot.strftime("%Y-%m-%dT%H:%M:%SZ")
        day = (date(2026, 1, 10) + timedelta(days=n)).isoformat()
        at = (slot + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for meter in range(6):
            bus = "b2" if meter % 2 else "b1"
            state = "failed" if meter == 5 else "got"
            db.execute(
                "INSERT INTO slots VALUES ('daily_frozen', ?, ?, ?, ?, ?, ?, 1, 'scheduled', "
                "?, ?, ?)",
                (f"m{meter}", text, day, bus, state, "timeout" if meter == 5 else "", at, at,
                 at if state == "got" else None),
            )  # fmt: skip
    db.execute("INSERT INTO task_state VALUES ('daily_frozen', ?, ?, '{}')", (SLOT_TEXT, SLOT_TEXT))
    db.execute("INSERT INTO event_marks VALUES ('m1', 'power_down', 7, ?)", (SLOT_TEXT,))
    db.close()


SLOT_TEXT = SLOT.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_previous_version_ledger_is_converted_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent.tasks import ledger as ledger_module

    path = tmp_path / "ledger.db"
    v0_ledger(path)
    with pytest.raises(LedgerFormatError, match="start the agent once"):
        Ledger(path, readonly=True)  # the CLI with the daemon down: a clear message
    monkeypatch.setattr(ledger_module, "MIGRATION_CHUNK", 5)  # several chunks
    with Ledger(path) as ledger:
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (1,)
        rows = ledger.slots()
        assert len(rows) == 18
        first = ledger.slot("daily_frozen", "m0", SLOT)
        assert first is not None
        assert (first.state, first.bus, first.day, first.source) == (
            "got", "b1", date(2026, 1, 10), "scheduled",
        )  # fmt: skip
        assert first.got_at == SLOT + timedelta(minutes=5)
        dead = ledger.meters("daily_frozen")["m5"]
        assert (dead.consecutive_failures, dead.last_got_slot, dead.bus) == (3, None, "b2")
        assert ledger.success(task="daily_frozen", day=date(2026, 1, 11)).got == 5
        assert [s.meter for s in ledger.slots(state="failed")] == ["m5"] * 3
        assert ledger.days() == [date(2026, 1, 10), date(2026, 1, 11), date(2026, 1, 12)]
        # what the collector must remember across restarts came through untouched
        assert ledger.last_slot("daily_frozen") == SLOT
        assert ledger.event_mark("m1", "power_down") == (7, SLOT)
        # meters were numbered bus by bus (b1's first), so a bus cycle's rows sit together
        numbers = dict(ledger._db.execute("SELECT meter, mid FROM meters"))
        assert sorted(numbers, key=numbers.__getitem__) == ["m0", "m2", "m4", "m1", "m3", "m5"]
        ledger.got("daily_frozen", "m5", SLOT, source="backfill")
        assert ledger.meters("daily_frozen")["m5"].consecutive_failures == 2
    reader = Ledger(path, readonly=True)
    assert reader.success(task="daily_frozen").got == 16
    reader.close()


def test_meters_are_numbered_in_the_order_given(ledger: Ledger) -> None:
    assert ledger.register_meters([("m9", "b1"), ("m1", "b1"), ("m5", "b2")]) == 3
    assert ledger.register_meters([("m1", "b1"), ("m7", "b2")]) == 1
    numbers = dict(ledger._db.execute("SELECT meter, mid FROM meters"))
    assert sorted(numbers, key=numbers.__getitem__) == ["m9", "m1", "m5", "m7"]
    ledger.got("daily_frozen", "m1", SLOT, bus="b1")
    assert ledger.slot("daily_frozen", "m1", SLOT).bus == "b1"  # type: ignore[union-attr]


def test_a_rolled_back_transaction_forgets_the_numbers_it_gave(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError), ledger.transaction():
        ledger.got("daily_frozen", "new", SLOT, bus="b9")
        raise RuntimeError("cycle aborted")
    ledger.got("daily_frozen", "new", SLOT, bus="b9")  # numbered again, in a committed one
    assert ledger.slot("daily_frozen", "new", SLOT).bus == "b9"  # type: ignore[union-attr]


def test_a_slot_not_even_tried_is_not_rewritten(ledger: Ledger) -> None:
    """A quarantined meter is not asked: its open slots keep their row (补抄 of a dead meter
    must not rewrite every open slot every hour), a new slot is failed with no attempt."""
    ledger.failed("curve", "dead", SLOT, "timeout: curve 06010001", bus="b1")
    before = ledger.slot("curve", "dead", SLOT)
    ledger.failed("curve", "dead", SLOT, "quarantined: curve", source="backfill", attempted=False)
    assert ledger.slot("curve", "dead", SLOT) == before
    later = SLOT + timedelta(hours=1)
    ledger.failed("curve", "dead", later, "quarantined: curve", bus="b1", attempted=False)
    row = ledger.slot("curve", "dead", later)
    assert row is not None and (row.state, row.attempts) == ("failed", 0)
    ledger.got("curve", "dead", later, source="backfill")  # it answered a probe at last
    assert ledger.slot("curve", "dead", later).state == "got"  # type: ignore[union-attr]
