"""Every public DL/T 698.45 vector: decode to the listed fields, re-encode byte-exact,
negatives rejected with a reason, and every frame through the StreamParser in any
chunking."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared_protocol.dlt698 import (
    Fragment,
    FragmentType,
    Frame,
    StreamParser,
    crc16,
    decode_apdu,
    decode_frame,
    encode_apdu,
    encode_frame,
    explain,
)
from shared_protocol.errors import ChecksumError, ProtocolError
from shared_protocol.stream import NEED_DATA, Discarded

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "vectors" / "dlt698.json").read_text(encoding="utf-8")
)["vectors"]
FRAMES = [v for v in VECTORS if "frame_hex" in v]
GOOD = [v for v in FRAMES if v["verified"]]
BAD = [v for v in FRAMES if v["verified"] is False]
APDU_ONLY = [v for v in VECTORS if "apdu_hex" in v]


def raw(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(vector.get("frame_hex") or vector["apdu_hex"])


def ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["id"] for v in vectors]


def test_vector_file_has_the_expected_mix() -> None:
    assert len(GOOD) >= 17 and len(BAD) == 2 and len(APDU_ONLY) == 4


def test_crc_check_value() -> None:
    # CRC-16/X-25 catalogue check value.
    assert crc16(b"123456789") == 0x906E


@pytest.mark.parametrize("vector", GOOD, ids=ids(GOOD))
def test_verified_frame_decodes_and_reencodes_byte_exact(vector: dict[str, Any]) -> None:
    data = raw(vector)
    frame = decode_frame(data)
    dec = vector["decoded"]
    assert encode_frame(frame) == data
    assert f"{frame.control.to_byte():02X}" == dec["control"]
    assert int(frame.control.from_server) == dec["DIR"]
    assert int(frame.control.client_started) == dec["PRM"]
    assert frame.control.fragmented == dec["fragment"]
    assert frame.control.scrambled == dec["scramble"]
    assert frame.address.type.name.lower() == dec["SA_type"]
    assert frame.address.logical == dec["SA_logical"]
    assert frame.address.wire == bytes.fromhex(dec["SA_wire"])
    assert frame.address.digits == dec["SA"]
    assert f"{frame.client_address:02X}" == dec["CA"]
    assert frame.apdu == bytes.fromhex(dec["APDU"])


def check_apdu_fields(apdu_bytes: bytes, expected: dict[str, Any]) -> None:
    apdu = decode_apdu(apdu_bytes)
    assert encode_apdu(apdu) == apdu_bytes
    assert f"{apdu.TAG:02X}" == expected["tag"]
    assert expected["service"] == apdu.SERVICE
    if "choice" in expected:
        assert expected["choice"] == apdu.CHOICE
    for key in ("piid", "piid_acd"):
        if key in expected:
            assert f"{apdu.piid:02X}" == expected[key]
    view = explain_apdu(apdu_bytes)
    if "OAD" in expected:
        assert view["oads"][0] == expected["OAD"]
    if "OMD" in expected:
        assert view["omd"] == expected["OMD"]
    if "data" in expected:
        got = view["results"][0]["data"] if "results" in view else view["data"]
        assert got == expected["data"]
    if "param" in expected:
        assert view["data"] == expected["param"]
    for key in ("type", "heartbeat_s", "request_time", "received_time", "response_time"):
        if key in expected:
            assert view[key] == expected[key]
    if "result_code" in expected:
        assert view["result_code"] == expected["result_code"]
        assert view["clock_trusted"] == expected["clock_trusted"]
    if "RSD_selector" in expected:
        assert view["rsd"]["selector"] == expected["RSD_selector"]
    if "inner" in expected:
        inner = view["inner"]
        assert inner["service"] == expected["inner"]["service"]
        assert inner["oads"][0] == expected["inner"]["OAD"]
        assert inner["results"][0]["data"] == expected["inner"]["data"]


def explain_apdu(apdu_bytes: bytes) -> dict[str, Any]:
    from shared_protocol.dlt698.explain import _apdu_json

    return _apdu_json(decode_apdu(apdu_bytes))[0]


@pytest.mark.parametrize(
    "vector",
    [v for v in GOOD if "apdu_decoded" in v["decoded"]],
    ids=ids([v for v in GOOD if "apdu_decoded" in v["decoded"]]),
)
def test_verified_frame_apdu_matches_vector(vector: dict[str, Any]) -> None:
    check_apdu_fields(decode_frame(raw(vector)).apdu, vector["decoded"]["apdu_decoded"])


@pytest.mark.parametrize("vector", APDU_ONLY, ids=ids(APDU_ONLY))
def test_apdu_only_vector_decodes_and_reencodes(vector: dict[str, Any]) -> None:
    check_apdu_fields(raw(vector), vector["decoded"])


def test_fragment_confirm_vector() -> None:
    # 698-028: format word 05 81 → 0x8105: type bits 14-15 = 2 (confirm), sequence 0x105.
    frame = decode_frame(raw(next(v for v in FRAMES if v["id"] == "698-028")))
    fragment = Fragment.from_bytes(frame.apdu)
    assert (fragment.sequence, fragment.type, fragment.data) == (0x105, FragmentType.CONFIRM, b"")
    assert fragment.to_bytes() == frame.apdu


@pytest.mark.parametrize("vector", BAD, ids=ids(BAD))
def test_negative_vectors_rejected_with_reason(vector: dict[str, Any]) -> None:
    with pytest.raises(ChecksumError):
        decode_frame(raw(vector))
    view = explain(raw(vector))
    assert view["valid"] is False
    assert "HCS" in view["error"]


def test_placeholder_crc_is_named_and_rest_still_read() -> None:
    view = explain(raw(next(v for v in BAD if v["id"] == "698-038")))
    assert "placeholder" in view["error"]
    assert view["address"] == "000000000001"
    assert view["apdu"]["results"][0]["data"] == "2024-06-03 11:28:00"


def test_short_address_is_diagnosed() -> None:
    view = explain(raw(next(v for v in BAD if v["id"] == "698-040")))
    assert "AF low nibble should be 3" in view["error"]
    assert view["address"] == "12345678"
    assert view["apdu"]["service"] == "LINK-Request"


@pytest.mark.parametrize("vector", FRAMES, ids=ids(FRAMES))
def test_explain_matches_vector_header(vector: dict[str, Any]) -> None:
    view = explain(raw(vector))
    json.dumps(view)  # JSON-ready
    assert view["protocol"] == "dlt698.45"
    assert view["valid"] is bool(vector["verified"])
    if vector["verified"]:
        dec = vector["decoded"]
        assert view["error"] is None
        assert view["address"] == dec["SA"]
        assert view["control"] == dec["control"]
        assert view["ca"] == dec["CA"]
        assert view["direction"] == ("response" if dec["DIR"] == dec["PRM"] else "request")
        assert view["sender"] == ("server" if dec["DIR"] else "client")


# --------------------------------------------------------------------- stream parser


def collect(parser: StreamParser) -> tuple[list[Frame], list[Discarded]]:
    frames: list[Frame] = []
    dropped: list[Discarded] = []
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            return frames, dropped
        if isinstance(event, Frame):
            frames.append(event)
        else:
            assert isinstance(event, Discarded)
            dropped.append(event)


def feed(chunks: list[bytes]) -> tuple[list[Frame], list[Discarded]]:
    parser = StreamParser()
    frames: list[Frame] = []
    dropped: list[Discarded] = []
    for chunk in [*chunks, b""]:
        parser.receive_data(chunk)
        f, d = collect(parser)
        frames += f
        dropped += d
    assert parser.buffered == 0
    return frames, dropped


@pytest.mark.parametrize("vector", GOOD, ids=ids(GOOD))
def test_stream_whole_split_and_bytewise(vector: dict[str, Any]) -> None:
    data = raw(vector)
    expected = decode_frame(data)
    assert feed([data]) == ([expected], [])
    for cut in range(1, len(data)):
        assert feed([data[:cut], data[cut:]]) == ([expected], [])
    assert feed([bytes([b]) for b in data]) == ([expected], [])


GARBAGE = bytes.fromhex("00 68 11 68 16 FF 68 17 00 43")


@pytest.mark.parametrize("vector", GOOD, ids=ids(GOOD))
def test_stream_with_garbage_and_preamble(vector: dict[str, Any]) -> None:
    data = raw(vector)
    expected = decode_frame(data)
    stream = GARBAGE + b"\xfe\xfe\xfe\xfe" + data + GARBAGE + data
    for chunks in ([stream], [bytes([b]) for b in stream]):
        frames, dropped = feed(chunks)
        assert frames == [expected, expected]
        assert b"".join(d.data for d in dropped) == GARBAGE + GARBAGE
        assert all(d.reason for d in dropped)


@pytest.mark.parametrize("vector", BAD, ids=ids(BAD))
def test_stream_drops_bad_frames_and_keeps_the_next(vector: dict[str, Any]) -> None:
    good = raw(GOOD[0])
    frames, dropped = feed([raw(vector) + good])
    assert frames == [decode_frame(good)]
    assert b"".join(d.data for d in dropped) == raw(vector)


def test_stream_corrupted_frame_then_good_frame() -> None:
    good = raw(GOOD[1])
    corrupted = bytearray(good)
    corrupted[-4] ^= 0x01  # break the FCS, not the header
    frames, dropped = feed([bytes(corrupted) + good])
    assert frames == [decode_frame(good)]
    assert b"".join(d.data for d in dropped) == bytes(corrupted)
    assert "FCS" in dropped[0].reason


def test_stream_truncated_frame_at_eof_is_discarded() -> None:
    good = raw(GOOD[0])
    frames, dropped = feed([good[:-3]])
    assert frames == [] and b"".join(d.data for d in dropped) == good[:-3]


def test_stream_refuses_data_after_eof() -> None:
    parser = StreamParser()
    parser.receive_data(b"")
    with pytest.raises(ProtocolError):
        parser.receive_data(b"\x68")
