"""DL/T 645-2007 and 645-1997 meters: what to send for each collection need.

Round trips are what a 2 400-baud line is short of (about 0.27 s each, edge.md e.1), so
real-time values go in block reads (``0001FF00`` = total + every tariff in one frame) and
a daily freeze costs three frames: its freeze time and the forward and reverse blocks.

Daily freezes are addressed by *last-n* (``DI0`` = 1 is the newest record). n is computed
from the meter's own date (read once per meter per day: a meter whose clock is a day off
keeps its records by its own calendar) and then **verified** against the record's freeze
time (``05060001``+n); when the two disagree — a day with no freeze because the meter was
without supply — n is corrected and read again, so a value is never filed under the wrong
day.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Final
from zoneinfo import ZoneInfo

from edge_agent.archive import Meter
from edge_agent.bus import BusMaster, Dlt645Match, Outcome, Priority, Transaction
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
from shared_protocol import dlt645
from shared_protocol.dlt645 import Standard
from shared_protocol.errors import MalformedFrameError, ProtocolError
from shared_protocol.quantities import MeterValue
from shared_protocol.timebase import DEFAULT_METER_ZONE

__all__ = [
    "BLOCKS_1997",
    "BLOCKS_2007",
    "Dlt645Driver",
    "Dlt645v1997Driver",
    "scan_645",
    "sync_clock_broadcast",
]

V2007 = Standard.DLT645_2007
V1997 = Standard.DLT645_1997

# Real-time blocks: one frame each, the OBIS codes each can return (from the DI table).
BLOCKS_2007: Final = (0x0001FF00, 0x0002FF00, 0x0201FF00, 0x0202FF00, 0x0203FF00, 0x0206FF00)
BLOCKS_1997: Final = (0x901F, 0x902F, 0xB61F, 0xB62F, 0xB63F)
FREQUENCY_2007: Final = 0x02800002

DAILY_TIME: Final = 0x05060000  # + n: freeze time of the n-th newest daily record
DAILY_FORWARD: Final = 0x05060100  # + n: forward active block
DAILY_REVERSE: Final = 0x05060200  # + n: reverse active block
DAILY_DEPTH: Final = 62
MONTHLY_DEPTH: Final = 12
# Load-profile DIs per quantity (645-2007 0610…, [U] reply layout in the codec docs).
CURVE_DIS: Final = {
    "1-0:32.7.0": 0x06100101,
    "1-0:31.7.0": 0x06100201,
    "1-0:16.7.0": 0x06100300,
    "1-0:3.7.0": 0x06100400,
    "1-0:13.7.0": 0x06100500,
}
CURVE_STEP: Final = timedelta(minutes=15)
# Event families: counter DI, record DI base (+ n = the n-th newest record).
EVENTS_2007: Final = {
    "power_down": (0x03110000, 0x03110000),
    "cover_open": (0x03300D00, 0x03300D00),
}
_MAX_REPLY: Final = 4 + 16 + 200  # preamble + frame overhead + the largest data field
# A 200-byte frame limit and L ≤ 255 points make longer chains a corrupted flag, not data.
_MAX_FOLLOW_UPS: Final = 16


def _obis_of(di: int, standard: Standard) -> frozenset[str]:
    item = dlt645.data_item(di, standard)
    return frozenset(f.obis for f in item.fields if f.obis) if item else frozenset()


class Dlt645Driver(Driver):
    """A DL/T 645-2007 meter."""

    protocol = "dlt645-2007"
    standard = V2007
    blocks: tuple[int, ...] = BLOCKS_2007

    def __init__(
        self,
        master: BusMaster,
        *,
        zone: str = DEFAULT_METER_ZONE,
        now: Callable[[], datetime] | None = None,
        priority: Priority = Priority.SCHEDULED,
    ) -> None:
        super().__init__(master, zone=zone, now=now, priority=priority)
        # meter key → (gateway date, meter date) of the last date read
        self._meter_dates: dict[str, tuple[date, date]] = {}

    # ------------------------------------------------------------ transactions

    def read_di(
        self, meter: Meter, di: int, priority: Priority | None = None
    ) -> tuple[tuple[MeterValue, ...], TransactionResult]:
        """One read of ``di``: its decoded values and the transaction (for ``read`` CLI)."""
        request = dlt645.encode_frame(dlt645.read_request(meter.address, di, self.standard))
        transaction = Transaction(
            meter.key,
            request,
            Dlt645Match(meter.address, _read_function(self.standard), di, self.standard),
            label=f"read {dlt645.format_di(di, self.standard)}",
            reply_bytes=_MAX_REPLY,
        )
        result = self._transact(meter, f"read {di:08X}", transaction, priority)
        frame = result.reply
        assert isinstance(frame, dlt645.Frame)
        try:
            if frame.control.follow_up and self.standard is V2007:
                return self._follow_ups(meter, di, frame, priority), result
            response = dlt645.decode_read_response(frame, self.standard)
        except ProtocolError as exc:
            raise ReadFailed(meter.key, f"decode {di:08X}", _as_bad(result, str(exc))) from exc
        return response.values, result

    def _follow_ups(
        self, meter: Meter, di: int, first: dlt645.Frame, priority: Priority | None
    ) -> tuple[MeterValue, ...]:
        """A reply with D5 set continues in follow-up frames (C=12H, DI + SEQ 1, 2…);
        the parts' data are joined and decoded as one item."""
        item = dlt645.data_item(di, self.standard)
        if item is None:
            raise MalformedFrameError(f"DI {di:08X} is not in the 2007 table")
        body = bytearray(first.data[4:])
        frame = first
        seq = 0
        while frame.control.follow_up:
            seq += 1
            if seq > _MAX_FOLLOW_UPS:
                raise MalformedFrameError(f"more than {_MAX_FOLLOW_UPS} follow-up frames")
            request = dlt645.encode_frame(
                dlt645.read_follow_up_request(meter.address, di, seq, self.standard)
            )
            transaction = Transaction(
                meter.key,
                request,
                Dlt645Match(meter.address, 0x12, di, self.standard),
                label=f"follow-up {di:08X} #{seq}",
                reply_bytes=_MAX_REPLY,
            )
            result = self._transact(meter, f"follow-up {di:08X}", transaction, priority)
            assert isinstance(result.reply, dlt645.Frame)
            frame = result.reply
            body += frame.data[4:-1]  # DI … SEQ
        return tuple(item.decode(bytes(body)))

    def _values(self, meter: Meter, di: int, priority: Priority | None) -> tuple[MeterValue, ...]:
        return self.read_di(meter, di, priority)[0]

    # ------------------------------------------------------------ real time

    def read_realtime(
        self,
        meter: Meter,
        quantities: Iterable[str] | None = None,
        priority: Priority | None = None,
    ) -> list[Reading]:
        """Current values, by block reads; ``quantities`` (OBIS codes) limits the blocks."""
        wanted = set(quantities) if quantities is not None else None
        readings: list[Reading] = []
        dis = list(self.blocks)
        if self.standard is V2007:
            dis.append(FREQUENCY_2007)
        for di in dis:
            if wanted is not None and not (_obis_of(di, self.standard) & wanted):
                continue
            values = self._values(meter, di, priority)
            got = readings_from(meter.key, values, self._reply_time(), "realtime")
            readings += [r for r in got if wanted is None or r.obis in wanted]
        return readings

    # ------------------------------------------------------------ freezes

    def meter_date(self, meter: Meter, priority: Priority | None = None) -> date:
        """The meter's own date (04000101), read once per meter per gateway day."""
        today = self.gateway_date()
        cached = self._meter_dates.get(meter.key)
        if cached is not None and cached[0] == today:
            return cached[1]
        values = self._values(meter, 0x04000101, priority)
        shown = values[0].value if values else None
        if not isinstance(shown, date):
            raise RecordNotFound(f"meter {meter.key}: 04000101 did not give a date")
        day = shown.date() if isinstance(shown, datetime) else shown
        self._meter_dates[meter.key] = (today, day)
        return day

    def read_daily_frozen(
        self, meter: Meter, day: date, *, reverse: bool = True, priority: Priority | None = None
    ) -> list[Reading]:
        """The record frozen at 00:00 of ``day`` (meter time; it closes ``day`` − 1)."""
        n = (self.meter_date(meter, priority) - day).days + 1
        freeze_time: datetime | None = None
        for _ in range(3):
            if not 1 <= n <= DAILY_DEPTH:
                raise RecordNotFound(f"meter {meter.key}: no daily record for {day} (n={n})")
            stamp = self._freeze_time(meter, DAILY_TIME + n, priority)
            if stamp is None:
                raise RecordNotFound(f"meter {meter.key}: daily record {n} is empty")
            if stamp.date() == day:
                freeze_time = stamp
                break
            n += (stamp.date() - day).days  # newer than asked → the record is further back
        if freeze_time is None:
            raise RecordNotFound(f"meter {meter.key}: no daily record frozen on {day}")
        when = self.to_utc(freeze_time)
        dis = [DAILY_FORWARD + n] + ([DAILY_REVERSE + n] if reverse else [])
        readings: list[Reading] = []
        for di in dis:
            readings += readings_from(meter.key, self._values(meter, di, priority), when, "daily")
        return readings

    def _freeze_time(self, meter: Meter, di: int, priority: Priority | None) -> datetime | None:
        try:
            values = self._values(meter, di, priority)
        except ReadFailed as exc:
            if exc.outcome is Outcome.ABNORMAL:
                return None  # "no requested data": the meter has fewer records
            raise
        stamp = values[0].value if values else None
        return stamp if isinstance(stamp, datetime) else None

    def read_monthly_frozen(
        self, meter: Meter, month: date, *, priority: Priority | None = None
    ) -> list[Reading]:
        """The settlement-day values (``0001FF01``… = last settlement −n) for ``month``.

        645-2007 keeps no freeze time with these; the data time is the settlement instant
        computed from the meter's settlement day (04000B01, DDhh) in ``month``.
        """
        settle_day, settle_hour = self._settlement(meter, priority)
        today = self.meter_date(meter, priority)
        latest = date(today.year, today.month, 1)
        if today.day < settle_day:
            latest = _add_months(latest, -1)
        n = _months_between(date(month.year, month.month, 1), latest) + 1
        if not 1 <= n <= MONTHLY_DEPTH:
            raise RecordNotFound(f"meter {meter.key}: no settlement record for {month:%Y-%m}")
        when = self.to_utc(datetime(month.year, month.month, settle_day, settle_hour))
        readings: list[Reading] = []
        for base in (0x0001FF00, 0x0002FF00):
            values = self._values(meter, base + n, priority)
            readings += readings_from(meter.key, values, when, "monthly")
        return readings

    def _settlement(self, meter: Meter, priority: Priority | None) -> tuple[int, int]:
        try:
            values = self._values(meter, 0x04000B01, priority)
            text = str(values[0].value) if values else "0100"
        except ReadFailed as exc:
            if exc.outcome is not Outcome.ABNORMAL:
                raise
            text = "0100"  # the meter does not say: the 1st at 00:00, the common default
        return int(text[:2]) or 1, int(text[2:4])

    # ------------------------------------------------------------ curves

    def read_curve(
        self,
        meter: Meter,
        start: datetime,
        count: int,
        quantity: str = "1-0:16.7.0",
        priority: Priority | None = None,
    ) -> list[Reading]:
        """``count`` 15-minute load-profile points from ``start`` (aware UTC; rounded up
        to the next quarter hour, where the meter keeps its points) [U]."""
        di = CURVE_DIS.get(quantity)
        if di is None:
            raise NotSupported(f"no 645 load-profile DI for {quantity}")
        local = _next_mark(start.astimezone(ZoneInfo(self.zone)).replace(tzinfo=None))
        request = dlt645.encode_frame(
            dlt645.read_load_profile_request(meter.address, di, count, local)
        )
        transaction = Transaction(
            meter.key,
            request,
            Dlt645Match(meter.address, 0x11, di),
            label=f"curve {di:08X}",
            reply_bytes=_MAX_REPLY,
        )
        result = self._transact(meter, f"curve {di:08X}", transaction, priority)
        frame = result.reply
        assert isinstance(frame, dlt645.Frame)
        try:
            if frame.control.follow_up:
                decoded = self._follow_ups(meter, di, frame, priority)
            else:
                decoded = dlt645.decode_read_response(frame).values
        except ProtocolError as exc:
            raise ReadFailed(meter.key, f"decode {di:08X}", _as_bad(result, str(exc))) from exc
        values = decoded[:count]
        return [
            Reading(
                meter.key, v.obis, v.value, v.unit, self.to_utc(local + i * CURVE_STEP), "curve"
            )
            for i, v in enumerate(values)
            if isinstance(v.value, Decimal)
        ]

    # ------------------------------------------------------------ events

    def read_events(
        self,
        meter: Meter,
        kinds: Sequence[str] = ("power_down", "cover_open"),
        depth: int = 10,
        known: dict[str, int] | None = None,
        priority: Priority | None = None,
    ) -> list[MeterEvent]:
        """The newest event records of each kind (at most ``depth``; only those beyond
        ``known[kind]``, the counter value already collected)."""
        events: list[MeterEvent] = []
        for kind in kinds:
            if kind not in EVENTS_2007:
                raise NotSupported(f"no 645 event family {kind!r}")
            counter_di, record_base = EVENTS_2007[kind]
            counter = self._values(meter, counter_di, priority)
            total = (
                int(counter[0].value) if counter and isinstance(counter[0].value, Decimal) else 0
            )
            new = total - (known or {}).get(kind, 0)
            for n in range(1, min(new, depth, 10) + 1):
                try:
                    start, end = self._event_times(meter, record_base + n, priority)
                except ReadFailed as exc:
                    if exc.outcome is Outcome.ABNORMAL:
                        break
                    raise
                if start is None:
                    continue
                events.append(
                    MeterEvent(
                        meter.key,
                        kind,
                        n,
                        self.to_utc(start),
                        None if end is None else self.to_utc(end),
                        total,
                    )
                )
        return events

    def _event_times(
        self, meter: Meter, di: int, priority: Priority | None
    ) -> tuple[datetime | None, datetime | None]:
        """Start and end (ss mm hh DD MM YY each) of one event record.

        A meter sends an all-zero end time while the event lasts, which the codec refuses
        as a date; we read the two times ourselves so an ongoing event is not lost.
        """
        request = dlt645.encode_frame(dlt645.read_request(meter.address, di))
        transaction = Transaction(
            meter.key,
            request,
            Dlt645Match(meter.address, 0x11, di),
            label=f"read {di:08X}",
            reply_bytes=_MAX_REPLY,
        )
        result = self._transact(meter, f"read {di:08X}", transaction, priority)
        assert isinstance(result.reply, dlt645.Frame)
        body = result.reply.data[4:]
        times: list[datetime | None] = []
        for offset in (0, 6):
            raw = body[offset : offset + 6]
            if len(raw) < 6 or not any(raw):
                times.append(None)
                continue
            try:
                value = dlt645.YYMMDDHHMMSS.decode(raw)
            except ProtocolError:
                value = None
            times.append(value if isinstance(value, datetime) else None)
        return times[0], times[1]

    # ------------------------------------------------------------ clock

    def read_clock(self, meter: Meter, priority: Priority | None = None) -> ClockReading:
        """The meter's date (04000101) and time (04000102) against the gateway clock."""
        day_values = self._values(meter, 0x04000101, priority)
        time_values, result = self.read_di(meter, 0x04000102, priority)
        gateway = self.now() - timedelta(seconds=result.duration_s / 2)
        day = day_values[0].value if day_values else None
        clock = time_values[0].value if time_values else None
        if not isinstance(day, date) or not isinstance(clock, time):
            raise RecordNotFound(f"meter {meter.key}: clock items did not decode")
        shown = datetime.combine(day.date() if isinstance(day, datetime) else day, clock)
        meter_utc = self.to_utc(shown)
        return ClockReading(meter.key, shown, meter_utc, gateway, meter_utc - gateway, result)

    def sync_clock(
        self, meter: Meter, when: datetime, priority: Priority | None = None
    ) -> TransactionResult:
        raise NotSupported(
            "645 meters are set by broadcast (sync_clock_broadcast); a per-meter write "
            "needs the level-04 password"
        )


class Dlt645v1997Driver(Dlt645Driver):
    """A DL/T 645-1997 meter: 2-byte DIs, no daily freezes, last-month blocks 941F/981F."""

    protocol = "dlt645-1997"
    standard = V1997
    blocks = BLOCKS_1997

    def read_daily_frozen(
        self, meter: Meter, day: date, *, reverse: bool = True, priority: Priority | None = None
    ) -> list[Reading]:
        raise NotSupported("DL/T 645-1997 meters keep no daily freezes")

    def read_curve(
        self,
        meter: Meter,
        start: datetime,
        count: int,
        quantity: str = "1-0:16.7.0",
        priority: Priority | None = None,
    ) -> list[Reading]:
        raise NotSupported("DL/T 645-1997 meters keep no load profile")

    def read_events(
        self,
        meter: Meter,
        kinds: Sequence[str] = ("power_down", "cover_open"),
        depth: int = 10,
        known: dict[str, int] | None = None,
        priority: Priority | None = None,
    ) -> list[MeterEvent]:
        raise NotSupported("DL/T 645-1997 event records are vendor-specific")

    def meter_date(self, meter: Meter, priority: Priority | None = None) -> date:
        values = self._values(meter, 0xC010, priority)
        shown = values[0].value if values else None
        if not isinstance(shown, date):
            raise RecordNotFound(f"meter {meter.key}: C010 did not give a date")
        return shown.date() if isinstance(shown, datetime) else shown

    def read_monthly_frozen(
        self, meter: Meter, month: date, *, priority: Priority | None = None
    ) -> list[Reading]:
        """The values frozen on the 1st of ``month`` at 00:00: 941F for this month's
        (the last month's closing values), 981F for the month before."""
        today = self.meter_date(meter, priority)
        n = _months_between(date(month.year, month.month, 1), date(today.year, today.month, 1))
        dis = {1: 0x941F, 2: 0x981F}
        if n + 1 not in dis:
            raise RecordNotFound(f"meter {meter.key}: 1997 keeps only the last two months")
        when = self.to_utc(datetime(month.year, month.month, 1))
        return readings_from(meter.key, self._values(meter, dis[n + 1], priority), when, "monthly")

    def read_clock(self, meter: Meter, priority: Priority | None = None) -> ClockReading:
        day = self.meter_date(meter, priority)
        time_values, result = self.read_di(meter, 0xC011, priority)
        gateway = self.now() - timedelta(seconds=result.duration_s / 2)
        clock = time_values[0].value if time_values else None
        if not isinstance(clock, time):
            raise RecordNotFound(f"meter {meter.key}: C011 did not give a time")
        shown = datetime.combine(day, clock)
        meter_utc = self.to_utc(shown)
        return ClockReading(meter.key, shown, meter_utc, gateway, meter_utc - gateway, result)


# ---------------------------------------------------------------- bus-wide helpers


def sync_clock_broadcast(
    master: BusMaster, when: datetime, zone: str = "Asia/Shanghai"
) -> TransactionResult:
    """Broadcast time sync (C=08 to 99…99): every 645 meter on the line sets ``when``
    (aware UTC, sent as the meters' local time). Nothing is answered."""
    local = when.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    request = dlt645.encode_frame(dlt645.time_sync_request(local))
    transaction = Transaction("", request, None, label="broadcast time sync")
    return master.transact(transaction, Priority.ON_DEMAND)


def read_address(master: BusMaster) -> str | None:
    """The address of the only meter on a line (C=13 to AA…AA); None if none or garbled."""
    request = dlt645.encode_frame(dlt645.read_address_request())
    matcher = Dlt645Match(dlt645.WILDCARD_ADDRESS, 0x13)
    result = master.transact(Transaction("", request, matcher, label="read address"))
    if not result.ok or not isinstance(result.reply, dlt645.Frame):
        return None
    try:
        return dlt645.reported_address(result.reply)
    except ProtocolError:
        return result.reply.address


def scan_645(master: BusMaster, *, max_probes: int = 2000) -> list[str]:
    """Find every 645-2007 meter on a line by wildcard address search.

    As concentrators do: read the address item (04000401) from ``AA…AA``; a clean reply
    is one meter, silence is none, and a garbled one (several meters answering at once)
    splits the search on the next digit, fixing the address from its last digit up
    (``AAAAAAAAAAA7``, then ``AAAAAAAAAA17``…). Each meter is confirmed at its own address.
    """
    found: list[str] = []
    probes = 0

    def probe(suffix: str) -> None:
        nonlocal probes
        if probes >= max_probes:
            return
        probes += 1
        pattern = "A" * (12 - len(suffix)) + suffix
        request = dlt645.encode_frame(dlt645.read_request(pattern, 0x04000401))
        matcher = Dlt645Match(pattern, 0x11, 0x04000401)
        transaction = Transaction("", request, matcher, label=f"scan {pattern}", retries=0)
        result = master.transact(transaction)
        if result.ok and isinstance(result.reply, dlt645.Frame):
            if result.noise_bytes == 0 and result.wrong_address == 0:
                found.append(result.reply.address)
                return
        elif result.outcome is Outcome.TIMEOUT and not result.noise_bytes:
            return  # nobody under this prefix
        if len(suffix) == 12:
            return
        for digit in "0123456789":
            probe(digit + suffix)

    probe("")
    return sorted(set(found))


# ---------------------------------------------------------------- dates


def _read_function(standard: Standard) -> int:
    return 0x11 if standard is V2007 else 0x01


def _as_bad(result: TransactionResult, detail: str) -> TransactionResult:
    return replace(result, outcome=Outcome.BAD_FRAME, detail=detail)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _months_between(earlier: date, later: date) -> int:
    return (later.year - earlier.year) * 12 + later.month - earlier.month


def _next_mark(local: datetime) -> datetime:
    """``local`` rounded up to the quarter hour."""
    floor = local.replace(minute=local.minute - local.minute % 15, second=0, microsecond=0)
    return floor if floor == local else floor + CURVE_STEP
