"""The edge config: every key's validation message, defaults, examples, hashing."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from edge_agent.config import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    EXAMPLE_TOML,
    ConfigError,
    EdgeConfig,
    Problem,
    config_hash,
    config_path,
    example,
    load_config,
    parse_config,
    to_toml,
)

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = '[gateway]\nid = "gw-1"\n'
BUS = '[[buses]]\nname = "rs485-1"\nport = "/dev/ttyS1"\n'


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return caught.value.problems


def only_problem(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return str(problems[0])


# -- defaults ---------------------------------------------------------------------------------


def test_minimal_config_takes_every_default() -> None:
    config = parse_config(MINIMAL)
    assert config.gateway.id == "gw-1"
    assert config.gateway.timezone == "Asia/Shanghai"
    assert config.storage.path == "/var/lib/meter2cash/edge.db"
    assert config.storage.quota_mb == 1024
    assert config.storage.retention.daily == 62
    assert config.storage.retention.raw_frames == 2
    assert config.buses == ()
    assert config.tasks.daily_frozen.at == time(0, 5)
    assert config.tasks.monthly_frozen.day == 1
    assert config.tasks.curve.enabled and config.tasks.curve.interval_min == 15
    assert config.tasks.events.interval_min == 60
    assert config.tasks.clock_check.at == time(3, 30)
    assert config.tasks.backfill_days == 3
    assert config.clock.threshold_s == 60
    assert config.clock.forbidden_window_min == 5
    assert config.clock.max_syncs_per_meter_per_day == 2
    assert config.archive.max_meters == 2040
    assert config.control.mode == 0o660
    assert config.control.socket == "/run/meter2cash/edge.sock"


def test_bus_defaults_are_2400_8e1_dlt645() -> None:
    bus = parse_config(MINIMAL + BUS).buses[0]
    assert (bus.protocol, bus.baud, bus.parity, bus.data_bits, bus.stop_bits) == (
        "dlt645",
        2400,
        "E",
        8,
        1,
    )
    assert bus.response_timeout_ms == 500
    assert bus.retries == 1
    assert not bus.echo and not bus.rs485_kernel_mode
    assert bus.bits_per_char == 11
    assert bus.char_time_ms == pytest.approx(11 / 2.4)


def test_clock_forbidden_window() -> None:
    clock = parse_config(MINIMAL).clock
    assert clock.is_forbidden(time(0, 0))
    assert clock.is_forbidden(time(13, 4, 59))
    assert clock.is_forbidden(time(23, 56))
    assert not clock.is_forbidden(time(13, 5))
    assert not clock.is_forbidden(time(13, 55))
    assert not clock.is_forbidden(time(3, 30))


# -- every key's problem message ----------------------------------------------------------------

CASES = [
    # (TOML text, the one expected problem)
    ("", "gateway.id: is required"),
    ('[gateway]\nid = "gw 1"\n', "gateway.id: \"gw 1\" is not a usable name; use 1-64 letters, "
     "digits, '_', '.' or '-'"),
    ("[gateway]\nid = 7\n", "gateway.id: must be a string, got an integer 7"),
    (MINIMAL + 'timezone = "Mars/Olympus"\n',
     'gateway.timezone: "Mars/Olympus" is not a known IANA time zone; use e.g. "Asia/Shanghai"'),
    (MINIMAL + 'colour = "red"\n', "gateway.colour: unknown key; known keys: id, timezone"),
    (MINIMAL + '[storage]\npath = "edge.db"\n',
     'storage.path: "edge.db" is not an absolute path; write it starting with /'),
    (MINIMAL + "[storage]\nquota_mb = 8\n",
     "storage.quota_mb: 8 is outside 16..1048576; the log needs at least 16 MB"),
    (MINIMAL + "[storage.retention]\ndaily = 0\n",
     "storage.retention.daily: 0 is outside 1..36500; days to keep acknowledged records"),
    (MINIMAL + "[storage.retention]\nraw_frames = -1\n",
     "storage.retention.raw_frames: -1 is outside 0..36500; days to keep acknowledged records; "
     "0 keeps no raw frames"),
    (MINIMAL + "[storage.retention]\ncurves = 3\n",
     "storage.retention.curves: unknown key; did you mean 'curve'?"),
    (MINIMAL + '[[buses]]\nport = "/dev/ttyS1"\n', "buses[0].name: is required"),
    (MINIMAL + '[[buses]]\nname = "a"\n', "buses[0].port: is required"),
    (MINIMAL + '[[buses]]\nname = "a"\nport = "COM3"\n',
     'buses[0].port: "COM3" is not a port; use a device path (/dev/ttyS1, /dev/pts/3), '
     "pty:PATH, socket://HOST:PORT or rfc2217://HOST:PORT"),
    (MINIMAL + '[[buses]]\nname = "a"\nport = "socket://host"\n',
     'buses[0].port: "socket://host" is not a serial server address; write socket://HOST:PORT'),
    (MINIMAL + '[[buses]]\nname = "a"\nport = "rfc2217://h:70000"\n',
     'buses[0].port: "rfc2217://h:70000" is not a serial server address; '
     "write rfc2217://HOST:PORT"),
    (MINIMAL + '[[buses]]\nname = "a"\nport = "pty:"\n',
     "buses[0].port: pty: needs a name or path after it, e.g. pty:/dev/pts/3"),
    (MINIMAL + BUS + "baud = 2401\n",
     "buses[0].baud: 2401 is not a standard rate; use one of 1200, 2400, 4800, 9600, 19200, "
     "38400, 115200"),
    (MINIMAL + BUS + 'parity = "e"\n', 'buses[0].parity: "e" is not a parity; use one of E, N, O'),
    (MINIMAL + BUS + "data_bits = 9\n",
     "buses[0].data_bits: 9 is not a character size; use one of 7, 8"),
    (MINIMAL + BUS + "stop_bits = 3\n",
     "buses[0].stop_bits: 3 is not a stop bit count; use one of 1, 2"),
    (MINIMAL + BUS + 'protocol = "iec62056"\n',
     'buses[0].protocol: "iec62056" is not a protocol family; use one of dlt645, dlt698, '
     "modbus-rtu"),
    (MINIMAL + BUS + "response_timeout_ms = 5\n",
     "buses[0].response_timeout_ms: 5 is outside 20..10000"),
    (MINIMAL + BUS + "inter_byte_timeout_ms = 0\n",
     "buses[0].inter_byte_timeout_ms: 0 is outside 1..1000"),
    (MINIMAL + BUS + "turnaround_ms = 2000\n", "buses[0].turnaround_ms: 2000 is outside 0..1000"),
    (MINIMAL + BUS + "pre_send_silence_ms = -1\n",
     "buses[0].pre_send_silence_ms: -1 is outside 0..1000"),
    (MINIMAL + BUS + "retries = 9\n",
     "buses[0].retries: 9 is outside 0..5; retries multiply the cost of a dead meter"),
    (MINIMAL + BUS + 'echo = "yes"\n', 'buses[0].echo: must be true or false, got "yes"'),
    (MINIMAL + BUS + "rs485_kernel_mode = 1\n",
     "buses[0].rs485_kernel_mode: must be true or false, got 1"),
    (MINIMAL + BUS + "max_meters = 3000\n",
     "buses[0].max_meters: 3000 is outside 1..2040; a bus cannot hold more meters than "
     "archive.max_meters"),
    (MINIMAL + BUS + 'protocol = "modbus-rtu"\npre_send_silence_ms = 10\n',
     "buses[0].pre_send_silence_ms: 10 ms is shorter than Modbus t3.5 (16.0 ms at 2400 baud "
     "8E1); use at least 17"),
    (MINIMAL + BUS + "retry = 2\n", "buses[0].retry: unknown key; did you mean 'retries'?"),
    ('buses = "rs485"\n' + MINIMAL, "buses: must be an array of tables ([[buses]]), got a string"),
    (MINIMAL + BUS + BUS.replace("ttyS1", "ttyS2"),
     'buses[1].name: "rs485-1" is already the name of buses[0]; give every bus its own name'),
    (MINIMAL + BUS + '[[buses]]\nname = "b"\nport = "/dev/ttyS1"\n',
     'buses[1].port: "/dev/ttyS1" is already used by buses[0]; a line has exactly one owner'),
    (MINIMAL + '[tasks.daily_frozen]\nat = "24:05"\n',
     'tasks.daily_frozen.at: "24:05" is not a time of day; write it as "HH:MM", e.g. "00:05"'),
    (MINIMAL + "[tasks.daily_frozen]\nenabled = 1\n",
     "tasks.daily_frozen.enabled: must be true or false, got 1"),
    (MINIMAL + "[tasks.monthly_frozen]\nday = 31\n",
     "tasks.monthly_frozen.day: 31 is outside 1..28; use 1-28 so the day exists in every month"),
    (MINIMAL + '[tasks.monthly_frozen]\nat = "0:15"\n',
     'tasks.monthly_frozen.at: "0:15" is not a time of day; write it as "HH:MM", e.g. "00:05"'),
    (MINIMAL + "[tasks.curve]\ninterval_min = 7\n",
     "tasks.curve.interval_min: 7 is not an interval that divides the hour; use one of 1, 5, "
     "15, 30, 60"),
    (MINIMAL + "[tasks.events]\ninterval_min = 0\n",
     "tasks.events.interval_min: 0 is outside 1..1440"),
    (MINIMAL + '[tasks.clock_check]\nat = "02:58"\n',
     "tasks.clock_check.at: 02:58 is within 5 min of the hour, when clocks may not be set; "
     'move it to e.g. "03:30"'),
    (MINIMAL + "[tasks.clock_check]\nafter_power_up = 0\n",
     "tasks.clock_check.after_power_up: must be true or false, got 0"),
    (MINIMAL + "[tasks]\nbackfill_days = 40\n",
     "tasks.backfill_days: 40 is outside 0..31; 3 is the State Grid rule, 7 the Jiangsu one; "
     "0 disables 补抄"),
    (MINIMAL + "[clock]\nthreshold_s = 0\n", "clock.threshold_s: 0 is outside 1..3600"),
    (MINIMAL + "[clock]\nforbidden_window_min = 30\n",
     "clock.forbidden_window_min: 30 is outside 0..29"),
    (MINIMAL + "[clock]\nmax_syncs_per_meter_per_day = 0\n",
     "clock.max_syncs_per_meter_per_day: 0 is outside 1..24"),
    (MINIMAL + '[clock]\nbroadcast = "no"\n', 'clock.broadcast: must be true or false, got "no"'),
    (MINIMAL + '[archive]\npath = "archive.db"\n',
     'archive.path: "archive.db" is not an absolute path; write it starting with /'),
    (MINIMAL + "[archive]\nmax_meters = 0\n", "archive.max_meters: 0 is outside 1..65535"),
    (MINIMAL + '[control]\nsocket = "edge.sock"\n',
     'control.socket: "edge.sock" is not an absolute path; write it starting with /'),
    (MINIMAL + '[control]\nmode = "0666"\n',
     'control.mode: 0666 lets every local user drive the meters; use "0660" and a group'),
    (MINIMAL + "[control]\nmode = 0o060\n",
     "control.mode: 0060 locks the agent's own user out; use \"0660\""),
    (MINIMAL + '[control]\nmode = "rw"\n',
     'control.mode: "rw" is not a file mode; write it as "0660"'),
    (MINIMAL + '[archive]\npath = "/var/lib/meter2cash/edge.db"\n',
     'archive.path: "/var/lib/meter2cash/edge.db" is also storage.path; give each its own file'),
    (MINIMAL + "[extra]\nx = 1\n",
     "extra: unknown key; known keys: archive, buses, clock, control, gateway, storage, tasks, "
     "uplink"),
    (MINIMAL + "[gateway.more]\n", "gateway.more: unknown key; known keys: id, timezone"),
    ('storage = "x"\n' + MINIMAL, "storage: must be a table, got a string"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[1].split(":")[0] for c in CASES])
def test_each_key_names_its_problem(text: str, expected: str) -> None:
    assert only_problem(text) == expected


def test_every_problem_is_reported_together() -> None:
    text = (
        '[gateway]\nid = ""\n'
        '[[buses]]\nname = "a"\nport = "COM1"\nbaud = 2401\nparity = "X"\n'
        "[clock]\nthreshold_s = true\n"
        "[tasks]\nbackfill_days = -1\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "edge.toml")
    keys = [problem.key for problem in caught.value.problems]
    assert keys == [
        "gateway.id",
        "buses[0].port",
        "buses[0].baud",
        "buses[0].parity",
        "tasks.backfill_days",
        "clock.threshold_s",
    ]
    message = str(caught.value)
    assert message.startswith("edge.toml has 6 problems:\n  gateway.id: ")
    assert "Traceback" not in message


def test_toml_syntax_error_is_one_problem_with_the_position() -> None:
    problems = problems_of('[gateway]\nid = "gw\n')
    assert len(problems) == 1
    assert problems[0].key == ""
    assert problems[0].message.startswith("not valid TOML: ")
    assert "line 2" in problems[0].message


def test_valid_ports() -> None:
    for port in ("/dev/ttyUSB0", "/dev/pts/7", "pty:/tmp/sim", "socket://10.0.0.5:4001",
                 "rfc2217://serial-server.local:2217", "socket://[::1]:4001"):  # fmt: skip
        config = parse_config(MINIMAL + f'[[buses]]\nname = "a"\nport = "{port}"\n')
        assert config.buses[0].port == port


def test_toml_time_values_are_accepted() -> None:
    config = parse_config(MINIMAL + "[tasks.daily_frozen]\nat = 00:07:00\n")
    assert config.tasks.daily_frozen.at == time(0, 7)


def test_control_mode_as_integer() -> None:
    assert parse_config(MINIMAL + "[control]\nmode = 0o640\n").control.mode == 0o640
    assert parse_config(MINIMAL + '[control]\nmode = "660"\n').control.mode == 0o660


# -- loading -------------------------------------------------------------------------------------


def test_load_from_argument_env_and_default(tmp_path: Path) -> None:
    first = tmp_path / "first.toml"
    first.write_text(MINIMAL)
    second = tmp_path / "second.toml"
    second.write_text('[gateway]\nid = "gw-2"\n')
    env = {CONFIG_ENV_VAR: str(second)}
    assert load_config(first, environ=env).gateway.id == "gw-1"
    assert load_config(environ=env).gateway.id == "gw-2"
    assert load_config(environ=env).source == str(second)
    assert config_path(environ={}) == DEFAULT_CONFIG_PATH


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.toml", environ={})
    (problem,) = caught.value.problems
    assert "does not exist" in problem.message
    assert CONFIG_ENV_VAR in problem.message and "--config" in problem.message


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "gbk.toml"
    path.write_bytes('[gateway]\nid = "网关"\n'.encode("gbk"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "save the file as UTF-8" in caught.value.problems[0].message


# -- examples, to_toml, hashing ----------------------------------------------------------------


def test_examples_file_is_the_example_and_loads() -> None:
    path = ROOT / "examples" / "edge.toml"
    assert path.read_text(encoding="utf-8") == EXAMPLE_TOML
    config = load_config(path)
    assert config == example()
    assert config.bus_names == ("rs485-1", "rs485-2", "modbus-1")
    assert config.bus("modbus-1").protocol == "modbus-rtu"


def test_example_spells_out_every_key() -> None:
    """The example documents every key: everything to_toml writes appears in it."""

    def keys(text: str) -> set[str]:
        import tomllib

        def walk(data: object, prefix: str) -> set[str]:
            found: set[str] = set()
            if isinstance(data, dict):
                for key, value in data.items():
                    found |= walk(value, f"{prefix}.{key}" if prefix else key)
            elif isinstance(data, list):
                for item in data:
                    found |= walk(item, f"{prefix}[]")
            else:
                found.add(prefix)
            return found

        return walk(tomllib.loads(text), "")

    assert keys(to_toml(example())) == keys(EXAMPLE_TOML)


def test_to_toml_round_trips() -> None:
    config = example()
    assert parse_config(to_toml(config)) == config
    minimal = parse_config(MINIMAL + BUS)
    assert parse_config(to_toml(minimal)) == minimal


def test_config_hash_ignores_layout_and_spelled_out_defaults() -> None:
    a = parse_config('[gateway]\nid = "gw-1"\n[clock]\nthreshold_s = 60\nbroadcast = true\n')
    b = parse_config(
        "# comment\n[clock]\nbroadcast   =   true\n\n\n[gateway]\n"
        'timezone = "Asia/Shanghai"\nid = "gw-1"\n'
    )
    c = parse_config(MINIMAL)
    assert config_hash(a) == config_hash(b) == config_hash(c)
    assert config_hash(example()) == config_hash(parse_config(to_toml(example())))


def test_config_hash_changes_with_any_value() -> None:
    base = config_hash(parse_config(MINIMAL + BUS))
    changed = [
        '[gateway]\nid = "gw-2"\n' + BUS,
        MINIMAL + BUS + "baud = 9600\n",
        MINIMAL + BUS + "echo = true\n",
        MINIMAL + "[clock]\nthreshold_s = 61\n" + BUS,
        MINIMAL + '[tasks.daily_frozen]\nat = "00:06"\n' + BUS,
    ]
    hashes = {config_hash(parse_config(text)) for text in changed}
    assert base not in hashes and len(hashes) == len(changed)
    assert len(base) == 64


def test_config_is_frozen() -> None:
    config = example()
    with pytest.raises(AttributeError):
        config.gateway.id = "x"  # type: ignore[misc]
    assert isinstance(config, EdgeConfig)


def test_docs_describe_every_key() -> None:
    import tomllib

    doc = (ROOT / "docs" / "edge-config.md").read_text(encoding="utf-8")
    data = tomllib.loads(to_toml(example()))
    keys: list[str] = []

    def walk(value: object, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else key)
        elif isinstance(value, list):
            walk(value[0], f"{prefix}[]")
        else:
            keys.append(prefix)

    walk(data, "")
    for key in keys:
        parent, _, leaf = key.rpartition(".")
        assert (
            f"`{key}`" in doc
            or (f"`{parent}.{leaf}`" in doc)
            or (f"`{parent}." in doc and f"`.{leaf}`" in doc)
        ), f"docs/edge-config.md does not describe {key}"


def test_times_with_seconds_round_trip() -> None:
    config = parse_config(MINIMAL + '[tasks.daily_frozen]\nat = "00:05:30"\n')
    assert config.tasks.daily_frozen.at == time(0, 5, 30)
    assert parse_config(to_toml(config)) == config


@pytest.mark.parametrize("kind", ["daily", "monthly", "curve", "instant", "event"])
def test_every_retention_kind_is_checked(kind: str) -> None:
    assert only_problem(MINIMAL + f"[storage.retention]\n{kind} = 0\n") == (
        f"storage.retention.{kind}: 0 is outside 1..36500; days to keep acknowledged records"
    )
    config = parse_config(MINIMAL + f"[storage.retention]\n{kind} = 9\n")
    assert getattr(config.storage.retention, kind) == 9


@pytest.mark.parametrize(
    "table",
    ["tasks.daily_frozen", "tasks.monthly_frozen", "tasks.curve", "tasks.events",
     "tasks.clock_check"],
)  # fmt: skip
def test_every_task_enable_flag_is_checked(table: str) -> None:
    assert only_problem(MINIMAL + f'[{table}]\nenabled = "off"\n') == (
        f'{table}.enabled: must be true or false, got "off"'
    )
    config = parse_config(MINIMAL + f"[{table}]\nenabled = false\n")
    section = getattr(config.tasks, table.split(".")[1])
    assert section.enabled is False


def test_config_diff_names_changed_keys_and_buses_by_name() -> None:
    from edge_agent.config import config_diff

    old = example()
    new = parse_config(
        EXAMPLE_TOML.replace("threshold_s = 60", "threshold_s = 90")
        .replace('port = "socket://192.168.1.50:4001"', 'port = "socket://192.168.1.60:4001"')
        .replace('name = "modbus-1"', 'name = "modbus-9"')
    )
    changes = config_diff(old, new)
    assert [key for key, _, _ in changes] == [
        "buses.modbus-1",
        "buses.modbus-9",
        "buses.rs485-2.port",
        "clock.threshold_s",
    ]
    assert changes[2][1:] == ("socket://192.168.1.50:4001", "socket://192.168.1.60:4001")
    assert changes[0][2] is None and changes[1][1] is None
    assert config_diff(old, parse_config(to_toml(old))) == []
    # Only line settings make a bus reopen its port.
    assert old.bus("rs485-2").line_settings != new.bus("rs485-2").line_settings
    assert old.bus("rs485-1").line_settings == new.bus("rs485-1").line_settings
