"""The contract between a simulated meter and the bus it hangs on.

A bus hands a device one complete request frame at a time and puts whatever it returns on
the line. The device never sees the transport, the wire timing or wire faults (those belong
to `firmware_sim.bus`, `firmware_sim.transports` and `firmware_sim.faults`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Device"]


@runtime_checkable
class Device(Protocol):
    """One meter as the bus sees it: a request frame in, a reply frame (or silence) out."""

    # Read-only members: a plain attribute satisfies them, and so does a property (a
    # responder's device_id follows its meter, which may be replaced with a new address).
    @property
    def device_id(self) -> str:
        """The meter address in nameplate order (e.g. "000000001234"), or "modbus:<unit>"."""
        ...

    @property
    def protocol(self) -> str:
        """ "dlt645-2007" | "dlt645-1997" | "dlt698.45" | "modbus-rtu"."""
        ...

    def respond(self, request: bytes) -> bytes | None:
        """Answer one complete request frame as received (it may carry an FE preamble).

        Returns the reply frame bytes, or None when the meter stays silent: the frame is not
        addressed to it, is a broadcast, cannot be decoded, or a meter-state fault says so.
        """
        ...
