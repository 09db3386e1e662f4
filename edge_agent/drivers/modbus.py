"""Modbus RTU meters: the register map's planned block reads, values by the map.

DIN-rail Modbus meters keep no freezes, curves, events or clock we could read, so only
real-time values are collected (the other needs raise ``NotSupported`` from the base);
the edge keeps the history itself. ``plan_reads`` groups
the wanted quantities into the fewest contiguous 03/04 reads the map allows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from edge_agent.archive import Meter
from edge_agent.bus import ModbusMatch, Priority, Transaction
from edge_agent.drivers.base import Driver, NotSupported, Reading, readings_from
from shared_protocol import modbus

__all__ = ["ModbusDriver"]

_RESPONSE_OVERHEAD: Final = 5  # unit, function, byte count, CRC


class ModbusDriver(Driver):
    """A Modbus RTU meter; ``meter.address`` is the unit id, ``meter.modbus_model`` the map."""

    protocol = "modbus-rtu"

    def read_realtime(
        self,
        meter: Meter,
        quantities: Iterable[str] | None = None,
        priority: Priority | None = None,
    ) -> list[Reading]:
        if not meter.modbus_model:
            raise NotSupported(f"meter {meter.key} has no modbus_model")
        register_map = modbus.meter_map(meter.modbus_model)
        only = list(quantities) if quantities is not None else None
        unit = int(meter.address)
        readings: list[Reading] = []
        for block in modbus.plan_reads(register_map, only=only):
            request = modbus.build_read_request(
                unit, int(block.function_code), block.address, block.count
            )
            transaction = Transaction(
                meter.key,
                request.raw,
                ModbusMatch(unit, int(block.function_code), block.count),
                label=f"read {block.function_code:02X} {block.address:#06x}x{block.count}",
                reply_bytes=_RESPONSE_OVERHEAD + 2 * block.count,
            )
            result = self._transact(meter, transaction.label, transaction, priority)
            frame = result.reply
            assert isinstance(frame, modbus.Frame)
            values = modbus.decode_registers(
                register_map, block.address, frame.registers, block.register_type
            )
            readings += readings_from(meter.key, values, self._reply_time(), "realtime")
        wanted = set(only) if only is not None else None
        return [r for r in readings if wanted is None or r.obis in wanted]
