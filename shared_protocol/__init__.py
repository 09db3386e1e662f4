"""meter2cash protocol core: DL/T 645-2007/1997, DL/T 698.45 and Modbus RTU, sans I/O.

Codecs take and return bytes and small frozen event objects; they never touch a serial
port, a socket or a clock. Every error they raise is a :class:`ProtocolError` subclass
(see :mod:`shared_protocol.errors`). Meter data is named in one canonical vocabulary
(:mod:`shared_protocol.quantities`), so code above the codecs never deals in DIs or OADs.

Subpackages: ``dlt645``, ``dlt698``, ``modbus``. Technician decoder:
``python -m shared_protocol decode 'FE FE 68 …'``.
"""

from shared_protocol.errors import (
    ChecksumError,
    FrameTooLargeError,
    LocalProtocolError,
    MalformedFrameError,
    ProtocolError,
    RemoteProtocolError,
    UnsupportedError,
)
from shared_protocol.quantities import QUANTITIES, MeterValue, Quantity, quantity
from shared_protocol.stream import NEED_DATA, Discarded

__version__ = "0.1.0"

__all__ = [
    "NEED_DATA",
    "QUANTITIES",
    "ChecksumError",
    "Discarded",
    "FrameTooLargeError",
    "LocalProtocolError",
    "MalformedFrameError",
    "MeterValue",
    "ProtocolError",
    "Quantity",
    "RemoteProtocolError",
    "UnsupportedError",
    "__version__",
    "quantity",
]
