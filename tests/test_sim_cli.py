"""`firmware-sim`: every command runs, its help has an example, output parses, errors are stable.

`run` is tested as a real process on a real pty and a real TCP port: the test reads the
printed locations and does one read on each with pyserial / a socket and our own codec.
"""

from __future__ import annotations

import csv
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from firmware_sim.cli import _commands, cli
from firmware_sim.config import load_config
from shared_protocol import dlt645, dlt698
from shared_protocol.stream import NEED_DATA

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "area.toml"
DOCS = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")

RUN_CONFIG = """
[simulation]
start = 2026-03-01T00:00:00Z
acceleration = 1
seed = 4
fast_forward_days = 1

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
id = "flat-2"
address = "000000000022"
protocol = "dlt698.45"
bus = "line-698"
"""


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


# ---------------------------------------------------------------- help and docs


@pytest.mark.parametrize("name", sorted(_commands(cli)))
def test_every_command_has_help_with_an_example_and_is_documented(name: str) -> None:
    code, out, _ = invoke(*name.split(), "--help")
    assert code == 0
    assert "Example:" in out
    assert f"firmware-sim {name}" in out.split("Example:")[1]
    assert f"## `firmware-sim {name}`" in DOCS, f"docs/cli.md has no section for {name}"


def test_the_group_help_has_an_example() -> None:
    code, out, _ = invoke("--help")
    assert code == 0 and "Example:" in out


# ---------------------------------------------------------------- validate


def test_validate_a_good_config_prints_a_summary() -> None:
    code, out, _ = invoke("validate", "--config", str(EXAMPLE))
    assert code == 0
    assert out.startswith("ok: ")
    assert "11 meters" in out and "anomaly room-102: bypass:40%" in out


def test_validate_json_parses() -> None:
    code, out, _ = invoke("validate", "--config", str(EXAMPLE), "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["meters"] == 11
    assert [b["name"] for b in summary["buses"]] == ["rs485-645", "rs485-698", "rs485-modbus"]
    assert "supply" in summary["buses"][1]["meters"]


def test_a_bad_config_exits_2_naming_every_field(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace('"dlt645-1997"', '"dlt645-2009"').replace("baud = 9600", "baud = 0")
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    code, out, err = invoke("validate", "--config", str(bad))
    assert code == 2 and out == ""
    assert err.startswith(f"Error: {bad}: 2 problems\n")
    assert (
        "  meters[4].protocol: 'dlt645-2009' is not one of"
        " dlt645-2007, dlt645-1997, dlt698.45, modbus-rtu"
    ) in err
    assert "  buses[1].wire_time.baud:" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["validate", "run", "truth"])
def test_every_config_command_refuses_a_bad_config_the_same_way(
    tmp_path: Path, command: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[simulation]\nacceleration = -1\n", encoding="utf-8")
    extra = ["--days", "1"] if command == "truth" else []
    code, _, err = invoke(command, "--config", str(bad), *extra)
    assert code == 2
    assert "simulation.acceleration: must be" in err
    assert "buses: missing" in err


def test_a_missing_file_and_broken_toml_are_config_errors(tmp_path: Path) -> None:
    code, _, err = invoke("validate", "--config", str(tmp_path / "nope.toml"))
    assert code == 2 and "cannot read the file" in err
    broken = tmp_path / "broken.toml"
    broken.write_text("[simulation\n", encoding="utf-8")
    code, _, err = invoke("validate", "--config", str(broken))
    assert code == 2 and "not valid TOML" in err


# ---------------------------------------------------------------- scenario new


def test_scenario_new_writes_a_config_that_validates(tmp_path: Path) -> None:
    out_file = tmp_path / "area.toml"
    code, _, err = invoke(
        "scenario", "new", "--meters", "32",
        "--mix", "dlt645-2007=0.7,dlt698.45=0.2,modbus-rtu=0.1",
        "--anomalies", "bypass=1,reversed=1,crossed=1,dead=1,drift=1",
        "--seed", "1", "-o", str(out_file),
    )  # fmt: skip
    assert code == 0, err
    config = load_config(out_file)
    assert len(config.meters) == 32
    assert config.summary()["protocols"] == {"dlt645-2007": 23, "dlt698.45": 6, "modbus-rtu": 3}
    anomalies = [a for found in config.summary()["anomalies"].values() for a in found]
    assert sorted(a.split(":")[0] for a in anomalies) == sorted(
        ["bypass", "reversed_wiring", "cross_wired", "cross_wired", "dead_meter", "clock_drift"]
    )
    assert invoke("validate", "--config", str(out_file))[0] == 0


def test_scenario_new_is_reproducible_by_seed_and_prints_to_stdout() -> None:
    first = invoke("scenario", "new", "--meters", "10", "--anomalies", "dead=2", "--seed", "3")
    again = invoke("scenario", "new", "--meters", "10", "--anomalies", "dead=2", "--seed", "3")
    other = invoke("scenario", "new", "--meters", "10", "--anomalies", "dead=2", "--seed", "4")
    assert first[0] == 0 and first[1] == again[1] != other[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mix", "dlt645-2009=1"], "'dlt645-2009' is not one of"),
        (["--mix", "dlt645-2007"], "is not NAME=VALUE"),
        (["--anomalies", "ghost=1"], "'ghost' is not one of"),
        (["--meters", "2", "--anomalies", "crossed=1,dead=1"], "3 meters needed"),
    ],
)
def test_scenario_new_usage_errors_exit_2(args: list[str], message: str) -> None:
    code, _, err = invoke("scenario", "new", *args)
    assert code == 2 and message in err and "Error: " in err


# ---------------------------------------------------------------- truth


def test_truth_jsonl_and_csv(tmp_path: Path) -> None:
    config = tmp_path / "area.toml"
    config.write_text(RUN_CONFIG, encoding="utf-8")
    code, out, _ = invoke("truth", "--config", str(config), "--days", "3")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    # 3 days from 00:00 UTC cross 3 local (UTC+8) midnights: 2 whole days x (2 meters + supply)
    assert len(rows) == 6
    assert {r["account"] for r in rows} == {"flat-1", "flat-2", "supply"}
    assert all(r["area"] == "cli-test" for r in rows)
    csv_file = tmp_path / "truth.csv"
    code, _, err = invoke(
        "truth", "--config", str(config), "--days", "3", "--format", "csv", "-o", str(csv_file)
    )
    assert code == 0 and "6 rows" in err
    table = list(csv.DictReader(io.StringIO(csv_file.read_text(encoding="utf-8"))))
    assert [r["true_kwh"] for r in table] == [r["true_kwh"] for r in rows]


def test_truth_of_the_example_shows_its_anomalies() -> None:
    code, out, _ = invoke("truth", "--config", str(EXAMPLE), "--days", "2")
    assert code == 0
    rows = {r["account"]: r for r in map(json.loads, out.splitlines())}
    assert rows["room-102"]["anomalies"] == "bypass:40%"
    assert rows["room-302"]["shown_import_kwh"] == "0.0000"
    assert rows["supply"]["theft_kwh"] == "3.6000"  # 150 W for 24 h


# ---------------------------------------------------------------- run


def _start_run(config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "run", "--config", str(config), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _read_lines(proc: subprocess.Popen[str], count: int, timeout: float = 30.0) -> list[str]:
    """The first ``count`` lines ``run`` prints, waiting at most ``timeout`` seconds.

    Read on the raw descriptor: selecting on the text wrapper would miss a second line
    already sitting in its buffer when both arrive in one write.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    pending = b""
    deadline = time.monotonic() + timeout
    while pending.count(b"\n") < count:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(remaining, 0))
        if not ready:
            proc.kill()
            pytest.fail(f"run printed {pending!r} within {timeout}s")
        chunk = os.read(fd, 4096)
        if not chunk:
            pytest.fail(f"run ended early: {proc.wait()} {proc.stderr and proc.stderr.read()}")
        pending += chunk
    return [line.decode() + "\n" for line in pending.split(b"\n")[:count]]


def _read_645_over_pty(path: str, address: str) -> dlt645.ReadResponse:
    serial = pytest.importorskip("serial")
    with serial.Serial(path, 2400, parity="E", timeout=3) as port:
        port.write(dlt645.encode_frame(dlt645.read_request(address, 0x00010000)))
        parser = dlt645.StreamParser()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            parser.receive_data(port.read(1) or b"")
            event = parser.next_event()
            if isinstance(event, dlt645.Frame):
                return dlt645.decode_read_response(event)
    pytest.fail("no 645 reply on the pty")


def _read_698_over_tcp(url: str, address: str) -> dlt698.GetResponseNormal:
    host, port = url.removeprefix("socket://").rsplit(":", 1)
    request = dlt698.Frame(
        dlt698.Control.client_request(),
        dlt698.ServerAddress.single(address),
        0x10,
        dlt698.encode_apdu(dlt698.GetRequestNormal(1, dlt698.OAD(0x4001, 2))),
    )
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(dlt698.encode_frame(request))
        parser = dlt698.StreamParser()
        while True:
            parser.receive_data(sock.recv(4096))
            event = parser.next_event()
            if event is not NEED_DATA:
                break
    assert isinstance(event, dlt698.Frame)
    apdu = dlt698.decode_apdu(event.apdu)
    assert isinstance(apdu, dlt698.GetResponseNormal)
    return apdu


def test_run_serves_a_pty_and_a_tcp_bus_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    config = tmp_path / "area.toml"
    config.write_text(RUN_CONFIG, encoding="utf-8")
    proc = _start_run(config, "--json", "--duration", "60")
    try:
        buses = {b["bus"]: b for b in map(json.loads, _read_lines(proc, 2))}
        assert buses["line-645"]["protocol"] == "dlt645"
        assert buses["line-698"]["meters"] == ["flat-2", "supply"]
        pty_path = buses["line-645"]["listen"]
        assert pty_path.startswith("/dev/")
        assert buses["line-698"]["listen"].startswith("socket://127.0.0.1:")

        energy = _read_645_over_pty(pty_path, "000000000011")
        assert energy.di == 0x00010000
        assert energy.values[0].value > 0  # a day of residential load was fast-forwarded

        reply = _read_698_over_tcp(buses["line-698"]["listen"], "000000000022")
        assert reply.result.data is not None
        assert reply.result.data.value == bytes.fromhex("000000000022")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "2 requests, 2 replies" in err


def test_run_stops_by_itself_after_duration_and_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "area.toml"
    config.write_text(RUN_CONFIG.replace("fast_forward_days = 1", ""), encoding="utf-8")
    proc = _start_run(config, "--duration", "0.5")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("line-645\tdlt645\t/dev/")
    assert lines[1].startswith("line-698\tdlt698.45\tsocket://127.0.0.1:")

    proc = _start_run(config)
    _read_lines(proc, 2)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


def test_run_reports_a_port_in_use_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "area.toml"
        config.write_text(
            RUN_CONFIG.replace("tcp://127.0.0.1:0", f"tcp://127.0.0.1:{port}"), encoding="utf-8"
        )
        proc = _start_run(config, "--duration", "5")
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err.startswith("Error: cannot start the buses:")
