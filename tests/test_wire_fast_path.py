"""The fast decode path of batches and readings (``_batch_fast``, ``_reading_fast``) accepts
exactly what the generic path accepts, builds equal messages, and leaves every refusal —
its error type and its message — to the generic path."""

from __future__ import annotations

import base64
import copy
import json
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_wire_strategies import MAX64, batches, reading

from shared_protocol.errors import LocalProtocolError, MalformedFrameError
from shared_protocol.wire import RecordBatch, WireReading, canonical_json, decode
from shared_protocol.wire import envelope as wire_envelope
from shared_protocol.wire import messages as wire_messages
from shared_protocol.wire.envelope import _parse_json


@contextmanager
def generic_path_only() -> Iterator[None]:
    saved = wire_messages._batch_fast, wire_messages._reading_fast, wire_envelope._batch_fast
    wire_messages._batch_fast = lambda _body: None  # type: ignore[assignment]
    wire_messages._reading_fast = lambda _body: None  # type: ignore[assignment]
    wire_envelope._batch_fast = lambda _data, *_: None  # type: ignore[assignment]
    try:
        yield
    finally:
        wire_messages._batch_fast, wire_messages._reading_fast, wire_envelope._batch_fast = saved


def outcome(decode: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", decode()
    except Exception as exc:  # the type and text are what is compared
        return type(exc).__name__, str(exc)


def both_paths(decode: Callable[[], Any]) -> tuple[tuple[str, Any], tuple[str, Any]]:
    fast = outcome(decode)
    with generic_path_only():
        generic = outcome(decode)
    return fast, generic


def same_message(a: Any, b: Any) -> bool:
    """Equal, and equal in every detail equality glosses over (Decimal scale, tzinfo)."""
    return (
        a == b
        and canonical_json(a.to_wire()) == canonical_json(b.to_wire())
        and all(type(getattr(a, name)) is type(getattr(b, name)) for name in a.__slots__)
    )


def wire(message: Any) -> Any:
    return _parse_json(canonical_json(message.to_wire()), "body")  # through real JSON text


@given(batches())
def test_valid_batches_decode_the_same_on_both_paths(batch: RecordBatch) -> None:
    body = wire(batch)
    fast, generic = both_paths(lambda: RecordBatch.from_wire(copy.deepcopy(body)))
    assert fast[0] == generic[0] == "ok"
    assert same_message(fast[1], generic[1]) and same_message(fast[1], batch)
    for a, b in zip(fast[1].records, generic[1].records, strict=True):
        assert same_message(a, b)


@given(st.integers(1, MAX64).flatmap(reading))
def test_valid_readings_take_the_fast_path(record: WireReading) -> None:
    body = wire(record)
    fast = wire_messages._reading_fast(body)
    assert fast is not None and same_message(fast, record)
    assert fast.time.tzinfo is record.time.tzinfo


def a_batch_body() -> dict[str, Any]:
    body: dict[str, Any] = {
        "gateway": "gw-1",
        "session": 3,
        "seq_from": 5,
        "seq_to": 9,
        "historical": False,
        "sent_at": "2026-11-29T00:05:00.000000Z",
        "records": [],
    }
    for seq in (5, 7, 9):
        body["records"].append(
            {
                "type": "reading",
                "seq": seq,
                "meter": f"0000001234{seq:02d}",
                "obis": "1-0:1.8.0",
                "time": "2026-11-29T00:00:00.000000Z",
                "value": "1234.50",
                "unit": "kWh",
                "kind": "daily",
                "source": "scheduled",
                "quality": "ok",
                "read_at": "2026-11-29T00:01:00.000000Z",
            }
        )
    return body


def test_the_sample_body_takes_the_fast_path() -> None:
    assert wire_messages._batch_fast(a_batch_body()) is not None


_MISSING = object()
BAD_READING_FIELDS: dict[str, list[Any]] = {
    "type": [_MISSING, "event", "statistic", "Reading", None, 1, []],
    "seq": [_MISSING, 0, -1, True, False, 2**63, "6", 6.0, None, 4, 10, 5, 9],
    "meter": [_MISSING, "", None, 1, "x" * 257, "a\x00b", "a\x7f", "a\x9fb", "\ud800", ["m"]],
    "obis": [_MISSING, "", None, 1, "x" * 257, "1-0\n1.8.0", {"a": 1}],
    "time": [
        _MISSING,
        None,
        1,
        "2026-11-29T00:00:00Z",
        "2026-11-29T00:00:00.000000+00:00",
        "2026-11-29 00:00:00.000000Z",
        "2026-13-29T00:00:00.000000Z",
        "2026-02-30T00:00:00.000000Z",
        "2026-11-29T24:00:00.000000Z",
        "２026-11-29T00:00:00.000000Z",
    ],
    "value": [
        _MISSING,
        None,
        1,
        "1e3",
        "1.",
        ".5",
        "+1",
        "NaN",
        "Infinity",
        "1,5",
        " 1",
        "0x10",
        "",
        "-",
        "١٢٣",
        "1" * 41,
        "0." + "1" * 31,
        "--1",
    ],
    "unit": [_MISSING, "", 1, "x" * 257, "k\x1bWh", ["kWh"]],
    "kind": [_MISSING, "", "Daily", None, 1, ["daily"], {"daily": 1}],
    "source": [_MISSING, "", "manual", None, 1, ["scheduled"]],
    "quality": [_MISSING, "", None, 1, "x" * 257, "o\x85k"],
    "read_at": [_MISSING, None, "", "2026-11-29T00:01:00.000000", "2026-11-29T00:01:00.0000000Z"],
}


def bad_bodies() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, values in BAD_READING_FIELDS.items():
        for index in (0, 1, 2):
            for value in values:
                body = a_batch_body()
                record = body["records"][index]
                if value is _MISSING:
                    del record[name]
                else:
                    record[name] = value
                yield f"records[{index}].{name}={value!r}"[:80], body
    for extra in ({"extra": 1}, {"Type": "reading"}):
        body = a_batch_body()
        body["records"][1].update(extra)
        yield f"records[1]+{extra}", body
    for name, values in {
        "gateway": [_MISSING, "", "GW-1", "gw/1", "central", "-gw", "g" * 64, None, 1],
        "session": [_MISSING, -1, True, 2**63, "3", None, 3.0],
        "seq_from": [_MISSING, 0, 6, 10, True, "5", None],
        "seq_to": [_MISSING, 8, 4, 2**63, True, "9", None],
        "historical": [_MISSING, 0, 1, "false", None],
        "sent_at": [_MISSING, None, "2026-11-29T00:05:00Z", 0],
        "records": [_MISSING, None, {}, "[]", [1], [None], [[]]],
    }.items():
        for value in values:
            body = a_batch_body()
            if value is _MISSING:
                del body[name]
            else:
                body[name] = value
            yield f"{name}={value!r}"[:80], body
    body = a_batch_body()
    body["extra"] = True
    yield "batch+extra", body
    body = a_batch_body()
    body["records"][1]["seq"], body["records"][2]["seq"] = 9, 7
    yield "seqs out of order", body


@pytest.mark.parametrize(("case", "body"), list(bad_bodies()))
def test_a_bad_field_is_refused_exactly_as_before(case: str, body: dict[str, Any]) -> None:
    fast, generic = both_paths(lambda: RecordBatch.from_wire(copy.deepcopy(body)))
    if generic[0] == "ok":  # a few variations are valid (seq 6 of 5..9, a unit of None…)
        assert fast[0] == "ok" and same_message(fast[1], generic[1]), case
    else:
        assert generic[0] == MalformedFrameError.__name__, case
        assert fast == generic, case


@pytest.mark.parametrize(
    "value", ["0", "-0", "-0.00", "0.000", "-12.5", "00012", "1" * 40, "0." + "1" * 30]
)
def test_edge_values_decode_the_same_on_both_paths(value: str) -> None:
    body = a_batch_body()
    body["records"][0]["value"] = value
    fast, generic = both_paths(lambda: RecordBatch.from_wire(copy.deepcopy(body)))
    assert fast[0] == generic[0] == "ok"
    assert same_message(fast[1], generic[1])
    assert str(fast[1].records[0].value) == str(generic[1].records[0].value)
    assert not fast[1].records[0].value.is_signed() or fast[1].records[0].value < 0


def test_a_reading_decoded_directly_is_refused_as_before() -> None:
    body = a_batch_body()["records"][0] | {"value": "1e3"}
    fast, generic = both_paths(lambda: WireReading.from_wire(dict(body)))
    assert fast == generic and fast[0] == LocalProtocolError.__name__


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.decimals().map(str),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


@given(st.sampled_from(sorted(BAD_READING_FIELDS)), JSON_VALUES)
def test_any_value_in_any_reading_field_is_judged_the_same(name: str, value: object) -> None:
    body = a_batch_body()
    body["records"][1][name] = value
    fast, generic = both_paths(lambda: RecordBatch.from_wire(copy.deepcopy(body)))
    if generic[0] == "ok":
        assert fast[0] == "ok" and same_message(fast[1], generic[1])
    else:
        assert fast == generic


def test_decimal_is_built_once_from_the_text() -> None:
    body = a_batch_body()
    record = RecordBatch.from_wire(body).records[0]
    assert isinstance(record, WireReading)
    assert type(record.value) is Decimal and str(record.value) == "1234.50"


# -- the envelope's path for compressed batches: objects parsed as pairs --------------------


def compressed_payload(body_text: bytes) -> bytes:
    """An unsigned compressed batch envelope around ``body_text`` (decode needs no key)."""
    packed = base64.b64encode(zlib.compress(body_text)).decode("ascii")
    return canonical_json({"v": 1, "type": "batch", "enc": "zlib", "body": packed})


def test_a_canonical_compressed_batch_takes_the_pairs_path() -> None:
    data = canonical_json(a_batch_body())
    assert wire_envelope._batch_fast(data) is not None
    fast, generic = both_paths(lambda: decode(compressed_payload(data)))
    assert fast[0] == generic[0] == "ok" and same_message(fast[1], generic[1])


@pytest.mark.parametrize(("case", "body"), list(bad_bodies()))
def test_a_bad_field_in_a_compressed_batch_is_refused_exactly_as_before(
    case: str, body: dict[str, Any]
) -> None:
    # sorted keys like canonical JSON; ASCII escapes so a lone surrogate can be sent
    text = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    payload = compressed_payload(text)
    fast, generic = both_paths(lambda: decode(payload))
    if generic[0] == "ok":
        assert fast[0] == "ok" and same_message(fast[1], generic[1]), case
    else:
        assert generic[0] == MalformedFrameError.__name__, case
        assert fast == generic, case


def _texts() -> Iterator[tuple[str, bytes]]:
    good = canonical_json(a_batch_body()).decode()
    reading = '"kind":"daily",'
    assert reading in good
    yield "key twice in a reading", good.replace(reading, reading * 2, 1).encode()
    yield "key twice, other value", good.replace(reading, '"kind":"curve",' + reading, 1).encode()
    yield (
        "key twice in the batch",
        good.replace('"historical":false,', '"historical":false,' * 2).encode(),
    )
    yield "keys not sorted", json.dumps(a_batch_body()).encode()
    yield "a float", good.replace('"seq":7', '"seq":7.0').encode()
    yield "NaN", good.replace('"seq":7', '"seq":NaN').encode()
    yield "not UTF-8", good.encode().replace(b"kWh", b"k\xffh")
    yield "truncated", good.encode()[:-1]
    yield "an array", b"[" + good.encode() + b"]"
    yield "deep", b"[" * 5000 + b"]" * 5000
    event = (
        '{"at":"2026-11-29T00:01:00.000000Z","code":"cover_open",'
        '"detail":{"a":{"b":1,"b":2}},"meter":null,"seq":6,"type":"event"}'
    )
    with_event = good.replace(
        '{"kind":"daily","meter":"000000123407"',
        event + ',{"kind":"daily","meter":"000000123407"',
        1,
    )
    assert with_event != good
    yield "key twice inside an event's detail", with_event.encode()
    yield "an event", with_event.replace('"b":1,"b":2', '"b":1,"c":2').encode()


@pytest.mark.parametrize(("case", "text"), list(_texts()))
def test_unusual_json_in_a_compressed_batch_is_judged_as_before(case: str, text: bytes) -> None:
    payload = compressed_payload(text)
    fast, generic = both_paths(lambda: decode(payload))
    if generic[0] == "ok":
        assert fast[0] == "ok" and same_message(fast[1], generic[1]), case
    else:
        assert fast == generic, case


@given(batches())
def test_valid_compressed_batches_decode_the_same_on_both_paths(batch: RecordBatch) -> None:
    payload = compressed_payload(canonical_json(batch.to_wire()))
    fast, generic = both_paths(lambda: decode(payload))
    assert fast[0] == generic[0] == "ok"
    assert same_message(fast[1], generic[1]) and same_message(fast[1], batch)
