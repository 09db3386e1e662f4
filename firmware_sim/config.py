"""An area config (TOML) → validated frozen dataclasses → a running simulation.

The file has four parts (``examples/area.toml`` is a complete one; ``docs/simulator.md``
"Configuration" lists every field)::

    [simulation]   start, acceleration, seed, timezone, fast_forward_days
    [area]         id, loss_percent, theft_watts, supply_address, supply_protocol, supply_bus
    [[buses]]      name, protocol (line family), transport, seed, wire_time, faults
    [[meters]]     id, address, protocol, bus, customer_class, scenario knobs, faults

:func:`parse_config` checks everything and collects every problem before it gives up, so
one run of ``firmware-sim validate`` shows them all; each problem names its field path
(``meters[3].protocol: 'dlt645-2009' is not one of …``). The only exception it raises is
:class:`ConfigError`.

:func:`build` turns a config into a :class:`Simulation` (the area, its clock and one
:class:`~firmware_sim.bus.Bus` per ``[[buses]]``); :meth:`Simulation.start` puts every bus
on its transport.
"""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, TypeVar

from firmware_sim.area import PROTOCOLS, HouseholdSpec, TransformerArea
from firmware_sim.bus import Bus, line_family
from firmware_sim.clock import SimClock
from firmware_sim.faults import FaultPlan
from firmware_sim.load import ConstantLoad, CustomerClass
from firmware_sim.meter import FaultKind, MeterFault
from firmware_sim.transports import PtyTransport, TcpSerialServer, start_transport
from firmware_sim.wiretime import Latency, WireTime, latency_from_dict
from shared_protocol.modbus import METER_MAPS

__all__ = [
    "AreaSection",
    "BusSection",
    "ConfigError",
    "MeterSection",
    "SimConfig",
    "Simulation",
    "SimulationSection",
    "build",
    "load_config",
    "parse_config",
]

LINES: Final = ("dlt645", "dlt698.45", "modbus-rtu")
CUSTOMER_CLASSES: Final = tuple(c.value for c in CustomerClass)
_TCP: Final = re.compile(r"^(tcp|socket)://(?P<host>[^:/]+):(?P<port>\d{1,5})$")
_DIGITS: Final = re.compile(r"^[0-9]+$")


class ConfigError(ValueError):
    """A config with problems; ``problems`` holds every ``"path: what is wrong"`` line."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        count = len(problems)
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"{source}: {count} problem{'s' if count != 1 else ''}\n{lines}")


# ---------------------------------------------------------------- the config, validated


@dataclass(frozen=True)
class SimulationSection:
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)  # aware UTC
    acceleration: float = 1.0  # simulated seconds per wall second
    seed: int = 0
    timezone: str = "Asia/Shanghai"  # the meters' local time
    fast_forward_days: int = 0  # history filled instantly before the buses start


@dataclass(frozen=True)
class AreaSection:
    id: str = "area-1"
    loss_percent: Decimal = Decimal("3")
    theft_watts: int = 0  # an unmetered tap the supply meter sees and no household meter does
    supply_address: str = "990000000001"
    supply_protocol: str = "dlt698.45"
    supply_bus: str | None = None  # a dlt698.45 bus to hang the supply meter on


@dataclass(frozen=True)
class BusSection:
    name: str
    protocol: str  # line family: dlt645 | dlt698.45 | modbus-rtu
    transport: str = "pty"  # "pty" or "tcp://HOST:PORT" (port 0 picks a free one)
    seed: int = 0
    wire_time: WireTime | None = None
    faults: FaultPlan | None = None


@dataclass(frozen=True)
class MeterSection:
    id: str
    address: str
    protocol: str
    bus: str
    customer_class: str = "residential"
    scale: float = 1.0
    pv_peak_watts: int = 0
    unit_id: int = 1
    modbus_model: str = "sdm120"
    bypass_percent: int = 0
    reversed_wiring: bool = False
    wired_to: str | None = None
    dead: bool = False
    drift_ppm: float = 0.0
    prepaid: bool = False
    protected: bool = False
    allow_plaintext_remote_control: bool = False
    security_key: bytes | None = None
    latency: Latency | None = None
    faults: FaultPlan | None = None
    meter_faults: tuple[MeterFault, ...] = ()

    def household(self) -> HouseholdSpec:
        return HouseholdSpec(
            account=self.id,
            address=self.address,
            protocol=self.protocol,
            customer_class=CustomerClass(self.customer_class),
            scale=self.scale,
            pv_peak_watts=self.pv_peak_watts,
            prepaid=self.prepaid,
            protected=self.protected,
            bypass_percent=self.bypass_percent,
            reversed_wiring=self.reversed_wiring,
            wired_to=self.wired_to,
            dead=self.dead,
            drift_ppm=self.drift_ppm,
            allow_plaintext_remote_control=self.allow_plaintext_remote_control,
            unit_id=self.unit_id,
            modbus_model=self.modbus_model,
            faults=self.meter_faults,
        )

    def anomalies(self) -> list[str]:
        found = self.household().anomalies()
        if self.faults is not None and self.faults.rules:
            found.append("wire_faults")
        found += [f"{fault.kind.value}@{fault.at.isoformat()}" for fault in self.meter_faults]
        return found


@dataclass(frozen=True)
class SimConfig:
    simulation: SimulationSection
    area: AreaSection
    buses: tuple[BusSection, ...]
    meters: tuple[MeterSection, ...] = field(default=())

    def summary(self) -> dict[str, Any]:
        """What ``validate`` reports for a good config."""
        protocols: dict[str, int] = {}
        for meter in self.meters:
            protocols[meter.protocol] = protocols.get(meter.protocol, 0) + 1
        return {
            "area": self.area.id,
            "start": self.simulation.start.isoformat(),
            "acceleration": self.simulation.acceleration,
            "fast_forward_days": self.simulation.fast_forward_days,
            "buses": [
                {
                    "name": bus.name,
                    "protocol": bus.protocol,
                    "transport": bus.transport,
                    "meters": [m.id for m in self.meters if m.bus == bus.name]
                    + (["supply"] if self.area.supply_bus == bus.name else []),
                }
                for bus in self.buses
            ],
            "meters": len(self.meters),
            "protocols": protocols,
            "anomalies": {m.id: m.anomalies() for m in self.meters if m.anomalies()},
        }


# ---------------------------------------------------------------- parsing


def load_config(path: str | Path) -> SimConfig:
    """Read and validate a TOML area config; :class:`ConfigError` lists every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror or exc}"], source) from None
    return parse_config(text, source)


def parse_config(text: str | Mapping[str, Any], source: str = "config") -> SimConfig:
    """Validate TOML text (or an already parsed table)."""
    if isinstance(text, str):
        try:
            data: Mapping[str, Any] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"not valid TOML: {exc}"], source) from None
    else:
        data = text
    checker = _Checker()
    config = checker.config(data)
    if checker.problems or config is None:
        raise ConfigError(checker.problems, source)
    return config


T = TypeVar("T")


class _Checker:
    """Walks the raw tables, collecting ``path: problem`` lines instead of stopping."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    # ------------------------------------------------------------ field readers

    def table(self, data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, Mapping):
            self.problem(path, f"expected a table, got {_kind(value)}")
            return {}
        return value

    def unknown(self, data: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
        for key in sorted(set(data) - set(allowed)):
            self.problem(
                f"{path}.{key}" if path else key, f"unknown field (use {', '.join(allowed)})"
            )

    def get(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        kind: type[T] | tuple[type, ...],
        default: T,
        check: Callable[[Any], str | None] | None = None,
        *,
        required: bool = False,
    ) -> T:
        where = f"{path}.{key}" if path else key
        if key not in data:
            if required:
                self.problem(where, "missing")
            return default
        value = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            self.problem(where, f"expected {_names(kinds)}, got {value!r}")
            return default
        if check is not None:
            message = check(value)
            if message is not None:
                self.problem(where, message)
                return default
        return value  # type: ignore[return-value]

    def text(
        self, data: Mapping[str, Any], key: str, path: str, default: str = "", **kw: Any
    ) -> str:
        return self.get(data, key, path, str, default, **kw)

    def flag(self, data: Mapping[str, Any], key: str, path: str) -> bool:
        return self.get(data, key, path, bool, False)

    def integer(
        self, data: Mapping[str, Any], key: str, path: str, default: int, low: int, high: int
    ) -> int:
        return self.get(data, key, path, int, default, lambda v: _range(v, low, high))

    def number(
        self, data: Mapping[str, Any], key: str, path: str, default: float, low: float, high: float
    ) -> float:
        return float(
            self.get(data, key, path, (int, float), default, lambda v: _range(v, low, high))
        )

    def one_of(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        choices: tuple[str, ...],
        default: str,
        *,
        required: bool = False,
    ) -> str:
        def check(value: str) -> str | None:
            if value not in choices:
                return f"{value!r} is not one of {', '.join(choices)}"
            return None

        return self.text(data, key, path, default, check=check, required=required)

    # ------------------------------------------------------------ sections

    def config(self, data: Mapping[str, Any]) -> SimConfig | None:
        self.unknown(data, ("simulation", "area", "buses", "meters"), "")
        simulation = self.simulation(self.table(data, "simulation", "simulation"))
        area = self.area(self.table(data, "area", "area"))
        buses = tuple(
            bus
            for index, raw in enumerate(self.array(data, "buses"))
            if (bus := self.bus(raw, f"buses[{index}]")) is not None
        )
        meters = tuple(
            meter
            for index, raw in enumerate(self.array(data, "meters"))
            if (meter := self.meter(raw, f"meters[{index}]")) is not None
        )
        if not buses and "buses" not in data:
            self.problem("buses", "missing: give at least one [[buses]]")
        self.cross_check(area, buses, meters, data)
        return SimConfig(simulation, area, buses, meters)

    def array(self, data: Mapping[str, Any], key: str) -> list[Any]:
        value = data.get(key, [])
        if not isinstance(value, list):
            self.problem(key, f"expected an array of tables ([[{key}]]), got {_kind(value)}")
            return []
        return value

    def simulation(self, data: Mapping[str, Any]) -> SimulationSection:
        path = "simulation"
        defaults = SimulationSection()
        self.unknown(data, ("start", "acceleration", "seed", "timezone", "fast_forward_days"), path)
        start = defaults.start
        if "start" in data:
            start = self.instant(data["start"], f"{path}.start") or start
        timezone = self.text(data, "timezone", path, defaults.timezone, check=_zone)
        return SimulationSection(
            start=start,
            acceleration=self.number(data, "acceleration", path, 1.0, 1e-6, 1e9),
            seed=self.integer(data, "seed", path, 0, 0, 2**63),
            timezone=timezone,
            fast_forward_days=self.integer(data, "fast_forward_days", path, 0, 0, 3660),
        )

    def instant(self, value: Any, path: str) -> datetime | None:
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                self.problem(path, f"{value!r} is not an ISO date-time (2026-01-01T00:00:00Z)")
                return None
        if isinstance(value, date) and not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day, tzinfo=UTC)
        if not isinstance(value, datetime):
            self.problem(path, f"expected a date-time, got {value!r}")
            return None
        if value.tzinfo is None:
            self.problem(path, "give the UTC offset (…T00:00:00Z): simulated time is UTC")
            return None
        return value.astimezone(UTC)

    def area(self, data: Mapping[str, Any]) -> AreaSection:
        path = "area"
        defaults = AreaSection()
        self.unknown(
            data,
            (
                "id",
                "loss_percent",
                "theft_watts",
                "supply_address",
                "supply_protocol",
                "supply_bus",
            ),
            path,
        )
        loss = defaults.loss_percent
        if "loss_percent" in data:
            raw = data["loss_percent"]
            try:
                if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                    raise InvalidOperation
                loss = Decimal(str(raw))
                if not Decimal(0) <= loss <= Decimal(50):
                    self.problem(f"{path}.loss_percent", f"must be 0..50, got {raw!r}")
                    loss = defaults.loss_percent
            except InvalidOperation:
                self.problem(f"{path}.loss_percent", f"expected a number, got {raw!r}")
        supply_bus = self.text(data, "supply_bus", path, "") or None
        return AreaSection(
            id=self.text(data, "id", path, defaults.id, check=_not_blank),
            loss_percent=loss,
            theft_watts=self.integer(data, "theft_watts", path, 0, 0, 10_000_000),
            supply_address=self.text(
                data, "supply_address", path, defaults.supply_address, check=_meter_address
            ),
            supply_protocol=self.one_of(
                data, "supply_protocol", path, ("dlt698.45",), defaults.supply_protocol
            ),
            supply_bus=supply_bus,
        )

    def bus(self, data: Any, path: str) -> BusSection | None:
        if not isinstance(data, Mapping):
            self.problem(path, f"expected a table, got {_kind(data)}")
            return None
        self.unknown(data, ("name", "protocol", "transport", "seed", "wire_time", "faults"), path)
        name = self.text(data, "name", path, "", check=_not_blank, required=True)
        protocol = self.text(data, "protocol", path, "", check=_line, required=True)
        transport = self.text(data, "transport", path, "pty", check=_transport)
        wire_time = fault_plan = None
        if "wire_time" in data:
            wire_time = self.wrap(WireTime.from_dict, data["wire_time"], f"{path}.wire_time")
        if "faults" in data:
            fault_plan = self.wrap(FaultPlan.from_dict, data["faults"], f"{path}.faults")
        if not name or not protocol:
            return None
        return BusSection(
            name=name,
            protocol=line_family(protocol),
            transport=transport,
            seed=self.integer(data, "seed", path, 0, 0, 2**63),
            wire_time=wire_time,
            faults=fault_plan,
        )

    def wrap(self, parse: Callable[[Any, str], T], value: Any, path: str) -> T | None:
        """Sub-tables the bus and fault modules already validate (first problem only)."""
        try:
            return parse(value, path)
        except ValueError as exc:
            message = str(exc)
            self.problems.append(message if message.startswith(path) else f"{path}: {message}")
            return None

    def meter(self, data: Any, path: str) -> MeterSection | None:
        if not isinstance(data, Mapping):
            self.problem(path, f"expected a table, got {_kind(data)}")
            return None
        fields = tuple(f for f in MeterSection.__dataclass_fields__)
        self.unknown(data, fields, path)
        meter_id = self.text(data, "id", path, "", check=_not_blank, required=True)
        protocol = self.one_of(data, "protocol", path, PROTOCOLS, "", required=True)
        bus = self.text(data, "bus", path, "", check=_not_blank, required=True)
        unit_id = self.integer(data, "unit_id", path, 1, 1, 247)
        if protocol == "modbus-rtu":
            address = self.text(data, "address", path, str(unit_id), check=_not_blank)
        else:
            address = self.text(data, "address", path, "", check=_meter_address, required=True)
        key = None
        if "security_key" in data:
            key_text = self.text(data, "security_key", path, "", check=_hex_key)
            key = bytes.fromhex(key_text) if key_text else None
        latency = None
        if "latency" in data:
            latency = self.wrap(latency_from_dict, data["latency"], f"{path}.latency")
        fault_plan = None
        if "faults" in data:
            fault_plan = self.wrap(FaultPlan.from_dict, data["faults"], f"{path}.faults")
        meter_faults = self.meter_faults(data.get("meter_faults", []), f"{path}.meter_faults")
        section = MeterSection(
            id=meter_id,
            address=address,
            protocol=protocol,
            bus=bus,
            customer_class=self.one_of(
                data, "customer_class", path, CUSTOMER_CLASSES, "residential"
            ),
            scale=self.number(data, "scale", path, 1.0, 0.0, 1000.0),
            pv_peak_watts=self.integer(data, "pv_peak_watts", path, 0, 0, 1_000_000),
            unit_id=unit_id,
            modbus_model=self.one_of(data, "modbus_model", path, tuple(METER_MAPS), "sdm120"),
            bypass_percent=self.integer(data, "bypass_percent", path, 0, 0, 100),
            reversed_wiring=self.flag(data, "reversed_wiring", path),
            wired_to=self.text(data, "wired_to", path, "") or None,
            dead=self.flag(data, "dead", path),
            drift_ppm=self.number(data, "drift_ppm", path, 0.0, -100_000, 100_000),
            prepaid=self.flag(data, "prepaid", path),
            protected=self.flag(data, "protected", path),
            allow_plaintext_remote_control=self.flag(data, "allow_plaintext_remote_control", path),
            security_key=key,
            latency=latency,
            faults=fault_plan,
            meter_faults=meter_faults,
        )
        if not meter_id or not protocol or not bus or not address:
            return None
        return section

    def meter_faults(self, value: Any, path: str) -> tuple[MeterFault, ...]:
        """``[{ at = 2026-01-03T02:00:00Z, kind = "clock_jump", delta_seconds = 600 }, …]``."""
        if not isinstance(value, list):
            self.problem(path, f"expected an array of tables, got {_kind(value)}")
            return ()
        kinds = tuple(kind.value for kind in FaultKind)
        found: list[MeterFault] = []
        for index, raw in enumerate(value):
            where = f"{path}[{index}]"
            if not isinstance(raw, Mapping):
                self.problem(where, f"expected a table, got {_kind(raw)}")
                continue
            self.unknown(raw, ("at", "kind", "delta_seconds", "new_address"), where)
            kind = self.one_of(raw, "kind", where, kinds, "", required=True)
            at = self.instant(raw["at"], f"{where}.at") if "at" in raw else None
            if "at" not in raw:
                self.problem(f"{where}.at", "missing")
            delta = self.get(raw, "delta_seconds", where, (int, float), None)
            new_address = self.text(raw, "new_address", where, "", check=_meter_address)
            if kind == FaultKind.CLOCK_JUMP and delta is None:
                self.problem(f"{where}.delta_seconds", "a clock_jump needs delta_seconds")
                continue
            if kind == FaultKind.METER_REPLACED and not new_address:
                self.problem(f"{where}.new_address", "a meter_replaced needs new_address")
                continue
            if not kind or at is None:
                continue
            found.append(
                MeterFault(
                    at,
                    FaultKind(kind),
                    delta=None if delta is None else timedelta(seconds=delta),
                    new_address=new_address or None,
                )
            )
        return tuple(sorted(found, key=lambda fault: fault.at))

    def cross_check(
        self,
        area: AreaSection,
        buses: tuple[BusSection, ...],
        meters: tuple[MeterSection, ...],
        data: Mapping[str, Any],
    ) -> None:
        """Relations between sections: names exist, protocols fit their line, no twins."""
        raw_meters = self.array(data, "meters") if "meters" in data else []
        index_of = {
            raw.get("id"): i for i, raw in enumerate(raw_meters) if isinstance(raw, Mapping)
        }
        bus_lines: dict[str, str] = {}
        for index, bus in enumerate(buses):
            if bus.name in bus_lines:
                self.problem(f"buses[{index}].name", f"{bus.name!r} is used by another bus")
            bus_lines[bus.name] = bus.protocol
        tcp_ports = [
            (i, b.transport)
            for i, b in enumerate(buses)
            if _TCP.match(b.transport) and not b.transport.endswith(":0")
        ]
        seen_ports: set[str] = set()
        for index, transport in tcp_ports:
            if transport in seen_ports:
                self.problem(f"buses[{index}].transport", f"{transport} is used by another bus")
            seen_ports.add(transport)
        ids: set[str] = set()
        on_bus: dict[tuple[str, str], str] = {}
        for meter in meters:
            path = f"meters[{index_of.get(meter.id, '?')}]"
            if meter.id in ids or meter.id == "supply":
                self.problem(f"{path}.id", f"{meter.id!r} is used by another meter")
            ids.add(meter.id)
            line = bus_lines.get(meter.bus)
            if line is None:
                if bus_lines:
                    known = ", ".join(bus_lines)
                    self.problem(f"{path}.bus", f"{meter.bus!r} is not a bus (buses: {known})")
            elif line_family(meter.protocol) != line:
                self.problem(
                    f"{path}.bus",
                    f"a {meter.protocol} meter cannot share the {line} line {meter.bus!r}",
                )
            slot = str(meter.unit_id) if meter.protocol == "modbus-rtu" else meter.address
            what = "unit_id" if meter.protocol == "modbus-rtu" else "address"
            twin = on_bus.get((meter.bus, slot))
            if twin is not None:
                self.problem(f"{path}.{what}", f"{slot} is already meter {twin!r} on {meter.bus!r}")
            on_bus[(meter.bus, slot)] = meter.id
        for meter in meters:
            path = f"meters[{index_of.get(meter.id, '?')}]"
            if meter.wired_to is not None and meter.wired_to not in ids:
                self.problem(f"{path}.wired_to", f"{meter.wired_to!r} is not a meter id")
            if meter.wired_to == meter.id:
                self.problem(f"{path}.wired_to", "a meter cannot be wired to itself")
        if area.supply_bus is not None:
            line = bus_lines.get(area.supply_bus)
            if line is None:
                self.problem("area.supply_bus", f"{area.supply_bus!r} is not a bus")
            elif line != "dlt698.45":
                self.problem(
                    "area.supply_bus",
                    f"the supply meter speaks dlt698.45; {area.supply_bus!r} is {line}",
                )
            elif (area.supply_bus, area.supply_address) in on_bus:
                self.problem(
                    "area.supply_address", f"{area.supply_address} is also a household meter"
                )


def _kind(value: Any) -> str:
    names: dict[type, str] = {list: "an array", dict: "a table", str: "a string"}
    return names.get(type(value), repr(value))


def _names(kinds: tuple[type, ...]) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _range(value: float, low: float, high: float) -> str | None:
    if not low <= value <= high:
        return f"must be {low:g}..{high:g}, got {value!r}"
    return None


def _not_blank(value: str) -> str | None:
    return "must not be empty" if not value.strip() else None


def _zone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"{value!r} is not an IANA time zone (Asia/Shanghai)"
    return None


def _meter_address(value: str) -> str | None:
    if not _DIGITS.match(value) or len(value) != 12:
        return f"{value!r} is not a meter address: 12 decimal digits, nameplate order"
    return None


def _hex_key(value: str) -> str | None:
    try:
        key = bytes.fromhex(value)
    except ValueError:
        return "expected hex digits"
    return None if len(key) >= 16 else "a key needs at least 16 bytes (32 hex digits)"


def _line(value: str) -> str | None:
    try:
        line_family(value)
    except ValueError:
        return f"{value!r} is not one of {', '.join(LINES)}"
    return None


def _transport(value: str) -> str | None:
    if value == "pty":
        return None
    match = _TCP.match(value)
    if match is None or int(match["port"]) > 65535:
        return f"{value!r} is not 'pty' or 'tcp://HOST:PORT' (port 0 picks a free one)"
    return None


# ---------------------------------------------------------------- running


@dataclass
class Simulation:
    """An area, its clock and its buses, ready to serve."""

    config: SimConfig
    clock: SimClock
    area: TransformerArea
    buses: dict[str, Bus]
    transports: dict[str, PtyTransport | TcpSerialServer] = field(default_factory=dict)

    def fast_forward(self, days: int) -> None:
        self.area.fast_forward(timedelta(days=days))

    def tick(self) -> None:
        """Bring the area up to the clock (the run loop calls this as wall time passes)."""
        self.area.advance(self.clock.now_us())

    async def start(self) -> dict[str, str]:
        """Put every bus on its transport; returns bus name → where it listens."""
        where: dict[str, str] = {}
        try:
            for bus in self.config.buses:
                transport = await start_transport(self.buses[bus.name], bus.transport)
                self.transports[bus.name] = transport
                where[bus.name] = (
                    transport.path if isinstance(transport, PtyTransport) else transport.url
                )
        except BaseException:
            await self.close()
            raise
        return where

    async def close(self) -> None:
        for transport in self.transports.values():
            await transport.close()
        self.transports.clear()


def build(config: SimConfig, *, clock: SimClock | None = None) -> Simulation:
    """The area and its buses as the config says (no I/O; :meth:`Simulation.start` serves)."""
    sim = config.simulation
    if clock is None:
        clock = SimClock(sim.start, acceleration=sim.acceleration)
    theft = ConstantLoad(config.area.theft_watts) if config.area.theft_watts else None
    area = TransformerArea(
        [meter.household() for meter in config.meters],
        sim.start,
        name=config.area.id,
        seed=sim.seed,
        loss_percent=config.area.loss_percent,
        theft=theft,
        clock=clock,
        supply_address=config.area.supply_address,
        zone=sim.timezone,
    )
    for meter in config.meters:
        if meter.security_key is not None:
            area.meters[meter.id].security_key = meter.security_key  # before devices() reads it
    devices = area.devices()
    buses: dict[str, Bus] = {}
    for bus in config.buses:
        buses[bus.name] = Bus(
            bus.protocol, wire=bus.wire_time, faults=bus.faults, seed=sim.seed * 1_000 + bus.seed
        )
    for meter in config.meters:
        buses[meter.bus].attach(devices[meter.id], faults=meter.faults, latency=meter.latency)
    if config.area.supply_bus is not None:
        buses[config.area.supply_bus].attach(devices["supply"])
    return Simulation(config, clock, area, buses)
