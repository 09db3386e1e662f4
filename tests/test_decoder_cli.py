"""The technician decoder: every public vector, pasted as a technician would.

Golden values are the vector files' own (``tests/vectors/*.json``, copied from
``shared/vectors`` with their sources).
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared_protocol.explain import explain, parse_hex

VECTORS = Path(__file__).parent / "vectors"
STANDARD_TO_PROTOCOL = {
    "DL/T 645-2007": "dlt645-2007",
    "DL/T 645-1997": "dlt645-1997",
    "DL/T 698.45": "dlt698.45",
}
# Frames whose checksum is right but whose content is known wrong; their decoders flag
# them in their own tests (the baud byte without +33H).
SEMANTIC_NEGATIVES = {"645-069"}
# 698-032 (synthetic) is labelled "response" with C=83 and a GET-Request inside; 698-019, a
# real device's report with the same C=83, is labelled "request". Direction follows the
# standard (PRM=0: the server started the exchange, so 83 is its request).
DIRECTION_LABEL_WRONG = {"698-032"}


def _frames() -> list[dict[str, Any]]:
    rows = []
    for name in ("dlt645.json", "dlt698.json"):
        rows += [v for v in json.loads((VECTORS / name).read_text())["vectors"] if "frame_hex" in v]
    return rows


FRAMES = _frames()


def _run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared_protocol", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("vector", FRAMES, ids=[v["id"] for v in FRAMES])
def test_auto_detects_protocol_validity_and_address(vector: dict[str, Any]) -> None:
    result = explain(parse_hex(vector["frame_hex"]))
    json.dumps(result)  # the whole explanation is JSON-serialisable
    assert result["protocol"] == STANDARD_TO_PROTOCOL[vector["standard"]]
    if vector["id"] not in SEMANTIC_NEGATIVES:
        assert result["valid"] is vector["verified"], result
    if vector["id"] in SEMANTIC_NEGATIVES:
        assert result["valid"] is False
        assert "baud" in result["error"]
    elif vector["verified"]:
        assert result["error"] is None
    else:
        assert isinstance(result["error"], str) and result["error"]
    decoded = vector["decoded"]
    expected_address = decoded.get("address") or decoded.get("SA")
    if vector["verified"]:
        assert result["address"] == expected_address
        assert result["control"] == decoded["control"]
        if vector["id"] not in DIRECTION_LABEL_WRONG:
            assert result["direction"] == vector["direction"]
        assert isinstance(result["function"], str) and result["function"]


VALUED = [
    v
    for v in FRAMES
    if v["verified"] and v["decoded"].get("value") is not None and v["id"] not in SEMANTIC_NEGATIVES
]


@pytest.mark.parametrize("vector", VALUED, ids=[v["id"] for v in VALUED])
def test_values_match_the_vector(vector: dict[str, Any]) -> None:
    expected = vector["decoded"]["value"]
    values = explain(parse_hex(vector["frame_hex"]))["values"]
    assert values, "a reply carrying meter data must yield canonical values"
    got = values[0]["value"]
    assert {"quantity", "obis", "value", "unit"} <= set(values[0])
    if isinstance(expected, list):
        assert [Decimal(x) for x in got] == [Decimal(str(x)) for x in expected]
    elif isinstance(expected, int | float):
        assert Decimal(got) == Decimal(str(expected))
    else:
        assert str(got).endswith(str(expected)) or expected in str(got)


def test_cli_decodes_a_pasted_frame() -> None:
    # 645-054: forward active energy tariff 3 of meter 000006605518 = 221.76 kWh
    frame = "FE FE FE FE 68 18 55 60 06 00 00 68 91 08 33 36 34 33 A9 54 35 33 71 16"
    result = _run_cli("decode", frame)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["protocol"] == "dlt645-2007"
    assert doc["valid"] is True
    assert doc["address"] == "000006605518"
    assert doc["di"] == "00010300"
    assert doc["values"][0]["obis"] == "1-0:1.8.3"
    assert doc["values"][0]["value"] == "221.76"
    assert doc["values"][0]["unit"] == "kWh"


def test_cli_reads_stdin_and_accepts_separate_words() -> None:
    words = ["68", *["AA"] * 6, "68", "13", "00", "DF", "16"]
    as_words = json.loads(_run_cli("decode", *words).stdout)
    from_stdin = json.loads(_run_cli("decode", stdin=" ".join(words)).stdout)
    assert as_words == from_stdin
    assert as_words["function"]


def test_invalid_frame_is_an_answer_not_a_failure() -> None:
    # 645-008: the page edited the address but kept the checksum
    result = _run_cli("decode", "68 75 67 12 66 88 00 68 91 08 33 33 34 33 A4 56 79 38 F5 16")
    assert result.returncode == 0
    doc = json.loads(result.stdout)
    assert doc["valid"] is False
    assert "checksum" in doc["error"].lower()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("decode", "68 ZZ"), "not a hex digit"),
        (("decode", "68 A"), "odd number"),
        (("decode", "--protocol", "iec104", "68"), "Invalid value"),
    ],
)
def test_bad_usage_exits_2_with_a_reason(args: tuple[str, ...], message: str) -> None:
    result = _run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_forced_protocol_is_respected() -> None:
    frame = parse_hex("68 AA AA AA AA AA AA 68 13 00 DF 16")
    assert explain(frame, "dlt698.45")["protocol"] == "dlt698.45"
    assert explain(frame, "dlt698.45")["valid"] is False


def test_modbus_reply_decodes_with_model_and_start() -> None:
    # SDM630 input register 0x0000 = phase 1 voltage, float32 big-endian;
    # 0x43660000 = 2^7 × 1.796875 = 230.0 V. CRC computed by pymodbus' framer.
    result = _run_cli("decode", "--model", "sdm630", "--start", "0", "01 04 04 43 66 00 00 0E 1F")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["valid"] is True
    assert doc["values"] == [
        {"quantity": "voltage L1", "obis": "1-0:32.7.0", "value": "230", "unit": "V"}
    ]


def test_modbus_model_unknown_is_a_usage_error() -> None:
    result = _run_cli("decode", "--model", "sdm999", "--start", "0", "01 04 04 43 66 00 00 0E 1F")
    assert result.returncode == 2
    assert "sdm630" in result.stderr  # names the models it knows
