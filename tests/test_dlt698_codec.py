"""DL/T 698.45 codec as a specification: golden bytes computed by hand next to each case."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

import shared_protocol.dlt698 as dlt698
from shared_protocol.dlt698 import (
    CATALOGUE,
    CSD,
    MAX_DEPTH,
    MS,
    OAD,
    OMD,
    RCSD,
    ROAD,
    RSD,
    SID,
    SIDMAC,
    TI,
    AddressType,
    BitString,
    ComDcb,
    Control,
    Data,
    DataType,
    Date698,
    DateTimeS,
    ErrorResponse,
    Fragment,
    FragmentType,
    Frame,
    GetRequestNormal,
    GetRequestRecord,
    GetResponseNormal,
    GetResponseRecord,
    GetResult,
    ProxyTransCommandRequest,
    ProxyTransCommandResponse,
    Reassembler,
    RecordResult,
    Region,
    ScalerUnit,
    SecurityRequest,
    SecurityResponse,
    ServerAddress,
    SetResponseNormal,
    Time698,
    TimeTag,
    alarm_off,
    alarm_on,
    close_relay,
    dar_name,
    decode_apdu,
    decode_data,
    decode_frame,
    encode_apdu,
    encode_data,
    encode_frame,
    explain,
    keep_power_off,
    keep_power_on,
    meter_values,
    split_apdu,
    trip_relay,
)
from shared_protocol.errors import (
    FrameTooLargeError,
    LocalProtocolError,
    MalformedFrameError,
    UnsupportedError,
)
from shared_protocol.quantities import QUANTITIES, MeterValue

H = bytes.fromhex


def test_public_names_are_pinned() -> None:
    assert set(dlt698.__all__) >= {
        "StreamParser",
        "encode_frame",
        "decode_frame",
        "encode_apdu",
        "decode_apdu",
        "encode_data",
        "decode_data",
        "explain",
        "trip_relay",
        "SecurityBackend",
        "Reassembler",
    }
    for name in dlt698.__all__:
        assert hasattr(dlt698, name), name


# ------------------------------------------------------------------------ addresses


@pytest.mark.parametrize(
    ("address", "wire"),
    [
        # single, 6 bytes, BCD low byte first: AF = 0b00_00_0101
        (ServerAddress.single("123456789012"), "05 12 90 78 56 34 12"),
        # wildcard: AF = 0b01_00_0101 = 45
        (ServerAddress.wildcard(), "45 AA AA AA AA AA AA"),
        # partial wildcard: unknown low digits as A nibbles
        (ServerAddress.wildcard("1234567890AA"), "45 AA 90 78 56 34 12"),
        # group with logical address 2: AF = 0b10_10_0101 = A5
        (ServerAddress.group("000000000001", logical=2), "A5 01 00 00 00 00 00"),
        # broadcast is the single byte AA: AF = 0b11_00_0000 = C0
        (ServerAddress.broadcast(), "C0 AA"),
        # 4-byte single address, logical 1: AF = 0b00_01_0011 = 13
        (ServerAddress.single("28417891", logical=1), "13 91 78 41 28"),
    ],
)
def test_address_wire_form(address: ServerAddress, wire: str) -> None:
    assert address.to_bytes() == H(wire)


def test_address_digits_are_nameplate_order() -> None:
    assert ServerAddress(H("12 90 78 56 34 12")).digits == "123456789012"


@pytest.mark.parametrize("bad", ["12345X", "", "1F"])
def test_bad_address_digits_refused(bad: str) -> None:
    with pytest.raises(LocalProtocolError):
        ServerAddress.single(bad)


def test_logical_address_range() -> None:
    with pytest.raises(LocalProtocolError):
        ServerAddress.single("01", logical=4)


@pytest.mark.parametrize(
    ("factory", "byte"),
    [
        (Control.client_request, 0x43),
        (Control.server_response, 0xC3),
        (Control.server_report, 0x83),
        (Control.client_report_reply, 0x03),
        (Control.server_link_request, 0x81),
        (Control.client_link_reply, 0x01),
    ],
)
def test_control_bytes(factory: object, byte: int) -> None:
    control = factory()  # type: ignore[operator]
    assert control.to_byte() == byte
    assert Control.from_byte(byte) == control


def test_control_flags() -> None:
    c = Control.from_byte(0x6B)  # 0110 1011: PRM, fragment, scramble, function 3
    assert (c.from_server, c.client_started, c.fragmented, c.scrambled, c.function) == (
        False,
        True,
        True,
        True,
        3,
    )
    assert c.to_byte() == 0x6B


# ---------------------------------------------------------------------------- frame


def test_appendix_h3_wildcard_frame() -> None:
    # Standard appendix H3: read 40010200 over the wildcard address, CA 00.
    frame = Frame(
        Control.client_request(), ServerAddress.wildcard(), 0x00, H("05 01 25 40 01 02 00 00")
    )
    assert encode_frame(frame) == H(
        "68 17 00 43 45 AA AA AA AA AA AA 00 5B 4F 05 01 25 40 01 02 00 00 0A 92 16"
    )


def test_preamble_is_written_and_skipped() -> None:
    frame = Frame(
        Control.client_request(), ServerAddress.broadcast(), 0x10, H("05 01 01 40 00 02 00 00")
    )
    wire = encode_frame(frame, preamble=4)
    assert wire.startswith(b"\xfe" * 4 + b"\x68")
    assert decode_frame(wire) == frame


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda b: b[:-1], MalformedFrameError),  # no 16
        (lambda b: b[:-1] + b"\x17", MalformedFrameError),  # wrong end byte
        (lambda b: b + b"\x00", MalformedFrameError),  # trailing byte
        (lambda b: b[:5], MalformedFrameError),  # truncated header
        (lambda b: b[:-3] + bytes([b[-3] ^ 1]) + b[-2:], dlt698.frame.ChecksumError),
    ],
)
def test_frame_defects(mutate: object, error: type[Exception]) -> None:
    good = encode_frame(
        Frame(Control.client_request(), ServerAddress.single("1"), 0, H("05 01 01 00 10 02 00 00"))
    )
    with pytest.raises(error):
        decode_frame(mutate(good))  # type: ignore[operator]


def test_length_unit_bit_refused() -> None:
    good = bytearray(
        encode_frame(Frame(Control.client_request(), ServerAddress.single("1"), 0, b"\x05"))
    )
    good[2] |= 0x40
    with pytest.raises(MalformedFrameError):
        decode_frame(bytes(good))


# -------------------------------------------------------------------- fragmentation


def test_fragment_word_layout() -> None:
    # seq 5, type middle (3): word = 0xC005, little endian on the wire.
    assert Fragment(5, FragmentType.MIDDLE, b"\xaa").to_bytes() == H("05 C0 AA")
    assert Fragment.from_bytes(H("05 C0 AA")) == Fragment(5, FragmentType.MIDDLE, b"\xaa")


def test_split_and_reassemble() -> None:
    apdu = bytes(range(256)) * 3
    fragments = split_apdu(apdu, 200)
    assert [f.type for f in fragments] == [
        FragmentType.START,
        FragmentType.MIDDLE,
        FragmentType.MIDDLE,
        FragmentType.END,
    ]
    assert [f.sequence for f in fragments] == [0, 1, 2, 3]
    # through real frames with the fragment bit set
    frames = [
        Frame(Control(True, True, fragmented=True), ServerAddress.single("2"), 0x10, f.to_bytes())
        for f in fragments
    ]
    reassembler = Reassembler()
    results = [
        reassembler.add(Fragment.from_bytes(decode_frame(encode_frame(f)).apdu)) for f in frames
    ]
    assert results[:-1] == [None, None, None]
    assert results[-1] == apdu
    assert not reassembler.in_progress


def test_reassembler_refuses_out_of_order_and_restarts() -> None:
    fragments = split_apdu(b"x" * 30, 10)
    reassembler = Reassembler()
    reassembler.add(fragments[0])
    with pytest.raises(MalformedFrameError, match="out of order"):
        reassembler.add(fragments[2])
    with pytest.raises(MalformedFrameError, match="without a start"):
        reassembler.add(fragments[1])
    assert reassembler.add(fragments[0]) is None
    assert reassembler.add(fragments[1]) is None
    assert reassembler.add(fragments[2]) == b"x" * 30


def test_reassembler_is_bounded() -> None:
    reassembler = Reassembler(max_apdu=25)
    fragments = split_apdu(b"y" * 30, 10)
    reassembler.add(fragments[0])
    reassembler.add(fragments[1])
    with pytest.raises(FrameTooLargeError):
        reassembler.add(fragments[2])


def test_unfragmentable_apdu_refused() -> None:
    with pytest.raises(LocalProtocolError):
        split_apdu(b"abc", 10)


# ----------------------------------------------------------------------------- data

DT_S = DateTimeS(2016, 9, 11, 18, 30, 21)

DATA_GOLDEN: list[tuple[Data, str]] = [
    (Data(DataType.NULL), "00"),
    (Data.array(Data(DataType.UNSIGNED, 1)), "01 01 11 01"),
    (Data.structure(), "02 00"),
    (Data(DataType.BOOL, True), "03 01"),
    (Data(DataType.BIT_STRING, BitString(8, b"\x80")), "04 08 80"),
    (Data(DataType.BIT_STRING, BitString(12, b"\xab\xc0")), "04 0C AB C0"),
    # 200 bits: the long-form length counts bits, more than the 25 bytes that follow
    (Data(DataType.BIT_STRING, BitString(200, bytes(25))), "04 81 C8" + " 00" * 25),
    (Data(DataType.DOUBLE_LONG, -1), "05 FF FF FF FF"),
    (Data(DataType.DOUBLE_LONG_UNSIGNED, 123456), "06 00 01 E2 40"),
    (Data(DataType.OCTET_STRING, H("000039200933")), "09 06 00 00 39 20 09 33"),
    (Data(DataType.OCTET_STRING, bytes(200)), "09 81 C8" + " 00" * 200),
    (Data(DataType.VISIBLE_STRING, "abc"), "0A 03 61 62 63"),
    (Data(DataType.UTF8_STRING, "中"), "0C 03 E4 B8 AD"),
    (Data(DataType.INTEGER, -1), "0F FF"),
    (Data(DataType.LONG, -2), "10 FF FE"),
    (Data(DataType.UNSIGNED, 255), "11 FF"),
    (Data(DataType.LONG_UNSIGNED, 2241), "12 08 C1"),
    (Data(DataType.LONG64, -(2**40)), "14 FF FF FF 00 00 00 00 00"),
    (Data(DataType.LONG64_UNSIGNED, 2**40), "15 00 00 01 00 00 00 00 00"),
    (Data(DataType.ENUM, 1), "16 01"),
    (Data(DataType.FLOAT32, 1.0), "17 3F 80 00 00"),
    (Data(DataType.FLOAT64, -2.0), "18 C0 00 00 00 00 00 00 00"),
    (
        Data(DataType.DATE_TIME, dlt698.DateTime698(2016, 5, 19, 4, 8, 5, 0, 164)),
        "19 07 E0 05 13 04 08 05 00 00 A4",
    ),
    (Data(DataType.DATE, Date698(2016, 9, 11, 0)), "1A 07 E0 09 0B 00"),
    (Data(DataType.TIME, Time698(18, 30, 21)), "1B 12 1E 15"),
    (Data(DataType.DATE_TIME_S, DT_S), "1C 07 E0 09 0B 12 1E 15"),
    (Data(DataType.OI, 0x4001), "50 40 01"),
    (Data(DataType.OAD, OAD.parse("00100200")), "51 00 10 02 00"),
    (
        Data(
            DataType.ROAD,
            ROAD(OAD.parse("50040200"), (OAD.parse("20210200"), OAD.parse("00100200"))),
        ),
        "52 50 04 02 00 02 20 21 02 00 00 10 02 00",
    ),
    (Data(DataType.OMD, OMD.parse("80008100")), "53 80 00 81 00"),
    (Data(DataType.TI, TI(1, 15)), "54 01 00 0F"),
    (Data(DataType.TSA, H("05 01 00 00 00 00 00")), "55 07 05 01 00 00 00 00 00"),
    (Data(DataType.MAC, H("32F95634")), "56 04 32 F9 56 34"),
    (Data(DataType.RN, H("0102")), "57 02 01 02"),
    (
        Data(
            DataType.REGION,
            Region(2, Data(DataType.LONG_UNSIGNED, 1), Data(DataType.LONG_UNSIGNED, 2)),
        ),
        "58 02 12 00 01 12 00 02",
    ),
    (Data(DataType.SCALER_UNIT, ScalerUnit(-2, 33)), "59 FE 21"),
    (Data(DataType.RSD, RSD.last(1)), "5A 09 01"),
    (
        Data(DataType.RSD, RSD.equal(OAD.parse("20210200"), Data(DataType.DATE_TIME_S, DT_S))),
        "5A 01 20 21 02 00 1C 07 E0 09 0B 12 1E 15",
    ),
    (
        Data(
            DataType.RSD,
            RSD(
                2,
                (
                    OAD.parse("20210200"),
                    Data(DataType.DATE_TIME_S, DT_S),
                    Data(DataType.DATE_TIME_S, DT_S),
                    Data(DataType.TI, TI(3, 1)),
                ),
            ),
        ),
        "5A 02 20 21 02 00 1C 07 E0 09 0B 12 1E 15 1C 07 E0 09 0B 12 1E 15 54 03 00 01",
    ),
    (Data(DataType.RSD, RSD(0)), "5A 00"),
    (Data(DataType.RSD, RSD(10, (2, MS(1)))), "5A 0A 02 01"),
    (Data(DataType.RSD, RSD(4, (DT_S, MS(2, (1, 2))))), "5A 04 07 E0 09 0B 12 1E 15 02 02 01 02"),
    (Data(DataType.CSD, CSD(OAD.parse("00100200"))), "5B 00 00 10 02 00"),
    (Data(DataType.MS, MS(1)), "5C 01"),
    (Data(DataType.MS, MS(4, (1, 0x0203))), "5C 04 02 00 01 02 03"),
    (Data(DataType.SID, SID(1, H("ABCD"))), "5D 00 00 00 01 02 AB CD"),
    (Data(DataType.SID_MAC, SIDMAC(SID(1, b""), H("0102"))), "5E 00 00 00 01 00 02 01 02"),
    (Data(DataType.COMDCB, ComDcb(6, 2, 8, 1, 0)), "5F 06 02 08 01 00"),
    (Data(DataType.RCSD, RCSD.of(OAD.parse("00100200"))), "60 01 00 00 10 02 00"),
]


@pytest.mark.parametrize(("data", "wire"), DATA_GOLDEN, ids=[d.type.name for d, _ in DATA_GOLDEN])
def test_data_golden(data: Data, wire: str) -> None:
    assert encode_data(data) == H(wire)
    assert decode_data(H(wire)) == data


def test_every_data_type_has_a_golden_case() -> None:
    assert {d.type for d, _ in DATA_GOLDEN} == set(DataType)


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        ("07", UnsupportedError),  # no such tag
        ("12 08", MalformedFrameError),  # truncated long-unsigned
        ("12 08 C1 00", MalformedFrameError),  # trailing byte
        ("01 05 00", MalformedFrameError),  # count larger than the bytes left
        ("09 85 00 00 00 00 01", MalformedFrameError),  # 5-byte length prefix
        ("03 02", MalformedFrameError),  # bool not 00/01
        ("0A 01 FF", MalformedFrameError),  # visible-string not ASCII
        ("5A 0B", UnsupportedError),  # RSD selector 11
        ("5B 02", MalformedFrameError),  # CSD choice 2
        ("54 06 00 01", MalformedFrameError),  # TI unit 6 (units are 0 s … 5 year)
        ("58 04 00 00", MalformedFrameError),  # Region kind 4 (kinds are 0..3)
    ],
)
def test_data_defects(wire: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_data(H(wire))


def nested(depth: int) -> bytes:
    return b"\x01\x01" * depth + b"\x00"


def test_nesting_at_the_limit_is_fine() -> None:
    assert decode_data(nested(MAX_DEPTH)).type is DataType.ARRAY


def test_deep_nesting_bomb_is_refused() -> None:
    with pytest.raises(MalformedFrameError, match="deeper"):
        decode_data(nested(MAX_DEPTH + 1))
    with pytest.raises(MalformedFrameError):
        decode_data(nested(100_000))
    apdu = H("85 01 01 00 10 02 00 01") + nested(5000) + b"\x00\x00"
    with pytest.raises(MalformedFrameError):
        decode_apdu(apdu)


def test_data_constructor_validates() -> None:
    with pytest.raises(LocalProtocolError):
        Data(DataType.UNSIGNED, 256)
    with pytest.raises(LocalProtocolError):
        Data(DataType.OCTET_STRING, "text")
    with pytest.raises(LocalProtocolError):
        Data(DataType.ARRAY, (1, 2))
    with pytest.raises(LocalProtocolError):
        BitString(9, b"\x00")
    with pytest.raises(LocalProtocolError):
        RSD(9, ())


# ---------------------------------------------------------------------------- APDUs


def test_get_normal_round_trip() -> None:
    request = GetRequestNormal(1, OAD.parse("00100200"))
    assert encode_apdu(request) == H("05 01 01 00 10 02 00 00")
    response = H(
        "85 01 01 00 10 02 00 01 01 05"
        " 06 00 00 30 39 06 00 00 00 01 06 00 00 00 02 06 00 00 00 03 06 00 00 00 04 00 00"
    )
    decoded = decode_apdu(response)
    assert isinstance(decoded, GetResponseNormal)
    assert decoded.result.data is not None
    values = meter_values(decoded.result.oad, decoded.result.data)
    # 0x3039 = 12345 at scaler −2 → 123.45 kWh; tariffs 1..4 = sharp/peak/flat/valley.
    assert values == [
        MeterValue("1-0:1.8.0", Decimal("123.45"), "kWh"),
        MeterValue("1-0:1.8.1", Decimal("0.01"), "kWh"),
        MeterValue("1-0:1.8.2", Decimal("0.02"), "kWh"),
        MeterValue("1-0:1.8.3", Decimal("0.03"), "kWh"),
        MeterValue("1-0:1.8.4", Decimal("0.04"), "kWh"),
    ]
    assert encode_apdu(decoded) == response


def test_get_normal_with_dar() -> None:
    wire = H("85 01 02 FF F0 05 00 00 06 00 00")
    decoded = decode_apdu(wire)
    assert isinstance(decoded, GetResponseNormal)
    assert decoded.result.dar == 6 and dar_name(6) == "object does not exist"
    assert encode_apdu(decoded) == wire


def test_get_record_last_one_daily_freeze() -> None:
    columns = RCSD.of(OAD.parse("20210200"), OAD.parse("00100200"))
    request = GetRequestRecord(1, OAD.parse("50040200"), RSD.last(1), columns)
    assert encode_apdu(request) == H(
        "05 03 01 50 04 02 00 09 01 02 00 20 21 02 00 00 00 10 02 00 00"
    )
    row = (
        Data(DataType.DATE_TIME_S, DateTimeS(2026, 11, 28, 0, 0, 0)),
        Data.array(
            Data(DataType.DOUBLE_LONG_UNSIGNED, 100), Data(DataType.DOUBLE_LONG_UNSIGNED, 40)
        ),
    )
    response = GetResponseRecord(1, RecordResult(OAD.parse("50040200"), columns, rows=(row,)))
    wire = encode_apdu(response)
    assert wire == H(
        "85 03 01 50 04 02 00 02 00 20 21 02 00 00 00 10 02 00 01 01"
        " 1C 07 EA 0B 1C 00 00 00 01 02 06 00 00 00 64 06 00 00 00 28 00 00"
    )
    assert decode_apdu(wire) == response
    view = explain(
        encode_frame(Frame(Control.server_response(), ServerAddress.single("1"), 0, wire))
    )
    assert view["values"] == [
        {
            "quantity": "freeze time",
            "obis": "0-0:1.0.3",
            "value": "2026-11-28 00:00:00",
            "unit": None,
        },
        {
            "quantity": "import active energy",
            "obis": ["1-0:1.8.0", "1-0:1.8.1"],
            "value": ["1.00", "0.40"],
            "unit": "kWh",
        },
    ]


def test_record_dar() -> None:
    wire = H("85 03 01 50 04 02 00 01 00 20 21 02 00 00 06 00 00")
    decoded = decode_apdu(wire)
    assert isinstance(decoded, GetResponseRecord) and decoded.result.dar == 6
    assert encode_apdu(decoded) == wire


def test_time_tag_and_follow_report() -> None:
    tag = TimeTag(DT_S, TI(1, 5))
    request = GetRequestNormal(2, OAD.parse("40000200"), tag)
    wire = encode_apdu(request)
    assert wire == H("05 01 02 40 00 02 00 01 07 E0 09 0B 12 1E 15 01 00 05")
    assert decode_apdu(wire) == request
    follow = dlt698.FollowReport(results=(GetResult(OAD.parse("20140200"), dar=4),))
    response = SetResponseNormal(2, OAD.parse("40000200"), 0, follow, tag)
    wire = encode_apdu(response)
    assert wire == H(
        "86 01 02 40 00 02 00 00 01 01 01 20 14 02 00 00 04 01 07 E0 09 0B 12 1E 15 01 00 05"
    )
    assert decode_apdu(wire) == response


def test_trip_relay_parameter_layout() -> None:
    # array{structure{OAD F2050201, unsigned delay, long-unsigned duration, bool auto-close}}
    assert encode_apdu(trip_relay(1, alarm_delay_min=5, duration_min=30)) == H(
        "07 01 01 80 00 81 00 01 01 02 04 51 F2 05 02 01 11 05 12 00 1E 03 00 00"
    )


def test_close_relay_parameter_layout() -> None:
    assert encode_apdu(close_relay(1, dlt698.CloseCommand.CLOSE_DIRECTLY)) == H(
        "07 01 01 80 00 82 00 01 01 02 02 51 F2 05 02 01 16 01 00"
    )


@pytest.mark.parametrize(
    ("builder", "omd"),
    [
        (alarm_on, "80007F00"),
        (alarm_off, "80008000"),
        (keep_power_on, "80017F00"),
        (keep_power_off, "80018000"),
    ],
)
def test_null_parameter_actions(builder: object, omd: str) -> None:
    assert encode_apdu(builder(3)) == H("07 01 03") + H(omd) + H("00 00")  # type: ignore[operator]


def test_remote_control_named_in_explain() -> None:
    frame = Frame(
        Control.client_request(), ServerAddress.single("1"), 0, encode_apdu(trip_relay(1))
    )
    assert explain(encode_frame(frame))["function"] == "remote control: trip relay"


def test_security_plaintext_rn_round_trip() -> None:
    inner = GetRequestNormal(1, OAD.parse("00100200"))
    secured = SecurityRequest.plaintext_rn(inner, bytes(range(16)))
    wire = encode_apdu(secured)
    assert wire == H("10 00 08 05 01 01 00 10 02 00 00 01 10") + bytes(range(16))
    decoded = decode_apdu(wire)
    assert isinstance(decoded, SecurityRequest)
    assert decoded.inner() == inner


def test_security_response_mac_and_dar() -> None:
    inner = encode_apdu(
        GetResponseNormal(1, GetResult(OAD.parse("200F0200"), Data(DataType.LONG_UNSIGNED, 5000)))
    )
    response = SecurityResponse(inner, mac=H("01020304"))
    wire = encode_apdu(response)
    assert wire == H("90 00") + bytes([len(inner)]) + inner + H("01 00 04 01 02 03 04")
    assert decode_apdu(wire) == response
    refused = decode_apdu(H("90 02 16 00"))
    assert isinstance(refused, SecurityResponse) and refused.dar == 22
    with pytest.raises(UnsupportedError):
        SecurityResponse(b"\x00", ciphertext=True).inner()


def test_sid_mac_ciphertext_is_opaque() -> None:
    verification = dlt698.SecurityVerification(
        dlt698.VerificationKind.SID_MAC, sid=SID(0x81000000, H("0001")), mac=H("AABBCCDD")
    )
    request = SecurityRequest(H("DEADBEEF"), verification, ciphertext=True)
    wire = encode_apdu(request)
    assert wire == H("10 01 04 DE AD BE EF 00 81 00 00 00 02 00 01 04 AA BB CC DD")
    assert decode_apdu(wire) == request


def test_error_response() -> None:
    decoded = decode_apdu(H("EE 01 02"))
    assert decoded == ErrorResponse(1, 2)
    assert decoded.error_name == "service not supported"  # type: ignore[attr-defined]


def test_proxy_transparent() -> None:
    inner = H("68 AA AA AA AA AA AA 68 13 00 DF 16")
    request = ProxyTransCommandRequest(
        1, OAD.parse("F2010201"), ComDcb(6, 2, 8, 1, 0), 10, 100, inner
    )
    wire = encode_apdu(request)
    assert wire == H("09 07 01 F2 01 02 01 06 02 08 01 00 00 0A 00 64 0C") + inner + H("00")
    assert decode_apdu(wire) == request
    reply = ProxyTransCommandResponse(1, OAD.parse("F2010201"), reply=inner)
    assert decode_apdu(encode_apdu(reply)) == reply


def test_unsupported_apdu_named() -> None:
    with pytest.raises(UnsupportedError, match="CONNECT-Request"):
        decode_apdu(H("02 00"))
    with pytest.raises(UnsupportedError, match="GET-Request choice 5"):
        decode_apdu(H("05 05 01 00"))


def test_tails_that_are_missing_are_tolerated() -> None:
    decoded = decode_apdu(H("05 01 01 00 10 02 00"))
    assert decoded == GetRequestNormal(1, OAD.parse("00100200"))


# ------------------------------------------------------------------------ catalogue


def test_catalogue_obis_codes_are_canonical() -> None:
    for entry in CATALOGUE.values():
        for code in entry.obis:
            assert code in QUANTITIES, (entry.name, code)
            assert QUANTITIES[code].unit == entry.unit or entry.unit is None, code


@pytest.mark.parametrize(
    ("oad", "data", "expected"),
    [
        # 698-020: 08C1 long-unsigned at scaler −1 → 224.1 V
        (
            "20000200",
            Data.array(*(Data(DataType.LONG_UNSIGNED, v) for v in (0x08C1, 0, 0))),
            [("1-0:32.7.0", "224.1", "V"), ("1-0:52.7.0", "0.0", "V"), ("1-0:72.7.0", "0.0", "V")],
        ),
        # element 2 of voltage is phase B
        ("20000202", Data(DataType.LONG_UNSIGNED, 2200), [("1-0:52.7.0", "220.0", "V")]),
        # current phase A, double-long 5000 at −3 → 5.000 A
        ("20010201", Data(DataType.DOUBLE_LONG, 5000), [("1-0:31.7.0", "5.000", "A")]),
        # active power total 12345 (0.1 W) → 1234.5 W → 1.2345 kW; a NULL phase is skipped
        (
            "20040200",
            Data.array(Data(DataType.DOUBLE_LONG, 12345), Data(DataType.NULL)),
            [("1-0:16.7.0", "1.2345", "kW")],
        ),
        # reactive power: element 1 is the total, 2 is phase A
        ("20050202", Data(DataType.DOUBLE_LONG, -100), [("1-0:23.7.0", "-0.0100", "kvar")]),
        ("200A0200", Data.array(Data(DataType.LONG, 985)), [("1-0:13.7.0", "0.985", None)]),
        ("200F0200", Data(DataType.LONG_UNSIGNED, 5002), [("1-0:14.7.0", "50.02", "Hz")]),
        (
            "00100400",
            Data.array(Data(DataType.LONG64_UNSIGNED, 1234567)),
            [("1-0:1.8.0", "123.4567", "kWh")],
        ),
        ("00000200", Data.array(Data(DataType.DOUBLE_LONG, -5)), [("1-0:15.8.0", "-0.05", "kWh")]),
        (
            "40010200",
            Data(DataType.OCTET_STRING, H("000039200933")),
            [("0-0:96.1.0", "000039200933", None)],
        ),
    ],
)
def test_catalogue_values(
    oad: str, data: Data, expected: list[tuple[str, str, str | None]]
) -> None:
    values = meter_values(OAD.parse(oad), data)
    assert [(v.obis, str(v.value), v.unit) for v in values] == expected
    assert all(isinstance(v.value, Decimal) for v in values if v.obis != "0-0:96.1.0")


def test_clock_value_is_naive_datetime() -> None:
    values = meter_values(OAD.parse("40000200"), Data(DataType.DATE_TIME_S, DT_S))
    assert values == [MeterValue("0-0:1.0.0", datetime(2016, 9, 11, 18, 30, 21), None)]


def test_uncatalogued_oad_gives_no_values() -> None:
    assert meter_values(OAD.parse("FFF00500"), Data(DataType.NULL)) == []


def test_address_type_enum_values() -> None:
    assert [t.value for t in AddressType] == [0, 1, 2, 3]


def test_piid_bits() -> None:
    # bit 7 priority, bit 6 ACD (server replies), bits 0-5 sequence.
    assert dlt698.make_piid(5, high_priority=True) == 0x85
    assert dlt698.piid_parts(0xC5) == (True, True, 5)
    with pytest.raises(LocalProtocolError):
        dlt698.make_piid(64)


def test_apdu_values_flattens_results_records_and_security() -> None:
    voltage = GetResult(OAD.parse("20000201"), Data(DataType.LONG_UNSIGNED, 0x08C1))
    plain = GetResponseNormal(1, voltage)
    expected = [MeterValue("1-0:32.7.0", Decimal("224.1"), "V")]
    assert dlt698.apdu_values(plain) == expected
    assert dlt698.apdu_values(SecurityResponse(encode_apdu(plain), mac=b"1234")) == expected
    columns = RCSD.of(OAD.parse("20210200"), OAD.parse("200F0200"))
    row = (Data(DataType.DATE_TIME_S, DT_S), Data(DataType.LONG_UNSIGNED, 4998))
    record = GetResponseRecord(1, RecordResult(OAD.parse("50020200"), columns, rows=(row,)))
    assert dlt698.apdu_values(record) == [
        MeterValue("0-0:1.0.3", datetime(2016, 9, 11, 18, 30, 21), None),
        MeterValue("1-0:14.7.0", Decimal("49.98"), "Hz"),
    ]
    assert dlt698.apdu_values(GetRequestNormal(1, OAD.parse("20000200"))) == []


def test_largest_frame_fits_and_one_more_byte_does_not() -> None:
    address = ServerAddress.single("000000000001")
    # L = 2 (L) + 1 (C) + 7 (AF+SA) + 1 (CA) + 2 (HCS) + APDU + 2 (FCS) ≤ 0x3FFF
    biggest = 0x3FFF - 15
    frame = Frame(Control.client_request(), address, 0, bytes(biggest))
    assert decode_frame(encode_frame(frame)) == frame
    with pytest.raises(LocalProtocolError):
        Frame(Control.client_request(), address, 0, bytes(biggest + 1))
