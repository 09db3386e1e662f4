"""Meter drivers: collection needs → bus transactions → :class:`Reading` s.

    base      Reading, MeterEvent, ClockReading, the error tree, the shared Driver
    dlt645    DL/T 645-2007 and -1997 (block reads, last-n freezes, broadcast sync, scan)
    dlt698    DL/T 698.45 (GET-NormalList, GET-Record by freeze time, SET clock)
    modbus    Modbus RTU (planned block reads over the register map)

:func:`driver_for` picks the driver for an archive meter's protocol.
"""

from __future__ import annotations

from typing import Any

from edge_agent.bus import BusMaster
from edge_agent.drivers.base import (
    ClockReading,
    Driver,
    DriverError,
    MeterEvent,
    NotSupported,
    ReadFailed,
    Reading,
    RecordNotFound,
)
from edge_agent.drivers.dlt645 import (
    Dlt645Driver,
    Dlt645v1997Driver,
    read_address,
    scan_645,
    sync_clock_broadcast,
)
from edge_agent.drivers.dlt698 import Dlt698Driver, read_address_698
from edge_agent.drivers.modbus import ModbusDriver

__all__ = [
    "DRIVERS",
    "ClockReading",
    "Dlt645Driver",
    "Dlt645v1997Driver",
    "Dlt698Driver",
    "Driver",
    "DriverError",
    "MeterEvent",
    "ModbusDriver",
    "NotSupported",
    "ReadFailed",
    "Reading",
    "RecordNotFound",
    "driver_for",
    "read_address",
    "read_address_698",
    "scan_645",
    "sync_clock_broadcast",
]

DRIVERS: dict[str, type[Driver]] = {
    "dlt645-2007": Dlt645Driver,
    "dlt645-1997": Dlt645v1997Driver,
    "dlt698.45": Dlt698Driver,
    "modbus-rtu": ModbusDriver,
}


def driver_for(protocol: str, master: BusMaster, **options: Any) -> Driver:
    """The driver for a meter protocol (``Meter.protocol``) on ``master``'s line."""
    try:
        cls = DRIVERS[protocol]
    except KeyError:
        raise ValueError(
            f"no driver for protocol {protocol!r}; use one of {', '.join(DRIVERS)}"
        ) from None
    return cls(master, **options)
