"""Generate an area config: N meters, a protocol mix and a set of anomalies, seeded.

``new_scenario`` returns TOML text that :func:`firmware_sim.config.parse_config` accepts
(``firmware-sim scenario new`` writes it). One bus per line family that has meters: the
645 editions share one line, 698.45 meters share theirs with the supply meter, Modbus meters
get unit ids 1…n. Which meters get which anomaly is drawn from the seed, one anomaly per
meter, so the ground truth stays easy to read.

Anomalies (counts): ``bypass`` (meter sees 60 %), ``reversed`` (reversed wiring),
``crossed`` (串户: a *pair* of neighbours wired through each other's meters), ``dead``,
``drift`` (clock gains 500 ppm ≈ 43 s a day), ``prepaid``, ``protected`` (keep-power).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from firmware_sim.area import PROTOCOLS
from firmware_sim.bus import line_family

__all__ = ["ANOMALIES", "DEFAULT_MIX", "new_scenario", "parse_pairs"]

ANOMALIES: Final = ("bypass", "reversed", "crossed", "dead", "drift", "prepaid", "protected")
DEFAULT_MIX: Final[Mapping[str, float]] = {"dlt645-2007": 0.7, "dlt698.45": 0.2, "modbus-rtu": 0.1}
_BUS_NAMES: Final = {"dlt645": "rs485-645", "dlt698.45": "rs485-698", "modbus-rtu": "rs485-modbus"}
_MODBUS_MODELS: Final = ("sdm120", "ddsu666")


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """``"a=1,b=2"`` → ``{"a": "1", "b": "2"}``; ValueError names the bad part."""
    pairs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"{what}: {part!r} is not NAME=VALUE")
        pairs[name.strip()] = value.strip()
    return pairs


def _counts(meters: int, mix: Mapping[str, float]) -> dict[str, int]:
    """Meters per protocol by largest remainder, so the counts add up to ``meters``."""
    total = sum(mix.values())
    exact = {p: meters * share / total for p, share in mix.items()}
    counts = {p: int(v) for p, v in exact.items()}
    by_remainder = sorted(exact, key=lambda p: (exact[p] - counts[p], mix[p]), reverse=True)
    for protocol in by_remainder[: meters - sum(counts.values())]:
        counts[protocol] += 1
    return counts


def new_scenario(
    meters: int = 32,
    protocol_mix: Mapping[str, float] | None = None,
    anomalies: Mapping[str, int] | None = None,
    *,
    seed: int = 0,
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
    acceleration: float = 60.0,
    fast_forward_days: int = 7,
    transport: str = "tcp",
    area_id: str = "area-1",
) -> str:
    """A complete area config as TOML text."""
    mix = dict(DEFAULT_MIX if protocol_mix is None else protocol_mix)
    wanted = dict(anomalies or {})
    if meters < 1 or meters > 9999:
        raise ValueError(f"meters: must be 1..9999, got {meters}")
    for protocol, share in mix.items():
        if protocol not in PROTOCOLS:
            raise ValueError(f"mix: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if share < 0:
            raise ValueError(f"mix: {protocol} share must not be negative")
    if sum(mix.values()) <= 0:
        raise ValueError("mix: give at least one protocol a positive share")
    for name, count in wanted.items():
        if name not in ANOMALIES:
            raise ValueError(f"anomalies: {name!r} is not one of {', '.join(ANOMALIES)}")
        if count < 0:
            raise ValueError(f"anomalies: {name} must not be negative")
    needed = sum(wanted.values()) + wanted.get("crossed", 0)  # a crossed pair takes two
    if needed > meters:
        raise ValueError(f"anomalies: {needed} meters needed, only {meters} in the area")
    if transport not in ("tcp", "pty"):
        raise ValueError(f"transport: {transport!r} is not tcp or pty")

    counts = _counts(meters, mix)
    rng = random.Random(f"scenario:{seed}")
    rows: list[dict[str, object]] = []
    number = {"dlt645": 0, "dlt698.45": 0, "modbus-rtu": 0}
    for protocol in PROTOCOLS:
        for _ in range(counts.get(protocol, 0)):
            line = line_family(protocol)
            number[line] += 1
            n = len(rows) + 1
            row: dict[str, object] = {
                "id": f"m{n:04d}",
                "protocol": protocol,
                "bus": _BUS_NAMES[line],
            }
            if protocol == "modbus-rtu":
                row["unit_id"] = number[line]
                row["modbus_model"] = rng.choice(_MODBUS_MODELS)
            else:
                row["address"] = f"{n:012d}"
            draw = rng.random()
            if draw < 0.08:
                row["customer_class"] = "commercial"
                row["scale"] = 3.0
            elif draw < 0.1:
                row["pv_peak_watts"] = 3000
            rows.append(row)

    free = list(range(len(rows)))
    rng.shuffle(free)
    for name in ANOMALIES:
        for _ in range(wanted.get(name, 0)):
            row = rows[free.pop()]
            if name == "bypass":
                row["bypass_percent"] = 40
            elif name == "reversed":
                row["reversed_wiring"] = True
            elif name == "crossed":
                other = rows[free.pop()]
                row["wired_to"], other["wired_to"] = other["id"], row["id"]
            elif name == "dead":
                row["dead"] = True
            elif name == "drift":
                row["drift_ppm"] = 500
            elif name == "prepaid":
                row["prepaid"] = True
            else:
                row["protected"] = True

    lines = [
        f"# firmware-sim scenario: {meters} meters, seed {seed}",
        f"# mix {_pairs(mix)}; anomalies {_pairs(wanted) or 'none'}",
        "",
        "[simulation]",
        f"start = {start.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}",
        f"acceleration = {_value(acceleration)}",
        f"seed = {seed}",
        'timezone = "Asia/Shanghai"',
        f"fast_forward_days = {fast_forward_days}",
        "",
        "[area]",
        f"id = {_value(area_id)}",
        "loss_percent = 3",
        "theft_watts = 0",
        'supply_address = "990000000001"',
        'supply_protocol = "dlt698.45"',
    ]
    used_lines = [line for line in _BUS_NAMES if number[line]]
    if "dlt698.45" in used_lines:
        lines.append(f'supply_bus = "{_BUS_NAMES["dlt698.45"]}"')
    for line in used_lines:
        listen = "pty" if transport == "pty" else "tcp://127.0.0.1:0"
        lines += [
            "",
            "[[buses]]",
            f'name = "{_BUS_NAMES[line]}"',
            f'protocol = "{line}"',
            f'transport = "{listen}"',
        ]
    for row in rows:
        lines += ["", "[[meters]]"] + [f"{key} = {_value(value)}" for key, value in row.items()]
    return "\n".join(lines) + "\n"


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return f"{value}"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _pairs(values: Mapping[str, object]) -> str:
    return ",".join(f"{k}={v}" for k, v in values.items() if v)
