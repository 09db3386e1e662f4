"""The VEE rule table V1–V16 as data: one small object per rule, with its parameters and
their defaults (``../shared/reference/central.md`` b.1, "Proposed rule set for our server").

A rule object says *what* is checked — id, name, scope, severity, the parameters and where
the rule comes from; the checks themselves run in :mod:`central.vee.inline` (per reading, at
ingestion speed) and :mod:`central.vee.day` (per meter-day). Stored parameter values
(``vee_rule_parameters``, with effective dates) override the defaults here; see
:mod:`central.vee.parameters`.

Severities follow Oracle MDM (S2b): *Information* flags a reading and leaves it billable,
*Issue* holds it until an operator resolves or overrides the exception, *Terminate* holds it
and stops validating that reading at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, ClassVar, Final

from central.vee.errors import InvalidVeeRequestError

__all__ = [
    "BILLABLE_STATUSES",
    "DAY_RULE_IDS",
    "READING_RULE_IDS",
    "RULES",
    "STATUSES",
    "Parameter",
    "ParameterValue",
    "Rule",
    "Scope",
    "Severity",
    "Status",
    "rule",
    "rules_markdown",
]

ParameterValue = Decimal | int | bool | tuple[str, ...]


class Severity(StrEnum):
    INFORMATION = "information"
    ISSUE = "issue"
    TERMINATE = "terminate"


#: Severities that hold a reading (status ``failed``) while their exception is open.
HOLDING: Final = frozenset({Severity.ISSUE, Severity.TERMINATE})


class Scope(StrEnum):
    READING = "reading"  # checked as each reading arrives (in-line, with ingestion)
    METER_DAY = "meter-day"  # checked when a meter's day is closed (close_day)


class Status(StrEnum):
    """``readings.vee_status`` (NULL: not validated yet)."""

    VALID = "valid"  # passed every rule
    FLAGGED = "flagged"  # Information exceptions only: billable
    FAILED = "failed"  # an open Issue/Terminate exception: not billable until closed
    OVERRIDDEN = "overridden"  # failed a rule, and an operator accepted or replaced the value


STATUSES: Final = tuple(s.value for s in Status)
BILLABLE_STATUSES: Final = frozenset({Status.VALID, Status.FLAGGED, Status.OVERRIDDEN})


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"{text!r} is not true/false")


def _codes(text: str) -> tuple[str, ...]:
    return tuple(sorted({code.strip() for code in text.split(",") if code.strip()}))


_PARSERS: Final[dict[str, Callable[[str], Any]]] = {
    "decimal": _decimal,
    "int": _integer,
    "bool": _boolean,
    "codes": _codes,
}


@dataclass(frozen=True, slots=True)
class Parameter:
    """One tunable of a rule: ``kind`` is decimal, int, bool or codes (a set of event
    codes, written comma-separated); numbers must lie in ``minimum..maximum``."""

    name: str
    default: ParameterValue
    kind: str
    unit: str
    description: str
    minimum: Decimal | None = None
    maximum: Decimal | None = None

    def parse(self, text: str) -> ParameterValue:
        """``text`` (as typed on the command line or stored) as this parameter's value;
        :class:`InvalidVeeRequestError` naming the parameter when it does not fit."""
        try:
            value: ParameterValue = _PARSERS[self.kind](str(text))
        except ValueError as exc:
            raise InvalidVeeRequestError(
                f"parameter {self.name}: {exc}; give a {self.kind} value"
                f"{self._range_text()} (default {self.text(self.default)})"
            ) from None
        if isinstance(value, Decimal | int) and not isinstance(value, bool):
            low, high = self.minimum, self.maximum
            if (low is not None and value < low) or (high is not None and value > high):
                raise InvalidVeeRequestError(
                    f"parameter {self.name}: {text} is out of range{self._range_text()}"
                )
        return value

    def text(self, value: ParameterValue) -> str:
        """The stored (and shown) form of ``value``."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return ",".join(value)
        return str(value)

    def _range_text(self) -> str:
        if self.minimum is None and self.maximum is None:
            return ""
        low = "" if self.minimum is None else str(self.minimum)
        high = "" if self.maximum is None else str(self.maximum)
        return f" {low}..{high}"


def _p(
    name: str,
    default: ParameterValue,
    unit: str,
    description: str,
    minimum: str | None = "0",
    maximum: str | None = None,
) -> Parameter:
    if isinstance(default, bool):
        kind = "bool"
    elif isinstance(default, int):
        kind = "int"
    elif isinstance(default, Decimal):
        kind = "decimal"
    else:
        kind = "codes"
    return Parameter(
        name,
        default,
        kind,
        unit,
        description,
        None if minimum is None or kind in ("bool", "codes") else Decimal(minimum),
        None if maximum is None else Decimal(maximum),
    )


class Rule:
    """A VEE rule: subclasses set the class attributes and say in their docstring where
    the rule comes from."""

    id: ClassVar[str]
    name: ClassVar[str]
    scope: ClassVar[Scope]
    severity: ClassVar[Severity]
    logic: ClassVar[str]
    parameters: ClassVar[tuple[Parameter, ...]] = ()

    @classmethod
    def parameter(cls, name: str) -> Parameter:
        for parameter in cls.parameters:
            if parameter.name == name:
                return parameter
        known = ", ".join(p.name for p in cls.parameters) or "none"
        raise InvalidVeeRequestError(
            f"rule {cls.id} has no parameter {name!r} (its parameters: {known})"
        )

    @classmethod
    def source(cls) -> str:
        """The docstring on one line: where the rule comes from."""
        return " ".join((cls.__doc__ or "").split())


class Completeness(Rule):
    """IESO revenue-metering tests "intervals found vs expected" [S19]; estimation order
    from central.md b.1 (linear ≤ 1 h [S19][S3], register-constrained [S18b], like day
    [S19][S19f])."""

    id = "V1"
    name = "Completeness"
    scope = Scope.METER_DAY
    severity = Severity.INFORMATION
    logic = (
        "expected vs received points per meter-day and curve quantity (96 at 15 min); "
        "the gaps are listed and estimated"
    )
    parameters = (
        _p("interval_s", 900, "s", "curve interval", "60", "86400"),
        _p("max_linear_intervals", 4, "intervals", "longest gap filled linearly (≤ 1 h)"),
        _p("like_day_lookback_days", 21, "days", "how far back a like day is sought", "1", "62"),
    )


class Duplicate(Rule):
    """Oracle MDM "Duplicate IMD" [S1]: one batch carrying two versions of a reading."""

    id = "V2"
    name = "Duplicate"
    scope = Scope.READING
    severity = Severity.INFORMATION
    logic = (
        "same meter + quantity + time twice in one batch with different values; "
        "the higher seq is kept (the edge's correction)"
    )


class ClockTolerance(Rule):
    """IESO "time tolerance" [S19] and ERCOT re-sync thresholds [S19g]; the ±60/±300 s
    values are our proposal (P)."""

    id = "V3"
    name = "Clock / time tolerance"
    scope = Scope.READING
    severity = Severity.ISSUE
    logic = (
        "instant readings read more than flag from their time → information, more than "
        "quarantine → issue; any reading timed more than quarantine after its arrival → issue"
    )
    parameters = (
        _p("flag_s", 60, "s", "offset that flags a reading"),
        _p("quarantine_s", 300, "s", "offset that holds a reading"),
    )


class Spike(Rule):
    """Oracle MDM "Interval Spike Check": highest interval vs the third highest [S1][S2b]
    (tolerance 1.5, the doc's own example raises 1.2 → 1.5); the minimum share of a day is
    our proposal (P)."""

    id = "V4"
    name = "Spike"
    scope = Scope.METER_DAY
    severity = Severity.ISSUE
    logic = (
        "curve: max / 3rd-max of the day's intervals > tolerance, on a day with at least "
        "min_share of its intervals real (a partial day's ramp is no spike)"
    )
    parameters = (
        _p("tolerance", Decimal("1.5"), "×", "max / third max", "1"),
        _p("min_share", Decimal("0.5"), "×", "share of the day's intervals needed", "0", "1"),
    )


class HighLow(Rule):
    """Oracle MDM "High/Low Check" normalised by average daily usage [S9]; factors are our
    proposal (P)."""

    id = "V5"
    name = "High/Low vs average daily use"
    scope = Scope.METER_DAY
    severity = Severity.ISSUE
    logic = (
        "day total vs the average of the same day type (weekday / weekend) over the last "
        "28 days: > high × or < low × → exception"
    )
    parameters = (
        _p("high_factor", Decimal("3.0"), "×", "above this × average: too high"),
        _p("low_factor", Decimal("0.2"), "×", "below this × average: too low"),
        _p("history_days", 28, "days", "history window", "1", "62"),
        _p("min_history_days", 4, "days", "days of the same type needed", "1", "62"),
    )


class ZeroConsumption(Rule):
    """Oracle MDM "Zero Consumption Check" [S2d] (outages excepted); sustained zero → the
    theft/fault queue, our proposal (P)."""

    id = "V6"
    name = "Zero / sustained zero"
    scope = Scope.METER_DAY
    severity = Severity.ISSUE
    logic = (
        "day total 0 after non-zero history and no outage or trip event that day: "
        "information; ≥ sustained_days such days in a row: issue"
    )
    parameters = (
        _p("sustained_days", 3, "days", "zero days in a row that make an issue", "1", "28"),
        _p(
            "outage_codes",
            ("meter.power_down", "meter.relay_trip", "relay_trip"),
            "event codes",
            "events that explain a zero day",
        ),
    )


class NegativeConsumption(Rule):
    """Oracle MDM "Negative Consumption" [S1]; master-station "reading decreases (倒走)"
    [S41]."""

    id = "V7"
    name = "Negative / 倒走"
    scope = Scope.READING
    severity = Severity.ISSUE
    logic = "an energy register decreases (and it is not a rollover), or is negative"


class Rollover(Rule):
    """DL/T 645-2007 energy is 4-byte BCD XXXXXX.XX kWh: it wraps after 999999.99 [S48c]."""

    id = "V8"
    name = "Register rollover"
    scope = Scope.READING
    severity = Severity.INFORMATION
    logic = "prev > high_water and curr < low_water → Δ = modulus − prev + curr"
    parameters = (
        _p("high_water", Decimal(900000), "kWh", "previous value above this may roll over"),
        _p("low_water", Decimal(100000), "kWh", "current value below this may have rolled"),
        _p("modulus", Decimal(1000000), "kWh", "register range (999999.99 + 0.01)", "1"),
    )


class MaxIncrement(Rule):
    """Master-station "increment above the type maximum (飞走)" [S41] and Tianjin's
    "power × multiplier > K × contract capacity" [S40]; margin and K are our proposal (P)."""

    id = "V9"
    name = "飞走 / max increment"
    scope = Scope.READING
    severity = Severity.ISSUE
    logic = (
        "Δ > Imax·Un·phases·CT·PT·h × margin (energy), |P| > Imax·Un·phases·CT·PT × "
        "margin (power); P > K × contract capacity → information"
    )
    parameters = (
        _p("margin", Decimal("1.2"), "×", "over the meter's physical maximum"),
        _p("contract_factor", Decimal("1.2"), "×", "K over the contracted capacity"),
        _p("default_voltage_v", Decimal(220), "V", "Un when the meter has no settings", "1"),
        _p("default_max_current_a", Decimal(60), "A", "Imax when the meter has no settings", "1"),
        _p("default_phases", 1, "phases", "when the meter has no settings", "1", "3"),
    )


class SumCheck(Rule):
    """Oracle MDM "Sum Check": TOU registers vs the total, intervals vs a scalar channel
    [S2c]; tolerances are our proposal (P)."""

    id = "V10"
    name = "Sum check"
    scope = Scope.READING
    severity = Severity.ISSUE
    logic = (
        "Σ tariff registers (尖峰平谷) vs the total of a daily/monthly freeze (a block off "
        "holds all five registers); at day close Σ intervals vs the daily-freeze delta; "
        "off by more than both tolerances → issue"
    )
    parameters = (
        _p("tolerance_kwh", Decimal("0.02"), "kWh", "absolute tolerance"),
        _p("tolerance_pct", Decimal("0.5"), "%", "relative tolerance"),
        _p(
            "power_curve_tolerance_pct",
            Decimal(5),
            "%",
            "relative tolerance of Σ power × interval vs the freeze delta",
        ),
    )


class Multiplier(Rule):
    """Oracle MDM "Multiplier" / "UOM" checks [S1]: the value's scale or the CT/PT ratio
    differs from the archive (档案)."""

    id = "V11"
    name = "Multiplier / CT-PT change"
    scope = Scope.READING
    severity = Severity.TERMINATE
    logic = (
        "unit differs from the quantity's canonical unit (a ×1000 or unknown scale): "
        "terminate; CT×PT ratio changed between two register readings: information"
    )


class IntervalSize(Rule):
    """Oracle MDM "Interval Size" [S1]: curve points on the 900 s grid."""

    id = "V12"
    name = "Interval size"
    scope = Scope.READING
    severity = Severity.ISSUE
    logic = "a curve point's time is not on the interval grid"
    parameters = (_p("interval_s", 900, "s", "expected interval", "60", "86400"),)


class FrozenValue(Rule):
    """Oracle MDM "Consecutive Interval" [S1]; N = 8 (2 h) and the register floor are our
    proposal (P)."""

    id = "V13"
    name = "Frozen non-zero"
    scope = Scope.METER_DAY
    severity = Severity.ISSUE
    logic = (
        "N consecutive identical non-zero interval values; a register curve's increments "
        "at or below register_floor_kw (as average power) are left alone: a register "
        "read to 0.01 kWh repeats its last digit at low use"
    )
    parameters = (
        _p("intervals", 8, "intervals", "run length that is frozen", "2", "96"),
        _p(
            "register_floor_kw",
            Decimal("0.2"),
            "kW",
            "register increments at or below this are not judged",
        ),
    )


class ProlongedEstimation(Rule):
    """Oracle MDM "Prolonged Estimation" [S1]; > 3 days → field work order is our
    proposal (P)."""

    id = "V14"
    name = "Prolonged estimation"
    scope = Scope.METER_DAY
    severity = Severity.ISSUE
    logic = "the meter had estimated points on more than max_days days in a row"
    parameters = (_p("max_days", 3, "days", "estimated days in a row allowed", "1", "28"),)


class MeterEvents(Rule):
    """IESO event tests (power outage, time reset, hardware reset) [S19]; Tianjin open-cover
    pre-filter [S40]."""

    id = "V15"
    name = "Meter events"
    scope = Scope.METER_DAY
    severity = Severity.ISSUE
    logic = (
        "each meter event of the day: theft_codes → issue (theft queue), om_codes → "
        "information (O&M queue)"
    )
    parameters = (
        _p(
            "theft_codes",
            ("meter.cover_open", "meter.meter_clear"),
            "event codes",
            "routed to the theft queue",
        ),
        _p(
            "om_codes",
            (
                "clock_offset",
                "clock_sync_failed",
                "meter.clock_set",
                "meter.power_down",
                "meter.programming",
            ),
            "event codes",
            "routed to the O&M queue",
        ),
    )


class InactiveMeter(Rule):
    """Oracle MDM "Inactive Measurement" [S1]; Tianjin "events before install" [S40]."""

    id = "V16"
    name = "Inactive measurement"
    scope = Scope.READING
    severity = Severity.TERMINATE
    logic = (
        "the meter is marked removed (vee meter settings, active = false) at the reading's "
        "time: terminate; not in any gateway's archive: information"
    )
    parameters = (
        _p("flag_unknown_meters", True, "", "flag readings of meters in no gateway's archive"),
    )


RULES: Final[tuple[type[Rule], ...]] = (
    Completeness,
    Duplicate,
    ClockTolerance,
    Spike,
    HighLow,
    ZeroConsumption,
    NegativeConsumption,
    Rollover,
    MaxIncrement,
    SumCheck,
    Multiplier,
    IntervalSize,
    FrozenValue,
    ProlongedEstimation,
    MeterEvents,
    InactiveMeter,
)
_BY_ID: Final = {r.id: r for r in RULES}
READING_RULE_IDS: Final = frozenset(r.id for r in RULES if r.scope is Scope.READING)
#: Rules close_day runs (V10 runs in both places: tariffs per reading, intervals per day).
DAY_RULE_IDS: Final = frozenset(r.id for r in RULES if r.scope is Scope.METER_DAY) | {"V10"}


def rule(rule_id: str) -> type[Rule]:
    """The rule ``rule_id`` (``V1``…``V16``, case-insensitive)."""
    found = _BY_ID.get(rule_id.strip().upper())
    if found is None:
        raise InvalidVeeRequestError(
            f"unknown VEE rule {rule_id!r}; the rules are {', '.join(_BY_ID)}"
        )
    return found


def rules_markdown() -> str:
    """The rule table as Markdown; ``docs/vee.md`` carries this exact text."""
    lines = [
        "| # | rule | scope | severity | logic | parameters (default) | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in RULES:
        parameters = "<br>".join(
            f"`{p.name}` = {p.text(p.default)}{(' ' + p.unit) if p.unit else ''}"
            for p in r.parameters
        )
        lines.append(
            f"| {r.id} | {r.name} | {r.scope} | {r.severity} | {r.logic} | "
            f"{parameters or '—'} | {r.source()} |"
        )
    return "\n".join(lines)
