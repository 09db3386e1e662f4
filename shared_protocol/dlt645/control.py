"""What the function code, error byte, baud feature byte and 1C command byte mean (tables).

Everything here is data: one row per code, for DL/T 645-2007 and DL/T 645-1997. Sources are
cited in /work/shared/reference/protocols.md §1a; rows marked [U] are not confirmed against
the standard text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final

from shared_protocol.errors import LocalProtocolError, MalformedFrameError

__all__ = [
    "BAUD_FEATURES",
    "ERROR_BITS",
    "FUNCTIONS",
    "Function",
    "RemoteCommand",
    "Standard",
    "baud_from_feature",
    "baud_to_feature",
    "error_bit_names",
    "function_spec",
]


class Standard(Enum):
    """Which edition of DL/T 645 a frame follows; they share the frame but not the codes."""

    DLT645_2007 = "2007"
    DLT645_1997 = "1997"

    @property
    def protocol(self) -> str:
        return f"dlt645-{self.value}"


@dataclass(frozen=True)
class Function:
    """One function code: its name and the request data layout (before +33H)."""

    code: int
    name: str
    request_layout: str
    answered: bool = True  # broadcast time sync is never answered


_FUNCTIONS_2007: Final = (
    Function(0x03, "security authentication", "DI + ESAM data, carried opaquely [U]"),
    Function(0x08, "broadcast time sync", "ss mm hh DD MM YY (address 99…99)", answered=False),
    Function(0x11, "read data", "DI (L=04); DI + N (L=05) or DI + N + mmhhDDMMYY (L=0A) [U]"),
    Function(0x12, "read follow-up data", "DI + SEQ (L=05)"),
    Function(0x13, "read comm address", "none (address AA…AA)"),
    Function(0x14, "write data", "DI + PA P0 P1 P2 + C0..C3 + data"),
    Function(0x15, "write comm address", "A0..A5 (address AA…AA)"),
    Function(0x16, "freeze", "mm hh DD MM (99 = every)"),
    Function(0x17, "change baud rate", "Z feature byte"),
    Function(0x18, "change password", "DI 04000C01..0A + old PA..P2 + new PA..P2"),
    Function(0x19, "max demand reset", "PA..P2 + C0..C3 [U]"),
    Function(0x1A, "meter clear", "PA..P2 + C0..C3 [U]"),
    Function(0x1B, "event clear", "PA..P2 + C0..C3 + DI (FFFFFFFF = all) [U]"),
    Function(0x1C, "remote control (trip/close/alarm/keep power)", "PA..P2 + C0..C3 + N1..N8"),
)

# WKJay/DLT645 inc/dlt645_1997_private.h:6-15
_FUNCTIONS_1997: Final = (
    Function(0x01, "read data", "DI (2 bytes)"),
    Function(0x02, "read follow-up data", "DI (2 bytes)"),
    Function(0x03, "re-read data", "none"),
    Function(0x04, "write data", "DI + PA P0 P1 P2 + data [U]"),
    Function(0x08, "broadcast time sync", "ss mm hh DD MM YY (address 99…99)", answered=False),
    Function(0x0A, "write comm address", "A0..A5"),
    Function(0x0C, "change baud rate", "Z feature byte"),
    Function(0x0F, "change password", "old PA..P2 + new PA..P2 [U]"),
    Function(0x10, "max demand reset", "none [U]"),
)

FUNCTIONS: Final[dict[Standard, dict[int, Function]]] = {
    Standard.DLT645_2007: {f.code: f for f in _FUNCTIONS_2007},
    Standard.DLT645_1997: {f.code: f for f in _FUNCTIONS_1997},
}


def function_spec(code: int, standard: Standard) -> Function | None:
    return FUNCTIONS[standard].get(code)


# Abnormal-reply error byte, bit 0 first (WKJay/DLT645 inc/dlt645_2007_private.h:22-28).
_ERROR_BITS_2007: Final = (
    "other error",
    "no requested data",
    "password error or unauthorised",
    "baud rate cannot be changed",
    "year time-zone count exceeded",
    "daily time-period count exceeded",
    "tariff count exceeded",
    "reserved bit 7",
)
# [U] bit0-2 from the 1997 text as quoted by KTS-Intek's logs; bit3 unnamed there; bits 4-6
# as in 2007.
_ERROR_BITS_1997: Final = (
    "illegal data",
    "DI error",
    "password error",
    "reserved bit 3",
    "year time-zone count exceeded",
    "daily time-period count exceeded",
    "tariff count exceeded",
    "reserved bit 7",
)
ERROR_BITS: Final[dict[Standard, tuple[str, ...]]] = {
    Standard.DLT645_2007: _ERROR_BITS_2007,
    Standard.DLT645_1997: _ERROR_BITS_1997,
}


def error_bit_names(error_byte: int, standard: Standard) -> list[str]:
    """Names of the bits set in an abnormal reply's error byte (already −33H)."""
    names = ERROR_BITS[standard]
    return [names[bit] for bit in range(8) if error_byte & (1 << bit)]


# Z feature byte for C=17H: one bit per speed (xgbt/dlt645-go client2007.go:22-27;
# Saotomych/qgdw dlt_frame.h:46-51). Not BCD of baud/300 as peer `dlt645` sends (bug B6).
BAUD_FEATURES: Final[dict[int, int]] = {
    600: 0x02,
    1200: 0x04,
    2400: 0x08,
    4800: 0x10,
    9600: 0x20,
    19200: 0x40,
}
_BAUD_BY_FEATURE: Final = {z: baud for baud, z in BAUD_FEATURES.items()}


def baud_to_feature(baud: int) -> int:
    try:
        return BAUD_FEATURES[baud]
    except KeyError:
        choices = ", ".join(str(b) for b in BAUD_FEATURES)
        raise LocalProtocolError(f"{baud} bps has no feature byte; choose {choices}") from None


def baud_from_feature(feature: int) -> int:
    """Speed for a Z byte (already −33H); a byte that is not one single flag is refused."""
    baud = _BAUD_BY_FEATURE.get(feature)
    if baud is None:
        hint = ""
        raw = (feature + 0x33) & 0xFF
        if raw in _BAUD_BY_FEATURE:
            hint = (
                f"; the byte on the wire was {raw:02X}, which is the {_BAUD_BY_FEATURE[raw]} bps"
                " flag sent without the +33H offset"
            )
        flags = ", ".join(f"{z:02X}={b}" for b, z in BAUD_FEATURES.items())
        raise MalformedFrameError(
            f"baud-rate feature byte is {feature:02X} after removing +33H, which is not one"
            f" of the single-bit flags {flags}{hint}"
        )
    return baud


class RemoteCommand(IntEnum):
    """N1 of the C=1CH plaintext (Chint DDSY666 AppDLT645.c:2025-2080)."""

    TRIP = 0x1A
    CLOSE_ALLOWED = 0x1B  # [U] standard value, not implemented by the meter we read
    CLOSE_DIRECTLY = 0x1C
    ALARM = 0x2A  # [U]
    ALARM_RELEASE = 0x2B  # [U]
    KEEP_POWER_ON = 0x3A
    KEEP_POWER_OFF = 0x3B


# Password level PA that marks N1..N8 as ESAM ciphertext (State Grid smart meters).
ENCRYPTED_PASSWORD_LEVEL: Final = 0x98
