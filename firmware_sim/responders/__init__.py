"""Protocol personalities: each one implements :class:`firmware_sim.device.Device` on a Meter."""

from firmware_sim.responders.base import Responder
from firmware_sim.responders.dlt645 import Dlt645Responder, address_matches

__all__ = ["Dlt645Responder", "Responder", "address_matches"]
