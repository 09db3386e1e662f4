"""The Modbus RTU personality serves every register map the codec knows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from firmware_sim.device import Device
from firmware_sim.load import CustomerClass, LoadProfile
from firmware_sim.meter import Meter
from firmware_sim.responders import ModbusResponder
from firmware_sim.responders.modbus import modbus_values
from shared_protocol import modbus

START = datetime(2025, 12, 31, 16, 0, tzinfo=UTC)


def make_meter(phases: int) -> Meter:
    load = LoadProfile(CustomerClass.COMMERCIAL, seed=2)
    meter = Meter("1", load, START, seed=2, phases=phases)
    meter.advance(START + timedelta(days=4, hours=11))
    return meter


def response(responder: ModbusResponder, request: modbus.Frame) -> modbus.Frame:
    raw = responder.respond(request.raw)
    assert raw is not None
    assert modbus.explain(raw)["valid"]
    return modbus.decode_frame(raw, modbus.Direction.RESPONSE)


@pytest.mark.parametrize("model", ["sdm120", "sdm630", "ddsu666", "dtsu666"])
def test_planned_reads_return_the_models_values(model: str) -> None:
    meter = make_meter(3 if model in ("sdm630", "dtsu666") else 1)
    responder = ModbusResponder(meter, unit_id=5, model=model)
    register_map = modbus.meter_map(model)
    expected = modbus_values(meter.instantaneous(), meter.snapshot())
    seen = 0
    for block in modbus.plan_reads(register_map):
        reply = response(
            responder, modbus.build_read_request(5, block.function_code, block.address, block.count)
        )
        for value in modbus.decode_registers(register_map, block.address, reply.registers):
            want = expected[value.obis]
            assert isinstance(value.value, Decimal)
            # float32 keeps about seven significant digits
            assert abs(value.value - want) <= max(abs(want) * Decimal("1e-6"), Decimal("0.001"))
            seen += 1
    assert seen == len(register_map.entries)
    assert expected["1-0:1.8.0"] == meter.snapshot().import_kwh() > 0


def test_unmapped_addresses_half_values_and_the_wrong_bank_are_exception_02() -> None:
    responder = ModbusResponder(make_meter(1), unit_id=5, model="sdm120")
    for function, address, count in ((4, 9000, 2), (4, 1, 2), (4, 0, 1), (3, 0, 2)):
        reply = response(responder, modbus.build_read_request(5, function, address, count))
        assert reply.exception_code == modbus.ExceptionCode.ILLEGAL_DATA_ADDRESS


def test_writes_are_refused_and_other_units_are_silent() -> None:
    responder = ModbusResponder(make_meter(1), unit_id=5)
    write = modbus.build_write_single_request(5, 0, 1)
    assert response(responder, write).exception_code == modbus.ExceptionCode.ILLEGAL_FUNCTION
    assert responder.respond(modbus.build_read_request(6, 4, 0, 2).raw) is None
    assert responder.respond(b"\x05\x04\x00") is None


def test_is_a_device_named_by_unit() -> None:
    responder = ModbusResponder(make_meter(1), unit_id=17, model="ddsu666")
    assert isinstance(responder, Device)
    assert (responder.device_id, responder.protocol) == ("modbus:17", "modbus-rtu")
    with pytest.raises(ValueError):
        ModbusResponder(make_meter(1), unit_id=0)
