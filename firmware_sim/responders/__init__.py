"""Protocol personalities: each one implements :class:`firmware_sim.device.Device` on a Meter."""

from firmware_sim.responders.base import Responder
from firmware_sim.responders.dlt645 import Dlt645Responder, address_matches
from firmware_sim.responders.dlt698 import Dlt698Responder
from firmware_sim.responders.esam import SimulatedEsam
from firmware_sim.responders.modbus import ModbusResponder

__all__ = [
    "Dlt645Responder",
    "Dlt698Responder",
    "ModbusResponder",
    "Responder",
    "SimulatedEsam",
    "address_matches",
]
