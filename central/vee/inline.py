"""In-line VEE: the per-reading rules run on each batch as ingestion stores it.

:class:`InlineValidator` is made once per ingest consumer; its :meth:`~InlineValidator.
validate` takes the batch's readings and the consumer's connection, returns each reading's
``vee_status`` in order and inserts the exception rows itself, in the caller's transaction
(they commit together with the readings)::

    validator = InlineValidator(engine)
    with engine.begin() as conn:
        ...store the readings...
        statuses = validator.validate(conn, batch_readings)

Rules checked here (``central.vee.rules``): V2 duplicate within the batch, V3 clock
tolerance, V7 register going backwards, V8 rollover, V9 largest plausible increment and
power, V10 tariff registers vs total (daily/monthly freezes), V11 unit and CT/PT change,
V12 interval grid, V16 inactive meter. The rules that need a whole day (V1, V4, V5, V6,
V13–V15, V10's interval sum) run in :func:`central.vee.close_day`.

**Speed.** Ingestion stores ~100 000 readings/s; VEE may cost at most 2.5 µs a reading.
So the batch is checked in one plain loop over plain values — no SQLAlchemy per reading,
no rule objects called per reading, Decimal arithmetic only for register increments. The
previous accepted value of each register (meter, obis) comes from a bounded cache; the
misses of a whole batch are fetched in one statement (``central.vee.queries``). Parameters
are resolved once per batch (per segment of time in which no parameter changes).

**Order.** A register is compared with the newest earlier reading VEE did not fail. A
batch normally holds each (meter, obis) in rising time; when it does not (a key twice, a
backfilled point between two others) the batch is checked again in (meter, obis, time)
order, so the outcome never depends on the order of the batch — and it is the same as
validating the stored readings later (:func:`central.vee.validate_pending`).

**Several consumers** each keep their own cache. One may then compare a register with a
reading older than the newest another stored; V7 and V9 scale with the time between, so
the check stays sound, only coarser. After a rolled-back transaction call
:meth:`InlineValidator.invalidate` (the cache may hold values that were never committed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import chain, compress, islice, repeat
from operator import eq, gt, is_, itemgetter, not_
from typing import Any, Final, overload

import numpy as np
from sqlalchemy import Engine, delete, tuple_
from sqlalchemy.engine import Connection

from central.db.types import from_utc_micros
from central.db.vee_tables import vee_exceptions
from central.vee.channels import Channel, ChannelClass, channel
from central.vee.errors import InvalidVeeRequestError
from central.vee.exceptions import (
    OPEN,
    Key,
    NewException,
    apply_suppression,
    insert_exceptions,
    new_exception,
    refresh_statuses,
    status_from,
)
from central.vee.meters import MeterInfo, default_rating_kw, load_meter_info
from central.vee.parameters import Parameters, RuleSet, load_rule_set
from central.vee.queries import fetch_any_tariff, fetch_previous, fetch_readings
from central.vee.rules import Severity, Status

__all__ = ["InlineValidator", "ReadingColumns", "withdraw_exceptions"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
_US_PER_HOUR: Final = Decimal(3_600_000_000)
_REGISTER: Final = ChannelClass.REGISTER
_POWER: Final = ChannelClass.POWER
_INFO: Final = Severity.INFORMATION.value
_ISSUE: Final = Severity.ISSUE.value
_TERMINATE: Final = Severity.TERMINATE.value
_VALID: Final = Status.VALID.value
#: Kinds whose time is the moment of reading, so read_at must match it (V3).
_CLOCKED: Final = frozenset({"instant", "clock"})
#: Freezes whose tariff registers must add up to the total (V10).
_FROZEN: Final = frozenset({"daily", "monthly"})
_TARIFFS: Final = (1, 2, 3, 4)  # 尖峰平谷 (DL/T 645, 698.45)
_BLOCK: Final = (0, *_TARIFFS)  # a freeze block: the total and its tariffs
_NO_PREVIOUS: Final = (-(2**62), None, -1, float("nan"))
_WAITING: Final = (
    -(2**62),
    None,
    2**62,
    float("nan"),
)  # a register whose previous value is being fetched
_DISORDER: Final = object()
_ZERO: Final = Decimal(0)
_ONE: Final = Decimal(1)
_FAILED: Final = Status.FAILED.value
#: The screen's "no cached register": a time after every reading, so its span is negative.
_UNCACHED: Final = (2**62, _ZERO, 2**62, 0.0)
#: The screen's entry for a meter it leaves to the loop.
_NOT_PLAIN: Final = (2**62, 0.0, True)
#: The screen's channel codes (_combo).
_REGISTER_CODE: Final = 1
_POWER_CODE: Final = 2
_CURVE: Final = 4
_CONTRACT: Final = 8
_FREEZE: Final = 16
_FIRST: Final = itemgetter(0)
_SECOND: Final = itemgetter(1)
_THIRD: Final = itemgetter(2)
_FOURTH: Final = itemgetter(3)
_NAN: Final = float("nan")


class _Compiled:
    """One segment's parameters in the form the loop uses (µs, Decimals)."""

    __slots__ = (
        "contract_factor",
        "default_kw",
        "flag_unknown",
        "flag_us",
        "high_water",
        "interval_us",
        "low_water",
        "margin",
        "modulus",
        "quarantine_us",
        "tolerance_kwh",
        "tolerance_pct",
    )

    def __init__(self, p: Parameters) -> None:
        self.flag_us = p.integer("V3", "flag_s") * 1_000_000
        self.quarantine_us = p.integer("V3", "quarantine_s") * 1_000_000
        self.interval_us = p.integer("V12", "interval_s") * 1_000_000
        self.high_water = p.decimal("V8", "high_water")
        self.low_water = p.decimal("V8", "low_water")
        self.modulus = p.decimal("V8", "modulus")
        self.margin = p.decimal("V9", "margin")
        self.contract_factor = p.decimal("V9", "contract_factor")
        self.default_kw = default_rating_kw(p) * self.margin
        self.tolerance_kwh = p.decimal("V10", "tolerance_kwh")
        self.tolerance_pct = p.decimal("V10", "tolerance_pct")
        self.flag_unknown = bool(p["V16", "flag_unknown_meters"])


def _micros_of(moment: datetime, index: int, what: str) -> int:
    try:
        return (moment - _EPOCH) // _US
    except TypeError:
        raise InvalidVeeRequestError(
            f"reading {index}: {what} must be a timezone-aware datetime, got {moment!r}"
        ) from None


class ColumnReading(tuple):  # type: ignore[type-arg]
    """One reading of a :class:`ReadingColumns`, made when the loop needs it: a tuple with
    fields read through ``itemgetter`` properties, so making one is C work (a NamedTuple's
    Python ``__new__`` costs more than the loop's own work on the reading)."""

    __slots__ = ()
    meter = property(itemgetter(0))
    obis = property(itemgetter(1))
    time = property(itemgetter(2))
    value = property(itemgetter(3))
    unit = property(itemgetter(4))
    kind = property(itemgetter(5))
    read_at = property(itemgetter(6))


class ReadingColumns(Sequence[Any]):
    """A batch of readings as columns — what ingestion has at hand. The validator screens
    the common case a column at a time (:meth:`InlineValidator.check`) and builds a reading
    object (``[i]``) only for those that need the full loop.

    ``micros``: each reading's time in µs since the epoch (UTC); ``value``: Decimals, or
    their text; ``read_at``: datetimes, or ``read_at_micros``: µs. ``time`` may give the
    datetimes when the caller has them (else they are made from ``micros`` when needed).
    ``in_key_order``: the caller guarantees the readings are sorted by (meter, obis, time)
    with no key twice (the ingest store's rows are), which spares the screen checking it."""

    __slots__ = (
        "_moments",
        "_source",
        "_views",
        "in_key_order",
        "kind",
        "meter",
        "micros",
        "obis",
        "read_at",
        "read_at_micros",
        "time",
        "unit",
        "value",
    )

    def __init__(
        self,
        meter: Sequence[str],
        obis: Sequence[str],
        micros: Sequence[int],
        value: Sequence[Decimal] | Sequence[str],
        unit: Sequence[str | None],
        kind: Sequence[str],
        *,
        time: Sequence[datetime] | None = None,
        read_at: Sequence[datetime | None] | None = None,
        read_at_micros: Sequence[int] | None = None,
        source: Sequence[Any] | None = None,
        in_key_order: bool = False,
    ) -> None:
        self.meter, self.obis, self.micros, self.value = meter, obis, micros, value
        self.in_key_order = in_key_order
        self.unit, self.kind, self.time = unit, kind, time
        self.read_at, self.read_at_micros = read_at, read_at_micros
        self._source = source
        self._moments: dict[int, datetime] = {}
        self._views: dict[int, ColumnReading] = {}

    @classmethod
    def of(cls, readings: Sequence[Any]) -> ReadingColumns:
        """Columns of reading objects (``meter``, ``obis``, ``time``, ``value``, ``unit``,
        ``kind``); ``[i]`` gives back the objects themselves."""
        times: dict[datetime, int] = {}
        micros: list[int] = []
        for i, r in enumerate(readings):
            moment = r.time
            us = times.get(moment)
            if us is None:
                us = times[moment] = _micros_of(moment, i, "time")
            micros.append(us)
        return cls(
            [r.meter for r in readings],
            [r.obis for r in readings],
            micros,
            [r.value for r in readings],
            [r.unit for r in readings],
            [r.kind for r in readings],
            source=readings,
        )

    def __len__(self) -> int:
        return len(self.micros)

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Any]: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        if self._source is not None:
            return self._source[i]
        view = self._views.get(i)
        if view is None:
            self.materialize((i,))
            view = self._views[i]
        return view

    def materialize(self, indices: Iterable[int]) -> None:
        """Make the reading objects of ``indices`` at once, a column at a time (the loop is
        about to read them, some several times); later ``[i]`` returns the same objects."""
        if self._source is not None:
            return
        views = self._views
        wanted = [i for i in indices if i not in views]
        if not wanted:
            return
        pick = itemgetter(*wanted) if len(wanted) > 1 else _one(wanted[0])
        micros = pick(self.micros)
        times = pick(self.time) if self.time is not None else self._moments_of(micros)
        if self.read_at is not None:
            read_at = pick(self.read_at)
        elif self.read_at_micros is not None:
            read_at = self._moments_of(pick(self.read_at_micros))
        else:
            read_at = repeat(None)
        columns = zip(
            pick(self.meter),
            pick(self.obis),
            times,
            map(Decimal, pick(self.value)),
            pick(self.unit),
            pick(self.kind),
            read_at,
            strict=False,  # read_at may be an endless repeat(None); the others are as long
        )
        views.update(zip(wanted, map(tuple.__new__, repeat(ColumnReading), columns), strict=True))

    def _moments_of(self, micros: Sequence[int]) -> list[datetime]:
        moments = self._moments
        for us in set(micros).difference(moments):
            moments[us] = from_utc_micros(us)
        return list(map(moments.__getitem__, micros))


class InlineValidator:
    """Validates batches of readings as they are stored (see the module docstring).

    ``rules`` fixes the parameters (tests); by default they are loaded from the database
    and reloaded every ``refresh_s`` seconds, together with the meters' settings.
    ``clock`` gives "now" for V3's future check (default: the system clock). The register
    cache holds at most ``cache_size`` (meter, obis) keys; the oldest-inserted go first.
    """

    def __init__(
        self,
        engine: Engine,
        rules: RuleSet | None = None,
        clock: Callable[[], datetime] | None = None,
        *,
        cache_size: int = 1_000_000,
        refresh_s: float = 60.0,
        screen: bool = True,
    ) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database backend {engine.dialect.name!r}")
        self.engine = engine
        self._fixed_rules = rules
        self._rules: RuleSet | None = rules
        self._clock = clock or (lambda: datetime.now(UTC))
        self.cache_size = cache_size
        self.refresh_s = refresh_s
        self._loaded_at = -float("inf")
        # (meter, obis) -> (time, value, time seen, value as a float) of the last accepted
        # register reading; the value may be its text (cached by the screen).
        self._last: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._meters: dict[str, MeterInfo] = {}
        self._channels: dict[str, Channel] = {}
        self._compiled: dict[int, _Compiled] = {}
        self._limits: dict[tuple[Decimal, int], Decimal] = {}
        # (meter, freeze total) -> whether that meter's freezes carry tariff registers.
        self._tariffed: dict[tuple[str, str], bool] = {}
        self.screen = screen
        # The screen's view of meters and channels, for one segment's parameters (_plain).
        self._plain_meters: dict[str, tuple[int, float, bool]] = {}
        self._plain_for: _Compiled | None = None
        self._combos: dict[tuple[str, str, str | None], int] = {}

    # -- public ----------------------------------------------------------------------------

    def validate(
        self,
        conn: Connection,
        readings: Sequence[Any],
        *,
        corrected: Iterable[Key] = (),
        doubled: Mapping[int, Sequence[str]] | None = None,
    ) -> list[str]:
        """Each reading's ``vee_status``, in order; the exceptions are inserted through
        ``conn``. ``corrected``: keys (meter, obis, ts) whose stored value this batch
        replaces — their open exceptions from the old value are withdrawn first.
        ``doubled``: readings (by index) whose batch gave their key more than once with
        different values, with those values — V2 when the caller has already kept one
        version of each key (the ingest store); repeated keys in ``readings`` themselves
        are found here."""
        now = self._clock()
        return self.check(conn, readings, now=now, corrected=corrected, doubled=doubled)

    def invalidate(self) -> None:
        """Forget cached registers, meters and parameters (after a rollback, or when the
        meters' settings or the parameters changed and should apply at once)."""
        self._last.clear()
        self._meters.clear()
        self._compiled.clear()
        self._limits.clear()
        self._tariffed.clear()
        self._plain_meters.clear()
        self._rules = self._fixed_rules
        self._loaded_at = -float("inf")

    # -- the pass ---------------------------------------------------------------------------

    def check(
        self,
        conn: Connection,
        readings: Sequence[Any],
        *,
        now: datetime,
        arrivals: Sequence[datetime] | None = None,
        corrected: Iterable[Key] = (),
        doubled: Mapping[int, Sequence[str]] | None = None,
    ) -> list[str]:
        """:meth:`validate` with the "now" of V3 given: ``now`` for every reading, or the
        time each arrived (``arrivals``, the stored ``received_at``) when re-validating."""
        n = len(readings)
        if n == 0:
            return []
        self._refresh(conn)
        now_us = _micros_of(now, 0, "now")
        arrival_us = None
        if arrivals is not None:
            arrival_us = [_micros_of(a, i, "received_at") for i, a in enumerate(arrivals)]
        micros = [0] * n
        batch = _Batch()
        order: Sequence[int] = range(n)
        if self.screen and arrival_us is None:
            columns = (
                readings if isinstance(readings, ReadingColumns) else ReadingColumns.of(readings)
            )
            left = self._screen(columns, batch, now_us)
            if left and self._prefetch(conn, columns, left):
                left = self._screen(columns, batch, now_us)
            if left is not None:
                micros = list(columns.micros)
                order = left
            columns.materialize(order)
        result = self._pass(readings, order, micros, batch, now_us, arrival_us, True)
        if result is not _DISORDER and batch.deferred:
            # Meters or registers the cache does not hold: one lookup each for the whole
            # batch, then the readings that waited for them.
            self._fetch(conn, batch)
            waited = batch.deferred
            result = self._pass(readings, waited, micros, batch, now_us, arrival_us, False)
        duplicates: list[tuple[int, list[int], bool]] = []
        if result is _DISORDER:
            order, duplicates = _canonical(readings, micros)
            batch = _Batch()
            self._pass(readings, order, micros, batch, now_us, arrival_us, True)
            if batch.deferred:
                self._fetch(conn, batch)
                waited = batch.deferred
                self._pass(readings, waited, micros, batch, now_us, arrival_us, False)
        raised = batch.raised
        for kept, others, differ in duplicates:
            if differ:
                values = sorted({str(readings[i].value) for i in (kept, *others)})
                detail = {"values": values, "kept": str(readings[kept].value)}
                raised.append((kept, "V2", _INFO, detail))
        for i, given in sorted((doubled or {}).items()):
            detail = {"values": sorted(given), "kept": str(readings[i].value)}
            raised.append((i, "V2", _INFO, detail))
        external = self._sum_check(conn, readings, batch.groups, raised)
        rows = [
            new_exception(
                readings[i].meter,
                readings[i].obis,
                readings[i].time,
                rule_id,
                severity,
                readings[i].value,
                detail,
                now,
            )
            for i, rule_id, severity, detail in raised
        ]
        corrected = list(corrected)
        if corrected:
            withdraw_exceptions(conn, corrected)
        inserted, overridden, in_effect = apply_suppression(conn, rows + external)
        insert_exceptions(conn, inserted)
        if external:
            # Stored registers of a block this batch completes and shows wrong are held now,
            # and are no longer a reference for their next readings.
            new_ids = {id(row) for row in inserted}
            refresh_statuses(
                conn, [(e["meter"], e["obis"], e["ts"]) for e in external if id(e) in new_ids]
            )
            for e in external:
                self._last.pop((e["meter"], e["obis"]), None)
        statuses = self._statuses(readings, raised, rows, in_effect, overridden)
        for kept, others, _ in duplicates:
            for other in others:
                statuses[other] = statuses[kept]
        self._remember(batch, readings, micros, statuses)
        return statuses

    def _screen(self, cols: ReadingColumns, batch: _Batch, now_us: int) -> list[int] | None:
        """Settle the plain registers and power readings of the batch a column at a time;
        the indices left for the loop, or None when the screen can take none of them (a
        batch not in key order, or of no plain channel): the loop then does it all.

        A key (meter, obis) is settled here when every reading of it in the batch is of a
        known register or power channel in its own unit, not an instant reading nor a
        freeze (V3's read time, V10), on the grid when a curve point (V12), not in the
        future (V3), of a meter in service whose settings did not change since the reading
        (or the register's previous value) (V11, V16), archived when V16 asks; and a power
        within the meter's rating (V9; the contracted capacity is the loop's), a register
        risen from its previous value by clearly less than the meter can measure (V7, V8,
        V9). Such a key raises nothing, and its readings are ``valid`` — what the loop
        would find. Every other key goes to the loop whole: a key's outcome never mixes
        paths.

        The arithmetic is in binary floating point (numpy), made conservative: a float is
        monotonic in the decimal it rounds, so a strict float inequality holds for the
        decimals too; equal floats of different values, and anything within a relative
        10⁻¹² of a limit (or of the values' rounding), go to the loop, which decides in
        ``Decimal``."""
        us_list, values = cols.micros, cols.value
        n = len(us_list)
        codes = self._screen_channels(cols)
        if codes is None:
            return None
        keys = list(zip(cols.meter, cols.obis, strict=True))
        # Key order: each key's readings together (as many runs as keys), times rising.
        same = list(map(eq, keys[1:], keys))  # same[j]: reading j + 1 continues j's key
        if not cols.in_key_order and (
            n - sum(same) != len(set(keys))
            or not all(compress(map(gt, us_list[1:], us_list), same))
        ):
            return None
        us = np.fromiter(us_list, np.int64, n)
        latest = int(us.max())
        _, high, c = self._segment(int(us.min()))
        if latest >= high:
            return None  # parameters change inside the batch
        bad = codes == 0
        if latest > now_us + c.quarantine_us:  # V3: in the future
            bad |= us > now_us + c.quarantine_us
        curve = (codes & _CURVE) != 0
        if curve.any():  # V12: curve points off the grid
            bad |= curve & (us % c.interval_us != 0)
        since, kw, contract, not_plain = self._screen_meters(cols.meter, c)
        bad |= not_plain
        floats = list(map(float, values))
        value = np.fromiter(floats, np.float64, n)
        power = (codes & _POWER_CODE) != 0
        if power.any():  # V9: within the rating; V11, V16: the settings of the reading
            contracted = ((codes & _CONTRACT) != 0) & contract
            bad |= power & ((np.abs(value) > kw * (1 - 1e-12)) | (us < since) | contracted)
        register = (codes & _REGISTER_CODE) != 0
        if register.any():
            bad |= register & self._screen_registers(keys, same, us, value, values, since, kw)
        freeze = np.flatnonzero((codes & _FREEZE) != 0).tolist()
        groups: dict[tuple[str, str], list[int]] = {}
        if freeze:
            groups = self._screen_blocks(cols, freeze, us_list, floats, c, bad)
        slow = None
        while bad.any():
            left = {keys[i] for i in np.flatnonzero(bad).tolist()}
            slow = np.fromiter(map(left.__contains__, keys), np.bool_, n)
            # A freeze block is checked whole, where its members are: one member in the
            # loop takes its meter's whole group of tariff registers there.
            spread = [
                i
                for members in groups.values()
                if slow[members].any() and not slow[members].all()
                for i in members
            ]
            if not spread:
                break
            bad[spread] = True
        # What the cache will hold of each settled register: its last reading in the batch
        # (applied once the batch is done, _remember).
        last_of_run = np.fromiter(chain(map(not_, same), (True,)), np.bool_, n)
        keep = register & last_of_run if slow is None else register & last_of_run & ~slow
        if keep.all():
            batch.screened = zip(
                keys, zip(us_list, values, us_list, floats, strict=True), strict=True
            )
        else:
            mask = keep.tolist()
            kept_us = list(compress(us_list, mask))
            entries = zip(
                kept_us, compress(values, mask), kept_us, compress(floats, mask), strict=True
            )
            batch.screened = zip(compress(keys, mask), entries, strict=True)
        return [] if slow is None else np.flatnonzero(slow).tolist()

    def _screen_blocks(
        self,
        cols: ReadingColumns,
        freeze: list[int],
        us_list: Sequence[int],
        floats: list[float],
        c: _Compiled,
        bad: Any,
    ) -> dict[tuple[str, str], list[int]]:
        """V10 on the freeze blocks of the batch (a total and its tariff registers at one
        time): a block all in the batch whose tariffs clearly add up to its total passes,
        as does a total alone of a meter known to freeze no tariffs; any other block marks
        its readings in ``bad``. Returns each (meter, block's total)'s freeze readings."""
        meter, obis = cols.meter, cols.obis
        blocks: dict[tuple[str, str, int], dict[int, int]] = {}
        groups: dict[tuple[str, str], list[int]] = {}
        member: dict[str, tuple[str, int]] = {}  # obis → (block's total, tariff)
        for i in freeze:
            code = obis[i]
            found = member.get(code)
            if found is None:
                ch = channel(code)
                assert ch.group is not None  # _FREEZE is only given to block members
                found = member[code] = (ch.group, ch.tariff)
            total, tariff = found
            m = meter[i]
            blocks.setdefault((m, total, us_list[i]), {})[tariff] = i
            groups.setdefault((m, total), []).append(i)
        tolerance_kwh = float(c.tolerance_kwh) * (1 - 1e-12)
        share = float(c.tolerance_pct) / 100 * (1 - 1e-12)
        tariffed = self._tariffed
        failed: list[int] = []
        for (m, total, _), members in blocks.items():
            if len(members) == 5:
                values = [floats[members[t]] for t in _BLOCK]
                difference = abs(values[1] + values[2] + values[3] + values[4] - values[0])
                slack = 1e-14 * sum(map(abs, values))  # the floats' rounding, generously
                worst = difference + slack
                if worst <= tolerance_kwh or worst <= (abs(values[0]) - slack) * share:
                    tariffed[m, total] = True  # as the loop learns it
                    continue
            elif len(members) == 1 and 0 in members and tariffed.get((m, total)) is False:
                continue  # a meter that freezes its total alone: nothing to add up
            failed.extend(members.values())
        if failed:
            bad[failed] = True
        return groups

    def _screen_registers(
        self,
        keys: list[tuple[str, str]],
        same: list[bool],
        us: Any,
        value: Any,
        values: Sequence[Any],
        since: Any,
        kw: Any,
    ) -> Any:
        """The register readings the screen cannot settle (a mask; meaningless elsewhere)."""
        n = len(keys)
        # The previous accepted value of each reading: the one before it in its run, or the
        # cached one (a miss is "after every reading": its span is negative).
        cached = list(map(self._last.get, keys, repeat(_UNCACHED)))
        starts = np.fromiter(chain((True,), map(not_, same)), np.bool_, n)
        prev_us = np.where(starts, np.fromiter(map(_FIRST, cached), np.int64, n), np.roll(us, 1))
        prev = np.where(starts, np.fromiter(map(_FOURTH, cached), np.float64, n), np.roll(value, 1))
        spans = us - prev_us
        delta = value - prev  # NaN after "no previous value": nothing to compare it with
        # Not cached, or a backfilled point before the cached one; settings changed since
        # the previous value (or, without one, the reading is older than the settings);
        # negative; going back (V7, V8).
        since_what = np.where(np.isnan(prev), us, prev_us)
        suspect = (spans <= 0) | (since_what < since) | (value < 0) | (delta < 0)
        ties = np.flatnonzero((delta == 0) & ~suspect)
        if len(ties):  # equal floats: the same value (valid) only if the decimals are equal
            for i in ties.tolist():
                earlier = cached[i][1] if starts[i] else values[i - 1]
                if earlier != values[i] and Decimal(earlier) != Decimal(values[i]):
                    suspect[i] = True
        # V9: the increment against kW × h, with room for the floats' rounding.
        bound = kw * spans / 3_600_000_000.0
        slack = 1e-12 * bound + 1e-15 * (np.abs(value) + np.abs(prev))
        return suspect | (delta > bound - slack)

    def _prefetch(self, conn: Connection, cols: ReadingColumns, left: list[int]) -> bool:
        """For the readings the screen left: the meters not loaded yet, and the previous
        value of each register the cache holds nothing of (one query each, as the loop's
        fetch), into the caches — then the screen can settle them too. Whether anything
        was fetched. A register cached at a time after its reading (a backfill) is the
        loop's: its previous value is not the cached one."""
        meters, last = self._meters, self._last
        need: dict[tuple[str, str], int] = {}
        need_meters: set[str] = set()
        for i in left:
            meter, obis = cols.meter[i], cols.obis[i]
            if meter not in meters:
                need_meters.add(meter)
            key = (meter, obis)
            if key not in last and key not in need and channel(obis).cls is _REGISTER:
                need[key] = cols.micros[i]  # its first reading here (key order)
        self._load_meters(conn, need_meters)
        last.update(self._previous_values(conn, need))
        return bool(need_meters or need)

    def _screen_channels(self, cols: ReadingColumns) -> Any:
        """Each reading's :func:`_combo` code (numpy), or None when every code is 0 (the
        screen can settle nothing)."""
        combos = self._combos
        n = len(cols.obis)
        if len(set(cols.obis)) == len(set(cols.kind)) == len(set(cols.unit)) == 1:
            triple = (cols.obis[0], cols.kind[0], cols.unit[0])
            code = combos.get(triple)
            if code is None:
                code = combos[triple] = _combo(*triple)
            return np.full(n, code, np.int8) if code else None
        triples = list(zip(cols.obis, cols.kind, cols.unit, strict=True))
        found = list(map(combos.get, triples))
        if any(map(is_, found, repeat(None))):
            for j, triple in enumerate(triples):
                if found[j] is None:
                    found[j] = combos[triple] = _combo(*triple)
        codes = np.fromiter(found, np.int8, n)
        return codes if codes.any() else None

    def _screen_meters(self, meter: Sequence[str], c: _Compiled) -> tuple[Any, Any, Any, Any]:
        """Per reading: the µs from which its meter's settings hold, the most the meter
        measures in kW with V9's margin, whether it has a contracted capacity, and whether
        the screen leaves the meter to the loop (not loaded yet, out of service, unknown
        while V16 flags those)."""
        plain = self._plain_meters
        if self._plain_for is not c:
            plain.clear()
            self._plain_for = c
        n = len(meter)
        entries: list[Any] = list(map(plain.get, meter))
        if any(map(is_, entries, repeat(None))):
            made: dict[str, tuple[int, float, bool]] = {}
            for m in set(compress(meter, map(is_, entries, repeat(None)))):
                info = self._meters.get(m)  # not loaded: the loop fetches it
                made[m] = _NOT_PLAIN if info is None else _plain_meter(info, c)
                if info is not None:
                    plain[m] = made[m]
            entries = list(map(plain.get, meter, map(made.get, meter)))
            _bound(plain, self.cache_size)
        first = entries[0]
        if entries.count(first) == n:  # one entry for all (no settings): the usual case
            return (*first, np.full(n, first is _NOT_PLAIN))
        since = np.fromiter(map(_FIRST, entries), np.int64, n)
        kw = np.fromiter(map(_SECOND, entries), np.float64, n)
        contract = np.fromiter(map(_THIRD, entries), np.bool_, n)
        return since, kw, contract, np.fromiter(map(is_, entries, repeat(_NOT_PLAIN)), np.bool_, n)

    def _fetch(self, conn: Connection, batch: _Batch) -> None:
        self._load_meters(conn, batch.need_meters)
        for key in batch.need:
            batch.state.pop(key, None)  # the "waiting" marks
        batch.base.update(self._previous_values(conn, batch.need))

    def _load_meters(self, conn: Connection, names: set[str]) -> None:
        """The meters ``names`` into the meter cache (one lookup for all)."""
        if names:
            self._meters.update(load_meter_info(conn, names))
            _bound(self._meters, self.cache_size)

    def _previous_values(
        self, conn: Connection, need: dict[tuple[str, str], int]
    ) -> dict[tuple[str, str], tuple[Any, ...]]:
        """Cache entries for the registers in ``need``: each one's newest accepted value
        before the given µs (one query for all), or "no previous value"."""
        if not need:
            return {}
        found = fetch_previous(conn, need)
        return {
            key: _NO_PREVIOUS
            if (previous := found.get(key)) is None
            else (*previous, -1, float(previous[1]))
            for key in need
        }

    def _refresh(self, conn: Connection) -> None:
        moment = time.monotonic()
        if moment - self._loaded_at < self.refresh_s:
            return
        if self._fixed_rules is None:
            self._rules = load_rule_set(conn)
            self._compiled.clear()
        self._meters.clear()
        self._plain_meters.clear()
        self._loaded_at = moment

    def _segment(self, micros: int) -> tuple[int, int, _Compiled]:
        assert self._rules is not None
        start, end, params = self._rules.segment(micros)
        compiled = self._compiled.get(id(params))
        if compiled is None:
            compiled = self._compiled[id(params)] = _Compiled(params)
        return start, end, compiled

    def _pass(
        self,
        readings: Sequence[Any],
        order: Iterable[int],
        micros: list[int],
        batch: _Batch,
        now_us: int,
        arrival_us: list[int] | None,
        may_defer: bool,
    ) -> Any:
        """One loop over ``order``. A reading whose meter or register the cache does not
        hold waits in ``batch.deferred`` (with every later reading of its key). Returns
        _DISORDER when a key repeats or goes back in time."""
        channels, meters, last, limits = self._channels, self._meters, self._last, self._limits
        state, others, base = batch.state, batch.others, batch.base
        groups, raised, times = batch.groups, batch.raised, batch.times
        deferred, need, need_meters = batch.deferred, batch.need, batch.need_meters
        waiting = _WAITING
        zero = _ZERO
        low, high = 1, 0
        quarantine = flag = interval = future = 0
        flag_unknown = False
        high_water = low_water = modulus = margin = contract_factor = zero
        default_kw = negative_default_kw = zero
        last_span, last_kw, limit = -1, zero, zero
        for i in order:
            r = readings[i]
            moment = r.time
            us = times.get(moment)
            if us is None:
                us = times[moment] = _micros_of(moment, i, "time")
            micros[i] = us
            if not low <= us < high:
                low, high, c = self._segment(us)
                quarantine, flag, interval = c.quarantine_us, c.flag_us, c.interval_us
                high_water, low_water, modulus = c.high_water, c.low_water, c.modulus
                margin, contract_factor = c.margin, c.contract_factor
                default_kw, flag_unknown = c.default_kw, c.flag_unknown
                negative_default_kw = -default_kw
                future = now_us + quarantine
            meter = r.meter
            obis = r.obis
            key = (meter, obis)
            ch = channels.get(obis)
            if ch is None:
                ch = channels[obis] = channel(obis)
            cls = ch.cls
            register = cls is _REGISTER
            if register:
                seen = state.get(key)
                if seen is not None:
                    if seen is waiting:
                        deferred.append(i)
                        continue
                    if us <= seen[2]:
                        return _DISORDER
                else:
                    # The previous accepted value: fetched for this batch, or cached.
                    seen = base.get(key) if base else None
                    if seen is None:
                        seen = last.get(key)
                        if seen is None or seen[0] >= us:
                            # It must come from the database (one query for the batch).
                            assert may_defer, "a register still missing after the fetch"
                            need[key] = us
                            state[key] = waiting
                            deferred.append(i)
                            if meter not in meters:
                                need_meters.add(meter)
                            continue
            else:
                seen = _NO_PREVIOUS
                seen_us = others.get(key)
                if seen_us is not None and us <= seen_us:
                    return _DISORDER
            info = meters.get(meter)
            if info is None:
                assert may_defer, "a meter still missing after the fetch"
                need_meters.add(meter)
                deferred.append(i)
                continue
            settings = info.at(us) if info.starts else None
            # V16: data from a meter taken out of service, or one no gateway knows.
            if settings is not None and not settings.active:
                raised.append(
                    (i, "V16", _TERMINATE, {"removed_from": settings.effective_from.isoformat()})
                )
                if register:
                    state[key] = (seen[0], seen[1], us)
                else:
                    others[key] = us
                continue
            if flag_unknown and not info.in_archive:
                raised.append((i, "V16", _INFO, {"reason": "meter is in no gateway's archive"}))
            # V11: a value in another unit is off by a multiplier; nothing else can be
            # checked on it.
            if r.unit != ch.unit and ch.known:
                raised.append((i, "V11", _TERMINATE, {"unit": r.unit, "expected": ch.unit}))
                if register:
                    state[key] = (seen[0], seen[1], us)
                else:
                    others[key] = us
                continue
            held = False
            # V3: a time in the future, or an instant reading not timed when it was read.
            if arrival_us is not None:
                future = arrival_us[i] + quarantine
            if us > future:
                raised.append((i, "V3", _ISSUE, {"ahead_s": (us - future + quarantine) / 1e6}))
                held = True
            kind = r.kind
            if kind in _CLOCKED:
                read_at = getattr(r, "read_at", None)
                if read_at is not None:
                    offset = abs(_micros_of(read_at, i, "read_at") - us)
                    if offset > quarantine:
                        raised.append((i, "V3", _ISSUE, {"offset_s": offset / 1e6}))
                        held = True
                    elif offset > flag:
                        raised.append((i, "V3", _INFO, {"offset_s": offset / 1e6}))
            # V12: curve points sit on the interval grid.
            elif kind == "curve" and us % interval:
                raised.append((i, "V12", _ISSUE, {"off_grid_s": (us % interval) / 1e6}))
                held = True
            if register:
                prev_us, prev = seen[0], seen[1]
                if prev.__class__ is str:  # a value the screen cached as its text
                    prev = Decimal(prev)
                value = r.value
                if value < zero:
                    raised.append((i, "V7", _ISSUE, {"reason": "negative register"}))
                    held = True
                elif prev is not None:
                    delta = value - prev
                    backwards = False
                    if delta < zero:
                        if prev > high_water and value < low_water:
                            delta = modulus - prev + value
                            raised.append((i, "V8", _INFO, _detail(prev_us, prev, delta)))
                        else:
                            raised.append((i, "V7", _ISSUE, _detail(prev_us, prev, delta)))
                            held = backwards = True
                    if delta and not backwards:
                        before = info.at(prev_us) if info.starts else None
                        if before is not settings and _ratio(before) != _ratio(settings):
                            raised.append(
                                (
                                    i,
                                    "V11",
                                    _INFO,
                                    {
                                        "ratio_before": str(_ratio(before)),
                                        "ratio": str(_ratio(settings)),
                                    },
                                )
                            )
                        else:
                            kw = settings.rating_kw * margin if settings else default_kw
                            span = us - prev_us
                            if span != last_span or kw is not last_kw:
                                last_span, last_kw = span, kw
                                found = limits.get((kw, span))
                                if found is None:
                                    found = limits[kw, span] = kw * span / _US_PER_HOUR
                                limit = found
                            if delta > limit:
                                detail = _detail(prev_us, prev, delta)
                                detail["limit"] = str(limit)
                                raised.append((i, "V9", _ISSUE, detail))
                                held = True
                state[key] = (prev_us, prev, us) if held else (us, value, us)
                if ch.group is not None and kind in _FROZEN:
                    member = groups.get((meter, ch.group, us))
                    if member is None:
                        member = groups[meter, ch.group, us] = {}
                    member[ch.tariff] = i
                continue
            others[key] = us
            if cls is _POWER:
                value = r.value
                if settings is None:
                    kw, negative_kw = default_kw, negative_default_kw
                else:
                    kw = settings.rating_kw * margin
                    negative_kw = -kw
                if value > kw or value < negative_kw:
                    raised.append((i, "V9", _ISSUE, {"power": str(value), "limit": str(kw)}))
                elif (
                    ch.contract
                    and settings is not None
                    and settings.contract_kw is not None
                    and value > contract_factor * settings.contract_kw
                ):
                    detail = {
                        "power": str(value),
                        "contract_kw": str(settings.contract_kw),
                        "factor": str(contract_factor),
                    }
                    raised.append((i, "V9", _INFO, detail))
        return None

    def _sum_check(
        self,
        conn: Connection,
        readings: Sequence[Any],
        groups: dict[tuple[str, str, int], dict[int, int]],
        raised: list[tuple[int, str, str, dict[str, Any]]],
    ) -> list[NewException]:
        """V10: a freeze's tariff registers add up to its total. Members missing from the
        batch (a batch boundary split the freeze block) are looked up stored; a failure
        holds every register of the block, also those stored by an earlier batch."""
        if not groups:
            return []
        tariffed = self._tariffed
        missing: list[tuple[str, str, int]] = []
        learning: list[tuple[str, str]] = []
        for (meter, total, us), members in groups.items():
            if len(members) == 1 + len(_TARIFFS):
                continue
            if len(members) > 1 or 0 not in members:
                tariffed[meter, total] = True
            else:
                # A total alone: look for its tariffs only if this meter's freezes have
                # any (learnt once per meter; many meters freeze the total alone).
                known = tariffed.get((meter, total))
                if known is False:
                    continue
                if known is None:
                    learning.append((meter, total))
            missing += [(meter, _tariff_obis(total, t), us) for t in _BLOCK if t not in members]
        stored = fetch_readings(conn, missing) if missing else {}
        if learning:
            found_tariffs = {(m, _total_obis(o)) for m, o, _ in stored if channel(o).tariff}
            for key in learning:
                tariffed[key] = key in found_tariffs or bool(
                    fetch_any_tariff(conn, key[0], [_tariff_obis(key[1], t) for t in _TARIFFS])
                )
            _bound(tariffed, self.cache_size)
        external: list[NewException] = []
        low, high, c = 1, 0, None
        for (meter, total, us), members in groups.items():
            if len(members) == 5:  # the whole block in the batch: the common case
                total_value = readings[members[0]].value
                tariffs = (
                    readings[members[1]].value
                    + readings[members[2]].value
                    + readings[members[3]].value
                    + readings[members[4]].value
                )
            else:
                values: dict[int, Decimal] = {}
                for t in _BLOCK:
                    index = members.get(t)
                    if index is not None:
                        values[t] = readings[index].value
                        continue
                    found = stored.get((meter, _tariff_obis(total, t), us))
                    if found is None:
                        break
                    values[t] = found[0]
                else:
                    total_value = values[0]
                    tariffs = values[1] + values[2] + values[3] + values[4]
                if len(values) < 5:
                    continue
            if not low <= us < high:
                low, high, c = self._segment(us)
            assert c is not None
            difference = abs(tariffs - total_value)
            if (
                difference <= c.tolerance_kwh
                or difference * 100 <= abs(total_value) * c.tolerance_pct
            ):
                continue
            detail = {
                "total": str(total_value),
                "sum_of_tariffs": str(tariffs),
                "difference": str(difference),
            }
            # The whole block is held: which register is wrong is not known, and a wrong
            # tariff register left valid would be the reference every later reading of it
            # is compared with (V7, V9) — failing them until the register caught up.
            for t in _BLOCK:
                index = members.get(t)
                if index is not None:
                    raised.append((index, "V10", _ISSUE, detail))
                    continue
                obis = total if t == 0 else _tariff_obis(total, t)
                external.append(
                    new_exception(
                        meter,
                        obis,
                        from_utc_micros(us),
                        "V10",
                        _ISSUE,
                        values[t],
                        detail,
                        datetime.now(UTC),
                    )
                )
        return external

    def _statuses(
        self,
        readings: Sequence[Any],
        raised: list[tuple[int, str, str, dict[str, Any]]],
        rows: list[NewException],
        kept_rows: list[NewException],
        overridden: set[Key],
    ) -> list[str]:
        statuses = [_VALID] * len(readings)
        if not raised:
            return statuses
        kept_ids = {id(row) for row in kept_rows}
        severities: dict[int, list[str]] = {}
        for (i, _, severity, _), row in zip(raised, rows, strict=True):
            entry = severities.setdefault(i, [])
            if id(row) in kept_ids:
                entry.append(severity)
        for i, found in severities.items():
            r = readings[i]
            statuses[i] = status_from(found, (r.meter, r.obis, r.time) in overridden)
        return statuses

    def _remember(
        self, batch: _Batch, readings: Sequence[Any], micros: list[int], statuses: list[str]
    ) -> None:
        """The batch's accepted registers into the cache (never an older over a newer)."""
        last = self._last
        older = {
            key: last[key]
            for key, entry in batch.base.items()
            if key in last and last[key][0] > batch.state.get(key, entry)[0]
        }
        last.update(
            (
                key,
                entry
                if len(entry) == 4
                else (*entry, _NAN if entry[1] is None else float(entry[1])),
            )
            for key, entry in batch.state.items()
        )
        last.update(batch.screened)
        last.update(older)
        # A register that V10 failed after the loop accepted it is not a reference.
        for i, status in enumerate(statuses) if _FAILED in statuses else ():
            if status == _FAILED:
                r = readings[i]
                cached = last.get((r.meter, r.obis))
                if cached is not None and cached[0] == micros[i]:
                    del last[r.meter, r.obis]
        _bound(last, self.cache_size)
        if len(self._limits) > 10_000:
            self._limits.clear()


class _Batch:
    """The working state of one validate call."""

    __slots__ = (
        "base",
        "deferred",
        "groups",
        "need",
        "need_meters",
        "others",
        "raised",
        "screened",
        "state",
        "times",
    )

    def __init__(self) -> None:
        # (meter, obis) -> (time and value of the last accepted register reading, time seen
        # last in this batch); the same tuples go into the validator's cache afterwards.
        self.state: dict[tuple[str, str], tuple[Any, ...]] = {}
        # The keys the screen settled, (key, (time, value or its text, time, value as a
        # float)) per reading, for the cache (the last reading of a key wins).
        self.screened: Iterable[tuple[tuple[str, str], tuple[int, Any, int, float]]] = ()
        # Other quantities: (meter, obis) -> time seen last in this batch.
        self.others: dict[tuple[str, str], int] = {}
        self.base: dict[tuple[str, str], tuple[Any, ...]] = {}
        self.groups: dict[tuple[str, str, int], dict[int, int]] = {}
        self.raised: list[tuple[int, str, str, dict[str, Any]]] = []
        self.deferred: list[int] = []
        self.need: dict[tuple[str, str], int] = {}
        self.need_meters: set[str] = set()
        self.times: dict[datetime, int] = {}


def _combo(obis: str, kind: str, unit: str | None) -> int:
    """How the screen treats readings of (obis, kind, unit): 0 leaves them to the loop,
    else the bits _REGISTER_CODE or _POWER_CODE, with _CURVE for curve points (V12's grid),
    _FREEZE for a register frozen in a tariff block (V10) and _CONTRACT for a power compared
    with the contracted capacity."""
    ch = channel(obis)
    if kind in _CLOCKED or (unit != ch.unit and ch.known):
        return 0
    if ch.cls is _REGISTER:
        code = _REGISTER_CODE | (_FREEZE if ch.group is not None and kind in _FROZEN else 0)
    elif ch.cls is _POWER:
        code = _POWER_CODE | (_CONTRACT if ch.contract else 0)
    else:
        return 0
    return code | (_CURVE if kind == "curve" else 0)


def _plain_meter(info: MeterInfo, c: _Compiled) -> tuple[int, float, bool]:
    """A meter's screen entry (see :meth:`InlineValidator._screen_meters`)."""
    if c.flag_unknown and not info.in_archive:
        return _NOT_PLAIN
    if not info.starts:
        return (-(2**62), float(c.default_kw), False)
    settings = info.settings[-1]
    if not settings.active:
        return _NOT_PLAIN
    rating = float(settings.rating_kw * c.margin)
    return (info.starts[-1], rating, settings.contract_kw is not None)


def _one(index: int) -> Callable[[Sequence[Any]], tuple[Any]]:
    """``itemgetter`` of one index, returning a 1-tuple as ``itemgetter`` of several does."""
    return lambda column: (column[index],)


def _ratio(settings: Any) -> Decimal:
    return settings.ratio if settings is not None else _ONE


def _detail(prev_us: int, prev: Decimal, delta: Decimal) -> dict[str, Any]:
    return {
        "previous": str(prev),
        "previous_ts": from_utc_micros(prev_us).isoformat(),
        "delta": str(delta),
    }


def _total_obis(tariff_obis: str) -> str:
    """``1-0:1.8.2`` (or ``1-0:1.8.2*1``) → its total ``1-0:1.8.0``."""
    return _tariff_obis(tariff_obis, 0)


def _tariff_obis(total: str, tariff: int) -> str:
    """``1-0:1.8.0`` (or ``1-0:1.8.0*1``) → tariff ``tariff``'s register."""
    code, star, period = total.partition("*")
    return f"{code[:-1]}{tariff}{star}{period}"


def _canonical(
    readings: Sequence[Any], micros: list[int]
) -> tuple[list[int], list[tuple[int, list[int], bool]]]:
    """The batch in (meter, obis, time) order with each key once: of two versions the
    higher seq (or, without seqs, the later) is kept. Returns the order and, per repeated
    key, (kept index, the others, whether the values differ)."""

    for i, r in enumerate(readings):  # the pass that found the disorder may have stopped early
        micros[i] = _micros_of(r.time, i, "time")

    def rank(i: int) -> tuple[str, str, int, int, int]:
        r = readings[i]
        return (r.meter, r.obis, micros[i], getattr(r, "seq", 0) or 0, i)

    ordered = sorted(range(len(readings)), key=rank)
    order: list[int] = []
    duplicates: list[tuple[int, list[int], bool]] = []
    run: list[int] = []
    for i in [*ordered, -1]:
        if run and (
            i < 0
            or readings[i].meter != readings[run[0]].meter
            or readings[i].obis != readings[run[0]].obis
            or micros[i] != micros[run[0]]
        ):
            kept = run[-1]
            order.append(kept)
            if len(run) > 1:
                others = run[:-1]
                differ = any(readings[o].value != readings[kept].value for o in others)
                duplicates.append((kept, others, differ))
            run = []
        if i >= 0:
            run.append(i)
    return order, duplicates


def withdraw_exceptions(conn: Connection, keys: Sequence[Key]) -> None:
    """Delete the open exceptions of the per-reading rules at ``keys`` before they are
    validated again (a corrected value, a re-run). V2 stays: two versions in one batch is
    a fact of arrival that the stored reading can no longer show."""
    table = vee_exceptions
    for start in range(0, len(keys), 500):
        part = [tuple(k) for k in keys[start : start + 500]]
        conn.execute(
            delete(table).where(
                table.c.status == OPEN,
                table.c.day.is_(None),
                table.c.rule != "V2",
                tuple_(table.c.meter, table.c.obis, table.c.ts).in_(part),
            )
        )


def _bound(cache: dict[Any, Any], size: int) -> None:
    """Drop the oldest-inserted quarter when ``cache`` outgrows ``size``."""
    if len(cache) > size:
        for key in list(islice(cache, len(cache) - size + size // 4)):
            del cache[key]
