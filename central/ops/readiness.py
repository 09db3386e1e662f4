"""The readiness check of a reading day: every meter that would not bill cleanly, and why.

``readiness(conn, day)`` looks at every meter of the day's archive and at readings from
meters no archive lists, and names each problem:

====================  =====================================================================
problem               meaning
====================  =====================================================================
no_daily_reading      a meter that keeps daily freezes has no daily reading for the day
                      (``cause``: the worklist's likely cause — gateway_offline,
                      meter_silent, checksum_errors, clock_drift, not_collected)
no_reading            a meter without daily freezes (Modbus, 645-1997) was not reached
not_validated         the daily reading has not been through VEE
open_vee_exception    VEE raised an exception on the daily reading
estimated             the daily reading is a VEE estimate
clock_drift           the edge found the meter's clock off by more than the threshold
                      around the day (the freeze may have been taken at the wrong time)
gateway_offline       the meter's gateway is offline now, or was during the collection
not_in_archive        central holds the day's reading of a meter no gateway archive lists
====================  =====================================================================

Run **after** the collection (from the freeze on; the deadline is when figures close) it
checks the day's own readings. Run **ahead** of the reading day — the check "before each
reading day" that the collection will succeed — it checks the newest day that has closed
(``based_on``), plus gateways and clocks as they are now: what fails today will fail on
the reading day unless someone acts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, exists, func, or_, select

from central.db.schema import meters, readings
from central.ops.evidence import (
    clock_observations,
    gateway_offline,
    load_evidence,
    load_gateways,
)
from central.ops.facts import meter_facts
from central.ops.settings import OpsSettings, ReadingDay
from central.ops.worklist import classify, remedies_of

__all__ = ["readiness"]

_CHUNK = 500  # meters per IN (...) list


def readiness(
    conn: Connection,
    reading_day: date,
    *,
    settings: OpsSettings | None = None,
    now: datetime | None = None,
    gateway: str | None = None,
    area: str | None = None,
) -> dict[str, Any]:
    """The readiness of ``reading_day`` (see the module doc); ``now`` defaults to the time."""
    rules = settings or OpsSettings.from_env()
    moment = now or datetime.now(UTC)
    target = rules.reading_day(reading_day)
    ahead = moment < target.freeze
    basis = rules.reading_day(_newest_closed_day(rules, moment)) if ahead else target
    facts = meter_facts(rules, basis, gateway=gateway, area=area).subquery("facts")
    checked = int(conn.execute(select(func.count()).select_from(facts)).scalar_one())
    clocks = clock_observations(conn, rules, basis)
    # Ahead of the day, a gateway that is down now will miss the reading day too; after
    # the collection it matters only for meters whose reading it failed to deliver.
    offline_now: dict[str, dict[str, Any]] = {}
    if ahead:
        for state in load_gateways(conn, None if gateway is None else [gateway]).values():
            if state.last_birth_at is None or not state.online:
                offline_now[state.id] = {
                    "reason": "offline now" if state.last_birth_at else "never connected",
                    "since": state.last_death_at,
                }
    # Only the meters with something to say are read: failing ones, drifting clocks, and
    # (ahead) the meters of gateways down now.
    suspect = [facts.c.reached == 0, facts.c.expected - facts.c.passed == 1]
    if offline_now:
        suspect.append(facts.c.gateway.in_(sorted(offline_now)))
    found_rows: dict[str, dict[str, Any]] = {
        fact["meter"]: dict(fact)
        for fact in conn.execute(select(facts).where(or_(*suspect))).mappings()
    }
    drifting = sorted(set(clocks) - set(found_rows))
    for start in range(0, len(drifting), _CHUNK):
        chunk = drifting[start : start + _CHUNK]
        for fact in conn.execute(select(facts).where(facts.c.meter.in_(chunk))).mappings():
            found_rows[fact["meter"]] = dict(fact)
    suspects = [found_rows[meter] for meter in sorted(found_rows)]
    evidence = load_evidence(
        conn, rules, basis, [(row["meter"], row["gateway"], row["bus"]) for row in suspects]
    )
    problems: dict[str, list[dict[str, Any]]] = defaultdict(list)
    remedies: dict[str, list[dict[str, Any]]] = {}
    for row in suspects:
        meter = row["meter"]
        found = problems[meter]
        causes = classify(row, basis, evidence, rules)
        offline = (
            offline_now.get(row["gateway"])
            if ahead
            else gateway_offline(evidence.gateways.get(row["gateway"]), basis)
        )
        if offline is not None and (ahead or not row["passed"] or not row["reached"]):
            found.append({"problem": "gateway_offline", "detail": offline})
        if row["expected"] and not row["received"]:
            cause = causes[0]["cause"] if causes else None
            found.append({"problem": "no_daily_reading", "cause": cause})
        elif not row["expected"] and not row["reached"]:
            found.append({"problem": "no_reading", "cause": causes[0]["cause"] if causes else None})
        elif row["received"] and not row["passed"]:
            status = row["vee_status"]
            if status is None:
                found.append({"problem": "not_validated"})
            elif status in rules.estimated_vee_statuses:
                found.append({"problem": "estimated", "detail": {"vee_status": status}})
            else:
                found.append({"problem": "open_vee_exception", "detail": {"vee_status": status}})
        if meter in clocks:
            found.append({"problem": "clock_drift", "detail": clocks[meter]})
        remedies[meter] = remedies_of(causes, meter, row["gateway"], basis, rules, moment)
    by_meter = found_rows
    listed = []
    for meter in sorted(problems):
        if not problems[meter]:
            continue
        row = by_meter[meter]
        listed.append(
            {
                "meter": meter,
                "gateway": row["gateway"],
                "area": row["area"],
                "problems": problems[meter],
                "remedies": remedies.get(meter, []),
            }
        )
    for meter, meter_gateway in _readings_without_archive(conn, rules, basis):
        if gateway is not None and meter_gateway != gateway:
            continue
        listed.append(
            {
                "meter": meter,
                "gateway": meter_gateway,
                "area": None,
                "problems": [
                    {
                        "problem": "not_in_archive",
                        "detail": {"reading_from_gateway": meter_gateway},
                    }
                ],
                "remedies": [],
            }
        )
    counts = Counter(problem["problem"] for item in listed for problem in item["problems"])
    return {
        "reading_day": reading_day,
        "mode": "ahead" if ahead else "after_collection",
        "based_on": basis.day,
        "freeze_at": basis.freeze,
        "deadline": basis.deadline,
        "checked_at": moment,
        "meters_checked": checked,
        "meters_ready": checked - sum(1 for item in listed if item["meter"] in by_meter),
        "meters_not_ready": len(listed),
        "ready": not listed,
        "problems": dict(sorted(counts.items())),
        "meters": listed,
    }


def _newest_closed_day(settings: OpsSettings, now: datetime) -> date:
    """The newest reading day whose freeze has passed at ``now``."""
    return settings.local_date(now) - timedelta(days=1)


def _readings_without_archive(
    conn: Connection, settings: OpsSettings, day: ReadingDay
) -> list[tuple[str, str]]:
    """(meter, gateway) of the day's billing readings from meters no archive lists.

    The distinct meters of ``readings`` come from a loose index scan of its primary key
    (meter, obis, ts) — one probe per meter instead of reading every row — then only
    those without an archive row are looked up at the day's freeze.
    """
    first = select(func.min(readings.c.meter).label("meter")).cte("walk", recursive=True)
    following = select(
        select(func.min(readings.c.meter))
        .where(readings.c.meter > first.c.meter)
        .scalar_subquery()
        .label("meter")
    ).where(first.c.meter.is_not(None))
    walk = first.union_all(following)
    orphans = [
        meter
        for (meter,) in conn.execute(
            select(walk.c.meter).where(
                walk.c.meter.is_not(None), ~exists().where(meters.c.meter == walk.c.meter)
            )
        )
    ]
    if not orphans:
        return []
    found = conn.execute(
        select(readings.c.meter, readings.c.gateway)
        .where(
            readings.c.meter.in_(orphans),
            readings.c.obis == settings.billing_obis,
            readings.c.ts == day.freeze,
        )
        .order_by(readings.c.meter)
    )
    return [(meter, gateway) for meter, gateway in found]
