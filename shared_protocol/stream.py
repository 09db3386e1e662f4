"""Events shared by every protocol's stream parser.

A stream parser is fed bytes in any chunking (``receive_data``) and handed back events
(``next_event``): a decoded frame, a :class:`Discarded` run of bytes it had to skip, or
:data:`NEED_DATA`. It never raises for what the line sends: noise, a corrupted frame or a
truncated one become ``Discarded`` events (with the reason) so the bus master can count
them, and the parser resynchronises on the next start byte. Only a caller's misuse (feeding
after ``close``) raises :class:`~shared_protocol.errors.LocalProtocolError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

__all__ = ["NEED_DATA", "Discarded", "NeedData"]


class NeedData(Enum):
    """The parser needs more bytes before it can produce another event."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


@dataclass(frozen=True)
class Discarded:
    """Bytes the parser skipped: line noise, a preamble it did not need, a bad frame."""

    data: bytes
    reason: str
