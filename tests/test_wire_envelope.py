"""Canonical bytes, signed envelopes, compression limits, and the decoder's error contract."""

from __future__ import annotations

import base64
import contextlib
import json
import zlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_wire_strategies import messages

from shared_protocol.errors import (
    FrameTooLargeError,
    LocalProtocolError,
    MalformedFrameError,
    ProtocolError,
    SignatureError,
    UnsupportedError,
)
from shared_protocol.wire import (
    MAX_BODY_BYTES,
    SIGNATURE_REQUIRED,
    Ack,
    CentralState,
    Death,
    RecordBatch,
    WireEvent,
    WireReading,
    canonical_bytes,
    decode,
    encode,
    generate_private_key,
    load_private_key,
    load_public_key,
    open_envelope,
    private_key_pem,
    public_key_pem,
    sign,
    verify,
    verify_envelope,
)

T0 = datetime(2026, 11, 29, 0, 5, tzinfo=UTC)
GW_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
CENTRAL_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def lookup(key_id: str) -> Any:
    """Central's key for ``central[:label]``; the one test gateway key for any gateway."""
    owner = key_id.partition(":")[0]
    return CENTRAL_KEY.public_key() if owner == "central" else GW_KEY.public_key()


def key_id_for(message: Any) -> str:
    gateway = getattr(message, "gateway", None)
    if message.TYPE in {"batch", "birth", "cmd_result", "death"}:
        return str(gateway)
    return "central"


def key_for(message: Any) -> Ed25519PrivateKey:
    return CENTRAL_KEY if key_id_for(message) == "central" else GW_KEY


def realistic_batch(count: int = 500, seq_from: int = 1_000_001) -> RecordBatch:
    """One bus cycle: hourly curve points of many meters, as the edge log hands them out."""
    records = []
    for i in range(count):
        meter = f"{110000000000 + (i // 4) * 7:012d}"
        obis = ("1-0:1.8.0", "1-0:2.8.0", "1-0:1.8.1", "1-0:1.8.2")[i % 4]
        records.append(
            WireReading(
                seq=seq_from + i,
                meter=meter,
                obis=obis,
                time=T0,
                value=Decimal(12000 + (i * 7919) % 50000) / 100,
                unit="kWh",
                kind="curve",
                source="scheduled",
                quality="ok",
                read_at=T0 + timedelta(seconds=3, microseconds=271_000 * i),
            )
        )
    return RecordBatch("gw-1", 42, seq_from, seq_from + count - 1, tuple(records), False, T0)


# -- canonical bytes -----------------------------------------------------------------------------


def test_canonical_bytes_are_sorted_compact_utf8() -> None:
    event = WireEvent(1, None, "门开", {"z": 1, "a": "é"}, T0)
    batch = RecordBatch("gw-1", 1, 1, 1, (event,), False, T0)
    data = canonical_bytes(batch)
    assert data.startswith(b'{"body":{"gateway":"gw-1","historical":false,"records":[{"at":')
    assert b" " not in data and "门开".encode() in data
    assert json.loads(data)["v"] == 1


def test_canonical_bytes_do_not_depend_on_construction() -> None:
    a = WireEvent(1, None, "x", {"b": 1, "a": {"y": 2, "x": 1}}, T0)
    b = WireEvent(1, None, "x", {"a": {"x": 1, "y": 2}, "b": 1}, T0)
    batch_a = RecordBatch("gw-1", 1, 1, 1, (a,), False, T0)
    batch_b = RecordBatch("gw-1", 1, 1, 1, [b], False, T0.astimezone(tz=None))  # type: ignore[arg-type]
    assert canonical_bytes(batch_a) == canonical_bytes(batch_b)
    one = realistic_batch(1).records[0]
    assert isinstance(one, WireReading)
    values = [Decimal("1.5E+3"), Decimal("1500"), 1500, Decimal("15E2")]
    texts = {
        canonical_bytes(RecordBatch("gw-1", 1, one.seq, one.seq, (_with(one, v),), False, T0))
        for v in values
    }
    assert len(texts) == 1


def _with(record: WireReading, value: Any) -> WireReading:
    return WireReading(**{**{f: getattr(record, f) for f in record.__slots__}, "value": value})


@given(messages)
def test_decode_of_encoded_is_identity_and_bytes_are_stable(message: Any) -> None:
    data = canonical_bytes(message)
    assert canonical_bytes(decode(data)) == data
    assert decode(data) == message


# -- signatures ----------------------------------------------------------------------------------


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=60)
@given(messages, st.booleans())
def test_signed_round_trip(message: Any, compress: bool) -> None:
    payload = sign(message, key_for(message), key_id_for(message), compress=compress)
    verified = verify_envelope(payload, lookup)
    assert verified.message == message
    assert verified.key_id == key_id_for(message)
    assert open_envelope(payload).compressed is compress


def test_every_byte_is_covered_by_the_signature() -> None:
    payload = sign(realistic_batch(20), GW_KEY, "gw-1")
    failures = 0
    for index in range(len(payload)):
        for flip in (0x01, 0x20):
            tampered = bytearray(payload)
            tampered[index] ^= flip
            try:
                verify(bytes(tampered), lookup)
            except ProtocolError:
                failures += 1
            else:  # pragma: no cover - reported below
                pytest.fail(f"byte {index} changed by {flip:#x} still verifies")
    assert failures == 2 * len(payload)


def test_tampered_body_of_an_uncompressed_message_fails() -> None:
    payload = sign(realistic_batch(3), GW_KEY, "gw-1", compress=False)
    tampered = payload.replace(b'"value":["', b'"value":["1', 1)
    with pytest.raises(SignatureError) as caught:
        verify(tampered, lookup)
    assert caught.value.reason == "bad_signature"


def test_wrong_key_is_refused() -> None:
    payload = sign(realistic_batch(3), generate_private_key(), "gw-1")
    with pytest.raises(SignatureError, match="does not match") as caught:
        verify(payload, lookup)
    assert caught.value.reason == "bad_signature"


def test_unknown_key_id_is_refused() -> None:
    payload = sign(realistic_batch(3), GW_KEY, "gw-1:2027")
    with pytest.raises(SignatureError, match="unknown") as caught:
        verify(payload, {"gw-1": GW_KEY.public_key()}.get)
    assert caught.value.reason == "unknown_key"


def test_unsigned_is_refused_by_verify_and_encode() -> None:
    batch = realistic_batch(3)
    with pytest.raises(LocalProtocolError, match="must be signed"):
        encode(batch)
    unsigned = canonical_bytes(batch)
    with pytest.raises(SignatureError) as caught:
        verify(unsigned, lookup)
    assert caught.value.reason == "unsigned"
    assert decode(unsigned) == batch  # decode alone never claims authenticity


def test_a_gateway_cannot_sign_for_another_gateway_or_for_central() -> None:
    with pytest.raises(LocalProtocolError, match="may not sign"):
        sign(realistic_batch(3), GW_KEY, "gw-2")
    with pytest.raises(LocalProtocolError, match="central's only"):
        sign(Ack("gw-1", 1, 1, T0), GW_KEY, "gw-1")
    # forged by hand: a key id that the lookup knows, on another gateway's batch
    envelope = json.loads(sign(realistic_batch(3), GW_KEY, "gw-1", compress=False))
    envelope["body"]["gateway"] = "gw-2"
    del envelope["sig"]
    forged = json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()
    envelope["sig"] = {
        "alg": "ed25519",
        "key_id": "gw-1",
        "value": base64.b64encode(GW_KEY.sign(forged)).decode(),
    }
    with pytest.raises(SignatureError, match="may not sign") as caught:
        verify(json.dumps(envelope).encode(), lookup)
    assert caught.value.reason == "wrong_signer"


@pytest.mark.parametrize(
    ("sig", "reason"),
    [
        ({"alg": "rsa", "key_id": "gw-1", "value": "AA=="}, "unsupported_algorithm"),
        ({"alg": "ed25519", "key_id": "gw-1", "value": "not base64!"}, "malformed_signature"),
        ({"alg": "ed25519", "key_id": "gw-1", "value": "AAAA"}, "malformed_signature"),
        ({"alg": "ed25519", "key_id": "GW 1", "value": "A" * 88}, "malformed_signature"),
        ({"alg": "ed25519", "key_id": "gw-1"}, "malformed_signature"),
        ("ed25519", "malformed_signature"),
    ],
)
def test_malformed_signatures_are_named(sig: Any, reason: str) -> None:
    envelope = json.loads(sign(realistic_batch(3), GW_KEY, "gw-1"))
    envelope["sig"] = sig
    with pytest.raises(SignatureError) as caught:
        verify(json.dumps(envelope).encode(), lookup)
    assert caught.value.reason == reason


def test_keys_save_and_load_as_pem() -> None:
    key = generate_private_key()
    again = load_private_key(private_key_pem(key))
    assert public_key_pem(again) == public_key_pem(key)
    locked = private_key_pem(key, b"secret")
    assert b"ENCRYPTED" in locked
    assert public_key_pem(load_private_key(locked, b"secret")) == public_key_pem(key)
    public = load_public_key(public_key_pem(key))
    payload = sign(realistic_batch(2), key, "gw-1")
    assert verify(payload, lambda _: public).TYPE == "batch"
    for bad in (b"nonsense", public_key_pem(key)):
        with pytest.raises(LocalProtocolError):
            load_private_key(bad)


# -- compression -----------------------------------------------------------------------------------


def test_realistic_batch_size() -> None:
    batch = realistic_batch(500)
    payload = sign(batch, GW_KEY, "gw-1")
    plain = canonical_bytes(batch)
    # docs/protocol.md quotes these figures; D2.6 budgets ~60 bytes per record
    assert len(payload) / 500 < 40
    assert len(plain) / 500 > 100
    assert verify(payload, lookup) == batch


def _compressed_payload(body_bytes: bytes, message_type: str = "batch") -> bytes:
    packed = base64.b64encode(zlib.compress(body_bytes, 9)).decode()
    envelope = {"v": 1, "type": message_type, "enc": "zlib", "body": packed}
    signed = json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()
    envelope["sig"] = {
        "alg": "ed25519",
        "key_id": "gw-1",
        "value": base64.b64encode(GW_KEY.sign(signed)).decode(),
    }
    return json.dumps(envelope).encode()


def test_a_compression_bomb_is_refused() -> None:
    bomb = b'{"gateway":"' + b"a" * (MAX_BODY_BYTES + 10) + b'"}'
    payload = _compressed_payload(bomb)
    assert len(payload) < 20_000
    with pytest.raises(FrameTooLargeError, match="inflates beyond"):
        verify(payload, lookup)
    with pytest.raises(FrameTooLargeError):
        decode(payload)


def test_an_unsigned_bomb_is_refused_before_it_is_inflated() -> None:
    envelope = json.loads(_compressed_payload(b"x" * (MAX_BODY_BYTES * 4)))
    del envelope["sig"]
    with pytest.raises(SignatureError, match="not signed"):
        verify(json.dumps(envelope).encode(), lookup)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not zlib at all", "not zlib"),
        (zlib.compress(b'{"a":1}')[:-3], "truncated"),
        (zlib.compress(b'{"a":1}') + b"junk", "trailing"),
    ],
)
def test_bad_compressed_bodies(body: bytes, words: str) -> None:
    envelope = {"v": 1, "type": "ack", "enc": "zlib", "body": base64.b64encode(body).decode()}
    with pytest.raises(MalformedFrameError, match=words):
        decode(json.dumps(envelope).encode())


# -- envelope rules --------------------------------------------------------------------------------


def test_a_future_version_is_refused_clearly() -> None:
    payload = encode(Death("gw-1", 1, T0)).replace(b'"v":1', b'"v":2')
    with pytest.raises(UnsupportedError, match="version 2 is not understood"):
        decode(payload)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"", MalformedFrameError),
        (b"\xff\xfe", MalformedFrameError),
        (b"[]", MalformedFrameError),
        (b'{"type":"ack","body":{}}', MalformedFrameError),
        (b'{"v":true,"type":"ack","body":{}}', MalformedFrameError),
        (b'{"v":1,"type":"trip","body":{}}', UnsupportedError),
        (b'{"v":1,"type":"ack","enc":"gzip","body":""}', UnsupportedError),
        (b'{"v":1,"type":"ack"}', MalformedFrameError),
        (b'{"v":1,"type":"ack","body":{},"x":1}', MalformedFrameError),
        (b'{"v":1,"v":1,"type":"ack","body":{}}', MalformedFrameError),
        (b'{"v":1,"type":"ack","body":{"up_to_seq":1.0}}', MalformedFrameError),
        (b'{"v":1,"type":"ack","body":{"up_to_seq":NaN}}', MalformedFrameError),
        (b'{"v":1,"type":"ack","body":"\\ud800"}', MalformedFrameError),
        (b"[" * 100_000, MalformedFrameError),
        (b" " * (2 * 1024 * 1024), FrameTooLargeError),
    ],
)
def test_bad_envelopes(payload: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode(payload)


def test_unsigned_types_may_still_be_signed_and_verified() -> None:
    state = CentralState(online=True, at=T0)
    assert decode(encode(state)) == state
    assert verify(sign(state, CENTRAL_KEY, "central:2026"), lookup) == state
    assert "central_state" not in SIGNATURE_REQUIRED


# -- the error contract ----------------------------------------------------------------------------


def _mutations() -> st.SearchStrategy[bytes]:
    seeds = [
        sign(realistic_batch(3), GW_KEY, "gw-1"),
        sign(realistic_batch(3), GW_KEY, "gw-1", compress=False),
        encode(Ack("gw-1", 1, 5, T0)),
        encode(Death("gw-1", 1, T0)),
    ]

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data)))
            action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
            if action == "flip" and at < len(data):
                data[at] ^= draw(st.integers(1, 255))
            elif action == "cut":
                del data[at:]
            elif action == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            elif at < len(data):
                del data[at : at + draw(st.integers(1, 16))]
        return bytes(data)

    return mutate()


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), _mutations(), messages.map(canonical_bytes)))
def test_decode_and_verify_raise_only_protocol_errors(payload: bytes) -> None:
    for read in (decode, lambda p: verify(p, lookup)):
        with contextlib.suppress(ProtocolError):  # anything else fails the test
            read(payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.data())
def test_any_field_replaced_by_any_json_decodes_or_is_a_protocol_error(
    message: Any, data: st.DataObject
) -> None:
    envelope = json.loads(canonical_bytes(message))
    path = data.draw(st.sampled_from(_paths(envelope["body"])), label="path")
    replacement = data.draw(json_values, label="replacement")
    if not path:
        envelope["body"] = replacement
    else:
        target = envelope["body"]
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = replacement
    payload = json.dumps(envelope).encode()
    with contextlib.suppress(ProtocolError):
        decode(payload)
