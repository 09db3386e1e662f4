"""Modbus RTU frames: golden bytes, parity with pymodbus' client framer, errors, fuzz."""

from __future__ import annotations

import crcmod.predefined
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from shared_protocol.errors import (
    ChecksumError,
    FrameTooLargeError,
    LocalProtocolError,
    MalformedFrameError,
    ProtocolError,
    UnsupportedError,
)
from shared_protocol.modbus import (
    Direction,
    ExceptionCode,
    Frame,
    build_exception_response,
    build_read_request,
    build_read_response,
    build_write_multiple_request,
    build_write_multiple_response,
    build_write_single_request,
    build_write_single_response,
    crc16,
    decode_frame,
)

REQ, RESP = Direction.REQUEST, Direction.RESPONSE
_independent_crc = crcmod.predefined.mkCrcFun("modbus")


def _with_crc(hex_body: str) -> bytes:
    """Append the CRC computed by crcmod (independent of pymodbus), low byte first."""
    body = bytes.fromhex(hex_body)
    return body + _independent_crc(body).to_bytes(2, "little")


# ---- golden vectors ---------------------------------------------------------------------

# (frame hex, why). The first two are the textbook examples: "01 03 00 00 00 0A C5 CD"
# (Modbus over Serial Line spec style read of 10 holding registers) and the Eastron
# manual's "read voltage" query "01 04 00 00 00 02 71 CB".
GOLDEN_REQUESTS = [
    ("01 03 00 00 00 0A C5 CD", (1, 0x03, 0x0000, 10)),
    ("01 04 00 00 00 02 71 CB", (1, 0x04, 0x0000, 2)),
]


@pytest.mark.parametrize(("hex_frame", "args"), GOLDEN_REQUESTS)
def test_read_request_matches_golden_bytes(hex_frame: str, args: tuple[int, int, int, int]) -> None:
    frame = build_read_request(*args)
    assert frame.raw == bytes.fromhex(hex_frame)
    assert decode_frame(frame.raw, REQ) == frame


@given(st.binary(min_size=0, max_size=300))
def test_crc16_agrees_with_crcmod(data: bytes) -> None:
    assert crc16(data) == _independent_crc(data).to_bytes(2, "little")


# ---- parity with pymodbus' own client framer --------------------------------------------


def _client_frame(pdu: object) -> bytes:
    # What ModbusSerialClient puts on the wire: FramerRTU with the client-side decoder.
    return bytes(FramerRTU(DecodePDU(is_server=False)).buildFrame(pdu))  # type: ignore[arg-type]


@given(
    unit=st.integers(1, 247),
    function=st.sampled_from([0x03, 0x04]),
    address=st.integers(0, 0xFFFF - 125),
    count=st.integers(1, 125),
)
def test_read_request_equals_pymodbus_client_bytes(
    unit: int, function: int, address: int, count: int
) -> None:
    pdu_class = ReadHoldingRegistersRequest if function == 3 else ReadInputRegistersRequest
    expected = _client_frame(pdu_class(address=address, count=count, dev_id=unit))
    assert build_read_request(unit, function, address, count).raw == expected


@given(
    unit=st.integers(1, 247),
    address=st.integers(0, 0xFFFF - 123),
    values=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=123),
)
def test_write_requests_equal_pymodbus_client_bytes(
    unit: int, address: int, values: list[int]
) -> None:
    multiple = WriteMultipleRegistersRequest(address=address, registers=values, dev_id=unit)
    assert build_write_multiple_request(unit, address, values).raw == _client_frame(multiple)
    single = WriteSingleRegisterRequest(address=address, registers=values[:1], dev_id=unit)
    assert build_write_single_request(unit, address, values[0]).raw == _client_frame(single)


@given(
    unit=st.integers(1, 247),
    function=st.sampled_from([0x03, 0x04]),
    registers=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125),
)
def test_pymodbus_client_decodes_our_responses(
    unit: int, function: int, registers: list[int]
) -> None:
    raw = build_read_response(unit, function, registers).raw
    used, pdu = FramerRTU(DecodePDU(is_server=False)).handleFrame(raw, 0, 0)
    assert used == len(raw)
    assert pdu is not None
    assert (pdu.dev_id, pdu.function_code, list(pdu.registers)) == (unit, function, registers)


# ---- decoding hand-built frames -----------------------------------------------------------


def test_hand_built_read_response() -> None:
    # Unit 1, function 04, 4 data bytes: float32 230.0 = 0x43660000 (exponent 0x86 = 2^7,
    # mantissa 1.796875; 128 × 1.796875 = 230).
    raw = _with_crc("01 04 04 43 66 00 00")
    frame = decode_frame(raw, RESP)
    assert frame == Frame(1, 0x04, RESP, raw, registers=(0x4366, 0x0000))
    assert frame.function.name == "READ_INPUT_REGISTERS"


def test_hand_built_write_frames() -> None:
    raw = _with_crc("11 10 00 01 00 02 04 00 0A 01 02")
    frame = decode_frame(raw, REQ)
    assert (frame.unit_id, frame.address, frame.count, frame.registers) == (
        0x11,
        1,
        2,
        (0x000A, 0x0102),
    )
    assert build_write_multiple_response(0x11, 1, 2).raw == _with_crc("11 10 00 01 00 02")
    single = build_write_single_response(0x11, 1, 3)
    assert single.raw == _with_crc("11 06 00 01 00 03")
    assert (single.address, single.count, single.registers) == (1, 1, (3,))


@pytest.mark.parametrize(
    ("function", "code", "name"),
    [
        (0x03, 0x02, "ILLEGAL_DATA_ADDRESS"),
        (0x04, 0x01, "ILLEGAL_FUNCTION"),
        (0x04, 0x06, "SERVER_DEVICE_BUSY"),
        (0x10, 0x03, "ILLEGAL_DATA_VALUE"),
        (0x03, 0x0B, "GATEWAY_TARGET_FAILED_TO_RESPOND"),
        (0x03, 0x42, "UNKNOWN_EXCEPTION_0x42"),
    ],
)
def test_exception_responses_are_named(function: int, code: int, name: str) -> None:
    raw = _with_crc(f"05 {function | 0x80:02X} {code:02X}")
    frame = decode_frame(raw, RESP)
    assert frame.is_exception
    assert frame.function == function
    assert frame.exception_code == code
    assert frame.exception_name == name
    assert build_exception_response(5, function, code).raw == raw


def test_exception_code_enum_has_pymodbus_values() -> None:
    from pymodbus.constants import ExcCodes

    assert {int(c) for c in ExcCodes} <= {int(c) for c in ExceptionCode}


# ---- errors -------------------------------------------------------------------------------


def test_crc_error_is_reported_with_both_crcs() -> None:
    good = build_read_request(1, 3, 0, 10).raw
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])
    with pytest.raises(ChecksumError, match=r"CRC is C5 32, expected C5 CD"):
        decode_frame(bad, REQ)


@pytest.mark.parametrize(
    ("hex_frame", "direction", "error"),
    [
        ("01 03", RESP, MalformedFrameError),  # too short
        ("01 03 04 00 01", RESP, MalformedFrameError),  # byte count says 4, 2 present
        ("01 03 03 00 01 02", RESP, MalformedFrameError),  # odd byte count
        ("01 03 00 00 00 00", REQ, MalformedFrameError),  # count 0
        ("01 03 00 00 00 7E", REQ, MalformedFrameError),  # count 126 > 125
        ("01 03 FF FF 00 02", REQ, MalformedFrameError),  # runs past 0xFFFF
        ("01 10 00 00 00 02 02 00 01", REQ, MalformedFrameError),  # count/bytes disagree
        ("01 01 00 00 00 01", REQ, UnsupportedError),  # read coils
        ("01 83 02", REQ, UnsupportedError),  # exceptions are responses
        ("00 03 02 00 01", RESP, MalformedFrameError),  # broadcast never answers
        ("F8 03 00 00 00 01", REQ, MalformedFrameError),  # reserved unit id
    ],
)
def test_bad_frames_raise_the_right_error(
    hex_frame: str, direction: Direction, error: type[ProtocolError]
) -> None:
    with pytest.raises(error):
        decode_frame(_with_crc(hex_frame), direction)


def test_oversized_frame() -> None:
    with pytest.raises(FrameTooLargeError):
        decode_frame(bytes(257), RESP)


@pytest.mark.parametrize(
    "call",
    [
        lambda: build_read_request(1, 0x06, 0, 1),
        lambda: build_read_request(1, 0x03, 0, 0),
        lambda: build_read_request(1, 0x03, 0, 126),
        lambda: build_read_request(1, 0x03, 0x10000, 1),
        lambda: build_read_request(248, 0x03, 0, 1),
        lambda: build_read_request(300, 0x03, 0, 1),
        lambda: build_read_response(0, 0x03, [1]),
        lambda: build_read_response(1, 0x03, [0x10000]),
        lambda: build_read_response(1, 0x03, []),
        lambda: build_write_multiple_request(1, 0xFFFF, [1, 2]),
        lambda: build_write_multiple_request(1, 0, list(range(124))),
        lambda: build_write_single_request(1, -1, 5),
        lambda: build_exception_response(1, 0x01, 2),
    ],
)
def test_impossible_requests_are_local_errors(call: object) -> None:
    with pytest.raises(LocalProtocolError):
        call()  # type: ignore[operator]


def test_frame_validates_itself() -> None:
    with pytest.raises(LocalProtocolError):
        Frame(1, 0x83, REQ, b"", exception_code=2)
    with pytest.raises(LocalProtocolError):
        Frame(1, 0x03, RESP, b"", registers=(0x10000,))
    with pytest.raises(LocalProtocolError):
        Frame(1, 0x01, RESP, b"")


# ---- round trips and fuzz -----------------------------------------------------------------

_frames = st.one_of(
    st.builds(
        build_read_request,
        st.integers(0, 247),
        st.sampled_from([3, 4]),
        st.integers(0, 0xFFFF - 125),
        st.integers(1, 125),
    ),
    st.builds(
        build_read_response,
        st.integers(1, 247),
        st.sampled_from([3, 4]),
        st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125),
    ),
    st.builds(
        build_write_single_request,
        st.integers(0, 247),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
    ),
    st.builds(
        build_write_multiple_request,
        st.integers(0, 247),
        st.integers(0, 0xFFFF - 123),
        st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=123),
    ),
    st.builds(
        build_exception_response,
        st.integers(1, 247),
        st.sampled_from([3, 4, 6, 16]),
        st.integers(0, 255),
    ),
)


@given(_frames)
def test_round_trip(frame: Frame) -> None:
    assert decode_frame(frame.raw, frame.direction) == frame
    assert len(frame.raw) <= 256


def _decode_or_protocol_error(data: bytes) -> None:
    for direction in Direction:
        try:
            frame = decode_frame(data, direction)
        except ProtocolError:
            continue
        assert frame.raw == data


@given(st.binary(max_size=300))
def test_fuzz_random_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    _decode_or_protocol_error(data)


@given(st.binary(min_size=2, max_size=260))
def test_fuzz_random_bodies_with_valid_crc(body: bytes) -> None:
    _decode_or_protocol_error(body + crc16(body))


@pytest.mark.slow
@settings(max_examples=100_000, deadline=None)
@given(st.binary(min_size=2, max_size=260), st.booleans())
def test_fuzz_slow(body: bytes, fix_crc: bool) -> None:
    _decode_or_protocol_error(body + crc16(body) if fix_crc else body)


def test_public_names_are_pinned() -> None:
    import shared_protocol.modbus as modbus

    assert sorted(modbus.__all__) == sorted(
        [
            "EXCEPTION_MEANINGS",
            "FUNCTION_NAMES",
            "MAX_ADU_SIZE",
            "MAX_READ_COUNT",
            "MAX_WRITE_COUNT",
            "METER_MAPS",
            "DataType",
            "Direction",
            "ExceptionCode",
            "Frame",
            "FunctionCode",
            "ReadBlock",
            "RegisterEntry",
            "RegisterMap",
            "RegisterType",
            "StreamParser",
            "WordOrder",
            "build_exception_response",
            "build_read_request",
            "build_read_response",
            "build_write_multiple_request",
            "build_write_multiple_response",
            "build_write_single_request",
            "build_write_single_response",
            "crc16",
            "decode_frame",
            "decode_registers",
            "decode_value",
            "encode_value",
            "expected_length",
            "explain",
            "float32_to_decimal",
            "markdown_table",
            "meter_map",
            "plan_reads",
        ]
    )
    for name in modbus.__all__:
        assert getattr(modbus, name) is not None


@given(
    unit=st.integers(1, 247),
    function=st.sampled_from([0x03, 0x04]),
    address=st.integers(0, 0xFFFF - 125),
    count=st.integers(1, 125),
)
def test_pymodbus_server_framer_reads_our_requests_as_we_do(
    unit: int, function: int, address: int, count: int
) -> None:
    frame = build_read_request(unit, function, address, count)
    used, pdu = FramerRTU(DecodePDU(is_server=True)).handleFrame(frame.raw, 0, 0)
    assert used == len(frame.raw)
    assert pdu is not None
    assert (pdu.dev_id, pdu.function_code, pdu.address, pdu.count) == (
        frame.unit_id,
        frame.function_code,
        frame.address,
        frame.count,
    )
