"""StreamParser: frames found in any chunking, with garbage before, between and after."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_protocol.errors import LocalProtocolError
from shared_protocol.modbus import (
    Direction,
    Frame,
    StreamParser,
    build_exception_response,
    build_read_request,
    build_read_response,
    build_write_multiple_request,
    build_write_single_response,
)
from shared_protocol.stream import NEED_DATA, Discarded

Event = Frame | Discarded


def _drain(parser: StreamParser) -> list[Event]:
    events: list[Event] = []
    while (event := parser.next_event()) is not NEED_DATA:
        assert isinstance(event, Frame | Discarded)
        events.append(event)
    return events


def _feed(direction: Direction, chunks: Iterable[bytes], *, close: bool = True) -> list[Event]:
    parser = StreamParser(direction)
    events: list[Event] = []
    for chunk in chunks:
        parser.receive_data(chunk)
        events += _drain(parser)
    if close:
        parser.close()
        events += _drain(parser)
    return events


def _frames(events: list[Event]) -> list[Frame]:
    return [e for e in events if isinstance(e, Frame)]


def _discarded(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Discarded))


RESPONSES = [
    build_read_response(1, 4, [0x4366, 0x0000]),
    build_read_response(2, 3, list(range(125))),
    build_exception_response(3, 4, 2),
    build_write_single_response(4, 0x10, 7),
]
RESPONSE_STREAM = b"".join(f.raw for f in RESPONSES)


def test_whole_stream() -> None:
    events = _feed(Direction.RESPONSE, [RESPONSE_STREAM])
    assert events == RESPONSES


def test_byte_by_byte() -> None:
    chunks = [RESPONSE_STREAM[i : i + 1] for i in range(len(RESPONSE_STREAM))]
    assert _feed(Direction.RESPONSE, chunks) == RESPONSES


@pytest.mark.parametrize("cut", range(1, len(RESPONSE_STREAM)))
def test_split_at_every_position(cut: int) -> None:
    events = _feed(Direction.RESPONSE, [RESPONSE_STREAM[:cut], RESPONSE_STREAM[cut:]])
    assert events == RESPONSES


def test_garbage_before_between_and_after() -> None:
    before, between, after = b"\x00\xff\x13", b"\xaa\x55", b"\x01\x04"
    frames = RESPONSES
    stream = before + frames[0].raw + between + frames[1].raw + frames[2].raw + after
    events = _feed(Direction.RESPONSE, [stream])
    assert _frames(events) == frames[:3]
    assert _discarded(events) == before + between + after
    assert isinstance(events[0], Discarded)
    assert events[0].data == before
    assert events[-1] == Discarded(after, events[-1].reason)


def test_bad_crc_frame_is_discarded_and_next_frame_found() -> None:
    good = build_read_request(1, 3, 0x2000, 16).raw
    corrupt = bytearray(build_read_request(1, 4, 0, 80).raw)
    corrupt[3] ^= 0x01
    events = _feed(Direction.REQUEST, [bytes(corrupt) + good])
    assert _frames(events) == [build_read_request(1, 3, 0x2000, 16)]
    discarded = [e for e in events if isinstance(e, Discarded)]
    assert [d.data for d in discarded] == [bytes(corrupt)]
    assert "CRC" in discarded[0].reason


def test_waits_for_more_data_without_discarding() -> None:
    raw = RESPONSES[1].raw
    parser = StreamParser("response")
    parser.receive_data(raw[:100])
    assert parser.next_event() is NEED_DATA
    assert parser.buffered == 100
    parser.receive_data(raw[100:])
    assert parser.next_event() == RESPONSES[1]
    assert parser.next_event() is NEED_DATA
    assert parser.buffered == 0


def test_line_idle_drops_a_false_start_and_finds_the_frame_behind_it() -> None:
    # 0x01 0x03 0xFA looks like the start of a 255-byte response; after t3.5 of silence the
    # parser gives up on it and finds the real frame inside the buffer.
    frame = build_read_response(1, 3, [1, 2])
    parser = StreamParser(Direction.RESPONSE)
    parser.receive_data(b"\x01\x03\xfa" + frame.raw)
    assert parser.next_event() is NEED_DATA
    parser.line_idle()
    first = parser.next_event()
    assert isinstance(first, Discarded)
    assert first.data == b"\x01\x03\xfa"
    assert parser.next_event() == frame


def test_requests_need_a_request_parser() -> None:
    request = build_write_multiple_request(9, 0x100, [1, 2, 3])
    assert _feed(Direction.REQUEST, [request.raw]) == [request]
    response_view = _feed(Direction.RESPONSE, [request.raw])
    assert _frames(response_view) == []
    assert _discarded(response_view) == request.raw


def test_close_flushes_leftovers_and_refuses_more() -> None:
    parser = StreamParser(Direction.RESPONSE)
    parser.receive_data(b"\x01\x04\x04\x43")
    assert parser.next_event() is NEED_DATA
    parser.close()
    event = parser.next_event()
    assert isinstance(event, Discarded)
    assert event.data == b"\x01\x04\x04\x43"
    assert parser.next_event() is NEED_DATA
    with pytest.raises(LocalProtocolError):
        parser.receive_data(b"\x01")


def test_bad_direction_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        StreamParser("sideways")


_response_frames = st.lists(
    st.one_of(
        st.builds(
            build_read_response,
            st.integers(1, 247),
            st.sampled_from([3, 4]),
            st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=40),
        ),
        st.builds(
            build_exception_response,
            st.integers(1, 247),
            st.sampled_from([3, 4, 6, 16]),
            st.integers(1, 11),
        ),
    ),
    min_size=1,
    max_size=5,
)


@given(frames=_response_frames, data=st.data())
def test_any_chunking_gives_the_same_frames(frames: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(f.raw for f in frames)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=8)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    assert _feed(Direction.RESPONSE, chunks) == frames


def _check_no_byte_lost(data: bytes, chunk: int) -> None:
    for direction in Direction:
        events = _feed(direction, [data[i : i + chunk] for i in range(0, len(data), chunk)])
        rebuilt = b"".join(e.raw if isinstance(e, Frame) else e.data for e in events)
        assert rebuilt == data


@given(st.binary(max_size=400), st.integers(1, 17))
def test_fuzz_parser_never_raises_and_loses_no_byte(data: bytes, chunk: int) -> None:
    _check_no_byte_lost(data, chunk)


@pytest.mark.slow
@settings(max_examples=100_000, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 17))
def test_fuzz_parser_slow(data: bytes, chunk: int) -> None:
    _check_no_byte_lost(data, chunk)
