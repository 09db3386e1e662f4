"""The `edge-agent` command line: the daemon (`run`) and the technician's tools.

Each command is a thin layer over a library function of the same name (``service.read_meter``,
``service.scan_bus``, ``service.log_health``, ``MeterArchive.add`` ...). Commands that need
the line (`read`, `scan`) or live counters go through the running daemon's control socket,
because a line has exactly one owner; when the daemon is down `read` and `scan` open the line
themselves and the read-only commands open the archive and the log read-only.

Every command takes ``--json``. Errors go to stderr as ``Error: <message>`` (a config error
lists one ``key: problem`` per line under it); exit status 2 for bad usage or a bad config,
1 for a runtime failure (the meter did not answer, the daemon refused), 0 otherwise.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from edge_agent import __version__
from edge_agent.archive import CSV_COLUMNS, ArchiveError, Meter, MeterArchive
from edge_agent.bus import BusMaster
from edge_agent.config import ConfigError, EdgeConfig, load_config
from edge_agent.control import ControlClient, ControlError, socket_is_live
from edge_agent.service import (
    Agent,
    AgentError,
    ledger_query,
    log_frames,
    log_health,
    offline_status,
    offline_tasks,
    plain,
    read_meter,
    scan_bus,
)
from edge_agent.store import StoreError

__all__ = ["cli", "main"]


# ---------------------------------------------------------------------------------------------
# Errors: one format, two exit codes


class RuntimeFailure(click.ClickException):
    """Printed as ``Error: <message>``, exit 1."""

    exit_code = 1


class BadInput(click.ClickException):
    """Printed as ``Error: <message>``, exit 2 (bad usage, bad config, a refused meter)."""

    exit_code = 2


def _config_problem(error: ConfigError) -> BadInput:
    return BadInput(str(error))


# ---------------------------------------------------------------------------------------------
# Shared plumbing


class State:
    """What the group's options give every command: the config (loaded once, on demand)."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: EdgeConfig | None = None

    @property
    def config(self) -> EdgeConfig:
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except ConfigError as error:
                raise _config_problem(error) from None
        return self._config

    def daemon(self) -> ControlClient | None:
        """A client for the running daemon, or None when it is down."""
        path = self.config.control.socket
        if socket_is_live(path):
            return ControlClient(path)
        return None

    def call(self, op: str, **args: Any) -> Any:
        client = self.daemon()
        if client is None:
            raise RuntimeFailure(
                f"the daemon is not running (nothing listens on {self.config.control.socket})"
            )
        return _remote(client, op, **args)

    @contextmanager
    def archive(self, *, write: bool = False) -> Iterator[MeterArchive]:
        config = self.config
        if not write and not Path(config.archive.path).exists():
            raise RuntimeFailure(
                f"no archive at {config.archive.path} yet; add meters with "
                "`edge-agent meters add` or `edge-agent meters import`"
            )
        try:
            archive = MeterArchive.from_config(config, readonly=not write)
        except ArchiveError as exc:
            raise RuntimeFailure(str(exc)) from None
        try:
            yield archive
        finally:
            archive.close()


def _remote(client: ControlClient, op: str, **args: Any) -> Any:
    try:
        return client.call(op, **args)
    except ControlError as exc:
        raise RuntimeFailure(str(exc)) from None


pass_state = click.make_pass_decorator(State)


def json_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document (machine-readable)."
    )(function)


def emit(data: Any, as_json: bool, human: Callable[[Any], str] | None = None) -> None:
    if as_json or human is None:
        click.echo(json.dumps(plain(data), ensure_ascii=False, indent=2))
    else:
        click.echo(human(data))


def _lines(pairs: list[tuple[str, Any]]) -> str:
    width = max((len(key) for key, _ in pairs), default=0)
    return "\n".join(
        f"{key.ljust(width)}  {'' if value is None else value}" for key, value in pairs
    )


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [columns] + [
        ["" if row.get(c) is None else str(plain(row.get(c))) for c in columns] for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


@contextmanager
def _own_line(config: EdgeConfig, bus: str) -> Iterator[BusMaster]:
    """Open ``bus`` ourselves (the daemon is down, so nobody else owns it)."""
    try:
        bus_config = config.bus(bus)
    except KeyError:
        raise BadInput(
            f"no bus {bus!r} in {config.source} (buses: {', '.join(config.bus_names) or 'none'})"
        ) from None
    master = BusMaster(bus_config)
    master.start()
    try:
        yield master
    finally:
        master.stop()


# ---------------------------------------------------------------------------------------------
# The group


@click.group(
    help="""Edge agent for concentrator gateways: reads meters on RS-485, keeps every reading
    in SQLite, sends it over MQTT. `run` is the daemon; the other commands are for the
    technician at the gateway.

    \b
    Example:
      edge-agent --config /etc/meter2cash/edge.toml config validate
      edge-agent status
      edge-agent read 000000000011 00010000
    """
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default $METER2CASH_EDGE_CONFIG, else /etc/meter2cash/edge.toml).",
)
@click.version_option(__version__, prog_name="edge-agent")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    ctx.obj = State(config_path)


# ---------------------------------------------------------------------------------------------
# run


class _JsonLogFormatter(logging.Formatter):
    """One JSON object per log line (for journald / log shippers)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "at": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


@cli.command(
    help="""Run the daemon: collect on schedule, serve the control socket, notify systemd.

    Stops cleanly on SIGTERM or SIGINT (exit 0): each line finishes its transaction, the
    log commits and closes. Refuses to start while another daemon answers on the socket.

    \b
    Example:
      edge-agent --config /etc/meter2cash/edge.toml run
    """
)
@click.option("--log-level", default="INFO", show_default=True, help="Logging level.")
@click.option("--json", "as_json", is_flag=True, help="Log lines as JSON objects.")
@pass_state
def run(state: State, log_level: str, as_json: bool) -> None:
    config = state.config
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonLogFormatter()
        if as_json
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), handlers=[handler])
    agent = Agent(config)
    try:
        agent.serve()
    except (ControlError, StoreError, ArchiveError, OSError) as exc:
        raise RuntimeFailure(f"cannot run: {exc}") from None


# ---------------------------------------------------------------------------------------------
# status, log


def _status_text(data: dict[str, Any]) -> str:
    archive = data.get("archive") or {}
    log = data.get("log") or {}
    pairs: list[tuple[str, Any]] = [
        ("daemon", f"running, pid {data['pid']}" if data.get("running") else "not running"),
        ("gateway", data.get("gateway")),
        ("config", f"{data.get('config')} ({str(data.get('config_hash'))[:12]})"),
        ("archive", f"{archive.get('meters')} meters, revision {archive.get('revision')}"),
        ("log depth", log.get("depth", log.get("error"))),
    ]
    if data.get("running"):
        pairs += [
            ("uptime", f"{data.get('uptime_s')} s"),
            ("task errors", data.get("task_errors")),
            ("collector", "on" if data.get("collector") else "not in this build"),
            ("uplink", _uplink_text(data.get("uplink"))),
        ]
    text = _lines(pairs)
    return text + "\n\n" + _table(data.get("buses", []), list((data.get("buses") or [{}])[0]))


def _uplink_text(uplink: dict[str, Any] | None) -> str:
    if not uplink:
        return "off"
    state = "connected" if uplink.get("connected") else "disconnected"
    central = "central online" if uplink.get("central_online") else "central offline"
    return (
        f"{state}, {central}, session {uplink.get('session')}, "
        f"{uplink.get('in_flight')} in flight, acked {uplink.get('last_ack_seq')} "
        f"at {uplink.get('last_ack_at')}, {uplink.get('resends')} resends, "
        f"{uplink.get('refused_commands')} refused commands"
    )


def status_of(state: State) -> dict[str, Any]:
    client = state.daemon()
    if client is not None:
        result: dict[str, Any] = _remote(client, "status")
        return result
    return offline_status(state.config)


@cli.command(
    help="""Daemon, archive, log and bus summary (works with the daemon down).

    \b
    Example:
      edge-agent status --json
    """
)
@json_option
@pass_state
def status(state: State, as_json: bool) -> None:
    emit(status_of(state), as_json, _status_text)


@cli.command(
    "log",
    help="""The durable log: depth, oldest unacknowledged record, size against the quota,
    evictions per kind. With --frames: the raw frames it keeps — those of exchanges that
    went wrong (no answer, garbled, refused, retried) — newest last. Read-only; works with
    the daemon down.

    \b
    Example:
      edge-agent log --json
      edge-agent log --frames --meter 000012345678 --limit 20
    """,
)
@click.option("--frames", is_flag=True, help="the kept frames of failed exchanges instead")
@click.option("--meter", default=None, help="with --frames: only this meter's")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="with --frames: how many",
)
@json_option
@pass_state
def log_command(state: State, frames: bool, meter: str | None, limit: int, as_json: bool) -> None:
    if frames:
        try:
            kept = log_frames(state.config, meter, limit)
        except (AgentError, StoreError) as exc:
            raise RuntimeFailure(str(exc)) from None

        def frame_lines(data: dict[str, Any]) -> str:
            if not data["frames"]:
                return "no frames kept (only exchanges that went wrong are)"
            return "\n".join(
                f"{f['at']}  {f['bus']}  {f['direction'].upper()}  {f['meter'] or '-'}  "
                f"{f['hex']}  ({f['note'] or ''})"
                for f in data["frames"]
            )

        emit(kept, as_json, frame_lines)
        return
    try:
        health = log_health(state.config)
    except (AgentError, StoreError) as exc:
        raise RuntimeFailure(str(exc)) from None

    def text(data: dict[str, Any]) -> str:
        age = data["oldest_unacked_age_s"]
        return _lines(
            [
                ("path", data["path"]),
                ("depth", f"{data['depth']} records not yet acknowledged"),
                ("oldest unacked", "none" if age is None else f"{age:.0f} s"),
                ("seq", f"last {data['last_seq']}, acked {data['acked_seq']}"),
                (
                    "size",
                    f"{data['size_bytes']} bytes of {data['quota_bytes']} "
                    f"({data['quota_use_percent']} %), WAL {data['wal_bytes']}",
                ),
                (
                    "evictions",
                    ", ".join(f"{k} {v}" for k, v in data["eviction_counts"].items()) or "none",
                ),
            ]
        )

    emit(health, as_json, text)


# ---------------------------------------------------------------------------------------------
# meters


@cli.group(
    help="""The meter archive (档案): list, show, add, remove, import and export meters.
    Changes reach a running daemon without a restart.

    \b
    Example:
      edge-agent meters list --bus rs485-1
    """
)
def meters() -> None:
    pass


_METER_COLUMNS = ["key", "protocol", "bus", "area", "customer_class", "ct_ratio", "enabled"]


def _meter_dict(meter: Meter) -> dict[str, Any]:
    return {"key": meter.key, **plain(meter)}


@meters.command(
    "list",
    help="""List the meters, ordered by bus then key.

    \b
    Example:
      edge-agent meters list --bus rs485-1 --json
    """,
)
@click.option("--bus", help="Only this bus.")
@click.option("--area", help="Only this transformer area.")
@json_option
@pass_state
def meters_list(state: State, bus: str | None, area: str | None, as_json: bool) -> None:
    if not Path(state.config.archive.path).exists():
        found: list[dict[str, Any]] = []
    else:
        with state.archive() as archive:
            found = [_meter_dict(m) for m in archive.list(bus=bus, area=area)]
    emit(found, as_json, lambda rows: _table(rows, _METER_COLUMNS))


@meters.command(
    "show",
    help="""Show one meter (by key or nameplate address).

    \b
    Example:
      edge-agent meters show 000000000011
    """,
)
@click.argument("meter")
@json_option
@pass_state
def meters_show(state: State, meter: str, as_json: bool) -> None:
    with state.archive() as archive:
        try:
            found = archive.get(meter)
        except KeyError as exc:
            raise RuntimeFailure(str(exc.args[0])) from None
    emit(_meter_dict(found), as_json, lambda d: _lines(list(d.items())))


@meters.command(
    "add",
    help="""Add a meter. Fields as in the CSV (docs/edge-config.md); every problem is listed.

    \b
    Example:
      edge-agent meters add --address 000000000011 --protocol dlt645-2007 --bus rs485-1 \\
          --ct-ratio 50 --area TA-0101
    """,
)
@click.option("--address", required=True, help="Nameplate address (Modbus: unit id).")
@click.option("--protocol", required=True, help="dlt645-2007, dlt645-1997, dlt698.45, modbus-rtu.")
@click.option("--bus", required=True, help="A [[buses]] name from the config.")
@click.option("--modbus-model", help="Register map (sdm120, sdm630, ddsu666, dtsu666).")
@click.option("--ct-ratio", help="CT ratio (default 1).")
@click.option("--pt-ratio", help="PT ratio (default 1).")
@click.option("--customer-class", help="residential, commercial, small_industrial, supply.")
@click.option("--tariff-count", help="1-8 (default 4).")
@click.option("--area", help="Transformer area (台区) id.")
@click.option("--account", help="Customer account number.")
@click.option("--protected", help="true/false: never trip.")
@click.option("--prepaid", help="true/false: prepaid (费控) customer.")
@click.option("--enabled", help="true/false (default true).")
@click.option("--notes", help="Free text.")
@json_option
@pass_state
def meters_add(state: State, /, as_json: bool, **fields: str | None) -> None:
    row = {name: value for name, value in fields.items() if value is not None}
    try:
        meter = Meter.from_row(row)
        with state.archive(write=True) as archive:
            added = archive.add(meter)
    except ArchiveError as exc:
        raise BadInput("the meter was not added:\n" + _problems(exc)) from None
    emit(_meter_dict(added), as_json, lambda d: f"added {d['key']} on {d['bus']}")


def _problems(exc: ArchiveError) -> str:
    return "\n".join(f"  {problem}" for problem in exc.problems)


@meters.command(
    "rm",
    help="""Remove a meter from the archive (its readings stay in the log).

    \b
    Example:
      edge-agent meters rm 000000000011
    """,
)
@click.argument("meter")
@json_option
@pass_state
def meters_rm(state: State, meter: str, as_json: bool) -> None:
    with state.archive(write=True) as archive:
        try:
            removed = archive.remove(meter)
        except KeyError as exc:
            raise RuntimeFailure(str(exc.args[0])) from None
    emit(_meter_dict(removed), as_json, lambda d: f"removed {d['key']} from {d['bus']}")


@meters.command(
    "import",
    help="""Import meters from a CSV file. merge (default) adds and updates, replace makes the
    archive exactly the file (and applies nothing if any row is bad). Exit 1 when rows
    were rejected.

    \b
    Example:
      edge-agent meters import meters.csv --mode merge --dry-run
    """,
)
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--mode", type=click.Choice(["merge", "replace"]), default="merge", show_default=True)
@click.option("--dry-run", is_flag=True, help="Report what would happen; change nothing.")
@json_option
@pass_state
def meters_import(state: State, csv_file: str, mode: str, dry_run: bool, as_json: bool) -> None:
    with state.archive(write=True) as archive:
        report = archive.import_csv(csv_file, mode, dry_run=dry_run)  # type: ignore[arg-type]
    emit(
        report.to_dict(),
        as_json,
        lambda _: "\n".join([report.summary(), *(f"  {row}" for row in report.rejected)]),
    )
    if not report.ok:
        sys.exit(1)


@meters.command(
    "export",
    help=f"""Export the archive as CSV (to FILE, or standard output). Columns:
    {", ".join(CSV_COLUMNS)}.

    \b
    Example:
      edge-agent meters export archive.csv
    """,
)
@click.argument("csv_file", required=False, type=click.Path(dir_okay=False))
@json_option
@pass_state
def meters_export(state: State, csv_file: str | None, as_json: bool) -> None:
    with state.archive() as archive:
        text = archive.export_csv(csv_file)
        count = len(archive)
    if as_json:
        emit({"file": csv_file, "meters": count, "csv": None if csv_file else text}, True)
    elif csv_file:
        click.echo(f"wrote {csv_file}: {count} meters")
    else:
        click.echo(text, nl=False)


# ---------------------------------------------------------------------------------------------
# read, scan


def _read_text(data: dict[str, Any]) -> str:
    lines = [f"meter {data['meter']} on {data['bus']} ({data['protocol']}): {data['what']}"]
    lines += [f"TX {frame}" for frame in data.get("tx", [])]
    lines += [f"RX {frame}" for frame in data.get("rx", [])]
    timing = [f"{data.get('attempts', 0)} attempt(s)"]
    if data.get("latency_ms") is not None:
        timing.append(f"latency {data['latency_ms']} ms")
    if data.get("duration_ms") is not None:
        timing.append(f"total {data['duration_ms']} ms")
    lines.append(", ".join(timing))
    for value in data.get("values", []):
        unit = f" {value['unit']}" if value.get("unit") else ""
        lines.append(f"{value['obis']}  {value['value']}{unit}  {value.get('name', '')}".rstrip())
    if not data.get("ok"):
        lines.append(f"failed: {data.get('outcome')}: {data.get('error')}")
    return "\n".join(lines)


def read_of(state: State, meter: str, what: str) -> dict[str, Any]:
    client = state.daemon()
    if client is not None:
        result: dict[str, Any] = _remote(client, "read", meter=meter, what=what)
        result["via"] = "daemon"
        return result
    config = state.config
    with state.archive() as archive:
        try:
            found = archive.get(meter)
        except KeyError as exc:
            raise RuntimeFailure(str(exc.args[0])) from None
    with _own_line(config, found.bus) as master:
        data = read_meter(master, found, what, zone=config.gateway.timezone)
    data["via"] = "line"
    return data


@cli.command(
    help="""Read one item from a meter now and show the frames: TX/RX hex, timing, the decoded
    value. WHAT is an OBIS code (1-0:1.8.0), a 645 DI (00010000; 1997: 9010) or a 698 OAD
    (00100200). Goes through the daemon when it runs, else opens the line itself.
    Exit 1 when the meter did not give the value.

    \b
    Example:
      edge-agent read 000000000011 00010000
      edge-agent read 000000000022 1-0:1.8.0 --json
    """
)
@click.argument("meter")
@click.argument("what")
@json_option
@pass_state
def read(state: State, meter: str, what: str, as_json: bool) -> None:
    try:
        data = read_of(state, meter, what)
    except AgentError as exc:
        raise BadInput(str(exc)) from None
    emit(data, as_json, _read_text)
    if not data.get("ok"):
        sys.exit(1)


@cli.command(
    help="""Find the meters on a line: 645 wildcard address search (04000401 at AA…AA,
    splitting on collisions) and read-address; 698 wildcard GET 40010200. Compares what
    answered with the archive.

    \b
    Example:
      edge-agent scan rs485-1
    """
)
@click.argument("bus")
@json_option
@pass_state
def scan(state: State, bus: str, as_json: bool) -> None:
    client = state.daemon()
    try:
        if client is not None:
            data = _remote(client, "scan", bus=bus)
        else:
            known: list[Meter] = []
            if Path(state.config.archive.path).exists():
                with state.archive() as archive:
                    known = archive.list(bus=bus)
            with _own_line(state.config, bus) as master:
                data = scan_bus(master, known)
    except AgentError as exc:
        raise RuntimeFailure(str(exc)) from None

    def text(d: dict[str, Any]) -> str:
        return _lines(
            [
                ("bus", f"{d['bus']} ({d['protocol']})"),
                ("found", ", ".join(d["found"]) or "none"),
                ("not in archive", ", ".join(d["not_in_archive"]) or "none"),
                ("archived, silent", ", ".join(d["archived_not_found"]) or "none"),
                ("took", f"{d['duration_ms']} ms"),
            ]
        )

    emit(data, as_json, text)


# ---------------------------------------------------------------------------------------------
# bus


@cli.group(
    help="""Per-line counters and the ring of recent raw frames (live, from the daemon).

    \b
    Example:
      edge-agent bus stats rs485-1
    """
)
def bus() -> None:
    pass


@bus.command(
    "stats",
    help="""Counters per line: transactions, timeouts, retries, checksum errors, wrong
    addresses, quarantined meters, queue depth... With the daemon down, the configured
    lines without counters.

    \b
    Example:
      edge-agent bus stats --json
    """,
)
@click.argument("name", required=False)
@json_option
@pass_state
def bus_stats(state: State, name: str | None, as_json: bool) -> None:
    client = state.daemon()
    if client is not None:
        rows = _remote(client, "bus.stats", bus=name)
    else:
        rows = [
            {"bus": b.name, "port": b.port, "protocol": b.protocol, "running": False}
            for b in state.config.buses
            if name is None or b.name == name
        ]
        if name is not None and not rows:
            raise BadInput(f"no bus {name!r} in {state.config.source}")

    def text(data: list[dict[str, Any]]) -> str:
        return "\n\n".join(_lines(list(row.items())) for row in data) or "(no buses)"

    emit(rows, as_json, text)


@bus.command(
    "trace",
    help="""The most recent raw frames on the lines (TX/RX hex, UTC time, meter), oldest
    first. Empty with the daemon down (the ring lives in the daemon).

    \b
    Example:
      edge-agent bus trace rs485-1 --meter 000000000011 --limit 20
    """,
)
@click.argument("name", required=False)
@click.option("--meter", help="Only this meter's frames.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True)
@json_option
@pass_state
def bus_trace(state: State, name: str | None, meter: str | None, limit: int, as_json: bool) -> None:
    client = state.daemon()
    rows = _remote(client, "bus.trace", bus=name, meter=meter, limit=limit) if client else []
    if client is None and not as_json:
        click.echo("the daemon is not running; the frame trace lives in it", err=True)

    def text(data: list[dict[str, Any]]) -> str:
        return "\n".join(
            f"{e['at']}  {e['bus']}  {e['direction'].upper()}  {e['meter'] or '-'}  {e['hex']}"
            for e in data
        )

    emit(rows, as_json, text)


# ---------------------------------------------------------------------------------------------
# tasks, ledger, backfill, clock (the collector)


def _tasks_text(data: dict[str, Any]) -> str:
    rows = []
    for name, entry in data.get("tasks", {}).items():
        today = entry.get("today") or {}
        rows.append(
            {
                "task": name,
                "enabled": entry.get("enabled", ""),
                "last_slot": entry.get("last_slot"),
                "next_due": entry.get("next_due", ""),
                "today": f"{today.get('got', '-')}/{today.get('expected', '-')}" if today else "",
            }
        )
    head = "daemon running" if data.get("running", True) else "daemon not running (ledger)"
    return head + "\n" + _table(rows, ["task", "enabled", "last_slot", "next_due", "today"])


@cli.command(
    help="""Collection tasks: last slot, last and next run, today's success per task. With the
    daemon down, what the ledger says (read-only).

    \b
    Example:
      edge-agent tasks --json
    """
)
@json_option
@pass_state
def tasks(state: State, as_json: bool) -> None:
    client = state.daemon()
    try:
        data = _remote(client, "tasks") if client else offline_tasks(state.config)
    except AgentError as exc:
        raise RuntimeFailure(str(exc)) from None
    emit(data, as_json, _tasks_text)


@cli.command(
    help="""The expected-slot ledger: slots of a task and day (expected / got / failed /
    exhausted, with reasons and attempts) and the success rate. Read-only; works with the
    daemon down. DAY is YYYY-MM-DD (the gateway's local day).

    \b
    Example:
      edge-agent ledger daily_frozen 2026-01-10
    """
)
@click.argument("task", required=False)
@click.argument("day", required=False, type=click.DateTime(formats=["%Y-%m-%d"]))
@click.option("--limit", type=click.IntRange(min=0), default=200, show_default=True)
@json_option
@pass_state
def ledger(state: State, task: str | None, day: datetime | None, limit: int, as_json: bool) -> None:
    try:
        data = ledger_query(state.config, task, day.date() if day else None, limit)
    except AgentError as exc:
        raise RuntimeFailure(str(exc)) from None

    def text(d: dict[str, Any]) -> str:
        success = d["success"]
        head = (
            f"{d['task'] or 'all tasks'}, {d['day'] or 'all days'}: {success['got']}/"
            f"{success['expected']} got, {success['failed']} failed, {success['pending']} "
            f"pending (rate {success['rate']}, {success['gate']})"
        )
        columns = ["task", "meter", "slot", "state", "attempts", "reason"]
        return head + "\n" + _table(d["slots"], columns)

    emit(data, as_json, text)


@cli.command(
    help="""补抄: re-collect missed daily slots from the meters' own freezes, oldest day first.
    METER is a meter key or `all`. Runs in the daemon.

    \b
    Example:
      edge-agent backfill all --days 3
    """
)
@click.argument("meter", default="all")
@click.option("--days", type=click.IntRange(0, 31), help="Window (default tasks.backfill_days).")
@json_option
@pass_state
def backfill(state: State, meter: str, days: int | None, as_json: bool) -> None:
    meters = None if meter == "all" else [meter]
    result = state.call("backfill", days=days, meters=meters)

    def text(d: dict[str, Any]) -> str:
        head = (
            f"backfill: {d['expected']} slots, {d['got']} got, {d['failed']} failed, "
            f"{d['exhausted']} exhausted (rate {d['rate']}) in {d['duration_s']} s"
        )
        return "\n".join([head, *(f"  {k}: {v}" for k, v in d.get("failures", {}).items())])

    emit(result, as_json, text)


@cli.group(
    help="""Meter clocks: check the offsets, or sync those beyond the threshold (never near
    the hour or midnight, capped per meter per day). Runs in the daemon.

    \b
    Example:
      edge-agent clock check
    """
)
def clock() -> None:
    pass


def _clock(state: State, meters: tuple[str, ...], sync: bool, as_json: bool) -> None:
    result = state.call("clock", meters=list(meters) or None, sync=sync)
    columns = ["meter", "bus", "decision", "offset_s", "synced", "method", "reason"]
    emit(result, as_json, lambda rows: _table(rows, columns))


@clock.command(
    "check",
    help="""Read the clock offset of the meters (all, or the ones named).

    \b
    Example:
      edge-agent clock check 000000000011 --json
    """,
)
@click.argument("meters", nargs=-1)
@json_option
@pass_state
def clock_check(state: State, meters: tuple[str, ...], as_json: bool) -> None:
    _clock(state, meters, False, as_json)


@clock.command(
    "sync",
    help="""Check and sync the clocks beyond clock.threshold_s, by the clock rules.

    \b
    Example:
      edge-agent clock sync
    """,
)
@click.argument("meters", nargs=-1)
@json_option
@pass_state
def clock_sync(state: State, meters: tuple[str, ...], as_json: bool) -> None:
    _clock(state, meters, True, as_json)


# ---------------------------------------------------------------------------------------------
# config


@cli.group(
    help="""The configuration file.

    \b
    Example:
      edge-agent --config edge.toml config validate
    """
)
def config() -> None:
    pass


@config.command(
    "validate",
    help="""Check the config file (and the stored archive against it): every problem, one
    `key: problem` per line; exit 2 when anything is wrong.

    \b
    Example:
      edge-agent --config /etc/meter2cash/edge.toml config validate --json
    """,
)
@json_option
@pass_state
def config_validate(state: State, as_json: bool) -> None:
    try:
        loaded = load_config(state.config_path)
    except ConfigError as error:
        if as_json:
            emit(
                {
                    "ok": False,
                    "source": error.source,
                    "problems": [{"key": p.key, "message": p.message} for p in error.problems],
                },
                True,
            )
        raise _config_problem(error) from None
    problems = []
    if Path(loaded.archive.path).exists():
        with MeterArchive.from_config(loaded, readonly=True) as archive:
            problems = archive.validate(loaded)
    data = {
        "ok": not problems,
        "source": loaded.source,
        "gateway": loaded.gateway.id,
        "buses": list(loaded.bus_names),
        "problems": [{"key": p.key, "message": p.message} for p in problems],
    }
    if as_json:
        emit(data, True)
    if problems:
        raise BadInput(
            f"the archive {loaded.archive.path} has {len(problems)} problems against "
            f"{loaded.source}:\n" + "\n".join(f"  {p}" for p in problems)
        )
    if not as_json:
        click.echo(
            f"ok: {loaded.source}: gateway {loaded.gateway.id}, {len(loaded.buses)} buses "
            f"({', '.join(loaded.bus_names)})"
        )


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    """Every command and group by its full name (the help and docs tests walk this)."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        found[full] = command
        if isinstance(command, click.Group):
            found.update(_commands(command, f"{full} "))
    return found


def main() -> None:
    cli()
