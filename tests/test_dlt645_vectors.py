"""Every DL/T 645 vector in tests/vectors/dlt645.json, as a table-driven specification.

Verified frames decode to the listed address, control, DI and values and re-encode byte
for byte; negative frames (verified: false, plus the checksum-valid 645-069) are reported
invalid with a reason. Each frame also goes through the StreamParser whole, split at every
position, byte by byte, and wrapped in garbage.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared_protocol.dlt645 import (
    Frame,
    StreamParser,
    count_preamble,
    decode_frame,
    encode_frame,
    explain,
)
from shared_protocol.errors import ProtocolError
from shared_protocol.stream import NEED_DATA, Discarded

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "vectors" / "dlt645.json").read_text(encoding="utf-8")
)["vectors"]
VERIFIED = [v for v in VECTORS if v["verified"]]
NEGATIVE = [v for v in VECTORS if not v["verified"]]
# 645-069 passes the checksum but its baud byte was sent without +33H (−33H gives D5).
SEMANTICALLY_INVALID = {"645-069"}


def raw_of(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(vector["frame_hex"])


def ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["id"] for v in vectors]


def test_the_vector_file_has_both_editions_and_negatives() -> None:
    standards = {v["standard"] for v in VECTORS}
    assert standards == {"DL/T 645-2007", "DL/T 645-1997"}
    assert len(NEGATIVE) >= 4


@pytest.mark.parametrize("vector", VERIFIED, ids=ids(VERIFIED))
def test_verified_vector_decodes_and_reencodes_byte_exact(vector: dict[str, Any]) -> None:
    raw = raw_of(vector)
    expected = vector["decoded"]
    frame = decode_frame(raw)
    assert frame.address == expected["address"]
    assert f"{frame.control.byte:02X}" == expected["control"]
    assert frame.control.abnormal is expected["abnormal"]
    assert frame.control.follow_up is expected["follow_up"]
    assert frame.data.hex(" ").upper() == expected["data_minus33"]
    assert count_preamble(raw) == expected["preamble_fe"]
    assert encode_frame(frame, preamble=expected["preamble_fe"]) == raw


def _same_value(ours: Any, theirs: Any) -> bool:
    if isinstance(theirs, bool) or theirs is None:
        return ours == theirs
    if isinstance(theirs, int | float):
        return Decimal(ours) == Decimal(str(theirs))
    if isinstance(theirs, list):
        return len(ours) == len(theirs) and all(map(_same_value, ours, theirs))
    return bool(ours == theirs)


@pytest.mark.parametrize(
    "vector", [v for v in VERIFIED if v["id"] not in SEMANTICALLY_INVALID], ids=lambda v: v["id"]
)
def test_verified_vector_explains_to_the_listed_meaning(vector: dict[str, Any]) -> None:
    expected = vector["decoded"]
    result = explain(raw_of(vector))
    assert result["valid"] is True, result["error"]
    assert result["error"] is None
    assert result["protocol"] == "dlt645-" + vector["standard"][-4:]
    assert result["address"] == expected["address"]
    assert result["control"] == expected["control"]
    assert result["direction"] == vector["direction"]
    assert result["abnormal"] is expected["abnormal"]
    assert result["di"] == expected.get("DI")
    assert result["data"] == expected["data_minus33"]
    if "error_bits" in expected:
        assert result["error_code"] == expected["error_byte"]
        assert result["error_bits"] == expected["error_bits"]
    if "value" in expected:
        (value,) = result["values"]
        assert _same_value(value["value"], expected["value"]), (value, expected["value"])
        if expected.get("unit") in ("kWh", "V", "A", "kW"):
            assert value["unit"] == expected["unit"]
    json.dumps(result)  # the contract: everything is JSON-serialisable


# Decimal strings keep the format's decimals: hand-checked against the data bytes.
@pytest.mark.parametrize(
    ("vector_id", "value"),
    [
        ("645-005", "100.1"),  # 01 10 → 1001, XXX.X
        ("645-016", "0.238"),  # 38 02 00 → 000238, XXX.XXX
        ("645-027", ["3.89", "0.00", "0.00", "3.89", "0.00"]),  # 0001FF00 block
        ("645-028", "0.06"),
        ("645-030", ["231.4", "0.0", "0.0"]),
        ("645-048", "1200"),  # XXXXXX imp/kWh
        ("645-054", "221.76"),
        ("645-061", "0.0000"),  # XX.XXXX kW
        ("645-075", "0.36"),  # 1997: BCD 36 = 0.36 kWh, not 0.54
        ("645-100", "22:22:04"),
        ("645-110", "272.61"),
    ],
)
def test_decimal_strings_keep_the_formats_decimals(vector_id: str, value: Any) -> None:
    (vector,) = [v for v in VECTORS if v["id"] == vector_id]
    assert explain(raw_of(vector))["values"][0]["value"] == value


def test_block_reply_lists_obis_codes() -> None:
    (vector,) = [v for v in VECTORS if v["id"] == "645-027"]
    (value,) = explain(raw_of(vector))["values"]
    assert value["obis"] == ["1-0:1.8.0", "1-0:1.8.1", "1-0:1.8.2", "1-0:1.8.3", "1-0:1.8.4"]
    assert value["unit"] == "kWh"


def test_tariff_registers_add_up_in_the_real_meter_chain() -> None:
    # 645-051…055 from one real meter: total 230.93 = 221.76 (flat) + 9.17 (valley) per
    # the reference; the vectors we hold give tariff 2 = 0.00 and tariff 3 = 221.76.
    values = {
        explain(raw_of(v))["di"]: Decimal(explain(raw_of(v))["values"][0]["value"])
        for v in VERIFIED
        if v["id"] in {"645-053", "645-054"}
    }
    assert values == {"00010200": Decimal("0.00"), "00010300": Decimal("221.76")}


def test_nonconformant_voltage_length_is_decoded_with_a_warning() -> None:
    (vector,) = [v for v in VECTORS if v["id"] == "645-062"]
    result = explain(raw_of(vector))
    assert result["valid"] is True
    assert result["values"][0]["value"] == "0.0"
    assert any("carries 2 data bytes" in w for w in result["warnings"])


def test_remote_control_plaintext_fields() -> None:
    (vector,) = [v for v in VECTORS if v["id"] == "645-020"]
    details = explain(raw_of(vector))["details"]
    assert details["password_level"] == "02"
    assert details["command"] == "close_directly"  # N1 = 1C
    assert details["valid_until"] == "2021-07-07T18:40:02"


def test_broadcast_time_sync_reads_ss_mm_hh_dd_mm_yy() -> None:
    (vector,) = [v for v in VECTORS if v["id"] == "645-063"]
    assert explain(raw_of(vector))["details"]["time"] == "2019-12-07T16:28:00"


@pytest.mark.parametrize("vector", NEGATIVE, ids=ids(NEGATIVE))
def test_negative_vector_is_invalid_with_a_reason(vector: dict[str, Any]) -> None:
    raw = raw_of(vector)
    with pytest.raises(ProtocolError):
        decode_frame(raw)
    result = explain(raw)
    assert result["valid"] is False
    assert "checksum is 0x" in result["error"]
    assert "a byte was corrupted or edited" in result["error"]
    # still tells the technician what it could read
    assert result["address"] == vector["decoded"]["address"]
    assert result["control"] == vector["decoded"]["control"]
    assert result["protocol"] == "dlt645-" + vector["standard"][-4:]


def test_checksum_message_names_both_sums() -> None:
    (vector,) = [v for v in VECTORS if v["id"] == "645-008"]
    assert explain(raw_of(vector))["error"] == (
        "checksum is 0xF5 but the bytes add up to 0xBD: a byte was corrupted or edited"
    )


def test_baud_byte_sent_without_offset_is_reported() -> None:
    (vector,) = [v for v in VECTORS if v["id"] == "645-069"]
    decode_frame(raw_of(vector))  # the checksum is right ...
    result = explain(raw_of(vector))
    assert result["valid"] is False  # ... but D5 is no baud flag
    assert "D5" in result["error"]
    assert "without the +33H offset" in result["error"]
    assert result["control"] == "17"


# ---------------------------------------------------------------- through the stream parser


def drain(parser: StreamParser) -> list[Frame | Discarded]:
    events: list[Frame | Discarded] = []
    while (event := parser.next_event()) is not NEED_DATA:
        assert isinstance(event, Frame | Discarded)
        events.append(event)
    return events


def feed(chunks: list[bytes]) -> list[Frame | Discarded]:
    parser = StreamParser()
    events: list[Frame | Discarded] = []
    for chunk in chunks:
        parser.receive_data(chunk)
        events += drain(parser)
    parser.receive_data(b"")
    return events + drain(parser)


def frames(events: list[Frame | Discarded]) -> list[Frame]:
    return [e for e in events if isinstance(e, Frame)]


def discarded(events: list[Frame | Discarded]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Discarded))


@pytest.mark.parametrize("vector", VERIFIED, ids=ids(VERIFIED))
def test_stream_parser_finds_each_verified_frame_in_any_chunking(vector: dict[str, Any]) -> None:
    raw = raw_of(vector)
    expected = [decode_frame(raw)]
    assert feed([raw]) == expected
    for cut in range(1, len(raw)):
        assert feed([raw[:cut], raw[cut:]]) == expected, cut
    assert feed([bytes([b]) for b in raw]) == expected
    garbage_before = b"\x00\x68\x12\x16\xff"
    garbage_after = b"\x68\x68\x00"
    events = feed([garbage_before + raw + garbage_after])
    assert frames(events) == expected
    assert discarded(events) == garbage_before + garbage_after
    byte_events = feed([bytes([b]) for b in garbage_before + raw + garbage_after])
    assert frames(byte_events) == expected
    assert discarded(byte_events) == garbage_before + garbage_after


@pytest.mark.parametrize("vector", NEGATIVE, ids=ids(NEGATIVE))
def test_stream_parser_discards_each_negative_frame_and_resyncs(vector: dict[str, Any]) -> None:
    raw = raw_of(vector)
    good = raw_of(VERIFIED[0])
    stream = raw + good
    splits = [[stream[:cut], stream[cut:]] for cut in range(1, len(stream))]
    for chunks in [[stream], [bytes([b]) for b in stream], *splits]:
        events = feed(chunks)
        assert frames(events) == [decode_frame(good)]
        assert discarded(events) == raw.lstrip(b"\xfe")
        reasons = [e.reason for e in events if isinstance(e, Discarded)]
        assert any("checksum" in r for r in reasons)
