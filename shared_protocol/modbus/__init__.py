"""Modbus RTU for energy meters, sans I/O: frames, register maps, values, stream parser.

One job: everything the edge agent and the simulator need to speak Modbus RTU to a meter
without touching a serial port. pymodbus encodes the PDUs and the CRC; we keep the frame
rules strict, the register maps as data and every number a ``Decimal``.

- :mod:`~shared_protocol.modbus.framing`: :class:`Frame` events, ``build_*`` and
  :func:`decode_frame` for function codes 03, 04, 06, 16 and their exceptions.
- :mod:`~shared_protocol.modbus.registers`: :data:`METER_MAPS` (Eastron SDM120/SDM630,
  CHINT DDSU666/DTSU666) and :func:`plan_reads`.
- :mod:`~shared_protocol.modbus.values`: :func:`decode_registers` → ``MeterValue``.
- :mod:`~shared_protocol.modbus.stream`: :class:`StreamParser`.
- :mod:`~shared_protocol.modbus.explain`: :func:`explain` for the technician decoder.

Errors are :mod:`shared_protocol.errors` only; pymodbus' own exceptions never escape.
"""

from shared_protocol.modbus.explain import explain
from shared_protocol.modbus.framing import (
    EXCEPTION_MEANINGS,
    FUNCTION_NAMES,
    MAX_ADU_SIZE,
    MAX_READ_COUNT,
    MAX_WRITE_COUNT,
    Direction,
    ExceptionCode,
    Frame,
    FunctionCode,
    build_exception_response,
    build_read_request,
    build_read_response,
    build_write_multiple_request,
    build_write_multiple_response,
    build_write_single_request,
    build_write_single_response,
    crc16,
    decode_frame,
    expected_length,
)
from shared_protocol.modbus.registers import (
    METER_MAPS,
    DataType,
    ReadBlock,
    RegisterEntry,
    RegisterMap,
    RegisterType,
    WordOrder,
    markdown_table,
    meter_map,
    plan_reads,
)
from shared_protocol.modbus.stream import StreamParser
from shared_protocol.modbus.values import (
    decode_registers,
    decode_value,
    encode_value,
    float32_to_decimal,
)

__all__ = [
    "EXCEPTION_MEANINGS",
    "FUNCTION_NAMES",
    "MAX_ADU_SIZE",
    "MAX_READ_COUNT",
    "MAX_WRITE_COUNT",
    "METER_MAPS",
    "DataType",
    "Direction",
    "ExceptionCode",
    "Frame",
    "FunctionCode",
    "ReadBlock",
    "RegisterEntry",
    "RegisterMap",
    "RegisterType",
    "StreamParser",
    "WordOrder",
    "build_exception_response",
    "build_read_request",
    "build_read_response",
    "build_write_multiple_request",
    "build_write_multiple_response",
    "build_write_single_request",
    "build_write_single_response",
    "crc16",
    "decode_frame",
    "decode_registers",
    "decode_value",
    "encode_value",
    "expected_length",
    "explain",
    "float32_to_decimal",
    "markdown_table",
    "meter_map",
    "plan_reads",
]
