"""The `firmware-sim` command line: a thin layer over :mod:`firmware_sim.config`,
:mod:`firmware_sim.scenario` and :mod:`firmware_sim.truth`.

Errors go to stderr as ``Error: <message>`` (a config error lists one ``path: problem`` per
line under it); exit status 2 for bad usage or a bad config, 1 when the simulation cannot
start (a port in use), 0 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import click

from firmware_sim import __version__
from firmware_sim.config import ConfigError, SimConfig, Simulation, build, load_config
from firmware_sim.scenario import ANOMALIES, new_scenario, parse_pairs
from firmware_sim.truth import write_csv, write_jsonl

TICK_SECONDS = 1.0
"""How often ``run`` brings the whole area up to the simulated clock (so truth snapshots and
freezes happen even on a line nobody polls; a request brings its meters up at once anyway)."""


class ConfigProblem(click.ClickException):
    """A bad config: exit 2, every problem listed."""

    exit_code = 2


def _load(path: str) -> SimConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None


@click.group(
    help="""Meter firmware simulator: DL/T 645, DL/T 698.45 and Modbus meters on virtual
    RS-485 buses (pty or TCP serial server), with a transformer area and its ground truth.

    \b
    Example:
      firmware-sim scenario new --meters 8 -o area.toml
      firmware-sim validate --config area.toml
      firmware-sim run --config area.toml
    """
)
@click.version_option(__version__, prog_name="firmware-sim")
def cli() -> None:
    pass


# ---------------------------------------------------------------- validate


@cli.command(
    help="""Check an area config and report every problem, each named by its field path.

    Exit 0 with a summary when the config is good, 2 with the list of problems when not.

    \b
    Example:
      firmware-sim validate --config examples/area.toml
      firmware-sim validate --config area.toml --json
    """
)
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def validate(config_path: str, as_json: bool) -> None:
    config = _load(config_path)
    summary = config.summary()
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False, indent=2))
        return
    protocols = ", ".join(f"{p} {n}" for p, n in summary["protocols"].items()) or "none"
    click.echo(
        f"ok: {config_path}: area {summary['area']}, {summary['meters']} meters ({protocols})"
    )
    for bus in summary["buses"]:
        where = f"{bus['protocol']}, {bus['transport']}"
        click.echo(f"  bus {bus['name']} ({where}): {len(bus['meters'])} meters")
    for meter, anomalies in summary["anomalies"].items():
        click.echo(f"  anomaly {meter}: {', '.join(anomalies)}")


# ---------------------------------------------------------------- run


@cli.command(
    help="""Serve the area's buses until stopped (Ctrl-C / SIGTERM) or for --duration seconds.

    Builds the area, fast-forwards [simulation].fast_forward_days, starts every bus's
    transport and prints one line per bus with where it listens: a pty path (open it as a
    serial port) or socket://127.0.0.1:PORT (pyserial's URL for a TCP serial server). The
    simulated clock runs at [simulation].acceleration.

    \b
    Example:
      firmware-sim run --config examples/area.toml
      firmware-sim run --config area.toml --json --duration 60
    """
)
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--duration", type=click.FloatRange(min=0), help="Stop by itself after SECONDS.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per bus line.")
def run(config_path: str, duration: float | None, as_json: bool) -> None:
    config = _load(config_path)
    try:
        simulation = build(config)
        if config.simulation.fast_forward_days:
            simulation.fast_forward(config.simulation.fast_forward_days)
    except KeyboardInterrupt:  # stopped while filling history: nothing was served yet
        click.echo("stopped before serving", err=True)
        return
    try:
        counters = asyncio.run(_serve(simulation, duration, as_json, sys.stdout))
    except OSError as exc:
        raise click.ClickException(f"cannot start the buses: {exc}") from None
    totals = {k: sum(c[k] for c in counters.values()) for k in ("requests", "replies")}
    click.echo(
        f"stopped at simulated {simulation.clock.now().isoformat(timespec='seconds')}:"
        f" {totals['requests']} requests, {totals['replies']} replies",
        err=True,
    )


async def _serve(
    simulation: Simulation, duration: float | None, as_json: bool, out: TextIO
) -> dict[str, dict[str, int]]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        where = await simulation.start()
        try:
            for bus in simulation.config.buses:
                meters = [m.id for m in simulation.config.meters if m.bus == bus.name]
                if simulation.config.area.supply_bus == bus.name:
                    meters.append("supply")
                if as_json:
                    line = json.dumps(
                        {
                            "bus": bus.name,
                            "protocol": bus.protocol,
                            "listen": where[bus.name],
                            "meters": meters,
                        }
                    )
                else:
                    line = f"{bus.name}\t{bus.protocol}\t{where[bus.name]}\t{len(meters)} meters"
                out.write(line + "\n")
            out.flush()
            deadline = None if duration is None else time.monotonic() + duration
            while not stop.is_set():
                timeout = TICK_SECONDS
                if deadline is not None:
                    timeout = min(timeout, deadline - time.monotonic())
                    if timeout <= 0:
                        break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout)
                simulation.tick()
        finally:
            await simulation.close()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return {name: vars(bus.counters) for name, bus in simulation.buses.items()}


# ---------------------------------------------------------------- scenario


@cli.group(
    help="""Generate area configs.

    \b
    Example:
      firmware-sim scenario new --meters 8 --anomalies bypass=1 -o area.toml
    """
)
def scenario() -> None:
    pass


@scenario.command(
    "new",
    help=f"""Write an area config: N meters, a protocol mix and anomalies, drawn from a seed.

    --mix gives each protocol's share (dlt645-2007, dlt645-1997, dlt698.45, modbus-rtu);
    --anomalies gives how many meters get each anomaly ({", ".join(ANOMALIES)}; crossed
    counts pairs of households wired through each other's meters, 串户).

    \b
    Example:
      firmware-sim scenario new --meters 32 \\
          --mix dlt645-2007=0.7,dlt698.45=0.2,modbus-rtu=0.1 \\
          --anomalies bypass=1,reversed=1,crossed=1,dead=1,drift=1 --seed 1 -o area.toml
    """,
)
@click.option("--meters", type=click.IntRange(1, 9999), default=32, show_default=True)
@click.option("--mix", default="dlt645-2007=0.7,dlt698.45=0.2,modbus-rtu=0.1", show_default=True)
@click.option("--anomalies", default="", help="NAME=COUNT,… (default: none)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--transport", type=click.Choice(["tcp", "pty"]), default="tcp", show_default=True)
@click.option("--fast-forward-days", type=click.IntRange(0, 3660), default=7, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here, not stdout.")
def scenario_new(
    meters: int,
    mix: str,
    anomalies: str,
    seed: int,
    transport: str,
    fast_forward_days: int,
    output: str | None,
) -> None:
    try:
        shares = {k: _number(v, f"--mix {k}") for k, v in parse_pairs(mix, "--mix").items()}
        counts = {
            k: _count(v, f"--anomalies {k}")
            for k, v in parse_pairs(anomalies, "--anomalies").items()
        }
        text = new_scenario(
            meters,
            shares,
            counts,
            seed=seed,
            transport=transport,
            fast_forward_days=fast_forward_days,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if output is None:
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}: {meters} meters", err=True)


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number") from None


def _count(text: str, what: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{what}: {text!r} is not a whole number")
    return int(text)


# ---------------------------------------------------------------- truth


@cli.command(
    help="""Export the ground truth: per meter per day, what the household really used, what
    its meter showed and which anomalies were active, plus a supply row with loss and theft.

    The area is fast-forwarded DAYS from [simulation].start (no buses, no waiting); a row
    covers one area-local day between two local midnights.

    \b
    Example:
      firmware-sim truth --config examples/area.toml --days 30 --format csv -o truth.csv
      firmware-sim truth --config area.toml --days 7 | jq .
    """
)
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--days", type=click.IntRange(1, 3660), required=True)
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here, not stdout.")
def truth(config_path: str, days: int, fmt: str, output: str | None) -> None:
    config = _load(config_path)
    simulation = build(config)
    simulation.fast_forward(days)
    write = write_csv if fmt == "csv" else write_jsonl
    if output is None:
        count = write(simulation.area, sys.stdout)
    else:
        with open(output, "w", encoding="utf-8", newline="") as handle:
            count = write(simulation.area, handle)
        click.echo(f"wrote {output}: {count} rows", err=True)


def main() -> None:
    cli()


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    """Every command and group by its full name (the help and docs tests walk this)."""
    found: dict[str, Any] = {}
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        found[full] = command
        if isinstance(command, click.Group):
            found.update(_commands(command, f"{full} "))
    return found
