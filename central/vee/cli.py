"""`central vee ...` commands: thin over the library in `central.vee`.

Every command takes ``--database-url`` (default: ``M2C_DATABASE_URL``, else
``sqlite:///./central.sqlite3``), migrates the database first (a no-op when it is up to
date), prints a table or, with ``--json``, one JSON document; a VEE error is one line on
stderr and exit status 1.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from functools import wraps
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click
from sqlalchemy import Engine

from central.vee.errors import VeeError

__all__ = ["vee"]

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_URL = "sqlite:///./central.sqlite3"


def _database(command: F) -> F:
    """The --database-url and --zone options, and VeeError → `Error: …`, exit 1."""

    @click.option(
        "--database-url",
        envvar="M2C_DATABASE_URL",
        show_envvar=True,
        default=DEFAULT_URL,
        show_default=True,
        help="Central's database (SQLAlchemy URL).",
    )
    @click.option(
        "--zone",
        default="Asia/Shanghai",
        show_default=True,
        help="The utility's time zone: days and dates are local to it.",
    )
    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            ZoneInfo(kwargs["zone"])
        except (KeyError, ValueError) as exc:
            raise click.BadParameter(f"unknown time zone {kwargs['zone']!r}") from exc
        try:
            return command(*args, **kwargs)
        except VeeError as error:
            raise click.ClickException(str(error)) from error

    return wrapper  # type: ignore[return-value]


@contextmanager
def _engine(url: str) -> Iterator[Engine]:
    from central.db import make_engine, upgrade

    upgrade(url)
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _json_default(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _echo_json(value: object) -> None:
    click.echo(json.dumps(value, default=_json_default, ensure_ascii=False, indent=2))


def _instant(text: str, zone: str, what: str) -> datetime:
    """``YYYY-MM-DD`` (local midnight in ``zone``) or an ISO datetime with an offset."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), ZoneInfo(zone))
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a date (2026-03-01) or a datetime with an offset "
            "(2026-03-01T08:00:00+08:00)",
            param_hint=what,
        ) from None
    if moment.tzinfo is None:
        raise click.BadParameter(
            f"{text!r} has no UTC offset; add one (…+08:00) or give a date", param_hint=what
        )
    return moment


def _day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a date like 2026-03-01", param_hint=what
        ) from None


@click.group(
    help="""Validation, estimation and editing of readings (rules V1–V16, docs/vee.md).

    \b
    Example:
      M2C_DATABASE_URL=postgresql://vee@db/m2c central vee rules
    """
)
def vee() -> None:
    pass


@vee.command(
    "rules",
    help="""The rule table with each parameter's value now (or --at a moment).

    \b
    Example:
      central vee rules --json
    """,
)
@click.option("--at", "at_text", default=None, help="Values in force at this date/datetime.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_database
def rules_command(database_url: str, zone: str, at_text: str | None, as_json: bool) -> None:
    from central.vee import rule_table

    at = None if at_text is None else _instant(at_text, zone, "--at")
    with _engine(database_url) as engine, engine.connect() as conn:
        table = rule_table(conn, at=at)
    if as_json:
        _echo_json(table)
        return
    for r in table:
        click.echo(f"{r['id']:<4} {r['name']:<32} {r['scope']:<9} {r['severity']}")
        for p in r["parameters"]:
            changed = "" if p["value"] == p["default"] else f"  (default {p['default']})"
            click.echo(f"       {p['name']} = {p['value']} {p['unit']}{changed}".rstrip())


@vee.command(
    "set",
    help="""Set parameter PARAM of rule RULE to VALUE from a date on.

    Data before that date keeps the old value; run `central vee rerun` to re-validate
    readings already checked. Event-code parameters take a comma-separated list.

    \b
    Example:
      central vee set V4 tolerance 1.8 --from 2026-03-01 --reason "noisy C&I curves"
    """,
)
@click.argument("rule_id", metavar="RULE")
@click.argument("param", metavar="PARAM")
@click.argument("value", metavar="VALUE")
@click.option("--from", "from_text", required=True, help="Date (local) or datetime it starts.")
@click.option("--by", default=None, help="Who changes it [default: the login name].")
@click.option("--reason", default=None, help="Why (kept with the change).")
@_database
def set_command(
    database_url: str,
    zone: str,
    rule_id: str,
    param: str,
    value: str,
    from_text: str,
    by: str | None,
    reason: str | None,
) -> None:
    from central.vee import set_parameter

    start = _instant(from_text, zone, "--from")
    with _engine(database_url) as engine, engine.begin() as conn:
        row = set_parameter(
            conn, rule_id, param, value, effective_from=start, by=by or _login(), reason=reason
        )
    until = row["effective_to"].isoformat() if row["effective_to"] else "further notice"
    click.echo(
        f"{row['rule']} {row['name']} = {row['value']} from {row['effective_from'].isoformat()} "
        f"until {until}"
    )


@vee.command(
    "close-day",
    help="""Run the meter-day rules and estimation for local day DAY.

    Safe to run again: the day's open exceptions and estimates are replaced.
    --workers N closes parts of the meters in N processes: on PostgreSQL that scales
    with the cores; SQLite writes one part at a time, so it gains little.

    \b
    Example:
      central vee close-day 2026-03-02 --json
      central vee close-day 2026-03-02 --workers 8
    """,
)
@click.argument("day_text", metavar="DAY")
@click.option("--meter", "meters", multiple=True, help="Only this meter (repeatable).")
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_database
def close_day_command(
    database_url: str,
    zone: str,
    day_text: str,
    meters: tuple[str, ...],
    workers: int,
    as_json: bool,
) -> None:
    from central.vee import close_day

    day = _day(day_text, "DAY")
    with _engine(database_url) as engine:
        try:
            summary = close_day(
                engine, day, meters=list(meters) or None, zone=zone, workers=workers
            )
        except ValueError as error:
            raise click.UsageError(str(error)) from error
    if as_json:
        _echo_json(summary)
        return
    click.echo(_day_line(summary))


def _day_line(summary: dict[str, Any]) -> str:
    estimated = ", ".join(f"{k} {v}" for k, v in summary["estimated"].items()) or "none"
    raised = ", ".join(f"{k} {v}" for k, v in summary["exceptions"].items()) or "none"
    return (
        f"{summary['day']}: {summary['meters']} meters, {summary['channels']} curves, "
        f"{summary['received']}/{summary['expected']} points; estimated {estimated}; "
        f"left open {summary['not_estimated']}; exceptions {raised}"
    )


@vee.command(
    "rerun",
    help="""Re-validate the readings of the local days FROM..TO (inclusive) with the
    parameters now stored, then close each day again. Closed exceptions are kept.

    \b
    Example:
      central vee rerun --from 2026-03-01 --to 2026-03-07 --meter 000000000101
    """,
)
@click.option("--from", "from_text", required=True, help="First local day (YYYY-MM-DD).")
@click.option("--to", "to_text", required=True, help="Last local day (YYYY-MM-DD).")
@click.option("--meter", "meters", multiple=True, help="Only this meter (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_database
def rerun_command(
    database_url: str,
    zone: str,
    from_text: str,
    to_text: str,
    meters: tuple[str, ...],
    as_json: bool,
) -> None:
    from central.vee import day_window, rerun

    first, last = _day(from_text, "--from"), _day(to_text, "--to")
    if last < first:
        raise click.BadParameter(f"--to {last} is before --from {first}", param_hint="--to")
    start, end = day_window(first, zone)[0], day_window(last, zone)[1]
    with _engine(database_url) as engine:
        summary = rerun(engine, start=start, end=end, meters=list(meters) or None, zone=zone)
    if as_json:
        _echo_json(summary)
        return
    counts = ", ".join(f"{k} {v}" for k, v in summary["statuses"].items()) or "none"
    click.echo(f"re-validated {summary['readings']} readings: {counts}")
    for day in summary["days"]:
        click.echo(_day_line(day))


@vee.command(
    "pending",
    help="""Validate readings stored while VEE was off (vee_status NULL), oldest first.

    \b
    Example:
      central vee pending --limit 1000000
    """,
)
@click.option("--limit", default=100_000, show_default=True, help="At most this many readings.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_database
def pending_command(database_url: str, zone: str, limit: int, as_json: bool) -> None:
    from central.vee import validate_pending

    with _engine(database_url) as engine:
        summary = validate_pending(engine, limit)
    if as_json:
        _echo_json(summary)
        return
    counts = ", ".join(f"{k} {v}" for k, v in summary["statuses"].items()) or "none"
    click.echo(f"validated {summary['validated']}: {counts}; still pending {summary['pending']}")


@vee.command(
    "exceptions",
    help="""List VEE exceptions, oldest first (page on with --after-id).

    \b
    Example:
      central vee exceptions --open --rule V7 --json
    """,
)
@click.option("--open", "only_open", is_flag=True, help="Only open exceptions.")
@click.option("--meter", default=None, help="Only this meter.")
@click.option("--rule", "rule_id", default=None, help="Only this rule (V1…V16).")
@click.option("--after-id", type=int, default=None, help="Those after this id.")
@click.option("--limit", default=100, show_default=True, help="At most this many (≤ 1000).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_database
def exceptions_command(
    database_url: str,
    zone: str,
    only_open: bool,
    meter: str | None,
    rule_id: str | None,
    after_id: int | None,
    limit: int,
    as_json: bool,
) -> None:
    from central.vee import list_exceptions

    with _engine(database_url) as engine, engine.connect() as conn:
        found = list_exceptions(
            conn,
            meter=meter,
            rule=rule_id,
            status="open" if only_open else None,
            after_id=after_id,
            limit=limit,
        )
    if as_json:
        _echo_json(found)
        return
    if not found:
        click.echo("no VEE exceptions match")
    for e in found:
        what = e["obis"] or e["detail"].get("obis") or e["detail"].get("code") or "-"
        click.echo(
            f"{e['id']:>6} {e['status']:<10} {e['rule']:<4} {e['severity']:<11} {e['meter']} "
            f"{what} {e['ts'].isoformat()} {json.dumps(e['detail'], ensure_ascii=False)}"
        )


@vee.command(
    "resolve",
    help="""Close exception ID as dealt with; the reading's status is recomputed.

    \b
    Example:
      central vee resolve 42 --reason "meter replaced on 3 March, new register"
    """,
)
@click.argument("exception_id", metavar="ID", type=int)
@click.option("--reason", required=True, help="Why it is closed.")
@click.option("--by", default=None, help="Who [default: the login name].")
@_database
def resolve_command(
    database_url: str, zone: str, exception_id: int, reason: str, by: str | None
) -> None:
    from central.vee import resolve_exception

    with _engine(database_url) as engine, engine.begin() as conn:
        done = resolve_exception(conn, exception_id, by=by or _login(), reason=reason)
    click.echo(f"exception {done['id']} resolved by {done['resolved_by']}")


@vee.command(
    "override",
    help="""Close exception ID accepting the reading as billable; with --value, replace the
    reading's value (the exception keeps the value before VEE).

    \b
    Example:
      central vee override 42 --value 1234.56 --reason "read on site by the technician"
    """,
)
@click.argument("exception_id", metavar="ID", type=int)
@click.option("--reason", required=True, help="Why it is accepted.")
@click.option("--value", default=None, help="The reading's new value.")
@click.option("--by", default=None, help="Who [default: the login name].")
@_database
def override_command(
    database_url: str,
    zone: str,
    exception_id: int,
    reason: str,
    value: str | None,
    by: str | None,
) -> None:
    from central.vee import override_exception

    try:
        number = None if value is None else Decimal(value)
    except ArithmeticError:
        raise click.BadParameter(f"{value!r} is not a number", param_hint="--value") from None
    with _engine(database_url) as engine, engine.begin() as conn:
        done = override_exception(
            conn, exception_id, by=by or _login(), reason=reason, value=number
        )
    replaced = "" if done["value_after"] is None else f", value {done['value_after']}"
    click.echo(f"exception {done['id']} overridden by {done['resolved_by']}{replaced}")


@vee.command(
    "meter",
    help="""Record METER's settings from a date on: rating, CT/PT, contracted capacity, or
    --removed (readings after it fail V16).

    \b
    Example:
      central vee meter 000000000301 --from 2026-01-01 --phases 3 --max-current 100 --ct 50
    """,
)
@click.argument("meter")
@click.option("--from", "from_text", required=True, help="Date (local) or datetime.")
@click.option("--phases", type=click.Choice(["1", "3"]), default="1", show_default=True)
@click.option("--voltage", default="220", show_default=True, help="Un, V.")
@click.option("--max-current", default="60", show_default=True, help="Imax, A.")
@click.option("--ct", default="1", show_default=True, help="CT ratio.")
@click.option("--pt", default="1", show_default=True, help="PT ratio.")
@click.option("--contract-kw", default=None, help="Contracted capacity, kW.")
@click.option("--removed", is_flag=True, help="The meter is out of service from then on.")
@click.option("--by", default=None, help="Who [default: the login name].")
@_database
def meter_command(
    database_url: str,
    zone: str,
    meter: str,
    from_text: str,
    phases: str,
    voltage: str,
    max_current: str,
    ct: str,
    pt: str,
    contract_kw: str | None,
    removed: bool,
    by: str | None,
) -> None:
    from central.vee import set_meter_settings

    start = _instant(from_text, zone, "--from")
    with _engine(database_url) as engine, engine.begin() as conn:
        row = set_meter_settings(
            conn,
            meter,
            effective_from=start,
            by=by or _login(),
            phases=int(phases),
            voltage_v=voltage,
            max_current_a=max_current,
            ct_ratio=ct,
            pt_ratio=pt,
            contract_kw=contract_kw,
            active=not removed,
        )
    state = "removed" if removed else "in service"
    contract = "-" if row["contract_kw"] is None else f"{row['contract_kw']:f}"
    click.echo(
        f"{meter} from {row['effective_from'].isoformat()}: {row['phases']} phase, "
        f"{row['voltage_v']:f} V, {row['max_current_a']:f} A, CT {row['ct_ratio']:f}, "
        f"PT {row['pt_ratio']:f}, contract {contract} kW, {state}"
    )


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"
