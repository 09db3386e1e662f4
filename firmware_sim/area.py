"""A transformer area (台区): households behind meters, and the supply meter at the transformer.

The supply meter measures what really leaves the transformer: every household circuit
(whatever its meter registers), the technical loss of the low-voltage network (a configured
percentage of the delivered power) and theft (an unmetered tap). Everything is integrated
from the same piecewise-constant loads in integer microjoules, so

    supply net import = Σ household circuits + technical loss + theft      (exactly)

and :meth:`TransformerArea.balance` shows it. Scenario knobs per household: bypass (the
meter sees only part of the load), reversed wiring, 串户 (a household wired through its
neighbour's meter), dead meter, drifting clock, prepaid or postpaid, protected customer
(keep-power set, so trips are refused), plus any scheduled :class:`MeterFault`.

:meth:`TransformerArea.advance` is the one way time moves: it brings every meter up to the
same instant, splitting at scheduled faults and at local midnights (where the ground truth
snapshot is taken, see :mod:`firmware_sim.truth`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal

from firmware_sim.clock import MeterClock, SimClock, from_us, to_us
from firmware_sim.device import Device
from firmware_sim.load import (
    CompositeLoad,
    CustomerClass,
    Load,
    LoadProfile,
    integrate,
)
from firmware_sim.meter import Meter, MeterFault, PrepaidParameters, kwh
from firmware_sim.responders import Dlt645Responder, Dlt698Responder, ModbusResponder
from shared_protocol.dlt645 import Standard
from shared_protocol.timebase import DEFAULT_METER_ZONE, meter_time_to_utc, utc_to_meter_time

__all__ = ["AreaBalance", "HouseholdSpec", "TransformerArea", "TruthSnapshot"]

PROTOCOLS = ("dlt645-2007", "dlt645-1997", "dlt698.45", "modbus-rtu")
DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True)
class HouseholdSpec:
    """One customer and the meter billed for them.

    ``wired_to``: 串户 — this household's circuit runs through the meter of account
    ``wired_to`` (give both households of a swapped pair each other's account).
    ``bypass_percent``: the meter registers only (100 − x) % of what flows.
    """

    account: str
    address: str
    protocol: str = "dlt645-2007"
    customer_class: CustomerClass = CustomerClass.RESIDENTIAL
    scale: float = 1.0
    pv_peak_watts: int = 0
    prepaid: bool = False
    protected: bool = False
    bypass_percent: int = 0
    reversed_wiring: bool = False
    wired_to: str | None = None
    dead: bool = False
    drift_ppm: float = 0.0
    allow_plaintext_remote_control: bool = False
    unit_id: int = 1
    modbus_model: str = "sdm120"
    faults: tuple[MeterFault, ...] = ()

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"household {self.account}: protocol must be one of {PROTOCOLS}")
        if not 0 <= self.bypass_percent <= 100:
            raise ValueError(f"household {self.account}: bypass_percent must be 0..100")

    def anomalies(self) -> list[str]:
        found = []
        if self.bypass_percent:
            found.append(f"bypass:{self.bypass_percent}%")
        if self.reversed_wiring:
            found.append("reversed_wiring")
        if self.wired_to:
            found.append(f"cross_wired:{self.wired_to}")
        if self.dead:
            found.append("dead_meter")
        if self.drift_ppm:
            found.append(f"clock_drift:{self.drift_ppm:g}ppm")
        return found


class _Circuit:
    """The power through one meter's circuit (what the supply meter sees of it)."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def power(self, utc_us: int) -> tuple[int, int]:
        return self.meter.circuit_power(utc_us)

    def next_change(self, utc_us: int) -> int:
        return self.meter.load.next_change(utc_us)


class _Loss:
    """Technical loss: ``ppm`` millionths of the delivered power, always drawn."""

    def __init__(self, delivered: Load, ppm: int) -> None:
        self.delivered = delivered
        self.ppm = ppm

    def power(self, utc_us: int) -> tuple[int, int]:
        p, q = self.delivered.power(utc_us)
        return abs(p) * self.ppm // 1_000_000, abs(q) * self.ppm // 1_000_000

    def next_change(self, utc_us: int) -> int:
        return self.delivered.next_change(utc_us)


class _Gated:
    """A household's own load, live only while the meter it is wired through conducts."""

    def __init__(self, load: Load, through: Meter) -> None:
        self.load = load
        self.through = through

    def power(self, utc_us: int) -> tuple[int, int]:
        return self.load.power(utc_us) if self.through.connected else (0, 0)

    def next_change(self, utc_us: int) -> int:
        return self.load.next_change(utc_us)


@dataclass(frozen=True)
class AreaBalance:
    """Energy since the start, µJ (net import; export counts negative)."""

    supply_uj: int
    households_uj: int
    loss_uj: int
    theft_uj: int

    @property
    def holds(self) -> bool:
        return self.supply_uj == self.households_uj + self.loss_uj + self.theft_uj

    def as_kwh(self) -> dict[str, Decimal]:
        return {
            name: kwh(getattr(self, f"{name}_uj"), 4)
            for name in ("supply", "households", "loss", "theft")
        }


@dataclass(frozen=True)
class TruthSnapshot:
    """Counters at one area-local midnight, per account (µJ)."""

    time: datetime  # area local time (naive)
    household_uj: dict[str, int]  # what the household really drew (net)
    register_import_uj: dict[str, int]
    register_export_uj: dict[str, int]
    addresses: dict[str, str]
    anomalies: dict[str, tuple[str, ...]]
    loss_uj: int
    theft_uj: int
    supply_uj: int


class TransformerArea:
    """Households, their meters and the supply meter, advanced together."""

    def __init__(
        self,
        households: Sequence[HouseholdSpec],
        start: datetime,
        *,
        name: str = "area-1",
        seed: int = 0,
        loss_percent: Decimal = Decimal("3"),
        theft: Load | None = None,
        clock: SimClock | None = None,
        supply_address: str = "990000000001",
        zone: str = DEFAULT_METER_ZONE,
    ) -> None:
        accounts = [h.account for h in households]
        if len(set(accounts)) != len(accounts):
            raise ValueError("household accounts must be unique")
        for h in households:
            if h.wired_to is not None and h.wired_to not in accounts:
                raise ValueError(f"household {h.account}: wired_to {h.wired_to!r} is unknown")
        self.name = name
        self.seed = seed
        self.zone = zone
        self.clock = clock
        self.households = {h.account: h for h in households}
        self.loads: dict[str, LoadProfile] = {
            h.account: LoadProfile(
                h.customer_class,
                seed=seed * 100_003 + i,
                scale=h.scale,
                pv_peak_watts=h.pv_peak_watts,
            )
            for i, h in enumerate(households)
        }
        self.meters: dict[str, Meter] = {}
        for i, h in enumerate(households):
            through = [
                self.loads[o.account] for o in households if (o.wired_to or o.account) == h.account
            ]
            meter_load: Load = through[0] if len(through) == 1 else CompositeLoad(tuple(through))
            meter = Meter(
                h.address,
                meter_load,
                start,
                seed=seed * 100_003 + i,
                clock=MeterClock(zone, drift_ppm=h.drift_ppm),
                phases=3 if h.customer_class is CustomerClass.SMALL_INDUSTRIAL else 1,
                prepaid=PrepaidParameters() if h.prepaid else None,
                allow_plaintext_remote_control=h.allow_plaintext_remote_control,
                registration=(100 - h.bypass_percent, 100),
                reversed_wiring=h.reversed_wiring,
                faults=h.faults,
            )
            meter.dead = h.dead
            meter.keep_power = h.protected
            self.meters[h.account] = meter
        self._household_loads: dict[str, Load] = {
            h.account: _Gated(self.loads[h.account], self.meters[h.wired_to or h.account])
            for h in households
        }
        circuits = CompositeLoad(tuple(_Circuit(m) for m in self.meters.values()))
        self.theft = theft
        delivered: Load = circuits if theft is None else CompositeLoad((circuits, theft))
        self.loss_ppm = int(loss_percent * 10_000)
        self._loss = _Loss(delivered, self.loss_ppm)
        self.supply = Meter(
            supply_address,
            CompositeLoad((delivered, self._loss)),
            start,
            seed=seed * 100_003 + 99_999,
            clock=MeterClock(zone),
            phases=3,
        )
        self._t = to_us(start)
        self.loss_uj = 0
        self.theft_uj = 0
        self.household_uj: dict[str, int] = dict.fromkeys(self.households, 0)
        self.truth: list[TruthSnapshot] = []
        self._next_midnight = self._midnight_after(self._t)
        self._devices: dict[str, Device] | None = None
        self.lock = threading.RLock()  # shared by every responder of the area

    # ------------------------------------------------------------ time

    @property
    def now(self) -> datetime:
        return from_us(self._t)

    def _midnight_after(self, utc_us: int) -> int:
        """The first local midnight (area zone) strictly after ``utc_us``."""
        local = utc_to_meter_time(from_us(utc_us), self.zone)
        midnight = datetime.combine(local.date() + timedelta(days=1), time(0, 0))
        return to_us(meter_time_to_utc(midnight, self.zone))

    def advance(self, until: datetime | int) -> None:
        """Bring every meter to ``until`` (aware UTC or µs), in step."""
        end = until if isinstance(until, int) else to_us(until)
        with self.lock:
            self._advance(end)

    def _advance(self, end: int) -> None:
        while self._t < end:
            stop = min(end, self._next_midnight)
            for meter in self.meters.values():
                due = meter.next_fault_us()
                if due is not None and self._t < due < stop:
                    stop = due
            self._step(stop)
            if self._t == self._next_midnight:
                self._snapshot_truth()
                self._next_midnight = self._midnight_after(self._t)

    def fast_forward(self, delta: timedelta) -> None:
        """Advance the area (and its SimClock, if any) by ``delta`` instantly."""
        if self.clock is not None:
            self.clock.fast_forward(delta)
            self.advance(self.clock.now_us())
        else:
            self.advance(self._t + delta // timedelta(microseconds=1))

    def _step(self, stop: int) -> None:
        start = self._t
        for meter in self.meters.values():
            meter.advance(stop)  # faults due exactly at ``stop`` wait for the next step
        for account, load in self._household_loads.items():
            self.household_uj[account] += _net(load, start, stop)
        if self.theft is not None:
            self.theft_uj += _net(self.theft, start, stop)
        self.loss_uj += _net(self._loss, start, stop)
        self.supply.advance(stop)
        self._t = stop

    def _snapshot_truth(self) -> None:
        self.truth.append(
            TruthSnapshot(
                time=utc_to_meter_time(from_us(self._t), self.zone),
                household_uj=dict(self.household_uj),
                register_import_uj={a: m.snapshot().import_uj[0] for a, m in self.meters.items()},
                register_export_uj={a: m.snapshot().export_uj[0] for a, m in self.meters.items()},
                addresses={a: m.address for a, m in self.meters.items()},
                anomalies={a: tuple(self._anomalies(a)) for a in self.meters},
                loss_uj=self.loss_uj,
                theft_uj=self.theft_uj,
                supply_uj=_meter_net(self.supply),
            )
        )

    def _anomalies(self, account: str) -> list[str]:
        meter = self.meters[account]
        found = self.households[account].anomalies()
        if meter.stuck:
            found.append("stuck_register")
        if meter.dead and "dead_meter" not in found:
            found.append("dead_meter")
        if meter.address_history:
            found.append("meter_replaced")
        error = meter.clock.error(self._t)
        if abs(error) >= timedelta(minutes=5):
            found.append(f"clock_error:{int(error.total_seconds())}s")
        if meter.relay_fails:
            found.append("relay_fails")
        return found

    # ------------------------------------------------------------ views

    def balance(self) -> AreaBalance:
        circuits = sum(m.circuit_import_uj - m.circuit_export_uj for m in self.meters.values())
        return AreaBalance(_meter_net(self.supply), circuits, self.loss_uj, self.theft_uj)

    def devices(self) -> dict[str, Device]:
        """One Device per meter, keyed by account (the supply meter under ``"supply"``)."""
        if self._devices is None:
            devices: dict[str, Device] = {}
            for account, meter in self.meters.items():
                devices[account] = self._device(self.households[account], meter)
            devices["supply"] = Dlt698Responder(
                self.supply, self.clock, sync=self.advance, lock=self.lock
            )
            self._devices = devices
        return self._devices

    def _device(self, spec: HouseholdSpec, meter: Meter) -> Device:
        if spec.protocol == "dlt698.45":
            return Dlt698Responder(meter, self.clock, sync=self.advance, lock=self.lock)
        if spec.protocol == "modbus-rtu":
            return ModbusResponder(
                meter,
                self.clock,
                unit_id=spec.unit_id,
                model=spec.modbus_model,
                sync=self.advance,
                lock=self.lock,
            )
        standard = Standard.DLT645_1997 if spec.protocol == "dlt645-1997" else Standard.DLT645_2007
        return Dlt645Responder(
            meter, self.clock, standard=standard, sync=self.advance, lock=self.lock
        )


def _net(load: Load, start: int, stop: int) -> int:
    p, _ = integrate(load, start, stop)
    return p


def _meter_net(meter: Meter) -> int:
    snapshot = meter.snapshot()
    return snapshot.import_uj[0] - snapshot.export_uj[0]
