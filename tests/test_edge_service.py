"""The daemon and its control socket, as real processes and sockets: permissions as
configured, a stale socket replaced, a second daemon refused, a malformed request answered
with an error while the next one works, systemd notifications, SIGTERM → exit 0 with an
intact log, and a crashing task that never kills the daemon."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edge_cli_helpers import (
    SimArea,
    fill_archive,
    invoke,
    invoke_json,
    running_daemon,
    simulated_area,
    start_daemon,
    write_edge_config,
)

from edge_agent.archive import MeterArchive
from edge_agent.config import load_config
from edge_agent.control import ControlClient, ControlServer, RemoteError, socket_is_live
from edge_agent.service import OPS, Agent, sd_notify


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimArea]:
    with simulated_area(tmp_path_factory.mktemp("area")) as sim:
        yield sim


@pytest.fixture
def config(area: SimArea, tmp_path: Path) -> Path:
    path = write_edge_config(tmp_path, area.listen, mode="0640")
    fill_archive(path)
    return path


def _exchange(path: str, *lines: bytes) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(b"".join(lines))
        buffer = b""
        while buffer.count(b"\n") < len(lines):
            chunk = sock.recv(65536)
            assert chunk, "the daemon closed the connection"
            buffer += chunk
    return [json.loads(line) for line in buffer.splitlines()]


# ---------------------------------------------------------------- the socket


def test_the_socket_has_the_configured_mode_and_goes_away_on_stop(config: Path) -> None:
    path = load_config(config).control.socket
    with running_daemon(config) as daemon:
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o640
        code, _, err = daemon.stop()
        assert code == 0, err
    assert not os.path.exists(path)


def test_a_stale_socket_is_replaced(config: Path) -> None:
    path = load_config(config).control.socket
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # a daemon that died without cleaning up: the file, nobody listening
    stale.close()
    assert os.path.exists(path) and not socket_is_live(path)
    with running_daemon(config):
        assert invoke_json(config, "status")["running"] is True


def test_a_second_daemon_refuses_and_the_first_keeps_serving(config: Path) -> None:
    with running_daemon(config) as first:
        second = start_daemon(config)
        _, err = second.communicate(timeout=30)
        assert second.returncode == 1
        assert err.startswith("Error: cannot run: another edge-agent is running")
        assert invoke_json(config, "status")["pid"] == first.process.pid


def test_a_malformed_request_gets_an_error_and_the_next_one_works(config: Path) -> None:
    path = load_config(config).control.socket
    with running_daemon(config) as daemon:
        replies = _exchange(
            path,
            b"this is not json\n",
            b'{"op": "no-such-op"}\n',
            b'{"op": "read", "args": {"meter": "1", "what": "x", "extra": 1}}\n',
            b'["op"]\n',
            b'{"op": "ping"}\n',
        )
        assert [r["ok"] for r in replies] == [False, False, False, False, True]
        assert "not a JSON request" in replies[0]["error"]
        assert "unknown op 'no-such-op'" in replies[1]["error"]
        assert "bad args for read" in replies[2]["error"]
        assert replies[4]["result"]["pid"] == daemon.process.pid
        # another client, at the same time, is not affected by a broken one
        broken = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        broken.connect(path)
        broken.sendall(b'{"op": "sta')  # never finished
        assert ControlClient(path).call("ping")["pid"] == daemon.process.pid
        broken.close()
        with pytest.raises(RemoteError, match="no meter"):
            ControlClient(path).call("read", meter="999999999999", what="00010000")


def test_every_documented_op_exists() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "edge-cli.md").read_text(encoding="utf-8")
    for op in OPS:
        assert f"| `{op}` |" in docs


# ---------------------------------------------------------------- stopping, systemd


def test_sigterm_exits_0_quickly_and_the_log_is_intact(config: Path) -> None:
    loaded = load_config(config)
    with running_daemon(config) as daemon:
        invoke_json(config, "read", "000000000011", "00010000")
        time.sleep(0.5)  # let the collector start its catch-up work on the lines
        code, elapsed, err = daemon.stop()
    assert code == 0, err
    assert elapsed < 5.0
    assert "Traceback" not in err
    with sqlite3.connect(loaded.storage.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # the read-only commands work with the daemon stopped
    assert invoke_json(config, "status")["running"] is False
    assert invoke_json(config, "log")["path"] == loaded.storage.path


def test_systemd_ready_watchdog_and_status(config: Path, tmp_path: Path) -> None:
    notify_path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    listener.settimeout(10)
    try:
        env = {"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "1000000"}
        with running_daemon(config, env) as daemon:
            messages = []
            deadline = time.monotonic() + 10
            while not any("WATCHDOG=1" in m for m in messages) and time.monotonic() < deadline:
                messages.append(listener.recv(4096).decode())
            assert messages[0].startswith("READY=1\nSTATUS=")
            assert any(m.startswith("WATCHDOG=1") for m in messages)
            code, _, err = daemon.stop()
            assert code == 0, err
            messages.append(listener.recv(4096).decode())
            assert "STOPPING=1" in messages[-1]
    finally:
        listener.close()


def test_sd_notify_without_systemd_is_a_no_op() -> None:
    assert sd_notify("READY=1", environ={}) is False


# ---------------------------------------------------------------- in process


class ExplodingCollector:
    """A collector whose every run crashes (a bug in a task)."""

    def __init__(self) -> None:
        self.runs = 0

    def run_due(self) -> None:
        self.runs += 1
        raise ZeroDivisionError("a task bug")

    def status(self) -> dict[str, Any]:
        return {"runs": self.runs}

    def stop(self) -> None:
        self.stopped = True


def test_a_crashing_task_is_counted_and_the_daemon_goes_on(config: Path) -> None:
    collector = ExplodingCollector()
    agent = Agent(load_config(config), tick_s=0.05, collector_factory=lambda *_: collector)
    agent.open()
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while collector.runs < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        client = ControlClient(load_config(config).control.socket)
        status = client.call("status")
        assert status["task_errors"] >= 3
        assert "ZeroDivisionError: a task bug" in status["last_error"]
        assert client.call("tasks")["runs"] >= 3  # the scheduler thread still answers
        assert runner.is_alive()
    finally:
        agent.stop()
        runner.join(10)
        agent.close()


def test_a_socket_path_in_use_by_a_live_listener_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "edge.sock"
    first = ControlServer(path, 0o660, lambda op, args: op)
    first.start()
    try:
        second = ControlServer(path, 0o660, lambda op, args: op)
        with pytest.raises(Exception, match="another edge-agent is running"):
            second.claim()
        assert ControlClient(path).call("x") == "x"
    finally:
        first.close()


def test_archive_edits_while_the_agent_runs_are_applied(config: Path) -> None:
    loaded = load_config(config)
    agent = Agent(loaded, tick_s=0.05, collector_factory=lambda *_: None)
    agent.open()
    try:
        start = agent.archive_revision
        with MeterArchive.from_config(loaded) as archive:
            archive.remove("000000000022")
        deadline = time.monotonic() + 5
        while agent.archive_revision == start and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.archive_changes == 1
    finally:
        agent.close()
    code, _, err = invoke(config, "meters", "show", "000000000022")
    assert code == 1 and "no meter" in err


def test_the_systemd_unit_example() -> None:
    unit = (Path(__file__).parent.parent / "examples" / "meter2cash-edge.service").read_text(
        encoding="utf-8"
    )
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["Type"] == "notify"
    assert settings["WatchdogSec"] == "30"
    assert settings["Restart"] == "on-failure"
    assert settings["User"] == "meter2cash"
    assert settings["ReadWritePaths"] == "/var/lib/meter2cash"
    assert settings["ExecStart"].endswith(" run")


def test_the_scheduler_applies_retention_once_an_hour_on_the_collectors_clock(
    config: Path, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal
    from types import SimpleNamespace

    from edge_agent.store import EdgeLog

    loaded = load_config(config)
    agent = Agent(loaded, environ={})
    log = EdgeLog(tmp_path / "retained.db")
    freeze = datetime(2026, 1, 1, tzinfo=UTC)
    with log.batch() as b:
        for day in range(2):  # 40 and 39 days before the collector's "now"
            b.add_reading(
                "000000000011", "1-0:1.8.0", freeze + timedelta(days=day), Decimal(day),
                "kWh", read_ts=freeze, source="scheduled", kind="daily",
            )  # fmt: skip
    log.acknowledge(1)  # only the first is stored on central
    agent.log = log
    agent.collector = SimpleNamespace(now=lambda: freeze + timedelta(days=40))
    try:
        agent._retain()
        assert [r.seq for r in log.records_between(0, 10)] == [2]  # acked and old: gone
        log.acknowledge(2)
        agent._retain()  # within the hour: not again
        assert [r.seq for r in log.records_between(0, 10)] == [2]
        agent._next_retention = 0.0
        agent._retain()
        assert log.records_between(0, 10) == []
    finally:
        log.close()
