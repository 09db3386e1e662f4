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
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any, Final

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

__all__ = ["InlineValidator", "withdraw_exceptions"]

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
_NO_PREVIOUS: Final = (-(2**62), None, -1)
_WAITING: Final = (-(2**62), None, 2**62)  # a register whose previous value is being fetched
_DISORDER: Final = object()
_ZERO: Final = Decimal(0)
_ONE: Final = Decimal(1)
_FAILED: Final = Status.FAILED.value


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
        self._last: dict[tuple[str, str], tuple[int, Decimal | None, int]] = {}
        self._meters: dict[str, MeterInfo] = {}
        self._channels: dict[str, Channel] = {}
        self._compiled: dict[int, _Compiled] = {}
        self._limits: dict[tuple[Decimal, int], Decimal] = {}
        # (meter, freeze total) -> whether that meter's freezes carry tariff registers.
        self._tariffed: dict[tuple[str, str], bool] = {}

    # -- public ----------------------------------------------------------------------------

    def validate(
        self,
        conn: Connection,
        readings: Sequence[Any],
        *,
        corrected: Iterable[Key] = (),
    ) -> list[str]:
        """Each reading's ``vee_status``, in order; the exceptions are inserted through
        ``conn``. ``corrected``: keys (meter, obis, ts) whose stored value this batch
        replaces — their open exceptions from the old value are withdrawn first."""
        now = self._clock()
        return self.check(conn, readings, now=now, corrected=corrected)

    def invalidate(self) -> None:
        """Forget cached registers, meters and parameters (after a rollback, or when the
        meters' settings or the parameters changed and should apply at once)."""
        self._last.clear()
        self._meters.clear()
        self._compiled.clear()
        self._limits.clear()
        self._tariffed.clear()
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
        result = self._pass(readings, range(n), micros, batch, now_us, arrival_us, True)
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
            # A stored total that the tariffs of this batch show wrong is held now.
            new_ids = {id(row) for row in inserted}
            refresh_statuses(
                conn, [(e["meter"], e["obis"], e["ts"]) for e in external if id(e) in new_ids]
            )
        statuses = self._statuses(readings, raised, rows, in_effect, overridden)
        for kept, others, _ in duplicates:
            for other in others:
                statuses[other] = statuses[kept]
        self._remember(batch, readings, micros, statuses)
        return statuses

    def _fetch(self, conn: Connection, batch: _Batch) -> None:
        if batch.need_meters:
            self._meters.update(load_meter_info(conn, batch.need_meters))
            _bound(self._meters, self.cache_size)
        if batch.need:
            found = fetch_previous(conn, batch.need)
            for key in batch.need:
                batch.state.pop(key, None)  # the "waiting" marks
                previous = found.get(key)
                batch.base[key] = _NO_PREVIOUS if previous is None else (*previous, -1)

    def _refresh(self, conn: Connection) -> None:
        moment = time.monotonic()
        if moment - self._loaded_at < self.refresh_s:
            return
        if self._fixed_rules is None:
            self._rules = load_rule_set(conn)
            self._compiled.clear()
        self._meters.clear()
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
        lands on the total, also when the total was stored by an earlier batch."""
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
            index = members.get(0)
            if index is not None:
                raised.append((index, "V10", _ISSUE, detail))
            else:
                external.append(
                    new_exception(
                        meter,
                        total,
                        from_utc_micros(us),
                        "V10",
                        _ISSUE,
                        total_value,
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
        last.update(batch.state)
        last.update(older)
        # A register that V10 failed after the loop accepted it is not a reference.
        for i, status in enumerate(statuses):
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
        "state",
        "times",
    )

    def __init__(self) -> None:
        # (meter, obis) -> (time and value of the last accepted register reading, time seen
        # last in this batch); the same tuples go into the validator's cache afterwards.
        self.state: dict[tuple[str, str], tuple[int, Decimal | None, int]] = {}
        # Other quantities: (meter, obis) -> time seen last in this batch.
        self.others: dict[tuple[str, str], int] = {}
        self.base: dict[tuple[str, str], tuple[int, Decimal | None, int]] = {}
        self.groups: dict[tuple[str, str, int], dict[int, int]] = {}
        self.raised: list[tuple[int, str, str, dict[str, Any]]] = []
        self.deferred: list[int] = []
        self.need: dict[tuple[str, str], int] = {}
        self.need_meters: set[str] = set()
        self.times: dict[datetime, int] = {}


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
