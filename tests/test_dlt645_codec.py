"""Frame layer, data formats, DI table and builders of shared_protocol.dlt645.

Golden frames come from the vector file (ids in comments) or are computed by hand next to
the test; round trips are hypothesis properties.
"""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

import shared_protocol.dlt645 as dlt645
from shared_protocol.dlt645 import (
    BROADCAST_ADDRESS,
    DATA_ITEMS,
    MAX_DATA_LENGTH,
    YYMMDDHHMM,
    YYMMDDHHMMSS,
    YYMMDDWW,
    Ascii,
    Bcd,
    BitString,
    Clock,
    Control,
    Digits,
    Frame,
    Password,
    RemoteCommand,
    Standard,
    abnormal_response,
    ack_response,
    address_from_wire,
    address_to_wire,
    baud_from_feature,
    change_baud_request,
    change_password_request,
    data_item,
    decode_frame,
    decode_read_request,
    decode_read_response,
    demand_reset_request,
    encode_frame,
    encrypted_remote_control_request,
    error_bit_names,
    event_clear_request,
    freeze_request,
    meter_clear_request,
    read_address_request,
    read_address_response,
    read_follow_up_request,
    read_follow_up_response,
    read_load_profile_request,
    read_request,
    read_response,
    remote_control_request,
    reported_address,
    time_sync_request,
    write_address_request,
    write_request,
)
from shared_protocol.errors import (
    ChecksumError,
    FrameTooLargeError,
    LocalProtocolError,
    MalformedFrameError,
    UnsupportedError,
)
from shared_protocol.quantities import QUANTITIES, base_obis

V1997 = Standard.DLT645_1997
H = bytes.fromhex


def test_public_names_are_pinned() -> None:
    assert set(dlt645.__all__) >= {
        "Frame",
        "Control",
        "encode_frame",
        "decode_frame",
        "StreamParser",
        "explain",
        "read_request",
        "read_response",
        "decode_read_response",
        "abnormal_response",
    }
    for name in dlt645.__all__:
        assert hasattr(dlt645, name), name


# ---------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("nameplate", "wire"),
    [
        ("000006605518", "18 55 60 06 00 00"),  # real meter, 645-043…055
        ("999999999999", "99 99 99 99 99 99"),
        ("AAAAAAAAAAAA", "AA AA AA AA AA AA"),
        ("123456789", "89 67 45 23 A1 AA"),  # compressed: A wildcards per nibble
        ("aaa123456789", "89 67 45 23 A1 AA"),
    ],
)
def test_address_nameplate_to_wire(nameplate: str, wire: str) -> None:
    assert address_to_wire(nameplate) == H(wire)
    assert address_from_wire(H(wire)) == nameplate.upper().rjust(12, "A")


@pytest.mark.parametrize("bad", ["", "1234567890123", "12B456", "12-34"])
def test_bad_addresses_are_local_errors(bad: str) -> None:
    with pytest.raises(LocalProtocolError):
        address_to_wire(bad)


@given(st.text(alphabet="0123456789", min_size=12, max_size=12))
def test_address_round_trip(nameplate: str) -> None:
    assert address_from_wire(address_to_wire(nameplate)) == nameplate


# ---------------------------------------------------------------- frame layer


def test_control_bits() -> None:
    control = Control.from_byte(0xB2)
    assert control == Control(0x12, response=True, abnormal=False, follow_up=True)
    assert Control(0x11, response=True, abnormal=True).byte == 0xD1
    with pytest.raises(LocalProtocolError):
        Control(0x20)


frames = st.builds(
    Frame,
    address=st.text(alphabet="0123456789ABCDEF", min_size=12, max_size=12),
    control=st.integers(0, 255).map(Control.from_byte),
    data=st.binary(max_size=MAX_DATA_LENGTH),
)


@given(frames, st.integers(0, 4))
def test_frame_round_trip(frame: Frame, preamble: int) -> None:
    raw = encode_frame(frame, preamble=preamble)
    assert raw[:preamble] == b"\xfe" * preamble
    assert decode_frame(raw) == frame


def test_frame_errors_name_the_problem() -> None:
    good = encode_frame(read_request("000000000161", 0x00010000), preamble=0)
    with pytest.raises(ChecksumError, match="checksum is 0x15 but the bytes add up to 0x14"):
        decode_frame(good[:-2] + b"\x15\x16")
    with pytest.raises(MalformedFrameError, match="must end with 16"):
        decode_frame(good[:-1] + b"\x17")
    with pytest.raises(MalformedFrameError, match="truncated"):
        decode_frame(good[:-1])
    with pytest.raises(MalformedFrameError, match="second 68"):
        decode_frame(good[:7] + b"\x00" + good[8:])
    with pytest.raises(MalformedFrameError, match="after the closing 16"):
        decode_frame(good + b"\x00")
    with pytest.raises(FrameTooLargeError, match="201"):
        decode_frame(good[:9] + bytes([201]) + bytes(203))
    with pytest.raises(MalformedFrameError, match="no frame"):
        decode_frame(b"\xfe\xfe")


def test_encode_refuses_impossible_frames() -> None:
    with pytest.raises(LocalProtocolError):
        Frame("000000000161", Control(0x11), bytes(MAX_DATA_LENGTH + 1))
    with pytest.raises(LocalProtocolError):
        Frame("00000000016", Control(0x11))
    with pytest.raises(LocalProtocolError):
        encode_frame(read_address_request(), preamble=5)


# ---------------------------------------------------------------- builders (golden frames)


@pytest.mark.parametrize(
    ("frame", "preamble", "expected"),
    [
        # 645-001, 645-002, 645-004
        (
            read_request("AAAAAAAAAAAA", 0x00010000),
            0,
            "68 AA AA AA AA AA AA 68 11 04 33 33 34 33 AE 16",
        ),
        (
            read_request("000000000161", 0x00010000),
            0,
            "68 61 01 00 00 00 00 68 11 04 33 33 34 33 14 16",
        ),
        (
            read_request("000000000161", 0x02010100),
            4,
            "FE FE FE FE 68 61 01 00 00 00 00 68 11 04 33 34 34 35 17 16",
        ),
        # 645-009 read address; 645-042 its reply
        (read_address_request(), 3, "FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16"),
        (
            read_address_response("000332316420"),
            4,
            "FE FE FE FE 68 20 64 31 32 03 00 68 93 06 53 97 64 65 36 33 6F 16",
        ),
        # 645-063 broadcast time sync, 645-070 change baud to 2400
        (
            time_sync_request(datetime(2019, 12, 7, 16, 28, 0)),
            0,
            "68 99 99 99 99 99 99 68 08 06 33 5B 49 3A 45 4C 16 16",
        ),
        (change_baud_request("201901120001", 2400), 0, "68 01 00 12 01 19 20 68 17 01 3B 70 16"),
        # 645-020 plaintext remote control "close directly", 645-022 its 9C reply
        (
            remote_control_request(
                "558890213594", RemoteCommand.CLOSE_DIRECTLY, datetime(2021, 7, 7, 18, 40, 2)
            ),
            4,
            "FE FE FE FE 68 94 35 21 90 88 55 68 1C 10 35 33 33 33 33 33 33 33 4F 33 35 73"
            " 4B 3A 3A 54 2A 16",
        ),
        (ack_response("558890213594", 0x1C), 4, "FE FE FE FE 68 94 35 21 90 88 55 68 9C 00 C3 16"),
        # 645-043 abnormal reply "no requested data"
        (
            abnormal_response("000006605518", 0x11, 0x02),
            4,
            "FE FE FE FE 68 18 55 60 06 00 00 68 D1 01 35 AA 16",
        ),
        # 645-054 energy reply 221.76 kWh, 645-027 block reply
        (
            read_response("000006605518", 0x00010300, Bcd(4, 2).encode(Decimal("221.76"))),
            4,
            "FE FE FE FE 68 18 55 60 06 00 00 68 91 08 33 36 34 33 A9 54 35 33 71 16",
        ),
        (
            read_response(
                "005223440001",
                0x0001FF00,
                data_item(0x0001FF00).encode(  # type: ignore[union-attr]
                    [Decimal(x) for x in ("3.89", "0", "0", "3.89", "0")]
                ),
            ),
            0,
            "68 01 00 44 23 52 00 68 91 18 33 32 34 33 BC 36 33 33 33 33 33 33 33 33 33 33"
            " BC 36 33 33 33 33 33 33 13 16",
        ),
        # 1997: 645-072 read 9010 broadcast, 645-075 reply 0.36 kWh, 645-102 C4 illegal data
        (
            read_request("999999999999", 0x9010, V1997),
            0,
            "68 99 99 99 99 99 99 68 01 02 43 C3 6F 16",
        ),
        (
            read_response(
                "000000063295", 0x9010, Bcd(4, 2).encode(Decimal("0.36")), standard=V1997
            ),
            0,
            "68 95 32 06 00 00 00 68 81 06 43 C3 69 33 33 33 2C 16",
        ),
        (
            abnormal_response("201708176934", 0x04, 0x01),
            0,
            "68 34 69 17 08 17 20 68 C4 01 34 BC 16",
        ),
    ],
)
def test_builders_produce_public_frames(frame: Frame, preamble: int, expected: str) -> None:
    assert encode_frame(frame, preamble=preamble) == H(expected)


def test_request_builders_default_to_four_fe() -> None:
    assert encode_frame(read_address_request())[:5] == H("FE FE FE FE 68")


def test_freeze_data_is_mm_hh_dd_mm_with_99_wildcards() -> None:
    frame = freeze_request(month=12, day=7, hour=16, minute=28)
    assert frame.address == BROADCAST_ADDRESS
    assert frame.data == H("28 16 07 12")
    assert freeze_request("000006605518", hour=0, minute=0).data == H("00 00 99 99")  # daily
    assert freeze_request("000006605518").data == H("99 99 99 99")  # instantaneous
    with pytest.raises(LocalProtocolError):
        freeze_request(hour=24)


@pytest.mark.parametrize(
    ("baud", "flag"),
    [(600, 0x02), (1200, 0x04), (2400, 0x08), (4800, 0x10), (9600, 0x20), (19200, 0x40)],
)
def test_baud_feature_bits(baud: int, flag: int) -> None:
    assert change_baud_request("000006605518", baud).data == bytes([flag])
    assert change_baud_request("000006605518", baud, V1997).control.function == 0x0C
    assert baud_from_feature(flag) == baud


def test_baud_refuses_unknown_speeds_and_bytes() -> None:
    with pytest.raises(LocalProtocolError):
        change_baud_request("000006605518", 38400)
    with pytest.raises(MalformedFrameError, match="08, which is the 2400 bps flag"):
        baud_from_feature(0xD5)  # 08 sent without +33H, vector 645-069


def test_follow_up_request_and_reply() -> None:
    request = read_follow_up_request("000006605518", 0x06100101, seq=1)
    assert request.control.byte == 0x12
    assert request.data == H("01 01 10 06 01")
    assert decode_read_request(request).seq == 1
    data = Bcd(2, 1).encode(Decimal("220.1"))
    reply = read_follow_up_response("000006605518", 0x02010100, data, seq=1, more=True)
    assert reply.control.byte == 0xB2
    decoded = decode_read_response(reply)
    assert decoded.seq == 1 and decoded.more
    assert decoded.values[0].value == Decimal("220.1")
    with pytest.raises(LocalProtocolError):
        read_follow_up_request("000006605518", 0x06100101)


def test_load_profile_requests_l05_and_l0a() -> None:
    short = read_load_profile_request("000006605518", 0x06100101, 4)
    assert short.data == H("01 01 10 06 04")
    long = read_load_profile_request("000006605518", 0x06100101, 4, datetime(2024, 3, 5, 12, 15))
    assert long.data == H("01 01 10 06 04 15 12 05 03 24")  # N + mm hh DD MM YY
    assert decode_read_request(long) == dlt645.ReadRequest(
        0x06100101, count=4, start=datetime(2024, 3, 5, 12, 15)
    )


def test_write_and_password_layouts() -> None:
    frame = write_request(
        "000006605518", 0x04000401, H("01 00 00 00 00 00"), Password(2, "123456"), "12345678"
    )
    assert frame.control.byte == 0x14
    # DI0..DI3, PA P0 P1 P2 (P0 low byte first), C0..C3 (low byte first), data
    assert frame.data == H("01 04 00 04 02 56 34 12 78 56 34 12 01 00 00 00 00 00")
    frame97 = write_request("000006605518", 0xC011, H("04 22 22"), standard=V1997)
    assert frame97.control.byte == 0x04 and frame97.data == H("11 C0 02 00 00 00 04 22 22")
    change = change_password_request("000006605518", Password(2, "000000"), Password(2, "123456"))
    assert change.control.byte == 0x18
    assert change.data == H("03 0C 00 04 02 00 00 00 02 56 34 12")  # DI 04000C03 = level 2


def test_clear_and_remote_control_layouts() -> None:
    assert demand_reset_request("000006605518").data == H("02 00 00 00 00 00 00 00")
    assert meter_clear_request("000006605518").control.byte == 0x1A
    assert event_clear_request("000006605518").data == H("02 00 00 00 00 00 00 00 FF FF FF FF")
    trip = remote_control_request("000006605518", RemoteCommand.TRIP, datetime(2024, 1, 2, 3, 4, 5))
    assert trip.data[8:] == H("1A 00 05 04 03 02 01 24")
    sealed = encrypted_remote_control_request("000006605518", H("DE AD BE EF"))
    assert sealed.data == H("98 00 00 00 00 00 00 00 DE AD BE EF")
    with pytest.raises(LocalProtocolError):
        remote_control_request(
            "000006605518", RemoteCommand.TRIP, datetime(2024, 1, 1), Password(0x98)
        )


def test_write_address() -> None:
    frame = write_address_request("000006605518")
    assert frame.address == "AAAAAAAAAAAA" and frame.data == H("18 55 60 06 00 00")
    assert reported_address(read_address_response("000006605518")) == "000006605518"
    with pytest.raises(LocalProtocolError):
        write_address_request("123")


def test_error_bits_by_edition() -> None:
    assert error_bit_names(0x02, Standard.DLT645_2007) == ["no requested data"]
    assert error_bit_names(0x06, Standard.DLT645_2007) == [
        "no requested data",
        "password error or unauthorised",
    ]
    assert error_bit_names(0x07, V1997) == ["illegal data", "DI error", "password error"]


def test_decode_read_response_errors() -> None:
    with pytest.raises(UnsupportedError):
        decode_read_response(read_response("000006605518", 0x7F000000, b""))
    with pytest.raises(MalformedFrameError, match="carries 4 data bytes"):
        decode_read_response(read_response("000006605518", 0x00010000, b"\x00"))
    with pytest.raises(MalformedFrameError):
        decode_read_response(read_request("000006605518", 0x00010000))


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("fmt", "raw", "value"),
    [
        (Bcd(4, 2), "71 23 46 05", Decimal("54623.71")),
        (Bcd(4, 2), "00 00 00 00", Decimal("0.00")),
        (Bcd(3, 3, signed=True), "38 02 80", Decimal("-0.238")),  # bit7 of the top byte
        (Bcd(2, 3, signed=True), "00 90", Decimal("-1.000")),
        (Bcd(3, 0), "00 12 00", Decimal("1200")),
        (YYMMDDWW, "06 29 12 18", date(2018, 12, 29)),  # 645-045, WW 06 = Saturday
        (Clock("hhmmss"), "32 53 18", time(18, 53, 32)),  # 645-044
        (YYMMDDHHMMSS, "00 28 16 07 12 19", datetime(2019, 12, 7, 16, 28)),  # 645-063
        (YYMMDDHHMM, "15 12 05 03 24", datetime(2024, 3, 5, 12, 15)),
        (Digits(6), "18 55 60 06 00 00", "000006605518"),  # 645-046
        (Ascii(6), "56 30 2E 30 32 32", "220.0V"),  # 645-047
        (BitString(2), "10 00", "0010"),
    ],
)
def test_format_golden_values(fmt: dlt645.DataFormat, raw: str, value: object) -> None:
    assert fmt.decode(H(raw)) == value
    assert str(fmt.decode(H(raw))) == str(value)  # decimals kept
    assert fmt.encode(value) == H(raw)  # type: ignore[arg-type]


def test_weekday_is_computed_on_encode() -> None:
    assert YYMMDDWW.encode(date(2018, 12, 30)) == H("00 30 12 18")  # Sunday = 0


@pytest.mark.parametrize(
    ("fmt", "raw"),
    [
        (Bcd(2, 1), "1A 00"),  # nibble above 9
        (Bcd(2, 1), "00"),  # too short
        (YYMMDDHHMM, "00 00 32 01 24"),  # day 32
        (Ascii(2), "FF 41"),
    ],
)
def test_bad_bytes_are_remote_errors(fmt: dlt645.DataFormat, raw: str) -> None:
    with pytest.raises(MalformedFrameError):
        fmt.decode(H(raw))


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        (Bcd(2, 1), Decimal("1000.0")),
        (Bcd(2, 1), Decimal("1.23")),
        (Bcd(2, 1), Decimal("-1.0")),
        (Bcd(2, 1, signed=True), Decimal("800.0")),
        (Ascii(2), "abc"),
        (Digits(2), "12a4"),
        (YYMMDDHHMM, datetime(2100, 1, 1)),
    ],
)
def test_values_that_do_not_fit_are_local_errors(fmt: dlt645.DataFormat, value: object) -> None:
    with pytest.raises(LocalProtocolError):
        fmt.encode(value)  # type: ignore[arg-type]


@st.composite
def bcd_cases(draw: st.DrawFn) -> tuple[Bcd, Decimal]:
    size = draw(st.integers(1, 6))
    decimals = draw(st.integers(0, 2 * size))
    signed = draw(st.booleans())
    fmt = Bcd(size, decimals, signed)
    number = draw(st.integers(-fmt.max_magnitude if signed else 0, fmt.max_magnitude))
    return fmt, Decimal(number).scaleb(-decimals)


@given(bcd_cases())
def test_bcd_round_trip(case: tuple[Bcd, Decimal]) -> None:
    fmt, value = case
    raw = fmt.encode(value)
    assert len(raw) == fmt.size
    decoded = fmt.decode(raw)
    assert decoded == value
    assert decoded.as_tuple().exponent == -fmt.decimals or fmt.decimals == 0


@given(st.binary(min_size=4, max_size=4))
def test_bcd_bytes_round_trip_or_refuse(raw: bytes) -> None:
    try:
        value = Bcd(4, 2).decode(raw)
    except MalformedFrameError:
        return
    assert Bcd(4, 2).encode(value) == raw


moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31, 23, 59, 59))


@given(moments)
def test_clock_round_trips(moment: datetime) -> None:
    moment = moment.replace(microsecond=0)
    assert YYMMDDHHMMSS.decode(YYMMDDHHMMSS.encode(moment)) == moment
    assert YYMMDDHHMM.decode(YYMMDDHHMM.encode(moment)) == moment.replace(second=0)
    assert YYMMDDWW.decode(YYMMDDWW.encode(moment.date())) == moment.date()
    assert Clock("hhmmss").decode(Clock("hhmmss").encode(moment.time())) == moment.time()
    assert Clock("hhmm").decode(Clock("hhmm").encode(moment.time())) == moment.time().replace(
        second=0
    )


@given(
    st.integers(1, 8).flatmap(
        lambda n: st.tuples(st.just(n), st.text("0123456789", min_size=2 * n, max_size=2 * n))
    )
)
def test_digits_round_trip(case: tuple[int, str]) -> None:
    size, digits = case
    assert Digits(size).decode(Digits(size).encode(digits)) == digits


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=16))
def test_ascii_round_trip(text: str) -> None:
    assert Ascii(16).decode(Ascii(16).encode(text)) == text


@given(st.binary(min_size=2, max_size=2))
def test_bit_string_round_trip(raw: bytes) -> None:
    assert BitString(2).encode(BitString(2).decode(raw)) == raw


# ---------------------------------------------------------------- DI table as data


def test_every_meter_data_item_maps_to_a_known_quantity() -> None:
    for standard, table in DATA_ITEMS.items():
        for di, item in table.items():
            assert item.di == di
            for field in item.fields:
                if field.obis is not None:
                    assert base_obis(field.obis) in QUANTITIES, (standard, hex(di), field.obis)


@pytest.mark.parametrize(
    ("di", "obis", "size"),
    [
        (0x00010000, ["1-0:1.8.0"], 4),
        (0x00010103, ["1-0:1.8.1*3"], 4),  # settlement −3
        (0x00000000, ["1-0:15.8.0"], 4),
        (0x0002FF00, [f"1-0:2.8.{t}" for t in range(9)], 36),
        (0x01010000, ["1-0:1.6.0", "0-0:96.62.10"], 8),  # XX.XXXX + YYMMDDhhmm
        (0x0201FF00, ["1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0"], 6),
        (0x02030000, ["1-0:16.7.0"], 3),
        (0x02060000, ["1-0:13.7.0"], 2),
        (0x02800002, ["1-0:14.7.0"], 2),
        (0x04000101, ["0-0:1.0.1"], 4),
        (0x04000403, ["0-0:96.1.2"], 32),
        (0x05060001, ["0-0:1.0.3"], 5),
        (0x05060101, [f"1-0:1.8.{t}" for t in range(9)], 36),
        (0x0506023E, [f"1-0:2.8.{t}" for t in range(9)], 36),  # last-62
        (0x03110000, ["0-0:96.7.21"], 3),
        (0x03300D01, ["0-0:96.51.1", None], 12),
    ],
)
def test_di_table_rows(di: int, obis: list[str | None], size: int) -> None:
    item = data_item(di)
    assert item is not None
    assert [f.obis for f in item.fields] == obis
    assert item.size == size


def test_1997_table_rows() -> None:
    for di, obis in [
        (0x9010, "1-0:1.8.0"),
        (0x9014, "1-0:1.8.4"),
        (0x9020, "1-0:2.8.0"),
        (0x9110, "1-0:3.8.0"),
        (0x9120, "1-0:4.8.0"),
        (0xB611, "1-0:32.7.0"),
        (0xB623, "1-0:71.7.0"),
        (0xC010, "0-0:1.0.1"),
        (0xC011, "0-0:1.0.2"),
        (0xC030, "1-0:0.3.0"),
        (0xC032, "0-0:96.1.1"),
    ]:
        item = data_item(di, V1997)
        assert item is not None and item.fields[0].obis == obis, hex(di)
    assert len(data_item(0x901F, V1997).fields) == 5  # type: ignore[union-attr]


def test_block_reply_may_hold_fewer_tariffs() -> None:
    item = data_item(0x0001FF00)
    assert item is not None
    values = item.decode(item.encode([Decimal("10.00"), Decimal("4.00"), Decimal("6.00")]))
    assert [(v.obis, v.value, v.unit) for v in values] == [
        ("1-0:1.8.0", Decimal("10.00"), "kWh"),
        ("1-0:1.8.1", Decimal("4.00"), "kWh"),
        ("1-0:1.8.2", Decimal("6.00"), "kWh"),
    ]
    with pytest.raises(MalformedFrameError):
        item.decode(bytes(6))  # 1.5 fields


def test_cover_open_record_keeps_its_tail_undecoded() -> None:
    item = data_item(0x03300D01)
    assert item is not None
    start, end = datetime(2024, 1, 2, 3, 4, 5), datetime(2024, 1, 2, 3, 5, 0)
    data = item.encode([start, end]) + bytes(48)
    assert [v.value for v in item.decode(data)] == [start]
