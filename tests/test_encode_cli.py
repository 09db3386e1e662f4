"""``python -m shared_protocol encode``: hand-built requests equal the public vectors."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from shared_protocol.cli import cli


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared_protocol", "encode", *args],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "expected", "source"),
    [
        (
            ["read", "--address", "000000000161", "--di", "02010100"],
            "FE FE FE FE 68 61 01 00 00 00 00 68 11 04 33 34 34 35 17 16",
            "645-004",
        ),
        (
            ["read", "--address", "558890213594", "--di", "00010000"],
            "FE FE FE FE 68 94 35 21 90 88 55 68 11 04 33 33 34 33 09 16",
            "645-011",
        ),
        (
            [
                "read",
                "--protocol",
                "dlt645-1997",
                "--address",
                "999999999999",
                "--di",
                "9010",
                "--preamble",
                "0",
            ],
            "68 99 99 99 99 99 99 68 01 02 43 C3 6F 16",
            "645-072",
        ),
        (
            [
                "read",
                "--address",
                "000000000105",
                "--oad",
                "00100200",
                "--ca",
                "00",
                "--preamble",
                "0",
            ],
            "68 17 00 43 05 05 01 00 00 00 00 00 FA 8D 05 01 01 00 10 02 00 00 FE 19 16",
            "698-007",
        ),
        (
            ["read-address", "--preamble", "3"],
            "FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16",
            "645-009",
        ),
        (
            ["read-address", "--protocol", "dlt698.45", "--preamble", "0"],
            "68 17 00 43 45 AA AA AA AA AA AA 10 DA 5F 05 01 01 40 01 02 00 00 C6 07 16",
            "698-005",
        ),
        (
            ["time-sync", "--at", "2019-12-07 16:28:00", "--preamble", "0"],
            "68 99 99 99 99 99 99 68 08 06 33 5B 49 3A 45 4C 16 16",
            "645-063",
        ),
        (
            # Modbus spec example frame: unit 1, read input registers 0..1, CRC 71 CB
            ["modbus-read", "--unit", "1", "--function", "4", "--start", "0", "--count", "2"],
            "01 04 00 00 00 02 71 CB",
            "hand: CRC-16/Modbus of 01 04 00 00 00 02",
        ),
    ],
)
def test_encoded_request_matches_vector(args: list[str], expected: str, source: str) -> None:
    result = _run(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected, source


def test_json_output_explains_the_frame_it_built() -> None:
    result = _run("read", "--address", "000006605518", "--di", "00010300", "--json")
    doc = json.loads(result.stdout)
    assert doc["explain"]["valid"] is True
    assert doc["explain"]["di"] == "00010300"
    assert doc["explain"]["address"] == "000006605518"
    assert doc["hex"].startswith("FE FE FE FE 68 18 55 60 06 00 00 68 11")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["read", "--address", "000006605518"], "exactly one of --di"),
        (["read", "--address", "000006605518", "--di", "0001000"], "8 hex digits"),
        (["read", "--address", "0000066055XY", "--di", "00010000"], "0000066055XY"),
        (["modbus-read", "--model", "nosuchmeter"], "nosuchmeter"),
        (["time-sync", "--at", "yesterday"], "yesterday"),
    ],
)
def test_bad_requests_exit_2_and_say_what_is_wrong(args: list[str], message: str) -> None:
    result = _run(*args)
    assert result.returncode == 2
    assert message in result.stderr


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
    return found


@pytest.mark.parametrize(("name", "command"), _commands(cli))
def test_every_command_has_help_with_an_example(name: str, command: click.Command) -> None:
    assert command.help, f"{name} has no help"
    assert "python -m shared_protocol" in command.help, f"{name} help shows no example"
