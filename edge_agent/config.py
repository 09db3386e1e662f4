"""The edge agent's configuration: one TOML file, validated whole at start.

``load_config()`` reads the file named by its argument, else by ``$METER2CASH_EDGE_CONFIG``,
else ``/etc/meter2cash/edge.toml``, into frozen dataclasses. Every problem in the file is
collected and raised together as one :class:`ConfigError`, each :class:`Problem` naming the
key path (``buses[1].baud``, 0-based like jq), what is wrong and what to do::

    buses[1].baud: 2401 is not a standard rate; use one of 1200, 2400, 4800, 9600, ...

so a technician fixes the whole file in one go instead of one traceback per restart.

Exceptions::

    ValueError
     └── ConfigError        .problems: list[Problem(key, message)]

:func:`config_hash` is stable over the semantic content (key order, whitespace, comments
and spelling out a default do not change it; any value does), for the birth message.
:func:`to_toml` writes a config back out; :data:`EXAMPLE_TOML` is the complete, commented
example shipped as ``examples/edge.toml``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import time
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_PATH",
    "EXAMPLE_TOML",
    "GATEWAY_METER_LIMIT",
    "PROTOCOL_FAMILIES",
    "STANDARD_BAUD_RATES",
    "ArchiveConfig",
    "BusConfig",
    "ClockCheckTask",
    "ClockConfig",
    "ConfigError",
    "ControlConfig",
    "CurveTask",
    "DailyFrozenTask",
    "EdgeConfig",
    "EventTask",
    "GatewayConfig",
    "MonthlyFrozenTask",
    "Problem",
    "RetentionConfig",
    "StorageConfig",
    "TasksConfig",
    "UplinkConfig",
    "config_diff",
    "config_hash",
    "config_path",
    "example",
    "load_config",
    "parse_config",
    "to_toml",
]

DEFAULT_CONFIG_PATH = Path("/etc/meter2cash/edge.toml")
CONFIG_ENV_VAR = "METER2CASH_EDGE_CONFIG"

STANDARD_BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 115200)
PROTOCOL_FAMILIES = ("dlt645", "dlt698", "modbus-rtu")
PARITIES = ("E", "N", "O")
# MTR_MAX_NUM 2040 in State Grid concentrator firmware (CtsRedef.h); the archive default.
GATEWAY_METER_LIMIT = 2040
# 32 unit loads per RS-485 segment by the standard; 1/8-UL transceivers allow 256.
BUS_METER_LIMIT = 256
CURVE_INTERVALS_MIN = (1, 5, 15, 30, 60)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HOST_PORT_RE = re.compile(r"^(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})$")
_TIME_RE = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?$")


# ---------------------------------------------------------------------------------------------
# Problems and the error


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration (or the archive): where, and what to do."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class ConfigError(ValueError):
    """The configuration cannot be used; :attr:`problems` lists everything wrong with it."""

    def __init__(self, problems: list[Problem], source: str = "configuration") -> None:
        self.problems = list(problems)
        self.source = source
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{source} has {count} {noun}:"]
        lines += [f"  {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# The configuration, as frozen dataclasses


@dataclass(frozen=True)
class GatewayConfig:
    id: str
    timezone: str = "Asia/Shanghai"


@dataclass(frozen=True)
class RetentionConfig:
    """How many days each kind of record is kept after central has acknowledged it.

    Defaults exceed what the field expects of a concentrator (31 days daily-frozen,
    12 months monthly, 10 days of curves) so central can ask for a resend.
    """

    daily: int = 62
    monthly: int = 400
    curve: int = 31
    instant: int = 7
    event: int = 180
    raw_frames: int = 2


@dataclass(frozen=True)
class StorageConfig:
    path: str = "/var/lib/meter2cash/edge.db"
    quota_mb: int = 1024
    retention: RetentionConfig = field(default_factory=RetentionConfig)


@dataclass(frozen=True)
class BusConfig:
    """One RS-485 line (or a serial server standing in for one) and how to talk on it."""

    name: str
    port: str
    protocol: str = "dlt645"
    baud: int = 2400
    parity: str = "E"
    data_bits: int = 8
    stop_bits: int = 1
    # DL/T 645 meters answer within 20-500 ms in practice; the bus master adapts per meter.
    response_timeout_ms: int = 500
    inter_byte_timeout_ms: int = 50
    turnaround_ms: int = 20
    pre_send_silence_ms: int = 20
    retries: int = 1
    echo: bool = False
    rs485_kernel_mode: bool = False
    max_meters: int = BUS_METER_LIMIT

    @property
    def line_settings(self) -> tuple[str, int, str, int, int, bool]:
        """What reopening the port depends on; anything else changes without a reopen."""
        return (
            self.port, self.baud, self.parity, self.data_bits, self.stop_bits,
            self.rs485_kernel_mode,
        )  # fmt: skip

    @property
    def bits_per_char(self) -> int:
        """Start + data + parity + stop bits: 11 for 8E1, the figure wire time uses."""
        return 1 + self.data_bits + (0 if self.parity == "N" else 1) + self.stop_bits

    @property
    def char_time_ms(self) -> float:
        return self.bits_per_char * 1000 / self.baud


@dataclass(frozen=True)
class DailyFrozenTask:
    enabled: bool = True
    # Meters freeze at 00:00; reading at 00:05 leaves them time to finish the freeze.
    at: time = time(0, 5)


@dataclass(frozen=True)
class MonthlyFrozenTask:
    enabled: bool = True
    day: int = 1
    at: time = time(0, 15)


@dataclass(frozen=True)
class CurveTask:
    enabled: bool = True
    interval_min: int = 15


@dataclass(frozen=True)
class EventTask:
    enabled: bool = True
    interval_min: int = 60


@dataclass(frozen=True)
class ClockCheckTask:
    enabled: bool = True
    at: time = time(3, 30)
    after_power_up: bool = True


@dataclass(frozen=True)
class TasksConfig:
    daily_frozen: DailyFrozenTask = field(default_factory=DailyFrozenTask)
    monthly_frozen: MonthlyFrozenTask = field(default_factory=MonthlyFrozenTask)
    curve: CurveTask = field(default_factory=CurveTask)
    events: EventTask = field(default_factory=EventTask)
    clock_check: ClockCheckTask = field(default_factory=ClockCheckTask)
    # 补抄 window: 3 days in the State Grid spec, 7 in Jiangsu.
    backfill_days: int = 3


@dataclass(frozen=True)
class ClockConfig:
    threshold_s: int = 60
    # Firmware rule: never set a meter clock within 5 min of the hour or midnight, so a
    # clock change never crosses a freeze instant.
    forbidden_window_min: int = 5
    max_syncs_per_meter_per_day: int = 2
    broadcast: bool = True

    def is_forbidden(self, at: time) -> bool:
        """True when a clock sync at local time ``at`` would be too close to the hour."""
        minute_of_hour = at.minute + at.second / 60
        window = self.forbidden_window_min
        return minute_of_hour < window or minute_of_hour > 60 - window


@dataclass(frozen=True)
class ArchiveConfig:
    path: str = "/var/lib/meter2cash/archive.db"
    max_meters: int = GATEWAY_METER_LIMIT


@dataclass(frozen=True)
class ControlConfig:
    socket: str = "/run/meter2cash/edge.sock"
    mode: int = 0o660


@dataclass(frozen=True)
class UplinkConfig:
    """The MQTT uplink to central (edge.md D2; ``docs/edge-uplink.md``).

    The files are the enrolment bundle (``central gateway enroll``) and central's public
    command key. ``client_id`` empty means the gateway id, which the broker's ACL expects.
    """

    enabled: bool = False
    host: str = "localhost"
    port: int = 8883
    ca_file: str = "/etc/meter2cash/bundle/ca.crt"
    cert_file: str = "/etc/meter2cash/bundle/gateway.crt"
    key_file: str = "/etc/meter2cash/bundle/gateway.key"
    signing_key_file: str = "/etc/meter2cash/bundle/signing.key"
    central_key_file: str = "/etc/meter2cash/central.pub"
    client_id: str = ""
    batch_size: int = 500
    window: int = 4
    resend_timeout_s: int = 30
    keepalive_s: int = 30


@dataclass(frozen=True)
class EdgeConfig:
    gateway: GatewayConfig
    storage: StorageConfig = field(default_factory=StorageConfig)
    buses: tuple[BusConfig, ...] = ()
    tasks: TasksConfig = field(default_factory=TasksConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    uplink: UplinkConfig = field(default_factory=UplinkConfig)
    source: str = field(default="<memory>", compare=False)

    def bus(self, name: str) -> BusConfig:
        for bus in self.buses:
            if bus.name == name:
                return bus
        raise KeyError(name)

    @property
    def bus_names(self) -> tuple[str, ...]:
        return tuple(bus.name for bus in self.buses)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.gateway.timezone)


# ---------------------------------------------------------------------------------------------
# Reading a table with all problems collected

T = TypeVar("T")
_MISSING: Any = object()


def _show(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, time):
        return json.dumps(value.strftime("%H:%M"))
    return repr(value) if not isinstance(value, int | float) else str(value)


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


class _Table:
    """Reads one TOML table; each accessor records a problem and returns the default."""

    def __init__(self, data: object, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        self.seen: set[str] = set()
        if isinstance(data, dict):
            self.data: dict[str, Any] = data
        else:
            self.data = {}
            problems.append(Problem(path, f"must be a table, got {_type_name(data)}"))

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def problem(self, name: str, message: str) -> None:
        self.problems.append(Problem(self.key(name), message))

    def raw(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name, _MISSING)

    def table(self, name: str) -> _Table:
        value = self.raw(name)
        return _Table({} if value is _MISSING else value, self.key(name), self.problems)

    def string(self, name: str, default: str | None, check: Callable[[str], str | None]) -> str:
        value = self.raw(name)
        if value is _MISSING:
            if default is None:
                self.problem(name, "is required")
                return ""
            return default
        if not isinstance(value, str):
            self.problem(name, f"must be a string, got {_type_name(value)} {_show(value)}")
            return default or ""
        complaint = check(value)
        if complaint:
            self.problem(name, complaint)
            return default or ""
        return value

    def integer(self, name: str, default: int, low: int, high: int, advice: str = "") -> int:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(name, f"must be an integer, got {_type_name(value)} {_show(value)}")
            return default
        if not low <= value <= high:
            hint = f"; {advice}" if advice else ""
            self.problem(name, f"{value} is outside {low}..{high}{hint}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.problem(name, f"must be true or false, got {_show(value)}")
            return default
        return value

    def choice(self, name: str, default: T, choices: tuple[T, ...], what: str = "") -> T:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if value not in choices or isinstance(value, bool):
            listed = ", ".join(str(choice) for choice in choices)
            self.problem(name, f"{_show(value)} is not {what or 'allowed'}; use one of {listed}")
            return default
        return value  # type: ignore[no-any-return]

    def clock_time(self, name: str, default: time) -> time:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if isinstance(value, time):  # TOML local time 00:05:00
            return value.replace(second=0, microsecond=0) if value.second == 0 else value
        match = _TIME_RE.match(value) if isinstance(value, str) else None
        if match and int(match[1]) < 24 and int(match[2]) < 60 and int(match[3] or 0) < 60:
            return time(int(match[1]), int(match[2]), int(match[3] or 0))
        self.problem(
            name, f'{_show(value)} is not a time of day; write it as "HH:MM", e.g. "00:05"'
        )
        return default

    def finish(self) -> None:
        for name in self.data:
            if name not in self.seen:
                known = sorted(self.seen)
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
                self.problem(name, f"unknown key; {hint}")


def _check_name(value: str) -> str | None:
    if _NAME_RE.match(value):
        return None
    return f"{_show(value)} is not a usable name; use 1-64 letters, digits, '_', '.' or '-'"


def _check_timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f'{_show(value)} is not a known IANA time zone; use e.g. "Asia/Shanghai"'
    return None


def _check_path(value: str) -> str | None:
    if value.startswith("/"):
        return None
    return f"{_show(value)} is not an absolute path; write it starting with /"


def _check_port(value: str) -> str | None:
    for scheme in ("socket://", "rfc2217://"):
        if value.startswith(scheme):
            match = _HOST_PORT_RE.match(value[len(scheme) :])
            if match and 1 <= int(match["port"]) <= 65535:
                return None
            return f"{_show(value)} is not a serial server address; write {scheme}HOST:PORT"
    if value.startswith("pty:"):
        return None if len(value) > 4 else "pty: needs a name or path after it, e.g. pty:/dev/pts/3"
    if value.startswith("/") and len(value) > 1:
        return None
    return (
        f"{_show(value)} is not a port; use a device path (/dev/ttyS1, /dev/pts/3), "
        "pty:PATH, socket://HOST:PORT or rfc2217://HOST:PORT"
    )


# ---------------------------------------------------------------------------------------------
# Sections


def _read_gateway(table: _Table) -> GatewayConfig:
    config = GatewayConfig(
        id=table.string("id", None, _check_name),
        timezone=table.string("timezone", "Asia/Shanghai", _check_timezone),
    )
    table.finish()
    return config


def _read_storage(table: _Table) -> StorageConfig:
    path = table.string("path", StorageConfig.path, _check_path)
    quota = table.integer(
        "quota_mb", StorageConfig.quota_mb, 16, 1_048_576, "the log needs at least 16 MB"
    )
    kept = table.table("retention")
    defaults = RetentionConfig()
    days = {}
    for kind in ("daily", "monthly", "curve", "instant", "event", "raw_frames"):
        low = 0 if kind == "raw_frames" else 1
        advice = "days to keep acknowledged records" + (
            "; 0 keeps no raw frames" if kind == "raw_frames" else ""
        )
        days[kind] = kept.integer(kind, getattr(defaults, kind), low, 36_500, advice)
    kept.finish()
    table.finish()
    return StorageConfig(path=path, quota_mb=quota, retention=RetentionConfig(**days))


def _read_bus(table: _Table, meter_limit: int) -> BusConfig:
    d = BusConfig
    name = table.string("name", None, _check_name)
    port = table.string("port", None, _check_port)
    protocol = table.choice("protocol", d.protocol, PROTOCOL_FAMILIES, "a protocol family")
    baud = table.choice("baud", d.baud, STANDARD_BAUD_RATES, "a standard rate")
    parity = table.choice("parity", d.parity, PARITIES, "a parity")
    data_bits = table.choice("data_bits", d.data_bits, (7, 8), "a character size")
    stop_bits = table.choice("stop_bits", d.stop_bits, (1, 2), "a stop bit count")
    response = table.integer("response_timeout_ms", d.response_timeout_ms, 20, 10_000)
    inter_byte = table.integer("inter_byte_timeout_ms", d.inter_byte_timeout_ms, 1, 1_000)
    turnaround = table.integer("turnaround_ms", d.turnaround_ms, 0, 1_000)
    silence = table.integer("pre_send_silence_ms", d.pre_send_silence_ms, 0, 1_000)
    retries = table.integer("retries", d.retries, 0, 5, "retries multiply the cost of a dead meter")
    echo = table.boolean("echo", d.echo)
    kernel = table.boolean("rs485_kernel_mode", d.rs485_kernel_mode)
    max_meters = table.integer(
        "max_meters",
        min(d.max_meters, meter_limit),
        1,
        meter_limit,
        "a bus cannot hold more meters than archive.max_meters",
    )
    table.finish()
    bus = BusConfig(
        name=name, port=port, protocol=protocol, baud=baud, parity=parity,
        data_bits=data_bits, stop_bits=stop_bits, response_timeout_ms=response,
        inter_byte_timeout_ms=inter_byte, turnaround_ms=turnaround,
        pre_send_silence_ms=silence, retries=retries, echo=echo,
        rs485_kernel_mode=kernel, max_meters=max_meters,
    )  # fmt: skip
    if protocol == "modbus-rtu":
        # Modbus RTU frames are delimited by 3.5 character times of silence (with the
        # parity bit counted: 11 bits a character at 8E1).
        t35 = 3.5 * bus.char_time_ms
        if silence < t35:
            need = int(t35) + (0 if t35 == int(t35) else 1)
            table.problem(
                "pre_send_silence_ms",
                f"{silence} ms is shorter than Modbus t3.5 ({t35:.1f} ms at {baud} baud "
                f"{data_bits}{parity}{stop_bits}); use at least {need}",
            )
    return bus


def _read_tasks(table: _Table) -> TasksConfig:
    daily = table.table("daily_frozen")
    daily_task = DailyFrozenTask(
        enabled=daily.boolean("enabled", True), at=daily.clock_time("at", DailyFrozenTask.at)
    )
    daily.finish()
    monthly = table.table("monthly_frozen")
    monthly_task = MonthlyFrozenTask(
        enabled=monthly.boolean("enabled", True),
        day=monthly.integer("day", 1, 1, 28, "use 1-28 so the day exists in every month"),
        at=monthly.clock_time("at", MonthlyFrozenTask.at),
    )
    monthly.finish()
    curve = table.table("curve")
    curve_task = CurveTask(
        enabled=curve.boolean("enabled", True),
        interval_min=curve.choice(
            "interval_min", 15, CURVE_INTERVALS_MIN, "an interval that divides the hour"
        ),
    )
    curve.finish()
    events = table.table("events")
    event_task = EventTask(
        enabled=events.boolean("enabled", True),
        interval_min=events.integer("interval_min", 60, 1, 1440),
    )
    events.finish()
    check = table.table("clock_check")
    check_task = ClockCheckTask(
        enabled=check.boolean("enabled", True),
        at=check.clock_time("at", ClockCheckTask.at),
        after_power_up=check.boolean("after_power_up", True),
    )
    check.finish()
    backfill = table.integer(
        "backfill_days", 3, 0, 31, "3 is the State Grid rule, 7 the Jiangsu one; 0 disables 补抄"
    )
    table.finish()
    return TasksConfig(daily_task, monthly_task, curve_task, event_task, check_task, backfill)


def _read_clock(table: _Table) -> ClockConfig:
    config = ClockConfig(
        threshold_s=table.integer("threshold_s", 60, 1, 3600),
        forbidden_window_min=table.integer("forbidden_window_min", 5, 0, 29),
        max_syncs_per_meter_per_day=table.integer("max_syncs_per_meter_per_day", 2, 1, 24),
        broadcast=table.boolean("broadcast", True),
    )
    table.finish()
    return config


def _read_archive(table: _Table) -> ArchiveConfig:
    config = ArchiveConfig(
        path=table.string("path", ArchiveConfig.path, _check_path),
        max_meters=table.integer("max_meters", GATEWAY_METER_LIMIT, 1, 65_535),
    )
    table.finish()
    return config


def _read_control(table: _Table) -> ControlConfig:
    socket = table.string("socket", ControlConfig.socket, _check_path)
    raw = table.raw("mode")
    mode = ControlConfig.mode
    if raw is not _MISSING:
        parsed: int | None = None
        if isinstance(raw, str) and re.fullmatch(r"0?[0-7]{3}", raw):
            parsed = int(raw, 8)
        elif isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 0o777:
            parsed = raw
        if parsed is None:
            table.problem("mode", f'{_show(raw)} is not a file mode; write it as "0660"')
        elif parsed & 0o007:
            table.problem(
                "mode",
                f'{parsed:04o} lets every local user drive the meters; use "0660" and a group',
            )
        elif parsed & 0o600 != 0o600:
            table.problem("mode", f'{parsed:04o} locks the agent\'s own user out; use "0660"')
        else:
            mode = parsed
    table.finish()
    return ControlConfig(socket=socket, mode=mode)


def _check_host(value: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,253}|\[[0-9A-Fa-f:.]+\]", value):
        return None
    return f'{_show(value)} is not a host name or address; write e.g. "central.example.net"'


def _check_client_id(value: str) -> str | None:
    if value == "" or re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", value):
        return None
    return f"{_show(value)} is not a gateway id; leave it empty to use gateway.id"


def _read_uplink(table: _Table) -> UplinkConfig:
    d = UplinkConfig
    config = UplinkConfig(
        enabled=table.boolean("enabled", d.enabled),
        host=table.string("host", d.host, _check_host),
        port=table.integer("port", d.port, 1, 65535),
        ca_file=table.string("ca_file", d.ca_file, _check_path),
        cert_file=table.string("cert_file", d.cert_file, _check_path),
        key_file=table.string("key_file", d.key_file, _check_path),
        signing_key_file=table.string("signing_key_file", d.signing_key_file, _check_path),
        central_key_file=table.string("central_key_file", d.central_key_file, _check_path),
        client_id=table.string("client_id", d.client_id, _check_client_id),
        batch_size=table.integer(
            "batch_size", d.batch_size, 1, 10_000, "a batch holds at most 10000 records"
        ),
        window=table.integer("window", d.window, 1, 64),
        resend_timeout_s=table.integer("resend_timeout_s", d.resend_timeout_s, 1, 86_400),
        keepalive_s=table.integer("keepalive_s", d.keepalive_s, 5, 3600),
    )
    table.finish()
    return config


def _from_dict(data: Mapping[str, Any], source: str) -> EdgeConfig:
    problems: list[Problem] = []
    root = _Table(dict(data), "", problems)
    gateway = _read_gateway(root.table("gateway"))
    storage = _read_storage(root.table("storage"))
    archive = _read_archive(root.table("archive"))
    raw_buses = root.raw("buses")
    buses: list[BusConfig] = []
    if raw_buses is not _MISSING:
        if not isinstance(raw_buses, list):
            problems.append(
                Problem(
                    "buses", f"must be an array of tables ([[buses]]), got {_type_name(raw_buses)}"
                )
            )
        else:
            for index, item in enumerate(raw_buses):
                buses.append(
                    _read_bus(_Table(item, f"buses[{index}]", problems), archive.max_meters)
                )
    tasks = _read_tasks(root.table("tasks"))
    clock = _read_clock(root.table("clock"))
    control = _read_control(root.table("control"))
    uplink = _read_uplink(root.table("uplink"))
    root.finish()

    problems += _cross_checks(buses, tasks, clock, storage, archive, control)
    if problems:
        raise ConfigError(problems, source)
    return EdgeConfig(
        gateway, storage, tuple(buses), tasks, clock, archive, control, uplink, source
    )


def _cross_checks(
    buses: list[BusConfig],
    tasks: TasksConfig,
    clock: ClockConfig,
    storage: StorageConfig,
    archive: ArchiveConfig,
    control: ControlConfig,
) -> Iterator[Problem]:
    names: dict[str, int] = {}
    ports: dict[str, int] = {}
    for index, bus in enumerate(buses):
        if bus.name and bus.name in names:
            yield Problem(
                f"buses[{index}].name",
                f"{_show(bus.name)} is already the name of buses[{names[bus.name]}]; "
                "give every bus its own name",
            )
        names.setdefault(bus.name, index)
        if bus.port and bus.port in ports:
            yield Problem(
                f"buses[{index}].port",
                f"{_show(bus.port)} is already used by buses[{ports[bus.port]}]; "
                "a line has exactly one owner",
            )
        ports.setdefault(bus.port, index)
    check = tasks.clock_check
    if check.enabled and clock.is_forbidden(check.at):
        yield Problem(
            "tasks.clock_check.at",
            f"{check.at:%H:%M} is within {clock.forbidden_window_min} min of the hour, when "
            'clocks may not be set; move it to e.g. "03:30"',
        )
    paths = {
        "storage.path": storage.path,
        "archive.path": archive.path,
        "control.socket": control.socket,
    }
    seen: dict[str, str] = {}
    for key, path in paths.items():
        if path in seen:
            yield Problem(key, f"{_show(path)} is also {seen[path]}; give each its own file")
        seen.setdefault(path, key)


# ---------------------------------------------------------------------------------------------
# Loading


def config_path(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """Which file to read: ``path``, else ``$METER2CASH_EDGE_CONFIG``, else the default."""
    if path is not None:
        return Path(path)
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV_VAR):
        return Path(env[CONFIG_ENV_VAR])
    return DEFAULT_CONFIG_PATH


def parse_config(text: str, source: str = "<string>") -> EdgeConfig:
    """Parse and validate TOML text; raises :class:`ConfigError` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            [Problem("", f"not valid TOML: {exc}; fix the syntax at that position")], source
        ) from None
    return _from_dict(data, source)


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> EdgeConfig:
    """Read and validate the configuration file (see :func:`config_path` for which one)."""
    chosen = config_path(path, environ)
    try:
        text = chosen.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [
                Problem(
                    "",
                    f"{chosen} does not exist; create it (edge-agent config example shows one), "
                    f"or pass --config PATH or set {CONFIG_ENV_VAR}",
                )
            ],
            str(chosen),
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [Problem("", f"not UTF-8 text (byte {exc.start}); save the file as UTF-8")], str(chosen)
        ) from None
    except OSError as exc:
        raise ConfigError(
            [Problem("", f"cannot read {chosen}: {exc.strerror}; check its permissions")],
            str(chosen),
        ) from None
    return parse_config(text, str(chosen))


# ---------------------------------------------------------------------------------------------
# Writing back out, and hashing


def _plain(config: EdgeConfig) -> dict[str, Any]:
    """The semantic content as TOML-ready plain data (times as "HH:MM", mode as "0660")."""

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: convert(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [convert(item) for item in value]
        if isinstance(value, time):
            return value.strftime("%H:%M:%S" if value.second else "%H:%M")
        return value

    data = convert(asdict(config))
    del data["source"]
    data["control"]["mode"] = f"{config.control.mode:04o}"
    return data  # type: ignore[no-any-return]


def config_hash(config: EdgeConfig) -> str:
    """SHA-256 (hex) of the semantic content: file layout and spelled-out defaults don't count."""
    canonical = json.dumps(
        _plain(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_table(lines: list[str], header: str, data: Mapping[str, Any]) -> None:
    scalars = {key: value for key, value in data.items() if not isinstance(value, dict)}
    tables = {key: value for key, value in data.items() if isinstance(value, dict)}
    if header:
        lines.append("")
        lines.append(header)
    lines.extend(f"{key} = {_toml_value(value)}" for key, value in scalars.items())
    name = header.strip("[]")
    for key, value in tables.items():
        _toml_table(lines, f"[{name}.{key}]", value)


def config_diff(old: EdgeConfig, new: EdgeConfig) -> list[tuple[str, Any, Any]]:
    """Key paths whose values differ, with old and new values (``config diff``, hot reload).

    Buses are matched by name, so ``buses.rs485-1.baud`` rather than an index; a bus only
    in one side shows as ``buses.NAME`` with ``None`` on the other.
    """

    def flatten(data: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
        if isinstance(data, dict):
            for key, value in data.items():
                flatten(value, f"{prefix}.{key}" if prefix else key, out)
        else:
            out[prefix] = data
        return out

    def keyed(config: EdgeConfig) -> tuple[dict[str, Any], dict[str, Any]]:
        data = _plain(config)
        buses = {bus["name"]: bus for bus in data.pop("buses")}
        return flatten(data, "", {}), buses

    (before, old_buses), (after, new_buses) = keyed(old), keyed(new)
    for name in old_buses.keys() & new_buses.keys():
        flatten(old_buses[name], f"buses.{name}", before)
        flatten(new_buses[name], f"buses.{name}", after)
    for name in old_buses.keys() - new_buses.keys():
        before[f"buses.{name}"] = old_buses[name]
    for name in new_buses.keys() - old_buses.keys():
        after[f"buses.{name}"] = new_buses[name]
    return [
        (key, before.get(key), after.get(key))
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]


def to_toml(config: EdgeConfig) -> str:
    """The whole configuration, every key spelled out; parses back to an equal config."""
    data = _plain(config)
    lines: list[str] = []
    for section in ("gateway", "storage", "tasks", "clock", "archive", "control", "uplink"):
        _toml_table(lines, f"[{section}]", data[section])
    for bus in data["buses"]:
        lines.append("")
        lines.append("[[buses]]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in bus.items())
    return "\n".join(lines).lstrip("\n") + "\n"


def example() -> EdgeConfig:
    """The example configuration (:data:`EXAMPLE_TOML`), parsed."""
    return parse_config(EXAMPLE_TOML, "examples/edge.toml")


EXAMPLE_TOML = """\
# meter2cash edge agent configuration (examples/edge.toml).
# Default location /etc/meter2cash/edge.toml; override with --config PATH or
# $METER2CASH_EDGE_CONFIG. Check it with: edge-agent config validate
# Every key below shows its default unless marked "example value".

[gateway]
id = "gw-0001"                # required; example value. Names this gateway to central.
timezone = "Asia/Shanghai"    # the meters' local time (IANA name)

[storage]
path = "/var/lib/meter2cash/edge.db"   # the durable log (SQLite, WAL)
quota_mb = 1024                        # eviction starts here: raw frames first, billing last

[storage.retention]   # days to keep records after central acknowledged them
daily = 62
monthly = 400
curve = 31
instant = 7
event = 180
raw_frames = 2        # 0 keeps none

[tasks]
backfill_days = 3     # 补抄 window, oldest day first (7 in Jiangsu); 0 disables

[tasks.daily_frozen]  # 645 DI 0506xxxx, 698 5004
enabled = true
at = "00:05"

[tasks.monthly_frozen]
enabled = true
day = 1               # 1-28
at = "00:15"

[tasks.curve]
enabled = true
interval_min = 15     # 1, 5, 15, 30 or 60

[tasks.events]
enabled = true
interval_min = 60

[tasks.clock_check]
enabled = true
at = "03:30"          # must lie outside the clock's forbidden window
after_power_up = true

[clock]
threshold_s = 60                  # sync a meter whose clock is off by more than this
forbidden_window_min = 5          # never sync within 5 min of the hour or of midnight
max_syncs_per_meter_per_day = 2
broadcast = true                  # 645 broadcast sync (C=08) where a bus allows it

[archive]
path = "/var/lib/meter2cash/archive.db"   # the meter archive (档案), edit with edge-agent meters
max_meters = 2040                         # the concentrator limit (MTR_MAX_NUM)

[control]
socket = "/run/meter2cash/edge.sock"   # the technician CLI talks to the daemon here
mode = "0660"                          # owner and group only; never world-accessible

[uplink]   # MQTT to central (docs/edge-uplink.md); the files come from the enrolment bundle
enabled = false                                   # true once the bundle is installed
host = "localhost"                                # the broker; its certificate must name it
port = 8883
ca_file = "/etc/meter2cash/bundle/ca.crt"         # the device CA (verifies the broker)
cert_file = "/etc/meter2cash/bundle/gateway.crt"  # this gateway's certificate (CN = gateway id)
key_file = "/etc/meter2cash/bundle/gateway.key"
signing_key_file = "/etc/meter2cash/bundle/signing.key"   # signs batches, births, results
central_key_file = "/etc/meter2cash/central.pub"  # verifies central's commands
client_id = ""                # empty: gateway.id (what the broker's ACL expects)
batch_size = 500              # records per batch, 1..10000
window = 4                    # batches in flight without central's ack
resend_timeout_s = 30         # no ack progress this long: the same batch again
keepalive_s = 30

# One [[buses]] table per RS-485 line; example values.
[[buses]]
name = "rs485-1"
port = "/dev/ttyS1"          # or /dev/pts/N, pty:PATH, socket://HOST:PORT, rfc2217://HOST:PORT
protocol = "dlt645"          # dlt645, dlt698 or modbus-rtu
baud = 2400
parity = "E"                 # E, N or O
data_bits = 8
stop_bits = 1
response_timeout_ms = 500
inter_byte_timeout_ms = 50
turnaround_ms = 20
pre_send_silence_ms = 20
retries = 1
echo = false                 # discard our own bytes on adapters that echo them
rs485_kernel_mode = false    # let the kernel drive RTS/DE (TIOCSRS485)
max_meters = 256

[[buses]]
name = "rs485-2"
port = "socket://192.168.1.50:4001"
protocol = "dlt698"
baud = 9600

[[buses]]
name = "modbus-1"
port = "rfc2217://192.168.1.51:4002"
protocol = "modbus-rtu"
baud = 9600
parity = "N"
stop_bits = 2
response_timeout_ms = 300
pre_send_silence_ms = 5
max_meters = 32
"""
