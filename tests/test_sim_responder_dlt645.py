"""The DL/T 645 personalities answer real request frames with replies our decoder accepts."""

from __future__ import annotations

import copy
import functools
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from firmware_sim.device import Device
from firmware_sim.load import ConstantLoad, CustomerClass, LoadProfile
from firmware_sim.meter import Meter, RelayState
from firmware_sim.responders import Dlt645Responder
from shared_protocol import dlt645
from shared_protocol.dlt645 import Password, RemoteCommand, Standard

VECTORS = json.loads((Path(__file__).parent / "vectors" / "dlt645.json").read_text())["vectors"]
START = datetime(2025, 12, 31, 16, 0, tzinfo=UTC)  # 2026-01-01 00:00 Shanghai
ADDRESS = "000000001234"


@functools.cache
def _advanced(address: str, days: int, allow_plaintext_remote_control: bool) -> Meter:
    load = LoadProfile(CustomerClass.RESIDENTIAL, seed=4, pv_peak_watts=1500)
    meter = Meter(
        address,
        load,
        START,
        seed=4,
        allow_plaintext_remote_control=allow_plaintext_remote_control,
    )
    meter.advance(START + timedelta(days=days, hours=3))
    return meter


def make_meter(
    address: str = ADDRESS, days: int = 70, allow_plaintext_remote_control: bool = False
) -> Meter:
    """A meter with ``days`` of history (built once, handed out as independent copies)."""
    return copy.deepcopy(_advanced(address, days, allow_plaintext_remote_control))


def reply_frame(responder: Dlt645Responder, frame: dlt645.Frame) -> dlt645.Frame:
    raw = responder.respond(dlt645.encode_frame(frame))
    assert raw is not None
    return dlt645.decode_frame(raw)


def read(responder: Dlt645Responder, di: int) -> dlt645.ReadResponse:
    return dlt645.decode_read_response(reply_frame(responder, dlt645.read_request(ADDRESS, di)))


def expected_values(meter: Meter) -> dict[str, object]:
    """What the model says, by OBIS, for the items the vectors read."""
    s, inst = meter.snapshot(), meter.instantaneous()
    local = meter.local_time()
    return {
        "1-0:1.8.0": s.import_kwh(),
        "1-0:1.8.1": s.import_kwh(1),
        "1-0:1.8.4": s.import_kwh(4),
        "1-0:3.8.0": s.reactive_kvarh(1) + s.reactive_kvarh(2),
        "1-0:32.7.0": inst.voltage[0],
        "1-0:31.7.0": inst.current[0],
        "0-0:1.0.1": local.date(),
        "0-0:1.0.2": local.time().replace(microsecond=0),
        "0-0:1.0.3": meter.daily_freeze(1).time,  # type: ignore[union-attr]
    }


def request_vectors() -> list[dict[str, object]]:
    out = []
    for vector in VECTORS:
        if vector["direction"] != "request":
            continue
        if dlt645.explain(bytes.fromhex(vector["frame_hex"]))["valid"]:
            out.append(vector)
    return out


@pytest.mark.parametrize("vector", request_vectors(), ids=lambda v: v["id"])
def test_answers_every_real_request_vector(vector: dict[str, str]) -> None:
    raw = bytes.fromhex(vector["frame_hex"])
    asked = dlt645.explain(raw)
    address = asked["address"]
    broadcast = address == "999999999999"
    meter_address = ADDRESS if "A" in address or broadcast else address
    standard = Standard.DLT645_1997 if "1997" in vector["standard"] else Standard.DLT645_2007
    meter = make_meter(meter_address)
    responder = Dlt645Responder(meter, standard=standard)
    expected = expected_values(meter)
    reply = responder.respond(raw)
    if broadcast and standard is Standard.DLT645_2007:
        assert reply is None  # broadcast is never answered
        return
    assert reply is not None
    explained = dlt645.explain(reply)
    assert explained["valid"], explained["error"]
    assert explained["direction"] == "response"
    assert explained["address"] == meter_address  # always our real address
    for value in explained["values"]:
        obis = value["obis"]
        if isinstance(obis, str) and obis in expected:
            assert str(value["value"]) == str(expected[obis]).replace(" ", "T"), obis


def test_device_protocol_and_identity() -> None:
    responder = Dlt645Responder(make_meter(days=1))
    assert isinstance(responder, Device)
    assert responder.device_id == ADDRESS
    assert responder.protocol == "dlt645-2007"
    assert Dlt645Responder(make_meter(days=1), standard=Standard.DLT645_1997).protocol == (
        "dlt645-1997"
    )


def test_energy_settlement_and_block_reads_match_the_model() -> None:
    meter = make_meter()
    responder = Dlt645Responder(meter)
    block = read(responder, 0x0001FF00)
    assert [v.value for v in block.values] == [meter.snapshot().import_kwh(t) for t in range(5)]
    last_month = read(responder, 0x00010001)
    assert last_month.values[0].obis == "1-0:1.8.0*1"
    assert last_month.values[0].value == meter.monthly_freeze(1).registers.import_kwh()  # type: ignore[union-attr]
    history = read(responder, 0x000100FF)  # current + the settlements the meter has
    assert len(history.values) == 1 + len(meter.monthly)
    export = read(responder, 0x00020000)
    assert export.values[0].value == meter.snapshot().export_kwh()


def test_daily_freeze_by_last_n_and_load_profile_by_count_and_start() -> None:
    meter = make_meter()
    responder = Dlt645Responder(meter)
    for n in (1, 2, 62):
        record = meter.daily_freeze(n)
        assert record is not None
        assert read(responder, 0x05060000 | n).values[0].value == record.time
        energies = read(responder, 0x05060100 | n)
        assert [v.value for v in energies.values] == [
            record.registers.import_kwh(t) for t in range(5)
        ]
    assert dlt645.decode_frame(
        responder.respond(dlt645.encode_frame(dlt645.read_request(ADDRESS, 0x05060040)))  # type: ignore[arg-type]
    ).control.abnormal  # 64 days back: the meter keeps 62
    last4 = list(meter.curve)[-4:]
    profile = dlt645.decode_read_response(
        reply_frame(responder, dlt645.read_load_profile_request(ADDRESS, 0x06100101, 4))
    )
    assert [v.value for v in profile.values] == [p.voltage for p in last4]
    start = list(meter.curve)[10].time
    by_start = dlt645.decode_read_response(
        reply_frame(responder, dlt645.read_load_profile_request(ADDRESS, 0x06100300, 3, start))
    )
    assert [v.value for v in by_start.values] == [
        Decimal(p.active_w) / 1000 for p in list(meter.curve)[10:13]
    ]


def test_long_replies_go_out_in_follow_up_frames() -> None:
    meter = make_meter()
    responder = Dlt645Responder(meter, max_data=16)  # a meter with a small send buffer
    first = reply_frame(responder, dlt645.read_request(ADDRESS, 0x0001FF00))
    assert first.control.follow_up
    data = first.data[4:]
    seq = 1
    while True:
        part = reply_frame(responder, dlt645.read_follow_up_request(ADDRESS, 0x0001FF00, seq))
        assert part.control.function == 0x12 and part.data[-1] == seq
        data += part.data[4:-1]
        seq += 1
        if not part.control.follow_up:
            break
    values = dlt645.data_item(0x0001FF00).decode(data)  # type: ignore[union-attr]
    assert [v.value for v in values] == [meter.snapshot().import_kwh(t) for t in range(5)]


def test_unknown_di_is_no_data_and_passwords_are_never_disclosed() -> None:
    responder = Dlt645Responder(make_meter(days=1))
    # last settlement's block: a one-day-old meter has no settlement yet
    no_data = reply_frame(responder, dlt645.read_request(ADDRESS, 0x0001FF01))
    assert no_data.control.abnormal and no_data.data == b"\x02"
    unknown = reply_frame(responder, dlt645.read_request(ADDRESS, 0x12345678))
    assert unknown.control.abnormal and unknown.data == b"\x02"
    secret = reply_frame(responder, dlt645.read_request(ADDRESS, 0x04000C03))
    assert secret.control.abnormal and secret.data == b"\x04"


def test_addressing_wildcards_broadcast_and_read_address() -> None:
    responder = Dlt645Responder(make_meter(days=1))
    wildcard = dlt645.read_request("AAAAAAAA1234", 0x00010000)
    assert responder.respond(dlt645.encode_frame(wildcard)) is not None
    other = dlt645.read_request("AAAAAAAA1235", 0x00010000)
    assert responder.respond(dlt645.encode_frame(other)) is None
    assert (
        responder.respond(dlt645.encode_frame(dlt645.read_request("000000004321", 0x00010000)))
        is None
    )
    address = reply_frame(responder, dlt645.read_address_request())
    assert dlt645.reported_address(address) == ADDRESS
    assert responder.respond(b"\xfe\xfe garbage") is None


def test_broadcast_time_sync_sets_the_clock_silently() -> None:
    meter = make_meter(days=1)
    responder = Dlt645Responder(meter)
    moment = datetime(2026, 1, 2, 12, 0, 0)
    assert responder.respond(dlt645.encode_frame(dlt645.time_sync_request(moment))) is None
    assert meter.local_time() == moment
    assert read(responder, 0x03300400).values[0].value == Decimal(1)  # clock-set count


def test_write_needs_the_password() -> None:
    meter = make_meter(days=1)
    responder = Dlt645Responder(meter)
    data = dlt645.Clock("hhmmss").encode(datetime(2026, 1, 2, 9, 30, 0).time())
    wrong = dlt645.write_request(ADDRESS, 0x04000102, data, Password(2, "123456"))
    refused = reply_frame(responder, wrong)
    assert refused.control.abnormal and refused.data == b"\x04"
    right = dlt645.write_request(ADDRESS, 0x04000102, data, Password(2, "000000"))
    assert reply_frame(responder, right).control.byte == 0x94
    assert meter.local_time().time().replace(microsecond=0).isoformat() == "09:30:00"


def test_freeze_command_takes_an_instantaneous_freeze() -> None:
    meter = make_meter(days=1)
    responder = Dlt645Responder(meter)
    assert reply_frame(responder, dlt645.freeze_request(ADDRESS)).control.byte == 0x96
    assert read(responder, 0x05010101).values[0].value == meter.snapshot().import_kwh()


@pytest.mark.parametrize(
    ("allowed", "password", "trips"),
    [(True, Password(2, "000000"), True), (False, Password(2, "000000"), False),
     (True, Password(2, "999999"), False), (True, Password(4, "000000"), False)],
)  # fmt: skip
def test_remote_control_1c_level_02_only_when_allowed(
    allowed: bool, password: Password, trips: bool
) -> None:
    meter = make_meter(days=1, allow_plaintext_remote_control=allowed)
    responder = Dlt645Responder(meter)
    until = meter.local_time() + timedelta(minutes=10)
    request = dlt645.remote_control_request(ADDRESS, RemoteCommand.TRIP, until, password)
    reply = reply_frame(responder, request)
    if trips:
        assert reply.control.byte == 0x9C
        assert meter.relay is RelayState.OPEN
        words = read(responder, 0x04000503).values[0].value
        assert int(str(words), 16) & 0x10  # status word 3: relay open
    else:
        assert reply.control.abnormal and reply.data == b"\x04"
        assert meter.relay is RelayState.CLOSED


def test_remote_control_ciphertext_form_and_expired_commands_are_refused() -> None:
    meter = make_meter(days=1, allow_plaintext_remote_control=True)
    responder = Dlt645Responder(meter)
    cipher = dlt645.encrypted_remote_control_request(ADDRESS, bytes(8) + bytes(4))
    refused = reply_frame(responder, cipher)
    assert refused.control.abnormal and refused.data == b"\x04"
    stale = dlt645.remote_control_request(
        ADDRESS, RemoteCommand.TRIP, meter.local_time() - timedelta(minutes=1)
    )
    assert reply_frame(responder, stale).control.abnormal
    assert meter.relay is RelayState.CLOSED


def test_1997_reads_and_write() -> None:
    meter = make_meter()
    responder = Dlt645Responder(meter, standard=Standard.DLT645_1997)
    reply = reply_frame(responder, dlt645.read_request(ADDRESS, 0x901F, Standard.DLT645_1997))
    values = dlt645.decode_read_response(reply, Standard.DLT645_1997).values
    assert [v.value for v in values] == [meter.snapshot().import_kwh(t) for t in range(5)]
    last = reply_frame(responder, dlt645.read_request(ADDRESS, 0x9410, Standard.DLT645_1997))
    assert dlt645.decode_read_response(last, Standard.DLT645_1997).values[0].value == (
        meter.monthly_freeze(1).registers.import_kwh()  # type: ignore[union-attr]
    )
    data = dlt645.Clock("hhmmss").encode(datetime(2026, 1, 2, 7, 0, 0).time())
    write = dlt645.write_request(ADDRESS, 0xC011, data, standard=Standard.DLT645_1997)
    assert reply_frame(responder, write).control.byte == 0x84
    assert meter.local_time().hour == 7


def test_a_dead_or_unpowered_meter_is_silent() -> None:
    meter = make_meter(days=1)
    responder = Dlt645Responder(meter)
    meter.dead = True
    assert responder.respond(dlt645.encode_frame(dlt645.read_request(ADDRESS, 0x00010000))) is None


def test_a_replaced_meter_answers_at_its_new_address() -> None:
    meter = Meter(ADDRESS, ConstantLoad(500), START)
    responder = Dlt645Responder(meter)
    meter.replace("000000005678")
    assert responder.device_id == "000000005678"
    assert responder.respond(dlt645.encode_frame(dlt645.read_request(ADDRESS, 0x00010000))) is None
    frame = dlt645.read_request("000000005678", 0x00010000)
    assert responder.respond(dlt645.encode_frame(frame)) is not None
