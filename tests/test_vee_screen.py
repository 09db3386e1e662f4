"""The in-line validator's screen (``InlineValidator._screen``) settles the plain registers a
column at a time, in floating point; the loop decides everything else in ``Decimal``. The
screen must never change an outcome: here two databases take the same batches, one through a
validator with the screen and one without, and must end up identical — statuses, exception
rows, and the validator's cache of previous values.

The batches are drawn to sit on every edge the screen has: registers rising by zero, by
just under and just over V9's limit, going back, rolling over, negative; equal values in
different text ("10.50" and "10.5"); meters with a CT, with settings that change inside the
batches, out of service, outside every archive; curve points off the grid or in the future;
other units; freezes (V10) and power readings next to registers; keys sent twice (corrections).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from vee_support import GATEWAY, QUARTER, T0

from central.db import make_engine, upgrade
from central.db.schema import readings
from central.db.vee_tables import vee_exceptions
from central.ingest.store import IncomingReading, IngestStore, MeterEntry
from central.vee import InlineValidator, RuleSet, set_meter_settings
from central.vee.inline import ReadingColumns

E = "1-0:1.8.0"  # import energy total (a register)
E1 = "1-0:1.8.1"  # its tariff 1 (a register in E's freeze block)
X = "1-0:2.8.0"  # export energy total (another register)
P = "1-0:16.7.0"  # active power
V = "1-0:32.7.0"  # voltage
Q = "1-0:3.8.0"  # reactive import, frozen in tariff blocks only (Q1…Q4 its tariffs)
UNITS = {E: "kWh", E1: "kWh", X: "kWh", P: "kW", V: "V"} | {
    f"1-0:3.8.{t}": "kvarh" for t in range(5)
}
#: Off the sum of its tariffs, a block's total (tariffs of ~100 kvarh each): V10 allows
#: 0.02 kvarh or 0.5 % of the total (~2 kvarh).
BLOCK_OFFSETS = st.sampled_from(["0", "0", "0", "0.02", "0.021", "1.9", "2.1", "-2.1", "50"])
NOW = T0 + timedelta(days=3)
T0_US = int(T0.timestamp()) * 1_000_000
# The default rating: 60 A × 220 V × 1.2 = 15.84 kW, so 3.96 kWh a quarter hour (vee_support).
LIMIT = Decimal("3.96")

# What the meters are: plain, a CT of 40 and a contracted 200 kW, settings that change on
# day 2, out of service from day 1, outside every archive.
METER_KINDS = ("plain", "ct", "change", "removed", "unknown")


def _setup(engine: Engine, prefix: str) -> None:
    store = IngestStore(engine)
    if store.gateway(GATEWAY) is None:
        store.enroll_gateway(GATEWAY)
    archive = [MeterEntry(f"{prefix}{k}", f"{prefix}{k}", "dlt645-2007") for k in METER_KINDS]
    store.record_birth(GATEWAY, 1, {}, T0 - timedelta(days=60), archive[:-1])
    with engine.begin() as conn:
        set_meter_settings(conn, f"{prefix}ct", effective_from=T0 - timedelta(days=9), by="t",
                           ct_ratio=40, contract_kw=200)  # fmt: skip
        set_meter_settings(conn, f"{prefix}change", effective_from=T0 - timedelta(days=9), by="t")
        set_meter_settings(conn, f"{prefix}change", effective_from=T0 + timedelta(days=2), by="t",
                           ct_ratio=5)  # fmt: skip
        set_meter_settings(conn, f"{prefix}removed", effective_from=T0 + timedelta(days=1),
                           by="t", active=False)  # fmt: skip


STEPS = st.sampled_from(
    [
        "0",
        "0",
        "0.01",
        "0.01",
        "1",
        "1",
        "2.5",
        "1",
        "1.5",
        "3.96",
        "3.9599",
        "3.960001",
        "3.97",
        "10",
        "-0.01",
        "rollover",
        "negative",
        "same-text",
        "huge",
    ]
)


POWERS = st.sampled_from(
    ["0", "1.5", "-2", "15.84", "15.8399", "15.840001", "-15.84", "-15.85", "633.6", "633.61"]
)
SMALL_STEPS = st.sampled_from(["0", "0.01", "1", "2.5", "3.9599", "3.95"])


@st.composite
def batches(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    """Batches of reading specs: per batch a few keys, each with a run of readings at
    rising quarter hours (sometimes a backfill, a gap, a point off the grid), the register
    stepping by one of STEPS. Mostly plain (what the screen settles), with every exception
    mixed in."""
    # First every key once (so the cache holds them: the screen needs a previous value).
    warm = [
        {"meter": m, "obis": o, "slot": 0, "offset": 0, "value": Decimal(100), "text": None,
         "unit": UNITS[o], "kind": "curve"}
        for m in METER_KINDS for o in (E, X)
    ]  # fmt: skip
    warm += [
        {"meter": m, "obis": f"1-0:3.8.{t}", "slot": 0, "offset": 0,
         "value": Decimal(400 if t == 0 else 100), "text": None, "unit": "kvarh",
         "kind": "daily"}
        for m in METER_KINDS for t in range(5)
    ]  # fmt: skip
    out: list[list[dict[str, Any]]] = [warm]
    registers: dict[tuple[str, str], Decimal] = {(w["meter"], w["obis"]): w["value"] for w in warm}
    slot = draw(st.integers(1, 3))
    # Half the examples are mostly plain (what the screen settles), with an odd reading.
    clean = draw(st.booleans())
    meters = ["plain", "ct"] if clean else ["plain", "plain", "plain", "ct", *METER_KINDS]
    channels = [E, X, P] if clean else [E, E, E, X, X, E1, P, V]
    kinds = ["curve"] if clean else ["curve"] * 6 + ["daily", "instant"]
    offsets = [0] * 12 + [60, 301]
    starts = [0, 0, 1, 96] if clean else [0, 0, 0, 1, 2, 96, -2]
    moves = [1, 1, 1, 2] if clean else [1, 1, 1, 1, 2, 0, -1]
    for _ in range(draw(st.integers(1, 6))):
        batch: dict[tuple[str, str, int], dict[str, Any]] = {}
        for _ in range(draw(st.integers(1, 6))):
            meter = draw(st.sampled_from(meters))
            obis = draw(st.sampled_from(channels))
            kind = draw(st.sampled_from(kinds))
            unit = UNITS[obis] if clean or draw(st.integers(0, 15)) else "Wh"
            at = slot + draw(st.sampled_from(starts))
            for _ in range(draw(st.integers(1, 4))):
                at += draw(st.sampled_from(moves))
                offset = draw(st.sampled_from(offsets))  # seconds off the grid
                step = draw(SMALL_STEPS if clean and draw(st.integers(0, 9)) else STEPS)
                before = registers.get((meter, obis), Decimal(draw(st.sampled_from(["100", "0"]))))
                text = None
                if step == "rollover":
                    before, value = Decimal("999999.5"), Decimal("0.3")
                elif step == "negative":
                    value = Decimal("-1")
                elif step == "same-text":
                    value, text = before, f"{before:.4f}"  # equal value, different text
                elif step == "huge":
                    value = before + Decimal("123456789.123456")
                else:
                    value = before + Decimal(step)
                if obis == P:  # a power: around the ratings (15.84 kW, × 40 with the CT)
                    value = Decimal(draw(POWERS))
                registers[meter, obis] = value
                batch[meter, obis, at] = {
                    "meter": meter,
                    "obis": obis,
                    "slot": at,
                    "offset": offset,
                    "value": value,
                    "text": text,
                    "unit": unit,
                    "kind": kind,
                }
        for _ in range(draw(st.integers(0, 2))):  # freeze blocks: a total and its tariffs
            meter = draw(st.sampled_from(meters))
            at = slot + draw(st.sampled_from([0, 1, 2]))
            members = sorted(draw(st.sets(st.integers(1, 4), min_size=3 if clean else 0)))
            if not clean or draw(st.integers(0, 4)):
                members = [1, 2, 3, 4]
            tariffs = []
            for t in members:
                before = registers.get((meter, f"1-0:3.8.{t}"), Decimal(100))
                tariffs.append(before + Decimal(draw(SMALL_STEPS)))
                registers[meter, f"1-0:3.8.{t}"] = tariffs[-1]
            total = sum(tariffs, Decimal(0)) + Decimal(draw(BLOCK_OFFSETS))
            for t, value in [(0, total), *zip(members, tariffs, strict=True)]:
                batch[meter, f"1-0:3.8.{t}", at] = {
                    "meter": meter, "obis": f"1-0:3.8.{t}", "slot": at, "offset": 0,
                    "value": value, "text": None, "unit": "kvarh", "kind": "daily",
                }  # fmt: skip
        slot += draw(st.sampled_from([1, 2, 4, 5]))
        out.append(list(batch.values()))
    if draw(st.booleans()):  # a reading far in the future (V3)
        out[-1].append(
            {
                "meter": "plain",
                "obis": E,
                "slot": 10_000,
                "offset": 0,
                "value": Decimal(10**6),
                "text": None,
                "unit": "kWh",
                "kind": "curve",
            }
        )
    return out


def _reading(prefix: str, spec: dict[str, Any], seq: int) -> IncomingReading:
    time = T0 + QUARTER * spec["slot"] + timedelta(seconds=spec["offset"])
    value = Decimal(spec["text"]) if spec["text"] is not None else spec["value"]
    read_at = time + timedelta(seconds=30)
    return IncomingReading(seq, prefix + spec["meter"], spec["obis"], time, value, spec["unit"],
                           spec["kind"], "scheduled", "ok", read_at)  # fmt: skip


def _state(engine: Engine, prefix: str) -> tuple[list[Any], list[Any]]:
    with engine.connect() as conn:
        stored = conn.execute(
            select(
                readings.c.meter,
                readings.c.obis,
                readings.c.ts,
                readings.c.value,
                readings.c.vee_status,
            )
            .where(readings.c.meter.like(f"{prefix}%"))
            .order_by(readings.c.meter, readings.c.obis, readings.c.ts)
        ).all()
        raised = conn.execute(
            select(
                vee_exceptions.c.meter,
                vee_exceptions.c.obis,
                vee_exceptions.c.ts,
                vee_exceptions.c.rule,
                vee_exceptions.c.severity,
                vee_exceptions.c.value_before,
                vee_exceptions.c.detail,
                vee_exceptions.c.status,
            ).where(vee_exceptions.c.meter.like(f"{prefix}%"))
        ).all()
    return [tuple(r) for r in stored], sorted(tuple(map(str, r)) for r in raised)


def _cache(validator: InlineValidator) -> dict[Any, Any]:
    """The cache, with every value as a Decimal (the screen may keep the text)."""
    return {
        key: (entry[0], None if entry[1] is None else Decimal(entry[1]))
        for key, entry in validator._last.items()
    }


class _Pair:
    """Two databases, fed alike; one validates with the screen, one without."""

    def __init__(self, tmp_path: Path) -> None:
        self.engines: list[Engine] = []
        for name in ("screen", "loop"):
            url = f"sqlite:///{tmp_path / name}.sqlite3"
            upgrade(url)
            self.engines.append(make_engine(url))
        self.examples = 0

    def run(self, plan: list[list[dict[str, Any]]], through_store: bool) -> None:
        self.examples += 1
        prefix = f"x{self.examples}-"
        validators = []
        for engine, screen in zip(self.engines, (True, False), strict=True):
            _setup(engine, prefix)
            validators.append(InlineValidator(engine, RuleSet(), lambda: NOW, screen=screen))
        seq = 10_000 * self.examples
        outcomes: list[list[Any]] = [[], []]
        for specs in plan:
            batch = []
            for spec in specs:
                seq += 1
                batch.append(_reading(prefix, spec, seq))
            for side, (engine, validator) in enumerate(zip(self.engines, validators, strict=True)):
                if through_store:
                    store = IngestStore(engine, validator)
                    result = store.apply_batch(GATEWAY, 1, batch[0].seq, batch[-1].seq, batch)
                    outcomes[side].append((result.inserted, result.updated, result.duplicates))
                else:
                    with engine.begin() as conn:
                        statuses = validator.validate(conn, batch)
                    outcomes[side].append(statuses)
            assert outcomes[0] == outcomes[1]
            assert _cache(validators[0]) == _cache(validators[1])
        assert _state(self.engines[0], prefix) == _state(self.engines[1], prefix)


_PAIRS: dict[str, _Pair] = {}


def _pair(tmp_path: Path) -> _Pair:
    """One pair of databases per test call (Hypothesis runs every example in it, each with
    meters of its own)."""
    if str(tmp_path) not in _PAIRS:
        _PAIRS[str(tmp_path)] = _Pair(tmp_path)
    return _PAIRS[str(tmp_path)]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=batches())
def test_the_screen_changes_no_outcome_through_the_store(tmp_path: Path, plan: Any) -> None:
    """The store's path: rows sorted by key, SQLite values as text."""
    _pair(tmp_path).run(plan, through_store=True)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=batches(), shuffle=st.randoms(use_true_random=False), mix=st.booleans())
def test_the_screen_changes_no_outcome_for_any_order(
    tmp_path: Path, plan: Any, shuffle: Any, mix: bool
) -> None:
    """Readings handed over as objects, as drawn or in any order (a batch out of key order
    goes to the loop)."""
    for specs in plan[1:] if mix else ():
        shuffle.shuffle(specs)
    _pair(tmp_path).run(plan, through_store=False)


def _columns(values: list[str], first_slot: int) -> ReadingColumns:
    """Curve points of p-plain's import register, a quarter hour apart, values as text."""
    n = len(values)
    micros = [T0_US + (first_slot + k) * 900_000_000 for k in range(n)]
    return ReadingColumns(["p-plain"] * n, [E] * n, micros, values, ["kWh"] * n,
                          ["curve"] * n, in_key_order=True)  # fmt: skip


def test_a_plain_batch_is_settled_by_the_screen_alone(tmp_path: Path) -> None:
    """The case the screen is for — registers of plain meters rising by less than the
    limit — never reaches the loop, not even the first time a register is seen; the text a
    value came in is kept until a reading needs its Decimal. A step on the limit is the
    loop's to decide."""
    engine = _Pair(tmp_path).engines[0]
    _setup(engine, "p-")
    validator = InlineValidator(engine, RuleSet(), lambda: NOW)
    loop_calls: list[list[int]] = []
    original = validator._pass

    def counting(*args: Any) -> Any:
        if list(args[1]):
            loop_calls.append(list(args[1]))
        return original(*args)

    validator._pass = counting  # type: ignore[method-assign]
    with engine.begin() as conn:
        # Not cached yet: the meter and its previous value (none) are fetched, then screened.
        assert validator.validate(conn, _columns(["100"], 0)) == ["valid"]
    assert loop_calls == [] and validator._last["p-plain", E][:2] == (T0_US, "100")
    with engine.begin() as conn:
        # Δ 0; 1; 0 ("101" and "101.0": equal floats, equal decimals); 3.5 (< 3.96).
        statuses = validator.validate(conn, _columns(["100", "101", "101.0", "104.5"], 1))
    assert statuses == ["valid"] * 4 and loop_calls == []
    assert validator._last["p-plain", E][:2] == (T0_US + 4 * 900_000_000, "104.5")
    with engine.begin() as conn:
        # Δ 3.96 = the limit (valid), then 3.97 (V9): the key goes to the loop whole.
        statuses = validator.validate(conn, _columns(["108.46", "112.43"], 5))
    assert statuses == ["valid", "failed"] and loop_calls == [[0, 1]]
