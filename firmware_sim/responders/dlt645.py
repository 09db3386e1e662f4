"""The DL/T 645-2007 and 645-1997 personalities: a meter answering on the responder side.

Reads are answered from a table of *providers*: a DI is split into its bytes
(DI3 DI2 DI1 DI0) and each family (energy, instantaneous, parameters, freezes, curves,
events) computes the values the codec's :data:`~shared_protocol.dlt645.DATA_ITEMS` entry
encodes. A DI the table has but the model cannot answer gets the "no requested data"
abnormal reply, like a meter that lacks the option.

Addressing, as meters do it: a frame for our address is answered; an address with A
nibbles is a wildcard that matches per nibble (``AAAAAAAA1234`` reaches meter
``000000001234``); 99…99 is broadcast — time sync and freeze act on it, nothing is answered
(a 1997 meter on a point-to-point port also answers reads sent to 99…99, which field masters
rely on: vectors 645-072 … 645-099).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import ROUND_DOWN, Decimal

from firmware_sim.clock import SimClock
from firmware_sim.meter import (
    EventKind,
    EventRecord,
    FreezeRecord,
    Meter,
    RelayResult,
    Snapshot,
)
from firmware_sim.responders.base import Responder
from shared_protocol.dlt645 import (
    BROADCAST_ADDRESS,
    MAX_DATA_LENGTH,
    YYMMDDHHMMSS,
    Bcd,
    DataItem,
    Frame,
    Password,
    RemoteCommand,
    Standard,
    abnormal_response,
    ack_response,
    data_item,
    decode_frame,
    decode_read_request,
    encode_frame,
    read_address_response,
    read_follow_up_response,
    read_response,
)
from shared_protocol.errors import ProtocolError
from shared_protocol.quantities import ScalarValue

__all__ = ["Dlt645Responder", "address_matches"]

V2007 = Standard.DLT645_2007
V1997 = Standard.DLT645_1997

OTHER_ERROR = 0x01
NO_DATA = 0x02
PASSWORD_ERROR = 0x04
REPLY_PREAMBLE = 2  # meters send 0-4 FE; two is common

Values = list[ScalarValue]


def address_matches(request_address: str, meter_address: str) -> bool:
    """Per-nibble match: an A nibble in the request matches any digit of ours."""
    return all(r in ("A", m) for r, m in zip(request_address, meter_address, strict=True))


def _fit(fmt: object, value: Decimal) -> Decimal:
    """Truncate to the format's decimals and roll over like a register display does."""
    if not isinstance(fmt, Bcd):
        return value
    quantum = Decimal(1).scaleb(-fmt.decimals)
    limit = Decimal(10) ** (2 * fmt.size - fmt.decimals)
    if fmt.signed:
        limit = Decimal(8) * Decimal(10) ** (2 * fmt.size - fmt.decimals - 1)
    value = value.quantize(quantum, ROUND_DOWN)
    if abs(value) >= limit:
        value = value.copy_sign(Decimal(1)) % limit * (1 if value >= 0 else -1)
    return value.quantize(quantum)


class Dlt645Responder(Responder):
    """A DL/T 645 meter (``standard`` 2007 or 1997) speaking for ``meter``.

    ``max_data``: the longest data field the meter sends in one frame; longer replies go
    out in follow-up frames (D5 set, C=12H with SEQ). 200 is the standard's limit; some
    meters have smaller buffers.
    """

    def __init__(
        self,
        meter: Meter,
        clock: SimClock | None = None,
        *,
        standard: Standard = V2007,
        sync: Callable[[int], None] | None = None,
        lock: threading.RLock | None = None,
        max_data: int = MAX_DATA_LENGTH,
    ) -> None:
        super().__init__(meter, clock, sync=sync, lock=lock)
        self.standard = standard
        self.protocol = standard.protocol
        self.max_data = max_data
        self._pending: dict[int, list[bytes]] = {}  # DI → parts not yet sent

    # ------------------------------------------------------------ Device

    def _respond(self, request: bytes) -> bytes | None:
        try:
            frame = decode_frame(request)
        except ProtocolError:
            return None  # a meter ignores what it cannot frame
        if frame.control.response:
            return None
        broadcast = frame.address == BROADCAST_ADDRESS
        if (
            not broadcast
            and not address_matches(frame.address, self.meter.address)
            and not self._may_have_changed()
        ):
            return None
        self._bring_up_to_date()
        meter = self.meter
        if not meter.answering:
            return None
        if broadcast:
            self._broadcast(frame)
            if not (self.standard is V1997 and frame.control.function in (0x01, 0x02)):
                return None
        elif not address_matches(frame.address, meter.address):
            return None
        try:
            reply = self._dispatch(frame)
        except ProtocolError:
            reply = abnormal_response(meter.address, frame.control.function, OTHER_ERROR)
        return None if reply is None else encode_frame(reply, REPLY_PREAMBLE)

    # ------------------------------------------------------------ dispatch

    def _broadcast(self, frame: Frame) -> None:
        function = frame.control.function
        if function == 0x08 and len(frame.data) == 6:
            moment = YYMMDDHHMMSS.decode(frame.data)
            if isinstance(moment, datetime):
                self.meter.set_clock(moment)
        elif function == 0x16 and self.standard is V2007:
            self.meter.freeze_now()

    def _dispatch(self, frame: Frame) -> Frame | None:
        function = frame.control.function
        address = self.meter.address
        if self.standard is V1997:
            handlers_1997: dict[int, Callable[[Frame], Frame | None]] = {
                0x01: self._read,
                0x02: self._read,
                0x04: self._write,
                0x08: lambda f: None,
            }
            handler = handlers_1997.get(function)
        else:
            handlers: dict[int, Callable[[Frame], Frame | None]] = {
                0x11: self._read,
                0x12: self._follow_up,
                0x13: self._read_address,
                0x14: self._write,
                0x16: self._freeze,
                0x1A: self._meter_clear,
                0x1C: self._remote_control,
                0x08: lambda f: None,
            }
            handler = handlers.get(function)
        if handler is None:
            return abnormal_response(address, function, OTHER_ERROR)
        return handler(frame)

    def _read_address(self, frame: Frame) -> Frame | None:
        if "A" not in frame.address:
            return None  # 13H is only sent to AA…AA (one meter on the line)
        return read_address_response(self.meter.address)

    def _read(self, frame: Frame) -> Frame:
        request = decode_read_request(frame, self.standard)
        address = self.meter.address
        function = frame.control.function
        item = data_item(request.di, self.standard)
        if item is None:
            return abnormal_response(address, function, NO_DATA)
        if self.standard is V2007 and request.di & 0xFFFFFF00 == 0x04000C00:
            return abnormal_response(address, function, PASSWORD_ERROR)  # never disclosed
        if request.di >> 16 == 0x0610:
            values = self._curve(request.di, item, request.count or 1, request.start)
        else:
            provider = _PROVIDERS_1997 if self.standard is V1997 else _PROVIDERS_2007
            values = provider(self.meter, request.di, item)
        if not values:
            return abnormal_response(address, function, NO_DATA)
        data = _encode(item, values, request.di, self.meter)
        if len(data) + 4 <= self.max_data or self.standard is V1997:
            return read_response(address, request.di, data, standard=self.standard)
        room = self.max_data - 5  # DI (4) + SEQ (1) in follow-ups
        parts = [data[i : i + room] for i in range(0, len(data), room)]
        self._pending[request.di] = parts[1:]
        return read_response(address, request.di, parts[0], more=True)

    def _follow_up(self, frame: Frame) -> Frame:
        request = decode_read_request(frame, self.standard)
        parts = self._pending.get(request.di)
        if not parts:
            return abnormal_response(self.meter.address, 0x12, NO_DATA)
        part = parts.pop(0)
        seq = request.seq or 0
        return read_follow_up_response(self.meter.address, request.di, part, seq, more=bool(parts))

    def _curve(self, di: int, item: DataItem, count: int, start: datetime | None) -> Values:
        points = list(self.meter.curve)
        # by start time: the points from then on; by count alone: the latest ``count``
        points = [p for p in points if p.time >= start] if start is not None else points[-count:]
        points = points[: min(count, len(item.fields))]
        kind = di & 0xFFFF
        out: Values = []
        for point in points:
            if kind in (0x0101, 0x0102, 0x0103):
                if kind != 0x0101:
                    return []
                out.append(point.voltage)
            elif kind == 0x0201:
                out.append(point.current)
            elif kind in (0x0300, 0x0301):
                out.append(Decimal(point.active_w) / 1000)
            elif kind == 0x0400:
                out.append(Decimal(point.reactive_var) / 1000)
            elif kind == 0x0500:
                out.append(point.power_factor)
            else:
                return []
        return out

    def _password_ok(self, raw: bytes) -> bool:
        password = Password.from_bytes(raw)
        return self.meter.check_password(password.level, password.digits)

    def _write(self, frame: Frame) -> Frame:
        address = self.meter.address
        function = frame.control.function
        di_size = 4 if self.standard is V2007 else 2
        head = di_size + 4 + (4 if self.standard is V2007 else 0)
        if len(frame.data) < head:
            return abnormal_response(address, function, OTHER_ERROR)
        di = int.from_bytes(frame.data[:di_size], "little")
        if not self._password_ok(frame.data[di_size : di_size + 4]):
            return abnormal_response(address, function, PASSWORD_ERROR)
        item = data_item(di, self.standard)
        if item is None:
            return abnormal_response(address, function, OTHER_ERROR)
        try:
            values = item.decode_fields(frame.data[head:])
        except ProtocolError:
            return abnormal_response(address, function, OTHER_ERROR)
        if not _apply_write(self.meter, di, [v for _, v in values]):
            return abnormal_response(address, function, OTHER_ERROR)
        self.meter.record_event(EventKind.PROGRAMMING, detail=f"DI {di:08X}")
        return ack_response(address, function)

    def _freeze(self, frame: Frame) -> Frame:
        self.meter.freeze_now()
        return ack_response(self.meter.address, 0x16)

    def _meter_clear(self, frame: Frame) -> Frame:
        address = self.meter.address
        if len(frame.data) < 8 or not self._password_ok(frame.data[:4]):
            return abnormal_response(address, 0x1A, PASSWORD_ERROR)
        self.meter.clear()
        return ack_response(address, 0x1A)

    def _remote_control(self, frame: Frame) -> Frame:
        """1C: only the level-02 plaintext form, and only when the meter allows it.

        The 98H ciphertext form needs an ESAM session (C=03H) we do not simulate for 645,
        so it is refused as unauthorised, as a meter without a session would.
        """
        meter = self.meter
        address = meter.address
        data = frame.data
        if len(data) < 16:
            return abnormal_response(address, 0x1C, OTHER_ERROR)
        password = Password.from_bytes(data[:4])
        if (
            password.level != 0x02
            or not meter.allow_plaintext_remote_control
            or not meter.check_password(password.level, password.digits)
        ):
            return abnormal_response(address, 0x1C, PASSWORD_ERROR)
        valid_until = YYMMDDHHMMSS.decode(data[10:16])
        if not isinstance(valid_until, datetime) or valid_until < meter.local_time():
            return abnormal_response(address, 0x1C, OTHER_ERROR)  # expired command
        try:
            command = RemoteCommand(data[8])
        except ValueError:
            return abnormal_response(address, 0x1C, OTHER_ERROR)
        result = _REMOTE_ACTIONS[command](meter)
        if result is not RelayResult.DONE:
            return abnormal_response(address, 0x1C, OTHER_ERROR)
        return ack_response(address, 0x1C)


_REMOTE_ACTIONS: dict[RemoteCommand, Callable[[Meter], RelayResult]] = {
    RemoteCommand.TRIP: lambda m: m.trip(),
    RemoteCommand.CLOSE_ALLOWED: lambda m: m.close(directly=False),
    RemoteCommand.CLOSE_DIRECTLY: lambda m: m.close(directly=True),
    RemoteCommand.ALARM: lambda m: RelayResult.DONE,
    RemoteCommand.ALARM_RELEASE: lambda m: RelayResult.DONE,
    RemoteCommand.KEEP_POWER_ON: lambda m: m.set_keep_power(True),
    RemoteCommand.KEEP_POWER_OFF: lambda m: m.set_keep_power(False),
}


def _apply_write(meter: Meter, di: int, values: list[ScalarValue]) -> bool:
    """Writable parameters; False for a DI the meter does not let you write."""
    value = values[0] if values else None
    prepaid = meter.prepaid
    if di in (0x04000101, 0xC010):
        if not isinstance(value, date):
            return False
        day = value.date() if isinstance(value, datetime) else value
        meter.set_clock(datetime.combine(day, meter.local_time().time()))
        return True
    if di in (0x04000102, 0xC011):
        if not isinstance(value, time):
            return False
        meter.set_clock(datetime.combine(meter.local_time().date(), value))
        return True
    if di == 0x04000B01 and isinstance(value, str):
        meter.settlement_day, meter.settlement_hour = int(value[:2]), int(value[2:])
        return 1 <= meter.settlement_day <= 28
    fields = {
        0x04001001: "alarm_amount_1",
        0x04001002: "alarm_amount_2",
        0x04001003: "overdraft_limit",
        0x04001004: "hoarding_limit",
        0x04001005: "close_allowed_threshold",
    }
    if di in fields and prepaid is not None and isinstance(value, Decimal):
        setattr(prepaid, fields[di], value)
        return True
    return False


def _encode(item: DataItem, values: Values, di: int, meter: Meter) -> bytes:
    if di >> 16 in (0x0311, 0x0330) and di & 0xFF and len(values) == 1:
        # an event still in progress: its end time is all zeros on the wire
        return item.fields[0].format.encode(values[0]) + bytes(item.fields[1].format.size)
    fitted = [
        _fit(field.format, v) if isinstance(v, Decimal) else v
        for field, v in zip(item.fields, values, strict=False)
    ]
    return item.encode(fitted)


# ---------------------------------------------------------------- 2007 providers

_TARIFF_COUNT = 4


def _energy(meter: Meter, di: int) -> Values:
    kind, tariff, period = (di >> 16) & 0xFF, (di >> 8) & 0xFF, di & 0xFF

    def registers(p: int) -> Snapshot | None:
        if p == 0:
            return meter.snapshot()
        record = meter.monthly_freeze(p)
        return None if record is None else record.registers

    def value(snapshot: Snapshot, t: int) -> Decimal | None:
        if kind in (0x00, 0x01, 0x02):
            if t > _TARIFF_COUNT:
                return None
            imp, exp = snapshot.import_kwh(t), snapshot.export_kwh(t)
            # combined active = forward + reverse: the default mode word 05H
            return {0x00: imp + exp, 0x01: imp, 0x02: exp}[kind]
        if t != 0:
            return None  # reactive registers are kept as quadrant totals only
        q = [snapshot.reactive_kvarh(n) for n in range(1, 5)]
        reactive = {0x03: q[0] + q[1], 0x04: q[2] + q[3], 0x05: q[0], 0x06: q[1]}
        reactive.update({0x07: q[2], 0x08: q[3]})
        return reactive.get(kind)

    out: Values = []
    if tariff == 0xFF:
        snapshot = registers(period)
        if snapshot is None:
            return []
        for t in range(9):
            v = value(snapshot, t)
            if v is None:
                break
            out.append(v)
        return out
    if period == 0xFF:
        for p in range(13):
            snapshot = registers(p)
            v = None if snapshot is None else value(snapshot, tariff)
            if v is None:
                break
            out.append(v)
        return out
    snapshot = registers(period)
    v = None if snapshot is None else value(snapshot, tariff)
    return [] if v is None else [v]


def _instant(meter: Meter, di: int) -> Values:
    kind, index = (di >> 16) & 0xFF, (di >> 8) & 0xFF
    inst = meter.instantaneous()
    if kind == 0x80:
        if di == 0x02800002:
            return [inst.frequency]
        if di == 0x02800001:
            return [Decimal("0.000")]
        return []
    per_phase: dict[int, tuple[Decimal | None, tuple[Decimal, ...]]] = {
        0x01: (None, inst.voltage),
        0x02: (None, inst.current),
        0x03: (inst.active_kw, inst.phase_active_kw),
        0x04: (inst.reactive_kvar, inst.phase_reactive_kvar),
        0x05: (inst.apparent_kva, inst.phase_apparent_kva),
        0x06: (inst.power_factor, (inst.power_factor,) * meter.phases),
    }
    if kind not in per_phase:
        return []
    total, phases = per_phase[kind]
    values: Values = [] if total is None else [total]
    values.extend(phases)
    if index == 0xFF:
        return values
    position = index if total is not None else index - 1
    return [values[position]] if 0 <= position < len(values) else []


def _event_count(meter: Meter, kind: EventKind) -> Values:
    return [Decimal(meter.event_counts[kind])]


def _event_record(meter: Meter, kind: EventKind, n: int) -> Values:
    records = meter.events[kind]
    if not 1 <= n <= len(records):
        return []
    record: EventRecord = records[n - 1]
    return [record.start] if record.end is None else [record.start, record.end]


def _freeze_values(record: FreezeRecord | None, which: int) -> Values:
    if record is None:
        return []
    if which == 0x00:
        return [record.time]
    snapshot = record.registers
    if which == 0x01:
        return [snapshot.import_kwh(t) for t in range(_TARIFF_COUNT + 1)]
    if which == 0x02:
        return [snapshot.export_kwh(t) for t in range(_TARIFF_COUNT + 1)]
    return []


def _nameplate(meter: Meter) -> dict[int, ScalarValue]:
    plate = meter.nameplate
    prepaid = meter.prepaid
    values: dict[int, ScalarValue] = {
        0x04000401: meter.address,
        0x04000402: meter.meter_number,
        0x04000403: plate.asset_number or meter.meter_number,
        0x04000404: plate.rated_voltage,
        0x04000405: plate.rated_current,
        0x04000406: plate.maximum_current,
        0x04000407: plate.active_accuracy,
        0x04000408: plate.reactive_accuracy,
        0x04000409: Decimal(plate.active_constant),
        0x0400040A: Decimal(plate.reactive_constant),
        0x0400040B: plate.model,
        0x0400040C: plate.production_date,
        0x0400040D: plate.protocol_version,
        0x04000B01: f"{meter.settlement_day:02d}{meter.settlement_hour:02d}",
        0x04001203: time(0, 0),
        0x03110000: Decimal(meter.event_counts[EventKind.POWER_DOWN]),
        0x03300000: Decimal(meter.event_counts[EventKind.PROGRAMMING]),
        0x03300100: Decimal(meter.event_counts[EventKind.METER_CLEAR]),
        0x03300400: Decimal(meter.event_counts[EventKind.CLOCK_SET]),
        0x03300D00: Decimal(meter.event_counts[EventKind.COVER_OPEN]),
        0x1D000001: Decimal(meter.event_counts[EventKind.RELAY_TRIP]),
        0x1E000001: Decimal(meter.event_counts[EventKind.RELAY_CLOSE]),
    }
    if prepaid is not None:
        remaining = meter.remaining_credit() or Decimal(0)
        values.update(
            {
                0x00900200: max(remaining, Decimal(0)),
                0x00900201: max(-remaining, Decimal(0)),
                0x04001001: prepaid.alarm_amount_1,
                0x04001002: prepaid.alarm_amount_2,
                0x04001003: prepaid.overdraft_limit,
                0x04001004: prepaid.hoarding_limit,
                0x04001005: prepaid.close_allowed_threshold,
            }
        )
    return values


def _provide_2007(meter: Meter, di: int, item: DataItem) -> Values:
    di3 = di >> 24
    if di3 == 0x00 and di >> 16 != 0x0090:
        return _energy(meter, di)
    if di3 == 0x02:
        return _instant(meter, di)
    if di == 0x04000101:
        return [meter.local_time()]
    if di == 0x04000102:
        return [meter.local_time().time().replace(microsecond=0)]
    if di >> 8 == 0x040005:
        words: Values = [f"{w:04X}" for w in meter.status_words()]
        return words if di & 0xFF == 0xFF else words[(di & 0xFF) - 1 : di & 0xFF]
    if di3 == 0x05:
        family, which, n = (di >> 16) & 0xFF, (di >> 8) & 0xFF, di & 0xFF
        if family == 0x06:
            return _freeze_values(meter.daily_freeze(n), which)
        if family == 0x01:
            records = meter.instant_freezes
            record = records[n - 1] if 1 <= n <= len(records) else None
            return _freeze_values(record, which)
        return []
    if di >> 16 == 0x0311 and di & 0xFFFF:
        return _event_record(meter, EventKind.POWER_DOWN, di & 0xFF)
    if di >> 8 == 0x03300D and di & 0xFF:
        return _event_record(meter, EventKind.COVER_OPEN, di & 0xFF)
    value = _nameplate(meter).get(di)
    return [] if value is None else [value]


# ---------------------------------------------------------------- 1997 providers


def _provide_1997(meter: Meter, di: int, item: DataItem) -> Values:
    group = di >> 8
    if group in (0x90, 0x91, 0x94, 0x95, 0x98, 0x99) and di != 0x9000:
        # DI1: 90/91 current, 94/95 last month, 98/99 the month before; odd = reactive
        period = {0x0: 0, 0x4: 1, 0x8: 2}[group & 0xE]
        reactive = bool(group & 0x1)
        kind, tariff = (di >> 4) & 0xF, di & 0xF
        snapshot: Snapshot | None = meter.snapshot()
        if period:
            record = meter.monthly_freeze(period)
            snapshot = None if record is None else record.registers
        if snapshot is None or kind not in (1, 2):
            return []
        if not reactive:
            read = snapshot.import_kwh if kind == 1 else snapshot.export_kwh
            if tariff == 0xF:
                return [read(t) for t in range(_TARIFF_COUNT + 1)]
            return [read(tariff)] if tariff <= _TARIFF_COUNT else []
        q = [snapshot.reactive_kvarh(n) for n in range(1, 5)]
        total = q[0] + q[1] if kind == 1 else q[2] + q[3]
        return [total] if tariff in (0, 0xF) else []
    if di == 0x9000:
        return [meter.snapshot().import_kwh() + meter.snapshot().export_kwh()]
    inst = meter.instantaneous()
    if group == 0xB6:
        low = di & 0xFF
        if low >> 4 == 0x1:
            volts: Values = [v.quantize(Decimal(1), ROUND_DOWN) for v in inst.voltage]
            return volts if low & 0xF == 0xF else volts[(low & 0xF) - 1 : low & 0xF]
        if low >> 4 == 0x2:
            amps: Values = [abs(a).quantize(Decimal("0.01"), ROUND_DOWN) for a in inst.current]
            return amps if low & 0xF == 0xF else amps[(low & 0xF) - 1 : low & 0xF]
        if low >> 4 == 0x3:
            powers: Values = [abs(inst.active_kw), *(abs(p) for p in inst.phase_active_kw)]
            return powers if low & 0xF == 0xF else powers[low & 0xF : (low & 0xF) + 1]
        return []
    local = meter.local_time()
    plate = meter.nameplate
    values: dict[int, ScalarValue] = {
        0xC010: local,
        0xC011: local.time().replace(microsecond=0),
        0xC030: Decimal(plate.active_constant),
        0xC031: Decimal(plate.reactive_constant),
        0xC032: meter.meter_number,
        0xC033: meter.meter_number,
        0xC034: meter.address,
    }
    value = values.get(di)
    return [] if value is None else [value]


_PROVIDERS_2007 = _provide_2007
_PROVIDERS_1997 = _provide_1997
