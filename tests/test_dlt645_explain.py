"""explain(): the technician contract of shared_protocol.explain, for DL/T 645."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import pytest

from shared_protocol.dlt645 import (
    Bcd,
    Standard,
    encode_frame,
    encode_values,
    encrypted_remote_control_request,
    explain,
    read_request,
    read_response,
    time_sync_request,
)

H = bytes.fromhex
CONTRACT_KEYS = {
    "protocol",
    "valid",
    "error",
    "address",
    "control",
    "direction",
    "function",
    "values",
    "di",
    "abnormal",
    "error_code",
    "error_bits",
    "follow_up",
    "data",
}


def test_single_value_is_named_in_the_canonical_vocabulary() -> None:
    raw = encode_frame(
        read_response("000006605518", 0x00010000, Bcd(4, 2).encode(Decimal("230.93")))
    )
    result = explain(raw)
    assert result.keys() >= CONTRACT_KEYS
    assert result["values"] == [
        {
            "quantity": "import active energy total",
            "obis": "1-0:1.8.0",
            "value": "230.93",
            "unit": "kWh",
        }
    ]


def test_settlement_period_is_obis_group_f() -> None:
    raw = encode_frame(read_response("000006605518", 0x00010001, Bcd(4, 2).encode(Decimal("1.50"))))
    (value,) = explain(raw)["values"]
    assert value["obis"] == "1-0:1.8.0*1"
    assert value["value"] == "1.50"


def test_demand_pair_lists_value_and_time() -> None:
    data = encode_values(0x01010000, [Decimal("12.3456"), datetime(2024, 3, 5, 12, 15)])
    (value,) = explain(encode_frame(read_response("000006605518", 0x01010000, data)))["values"]
    assert value["obis"] == ["1-0:1.6.0", "0-0:96.62.10"]
    assert value["value"] == ["12.3456", "2024-03-05T12:15:00"]
    assert value["unit"] == ["kW", None]


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xfe\xfe", b"\x68", b"\x68" * 20, bytes(range(256)), H("68 AA AA AA AA AA AA 68 11")],
)
def test_never_raises_and_always_explains_why(raw: bytes) -> None:
    for standard in (None, "2007", "1997"):
        result = explain(raw, standard)
        json.dumps(result)
        assert result["valid"] is False
        assert isinstance(result["error"], str) and result["error"]


def test_header_fields_are_filled_even_when_truncated() -> None:
    result = explain(H("FE FE 68 18 55 60 06 00 00 68 91 08 33"))
    assert result["address"] == "000006605518"
    assert result["control"] == "91"
    assert result["direction"] == "response"
    assert "truncated" in result["error"]


def test_unknown_di_is_valid_with_a_warning() -> None:
    result = explain(encode_frame(read_response("000006605518", 0x7F7F7F7F, b"\x01")))
    assert result["valid"] is True
    assert result["di"] == "7F7F7F7F"
    assert any("not in our" in w for w in result["warnings"])


def test_invalid_bcd_in_a_reply_is_invalid() -> None:
    result = explain(encode_frame(read_response("000006605518", 0x00010000, H("AA 00 00 00"))))
    assert result["valid"] is False
    assert "not BCD" in result["error"]


def test_forced_edition_and_unknown_edition() -> None:
    raw = encode_frame(read_request("000006605518", 0x9010, standard=Standard.DLT645_1997))
    assert explain(raw)["protocol"] == "dlt645-1997"
    assert explain(raw, "1997")["di"] == "9010"
    assert explain(raw, "2007")["function"].startswith("unknown function")
    assert explain(raw, "2013")["valid"] is False


def test_time_sync_and_encrypted_remote_control() -> None:
    sync = explain(encode_frame(time_sync_request(datetime(2024, 2, 29, 23, 59, 58))))
    assert sync["address"] == "999999999999"
    assert sync["details"]["time"] == "2024-02-29T23:59:58"
    sealed = explain(encode_frame(encrypted_remote_control_request("000006605518", H("01 02"))))
    assert sealed["details"]["encrypted"] is True
    assert sealed["details"]["ciphertext"] == "01 02"
