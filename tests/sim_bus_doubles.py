"""Small meters built on our codecs: stand-ins for the meter model in the bus tests.

They implement :class:`firmware_sim.device.Device` the way a real meter does (answer only
your address, wildcard reads with your real address, never a broadcast), with a fixed
reading. This module holds no tests; the bus, transport and fault tests import it.
"""

from __future__ import annotations

from decimal import Decimal

from shared_protocol import dlt645, dlt698, modbus
from shared_protocol.errors import ProtocolError
from shared_protocol.stream import NEED_DATA

ENERGY_DI = 0x00010000  # forward active energy, total


class Meter645:
    """A DL/T 645-2007 meter that answers DI 00010000 with a fixed energy reading."""

    protocol = "dlt645-2007"

    def __init__(self, address: str, energy: Decimal = Decimal("1234.56")) -> None:
        self.device_id = address
        self.energy = energy
        self.requests = 0

    def respond(self, request: bytes) -> bytes | None:
        self.requests += 1
        try:
            frame = dlt645.decode_frame(request)
        except ProtocolError:
            return None
        if frame.control.response or not _matches(frame.address, self.device_id):
            return None
        if frame.control.function != 0x11:
            return None
        di = dlt645.decode_read_request(frame).di
        if di != ENERGY_DI:
            reply = dlt645.abnormal_response(self.device_id, 0x11, 0x02)
        else:
            data = dlt645.encode_values(di, [self.energy])
            reply = dlt645.read_response(self.device_id, di, data)
        return dlt645.encode_frame(reply, preamble=0)


def _matches(requested: str, own: str) -> bool:
    """645 addressing: AA nibbles match any digit; 99…99 is a broadcast nobody answers."""
    if requested == dlt645.BROADCAST_ADDRESS:
        return False
    return all(want in ("A", have) for want, have in zip(requested, own, strict=True))


class Meter698:
    """A DL/T 698.45 meter that answers any GET-Normal addressed to it with 1234 (u32)."""

    protocol = "dlt698.45"

    def __init__(self, address: str) -> None:
        self.device_id = address

    def respond(self, request: bytes) -> bytes | None:
        try:
            frame = dlt698.decode_frame(request)
        except ProtocolError:
            return None
        if frame.address.type is not dlt698.AddressType.SINGLE:
            return None
        if frame.address.digits != self.device_id:
            return None
        try:
            request_apdu = dlt698.decode_apdu(frame.apdu)
        except ProtocolError:
            return None
        if not isinstance(request_apdu, dlt698.GetRequestNormal):
            return None
        value = dlt698.Data(dlt698.DataType.DOUBLE_LONG_UNSIGNED, 1234)
        result = dlt698.GetResult(request_apdu.oad, data=value)
        apdu = dlt698.encode_apdu(dlt698.GetResponseNormal(request_apdu.piid, result))
        reply = dlt698.Frame(
            dlt698.Control.server_response(), frame.address, frame.client_address, apdu
        )
        return dlt698.encode_frame(reply)


def read_698_request(address: str) -> bytes:
    """GET-Request-Normal for 0010 0200 (forward active energy) to ``address``."""
    apdu = dlt698.encode_apdu(dlt698.GetRequestNormal(1, dlt698.OAD(0x0010, 2)))
    frame = dlt698.Frame(
        dlt698.Control.client_request(), dlt698.ServerAddress.single(address), 0x10, apdu
    )
    return dlt698.encode_frame(frame, preamble=4)


class MeterModbus:
    """A Modbus RTU meter: holding/input registers count up from 1 at any address."""

    protocol = "modbus-rtu"

    def __init__(self, unit: int) -> None:
        self.unit = unit
        self.device_id = f"modbus:{unit}"

    def respond(self, request: bytes) -> bytes | None:
        try:
            frame = modbus.decode_frame(request, modbus.Direction.REQUEST)
        except ProtocolError:
            return None
        if frame.unit_id != self.unit or frame.count is None:
            return None
        registers = list(range(1, frame.count + 1))
        return modbus.build_read_response(self.unit, frame.function_code, registers).raw


class BrokenMeter:
    """A meter with a bug: it raises on the first request, then answers like Meter645."""

    protocol = "dlt645-2007"

    def __init__(self, address: str) -> None:
        self.device_id = address
        self.inner = Meter645(address)
        self.calls = 0

    def respond(self, request: bytes) -> bytes | None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("simulated meter bug")
        return self.inner.respond(request)


def read_energy_request(address: str) -> bytes:
    """What the bus master sends: 4×FE + a read of DI 00010000."""
    return dlt645.encode_frame(dlt645.read_request(address, ENERGY_DI))


def master_events(line: str, line_bytes: bytes) -> list[object]:
    """Everything a master's parser makes of ``line_bytes``: frames and Discarded runs."""
    parser: dlt645.StreamParser | dlt698.StreamParser | modbus.StreamParser
    if line == "dlt645":
        parser = dlt645.StreamParser()
    elif line == "dlt698.45":
        parser = dlt698.StreamParser()
    else:
        parser = modbus.StreamParser(modbus.Direction.RESPONSE)
    parser.receive_data(line_bytes)
    if isinstance(parser, modbus.StreamParser):
        parser.close()
    else:
        parser.receive_data(b"")
    events: list[object] = []
    while (event := parser.next_event()) is not NEED_DATA:
        events.append(event)
    return events
