"""`edge-agent` with the daemon stopped: every command has help with an example and a
section in docs/edge-cli.md; config errors exit 2 naming the key; `read` and `scan` open
the simulated line themselves; the read-only commands open the archive and log read-only.

The simulated area is `firmware-sim run` as a real process (645 on a pty, 698 on TCP);
values are checked against the simulator's model, never against what we sent.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from edge_cli_helpers import (
    METER_645,
    METER_698,
    ROOT,
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

DOCS = (ROOT / "docs" / "edge-cli.md").read_text(encoding="utf-8")
LEAVES = sorted(
    name for name, command in _commands(cli).items() if not hasattr(command, "commands")
)


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimArea]:
    with simulated_area(tmp_path_factory.mktemp("area")) as sim:
        yield sim


@pytest.fixture(scope="module")
def config(area: SimArea, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_edge_config(tmp_path_factory.mktemp("edge"), area.listen)
    fill_archive(path)
    return path


# ---------------------------------------------------------------- help and docs


@pytest.mark.parametrize("name", sorted(_commands(cli)))
def test_every_command_has_help_with_an_example_and_a_docs_section(name: str) -> None:
    result = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.stdout
    example = result.stdout.split("Example:", 1)[1]
    assert re.search(rf"edge-agent (--config \S+ )?{name}\b", example), example
    assert f"## `edge-agent {name}`" in DOCS, f"docs/edge-cli.md has no section for {name}"


@pytest.mark.parametrize("name", LEAVES)
def test_every_command_takes_json(name: str) -> None:
    result = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert "--json" in result.stdout


def test_the_cli_md_index_names_edge_agent() -> None:
    assert "## `edge-agent`" in (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------- config


def test_a_bad_config_exits_2_listing_every_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[gateway]\nid = "gw"\n[[buses]]\nname = "a"\nport = "/dev/ttyS1"\nbaud = 2401\n'
        "retry = 3\n",
        encoding="utf-8",
    )
    for args in (["config", "validate"], ["status"], ["meters", "list"], ["read", "1", "x"]):
        code, out, err = invoke(bad, *args)
        assert code == 2, args
        assert err.startswith("Error: ")
        assert "buses[0].baud: 2401 is not a standard rate" in err
        assert "buses[0].retry: unknown key" in err
    code, out, _ = invoke(bad, "config", "validate", "--json")
    assert code == 2
    problems = {p["key"] for p in json.loads(out)["problems"]}
    assert problems == {"buses[0].baud", "buses[0].retry"}


def test_a_missing_config_exits_2(tmp_path: Path) -> None:
    code, _, err = invoke(tmp_path / "nope.toml", "status")
    assert code == 2
    assert "does not exist" in err


def test_config_validate_ok(config: Path) -> None:
    data = invoke_json(config, "config", "validate")
    assert data["ok"] is True
    assert data["buses"] == ["line-645", "line-698"]
    code, out, _ = invoke(config, "config", "validate")
    assert code == 0 and out.startswith("ok: ")


def test_the_console_script_has_the_stable_error_format(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "--config", str(tmp_path / "x.toml"), "log"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: ")
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- the archive


def test_meters_add_list_show_export_import_rm(config: Path, tmp_path: Path) -> None:
    listed = invoke_json(config, "meters", "list")
    assert [m["key"] for m in listed] == [METER_645, METER_698]
    assert invoke_json(config, "meters", "list", "--bus", "line-698")[0]["key"] == METER_698
    shown = invoke_json(config, "meters", "show", METER_645)
    assert shown["key"] == METER_645 and shown["protocol"] == "dlt645-2007"

    added = invoke_json(
        config,
        *("meters", "add", "--address", "000000000033", "--protocol", "dlt645-2007"),
        *("--bus", "line-645", "--ct-ratio", "50"),
    )
    assert added["key"] == "000000000033" and added["ct_ratio"] == 50

    code, _, err = invoke(
        config, "meters", "add", "--address", "1", "--protocol", "dlt645-2007", "--bus", "nope"
    )
    assert code == 2
    assert err.startswith("Error: the meter was not added:")
    assert "12 nameplate digits" in err

    exported = tmp_path / "archive.csv"
    data = invoke_json(config, "meters", "export", str(exported))
    assert data["meters"] == 3
    text = exported.read_text(encoding="utf-8")
    code, out, _ = invoke(config, "meters", "export")
    assert code == 0 and out == text

    removed = invoke_json(config, "meters", "rm", "000000000033")
    assert removed["key"] == "000000000033"
    code, _, err = invoke(config, "meters", "rm", "000000000033")
    assert code == 1 and "no meter" in err

    report = invoke_json(config, "meters", "import", str(exported), "--dry-run")
    assert report["added"] == ["000000000033"] and report["applied"] is False
    bad = tmp_path / "bad.csv"
    bad.write_text("address,protocol,bus\n1,dlt645-2007,line-645\n", encoding="utf-8")
    code, out, _ = invoke(config, "meters", "import", str(bad), "--json")
    assert code == 1
    assert json.loads(out)["rejected"][0]["row"] == 2
    assert len(invoke_json(config, "meters", "list")) == 2


# ---------------------------------------------------------------- the line, daemon stopped


def test_read_a_di_shows_the_frames_and_the_models_value(config: Path, area: SimArea) -> None:
    truth = frozen_forward_energy(area.config, "flat-1")
    data = invoke_json(config, "read", METER_645, "05060101")  # newest daily freeze, forward
    assert data["ok"] is True and data["via"] == "line"
    assert data["tx"][0].replace(" ", "").startswith("FEFEFEFE68110000000000681104")
    assert "68 11 00 00 00 00 00 68 91" in data["rx"][0]
    assert data["duration_ms"] >= 0 and data["attempts"] == 1
    values = {v["obis"]: v["value"] for v in data["values"]}
    assert values == {obis: str(value) for obis, value in truth.items()}

    code, out, _ = invoke(config, "read", METER_645, "05060101")
    assert code == 0
    assert "TX FE FE FE FE 68 11" in out and "RX " in out
    assert f"1-0:1.8.0  {truth['1-0:1.8.0']} kWh" in out


def test_read_an_oad_and_a_quantity_from_a_698_meter(config: Path) -> None:
    data = invoke_json(config, "read", METER_698, "40010200")  # the meter's own address
    assert data["ok"] is True
    assert data["values"][0]["value"] == METER_698
    energy = invoke_json(config, "read", METER_698, "1-0:1.8.0")
    assert [v["obis"] for v in energy["values"]] == ["1-0:1.8.0"]
    assert float(energy["values"][0]["value"]) > 0
    assert energy["tx"] and energy["rx"]


def test_read_refuses_what_it_cannot_read(config: Path) -> None:
    code, _, err = invoke(config, "read", METER_645, "0001")
    assert code == 2 and "DI of 8 hex digits" in err
    code, _, err = invoke(config, "read", "999999999999", "00010000")
    assert code == 1 and "no meter" in err


def test_scan_finds_the_meters_on_the_645_line(config: Path) -> None:
    data = invoke_json(config, "scan", "line-645")
    assert data["found"] == ["000000000011", "000000000033"]  # the model's two meters
    assert data["not_in_archive"] == ["000000000033"]
    code, _, err = invoke(config, "scan", "line-x")
    assert code == 2 and "no bus 'line-x'" in err


def test_status_and_bus_commands_with_the_daemon_down(config: Path) -> None:
    status = invoke_json(config, "status")
    assert status["running"] is False
    assert status["archive"]["meters"] == 2
    assert [b["name"] for b in status["buses"]] == ["line-645", "line-698"]
    stats = invoke_json(config, "bus", "stats")
    assert [s["running"] for s in stats] == [False, False]
    assert invoke_json(config, "bus", "trace") == []
    code, out, _ = invoke(config, "status")
    assert code == 0 and "not running" in out


def test_the_log_after_a_daemon_ran(config: Path) -> None:
    code, _, err = invoke(config, "log")
    assert code == 1 and "no log at" in err  # nothing has run yet
    with running_daemon(config) as daemon:
        assert invoke_json(config, "status")["running"] is True
        code_, _, _ = daemon.stop()
        assert code_ == 0
    log = invoke_json(config, "log")
    assert log["depth"] >= 0 and log["quota_bytes"] == 1024 * 1024 * 1024
    assert "eviction_counts" in log and "oldest_unacked_age_s" in log
    assert invoke_json(config, "status")["log"]["last_seq"] == log["last_seq"]


def test_tasks_and_ledger_read_the_ledger_with_the_daemon_down(config: Path) -> None:
    # runs after test_the_log_after_a_daemon_ran: the daemon created the ledger
    tasks = invoke_json(config, "tasks")
    assert tasks["running"] is False
    assert "daily_frozen" in tasks["tasks"]
    ledger = invoke_json(config, "ledger")
    assert set(ledger["success"]) >= {"expected", "got", "rate"}
    assert all(
        slot["state"] in ("expected", "got", "failed", "exhausted") for slot in ledger["slots"]
    )
    daily = invoke_json(config, "ledger", "daily_frozen", "2026-03-03")
    assert all(slot["task"] == "daily_frozen" for slot in daily["slots"])
    code, _, err = invoke(config, "ledger", "daily_frozen", "3 March")
    assert code == 2 and "%Y-%m-%d" in err


def test_log_frames_shows_the_kept_frames_of_failed_exchanges(config: Path) -> None:
    # runs after test_the_log_after_a_daemon_ran: the daemon created the log
    from datetime import UTC, datetime

    from edge_agent.config import load_config
    from edge_agent.store import EdgeLog

    at = datetime(2026, 3, 3, 0, 5, 1, tzinfo=UTC)
    with EdgeLog(load_config(config).storage.path) as log, log.batch() as b:
        for meter in ("000000000011", "000000000099"):
            b.add_raw_frame("rs485-1", "tx", "FE FE 68 11 16", at, meter=meter,
                            note="timeout: no reply (2 attempts)")  # fmt: skip
    kept = invoke_json(config, "log", "--frames", "--meter", "000000000099")
    assert [(f["meter"], f["hex"], f["at"]) for f in kept["frames"]] == [
        ("000000000099", "FE FE 68 11 16", "2026-03-03T00:05:01.000000Z")
    ]
    code, out, _ = invoke(config, "log", "--frames", "--limit", "1")
    assert code == 0 and "000000000099" in out and "timeout: no reply" in out


@pytest.mark.parametrize("args", [["backfill", "all"], ["clock", "check"], ["clock", "sync"]])
def test_collector_commands_need_the_daemon(config: Path, args: list[str]) -> None:
    code, _, err = invoke(config, *args)
    assert code == 1
    assert err.startswith("Error: the daemon is not running")
