"""The edge agent daemon's composition root: config → log, archive, bus masters, collector,
scheduler, control socket, systemd notifications.

Threads, not asyncio: each :class:`~edge_agent.bus.BusMaster` already owns its line in a
thread of its own (pyserial's URL handlers are blocking objects), the collector's driver
calls block on ``master.transact``, and SQLite connections are per thread. So the agent is

    main thread        signals, systemd READY/WATCHDOG/STATUS, waits for the stop event
    scheduler thread   owns the collector and its archive connection: runs due tasks,
                       polls ``archive.revision``, runs queued jobs (backfill, clock)
    control threads    one per CLI client (``edge_agent.control``)
    bus-NAME threads   one per line (``BusMaster``)

A crash in one task is logged and counted (``task_errors``) and the loop goes on. SIGTERM
or SIGINT stops the control socket, gives a running pass :data:`STOP_GRACE_S` to finish,
lets each bus finish the transaction on its line and cancels the rest, waits for the
scheduler to commit, and closes the log.

The operations the CLI offers against a running daemon are the :class:`Agent` methods of
the same name (``status``, ``read``, ``scan``, ``bus_stats``, ``bus_trace``, ``tasks``,
``backfill``, ``clock``); the module-level functions ``read_meter``, ``scan_bus`` and
``log_health`` do the work and are what the CLI calls itself when the daemon is down.
"""

from __future__ import annotations

import contextlib
import faulthandler
import inspect
import logging
import os
import queue
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent import __version__
from edge_agent import tasks as collection
from edge_agent.archive import Meter, MeterArchive
from edge_agent.bus import BusMaster, Priority, TransactionResult
from edge_agent.config import BusConfig, EdgeConfig, config_hash
from edge_agent.drivers import (
    Dlt645Driver,
    Dlt698Driver,
    DriverError,
    ReadFailed,
    driver_for,
    read_address,
    read_address_698,
    scan_645,
)
from edge_agent.store import EdgeLog, LogReader, RetentionRules
from shared_protocol import dlt698
from shared_protocol.errors import ProtocolError
from shared_protocol.quantities import QUANTITIES

__all__ = [
    "Agent",
    "AgentError",
    "BadRequest",
    "jsonable",
    "ledger_path",
    "log_health",
    "offline_tasks",
    "parse_read_target",
    "read_meter",
    "scan_bus",
    "sd_notify",
]

logger = logging.getLogger("edge_agent")

SIGNAL_POLL_S = 0.2  # the main loop's longest wait: how late a stop signal can be seen
STOP_GRACE_S = 2.0  # on SIGTERM, how long a running pass may go on (systemd stop < 5 s)
TICK_S = 1.0  # scheduler idle wait: event-driven otherwise, never a busy loop (edge.md D8)
#: How often the log's retention rules run (acknowledged records past their age go).
RETENTION_EVERY_S = 3600.0
_OBIS_RE = re.compile(r"^\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}$")


class AgentError(RuntimeError):
    """An operation could not be done (unknown meter or bus, nothing to scan with...)."""


class BadRequest(AgentError):
    """A control request named an op with arguments it does not take."""


# ---------------------------------------------------------------------------------------------
# systemd


def sd_notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (``READY=1``, ``WATCHDOG=1``, ``STATUS=…``) to ``$NOTIFY_SOCKET``.

    A plain datagram, as sd_notify(3) does it, so the agent needs no systemd library;
    ``@name`` is an abstract socket. Returns False when not run by systemd.
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        logger.warning("cannot notify systemd at %s: %s", address, exc)
        return False
    return True


def _watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of ``$WATCHDOG_USEC`` (systemd's advice), when the watchdog is on for us."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2_000_000, 0.5)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# The tasks package (built in parallel; the agent runs without it)


NO_COLLECTOR = "the collector is not running yet; try again once the daemon has started"


# ---------------------------------------------------------------------------------------------
# Plain data for JSON


def plain(value: Any) -> Any:
    """JSON-ready: Decimals as strings (never floats), times as ISO 8601, dataclasses as dicts."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return plain(asdict(value))
    if isinstance(value, bytes):
        return value.hex(" ").upper()
    if hasattr(value, "value") and hasattr(value, "name") and not isinstance(value, str):
        return plain(value.value)  # enums
    return value


def jsonable(value: Any) -> Any:
    """Like :func:`plain`, but objects that know their JSON form (``to_dict``) use it."""
    if hasattr(value, "to_dict"):
        return plain(value.to_dict())
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return plain(value)


# ---------------------------------------------------------------------------------------------
# read: one meter, one item, with the frames on the wire


def parse_read_target(protocol: str, what: str) -> tuple[str, Any]:
    """``("quantity", obis)``, ``("di", int)`` or ``("oad", OAD)`` for ``edge-agent read``.

    A quantity is an OBIS code from the canonical vocabulary (``1-0:1.8.0``); a DI is
    8 hex digits for 645-2007 (4 for 645-1997); an OAD 8 hex digits for 698.45.
    """
    text = what.strip()
    if _OBIS_RE.match(text):
        if text not in QUANTITIES:
            raise AgentError(f"{text!r} is not in the quantity vocabulary (docs/protocols.md)")
        return "quantity", text
    digits = text.replace(" ", "").upper()
    if protocol == "dlt645-2007" and re.fullmatch(r"[0-9A-F]{8}", digits):
        return "di", int(digits, 16)
    if protocol == "dlt645-1997" and re.fullmatch(r"[0-9A-F]{4}", digits):
        return "di", int(digits, 16)
    if protocol == "dlt698.45" and re.fullmatch(r"[0-9A-F]{8}", digits):
        try:
            return "oad", dlt698.OAD.parse(digits)
        except ProtocolError as exc:
            raise AgentError(str(exc)) from None
    kinds = {
        "dlt645-2007": "an OBIS code like 1-0:1.8.0 or a DI of 8 hex digits like 00010000",
        "dlt645-1997": "an OBIS code like 1-0:1.8.0 or a DI of 4 hex digits like 9010",
        "dlt698.45": "an OBIS code like 1-0:1.8.0 or an OAD of 8 hex digits like 00100200",
        "modbus-rtu": "an OBIS code like 1-0:32.7.0 (Modbus meters are read by their map)",
    }
    raise AgentError(
        f"{what!r} is not something to read from a {protocol} meter; give "
        f"{kinds.get(protocol, 'an OBIS code')}"
    )


def _values(values: Iterable[Any]) -> list[dict[str, Any]]:
    out = []
    for value in values:
        entry = QUANTITIES.get(value.obis.split("*", 1)[0])
        out.append(
            {
                "obis": value.obis,
                "name": entry.name if entry else "",
                "value": plain(value.value),
                "unit": value.unit,
            }
        )
    return out


def _result_fields(result: TransactionResult | None) -> dict[str, Any]:
    if result is None:
        return {}
    return {
        "outcome": result.outcome.value,
        "detail": result.detail,
        "attempts": result.attempts,
        "tx": list(result.tx_hex),
        "rx": [result.rx_hex] if result.rx_hex else [],
        "queued_ms": round(result.queued_s * 1000, 1),
        "duration_ms": round(result.duration_s * 1000, 1),
        "latency_ms": None if result.latency_s is None else round(result.latency_s * 1000, 1),
    }


def read_meter(
    master: BusMaster, meter: Meter, what: str, *, zone: str = "Asia/Shanghai"
) -> dict[str, Any]:
    """Read ``what`` (quantity, DI or OAD) from ``meter`` now, on-demand priority.

    Returns the frames sent and received (hex), timing and the decoded values; a failed
    read has ``ok`` false and says why (``outcome``, ``error``) with the frames it saw.
    """
    kind, target = parse_read_target(meter.protocol, what)
    out: dict[str, Any] = {
        "meter": meter.key,
        "bus": meter.bus,
        "protocol": meter.protocol,
        "what": what,
        "kind": kind,
    }
    started = time.monotonic()
    try:
        if kind == "di":
            driver_645 = driver_for(meter.protocol, master, zone=zone, priority=Priority.ON_DEMAND)
            assert isinstance(driver_645, Dlt645Driver)
            values, result = driver_645.read_di(meter, target)
            out |= _result_fields(result) | {"values": _values(values)}
        elif kind == "oad":
            driver_698 = Dlt698Driver(master, zone=zone, priority=Priority.ON_DEMAND)
            result = driver_698.request(
                meter, lambda piid: dlt698.GetRequestNormal(piid, target), f"get {what}"
            )
            assert isinstance(result.reply, dlt698.Apdu)
            out |= _result_fields(result) | {"values": _values(dlt698.apdu_values(result.reply))}
        else:
            driver: Any = driver_for(meter.protocol, master, zone=zone, priority=Priority.ON_DEMAND)
            readings = driver.read_realtime(meter, [target])
            frames = [e for e in master.trace(meter.key) if e.monotonic >= started]
            out |= {
                "outcome": "ok",
                "detail": "",
                "attempts": sum(1 for e in frames if e.direction == "tx"),
                "tx": [e.hex for e in frames if e.direction == "tx"],
                "rx": [e.hex for e in frames if e.direction == "rx"],
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
                "latency_ms": None,
                "values": [
                    {
                        "obis": r.obis,
                        "name": QUANTITIES[r.obis].name if r.obis in QUANTITIES else "",
                        "value": str(r.value),
                        "unit": r.unit,
                    }
                    for r in readings
                ],
            }
            if not readings:
                out |= {"ok": False, "outcome": "no_value", "error": f"no {target} in the reply"}
                return out
    except ReadFailed as exc:
        out |= _result_fields(exc.result) | {"ok": False, "error": str(exc), "values": []}
        return out
    except DriverError as exc:
        frames = [e for e in master.trace(meter.key) if e.monotonic >= started]
        out |= {
            "ok": False,
            "outcome": "not_supported",
            "error": str(exc),
            "tx": [e.hex for e in frames if e.direction == "tx"],
            "rx": [e.hex for e in frames if e.direction == "rx"],
            "values": [],
        }
        return out
    out["ok"] = True
    return out


# ---------------------------------------------------------------------------------------------
# scan: which meters answer on a line


def scan_bus(master: BusMaster, known: Iterable[Meter] = ()) -> dict[str, Any]:
    """Find the meters on ``master``'s line and compare them with the archive.

    645: the wildcard read-address (C=13, one meter alone on the line) and then the
    wildcard address search (04000401 at AA…AA, splitting on collisions); 698: the
    wildcard GET 40010200. Modbus has no discovery: say so.
    """
    protocol = master.config.protocol
    started = time.monotonic()
    found: list[str]
    method: list[str]
    if protocol == "dlt645":
        method = ["search 04000401 at AAAAAAAAAAAA"]
        found = scan_645(master)
        if not found:
            method.append("read address (C=13)")
            single = read_address(master)
            found = [single] if single else []
    elif protocol == "dlt698":
        method = ["wildcard GET 40010200"]
        single = read_address_698(master)
        found = [single] if single else []
    else:
        raise AgentError(
            f"bus {master.name} is a {protocol} line; Modbus has no address discovery, "
            "add meters by unit id (edge-agent meters add)"
        )
    archived = {m.address for m in known if m.bus == master.name}
    return {
        "bus": master.name,
        "protocol": protocol,
        "method": method,
        "found": found,
        "in_archive": sorted(a for a in found if a in archived),
        "not_in_archive": sorted(a for a in found if a not in archived),
        "archived_not_found": sorted(archived - set(found)),
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }


# ---------------------------------------------------------------------------------------------
# log: depth, oldest unacked, size and quota, evictions (read-only)


def log_health(config: EdgeConfig, *, now: datetime | None = None) -> dict[str, Any]:
    """The log's state from a read-only connection (works with the daemon down)."""
    path = Path(config.storage.path)
    if not path.exists():
        raise AgentError(f"no log at {path} yet; the daemon creates it on its first start")
    reader = LogReader.open(path)
    try:
        moment = now or datetime.now(UTC)
        age = reader.oldest_unacked_age(moment)
        size = reader.size_bytes()
        quota = config.storage.quota_mb * 1024 * 1024
        wal = path.with_name(path.name + "-wal")
        return {
            "path": str(path),
            "last_seq": reader.last_seq(),
            "acked_seq": reader.acked_seq(),
            "depth": reader.depth(),
            "oldest_unacked_age_s": None if age is None else age.total_seconds(),
            "size_bytes": size,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
            "quota_bytes": quota,
            "quota_use_percent": round(100.0 * size / quota, 3),
            "eviction_counts": reader.eviction_counts(),
            "corrections": reader.corrections(),
        }
    finally:
        reader.close()


def log_frames(config: EdgeConfig, meter: str | None = None, limit: int = 50) -> dict[str, Any]:
    """The raw frames the log keeps — those of exchanges that went wrong — newest
    ``limit``, from a read-only connection (works with the daemon down)."""
    path = Path(config.storage.path)
    if not path.exists():
        raise AgentError(f"no log at {path} yet; the daemon creates it on its first start")
    reader = LogReader.open(path)
    try:
        return {"path": str(path), "frames": reader.raw_frames(meter, limit)}
    finally:
        reader.close()


def _bus_row(bus: BusConfig, meters: int, master: BusMaster | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": bus.name,
        "port": bus.port,
        "protocol": bus.protocol,
        "baud": bus.baud,
        "meters": meters,
    }
    if master is not None:
        stats = master.stats()
        row |= {
            key: stats[key]
            for key in ("transactions", "timeouts", "quarantined_meters", "queue_depth")
        }
    return row


def offline_status(config: EdgeConfig) -> dict[str, Any]:
    """What ``status`` can say with the daemon down: config, archive, log, no live counters."""
    out: dict[str, Any] = {
        "running": False,
        "version": __version__,
        "gateway": config.gateway.id,
        "config": config.source,
        "config_hash": config_hash(config),
    }
    counts: dict[str, int] = {}
    if Path(config.archive.path).exists():
        with MeterArchive.from_config(config, readonly=True) as archive:
            meters = archive.list()
            out["archive"] = {
                "path": str(archive.path),
                "meters": len(meters),
                "revision": archive.revision,
                "hash": archive.archive_hash(),
            }
            for meter in meters:
                counts[meter.bus] = counts.get(meter.bus, 0) + 1
    else:
        out["archive"] = {"path": config.archive.path, "meters": 0, "revision": 0, "hash": None}
    out["buses"] = [_bus_row(bus, counts.get(bus.name, 0), None) for bus in config.buses]
    try:
        out["log"] = log_health(config)
    except AgentError as exc:
        out["log"] = {"path": config.storage.path, "error": str(exc)}
    return out


def offline_tasks(config: EdgeConfig, *, now: datetime | None = None) -> dict[str, Any]:
    """Per task: last slot, last run and today's success, from the ledger (read-only)."""
    path = ledger_path(config)
    if not path.exists():
        raise AgentError(f"no ledger at {path} yet; the daemon creates it on its first start")
    zone = config.gateway.timezone
    today = (now or datetime.now(UTC)).astimezone(ZoneInfo(zone)).date()
    with collection.Ledger(path, zone=zone, readonly=True) as ledger:
        entries: dict[str, Any] = {}
        for task in collection.TASKS:
            last_slot = ledger.last_slot(task)
            last_run = ledger.last_run(task)
            entries[task] = {
                "last_slot": plain(last_slot),
                "last_run_at": plain(last_run),
                "today": ledger.success(task=task, day=today).to_dict(),
            }
        return {"running": False, "timezone": zone, "tasks": entries}


def ledger_query(
    config: EdgeConfig, task: str | None = None, day: date | None = None, limit: int = 200
) -> dict[str, Any]:
    """The ledger's slots (oldest first, up to ``limit``) and success over the same filter."""
    path = ledger_path(config)
    if not path.exists():
        raise AgentError(f"no ledger at {path} yet; the daemon creates it on its first start")
    with collection.Ledger(path, zone=config.gateway.timezone, readonly=True) as ledger:
        slots = ledger.slots(task=task, day=day, limit=limit or None)
        stats = ledger.success(task=task, day=day)
        return {
            "task": task,
            "day": plain(day),
            "success": stats.to_dict(),
            "slots": [slot.to_dict() for slot in slots],
            "truncated": bool(limit) and len(slots) >= limit,
        }


# ---------------------------------------------------------------------------------------------
# The daemon


class Agent:
    """The running edge agent. ``open()`` then ``run()`` (blocks until stopped) then
    ``close()``; or ``serve()`` does all three with signal handling."""

    def __init__(
        self,
        config: EdgeConfig,
        *,
        environ: Mapping[str, str] | None = None,
        tick_s: float = TICK_S,
        collector_factory: Callable[[Agent, MeterArchive], Any] | None = None,
    ) -> None:
        """``collector_factory(agent, archive)`` replaces the tasks package's Collector
        (tests; a build without ``edge_agent.tasks``); it runs on the scheduler thread."""
        self.config = config
        self.collector_factory = collector_factory
        self.environ = dict(os.environ if environ is None else environ)
        self.tick_s = tick_s
        self.log: EdgeLog | None = None
        self.masters: dict[str, BusMaster] = {}
        self.control: Any = None
        self.started_at = datetime.now(UTC)
        self.task_errors = 0
        self.archive_changes = 0
        self.archive_revision = 0
        self.last_error = ""
        self.collector: Any = None
        self.ledger: Any = None
        self.uplink: Any = None
        self._stop = threading.Event()
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._scheduler: threading.Thread | None = None
        self._scheduler_ready = threading.Event()
        self._heartbeat = time.monotonic()
        self._opened = False
        self._next_retention = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Open the log, the buses and the control socket; start the scheduler."""
        from edge_agent.control import ControlServer

        config = self.config
        Path(config.storage.path).parent.mkdir(parents=True, exist_ok=True)
        # Refuse a second daemon before touching the lines or the log.
        self.control = ControlServer(config.control.socket, config.control.mode, self.handle)
        self.control.claim()
        try:
            self.log = EdgeLog(
                config.storage.path,
                quota_bytes=config.storage.quota_mb * 1024 * 1024,
                retention=retention_rules(config),
            )
            if self.log.integrity != "ok":
                logger.warning("log integrity: %s (quarantined and rebuilt)", self.log.integrity)
            for bus in config.buses:
                master = BusMaster(bus)
                master.start()
                self.masters[bus.name] = master
            self._scheduler = threading.Thread(target=self._schedule, name="scheduler", daemon=True)
            self._scheduler.start()
            self._scheduler_ready.wait(30)
            if config.uplink.enabled:
                self._start_uplink()
            self.control.start()
        except BaseException:
            self.close()
            raise
        self._opened = True

    def _start_uplink(self) -> None:
        from edge_agent.uplink import SchedulerCollector, uplink_from_config

        def archive() -> tuple[str, list[Any]]:
            with self._archive() as opened:
                return opened.archive_hash(), opened.list()

        assert self.log is not None
        self.uplink = uplink_from_config(
            self.config,
            self.log,
            software_version=__version__,
            archive=archive,
            collector=SchedulerCollector(lambda: self.collector, self.on_scheduler),
        )
        self.uplink.start()

    def stop(self) -> None:
        """Ask the agent to stop (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """The main loop: systemd notifications until :meth:`stop`."""
        sd_notify("READY=1\nSTATUS=" + self._status_line(), self.environ)
        logger.info(
            "edge-agent %s ready: gateway %s, %d buses, control socket %s",
            __version__,
            self.config.gateway.id,
            len(self.masters),
            self.config.control.socket,
        )
        interval = _watchdog_interval(self.environ) or 10.0
        next_feed = time.monotonic() + interval
        # Wait in short slices: the kernel may deliver SIGTERM to any thread, and then a
        # main thread blocked in one long wait runs the Python handler only when that wait
        # times out (CPython runs handlers on the main thread) — a stop that took 10 s.
        while not self._stop.wait(SIGNAL_POLL_S):
            if time.monotonic() < next_feed:
                continue
            next_feed += interval
            # The watchdog is fed only while the scheduler is alive: a stuck scheduler
            # gets the process restarted by systemd instead of silently collecting nothing.
            if self._scheduler is not None and self._scheduler.is_alive():
                sd_notify("WATCHDOG=1\nSTATUS=" + self._status_line(), self.environ)
            else:
                logger.error("scheduler thread died; not feeding the watchdog")
        sd_notify("STOPPING=1", self.environ)

    def close(self) -> None:
        """Stop serving, finish each line's current transaction, commit and close."""
        self._stop.set()
        if self.control is not None:
            self.control.close()
        if self.collector is not None:
            self.collector.stop()  # a running pass ends at its next meter
        if self._scheduler is not None:
            # An idle scheduler is gone at once; one in a pass gets a moment to finish it
            # before the lines cancel its queued transactions (those slots stay open in the
            # ledger and are read again after the restart).
            self._scheduler.join(STOP_GRACE_S)
        for master in self.masters.values():
            master.stop()  # finishes the transaction on the line, cancels the rest
        if self._scheduler is not None:
            self._scheduler.join(10)
        if self.uplink is not None:
            self.uplink.stop()  # death (retained) and a clean disconnect
            self.uplink = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def serve(self) -> None:
        """open, run until SIGTERM/SIGINT, close (the ``edge-agent run`` command)."""
        previous = {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("signal %s: stopping", signal.Signals(signum).name)
            self.stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
        # `kill -USR1 PID` prints every thread's stack to stderr (the journal): how a
        # technician or a test finds out what a daemon that will not stop is waiting for.
        with contextlib.suppress(AttributeError, OSError, ValueError):
            faulthandler.register(signal.SIGUSR1, all_threads=True)  # needs a real stderr
        try:
            self.open()
            try:
                self.run()
            finally:
                self.close()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _status_line(self) -> str:
        return (
            f"{len(self.masters)} buses, archive rev {self.archive_revision}, "
            f"{self.task_errors} task errors"
        )

    # -- the scheduler thread --------------------------------------------------------------

    def _schedule(self) -> None:
        archive = MeterArchive.from_config(self.config)
        try:
            self.archive_revision = archive.revision
            try:
                self.collector = self._make_collector(archive)
            except Exception as exc:
                self._task_failed("starting the collector", exc)
            self._scheduler_ready.set()
            while not self._stop.is_set():
                self._heartbeat = time.monotonic()
                self._run_jobs()
                self._poll_archive(archive)
                if self.collector is not None and not self._stop.is_set():
                    try:
                        self.collector.run_due()
                    except Exception as exc:
                        if not self._stop.is_set():
                            self._task_failed("run_due", exc)
                self._retain()
                self._wait_for_work()
        finally:
            self._scheduler_ready.set()
            self._cancel_jobs()
            archive.close()

    def _retain(self) -> None:
        """Apply the log's retention rules once an hour (the first time at start). Time is
        the collector's clock (the simulator's in a demo), else the wall clock."""
        if self.log is None or time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + RETENTION_EVERY_S
        now = getattr(self.collector, "now", None)
        try:
            deleted = self.log.apply_retention(now() if callable(now) else datetime.now(UTC))
        except Exception as exc:
            self._task_failed("retention", exc)
            return
        if any(deleted.values()):
            logger.info("retention: %s", {k: v for k, v in deleted.items() if v})

    def _make_collector(self, archive: MeterArchive) -> Any:
        if self.collector_factory is not None:
            return self.collector_factory(self, archive)
        if self.log is None:
            raise AgentError("the edge log is not open; the scheduler starts after open()")
        self.ledger = collection.Ledger(ledger_path(self.config), zone=self.config.gateway.timezone)
        return collection.Collector(self.config, archive, self.log, self.masters, self.ledger)

    def _wait_for_work(self) -> None:
        deadline = time.monotonic() + self.tick_s
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._jobs.empty():
                return
            self._stop.wait(min(remaining, 0.2))

    def _run_jobs(self) -> None:
        while True:
            try:
                job, future = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # the client gets it; the scheduler goes on
                future.set_exception(exc)

    def _cancel_jobs(self) -> None:
        while True:
            try:
                _, future = self._jobs.get_nowait()
            except queue.Empty:
                return
            future.cancel()

    def _poll_archive(self, archive: MeterArchive) -> None:
        """Pick up archive changes from ``edge-agent meters`` without a restart."""
        try:
            revision = archive.revision
            if revision == self.archive_revision:
                return
            changes = archive.changes_since(self.archive_revision)
            for change in changes:
                # A changed or re-added meter starts with a clean slate on its line.
                for master in self.masters.values():
                    if change.key:
                        master.release(change.key)
            self.archive_changes += len(changes)
            self.archive_revision = revision
            logger.info("archive revision %d: %d changes", revision, len(changes))
            if self.collector is not None and hasattr(self.collector, "archive_changed"):
                self.collector.archive_changed(changes)
        except Exception as exc:
            self._task_failed("archive poll", exc)

    def _task_failed(self, what: str, exc: BaseException) -> None:
        self.task_errors += 1
        self.last_error = f"{what}: {type(exc).__name__}: {exc}"
        logger.exception("task %s failed (the agent goes on)", what, exc_info=exc)

    def on_scheduler(self, job: Callable[[], Any], timeout: float = 600.0) -> Any:
        """Run ``job`` on the scheduler thread (it owns the collector) and wait for it."""
        if self._stop.is_set():
            raise AgentError("the agent is stopping")
        future: Future[Any] = Future()
        self._jobs.put((job, future))
        return future.result(timeout)

    # -- operations (the control socket's ops; the CLI commands of the same names) ----------

    def _archive(self) -> MeterArchive:
        # A connection per request: SQLite connections belong to the thread that made them.
        return MeterArchive.from_config(self.config, readonly=True)

    def _meter(self, key: str) -> Meter:
        with self._archive() as archive:
            try:
                return archive.get(key)
            except KeyError as exc:
                raise AgentError(str(exc.args[0])) from None

    def _master(self, name: str) -> BusMaster:
        try:
            return self.masters[name]
        except KeyError:
            known = ", ".join(self.masters) or "none"
            raise AgentError(f"no bus {name!r} in the config (buses: {known})") from None

    def status(self) -> dict[str, Any]:
        with self._archive() as archive:
            meters = archive.list()
            archive_info = {
                "path": str(archive.path),
                "meters": len(meters),
                "revision": archive.revision,
                "hash": archive.archive_hash(),
            }
        counts: dict[str, int] = {}
        for meter in meters:
            counts[meter.bus] = counts.get(meter.bus, 0) + 1
        log = self.log
        out: dict[str, Any] = {
            "running": True,
            "pid": os.getpid(),
            "version": __version__,
            "gateway": self.config.gateway.id,
            "config": self.config.source,
            "config_hash": config_hash(self.config),
            "started_at": self.started_at.isoformat(),
            "uptime_s": round((datetime.now(UTC) - self.started_at).total_seconds(), 1),
            "archive": archive_info,
            "archive_changes_applied": self.archive_changes,
            "buses": [
                _bus_row(bus, counts.get(bus.name, 0), self.masters.get(bus.name))
                for bus in self.config.buses
            ],
            "log": plain(log.health()) if log is not None else None,
            "task_errors": self.task_errors,
            "last_error": self.last_error,
            "scheduler_heartbeat_age_s": round(time.monotonic() - self._heartbeat, 1),
            "collector": self.collector is not None,
            "uplink": plain(self.uplink.health()) if self.uplink is not None else None,
        }
        return out

    def read(self, meter: str, what: str) -> dict[str, Any]:
        found = self._meter(meter)
        return read_meter(self._master(found.bus), found, what, zone=self.config.gateway.timezone)

    def scan(self, bus: str) -> dict[str, Any]:
        master = self._master(bus)
        with self._archive() as archive:
            known = archive.list(bus=bus)
        return scan_bus(master, known)

    def bus_stats(self, bus: str | None = None) -> list[dict[str, Any]]:
        names = [bus] if bus else list(self.masters)
        return [self._master(name).stats() for name in names]

    def bus_trace(
        self, bus: str | None = None, meter: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        names = [bus] if bus else list(self.masters)
        timed: list[tuple[float, dict[str, Any]]] = []
        for name in names:
            for entry in self._master(name).trace(meter):
                row = {
                    "bus": name,
                    "direction": entry.direction,
                    "hex": entry.hex,
                    "at": entry.at.isoformat(),
                    "meter": entry.meter,
                }
                timed.append((entry.monotonic, row))
        timed.sort(key=lambda pair: pair[0])
        rows = [row for _, row in timed]
        return rows[-limit:] if limit > 0 else rows

    def _collector(self) -> Any:
        if self.collector is None:
            raise AgentError(NO_COLLECTOR)
        return self.collector

    def tasks(self) -> Any:
        collector = self._collector()
        status = self.on_scheduler(collector.status)
        return plain(status) | {"task_errors": self.task_errors, "last_error": self.last_error}

    def backfill(self, days: int | None = None, meters: list[str] | None = None) -> Any:
        collector = self._collector()
        window = self.config.tasks.backfill_days if days is None else days
        return jsonable(self.on_scheduler(lambda: collector.backfill(window, meters or None)))

    def clock(self, meters: list[str] | None = None, sync: bool = False) -> Any:
        collector = self._collector()
        checks = self.on_scheduler(lambda: collector.clock_check(meters or None, sync=sync))
        return jsonable(checks)

    def handle(self, op: str, args: Mapping[str, Any]) -> Any:
        """One control request → its result (raises AgentError / TypeError on bad input)."""
        handler = _OPS.get(op)
        if handler is None:
            raise AgentError(f"unknown op {op!r}; ops: {', '.join(sorted(_OPS))}")
        try:
            inspect.signature(handler).bind(self, **dict(args))
        except TypeError as exc:
            raise BadRequest(f"bad args for {op}: {exc}") from None
        return handler(self, **dict(args))


def _op_ping(agent: Agent) -> dict[str, Any]:
    return {"pid": os.getpid(), "version": __version__}


_OPS: dict[str, Callable[..., Any]] = {
    "ping": _op_ping,
    "status": Agent.status,
    "read": Agent.read,
    "scan": Agent.scan,
    "bus.stats": Agent.bus_stats,
    "bus.trace": Agent.bus_trace,
    "tasks": Agent.tasks,
    "backfill": Agent.backfill,
    "clock": Agent.clock,
}
OPS = tuple(sorted(_OPS))


def retention_rules(config: EdgeConfig) -> RetentionRules:
    """The config's retention days as the log's rules (``raw_frames`` → ``raw_frame``)."""
    days = config.storage.retention
    return RetentionRules(
        daily=timedelta(days=days.daily),
        monthly=timedelta(days=days.monthly),
        curve=timedelta(days=days.curve),
        instant=timedelta(days=days.instant),
        event=timedelta(days=days.event),
        raw_frame=timedelta(days=days.raw_frames),
    )


def ledger_path(config: EdgeConfig) -> Path:
    """The ledger sits next to the log (its own file: the log's writer stays the only one)."""
    storage = Path(config.storage.path)
    return storage.with_name("ledger.db")
