"""The DL/T 698.45 personality: real GET vectors, records by RSD, SET clock, secured ACTION."""

from __future__ import annotations

import copy
import functools
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from firmware_sim.device import Device
from firmware_sim.load import CustomerClass, LoadProfile
from firmware_sim.meter import FaultKind, Meter, MeterFault, RelayState, kwh
from firmware_sim.responders import Dlt698Responder, SimulatedEsam
from shared_protocol import dlt698
from shared_protocol.dlt698 import (
    OAD,
    RCSD,
    RSD,
    Apdu,
    Data,
    DataType,
    DateTimeS,
    TimeTag,
)
from shared_protocol.errors import ProtocolError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "dlt698.json").read_text())["vectors"]
START = datetime(2025, 12, 31, 16, 0, tzinfo=UTC)
ADDRESS = "000000001234"


@functools.cache
def _advanced(address: str, days: int) -> Meter:
    load = LoadProfile(CustomerClass.RESIDENTIAL, seed=9)
    meter = Meter(address, load, START, seed=9)
    meter.advance(START + timedelta(days=days, hours=5))
    return meter


def make_meter(address: str = ADDRESS, days: int = 70) -> Meter:
    return copy.deepcopy(_advanced(address, days))


def exchange(responder: Dlt698Responder, apdu: Apdu, address: str = ADDRESS) -> Apdu:
    frame = dlt698.Frame(
        dlt698.Control.client_request(),
        dlt698.ServerAddress.single(address),
        0x10,
        dlt698.encode_apdu(apdu),
    )
    raw = responder.respond(dlt698.encode_frame(frame))
    assert raw is not None
    explained = dlt698.explain(raw)
    assert explained["valid"], explained.get("error")
    reply = dlt698.decode_frame(raw)
    assert reply.address.digits == address and reply.client_address == 0x10
    return dlt698.decode_apdu(reply.apdu)


def request_vectors() -> list[dict[str, str]]:
    out = []
    for vector in VECTORS:
        if "frame_hex" not in vector:
            continue
        explained = dlt698.explain(bytes.fromhex(vector["frame_hex"]))
        if explained.get("direction") == "request" and explained["valid"]:
            out.append(vector)
    return out


@pytest.mark.parametrize("vector", request_vectors(), ids=lambda v: v["id"])
def test_answers_every_real_client_request_vector(vector: dict[str, str]) -> None:
    raw = bytes.fromhex(vector["frame_hex"])
    frame = dlt698.decode_frame(raw)
    address = frame.address.digits
    meter = make_meter(ADDRESS if "A" in address else address, days=3)
    responder = Dlt698Responder(meter)
    reply = responder.respond(raw)
    client_service = frame.control.client_started and not frame.control.from_server
    try:
        apdu: Apdu | None = dlt698.decode_apdu(frame.apdu)
    except ProtocolError:
        apdu = None  # a fragment or a service the codec does not take
    if not client_service or apdu is None or frame.control.fragmented:
        assert reply is None  # server-started frames and fragments are not ours to answer
        return
    if not isinstance(apdu, dlt698.GetRequestNormal | dlt698.SetRequestNormal):
        return
    assert reply is not None
    explained = dlt698.explain(reply)
    assert explained["valid"], explained.get("error")
    answer = dlt698.decode_apdu(dlt698.decode_frame(reply).apdu)
    expected = {
        "1-0:1.8.0": meter.snapshot().import_kwh(),
        "1-0:14.7.0": meter.instantaneous().frequency,
        "0-0:96.1.0": meter.address,
        "0-0:1.0.0": meter.local_time().replace(microsecond=0),
    }
    high_precision = sum(kwh(r, 4) for r in meter.snapshot().import_uj[1:])
    for value in dlt698.apdu_values(answer):
        if value.obis == "1-0:1.8.0" and isinstance(value.value, Decimal):
            exact = value.value.as_tuple().exponent == -4
            assert value.value == (high_precision if exact else expected["1-0:1.8.0"])
        elif value.obis in expected:
            assert value.value == expected[value.obis], value.obis
    if isinstance(apdu, dlt698.GetRequestNormal) and apdu.oad.oi == 0xFFF0:
        assert isinstance(answer, dlt698.GetResponseNormal) and answer.result.dar == 6


def test_is_a_device() -> None:
    responder = Dlt698Responder(make_meter(days=1))
    assert isinstance(responder, Device)
    assert (responder.device_id, responder.protocol) == (ADDRESS, "dlt698.45")


def test_get_normal_list_and_element_index() -> None:
    meter = make_meter()
    responder = Dlt698Responder(meter)
    reply = exchange(
        responder,
        dlt698.GetRequestNormalList(
            3, (OAD(0x0010, 2), OAD(0x0010, 2, 4), OAD(0x2000, 2), OAD(0x4000, 2))
        ),
    )
    values = {v.obis: v.value for v in dlt698.apdu_values(reply)}
    s = meter.snapshot()
    assert values["1-0:1.8.0"] == s.import_kwh()
    assert values["1-0:1.8.3"] == s.import_kwh(3)
    assert values["1-0:32.7.0"] == meter.instantaneous().voltage[0]
    assert values["0-0:1.0.0"] == meter.local_time().replace(microsecond=0)
    assert isinstance(reply, dlt698.GetResponseNormalList)
    out_of_range = exchange(responder, dlt698.GetRequestNormal(4, OAD(0x0010, 2, 9)))
    assert isinstance(out_of_range, dlt698.GetResponseNormal) and out_of_range.result.dar == 4


def test_high_precision_energy_keeps_the_tariff_sum() -> None:
    reply = exchange(Dlt698Responder(make_meter()), dlt698.GetRequestNormal(1, OAD(0x0010, 4)))
    values = [v.value for v in dlt698.apdu_values(reply)]
    assert values[0] == sum(values[1:]) and str(values[0]).count(".") == 1
    assert len(str(values[0]).split(".")[1]) == 4


def record(responder: Dlt698Responder, oi: int, rsd: RSD, *columns: OAD) -> dlt698.RecordResult:
    reply = exchange(responder, dlt698.GetRequestRecord(5, OAD(oi, 2), rsd, RCSD.of(*columns)))
    assert isinstance(reply, dlt698.GetResponseRecord)
    return reply.result


FREEZE_TIME = OAD(0x2021, 2)


def test_daily_and_monthly_records_by_last_n_and_by_time() -> None:
    meter = make_meter()
    responder = Dlt698Responder(meter)
    for oi, history in ((0x5004, meter.daily_freeze), (0x5006, meter.monthly_freeze)):
        frozen = history(2)
        assert frozen is not None
        result = record(responder, oi, RSD.last(2), FREEZE_TIME, OAD(0x0010, 2))
        assert result.rows is not None and len(result.rows) == 1
        values = dlt698.apdu_values(dlt698.GetResponseRecord(1, result))
        assert values[0].value == frozen.time
        assert [v.value for v in values[1:]] == [frozen.registers.import_kwh(t) for t in range(5)]
        by_time = record(
            responder,
            oi,
            RSD.equal(
                FREEZE_TIME, Data(DataType.DATE_TIME_S, DateTimeS.from_datetime(frozen.time))
            ),
            FREEZE_TIME,
            OAD(0x0010, 2, 1),
        )
        assert by_time.rows is not None and len(by_time.rows) == 1
        stamp, energy = by_time.rows[0]
        assert stamp == result.rows[0][0]
        assert energy == Data(
            DataType.DOUBLE_LONG_UNSIGNED, int(frozen.registers.import_kwh() * 100)
        )
    empty = record(responder, 0x5004, RSD.last(63), FREEZE_TIME)
    assert empty.rows == ()


def test_load_curve_record_with_freeze_time_column() -> None:
    meter = make_meter(days=3)
    responder = Dlt698Responder(meter)
    result = record(responder, 0x5002, RSD.last(1), FREEZE_TIME, OAD(0x0010, 2, 1), OAD(0x2000, 2))
    point = meter.curve[-1]
    values = dlt698.apdu_values(dlt698.GetResponseRecord(1, result))
    assert [v.value for v in values] == [
        point.time,
        point.registers.import_kwh(),
        point.voltage,
    ]


def test_set_clock() -> None:
    meter = make_meter(days=1)
    moment = datetime(2026, 1, 2, 10, 0, 0)
    reply = exchange(
        Dlt698Responder(meter),
        dlt698.SetRequestNormal(
            2, OAD(0x4000, 2), Data(DataType.DATE_TIME_S, DateTimeS.from_datetime(moment))
        ),
    )
    assert isinstance(reply, dlt698.SetResponseNormal) and reply.dar == 0
    assert meter.local_time() == moment


def test_plaintext_remote_control_is_refused() -> None:
    meter = make_meter(days=1)
    reply = exchange(Dlt698Responder(meter), dlt698.trip_relay(1))
    assert isinstance(reply, dlt698.ActionResponseNormal) and reply.dar == 20
    assert meter.relay is RelayState.CLOSED


def test_secured_trip_with_a_good_mac_trips_and_registers_stop() -> None:
    meter = make_meter(days=1)
    responder = Dlt698Responder(meter)
    esam = SimulatedEsam(meter.security_key)
    request = esam.wrap(dlt698.trip_relay(1), rn=bytes(range(16)))
    reply = exchange(responder, request)
    assert isinstance(reply, dlt698.SecurityResponse) and reply.mac is not None
    assert esam.verify(bytes(range(16)), reply.payload or b"", reply.mac)
    inner = reply.inner()
    assert isinstance(inner, dlt698.ActionResponseNormal) and inner.dar == 0
    assert meter.relay is RelayState.OPEN
    frozen = meter.snapshot()
    meter.advance(meter.now + timedelta(days=1))
    assert meter.snapshot() == frozen
    # the same request again: a replayed RN
    replay = exchange(responder, request)
    assert isinstance(replay, dlt698.SecurityResponse) and replay.dar == 23
    close = esam.wrap(dlt698.close_relay(2, dlt698.CloseCommand.CLOSE_DIRECTLY))
    closed = exchange(responder, close)
    assert isinstance(closed, dlt698.SecurityResponse) and closed.inner().dar == 0  # type: ignore[attr-defined]
    assert meter.relay is RelayState.CLOSED


def test_a_wrong_key_a_stale_time_tag_and_keep_power_are_refused() -> None:
    meter = make_meter(days=1)
    responder = Dlt698Responder(meter)
    forged = SimulatedEsam(b"not the meter key").wrap(dlt698.trip_relay(1))
    reply = exchange(responder, forged)
    assert isinstance(reply, dlt698.SecurityResponse) and reply.dar == 22
    esam = SimulatedEsam(meter.security_key)
    old = TimeTag(DateTimeS.from_datetime(meter.local_time() - timedelta(hours=1)), dlt698.TI(1, 5))
    stale = exchange(responder, esam.wrap(dlt698.trip_relay(1, time_tag=old)))
    assert isinstance(stale, dlt698.SecurityResponse) and stale.inner().dar == 32  # type: ignore[attr-defined]
    keep = exchange(responder, esam.wrap(dlt698.keep_power_on(2)))
    assert keep.inner().dar == 0  # type: ignore[attr-defined]
    refused = exchange(responder, esam.wrap(dlt698.trip_relay(3)))
    assert refused.inner().dar == 3  # type: ignore[attr-defined]
    assert meter.relay is RelayState.CLOSED


def test_not_addressed_and_broadcast_stay_silent() -> None:
    responder = Dlt698Responder(make_meter(days=1))
    get = dlt698.encode_apdu(dlt698.GetRequestNormal(1, OAD(0x0010, 2)))
    for address in (dlt698.ServerAddress.single("000000004321"), dlt698.ServerAddress.broadcast()):
        frame = dlt698.Frame(dlt698.Control.client_request(), address, 0x10, get)
        assert responder.respond(dlt698.encode_frame(frame)) is None
    wildcard = dlt698.Frame(
        dlt698.Control.client_request(), dlt698.ServerAddress.wildcard("AAAAAAAA1234"), 0x10, get
    )
    assert responder.respond(dlt698.encode_frame(wildcard)) is not None
    assert responder.respond(b"\x68\x00 junk") is None


def test_energy_matches_decimal_exactly() -> None:
    meter = make_meter()
    reply = exchange(Dlt698Responder(meter), dlt698.GetRequestNormal(1, OAD(0x0010, 2, 1)))
    (value,) = dlt698.apdu_values(reply)
    assert value.value == meter.snapshot().import_kwh() and isinstance(value.value, Decimal)


def test_power_down_event_records_by_last_n() -> None:
    meter = make_meter(days=1)
    for hours in (1, 3):
        meter.apply_fault(MeterFault(meter.now, FaultKind.POWER_DOWN))
        meter.advance(meter.now + timedelta(hours=hours))
        meter.apply_fault(MeterFault(meter.now, FaultKind.POWER_UP))
    responder = Dlt698Responder(meter)
    latest = record(responder, 0x3011, RSD.last(1))
    assert latest.rows is not None
    number, start, end = latest.rows[0]
    assert number == Data(DataType.DOUBLE_LONG_UNSIGNED, 2)
    assert isinstance(start.value, DateTimeS) and isinstance(end.value, DateTimeS)
    assert end.value.to_datetime() - start.value.to_datetime() == timedelta(hours=3)
    assert record(responder, 0x3011, RSD.last(3)).rows == ()
    assert record(responder, 0x301B, RSD.last(1)).rows == ()
