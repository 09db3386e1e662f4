"""What a technician sees when they paste a captured frame: one JSON-ready dict.

Each protocol package provides ``explain(raw: bytes) -> dict``; this module picks the
protocol (``auto`` tries them in the order a real bus makes likely) and normalises input
hex. The dict contract, shared by all protocols:

``protocol``   ``dlt645-2007`` | ``dlt645-1997`` | ``dlt698.45`` | ``modbus-rtu``
``valid``      structure and checksum/CRC are right
``error``      why not, in words a technician can act on (``None`` when valid)
``address``    the meter address as printed on the nameplate, most significant digit
               first (wildcard/broadcast as the raw digits); Modbus: the unit id
``control``    two hex digits (Modbus: the function code)
``direction``  ``request`` | ``response``
``function``   a readable name of what the frame asks or answers
``values``     list of ``{"quantity", "obis", "value", "unit"}``; value is a decimal
               string (lists of them, and of OBIS codes, for blocks)

Protocols add their own keys (645: ``di``, ``abnormal``, ``error_code``, ``error_bits``;
698: ``apdu``). Every value in the dict is JSON-serialisable. ``explain`` never raises for
any bytes: a frame it cannot accept is reported with ``valid: false``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from shared_protocol.errors import LocalProtocolError

__all__ = ["PROTOCOLS", "explain", "parse_hex"]

Explanation = dict[str, Any]

PROTOCOLS = ("auto", "dlt645-2007", "dlt645-1997", "dlt698.45", "modbus-rtu")

_HEX_NOISE = re.compile(r"[\s:,\-]|0x", re.IGNORECASE)


def parse_hex(text: str) -> bytes:
    """Bytes from hex as technicians paste it: spaces, colons, commas or ``0x`` allowed."""
    cleaned = _HEX_NOISE.sub("", text)
    if not cleaned:
        raise LocalProtocolError("no hex digits given; paste a frame like '68 AA AA … 16'")
    if len(cleaned) % 2:
        raise LocalProtocolError(
            f"odd number of hex digits ({len(cleaned)}); a byte is two digits, check the paste"
        )
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        bad = next(ch for ch in cleaned if ch not in "0123456789abcdefABCDEF")
        raise LocalProtocolError(f"{bad!r} is not a hex digit") from None


def _explainers() -> dict[str, Callable[[bytes], Explanation]]:
    from shared_protocol.dlt645.explain import explain as explain_645
    from shared_protocol.dlt698.explain import explain as explain_698
    from shared_protocol.modbus.explain import explain as explain_modbus

    return {
        "dlt645-2007": lambda raw: explain_645(raw, standard="2007"),
        "dlt645-1997": lambda raw: explain_645(raw, standard="1997"),
        "dlt645": lambda raw: explain_645(raw, standard=None),
        "dlt698.45": explain_698,
        "modbus-rtu": explain_modbus,
    }


def _body(raw: bytes) -> bytes:
    return raw.lstrip(b"\xfe")


def explain(
    raw: bytes,
    protocol: str = "auto",
    *,
    modbus_model: str | None = None,
    modbus_start: int | None = None,
) -> Explanation:
    """Decode ``raw`` as ``protocol`` (or guess it) into the dict described above.

    Modbus frames carry no register addresses in their replies, so values come out only
    when the caller names the meter model and the first register that was read.
    """
    if protocol not in PROTOCOLS:
        raise LocalProtocolError(
            f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}"
        )
    explainers = _explainers()
    if modbus_model is not None or modbus_start is not None:
        if protocol not in ("auto", "modbus-rtu"):
            raise LocalProtocolError("a Modbus model or start register goes with modbus-rtu")
        from shared_protocol.modbus.explain import explain as explain_modbus

        return explain_modbus(raw, meter_model=modbus_model, start=modbus_start)
    if protocol != "auto":
        return explainers[protocol](raw)
    # Candidates in order of structural likelihood; the first valid reading wins, and when
    # none is valid the most likely one reports why.
    body = _body(raw)
    candidates: list[str] = []
    if len(body) >= 8 and body[0] == 0x68 and body[7] == 0x68:
        candidates.append("dlt645")
    if body[:1] == b"\x68":
        candidates.append("dlt698.45")
    candidates.append("modbus-rtu")
    for name in ("dlt645", "dlt698.45"):
        if name not in candidates:
            candidates.append(name)
    first: Explanation | None = None
    for name in candidates:
        result = explainers[name](raw)
        if result.get("valid"):
            return result
        if first is None:
            first = result
    assert first is not None
    return first
