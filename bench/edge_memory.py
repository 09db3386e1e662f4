"""Edge agent memory: RSS of ``edge-agent run`` with a full 2 040-meter archive.

    python bench/edge_memory.py                  # table
    python bench/edge_memory.py --json
    python bench/edge_memory.py --tasks all      # every default task, not only daily

The gateway's largest archive (2 040 meters, 8 lines × 255, DL/T 645-2007) is served by
``firmware-sim run`` in its own process (pty lines, no wire-time emulation, so the first
pass ends in about 5 minutes on 2 vCPUs rather than hours). ``edge-agent run`` starts as a
real process with that archive and an edge.toml pointing at the lines; it collects (the
daily freeze by default; ``--tasks all`` keeps every default task on) until its scheduler
is free again, then idles for ``--settle`` seconds of scheduler loops. Figures from
``/proc/<pid>/status``:

- **steady VmRSS** after the pass and the settle time (target ≤ 48 MB);
- **VmHWM**, the peak during start-up and the pass;
- VmRSS right after the control socket opened (archive loaded, lines open, before work);
- peers measured in the same run: a bare ``python -c pass``, ``import edge_agent.service``
  and the daemon's own import set (service, tasks, cli) — what the interpreter and the
  imports cost before any data is held.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.archive import Meter, MeterArchive  # noqa: E402
from edge_agent.config import load_config  # noqa: E402
from edge_agent.control import ControlClient, socket_is_live  # noqa: E402

BUSES = 8
PER_BUS = 255
TARGET_MB = 48.0

PROBE = """
import sys
for name in sys.argv[1:]:
    __import__(name)
fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(fields["VmRSS"].split()[0], fields["VmHWM"].split()[0], len(sys.modules))
"""


STEPS = """
import importlib, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
previous = rss()
for name in sys.argv[1:]:
    importlib.import_module(name)
    now = rss()
    print(name, now - previous)
    previous = now
"""
# In import order, so each figure is what that module adds on top of the ones before it
# (asyncio and ssl come in through pymodbus, which the Modbus framing imports).
IMPORT_STEPS = (
    "sqlite3", "decimal", "zoneinfo", "serial", "click", "asyncio", "pymodbus",
    "shared_protocol.dlt645", "shared_protocol.dlt698", "shared_protocol.modbus",
    "edge_agent.config", "edge_agent.store", "edge_agent.archive", "edge_agent.bus",
    "edge_agent.drivers", "edge_agent.service", "edge_agent.tasks", "edge_agent.cli",
)  # fmt: skip


def import_steps() -> dict[str, int]:
    """kB of RSS each import adds, in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", STEPS, *IMPORT_STEPS],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.split("\n")  # fmt: skip
    return {name: int(kb) for name, kb in (line.split() for line in out if line)}


def status_kb(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[key] = int(value.split()[0])
    return out


def probe(*modules: str) -> dict[str, Any]:
    """RSS of a fresh interpreter after importing ``modules`` (same flags as the daemon)."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *modules],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.split()  # fmt: skip
    return {"rss_kb": int(out[0]), "hwm_kb": int(out[1]), "modules": int(out[2])}


def area_toml(start: datetime) -> str:
    lines = [
        "[simulation]",
        f"start = {start.strftime('%Y-%m-%dT%H:%M:%SZ')}",
        "fast_forward_days = 1",
        "",
        "[area]",
        'id = "bench-2040"',
    ]
    for bus in range(1, BUSES + 1):
        lines += ["", "[[buses]]", f'name = "rs485-{bus}"', 'protocol = "dlt645"']
        lines.append('transport = "pty"')
    for index in range(BUSES * PER_BUS):
        lines += [
            "",
            "[[meters]]",
            f'id = "m{index + 1:04d}"',
            f'address = "{index + 1:012d}"',
            'protocol = "dlt645-2007"',
            f'bus = "rs485-{index // PER_BUS + 1}"',
        ]
    return "\n".join(lines) + "\n"


def edge_toml(directory: Path, listen: dict[str, str], all_tasks: bool) -> str:
    text = f"""
[gateway]
id = "gw-bench"

[storage]
path = "{directory / "data" / "edge.db"}"

[archive]
path = "{directory / "data" / "archive.db"}"

[control]
socket = "{directory / "run" / "edge.sock"}"
"""
    if not all_tasks:
        text += """
[tasks.monthly_frozen]
enabled = false

[tasks.curve]
enabled = false

[tasks.events]
enabled = false

[tasks.clock_check]
enabled = false
"""
    for name, port in sorted(listen.items()):
        text += f"""
[[buses]]
name = "{name}"
port = "{port}"
protocol = "dlt645"
baud = 9600
response_timeout_ms = 300
"""
    return text


def start_simulator(config: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "run", "--config", str(config), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout
    assert stdout is not None
    threading.Thread(
        target=lambda: [lines.put(line) for line in iter(stdout.readline, "")], daemon=True
    ).start()
    listen: dict[str, str] = {}
    while len(listen) < BUSES:
        bus = json.loads(lines.get(timeout=300))
        listen[bus["bus"]] = bus["listen"]
    return process, listen


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=5)


def measure(all_tasks: bool, settle: float) -> dict[str, Any]:
    peers = {
        "python -c pass": probe(),
        "import edge_agent.service": probe("edge_agent.service"),
        "import service, tasks, cli (the daemon's set)": probe(
            "edge_agent.service", "edge_agent.tasks", "edge_agent.cli"
        ),
    }
    with tempfile.TemporaryDirectory(prefix="edge-mem-") as tmp:
        directory = Path(tmp)
        # the simulator's clock is about the wall clock, so the daemon's slots are its freezes
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
        (directory / "area.toml").write_text(area_toml(start), encoding="utf-8")
        sim, listen = start_simulator(directory / "area.toml")
        daemon: subprocess.Popen[str] | None = None
        try:
            config_path = directory / "edge.toml"
            config_path.write_text(edge_toml(directory, listen, all_tasks), encoding="utf-8")
            config = load_config(config_path)
            with MeterArchive.from_config(config) as archive:
                for index in range(BUSES * PER_BUS):
                    bus = f"rs485-{index // PER_BUS + 1}"
                    archive.add(Meter(f"{index + 1:012d}", "dlt645-2007", bus))
            daemon = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "--config", str(config_path), "run"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            )  # fmt: skip
            started = time.monotonic()
            while not socket_is_live(config.control.socket):
                if daemon.poll() is not None:
                    raise RuntimeError(f"the daemon ended: {daemon.communicate()[1]}")
                time.sleep(0.05)
            opened = status_kb(daemon.pid)
            client = ControlClient(config.control.socket, timeout=1800)
            # `tasks` runs on the scheduler thread: it answers once the first pass is over
            tasks = client.call("tasks")
            pass_s = time.monotonic() - started
            samples = []
            end = time.monotonic() + settle
            while time.monotonic() < end:
                samples.append(status_kb(daemon.pid)["VmRSS"])
                time.sleep(0.5)
            steady = status_kb(daemon.pid)
            stats = client.call("bus.stats")
            status = client.call("status")
        finally:
            if daemon is not None:
                stop(daemon)
            stop(sim)
    daily = tasks.get("tasks", tasks).get("daily_frozen", {}) if isinstance(tasks, dict) else {}
    return {
        "import_steps_kb": import_steps(),
        "machine": f"{platform.machine()} {os.cpu_count()} CPU, Python {platform.python_version()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "meters": BUSES * PER_BUS,
        "buses": BUSES,
        "tasks": "all defaults" if all_tasks else "daily_frozen",
        "transactions": sum(row["transactions"] for row in stats),
        "first_pass_s": round(pass_s, 1),
        "daily_today": daily.get("today"),
        "log_depth": status.get("log", {}).get("depth"),
        "opened_rss_kb": opened["VmRSS"],
        "steady_rss_kb": steady["VmRSS"],
        "steady_rss_anon_kb": steady["RssAnon"],
        "steady_rss_file_kb": steady["RssFile"],
        "settle_min_max_kb": [min(samples, default=0), max(samples, default=0)],
        "hwm_kb": steady["VmHWM"],
        "threads": steady["Threads"],
        "peers": peers,
        "target_mb": TARGET_MB,
        "met": steady["VmRSS"] / 1024 <= TARGET_MB,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--tasks", choices=("daily", "all"), default="daily")
    parser.add_argument("--settle", type=float, default=10.0, help="idle seconds after the pass")
    args = parser.parse_args()
    result = measure(args.tasks == "all", args.settle)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    mb = 1024
    print(f"edge-agent run, {result['meters']} meters on {result['buses']} lines, "
          f"tasks: {result['tasks']}; first pass {result['first_pass_s']} s, "
          f"{result['transactions']} transactions, log depth {result['log_depth']}")  # fmt: skip
    print(f"daily_frozen today: {result['daily_today']}")
    print("what | VmRSS MB")
    for name, peer in result["peers"].items():
        print(f"{name} | {peer['rss_kb'] / mb:.1f} ({peer['modules']} modules)")
    print(f"daemon, control socket open | {result['opened_rss_kb'] / mb:.1f}")
    anon, file = result["steady_rss_anon_kb"] / mb, result["steady_rss_file_kb"] / mb
    print(f"daemon, steady after the pass | {result['steady_rss_kb'] / mb:.1f} "
          f"(anon {anon:.1f}, file {file:.1f}; {result['threads']} threads)")  # fmt: skip
    print(f"daemon, peak (VmHWM) | {result['hwm_kb'] / mb:.1f}")
    steps = sorted(result["import_steps_kb"].items(), key=lambda item: -item[1])
    print("largest imports (MB added, in import order): " + ", ".join(
        f"{name} {kb / mb:.1f}" for name, kb in steps[:6]
    ))  # fmt: skip
    verdict = "met" if result["met"] else "NOT met"
    print(f"steady RSS {result['steady_rss_kb'] / mb:.1f} MB (target ≤ {TARGET_MB:.0f}): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
