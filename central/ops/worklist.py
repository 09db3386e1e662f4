"""The worklist: every meter that failed a reading day's figures, the likely cause from the
evidence, and the remedies — each one call of ``issue_command``.

A meter is on the worklist for day D when it was not reached (coverage), or its expected
daily reading is missing (success), late (timeliness) or has not passed VEE (accuracy).
Its ``problems`` say which; ``causes`` lists every cause the evidence supports, most
likely first, and ``cause`` is the first. The causes, in that order:

==================  ======================================================  ===============
cause               evidence                                                remedies
==================  ======================================================  ===============
gateway_offline     the gateway never sent a birth, is dead since before    (field visit)
                    the deadline, or was dead across the collection window
checksum_errors     garbled replies: a ``bad_frame``/checksum reason in     read_now,
                    the edge's events, or a checksum statistic above 0      backfill
meter_silent        gateway online, no reading of the meter for the day;    read_now,
                    the edge's ledger statistics / given-up slots if sent   backfill
clock_drift         the edge found the meter's clock off by more than the   clock_sync,
                    threshold (clock events around the day)                 backfill
not_collected       the meter answered that day, but not its daily freeze   backfill,
                                                                            read_now
late                received after the deadline                             (uplink check)
estimated           VEE estimated the value                                 backfill
vee_exception       VEE raised an exception on it                           (resolve in VEE)
not_validated       VEE has not validated it yet                            (run VEE)
==================  ======================================================  ===============

A remedy is ``{"action", "label", "command": {"gateway", "kind", "args"}}``;
``issue_command(engine, publisher, requested_by=…, **remedy["command"])`` sends it.
``backfill`` asks the gateway to walk back far enough to reach D's freeze (days counted
from today in the reading zone, at most 31 — the wire's limit); past that no backfill is
offered.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, Final

from sqlalchemy import Connection, or_, select

from central.ops.evidence import (
    Evidence,
    checksum_signs,
    clock_observation,
    failure_signs,
    gateway_offline,
    load_evidence,
)
from central.ops.facts import meter_facts
from central.ops.settings import OpsSettings, OpsSettingsError, ReadingDay
from shared_protocol.wire.messages import MAX_BACKFILL_DAYS

__all__ = [
    "CAUSES",
    "MAX_WORKLIST_LIMIT",
    "classify",
    "remedies_for",
    "remedies_of",
    "worklist",
]

MAX_WORKLIST_LIMIT: Final = 1000

#: cause → (what it means, what to do, remedy actions in order). Data, documented as is.
CAUSES: Final[Mapping[str, tuple[str, str, tuple[str, ...]]]] = {
    "gateway_offline": (
        "the gateway was offline",
        "check the gateway's power and backhaul on site; once back it backfills its own "
        "missed slots within its window; commands wait at the broker until it reconnects",
        (),
    ),
    "checksum_errors": (
        "the meter's replies were garbled (bad checksums)",
        "check the RS-485 wiring, termination and the meter's baud rate and parity; "
        "then read now to test and backfill the day",
        ("read_now", "backfill"),
    ),
    "meter_silent": (
        "the gateway was online but the meter did not answer",
        "check the meter's supply, its address in the archive and its bus; read now to "
        "test, backfill once it answers",
        ("read_now", "backfill"),
    ),
    "clock_drift": (
        "the meter's clock was off",
        "sync the meter's clock; a freeze taken on a wrong clock may need a backfill",
        ("clock_sync", "backfill"),
    ),
    "not_collected": (
        "the meter answered that day but its daily freeze was not collected",
        "backfill the day; read now if the meter is in doubt",
        ("backfill", "read_now"),
    ),
    "late": (
        "the reading reached central after the deadline",
        "look at the gateway's uplink backlog and connection (central ops health)",
        (),
    ),
    "estimated": (
        "VEE estimated the value",
        "backfill the day to fetch the meter's own freeze",
        ("backfill",),
    ),
    "vee_exception": (
        "VEE raised an exception on the reading",
        "resolve or override the VEE exception",
        (),
    ),
    "not_validated": (
        "VEE has not validated the reading yet",
        "run VEE for the day",
        (),
    ),
}


def worklist(
    conn: Connection,
    day: date,
    *,
    gateway: str | None = None,
    area: str | None = None,
    limit: int = 100,
    after: str | None = None,
    settings: OpsSettings | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The failing meters of reading day ``day``, by meter id; ``after`` is the last meter
    of the previous page. ``now`` (default: the current time) dates the backfill remedy."""
    rules = settings or OpsSettings.from_env()
    if not 1 <= limit <= MAX_WORKLIST_LIMIT:
        raise OpsSettingsError(f"limit must be 1..{MAX_WORKLIST_LIMIT}, not {limit}")
    reading_day = rules.reading_day(day)
    facts = meter_facts(rules, reading_day, gateway=gateway, area=area).subquery("facts")
    query = select(facts).where(
        or_(
            facts.c.reached == 0,
            facts.c.expected - facts.c.received == 1,
            facts.c.received - facts.c.timely == 1,
            facts.c.received - facts.c.passed == 1,
        )
    )
    if after is not None:
        query = query.where(facts.c.meter > after)
    rows = [
        dict(row) for row in conn.execute(query.order_by(facts.c.meter).limit(limit)).mappings()
    ]
    evidence = load_evidence(
        conn, rules, reading_day, [(row["meter"], row["gateway"], row["bus"]) for row in rows]
    )
    moment = now or datetime.now(UTC)
    return [entry(row, reading_day, evidence, rules, moment) for row in rows]


def problems_of(row: Mapping[str, Any]) -> list[str]:
    """Which figures the meter failed: not_reached, missing, late, not_passed."""
    problems = []
    if not row["reached"]:
        problems.append("not_reached")
    if row["expected"] and not row["received"]:
        problems.append("missing")
    if row["received"] and not row["timely"]:
        problems.append("late")
    if row["received"] and not row["passed"]:
        problems.append("not_passed")
    return problems


def classify(
    row: Mapping[str, Any], day: ReadingDay, evidence: Evidence, settings: OpsSettings
) -> list[dict[str, Any]]:
    """Every cause the evidence supports for a failing meter, most likely first."""
    meter, gateway = row["meter"], row["gateway"]
    missing = not row["reached"] or (row["expected"] and not row["received"])
    causes: list[dict[str, Any]] = []
    if missing:
        offline = gateway_offline(evidence.gateways.get(gateway), day)
        if offline is not None:
            causes.append({"cause": "gateway_offline", "evidence": offline})
        garbled = checksum_signs(meter, gateway, row.get("bus"), evidence)
        if garbled:
            causes.append({"cause": "checksum_errors", "evidence": garbled})
        if offline is None and not garbled and not row["reached"]:
            causes.append(
                {
                    "cause": "meter_silent",
                    "evidence": {
                        "last_billing_reading_at": evidence.last_billing_reading.get(meter),
                        "edge": failure_signs(meter, evidence),
                    },
                }
            )
    drift = [
        observation
        for event in evidence.events.get(meter, ())
        if (observation := clock_observation(event["code"], event["detail"], event["at"], settings))
    ]
    if drift:
        causes.append({"cause": "clock_drift", "evidence": drift})
    if missing and row["reached"] and not any(c["cause"] == "gateway_offline" for c in causes):
        causes.append({"cause": "not_collected", "evidence": failure_signs(meter, evidence)})
    if row["received"] and not row["timely"]:
        causes.append(
            {
                "cause": "late",
                "evidence": {"received_at": row["received_at"], "deadline": day.deadline},
            }
        )
    if row["received"] and not row["passed"]:
        status = row["vee_status"]
        if status is None:
            cause = "not_validated"
        elif status in settings.estimated_vee_statuses:
            cause = "estimated"
        else:
            cause = "vee_exception"
        causes.append({"cause": cause, "evidence": {"vee_status": status}})
    return causes


def remedies_for(
    cause: str,
    meter: str,
    gateway: str,
    day: ReadingDay,
    settings: OpsSettings,
    now: datetime,
) -> list[dict[str, Any]]:
    """The remedies of ``cause`` for one meter, each ready for ``issue_command``."""
    remedies = []
    for action in CAUSES[cause][2]:
        if action == "read_now":
            label = f"read {settings.billing_obis} from meter {meter} now"
            args: dict[str, Any] = {"meter": meter, "what": settings.billing_obis}
        elif action == "backfill":
            days = backfill_days(day, settings, now)
            if days is None:
                continue
            label = f"补抄: re-read meter {meter}'s open slots of the last {days} days"
            args = {"days": days, "meters": [meter]}
        else:
            label = f"check and set meter {meter}'s clock"
            args = {"meters": [meter]}
        command = {"gateway": gateway, "kind": action, "args": args}
        remedies.append({"action": action, "label": label, "command": command})
    return remedies


def remedies_of(
    causes: list[dict[str, Any]],
    meter: str,
    gateway: str,
    day: ReadingDay,
    settings: OpsSettings,
    now: datetime,
) -> list[dict[str, Any]]:
    """The remedies of all ``causes``, most likely cause first, each action once."""
    remedies: list[dict[str, Any]] = []
    actions: set[str] = set()
    for cause in causes:
        for remedy in remedies_for(cause["cause"], meter, gateway, day, settings, now):
            if remedy["action"] not in actions:
                actions.add(remedy["action"])
                remedies.append(remedy)
    return remedies


def backfill_days(day: ReadingDay, settings: OpsSettings, now: datetime) -> int | None:
    """The edge's backfill window that still holds D's freeze (D+1 local) counted from
    ``now``'s local date, or None past the wire's 31 days."""
    days = (settings.local_date(now) - day.freeze_date).days + 1
    if days > MAX_BACKFILL_DAYS:
        return None
    return max(days, 1)


def entry(
    row: Mapping[str, Any],
    day: ReadingDay,
    evidence: Evidence,
    settings: OpsSettings,
    now: datetime,
) -> dict[str, Any]:
    """One worklist row."""
    causes = classify(row, day, evidence, settings)
    primary = causes[0]["cause"] if causes else None
    remedies = remedies_of(causes, row["meter"], row["gateway"], day, settings, now)
    return {
        "day": day.day,
        "meter": row["meter"],
        "gateway": row["gateway"],
        "area": row["area"],
        "protocol": row["protocol"],
        "problems": problems_of(row),
        "cause": primary,
        "explanation": CAUSES[primary][0] if primary else "no evidence of a cause",
        "advice": CAUSES[primary][1] if primary else "look at the meter and its gateway",
        "causes": causes,
        "remedies": remedies,
        "reading": None
        if not row["received"]
        else {
            "value": row["value"],
            "source": row["source"],
            "vee_status": row["vee_status"],
            "received_at": row["received_at"],
            "read_at": row["read_at"],
        },
    }
