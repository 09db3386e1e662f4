"""The VEE rule table as data: the rules and defaults of the reference (central.md b.1),
parameters with effective dates, quantity classes, and docs/vee.md generated from it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from central.vee import RULES, RuleSet, rules_markdown
from central.vee.channels import ChannelClass, channel
from central.vee.errors import InvalidVeeRequestError
from central.vee.parameters import DEFAULTS, ParameterRow
from central.vee.rules import DAY_RULE_IDS, READING_RULE_IDS, Scope, Severity, rule

DOC = Path(__file__).resolve().parent.parent / "docs" / "vee.md"

#: The reference's defaults (central.md b.1, "Proposed rule set for our server").
REFERENCE_DEFAULTS = {
    ("V1", "interval_s"): 900,  # 96 points a day at 15 min
    ("V1", "max_linear_intervals"): 4,  # linear ≤ 1 h
    ("V3", "flag_s"): 60,  # ±60 s flag
    ("V3", "quarantine_s"): 300,  # ±300 s quarantine
    ("V4", "tolerance"): Decimal("1.5"),
    ("V5", "high_factor"): Decimal("3.0"),
    ("V5", "low_factor"): Decimal("0.2"),
    ("V5", "history_days"): 28,
    ("V6", "sustained_days"): 3,
    ("V8", "high_water"): Decimal(900000),
    ("V8", "low_water"): Decimal(100000),
    ("V8", "modulus"): Decimal(1000000),  # wraps after 999999.99
    ("V9", "margin"): Decimal("1.2"),
    ("V9", "contract_factor"): Decimal("1.2"),
    ("V10", "tolerance_kwh"): Decimal("0.02"),
    ("V10", "tolerance_pct"): Decimal("0.5"),
    ("V12", "interval_s"): 900,
    ("V13", "intervals"): 8,  # 2 h
    ("V14", "max_days"): 3,
}


def test_sixteen_rules_in_order_with_sources() -> None:
    assert [r.id for r in RULES] == [f"V{n}" for n in range(1, 17)]
    for r in RULES:
        assert isinstance(r.scope, Scope) and isinstance(r.severity, Severity)
        assert re.search(r"\[S\d+\w*\]", r.source()), f"{r.id} names no source"
        assert r.logic and r.name
    assert {"V2", "V3", "V7", "V8", "V9", "V10", "V11", "V12", "V16"} == READING_RULE_IDS
    assert {"V1", "V4", "V5", "V6", "V10", "V13", "V14", "V15"} == DAY_RULE_IDS


@pytest.mark.parametrize(("key", "value"), REFERENCE_DEFAULTS.items(), ids=str)
def test_defaults_are_the_reference_values(key: tuple[str, str], value: object) -> None:
    assert DEFAULTS[key] == value


def test_every_default_survives_its_own_text() -> None:
    for r in RULES:
        for p in r.parameters:
            assert p.parse(p.text(p.default)) == p.default, (r.id, p.name)


def test_parameter_values_are_checked() -> None:
    tolerance = rule("v4").parameter("tolerance")
    assert tolerance.parse("1.8") == Decimal("1.8")
    with pytest.raises(InvalidVeeRequestError, match=r"out of range 1\.\."):
        tolerance.parse("0.9")
    assert rule("V6").parameter("outage_codes").parse(" b, a ,a") == ("a", "b")
    assert rule("V16").parameter("flag_unknown_meters").parse("no") is False
    with pytest.raises(InvalidVeeRequestError, match="whole number"):
        rule("V13").parameter("intervals").parse("8.5")


def test_rule_set_segments_follow_effective_dates() -> None:
    t = datetime(2026, 3, 1, tzinfo=UTC)
    rules = RuleSet(
        [
            ParameterRow("V4", "tolerance", Decimal("1.8"), t, t + timedelta(days=7)),
            ParameterRow("V4", "tolerance", Decimal("2.0"), t + timedelta(days=14)),
        ]
    )
    assert rules.value("V4", "tolerance", t - timedelta(seconds=1)) == Decimal("1.5")
    assert rules.value("V4", "tolerance", t) == Decimal("1.8")
    assert rules.value("V4", "tolerance", t + timedelta(days=7)) == Decimal("1.5")  # gap
    assert rules.value("V4", "tolerance", t + timedelta(days=30)) == Decimal("2.0")
    assert rules.value("V9", "margin", t) == Decimal("1.2")
    with pytest.raises(InvalidVeeRequestError):
        RuleSet([ParameterRow("V4", "nope", Decimal(1), t)])


@pytest.mark.parametrize(
    ("obis", "cls", "group", "tariff"),
    [
        ("1-0:1.8.0", ChannelClass.REGISTER, "1-0:1.8.0", 0),
        ("1-0:1.8.3", ChannelClass.REGISTER, "1-0:1.8.0", 3),
        ("1-0:2.8.4*1", ChannelClass.REGISTER, "1-0:2.8.0*1", 4),
        ("1-0:5.8.0", ChannelClass.REGISTER, "1-0:5.8.0", 0),
        ("1-0:16.7.0", ChannelClass.POWER, None, 0),
        ("1-0:1.6.2", ChannelClass.POWER, None, 0),
        ("1-0:32.7.0", ChannelClass.OTHER, None, 0),
        ("0-0:96.5.1", ChannelClass.OTHER, None, 0),
        ("9-9:9.9.9", ChannelClass.OTHER, None, 0),
    ],
)
def test_quantity_classes(obis: str, cls: str, group: str | None, tariff: int) -> None:
    found = channel(obis)
    assert (found.cls, found.group, found.tariff) == (cls, group, tariff)


def test_power_channels_know_their_energy() -> None:
    assert channel("1-0:16.7.0").energy == ("1-0:1.8.0", "1-0:2.8.0")
    assert channel("1-0:16.7.0").contract and channel("1-0:1.6.0").contract
    assert not channel("1-0:3.7.0").contract


def test_doc_rule_table_is_generated_from_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(r"<!-- rules:begin -->\n(.*?)\n<!-- rules:end -->", text, re.S)
    assert found, "docs/vee.md lost its rules:begin/end markers"
    assert found.group(1) == rules_markdown(), (
        "regenerate the table: python -c 'from central.vee import rules_markdown; "
        "print(rules_markdown())'"
    )
