"""explain() for modbus-rtu: the shared technician-decoder contract, and never raising."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_protocol import explain as shared_explain
from shared_protocol.errors import LocalProtocolError
from shared_protocol.modbus import (
    build_exception_response,
    build_read_request,
    build_read_response,
    build_write_multiple_request,
    build_write_multiple_response,
    build_write_single_request,
    crc16,
    explain,
)

CONTRACT_KEYS = {
    "protocol",
    "valid",
    "error",
    "address",
    "control",
    "direction",
    "function",
    "values",
}


def test_read_request() -> None:
    result = explain(bytes.fromhex("01 03 00 00 00 0A C5 CD"))
    assert result.keys() >= CONTRACT_KEYS
    assert result["protocol"] == "modbus-rtu"
    assert result["valid"] is True
    assert result["error"] is None
    assert (result["address"], result["control"], result["direction"]) == ("1", "03", "request")
    assert result["function"] == "read holding registers"
    assert (result["start_address"], result["count"]) == ("0x0000", 10)
    assert result["values"] == []


def test_read_response_with_model_and_start_gives_values() -> None:
    # SDM630 input registers 0x0046..0x0049: 50.0 Hz = 0x42480000, 1234.5 kWh = 0x449A5000.
    raw = build_read_response(7, 4, [0x4248, 0x0000, 0x449A, 0x5000]).raw
    plain = explain(raw)
    assert plain["valid"] and plain["direction"] == "response" and plain["values"] == []
    assert plain["registers"] == ["0x4248", "0x0000", "0x449A", "0x5000"]
    result = explain(raw, meter_model="sdm630", start=0x0046)
    assert result["values"] == [
        {"quantity": "frequency", "obis": "1-0:14.7.0", "value": "50", "unit": "Hz"},
        {
            "quantity": "import active energy total",
            "obis": "1-0:1.8.0",
            "value": "1234.5",
            "unit": "kWh",
        },
    ]
    assert explain(raw, meter_model="sdm630")["values_note"].startswith("give the read's start")


def test_exception_response_is_named_with_advice() -> None:
    result = explain(build_exception_response(1, 3, 2).raw)
    assert result["valid"] and result["direction"] == "response"
    assert result["control"] == "83"
    assert result["function"] == "exception to read holding registers"
    assert result["exception"] == "ILLEGAL_DATA_ADDRESS"
    assert "start address" in result["exception_meaning"]


def test_crc_error_is_actionable() -> None:
    raw = bytes.fromhex("01 03 00 00 00 0A C5 CE")
    result = explain(raw)
    assert result["valid"] is False
    assert "CRC" in result["error"] and "baud" in result["error"]
    assert result["crc"] == "C5CE" and result["crc_expected"] == "C5CD"
    assert result["direction"] == "request"


@pytest.mark.parametrize(
    ("frame", "direction"),
    [
        (build_write_multiple_request(1, 0x10, [1, 2, 3]), "request"),
        (build_write_multiple_response(1, 0x10, 3), "response"),
        (build_write_single_request(1, 0x10, 3), "request"),
    ],
)
def test_write_direction_guess(frame: object, direction: str) -> None:
    result = explain(frame.raw)  # type: ignore[attr-defined]
    assert result["valid"] and result["direction"] == direction


def test_write_single_carries_an_echo_note() -> None:
    assert "echoes" in explain(build_write_single_request(1, 0x10, 3).raw)["note"]


def test_through_the_shared_entry_point() -> None:
    raw = build_read_request(1, 4, 0, 2).raw
    assert shared_explain.explain(raw, "modbus-rtu")["valid"] is True
    assert shared_explain.explain(raw)["protocol"] == "modbus-rtu"


def test_unknown_model_is_the_callers_mistake() -> None:
    with pytest.raises(LocalProtocolError):
        explain(b"\x01", meter_model="acme9000")


@pytest.mark.parametrize("raw", [b"", b"\x01", b"\x01\x03", b"\xff" * 300, bytes(8)])
def test_odd_input_is_reported_not_raised(raw: bytes) -> None:
    result = explain(raw)
    assert result["valid"] is False
    assert result["error"]
    json.dumps(result)


def _check(raw: bytes, start: int) -> None:
    for model in (None, "sdm630", "dtsu666"):
        result = explain(raw, meter_model=model, start=start)
        assert result.keys() >= CONTRACT_KEYS
        assert result["valid"] is (result["error"] is None)
        json.dumps(result)


@given(st.binary(max_size=300), st.integers(0, 0xFFFF))
def test_fuzz_never_raises(raw: bytes, start: int) -> None:
    _check(raw, start)


@given(st.binary(min_size=2, max_size=60), st.integers(0, 0x4100))
def test_fuzz_valid_crc_never_raises(body: bytes, start: int) -> None:
    _check(body + crc16(body), start)


@pytest.mark.slow
@settings(max_examples=100_000, deadline=None)
@given(st.binary(min_size=2, max_size=260), st.booleans(), st.integers(0, 0xFFFF))
def test_fuzz_slow(body: bytes, fix_crc: bool, start: int) -> None:
    _check(body + crc16(body) if fix_crc else body, start)
