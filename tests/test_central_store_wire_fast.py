"""A verified ``RecordBatch`` takes the store's short path (no re-check of what the wire
guarantees); it must store, count and refuse exactly like the same records passed as plain
values. Two gateways in one database: one fed wire batches, the other the same records as
``IncomingBatch`` (meters prefixed apart, since readings are keyed without the gateway).
On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from central.db import gateway_events, readings, statistics
from central.ingest.store import (
    IncomingBatch,
    IncomingEvent,
    IncomingReading,
    IncomingStatistic,
    IngestStore,
    InvalidBatchError,
)
from shared_protocol.wire import (
    ColumnarBatch,
    RecordBatch,
    WireEvent,
    WireReading,
    WireStatistic,
    canonical_json,
)
from shared_protocol.wire.envelope import _batch_fast

pytest_plugins = ["central_fixtures"]

T0 = datetime(2026, 11, 29, tzinfo=UTC)
WIRE, PLAIN = "gw-wire", "gw-plain"


def records(
    seqs: list[int],
    meter_of: dict[int, int] | None = None,
    value_of: dict[int, Decimal] | None = None,
) -> list[Any]:
    """Readings, with an event at seqs ending in 0 and a statistic at seqs ending in 5;
    ``meter_of`` maps a seq to another seq's meter and time (a correction of that key)."""
    out: list[Any] = []
    for seq in seqs:
        if seq % 10 == 0:
            out.append(WireEvent(seq, "m-000001", "cover_open", {"n": seq}, T0))
        elif seq % 10 == 5:
            out.append(WireStatistic(seq, "bus_errors", {"bus": "a"}, Decimal(seq), T0))
        else:
            key = (meter_of or {}).get(seq, seq)
            out.append(
                WireReading(
                    seq=seq,
                    meter=f"m-{key % 7:06d}",
                    obis="1.8.0",
                    time=T0 + timedelta(minutes=15 * key),
                    value=(value_of or {}).get(seq, Decimal(seq) / 8),
                    unit="kWh" if seq % 3 else None,
                    kind="curve",
                    source="scheduled",
                    quality="ok",
                    read_at=T0 + timedelta(minutes=15 * key, seconds=seq % 50),
                )
            )
    return out


def wire_batch(seq_from: int, seq_to: int, recs: list[Any]) -> RecordBatch:
    def renamed(r: Any) -> Any:
        if isinstance(r, WireReading):
            return WireReading(
                r.seq, "w" + r.meter, r.obis, r.time, r.value, r.unit, r.kind, r.source,
                r.quality, r.read_at,
            )  # fmt: skip
        return r

    return RecordBatch(WIRE, 1, seq_from, seq_to, tuple(map(renamed, recs)), False, T0)


def plain_batch(seq_from: int, seq_to: int, recs: list[Any]) -> IncomingBatch:
    return IncomingBatch(
        PLAIN,
        1,
        seq_from,
        seq_to,
        [
            IncomingReading(
                r.seq,
                "p" + r.meter,
                r.obis,
                r.time,
                r.value,
                r.unit,
                r.kind,
                r.source,
                r.quality,
                r.read_at,
            )
            for r in recs
            if isinstance(r, WireReading)
        ],
        [
            IncomingEvent(r.seq, r.code, r.at, r.detail, r.meter)
            for r in recs
            if isinstance(r, WireEvent)
        ],
        [
            IncomingStatistic(r.seq, r.name, r.value, r.at, r.labels)
            for r in recs
            if isinstance(r, WireStatistic)
        ],
    )


def stored(store: IngestStore, gateway: str) -> dict[str, list[tuple[Any, ...]]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(
                readings.c.meter, readings.c.obis, readings.c.ts, readings.c.value,
                readings.c.unit, readings.c.seq, readings.c.read_at, readings.c.corrections,
            ).where(readings.c.gateway == gateway)
        ).all()  # fmt: skip
        events = conn.execute(
            select(gateway_events.c.seq, gateway_events.c.code, gateway_events.c.detail).where(
                gateway_events.c.gateway == gateway
            )
        ).all()
        stats = conn.execute(
            select(statistics.c.seq, statistics.c.value).where(statistics.c.gateway == gateway)
        ).all()
    return {
        "readings": sorted((m[1:], *rest) for m, *rest in rows),
        "events": sorted(tuple(e) for e in events),
        "statistics": sorted(tuple(s) for s in stats),
    }


GROUPS: list[list[tuple[int, int, list[int], dict[int, int]]]] = [
    [
        # a correction inside one batch (seq 9 rewrites seq 3's key)
        (1, 20, [1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 20], {9: 3}),
        (11, 30, [11, 12, 13, 15, 17, 20, 22, 29, 30], {}),  # overlaps the first
        (1, 20, [1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 20], {9: 3}),  # a resend in the group
        (41, 50, [41, 44, 45, 50], {}),  # above a gap
        (51, 52, [51, 52], {51: 1, 52: 44}),  # corrections of stored keys
    ],
    [
        (31, 40, [31, 33, 35, 38, 40], {31: 2, 33: 51}),  # fills the gap, corrects
        (1, 60, [55, 57], {55: 4}),  # mostly a duplicate
        (61, 61, [], {}),  # a range of holes only
    ],
    [
        (71, 72, [71, 72], {71: 62}),  # a correction arriving before what it corrects
        (62, 70, [62, 63, 64], {}),
        (55, 58, [56, 57], {56: 4, 57: 33}),  # corrections of corrections
    ],
]


def test_wire_batches_store_count_and_ack_like_plain_values(store: IngestStore) -> None:
    for gateway in (WIRE, PLAIN):
        store.enroll_gateway(gateway)
    for group in GROUPS:
        wire_results = store.apply_batches(
            [wire_batch(a, b, records(seqs, fix)) for a, b, seqs, fix in group]
        )
        plain_results = store.apply_batches(
            [plain_batch(a, b, records(seqs, fix)) for a, b, seqs, fix in group]
        )
        assert wire_results == plain_results
    assert stored(store, WIRE) == stored(store, PLAIN)
    assert stored(store, WIRE)["readings"]  # the comparison is not of nothing
    assert any(row[-1] for row in stored(store, WIRE)["readings"])  # corrections happened
    assert store.watermark(WIRE) == store.watermark(PLAIN) == 72


@pytest.mark.parametrize(
    ("value", "fits"),
    [
        (Decimal("0.0000001"), False),  # 7 decimal places
        (Decimal("1.5000000"), True),  # trailing zeros only
        (Decimal(10) ** 14, False),
        (Decimal(10) ** 14 - Decimal("0.000001"), True),
        (-(Decimal(10) ** 14), False),
        (Decimal("-99999999999999.999999"), True),
        (Decimal("0E+20"), True),
        (Decimal("0E-30"), True),
        (Decimal("1E+13"), True),
        (Decimal("1E+14"), False),
        (Decimal("-0.50"), True),
        (Decimal("12345678901234567890123456789"), False),  # beyond the decimal context
    ],
)
def test_values_are_judged_and_written_alike(
    store: IngestStore, value: Decimal, fits: bool
) -> None:
    for gateway in (WIRE, PLAIN):
        store.enroll_gateway(gateway)
    recs = records([1, 2, 3], value_of={2: value})
    outcomes = []
    for batch in (wire_batch(1, 3, recs), plain_batch(1, 3, recs)):
        try:
            outcomes.append(("ok", store.apply_batches([batch])))
        except InvalidBatchError as exc:
            outcomes.append(("refused", str(exc).replace(WIRE, "gw").replace("wm-", "m-")))
    plain = outcomes[1]
    assert isinstance(plain[1], str) or plain[0] == "ok"
    if plain[0] == "refused":
        expected = plain[1].replace(PLAIN, "gw").replace("pm-", "m-")
        assert outcomes[0] == ("refused", expected)
    else:
        assert outcomes[0] == plain
    assert (plain[0] == "ok") == fits
    assert stored(store, WIRE) == stored(store, PLAIN)


# -- readings as columns (the consumer's hot path: ColumnarBatch) --------------------------

COLUMNS = "gw-cols"


def columnar_batch(seq_from: int, seq_to: int, recs: list[Any]) -> Any:
    """The batch as the consumer gets it: signed form → the columnar fast path."""
    renamed = [
        WireReading(
            r.seq, "c" + r.meter, r.obis, r.time, r.value, r.unit, r.kind, r.source,
            r.quality, r.read_at,
        ) if isinstance(r, WireReading) else r
        for r in recs
    ]  # fmt: skip
    batch = RecordBatch(COLUMNS, 1, seq_from, seq_to, tuple(renamed), False, T0)
    fast = _batch_fast(canonical_json(batch.to_wire()), True)
    # A batch without readings has no columns: it comes as a RecordBatch, as on the wire.
    assert isinstance(fast, ColumnarBatch) or not any(isinstance(r, WireReading) for r in recs)
    return fast


def test_columnar_batches_store_count_and_ack_like_plain_values(store: IngestStore) -> None:
    for gateway in (COLUMNS, PLAIN):
        store.enroll_gateway(gateway)
    for group in GROUPS:
        column_results = store.apply_batches(
            [columnar_batch(a, b, records(seqs, fix)) for a, b, seqs, fix in group]
        )
        plain_results = store.apply_batches(
            [plain_batch(a, b, records(seqs, fix)) for a, b, seqs, fix in group]
        )
        assert column_results == plain_results
    assert stored(store, COLUMNS) == stored(store, PLAIN)
    assert any(row[-1] for row in stored(store, COLUMNS)["readings"])  # corrections happened
    assert store.watermark(COLUMNS) == store.watermark(PLAIN) == 72


@pytest.mark.parametrize(
    "text",
    ["1.50", "007", "-0", "-0.000", "0.000001", "0.0000001", "100000000000000", "12.3400",
     "99999999999999.999999", "-99999999999999.9999991", "5"],
)  # fmt: skip
def test_columnar_values_are_judged_and_written_alike(store: IngestStore, text: str) -> None:
    """Text already in the stored form passes straight through; any other goes through
    ``checked_decimal`` — either way the row (or the refusal) is the plain path's."""
    for gateway in (COLUMNS, PLAIN):
        store.enroll_gateway(gateway)
    recs = records([1, 2, 3], value_of={2: Decimal(text)})
    body = RecordBatch(COLUMNS, 1, 1, 3, tuple(recs), False, T0).to_wire()
    body["readings"]["value"][1] = text  # the wire text itself, not its Decimal's form
    for i, meter in enumerate(body["readings"]["meter"]):
        body["readings"]["meter"][i] = "c" + meter
    fast = _batch_fast(canonical_json(body), True)
    assert isinstance(fast, ColumnarBatch)
    outcomes = []
    for batch in (fast, plain_batch(1, 3, recs)):
        try:
            store.apply_batches([batch])
            outcomes.append("ok")
        except InvalidBatchError:
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1]
    assert stored(store, COLUMNS) == stored(store, PLAIN)
