"""Protocol personalities: each one implements :class:`firmware_sim.device.Device` on a Meter."""

from firmware_sim.responders.base import Responder
from firmware_sim.responders.dlt645 import Dlt645Responder, address_matches
from firmware_sim.responders.dlt698 import Dlt698Responder
from firmware_sim.responders.esam import SimulatedEsam

__all__ = [
    "Dlt645Responder",
    "Dlt698Responder",
    "Responder",
    "SimulatedEsam",
    "address_matches",
]
