"""Shared plumbing for the `edge-agent` CLI and daemon tests: a live simulated area
(`firmware-sim run` as a real process: a 645 line on a pty, a 698 line on TCP), an edge
config pointing at it, the daemon as a real process, and the simulator's model for truth.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from edge_agent.archive import Meter, MeterArchive
from edge_agent.cli import cli
from edge_agent.config import load_config
from edge_agent.control import socket_is_live

ROOT = Path(__file__).parent.parent

AREA = """
[simulation]
start = 2026-03-01T00:00:00Z
acceleration = 1
seed = 4
fast_forward_days = 2

[area]
id = "cli-test"
supply_bus = "line-698"

[[buses]]
name = "line-645"
protocol = "dlt645"
transport = "pty"

[[buses]]
name = "line-698"
protocol = "dlt698.45"
transport = "tcp://127.0.0.1:0"

[[meters]]
id = "flat-1"
address = "000000000011"
protocol = "dlt645-2007"
bus = "line-645"

[[meters]]
id = "flat-3"
address = "000000000033"
protocol = "dlt645-2007"
bus = "line-645"

[[meters]]
id = "flat-2"
address = "000000000022"
protocol = "dlt698.45"
bus = "line-698"
"""

METER_645 = "000000000011"
METER_698 = "000000000022"


@dataclass
class SimArea:
    process: subprocess.Popen[str]
    listen: dict[str, str]
    config: Path


@contextmanager
def simulated_area(directory: Path) -> Iterator[SimArea]:
    """`firmware-sim run` as a process; yields where each bus listens."""
    config = directory / "area.toml"
    config.write_text(AREA, encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "run", "--config", str(config), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        listen: dict[str, str] = {}
        # A thread reads the lines: select() on a buffered text pipe misses lines that
        # readline() already pulled into the buffer.
        lines: queue.Queue[str] = queue.Queue()
        stdout = process.stdout
        assert stdout is not None
        threading.Thread(
            target=lambda: [lines.put(line) for line in iter(stdout.readline, "")],
            daemon=True,
        ).start()
        while len(listen) < 2:
            try:
                line = lines.get(timeout=30)
            except queue.Empty:
                raise RuntimeError("the simulator did not say where it listens") from None
            bus = json.loads(line)
            listen[bus["bus"]] = bus["listen"]
        yield SimArea(process, listen, config)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a pty close can hang on 3.11
            process.kill()
            process.communicate(timeout=5)


def frozen_forward_energy(area_config: Path, account: str) -> dict[str, Decimal]:
    """The simulator model's newest daily freeze (forward active, total and tariffs)."""
    from firmware_sim.config import build
    from firmware_sim.config import load_config as load_area

    simulation = build(load_area(area_config))
    simulation.fast_forward(2)
    record = simulation.area.meters[account].daily_freeze(1)
    assert record is not None
    return {f"1-0:1.8.{t}": record.registers.import_kwh(t) for t in range(5)}


def write_edge_config(
    directory: Path, listen: dict[str, str], *, mode: str = "0660", socket_path: Path | None = None
) -> Path:
    data = directory / "data"
    sock = socket_path or directory / "run" / "edge.sock"
    config = directory / "edge.toml"
    config.write_text(
        f"""
[gateway]
id = "gw-test"

[storage]
path = "{data / "edge.db"}"

[archive]
path = "{data / "archive.db"}"

[control]
socket = "{sock}"
mode = "{mode}"

[[buses]]
name = "line-645"
port = "{listen["line-645"]}"
protocol = "dlt645"
baud = 9600
response_timeout_ms = 300

[[buses]]
name = "line-698"
port = "{listen["line-698"]}"
protocol = "dlt698"
baud = 9600
response_timeout_ms = 300
""",
        encoding="utf-8",
    )
    return config


def fill_archive(config_path: Path) -> None:
    config = load_config(config_path)
    with MeterArchive.from_config(config) as archive:
        archive.add(Meter(METER_645, "dlt645-2007", "line-645", area="TA-1"))
        archive.add(Meter(METER_698, "dlt698.45", "line-698", area="TA-1"))


def invoke(config: Path, *args: str) -> tuple[int, str, str]:
    """`edge-agent --config CONFIG ARGS` in process (the daemon, if any, is a real process)."""
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def invoke_json(config: Path, *args: str) -> Any:
    code, out, err = invoke(config, *args, "--json")
    assert code == 0, (args, out, err)
    return json.loads(out)


@dataclass
class Daemon:
    process: subprocess.Popen[str]
    config: Path

    def stop(self, timeout: float = 10.0) -> tuple[int, float, str]:
        """SIGTERM; the exit status, how long it took and stderr."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Still running: have it print every thread's stack (SIGUSR1), then kill it, so
            # the failure says what it was waiting for.
            self.process.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            self.process.kill()
            _, err = self.process.communicate()
            raise AssertionError(
                f"edge-agent did not stop within {timeout} s of SIGTERM; its stacks:\n{err}"
            ) from None
        return self.process.returncode, time.monotonic() - started, err


def start_daemon(config: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def wait_for_socket(config: Path, process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    path = load_config(config).control.socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the daemon ended: {process.returncode} {process.communicate()}")
        if socket_is_live(path):
            return
        time.sleep(0.05)
    raise RuntimeError("the daemon did not open its control socket")


@contextmanager
def running_daemon(config: Path, env: dict[str, str] | None = None) -> Iterator[Daemon]:
    process = start_daemon(config, env)
    daemon = Daemon(process, config)
    try:
        wait_for_socket(config, process)
        yield daemon
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
