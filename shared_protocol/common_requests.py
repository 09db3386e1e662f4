"""The requests a technician builds by hand, as bytes, one function per request.

A thin composition of the protocol codecs for the ``encode`` command: read a DI or an OAD,
read the address of the only meter on a line, broadcast the time, read Modbus registers.
Identifiers come in as the text a technician types (``00010000``, ``00100200``).
"""

from __future__ import annotations

from datetime import datetime

from shared_protocol import dlt645, dlt698, modbus
from shared_protocol.errors import LocalProtocolError

__all__ = [
    "read_645",
    "read_698",
    "read_address",
    "read_modbus",
    "read_modbus_model",
    "time_sync_645",
]

_STANDARDS = {
    "dlt645-2007": dlt645.Standard.DLT645_2007,
    "dlt645-1997": dlt645.Standard.DLT645_1997,
}


def _hex_id(text: str, digits: tuple[int, ...], what: str) -> int:
    cleaned = text.strip().replace(" ", "")
    if len(cleaned) not in digits:
        raise LocalProtocolError(
            f"{what} {text!r} must have {' or '.join(map(str, digits))} hex digits"
        )
    try:
        return int(cleaned, 16)
    except ValueError:
        raise LocalProtocolError(f"{what} {text!r} is not hexadecimal") from None


def read_645(address: str, di: str, protocol: str = "dlt645-2007", preamble: int = 4) -> bytes:
    """Read data: 645-2007 C=11H with an 8-digit DI, 645-1997 C=01H with a 4-digit DI."""
    standard = _STANDARDS.get(protocol)
    if standard is None:
        raise LocalProtocolError(f"{protocol!r} is not a DL/T 645 edition")
    width = 8 if standard is dlt645.Standard.DLT645_2007 else 4
    identifier = _hex_id(di, (width,), f"{protocol} DI")
    frame = dlt645.read_request(address, identifier, standard)
    return dlt645.encode_frame(frame, preamble)


def _frame_698(address: dlt698.ServerAddress, apdu: dlt698.Apdu, ca: int, preamble: int) -> bytes:
    frame = dlt698.Frame(dlt698.Control.client_request(), address, ca, dlt698.encode_apdu(apdu))
    return dlt698.encode_frame(frame, preamble)


def read_698(address: str, oad: str, ca: int = 0x10, piid: int = 1, preamble: int = 4) -> bytes:
    """GET-Request-Normal of one OAD to a single (or ``A``-wildcard) address."""
    target = (
        dlt698.ServerAddress.wildcard(address)
        if "A" in address.upper()
        else dlt698.ServerAddress.single(address)
    )
    attribute = dlt698.OAD.parse(oad)
    return _frame_698(target, dlt698.GetRequestNormal(piid, attribute), ca, preamble)


def read_address(protocol: str = "dlt645-2007", preamble: int = 4) -> bytes:
    """Ask the only meter on the line for its address."""
    if protocol == "dlt698.45":
        request = dlt698.GetRequestNormal(1, dlt698.OAD.parse("40010200"))
        return _frame_698(dlt698.ServerAddress.wildcard(), request, 0x10, preamble)
    if protocol != "dlt645-2007":
        raise LocalProtocolError(
            f"read-address is defined for dlt645-2007 and dlt698.45, not {protocol}"
        )
    return dlt645.encode_frame(dlt645.read_address_request(), preamble)


def time_sync_645(moment: datetime, preamble: int = 4) -> bytes:
    """Broadcast time sync (C=08H to 99…99) to the meters' local wall time ``moment``."""
    return dlt645.encode_frame(dlt645.time_sync_request(moment), preamble)


def read_modbus(unit_id: int, function_code: int, start: int, count: int) -> bytes:
    """A 03/04 register read."""
    return modbus.build_read_request(unit_id, function_code, start, count).raw


def read_modbus_model(unit_id: int, model: str) -> bytes:
    """The first planned block read of a known meter model's register map."""
    block = modbus.plan_reads(modbus.meter_map(model))[0]
    return read_modbus(unit_id, block.function_code, block.address, block.count)
