"""The technician's view of one captured Modbus RTU frame, as a JSON-ready dict.

One job: implement the contract of :mod:`shared_protocol.explain` for ``modbus-rtu``.
Besides the shared keys it adds ``unit_id``, ``function_code``, ``start_address``,
``count``, ``registers`` (hex words), ``exception``/``exception_code``/
``exception_meaning``, ``crc`` and, when the bytes are not a valid frame, ``crc_expected``.

A pasted frame carries no direction, so it is guessed: an exception (function | 0x80) is a
response; an 8-byte 03/04 frame is a request (a response has an odd length, 5 + 2n); a
function-16 frame of 8 bytes is a response; 06 requests and responses are identical (the
meter echoes), reported as a request with a ``note``.

``values`` stays empty unless the caller names the meter model and the read's start
address (``--model sdm630 --start 0x0000``): a response does not repeat which registers
were asked for. For a request the start comes from the frame itself.
"""

from __future__ import annotations

from typing import Any

from shared_protocol.errors import ProtocolError
from shared_protocol.modbus.framing import (
    EXCEPTION_MEANINGS,
    FUNCTION_NAMES,
    Direction,
    ExceptionCode,
    Frame,
    crc16,
    decode_frame,
)
from shared_protocol.modbus.registers import RegisterType, meter_map
from shared_protocol.modbus.values import decode_registers
from shared_protocol.quantities import quantity

__all__ = ["explain"]

Explanation = dict[str, Any]


def _guess_directions(raw: bytes) -> tuple[Direction, ...]:
    if len(raw) < 2:
        return (Direction.RESPONSE,)
    function_code = raw[1]
    if function_code & 0x80:
        return (Direction.RESPONSE,)
    if function_code in (0x03, 0x04, 0x06):
        first = Direction.REQUEST if len(raw) == 8 else Direction.RESPONSE
    elif function_code == 0x10:
        first = Direction.RESPONSE if len(raw) == 8 else Direction.REQUEST
    else:
        first = Direction.REQUEST
    second = Direction.RESPONSE if first is Direction.REQUEST else Direction.REQUEST
    return (first, second)


def explain(raw: bytes, meter_model: str | None = None, start: int | None = None) -> Explanation:
    """Explain ``raw`` as one Modbus RTU frame; never raises for any bytes.

    ``meter_model`` (e.g. ``"sdm630"``) and ``start`` (the register address the read
    began at) turn a read response's registers into named ``values``. An unknown model is
    a caller's mistake and raises :class:`~shared_protocol.errors.LocalProtocolError`.
    """
    raw = bytes(raw)
    register_map = None if meter_model is None else meter_map(meter_model)
    result: Explanation = {
        "protocol": "modbus-rtu",
        "valid": False,
        "error": None,
        "address": str(raw[0]) if raw else None,
        "control": f"{raw[1]:02X}" if len(raw) > 1 else None,
        "direction": None,
        "function": _function_name(raw[1]) if len(raw) > 1 else None,
        "values": [],
        "unit_id": raw[0] if raw else None,
        "function_code": raw[1] if len(raw) > 1 else None,
        "crc": raw[-2:].hex().upper() if len(raw) >= 4 else None,
    }
    directions = _guess_directions(raw)
    first_error: ProtocolError | None = None
    frame: Frame | None = None
    for direction in directions:
        try:
            frame = decode_frame(raw, direction)
            break
        except ProtocolError as exc:
            first_error = first_error or exc
    if frame is None:
        result["direction"] = directions[0].value
        result["error"] = _actionable(first_error)
        if len(raw) >= 4:
            result["crc_expected"] = crc16(raw[:-2]).hex().upper()
        return result
    result["valid"] = True
    result["direction"] = frame.direction.value
    result.update(_frame_details(frame))
    if register_map is not None:
        _add_values(result, frame, register_map.model, start)
    return result


def _function_name(function_code: int) -> str:
    name = FUNCTION_NAMES.get(function_code & 0x7F, f"function 0x{function_code & 0x7F:02X}")
    return f"exception to {name}" if function_code & 0x80 else name


def _actionable(error: ProtocolError | None) -> str:
    if error is None:
        return "not a Modbus RTU frame"
    return str(error)


def _frame_details(frame: Frame) -> Explanation:
    details: Explanation = {}
    if frame.address is not None:
        details["start_address"] = f"0x{frame.address:04X}"
        details["count"] = frame.count
    if frame.registers:
        details["registers"] = [f"0x{word:04X}" for word in frame.registers]
    if frame.exception_code is not None:
        details["exception_code"] = frame.exception_code
        details["exception"] = frame.exception_name
        try:
            details["exception_meaning"] = EXCEPTION_MEANINGS[ExceptionCode(frame.exception_code)]
        except ValueError:
            details["exception_meaning"] = "an exception code the Modbus standard does not define"
    if frame.function_code == 0x06:
        details["note"] = "a write-single-register response echoes the request byte for byte"
    return details


def _add_values(result: Explanation, frame: Frame, model: str, start: int | None) -> None:
    register_map = meter_map(model)
    result["meter_model"] = model
    if frame.direction is not Direction.RESPONSE or frame.is_exception:
        return
    if frame.function_code not in (0x03, 0x04):
        return
    if start is None:
        result["values_note"] = "give the read's start address to name the registers"
        return
    register_type = RegisterType.HOLDING if frame.function_code == 0x03 else RegisterType.INPUT
    if register_type not in {e.register_type for e in register_map.entries}:
        result["values_note"] = (
            f"{model} keeps its values in {register_map.entries[0].register_type.value} "
            f"registers, this is a {frame.function.name.lower()} response"
        )
        register_type = register_map.entries[0].register_type
    try:
        values = decode_registers(register_map, start, frame.registers, register_type)
    except ProtocolError as exc:
        result["values_error"] = str(exc)
        return
    result["values"] = [
        {
            "quantity": quantity(value.obis).name,
            "obis": value.obis,
            "value": str(value.value),
            "unit": value.unit,
        }
        for value in values
    ]
