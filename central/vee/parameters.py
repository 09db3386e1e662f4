"""Rule parameters with effective dates: the defaults in :mod:`central.vee.rules`,
overridden by rows of ``vee_rule_parameters``, each valid over ``[effective_from,
effective_to)``.

A :class:`RuleSet` answers "which value did parameter P of rule R have at instant t", so a
re-run of last month validates last month's data with last month's tolerances. It cuts
time into segments at every instant some parameter changes; within a segment every value
is fixed, so the in-line validator resolves parameters once per batch, not per reading.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Connection

from central.db.types import checked_utc, utc_micros
from central.db.vee_tables import vee_rule_parameters
from central.vee.errors import InvalidVeeRequestError
from central.vee.rules import RULES, ParameterValue, rule

__all__ = [
    "DEFAULTS",
    "ParameterRow",
    "Parameters",
    "RuleSet",
    "load_rule_set",
    "parameter_history",
    "set_parameter",
]

#: Every parameter's default: (rule id, name) → value.
DEFAULTS: Final[Mapping[tuple[str, str], ParameterValue]] = {
    (r.id, p.name): p.default for r in RULES for p in r.parameters
}
_NEVER: Final = 2**62  # micros: later than any reading


@dataclass(frozen=True, slots=True)
class ParameterRow:
    """A stored value of one parameter, valid over ``[effective_from, effective_to)``."""

    rule: str
    name: str
    value: ParameterValue
    effective_from: datetime
    effective_to: datetime | None = None


class Parameters(dict[tuple[str, str], ParameterValue]):
    """Every parameter's value within one segment of time: ``params["V9", "margin"]``,
    or typed: ``params.decimal("V9", "margin")``."""

    def decimal(self, rule_id: str, name: str) -> Decimal:
        value = self[rule_id, name]
        assert isinstance(value, Decimal), (rule_id, name)
        return value

    def integer(self, rule_id: str, name: str) -> int:
        value = self[rule_id, name]
        assert isinstance(value, int) and not isinstance(value, bool), (rule_id, name)
        return value

    def codes(self, rule_id: str, name: str) -> tuple[str, ...]:
        value = self[rule_id, name]
        assert isinstance(value, tuple), (rule_id, name)
        return value


class RuleSet:
    """The parameter values over time; immutable (load a new one after a change)."""

    def __init__(self, rows: Iterable[ParameterRow] = ()) -> None:
        self.rows = tuple(sorted(rows, key=lambda r: (r.rule, r.name, r.effective_from)))
        for row in self.rows:
            if (row.rule, row.name) not in DEFAULTS:
                raise InvalidVeeRequestError(f"no parameter {row.name!r} in rule {row.rule}")
        cuts = {utc_micros(r.effective_from) for r in self.rows}
        cuts |= {utc_micros(r.effective_to) for r in self.rows if r.effective_to is not None}
        #: Segment i covers [starts[i], starts[i + 1]); segment 0 starts at -infinity.
        self.starts: tuple[int, ...] = (-_NEVER, *sorted(cuts))
        self._segments: list[Parameters | None] = [None] * len(self.starts)

    def segment(self, micros: int) -> tuple[int, int, Parameters]:
        """The segment holding ``micros`` (µs since the epoch): its start, its end and the
        values in force throughout it."""
        index = bisect_right(self.starts, micros) - 1
        params = self._segments[index]
        if params is None:
            params = self._segments[index] = self._resolve(self.starts[index])
        end = self.starts[index + 1] if index + 1 < len(self.starts) else _NEVER
        return self.starts[index], end, params

    def at(self, moment: datetime) -> Parameters:
        """Every parameter's value at ``moment`` (aware)."""
        return self.segment(utc_micros(moment))[2]

    def value(self, rule_id: str, name: str, moment: datetime) -> ParameterValue:
        return self.at(moment)[rule_id, name]

    def _resolve(self, micros: int) -> Parameters:
        params = Parameters(DEFAULTS)
        for row in self.rows:  # sorted by effective_from: the latest start wins
            start = utc_micros(row.effective_from)
            end = _NEVER if row.effective_to is None else utc_micros(row.effective_to)
            if start <= micros < end:
                params[row.rule, row.name] = row.value
        return params


def load_rule_set(conn: Connection) -> RuleSet:
    """The stored parameter values as a :class:`RuleSet`."""
    rows = conn.execute(
        select(
            vee_rule_parameters.c.rule,
            vee_rule_parameters.c.name,
            vee_rule_parameters.c.value,
            vee_rule_parameters.c.effective_from,
            vee_rule_parameters.c.effective_to,
        )
    ).all()
    return RuleSet(
        ParameterRow(
            r.rule,
            r.name,
            rule(r.rule).parameter(r.name).parse(r.value),
            r.effective_from,
            r.effective_to,
        )
        for r in rows
    )


def set_parameter(
    conn: Connection,
    rule_id: str,
    name: str,
    value: object,
    *,
    effective_from: datetime,
    by: str,
    reason: str | None = None,
) -> dict[str, Any]:
    """Give parameter ``name`` of rule ``rule_id`` the value ``value`` from
    ``effective_from`` on (until the next stored change, if one is scheduled later).

    The row in force at ``effective_from`` is closed there, so data before keeps its old
    value. Returns the stored row. Readings already validated keep their status until
    :func:`central.vee.rerun` re-validates them.
    """
    found = rule(rule_id)
    parameter = found.parameter(name)
    parsed = parameter.parse(str(value) if not isinstance(value, str) else value)
    try:
        start = checked_utc(effective_from)
    except ValueError as exc:
        raise InvalidVeeRequestError(f"effective_from: {exc}") from None
    if not by.strip():
        raise InvalidVeeRequestError("by: say who changes the parameter")
    table = vee_rule_parameters
    same = and_(table.c.rule == found.id, table.c.name == parameter.name)
    later = conn.execute(
        select(table.c.effective_from)
        .where(same, table.c.effective_from > start)
        .order_by(table.c.effective_from)
        .limit(1)
    ).scalar_one_or_none()
    # The row in force at the start ends there.
    conn.execute(
        update(table)
        .where(
            same,
            table.c.effective_from < start,
            or_(table.c.effective_to.is_(None), table.c.effective_to > start),
        )
        .values(effective_to=start)
    )
    now = datetime.now(UTC)
    row = {
        "rule": found.id,
        "name": parameter.name,
        "value": parameter.text(parsed),
        "effective_from": start,
        "effective_to": later,
        "set_by": by,
        "set_at": now,
        "reason": reason,
    }
    existing = conn.execute(
        select(table.c.id).where(same, table.c.effective_from == start)
    ).scalar_one_or_none()
    if existing is None:
        conn.execute(table.insert().values(**row))
    else:
        conn.execute(update(table).where(table.c.id == existing).values(**row))
    return row


def parameter_history(conn: Connection, rule_id: str | None = None) -> list[dict[str, Any]]:
    """Stored parameter rows, oldest first (optionally of one rule)."""
    query = select(vee_rule_parameters).order_by(
        vee_rule_parameters.c.rule, vee_rule_parameters.c.name, vee_rule_parameters.c.effective_from
    )
    if rule_id is not None:
        query = query.where(vee_rule_parameters.c.rule == rule(rule_id).id)
    return [dict(r._mapping) for r in conn.execute(query)]
