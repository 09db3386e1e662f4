"""The Modbus RTU personality: a DIN-rail meter (Eastron SDM120/SDM630, CHINT DDSU666/DTSU666).

Registers come from the codec's register maps (:func:`shared_protocol.modbus.meter_map`):
each mapped OBIS code is computed from the meter model and written with
:func:`~shared_protocol.modbus.encode_value`. A read must start on a mapped quantity, end on
one's last word and may only step over gaps the map allows (``max_gap``, read as zeros);
anything else — an unmapped address, half a float, the wrong register bank — is exception
02 (illegal data address), as these meters answer. Writes are not modelled: exception 01.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

from firmware_sim.clock import SimClock
from firmware_sim.meter import Instantaneous, Meter, Snapshot
from firmware_sim.responders.base import Responder
from shared_protocol.errors import ProtocolError
from shared_protocol.modbus import (
    Direction,
    ExceptionCode,
    FunctionCode,
    RegisterMap,
    RegisterType,
    build_exception_response,
    build_read_response,
    decode_frame,
    encode_value,
    meter_map,
)

__all__ = ["ModbusResponder", "modbus_values"]

_PHASE_CODES = {
    "voltage": ("1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0"),
    "current": ("1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0"),
    "active": ("1-0:36.7.0", "1-0:56.7.0", "1-0:76.7.0"),
    "reactive": ("1-0:23.7.0", "1-0:43.7.0", "1-0:63.7.0"),
    "apparent": ("1-0:29.7.0", "1-0:49.7.0", "1-0:69.7.0"),
    "power_factor": ("1-0:33.7.0", "1-0:53.7.0", "1-0:73.7.0"),
}


def modbus_values(inst: Instantaneous, registers: Snapshot) -> dict[str, Decimal]:
    """Every quantity the maps know, by OBIS code, in the vocabulary's units."""
    q = [registers.reactive_kvarh(n) for n in range(1, 5)]
    values: dict[str, Decimal] = {
        "1-0:16.7.0": inst.active_kw,
        "1-0:3.7.0": inst.reactive_kvar,
        "1-0:9.7.0": inst.apparent_kva,
        "1-0:13.7.0": inst.power_factor,
        "1-0:14.7.0": inst.frequency,
        "1-0:91.7.0": Decimal(0),
        "1-0:1.8.0": registers.import_kwh(),
        "1-0:2.8.0": registers.export_kwh(),
        "1-0:3.8.0": q[0] + q[1],
        "1-0:4.8.0": q[2] + q[3],
        "1-0:15.8.0": registers.import_kwh() + registers.export_kwh(),
    }
    per_phase = {
        "voltage": inst.voltage,
        "current": inst.current,
        "active": inst.phase_active_kw,
        "reactive": inst.phase_reactive_kvar,
        "apparent": inst.phase_apparent_kva,
        "power_factor": (inst.power_factor,) * len(inst.voltage),
    }
    for name, codes in _PHASE_CODES.items():
        for n, code in enumerate(codes):
            phases = per_phase[name]
            values[code] = phases[n] if n < len(phases) else Decimal(0)
    return values


class ModbusResponder(Responder):
    """A Modbus RTU meter at ``unit_id`` with the register map of ``model``."""

    protocol = "modbus-rtu"

    def __init__(
        self,
        meter: Meter,
        clock: SimClock | None = None,
        *,
        unit_id: int = 1,
        model: str = "sdm120",
        sync: Callable[[int], None] | None = None,
        lock: threading.RLock | None = None,
    ) -> None:
        super().__init__(meter, clock, sync=sync, lock=lock)
        if not 1 <= unit_id <= 247:
            raise ValueError(f"a Modbus unit id is 1..247, got {unit_id}")
        self.unit_id = unit_id
        self.register_map: RegisterMap = meter_map(model)

    @property
    def device_id(self) -> str:
        return f"modbus:{self.unit_id}"

    def _respond(self, request: bytes) -> bytes | None:
        try:
            frame = decode_frame(request, Direction.REQUEST)
        except ProtocolError:
            return None
        if frame.unit_id != self.unit_id:
            return None  # unit 0 is broadcast: never answered
        self._bring_up_to_date()
        if not self.meter.answering:
            return None
        function = frame.function
        if function not in (FunctionCode.READ_HOLDING_REGISTERS, FunctionCode.READ_INPUT_REGISTERS):
            reply = build_exception_response(
                self.unit_id, frame.function_code, ExceptionCode.ILLEGAL_FUNCTION
            )
            return reply.raw
        assert frame.address is not None and frame.count is not None
        bank = (
            RegisterType.HOLDING
            if function is FunctionCode.READ_HOLDING_REGISTERS
            else RegisterType.INPUT
        )
        words = self._read(bank, frame.address, frame.count)
        if words is None:
            reply = build_exception_response(
                self.unit_id, frame.function_code, ExceptionCode.ILLEGAL_DATA_ADDRESS
            )
        else:
            reply = build_read_response(self.unit_id, frame.function_code, words)
        return reply.raw

    def _read(self, bank: RegisterType, address: int, count: int) -> list[int] | None:
        values = modbus_values(self.meter.instantaneous(), self.meter.snapshot())
        words: list[int] = []
        gap = 0
        position = address
        end = address + count
        while position < end:
            entry = self.register_map.entry_at(bank, position)
            if entry is None:
                if not words:
                    return None  # a read starts on a mapped quantity
                gap += 1
                if gap > self.register_map.max_gap:
                    return None
                words.append(0)
                position += 1
                continue
            if entry.end > end:
                return None  # half a value
            gap = 0
            words.extend(encode_value(entry, values.get(entry.obis, Decimal(0))))
            position = entry.end
        if gap:
            return None  # a read ends on a mapped quantity
        return words
