"""The collection O&M figures of a reading day: coverage, collection success, reading
timeliness and reading accuracy — per gateway, transformer area, meter, or in total.

With the facts of :mod:`central.ops.facts` (0/1 per meter):

=============  ==========================================  ======================  ======
figure         numerator                                   denominator             target
=============  ==========================================  ======================  ======
coverage       meters reached on D                         meters in D's archive   ≥ 99 %
success        expected daily readings received            expected daily readings ≥ 98 %
timeliness     expected daily readings received by the     expected daily readings ≥ 99 %
               deadline
accuracy       received daily readings that passed VEE     received daily readings ≥ 99 %
=============  ==========================================  ======================  ======

"Expected" is one reading per meter whose protocol keeps daily freezes (DL/T 645-2007,
DL/T 698.45): the billing register ``1-0:1.8.0`` frozen at local 00:00 of D+1 — the freeze
that closes D. Success counts it whenever it arrived (补抄 days later included);
timeliness only if central had it by the deadline (default D+1 06:00 local).

Each figure comes back with its numerator and denominator (integers) and ``ratio``, their
quotient as a ``Decimal`` cut (never rounded up) to six places, or None for 0/0; and
``meets_target`` against the utility's target.

This module is the library the API and ``central ops`` call; it also re-exports
:func:`worklist`, :func:`gateway_health` and :func:`readiness`.
"""

from __future__ import annotations

from datetime import date
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Final

from sqlalchemy import Connection, func, literal, select

from central.ops.facts import meter_facts
from central.ops.health import gateway_health
from central.ops.readiness import readiness
from central.ops.settings import OpsSettings, OpsSettingsError
from central.ops.worklist import worklist

__all__ = [
    "FIGURES",
    "GROUPINGS",
    "daily_figures",
    "figure",
    "gateway_health",
    "readiness",
    "worklist",
]

#: The figures, with (numerator fact, denominator fact) from :mod:`central.ops.facts`.
FIGURES: Final = {
    "coverage": ("reached", "meters"),
    "success": ("received", "expected"),
    "timeliness": ("timely", "expected"),
    "accuracy": ("passed", "received"),
}
#: ``by`` → the columns a row is keyed by.
GROUPINGS: Final = {
    "total": (),
    "gateway": ("gateway",),
    "area": ("area",),
    "meter": ("gateway", "area", "meter"),
}
_PLACES: Final = Decimal("0.000001")


def figure(numerator: int, denominator: int, target: Decimal | None = None) -> dict[str, Any]:
    """One figure: numerator, denominator, ratio (cut to 6 places), target, met or not."""
    ratio = (
        None
        if denominator == 0
        else (Decimal(numerator) / Decimal(denominator)).quantize(_PLACES, rounding=ROUND_FLOOR)
    )
    return {
        "numerator": numerator,
        "denominator": denominator,
        "ratio": ratio,
        "target": target,
        "meets_target": None if ratio is None or target is None else ratio >= target,
    }


def daily_figures(
    conn: Connection,
    day: date,
    *,
    by: str = "total",
    gateway: str | None = None,
    area: str | None = None,
    settings: OpsSettings | None = None,
) -> list[dict[str, Any]]:
    """The four figures of reading day ``day``, one row per group of ``by``
    (``total``, ``gateway``, ``area``, ``meter``), optionally limited to one gateway or
    transformer area. Rows are sorted by their keys; ``total`` always gives one row."""
    rules = settings or OpsSettings.from_env()
    if by not in GROUPINGS:
        raise OpsSettingsError(f"by={by!r}: expected one of {', '.join(GROUPINGS)}")
    reading_day = rules.reading_day(day)
    facts = meter_facts(rules, reading_day, gateway=gateway, area=area).subquery("facts")
    keys = [facts.c[name] for name in GROUPINGS[by]]
    query = select(
        *keys,
        func.count().label("meters"),
        *(func.coalesce(func.sum(facts.c[name]), literal(0)).label(name) for name in _SUMMED),
    )
    if keys:
        query = query.group_by(*keys).order_by(*keys)
    rows = conn.execute(query).mappings().all()
    result = []
    for row in rows:
        counts = {name: int(row[name]) for name in ("meters", *_SUMMED)}
        entry: dict[str, Any] = {
            "day": day,
            "by": by,
            **{name: row[name] for name in GROUPINGS[by]},
            "meters": counts["meters"],
            "expected": counts["expected"],
        }
        for name, (numerator, denominator) in FIGURES.items():
            entry[name] = figure(counts[numerator], counts[denominator], rules.targets.get(name))
        result.append(entry)
    return result


_SUMMED: Final = ("reached", "expected", "received", "timely", "passed")
