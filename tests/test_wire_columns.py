"""Readings as columns in a batch body: the columnar fast path (central's ingest hot path)
accepts exactly what the generic path accepts and gives the same readings."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from test_wire_fast_path import both_paths, compressed_payload, same_message
from test_wire_strategies import batches

from shared_protocol.wire import (
    ColumnarBatch,
    RecordBatch,
    canonical_json,
    generate_private_key,
    sign,
    verify_envelope,
)
from shared_protocol.wire import messages as wire_messages
from shared_protocol.wire.envelope import _batch_fast, decode

KEY = generate_private_key()


def columnar(payload: bytes) -> Any:
    return verify_envelope(payload, lambda _: KEY.public_key(), columnar=True).message


@settings(max_examples=150)
@given(batches())
def test_the_columnar_path_gives_the_batch_that_was_signed(batch: RecordBatch) -> None:
    message = columnar(sign(batch, KEY, batch.gateway))
    if isinstance(message, ColumnarBatch):
        assert same_message(message.to_record_batch(), batch)
        assert len(message) == len(batch.records)
    else:  # no readings, or a value the fast checks leave to the generic path
        assert same_message(message, batch)


def body_with_readings() -> dict[str, Any]:
    from test_wire_envelope import realistic_batch

    return realistic_batch(6, seq_from=10).to_wire()


def test_readings_go_as_columns_and_others_as_records() -> None:
    body = body_with_readings()
    assert set(body["readings"]) == set(wire_messages.READING_COLUMNS)
    assert body["readings"]["seq"] == list(range(10, 16))
    assert body["records"] == []


BROKEN: list[tuple[str, Any]] = [
    ("a column shorter than seq", lambda b: b["readings"]["meter"].pop()),
    ("a seq repeated", lambda b: b["readings"]["seq"].__setitem__(1, 10)),
    ("seqs falling", lambda b: b["readings"]["seq"].reverse()),
    ("a seq outside the range", lambda b: b["readings"]["seq"].__setitem__(5, 99)),
    ("a seq as text", lambda b: b["readings"]["seq"].__setitem__(0, "10")),
    ("a value with an exponent", lambda b: b["readings"]["value"].__setitem__(2, "1E+3")),
    ("an unknown kind", lambda b: b["readings"]["kind"].__setitem__(3, "hourly")),
    (
        "a time with an offset",
        lambda b: b["readings"]["time"].__setitem__(1, "2026-11-29T08:00:00+08:00"),
    ),
    ("an empty meter", lambda b: b["readings"]["meter"].__setitem__(4, "")),
    ("a control character", lambda b: b["readings"]["obis"].__setitem__(4, "1-0:1.8.0\n")),
    ("a missing column", lambda b: b["readings"].pop("quality")),
    ("an extra column", lambda b: b["readings"].__setitem__("phase", ["A"] * 6)),
    ("columns not arrays", lambda b: b["readings"].__setitem__("unit", "kWh")),
    (
        "a reading seq also used by an event",
        lambda b: b["records"].append(
            {"type": "event", "seq": 12, "meter": None, "code": "x", "detail": {},
             "at": "2026-11-29T00:00:00.000000Z"}
        ),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "breaks"), BROKEN, ids=[name for name, _ in BROKEN])
def test_a_broken_column_is_refused_by_both_paths_alike(name: str, breaks: Any) -> None:
    body = body_with_readings()
    breaks(body)
    data = canonical_json(body)
    fast = _batch_fast(data, True)
    assert fast is None, f"{name}: the fast path accepted it"
    outcome, generic = both_paths(lambda: decode(compressed_payload(data)))
    assert outcome == generic
    assert outcome[0] == "MalformedFrameError", outcome


def test_a_valid_columnar_body_takes_the_fast_path_on_both_forms() -> None:
    data = canonical_json(body_with_readings())
    fast = _batch_fast(data, True)
    assert isinstance(fast, ColumnarBatch)
    merged = _batch_fast(data, False)
    assert isinstance(merged, RecordBatch)
    assert same_message(fast.to_record_batch(), merged)
    fast_decoded, generic = both_paths(lambda: decode(compressed_payload(data)))
    assert fast_decoded[0] == generic[0] == "ok"
    assert same_message(fast_decoded[1], generic[1])


def test_the_old_form_with_readings_as_records_is_still_accepted() -> None:
    body = body_with_readings()
    readings = body.pop("readings")
    body["records"] = [
        {"type": "reading", **{name: readings[name][i] for name in readings}} for i in range(6)
    ]
    data = canonical_json(copy.deepcopy(body))
    fast, generic = both_paths(lambda: decode(compressed_payload(data)))
    assert fast[0] == generic[0] == "ok"
    assert same_message(fast[1], generic[1])
    assert [r.seq for r in fast[1].records] == list(range(10, 16))
