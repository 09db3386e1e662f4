"""Register words → :class:`~shared_protocol.quantities.MeterValue` with ``Decimal`` values.

One job: read the words a map entry names and give back the number in the vocabulary's
unit, never as a float.

float32 → Decimal: the float32 is read bit-exactly (``struct``), then written as the
*shortest* decimal string that maps back to the same 32 bits (tried at 1 to 9 significant
digits; 9 always round-trips). So 0x43663333 gives ``230.2``, not the
``230.1999969482422`` that ``repr`` of the widened double would give, and no digit is
invented beyond what the meter's float32 can hold. The result is then multiplied by the
entry's exact ``Decimal`` scale (``0.001`` for W → kW), which adds no rounding.
NaN and infinity (some meters send them for "no value") are refused with
:class:`~shared_protocol.errors.MalformedFrameError` naming the register.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from decimal import Decimal

from shared_protocol.errors import LocalProtocolError, MalformedFrameError
from shared_protocol.modbus.registers import (
    DataType,
    RegisterEntry,
    RegisterMap,
    RegisterType,
    WordOrder,
)
from shared_protocol.quantities import MeterValue

__all__ = [
    "decode_registers",
    "decode_value",
    "encode_value",
    "float32_to_decimal",
]

_STRUCT = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.FLOAT32: ">f",
}


def float32_to_decimal(raw: bytes) -> Decimal:
    """The shortest decimal that is exactly this big-endian float32; refuses NaN/inf."""
    (value,) = struct.unpack(">f", raw)
    if not math.isfinite(value):
        raise MalformedFrameError(f"float32 {raw.hex().upper()} is NaN or infinity, not a number")
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        try:
            if struct.pack(">f", float(text)) == raw:
                break
        except OverflowError:  # rounded up past the largest float32; try more digits
            continue
    number = Decimal(text)
    # "5e+01" is the shortest text for 50.0; write whole numbers without an exponent.
    exponent = number.as_tuple().exponent
    return Decimal(int(number)) if isinstance(exponent, int) and exponent > 0 else number


def _bytes(entry: RegisterEntry, words: Sequence[int]) -> bytes:
    if len(words) != entry.words:
        raise LocalProtocolError(
            f"{entry.data_type.value} needs {entry.words} words, got {len(words)}"
        )
    ordered = list(words) if entry.word_order is WordOrder.BIG else list(reversed(words))
    return b"".join(word.to_bytes(2, "big") for word in ordered)


def decode_value(entry: RegisterEntry, words: Sequence[int]) -> Decimal:
    """The value of ``entry`` from its register words, in the vocabulary's unit."""
    raw = _bytes(entry, words)
    if entry.data_type is DataType.FLOAT32:
        number = float32_to_decimal(raw)
    else:
        (integer,) = struct.unpack(_STRUCT[entry.data_type], raw)
        number = Decimal(int(integer))
    return number * entry.scale


def encode_value(entry: RegisterEntry, value: Decimal) -> tuple[int, ...]:
    """Register words a meter would send for ``value`` (for simulators and tests)."""
    device_number = value / entry.scale
    if entry.data_type is DataType.FLOAT32:
        raw = struct.pack(">f", float(device_number))
    else:
        if device_number != device_number.to_integral_value():
            raise LocalProtocolError(f"{value} is not a whole number of {entry.scale}")
        try:
            raw = struct.pack(_STRUCT[entry.data_type], int(device_number))
        except struct.error as exc:
            raise LocalProtocolError(f"{value} does not fit {entry.data_type.value}") from exc
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if entry.word_order is WordOrder.LITTLE:
        words.reverse()
    return tuple(words)


def decode_registers(
    register_map: RegisterMap,
    start: int,
    registers: Sequence[int],
    register_type: RegisterType | None = None,
) -> list[MeterValue]:
    """Every map entry wholly inside ``registers`` (read from ``start``), in address order.

    ``register_type`` picks the table when a map has both (default: the one the map's
    entries use). Words outside any entry are ignored; an entry cut off by the end of the
    block is skipped, because its other words were not read.
    """
    types = {e.register_type for e in register_map.entries}
    if register_type is None:
        if len(types) != 1:
            raise LocalProtocolError(f"{register_map.model} mixes register types; name one")
        register_type = next(iter(types))
    end = start + len(registers)
    values: list[MeterValue] = []
    for entry in sorted(register_map.entries, key=lambda e: e.address):
        if entry.register_type is not register_type:
            continue
        if entry.address < start or entry.end > end:
            continue
        offset = entry.address - start
        words = registers[offset : offset + entry.words]
        try:
            number = decode_value(entry, words)
        except MalformedFrameError as exc:
            raise MalformedFrameError(
                f"{register_map.model} register 0x{entry.address:04X} ({entry.obis}): {exc}"
            ) from exc
        values.append(MeterValue(entry.obis, number, entry.unit))
    return values
