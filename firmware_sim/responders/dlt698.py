"""The DL/T 698.45 personality: GET / SET / ACTION / SECURITY on the meter model.

Objects are answered from the attribute table ``_ATTRIBUTES`` (OI, attribute) → a function
of the meter giving the whole attribute's Data; an element index picks one array element.
Records (5002 minute curve, 5004 daily, 5006 monthly freezes) are served by RSD selector 9
("last n") and selector 1 (freeze time 20210200 equals a value); columns by RCSD.

Remote control (8000 relay, 8001 keep power) runs only inside a SECURITY-Request whose MAC
checks against the meter's key (the simulated ESAM of :mod:`.esam`). DARs we give, and why:

* plaintext ACTION 8000/8001 → 20 "security authentication mismatch": the object's security
  mode (F101) requires plaintext + MAC and the request came with less; 15 (password error)
  is the 645-style answer and does not describe a missing security layer.
* a MAC that does not check → 22 "ESAM verification failed": the ESAM rejected it.
* a replayed RN, or a SECURITY-Request with RN only (no MAC) for an ACTION → 23 "security
  authentication failed": the request is authentic-looking but not acceptable now.
* an expired TimeTag → 32 "invalid time tag".
* an OI the meter does not have → 6 "object does not exist"; a known OI's attribute we do
  not serve or an element index out of range → 4 "object undefined"; a record selector we
  do not implement → 255 "other"; a record with no data for the selection → an empty row set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

from firmware_sim.clock import SimClock
from firmware_sim.meter import (
    UJ_PER_KWH,
    CurvePoint,
    EventKind,
    FreezeRecord,
    Meter,
    RelayResult,
    Snapshot,
)
from firmware_sim.responders.base import Responder
from firmware_sim.responders.esam import SimulatedEsam
from shared_protocol.dlt698 import (
    CSD,
    OAD,
    OMD,
    RCSD,
    RSD,
    ActionRequestNormal,
    ActionResponseNormal,
    AddressType,
    Apdu,
    BitString,
    Control,
    Data,
    DataType,
    DateTimeS,
    Frame,
    GetRequestNormal,
    GetRequestNormalList,
    GetRequestRecord,
    GetResponseNormal,
    GetResponseNormalList,
    GetResponseRecord,
    GetResult,
    RecordResult,
    SecurityRequest,
    SecurityResponse,
    ServerAddress,
    SetRequestNormal,
    SetResponseNormal,
    TimeTag,
    VerificationKind,
    decode_apdu,
    decode_frame,
    encode_apdu,
    encode_frame,
)
from shared_protocol.errors import ProtocolError

__all__ = ["Dlt698Responder"]

DAR_SUCCESS = 0
DAR_REFUSED = 3
DAR_UNDEFINED = 4
DAR_NO_OBJECT = 6
DAR_TYPE_MISMATCH = 7
DAR_SECURITY_MISMATCH = 20
DAR_ESAM_FAILED = 22
DAR_AUTH_FAILED = 23
DAR_TIME_TAG = 32
DAR_OTHER = 255

FREEZE_TIME = OAD(0x2021, 2)
_DEFAULT_FREEZE_COLUMNS: tuple[OAD, ...] = (FREEZE_TIME, OAD(0x0010, 2), OAD(0x0020, 2))
_DEFAULT_CURVE_COLUMNS: tuple[OAD, ...] = (
    FREEZE_TIME,
    OAD(0x0010, 2),
    OAD(0x2000, 2),
    OAD(0x2004, 2),
)


def _u32(value: int) -> Data:
    return Data(DataType.DOUBLE_LONG_UNSIGNED, value % 2**32)


def _energy_array(values: list[int], signed: bool = False) -> Data:
    kind = DataType.DOUBLE_LONG if signed else DataType.DOUBLE_LONG_UNSIGNED
    return Data.array(*(Data(kind, v) for v in values))


def _hundredths(value: Decimal) -> int:
    return int(value.scaleb(2))


def _energy(snapshot: Snapshot, oi: int, precision: int) -> Data | None:
    """Energy registers as the 698 array: total then tariffs 1..4 (``precision`` decimals)."""

    def scaled(uj: int) -> int:
        return int(uj * 10**precision // UJ_PER_KWH)

    if precision == 2:  # the display resolution: total = Σ displayed tariffs (see meter.py)
        imp = [_hundredths(snapshot.import_kwh(t)) for t in range(5)]
        exp = [_hundredths(snapshot.export_kwh(t)) for t in range(5)]
    else:
        imp = [scaled(r) for r in snapshot.import_uj]
        exp = [scaled(r) for r in snapshot.export_uj]
        imp[0], exp[0] = sum(imp[1:]), sum(exp[1:])
    kind = DataType.DOUBLE_LONG_UNSIGNED if precision == 2 else DataType.LONG64_UNSIGNED
    signed_kind = DataType.DOUBLE_LONG if precision == 2 else DataType.LONG64
    q = [scaled(r) for r in snapshot.reactive_uj]
    by_oi: dict[int, tuple[list[int], DataType]] = {
        0x0000: ([i + e for i, e in zip(imp, exp, strict=True)], signed_kind),
        0x0010: (imp, kind),
        0x0020: (exp, kind),
        0x0030: ([q[0] + q[1]], signed_kind),
        0x0040: ([q[2] + q[3]], signed_kind),
        0x0050: ([q[0]], kind),
        0x0060: ([q[1]], kind),
        0x0070: ([q[2]], kind),
        0x0080: ([q[3]], kind),
    }
    if oi not in by_oi:
        return None
    values, data_type = by_oi[oi]
    return Data.array(*(Data(data_type, v) for v in values))


def _instant(meter: Meter, oi: int) -> Data | None:
    inst = meter.instantaneous()

    def arr(kind: DataType, values: tuple[Decimal, ...], exponent: int) -> Data:
        return Data.array(*(Data(kind, int(v.scaleb(exponent))) for v in values))

    if oi == 0x2000:
        return arr(DataType.LONG_UNSIGNED, inst.voltage, 1)
    if oi == 0x2001:
        return arr(DataType.DOUBLE_LONG, inst.current, 3)
    if oi == 0x2004:  # W × 10
        return arr(DataType.DOUBLE_LONG, (inst.active_kw, *inst.phase_active_kw), 4)
    if oi == 0x2005:
        return arr(DataType.DOUBLE_LONG, (inst.reactive_kvar, *inst.phase_reactive_kvar), 4)
    if oi == 0x2006:
        return arr(DataType.DOUBLE_LONG, (inst.apparent_kva, *inst.phase_apparent_kva), 4)
    if oi == 0x200A:
        return arr(DataType.LONG, (inst.power_factor,) * (1 + meter.phases), 3)
    if oi == 0x200F:
        return Data(DataType.LONG_UNSIGNED, int(inst.frequency.scaleb(2)))
    return None


def _status_words(meter: Meter) -> Data:
    return Data.array(
        *(
            Data(DataType.BIT_STRING, BitString(16, w.to_bytes(2, "big")))
            for w in meter.status_words()
        )
    )


def _clock(meter: Meter) -> Data:
    return Data(DataType.DATE_TIME_S, DateTimeS.from_datetime(meter.local_time()))


def _attribute(meter: Meter, oad: OAD) -> Data | int:
    """The whole attribute's Data, or a DAR."""
    oi, attribute = oad.oi, oad.attribute
    if oi <= 0x0080 and oi % 0x10 == 0:
        if attribute not in (2, 4):
            return DAR_UNDEFINED
        data = _energy(meter.snapshot(), oi, 2 if attribute == 2 else 4)
        return DAR_NO_OBJECT if data is None else data
    if 0x2000 <= oi <= 0x200F and oi not in (0x2014,):
        if attribute != 2:
            return DAR_UNDEFINED
        inst = _instant(meter, oi)
        return DAR_NO_OBJECT if inst is None else inst
    simple: dict[tuple[int, int], Callable[[Meter], Data]] = {
        (0x2014, 2): _status_words,
        (0x4000, 2): _clock,
        (0x4001, 2): lambda m: Data(DataType.OCTET_STRING, bytes.fromhex(_even(m.address))),
        (0x4002, 2): lambda m: Data(DataType.OCTET_STRING, bytes.fromhex(_even(m.meter_number))),
    }
    getter = simple.get((oi, attribute))
    if getter is not None:
        return getter(meter)
    records = (0x5002, 0x5004, 0x5006, 0x3011, 0x301B, 0x8000, 0x8001)
    if oi in {key[0] for key in simple} or oi in records:
        return DAR_UNDEFINED
    return DAR_NO_OBJECT


def _even(digits: str) -> str:
    return digits if len(digits) % 2 == 0 else "0" + digits


def _element(data: Data, index: int) -> Data | int:
    if index == 0:
        return data
    if data.type not in (DataType.ARRAY, DataType.STRUCTURE) or index > len(data.items):
        return DAR_UNDEFINED
    return data.items[index - 1]


def _freeze_cell(record: FreezeRecord, column: OAD, meter: Meter) -> Data:
    if column.oi == FREEZE_TIME.oi:
        return Data(DataType.DATE_TIME_S, DateTimeS.from_datetime(record.time))
    if column.oi <= 0x0080 and column.attribute in (2, 4):
        data = _energy(record.registers, column.oi, 2 if column.attribute == 2 else 4)
        if data is not None:
            cell = _element(data, column.index)
            return cell if isinstance(cell, Data) else Data(DataType.NULL)
    return Data(DataType.NULL)


def _curve_cell(point: CurvePoint, column: OAD, meter: Meter) -> Data:
    if column.oi == FREEZE_TIME.oi:
        return Data(DataType.DATE_TIME_S, DateTimeS.from_datetime(point.time))
    data: Data | None = None
    if column.oi <= 0x0080 and column.attribute in (2, 4):
        data = _energy(point.registers, column.oi, 2 if column.attribute == 2 else 4)
    elif (column.oi, column.attribute) == (0x2000, 2):
        data = Data.array(Data(DataType.LONG_UNSIGNED, int(point.voltage.scaleb(1))))
    elif (column.oi, column.attribute) == (0x2001, 2):
        data = Data.array(Data(DataType.DOUBLE_LONG, int(point.current.scaleb(3))))
    elif (column.oi, column.attribute) == (0x2004, 2):
        watts = point.active_w * 10
        data = Data.array(Data(DataType.DOUBLE_LONG, watts), Data(DataType.DOUBLE_LONG, watts))
    elif (column.oi, column.attribute) == (0x200A, 2):
        pf = int(point.power_factor.scaleb(3))
        data = Data.array(Data(DataType.LONG, pf), Data(DataType.LONG, pf))
    if data is None:
        return Data(DataType.NULL)
    cell = _element(data, column.index)
    return cell if isinstance(cell, Data) else Data(DataType.NULL)


class Dlt698Responder(Responder):
    """A DL/T 698.45 meter speaking for ``meter``; its ESAM key is ``meter.security_key``."""

    protocol = "dlt698.45"

    def __init__(
        self,
        meter: Meter,
        clock: SimClock | None = None,
        *,
        sync: Callable[[int], None] | None = None,
        lock: threading.RLock | None = None,
    ) -> None:
        super().__init__(meter, clock, sync=sync, lock=lock)
        self._esam = SimulatedEsam(meter.security_key)

    # ------------------------------------------------------------ Device

    def _respond(self, request: bytes) -> bytes | None:
        try:
            frame = decode_frame(request)
            apdu = decode_apdu(frame.apdu) if not frame.control.fragmented else None
        except ProtocolError:
            return None
        if apdu is None or frame.control.from_server:
            return None
        if not self._addressed(frame.address):
            if not self._may_have_changed():
                return None  # cheap: no need to bring the whole area up to date
            self._bring_up_to_date()
            if not self._addressed(frame.address):
                return None
        self._bring_up_to_date()
        if not self.meter.answering:
            return None
        if self._esam.key != self.meter.security_key:  # the meter was replaced
            self._esam = SimulatedEsam(self.meter.security_key)
        try:
            reply = self._handle(apdu)
        except ProtocolError:
            return None
        if reply is None or frame.address.type is AddressType.BROADCAST:
            return None
        address = ServerAddress(
            bytes.fromhex(_even(self.meter.address))[::-1],
            AddressType.SINGLE,
            frame.address.logical,
        )
        out = Frame(Control.server_response(), address, frame.client_address, encode_apdu(reply))
        return encode_frame(out)

    def _addressed(self, address: ServerAddress) -> bool:
        if address.type is AddressType.BROADCAST:
            return True
        ours = _even(self.meter.address)
        theirs = address.digits
        if address.type is AddressType.WILDCARD:
            theirs = (
                theirs.rjust(len(ours), "A")[-len(ours) :] if len(theirs) <= len(ours) else theirs
            )
            return len(theirs) == len(ours) and all(
                t in ("A", o) for t, o in zip(theirs, ours, strict=True)
            )
        return address.type is AddressType.SINGLE and theirs == ours

    # ------------------------------------------------------------ services

    def _handle(self, apdu: Apdu, secured: bool = False) -> Apdu | None:
        if isinstance(apdu, SecurityRequest):
            return self._security(apdu)
        if isinstance(apdu, GetRequestNormal):
            return GetResponseNormal(apdu.piid, self._get(apdu.oad), time_tag=apdu.time_tag)
        if isinstance(apdu, GetRequestNormalList):
            results = tuple(self._get(oad) for oad in apdu.oads)
            return GetResponseNormalList(apdu.piid, results, time_tag=apdu.time_tag)
        if isinstance(apdu, GetRequestRecord):
            return GetResponseRecord(apdu.piid, self._record(apdu), time_tag=apdu.time_tag)
        if isinstance(apdu, SetRequestNormal):
            return SetResponseNormal(apdu.piid, apdu.oad, self._set(apdu), time_tag=apdu.time_tag)
        if isinstance(apdu, ActionRequestNormal):
            dar = self._action(apdu, secured)
            return ActionResponseNormal(apdu.piid, apdu.omd, dar, time_tag=apdu.time_tag)
        return None

    def _security(self, request: SecurityRequest) -> Apdu | None:
        verification = request.verification
        if request.ciphertext:
            return SecurityResponse(dar=DAR_ESAM_FAILED)  # we hold no decryption key
        rn = verification.rn
        if verification.kind is VerificationKind.RN_MAC:
            assert rn is not None and verification.mac is not None
            if not self._esam.verify(rn, request.payload, verification.mac):
                return SecurityResponse(dar=DAR_ESAM_FAILED)
            if not self._esam.fresh(rn):
                return SecurityResponse(dar=DAR_AUTH_FAILED)
            secured = True
        elif verification.kind is VerificationKind.RN:
            assert rn is not None
            secured = False  # plaintext + RN: the reply carries our MAC, no authority gained
        else:
            return SecurityResponse(dar=DAR_AUTH_FAILED)
        inner = decode_apdu(request.payload)
        if isinstance(inner, SecurityRequest):
            return SecurityResponse(dar=DAR_OTHER)
        reply = self._handle(inner, secured=secured)
        if reply is None:
            return None
        payload = encode_apdu(reply)
        return SecurityResponse(payload, mac=self._esam.mac(rn, payload))

    def _get(self, oad: OAD) -> GetResult:
        data = _attribute(self.meter, oad)
        if isinstance(data, Data):
            data = _element(data, oad.index)
        if isinstance(data, int):
            return GetResult(oad, dar=data)
        return GetResult(oad, data=data)

    def _set(self, request: SetRequestNormal) -> int:
        oad, data = request.oad, request.data
        if (oad.oi, oad.attribute) != (0x4000, 2):
            known = _attribute(self.meter, OAD(oad.oi, oad.attribute))
            return DAR_NO_OBJECT if known == DAR_NO_OBJECT else DAR_REFUSED
        if data.type is not DataType.DATE_TIME_S or not isinstance(data.value, DateTimeS):
            return DAR_TYPE_MISMATCH
        self.meter.set_clock(data.value.to_datetime())
        return DAR_SUCCESS

    def _time_tag_expired(self, tag: TimeTag | None) -> bool:
        if tag is None:
            return False
        units = {0: "seconds", 1: "minutes", 2: "hours", 3: "days"}
        unit = units.get(tag.allowed_delay.unit)
        if unit is None:
            return False
        allowed = timedelta(**{unit: tag.allowed_delay.interval})
        sent = tag.send_time.to_datetime()
        now = self.meter.local_time()
        return allowed > timedelta(0) and not sent - allowed <= now <= sent + allowed

    def _action(self, request: ActionRequestNormal, secured: bool) -> int:
        omd: OMD = request.omd
        if omd.oi not in (0x8000, 0x8001):
            return DAR_NO_OBJECT
        if not secured:
            return DAR_SECURITY_MISMATCH
        if self._time_tag_expired(request.time_tag):
            return DAR_TIME_TAG
        meter = self.meter
        result: RelayResult
        if omd.oi == 0x8001:
            if omd.method not in (0x7F, 0x80):
                return DAR_UNDEFINED
            result = meter.set_keep_power(omd.method == 0x7F)
        elif omd.method == 0x81:
            result = meter.trip()
        elif omd.method == 0x82:
            result = meter.close(directly=_close_directly(request.data))
        elif omd.method in (0x7F, 0x80):
            result = RelayResult.DONE  # alarm on/off: nothing to model
        else:
            return DAR_UNDEFINED
        return DAR_SUCCESS if result is RelayResult.DONE else DAR_REFUSED

    # ------------------------------------------------------------ records

    def _record(self, request: GetRequestRecord) -> RecordResult:
        oad, rsd = request.oad, request.rsd
        meter = self.meter
        source: list[FreezeRecord] | list[CurvePoint]
        if (oad.oi, oad.attribute) == (0x5004, 2):
            source, default = list(meter.daily), _DEFAULT_FREEZE_COLUMNS
        elif (oad.oi, oad.attribute) == (0x5006, 2):
            source, default = list(meter.monthly), _DEFAULT_FREEZE_COLUMNS
        elif (oad.oi, oad.attribute) == (0x5002, 2):
            source, default = list(meter.curve), _DEFAULT_CURVE_COLUMNS
        elif (oad.oi, oad.attribute) in _EVENT_TABLES:
            return self._event_records(request)
        else:
            rcsd = request.rcsd
            return RecordResult(oad, rcsd, dar=_attribute_dar(meter, oad))
        columns = [c.column for c in request.rcsd.columns] or list(default)
        rcsd = request.rcsd if request.rcsd.columns else RCSD(tuple(CSD(c) for c in default))
        if not all(isinstance(c, OAD) for c in columns):
            return RecordResult(oad, rcsd, dar=DAR_OTHER)  # ROAD columns: not served
        picked = _select(source, rsd)
        if picked is None:
            return RecordResult(oad, rcsd, dar=DAR_OTHER)
        rows = []
        for record in picked:
            cells = []
            for column in columns:
                assert isinstance(column, OAD)
                if isinstance(record, FreezeRecord):
                    cells.append(_freeze_cell(record, column, meter))
                else:
                    cells.append(_curve_cell(record, column, meter))
            rows.append(tuple(cells))
        return RecordResult(oad, rcsd, rows=tuple(rows))

    def _event_records(self, request: GetRequestRecord) -> RecordResult:
        """3011 power-down / 301B cover-open records: RSD 9 only ("last n", 1 = latest)."""
        oad = request.oad
        kind = _EVENT_TABLES[(oad.oi, oad.attribute)]
        rcsd = request.rcsd if request.rcsd.columns else RCSD.of(*_EVENT_COLUMNS)
        columns = [c.column for c in rcsd.columns]
        if request.rsd.selector != 9 or not all(isinstance(c, OAD) for c in columns):
            return RecordResult(oad, rcsd, dar=DAR_OTHER)
        (n,) = request.rsd.fields
        records = self.meter.events[kind]
        count = self.meter.event_counts[kind]
        if not isinstance(n, int) or not 1 <= n <= len(records):
            return RecordResult(oad, rcsd, rows=())
        event = records[n - 1]
        cells = []
        for column in columns:
            assert isinstance(column, OAD)
            if column.oi == 0x2022:
                cells.append(_u32(count - n + 1))
            elif column.oi == 0x201E:
                cells.append(Data(DataType.DATE_TIME_S, DateTimeS.from_datetime(event.start)))
            elif column.oi == 0x2020 and event.end is not None:
                cells.append(Data(DataType.DATE_TIME_S, DateTimeS.from_datetime(event.end)))
            else:
                cells.append(Data(DataType.NULL))
        return RecordResult(oad, rcsd, rows=(tuple(cells),))


# event record tables and their columns: 2022 record number, 201E start, 2020 end
_EVENT_TABLES: dict[tuple[int, int], EventKind] = {
    (0x3011, 2): EventKind.POWER_DOWN,
    (0x301B, 2): EventKind.COVER_OPEN,
}
_EVENT_COLUMNS = (OAD(0x2022, 2), OAD(0x201E, 2), OAD(0x2020, 2))


def _attribute_dar(meter: Meter, oad: OAD) -> int:
    data = _attribute(meter, OAD(oad.oi, oad.attribute))
    return data if isinstance(data, int) else DAR_UNDEFINED


def _select(
    source: list[FreezeRecord] | list[CurvePoint], rsd: RSD
) -> list[FreezeRecord] | list[CurvePoint] | None:
    if rsd.selector == 9:
        (n,) = rsd.fields
        assert isinstance(n, int)
        return source[-n : len(source) - n + 1] if 1 <= n <= len(source) else []
    if rsd.selector == 1:
        column, value = rsd.fields
        if not isinstance(column, OAD) or column.oi != FREEZE_TIME.oi:
            return None
        if not isinstance(value, Data) or not isinstance(value.value, DateTimeS):
            return []
        wanted: datetime = value.value.to_datetime()
        return [r for r in source if r.time == wanted]  # type: ignore[return-value]
    return None


def _close_directly(data: Data) -> bool:
    """ACTION 80008200 parameter: array of structure {OAD relay, enum command}."""
    try:
        command = data.items[0].items[1].value
    except (IndexError, AttributeError, TypeError):
        return False
    return bool(command == 1)
