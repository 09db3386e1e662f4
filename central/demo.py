"""`central demo`: the whole chain on one machine, with the simulator as the oracle.

    meters (firmware_sim, on a pty and a TCP serial server)
      → edge agent (edge_agent.service.Agent: bus masters, Collector, EdgeLog, MQTT uplink)
      → Mosquitto (the production TLS + ACL config from `central broker config`)
      → central ingestion (IngestConsumer → IngestStore on SQLite)

Everything runs from a temporary work directory: a device CA and one enrolled gateway, a
broker on a free port, central's database, the simulated transformer area and the agent's
files. The simulated clock (``SimClock``) is the one clock of the run: the meters answer
on it and the agent's ``Collector`` is built with ``now=clock.now``. Each simulated day the
clock fast-forwards to local 00:06 of the next day, the agent's scheduler runs its due
collection (the daily freeze, due at 00:05), the uplink sends the new records and the
demo waits until central has acknowledged every one of them.

At the end the daily frozen readings in central's database are compared with the
simulator's ground truth: every meter model's own daily freeze (what the meter showed at
00:00 meter time), reading by reading — matches, mismatches, missing, duplicates — and the
collection success from the agent's ledger. :func:`run_demo` returns that summary; the
demo ``holds`` when nothing is missing, wrong, extra or doubled and every slot was read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Final

__all__ = ["DemoError", "DemoOptions", "mosquitto_binary", "run_demo"]

HOST = "127.0.0.1"
ZONE = "Asia/Shanghai"
GATEWAY = "gw-demo"
SUPPLY_ADDRESS = "990000000001"  # the supply meter at the transformer
#: Local time of day the clock jumps to each simulated day (the daily task is due at 00:05).
COLLECT_AT = timedelta(minutes=6)
#: The quantities a daily freeze carries (645 0506 forward/reverse blocks, 698 5004 0010/0020).
DAILY_OBIS = tuple(f"1-0:1.8.{t}" for t in range(5)) + tuple(f"1-0:2.8.{t}" for t in range(5))
START_TIMEOUT_S = 10.0


class DemoError(RuntimeError):
    """The demo cannot run (no mosquitto, a part did not start); the message says why."""


@dataclass(frozen=True)
class DemoOptions:
    days: int = 3
    meters: int = 12  # household meters; the supply meter at the transformer comes on top
    share_698: float = 0.25  # the rest are DL/T 645-2007
    seed: int = 1
    start: date = date(2026, 1, 1)  # the first simulated (local) day
    pace_s: float = 0.0  # wall seconds to linger on each day (for people watching)
    day_timeout_s: float = 60.0  # how long to wait for central to acknowledge a day
    workdir: Path | None = None  # default: a new temporary directory
    keep: bool = False  # keep the work directory (and say where it is)

    def __post_init__(self) -> None:
        if not 1 <= self.days <= 60:
            raise ValueError(
                f"days must be 1..60 (the meters keep 62 daily freezes), got {self.days}"
            )
        if not 1 <= self.meters <= 200:
            raise ValueError(f"meters must be 1..200, got {self.meters}")
        if not 0 <= self.share_698 <= 1:
            raise ValueError(f"share_698 must be 0..1, got {self.share_698}")


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _local_midnight_utc(day: date) -> datetime:
    from shared_protocol.timebase import meter_time_to_utc

    return meter_time_to_utc(datetime(day.year, day.month, day.day), ZONE).astimezone(UTC)


# --------------------------------------------------------------------------- the pieces


@dataclass(frozen=True)
class DemoMeter:
    account: str
    address: str
    protocol: str  # dlt645-2007 | dlt698.45
    bus: str


def demo_meters(options: DemoOptions) -> list[DemoMeter]:
    """Household meters m01… (mostly 645-2007 on a pty line, some 698.45 on TCP) + supply."""
    count_698 = round(options.meters * options.share_698)
    meters = []
    for index in range(1, options.meters + 1):
        is_698 = index > options.meters - count_698
        meters.append(
            DemoMeter(
                account=f"m{index:02d}",
                address=f"{(200 if is_698 else 100) + index:012d}",
                protocol="dlt698.45" if is_698 else "dlt645-2007",
                bus="rs485-698" if is_698 else "rs485-645",
            )
        )
    meters.append(DemoMeter("supply", SUPPLY_ADDRESS, "dlt698.45", "rs485-698"))
    return meters


def area_toml(options: DemoOptions, meters: list[DemoMeter]) -> str:
    start = _local_midnight_utc(options.start).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        "# the demo's transformer area (firmware_sim config, docs/simulator.md)",
        "[simulation]",
        f"start = {start}",
        "acceleration = 1",
        f"seed = {options.seed}",
        f'timezone = "{ZONE}"',
        "",
        "[area]",
        'id = "demo-area"',
        "loss_percent = 3",
        "theft_watts = 100",
        f'supply_address = "{SUPPLY_ADDRESS}"',
        'supply_bus = "rs485-698"',
        "",
        "[[buses]]",
        'name = "rs485-645"',
        'protocol = "dlt645"',
        'transport = "pty"',
        "",
        "[[buses]]",
        'name = "rs485-698"',
        'protocol = "dlt698.45"',
        f'transport = "tcp://{HOST}:0"',
    ]
    classes = ("residential", "residential", "commercial", "residential")
    for index, meter in enumerate(m for m in meters if m.account != "supply"):
        lines += [
            "",
            "[[meters]]",
            f'id = "{meter.account}"',
            f'address = "{meter.address}"',
            f'protocol = "{meter.protocol}"',
            f'bus = "{meter.bus}"',
            f'customer_class = "{classes[index % len(classes)]}"',
        ]
        if index % 5 == 3:
            lines.append("pv_peak_watts = 2500")
    return "\n".join(lines) + "\n"


def edge_toml(work: Path, ports: dict[str, str], broker_port: int, bundle: Path) -> str:
    def port_of(where: str) -> str:
        return where if where.startswith("/") else where.replace("tcp://", "socket://")

    return f"""# the demo gateway (docs/edge-config.md)
[gateway]
id = "{GATEWAY}"
timezone = "{ZONE}"

[storage]
path = "{work / "edge" / "edge.db"}"

[tasks]
backfill_days = 3

[tasks.daily_frozen]
enabled = true
at = "00:05"

[tasks.monthly_frozen]
enabled = false

[tasks.curve]
enabled = false

[tasks.events]
enabled = false

[tasks.clock_check]
enabled = false
after_power_up = false

[archive]
path = "{work / "edge" / "archive.db"}"

[control]
socket = "{work / "edge" / "edge.sock"}"

[uplink]
enabled = true
host = "{HOST}"
port = {broker_port}
ca_file = "{bundle / "ca.crt"}"
cert_file = "{bundle / "gateway.crt"}"
key_file = "{bundle / "gateway.key"}"
signing_key_file = "{bundle / "signing.key"}"
central_key_file = "{work / "central-command.pub"}"
batch_size = 500
window = 4
resend_timeout_s = 5

[[buses]]
name = "rs485-645"
port = "{port_of(ports["rs485-645"])}"
protocol = "dlt645"
baud = 9600
response_timeout_ms = 300

[[buses]]
name = "rs485-698"
port = "{port_of(ports["rs485-698"])}"
protocol = "dlt698"
baud = 9600
response_timeout_ms = 300
"""


class _Mosquitto:
    """Mosquitto on the config `central broker config` wrote; stopped by :meth:`stop`."""

    def __init__(self, binary: str, config_file: Path, log_file: Path, port: int) -> None:
        self.port = port
        self.log_file = log_file
        with log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [binary, "-c", str(config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoError(f"mosquitto exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((HOST, port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise DemoError(f"mosquitto did not listen on {port} in time:\n{self.log()}")

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")[-2000:]

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


class _SimThread:
    """The simulation's asyncio loop on its own thread (the transports live there)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="simulator", daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout: float = START_TIMEOUT_S) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


# --------------------------------------------------------------------------- the oracle


@dataclass
class Reconciliation:
    expected: int = 0
    matched: int = 0
    mismatched: int = 0
    missing: int = 0
    extra: int = 0  # daily readings central has that no freeze explains
    duplicates: int = 0  # more than one reading for one (meter, quantity, day)
    corrected: int = 0  # readings a later seq replaced (central's `corrections`)
    per_meter: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return (
            self.missing == self.mismatched == self.extra == self.duplicates == self.corrected == 0
            and self.matched == self.expected
        )


def truth_freezes(sim: Any, meters: list[DemoMeter], days: list[date]) -> dict[Any, Decimal]:
    """(meter address, OBIS, freeze instant UTC) → value, from each meter model's own daily
    freezes at 00:00 meter time of ``days``: what the meter showed, the simulator's truth."""
    from shared_protocol.timebase import meter_time_to_utc

    wanted = set(days)
    truth: dict[Any, Decimal] = {}
    with sim.area.lock:
        for meter in meters:
            model = sim.area.supply if meter.account == "supply" else sim.area.meters[meter.account]
            for record in model.daily:
                local = record.time
                if local.date() not in wanted or (local.hour, local.minute) != (0, 0):
                    continue
                at = meter_time_to_utc(local, ZONE).astimezone(UTC)
                registers = record.registers
                for tariff in range(5):
                    truth[(model.address, f"1-0:1.8.{tariff}", at)] = registers.import_kwh(tariff)
                    truth[(model.address, f"1-0:2.8.{tariff}", at)] = registers.export_kwh(tariff)
    return truth


#: The supply meter at the transformer is three-phase and CT-connected: its rating (for
#: V9, the largest plausible increment) is the transformer side's, not a household's.
SUPPLY_PHASES: Final = 3
SUPPLY_VOLTAGE_V: Final = 220
SUPPLY_MAX_CURRENT_A: Final = 200


def rate_supply_meter(engine: Any) -> None:
    """Record the supply meter's rating for VEE (households keep the default rating)."""
    from central.vee import set_meter_settings

    with engine.begin() as conn:
        set_meter_settings(
            conn,
            SUPPLY_ADDRESS,
            effective_from=datetime(2000, 1, 1, tzinfo=UTC),
            by="demo",
            phases=SUPPLY_PHASES,
            voltage_v=SUPPLY_VOLTAGE_V,
            max_current_a=SUPPLY_MAX_CURRENT_A,
        )


def vee_outcome(engine: Any) -> dict[str, Any]:
    """How central's VEE judged the stored readings: readings per status, open exceptions
    per rule."""
    from sqlalchemy import func, select

    from central.db.schema import readings
    from central.db.vee_tables import vee_exceptions

    with engine.connect() as conn:
        statuses = conn.execute(
            select(readings.c.vee_status, func.count()).group_by(readings.c.vee_status)
        ).all()
        rules = conn.execute(
            select(vee_exceptions.c.rule, func.count())
            .where(vee_exceptions.c.status == "open")
            .group_by(vee_exceptions.c.rule)
        ).all()
    return {
        "statuses": {str(status or "pending"): n for status, n in sorted(statuses, key=str)},
        "open_exceptions": {rule: n for rule, n in sorted(rules)},
    }


def stored_daily_readings(engine: Any) -> Sequence[Any]:
    """Central's daily frozen readings as rows of (meter, obis, ts, value, corrections)."""
    from sqlalchemy import select

    from central.db.schema import readings

    with engine.connect() as conn:
        rows: Sequence[Any] = conn.execute(
            select(
                readings.c.meter,
                readings.c.obis,
                readings.c.ts,
                readings.c.value,
                readings.c.corrections,
            ).where(readings.c.kind == "daily")
        ).all()
    return rows


def reconcile(
    truth: dict[Any, Decimal], stored: Sequence[Any], meters: list[DemoMeter], days: list[date]
) -> Reconciliation:
    """Compare central's daily readings (rows with meter, obis, ts, value, corrections)
    with the truth, reading by reading."""
    result = Reconciliation(expected=len(truth))
    per_meter = {m.address: Counter[str]() for m in meters}
    first = _local_midnight_utc(days[0])
    end = _local_midnight_utc(days[-1]) + timedelta(days=1)
    seen: Counter[Any] = Counter()
    found: set[Any] = set()
    for row in stored:
        ts = row.ts.astimezone(UTC)
        if not first <= ts < end:
            continue
        key = (row.meter, row.obis, ts)
        seen[(row.meter, row.obis, ts.date())] += 1
        result.corrected += int(row.corrections or 0)
        counts = per_meter.setdefault(row.meter, Counter())
        if key not in truth:
            result.extra += 1
            counts["extra"] += 1
            if len(result.examples) < 10:
                result.examples.append(f"extra {row.meter} {row.obis} {ts:%Y-%m-%dT%H:%MZ}")
            continue
        found.add(key)
        if Decimal(row.value) == truth[key]:
            result.matched += 1
            counts["matched"] += 1
        else:
            result.mismatched += 1
            counts["mismatched"] += 1
            if len(result.examples) < 10:
                result.examples.append(
                    f"mismatch {row.meter} {row.obis} {ts:%Y-%m-%dT%H:%MZ}: "
                    f"central {row.value}, meter {truth[key]}"
                )
    for key in truth.keys() - found:
        result.missing += 1
        per_meter.setdefault(key[0], Counter())["missing"] += 1
        if len(result.examples) < 10:
            result.examples.append(f"missing {key[0]} {key[1]} {key[2]:%Y-%m-%dT%H:%MZ}")
    result.duplicates = sum(n - 1 for n in seen.values() if n > 1)
    result.per_meter = {
        address: {k: counts[k] for k in ("matched", "mismatched", "missing", "extra")}
        for address, counts in sorted(per_meter.items())
    }
    return result


#: A displayed total is the sum of four tariffs each truncated to 0.01 kWh, so it lies
#: below the exact register by less than 0.04 kWh (and a difference of two such totals
#: within 0.04 kWh of the exact difference).
DISPLAY_SLACK = Decimal("0.04")


def energy_check(
    sim: Any, central: dict[tuple[str, str, datetime], Decimal], days: list[date]
) -> dict[str, Any]:
    """Central's forward-active totals against ``firmware_sim.truth``: the register at each
    midnight snapshot, and each day's consumption (the difference of two freezes) against
    the truth row's register change — both within display truncation. Per day also the
    area's totals: what central's freezes say the households used (import − export), what
    they really used,
    what the supply meter measured, the technical loss and the theft."""
    from firmware_sim.meter import kwh
    from firmware_sim.truth import truth_rows
    from shared_protocol.timebase import meter_time_to_utc

    def total(address: str, obis: str, at: datetime) -> Decimal | None:
        return central.get((address, obis, at))

    wanted = set(days)
    with sim.area.lock:
        snapshots = [snap for snap in sim.area.truth if snap.time.date() in wanted]
        rows = [row for row in truth_rows(sim.area) if date.fromisoformat(row.day) in wanted]
    registers = registers_ok = consumption = consumption_ok = 0
    worst = Decimal(0)
    problems: list[str] = []
    for snap in snapshots:
        at = meter_time_to_utc(snap.time, ZONE).astimezone(UTC)
        for account, microjoules in snap.register_import_uj.items():
            value = total(snap.addresses[account], "1-0:1.8.0", at)
            registers += 1
            if value is None:
                continue  # counted as missing by the reconciliation
            diff = kwh(microjoules, 4) - value
            worst = max(worst, abs(diff))
            if Decimal(0) <= diff < DISPLAY_SLACK:
                registers_ok += 1
            elif len(problems) < 10:
                problems.append(f"register {account} {snap.time:%Y-%m-%d}: diff {diff} kWh")
    areas: dict[str, dict[str, Decimal]] = {}
    for row in rows:
        day = date.fromisoformat(row.day)
        start, end = _local_midnight_utc(day), _local_midnight_utc(day + timedelta(days=1))
        before, after = total(row.address, "1-0:1.8.0", start), total(row.address, "1-0:1.8.0", end)
        exported = (total(row.address, "1-0:2.8.0", end) or Decimal(0)) - (
            total(row.address, "1-0:2.8.0", start) or Decimal(0)
        )
        totals = areas.setdefault(
            row.day,
            {
                "central_household_kwh": Decimal("0.00"),
                "true_household_kwh": Decimal("0.0000"),
            },
        )
        if row.account == "supply":
            totals["supply_kwh"] = row.shown_import_kwh
            totals["loss_kwh"] = row.loss_kwh or Decimal(0)
            totals["theft_kwh"] = row.theft_kwh or Decimal(0)
        else:
            totals["true_household_kwh"] += row.true_kwh
        if before is None or after is None:
            continue
        consumption += 1
        if row.account != "supply":
            totals["central_household_kwh"] += after - before - exported
        diff = row.shown_import_kwh - (after - before)
        worst = max(worst, abs(diff))
        if abs(diff) < DISPLAY_SLACK:
            consumption_ok += 1
        elif len(problems) < 10:
            problems.append(f"consumption {row.account} {row.day}: diff {diff} kWh")
    return {
        "holds": registers_ok == registers and consumption_ok == consumption,
        "register_checks": registers,
        "registers_within_truncation": registers_ok,
        "consumption_checks": consumption,
        "consumption_within_truncation": consumption_ok,
        "max_abs_diff_kwh": str(worst),
        "problems": problems,
        "area_days": {day: {k: str(v) for k, v in t.items()} for day, t in sorted(areas.items())},
    }


# --------------------------------------------------------------------------- the run


def _next_day(clock: Any, freeze_day: date, collector: Any) -> Any:
    clock.advance_to(_local_midnight_utc(freeze_day) + COLLECT_AT)
    return collector.run_due()


def _acked(uplink: Any, target: int) -> bool:
    return (uplink.health().last_ack_seq or 0) >= target


def _wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@contextlib.contextmanager
def _workdir(options: DemoOptions) -> Iterator[Path]:
    if options.workdir is not None:
        options.workdir.mkdir(parents=True, exist_ok=True)
        yield options.workdir.absolute()
        return
    # The agent's control socket (<work>/edge/edge.sock) must fit AF_UNIX's 108 bytes.
    parent = tempfile.gettempdir()
    path = Path(tempfile.mkdtemp(prefix="m2c-demo-", dir=parent if len(parent) < 70 else "/tmp"))
    try:
        yield path
    finally:
        if not options.keep:
            shutil.rmtree(path, ignore_errors=True)


def run_demo(options: DemoOptions, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the demo to its end; returns the JSON-ready summary (``"holds"`` says whether
    the reconciliation held). Raises :class:`DemoError` when a part cannot start."""
    say = progress or (lambda _line: None)
    binary = mosquitto_binary()
    if binary is None:
        raise DemoError(
            "mosquitto is not installed; the demo runs the real broker with the production "
            "TLS/ACL config. Install it (apt-get install mosquitto, brew install mosquitto) "
            "and run the demo again"
        )
    try:
        import edge_agent.service
        import edge_agent.uplink  # noqa: F401
        import firmware_sim.config  # noqa: F401
    except ImportError as error:
        raise DemoError(
            f"the demo runs the simulator and an edge agent too ({error}); install them with "
            "pip install -e '.[edge,central,sim]'"
        ) from error
    started = time.monotonic()
    with _workdir(options) as work, contextlib.ExitStack() as stack:
        summary = _run(options, work, binary, say, stack)
        summary["wall_seconds"] = round(time.monotonic() - started, 2)
        summary["workdir"] = str(work) if (options.keep or options.workdir) else None
        return summary


def _run(
    options: DemoOptions,
    work: Path,
    binary: str,
    say: Callable[[str], None],
    stack: contextlib.ExitStack,
) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from central.db import make_engine, upgrade
    from central.ingest.consumer import BrokerConfig, IngestConsumer, import_registry
    from central.ingest.store import IngestStore
    from central.security import (
        BrokerSettings,
        DeviceCA,
        enroll_gateway,
        issue_central_service_identity,
        list_gateways,
        write_broker_config,
    )
    from central.security.enrolment import ca_directory
    from central.vee import InlineValidator
    from edge_agent.archive import Meter, MeterArchive
    from edge_agent.config import load_config
    from edge_agent.service import Agent, ledger_path
    from edge_agent.tasks import Collector, Ledger
    from firmware_sim.config import build, parse_config
    from shared_protocol.wire import public_key_pem

    # -- central: device CA, one gateway, the broker's config, central's identity ------------
    state = work / "central-state"
    DeviceCA.create(ca_directory(state))
    enrolment = enroll_gateway(state, GATEWAY)
    tls_dir = work / "central-tls"
    issue_central_service_identity(state, tls_dir)
    (work / "central-command.pub").write_bytes(public_key_pem(Ed25519PrivateKey.generate()))

    broker: _Mosquitto | None = None
    for attempt in range(3):
        port = _free_port()
        settings = BrokerSettings(
            config_dir=work / "mosquitto",
            persistence_dir=work / "mosquitto" / "data",
            port=port,
            bind_address=HOST,
            # Started as root, mosquitto would drop to user `mosquitto`, which cannot read
            # the 0600 server key in our private temporary directory.
            run_as_user="root" if os.geteuid() == 0 else None,
        )
        settings.persistence_dir.mkdir(parents=True, exist_ok=True)
        files = write_broker_config(state, settings, ["localhost", HOST])
        try:
            broker = _Mosquitto(
                binary, files.config_file, work / "mosquitto" / "mosquitto.log", port
            )
            break
        except DemoError as error:
            if attempt == 2 or "Address already in use" not in str(error):
                raise
    assert broker is not None
    stack.callback(broker.stop)
    say(f"broker: mosquitto on {HOST}:{broker.port} (TLS, client certificates, ACL)")

    database_url = f"sqlite:///{work / 'central.sqlite3'}"
    upgrade(database_url)
    engine = make_engine(database_url)
    stack.callback(engine.dispose)
    rate_supply_meter(engine)
    store = IngestStore(engine, InlineValidator(engine))  # every reading validated as stored
    import_registry(store, list_gateways(state))
    consumer = IngestConsumer(
        store,
        BrokerConfig(
            HOST, broker.port, tls_dir / "ca.crt", tls_dir / "central.crt", tls_dir / "central.key"
        ),
        "ingest-demo",
    )
    consumer.start()
    stack.callback(consumer.stop)
    if not consumer.wait_connected(START_TIMEOUT_S):
        raise DemoError(f"central ingestion did not connect to the broker:\n{broker.log()}")
    say(f"central: ingestion consumer on SQLite {work / 'central.sqlite3'}")

    # -- the simulated transformer area --------------------------------------------------------
    meters = demo_meters(options)
    area_text = area_toml(options, meters)
    (work / "area.toml").write_text(area_text, encoding="utf-8")
    sim = build(parse_config(area_text, str(work / "area.toml")))
    clock = sim.clock
    runner = _SimThread()
    stack.callback(runner.stop)
    ports: dict[str, str] = runner.run(sim.start())
    stack.callback(lambda: runner.run(sim.close()))
    count_698 = sum(1 for m in meters if m.protocol == "dlt698.45")
    say(
        f"simulator: {len(meters)} meters ({len(meters) - count_698} DL/T 645-2007 on "
        f"{ports['rs485-645']}, {count_698} DL/T 698.45 incl. the supply meter on "
        f"{ports['rs485-698']})"
    )

    # -- the edge agent ------------------------------------------------------------------------
    (work / "edge").mkdir()
    edge_file = work / "edge.toml"
    edge_file.write_text(
        edge_toml(work, ports, broker.port, enrolment.bundle_directory), encoding="utf-8"
    )
    config = load_config(edge_file)
    with MeterArchive.from_config(config) as archive:
        for meter in meters:
            archive.add(
                Meter(
                    meter.address,
                    meter.protocol,
                    meter.bus,
                    area="demo-area",
                    account=meter.account,
                    customer_class="supply" if meter.account == "supply" else "residential",
                )
            )

    def collector_factory(agent: Agent, archive: MeterArchive) -> Collector:
        # The agent's scheduler thread runs this Collector on the simulator's clock.
        agent.ledger = Ledger(ledger_path(agent.config), zone=ZONE)
        assert agent.log is not None
        return Collector(
            agent.config, archive, agent.log, agent.masters, agent.ledger, now=clock.now
        )

    agent = Agent(config, environ={}, tick_s=0.5, collector_factory=collector_factory)
    agent.open()
    stack.callback(agent.close)
    if agent.collector is None:
        raise DemoError(f"the edge agent's collector did not start: {agent.last_error}")
    uplink = agent.uplink
    log = agent.log
    assert uplink is not None and log is not None
    if not _wait_for(lambda: uplink.health().central_online, START_TIMEOUT_S):
        raise DemoError(f"the edge uplink did not see central online: {uplink.health()}")
    say(f"edge agent: gateway {GATEWAY}, uplink connected (mutual TLS, signed batches)")

    # -- the simulated days --------------------------------------------------------------------
    freeze_days = [options.start + timedelta(days=k) for k in range(1, options.days + 1)]
    day_reports = []
    for index, freeze_day in enumerate(freeze_days, start=1):
        # The jump and the due collection run on the agent's scheduler thread, between two
        # of its own passes, so no pass ever sees the clock move under it.
        batches_before = uplink.health().batches_sent
        agent.on_scheduler(partial(_next_day, clock, freeze_day, agent.collector))
        uplink.notify()
        target = log.last_seq()
        in_flight = target - log.acked_seq()  # collected, not yet acknowledged by central
        waited = time.monotonic()
        acked = _wait_for(partial(_acked, uplink, target), options.day_timeout_s)
        waited = time.monotonic() - waited
        health = uplink.health()
        slots = agent.ledger.success(task="daily_frozen", day=freeze_day)
        day_reports.append(
            {
                "day": (freeze_day - timedelta(days=1)).isoformat(),
                "freeze": freeze_day.isoformat(),
                "slots_expected": slots.expected,
                "slots_got": slots.got,
                "log_records": target,
                "in_flight_after_collection": in_flight,
                "batches_sent": health.batches_sent - batches_before,
                "acknowledged": acked,
            }
        )
        say(
            f"day {index}/{options.days} ({freeze_day - timedelta(days=1)}): "
            f"daily slots {slots.got}/{slots.expected}, "
            f"edge log {target} records, in flight {in_flight} → "
            f"{'acked' if acked else 'NOT acked'} in {waited:.2f} s "
            f"({health.batches_sent - batches_before} batches), "
            f"readings stored centrally {store.count_readings()}"
        )
        if options.pace_s:
            time.sleep(options.pace_s)

    # -- the reconciliation --------------------------------------------------------------------
    runner.run(_tick(sim))  # the area up to the clock: every midnight snapshot taken
    truth = truth_freezes(sim, meters, freeze_days)
    stored = stored_daily_readings(engine)
    result = reconcile(truth, stored, meters, freeze_days)
    energy = energy_check(
        sim,
        {(row.meter, row.obis, row.ts.astimezone(UTC)): Decimal(row.value) for row in stored},
        freeze_days,
    )
    ledger = agent.ledger
    expected_slots = got_slots = failed_slots = 0
    for freeze_day in freeze_days:
        success = ledger.success(task="daily_frozen", day=freeze_day)
        expected_slots += success.expected
        got_slots += success.got
        failed_slots += success.failed
    health = uplink.health()
    consumer_stats = consumer.stats().as_dict()
    success_pct = round(100.0 * got_slots / expected_slots, 2) if expected_slots else 0.0
    holds = (
        result.holds
        and energy["holds"]
        and expected_slots == len(meters) * options.days
        and got_slots == expected_slots
        and failed_slots == 0
        and health.nacks == 0
    )
    return {
        "holds": holds,
        "meters": len(meters),
        "meters_by_protocol": dict(Counter(m.protocol for m in meters)),
        "days": options.days,
        "simulated_days": [r["day"] for r in day_reports],
        "expected_daily_slots": len(meters) * options.days,
        "ledger_slots": {"expected": expected_slots, "got": got_slots, "failed": failed_slots},
        "collection_success_pct": success_pct,
        "edge": {
            "records_logged": log.last_seq(),
            "acked_seq": log.acked_seq(),
            "batches_sent": health.batches_sent,
            "resends": health.resends,
            "nacks": health.nacks,
        },
        "central": {
            "readings_stored": store.count_readings(),
            "daily_readings_stored": len(stored),
            "vee": vee_outcome(engine),
            "batches": consumer_stats.get("batches"),
            "duplicate_deliveries": consumer_stats.get("duplicates"),
            "nacks": consumer_stats.get("nacks"),
        },
        "truth": {
            "expected_readings": result.expected,
            "matches": result.matched,
            "mismatches": result.mismatched,
            "missing": result.missing,
            "duplicates": result.duplicates,
            "extra": result.extra,
            "corrected": result.corrected,
            "examples": result.examples,
        },
        "energy": energy,
        "per_meter": result.per_meter,
        "per_day": day_reports,
    }


async def _tick(sim: Any) -> None:
    """Bring the area up to the clock on the simulator's thread (midnight freezes, truth)."""
    sim.tick()


def format_summary(summary: dict[str, Any]) -> str:
    """The summary for people: a few lines, the verdict last."""
    truth = summary["truth"]
    energy = summary["energy"]
    slots = summary["ledger_slots"]
    vee = summary["central"]["vee"]
    exceptions = ", ".join(f"{rule} ×{n}" for rule, n in vee["open_exceptions"].items())
    lines = [
        "",
        f"meters                 {summary['meters']} ("
        + ", ".join(f"{n} {p}" for p, n in summary["meters_by_protocol"].items())
        + ")",
        f"simulated days         {summary['days']} ({', '.join(summary['simulated_days'])})",
        f"daily slots            {slots['got']}/{summary['expected_daily_slots']} collected, "
        f"{slots['failed']} failed: {summary['collection_success_pct']} %",
        f"edge log               {summary['edge']['records_logged']} records, acked up to "
        f"seq {summary['edge']['acked_seq']}, {summary['edge']['batches_sent']} batches, "
        f"{summary['edge']['resends']} resends",
        f"stored centrally       {summary['central']['readings_stored']} readings "
        f"({summary['central']['daily_readings_stored']} daily frozen)",
        "validated (VEE)        "
        + ", ".join(f"{n} {status}" for status, n in vee["statuses"].items())
        + f"; open exceptions: {exceptions or 'none'}",
        f"vs simulator's meters  {truth['matches']}/{truth['expected_readings']} match, "
        f"{truth['mismatches']} mismatches, {truth['missing']} missing, "
        f"{truth['duplicates']} duplicates, {truth['extra']} extra",
        f"vs ground truth        registers {energy['registers_within_truncation']}/"
        f"{energy['register_checks']}, daily consumption "
        f"{energy['consumption_within_truncation']}/{energy['consumption_checks']} within "
        f"display truncation (max diff {energy['max_abs_diff_kwh']} kWh)",
    ]
    for day, totals in energy["area_days"].items():
        lines.append(
            f"  {day}  households {totals['central_household_kwh']} kWh by central's "
            f"freezes, {totals['true_household_kwh']} true; supply "
            f"{totals.get('supply_kwh', '?')}, loss {totals.get('loss_kwh', '?')}, theft "
            f"{totals.get('theft_kwh', '?')}"
        )
    lines += truth["examples"] + energy["problems"]
    lines.append(
        f"reconciliation         {'HOLDS' if summary['holds'] else 'DOES NOT HOLD'} "
        f"({summary['wall_seconds']} s)"
    )
    if summary.get("workdir"):
        lines.append(f"work directory kept    {summary['workdir']}")
    return "\n".join(lines)
