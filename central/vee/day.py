"""Meter-day VEE: :func:`close_day` runs the rules that need a whole day, then estimates
the day's missing curve points.

Rules (``central.vee.rules``): V1 completeness per curve quantity, V4 spike, V5 high/low
against the average daily use of the same day type, V6 zero and sustained zero without an
outage or trip event, V10 Σ intervals vs the daily-freeze delta, V13 frozen non-zero
values, V14 prolonged estimation, V15 meter events. Then estimation
(:mod:`central.vee.estimate`): LIN, REG, LIKEDAY.

The day is the utility's local day (``zone``, Asia/Shanghai by default): from local 00:00
to the next local 00:00. The daily freeze that *closes* day D is the one at D+1 00:00.

Where exceptions go:

* on the reading they judge — V4 the spike point, V13 the first point of the frozen run,
  V5 and V6 the daily freeze of ``1-0:1.8.0`` closing the day (the register billing uses:
  an issue holds it until reviewed);
* on the meter (``obis`` NULL, the quantity in ``detail``) — V1, V10, V14, V15.

Every exception close_day raises carries ``day``; running close_day again for the same day
replaces that day's *open* exceptions and estimates, and keeps closed exceptions (an
exception an operator closed is not raised again for the same value).

Estimates go to ``estimated_readings`` only, never to ``readings``. A real reading that
arrives later for the same key supersedes the estimate: close_day (and rerun) delete
estimates that have a real reading, and readers take the real value first
(:func:`channel_series`).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, delete, exists, select
from sqlalchemy.engine import Connection

from central.db.engine import make_engine
from central.db.schema import gateway_events, meters, readings
from central.db.vee_tables import estimated_readings, vee_exceptions
from central.vee.channels import ChannelClass, channel
from central.vee.estimate import LikeDay, estimate_day, like_day_candidates
from central.vee.exceptions import (
    OPEN,
    Key,
    NewException,
    apply_suppression,
    insert_exceptions,
    new_exception,
    refresh_statuses,
)
from central.vee.parameters import Parameters, RuleSet, load_rule_set
from central.vee.rules import Severity

__all__ = [
    "DEFAULT_ZONE",
    "IMPORT_TOTAL",
    "channel_series",
    "close_day",
    "day_window",
    "supersede_estimates",
]

DEFAULT_ZONE: Final = "Asia/Shanghai"
IMPORT_TOTAL: Final = "1-0:1.8.0"
EXPORT_TOTAL: Final = "1-0:2.8.0"
#: Meters per transaction: bounded memory, and other writers are not shut out for long.
METERS_PER_CHUNK: Final = 200
#: How far back a quantity counts as one of the meter's curves (a silent day still is one).
CHANNEL_LOOKBACK: Final = timedelta(days=7)
_INFO: Final = Severity.INFORMATION.value
_ISSUE: Final = Severity.ISSUE.value
_HOUR: Final = Decimal(3600)
MIDNIGHT: Final = time(0)


def day_window(day: date, zone: str = DEFAULT_ZONE) -> tuple[datetime, datetime]:
    """Local ``day`` in ``zone`` as [start, end) in UTC."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return start, end


def close_day(
    engine: Engine,
    day: date,
    *,
    meters: Sequence[str] | None = None,
    zone: str = DEFAULT_ZONE,
    rules: RuleSet | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Run the meter-day rules and estimation for local ``day`` (all meters with an
    archive entry or readings near the day, or ``meters``). Returns a summary: meters,
    curve channels, points expected / received / estimated by method / left open,
    exceptions raised by rule.

    ``workers`` > 1 closes parts of the meters in that many processes, each with its own
    connection to the same database. That scales on PostgreSQL; SQLite lets one writer in
    at a time, so there the parts take turns (same result, no faster). An in-memory SQLite
    database cannot be shared with other processes."""
    if workers < 1:
        raise ValueError(f"workers must be 1 or more, not {workers}")
    url = engine.url
    if (
        workers > 1
        and url.get_backend_name() == "sqlite"
        and url.database in (None, "", ":memory:")
    ):
        raise ValueError(
            "close_day: an in-memory SQLite database cannot be shared with worker "
            "processes; use a database file or workers=1"
        )
    with engine.connect() as conn:
        ruleset = rules or load_rule_set(conn)
        start, end = day_window(day, zone)
        chosen = sorted(set(meters)) if meters is not None else _meters_of_day(conn, start, end)
    chunks = [chosen[i : i + METERS_PER_CHUNK] for i in range(0, len(chosen), METERS_PER_CHUNK)]
    if workers > 1 and len(chunks) > 1:
        return _close_in_processes(engine, day, zone, chunks, ruleset, workers).as_dict()
    return _close_chunks(engine, day, zone, chunks, ruleset).as_dict()


def _close_chunks(
    engine: Engine, day: date, zone: str, chunks: list[list[str]], ruleset: RuleSet
) -> _Summary:
    """Close the day for each chunk of meters, a transaction each."""
    summary = _Summary(day=day)
    params = ruleset.at(day_window(day, zone)[0])
    for chunk in chunks:
        with engine.begin() as conn:
            _close_chunk(conn, day, zone, chunk, params, summary)
    return summary


def _close_in_processes(
    engine: Engine,
    day: date,
    zone: str,
    chunks: list[list[str]],
    ruleset: RuleSet,
    workers: int,
) -> _Summary:
    url = engine.url
    summary = _Summary(day=day)
    # Parts of a few chunks each, handed out as workers come free: a part of meters with
    # long gaps (like days to load) does not hold the others back.
    size = max(1, min(8, len(chunks) // (workers * 4)))
    parts = [chunks[i : i + size] for i in range(0, len(chunks), size)]
    context = multiprocessing.get_context("spawn")  # no inherited connections or threads
    with ProcessPoolExecutor(
        max_workers=min(workers, len(parts)),
        mp_context=context,
        initializer=_worker_start,
        initargs=(url.render_as_string(hide_password=False),),
    ) as pool:
        for done in pool.map(partial(_worker_close, day, zone, ruleset), parts):
            summary.add(done)
    return summary


_worker_engine: Engine | None = None


def _worker_start(url: str) -> None:
    global _worker_engine
    _worker_engine = make_engine(url)


def _worker_close(day: date, zone: str, ruleset: RuleSet, chunks: list[list[str]]) -> _Summary:
    assert _worker_engine is not None, "started by _close_in_processes"
    return _close_chunks(_worker_engine, day, zone, chunks, ruleset)


@dataclass
class _Summary:
    day: date
    meters: int = 0
    channels: int = 0
    expected: int = 0
    received: int = 0
    estimated: dict[str, int] = field(default_factory=dict)
    not_estimated: int = 0
    exceptions: dict[str, int] = field(default_factory=dict)

    def add(self, other: _Summary) -> None:
        self.meters += other.meters
        self.channels += other.channels
        self.expected += other.expected
        self.received += other.received
        self.not_estimated += other.not_estimated
        for mine, theirs in (
            (self.estimated, other.estimated),
            (self.exceptions, other.exceptions),
        ):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "meters": self.meters,
            "channels": self.channels,
            "expected": self.expected,
            "received": self.received,
            "estimated": dict(sorted(self.estimated.items())),
            "not_estimated": self.not_estimated,
            "exceptions": dict(sorted(self.exceptions.items(), key=lambda kv: int(kv[0][1:]))),
        }


@dataclass
class _DayData:
    """One chunk of meters' data for the day (plain values)."""

    channels: dict[str, set[str]]
    points: dict[tuple[str, str], dict[int, tuple[Decimal, str | None]]]
    freezes: dict[tuple[str, str], dict[date, Decimal]]
    # (meter, date) whose import freeze VEE holds: the day it closes is no history.
    held_freezes: set[tuple[str, date]]
    events: dict[str, list[Any]]
    estimated_days: dict[str, set[date]]


def _meters_of_day(conn: Connection, start: datetime, end: datetime) -> list[str]:
    found = set(conn.execute(select(meters.c.meter)).scalars())
    found |= set(
        conn.execute(
            select(readings.c.meter)
            .where(readings.c.ts >= start - CHANNEL_LOOKBACK, readings.c.ts <= end)
            .distinct()
        ).scalars()
    )
    return sorted(found)


def _close_chunk(
    conn: Connection,
    day: date,
    zone: str,
    chunk: list[str],
    params: Parameters,
    summary: _Summary,
) -> None:
    start, end = day_window(day, zone)
    interval = timedelta(seconds=params.integer("V1", "interval_s"))
    count = (end - start) // interval
    # The day's own earlier outcome must not decide this one (a spike it held would
    # otherwise be left out and go unflagged): withdraw it first.
    withdrawn = _withdraw_day(conn, day, chunk)
    data = _load(conn, day, zone, chunk, params, start, end, interval)
    raised: list[NewException] = []
    estimates: list[dict[str, Any]] = []
    now = datetime.now(UTC)
    like_needed: dict[tuple[str, str], None] = {}
    plans: list[tuple[str, str, dict[int, tuple[Decimal, str | None]]]] = []
    for meter in chunk:
        summary.meters += 1
        for obis in sorted(data.channels.get(meter, ())):
            points = data.points.get((meter, obis), {})
            plans.append((meter, obis, points))
            if any(k not in points for k in range(count)):
                like_needed[meter, obis] = None
    like = _load_like_days(conn, like_needed, day, zone, params, interval, count)
    for meter, obis, points in plans:
        summary.channels += 1
        made = _channel_day(
            meter, obis, points, day, start, end, count, interval, params, data, like, raised, now
        )
        received = sum(1 for k in range(count) if k in points)
        summary.expected += count
        summary.received += received
        summary.not_estimated += count - received - len(made)
        for estimate in made:
            estimates.append(estimate)
            method = estimate["method"]
            summary.estimated[method] = summary.estimated.get(method, 0) + 1
    estimated_today = {e["meter"] for e in estimates}
    for meter in chunk:
        days = data.estimated_days.get(meter, set())
        if meter in estimated_today:
            days = days | {day}
        _consumption_rules(meter, day, zone, start, end, params, data, raised, now)
        _prolonged_estimation(meter, day, start, params, days, raised, now)
        _meter_events(meter, day, zone, params, data.events.get(meter, ()), raised, now)
    _write(conn, chunk, start, end, raised, estimates, withdrawn)
    for row in raised:
        summary.exceptions[row["rule"]] = summary.exceptions.get(row["rule"], 0) + 1


def _load(
    conn: Connection,
    day: date,
    zone: str,
    chunk: list[str],
    params: Parameters,
    start: datetime,
    end: datetime,
    interval: timedelta,
) -> _DayData:
    channels: dict[str, set[str]] = {}
    for meter, obis in conn.execute(
        select(readings.c.meter, readings.c.obis)
        .where(
            readings.c.meter.in_(chunk),
            readings.c.kind == "curve",
            readings.c.ts >= start - CHANNEL_LOOKBACK,
            readings.c.ts < end,
        )
        .distinct()
    ):
        channels.setdefault(meter, set()).add(obis)
    points: dict[tuple[str, str], dict[int, tuple[Decimal, str | None]]] = {}
    curve_obis = sorted({o for found in channels.values() for o in found})
    if curve_obis:
        # By quantity, not kind: a register's 00:00 point may be stored as the freeze.
        for row in conn.execute(
            select(readings.c.meter, readings.c.obis, readings.c.ts, readings.c.value)
            .add_columns(readings.c.vee_status)
            .where(
                readings.c.meter.in_(chunk),
                readings.c.obis.in_(curve_obis),
                readings.c.ts >= start - interval,
                readings.c.ts <= end,
            )
        ).all():
            meter, obis, ts, value, status = row
            if obis not in channels.get(meter, ()):
                continue
            slot, off_grid = divmod(ts - start, interval)
            if off_grid:
                continue  # off the grid: V12 held it already
            points.setdefault((meter, obis), {})[slot] = (value, status)
    history = params.integer("V5", "history_days") + params.integer("V6", "sustained_days") + 1
    freezes: dict[tuple[str, str], dict[date, Decimal]] = {}
    held_freezes: set[tuple[str, date]] = set()
    tz = ZoneInfo(zone)
    for row in conn.execute(
        select(readings.c.meter, readings.c.obis, readings.c.ts, readings.c.value)
        .add_columns(readings.c.vee_status)
        .where(
            readings.c.meter.in_(chunk),
            readings.c.obis.in_([IMPORT_TOTAL, EXPORT_TOTAL]),
            readings.c.ts >= start - timedelta(days=history),
            readings.c.ts <= end,
        )
    ).all():
        meter, obis, ts, value, status = row
        local = ts.astimezone(tz)
        if local.time() == MIDNIGHT:
            freezes.setdefault((meter, obis), {})[local.date()] = value
            if status == "failed" and obis == IMPORT_TOTAL:
                held_freezes.add((meter, local.date()))
    sustained = params.integer("V6", "sustained_days")
    events: dict[str, list[Any]] = {}
    for row in conn.execute(
        select(gateway_events.c.meter, gateway_events.c.code, gateway_events.c.at)
        .add_columns(gateway_events.c.detail)
        .where(
            gateway_events.c.meter.in_(chunk),
            gateway_events.c.at >= start - timedelta(days=sustained),
            gateway_events.c.at < end,
        )
        .order_by(gateway_events.c.at)
    ):
        events.setdefault(row.meter, []).append(row)
    max_days = params.integer("V14", "max_days")
    estimated_days: dict[str, set[date]] = {m: set() for m in chunk}
    for meter, ts in conn.execute(
        select(estimated_readings.c.meter, estimated_readings.c.ts)
        .where(
            estimated_readings.c.meter.in_(chunk),
            estimated_readings.c.ts >= start - timedelta(days=max_days + 1),
            estimated_readings.c.ts < start,
        )
        .distinct()
    ):
        estimated_days[meter].add(ts.astimezone(tz).date())
    return _DayData(channels, points, freezes, held_freezes, events, estimated_days)


def _load_like_days(
    conn: Connection,
    wanted: dict[tuple[str, str], None],
    day: date,
    zone: str,
    params: Parameters,
    interval: timedelta,
    count: int,
) -> dict[tuple[str, str], list[LikeDay]]:
    """Real, unfailed points of the candidate like days of each channel with gaps."""
    if not wanted:
        return {}
    lookback = params.integer("V1", "like_day_lookback_days")
    candidates = like_day_candidates(day, lookback)
    if not candidates:
        return {}
    earliest = day_window(min(candidates), zone)[0] - interval
    latest = day_window(max(candidates), zone)[1]
    by_day: dict[tuple[str, str], dict[date, dict[int, Decimal]]] = {}
    windows = {d: day_window(d, zone)[0] for d in candidates}
    meters_wanted = sorted({m for m, _ in wanted})
    obis_wanted = sorted({o for _, o in wanted})
    for row in conn.execute(
        select(readings.c.meter, readings.c.obis, readings.c.ts, readings.c.value).where(
            readings.c.meter.in_(meters_wanted),
            readings.c.obis.in_(obis_wanted),
            readings.c.ts >= earliest,
            readings.c.ts <= latest,
            readings.c.vee_status.is_distinct_from("failed"),
        )
    ):
        if (row.meter, row.obis) not in wanted:
            continue
        for candidate, begin in windows.items():
            offset = row.ts - begin
            if -interval <= offset <= interval * count and not offset % interval:
                by_day.setdefault((row.meter, row.obis), {}).setdefault(candidate, {})[
                    offset // interval
                ] = row.value
    return {
        key: [LikeDay(d, found[d]) for d in candidates if d in found]
        for key, found in by_day.items()
    }


def _channel_day(
    meter: str,
    obis: str,
    points: dict[int, tuple[Decimal, str | None]],
    day: date,
    start: datetime,
    end: datetime,
    count: int,
    interval: timedelta,
    params: Parameters,
    data: _DayData,
    like: dict[tuple[str, str], list[LikeDay]],
    raised: list[NewException],
    now: datetime,
) -> list[dict[str, Any]]:
    """V1, V4, V10 (intervals), V13 on one curve, then its estimates."""
    ch = channel(obis)
    register = ch.cls is ChannelClass.REGISTER
    good = {k: v for k, (v, status) in points.items() if status != "failed"}
    # Failed readings of the day itself (not the anchors before and after it).
    held = frozenset(k for k, (_, s) in points.items() if s == "failed" and 0 <= k < count)
    hours = Decimal(interval // timedelta(seconds=1)) / _HOUR

    def at(k: int) -> datetime:
        return start + interval * k

    # Interval values in time order: a power curve's points, a register's increments
    # (attributed to the interval's end point).
    if register:
        series = {k: good[k] - good[k - 1] for k in range(count + 1) if k in good and k - 1 in good}
        series = {k: v for k, v in series.items() if 0 < k <= count}
    else:
        series = {k: v for k, v in good.items() if 0 <= k < count}
    # V4 spike: the highest interval against the third highest.
    ordered = sorted(series.items(), key=lambda kv: kv[1], reverse=True)
    tolerance = params.decimal("V4", "tolerance")
    enough = len(ordered) >= 3 and len(ordered) >= params.decimal("V4", "min_share") * count
    if enough and ordered[2][1] > 0 and ordered[0][1] > tolerance * ordered[2][1]:
        k, peak = ordered[0]
        ratio = peak / ordered[2][1]
        raised.append(
            new_exception(
                meter,
                obis,
                at(k),
                "V4",
                _ISSUE,
                points[k][0],
                {"max": str(peak), "third_max": str(ordered[2][1]), "ratio": str(ratio)},
                now,
                day,
            )
        )
    # V13 frozen: N identical non-zero intervals in a row (a register's small increments
    # repeat by its resolution alone: 0.02 kWh a quarter for hours is a quiet night).
    frozen_run = params.integer("V13", "intervals")
    floor = params.decimal("V13", "register_floor_kw") * hours if register else Decimal(0)
    run: list[int] = []
    for k in range(count + 1):
        value = series.get(k)
        if run and (value is None or value != series[run[0]]):
            if len(run) >= frozen_run and series[run[0]] != 0 and abs(series[run[0]]) > floor:
                raised.append(
                    new_exception(
                        meter,
                        obis,
                        at(run[0]),
                        "V13",
                        _ISSUE,
                        points[run[0]][0],
                        {
                            "value": str(series[run[0]]),
                            "intervals": len(run),
                            "from": at(run[0]).isoformat(),
                            "to": at(run[-1]).isoformat(),
                        },
                        now,
                        day,
                    )
                )
            run = []
        if value is not None:
            run.append(k)
    # V10: a power curve's day adds up to the freezes' energy.
    day_energy = _day_energy(meter, ch.energy, day, data) if ch.energy else None
    present = [k for k in range(count) if k in points]
    if day_energy is not None and len(present) == count and not held:
        total = sum((good[k] for k in range(count)), Decimal(0)) * hours
        difference = abs(total - day_energy)
        limit_kwh = params.decimal("V10", "tolerance_kwh")
        pct = params.decimal("V10", "power_curve_tolerance_pct")
        if difference > limit_kwh and difference * 100 > abs(day_energy) * pct:
            raised.append(
                new_exception(
                    meter,
                    None,
                    start,
                    "V10",
                    _ISSUE,
                    None,
                    {
                        "obis": obis,
                        "intervals_kwh": str(total),
                        "freeze_delta_kwh": str(day_energy),
                        "difference": str(difference),
                    },
                    now,
                    day,
                )
            )
    # Estimation of the missing points.
    made = estimate_day(
        count=count,
        known=good,
        held=held,
        register=register,
        hours_per_interval=hours,
        max_linear=params.integer("V1", "max_linear_intervals"),
        like_days=like.get((meter, obis), ()),
        day_energy=day_energy,
    )
    missing = [k for k in range(count) if k not in points]
    if missing:
        methods: dict[str, int] = {}
        for e in made.values():
            methods[e.method] = methods.get(e.method, 0) + 1
        raised.append(
            new_exception(
                meter,
                None,
                start,
                "V1",
                _INFO,
                None,
                {
                    "obis": obis,
                    "expected": count,
                    "received": count - len(missing),
                    "gaps": _gap_list(missing, at, interval),
                    "estimated": methods,
                    "not_estimated": len(missing) - len(made),
                },
                now,
                day,
            )
        )
    return [
        {
            "meter": meter,
            "obis": obis,
            "ts": at(k),
            "index": k,
            "value": e.value,
            "method": e.method,
            "based_on": e.based_on,
        }
        for k, e in sorted(made.items())
    ]


def _gap_list(missing: list[int], at: Any, interval: timedelta) -> list[dict[str, Any]]:
    gaps: list[list[int]] = []
    for k in missing:
        if gaps and gaps[-1][-1] == k - 1:
            gaps[-1].append(k)
        else:
            gaps.append([k])
    return [
        {"from": at(g[0]).isoformat(), "to": (at(g[-1]) + interval).isoformat(), "points": len(g)}
        for g in gaps
    ]


def _day_energy(meter: str, energy: tuple[str, str], day: date, data: _DayData) -> Decimal | None:
    """Import minus export over the day from the freezes (export 0 when not frozen)."""
    imported = _delta(data.freezes.get((meter, energy[0]), {}), day)
    if imported is None:
        return None
    exported = _delta(data.freezes.get((meter, energy[1]), {}), day)
    return imported - (exported or Decimal(0))


def _delta(freezes: dict[date, Decimal], day: date) -> Decimal | None:
    """The register's increase over ``day``: freeze at day+1 00:00 minus freeze at day
    00:00 (with the 999999.99 rollover)."""
    first, last = freezes.get(day), freezes.get(day + timedelta(days=1))
    if first is None or last is None:
        return None
    delta = last - first
    if delta < 0 and first > 900000 and last < 100000:
        delta += 1000000
    return delta


def _consumption_rules(
    meter: str,
    day: date,
    zone: str,
    start: datetime,
    end: datetime,
    params: Parameters,
    data: _DayData,
    raised: list[NewException],
    now: datetime,
) -> None:
    """V5 high/low and V6 zero on the day's import from the freezes."""
    freezes = data.freezes.get((meter, IMPORT_TOTAL), {})
    total = _delta(freezes, day)
    if total is None or total < 0:
        return  # no day total (V1 lists the gap; V7 holds a register going back)
    closing = freezes[day + timedelta(days=1)]
    history_days = params.integer("V5", "history_days")
    history = {
        d: t
        for d in (day - timedelta(days=n) for n in range(1, history_days + 1))
        if (t := _delta(freezes, d)) is not None
        and t >= 0
        and (meter, d + timedelta(days=1)) not in data.held_freezes
    }
    weekend = day.weekday() >= 5
    same_type = [t for d, t in history.items() if (d.weekday() >= 5) == weekend]
    events = data.events.get(meter, [])
    outage_codes = set(params.codes("V6", "outage_codes"))

    def outage_on(d: date) -> bool:
        begin, finish = day_window(d, zone)
        return any(e.code in outage_codes and begin <= e.at < finish for e in events)

    if total == 0:
        if not any(t > 0 for t in history.values()) or outage_on(day):
            return
        run = 1
        sustained = params.integer("V6", "sustained_days")
        while run < sustained:
            previous = day - timedelta(days=run)
            if history.get(previous) != 0 or outage_on(previous):
                break
            run += 1
        severity = _ISSUE if run >= sustained else _INFO
        raised.append(
            new_exception(
                meter,
                IMPORT_TOTAL,
                end,
                "V6",
                severity,
                closing,
                {"zero_days": run, "route": "theft/fault" if severity == _ISSUE else "watch"},
                now,
                day,
            )
        )
        return
    if len(same_type) < params.integer("V5", "min_history_days"):
        return
    average = sum(same_type, Decimal(0)) / len(same_type)
    if average <= 0:
        return
    high = params.decimal("V5", "high_factor")
    low = params.decimal("V5", "low_factor")
    ratio = total / average
    if total > high * average or total < low * average:
        raised.append(
            new_exception(
                meter,
                IMPORT_TOTAL,
                end,
                "V5",
                _ISSUE,
                closing,
                {
                    "day_kwh": str(total),
                    "average_kwh": str(average.quantize(Decimal("0.0001"))),
                    "ratio": str(ratio.quantize(Decimal("0.0001"))),
                    "days": len(same_type),
                    "direction": "high" if total > high * average else "low",
                },
                now,
                day,
            )
        )


def _prolonged_estimation(
    meter: str,
    day: date,
    start: datetime,
    params: Parameters,
    days: set[date],
    raised: list[NewException],
    now: datetime,
) -> None:
    """V14: estimates on more than max_days days in a row, ending today."""
    if day not in days:
        return
    run = 0
    while day - timedelta(days=run) in days:
        run += 1
    max_days = params.integer("V14", "max_days")
    if run > max_days:
        raised.append(
            new_exception(
                meter,
                None,
                start,
                "V14",
                _ISSUE,
                None,
                {"estimated_days": run, "route": "field work order"},
                now,
                day,
            )
        )


def _meter_events(
    meter: str,
    day: date,
    zone: str,
    params: Parameters,
    events: Iterable[Any],
    raised: list[NewException],
    now: datetime,
) -> None:
    """V15: the day's meter events, routed to the theft or the O&M queue."""
    theft = set(params.codes("V15", "theft_codes"))
    om = set(params.codes("V15", "om_codes"))
    start, end = day_window(day, zone)
    for event in events:
        if not start <= event.at < end:
            continue
        if event.code in theft:
            severity, route = _ISSUE, "theft"
        elif event.code in om:
            severity, route = _INFO, "o&m"
        else:
            continue
        raised.append(
            new_exception(
                meter,
                None,
                event.at,
                "V15",
                severity,
                None,
                {"code": event.code, "route": route, "event": event.detail},
                now,
                day,
            )
        )


def _withdraw_day(conn: Connection, day: date, chunk: list[str]) -> set[Key]:
    """Delete the day's open exceptions of these meters and recompute the statuses they
    held; returns the keys touched."""
    table = vee_exceptions
    stale = and_(table.c.meter.in_(chunk), table.c.day == day, table.c.status == OPEN)
    touched: set[Key] = {
        (r.meter, r.obis, r.ts)
        for r in conn.execute(select(table.c.meter, table.c.obis, table.c.ts).where(stale))
        if r.obis is not None
    }
    conn.execute(delete(table).where(stale))
    if touched:
        refresh_statuses(conn, touched)
    return touched


def _write(
    conn: Connection,
    chunk: list[str],
    start: datetime,
    end: datetime,
    raised: list[NewException],
    estimates: list[dict[str, Any]],
    touched: set[Key],
) -> None:
    """The day's new exceptions and estimates for these meters; statuses follow."""
    kept, _, _ = apply_suppression(conn, raised)
    insert_exceptions(conn, kept)
    touched = touched | {(r["meter"], r["obis"], r["ts"]) for r in kept if r["obis"] is not None}
    conn.execute(
        delete(estimated_readings).where(
            estimated_readings.c.meter.in_(chunk),
            estimated_readings.c.ts >= start,
            estimated_readings.c.ts < end,
        )
    )
    if estimates:
        now = datetime.now(UTC)
        conn.execute(
            estimated_readings.insert(),
            [
                {
                    "meter": e["meter"],
                    "obis": e["obis"],
                    "ts": e["ts"],
                    "value": e["value"],
                    "method": e["method"],
                    "based_on": e["based_on"],
                    "created_at": now,
                }
                for e in estimates
            ],
        )
    supersede_estimates(conn, chunk, start - timedelta(days=1), end + timedelta(days=1))
    if touched:
        refresh_statuses(conn, touched)


def supersede_estimates(
    conn: Connection, meter_ids: Sequence[str], start: datetime, end: datetime
) -> int:
    """Delete the estimates that a real reading now exists for (``start <= ts < end``);
    returns how many."""
    e = estimated_readings
    real = exists().where(
        readings.c.meter == e.c.meter, readings.c.obis == e.c.obis, readings.c.ts == e.c.ts
    )
    done = conn.execute(
        delete(e).where(e.c.meter.in_(list(meter_ids)), e.c.ts >= start, e.c.ts < end, real)
    )
    return int(done.rowcount or 0)


def channel_series(
    conn: Connection, meter: str, obis: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """A quantity's points over [start, end): the real readings (with their VEE status)
    and, where none exists, the estimates — each marked ``estimated`` with its method."""
    real = {
        r.ts: {"ts": r.ts, "value": r.value, "vee_status": r.vee_status, "estimated": False}
        for r in conn.execute(
            select(readings.c.ts, readings.c.value, readings.c.vee_status).where(
                readings.c.meter == meter,
                readings.c.obis == obis,
                readings.c.ts >= start,
                readings.c.ts < end,
            )
        )
    }
    for r in conn.execute(
        select(
            estimated_readings.c.ts, estimated_readings.c.value, estimated_readings.c.method
        ).where(
            estimated_readings.c.meter == meter,
            estimated_readings.c.obis == obis,
            estimated_readings.c.ts >= start,
            estimated_readings.c.ts < end,
        )
    ):
        real.setdefault(r.ts, {"ts": r.ts, "value": r.value, "method": r.method, "estimated": True})
    return [real[ts] for ts in sorted(real)]
