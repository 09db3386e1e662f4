"""The first end-to-end run and its reconciliation oracle (issue 5).

`central demo` composes the real pieces — Mosquitto with the production TLS/ACL config,
the ingestion consumer on SQLite, a simulated transformer area on a pty and a TCP serial
server, the edge agent (bus masters, Collector on the simulator's clock, EdgeLog, MQTT
uplink) — and runs simulated days. The oracle: central's daily frozen readings equal what
every simulated meter froze at 00:00 meter time, for every meter and day — nothing
missing, nothing wrong, nothing doubled, nothing extra — and every consumption figure agrees
with `firmware_sim.truth` within display truncation; collection success is 100 %.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import central.demo
from central.cli import cli
from central.demo import DemoOptions, demo_meters, reconcile, run_demo

REPO = Path(__file__).resolve().parent.parent
DAYS = 3


def require_mosquitto() -> None:
    if central.demo.mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); CI installs it")


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_reconciliation_oracle_over_the_whole_chain(tmp_path: Path) -> None:
    require_mosquitto()
    options = DemoOptions(days=DAYS, meters=12, workdir=tmp_path / "demo")
    lines: list[str] = []

    summary = run_demo(options, lines.append)

    meters = len(demo_meters(options))  # 12 households + the supply meter
    assert summary["meters"] == meters
    assert summary["meters_by_protocol"] == {"dlt645-2007": 9, "dlt698.45": 4}
    # Every meter, every day: its freeze's 10 quantities (forward and reverse, total + 4 tariffs).
    truth = summary["truth"]
    assert truth["expected_readings"] == meters * DAYS * 10
    assert truth["matches"] == truth["expected_readings"], truth["examples"]
    assert truth["missing"] == 0
    assert truth["mismatches"] == 0
    assert truth["duplicates"] == 0
    assert truth["extra"] == 0
    assert truth["corrected"] == 0
    for address, counts in summary["per_meter"].items():
        assert counts == {"matched": DAYS * 10, "mismatched": 0, "missing": 0, "extra": 0}, address
    # Consumption per household per day agrees with firmware_sim.truth.
    energy = summary["energy"]
    assert energy["holds"], energy["problems"]
    assert energy["register_checks"] == (meters - 1) * DAYS
    assert energy["consumption_checks"] == meters * (DAYS - 1)
    # Collection: every expected slot got, nothing failed, nothing refused.
    assert summary["expected_daily_slots"] == meters * DAYS
    assert summary["ledger_slots"] == {"expected": meters * DAYS, "got": meters * DAYS, "failed": 0}
    assert summary["collection_success_pct"] == 100.0
    assert summary["edge"]["nacks"] == summary["central"]["nacks"] == 0
    # The edge's log is released by central's ack only, all of it.
    assert summary["edge"]["acked_seq"] == summary["edge"]["records_logged"]
    assert summary["central"]["daily_readings_stored"] == truth["expected_readings"]
    assert summary["holds"] is True
    assert [line.split(":")[0] for line in lines if line.startswith("day ")] == [
        f"day {k}/{DAYS} ({date(2026, 1, k)})" for k in range(1, DAYS + 1)
    ]
    # Cleaned up: no broker left running on the work directory, no simulator thread.
    assert processes_mentioning(str(tmp_path)) == []
    assert not [t for t in threading.enumerate() if t.name in ("simulator", "scheduler")]


def test_cli_headless_json_exit_status_and_cleanup(tmp_path: Path) -> None:
    require_mosquitto()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "central", "demo", "--headless", "--days", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # exactly one JSON object on stdout
    assert summary["holds"] is True
    assert summary["days"] == 2
    assert summary["truth"]["missing"] == summary["truth"]["duplicates"] == 0
    assert summary["workdir"] is None
    assert "day 2/2" in done.stderr  # progress goes to stderr with --json
    assert list(scratch.iterdir()) == []  # the temporary work directory is gone
    assert processes_mentioning(str(scratch)) == []


def test_sigterm_mid_run_stops_everything_and_removes_the_directory(tmp_path: Path) -> None:
    require_mosquitto()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "central", "demo", "--days", "30"],  # a paced run
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("day 1/30"):
                break
        assert processes_mentioning(str(scratch)), "the broker runs from the work directory"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    assert list(scratch.iterdir()) == []
    assert processes_mentioning(str(scratch)) == []


def test_without_mosquitto_the_demo_says_so_and_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(central.demo, "mosquitto_binary", lambda: None)
    result = CliRunner().invoke(cli, ["demo", "--headless", "--days", "1"])
    assert result.exit_code == 1
    assert "mosquitto is not installed" in result.output


def test_the_oracle_sees_missing_wrong_extra_and_doubled_readings() -> None:
    """The oracle must be able to fail: each kind of damage is counted."""
    day = date(2026, 1, 2)
    at = datetime(2026, 1, 1, 16, 0, tzinfo=UTC)  # 2026-01-02 00:00 in Asia/Shanghai
    later = datetime(2026, 1, 1, 16, 15, tzinfo=UTC)
    meters = demo_meters(DemoOptions(meters=2))
    a, b = meters[0].address, meters[1].address
    truth = {
        (a, "1-0:1.8.0", at): Decimal("10.00"),
        (a, "1-0:2.8.0", at): Decimal("0.00"),
        (b, "1-0:1.8.0", at): Decimal("20.00"),
    }

    def row(meter: str, obis: str, ts: datetime, value: str, corrections: int = 0) -> object:
        return SimpleNamespace(meter=meter, obis=obis, ts=ts, value=value, corrections=corrections)

    clean = reconcile(
        truth,
        [
            row(a, "1-0:1.8.0", at, "10.00"),
            row(a, "1-0:2.8.0", at, "0"),
            row(b, "1-0:1.8.0", at, "20"),
        ],
        meters,
        [day],
    )
    assert clean.holds and clean.matched == 3

    damaged = reconcile(
        truth,
        [
            row(a, "1-0:1.8.0", at, "10.01"),  # wrong value
            row(a, "1-0:2.8.0", at, "0.00", corrections=1),  # replaced by a later seq
            row(a, "1-0:2.8.0", later, "0.00"),  # the same day twice (and not a freeze)
            # b's reading is missing
        ],
        meters,
        [day],
    )
    assert not damaged.holds
    assert damaged.mismatched == 1
    assert damaged.missing == 1
    assert damaged.extra == 1
    assert damaged.duplicates == 1
    assert damaged.corrected == 1
    assert damaged.matched == 1
