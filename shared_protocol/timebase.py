"""Meter clock ↔ UTC: meters keep local wall time, everything inside us keeps UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

DEFAULT_METER_ZONE = "Asia/Shanghai"

__all__ = ["DEFAULT_METER_ZONE", "meter_time_to_utc", "utc_to_meter_time"]


def meter_time_to_utc(local: datetime, zone: str = DEFAULT_METER_ZONE) -> datetime:
    """Attach the meter's zone to a naive meter clock value and convert to aware UTC."""
    if local.tzinfo is not None:
        return local.astimezone(UTC)
    return local.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def utc_to_meter_time(instant: datetime, zone: str = DEFAULT_METER_ZONE) -> datetime:
    """The naive wall time a meter in ``zone`` shows at ``instant`` (aware UTC)."""
    if instant.tzinfo is None:
        raise ValueError("utc_to_meter_time needs an aware datetime")
    return instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
