"""Which frame on the line is the reply to our request: one matcher per protocol family.

A reply is accepted only when it decodes, is a response, comes from the meter we asked
and answers what we asked (645: the same function and DI; 698: the same PIID; Modbus: the
same function and register count). A response from another address is *wrong-address*:
counted, and the master keeps listening until the deadline, so a reply is never
attributed to the wrong meter. A response from the right meter to something else (a late
reply to an earlier request) is *stale*: counted and ignored the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from shared_protocol import dlt645, dlt698, modbus
from shared_protocol.errors import ProtocolError

__all__ = [
    "Dlt645Match",
    "Dlt698Match",
    "ListenOnly",
    "Match",
    "ModbusMatch",
    "Outcome",
    "ReplyMatcher",
    "Verdict",
    "new_parser",
]

LINE_FAMILIES: Final = ("dlt645", "dlt698.45", "modbus-rtu")


class Outcome(StrEnum):
    """How a transaction ended."""

    OK = "ok"
    TIMEOUT = "timeout"
    ABNORMAL = "abnormal"  # 645 abnormal reply (error bits in ``detail``)
    DAR = "dar"  # 698 data access result other than success
    EXCEPTION = "exception"  # Modbus exception code
    BAD_FRAME = "bad_frame"  # only garbled / bad-checksum bytes came back
    QUARANTINED = "quarantined"  # the meter is quarantined and not due for a probe
    IO_ERROR = "io_error"  # the port failed; it is being reopened
    SENT = "sent"  # a broadcast: nothing is expected back
    CANCELLED = "cancelled"


class Verdict(StrEnum):
    REPLY = "reply"
    WRONG_ADDRESS = "wrong_address"
    STALE = "stale"  # from our meter, but not an answer to this request
    IGNORE = "ignore"  # not a response at all (an echo, another master's request)


@dataclass(frozen=True)
class Match:
    verdict: Verdict
    outcome: Outcome = Outcome.OK
    detail: str = ""
    code: int | None = None  # error bits / DAR / exception code
    reply: object = None  # the decoded reply: 645 Frame, 698 Apdu, Modbus Frame
    address: str = ""  # the address the reply came from


class ReplyMatcher(Protocol):
    """Decides what a frame from the line means for the transaction waiting on it."""

    @property
    def family(self) -> str: ...

    def classify(self, frame: object) -> Match: ...


def new_parser(family: str) -> dlt645.StreamParser | dlt698.StreamParser | modbus.StreamParser:
    """A master-side (reply-reading) stream parser for a line family."""
    if family == "dlt645":
        return dlt645.StreamParser()
    if family == "dlt698.45":
        return dlt698.StreamParser()
    if family == "modbus-rtu":
        return modbus.StreamParser(modbus.Direction.RESPONSE)
    raise ValueError(f"unknown line family {family!r}; use one of {', '.join(LINE_FAMILIES)}")


def _nibbles_match(pattern: str, address: str) -> bool:
    """645/698 wildcard: an A nibble in what we sent matches any digit in the reply."""
    if pattern == address:
        return True
    return len(pattern) == len(address) and all(
        p in ("A", a) for p, a in zip(pattern, address, strict=True)
    )


_IGNORE: Final = Match(Verdict.IGNORE)


@dataclass(frozen=True)
class Dlt645Match:
    """A 645 reply: from ``address`` (A nibbles = any), to ``function``, for ``di``."""

    address: str
    function: int
    di: int | None = None
    standard: dlt645.Standard = dlt645.Standard.DLT645_2007
    family: str = "dlt645"

    def classify(self, frame: object) -> Match:
        if not isinstance(frame, dlt645.Frame) or not frame.control.response:
            return _IGNORE
        if not _nibbles_match(self.address, frame.address):
            return Match(Verdict.WRONG_ADDRESS, address=frame.address)
        control = frame.control
        if control.function != self.function:
            return Match(Verdict.STALE, address=frame.address)
        if control.abnormal:
            bits = frame.data[0] if frame.data else 0
            names = ", ".join(dlt645.error_bit_names(bits, self.standard)) or "no bits set"
            return Match(Verdict.REPLY, Outcome.ABNORMAL, names, bits, frame, address=frame.address)
        if self.di is not None:
            size = 4 if self.standard is dlt645.Standard.DLT645_2007 else 2
            if len(frame.data) < size or int.from_bytes(frame.data[:size], "little") != self.di:
                return Match(Verdict.STALE, address=frame.address)
        return Match(Verdict.REPLY, Outcome.OK, reply=frame, address=frame.address)


@dataclass(frozen=True)
class Dlt698Match:
    """A 698 server reply from ``address`` with our ``piid``.

    ``address`` is the digits as the meter sends them (even length, e.g. ``000000000105``);
    A nibbles match any digit, all A matches any meter (a wildcard read).
    """

    address: str
    piid: int | None
    family: str = "dlt698.45"

    def classify(self, frame: object) -> Match:
        if not isinstance(frame, dlt698.Frame) or not frame.control.from_server:
            return _IGNORE
        digits = frame.address.digits
        pattern = self.address
        if set(pattern) != {"A"} and not _nibbles_match(pattern, digits):
            return Match(Verdict.WRONG_ADDRESS, address=digits)
        try:
            apdu = dlt698.decode_apdu(frame.apdu)
        except ProtocolError as exc:
            return Match(Verdict.REPLY, Outcome.BAD_FRAME, str(exc), address=digits)
        piid = getattr(apdu, "piid", None)
        if self.piid is not None and piid is not None and piid & 0x3F != self.piid & 0x3F:
            return Match(Verdict.STALE, address=digits)
        dar = _dar_of(apdu)
        if dar is not None:
            return Match(
                Verdict.REPLY, Outcome.DAR, dlt698.dar_name(dar), dar, apdu, address=digits
            )
        return Match(Verdict.REPLY, Outcome.OK, reply=apdu, address=digits)


def _dar_of(apdu: object) -> int | None:
    """The DAR when the reply carries nothing but a refusal; None when there is data."""
    if isinstance(apdu, dlt698.GetResponseNormal):
        return apdu.result.dar
    if isinstance(apdu, dlt698.GetResponseNormalList):
        dars = [r.dar for r in apdu.results]
        return dars[0] if dars and all(d is not None for d in dars) else None
    if isinstance(apdu, dlt698.GetResponseRecord):
        return apdu.result.dar
    if isinstance(apdu, dlt698.SetResponseNormal | dlt698.ActionResponseNormal):
        return apdu.dar if apdu.dar != 0 else None
    if isinstance(apdu, dlt698.ErrorResponse):
        return 255
    return None


@dataclass(frozen=True)
class ModbusMatch:
    """A Modbus reply from ``unit_id`` to ``function_code`` with ``count`` registers."""

    unit_id: int
    function_code: int
    count: int | None = None
    family: str = "modbus-rtu"

    def classify(self, frame: object) -> Match:
        if not isinstance(frame, modbus.Frame):
            return _IGNORE
        address = str(frame.unit_id)
        if frame.unit_id != self.unit_id:
            return Match(Verdict.WRONG_ADDRESS, address=address)
        if frame.function_code & 0x7F != self.function_code:
            return Match(Verdict.STALE, address=address)
        if frame.exception_code is not None:
            code = frame.exception_code
            meanings = modbus.EXCEPTION_MEANINGS
            name = next((text for key, text in meanings.items() if key == code), f"code {code}")
            return Match(Verdict.REPLY, Outcome.EXCEPTION, str(name), code, frame, address)
        if self.count is not None and len(frame.registers) != self.count:
            return Match(Verdict.STALE, address=address)
        return Match(Verdict.REPLY, Outcome.OK, reply=frame, address=address)


@dataclass(frozen=True)
class ListenOnly:
    """Accepts nothing: the transaction listens until its deadline (echo detection)."""

    family: str

    def classify(self, frame: object) -> Match:
        return _IGNORE
