"""The idempotent ingest store, specified by what a gateway's batches leave in the database:
each record once, corrections by higher seq, a contiguous watermark — whatever the order,
repetition or concurrency of delivery. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from central.db import gateway_events, gateways, meters, readings, statistics
from central.ingest.store import (
    ApplyResult,
    IncomingBatch,
    IncomingEvent,
    IncomingReading,
    IncomingStatistic,
    IngestStore,
    InvalidBatchError,
    MeterEntry,
    UnknownGatewayError,
)

pytest_plugins = ["central_fixtures"]

GATEWAY = "gw-0001"
BASE = datetime(2026, 11, 1, tzinfo=UTC)
METERS = 7


def reading(seq: int, value: Decimal | None = None, key: int | None = None) -> IncomingReading:
    """Reading ``seq``; its natural key comes from ``key`` (default: the seq itself)."""
    key = seq if key is None else key
    return IncomingReading(
        seq=seq,
        meter=f"{key % METERS:012d}",
        obis="1.8.0",
        time=BASE + timedelta(hours=key // METERS),
        value=Decimal(seq) / 100 if value is None else value,
        unit="kWh",
        kind="curve",
        source="scheduled",
        quality="ok",
        read_at=BASE + timedelta(hours=key // METERS, minutes=1),
    )


def batch(seq_from: int, seq_to: int) -> tuple[int, int, list[IncomingReading]]:
    return seq_from, seq_to, [reading(seq) for seq in range(seq_from, seq_to + 1)]


def apply(store: IngestStore, seq_from: int, seq_to: int, gateway: str = GATEWAY) -> ApplyResult:
    _, _, rows = batch(seq_from, seq_to)
    return store.apply_batch(gateway, "s1", seq_from, seq_to, rows)


def table(store: IngestStore) -> list[tuple[Any, ...]]:
    """Every reading as the oracle compares it (received_at left out: arrival time)."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(
                readings.c.meter,
                readings.c.obis,
                readings.c.ts,
                readings.c.value,
                readings.c.seq,
                readings.c.gateway,
                readings.c.corrections,
            ).order_by(readings.c.meter, readings.c.obis, readings.c.ts)
        ).all()
    return [tuple(row) for row in rows]


@pytest.fixture
def enrolled(store: IngestStore) -> IngestStore:
    store.enroll_gateway(GATEWAY, public_key_pem="PEM", key_id="k1")
    return store


def test_a_batch_is_stored_and_acknowledged(enrolled: IngestStore) -> None:
    assert apply(enrolled, 1, 10) == ApplyResult(up_to_seq=10, inserted=10, duplicates=0, updated=0)
    assert enrolled.count_readings() == 10
    assert enrolled.watermark(GATEWAY) == 10
    stored = enrolled.readings(f"{3:012d}", "1.8.0", BASE, BASE + timedelta(days=1))
    assert [(r.seq, r.value, r.gateway) for r in stored] == [
        (3, Decimal("0.03"), GATEWAY),
        (10, Decimal("0.1"), GATEWAY),
    ]


def test_the_same_batch_three_times_is_stored_once(enrolled: IngestStore) -> None:
    results = [apply(enrolled, 1, 20) for _ in range(3)]
    assert results[0] == ApplyResult(20, 20, 0, 0)
    assert results[1] == results[2] == ApplyResult(20, 0, 20, 0)
    assert enrolled.count_readings() == 20


def test_shuffled_batches_give_the_same_table_and_watermark(
    enrolled: IngestStore, store: IngestStore
) -> None:
    ranges = [(1 + 10 * i, 10 * (i + 1)) for i in range(20)]
    shuffled = ranges * 3
    random.Random(7).shuffle(shuffled)
    for seq_from, seq_to in shuffled:
        apply(enrolled, seq_from, seq_to)
    assert enrolled.watermark(GATEWAY) == 200
    assert enrolled.pending_ranges(GATEWAY) == []
    assert enrolled.count_readings() == 200
    expected = [
        (r.meter, r.obis, r.time, r.value, r.seq, GATEWAY, 0)
        for r in sorted(
            (reading(seq) for seq in range(1, 201)), key=lambda r: (r.meter, r.obis, r.time)
        )
    ]
    assert table(enrolled) == expected


def test_watermark_advances_only_when_contiguous(enrolled: IngestStore) -> None:
    assert apply(enrolled, 11, 20).up_to_seq == 0
    assert enrolled.pending_ranges(GATEWAY) == [(11, 20)]
    assert apply(enrolled, 31, 40).up_to_seq == 0
    assert apply(enrolled, 1, 5).up_to_seq == 5
    assert enrolled.pending_ranges(GATEWAY) == [(11, 20), (31, 40)]
    assert apply(enrolled, 6, 10).up_to_seq == 20
    assert enrolled.pending_ranges(GATEWAY) == [(31, 40)]
    assert apply(enrolled, 21, 30).up_to_seq == 40
    assert enrolled.pending_ranges(GATEWAY) == []
    assert enrolled.count_readings() == 40


def test_adjacent_ranges_above_the_watermark_are_merged(enrolled: IngestStore) -> None:
    for seq_from in (41, 11, 31, 21):
        apply(enrolled, seq_from, seq_from + 9)
    assert enrolled.pending_ranges(GATEWAY) == [(11, 50)]
    assert apply(enrolled, 1, 10).up_to_seq == 50


def test_a_batch_with_holes_covers_its_whole_range(enrolled: IngestStore) -> None:
    """Seqs freed by a correction or an eviction carry no record but must not stall."""
    rows = [reading(1), reading(4)]
    result = enrolled.apply_batch(GATEWAY, "s1", 1, 6, rows)
    assert result == ApplyResult(6, 2, 0, 0)
    assert enrolled.apply_batch(GATEWAY, "s1", 7, 9, []).up_to_seq == 9


def test_a_duplicate_below_the_watermark_writes_nothing_and_is_acknowledged(
    enrolled: IngestStore,
) -> None:
    apply(enrolled, 1, 30)
    before = table(enrolled)
    # Same seqs, different content: proof that nothing was written (a real gateway never
    # reuses a seq).
    forged = [reading(seq, value=Decimal("999")) for seq in range(3, 8)]
    assert enrolled.apply_batch(GATEWAY, "s1", 3, 7, forged) == ApplyResult(30, 0, 5, 0)
    assert table(enrolled) == before


def test_a_duplicate_of_a_pending_range_writes_nothing(enrolled: IngestStore) -> None:
    apply(enrolled, 11, 20)
    assert apply(enrolled, 12, 15) == ApplyResult(0, 0, 4, 0)


def test_a_partly_applied_batch_stores_only_its_new_records(enrolled: IngestStore) -> None:
    apply(enrolled, 1, 10)
    assert apply(enrolled, 5, 15) == ApplyResult(15, 5, 6, 0)
    assert enrolled.count_readings() == 15


def test_a_correction_with_a_higher_seq_wins(enrolled: IngestStore) -> None:
    apply(enrolled, 1, 10)
    corrected = reading(11, value=Decimal("42.000001"), key=4)
    assert enrolled.apply_batch(GATEWAY, "s1", 11, 11, [corrected]) == ApplyResult(11, 0, 0, 1)
    (stored,) = enrolled.readings(
        corrected.meter, "1.8.0", corrected.time, corrected.time + timedelta(seconds=1)
    )
    assert (stored.value, stored.seq, stored.corrections) == (Decimal("42.000001"), 11, 1)
    assert enrolled.count_readings() == 10


def test_an_older_version_arriving_late_is_ignored(enrolled: IngestStore) -> None:
    newer = reading(20, value=Decimal("2"), key=100)
    older = reading(8, value=Decimal("1"), key=100)
    assert enrolled.apply_batch(GATEWAY, "s1", 20, 20, [newer]).inserted == 1
    assert enrolled.apply_batch(GATEWAY, "s1", 8, 8, [older]) == ApplyResult(0, 0, 1, 0)
    (stored,) = enrolled.readings(newer.meter, None, newer.time, newer.time + timedelta(hours=1))
    assert (stored.value, stored.seq, stored.corrections) == (Decimal("2"), 20, 0)


def test_two_versions_in_one_batch_keep_the_higher_seq(enrolled: IngestStore) -> None:
    rows = [reading(2, Decimal("9"), key=50), reading(1, Decimal("1"), key=50)]
    assert enrolled.apply_batch(GATEWAY, "s1", 1, 2, rows) == ApplyResult(2, 1, 1, 0)
    (stored,) = enrolled.readings(rows[0].meter, "1.8.0", BASE, BASE + timedelta(days=30))
    assert stored.value == Decimal("9")


def test_events_and_statistics_are_stored_once(enrolled: IngestStore) -> None:
    events = [IncomingEvent(3, "cover_open", BASE, {"count": 2}, meter="000000000001")]
    stats = [IncomingStatistic(4, "collection_success", Decimal("0.995"), BASE, {"bus": "rs485-1"})]
    rows = [reading(1), reading(2)]
    for attempt in range(3):
        result = enrolled.apply_batch(GATEWAY, "s1", 1, 4, rows, events, stats)
        assert result == (ApplyResult(4, 4, 0, 0) if attempt == 0 else ApplyResult(4, 0, 4, 0))
    with enrolled.engine.connect() as conn:
        (event,) = conn.execute(select(gateway_events)).all()
        (stat,) = conn.execute(select(statistics)).all()
    assert (event.seq, event.code, event.detail, event.meter) == (
        3,
        "cover_open",
        {"count": 2},
        "000000000001",
    )
    assert (stat.name, stat.value, stat.labels) == (
        "collection_success",
        Decimal("0.995"),
        {"bus": "rs485-1"},
    )


def test_central_events_have_no_seq_and_are_all_kept(enrolled: IngestStore) -> None:
    detail = {"reason": "bad signature", "seq_from": 1, "value": Decimal("1.5")}
    assert enrolled.record_gateway_event(GATEWAY, "batch_rejected", detail, BASE)
    assert enrolled.record_gateway_event(GATEWAY, "batch_rejected", detail, BASE)
    assert enrolled.record_gateway_event(GATEWAY, "edge_event", {}, BASE, seq=5)
    assert not enrolled.record_gateway_event(GATEWAY, "edge_event", {}, BASE, seq=5)
    with enrolled.engine.connect() as conn:
        rows = conn.execute(select(gateway_events).order_by(gateway_events.c.id)).all()
    assert [(r.code, r.seq) for r in rows] == [
        ("batch_rejected", None),
        ("batch_rejected", None),
        ("edge_event", 5),
    ]
    assert rows[0].detail == {"reason": "bad signature", "seq_from": 1, "value": "1.5"}


def test_gateways_have_independent_watermarks(enrolled: IngestStore) -> None:
    enrolled.enroll_gateway("gw-0002")
    apply(enrolled, 1, 10)
    assert enrolled.apply_batch("gw-0002", "x", 1, 3, []).up_to_seq == 3
    assert enrolled.watermark(GATEWAY) == 10
    assert enrolled.watermark("gw-0002") == 3
    assert enrolled.watermark("never-seen") == 0


def test_unknown_gateway_is_refused(store: IngestStore) -> None:
    with pytest.raises(UnknownGatewayError, match="not enrolled"):
        apply(store, 1, 2, gateway="stranger")
    with pytest.raises(UnknownGatewayError):
        store.record_birth("stranger", "s", {}, BASE)
    with pytest.raises(UnknownGatewayError):
        store.record_gateway_event("stranger", "x")


@pytest.mark.parametrize(
    ("seq_from", "seq_to", "rows", "message"),
    [
        (5, 6, [reading(7)], "outside the batch range"),
        (1, 2, [reading(1), reading(1)], "twice"),
        (0, 3, [], "bad seq range"),
        (5, 2, [], "bad seq range"),
        (1, 1, [reading(1, value=Decimal("0.0000001"))], "decimal places"),
        (
            1,
            1,
            [
                IncomingReading(
                    1, "m", "1.8.0", datetime(2026, 1, 1), Decimal(1), None, "d", "s", "ok", BASE
                )
            ],
            "naive",
        ),
    ],
)
def test_malformed_batches_are_refused_and_change_nothing(
    enrolled: IngestStore, seq_from: int, seq_to: int, rows: list[IncomingReading], message: str
) -> None:
    with pytest.raises(InvalidBatchError, match=message):
        enrolled.apply_batch(GATEWAY, "s1", seq_from, seq_to, rows)
    assert enrolled.count_readings() == 0
    assert enrolled.watermark(GATEWAY) == 0


def test_two_consumers_with_overlapping_batches_equal_serial_application(
    store: IngestStore,
) -> None:
    store.enroll_gateway(GATEWAY)
    ranges = [(1 + 25 * i, 25 * (i + 1)) for i in range(16)]
    plans = []
    for seed in (1, 2):
        plan = ranges + random.Random(seed).sample(ranges, 8)
        random.Random(seed + 10).shuffle(plan)
        plans.append(plan)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def consume(plan: list[tuple[int, int]]) -> None:
        try:
            start.wait()
            for seq_from, seq_to in plan:
                apply(store, seq_from, seq_to)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert store.watermark(GATEWAY) == 400
    assert store.pending_ranges(GATEWAY) == []
    concurrent = table(store)

    with store.engine.begin() as conn:
        conn.execute(readings.delete())
    serial = IngestStore(store.engine)
    serial.enroll_gateway("gw-serial")
    for seq_from, seq_to in ranges:
        apply(serial, seq_from, seq_to, gateway="gw-serial")
    assert [row[:5] + row[6:] for row in table(serial)] == [row[:5] + row[6:] for row in concurrent]


def test_birth_death_and_the_meter_archive(enrolled: IngestStore) -> None:
    archive = [
        MeterEntry("000000000001", "000000000001", "dlt645", bus="rs485-1", prepaid=True),
        MeterEntry("000000000002", "000000000002", "dlt698", protected=True),
    ]
    birth = {"software": "0.1.0", "archive_hash": "ab12", "log_depth": 5}
    assert enrolled.record_birth(GATEWAY, "s1", birth, BASE, archive)
    info = enrolled.gateway(GATEWAY)
    assert info is not None
    assert (info.online, info.session, info.last_birth, info.last_birth_at) == (
        True,
        "s1",
        birth,
        BASE,
    )
    assert (info.public_key_pem, info.key_id) == ("PEM", "k1")

    # The will of the previous session, delivered late, does not take the gateway offline.
    assert not enrolled.record_death(GATEWAY, BASE + timedelta(minutes=1), session="s0")
    assert enrolled.gateway(GATEWAY).online  # type: ignore[union-attr]
    assert enrolled.record_death(GATEWAY, BASE + timedelta(minutes=2), session="s1")
    info = enrolled.gateway(GATEWAY)
    assert info is not None and not info.online
    assert info.last_death_at == BASE + timedelta(minutes=2)

    # A retained birth redelivered after a newer one is stale.
    later = BASE + timedelta(hours=1)
    moved = [MeterEntry("000000000001", "000000000001", "dlt645", bus="rs485-2")]
    assert enrolled.record_birth(GATEWAY, "s2", {"software": "0.1.1"}, later, moved)
    assert not enrolled.record_birth(GATEWAY, "s1", birth, BASE)
    info = enrolled.gateway(GATEWAY)
    assert info is not None
    assert (info.online, info.session, info.last_birth) == (True, "s2", {"software": "0.1.1"})

    with enrolled.engine.connect() as conn:
        rows = {r.meter: r for r in conn.execute(select(meters)).all()}
    assert rows["000000000001"].bus == "rs485-2"
    assert rows["000000000001"].prepaid is False
    assert (rows["000000000001"].first_seen_at, rows["000000000001"].last_seen_at) == (BASE, later)
    assert rows["000000000002"].protected is True
    assert rows["000000000002"].last_seen_at == BASE


def test_enrolling_again_replaces_the_key_only(enrolled: IngestStore) -> None:
    apply(enrolled, 1, 5)
    enrolled.enroll_gateway(GATEWAY, public_key_pem="NEW", key_id="k2")
    info = enrolled.gateway(GATEWAY)
    assert info is not None and (info.public_key_pem, info.key_id) == ("NEW", "k2")
    assert enrolled.watermark(GATEWAY) == 5
    with enrolled.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(gateways)).scalar() == 1


def test_readings_query_by_quantity_and_range(enrolled: IngestStore) -> None:
    apply(enrolled, 1, 70)  # meter 0: seqs 7, 14, … at hours 1, 2, …
    meter = f"{0:012d}"
    got = enrolled.readings(meter, "1.8.0", BASE + timedelta(hours=2), BASE + timedelta(hours=5))
    assert [r.ts for r in got] == [BASE + timedelta(hours=h) for h in (2, 3, 4)]
    assert enrolled.readings(meter, "2.8.0", BASE, BASE + timedelta(days=1)) == []
    assert len(enrolled.readings(meter, None, BASE, BASE + timedelta(days=1))) == 10
    assert enrolled.count_readings(GATEWAY) == 70


def test_a_group_of_batches_gives_what_one_by_one_gives(store: IngestStore) -> None:
    """apply_batches: one transaction, the same per-batch results as applying in turn."""
    store.enroll_gateway(GATEWAY)
    store.enroll_gateway("gw-0002")
    apply(store, 1, 10)  # committed before: the group sees it as stored
    plan = [(11, 20), (1, 10), (11, 20), (5, 15), (31, 40), (21, 25)]
    group = []
    for seq_from, seq_to in plan:
        _, _, rows = batch(seq_from, seq_to)
        group.append(IncomingBatch(GATEWAY, "s1", seq_from, seq_to, rows))
    other = IncomingBatch("gw-0002", "s9", 1, 3, [reading(1, key=1000)])
    corrected = IncomingBatch(GATEWAY, "s1", 41, 41, [reading(41, Decimal("7"), key=2)])
    results = store.apply_batches([*group, other, corrected])
    assert [(r.inserted, r.duplicates, r.updated) for r in results] == [
        (10, 0, 0),
        (0, 10, 0),
        (0, 10, 0),
        (0, 11, 0),
        (10, 0, 0),
        (5, 0, 0),
        (1, 0, 0),
        (0, 0, 1),
    ]
    assert {r.up_to_seq for r in results[:6]} == {25}
    assert results[6].up_to_seq == 3
    assert store.watermark(GATEWAY) == 25
    assert store.pending_ranges(GATEWAY) == [(31, 41)]
    assert store.count_readings() == 36
    (stored,) = store.readings(f"{2:012d}", "1.8.0", BASE, BASE + timedelta(hours=1))
    assert (stored.seq, stored.value, stored.corrections) == (41, Decimal("7"), 1)


def test_two_versions_in_one_group_store_the_higher_seq(enrolled: IngestStore) -> None:
    first = IncomingBatch(GATEWAY, "s1", 1, 1, [reading(1, Decimal("1"), key=9)])
    second = IncomingBatch(GATEWAY, "s1", 2, 2, [reading(2, Decimal("2"), key=9)])
    results = enrolled.apply_batches([second, first])
    assert [(r.inserted, r.duplicates) for r in results] == [(1, 0), (0, 1)]
    (stored,) = enrolled.readings(f"{9 % 7:012d}", "1.8.0", BASE, BASE + timedelta(days=1))
    assert (stored.seq, stored.value) == (2, Decimal("2"))


def test_a_group_with_a_malformed_batch_writes_nothing(enrolled: IngestStore) -> None:
    good = IncomingBatch(GATEWAY, "s1", 1, 2, [reading(1), reading(2)])
    bad = IncomingBatch(GATEWAY, "s1", 3, 3, [reading(4)])
    with pytest.raises(InvalidBatchError, match=r"batch 1 \(gw-0001 3..3\)"):
        enrolled.apply_batches([good, bad])
    assert enrolled.count_readings() == 0
    assert enrolled.apply_batches([]) == []


def test_public_names() -> None:
    import central.db
    import central.ingest
    import central.ingest.store

    assert set(central.ingest.__all__) <= set(central.ingest.store.__all__)
    assert {"IngestStore", "ApplyResult", "IncomingBatch"} <= set(central.ingest.__all__)
    assert {"make_engine", "upgrade", "metadata", "readings"} <= set(central.db.__all__)
    for module in (central.db, central.ingest, central.ingest.store):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
