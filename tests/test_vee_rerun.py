"""Re-running VEE: a parameter change changes exactly the readings it should; operators'
decisions survive; the catch-up path gives the same statuses as in-line validation; and
the library functions the API calls, with their errors — on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select
from vee_support import QUARTER, T0, Feed, exceptions, reading, status_of

from central.db.schema import readings
from central.ingest.store import IncomingReading
from central.vee import (
    ExceptionClosedError,
    ExceptionNotFoundError,
    InvalidVeeRequestError,
    get_exception,
    list_exceptions,
    override_exception,
    reading_status,
    rerun,
    resolve_exception,
    rule_table,
    set_meter_settings,
    set_parameter,
    validate_pending,
)

pytest_plugins = ["central_fixtures"]

E = "1-0:1.8.0"


def statuses(engine: Engine, meter: str | None = None) -> dict[tuple[str, str, datetime], str]:
    query = select(readings.c.meter, readings.c.obis, readings.c.ts, readings.c.vee_status)
    if meter is not None:
        query = query.where(readings.c.meter == meter)
    with engine.connect() as conn:
        return {(m, o, t): s for m, o, t, s in conn.execute(query)}


def register_walk(meter: str, increments: list[str]) -> list[IncomingReading]:
    value = Decimal(100)
    out = [reading(meter, E, T0, value, kind="curve")]
    for k, step in enumerate(increments, start=1):
        value += Decimal(step)
        out.append(reading(meter, E, T0 + QUARTER * k, value, kind="curve"))
    return out


def test_rerun_after_a_parameter_change_changes_exactly_the_affected_readings(
    engine: Engine,
) -> None:
    feed = Feed(engine)
    # 8 quarters with increments up to 3.9 kWh: all under 3.96 (margin 1.2).
    increments = ["2.0", "3.5", "3.9", "3.0", "3.5", "1.0", "3.30", "3.9"]
    feed.send_all(register_walk("m1", increments))
    before = statuses(engine)
    assert set(before.values()) == {"valid"}
    # From T0 + 1 h (quarter 4 on) the margin is 1.0: 13.2 kW × 0.25 h = 3.30 kWh a quarter.
    with engine.begin() as conn:
        set_parameter(
            conn, "V9", "margin", "1.0", effective_from=T0 + timedelta(hours=1), by="analyst"
        )
    summary = rerun(engine, start=T0, end=T0 + timedelta(days=1))
    assert summary["readings"] == 9
    after = statuses(engine)
    changed = {key[2] for key in after if after[key] != before[key]}
    # Quarter 5 (+3.5) and 8 (+3.9) exceed 3.30. Quarters 2 and 3 (+3.5, +3.9) are before
    # the change and keep the old tolerance; quarter 7 (+3.30) is at the limit; quarter 6
    # is compared with quarter 4, the last accepted: +4.5 in two quarters (limit 6.60).
    assert changed == {T0 + QUARTER * 5, T0 + QUARTER * 8}
    assert {after[("m1", E, t)] for t in changed} == {"failed"}


def test_closed_exceptions_survive_a_rerun(engine: Engine) -> None:
    feed = Feed(engine)
    feed.send_all(register_walk("m1", ["1", "-1", "1", "-2", "5", "-3"]))
    held = [e for e in exceptions(engine) if e["rule"] == "V7"]
    assert len(held) == 3
    with engine.begin() as conn:
        resolved = resolve_exception(conn, held[0]["id"], by="ops1", reason="known meter swap")
        overridden = override_exception(conn, held[1]["id"], by="ops2", reason="accepted")
    assert status_of(engine, "m1", E, held[0]["ts"]) == "valid"
    assert status_of(engine, "m1", E, held[1]["ts"]) == "overridden"
    rerun(engine, start=T0, end=T0 + timedelta(days=1))
    rows = {e["id"]: e for e in exceptions(engine, rule="V7")}
    assert rows[held[0]["id"]] == resolved and rows[held[1]["id"]] == overridden
    assert rows[held[1]["id"]]["resolved_by"] == "ops2"
    # Not raised again for the same values; the third (open) one was replaced by a new one.
    assert sorted((e["ts"], e["status"]) for e in rows.values()) == sorted(
        [(held[0]["ts"], "resolved"), (held[1]["ts"], "overridden"), (held[2]["ts"], "open")]
    )
    assert held[2]["id"] not in rows
    assert status_of(engine, "m1", E, held[0]["ts"]) == "valid"
    assert status_of(engine, "m1", E, held[1]["ts"]) == "overridden"
    assert status_of(engine, "m1", E, held[2]["ts"]) == "failed"


def mixed_traffic(meters: list[str], seed: int, now: datetime) -> list[IncomingReading]:
    """Readings that trip most per-reading rules, in shuffled batches."""
    rng = random.Random(seed)
    out: list[IncomingReading] = []
    for meter in meters:
        value = Decimal(rng.choice(["100", "999998"]))
        for k in range(40):
            step = Decimal(rng.choice(["0.5", "1", "2", "-0.3", "5", "3.96"]))
            value = (value + step) % Decimal(1000000)
            ts = T0 + QUARTER * k
            if rng.random() < 0.05:
                ts += timedelta(seconds=30)  # off the grid
            out.append(reading(meter, E, ts, value, kind="curve"))
            power = Decimal(rng.choice(["1.5", "12", "16", "-2"]))
            out.append(reading(meter, "1-0:16.7.0", T0 + QUARTER * k, power, kind="curve"))
        for day in range(1, 4):  # after the curve: one version of each key
            ts = T0 + timedelta(days=day)
            tariffs = [Decimal(rng.randint(1, 50)) for _ in range(4)]
            total = sum(tariffs) + Decimal(rng.choice(["0", "0.01", "3"]))
            block = [reading(meter, f"1-0:1.8.{t}", ts, v) for t, v in enumerate([total, *tariffs])]
            out += block
        out.append(reading(meter, "1-0:3.8.0", T0, "5", unit="varh"))  # a unit error
        out.append(reading(meter, E, now + timedelta(days=1), "1", kind="instant"))  # ahead
    return out


def test_in_line_and_catch_up_give_the_same_statuses(engine: Engine) -> None:
    now = datetime.now(UTC)
    meters = ["a1", "a2", "a3"]
    twins = ["b1", "b2", "b3"]
    feed = Feed(engine, meters=meters + twins, clock=lambda: now)
    traffic = mixed_traffic(meters, seed=5, now=now)
    rng = random.Random(9)
    batches = [traffic[i : i + 37] for i in range(0, len(traffic), 37)]
    for batch in batches:
        rng.shuffle(batch)
        feed.send(*batch)
    # The same readings for the twin meters, stored with VEE off, validated afterwards.
    feed.vee = False
    twin = {m: t for m, t in zip(meters, twins, strict=True)}
    for batch in batches:
        feed.send(
            *[
                reading(twin[r.meter], r.obis, r.time, r.value, kind=r.kind, unit=r.unit)
                for r in batch
            ]
        )
    assert set(statuses(engine, "b1").values()) == {None}
    summary = validate_pending(engine, limit=50)
    assert summary["validated"] == 50 and summary["pending"] > 0
    summary = validate_pending(engine)
    assert summary["pending"] == 0
    inline = statuses(engine)
    for meter, other in twin.items():
        mine = {(o, t): s for (m, o, t), s in inline.items() if m == meter}
        theirs = {(o, t): s for (m, o, t), s in inline.items() if m == other}
        assert mine == theirs

    def raised(meter: str) -> list[tuple[object, ...]]:
        return sorted(
            (e["rule"], e["severity"], e["obis"], e["ts"]) for e in exceptions(engine, meter=meter)
        )

    for meter, other in twin.items():
        assert raised(meter) == raised(other)
    counts = {s: list(inline.values()).count(s) for s in set(inline.values())}
    assert counts["failed"] > 10 and counts["flagged"] > 0 and counts["valid"] > 100
    assert {e["rule"] for e in exceptions(engine)} >= {"V3", "V7", "V8", "V9", "V10", "V11", "V12"}


# -- the API's functions ---------------------------------------------------------------------


def test_exception_library_functions_and_errors(engine: Engine) -> None:
    feed = Feed(engine)
    feed.send_all(register_walk("m1", ["1", "-1", "1", "-2"]) + register_walk("m2", ["-1"]))
    with engine.begin() as conn:
        every = list_exceptions(conn)
        assert [e["meter"] for e in every] == ["m1", "m1", "m2"]
        assert [e["id"] for e in list_exceptions(conn, after_id=every[0]["id"], limit=1)] == [
            every[1]["id"]
        ]
        assert len(list_exceptions(conn, meter="m1", rule="v7", status="open")) == 2
        assert list_exceptions(conn, since=T0 + QUARTER * 3) == [every[1]]
        assert list_exceptions(conn, until=T0 + QUARTER * 3) == [every[0], every[2]]
        assert get_exception(conn, 10_000) is None
        with pytest.raises(ExceptionNotFoundError) as missing:
            resolve_exception(conn, 10_000, by="ops", reason="x")
        assert missing.value.http_status == 404
        with pytest.raises(InvalidVeeRequestError, match="reason"):
            resolve_exception(conn, every[0]["id"], by="ops", reason=" ")
        with pytest.raises(InvalidVeeRequestError, match="limit"):
            list_exceptions(conn, limit=0)
        with pytest.raises(InvalidVeeRequestError, match="unknown VEE rule"):
            list_exceptions(conn, rule="V99")
        with pytest.raises(InvalidVeeRequestError, match="naive"):
            list_exceptions(conn, since=datetime(2026, 1, 1))
        # Override with a new value: the reading takes it, the exception keeps the old.
        done = override_exception(
            conn, every[0]["id"], by="ops", reason="read on site", value=Decimal("101.5")
        )
        assert done["status"] == "overridden" and done["value_after"] == Decimal("101.5")
        assert done["value_before"] == Decimal("100")
        with pytest.raises(ExceptionClosedError) as closed:
            resolve_exception(conn, every[0]["id"], by="ops", reason="again")
        assert closed.value.http_status == 409
        with pytest.raises(InvalidVeeRequestError, match="more than 6 decimal places"):
            override_exception(conn, every[1]["id"], by="o", reason="r", value=Decimal("1.0000001"))
        status = reading_status(conn, "m1", E, every[0]["ts"])
        assert status is not None
        assert status["value"] == Decimal("101.5") and status["vee_status"] == "overridden"
        assert status["billable"] and [e["id"] for e in status["exceptions"]] == [every[0]["id"]]
        assert reading_status(conn, "m1", E, T0 - timedelta(days=1)) is None


def test_parameters_have_effective_dates(engine: Engine) -> None:
    with engine.begin() as conn:
        set_parameter(conn, "V4", "tolerance", "1.8", effective_from=T0, by="a", reason="noisy")
        set_parameter(conn, "v4", "tolerance", "2.0", effective_from=T0 + timedelta(days=7), by="b")
        for bad, message in (
            (("V99", "tolerance", "1"), "unknown VEE rule"),
            (("V4", "tol", "1"), "has no parameter"),
            (("V4", "tolerance", "abc"), "not a number"),
            (("V4", "tolerance", "0.5"), "out of range"),
        ):
            with pytest.raises(InvalidVeeRequestError, match=message):
                set_parameter(conn, *bad, effective_from=T0, by="a")
        with pytest.raises(InvalidVeeRequestError, match="naive"):
            set_parameter(conn, "V4", "tolerance", "2", effective_from=datetime(2026, 1, 1), by="a")
        table = {r["id"]: r for r in rule_table(conn, at=T0 + timedelta(days=1))}
        tolerance, _ = table["V4"]["parameters"]
        assert (tolerance["default"], tolerance["value"]) == ("1.5", "1.8")
        assert [h["value"] for h in tolerance["history"]] == ["1.8", "2.0"]
        assert tolerance["history"][0]["effective_to"] == T0 + timedelta(days=7)
        before = {r["id"]: r for r in rule_table(conn, at=T0 - timedelta(days=1))}
        assert before["V4"]["parameters"][0]["value"] == "1.5"
        assert len(rule_table(conn)) == 16
        with pytest.raises(InvalidVeeRequestError, match="phases"):
            set_meter_settings(conn, "m1", effective_from=T0, by="a", phases=2)
