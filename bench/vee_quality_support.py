"""The simulated meters of ``bench/vee_quality.py`` and the faults injected into their data.

``firmware_sim`` meters (residential, commercial and small-industrial load profiles) measure
a stretch of local days in Shanghai; what they measured is the truth. A fault plan then
picks, for each class of fault in :data:`FAULT_CLASSES`, about 2 % of the units that class
lives on (readings of its channel, freeze blocks, meter-days, meters), changes the data the
gateway sends accordingly, and records which exception VEE should raise for each fault
(:class:`Expectation`) and which readings and meter-days the fault touched (the rest is
clean: an exception there is a false positive).

Faults that change what the meter itself measures (a day of four times the usual load, a
bypass, a stuck register) are simulated: the meter model measures them, so its curves,
registers and freezes stay consistent with each other as a real meter's would. The others
are what goes wrong between the meter and central (a corrupted value, a wrong unit, a point
lost or stamped off the grid, a clock that is off) and are applied to the readings sent.

Faults are placed so that one does not hide another: at most one meter-day fault per
meter-day, reading faults only on meter-days without one and never on neighbouring register
points, and no freeze VEE holds inside the history a V5 fault is judged against. What VEE
does when faults do meet is a separate question this bench does not answer.

Times: the utility's zone is Asia/Shanghai, so local day D runs from D−1 16:00 UTC to
D 16:00 UTC, and the daily freeze that closes D is stamped D 16:00 UTC.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Final
from zoneinfo import ZoneInfo

from central.ingest.store import IncomingEvent, IncomingReading
from central.vee import RuleSet, day_window
from central.vee.parameters import Parameters
from firmware_sim.load import SHAPES, CustomerClass, Load, LoadProfile
from firmware_sim.meter import FaultKind, Meter, MeterFault

ZONE: Final = ZoneInfo("Asia/Shanghai")
#: A Wednesday. April keeps every class shape's monthly factor flat over three weeks, so a
#: V5 fault is judged against a history of the same season.
FIRST_DAY: Final = date(2026, 4, 1)
QUARTER: Final = timedelta(minutes=15)
QUARTERS: Final = 96
POWER: Final = "1-0:16.7.0"  # active power, kW: the 15-minute load profile
IMPORT: Final = "1-0:1.8.0"  # import energy total, kWh: register curve and daily freezes
BLOCK: Final = tuple(f"1-0:1.8.{t}" for t in range(5))  # a freeze: total and 尖峰平谷
VOLTAGE: Final = "1-0:32.7.0"  # phase A voltage, read hourly as an instant reading
GATEWAY: Final = "gw-quality"
RATE: Final = 0.02  # the reference's "2 % injected faults of each class"
#: Standard CT ratios (x/5 A): C&I meters are sized for their customer's load.
CT_RATIOS: Final = (5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 400, 600, 800)
KW: Final = Decimal("0.001")
KWH: Final = Decimal("0.01")


@dataclass(frozen=True)
class FaultClass:
    """One kind of fault, the rule that should catch it, and how it is injected."""

    name: str
    rule: str
    unit: str  # what one fault is: the recall's denominator counts these
    injected_as: str


#: The classes covered, in the order of the report. Rates: about 2 % of the unit's
#: population (register points, power points, voltage readings, freeze blocks, meter-days
#: or meters), at least one.
FAULT_CLASSES: Final = (
    FaultClass("duplicate", "V2", "reading",
               "a wrong version of a register point sent just before it in the same batch"),
    FaultClass("clock_off", "V3", "reading",
               "an hourly voltage stamped 61-300 s, 301-3600 s or a year off its read time"),
    FaultClass("register_back", "V7", "reading",
               "a register point 0.01 kWh to 1 MWh below the one before it (倒走)"),
    FaultClass("register_jump", "V9", "reading",
               "a register point risen 1.1-100 × what the meter can measure in 15 min (飞走)"),
    FaultClass("power_over", "V9", "reading",
               "a power point at 1.05-10 × the meter's rating × V9's margin"),
    FaultClass("tariff_sum", "V10", "freeze",
               "one tariff register of a daily freeze off by 1.5-20 × V10's tolerance"),
    FaultClass("wrong_unit", "V11", "reading",
               "a register point sent in Wh (value × 1000)"),
    FaultClass("off_grid", "V12", "reading",
               "an extra register point 1-899 s off the 15-minute grid"),
    FaultClass("removed_meter", "V16", "reading",
               "readings of a meter after it was marked removed"),
    FaultClass("unknown_meter", "V16", "reading",
               "readings of a meter in no gateway's archive"),
    FaultClass("gap", "V1", "meter-day",
               "1-16 quarters lost on both curves (and the hour's voltage)"),
    FaultClass("spike", "V4", "meter-day",
               "one power point at 1.6-3 × the day's highest"),
    FaultClass("curve_vs_freeze", "V10", "meter-day",
               "a day's power curve × 0.5-0.85 or × 1.15-2 (a profile multiplier fault)"),
    FaultClass("frozen", "V13", "meter-day",
               "8-24 power points repeating one value (a concentrator holding the last)"),
    FaultClass("high_day", "V5", "meter-day",
               "a day of 4-5 × the load (simulated: the meter measures it)"),
    FaultClass("low_day", "V5", "meter-day",
               "a day the meter registers 5-12 % of the load (simulated bypass)"),
    FaultClass("zero_days", "V6", "meter-day",
               "the register stuck for 1-3 days while the load flows (simulated)"),
    FaultClass("long_estimation", "V14", "meter-day",
               "gaps on 4-5 days in a row; V14 expected from the 4th day"),
    FaultClass("theft_event", "V15", "event", "a cover-open event"),
    FaultClass("om_event", "V15", "event", "a programming or clock-set event"),
)  # fmt: skip


@dataclass(frozen=True)
class MeterSpec:
    """A simulated customer and how its meter is rated (what central's settings say)."""

    meter: str
    customer_class: CustomerClass
    seed: int
    scale: float
    initial_kwh: Decimal
    phases: int = 1
    max_current_a: int = 60
    ct_ratio: int = 1

    @property
    def rating_kw(self) -> Decimal:
        """Imax · Un · phases · CT: the most the meter measures (V9, before its margin)."""
        return Decimal(self.max_current_a * 220 * self.phases * self.ct_ratio) / 1000

    @property
    def rated(self) -> bool:
        """Whether central needs a settings row (a direct single-phase meter is V9's default)."""
        return self.phases != 1 or self.ct_ratio != 1 or self.max_current_a != 60


def make_specs(count: int, seed: int) -> list[MeterSpec]:
    """``count`` customers: 70 % residential, 20 % commercial, 10 % small industrial. A C&I
    meter is three-phase 1.5(6) A behind the smallest standard CT that measures six times
    its customer's nominal peak."""
    rng = random.Random(f"vee-quality-meters:{seed}")
    specs = []
    classes = (CustomerClass.RESIDENTIAL, CustomerClass.COMMERCIAL, CustomerClass.SMALL_INDUSTRIAL)
    for n in range(count):
        cls = rng.choices(classes, weights=(70, 20, 10))[0]
        meter = f"99{n + 1:010d}"
        if cls is CustomerClass.RESIDENTIAL:
            scale = rng.uniform(0.6, 1.5)
            initial = Decimal(rng.randint(500, 30_000))
            specs.append(MeterSpec(meter, cls, seed * 100_000 + n, scale, initial))
            continue
        scale = rng.uniform(0.5, 2.0)
        initial = Decimal(rng.randint(5_000, 400_000))
        shape = SHAPES[cls]
        peak_kw = shape.mean_watts * scale * max(shape.hourly) / 1000
        per_ct = 6 * 220 * 3 / 1000  # kW measured per unit of CT ratio
        ct = next(r for r in CT_RATIOS if r * per_ct >= 6 * peak_kw)
        specs.append(MeterSpec(meter, cls, seed * 100_000 + n, scale, initial, 3, 6, ct))
    return specs


# -- simulation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaledDays:
    """``load`` × a factor over some windows of time (whole local days): a day of unusual
    use, or a bypass that hides most of the load from the meter."""

    load: Load
    windows: tuple[tuple[int, int, float], ...]  # [start µs, end µs), factor

    def power(self, utc_us: int) -> tuple[int, int]:
        p, q = self.load.power(utc_us)
        for start, end, factor in self.windows:
            if start <= utc_us < end:
                return round(p * factor), round(q * factor)
        return p, q

    def next_change(self, utc_us: int) -> int:
        # Windows start and end at local midnight, on the load's 15-minute slot grid.
        return self.load.next_change(utc_us)


@dataclass
class MeterTruth:
    """What one simulated meter measured (times aware UTC)."""

    spec: MeterSpec
    power: dict[datetime, Decimal] = field(default_factory=dict)  # kW over [t, t + 15 min)
    register: dict[datetime, Decimal] = field(default_factory=dict)  # import kWh at t
    freezes: dict[datetime, tuple[Decimal, ...]] = field(default_factory=dict)  # BLOCK order
    voltage: dict[datetime, Decimal] = field(default_factory=dict)  # at each full hour


def local_midnight(day_index: int) -> datetime:
    return day_window(FIRST_DAY + timedelta(days=day_index))[0]


def simulate(
    spec: MeterSpec,
    days: int,
    scaled: tuple[tuple[int, int, float], ...] = (),
    faults: Sequence[MeterFault] = (),
) -> MeterTruth:
    """Run ``spec``'s meter over ``days`` local days from :data:`FIRST_DAY` (with the
    freeze and register at the midnight closing the last one)."""
    start, end = local_midnight(0), local_midnight(days)
    profile = LoadProfile(spec.customer_class, seed=spec.seed, scale=spec.scale)
    load: Load = ScaledDays(profile, scaled) if scaled else profile
    meter = Meter(
        spec.meter,
        load,
        start - QUARTER,
        seed=spec.seed,
        phases=spec.phases,
        initial_import_kwh=spec.initial_kwh,
        faults=faults,
    )
    truth = MeterTruth(spec)
    last: datetime | None = None
    for d in range(days):
        meter.advance(local_midnight(d + 1) + timedelta(minutes=1))
        # The meter keeps ten days of curve: take each day's points as they come.
        for point in meter.curve:
            ts = point.time.replace(tzinfo=ZONE).astimezone(UTC)
            if (last is not None and ts <= last) or not start <= ts <= end:
                continue
            last = ts
            truth.register[ts] = point.registers.import_kwh()
            if ts < end:
                truth.power[ts] = Decimal(point.active_w).scaleb(-3)
                if ts.minute == 0:
                    truth.voltage[ts] = point.voltage
    for frozen in meter.daily:
        ts = frozen.time.replace(tzinfo=ZONE).astimezone(UTC)
        if start <= ts <= end:
            truth.freezes[ts] = tuple(frozen.registers.import_kwh(t) for t in range(5))
    return truth


def noise_free_kw(spec: MeterSpec, ts: datetime) -> Decimal:
    """The load profile's value at ``ts`` without its per-slot noise: the best any
    estimate could know (a reference for estimation's point error)."""
    profile = LoadProfile(spec.customer_class, seed=spec.seed, scale=spec.scale, noise=0.0)
    micros = (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return Decimal(profile.power(micros)[0]).scaleb(-3)


# -- what VEE should say -----------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """An exception VEE should raise: ``rule`` on ``meter`` and ``obis`` (None: about the
    meter as a whole) with its time in [first, last], from close_day's ``day`` (None: the
    in-line pass), with ``detail`` entries as given."""

    rule: str
    meter: str
    obis: str | None
    first: datetime
    last: datetime
    day: date | None = None
    detail: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Fault:
    """One injected fault; detected when every expectation is met."""

    cls: str
    expect: tuple[Expectation, ...]


Key = tuple[str, str, datetime]


@dataclass(frozen=True)
class Rating:
    """A row of central's meter settings (``central vee meter``) from ``effective_from``."""

    meter: str
    effective_from: datetime
    phases: int
    max_current_a: int
    ct_ratio: int
    active: bool = True

    @classmethod
    def of(cls, spec: MeterSpec, effective_from: datetime, active: bool = True) -> Rating:
        phases, current, ct = spec.phases, spec.max_current_a, spec.ct_ratio
        return cls(spec.meter, effective_from, phases, current, ct, active)


@dataclass
class Outgoing:
    """A reading as the gateway will send it; ``wrong_first``: a wrong version sent just
    before it in the same batch (V2)."""

    meter: str
    obis: str
    time: datetime
    value: Decimal
    unit: str
    kind: str
    read_at: datetime
    wrong_first: Decimal | None = None

    def incoming(self, value: Decimal | None = None) -> IncomingReading:
        return IncomingReading(
            0,
            self.meter,
            self.obis,
            self.time,
            self.value if value is None else value,
            self.unit,
            self.kind,
            "scheduled",
            "ok",
            self.read_at,
        )


@dataclass
class Injected:
    """The area's data with its faults, ready to ingest, and what VEE should make of it."""

    readings: dict[Key, Outgoing]  # by the key the reading had in the truth
    events: list[IncomingEvent]
    archive: list[str]
    settings: list[Rating]
    faults: list[Fault]
    touched_keys: dict[Key, str]  # reading key as sent -> the fault class touching it
    touched_days: dict[tuple[str, date], str]  # (meter, local day) -> fault class

    def batches(self, size: int) -> Iterator[tuple[list[IncomingReading], list[IncomingEvent]]]:
        """Records in the order the gateway collected them (read time), numbered, in
        batches of about ``size``; a wrong version and its correction share a batch."""
        items: list[tuple[datetime, str, str, datetime, list[IncomingReading | IncomingEvent]]]
        items = []
        for r in self.readings.values():
            group: list[IncomingReading | IncomingEvent] = [r.incoming()]
            if r.wrong_first is not None:
                group.insert(0, r.incoming(r.wrong_first))
            items.append((r.read_at, r.meter, r.obis, r.time, group))
        for e in self.events:
            items.append((e.at + timedelta(minutes=10), e.meter or "", e.code, e.at, [e]))
        items.sort(key=lambda item: item[:4])
        seq = 0
        readings: list[IncomingReading] = []
        events: list[IncomingEvent] = []
        for *_, group in items:
            for record in group:
                seq += 1
                if isinstance(record, IncomingReading):
                    readings.append(replace(record, seq=seq))
                else:
                    events.append(replace(record, seq=seq))
            if len(readings) + len(events) >= size:
                yield readings, events
                readings, events = [], []
        if readings or events:
            yield readings, events


# -- the fault plan ------------------------------------------------------------------------


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _quantize(value: Decimal | float, step: Decimal, rounding: str = ROUND_FLOOR) -> Decimal:
    return Decimal(str(value)).quantize(step, rounding=rounding)


def _count(population: int) -> int:
    return max(1, round(RATE * population))


@dataclass
class _Calendar:
    """Stage one of the plan: which meter-days, meters and freezes carry which fault."""

    days: int
    removed: dict[str, datetime]  # meter -> removed from
    unknown: set[str]
    normal: list[str]
    day_faults: dict[tuple[str, int], str] = field(default_factory=dict)
    factors: dict[tuple[str, int], float] = field(default_factory=dict)  # high/low days
    zero_runs: list[tuple[str, int, int]] = field(default_factory=list)  # meter, first, days
    long_runs: list[tuple[str, int, int]] = field(default_factory=list)
    tariff_blocks: set[tuple[str, int]] = field(default_factory=set)  # meter, midnight index
    # Day indexes whose closing freeze VEE will hold (no V5 history then).
    held: dict[str, set[int]] = field(default_factory=dict)

    def free(self, meter: str, day: int) -> bool:
        return 0 <= day < self.days and (meter, day) not in self.day_faults


def _weekend(day: int) -> bool:
    return (FIRST_DAY + timedelta(days=day)).weekday() >= 5


def _v5_history(cal: _Calendar, meter: str, day: int, params: Parameters) -> int:
    """Same-type days before ``day`` (within V5's window) whose closing freeze is not held."""
    held = cal.held.get(meter, set())
    since = max(0, day - params.integer("V5", "history_days"))
    return sum(1 for d in range(since, day) if _weekend(d) == _weekend(day) and d not in held)


def _v5_still_judged(cal: _Calendar, meter: str, params: Parameters) -> bool:
    """Every V5 fault of ``meter`` keeps the history V5 needs to judge it."""
    enough = params.integer("V5", "min_history_days")
    return all(
        _v5_history(cal, m, d, params) >= enough
        for (m, d), cls in cal.day_faults.items()
        if m == meter and cls in ("high_day", "low_day")
    )


def plan_calendar(
    meters: Sequence[str], days: int, rng: random.Random, params: Parameters
) -> _Calendar:
    """Stage one: place the faults that need no values (which meter-day, meter, freeze)."""
    shuffled = list(meters)
    rng.shuffle(shuffled)
    n_special = _count(len(meters))
    removed = {
        m: local_midnight(rng.randint(days // 3, 2 * days // 3))
        + timedelta(hours=rng.uniform(6, 18))
        for m in shuffled[:n_special]
    }
    unknown = set(shuffled[n_special : 2 * n_special])
    normal = sorted(set(meters) - set(removed) - unknown)
    cal = _Calendar(days, removed, unknown, normal)
    meter_days = [(m, d) for m in normal for d in range(days)]
    per_class = _count(len(meter_days))
    enough = params.integer("V5", "min_history_days")

    def candidates() -> list[tuple[str, int]]:
        found = list(meter_days)
        rng.shuffle(found)
        return found

    # V5 first: each needs enough unheld history of its day type, which later faults keep.
    for cls in ("high_day", "low_day"):
        placed = 0
        for m, d in candidates():
            if placed == per_class:
                break
            if not cal.free(m, d) or _v5_history(cal, m, d, params) < enough:
                continue
            cal.day_faults[m, d] = cls
            cal.held.setdefault(m, set()).add(d)
            if not _v5_still_judged(cal, m, params):
                del cal.day_faults[m, d]
                cal.held[m].discard(d)
                continue
            cal.factors[m, d] = rng.uniform(4, 5) if cls == "high_day" else rng.uniform(0.05, 0.12)
            placed += 1
    # Zero days after a meter's V5 days (zero days count in V5's history: V6 information
    # days are not held), from day 1 (V6 needs non-zero history), 1-3 days in a row.
    placed = 0
    for m, d in candidates():
        if placed >= per_class:
            break
        length = min(rng.randint(1, 3), per_class - placed)
        last_v5 = max(
            (x for (y, x), c in cal.day_faults.items() if y == m and c in ("high_day", "low_day")),
            default=-1,
        )
        run = range(d, d + length)
        if d < 1 or d <= last_v5 or not all(cal.free(m, x) for x in run):
            continue
        if "zero_days" in (cal.day_faults.get((m, d - 1)), cal.day_faults.get((m, d + length))):
            continue  # two runs back to back would be one longer run
        for x in run:
            cal.day_faults[m, x] = "zero_days"
        if length >= params.integer("V6", "sustained_days"):
            cal.held.setdefault(m, set()).add(d + length - 1)
        cal.zero_runs.append((m, d, length))
        placed += length
    # Gaps on 4-5 days in a row: V14 (more than max_days days estimated) from the 4th.
    max_days = params.integer("V14", "max_days")
    runs = _count(len(normal))
    for m, d in candidates():
        if len(cal.long_runs) == runs:
            break
        length = rng.randint(max_days + 1, max_days + 2)
        if not all(cal.free(m, x) for x in range(d - 1, d + length + 1) if 0 <= x < days):
            continue
        if d + length > days:
            continue
        for x in range(d, d + length):
            cal.day_faults[m, x] = "long_estimation"
        cal.long_runs.append((m, d, length))
    for cls in ("gap", "spike", "curve_vs_freeze", "frozen", "theft_event", "om_event"):
        placed = 0
        for m, d in candidates():
            if placed == per_class:
                break
            # A lone gap next to a long run would lengthen it: keep gaps apart from runs.
            if not cal.free(m, d) or (
                cls == "gap"
                and any(cal.day_faults.get((m, x)) == "long_estimation" for x in (d - 1, d + 1))
            ):
                continue
            cal.day_faults[m, d] = cls
            placed += 1
    # Tariff faults: a freeze between two days without a day fault, and not inside the
    # history of a V5 fault (V10 holds the total, so the day it closes is no history).
    blocks = [(m, b) for m in normal for b in range(days + 1)]
    rng.shuffle(blocks)
    wanted = _count(len(blocks))
    for m, b in blocks:
        if len(cal.tariff_blocks) == wanted:
            break
        if (m, b - 1) in cal.day_faults or (m, b) in cal.day_faults:
            continue
        cal.held.setdefault(m, set()).add(b - 1)
        if not _v5_still_judged(cal, m, params):
            cal.held[m].discard(b - 1)
            continue
        cal.tariff_blocks.add((m, b))
    return cal


def physical_faults(
    cal: _Calendar,
) -> dict[str, tuple[tuple[tuple[int, int, float], ...], tuple[MeterFault, ...]]]:
    """The faults the meter itself measures: scaled days (V5) and stuck registers (V6)."""
    out: dict[str, tuple[list[tuple[int, int, float]], list[MeterFault]]] = {}
    epoch = datetime(1970, 1, 1, tzinfo=UTC)

    def micros(moment: datetime) -> int:
        return (moment - epoch) // timedelta(microseconds=1)

    for (m, d), factor in cal.factors.items():
        window = (micros(local_midnight(d)), micros(local_midnight(d + 1)), factor)
        out.setdefault(m, ([], []))[0].append(window)
    for m, d, length in cal.zero_runs:
        faults = out.setdefault(m, ([], []))[1]
        faults.append(MeterFault(local_midnight(d), FaultKind.STUCK_REGISTER))
        faults.append(MeterFault(local_midnight(d + length), FaultKind.UNSTICK_REGISTER))
    return {m: (tuple(w), tuple(f)) for m, (w, f) in out.items()}


def _outgoing(truth: MeterTruth, days: int, rng: random.Random) -> dict[Key, Outgoing]:
    """Everything a healthy gateway would send for this meter: the power and register
    curves (the register's midnight point is the daily freeze), the freezes, and hourly
    instant voltages read within 20 s of their time."""
    m = truth.spec.meter
    out: dict[Key, Outgoing] = {}
    midnights = {local_midnight(d) for d in range(days + 1)}
    for ts, value in truth.power.items():
        out[m, POWER, ts] = Outgoing(m, POWER, ts, value, "kW", "curve", ts + QUARTER)
    for ts, value in truth.register.items():
        if ts not in midnights:
            out[m, IMPORT, ts] = Outgoing(m, IMPORT, ts, value, "kWh", "curve", ts + QUARTER)
    for ts, block in truth.freezes.items():
        for obis, value in zip(BLOCK, block, strict=True):
            read = ts + timedelta(minutes=5)
            out[m, obis, ts] = Outgoing(m, obis, ts, value, "kWh", "daily", read)
    for ts, value in truth.voltage.items():
        read = ts + timedelta(seconds=rng.randint(0, 20))
        out[m, VOLTAGE, ts] = Outgoing(m, VOLTAGE, read, value, "V", "instant", read)
    return out


class _Plan:
    """Stage two: the faults applied to the simulated data."""

    def __init__(
        self, cal: _Calendar, truths: dict[str, MeterTruth], rng: random.Random, params: Parameters
    ) -> None:
        self.cal, self.truths, self.rng, self.params = cal, truths, rng, params
        self.readings: dict[Key, Outgoing] = {}
        self.events: list[IncomingEvent] = []
        self.faults: list[Fault] = []
        self.touched_keys: dict[Key, str] = {}
        self.touched_days: dict[tuple[str, date], str] = {}
        self.margin = params.decimal("V9", "margin")

    def limit_kw(self, meter: str) -> Decimal:
        return self.truths[meter].spec.rating_kw * self.margin

    def touch(
        self, cls: str, keys: Iterable[Key] = (), days: Iterable[tuple[str, int]] = ()
    ) -> None:
        """Mark readings (by their key in the truth, or as sent) and meter-days as the
        fault's: an exception there is not a false positive."""
        for key in keys:
            self.touched_keys[self.sent_key(key) if key in self.readings else key] = cls
        for m, d in days:
            self.touched_days[m, FIRST_DAY + timedelta(days=d)] = cls

    def expect(self, cls: str, *expectations: Expectation) -> None:
        self.faults.append(Fault(cls, expectations))

    def sent_key(self, key: Key) -> Key:
        r = self.readings[key]
        return (r.meter, r.obis, r.time)

    def build(self) -> Injected:
        cal, days = self.cal, self.cal.days
        for m in sorted(self.truths):
            self.readings.update(_outgoing(self.truths[m], days, self.rng))
        for m, since in cal.removed.items():
            for key, r in self.readings.items():
                if r.meter == m and r.time >= since:
                    self.expect("removed_meter", self.exact("V16", key))
                    self.touch("removed_meter", [key])
            first = (since - local_midnight(0)) // timedelta(days=1)
            self.touch("removed_meter", days=[(m, d) for d in range(first, days)])
        for key, r in self.readings.items():
            if r.meter in cal.unknown:
                self.expect("unknown_meter", self.exact("V16", key))
                self.touch("unknown_meter", [key])
        for m in cal.unknown:
            self.touch("unknown_meter", days=[(m, d) for d in range(days)])
        for (m, d), cls in sorted(cal.day_faults.items()):
            getattr(self, f"_{cls}")(m, d)
        for m, d, length in cal.long_runs:
            for n, x in enumerate(range(d, d + length)):
                self._lose(m, x, self.rng.randint(1, 4), "long_estimation")
                if n >= self.params.integer("V14", "max_days"):
                    start = local_midnight(x)
                    self.expect(
                        "long_estimation",
                        Expectation("V14", m, None, start, start, FIRST_DAY + timedelta(days=x)),
                    )
        for m, b in sorted(cal.tariff_blocks):
            self._tariff_sum(m, b)
        self._register_faults()
        self._power_over()
        self._clock_off()
        archive = sorted(set(self.truths) - cal.unknown)
        before = local_midnight(0) - timedelta(days=30)
        settings = [
            Rating.of(t.spec, before) for _, t in sorted(self.truths.items()) if t.spec.rated
        ]
        settings += [
            Rating.of(self.truths[m].spec, since, active=False) for m, since in cal.removed.items()
        ]
        return Injected(
            self.readings,
            self.events,
            archive,
            settings,
            self.faults,
            self.touched_keys,
            self.touched_days,
        )

    def exact(self, rule: str, key: Key, day: int | None = None) -> Expectation:
        m, obis, ts = self.sent_key(key)
        on = None if day is None else FIRST_DAY + timedelta(days=day)
        return Expectation(rule, m, obis, ts, ts, on)

    def day_keys(self, m: str, d: int, obis: str) -> list[Key]:
        start = local_midnight(d)
        keys = [(m, obis, start + QUARTER * k) for k in range(QUARTERS)]
        return [k for k in keys if k in self.readings]

    # -- meter-day faults (one method per class: _<class name>) ---------------------------

    def _lose(self, m: str, d: int, length: int, cls: str) -> None:
        """Quarters k .. k+length−1 of day d lost on both curves and the voltage."""
        k = self.rng.randint(1, QUARTERS - length)
        start = local_midnight(d) + QUARTER * k
        end = start + QUARTER * length
        lost = [(m, obis, start + QUARTER * n) for obis in (POWER, IMPORT) for n in range(length)]
        lost += [(m, VOLTAGE, t) for t in self.truths[m].voltage if start <= t < end]
        for key in lost:
            self.readings.pop(key, None)
        self.touch(cls, lost, [(m, d)])

    def _gap(self, m: str, d: int) -> None:
        self._lose(m, d, self.rng.randint(1, 16), "gap")
        start, on = local_midnight(d), FIRST_DAY + timedelta(days=d)
        self.expect(
            "gap",
            *(
                Expectation("V1", m, None, start, start, on, (("obis", obis),))
                for obis in (POWER, IMPORT)
            ),
        )

    def _long_estimation(self, m: str, d: int) -> None:
        pass  # the runs are built whole in build()

    def _spike(self, m: str, d: int) -> None:
        keys = self.day_keys(m, d, POWER)
        highest = max(self.readings[k].value for k in keys)
        cap = self.limit_kw(m) * Decimal("0.95")
        factor = Decimal(str(self.rng.uniform(1.6, 3.0)))
        value = _quantize(min(highest * factor, cap), KW)
        assert value >= highest * Decimal("1.55"), (m, d, value, highest)
        key = self.rng.choice(keys)
        self.readings[key].value = value
        self.touch("spike", [key], [(m, d)])
        self.expect("spike", self.exact("V4", key, d))

    def _frozen(self, m: str, d: int) -> None:
        length = self.rng.randint(8, 24)
        k = self.rng.randint(0, QUARTERS - length)
        start = local_midnight(d)
        keys = [(m, POWER, start + QUARTER * (k + n)) for n in range(length)]
        held = self.readings[keys[0]].value
        for key in keys[1:]:
            self.readings[key].value = held
        self.touch("frozen", keys, [(m, d)])
        # The run starts at k, or earlier if the points before k happen to equal it.
        first = start + QUARTER * max(0, k - 3)
        self.expect(
            "frozen",
            Expectation("V13", m, POWER, first, keys[0][2], FIRST_DAY + timedelta(days=d)),
        )

    def _curve_vs_freeze(self, m: str, d: int) -> None:
        low = self.rng.random() < 0.5
        factor = self.rng.uniform(0.5, 0.85) if low else self.rng.uniform(1.15, 2.0)
        keys = self.day_keys(m, d, POWER)
        for key in keys:
            self.readings[key].value = _quantize(self.readings[key].value * Decimal(factor), KW)
        self.touch("curve_vs_freeze", keys, [(m, d)])
        start = local_midnight(d)
        self.expect(
            "curve_vs_freeze",
            Expectation(
                "V10", m, None, start, start, FIRST_DAY + timedelta(days=d), (("obis", POWER),)
            ),
        )

    def _consumption_day(self, cls: str, rule: str, m: str, d: int) -> None:
        """A day whose freeze delta VEE should question (V5, V6): the whole meter-day is
        the fault's; the exception lands on the freeze closing the day."""
        keys = self.day_keys(m, d, POWER) + self.day_keys(m, d, IMPORT)
        keys.append((m, IMPORT, local_midnight(d + 1)))
        self.touch(cls, keys, [(m, d)])
        self.expect(cls, self.exact(rule, (m, IMPORT, local_midnight(d + 1)), d))

    def _high_day(self, m: str, d: int) -> None:
        self._consumption_day("high_day", "V5", m, d)

    def _low_day(self, m: str, d: int) -> None:
        self._consumption_day("low_day", "V5", m, d)

    def _zero_days(self, m: str, d: int) -> None:
        self._consumption_day("zero_days", "V6", m, d)

    def _event(self, cls: str, code: str, m: str, d: int) -> None:
        at = local_midnight(d) + timedelta(seconds=self.rng.randrange(86_400))
        self.events.append(IncomingEvent(0, code, at, {"source": "bench"}, m))
        self.touch(cls, days=[(m, d)])
        on = FIRST_DAY + timedelta(days=d)
        self.expect(cls, Expectation("V15", m, None, at, at, on, (("code", code),)))

    def _theft_event(self, m: str, d: int) -> None:
        # A cover opened (a meter clear would also zero the registers: not simulated).
        codes = [c for c in self.params.codes("V15", "theft_codes") if "cover" in c]
        self._event("theft_event", self.rng.choice(codes), m, d)

    def _om_event(self, m: str, d: int) -> None:
        codes = [c for c in self.params.codes("V15", "om_codes") if c.startswith("meter.")]
        codes = [c for c in codes if c != "meter.power_down"]  # an outage would also excuse V6
        self._event("om_event", self.rng.choice(codes), m, d)

    # -- reading faults --------------------------------------------------------------------

    def _tariff_sum(self, m: str, b: int) -> None:
        ts = local_midnight(b)
        keys = [(m, obis, ts) for obis in BLOCK]
        total = self.readings[keys[0]].value
        tolerance = max(
            self.params.decimal("V10", "tolerance_kwh"),
            total * self.params.decimal("V10", "tolerance_pct") / 100,
        )
        delta = _quantize(tolerance * Decimal(self.rng.uniform(1.5, 20)), KWH, ROUND_CEILING)
        key = keys[self.rng.randint(1, 4)]
        r = self.readings[key]
        r.value = (
            r.value - delta if self.rng.random() < 0.5 and r.value >= delta else r.value + delta
        )
        self.touch("tariff_sum", keys)
        self.expect("tariff_sum", self.exact("V10", keys[0]))

    def _register_faults(self) -> None:
        """V2, V7, V9, V11 and V12 on register curve points of days without a day fault,
        never two on neighbouring points (each compared with a clean previous value)."""
        cal = self.cal
        classes = ["duplicate", "register_back", "register_jump", "wrong_unit", "off_grid"]
        points = sum(1 for r in self.readings.values() if r.obis == IMPORT and r.kind == "curve")
        wanted = dict.fromkeys(classes, _count(points))
        candidates = [
            (m, d, k)
            for m in cal.normal
            for d in range(cal.days)
            if cal.free(m, d)
            for k in range(1, QUARTERS)
            if not (k == 1 and (m, d) in cal.tariff_blocks)  # its previous value is held
        ]
        self.rng.shuffle(candidates)
        used: set[tuple[str, int, int]] = set()
        turn = 0
        for m, d, k in candidates:
            if not any(wanted.values()):
                break
            if {(m, d, k - 1), (m, d, k), (m, d, k + 1)} & used:
                continue
            while not wanted[classes[turn % len(classes)]]:
                turn += 1
            cls = classes[turn % len(classes)]
            turn += 1
            wanted[cls] -= 1
            used.add((m, d, k))
            start = local_midnight(d)
            key = (m, IMPORT, start + QUARTER * k)
            r = self.readings[key]
            before = self.truths[m].register[start + QUARTER * (k - 1)]
            if cls == "duplicate":
                r.wrong_first = r.value + _quantize(self.rng.uniform(0.01, 5), KWH)
                self.touch(cls, [key])
                self.expect(cls, self.exact("V2", key))
            elif cls == "register_back":
                drop = _quantize(_log_uniform(self.rng, 0.01, 1000), KWH, ROUND_CEILING)
                r.value = max(Decimal("0.00"), before - drop)
                self.touch(cls, [key])
                self.expect(cls, self.exact("V7", key))
            elif cls == "register_jump":
                quarter_limit = self.limit_kw(m) / 4
                factor = Decimal(str(_log_uniform(self.rng, 1.1, 100)))
                r.value = before + _quantize(quarter_limit * factor, KWH, ROUND_CEILING)
                self.touch(cls, [key])
                self.expect(cls, self.exact("V9", key))
            elif cls == "wrong_unit":
                r.value, r.unit = r.value * 1000, "Wh"
                self.touch(cls, [key])
                self.expect(cls, self.exact("V11", key))
            else:  # off_grid: an extra point between k and k + 1
                seconds = self.rng.randint(1, 899)
                after = self.truths[m].register[start + QUARTER * (k + 1)]
                value = _quantize(r.value + (after - r.value) * seconds / 900, KWH)
                ts = r.time + timedelta(seconds=seconds)
                extra = (m, IMPORT, ts)
                self.readings[extra] = Outgoing(m, IMPORT, ts, value, "kWh", "curve", r.read_at)
                self.touch(cls, [extra])
                self.expect(cls, self.exact("V12", extra))

    def _power_over(self) -> None:
        """Power points above what the meter can measure, on days without a day fault."""
        cal = self.cal
        keys = [
            key
            for key, r in self.readings.items()
            if r.obis == POWER
            and r.meter in cal.normal
            and cal.free(r.meter, (r.time - local_midnight(0)) // timedelta(days=1))
        ]
        population = sum(1 for r in self.readings.values() if r.obis == POWER)
        for key in self.rng.sample(sorted(keys), _count(population)):
            factor = Decimal(str(self.rng.uniform(1.05, 10)))
            self.readings[key].value = _quantize(self.limit_kw(key[0]) * factor, KW, ROUND_CEILING)
            self.touch("power_over", [key])
            self.expect("power_over", self.exact("V9", key))

    def _clock_off(self) -> None:
        """Instant voltages stamped away from their read time: 61-300 s (V3 information),
        301-3600 s (V3 issue), or a year ahead (a clock that lost its year: in the future
        as well)."""
        keys = sorted(
            key
            for key, r in self.readings.items()
            if r.obis == VOLTAGE and r.meter in self.cal.normal
        )
        population = sum(1 for r in self.readings.values() if r.obis == VOLTAGE)
        for n, key in enumerate(self.rng.sample(keys, _count(population))):
            r = self.readings[key]
            sign = self.rng.choice((-1, 1))
            if n % 3 == 0:
                offset = timedelta(seconds=sign * self.rng.randint(61, 300))
            elif n % 3 == 1:
                offset = timedelta(seconds=sign * self.rng.randint(301, 3600))
            else:
                offset = timedelta(days=365)
            r.time = r.read_at + offset
            self.touch("clock_off", [self.sent_key(key)])
            self.expect("clock_off", self.exact("V3", key))


def inject(
    specs: Sequence[MeterSpec], days: int, seed: int, clean: dict[str, MeterTruth]
) -> Injected:
    """The area's data with about 2 % faults of each class (``clean``: the meters'
    simulation without faults; meters with a measured fault are simulated again)."""
    rng = random.Random(f"vee-quality-faults:{seed}")
    params = RuleSet().at(local_midnight(0))
    cal = plan_calendar([s.meter for s in specs], days, rng, params)
    truths = dict(clean)
    by_meter = {s.meter: s for s in specs}
    for m, (windows, faults) in physical_faults(cal).items():
        truths[m] = simulate(by_meter[m], days, windows, faults)
    return _Plan(cal, truths, rng, params).build()


# -- gaps for the estimation run -------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """Quarters ``first`` .. ``first + length − 1`` of local day ``day`` lost on a meter's
    power curve."""

    meter: str
    day: int
    first: int
    length: int

    def times(self) -> list[datetime]:
        start = local_midnight(self.day)
        return [start + QUARTER * (self.first + n) for n in range(self.length)]


def plan_gaps(meters: Sequence[str], days: int, seed: int, max_linear: int) -> list[Gap]:
    """Half the meter-days from the second week on (the first gives like days) lose one to
    three gaps,
    each short (1 .. ``max_linear`` quarters: ≤ 1 h) or long (more, up to the whole day)
    with even odds; a gap has a real point on each side unless it reaches midnight, and
    two gaps never meet across midnight (they would be one longer gap)."""
    rng = random.Random(f"vee-quality-gaps:{seed}")
    gaps: list[Gap] = []
    taken: dict[tuple[str, int], set[int]] = {}
    for m in meters:
        for d in range(7, days):
            if rng.random() >= 0.5:
                continue
            used = taken.setdefault((m, d), set())
            for _ in range(rng.randint(1, 3)):
                long = rng.random() < 0.5
                length = (
                    rng.randint(max_linear + 1, QUARTERS) if long else rng.randint(1, max_linear)
                )
                for _try in range(20):
                    # Short gaps stay inside the day: linear needs a point on each side.
                    first = (
                        rng.randint(0, QUARTERS - length)
                        if long
                        else rng.randint(1, QUARTERS - 1 - length)
                    )
                    span = set(range(first - 1, first + length + 1))
                    if span & used:
                        continue
                    if first == 0 and QUARTERS - 1 in taken.get((m, d - 1), set()):
                        continue
                    used |= set(range(first, first + length))
                    gaps.append(Gap(m, d, first, length))
                    break
    return gaps


def gapped_curves(
    truths: dict[str, MeterTruth], days: int, gaps: Iterable[Gap], settings_from: datetime
) -> Injected:
    """The meters' power curves without the gaps, and their daily freezes."""
    lost = {(g.meter, t) for g in gaps for t in g.times()}
    readings: dict[Key, Outgoing] = {}
    for m, truth in sorted(truths.items()):
        for ts, value in truth.power.items():
            if (m, ts) not in lost:
                readings[m, POWER, ts] = Outgoing(m, POWER, ts, value, "kW", "curve", ts + QUARTER)
        for ts, block in truth.freezes.items():
            for obis, value in zip(BLOCK, block, strict=True):
                read = ts + timedelta(minutes=5)
                readings[m, obis, ts] = Outgoing(m, obis, ts, value, "kWh", "daily", read)
    settings = [Rating.of(t.spec, settings_from) for _, t in sorted(truths.items()) if t.spec.rated]
    return Injected(readings, [], sorted(truths), settings, [], {}, {})
