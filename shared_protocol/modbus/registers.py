"""Register maps of real Modbus meters, as data, and the planning of block reads over them.

One job: say where each quantity lives in a meter's register space (address, register
type, data type, word order, scale) and which OBIS code of
:mod:`shared_protocol.quantities` it is. ``scale`` turns the raw number into the
vocabulary's unit, so a W register gets ``0.001`` and unit ``kW``; ``device_unit`` keeps
what the meter's manual prints, for the docs.

Addresses are 0-based protocol addresses (what goes on the wire), not the 30001/40001
"register numbers" of vendor manuals: Eastron's 30073 is input register 0x0048.

Maps (each cites its sources next to its rows):

``sdm120``   Eastron SDM120-Modbus, single phase, input registers (04), float32
``sdm630``   Eastron SDM630-Modbus V2, three phase, input registers (04), float32
``ddsu666``  CHINT DDSU666, single phase, holding registers (03), float32
``dtsu666``  CHINT DTSU666, three phase, holding registers (03), float32 with scales
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from shared_protocol.errors import LocalProtocolError
from shared_protocol.modbus.framing import MAX_READ_COUNT, FunctionCode
from shared_protocol.quantities import quantity

__all__ = [
    "METER_MAPS",
    "DataType",
    "ReadBlock",
    "RegisterEntry",
    "RegisterMap",
    "RegisterType",
    "WordOrder",
    "markdown_table",
    "meter_map",
    "plan_reads",
]


class RegisterType(StrEnum):
    """Which register table an entry lives in; it fixes the read function code."""

    HOLDING = "holding"
    INPUT = "input"

    @property
    def read_function(self) -> FunctionCode:
        if self is RegisterType.HOLDING:
            return FunctionCode.READ_HOLDING_REGISTERS
        return FunctionCode.READ_INPUT_REGISTERS


class DataType(StrEnum):
    """How the register words of one value are to be read."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"

    @property
    def words(self) -> int:
        return 1 if self in (DataType.INT16, DataType.UINT16) else 2


class WordOrder(StrEnum):
    """Order of the 16-bit words of a 32-bit value; bytes in a word are always big-endian.

    ``BIG``: high word first (Eastron and CHINT, "ABCD"). ``LITTLE``: low word first
    ("CDAB", common on other vendors' energy counters).
    """

    BIG = "big"
    LITTLE = "little"


@dataclass(frozen=True)
class RegisterEntry:
    """One quantity in a meter's register map."""

    address: int
    register_type: RegisterType
    data_type: DataType
    obis: str
    unit: str | None
    scale: Decimal = Decimal(1)
    word_order: WordOrder = WordOrder.BIG
    device_unit: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.address <= 0xFFFF - (self.data_type.words - 1):
            raise LocalProtocolError(f"register address 0x{self.address:X} is out of range")
        if not isinstance(self.scale, Decimal) or self.scale <= 0:
            raise LocalProtocolError(f"scale must be a positive Decimal, got {self.scale!r}")
        known = quantity(self.obis)  # raises for codes outside the vocabulary
        if known.unit != self.unit:
            raise LocalProtocolError(
                f"{self.obis} is in {known.unit!r} in the vocabulary, the map says {self.unit!r}"
            )

    @property
    def words(self) -> int:
        return self.data_type.words

    @property
    def end(self) -> int:
        """One past the last register this entry occupies."""
        return self.address + self.data_type.words


@dataclass(frozen=True)
class RegisterMap:
    """A meter model's registers. ``max_gap``: unmapped registers one read may span."""

    model: str
    title: str
    sources: tuple[str, ...]
    entries: tuple[RegisterEntry, ...]
    max_gap: int = 0
    notes: str = ""
    _by_address: Mapping[tuple[RegisterType, int], RegisterEntry] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[tuple[RegisterType, int], RegisterEntry] = {}
        ordered = sorted(self.entries, key=lambda e: (e.register_type.value, e.address))
        for before, after in itertools.pairwise(ordered):
            if before.register_type is after.register_type and after.address < before.end:
                raise LocalProtocolError(
                    f"{self.model}: registers 0x{before.address:04X} and 0x{after.address:04X} "
                    "overlap"
                )
        for entry in self.entries:
            index[(entry.register_type, entry.address)] = entry
        object.__setattr__(self, "_by_address", MappingProxyType(index))

    def entry_at(self, register_type: RegisterType, address: int) -> RegisterEntry | None:
        return self._by_address.get((register_type, address))

    def by_obis(self, obis: str) -> RegisterEntry:
        for entry in self.entries:
            if entry.obis == obis:
                return entry
        raise LocalProtocolError(f"{self.model} has no register for {obis}")


@dataclass(frozen=True)
class ReadBlock:
    """One contiguous 03/04 read planned over a map."""

    register_type: RegisterType
    address: int
    count: int
    entries: tuple[RegisterEntry, ...]

    @property
    def function_code(self) -> FunctionCode:
        return self.register_type.read_function


def plan_reads(
    register_map: RegisterMap,
    *,
    max_count: int = MAX_READ_COUNT,
    max_gap: int | None = None,
    only: Iterable[str] | None = None,
) -> tuple[ReadBlock, ...]:
    """Group a map's registers (or ``only`` these OBIS codes) into the fewest reads.

    A read never mixes register types, never exceeds ``max_count`` registers (125 by the
    protocol; some meters want less) and spans at most ``max_gap`` unmapped registers
    (default: the map's own ``max_gap``): reading across a hole makes some meters answer
    ILLEGAL DATA ADDRESS for the whole block.
    """
    if not 2 <= max_count <= MAX_READ_COUNT:
        raise LocalProtocolError(f"max_count {max_count} is outside 2..{MAX_READ_COUNT}")
    gap = register_map.max_gap if max_gap is None else max_gap
    if gap < 0:
        raise LocalProtocolError("max_gap cannot be negative")
    wanted = None if only is None else set(only)
    entries = [e for e in register_map.entries if wanted is None or e.obis in wanted]
    if wanted is not None:
        missing = wanted - {e.obis for e in entries}
        if missing:
            raise LocalProtocolError(f"{register_map.model} has no register for {sorted(missing)}")
    entries.sort(key=lambda e: (e.register_type.value, e.address))
    blocks: list[ReadBlock] = []
    current: list[RegisterEntry] = []
    for entry in entries:
        if current:
            first, last = current[0], current[-1]
            fits = (
                entry.register_type is first.register_type
                and entry.address - last.end <= gap
                and entry.end - first.address <= max_count
            )
            if not fits:
                blocks.append(_block(current))
                current = []
        current.append(entry)
    if current:
        blocks.append(_block(current))
    return tuple(blocks)


def _block(entries: list[RegisterEntry]) -> ReadBlock:
    start = entries[0].address
    return ReadBlock(entries[0].register_type, start, entries[-1].end - start, tuple(entries))


# ---- the maps ---------------------------------------------------------------------------

_D = Decimal
_INPUT, _HOLDING = RegisterType.INPUT, RegisterType.HOLDING
_F32 = DataType.FLOAT32
_W_TO_KW = _D("0.001")


def _eastron(address: int, obis: str, unit: str | None, device_unit: str | None) -> RegisterEntry:
    scale = _W_TO_KW if device_unit in ("W", "VA", "var") else _D(1)
    return RegisterEntry(address, _INPUT, _F32, obis, unit, scale, WordOrder.BIG, device_unit)


def _chint(
    address: int, obis: str, unit: str | None, scale: str, device_unit: str | None
) -> RegisterEntry:
    return RegisterEntry(address, _HOLDING, _F32, obis, unit, _D(scale), WordOrder.BIG, device_unit)


# Eastron SDM120-Modbus. Sources: Eastron "SDM120-Modbus protocol" V2.x input register
# table (30001 = 0x0000 …); Tasmota tasmota/tasmota_xnrg_energy/xnrg_09_sdm120.ino
# (sdm120_start_addresses: 0x0000 V, 0x0006 A, 0x000C W, 0x0012 VA, 0x0018 var, 0x001E PF,
# 0x0046 Hz, 0x0156 total kWh); ESPHome/Oppleo SDM tables confirm 0x0048/0x004A kWh.
_SDM120 = RegisterMap(
    model="sdm120",
    title="Eastron SDM120-Modbus (single phase)",
    sources=(
        "Eastron SDM120-Modbus protocol, input registers 30001…30343",
        "arendst/Tasmota tasmota/tasmota_xnrg_energy/xnrg_09_sdm120.ino",
        "plebann/eastron_SDM_HA_integration docs/registers-sdm120.md",
    ),
    entries=(
        _eastron(0x0000, "1-0:32.7.0", "V", "V"),
        _eastron(0x0006, "1-0:31.7.0", "A", "A"),
        _eastron(0x000C, "1-0:16.7.0", "kW", "W"),
        _eastron(0x0012, "1-0:9.7.0", "kVA", "VA"),
        _eastron(0x0018, "1-0:3.7.0", "kvar", "var"),
        _eastron(0x001E, "1-0:13.7.0", None, None),
        _eastron(0x0046, "1-0:14.7.0", "Hz", "Hz"),
        _eastron(0x0048, "1-0:1.8.0", "kWh", "kWh"),
        _eastron(0x004A, "1-0:2.8.0", "kWh", "kWh"),
        _eastron(0x004C, "1-0:3.8.0", "kvarh", "kvarh"),
        _eastron(0x004E, "1-0:4.8.0", "kvarh", "kvarh"),
        # Eastron's "total active energy" is import + export: OBIS 15.8.0 (|+A| + |−A|).
        _eastron(0x0156, "1-0:15.8.0", "kWh", "kWh"),
    ),
    # Assumption to confirm on the bench: Eastron meters answer reads that span their
    # undocumented registers, so a read may bridge the holes below 0x0050. Pass
    # plan_reads(max_gap=0) if a meter answers ILLEGAL DATA ADDRESS.
    max_gap=40,
    notes="Single-phase: voltage and current are reported as L1, power as the total.",
)

# Eastron SDM630-Modbus V2. Sources: Eastron "SDM630 Modbus protocol" V1.5 input register
# table; reinierberg/SDM_Energy_Meter SDM.h (SDM630_* defines: 0x0034 total W, 0x0038 VA,
# 0x003C var, 0x003E PF, 0x00E0 neutral current, 0x0156 total kWh); Tasmota
# xnrg_10_sdm630.ino; plebann/eastron_SDM_HA_integration docs/registers-sdm630.md.
_SDM630 = RegisterMap(
    model="sdm630",
    title="Eastron SDM630-Modbus V2 (three phase)",
    sources=(
        "Eastron SDM630 Modbus protocol V1.5, input registers 30001…30343",
        "reinierberg/SDM_Energy_Meter SDM.h (SDM630_* register defines)",
        "arendst/Tasmota tasmota/tasmota_xnrg_energy/xnrg_10_sdm630.ino",
        "plebann/eastron_SDM_HA_integration docs/registers-sdm630.md",
    ),
    entries=(
        _eastron(0x0000, "1-0:32.7.0", "V", "V"),
        _eastron(0x0002, "1-0:52.7.0", "V", "V"),
        _eastron(0x0004, "1-0:72.7.0", "V", "V"),
        _eastron(0x0006, "1-0:31.7.0", "A", "A"),
        _eastron(0x0008, "1-0:51.7.0", "A", "A"),
        _eastron(0x000A, "1-0:71.7.0", "A", "A"),
        _eastron(0x000C, "1-0:36.7.0", "kW", "W"),
        _eastron(0x000E, "1-0:56.7.0", "kW", "W"),
        _eastron(0x0010, "1-0:76.7.0", "kW", "W"),
        _eastron(0x0012, "1-0:29.7.0", "kVA", "VA"),
        _eastron(0x0014, "1-0:49.7.0", "kVA", "VA"),
        _eastron(0x0016, "1-0:69.7.0", "kVA", "VA"),
        _eastron(0x0018, "1-0:23.7.0", "kvar", "var"),
        _eastron(0x001A, "1-0:43.7.0", "kvar", "var"),
        _eastron(0x001C, "1-0:63.7.0", "kvar", "var"),
        _eastron(0x001E, "1-0:33.7.0", None, None),
        _eastron(0x0020, "1-0:53.7.0", None, None),
        _eastron(0x0022, "1-0:73.7.0", None, None),
        _eastron(0x0034, "1-0:16.7.0", "kW", "W"),
        _eastron(0x0038, "1-0:9.7.0", "kVA", "VA"),
        _eastron(0x003C, "1-0:3.7.0", "kvar", "var"),
        _eastron(0x003E, "1-0:13.7.0", None, None),
        _eastron(0x0046, "1-0:14.7.0", "Hz", "Hz"),
        _eastron(0x0048, "1-0:1.8.0", "kWh", "kWh"),
        _eastron(0x004A, "1-0:2.8.0", "kWh", "kWh"),
        _eastron(0x004C, "1-0:3.8.0", "kvarh", "kvarh"),
        _eastron(0x004E, "1-0:4.8.0", "kvarh", "kvarh"),
        _eastron(0x00E0, "1-0:91.7.0", "A", "A"),
        _eastron(0x0156, "1-0:15.8.0", "kWh", "kWh"),
    ),
    max_gap=40,
)

# CHINT DDSU666 single-phase. Sources: CHINT "DDSU666 single-phase electronic energy meter"
# user manual, Modbus table (float32, holding registers, function 03); Tasmota
# tasmota/tasmota_xnrg_energy/xnrg_11_ddsu666.ino (Ddsu666_start_addresses: 0x2000 V,
# 0x2002 A, 0x2004 kW, 0x2006 kvar, 0x200A PF, 0x200E Hz, 0x4000 import kWh, 0x400A
# export kWh). Tasmota reads them with function 04 while the manual documents 03; we
# use 03 (holding), as the manual says.
_DDSU666 = RegisterMap(
    model="ddsu666",
    title="CHINT DDSU666 (single phase)",
    sources=(
        "CHINT DDSU666 user manual, Modbus-RTU register table",
        "arendst/Tasmota tasmota/tasmota_xnrg_energy/xnrg_11_ddsu666.ino",
    ),
    entries=(
        _chint(0x2000, "1-0:32.7.0", "V", "1", "V"),
        _chint(0x2002, "1-0:31.7.0", "A", "1", "A"),
        _chint(0x2004, "1-0:16.7.0", "kW", "1", "kW"),
        _chint(0x2006, "1-0:3.7.0", "kvar", "1", "kvar"),
        _chint(0x200A, "1-0:13.7.0", None, "1", None),
        _chint(0x200E, "1-0:14.7.0", "Hz", "1", "Hz"),
        _chint(0x4000, "1-0:1.8.0", "kWh", "1", "kWh"),
        _chint(0x400A, "1-0:2.8.0", "kWh", "1", "kWh"),
    ),
    # Bridges 0x2008/0x200C (2 registers each) and 0x4002..0x4009; not yet confirmed on a
    # real DDSU666. Pass plan_reads(max_gap=0) if a meter answers ILLEGAL DATA ADDRESS.
    max_gap=8,
    notes="Single-phase: voltage and current are reported as L1, power as the total.",
)

# CHINT DTSU666 three-phase. Instantaneous values are float32 in scaled units: voltage
# ×0.1 V, current ×0.001 A, power ×0.1 W/var/VA, power factor ×0.001, frequency ×0.01 Hz;
# energies are float32 kWh. Sources: CHINT "DTSU666 three-phase electronic energy meter"
# user manual, Modbus table; den-ali/ha-dtsu666-meter const.py (FIELD_MAP with scales,
# "cross-checked against a real DTSU666"); cg-ite/DTSU666-Modbus dstu666_reader.py (same
# addresses and divisors); gerontec/dtsu666 README (8198 = 0x2006 … 16414 = 0x401E).
# Some manual editions print the energy block at 0x101E/0x1028; all three code sources
# read 0x401E/0x4028, which is what we use.
_DTSU666 = RegisterMap(
    model="dtsu666",
    title="CHINT DTSU666 (three phase)",
    sources=(
        "CHINT DTSU666 user manual, Modbus-RTU register table",
        "den-ali/ha-dtsu666-meter const.py (FIELD_MAP)",
        "cg-ite/DTSU666-Modbus dstu666_reader.py",
        "gerontec/dtsu666 README.md",
    ),
    entries=(
        _chint(0x2006, "1-0:32.7.0", "V", "0.1", "0.1 V"),
        _chint(0x2008, "1-0:52.7.0", "V", "0.1", "0.1 V"),
        _chint(0x200A, "1-0:72.7.0", "V", "0.1", "0.1 V"),
        _chint(0x200C, "1-0:31.7.0", "A", "0.001", "0.001 A"),
        _chint(0x200E, "1-0:51.7.0", "A", "0.001", "0.001 A"),
        _chint(0x2010, "1-0:71.7.0", "A", "0.001", "0.001 A"),
        _chint(0x2012, "1-0:16.7.0", "kW", "0.0001", "0.1 W"),
        _chint(0x2014, "1-0:36.7.0", "kW", "0.0001", "0.1 W"),
        _chint(0x2016, "1-0:56.7.0", "kW", "0.0001", "0.1 W"),
        _chint(0x2018, "1-0:76.7.0", "kW", "0.0001", "0.1 W"),
        _chint(0x201A, "1-0:3.7.0", "kvar", "0.0001", "0.1 var"),
        _chint(0x201C, "1-0:23.7.0", "kvar", "0.0001", "0.1 var"),
        _chint(0x201E, "1-0:43.7.0", "kvar", "0.0001", "0.1 var"),
        _chint(0x2020, "1-0:63.7.0", "kvar", "0.0001", "0.1 var"),
        _chint(0x2022, "1-0:9.7.0", "kVA", "0.0001", "0.1 VA"),
        _chint(0x2024, "1-0:29.7.0", "kVA", "0.0001", "0.1 VA"),
        _chint(0x2026, "1-0:49.7.0", "kVA", "0.0001", "0.1 VA"),
        _chint(0x2028, "1-0:69.7.0", "kVA", "0.0001", "0.1 VA"),
        _chint(0x202A, "1-0:13.7.0", None, "0.001", "0.001"),
        _chint(0x202C, "1-0:33.7.0", None, "0.001", "0.001"),
        _chint(0x202E, "1-0:53.7.0", None, "0.001", "0.001"),
        _chint(0x2030, "1-0:73.7.0", None, "0.001", "0.001"),
        _chint(0x2044, "1-0:14.7.0", "Hz", "0.01", "0.01 Hz"),
        _chint(0x401E, "1-0:1.8.0", "kWh", "1", "kWh"),
        _chint(0x4028, "1-0:2.8.0", "kWh", "1", "kWh"),
    ),
    # den-ali reads 0x401E..0x4029 as one block (bridging 8 unmapped registers) on a real
    # meter; we allow that, but not the 0x2032..0x2043 hole nobody documents reading.
    max_gap=8,
)

METER_MAPS: Final[Mapping[str, RegisterMap]] = MappingProxyType(
    {m.model: m for m in (_SDM120, _SDM630, _DDSU666, _DTSU666)}
)


def meter_map(model: str) -> RegisterMap:
    """The register map for ``model`` (case-insensitive), e.g. ``"sdm630"``."""
    try:
        return METER_MAPS[model.lower()]
    except KeyError:
        raise LocalProtocolError(
            f"no register map for meter model {model!r}; known: {', '.join(METER_MAPS)}"
        ) from None


def markdown_table(register_map: RegisterMap) -> str:
    """The map as the Markdown table in ``docs/protocol-modbus.md`` (a test keeps them equal)."""
    lines = [
        "| Address | Type | Data type | Word order | Scale | Meter unit | OBIS | Quantity | Unit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in sorted(register_map.entries, key=lambda e: (e.register_type.value, e.address)):
        lines.append(
            f"| 0x{e.address:04X} | {e.register_type.value} | {e.data_type.value} "
            f"| {e.word_order.value} | {e.scale} | {e.device_unit or '—'} | {e.obis} "
            f"| {quantity(e.obis).name} | {e.unit or '—'} |"
        )
    return "\n".join(lines)
