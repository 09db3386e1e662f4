"""In-line VEE inside the ingest store: every reading is validated in the transaction that
stores it and goes in with its ``vee_status`` (no second write), on SQLite and PostgreSQL.

Values (``1-0:1.8.0``, a register): 100 → 100 → 99.99 goes backwards (V7, an Issue: the
reading fails); the rule and its thresholds are tested one by one in test_vee_inline.py —
here the point is the wiring: statuses as written, exceptions only for stored values, the
old value's exceptions withdrawn when a correction replaces it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select
from vee_support import GATEWAY, QUARTER, T0, Feed, exceptions, reading, status_of

from central.db.schema import readings
from central.ingest.store import IncomingBatch, IncomingReading, IngestStore, MeterEntry
from central.vee import InlineValidator
from shared_protocol.wire import ColumnarBatch, RecordBatch, WireReading, canonical_json
from shared_protocol.wire.envelope import _batch_fast

pytest_plugins = ["central_fixtures"]

E = "1-0:1.8.0"


class Store:
    """The ingest store with in-line VEE, fed batch by batch with rising seqs."""

    def __init__(self, engine: Engine, vee: bool = True) -> None:
        validator = InlineValidator(engine, None, lambda: T0 + timedelta(days=60), refresh_s=0)
        self.store = IngestStore(engine, validator if vee else None)
        self.store.enroll_gateway(GATEWAY)
        archive = [MeterEntry(m, m, "dlt645-2007") for m in ("m1", "m2")]
        self.store.record_birth(GATEWAY, 1, {}, T0 - timedelta(days=60), archive)
        self.seq = 0

    def send(self, *batch: IncomingReading) -> None:
        numbered = []
        for r in batch:
            self.seq += 1
            numbered.append(replace(r, seq=self.seq))
        self.store.apply_batch(GATEWAY, 1, numbered[0].seq, numbered[-1].seq, numbered)


def series() -> list[IncomingReading]:
    return [
        reading("m1", E, T0, "100"),
        reading("m1", E, T0 + QUARTER, "100"),
        reading("m1", E, T0 + 2 * QUARTER, "99.99"),  # backwards: V7
        reading("m1", E, T0 + 3 * QUARTER, "100.01"),
        reading("m2", E, T0, "-0.01"),  # a negative register: V7
    ]


def test_readings_are_stored_with_their_vee_status(engine: Engine) -> None:
    store = Store(engine)
    store.send(*series())
    assert [status_of(engine, r.meter, r.obis, r.time) for r in series()] == [
        "valid", "valid", "failed", "valid", "failed",
    ]  # fmt: skip
    assert [(e["meter"], e["rule"]) for e in exceptions(engine)] == [("m1", "V7"), ("m2", "V7")]


def test_the_store_and_the_validator_alone_agree(engine: Engine) -> None:
    """The same readings through the store's in-line pass and through the validator after
    storing (the VEE tests' Feed) give the same statuses and exceptions."""
    store = Store(engine)
    store.send(*series()[:3])
    store.send(*series()[3:])
    together = [status_of(engine, r.meter, r.obis, r.time) for r in series()]
    rules = [(e["meter"], e["rule"]) for e in exceptions(engine)]
    with engine.begin() as conn:
        for table in ("vee_exceptions", "readings"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
        conn.exec_driver_sql("DELETE FROM ingest_watermarks")
        conn.exec_driver_sql("DELETE FROM ingest_seq_ranges")
    feed = Feed(engine, ("m1", "m2"))
    apart = feed.send(*series()[:3]) + feed.send(*series()[3:])
    assert together == apart
    assert [(e["meter"], e["rule"]) for e in exceptions(engine)] == rules


def test_an_older_version_leaves_no_exception(engine: Engine) -> None:
    """Seqs 1–2 stored, then seq 10 stores 102 at T0+2Q; seq 5 (in the gap, so fresh)
    arrives late with an older version of that key, 50 — backwards against 101 (V7). The
    store keeps 102 (higher seq wins) and the exception VEE raised for 50 must not stay."""
    store = Store(engine)
    store.send(reading("m1", E, T0, "100"), reading("m1", E, T0 + QUARTER, "101"))
    newer = replace(reading("m1", E, T0 + 2 * QUARTER, "102"), seq=10)
    older = replace(reading("m1", E, T0 + 2 * QUARTER, "50"), seq=5)
    assert store.store.apply_batches([IncomingBatch(GATEWAY, 1, 10, 10, [newer])])[0].inserted
    result = store.store.apply_batches([IncomingBatch(GATEWAY, 1, 5, 5, [older])])[0]
    assert (result.inserted, result.duplicates) == (0, 1)
    assert status_of(engine, "m1", E, T0 + 2 * QUARTER) == "valid"
    assert exceptions(engine) == []
    # The validator forgot what it saw: the next reading is compared with 102, not 50.
    store.send(reading("m1", E, T0 + 3 * QUARTER, "101.5"))
    assert [e["rule"] for e in exceptions(engine)] == ["V7"]


def test_a_correction_withdraws_the_old_values_exceptions(engine: Engine) -> None:
    store = Store(engine)
    store.send(reading("m1", E, T0, "100"), reading("m1", E, T0 + QUARTER, "99.99"))
    assert [e["rule"] for e in exceptions(engine, status="open")] == ["V7"]
    store.send(reading("m1", E, T0 + QUARTER, "100.5"))  # corrected under a new seq
    assert status_of(engine, "m1", E, T0 + QUARTER) == "valid"
    assert exceptions(engine, status="open") == []
    with engine.connect() as conn:
        stored = conn.execute(
            select(readings.c.value, readings.c.corrections).where(
                readings.c.meter == "m1", readings.c.ts == T0 + QUARTER
            )
        ).one()
    assert (str(stored.value), stored.corrections) == ("100.5", 1)


def test_without_vee_readings_wait_for_validation(engine: Engine) -> None:
    store = Store(engine, vee=False)
    store.send(*series())
    assert {status_of(engine, r.meter, r.obis, r.time) for r in series()} == {None}
    assert exceptions(engine) == []


def test_a_batch_prepared_ahead_is_validated_alike(engine: Engine) -> None:
    """The consumer prepares batches (their rows) on its verify thread;
    storing the prepared batch gives the statuses the one-step path gives."""
    store = Store(engine)
    readings_ = [replace(r, seq=i) for i, r in enumerate(series(), start=1)]
    prepared = store.store.prepare(IncomingBatch(GATEWAY, 1, 1, 5, readings_))
    [result] = store.store.apply_batches([prepared])
    assert (result.inserted, result.up_to_seq) == (5, 5)
    assert [status_of(engine, r.meter, r.obis, r.time) for r in series()] == [
        "valid", "valid", "failed", "valid", "failed",
    ]  # fmt: skip


def _as_records(batch: list[IncomingReading]) -> tuple[WireReading, ...]:
    return tuple(
        WireReading(
            r.seq, r.meter, r.obis, r.time, Decimal(r.value), r.unit, r.kind, r.source,
            r.quality, r.read_at,
        )
        for r in batch
    )  # fmt: skip


@pytest.mark.parametrize("form", ["plain", "records", "columns"])
def test_v2_two_versions_in_one_batch_through_the_store(engine: Engine, form: str) -> None:
    """The store keeps one version of a key (the higher seq) before VEE sees the batch, so
    it tells VEE which keys the batch gave twice with different values: V2 (information)
    on the kept reading, in each form a batch reaches the store. The same value twice is
    a re-send: nothing to say; a version in another batch is a correction, not V2 (the
    batch's V2 stays, as ``withdraw_exceptions`` keeps it)."""
    store = Store(engine)
    t1, t2 = T0 + QUARTER, T0 + 2 * QUARTER
    batch = [
        replace(r, seq=seq)
        for seq, r in enumerate(
            [
                reading("m1", E, T0, "100"),
                reading("m1", E, t1, "100.5"),
                reading("m1", E, t1, "100.50"),  # the same value in other words
                reading("m1", E, t2, "100.6"),
                reading("m1", E, t2, "100.7"),  # two versions: the higher seq is kept
                reading("m2", E, T0, "5"),
            ],
            start=1,
        )
    ]
    given: IncomingBatch | RecordBatch | ColumnarBatch
    if form == "plain":
        given = IncomingBatch(GATEWAY, 1, 1, 6, batch)
    else:
        records = RecordBatch(GATEWAY, 1, 1, 6, _as_records(batch), False, T0)
        given = records
        if form == "columns":
            given = _batch_fast(canonical_json(records.to_wire()), True)
            assert isinstance(given, ColumnarBatch)
    [result] = store.store.apply_batches([given])
    assert result.up_to_seq == 6
    [raised] = exceptions(engine)
    assert (raised["rule"], raised["meter"], raised["ts"]) == ("V2", "m1", t2)
    assert raised["value_before"] == Decimal("100.7")
    assert raised["detail"]["values"] == ["100.6", "100.7"]
    assert [status_of(engine, "m1", E, t) for t in (T0, t1, t2)] == ["valid", "valid", "flagged"]
    store.seq = 6
    store.send(reading("m1", E, t2, "100.65"))  # a later batch corrects it: no new V2
    assert [e["rule"] for e in exceptions(engine)] == ["V2"]  # the batch's record stays
