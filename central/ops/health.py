"""Gateway health from what gateways tell central: births and deaths, the birth's own
figures (software, log depth, oldest unacknowledged record, clock offset), the ingest
watermark, the edge's daily success statistics, uplink trouble and commands waiting.

Each gateway gets a ``status`` (``online``, ``offline``, ``never_connected``) and a list of
``warnings``, each ``{"code", "detail"}``:

==================  =======================================================================
code                when
==================  =======================================================================
offline             the gateway's will was published (death) and no birth came after it
never_connected     enrolled, but no birth ever arrived
clock_offset        the birth's gateway clock offset is beyond the clock threshold (60 s)
uplink_backlog      the birth says its oldest unacknowledged record is older than 6 hours
low_success         the newest daily success statistic is below the 98 % target
uplink_trouble      nacks, evicted or quarantined log records, rejected batches in 24 h
==================  =======================================================================
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, func, select

from central.commands.tracking import WAITING
from central.db.ops_tables import commands
from central.db.schema import ingest_watermarks, meters, statistics
from central.ops.evidence import (
    SUCCESS_STATISTIC,
    decimal_or_none,
    events_of_gateways,
    load_gateways,
)
from central.ops.settings import OpsSettings

__all__ = ["TROUBLE_CODES", "gateway_health"]

#: Edge and central events that mean the uplink or the gateway's log is in trouble.
TROUBLE_CODES: Final = (
    "uplink_nack",
    "uplink_unsendable_record",
    "store.evicted",
    "store.quarantined",
    "batch_rejected",
    "watermark_adopted",
)
BACKLOG_WARNING: Final = timedelta(hours=6)
TROUBLE_WINDOW: Final = timedelta(days=1)
_STATISTIC_WINDOW: Final = timedelta(days=3)


def gateway_health(
    conn: Connection,
    gateway: str | None = None,
    *,
    settings: OpsSettings | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Health of every gateway (or one), sorted by id."""
    rules = settings or OpsSettings.from_env()
    moment = now or datetime.now(UTC)
    states = load_gateways(conn, None if gateway is None else [gateway])
    ids = sorted(states)
    if not ids:
        return []
    archive: dict[str, int] = {
        gateway_id: count
        for gateway_id, count in conn.execute(
            select(meters.c.gateway, func.count())
            .where(meters.c.gateway.in_(ids))
            .group_by(meters.c.gateway)
        )
    }
    marks = {
        row.gateway: row
        for row in conn.execute(
            select(
                ingest_watermarks.c.gateway,
                ingest_watermarks.c.up_to_seq,
                ingest_watermarks.c.updated_at,
            ).where(ingest_watermarks.c.gateway.in_(ids))
        )
    }
    waiting: dict[str, int] = {
        gateway_id: count
        for gateway_id, count in conn.execute(
            select(commands.c.gateway, func.count())
            .where(commands.c.gateway.in_(ids), commands.c.status.in_(WAITING))
            .group_by(commands.c.gateway)
        )
    }
    trouble = events_of_gateways(conn, ids, TROUBLE_CODES, moment - TROUBLE_WINDOW)
    success = _latest_daily_success(conn, ids, moment)
    result = []
    for gateway_id in ids:
        state = states[gateway_id]
        birth = state.last_birth or {}
        if state.last_birth_at is None:
            status = "never_connected"
        elif state.online:
            status = "online"
        else:
            status = "offline"
        mark = marks.get(gateway_id)
        clock_offset = decimal_or_none(birth.get("clock_offset_s"))
        entry: dict[str, Any] = {
            "gateway": gateway_id,
            "status": status,
            "online": state.online,
            "last_birth_at": state.last_birth_at,
            "last_death_at": state.last_death_at,
            "software_version": birth.get("software_version"),
            "boot_reason": birth.get("boot_reason"),
            "session": birth.get("session"),
            "meters_in_archive": int(archive.get(gateway_id, 0)),
            "log_depth": birth.get("log_depth"),
            "oldest_unacked_s": birth.get("oldest_unacked_s"),
            "clock_offset_s": clock_offset,
            "acked_up_to_seq": None if mark is None else mark.up_to_seq,
            "last_batch_at": None if mark is None else mark.updated_at,
            "daily_success": success.get(gateway_id),
            "commands_waiting": int(waiting.get(gateway_id, 0)),
            "trouble_24h": {
                code: count for (gid, code), count in sorted(trouble.items()) if gid == gateway_id
            },
        }
        entry["warnings"] = _warnings(entry, rules)
        result.append(entry)
    return result


def _warnings(entry: dict[str, Any], settings: OpsSettings) -> list[dict[str, Any]]:
    warnings: list[dict[str, Any]] = []
    if entry["status"] == "never_connected":
        warnings.append({"code": "never_connected", "detail": "no birth received"})
    elif entry["status"] == "offline":
        warnings.append({"code": "offline", "detail": {"since": entry["last_death_at"]}})
    offset = entry["clock_offset_s"]
    if offset is not None and abs(offset) > settings.clock_threshold_s:
        warnings.append(
            {
                "code": "clock_offset",
                "detail": {"offset_s": offset, "threshold_s": settings.clock_threshold_s},
            }
        )
    oldest = entry["oldest_unacked_s"]
    if isinstance(oldest, int) and oldest > BACKLOG_WARNING.total_seconds():
        warnings.append({"code": "uplink_backlog", "detail": {"oldest_unacked_s": oldest}})
    success = entry["daily_success"]
    target = settings.targets.get("success")
    if success is not None and target is not None and success["rate"] < target:
        warnings.append({"code": "low_success", "detail": success})
    if entry["trouble_24h"]:
        warnings.append({"code": "uplink_trouble", "detail": entry["trouble_24h"]})
    return warnings


def _latest_daily_success(
    conn: Connection, ids: list[str], now: datetime
) -> dict[str, dict[str, Any]]:
    """The newest whole-gateway ``daily_frozen`` success statistic of each gateway."""
    rows = conn.execute(
        select(statistics.c.gateway, statistics.c.labels, statistics.c.value, statistics.c.at)
        .where(
            statistics.c.gateway.in_(ids),
            statistics.c.name == SUCCESS_STATISTIC,
            statistics.c.at >= now - _STATISTIC_WINDOW,
        )
        .order_by(statistics.c.at, statistics.c.seq)
    )
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        labels = row.labels if isinstance(row.labels, dict) else {}
        if labels.get("task") != "daily_frozen" or "bus" in labels or "meter" in labels:
            continue
        day = str(labels.get("day"))
        current = latest.get(row.gateway)
        if current is None or day >= current["day"]:
            latest[row.gateway] = {
                "day": day,
                "rate": row.value,
                "expected": labels.get("expected"),
                "got": labels.get("got"),
                "reported_at": row.at,
            }
    return latest
