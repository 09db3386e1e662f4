"""The area config: the example loads and builds, every problem is named by its field path,
all problems are collected at once, and the scenario generator writes configs that load."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from firmware_sim.config import (
    AreaSection,
    BusSection,
    ConfigError,
    MeterSection,
    SimulationSection,
    build,
    load_config,
    parse_config,
)
from firmware_sim.responders import Dlt698Responder, ModbusResponder
from firmware_sim.scenario import new_scenario

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "area.toml"
SIMULATOR_DOCS = (ROOT / "docs" / "simulator.md").read_text(encoding="utf-8")

MINIMAL = """
[[buses]]
name = "line"
protocol = "dlt645"

[[meters]]
id = "a"
address = "000000000001"
protocol = "dlt645-2007"
bus = "line"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.toml")
    return caught.value.problems


# ---------------------------------------------------------------- good configs


def test_the_example_loads_with_every_section() -> None:
    config = load_config(EXAMPLE)
    assert config.simulation.start == datetime(2026, 1, 1, tzinfo=UTC)
    assert config.simulation.acceleration == 60
    assert config.area.id == "taiqu-7" and config.area.loss_percent == Decimal("3.5")
    assert [b.name for b in config.buses] == ["rs485-645", "rs485-698", "rs485-modbus"]
    assert config.buses[1].wire_time is not None and config.buses[1].wire_time.baud == 9600
    assert config.buses[2].faults is not None and config.buses[2].faults.seed == 7
    protocols = {m.protocol for m in config.meters}
    assert protocols == {"dlt645-2007", "dlt645-1997", "dlt698.45", "modbus-rtu"}
    by_id = {m.id: m for m in config.meters}
    assert by_id["room-102"].bypass_percent == 40
    assert by_id["room-103"].wired_to == "room-104"
    assert by_id["room-105"].faults is not None and len(by_id["room-105"].faults.rules) == 2
    assert by_id["room-203"].security_key == bytes.fromhex("00112233445566778899aabbccddeeff")
    assert by_id["pump-1"].address == "1"  # a Modbus meter is addressed by its unit id


def test_the_example_builds_an_area_whose_balance_holds() -> None:
    simulation = build(load_config(EXAMPLE))
    simulation.fast_forward(2)
    area = simulation.area
    assert area.balance().holds
    assert area.name == "taiqu-7" and area.theft_uj > 0
    buses = simulation.buses
    assert [d.device_id for d in buses["rs485-645"].devices] == [
        "000000000101",
        "000000000102",
        "000000000103",
        "000000000104",
        "000000000105",
    ]
    assert isinstance(buses["rs485-698"].devices[-1], Dlt698Responder)  # the supply meter
    assert all(isinstance(d, ModbusResponder) for d in buses["rs485-modbus"].devices)
    assert area.meters["room-203"].security_key == bytes.fromhex("00112233445566778899aabbccddeeff")
    assert area.meters["room-302"].dead


def test_defaults_fill_a_minimal_config() -> None:
    config = parse_config(MINIMAL)
    assert config.simulation == SimulationSection()
    assert config.area == AreaSection()
    assert config.buses == (BusSection("line", "dlt645"),)
    assert config.meters == (MeterSection("a", "000000000001", "dlt645-2007", "line"),)


def test_a_bus_takes_a_device_protocol_name_for_its_line() -> None:
    config = parse_config(MINIMAL.replace('protocol = "dlt645"\n', 'protocol = "dlt645-1997"\n'))
    assert config.buses[0].protocol == "dlt645"


def test_start_may_be_a_string_and_is_kept_in_utc() -> None:
    text = '[simulation]\nstart = "2026-01-01T08:00:00+08:00"\n' + MINIMAL
    assert parse_config(text).simulation.start == datetime(2026, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------- bad configs


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('protocol = "dlt645-2007"', 'protocol = "dlt645-2009"'),
            "meters[0].protocol: 'dlt645-2009' is not one of"
            " dlt645-2007, dlt645-1997, dlt698.45, modbus-rtu",
        ),
        (('address = "000000000001"', 'address = "12AB"'), "meters[0].address: '12AB' is not"),
        (('bus = "line"', 'bus = "other"'), "meters[0].bus: 'other' is not a bus (buses: line)"),
        (('bus = "line"', 'bus = "line"\nbypass_percent = 120'), "meters[0].bypass_percent:"),
        (('bus = "line"', 'bus = "line"\ndead = "yes"'), "meters[0].dead: expected true or false"),
        (('bus = "line"', 'bus = "line"\ncolour = 1'), "meters[0].colour: unknown field"),
        (('bus = "line"', 'bus = "line"\nwired_to = "zz"'), "meters[0].wired_to: 'zz' is not"),
        (('bus = "line"', 'bus = "line"\ncustomer_class = "farm"'), "customer_class: 'farm'"),
        (('bus = "line"', 'bus = "line"\nsecurity_key = "abc"'), "security_key: expected hex"),
        (
            ('bus = "line"', 'bus = "line"\nfaults = { faults = [{ kind = "fire" }] }'),
            "meters[0].faults.faults[0]",
        ),
        (('name = "line"', 'name = ""'), "buses[0].name: must not be empty"),
        (('protocol = "dlt645"', 'protocol = "can"'), "buses[0].protocol: 'can' is not one of"),
        (
            ('protocol = "dlt645"', 'protocol = "dlt645"\ntransport = "udp://x:1"'),
            "buses[0].transport: 'udp://x:1' is not 'pty' or 'tcp://HOST:PORT'",
        ),
        (
            ('protocol = "dlt645"', 'protocol = "dlt645"\nwire_time = { baud = "fast" }'),
            "buses[0].wire_time.baud: expected a positive integer",
        ),
        (
            ('protocol = "dlt645"', 'protocol = "dlt698.45"'),
            "meters[0].bus: a dlt645-2007 meter cannot share the dlt698.45 line 'line'",
        ),
    ],
)
def test_a_bad_field_is_named_by_its_path(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in MINIMAL
    found = problems(MINIMAL.replace(old, new, 1))
    assert any(p.startswith(expected) or expected in p for p in found), found


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("[simulation]\nacceleration = 0\n", "simulation.acceleration: must be"),
        ("[simulation]\nstart = 2026-01-01T00:00:00\n", "simulation.start: give the UTC offset"),
        ('[simulation]\nstart = "yesterday"\n', "simulation.start: 'yesterday' is not an ISO"),
        ('[simulation]\ntimezone = "Mars/Olympus"\n', "simulation.timezone: 'Mars/Olympus'"),
        ("[simulation]\nfast_forward_days = -1\n", "simulation.fast_forward_days: must be"),
        ("[area]\nloss_percent = 80\n", "area.loss_percent: must be 0..50"),
        ("[area]\nloss_percent = true\n", "area.loss_percent: expected a number"),
        ('[area]\nsupply_protocol = "dlt645-2007"\n', "area.supply_protocol:"),
        ('[area]\nsupply_bus = "line"\n', "area.supply_bus: the supply meter speaks dlt698.45"),
        ('[area]\nsupply_bus = "nowhere"\n', "area.supply_bus: 'nowhere' is not a bus"),
        ('[area]\nsupply_address = "1"\n', "area.supply_address: '1' is not a meter address"),
        ("stray = 1\n", "stray: unknown field"),
    ],
)
def test_simulation_and_area_fields_are_checked(prefix: str, expected: str) -> None:
    found = problems(prefix + MINIMAL)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_collected_at_once() -> None:
    text = MINIMAL.replace('protocol = "dlt645-2007"', 'protocol = "x"').replace(
        "[[buses]]", "[simulation]\nacceleration = -5\n\n[[buses]]"
    )
    text += '\n[[meters]]\nid = "a"\naddress = "000000000001"\nprotocol = "dlt645-2007"\n'
    found = problems(text)
    assert found[0].startswith("simulation.acceleration:")
    assert any(p.startswith("meters[0].protocol:") for p in found)
    assert "meters[1].bus: missing" in found
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.toml")
    assert str(caught.value).startswith(f"t.toml: {len(found)} problems\n  ")


def test_meter_faults_are_scheduled_on_the_meter() -> None:
    text = MINIMAL + (
        "meter_faults = [\n"
        '  { at = 2026-01-01T06:00:00Z, kind = "meter_replaced", new_address = "000000000099" },\n'
        '  { at = 2026-01-01T03:00:00Z, kind = "clock_jump", delta_seconds = -120 },\n'
        "]\n"
    )
    config = parse_config(text)
    faults = config.meters[0].meter_faults
    assert [f.kind.value for f in faults] == ["clock_jump", "meter_replaced"]  # sorted by time
    assert faults[0].delta == timedelta(seconds=-120)
    simulation = build(config)
    simulation.fast_forward(1)
    assert simulation.area.meters["a"].address == "000000000099"
    assert "meter_replaced" in simulation.area.truth[-1].anomalies["a"]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ('{ at = 2026-01-01T00:00:00Z, kind = "clock_jump" }', "[0].delta_seconds: a clock_jump"),
        ('{ at = 2026-01-01T00:00:00Z, kind = "meter_replaced" }', "[0].new_address: a meter_r"),
        ('{ at = 2026-01-01T00:00:00Z, kind = "meteor" }', "[0].kind: 'meteor' is not one of"),
        ('{ kind = "meter_dies" }', "[0].at: missing"),
        ('{ at = 2026-01-01T00:00:00, kind = "meter_dies" }', "[0].at: give the UTC offset"),
    ],
)
def test_bad_meter_faults_are_named(fault: str, expected: str) -> None:
    found = problems(MINIMAL + f"meter_faults = [{fault}]\n")
    assert any(p.startswith(f"meters[0].meter_faults{expected}") for p in found), found


def test_twins_on_a_line_are_refused() -> None:
    twin = MINIMAL + '\n[[meters]]\nid = "b"\naddress = "000000000001"\n'
    twin += 'protocol = "dlt645-1997"\nbus = "line"\n'
    assert problems(twin) == ["meters[1].address: 000000000001 is already meter 'a' on 'line'"]
    same_id = twin.replace('id = "b"', 'id = "a"').replace(
        '"000000000001"\nprotocol = "dlt645-1997"', '"000000000002"\nprotocol = "dlt645-1997"'
    )
    assert any("'a' is used by another meter" in p for p in problems(same_id))
    modbus = (
        '[[buses]]\nname = "m"\nprotocol = "modbus-rtu"\n'
        '[[meters]]\nid = "p"\nprotocol = "modbus-rtu"\nbus = "m"\nunit_id = 5\n'
        '[[meters]]\nid = "q"\nprotocol = "modbus-rtu"\nbus = "m"\nunit_id = 5\n'
    )
    assert problems(modbus) == ["meters[1].unit_id: 5 is already meter 'p' on 'm'"]


def test_broken_toml_and_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    assert problems("[[buses]\n")[0].startswith("not valid TOML:")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.toml")
    assert caught.value.problems[0].startswith("cannot read the file")


# ---------------------------------------------------------------- scenario generator


def test_new_scenario_loads_and_has_the_requested_mix_and_anomalies() -> None:
    text = new_scenario(
        20,
        {"dlt645-2007": 0.5, "dlt645-1997": 0.1, "dlt698.45": 0.2, "modbus-rtu": 0.2},
        {"bypass": 2, "crossed": 1, "prepaid": 1, "protected": 1},
        seed=5,
        transport="pty",
    )
    config = parse_config(text)
    summary = config.summary()
    assert summary["protocols"] == {
        "dlt645-2007": 10,
        "dlt645-1997": 2,
        "dlt698.45": 4,
        "modbus-rtu": 4,
    }
    assert {b.transport for b in config.buses} == {"pty"}
    assert sum(m.bypass_percent > 0 for m in config.meters) == 2
    assert sum(m.wired_to is not None for m in config.meters) == 2
    assert sum(m.prepaid for m in config.meters) == 1
    assert sum(m.protected for m in config.meters) == 1
    assert config.area.supply_bus == "rs485-698"
    build(config).fast_forward(1)


def test_new_scenario_without_698_meters_has_no_supply_bus() -> None:
    config = parse_config(new_scenario(3, {"modbus-rtu": 1}, seed=1))
    assert config.area.supply_bus is None
    assert [m.unit_id for m in config.meters] == [1, 2, 3]


# ---------------------------------------------------------------- docs


def test_every_config_field_is_documented() -> None:
    section = SIMULATOR_DOCS.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([a-z_]+)`", section))
    for cls in (SimulationSection, AreaSection, BusSection, MeterSection):
        for name in cls.__dataclass_fields__:
            assert name in documented, f"{cls.__name__}.{name} is not in docs/simulator.md"


def test_public_names_are_pinned() -> None:
    import firmware_sim.config
    import firmware_sim.scenario

    assert sorted(firmware_sim.config.__all__) == [
        "AreaSection",
        "BusSection",
        "ConfigError",
        "MeterSection",
        "SimConfig",
        "Simulation",
        "SimulationSection",
        "build",
        "load_config",
        "parse_config",
    ]
    assert sorted(firmware_sim.scenario.__all__) == [
        "ANOMALIES",
        "DEFAULT_MIX",
        "new_scenario",
        "parse_pairs",
    ]
