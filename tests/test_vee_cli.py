"""`central vee …`: every command has help with an example and a section in docs/vee.md;
the commands work end to end on a database (SQLite here: the library under them is tested
on both backends); a bad input is one line `Error: …` and exit status 1 or 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from vee_support import DAY, QUARTER, T0, Feed, curve, reading, rising_values

from central.cli import cli
from central.db import make_engine, upgrade
from central.vee.cli import vee

DOC = (Path(__file__).resolve().parent.parent / "docs" / "vee.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(vee.commands))
def test_every_command_has_an_example_and_a_doc_section(name: str) -> None:
    help_text = CliRunner().invoke(cli, ["vee", name, "--help"]).output
    assert "Example:" in help_text and f"central vee {name}" in help_text
    assert f"## `central vee {name}`" in DOC, f"docs/vee.md has no section for {name}"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'vee.sqlite3'}"


def run(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["vee", *args, "--database-url", url])
    return result.exit_code, result.output


def test_a_day_of_work_from_the_command_line(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    try:
        feed = Feed(engine, vee=False)  # stored while VEE was off
        holed = rising_values()
        holed[20] = None
        feed.send_all([*curve("m1", DAY, holed), reading("m1", "1-0:1.8.0", T0, "100")])
        feed.send(reading("m1", "1-0:1.8.0", T0 + QUARTER, "99"))
    finally:
        engine.dispose()
    code, out = run(url, "exceptions", "--open")
    assert code == 0 and out == "no VEE exceptions match\n"
    code, out = run(url, "pending", "--json")
    assert code == 0 and json.loads(out)["statuses"] == {"failed": 1, "valid": 96}
    code, out = run(url, "close-day", DAY.isoformat())
    assert code == 0 and "95/96 points; estimated LIN 1" in out
    code, again = run(url, "close-day", DAY.isoformat(), "--workers", "2")
    assert code == 0 and again == out
    code, refused = run(url, "close-day", DAY.isoformat(), "--workers", "0")
    assert code == 2 and "--workers" in refused
    code, out = run(url, "exceptions", "--open", "--json")
    listed = json.loads(out)
    assert [e["rule"] for e in listed] == ["V7", "V1"]
    code, out = run(url, "resolve", str(listed[0]["id"]), "--reason", "swap", "--by", "ops")
    assert code == 0 and "resolved by ops" in out
    code, out = run(url, "resolve", str(listed[0]["id"]), "--reason", "again")
    assert code == 1 and out.startswith("Error: VEE exception") and "already resolved" in out
    code, out = run(url, "override", "9999", "--reason", "x")
    assert code == 1 and out == "Error: no VEE exception 9999\n"
    code, out = run(url, "set", "V9", "margin", "1.0", "--from", "2026-03-03", "--by", "a")
    assert code == 0 and out.startswith("V9 margin = 1.0 from 2026-03-02T16:00:00+00:00")
    code, out = run(url, "set", "V9", "margin", "x", "--from", "2026-03-03")
    assert code == 1 and "parameter margin" in out
    code, out = run(url, "rules", "--json", "--at", "2026-03-04")
    [v9] = [r for r in json.loads(out) if r["id"] == "V9"]
    assert v9["parameters"][0]["value"] == "1.0"
    code, out = run(url, "rerun", "--from", "2026-03-03", "--to", "2026-03-03", "--json")
    assert code == 0 and json.loads(out)["readings"] == 97
    code, out = run(url, "rerun", "--from", "2026-03-04", "--to", "2026-03-03")
    assert code == 2 and "--to" in out
    code, out = run(url, "meter", "m1", "--from", "2026-03-05", "--removed", "--by", "a")
    assert code == 0 and "removed" in out
    code, out = run(url, "close-day", "2026-13-01")
    assert code == 2 and "not a date" in out
