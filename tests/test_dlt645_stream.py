"""StreamParser for DL/T 645: chunking, noise, resync, false starts, EOF, limits; and the
fuzz contract (only ProtocolError subclasses escape; explain never raises).
"""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared_protocol.dlt645 import (
    MAX_BUFFER,
    Bcd,
    Control,
    Frame,
    StreamParser,
    decode_frame,
    decode_read_request,
    decode_read_response,
    encode_frame,
    explain,
    read_request,
    read_response,
)
from shared_protocol.errors import LocalProtocolError, ProtocolError
from shared_protocol.stream import NEED_DATA, Discarded

REQUEST = read_request("000006605518", 0x00010000)
REPLY = read_response("000006605518", 0x00010000, Bcd(4, 2).encode(Decimal("230.93")))


def run(chunks: list[bytes], close: bool = True) -> list[Frame | Discarded]:
    parser = StreamParser()
    events: list[Frame | Discarded] = []
    for chunk in chunks:
        parser.receive_data(chunk)
        while (event := parser.next_event()) is not NEED_DATA:
            assert isinstance(event, Frame | Discarded)
            events.append(event)
    if close:
        parser.receive_data(b"")
        while (event := parser.next_event()) is not NEED_DATA:
            assert isinstance(event, Frame | Discarded)
            events.append(event)
    return events


def only_frames(events: list[Frame | Discarded]) -> list[Frame]:
    return [e for e in events if isinstance(e, Frame)]


def test_two_frames_back_to_back_with_preambles() -> None:
    stream = encode_frame(REQUEST) + encode_frame(REPLY, preamble=2)
    assert run([stream]) == [REQUEST, REPLY]


def test_preamble_is_not_reported_as_noise() -> None:
    assert run([b"\xfe" * 10 + encode_frame(REQUEST, preamble=0)]) == [REQUEST]


def test_corrupted_frame_is_discarded_and_the_next_one_found() -> None:
    bad = bytearray(encode_frame(REQUEST, preamble=0))
    bad[12] ^= 0x01  # one data bit flipped on the line
    events = run([bytes(bad) + encode_frame(REPLY)])
    assert only_frames(events) == [REPLY]
    reasons = [e.reason for e in events if isinstance(e, Discarded)]
    assert reasons and "checksum" in reasons[0]


def test_false_start_in_noise_does_not_eat_the_next_frame() -> None:
    # "68" + 6 noise bytes + the real frame's 68 looks like a header; its "L" is the real
    # frame's first address byte (0x18 = 24), which runs past the real frame.
    real = encode_frame(REPLY, preamble=0)
    noise = b"\x68\x01\x02\x03\x04\x05\x06"
    events = run([noise + real], close=False)
    assert only_frames(events) == [REPLY]
    assert b"".join(e.data for e in events if isinstance(e, Discarded)) == noise


def test_false_start_byte_by_byte() -> None:
    real = encode_frame(REPLY, preamble=0)
    noise = b"\x68\x01\x02\x03\x04\x05\x06"
    events = run([bytes([b]) for b in noise + real], close=False)
    assert only_frames(events) == [REPLY]


def test_truncated_frame_at_eof_is_discarded() -> None:
    raw = encode_frame(REQUEST, preamble=0)
    events = run([raw[:-3]])
    assert events == [Discarded(raw[:-3], "stream ended inside a frame")]


def test_oversized_length_byte_is_rejected_without_waiting() -> None:
    header = b"\x68" + bytes(6) + b"\x68\x91\xff"
    events = run([header + encode_frame(REQUEST)], close=False)
    assert only_frames(events) == [REQUEST]
    assert "above the 200-byte limit" in events[0].reason  # type: ignore[union-attr]


def test_feeding_after_eof_is_a_local_error() -> None:
    parser = StreamParser()
    parser.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        parser.receive_data(b"\x68")


def test_buffer_is_bounded() -> None:
    parser = StreamParser()
    parser.receive_data(bytes(MAX_BUFFER))
    with pytest.raises(LocalProtocolError, match="next_event"):
        parser.receive_data(b"\x00")
    while parser.next_event() is not NEED_DATA:
        pass
    assert parser.buffered == 0


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from([REQUEST, REPLY]), min_size=1, max_size=4),
    st.lists(st.binary(max_size=12), min_size=5, max_size=5),
    st.data(),
)
def test_frames_survive_noise_and_any_chunking(
    chosen: list[Frame], noise: list[bytes], data: st.DataObject
) -> None:
    stream = noise[0]
    for n, frame in enumerate(chosen):
        # noise must not end in a prefix that merges with the frame into a longer valid one
        stream += encode_frame(frame) + noise[n + 1].replace(b"\x68", b"\x00")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    bounds = zip([0, *cuts], [*cuts, len(stream)], strict=True)
    chunks = [stream[a:b] for a, b in bounds if b > a]  # b"" would mean end of stream
    events = run(chunks)
    found = only_frames(events)
    # leading noise could itself contain a valid frame only by astronomic chance
    assert found[-len(chosen) :] == chosen


# ---------------------------------------------------------------- fuzz contract


def _check_any_bytes(raw: bytes) -> None:
    try:
        frame = decode_frame(raw)
    except ProtocolError:
        frame = None
    if frame is not None:
        for reader in (decode_read_response, decode_read_request):
            with contextlib.suppress(ProtocolError):
                reader(frame)
    for standard in (None, "2007", "1997"):
        result = explain(raw, standard)
        json.dumps(result)
        assert result["valid"] in (True, False)
        assert result["valid"] or result["error"]
    parser = StreamParser()
    parser.receive_data(raw)
    parser.receive_data(b"")
    while parser.next_event() is not NEED_DATA:
        pass


def _framed(draw_data: bytes, control: int) -> bytes:
    """Random but well-framed bytes, so the fuzz reaches the meaning layer."""
    frame = Frame("000006605518", Control.from_byte(control), draw_data[:200])
    return encode_frame(frame, preamble=1)


@given(st.binary(max_size=64))
def test_fuzz_random_bytes(raw: bytes) -> None:
    _check_any_bytes(raw)


@given(
    st.binary(max_size=60),
    st.sampled_from(
        [
            0x01,
            0x11,
            0x12,
            0x14,
            0x17,
            0x1C,
            0x81,
            0x91,
            0x92,
            0xB1,
            0xD1,
            0x93,
            0x08,
            0x16,
            0x18,
            0x1B,
        ]
    ),
)
def test_fuzz_well_framed_random_data(data: bytes, control: int) -> None:
    _check_any_bytes(_framed(data, control))


@pytest.mark.slow
@settings(max_examples=100_000, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes_slow(raw: bytes) -> None:
    _check_any_bytes(raw)


@pytest.mark.slow
@settings(max_examples=100_000, deadline=None)
@given(st.binary(max_size=60), st.integers(0, 255))
def test_fuzz_well_framed_random_data_slow(data: bytes, control: int) -> None:
    _check_any_bytes(_framed(data, control))
