"""VEE exceptions — one row per rule failure — and what they make of a reading's status.

The library functions the API calls (each takes the caller's SQLAlchemy ``Connection`` and
runs in its transaction): :func:`list_exceptions`, :func:`get_exception`,
:func:`resolve_exception`, :func:`override_exception`, :func:`rule_table`,
:func:`reading_status`.

A reading's status follows from the exceptions on its key (meter, obis, ts):

* ``failed`` — an open exception of severity issue or terminate;
* ``overridden`` — otherwise, an operator overrode an exception on it and the value is the
  one accepted (the value before VEE, or the override's new value);
* ``flagged`` — otherwise, open information exceptions;
* ``valid`` — none of these.

Resolving an exception closes it ("dealt with"; the reading is no longer held by it);
overriding closes it and accepts the reading as billable, optionally replacing the value in
``readings`` while the exception keeps the value before VEE. Closed exceptions keep their
audit fields for ever; a later re-run does not raise the same rule again for the same value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import and_, bindparam, or_, select, tuple_, update
from sqlalchemy.engine import Connection

from central.db.schema import readings
from central.db.types import checked_decimal, checked_utc
from central.db.vee_tables import estimated_readings, vee_exceptions
from central.vee.errors import ExceptionClosedError, ExceptionNotFoundError, InvalidVeeRequestError
from central.vee.parameters import load_rule_set, parameter_history
from central.vee.rules import BILLABLE_STATUSES, HOLDING, RULES, Severity, Status, rule

__all__ = [
    "EXCEPTION_STATUSES",
    "MAX_PAGE",
    "Key",
    "NewException",
    "apply_suppression",
    "get_exception",
    "insert_exceptions",
    "list_exceptions",
    "override_exception",
    "reading_status",
    "refresh_statuses",
    "resolve_exception",
    "rule_table",
    "status_from",
]

OPEN: Final = "open"
RESOLVED: Final = "resolved"
OVERRIDDEN: Final = "overridden"
EXCEPTION_STATUSES: Final = (OPEN, RESOLVED, OVERRIDDEN)
#: The most exceptions one call lists (the API pages with ``after_id``).
MAX_PAGE: Final = 1000
#: Keys per statement when looking rows up by key (SQLite binds ≤ 32 766 variables).
KEY_CHUNK: Final = 500

Key = tuple[str, str | None, datetime]
_HOLDING_TEXT: Final = frozenset(s.value for s in HOLDING)


class NewException(dict[str, Any]):
    """A ``vee_exceptions`` row about to be inserted (its columns as keys)."""


def new_exception(
    meter: str,
    obis: str | None,
    ts: datetime,
    rule_id: str,
    severity: Severity | str,
    value: Decimal | None,
    detail: dict[str, Any],
    raised_at: datetime,
    day: Any = None,
) -> NewException:
    return NewException(
        meter=meter,
        obis=obis,
        ts=ts,
        day=day,
        rule=rule_id,
        severity=str(severity),
        value_before=value,
        value_after=None,
        detail=detail,
        raised_at=raised_at,
        status=OPEN,
        resolved_by=None,
        resolved_at=None,
        reason=None,
    )


def status_from(open_severities: Iterable[str], overridden: bool) -> str:
    """A reading's status from the severities of its open exceptions and whether an
    operator's override applies to its value."""
    severities = set(open_severities)
    if severities & _HOLDING_TEXT:
        return Status.FAILED.value
    if overridden:
        return Status.OVERRIDDEN.value
    if severities:
        return Status.FLAGGED.value
    return Status.VALID.value


def _override_applies(row: Any, value: Decimal | None) -> bool:
    if row.status != OVERRIDDEN or value is None:
        return False
    if row.value_after is not None:
        return bool(row.value_after == value)
    return bool(row.value_before == value)


def _keys_clause(keys: Sequence[Key]) -> Any:
    """Rows at ``keys``; a key without obis (a meter event) matches ``obis IS NULL``."""
    table = vee_exceptions
    with_obis = [tuple(k) for k in keys if k[1] is not None]
    without = [(k[0], k[2]) for k in keys if k[1] is None]
    clauses: list[Any] = []
    if with_obis:
        clauses.append(tuple_(table.c.meter, table.c.obis, table.c.ts).in_(with_obis))
    if without:
        clauses.append(table.c.obis.is_(None) & tuple_(table.c.meter, table.c.ts).in_(without))
    return or_(*clauses)


def apply_suppression(
    conn: Connection, candidates: list[NewException]
) -> tuple[list[NewException], set[Key], list[NewException]]:
    """Sort the candidates against the exceptions already stored at their keys (same rule
    and value before VEE): one an operator closed is not raised again; one still open is
    not raised twice (validating the same reading again is harmless). Returns the rows to
    insert, the keys where a closed *override* applies to the value, and the candidates in
    effect (to insert, or already open) — what the reading's status follows from."""
    if not candidates:
        return [], set(), []
    keys = sorted({(c["meter"], c["obis"], c["ts"]) for c in candidates}, key=_key_order)
    stored: dict[tuple[Any, ...], Any] = {}
    for part in _chunks(keys):
        for row in conn.execute(
            select(
                vee_exceptions.c.meter,
                vee_exceptions.c.obis,
                vee_exceptions.c.ts,
                vee_exceptions.c.rule,
                vee_exceptions.c.value_before,
                vee_exceptions.c.value_after,
                vee_exceptions.c.status,
            ).where(_keys_clause(part))
        ):
            stored.setdefault((row.meter, row.obis, row.ts, row.rule), []).append(row)
    if not stored:
        return candidates, set(), candidates
    insert: list[NewException] = []
    in_effect: list[NewException] = []
    overridden: set[Key] = set()
    for candidate in candidates:
        key = (candidate["meter"], candidate["obis"], candidate["ts"])
        value = candidate["value_before"]
        matches = [r for r in stored.get((*key, candidate["rule"]), ()) if r.value_before == value]
        if not matches:
            insert.append(candidate)
            in_effect.append(candidate)
        elif any(r.status == OPEN for r in matches):
            in_effect.append(candidate)
        elif any(_override_applies(r, value) for r in matches):
            overridden.add(key)
    return insert, overridden, in_effect


def insert_exceptions(conn: Connection, rows: Sequence[NewException]) -> None:
    if rows:
        conn.execute(vee_exceptions.insert(), [dict(r) for r in rows])


def refresh_statuses(conn: Connection, keys: Iterable[Key]) -> dict[Key, str]:
    """Recompute ``vee_status`` of the readings at ``keys`` from their exceptions (readings
    not validated yet — NULL — are left for the validator). Returns the new statuses."""
    wanted = sorted({k for k in keys if k[1] is not None}, key=_key_order)
    result: dict[Key, str] = {}
    for part in _chunks(wanted):
        stored = {
            (r.meter, r.obis, r.ts): r
            for r in conn.execute(
                select(readings.c.meter, readings.c.obis, readings.c.ts, readings.c.value)
                .add_columns(readings.c.vee_status)
                .where(
                    tuple_(readings.c.meter, readings.c.obis, readings.c.ts).in_(
                        [tuple(k) for k in part]
                    ),
                    readings.c.vee_status.is_not(None),
                )
            )
        }
        if not stored:
            continue
        by_key: dict[Key, list[Any]] = {}
        for row in conn.execute(
            select(
                vee_exceptions.c.meter,
                vee_exceptions.c.obis,
                vee_exceptions.c.ts,
                vee_exceptions.c.severity,
                vee_exceptions.c.status,
                vee_exceptions.c.value_before,
                vee_exceptions.c.value_after,
            ).where(vee_exceptions.c.status != RESOLVED, _keys_clause(list(stored)))
        ):
            by_key.setdefault((row.meter, row.obis, row.ts), []).append(row)
        changes = []
        for key, reading in stored.items():
            rows = by_key.get(key, ())
            status = status_from(
                (r.severity for r in rows if r.status == OPEN),
                any(_override_applies(r, reading.value) for r in rows),
            )
            result[key] = status
            if status != reading.vee_status:
                changes.append({"k_meter": key[0], "k_obis": key[1], "k_ts": key[2], "s": status})
        _write_statuses(conn, changes)
    return result


def _write_statuses(conn: Connection, changes: list[dict[str, Any]]) -> None:
    if not changes:
        return
    conn.execute(
        update(readings)
        .where(
            readings.c.meter == bindparam("k_meter"),
            readings.c.obis == bindparam("k_obis"),
            readings.c.ts == bindparam("k_ts"),
        )
        .values(vee_status=bindparam("s")),
        changes,
    )


def write_statuses(conn: Connection, statuses: dict[Key, str]) -> None:
    """Set ``vee_status`` of the readings at the keys."""
    _write_statuses(
        conn,
        [{"k_meter": k[0], "k_obis": k[1], "k_ts": k[2], "s": s} for k, s in statuses.items()],
    )


# -- the API's functions ---------------------------------------------------------------------


def _public(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


def list_exceptions(
    conn: Connection,
    *,
    meter: str | None = None,
    rule: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Exceptions oldest first (by id), filtered; ``since``/``until`` bound the data time
    ``ts`` (``since <= ts < until``); page on with ``after_id`` = the last id seen."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidVeeRequestError(f"limit must be 1..{MAX_PAGE}, got {limit}")
    conditions = []
    if meter is not None:
        conditions.append(vee_exceptions.c.meter == meter)
    if rule is not None:
        conditions.append(vee_exceptions.c.rule == _rule_id(rule))
    if status is not None:
        if status not in EXCEPTION_STATUSES:
            raise InvalidVeeRequestError(
                f"status must be one of {', '.join(EXCEPTION_STATUSES)}, got {status!r}"
            )
        conditions.append(vee_exceptions.c.status == status)
    if since is not None:
        conditions.append(vee_exceptions.c.ts >= _aware(since, "since"))
    if until is not None:
        conditions.append(vee_exceptions.c.ts < _aware(until, "until"))
    if after_id is not None:
        conditions.append(vee_exceptions.c.id > after_id)
    query = select(vee_exceptions).order_by(vee_exceptions.c.id).limit(limit)
    if conditions:
        query = query.where(and_(*conditions))
    return [_public(r) for r in conn.execute(query)]


def get_exception(conn: Connection, id: int) -> dict[str, Any] | None:
    row = conn.execute(select(vee_exceptions).where(vee_exceptions.c.id == id)).first()
    return None if row is None else _public(row)


def resolve_exception(conn: Connection, id: int, *, by: str, reason: str) -> dict[str, Any]:
    """Close exception ``id`` as dealt with; the reading's status is recomputed."""
    row = _open_exception(conn, id, by, reason)
    _close(conn, id, RESOLVED, by, reason, None)
    _after_close(conn, row)
    return _fetch(conn, id)


def override_exception(
    conn: Connection, id: int, *, by: str, reason: str, value: Decimal | None = None
) -> dict[str, Any]:
    """Close exception ``id`` accepting the reading as billable; with ``value``, replace the
    reading's value (the exception keeps the value before VEE)."""
    row = _open_exception(conn, id, by, reason)
    new_value = None
    if value is not None:
        if row.obis is None:
            raise InvalidVeeRequestError(
                f"exception {id} is about meter {row.meter} as a whole (rule {row.rule}); "
                "there is no reading value to replace — override without a value"
            )
        try:
            new_value = checked_decimal(value)
        except ValueError as exc:
            raise InvalidVeeRequestError(f"value: {exc}") from None
        key = (
            (readings.c.meter == row.meter)
            & (readings.c.obis == row.obis)
            & (readings.c.ts == row.ts)
        )
        done = conn.execute(update(readings).where(key).values(value=new_value))
        if done.rowcount == 0:
            raise InvalidVeeRequestError(
                f"exception {id}: no reading {row.meter} {row.obis} at {row.ts.isoformat()} "
                "to replace (it is a meter-day exception) — override without a value"
            )
    _close(conn, id, OVERRIDDEN, by, reason, new_value)
    _after_close(conn, row)
    return _fetch(conn, id)


def rule_table(conn: Connection, at: datetime | None = None) -> list[dict[str, Any]]:
    """The rules with each parameter's default, its value at ``at`` (default now) and the
    stored changes."""
    moment = _aware(at or datetime.now(UTC), "at")
    current = load_rule_set(conn).at(moment)
    history: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in parameter_history(conn):
        history.setdefault((row["rule"], row["name"]), []).append(
            {
                "value": row["value"],
                "effective_from": row["effective_from"],
                "effective_to": row["effective_to"],
                "set_by": row["set_by"],
                "set_at": row["set_at"],
                "reason": row["reason"],
            }
        )
    return [
        {
            "id": r.id,
            "name": r.name,
            "scope": r.scope.value,
            "severity": r.severity.value,
            "logic": r.logic,
            "source": r.source(),
            "parameters": [
                {
                    "name": p.name,
                    "kind": p.kind,
                    "unit": p.unit,
                    "description": p.description,
                    "default": p.text(p.default),
                    "value": p.text(current[r.id, p.name]),
                    "history": history.get((r.id, p.name), []),
                }
                for p in r.parameters
            ],
        }
        for r in RULES
    ]


def reading_status(conn: Connection, meter: str, obis: str, ts: datetime) -> dict[str, Any] | None:
    """A reading's VEE outcome: its status, whether it is billable, its exceptions; or,
    where no reading exists, the estimate (``estimated``); None when neither exists."""
    moment = _aware(ts, "ts")
    reading = conn.execute(
        select(readings.c.value, readings.c.vee_status).where(
            readings.c.meter == meter, readings.c.obis == obis, readings.c.ts == moment
        )
    ).first()
    exceptions = [
        _public(r)
        for r in conn.execute(
            select(vee_exceptions)
            .where(
                vee_exceptions.c.meter == meter,
                vee_exceptions.c.obis == obis,
                vee_exceptions.c.ts == moment,
            )
            .order_by(vee_exceptions.c.id)
        )
    ]
    estimate = None
    if reading is None:
        row = conn.execute(
            select(estimated_readings).where(
                estimated_readings.c.meter == meter,
                estimated_readings.c.obis == obis,
                estimated_readings.c.ts == moment,
            )
        ).first()
        if row is None:
            return None
        estimate = _public(row)
    status = None if reading is None else reading.vee_status
    return {
        "meter": meter,
        "obis": obis,
        "ts": moment,
        "value": None if reading is None else reading.value,
        "vee_status": status,
        "billable": status in BILLABLE_STATUSES,
        "exceptions": exceptions,
        "estimated": estimate,
    }


# -- internals -------------------------------------------------------------------------------


def _rule_id(value: str) -> str:
    return rule(value).id


def _aware(moment: datetime, what: str) -> datetime:
    try:
        return checked_utc(moment)
    except ValueError as exc:
        raise InvalidVeeRequestError(f"{what}: {exc}") from None


def _open_exception(conn: Connection, id: int, by: str, reason: str) -> Any:
    if not isinstance(by, str) or not by.strip():
        raise InvalidVeeRequestError("by: say who closes the exception")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidVeeRequestError("reason: say why the exception is closed")
    query = select(vee_exceptions).where(vee_exceptions.c.id == id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise ExceptionNotFoundError(f"no VEE exception {id}")
    if row.status != OPEN:
        raise ExceptionClosedError(
            f"VEE exception {id} is already {row.status} (by {row.resolved_by} at "
            f"{row.resolved_at.isoformat() if row.resolved_at else '?'}); it cannot be "
            "closed again"
        )
    return row


def _close(
    conn: Connection, id: int, status: str, by: str, reason: str, value: Decimal | None
) -> None:
    conn.execute(
        update(vee_exceptions)
        .where(vee_exceptions.c.id == id)
        .values(
            status=status,
            resolved_by=by,
            resolved_at=datetime.now(UTC),
            reason=reason,
            value_after=value,
        )
    )


def _after_close(conn: Connection, row: Any) -> None:
    if row.obis is not None:
        refresh_statuses(conn, [(row.meter, row.obis, row.ts)])


def _fetch(conn: Connection, id: int) -> dict[str, Any]:
    found = get_exception(conn, id)
    assert found is not None
    return found


def _key_order(key: Key) -> tuple[str, str, datetime]:
    return (key[0], key[1] or "", key[2])


def _chunks(keys: Sequence[Key]) -> Iterable[Sequence[Key]]:
    for start in range(0, len(keys), KEY_CHUNK):
        yield keys[start : start + KEY_CHUNK]
