"""What central knows about why a meter failed a reading day: the gateway's births and
deaths, the edge's events and statistics, and the readings themselves.

The edge reports (edge_agent, docs/edge-tasks.md):

* events ``clock_offset`` (offset_s, decision), ``clock_synced`` / ``clock_sync_failed``
  (offset_before_s, offset_after_s) from its clock discipline;
* events ``backfill_exhausted`` (task, slot, attempts, last reason — e.g. ``timeout: …`` or
  ``bad_frame: …``) when 补抄 gives a slot up, and ``meter.<kind>`` meter events;
* statistics ``collection.success_rate`` per finished ledger day — the ledger day of D's
  daily slot is D+1 — by task, by bus, and by meter for meters below 100 % (labels:
  expected, got, failed, consecutive_failures, last_got_slot);
* any statistic or event whose name says ``checksum`` (bus counters, when the edge sends
  them) counts as checksum evidence too.

Central stamps births with the gateway's ``sent_at`` and deaths with its own clock; only
the latest of each is kept (``gateways``), so "offline during the day" is judged from them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from sqlalchemy import Connection, and_, func, or_, select

from central.db.schema import gateway_events, gateways, readings, statistics
from central.ops.settings import OpsSettings, ReadingDay

__all__ = [
    "CLOCK_CODES",
    "SUCCESS_STATISTIC",
    "Evidence",
    "GatewayState",
    "checksum_signs",
    "clock_observation",
    "clock_observations",
    "decimal_or_none",
    "events_of_gateways",
    "failure_signs",
    "gateway_offline",
    "load_evidence",
    "load_gateways",
]

CLOCK_CODES: Final = ("clock_offset", "clock_synced", "clock_sync_failed")
SUCCESS_STATISTIC: Final = "collection.success_rate"
_CHECKSUM_WORDS: Final = ("checksum", "bad_frame", "crc")
_CHUNK: Final = 500  # meters per IN (...) list


@dataclass(frozen=True)
class GatewayState:
    id: str
    online: bool
    last_birth_at: datetime | None
    last_death_at: datetime | None
    last_birth: dict[str, Any] | None


@dataclass
class Evidence:
    """Evidence about some meters of one reading day, keyed by meter."""

    gateways: dict[str, GatewayState] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    statistics: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    bus_statistics: dict[tuple[str, str], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    last_billing_reading: dict[str, datetime] = field(default_factory=dict)


def load_gateways(conn: Connection, ids: Iterable[str] | None = None) -> dict[str, GatewayState]:
    query = select(
        gateways.c.id,
        gateways.c.online,
        gateways.c.last_birth_at,
        gateways.c.last_death_at,
        gateways.c.last_birth,
    )
    if ids is not None:
        query = query.where(gateways.c.id.in_(sorted(set(ids))))
    return {
        row.id: GatewayState(
            row.id, bool(row.online), row.last_birth_at, row.last_death_at, row.last_birth
        )
        for row in conn.execute(query)
    }


def gateway_offline(state: GatewayState | None, day: ReadingDay) -> dict[str, Any] | None:
    """Why the gateway counts as offline for ``day``'s collection, or None.

    Offline: never born; offline now since a death at or before the deadline; or back
    online, but its last death (at or before the deadline) and the birth after it span the
    collection window (freeze to deadline).
    """
    if state is None:
        return {"reason": "central has no record of the gateway"}
    if state.last_birth_at is None:
        return {"reason": "no birth received: the gateway never connected"}
    death = state.last_death_at
    if death is None or death > day.deadline:
        return None
    if not state.online and death >= state.last_birth_at:
        return {"reason": "offline since its last death", "since": death}
    if state.last_birth_at >= day.freeze and death < state.last_birth_at:
        return {
            "reason": "offline across the collection window",
            "since": death,
            "until": state.last_birth_at,
        }
    return None


def load_evidence(
    conn: Connection,
    settings: OpsSettings,
    day: ReadingDay,
    meters: Sequence[tuple[str, str, str | None]],
) -> Evidence:
    """Evidence for ``meters`` — (meter, gateway, bus) — around reading day ``day``."""
    evidence = Evidence()
    if not meters:
        return evidence
    gateway_ids = sorted({gateway for _, gateway, _ in meters})
    evidence.gateways = load_gateways(conn, gateway_ids)
    names = [meter for meter, _, _ in meters]
    for start in range(0, len(names), _CHUNK):
        chunk = names[start : start + _CHUNK]
        rows = conn.execute(
            select(
                gateway_events.c.meter,
                gateway_events.c.code,
                gateway_events.c.detail,
                gateway_events.c.at,
            )
            .where(
                gateway_events.c.gateway.in_(gateway_ids),
                gateway_events.c.meter.in_(chunk),
                gateway_events.c.at >= day.evidence_from,
                gateway_events.c.at <= day.evidence_to,
            )
            .order_by(gateway_events.c.at, gateway_events.c.id)
        )
        for row in rows:
            evidence.events[row.meter].append(
                {"code": row.code, "at": row.at, "detail": row.detail}
            )
        last = conn.execute(
            select(readings.c.meter, func.max(readings.c.ts))
            .where(
                readings.c.meter.in_(chunk),
                readings.c.obis == settings.billing_obis,
                readings.c.ts <= day.freeze,
            )
            .group_by(readings.c.meter)
        )
        evidence.last_billing_reading.update({meter: ts for meter, ts in last})
    wanted = set(names)
    buses = {(gateway, bus) for _, gateway, bus in meters if bus}
    stats = conn.execute(
        select(
            statistics.c.gateway,
            statistics.c.name,
            statistics.c.labels,
            statistics.c.value,
            statistics.c.at,
        )
        .where(
            statistics.c.gateway.in_(gateway_ids),
            statistics.c.at >= day.start,
            statistics.c.at <= day.evidence_to,
            or_(
                statistics.c.name == SUCCESS_STATISTIC,
                *(statistics.c.name.contains(word) for word in _CHECKSUM_WORDS),
            ),
        )
        .order_by(statistics.c.at, statistics.c.seq)
    )
    freeze_day = day.freeze_date.isoformat()
    for stat in stats:
        labels = stat.labels if isinstance(stat.labels, dict) else {}
        if stat.name == SUCCESS_STATISTIC and (
            labels.get("task") != "daily_frozen" or labels.get("day") != freeze_day
        ):
            continue
        entry = {"name": stat.name, "labels": labels, "value": stat.value, "at": stat.at}
        meter = labels.get("meter")
        if meter in wanted:
            evidence.statistics[str(meter)].append(entry)
        elif (stat.gateway, labels.get("bus")) in buses and "meter" not in labels:
            evidence.bus_statistics[(stat.gateway, str(labels.get("bus")))].append(entry)
    return evidence


def clock_observations(
    conn: Connection, settings: OpsSettings, day: ReadingDay, meters: Iterable[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Clock events beyond the threshold around ``day``, by meter (all meters when None)."""
    query = select(
        gateway_events.c.meter, gateway_events.c.code, gateway_events.c.detail, gateway_events.c.at
    ).where(
        gateway_events.c.code.in_(CLOCK_CODES),
        gateway_events.c.at >= day.evidence_from,
        gateway_events.c.at <= day.evidence_to,
        gateway_events.c.meter.is_not(None),
    )
    if meters is not None:
        query = query.where(gateway_events.c.meter.in_(sorted(set(meters))))
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in conn.execute(query.order_by(gateway_events.c.at, gateway_events.c.id)):
        observation = clock_observation(row.code, row.detail, row.at, settings)
        if observation is not None:
            found[row.meter].append(observation)
    return dict(found)


def clock_observation(
    code: str, detail: Any, at: datetime, settings: OpsSettings
) -> dict[str, Any] | None:
    """A clock event as ``{at, code, offset_s, offset_after_s}`` when its offset is past the
    threshold (a clock the edge found off), else None."""
    if code not in CLOCK_CODES or not isinstance(detail, dict):
        return None
    key = "offset_s" if code == "clock_offset" else "offset_before_s"
    offset = decimal_or_none(detail.get(key))
    if offset is None or abs(offset) <= settings.clock_threshold_s:
        return None
    after = decimal_or_none(detail.get("offset_after_s"))
    return {
        "at": at,
        "code": code,
        "offset_s": offset,
        "offset_after_s": after,
        "decision": detail.get("decision"),
    }


def checksum_signs(meter: str, gateway: str, bus: str | None, evidence: Evidence) -> list[Any]:
    """Events and statistics that say the meter's replies were garbled."""
    signs: list[Any] = []
    for event in evidence.events.get(meter, ()):
        text = f"{event['code']} {_reason_text(event['detail'])}".lower()
        if any(word in text for word in _CHECKSUM_WORDS):
            signs.append({"event": event["code"], "at": event["at"], "detail": event["detail"]})
    statistics_rows = [
        *evidence.statistics.get(meter, ()),
        *evidence.bus_statistics.get((gateway, bus or ""), ()),
    ]
    for stat in statistics_rows:
        if any(word in stat["name"].lower() for word in _CHECKSUM_WORDS) and _positive(
            stat["value"]
        ):
            signs.append({"statistic": stat["name"], "labels": stat["labels"], "at": stat["at"]})
    return signs


def failure_signs(meter: str, evidence: Evidence) -> list[Any]:
    """The edge's own record of failing to read the meter: ledger statistics below 100 %
    and given-up slots."""
    signs: list[Any] = []
    for stat in evidence.statistics.get(meter, ()):
        if stat["name"] == SUCCESS_STATISTIC:
            labels = stat["labels"]
            signs.append(
                {
                    "statistic": SUCCESS_STATISTIC,
                    "day": labels.get("day"),
                    "expected": labels.get("expected"),
                    "got": labels.get("got"),
                    "failed": labels.get("failed"),
                    "consecutive_failures": labels.get("consecutive_failures"),
                    "last_got_slot": labels.get("last_got_slot"),
                }
            )
    for event in evidence.events.get(meter, ()):
        if event["code"] == "backfill_exhausted":
            signs.append({"event": event["code"], "at": event["at"], "detail": event["detail"]})
    return signs


def _reason_text(detail: Any) -> str:
    if not isinstance(detail, dict):
        return ""
    return " ".join(str(detail.get(key, "")) for key in ("reason", "error", "outcome"))


def _positive(value: Any) -> bool:
    number = decimal_or_none(value)
    return number is not None and number > 0


def decimal_or_none(value: Any) -> Decimal | None:
    """A number as the edge sends it in JSON (an integer, a Decimal's or a float's text) as
    a finite Decimal; None for anything else."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def events_of_gateways(
    conn: Connection, gateway_ids: Sequence[str], codes: Sequence[str], since: datetime
) -> dict[tuple[str, str], int]:
    """How many events of ``codes`` each gateway raised since ``since``."""
    if not gateway_ids:
        return {}
    rows = conn.execute(
        select(gateway_events.c.gateway, gateway_events.c.code, func.count())
        .where(
            and_(
                gateway_events.c.gateway.in_(gateway_ids),
                gateway_events.c.code.in_(codes),
                gateway_events.c.at >= since,
            )
        )
        .group_by(gateway_events.c.gateway, gateway_events.c.code)
    )
    return {(gateway, code): int(count) for gateway, code, count in rows}
