"""The 698.45 objects we read, as data: OAD → name, OBIS codes, scaler and unit.

``CATALOGUE`` maps (OI, attribute) to an :class:`ObjectEntry`; :func:`meter_values`
turns the Data of a GET-Response (or one cell of a record row) into canonical
:class:`~shared_protocol.quantities.MeterValue` s, applying the scaler in ``Decimal`` and
converting the standard's W/var/VA to our kW/kvar/kVA.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final

from shared_protocol.dlt698.apdu import (
    Apdu,
    GetResponseNormal,
    GetResponseNormalList,
    GetResponseRecord,
    GetResult,
    RecordResult,
    ReportNotificationList,
    ReportNotificationRecordList,
    SecurityResponse,
)
from shared_protocol.dlt698.data import (
    OAD,
    BitString,
    Data,
    DataType,
    DateTime698,
    DateTimeS,
)
from shared_protocol.errors import UnsupportedError
from shared_protocol.quantities import QUANTITIES, MeterValue, ScalarValue

__all__ = ["CATALOGUE", "ObjectEntry", "apdu_values", "find_object", "meter_values", "scale"]


@dataclass(frozen=True)
class ObjectEntry:
    """One catalogued attribute.

    ``obis`` has one code per array element (element index 1..n) or a single code for a
    scalar; it is empty for record tables (their columns are catalogued themselves).
    ``scaler``/``meter_unit`` are as the standard states them; ``exponent`` is the extra
    power of ten that converts ``meter_unit`` to ``unit`` (W → kW is −3).
    """

    oi: int
    attribute: int
    name: str
    obis: tuple[str, ...]
    scaler: int | None = None
    meter_unit: str | None = None
    unit: str | None = None
    exponent: int = 0
    is_array: bool = False
    is_record: bool = False

    @property
    def oad(self) -> OAD:
        return OAD(self.oi, self.attribute)


_TARIFF_SLOTS: Final = 9  # total + up to 8 tariffs (1 sharp, 2 peak, 3 flat, 4 valley, …)

# (OI, OBIS group C, name, unit) for the energy registers, class 1 (§ table 125).
_ENERGIES: Final = (
    (0x0000, 15, "combined active energy", "kWh"),
    (0x0010, 1, "import active energy", "kWh"),
    (0x0020, 2, "export active energy", "kWh"),
    (0x0030, 3, "combined reactive energy 1", "kvarh"),
    (0x0040, 4, "combined reactive energy 2", "kvarh"),
    (0x0050, 5, "reactive energy Q1", "kvarh"),
    (0x0060, 6, "reactive energy Q2", "kvarh"),
    (0x0070, 7, "reactive energy Q3", "kvarh"),
    (0x0080, 8, "reactive energy Q4", "kvarh"),
)


def _energy_rows() -> list[ObjectEntry]:
    rows = []
    for oi, c, name, unit in _ENERGIES:
        codes = tuple(f"1-0:{c}.8.{t}" for t in range(_TARIFF_SLOTS))
        # attribute 2: 0.01 resolution; attribute 4: high precision 0.0001.
        rows.append(ObjectEntry(oi, 2, name, codes, -2, unit, unit, is_array=True))
        rows.append(
            ObjectEntry(oi, 4, f"{name} (high precision)", codes, -4, unit, unit, is_array=True)
        )
    return rows


def _phase_codes(*cs: int) -> tuple[str, ...]:
    return tuple(f"1-0:{c}.7.0" for c in cs)


_ROWS: Final[list[ObjectEntry]] = [
    *_energy_rows(),
    ObjectEntry(0x2000, 2, "voltage", _phase_codes(32, 52, 72), -1, "V", "V", is_array=True),
    ObjectEntry(0x2001, 2, "current", _phase_codes(31, 51, 71), -3, "A", "A", is_array=True),
    ObjectEntry(
        0x2004, 2, "active power", _phase_codes(16, 36, 56, 76), -1, "W", "kW", -3, is_array=True
    ),
    ObjectEntry(
        0x2005, 2, "reactive power", _phase_codes(3, 23, 43, 63), -1, "var", "kvar", -3, True
    ),
    ObjectEntry(
        0x2006, 2, "apparent power", _phase_codes(9, 29, 49, 69), -1, "VA", "kVA", -3, True
    ),
    ObjectEntry(
        0x200A, 2, "power factor", _phase_codes(13, 33, 53, 73), -3, None, None, is_array=True
    ),
    ObjectEntry(0x200F, 2, "frequency", ("1-0:14.7.0",), -2, "Hz", "Hz"),
    ObjectEntry(
        0x2014,
        2,
        "meter running status words",
        tuple(f"0-0:96.5.{n}" for n in range(1, 8)),
        is_array=True,
    ),
    ObjectEntry(0x2021, 2, "freeze time", ("0-0:1.0.3",)),
    ObjectEntry(0x4000, 2, "meter clock", ("0-0:1.0.0",)),
    ObjectEntry(0x4001, 2, "communication address", ("0-0:96.1.0",)),
    ObjectEntry(0x4002, 2, "meter number", ("0-0:96.1.1",)),
    ObjectEntry(0x5002, 2, "minute freeze records (load profile)", (), is_record=True),
    ObjectEntry(0x5004, 2, "daily freeze records", (), is_record=True),
    ObjectEntry(0x5006, 2, "monthly freeze records", (), is_record=True),
    ObjectEntry(0x3011, 2, "power-down event records", ("0-0:96.7.22",), is_record=True),
    ObjectEntry(0x301B, 2, "meter cover open event records", ("0-0:96.51.1",), is_record=True),
]

CATALOGUE: Final[dict[tuple[int, int], ObjectEntry]] = {(e.oi, e.attribute): e for e in _ROWS}


def find_object(oad: OAD) -> ObjectEntry | None:
    return CATALOGUE.get((oad.oi, oad.attribute))


# Quantum (1E<exponent>) for each negative exponent a catalogued entry can produce.
_QUANTA: Final[dict[int, Decimal]] = {e: Decimal(1).scaleb(e) for e in range(-12, 0)}


def scale(raw: int, exponent: int) -> Decimal:
    """``raw × 10^exponent`` exactly, keeping the resolution (0 at −2 → ``0.00``)."""
    if exponent >= 0:
        return Decimal(raw * 10**exponent)
    quantum = _QUANTA.get(exponent)
    if quantum is None:
        quantum = Decimal(1).scaleb(exponent)
    return Decimal(raw).scaleb(exponent).quantize(quantum)


_INTEGER_TYPES: Final = frozenset(
    {
        DataType.DOUBLE_LONG,
        DataType.DOUBLE_LONG_UNSIGNED,
        DataType.INTEGER,
        DataType.LONG,
        DataType.UNSIGNED,
        DataType.LONG_UNSIGNED,
        DataType.LONG64,
        DataType.LONG64_UNSIGNED,
    }
)


def _scalar(entry: ObjectEntry, data: Data) -> ScalarValue | None:
    """One element's value, or ``None`` for a NULL (a phase the meter does not have)."""
    v = data.value
    t = data.type
    if t is _NULL:
        return None
    if t in _INTEGER_TYPES and isinstance(v, int):
        scaler = entry.scaler
        if scaler is None:
            return Decimal(v)
        return scale(v, scaler + entry.exponent)
    if isinstance(v, DateTimeS | DateTime698):
        return v.to_datetime()
    if isinstance(v, bytes):
        return v.hex().upper()
    if isinstance(v, BitString):
        return v.data.hex().upper()
    if isinstance(v, str):
        return v
    raise UnsupportedError(f"{entry.name}: {data.type.name} is not a value type we expect")


_NULL: Final = DataType.NULL
_ARRAY: Final = DataType.ARRAY
_new: Final = object.__new__
# MeterValue is a plain frozen dataclass: fill its fields directly unless it ever grows
# checks of its own (then take its constructor).
_FAST_METER_VALUE: Final = not hasattr(MeterValue, "__post_init__") and not hasattr(
    MeterValue, "__slots__"
)


def _meter_value(code: str, value: ScalarValue, unit: str | None) -> MeterValue:
    if not _FAST_METER_VALUE:
        return MeterValue(code, value, unit)
    mv = _new(MeterValue)
    fields = mv.__dict__
    fields["obis"] = code
    fields["value"] = value
    fields["unit"] = unit
    return mv


def meter_values(oad: OAD, data: Data) -> list[MeterValue]:
    """Canonical values for ``data`` read from ``oad``; [] when the OAD is not catalogued."""
    entry = CATALOGUE.get((oad.oi, oad.attribute))
    if entry is None or entry.is_record or not entry.obis:
        return []
    if entry.is_array and oad.index == 0:
        if data.type is not _ARRAY:
            raise UnsupportedError(f"{entry.name} ({oad}) should be an array, got {data.type.name}")
        pairs: Iterable[tuple[str, Data]] = zip(entry.obis, data.items, strict=False)
    elif entry.is_array:
        if oad.index > len(entry.obis):
            return []
        pairs = [(entry.obis[oad.index - 1], data)]
    else:
        pairs = [(entry.obis[0], data)]
    values = []
    unit = entry.unit
    scaler = entry.scaler
    exponent = 0 if scaler is None else scaler + entry.exponent
    quantum = _QUANTA.get(exponent)
    for code, element in pairs:
        v = element.value
        value: ScalarValue | None
        if quantum is not None and type(v) is int and element.type in _INTEGER_TYPES:
            # _scalar → scale for the usual case: an integer with a negative exponent.
            value = Decimal(v).scaleb(exponent).quantize(quantum)
        else:
            value = _scalar(entry, element)
        if value is not None and code in QUANTITIES:
            if _FAST_METER_VALUE:  # _meter_value, inlined
                mv = _new(MeterValue)
                fields = mv.__dict__
                fields["obis"] = code
                fields["value"] = value
                fields["unit"] = unit
                values.append(mv)
            else:
                values.append(MeterValue(code, value, unit))
    return values


def apdu_values(apdu: Apdu) -> list[MeterValue]:
    """Every catalogued value in a GET-Response / REPORT (or a plaintext SECURITY reply
    around one): normal results first, then record rows in order. DARs and uncatalogued
    OADs contribute nothing."""
    if isinstance(apdu, SecurityResponse):
        if apdu.payload is None or apdu.ciphertext:
            return []
        apdu = apdu.inner()
    results: tuple[GetResult, ...] = ()
    records: tuple[RecordResult, ...] = ()
    if isinstance(apdu, GetResponseNormal):
        results = (apdu.result,)
    elif isinstance(apdu, GetResponseNormalList | ReportNotificationList):
        results = apdu.results
    elif isinstance(apdu, GetResponseRecord):
        records = (apdu.result,)
    elif isinstance(apdu, ReportNotificationRecordList):
        records = apdu.records
    values: list[MeterValue] = []
    for result in results:
        if result.data is not None:
            values += meter_values(result.oad, result.data)
    for record in records:
        for row in record.rows or ():
            for csd, cell in zip(record.rcsd.columns, row, strict=True):
                if isinstance(csd.column, OAD):
                    values += meter_values(csd.column, cell)
    return values


def display(value: ScalarValue) -> str:
    """A value as the explain dict shows it: plain decimals, ISO times."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value)
