"""What every meter driver returns and raises, and the plumbing they share.

A driver turns a collection need ("yesterday's daily freeze of meter X") into bus
transactions and the replies into :class:`Reading` s: a canonical OBIS code, a ``Decimal``
value, the unit, and the *meter's* data time as aware UTC. For frozen values that is the
freeze time the meter keeps in its own record, never the time we read it (edge.md F8).

Exceptions::

    Exception
     └── DriverError
          ├── ReadFailed        a transaction did not give data; ``result`` says how
          ├── RecordNotFound    the meter answered but has no record for that slot
          └── NotSupported      the protocol or the meter model has no such data
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from edge_agent.archive import Meter
from edge_agent.bus import BusMaster, Outcome, Priority, Transaction, TransactionResult
from shared_protocol.quantities import MeterValue, base_obis
from shared_protocol.timebase import DEFAULT_METER_ZONE, meter_time_to_utc

__all__ = [
    "ClockReading",
    "Driver",
    "DriverError",
    "MeterEvent",
    "NotSupported",
    "ReadFailed",
    "Reading",
    "RecordNotFound",
    "readings_from",
]


class DriverError(Exception):
    """A collection need could not be met."""


class ReadFailed(DriverError):
    """A transaction ended without data (timeout, abnormal reply, DAR, exception...)."""

    def __init__(self, meter: str, what: str, result: TransactionResult) -> None:
        self.meter = meter
        self.result = result
        detail = f" ({result.detail})" if result.detail else ""
        super().__init__(f"meter {meter}: {what}: {result.outcome.value}{detail}")

    @property
    def outcome(self) -> Outcome:
        return self.result.outcome


class RecordNotFound(DriverError):
    """The meter has no record for the asked slot (too old, never frozen, clock wrong)."""


class NotSupported(DriverError):
    """The protocol or the meter model does not keep this data."""


@dataclass(frozen=True)
class Reading:
    """One value with the meter's data time (aware UTC)."""

    meter: str  # archive key
    obis: str
    value: Decimal
    unit: str | None
    time: datetime
    kind: str  # "realtime" | "daily" | "monthly" | "curve"


@dataclass(frozen=True)
class MeterEvent:
    """One event record kept by the meter (times aware UTC; ``end`` None while ongoing)."""

    meter: str
    kind: str  # "power_down" | "cover_open" | ...
    sequence: int  # 1 = the most recent record
    start: datetime
    end: datetime | None
    total: int | None = None  # the meter's event counter, when it has one


@dataclass(frozen=True)
class ClockReading:
    """The meter's clock against the gateway's: ``offset`` > 0 means the meter is fast."""

    meter: str
    meter_time: datetime  # naive, as the meter shows it
    meter_utc: datetime
    gateway_utc: datetime
    offset: timedelta
    result: TransactionResult | None = None


def readings_from(
    meter: str, values: Iterable[MeterValue], when: datetime, kind: str
) -> list[Reading]:
    """Numeric values as readings (billing-period suffixes dropped: ``when`` says it)."""
    return [
        Reading(meter, base_obis(value.obis), value.value, value.unit, when, kind)
        for value in values
        if isinstance(value.value, Decimal)
    ]


class Driver:
    """Shared plumbing: the master to talk through, the meters' zone, the gateway clock."""

    protocol: str = ""

    def __init__(
        self,
        master: BusMaster,
        *,
        zone: str = DEFAULT_METER_ZONE,
        now: Callable[[], datetime] | None = None,
        priority: Priority = Priority.SCHEDULED,
    ) -> None:
        self.master = master
        self.zone = zone
        self.now = now or (lambda: datetime.now(UTC))
        self.priority = priority

    # ------------------------------------------------------------ the collection needs
    # Every driver answers these; what a protocol or meter model lacks raises NotSupported.

    def read_realtime(
        self,
        meter: Meter,
        quantities: Iterable[str] | None = None,
        priority: Priority | None = None,
    ) -> list[Reading]:
        raise NotSupported(f"{self.protocol}: no real-time reads")

    def read_daily_frozen(
        self, meter: Meter, day: date, *, reverse: bool = True, priority: Priority | None = None
    ) -> list[Reading]:
        raise NotSupported(f"{self.protocol}: no daily freezes")

    def read_monthly_frozen(
        self, meter: Meter, month: date, *, priority: Priority | None = None
    ) -> list[Reading]:
        raise NotSupported(f"{self.protocol}: no monthly freezes")

    def read_curve(
        self,
        meter: Meter,
        start: datetime,
        count: int,
        quantity: str = "1-0:16.7.0",
        priority: Priority | None = None,
    ) -> list[Reading]:
        raise NotSupported(f"{self.protocol}: no load profile")

    def read_events(
        self,
        meter: Meter,
        kinds: Sequence[str] = ("power_down", "cover_open"),
        depth: int = 10,
        known: dict[str, int] | None = None,
        priority: Priority | None = None,
    ) -> list[MeterEvent]:
        raise NotSupported(f"{self.protocol}: no event records")

    def read_clock(self, meter: Meter, priority: Priority | None = None) -> ClockReading:
        raise NotSupported(f"{self.protocol}: no readable clock")

    def sync_clock(
        self, meter: Meter, when: datetime, priority: Priority | None = None
    ) -> TransactionResult:
        raise NotSupported(f"{self.protocol}: no per-meter clock set")

    # ------------------------------------------------------------ plumbing

    def to_utc(self, local: datetime) -> datetime:
        return meter_time_to_utc(local, self.zone)

    def gateway_date(self) -> date:
        """Today as the meters' zone sees it (per the gateway's clock)."""
        return self.now().astimezone(ZoneInfo(self.zone)).date()

    def _transact(
        self, meter: Meter, what: str, transaction: Transaction, priority: Priority | None
    ) -> TransactionResult:
        result = self.master.transact(transaction, self.priority if priority is None else priority)
        if not result.ok:
            raise ReadFailed(meter.key, what, result)
        return result

    def _reply_time(self) -> datetime:
        """Realtime values carry the gateway's time of the reply (they have no other)."""
        return self.now()
