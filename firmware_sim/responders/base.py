"""What every responder shares: the meter it speaks for and how it learns the time."""

from __future__ import annotations

import threading
from collections.abc import Callable

from firmware_sim.clock import SimClock
from firmware_sim.meter import Meter

__all__ = ["Responder"]


class Responder:
    """Base of the protocol personalities.

    ``clock``: before answering, the meter is brought up to ``clock.now()`` — through
    ``sync`` when given (a transformer area advances all its meters together so the supply
    meter stays balanced), else through ``meter.advance``. Without a clock the meter answers
    at whatever time it was last advanced to (unit tests drive time by hand).
    """

    protocol: str = ""

    def __init__(
        self,
        meter: Meter,
        clock: SimClock | None = None,
        *,
        sync: Callable[[int], None] | None = None,
        lock: threading.RLock | None = None,
    ) -> None:
        self.meter = meter
        self.clock = clock
        self._sync = sync or meter.advance
        self._lock = lock or threading.RLock()

    @property
    def device_id(self) -> str:
        return self.meter.address

    def respond(self, request: bytes) -> bytes | None:
        """One request frame in, the reply frame (or None for silence) out."""
        with self._lock:
            return self._respond(request)

    def _respond(self, request: bytes) -> bytes | None:
        raise NotImplementedError

    def _bring_up_to_date(self) -> None:
        if self.clock is not None:
            self._sync(self.clock.now_us())

    def _may_have_changed(self) -> bool:
        """Could a meter-state fault (a replacement's new address, death) be due by now?

        Bringing a whole transformer area up to date costs far more than a frame decode, so
        a request for another address is dropped early unless the meter's own state may
        have changed since it was last advanced.
        """
        if self.clock is None:
            return False
        due = self.meter.next_fault_us()
        return due is not None and due <= self.clock.now_us()
