"""Meter clock rules (edge.md D5, b.6): when a measured offset leads to a sync.

* |offset| ≤ threshold (default 60 s): nothing to do.
* Inside the forbidden window (±5 min around every hour, so also midnight): defer to the
  next allowed moment, so a clock change never crosses a freeze instant.
* At most ``max_syncs_per_meter_per_day`` syncs per meter per local day: beyond that the
  meter is left alone and an event says so (a clock that keeps jumping is a faulty meter,
  not something to keep correcting).

The collector applies the decision; every check that leads to a sync, and every sync, is an
event in the log with the offsets before and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.config import ClockConfig

__all__ = ["ClockCheck", "ClockDecision", "decide", "next_allowed"]


class ClockDecision(StrEnum):
    OK = "ok"  # within the threshold
    SYNC = "sync"  # set it now
    DEFERRED = "deferred"  # over the threshold, but inside the forbidden window
    CAPPED = "capped"  # over the threshold, but the daily cap is used up
    UNREADABLE = "unreadable"  # the clock could not be read
    UNSUPPORTED = "unsupported"  # the protocol has no clock (Modbus)


@dataclass(frozen=True)
class ClockCheck:
    """One meter's clock check and what came of it (offsets in seconds, + = meter fast)."""

    meter: str
    bus: str
    decision: ClockDecision
    offset_s: float | None
    offset_after_s: float | None = None
    synced: bool = False
    method: str = ""  # "broadcast" | "set" when synced
    reason: str = ""
    at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "meter": self.meter,
            "bus": self.bus,
            "decision": self.decision.value,
            "offset_s": self.offset_s,
            "offset_after_s": self.offset_after_s,
            "synced": self.synced,
            "method": self.method,
            "reason": self.reason,
            "at": self.at.isoformat() if self.at else None,
        }


def decide(
    offset: timedelta, now: datetime, config: ClockConfig, zone: ZoneInfo, syncs_today: int
) -> ClockDecision:
    """What to do about a meter whose clock is ``offset`` off at ``now`` (aware)."""
    if abs(offset.total_seconds()) <= config.threshold_s:
        return ClockDecision.OK
    if syncs_today >= config.max_syncs_per_meter_per_day:
        return ClockDecision.CAPPED
    if config.is_forbidden(now.astimezone(zone).time()):
        return ClockDecision.DEFERRED
    return ClockDecision.SYNC


def next_allowed(now: datetime, config: ClockConfig, zone: ZoneInfo) -> datetime:
    """The first instant at or after ``now`` outside the forbidden window (to the second)."""
    if not config.is_forbidden(now.astimezone(zone).time()):
        return now
    moment = now.replace(microsecond=0)
    # The window is at most 29 min on either side of the hour; one hour of steps suffices.
    for _ in range(3600):
        if not config.is_forbidden(moment.astimezone(zone).time()):
            return moment
        moment += timedelta(seconds=1)
    return moment
