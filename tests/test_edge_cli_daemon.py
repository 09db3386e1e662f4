"""`edge-agent` against a running daemon (`edge-agent run` as a real process) on a live
simulated area: every command runs and its `--json` output parses; `read` and `scan` go
through the control socket; archive edits reach the daemon without a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edge_cli_helpers import (
    METER_645,
    METER_698,
    Daemon,
    SimArea,
    fill_archive,
    frozen_forward_energy,
    invoke,
    invoke_json,
    running_daemon,
    simulated_area,
    write_edge_config,
)

from edge_agent.cli import _commands, cli

# Every command but `run` (the daemon is the fixture), with arguments that work here.
COMMANDS: dict[str, list[str]] = {
    "status": ["status"],
    "log": ["log"],
    "meters list": ["meters", "list"],
    "meters show": ["meters", "show", METER_645],
    "meters add": ["meters", "add", "--address", "000000000044", "--protocol", "dlt645-2007",
                   "--bus", "line-645"],
    "meters rm": ["meters", "rm", "000000000044"],
    "meters import": ["meters", "import", "{csv}", "--dry-run"],
    "meters export": ["meters", "export", "{csv}"],
    "read": ["read", METER_645, "00010000"],
    "scan": ["scan", "line-698"],
    "bus stats": ["bus", "stats"],
    "bus trace": ["bus", "trace", "--limit", "10"],
    "tasks": ["tasks"],
    "ledger": ["ledger"],
    "backfill": ["backfill", "all", "--days", "1"],
    "clock check": ["clock", "check", METER_645],
    "clock sync": ["clock", "sync", METER_698],
    "config validate": ["config", "validate"],
}  # fmt: skip


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimArea]:
    with simulated_area(tmp_path_factory.mktemp("area")) as sim:
        yield sim


@pytest.fixture(scope="module")
def config(area: SimArea, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_edge_config(tmp_path_factory.mktemp("edge"), area.listen)
    fill_archive(path)
    return path


@pytest.fixture(scope="module")
def daemon(config: Path) -> Iterator[Daemon]:
    with running_daemon(config) as running:
        yield running


def test_every_command_is_exercised_here() -> None:
    leaves = {name for name, cmd in _commands(cli).items() if not hasattr(cmd, "commands")}
    assert leaves - {"run"} == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_runs_with_the_daemon_and_its_json_parses(
    name: str, daemon: Daemon, tmp_path: Path
) -> None:
    csv = tmp_path / "archive.csv"
    if name == "meters import":
        invoke(daemon.config, "meters", "export", str(csv))
    args = [arg.replace("{csv}", str(csv)) for arg in COMMANDS[name]]
    data: Any = invoke_json(daemon.config, *args)
    assert data is not None
    if name not in ("meters add", "meters rm"):  # not twice
        code, out, err = invoke(daemon.config, *args)
        assert code == 0, err
        assert out.strip() and not out.lstrip().startswith(("{", "["))  # text for people
    assert daemon.process.poll() is None  # nothing a client does stops the daemon


def test_read_goes_through_the_daemon(daemon: Daemon, area: SimArea) -> None:
    truth = frozen_forward_energy(area.config, "flat-1")
    data = invoke_json(daemon.config, "read", METER_645, "05060101")
    assert data["via"] == "daemon" and data["ok"] is True
    assert {v["obis"]: v["value"] for v in data["values"]} == {
        obis: str(value) for obis, value in truth.items()
    }
    trace = invoke_json(daemon.config, "bus", "trace", "line-645", "--meter", METER_645)
    assert data["tx"][-1] in [entry["hex"] for entry in trace if entry["direction"] == "tx"]
    stats = invoke_json(daemon.config, "bus", "stats", "line-645")
    assert stats[0]["transactions"] >= 1
    code, out, _ = invoke(daemon.config, "read", METER_645, "05060101")
    assert code == 0 and "TX FE FE FE FE" in out and f"{truth['1-0:1.8.0']} kWh" in out


def test_scan_goes_through_the_daemon(daemon: Daemon) -> None:
    data = invoke_json(daemon.config, "scan", "line-645")
    assert data["found"] == ["000000000011", "000000000033"]


def test_status_is_live(daemon: Daemon) -> None:
    status = invoke_json(daemon.config, "status")
    assert status["running"] is True and status["pid"] == daemon.process.pid
    assert status["collector"] is True
    assert status["log"]["integrity"] == "ok"
    assert {bus["name"] for bus in status["buses"]} == {"line-645", "line-698"}


def test_archive_changes_reach_the_daemon_without_a_restart(daemon: Daemon) -> None:
    before = invoke_json(daemon.config, "status")["archive_changes_applied"]
    invoke_json(
        daemon.config,
        *("meters", "add", "--address", "000000000055", "--protocol", "dlt645-2007"),
        *("--bus", "line-645"),
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if invoke_json(daemon.config, "status")["archive_changes_applied"] > before:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the daemon did not pick up the archive change")
    invoke_json(daemon.config, "meters", "rm", "000000000055")


def test_clock_check_reports_offsets(daemon: Daemon) -> None:
    checks = invoke_json(daemon.config, "clock", "check", METER_645, METER_698)
    assert {c["meter"] for c in checks} == {METER_645, METER_698}
    assert all(c["offset_s"] is not None for c in checks)


def test_a_second_daemon_refuses_to_start(daemon: Daemon) -> None:
    code, _, err = invoke(daemon.config, "run")
    assert code == 1
    assert "another edge-agent is running" in err
    assert invoke_json(daemon.config, "status")["running"] is True
