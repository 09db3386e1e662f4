"""Modbus RTU frames as bytes ⇄ :class:`Frame` events, with pymodbus doing the PDU work.

One job: turn one complete RTU ADU (unit id, function code, data, CRC-16) into a validated,
frozen :class:`Frame`, and build the ADUs the edge agent sends. Supported function codes
are 03/04 (read holding/input registers), 06 (write single register) and 16 (write multiple
registers), plus their exception responses (function code | 0x80).

pymodbus 3.16 encodes and decodes the PDUs (``pymodbus.pdu.register_message``) and computes
the CRC (``FramerRTU.compute_CRC``); we add what it leaves out: frame lengths that agree
with byte counts, register counts inside the protocol's limits, and unit ids inside
0..247. pymodbus' exceptions (``ModbusException``, ``ValueError``, ``struct.error`` …) are
translated to :mod:`shared_protocol.errors` in exactly one place, :func:`_pymodbus_boundary`.
We do not use ``DecodePDU.decode``: it logs and returns ``None`` on bad input, and a codec
here neither logs nor hides a bad frame.

pymodbus is imported on first use (:func:`_pymodbus`), not when this module loads: it pulls
in asyncio and ssl (about 8 MB of RSS), which an edge agent with no Modbus meter never
needs, and ``import shared_protocol.modbus`` stays cheap.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from types import ModuleType

    from pymodbus.exceptions import ModbusException
    from pymodbus.framer.rtu import FramerRTU
    from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU

from shared_protocol.errors import (
    ChecksumError,
    FrameTooLargeError,
    LocalProtocolError,
    MalformedFrameError,
    UnsupportedError,
)

__all__ = [
    "EXCEPTION_MEANINGS",
    "FUNCTION_NAMES",
    "MAX_ADU_SIZE",
    "MAX_READ_COUNT",
    "MAX_WRITE_COUNT",
    "Direction",
    "ExceptionCode",
    "Frame",
    "FunctionCode",
    "build_exception_response",
    "build_read_request",
    "build_read_response",
    "build_write_multiple_request",
    "build_write_multiple_response",
    "build_write_single_request",
    "build_write_single_response",
    "crc16",
    "decode_frame",
    "expected_length",
]

# Modbus over Serial Line v1.02 §2.5.1: an RTU ADU is at most 256 bytes
# (1 address + 253 PDU + 2 CRC). Nothing longer is ever buffered as one candidate frame.
MAX_ADU_SIZE: Final = 256
# Modbus Application Protocol v1.1b3 §6.3/§6.4: 1..125 registers per read (250 data bytes
# in a response) and §6.12: 1..123 registers per write-multiple request.
MAX_READ_COUNT: Final = 125
MAX_WRITE_COUNT: Final = 123
# Serial line §2.2: 0 is broadcast (requests only), 1..247 are devices, 248..255 reserved.
MAX_UNIT_ID: Final = 247
_MIN_ADU_SIZE: Final = 4  # unit id, function code, CRC


class Direction(StrEnum):
    """Which side of the master/slave exchange a frame belongs to."""

    REQUEST = "request"
    RESPONSE = "response"


class FunctionCode(IntEnum):
    """The register function codes this codec speaks."""

    READ_HOLDING_REGISTERS = 0x03
    READ_INPUT_REGISTERS = 0x04
    WRITE_SINGLE_REGISTER = 0x06
    WRITE_MULTIPLE_REGISTERS = 0x10


FUNCTION_NAMES: Final[dict[int, str]] = {
    FunctionCode.READ_HOLDING_REGISTERS: "read holding registers",
    FunctionCode.READ_INPUT_REGISTERS: "read input registers",
    FunctionCode.WRITE_SINGLE_REGISTER: "write single register",
    FunctionCode.WRITE_MULTIPLE_REGISTERS: "write multiple registers",
}


class ExceptionCode(IntEnum):
    """Exception codes a server returns with function code | 0x80 (MODBUS AP v1.1b3 §7)."""

    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    SERVER_DEVICE_FAILURE = 0x04
    ACKNOWLEDGE = 0x05
    SERVER_DEVICE_BUSY = 0x06
    NEGATIVE_ACKNOWLEDGE = 0x07
    MEMORY_PARITY_ERROR = 0x08
    GATEWAY_PATH_UNAVAILABLE = 0x0A
    GATEWAY_TARGET_FAILED_TO_RESPOND = 0x0B


# What a technician should do about each exception, in the words they see in the CLI.
EXCEPTION_MEANINGS: Final[dict[ExceptionCode, str]] = {
    ExceptionCode.ILLEGAL_FUNCTION: (
        "the meter does not support this function code; check whether its map uses "
        "holding (03) or input (04) registers"
    ),
    ExceptionCode.ILLEGAL_DATA_ADDRESS: (
        "the register range is not in this meter's map; check the meter model, the start "
        "address (0-based, not 30001/40001 numbering) and the count"
    ),
    ExceptionCode.ILLEGAL_DATA_VALUE: "the count or the written value is out of range",
    ExceptionCode.SERVER_DEVICE_FAILURE: "the meter failed on the request; retry, then inspect it",
    ExceptionCode.ACKNOWLEDGE: "the meter accepted a long-running request; poll again later",
    ExceptionCode.SERVER_DEVICE_BUSY: "the meter is busy; retry after a pause",
    ExceptionCode.NEGATIVE_ACKNOWLEDGE: "the meter cannot perform the program function",
    ExceptionCode.MEMORY_PARITY_ERROR: "the meter reports a memory parity error; it needs service",
    ExceptionCode.GATEWAY_PATH_UNAVAILABLE: "the gateway has no path to that unit id",
    ExceptionCode.GATEWAY_TARGET_FAILED_TO_RESPOND: (
        "the gateway got no answer from the meter; check its wiring, baud rate and unit id"
    ),
}


@dataclass(frozen=True)
class _Pymodbus:
    """The pymodbus names this codec uses (see :func:`_pymodbus`)."""

    ModbusException: type[ModbusException]
    FramerRTU: type[FramerRTU]
    DecodePDU: type[DecodePDU]
    ExceptionResponse: type[ExceptionResponse]
    rm: ModuleType  # pymodbus.pdu.register_message


@functools.cache
def _pymodbus() -> _Pymodbus:
    """pymodbus, imported on first use rather than at module load (see the docstring)."""
    from pymodbus.exceptions import ModbusException
    from pymodbus.framer.rtu import FramerRTU
    from pymodbus.pdu import DecodePDU, ExceptionResponse, register_message

    return _Pymodbus(ModbusException, FramerRTU, DecodePDU, ExceptionResponse, register_message)


@functools.cache
def _pdu_classes() -> dict[tuple[int, Direction], type[ModbusPDU]]:
    """The pymodbus PDU class for each (function code, direction): the table that drives
    both the expected frame length (pymodbus' ``rtu_frame_size`` / ``rtu_byte_count_pos``)
    and the PDU decoding. Anything not in it is a function we do not speak."""
    rm = _pymodbus().rm
    return {
        (0x03, Direction.REQUEST): rm.ReadHoldingRegistersRequest,
        (0x04, Direction.REQUEST): rm.ReadInputRegistersRequest,
        (0x06, Direction.REQUEST): rm.WriteSingleRegisterRequest,
        (0x10, Direction.REQUEST): rm.WriteMultipleRegistersRequest,
        (0x03, Direction.RESPONSE): rm.ReadHoldingRegistersResponse,
        (0x04, Direction.RESPONSE): rm.ReadInputRegistersResponse,
        (0x06, Direction.RESPONSE): rm.WriteSingleRegisterResponse,
        (0x10, Direction.RESPONSE): rm.WriteMultipleRegistersResponse,
    }


@contextmanager
def _pymodbus_boundary(what: str) -> Iterator[None]:
    """The one place where pymodbus' exceptions become ours."""
    try:
        yield
    except (_pymodbus().ModbusException, ValueError, IndexError, struct.error, TypeError) as exc:
        raise MalformedFrameError(f"{what}: {exc}") from exc


def crc16(data: bytes) -> bytes:
    """The Modbus CRC-16 of ``data`` as the two bytes sent on the wire (low byte first)."""
    # pymodbus returns the CRC already byte-swapped, so big-endian gives wire order.
    return int(_pymodbus().FramerRTU.compute_CRC(data)).to_bytes(2, "big")


@dataclass(frozen=True)
class Frame:
    """One complete, CRC-checked Modbus RTU frame.

    ``function_code`` is the byte on the wire (``0x83`` for an exception to a 03 read);
    ``function`` is the function it belongs to. ``address``/``count`` are the register
    range a request names (a write response echoes them); ``registers`` are the values a
    read response carries or a write request sends. ``exception_code`` is set only on
    exception responses (it may be a code outside :class:`ExceptionCode`).
    """

    unit_id: int
    function_code: int
    direction: Direction
    raw: bytes
    address: int | None = None
    count: int | None = None
    registers: tuple[int, ...] = ()
    exception_code: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.unit_id <= 255:
            raise LocalProtocolError(f"unit id {self.unit_id} is outside 0..255")
        if self.function_code & 0x7F not in FUNCTION_NAMES:
            raise LocalProtocolError(f"function code 0x{self.function_code:02X} is not supported")
        if self.is_exception != (self.exception_code is not None):
            raise LocalProtocolError("exception_code goes with (and only with) function | 0x80")
        if self.is_exception and self.direction is not Direction.RESPONSE:
            raise LocalProtocolError("only a response can be an exception")
        if any(not 0 <= value <= 0xFFFF for value in self.registers):
            raise LocalProtocolError("register values are 16-bit: 0..65535")
        if self.address is not None and not 0 <= self.address <= 0xFFFF:
            raise LocalProtocolError(f"register address {self.address} is outside 0..65535")

    @property
    def function(self) -> FunctionCode:
        """The function this frame requests or answers (exception bit stripped)."""
        return FunctionCode(self.function_code & 0x7F)

    @property
    def is_exception(self) -> bool:
        return bool(self.function_code & 0x80)

    @property
    def exception_name(self) -> str | None:
        """``ILLEGAL_DATA_ADDRESS`` and the like; ``None`` unless an exception response."""
        if self.exception_code is None:
            return None
        try:
            return ExceptionCode(self.exception_code).name
        except ValueError:
            return f"UNKNOWN_EXCEPTION_0x{self.exception_code:02X}"


def expected_length(head: bytes | bytearray, direction: Direction) -> int | None:
    """How long the frame starting at ``head`` must be, from its first bytes.

    Returns ``None`` when more bytes are needed to tell (a byte count not yet received).
    Raises :class:`UnsupportedError` for a function code we do not speak and
    :class:`MalformedFrameError` for a unit id or byte count no valid frame can have; a
    stream parser treats both as "not a frame start here" and resynchronises.
    """
    if len(head) < 2:
        return None
    unit_id, function_code = head[0], head[1]
    lowest_unit = 0 if direction is Direction.REQUEST else 1
    if not lowest_unit <= unit_id <= MAX_UNIT_ID:
        raise MalformedFrameError(
            f"unit id {unit_id} is not a valid {direction.value} address "
            f"({lowest_unit}..{MAX_UNIT_ID})"
        )
    if function_code & 0x80:
        if direction is Direction.REQUEST or (function_code & 0x7F) not in FUNCTION_NAMES:
            raise UnsupportedError(f"function code 0x{function_code:02X} is not supported")
        return int(_pymodbus().ExceptionResponse.rtu_frame_size)
    pdu_class = _pdu_classes().get((function_code, direction))
    if pdu_class is None:
        raise UnsupportedError(
            f"function code 0x{function_code:02X} is not supported in a {direction.value} "
            "(this codec speaks 03, 04, 06 and 16)"
        )
    if pdu_class.rtu_frame_size:
        return int(pdu_class.rtu_frame_size)
    position = pdu_class.rtu_byte_count_pos
    if len(head) <= position:
        return None
    byte_count = head[position]
    limit = 2 * (MAX_READ_COUNT if direction is Direction.RESPONSE else MAX_WRITE_COUNT)
    if byte_count == 0 or byte_count % 2 or byte_count > limit:
        raise MalformedFrameError(
            f"byte count {byte_count} is not an even number of register bytes in 2..{limit}"
        )
    with _pymodbus_boundary("cannot size the frame"):
        return int(pdu_class.calculateRtuFrameSize(bytes(head)))


def decode_frame(raw: bytes, direction: Direction) -> Frame:
    """Decode one complete RTU frame; raise a :class:`RemoteProtocolError` subclass if bad."""
    raw = bytes(raw)
    if len(raw) > MAX_ADU_SIZE:
        raise FrameTooLargeError(
            f"{len(raw)} bytes is longer than the {MAX_ADU_SIZE}-byte maximum RTU frame"
        )
    if len(raw) < _MIN_ADU_SIZE:
        raise MalformedFrameError(
            f"{len(raw)} bytes is too short for a Modbus RTU frame (unit, function, CRC)"
        )
    length = expected_length(raw, direction)
    if length is None or length != len(raw):
        shown = "?" if length is None else str(length)
        raise MalformedFrameError(
            f"a 0x{raw[1]:02X} {direction.value} is {shown} bytes long, got {len(raw)}; "
            "the frame is truncated or two frames ran together"
        )
    if crc16(raw[:-2]) != raw[-2:]:
        raise ChecksumError(
            f"CRC is {raw[-2:].hex(' ').upper()}, expected {crc16(raw[:-2]).hex(' ').upper()}; "
            "noise on the line, a baud-rate/parity mismatch or a collision on the bus"
        )
    unit_id, function_code, body = raw[0], raw[1], raw[2:-2]
    if function_code & 0x80:
        exc_pdu = _pymodbus().ExceptionResponse(function_code & 0x7F)
        with _pymodbus_boundary("bad exception response"):
            exc_pdu.decode(body)
        return Frame(unit_id, function_code, direction, raw, exception_code=exc_pdu.exception_code)
    pdu = _pdu_classes()[(function_code, direction)]()
    with _pymodbus_boundary(f"bad 0x{function_code:02X} {direction.value}"):
        pdu.decode(body)
    return _frame_from_pdu(unit_id, function_code, direction, raw, pdu)


def _frame_from_pdu(
    unit_id: int, function_code: int, direction: Direction, raw: bytes, pdu: ModbusPDU
) -> Frame:
    registers = tuple(int(value) for value in pdu.registers)
    if direction is Direction.RESPONSE and function_code in (0x03, 0x04):
        return Frame(unit_id, function_code, direction, raw, registers=registers)
    address, count = int(pdu.address), int(pdu.count)
    if function_code == 0x06:
        return Frame(unit_id, function_code, direction, raw, address, 1, registers)
    limit = MAX_READ_COUNT if function_code in (0x03, 0x04) else MAX_WRITE_COUNT
    if not 1 <= count <= limit:
        raise MalformedFrameError(f"register count {count} is outside 1..{limit}")
    if address + count > 0x10000:
        raise MalformedFrameError(
            f"{count} registers from 0x{address:04X} run past the last address 0xFFFF"
        )
    if direction is Direction.REQUEST and function_code == 0x10 and len(registers) != count:
        raise MalformedFrameError(
            f"write of {count} registers carries {len(registers)} values; the byte count disagrees"
        )
    return Frame(unit_id, function_code, direction, raw, address, count, registers)


# ---- building frames --------------------------------------------------------------------


def _build(make_pdu: Callable[[], ModbusPDU], unit_id: int, direction: Direction) -> Frame:
    _check_unit(unit_id, direction)
    pm = _pymodbus()
    framer = pm.FramerRTU(pm.DecodePDU(is_server=direction is Direction.RESPONSE))
    try:
        raw = framer.buildFrame(make_pdu())
    except (pm.ModbusException, ValueError, struct.error, OverflowError) as exc:
        raise LocalProtocolError(f"cannot build the frame: {exc}") from exc
    try:
        return decode_frame(raw, direction)
    except MalformedFrameError as exc:  # our extra limits, applied to our own frame
        raise LocalProtocolError(str(exc)) from exc


def _check_unit(unit_id: int, direction: Direction) -> None:
    lowest = 0 if direction is Direction.REQUEST else 1
    if not lowest <= unit_id <= MAX_UNIT_ID:
        raise LocalProtocolError(
            f"unit id {unit_id} is outside {lowest}..{MAX_UNIT_ID} for a {direction.value}"
        )


def _check_registers(values: Sequence[int]) -> list[int]:
    if any(not 0 <= value <= 0xFFFF for value in values):
        raise LocalProtocolError("register values are 16-bit: 0..65535")
    return list(values)


def _read_function(function_code: int) -> FunctionCode:
    if function_code not in (0x03, 0x04):
        raise LocalProtocolError(
            f"function code 0x{function_code:02X} is not a register read (03 or 04)"
        )
    return FunctionCode(function_code)


def _read_pdu(function_code: int, direction: Direction) -> Callable[..., ModbusPDU]:
    return _pdu_classes()[(function_code, direction)]


def build_read_request(unit_id: int, function_code: int, address: int, count: int) -> Frame:
    """A 03/04 read of ``count`` registers from ``address`` (0-based protocol address)."""
    code = _read_function(function_code)
    if not 1 <= count <= MAX_READ_COUNT:
        raise LocalProtocolError(f"register count {count} is outside 1..{MAX_READ_COUNT}")
    if not 0 <= address <= 0xFFFF:
        raise LocalProtocolError(f"register address {address} is outside 0..65535")
    request = _read_pdu(code, Direction.REQUEST)
    return _build(
        lambda: request(address=address, count=count, dev_id=unit_id), unit_id, Direction.REQUEST
    )


def build_read_response(unit_id: int, function_code: int, registers: Sequence[int]) -> Frame:
    """A meter's answer to a 03/04 read (what the simulator sends)."""
    code = _read_function(function_code)
    if not 1 <= len(registers) <= MAX_READ_COUNT:
        raise LocalProtocolError(f"a read response carries 1..{MAX_READ_COUNT} registers")
    values = _check_registers(registers)
    response = _read_pdu(code, Direction.RESPONSE)
    return _build(lambda: response(registers=values, dev_id=unit_id), unit_id, Direction.RESPONSE)


def build_write_single_request(unit_id: int, address: int, value: int) -> Frame:
    """Function 06: write one register."""
    values = _check_registers([value])
    pdu: Callable[..., ModbusPDU] = _pymodbus().rm.WriteSingleRegisterRequest
    return _build(
        lambda: pdu(address=address, registers=values, dev_id=unit_id),
        unit_id,
        Direction.REQUEST,
    )


def build_write_single_response(unit_id: int, address: int, value: int) -> Frame:
    """Function 06 answer: the meter echoes the request."""
    values = _check_registers([value])
    pdu: Callable[..., ModbusPDU] = _pymodbus().rm.WriteSingleRegisterResponse
    return _build(
        lambda: pdu(address=address, registers=values, dev_id=unit_id),
        unit_id,
        Direction.RESPONSE,
    )


def build_write_multiple_request(unit_id: int, address: int, values: Sequence[int]) -> Frame:
    """Function 16: write ``values`` to consecutive registers from ``address``."""
    if not 1 <= len(values) <= MAX_WRITE_COUNT:
        raise LocalProtocolError(f"a write carries 1..{MAX_WRITE_COUNT} registers")
    checked = _check_registers(values)
    pdu: Callable[..., ModbusPDU] = _pymodbus().rm.WriteMultipleRegistersRequest
    return _build(
        lambda: pdu(address=address, registers=checked, dev_id=unit_id),
        unit_id,
        Direction.REQUEST,
    )


def build_write_multiple_response(unit_id: int, address: int, count: int) -> Frame:
    """Function 16 answer: start address and count written."""
    pdu: Callable[..., ModbusPDU] = _pymodbus().rm.WriteMultipleRegistersResponse
    return _build(
        lambda: pdu(address=address, count=count, dev_id=unit_id),
        unit_id,
        Direction.RESPONSE,
    )


def build_exception_response(
    unit_id: int, function_code: int, exception_code: ExceptionCode | int
) -> Frame:
    """A meter refusing ``function_code`` with ``exception_code``."""
    if function_code not in FUNCTION_NAMES:
        raise LocalProtocolError(f"function code 0x{function_code:02X} is not supported")
    if not 0 <= int(exception_code) <= 0xFF:
        raise LocalProtocolError(f"exception code {exception_code} is not one byte")
    code = int(exception_code)
    exception_response = _pymodbus().ExceptionResponse
    return _build(
        lambda: exception_response(function_code, code, device_id=unit_id),
        unit_id,
        Direction.RESPONSE,
    )
