"""DL/T 698.45 meters: GET-NormalList for real-time values, GET-Record for freezes.

A whole real-time set is one GetRequestNormalList (energies, voltage, current, power,
power factor, frequency in one frame). A daily freeze is one GetRequestRecord on 50040200
with RSD selector 1 ("the row whose freeze time 20210200 equals day 00:00") and columns
freeze time + forward + reverse energy: the meter finds the row by its own freeze time, so
the value is filed under the day the meter froze it, whatever its clock says now.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from edge_agent.archive import Meter
from edge_agent.bus import BusMaster, Dlt698Match, Priority, Transaction
from edge_agent.bus.master import TransactionResult
from edge_agent.drivers.base import (
    ClockReading,
    Driver,
    MeterEvent,
    NotSupported,
    ReadFailed,
    Reading,
    RecordNotFound,
    readings_from,
)
from shared_protocol import dlt698
from shared_protocol.dlt698 import OAD, RCSD, RSD, Data, DataType, DateTimeS
from shared_protocol.timebase import DEFAULT_METER_ZONE

__all__ = ["REALTIME_OADS", "Dlt698Driver", "read_address_698"]

REALTIME_OADS: Final = (
    OAD(0x0010, 2),  # forward active energy, total + tariffs
    OAD(0x0020, 2),  # reverse active energy
    OAD(0x2000, 2),  # voltage A, B, C
    OAD(0x2001, 2),  # current A, B, C
    OAD(0x2004, 2),  # active power total, A, B, C
    OAD(0x200A, 2),  # power factor
    OAD(0x200F, 2),  # frequency
)
FREEZE_TIME: Final = OAD(0x2021, 2)
CLOCK: Final = OAD(0x4000, 2)
ADDRESS: Final = OAD(0x4001, 2)
DAILY: Final = OAD(0x5004, 2)
MONTHLY: Final = OAD(0x5006, 2)
MINUTE: Final = OAD(0x5002, 2)
FREEZE_COLUMNS: Final = (FREEZE_TIME, OAD(0x0010, 2), OAD(0x0020, 2))
# Event record tables (attribute 2) and their columns: sequence, start, end.
EVENT_TABLES: Final = {"power_down": OAD(0x3011, 2), "cover_open": OAD(0x301B, 2)}
EVENT_COLUMNS: Final = (OAD(0x2022, 2), OAD(0x201E, 2), OAD(0x2020, 2))
CURVE_STEP: Final = timedelta(minutes=15)
# 5002 columns per curve quantity (the attribute's whole array; we keep the one asked for).
CURVE_COLUMNS: Final = {
    "1-0:1.8.0": OAD(0x0010, 2),
    "1-0:32.7.0": OAD(0x2000, 2),
    "1-0:31.7.0": OAD(0x2001, 2),
    "1-0:16.7.0": OAD(0x2004, 2),
    "1-0:13.7.0": OAD(0x200A, 2),
}
_MAX_REPLY: Final = 512


def _even(digits: str) -> str:
    return digits if len(digits) % 2 == 0 else "0" + digits


class Dlt698Driver(Driver):
    """A DL/T 698.45 meter (logical address 0, client address 0x10)."""

    protocol = "dlt698.45"
    client_address = 0x10

    def __init__(
        self,
        master: BusMaster,
        *,
        zone: str = DEFAULT_METER_ZONE,
        now: Callable[[], datetime] | None = None,
        priority: Priority = Priority.SCHEDULED,
    ) -> None:
        super().__init__(master, zone=zone, now=now, priority=priority)
        self._piids = itertools.cycle(range(64))

    # ------------------------------------------------------------ transactions

    def request(
        self,
        meter: Meter,
        make: Callable[[int], dlt698.Apdu],
        what: str,
        priority: Priority | None = None,
        *,
        address: dlt698.ServerAddress | None = None,
    ) -> TransactionResult:
        """Send the APDU ``make(piid)`` builds; the result's reply is the decoded APDU."""
        piid = next(self._piids)
        apdu = make(piid)
        server = address or dlt698.ServerAddress.single(_even(meter.address))
        frame = dlt698.Frame(
            dlt698.Control.client_request(), server, self.client_address, dlt698.encode_apdu(apdu)
        )
        pattern = server.digits if address is None else "A" * len(server.digits)
        transaction = Transaction(
            meter.key,
            dlt698.encode_frame(frame),
            Dlt698Match(pattern, piid),
            label=what,
            reply_bytes=_MAX_REPLY,
        )
        return self._transact(meter, what, transaction, priority)

    def _record(
        self, meter: Meter, table: OAD, rsd: RSD, columns: Iterable[OAD], priority: Priority | None
    ) -> dlt698.RecordResult:
        rcsd = RCSD.of(*columns)
        result = self.request(
            meter,
            lambda piid: dlt698.GetRequestRecord(piid, table, rsd, rcsd),
            f"record {table}",
            priority,
        )
        reply = result.reply
        if not isinstance(reply, dlt698.GetResponseRecord):
            raise ReadFailed(meter.key, f"record {table}: unexpected reply", result)
        return reply.result

    # ------------------------------------------------------------ real time

    def read_realtime(
        self,
        meter: Meter,
        quantities: Iterable[str] | None = None,
        priority: Priority | None = None,
    ) -> list[Reading]:
        """Every real-time value in one GetRequestNormalList."""
        wanted = set(quantities) if quantities is not None else None
        result = self.request(
            meter,
            lambda piid: dlt698.GetRequestNormalList(piid, REALTIME_OADS),
            "realtime list",
            priority,
        )
        assert isinstance(result.reply, dlt698.Apdu)
        values = dlt698.apdu_values(result.reply)
        readings = readings_from(meter.key, values, self._reply_time(), "realtime")
        return [r for r in readings if wanted is None or r.obis in wanted]

    # ------------------------------------------------------------ freezes

    def _frozen_at(
        self,
        meter: Meter,
        table: OAD,
        local: datetime,
        kind: str,
        priority: Priority | None,
        columns: tuple[OAD, ...] = FREEZE_COLUMNS,
    ) -> list[Reading]:
        stamp = Data(DataType.DATE_TIME_S, DateTimeS.from_datetime(local))
        record = self._record(meter, table, RSD.equal(FREEZE_TIME, stamp), columns, priority)
        readings: list[Reading] = []
        for row in record.rows or ():
            cells = dict(zip((c.column for c in record.rcsd.columns), row, strict=True))
            frozen = cells.get(FREEZE_TIME)
            if frozen is None or not isinstance(frozen.value, DateTimeS):
                continue
            when_local = frozen.value.to_datetime()
            if when_local != local:
                continue  # never file a row under a time it does not carry
            when = self.to_utc(when_local)
            for column, cell in cells.items():
                if isinstance(column, OAD) and column != FREEZE_TIME:
                    readings += readings_from(
                        meter.key, dlt698.meter_values(column, cell), when, kind
                    )
        if not readings:
            raise RecordNotFound(f"meter {meter.key}: no {table} record frozen at {local}")
        return readings

    def read_daily_frozen(
        self, meter: Meter, day: date, *, reverse: bool = True, priority: Priority | None = None
    ) -> list[Reading]:
        """The 5004 record frozen at 00:00 of ``day`` (selector 1 on its freeze time)."""
        readings = self._frozen_at(
            meter, DAILY, datetime(day.year, day.month, day.day), "daily", priority
        )
        return [r for r in readings if reverse or not r.obis.startswith("1-0:2.8.")]

    def read_monthly_frozen(
        self, meter: Meter, month: date, *, priority: Priority | None = None
    ) -> list[Reading]:
        """The 5006 record frozen on the 1st of ``month`` at 00:00."""
        return self._frozen_at(
            meter, MONTHLY, datetime(month.year, month.month, 1), "monthly", priority
        )

    def read_curve(
        self,
        meter: Meter,
        start: datetime,
        count: int,
        quantity: str = "1-0:16.7.0",
        priority: Priority | None = None,
    ) -> list[Reading]:
        """``count`` 15-minute 5002 points from ``start`` (one selector-1 read per point)."""
        column = CURVE_COLUMNS.get(quantity)
        if column is None:
            raise NotSupported(f"no 698 curve column for {quantity}")
        columns = (FREEZE_TIME, column)
        local = start.astimezone(ZoneInfo(self.zone)).replace(tzinfo=None)
        floor = local.replace(minute=local.minute - local.minute % 15, second=0, microsecond=0)
        first = floor if floor == local else floor + CURVE_STEP
        readings: list[Reading] = []
        for i in range(count):
            try:
                at = first + i * CURVE_STEP
                point = self._frozen_at(meter, MINUTE, at, "curve", priority, columns)
            except RecordNotFound:
                continue
            readings += [r for r in point if r.obis == quantity]
        return readings

    # ------------------------------------------------------------ events

    def read_events(
        self,
        meter: Meter,
        kinds: Sequence[str] = ("power_down", "cover_open"),
        depth: int = 10,
        known: dict[str, int] | None = None,
        priority: Priority | None = None,
    ) -> list[MeterEvent]:
        """The newest records of 3011 (power down) / 301B (cover open), selector 9.

        ``known`` is accepted for the common signature; 698 records carry no counter we
        read here, so callers deduplicate by start time.
        """
        events: list[MeterEvent] = []
        for kind in kinds:
            table = EVENT_TABLES.get(kind)
            if table is None:
                raise NotSupported(f"no 698 event table for {kind!r}")
            for n in range(1, depth + 1):
                record = self._record(meter, table, RSD.last(n), EVENT_COLUMNS, priority)
                if not record.rows:
                    break
                row = record.rows[0]
                times = [c.value.to_datetime() for c in row if isinstance(c.value, DateTimeS)]
                if not times:
                    continue
                end = self.to_utc(times[1]) if len(times) > 1 else None
                events.append(MeterEvent(meter.key, kind, n, self.to_utc(times[0]), end))
        return events

    # ------------------------------------------------------------ clock

    def read_clock(self, meter: Meter, priority: Priority | None = None) -> ClockReading:
        result = self.request(
            meter, lambda piid: dlt698.GetRequestNormal(piid, CLOCK), "read clock", priority
        )
        gateway = self.now() - timedelta(seconds=result.duration_s / 2)
        reply = result.reply
        data = reply.result.data if isinstance(reply, dlt698.GetResponseNormal) else None
        if data is None or not isinstance(data.value, DateTimeS):
            raise RecordNotFound(f"meter {meter.key}: 40000200 did not give a date_time_s")
        shown = data.value.to_datetime()
        meter_utc = self.to_utc(shown)
        return ClockReading(meter.key, shown, meter_utc, gateway, meter_utc - gateway, result)

    def sync_clock(
        self, meter: Meter, when: datetime, priority: Priority | None = None
    ) -> TransactionResult:
        """SET 40000200 to ``when`` (aware UTC, sent as the meter's local time)."""
        local = when.astimezone(ZoneInfo(self.zone)).replace(tzinfo=None, microsecond=0)
        data = Data(DataType.DATE_TIME_S, DateTimeS.from_datetime(local))
        return self.request(
            meter,
            lambda piid: dlt698.SetRequestNormal(piid, CLOCK, data),
            "set clock",
            Priority.ON_DEMAND if priority is None else priority,
        )


def read_address_698(master: BusMaster) -> str | None:
    """The address of the only 698 meter on a line (wildcard GET 40010200)."""
    driver = Dlt698Driver(master, priority=Priority.ON_DEMAND)
    probe = Meter(address="", protocol="dlt698.45", bus=master.name)  # no health kept for ""
    try:
        result = driver.request(
            probe,
            lambda piid: dlt698.GetRequestNormal(piid, ADDRESS),
            "read address",
            address=dlt698.ServerAddress.wildcard(),
        )
    except ReadFailed:
        return None
    reply = result.reply
    if isinstance(reply, dlt698.GetResponseNormal) and isinstance(reply.result.data, Data):
        value = reply.result.data.value
        if isinstance(value, bytes):
            return value.hex().upper()
    return None
