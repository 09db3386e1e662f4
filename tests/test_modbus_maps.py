"""Register maps as data, block planning, and Decimal values from hand-built responses."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared_protocol.errors import LocalProtocolError, MalformedFrameError
from shared_protocol.modbus import (
    MAX_READ_COUNT,
    METER_MAPS,
    DataType,
    Direction,
    RegisterEntry,
    RegisterMap,
    RegisterType,
    WordOrder,
    build_read_request,
    build_read_response,
    decode_frame,
    decode_registers,
    decode_value,
    encode_value,
    float32_to_decimal,
    markdown_table,
    meter_map,
    plan_reads,
)
from shared_protocol.quantities import QUANTITIES, MeterValue

MAPS = list(METER_MAPS.values())
DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol-modbus.md"


# ---- maps are data ----------------------------------------------------------------------


def test_the_four_models_are_there() -> None:
    assert set(METER_MAPS) == {"sdm120", "sdm630", "ddsu666", "dtsu666"}
    assert meter_map("SDM630") is METER_MAPS["sdm630"]
    with pytest.raises(LocalProtocolError, match="known: sdm120"):
        meter_map("acme9000")


@pytest.mark.parametrize("register_map", MAPS, ids=lambda m: m.model)
def test_no_overlapping_registers(register_map: RegisterMap) -> None:
    taken: dict[tuple[RegisterType, int], str] = {}
    for entry in register_map.entries:
        for word in range(entry.address, entry.end):
            key = (entry.register_type, word)
            assert key not in taken, f"0x{word:04X} is {taken[key]} and {entry.obis}"
            taken[key] = entry.obis


@pytest.mark.parametrize("register_map", MAPS, ids=lambda m: m.model)
def test_every_obis_is_in_the_vocabulary_with_its_unit(register_map: RegisterMap) -> None:
    obis = [e.obis for e in register_map.entries]
    assert len(obis) == len(set(obis)), "one register per quantity"
    for entry in register_map.entries:
        assert entry.obis in QUANTITIES
        assert QUANTITIES[entry.obis].unit == entry.unit


@pytest.mark.parametrize("register_map", MAPS, ids=lambda m: m.model)
def test_every_map_cites_sources(register_map: RegisterMap) -> None:
    assert len(register_map.sources) >= 2


@pytest.mark.parametrize("register_map", MAPS, ids=lambda m: m.model)
@pytest.mark.parametrize("max_count", [2, 4, 10, 50, MAX_READ_COUNT])
@pytest.mark.parametrize("max_gap", [None, 0, 200])
def test_plan_covers_every_register_exactly_once(
    register_map: RegisterMap, max_count: int, max_gap: int | None
) -> None:
    blocks = plan_reads(register_map, max_count=max_count, max_gap=max_gap)
    planned = [e for b in blocks for e in b.entries]
    assert sorted(planned, key=id) == sorted(register_map.entries, key=id)
    gap = register_map.max_gap if max_gap is None else max_gap
    for block in blocks:
        assert 1 <= block.count <= max_count
        assert {e.register_type for e in block.entries} == {block.register_type}
        for entry in block.entries:
            assert block.address <= entry.address and entry.end <= block.address + block.count
        for before, after in zip(block.entries, block.entries[1:], strict=False):
            assert after.address - before.end <= gap


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # SDM: 0x0000..0x004F in one read (holes bridged), 0x00E0 and 0x0156 far away.
        ("sdm630", [(0x0000, 80), (0x00E0, 2), (0x0156, 2)]),
        ("sdm120", [(0x0000, 80), (0x0156, 2)]),
        ("ddsu666", [(0x2000, 16), (0x4000, 12)]),
        # DTSU: the undocumented 0x2032..0x2043 hole is not bridged.
        ("dtsu666", [(0x2006, 44), (0x2044, 2), (0x401E, 12)]),
    ],
)
def test_fewest_reads(model: str, expected: list[tuple[int, int]]) -> None:
    assert [(b.address, b.count) for b in plan_reads(meter_map(model))] == expected


def test_plan_of_selected_quantities_and_limits() -> None:
    sdm = meter_map("sdm630")
    blocks = plan_reads(sdm, only=["1-0:1.8.0", "1-0:2.8.0"])
    assert [(b.function_code, b.address, b.count) for b in blocks] == [(4, 0x0048, 4)]
    with pytest.raises(LocalProtocolError):
        plan_reads(sdm, only=["1-0:5.8.0"])
    with pytest.raises(LocalProtocolError):
        plan_reads(sdm, max_count=126)
    with pytest.raises(LocalProtocolError):
        plan_reads(sdm, max_gap=-1)


def test_maps_refuse_bad_rows() -> None:
    with pytest.raises(LocalProtocolError):  # not in the vocabulary
        RegisterEntry(0, RegisterType.INPUT, DataType.FLOAT32, "1-0:99.99.0", "V")
    with pytest.raises(LocalProtocolError):  # wrong unit for the code
        RegisterEntry(0, RegisterType.INPUT, DataType.FLOAT32, "1-0:16.7.0", "W")
    with pytest.raises(LocalProtocolError):  # overlapping
        RegisterMap(
            "x",
            "x",
            ("a", "b"),
            (
                RegisterEntry(0, RegisterType.INPUT, DataType.FLOAT32, "1-0:32.7.0", "V"),
                RegisterEntry(1, RegisterType.INPUT, DataType.FLOAT32, "1-0:31.7.0", "A"),
            ),
        )


def test_doc_tables_are_generated_from_the_data() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for register_map in MAPS:
        assert markdown_table(register_map) in doc, (
            f"docs/protocol-modbus.md is out of date for {register_map.model}; "
            "paste markdown_table(meter_map(...)) again"
        )
        blocks = ", ".join(f"0x{b.address:04X}×{b.count}" for b in plan_reads(register_map))
        assert f"Planned reads (max_gap {register_map.max_gap}): {blocks}." in doc


# ---- values from hand-built responses ---------------------------------------------------

# float32 words, computed by hand (sign | exponent-127 | 1.mantissa):
#   230.0  = 0x4366_0000  2^7  × 1.796875
#   230.2  = 0x4366_3333  (nearest float32; shortest round-trip decimal "230.2")
#   5.0    = 0x40A0_0000  2^2  × 1.25
#   1150.0 = 0x448F_C000  2^10 × 1.123046875
#   50.0   = 0x4248_0000  2^5  × 1.5625
#   1234.5 = 0x449A_5000  2^10 × 1.20556640625
#   0.5    = 0x3F00_0000  2^-1 × 1.0
#   2302.0 = 0x450F_E000  2^11 × 1.1240234375
#   5000.0 = 0x459C_4000  2^12 × 1.220703125
#   11500.0= 0x4633_B000  2^13 × 1.40380859375
#   1000.0 = 0x447A_0000  2^9  × 1.953125
_V230, _V230_2, _A5, _W1150 = (0x4366, 0), (0x4366, 0x3333), (0x40A0, 0), (0x448F, 0xC000)
_HZ50, _E1234_5, _HALF = (0x4248, 0), (0x449A, 0x5000), (0x3F00, 0)


def _response_values(model: str, start: int, words: dict[int, tuple[int, int]]) -> dict[str, str]:
    """Build a read response covering ``words`` (address → 2 words), decode it by the map."""
    register_map = meter_map(model)
    end = max(words) + 2
    registers = [0] * (end - start)
    for address, pair in words.items():
        registers[address - start : address - start + 2] = pair
    function = register_map.entries[0].register_type.read_function
    frame = decode_frame(build_read_response(1, function, registers).raw, Direction.RESPONSE)
    values = decode_registers(register_map, start, frame.registers)
    return {v.obis: f"{v.value} {v.unit}" for v in values if v.value != 0}


def test_sdm120_values() -> None:
    values = _response_values(
        "sdm120",
        0,
        {0x00: _V230_2, 0x06: _A5, 0x0C: _W1150, 0x46: _HZ50, 0x48: _E1234_5, 0x4A: _HALF},
    )
    assert values == {
        "1-0:32.7.0": "230.2 V",
        "1-0:31.7.0": "5 A",
        "1-0:16.7.0": "1.150 kW",  # 1150 W × 0.001
        "1-0:14.7.0": "50 Hz",
        "1-0:1.8.0": "1234.5 kWh",
        "1-0:2.8.0": "0.5 kWh",
    }


def test_sdm630_values() -> None:
    values = _response_values(
        "sdm630",
        0,
        {0x00: _V230, 0x02: _V230_2, 0x08: _A5, 0x0E: _W1150, 0x34: _W1150, 0x48: _E1234_5},
    )
    assert values == {
        "1-0:32.7.0": "230 V",
        "1-0:52.7.0": "230.2 V",
        "1-0:51.7.0": "5 A",
        "1-0:56.7.0": "1.150 kW",
        "1-0:16.7.0": "1.150 kW",
        "1-0:1.8.0": "1234.5 kWh",
    }
    total = _response_values("sdm630", 0x0156, {0x0156: _E1234_5})
    assert total == {"1-0:15.8.0": "1234.5 kWh"}


def test_ddsu666_values() -> None:
    # DDSU666 reports power in kW already: 0.5 kW stays 0.5.
    values = _response_values(
        "ddsu666", 0x2000, {0x2000: _V230_2, 0x2002: _A5, 0x2004: _HALF, 0x200E: _HZ50}
    )
    assert values == {
        "1-0:32.7.0": "230.2 V",
        "1-0:31.7.0": "5 A",
        "1-0:16.7.0": "0.5 kW",
        "1-0:14.7.0": "50 Hz",
    }
    energy = _response_values("ddsu666", 0x4000, {0x4000: _E1234_5, 0x400A: _HALF})
    assert energy == {"1-0:1.8.0": "1234.5 kWh", "1-0:2.8.0": "0.5 kWh"}


def test_dtsu666_scaled_values() -> None:
    values = _response_values(
        "dtsu666",
        0x2006,
        {
            0x2006: (0x450F, 0xE000),  # 2302.0 × 0.1 V = 230.2 V
            0x200C: (0x459C, 0x4000),  # 5000.0 × 0.001 A = 5 A
            0x2012: (0x4633, 0xB000),  # 11500.0 × 0.1 W = 1150 W = 1.15 kW
            0x202A: (0x447A, 0x0000),  # 1000.0 × 0.001 = 1
        },
    )
    assert values == {
        "1-0:32.7.0": "230.2 V",
        "1-0:31.7.0": "5.000 A",
        "1-0:16.7.0": "1.1500 kW",
        "1-0:13.7.0": "1.000 None",
    }
    assert _response_values("dtsu666", 0x2044, {0x2044: (0x459C, 0x4000)}) == {
        "1-0:14.7.0": "50.00 Hz"
    }
    energy = _response_values("dtsu666", 0x401E, {0x401E: _E1234_5, 0x4028: _HALF})
    assert energy == {"1-0:1.8.0": "1234.5 kWh", "1-0:2.8.0": "0.5 kWh"}


def test_values_are_decimals_in_address_order_and_partial_entries_are_skipped() -> None:
    sdm = meter_map("sdm120")
    # 3 registers from 0x0000: voltage complete, nothing else (0x0006 not reached).
    values = decode_registers(sdm, 0, [0x4366, 0x3333, 0x1234])
    assert values == [MeterValue("1-0:32.7.0", Decimal("230.2"), "V")]
    # Start in the middle of the voltage: it is skipped, not misread.
    assert decode_registers(sdm, 1, [0x3333, 0, 0, 0, 0, 0, 0]) == [
        MeterValue("1-0:31.7.0", Decimal(0), "A")
    ]


def test_nan_is_refused_with_the_register_named() -> None:
    with pytest.raises(MalformedFrameError, match=r"sdm120 register 0x0000 \(1-0:32.7.0\)"):
        decode_registers(meter_map("sdm120"), 0, [0x7FC0, 0x0000])


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ((0x4366, 0x3333), "230.2"),
        ((0x3DCC, 0xCCCD), "0.1"),
        ((0xC2F6, 0xE979), "-123.456"),
        ((0x0000, 0x0000), "0"),
        ((0x7F7F, 0xFFFF), "340282350000000000000000000000000000000"),
        ((0x4248, 0x0000), "50"),
        ((0x0000, 0x0001), "1E-45"),
    ],
)
def test_float32_shortest_decimal(words: tuple[int, int], expected: str) -> None:
    raw = words[0].to_bytes(2, "big") + words[1].to_bytes(2, "big")
    assert float32_to_decimal(raw) == Decimal(expected)


@given(st.integers(0, 0xFFFFFFFF))
def test_float32_decimal_is_exactly_the_same_float32(bits: int) -> None:
    import math
    import struct

    raw = bits.to_bytes(4, "big")
    (value,) = struct.unpack(">f", raw)
    if not math.isfinite(value):
        with pytest.raises(MalformedFrameError):
            float32_to_decimal(raw)
        return
    number = float32_to_decimal(raw)
    assert struct.pack(">f", float(number)) == raw
    assert len(number.normalize().as_tuple().digits) <= 9  # float32 needs at most 9


_INT_ENTRIES = [
    RegisterEntry(0, RegisterType.HOLDING, data_type, "1-0:1.8.0", "kWh", Decimal("0.01"), order)
    for data_type in (DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32)
    for order in WordOrder
]


@pytest.mark.parametrize("entry", _INT_ENTRIES, ids=lambda e: f"{e.data_type}-{e.word_order}")
def test_integer_types_and_word_order(entry: RegisterEntry) -> None:
    # 0x0001_E240 = 123456 → 1234.56 kWh at ×0.01; word order swaps the two words.
    if entry.words == 2:
        words = (0x0001, 0xE240) if entry.word_order is WordOrder.BIG else (0xE240, 0x0001)
        assert decode_value(entry, words) == Decimal("1234.56")
    else:
        expected = "-0.01" if entry.data_type is DataType.INT16 else "655.35"
        assert decode_value(entry, (0xFFFF,)) == Decimal(expected)


@given(
    entry=st.sampled_from([e for m in MAPS for e in m.entries] + _INT_ENTRIES),
    words=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2),
)
def test_encode_decode_round_trip(entry: RegisterEntry, words: list[int]) -> None:
    words = words[: entry.words]
    try:
        value = decode_value(entry, words)
    except MalformedFrameError:
        return  # NaN/inf
    if entry.data_type is DataType.FLOAT32 and float(value / entry.scale) == 0:
        return  # −0.0 and +0.0 decode to the same Decimal zero
    assert encode_value(entry, value) == tuple(words)


def test_read_request_for_each_planned_block_is_valid() -> None:
    for register_map in MAPS:
        for block in plan_reads(register_map):
            frame = build_read_request(1, block.function_code, block.address, block.count)
            assert decode_frame(frame.raw, Direction.REQUEST).count == block.count
