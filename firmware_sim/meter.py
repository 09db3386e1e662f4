"""The meter model: registers, tariffs, freezes, load curve, events, relay, prepaid, faults.

No I/O and no protocol here: responders (:mod:`firmware_sim.responders`) read and command
this model. Time only moves through :meth:`Meter.advance`, which integrates the load
piecewise — between load changes (15-minute UTC slots), the meter's own 15-minute clock
boundaries (tariff switches, curve points, freezes) and scheduled faults — so fast-forwarding
62 days costs about 12 000 steps, not five million.

Energy is kept in integer microjoules (W·µs), so tariff registers sum to the total exactly
and a supply meter balances its households to the microjoule. Displayed values are
``Decimal`` truncated to the meter's resolution (0.01 kWh), as real meters truncate; the
displayed total is the sum of the displayed tariff registers, so Σ tariffs = total holds on
the display as well.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from enum import IntEnum, StrEnum
from typing import Final

from firmware_sim.clock import MeterClock, from_us, to_us
from firmware_sim.load import SLOT_US, Load
from shared_protocol.timebase import utc_to_meter_time

__all__ = [
    "DAILY_FREEZE_DEPTH",
    "DEFAULT_TARIFF_SCHEDULE",
    "EVENT_DEPTH",
    "LOAD_CURVE_DEPTH",
    "MONTHLY_FREEZE_DEPTH",
    "UJ_PER_KWH",
    "CurvePoint",
    "EventKind",
    "EventRecord",
    "FaultKind",
    "FreezeRecord",
    "Instantaneous",
    "Meter",
    "MeterFault",
    "Nameplate",
    "PrepaidParameters",
    "RelayResult",
    "RelayState",
    "Snapshot",
    "Tariff",
    "TariffSchedule",
    "kwh",
    "random_faults",
]

UJ_PER_KWH: Final = 3_600_000_000_000  # 1 kWh = 3.6 MJ = 3.6e12 µJ
DAILY_FREEZE_DEPTH: Final = 62
MONTHLY_FREEZE_DEPTH: Final = 12
LOAD_CURVE_DEPTH: Final = 10 * 96  # ten days of 15-minute points
EVENT_DEPTH: Final = 10  # DL/T 645 keeps the last ten records of each event
INSTANT_FREEZE_DEPTH: Final = 3
TARIFFS: Final = 4


def kwh(microjoules: int, places: int = 2) -> Decimal:
    """µJ → kWh truncated to ``places`` decimals (meters truncate, they never round up)."""
    scale = 10**places
    units = abs(microjoules) * scale // UJ_PER_KWH
    return Decimal(units if microjoules >= 0 else -units).scaleb(-places)


class Tariff(IntEnum):
    """DL/T 645 / 698.45 tariff numbering."""

    SHARP = 1  # 尖
    PEAK = 2  # 峰
    FLAT = 3  # 平
    VALLEY = 4  # 谷


@dataclass(frozen=True)
class TariffSchedule:
    """A daily time-period table: (start time, tariff) rows, first row at 00:00.

    Starts must be on 15-minute marks: the model switches tariffs at the meter's 15-minute
    clock boundaries.
    """

    periods: tuple[tuple[time, Tariff], ...]

    def __post_init__(self) -> None:
        if not self.periods or self.periods[0][0] != time(0, 0):
            raise ValueError("a tariff schedule's first period starts at 00:00")
        starts = [start for start, _ in self.periods]
        if starts != sorted(set(starts)):
            raise ValueError("tariff period starts must be strictly increasing")
        for start, _ in self.periods:
            if start.minute % 15 or start.second or start.microsecond:
                raise ValueError(f"tariff period start {start} is not on a 15-minute mark")

    def tariff_at(self, local: datetime) -> Tariff:
        now = local.time()
        current = self.periods[0][1]
        for start, tariff in self.periods:
            if start <= now:
                current = tariff
            else:
                break
        return current


def _t(text: str) -> time:
    return time.fromisoformat(text)


# A typical provincial residential/commercial time-of-use table (尖峰平谷): valley overnight,
# peaks morning and evening, the sharp hours on the summer-evening peak.
DEFAULT_TARIFF_SCHEDULE: Final = TariffSchedule(
    (
        (_t("00:00"), Tariff.VALLEY),
        (_t("08:00"), Tariff.FLAT),
        (_t("10:00"), Tariff.PEAK),
        (_t("12:00"), Tariff.FLAT),
        (_t("17:00"), Tariff.PEAK),
        (_t("19:00"), Tariff.SHARP),
        (_t("21:00"), Tariff.PEAK),
        (_t("22:00"), Tariff.FLAT),
        (_t("23:00"), Tariff.VALLEY),
    )
)


@dataclass(frozen=True)
class Snapshot:
    """Register values at one moment, µJ (reactive in var·µs). Index 0 of the tariff tuples
    is the total (Σ of tariffs 1..4); reactive is quadrants I..IV."""

    import_uj: tuple[int, ...]
    export_uj: tuple[int, ...]
    reactive_uj: tuple[int, ...]

    def import_kwh(self, tariff: int = 0) -> Decimal:
        return _display(self.import_uj, tariff)

    def export_kwh(self, tariff: int = 0) -> Decimal:
        return _display(self.export_uj, tariff)

    def reactive_kvarh(self, quadrant: int) -> Decimal:
        return kwh(self.reactive_uj[quadrant - 1])

    @classmethod
    def zero(cls) -> Snapshot:
        return cls((0,) * (TARIFFS + 1), (0,) * (TARIFFS + 1), (0,) * 4)


def _display(registers: tuple[int, ...], tariff: int) -> Decimal:
    if tariff == 0:  # the displayed total is the sum of displayed tariffs (see module doc)
        return sum((kwh(r) for r in registers[1:]), Decimal("0.00"))
    return kwh(registers[tariff])


@dataclass(frozen=True)
class FreezeRecord:
    """A frozen copy of the registers at meter time ``time``.

    ``circuit_import_uj`` / ``circuit_export_uj``: the energy that really flowed through the
    meter's circuit by then — simulator-only ground truth, never sent on the wire.
    """

    time: datetime
    registers: Snapshot
    circuit_import_uj: int = 0
    circuit_export_uj: int = 0


@dataclass(frozen=True)
class CurvePoint:
    """One 15-minute load-curve point at meter time ``time``."""

    time: datetime
    registers: Snapshot
    voltage: Decimal
    current: Decimal
    active_w: int
    reactive_var: int
    power_factor: Decimal


@dataclass(frozen=True)
class Instantaneous:
    """What the meter measures right now (single phase: phase A; three phase: per phase)."""

    voltage: tuple[Decimal, ...]  # V, 0.1
    current: tuple[Decimal, ...]  # A, 0.001, signed by direction
    active_kw: Decimal  # total, 0.0001, signed
    reactive_kvar: Decimal
    apparent_kva: Decimal
    power_factor: Decimal  # 0.001
    frequency: Decimal  # Hz, 0.01
    phase_active_kw: tuple[Decimal, ...]
    phase_reactive_kvar: tuple[Decimal, ...]
    phase_apparent_kva: tuple[Decimal, ...]


class EventKind(StrEnum):
    POWER_DOWN = "power_down"
    COVER_OPEN = "cover_open"
    CLOCK_SET = "clock_set"
    RELAY_TRIP = "relay_trip"
    RELAY_CLOSE = "relay_close"
    METER_CLEAR = "meter_clear"
    PROGRAMMING = "programming"


@dataclass(frozen=True)
class EventRecord:
    """One event: start/end in meter time, registers at the start, free-form detail."""

    kind: EventKind
    start: datetime
    end: datetime | None = None
    registers: Snapshot = field(default_factory=Snapshot.zero)
    detail: str = ""


class RelayState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    CLOSE_ALLOWED = "close_allowed"  # open; the customer's button closes it


class RelayResult(StrEnum):
    DONE = "done"
    KEEP_POWER = "keep_power"  # trip refused: the meter is in keep-power (保电)
    NOT_ALLOWED = "not_allowed"


@dataclass(frozen=True)
class Nameplate:
    rated_voltage: str = "220V"
    rated_current: str = "5(60)A"
    maximum_current: str = "60A"
    active_accuracy: str = "2.0"
    reactive_accuracy: str = "2.0"
    active_constant: int = 1200  # imp/kWh
    reactive_constant: int = 1200  # imp/kvarh
    model: str = "DDZY1710"
    production_date: str = "2023-05-10"
    protocol_version: str = "DL/T645-2007"
    asset_number: str = ""


@dataclass
class PrepaidParameters:
    """Local prepaid (费控) parameters, money in yuan. ``credit`` is what was bought; the
    remaining amount is credit − price × import since the last purchase."""

    price_per_kwh: Decimal = Decimal("0.5283")
    credit: Decimal = Decimal("100.00")
    alarm_amount_1: Decimal = Decimal("20.00")
    alarm_amount_2: Decimal = Decimal("10.00")
    overdraft_limit: Decimal = Decimal("5.00")
    hoarding_limit: Decimal = Decimal("9999.00")
    close_allowed_threshold: Decimal = Decimal("0.00")
    baseline_uj: int = 0


class FaultKind(StrEnum):
    CLOCK_JUMP = "clock_jump"  # the shown time moves by ``delta``
    METER_RESET = "meter_reset"  # registers and history to zero, a meter-clear event
    STUCK_REGISTER = "stuck_register"  # registers stop while energy keeps flowing
    UNSTICK_REGISTER = "unstick_register"
    RELAY_FAILS = "relay_fails"  # relay commands are accepted but the contacts do not move
    RELAY_WORKS = "relay_works"
    METER_REPLACED = "meter_replaced"  # a new meter (new address, zero registers)
    POWER_DOWN = "power_down"
    POWER_UP = "power_up"
    COVER_OPEN = "cover_open"
    METER_DIES = "meter_dies"  # the electronics fail: nothing registers, nothing answers


@dataclass(frozen=True)
class MeterFault:
    """A meter-state fault scheduled at true instant ``at`` (aware UTC)."""

    at: datetime
    kind: FaultKind
    delta: timedelta | None = None
    new_address: str | None = None

    def __post_init__(self) -> None:
        if self.kind is FaultKind.CLOCK_JUMP and self.delta is None:
            raise ValueError("a clock_jump fault needs delta")
        if self.kind is FaultKind.METER_REPLACED and not self.new_address:
            raise ValueError("a meter_replaced fault needs new_address")


def random_faults(
    seed: int,
    start: datetime,
    days: int,
    kinds: Iterable[FaultKind] = (FaultKind.CLOCK_JUMP, FaultKind.STUCK_REGISTER),
    per_day: float = 0.1,
) -> list[MeterFault]:
    """A reproducible fault plan: on average ``per_day`` faults a day, drawn from ``seed``.

    Clock jumps move ±1..30 minutes; a stuck register unsticks after 1..24 hours.
    """
    rng = random.Random(f"faults:{seed}")
    kinds = tuple(kinds)
    plan: list[MeterFault] = []
    for day in range(days):
        if rng.random() >= per_day:
            continue
        at = start + timedelta(days=day, seconds=rng.randrange(86_400))
        kind = rng.choice(kinds)
        if kind is FaultKind.CLOCK_JUMP:
            minutes = rng.randint(1, 30) * rng.choice((-1, 1))
            plan.append(MeterFault(at, kind, delta=timedelta(minutes=minutes)))
        elif kind is FaultKind.STUCK_REGISTER:
            plan.append(MeterFault(at, kind))
            back = at + timedelta(hours=rng.randint(1, 24))
            plan.append(MeterFault(back, FaultKind.UNSTICK_REGISTER))
        elif kind is FaultKind.METER_REPLACED:
            address = f"{rng.randrange(10**12):012d}"
            plan.append(MeterFault(at, kind, new_address=address))
        else:
            plan.append(MeterFault(at, kind))
    return sorted(plan, key=lambda f: f.at)


def _default_passwords() -> dict[int, str]:
    return {2: "000000", 4: "000000"}


class Meter:
    """One simulated energy meter.

    ``load`` is the household connection's demand; the relay switches it, ``registration``
    (numerator, denominator) is the share the metering element sees (a bypass hides the
    rest), ``reversed_wiring`` swaps import and export. ``start`` is the true UTC instant the
    meter starts at, with all registers zero unless ``initial_import_kwh`` is given.
    """

    def __init__(
        self,
        address: str,
        load: Load,
        start: datetime,
        *,
        seed: int = 0,
        clock: MeterClock | None = None,
        tariffs: TariffSchedule = DEFAULT_TARIFF_SCHEDULE,
        settlement_day: int = 1,
        settlement_hour: int = 0,
        phases: int = 1,
        nameplate: Nameplate | None = None,
        meter_number: str | None = None,
        passwords: Mapping[int, str] | None = None,
        prepaid: PrepaidParameters | None = None,
        allow_plaintext_remote_control: bool = False,
        security_key: bytes | None = None,
        registration: tuple[int, int] = (1, 1),
        reversed_wiring: bool = False,
        initial_import_kwh: Decimal = Decimal(0),
        faults: Iterable[MeterFault] = (),
    ) -> None:
        if phases not in (1, 3):
            raise ValueError(f"phases must be 1 or 3, got {phases}")
        if not 1 <= settlement_day <= 28:
            raise ValueError(f"settlement_day must be 1..28, got {settlement_day}")
        self.address = address
        self.load = load
        self.seed = seed
        self.clock = clock or MeterClock()
        self.tariffs = tariffs
        self.settlement_day = settlement_day
        self.settlement_hour = settlement_hour
        self.phases = phases
        self.nameplate = nameplate or Nameplate()
        self.meter_number = meter_number or address
        self.passwords = dict(passwords or _default_passwords())
        self.prepaid = prepaid
        self.allow_plaintext_remote_control = allow_plaintext_remote_control
        self.security_key = security_key or hashlib.sha256(f"esam:{address}".encode()).digest()
        self.registration = registration
        self.reversed_wiring = reversed_wiring

        self.relay = RelayState.CLOSED
        self.relay_command = RelayState.CLOSED  # what was last commanded (status word 3)
        self.keep_power = False
        self.relay_fails = False
        self.stuck = False
        self.powered = True  # the meter has supply (a power-down cuts the household too)
        self.dead = False  # a dead meter: the circuit conducts, nothing registers or answers
        self.cover_open = False
        self.address_history: list[tuple[datetime, str]] = []

        self._t = to_us(start)
        if self.clock.anchor_us == 0:
            self.clock.anchor_us = self._t  # drift accumulates from the meter's start
        self._import = [0] * (TARIFFS + 1)  # index 0 unused: the total is the sum
        self._export = [0] * (TARIFFS + 1)
        self._reactive = [0] * 4
        initial = int(initial_import_kwh * UJ_PER_KWH)
        self._import[Tariff.FLAT] = initial
        self.circuit_import_uj = 0
        self.circuit_export_uj = 0
        self.daily: deque[FreezeRecord] = deque(maxlen=DAILY_FREEZE_DEPTH)
        self.monthly: deque[FreezeRecord] = deque(maxlen=MONTHLY_FREEZE_DEPTH)
        self.curve: deque[CurvePoint] = deque(maxlen=LOAD_CURVE_DEPTH)
        self.instant_freezes: deque[FreezeRecord] = deque(maxlen=INSTANT_FREEZE_DEPTH)
        self.events: dict[EventKind, deque[EventRecord]] = {
            kind: deque(maxlen=EVENT_DEPTH) for kind in EventKind
        }
        self.event_counts: dict[EventKind, int] = dict.fromkeys(EventKind, 0)
        self._faults: list[MeterFault] = sorted(faults, key=lambda f: f.at)
        self._boundary_us = self._next_boundary(self._t)
        self._tariff = self.tariffs.tariff_at(self.local_time())
        if prepaid is not None:
            prepaid.baseline_uj = self._import_total()

    # ------------------------------------------------------------ time

    @property
    def now_us(self) -> int:
        return self._t

    @property
    def now(self) -> datetime:
        return from_us(self._t)

    def local_time(self) -> datetime:
        """The meter's own wall time now."""
        return self.clock.local(self._t)

    def schedule(self, fault: MeterFault) -> None:
        if to_us(fault.at) < self._t:
            raise ValueError(f"fault at {fault.at} is before the meter's time {self.now}")
        self._faults.append(fault)
        self._faults.sort(key=lambda f: f.at)

    def next_fault_us(self) -> int | None:
        return to_us(self._faults[0].at) if self._faults else None

    def advance(self, until: datetime | int) -> None:
        """Bring the meter up to ``until`` (aware UTC or µs): integrate, freeze, apply faults."""
        end = until if isinstance(until, int) else to_us(until)
        while True:
            while self._faults and to_us(self._faults[0].at) <= self._t:
                self.apply_fault(self._faults.pop(0))
            if self._t >= end:
                return
            stop = min(end, self.load.next_change(self._t), self._boundary_us)
            if self._faults:
                stop = min(stop, to_us(self._faults[0].at))
            self._integrate(self._t, stop)
            self._t = stop
            if stop == self._boundary_us:
                self._on_boundary()

    def _next_boundary(self, utc_us: int) -> int:
        """The next true instant at which the meter's clock shows a 15-minute mark."""
        meter_us = self.clock.meter_us(utc_us)
        return self.clock.utc_us_at((meter_us // SLOT_US + 1) * SLOT_US)

    def _on_boundary(self) -> None:
        # The meter's clock shows a 15-minute mark (zones are whole quarter hours from UTC).
        meter_us = self.clock.meter_us(self._t)
        mark_us = round(meter_us / SLOT_US) * SLOT_US
        local = utc_to_meter_time(from_us(mark_us), self.clock.zone)
        self._boundary_us = self._next_boundary(self._t)
        self._tariff = self.tariffs.tariff_at(local)
        if not self.answering:
            return  # a meter without supply (or a dead one) freezes nothing
        snapshot = self.snapshot()
        inst = self.instantaneous()
        self.curve.append(
            CurvePoint(
                local,
                snapshot,
                inst.voltage[0],
                sum(inst.current, Decimal("0.000")),
                self._power()[0],
                self._power()[1],
                inst.power_factor,
            )
        )
        if local.hour == 0 and local.minute == 0:
            self.daily.append(self._freeze(local, snapshot))
        if (
            local.day == self.settlement_day
            and local.hour == self.settlement_hour
            and local.minute == 0
        ):
            self.monthly.append(self._freeze(local, snapshot))

    def _freeze(self, local: datetime, snapshot: Snapshot) -> FreezeRecord:
        return FreezeRecord(local, snapshot, self.circuit_import_uj, self.circuit_export_uj)

    # ------------------------------------------------------------ physics

    @property
    def answering(self) -> bool:
        """Whether the meter is alive: powered and not dead."""
        return self.powered and not self.dead

    @property
    def connected(self) -> bool:
        """Whether the household behind the meter has supply (relay closed, meter powered)."""
        return self.relay is RelayState.CLOSED and self.powered

    def circuit_power(self, utc_us: int) -> tuple[int, int]:
        """What flows through the meter's circuit at ``utc_us`` (W, var)."""
        return self.load.power(utc_us) if self.connected else (0, 0)

    def _power(self) -> tuple[int, int]:
        """What the metering element sees now: the circuit, less a bypass, maybe reversed."""
        p, q = self.circuit_power(self._t)
        num, den = self.registration
        p, q = p * num // den, q * num // den
        return (-p, -q) if self.reversed_wiring else (p, q)

    def _integrate(self, start: int, end: int) -> None:
        dt = end - start
        p, q = self.circuit_power(start)
        if p >= 0:
            self.circuit_import_uj += p * dt
        else:
            self.circuit_export_uj -= p * dt
        if self.stuck or not self.powered or self.dead:
            return
        p, q = self._power()
        if p >= 0:
            self._import[self._tariff] += p * dt
        else:
            self._export[self._tariff] -= p * dt
        quadrant = (0 if q >= 0 else 3) if p >= 0 else (1 if q >= 0 else 2)
        self._reactive[quadrant] += abs(q) * dt

    def _import_total(self) -> int:
        return sum(self._import[1:])

    def snapshot(self) -> Snapshot:
        return Snapshot(
            (self._import_total(), *self._import[1:]),
            (sum(self._export[1:]), *self._export[1:]),
            tuple(self._reactive),
        )

    def _slot_voltage(self, phase: int) -> Decimal:
        slot = self._t // SLOT_US
        rng = random.Random(f"voltage:{self.seed}:{phase}:{slot}")
        return Decimal(round(2200 * rng.gauss(1.0, 0.012))).scaleb(-1)

    def instantaneous(self) -> Instantaneous:
        p, q = self._power()
        volts = tuple(self._slot_voltage(n) for n in range(self.phases))
        share_p = Decimal(p) / self.phases
        share_q = Decimal(q) / self.phases
        s_total = (Decimal(p * p + q * q)).sqrt()
        share_s = s_total / self.phases
        currents = tuple(
            (share_s / v * (1 if p >= 0 else -1)).quantize(Decimal("0.001")) for v in volts
        )
        pf = (
            (Decimal(p) / s_total).quantize(Decimal("0.001"), ROUND_HALF_EVEN)
            if s_total
            else Decimal("1.000")
        )
        rng = random.Random(f"frequency:{self.seed}:{self._t // SLOT_US}")
        frequency = Decimal(round(5000 + rng.gauss(0, 2))).scaleb(-2)

        def kilo(value: Decimal) -> Decimal:
            return (value / 1000).quantize(Decimal("0.0001"))

        return Instantaneous(
            voltage=volts,
            current=currents,
            active_kw=kilo(Decimal(p)),
            reactive_kvar=kilo(Decimal(q)),
            apparent_kva=kilo(s_total),
            power_factor=pf,
            frequency=frequency,
            phase_active_kw=tuple(kilo(share_p) for _ in volts),
            phase_reactive_kvar=tuple(kilo(share_q) for _ in volts),
            phase_apparent_kva=tuple(kilo(share_s) for _ in volts),
        )

    @property
    def tariff(self) -> Tariff:
        return self._tariff

    # ------------------------------------------------------------ events

    def record_event(self, kind: EventKind, detail: str = "", end: datetime | None = None) -> None:
        self.event_counts[kind] += 1
        record = EventRecord(kind, self.local_time(), end, self.snapshot(), detail)
        self.events[kind].appendleft(record)  # [0] is the latest, as "last-1" on the wire

    def _close_event(self, kind: EventKind) -> None:
        records = self.events[kind]
        if records and records[0].end is None:
            records[0] = replace(records[0], end=self.local_time())

    # ------------------------------------------------------------ commands

    def check_password(self, level: int, digits: str) -> bool:
        return self.passwords.get(level) == digits

    def set_clock(self, local: datetime) -> None:
        """Set the meter's clock (a clock-set event keeps the old time in its detail)."""
        before = self.local_time()
        self.clock.set_local(local, self._t)
        self.record_event(EventKind.CLOCK_SET, detail=f"from {before.isoformat()}")
        self._after_clock_change()

    def _after_clock_change(self) -> None:
        self._boundary_us = self._next_boundary(self._t)
        self._tariff = self.tariffs.tariff_at(self.local_time())

    def trip(self) -> RelayResult:
        if self.keep_power:
            return RelayResult.KEEP_POWER
        self.relay_command = RelayState.OPEN
        if not self.relay_fails and self.relay is not RelayState.OPEN:
            self.relay = RelayState.OPEN
            self.record_event(EventKind.RELAY_TRIP)
        return RelayResult.DONE

    def close(self, directly: bool = True) -> RelayResult:
        """Close directly, or allow closing (the customer's button then closes)."""
        self.relay_command = RelayState.CLOSED
        if self.relay_fails or self.relay is RelayState.CLOSED:
            return RelayResult.DONE
        if directly:
            self.relay = RelayState.CLOSED
            self.record_event(EventKind.RELAY_CLOSE)
        else:
            self.relay = RelayState.CLOSE_ALLOWED
        return RelayResult.DONE

    def press_button(self) -> bool:
        """The customer presses the button: closes a close-allowed relay."""
        if self.relay is not RelayState.CLOSE_ALLOWED:
            return False
        self.relay = RelayState.CLOSED
        self.record_event(EventKind.RELAY_CLOSE, detail="button")
        return True

    def set_keep_power(self, on: bool) -> RelayResult:
        self.keep_power = on
        return RelayResult.DONE

    def freeze_now(self) -> FreezeRecord:
        record = self._freeze(self.local_time().replace(microsecond=0), self.snapshot())
        self.instant_freezes.appendleft(record)
        return record

    def clear(self) -> None:
        """Meter clear (电表清零): registers, freezes and curve to zero; a clear event."""
        self._import = [0] * (TARIFFS + 1)
        self._export = [0] * (TARIFFS + 1)
        self._reactive = [0] * 4
        self.daily.clear()
        self.monthly.clear()
        self.curve.clear()
        self.instant_freezes.clear()
        if self.prepaid is not None:
            self.prepaid.baseline_uj = 0
        self.record_event(EventKind.METER_CLEAR)

    def remaining_credit(self) -> Decimal | None:
        if self.prepaid is None:
            return None
        used = kwh(self._import_total() - self.prepaid.baseline_uj, 4)
        return (self.prepaid.credit - used * self.prepaid.price_per_kwh).quantize(Decimal("0.01"))

    # ------------------------------------------------------------ faults

    def apply_fault(self, fault: MeterFault) -> None:
        kind = fault.kind
        if kind is FaultKind.CLOCK_JUMP:
            assert fault.delta is not None
            self.clock.jump(fault.delta, self._t)
            self._after_clock_change()
        elif kind is FaultKind.METER_RESET:
            self.clear()
        elif kind is FaultKind.STUCK_REGISTER:
            self.stuck = True
        elif kind is FaultKind.UNSTICK_REGISTER:
            self.stuck = False
        elif kind is FaultKind.RELAY_FAILS:
            self.relay_fails = True
        elif kind is FaultKind.RELAY_WORKS:
            self.relay_fails = False
        elif kind is FaultKind.METER_REPLACED:
            assert fault.new_address is not None
            self.replace(fault.new_address)
        elif kind is FaultKind.POWER_DOWN:
            if self.powered:
                self.record_event(EventKind.POWER_DOWN)
                self.powered = False
        elif kind is FaultKind.POWER_UP:
            if not self.powered:
                self.powered = True
                self._close_event(EventKind.POWER_DOWN)
        elif kind is FaultKind.COVER_OPEN:
            self.cover_open = True
            self.record_event(EventKind.COVER_OPEN)
        elif kind is FaultKind.METER_DIES:
            self.dead = True

    def replace(self, new_address: str) -> None:
        """A technician swaps the meter: new address and number, zero registers and history."""
        self.address_history.append((self.now, self.address))
        self.address = new_address
        self.meter_number = new_address
        self._import = [0] * (TARIFFS + 1)
        self._export = [0] * (TARIFFS + 1)
        self._reactive = [0] * 4
        for deck in (self.daily, self.monthly, self.curve, self.instant_freezes):
            deck.clear()
        for records in self.events.values():
            records.clear()
        self.event_counts = dict.fromkeys(EventKind, 0)
        self.relay = self.relay_command = RelayState.CLOSED
        self.stuck = self.relay_fails = self.keep_power = False
        self.security_key = hashlib.sha256(f"esam:{new_address}".encode()).digest()

    # ------------------------------------------------------------ status words

    def status_words(self) -> tuple[int, ...]:
        """DL/T 645-2007 running status words 1..7 as integers."""
        p, _ = self._power()
        word1 = 0x0010 if p < 0 else 0  # bit4: active power reversed
        word3 = 0
        if self.relay is not RelayState.CLOSED:
            word3 |= 1 << 4  # relay state: open
        if self.relay_command is not RelayState.CLOSED:
            word3 |= 1 << 6  # relay command: trip
        if self.prepaid is not None:
            word3 |= 1 << 8  # amount prepaid meter
        if self.keep_power:
            word3 |= 1 << 12  # keep-power (保电)
        word7 = 0x0002 if self.cover_open else 0
        return (word1, 0, word3, 0, 0, 0, word7)

    # ------------------------------------------------------------ history access

    def daily_freeze(self, last: int) -> FreezeRecord | None:
        """The ``last``-th latest daily freeze (1 = yesterday's 00:00)."""
        return _nth_latest(self.daily, last)

    def monthly_freeze(self, last: int) -> FreezeRecord | None:
        return _nth_latest(self.monthly, last)


def _nth_latest(records: deque[FreezeRecord], last: int) -> FreezeRecord | None:
    if not 1 <= last <= len(records):
        return None
    return records[-last]
