"""`central ops ...` commands: thin over the library in `central.ops` and `central.commands`.

Every command reads the database at ``--database-url`` (default ``M2C_DATABASE_URL``, as
``central ingest run``), migrating it first (a no-op when it is up to date), and prints a
few lines for people or, with ``--json``, one JSON document (Decimals as strings, times
as ISO 8601). Errors an operator must act on leave as one line and exit status 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import click
from sqlalchemy import Engine

__all__ = ["ops"]

F = TypeVar("F", bound=Callable[..., Any])

#: Exit status of `central ops readiness` when some meter would not bill cleanly.
NOT_READY_EXIT = 3


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=_json_default, ensure_ascii=False, sort_keys=True))


def _operator_errors(command: F) -> F:
    """The library's errors → `Error: <message>` and exit status 1, never a traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from central.commands import CommandError
        from central.ops import OpsSettingsError
        from central.settings import SettingsError

        try:
            return command(*args, **kwargs)
        except (CommandError, OpsSettingsError, SettingsError) as error:
            raise click.ClickException(str(error)) from error

    return wrapper  # type: ignore[return-value]


def _database_option(command: F) -> F:
    return click.option(
        "--database-url",
        envvar="M2C_DATABASE_URL",
        show_envvar=True,
        default="sqlite:///./central.sqlite3",
        show_default=True,
        help="Central's database (SQLAlchemy URL).",
    )(command)


def _rules_options(command: F) -> F:
    command = click.option(
        "--deadline",
        default=None,
        help="When a reading day's reading is due, 'D+N HH:MM' [M2C_OPS_DEADLINE or D+1 06:00].",
    )(command)
    return click.option(
        "--zone", default=None, help="The reading day's time zone [M2C_OPS_ZONE or Asia/Shanghai]."
    )(command)


def _now_option(command: F) -> F:
    return click.option(
        "--now",
        "now_text",
        default=None,
        metavar="TIME",
        help="Judge as at this ISO 8601 time with offset (default: the current time).",
    )(command)


def _now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time", param_hint="--now") from error
    if moment.tzinfo is None:
        raise click.BadParameter("give the offset, e.g. 2026-12-02T10:00+08:00", param_hint="--now")
    return moment.astimezone(UTC)


def _json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")(
        command
    )


def _rules(zone: str | None, deadline: str | None) -> Any:
    from central.ops import OpsSettings

    settings = OpsSettings.from_env()
    if zone:
        settings = settings.with_zone(zone)
    if deadline:
        settings = settings.with_deadline(deadline)
    return settings


@contextmanager
def _engine(database_url: str) -> Iterator[Engine]:
    from central.db import make_engine, upgrade

    if "://" not in database_url:
        raise click.ClickException(
            f"--database-url {database_url!r} is not a URL (e.g. sqlite:///./central.sqlite3)"
        )
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _percent(entry: dict[str, Any]) -> str:
    ratio = entry["ratio"]
    # cut like the ratio itself: 61.538 % shows as 61.53 %, never as a rounded-up 61.54 %
    text = "—" if ratio is None else f"{(ratio * 100).quantize(_CENT, rounding=ROUND_FLOOR)} %"
    mark = "" if entry["meets_target"] in (None, True) else " !"
    return f"{entry['numerator']}/{entry['denominator']} {text}{mark}"


_DAY = click.DateTime(formats=["%Y-%m-%d"])
_CENT = Decimal("0.01")


@click.group(
    help="""Collection O&M figures, the worklist, the readiness check and commands.

    A reading day DAY (YYYY-MM-DD, local to the reading zone) is closed by the meters'
    daily freeze at 00:00 of DAY+1; that freeze is DAY's reading, due by DAY+1 06:00.
    docs/operations.md explains every figure, cause and problem.

    \b
    Examples:
      central ops figures 2026-12-01 --by area
      central ops worklist 2026-12-01 --gateway gw-0001
      central ops readiness 2026-12-01
      central ops health
      central ops command read_now --gateway gw-0001 --meter 000000001234
    """
)
def ops() -> None:
    pass


# --- figures --------------------------------------------------------------------------------


@ops.command(
    "figures",
    help="""Coverage, collection success, timeliness and accuracy of reading day DAY.

    Each figure is numerator/denominator and the percentage (cut, never rounded up); a
    '!' marks a figure below its target (coverage 99 %, success 98 %, timeliness 99 %,
    accuracy 99 %).

    \b
    Examples:
      central ops figures 2026-12-01
      central ops figures 2026-12-01 --by gateway --json
      central ops figures 2026-12-01 --by meter --area T-017
    """,
)
@click.argument("day", type=_DAY)
@click.option(
    "--by",
    type=click.Choice(["total", "gateway", "area", "meter"]),
    default="total",
    show_default=True,
    help="One row per gateway, transformer area or meter.",
)
@click.option("--gateway", default=None, help="Only this gateway's meters.")
@click.option("--area", default=None, help="Only this transformer area's meters.")
@_rules_options
@_database_option
@_json_option
@_operator_errors
def figures_command(
    day: datetime,
    by: str,
    gateway: str | None,
    area: str | None,
    zone: str | None,
    deadline: str | None,
    database_url: str,
    as_json: bool,
) -> None:
    from central.ops import daily_figures

    settings = _rules(zone, deadline)
    with _engine(database_url) as engine, engine.connect() as conn:
        rows = daily_figures(conn, day.date(), by=by, gateway=gateway, area=area, settings=settings)
    if as_json:
        _echo_json({"day": day.date(), "by": by, "rows": rows})
        return
    keys = {"total": (), "gateway": ("gateway",), "area": ("area",), "meter": ("meter",)}[by]
    click.echo(
        f"reading day {day.date()} (freeze at 00:00 of the next day, "
        f"due {settings.deadline_text}, {settings.zone})"
    )
    for row in rows:
        name = " ".join(str(row[key] or "(none)") for key in keys) or "total"
        click.echo(
            f"{name:<16} meters {row['meters']:>6}  coverage {_percent(row['coverage'])}  "
            f"success {_percent(row['success'])}  timeliness {_percent(row['timeliness'])}  "
            f"accuracy {_percent(row['accuracy'])}"
        )


# --- worklist -------------------------------------------------------------------------------


@ops.command(
    "worklist",
    help="""The meters that failed reading day DAY, the likely cause, and the remedies.

    Each remedy is a command you can send with `central ops command` (the line shows it).

    \b
    Examples:
      central ops worklist 2026-12-01
      central ops worklist 2026-12-01 --gateway gw-0001 --limit 50 --json
      central ops worklist 2026-12-01 --after 000000001234      # the next page
    """,
)
@click.argument("day", type=_DAY)
@click.option("--gateway", default=None, help="Only this gateway's meters.")
@click.option("--area", default=None, help="Only this transformer area's meters.")
@click.option("--limit", default=100, show_default=True, help="Meters per page (1-1000).")
@click.option("--after", default=None, help="The last meter of the previous page.")
@_now_option
@_rules_options
@_database_option
@_json_option
@_operator_errors
def worklist_command(
    day: datetime,
    gateway: str | None,
    area: str | None,
    limit: int,
    after: str | None,
    now_text: str | None,
    zone: str | None,
    deadline: str | None,
    database_url: str,
    as_json: bool,
) -> None:
    from central.ops import worklist

    settings = _rules(zone, deadline)
    with _engine(database_url) as engine, engine.connect() as conn:
        rows = worklist(
            conn,
            day.date(),
            gateway=gateway,
            area=area,
            limit=limit,
            after=after,
            settings=settings,
            now=_now(now_text),
        )
    if as_json:
        _echo_json({"day": day.date(), "meters": rows, "next_after": _next(rows, limit)})
        return
    if not rows:
        click.echo(f"reading day {day.date()}: no failing meters")
        return
    for row in rows:
        click.echo(
            f"{row['meter']}  {row['gateway']}  {row['area'] or '-'}  "
            f"{','.join(row['problems'])}  cause: {row['cause'] or 'unknown'} — "
            f"{row['explanation']}"
        )
        click.echo(f"    do: {row['advice']}")
        for remedy in row["remedies"]:
            click.echo(f"    remedy: {_command_line(remedy['command'])}")
    following = _next(rows, limit)
    if following:
        click.echo(f"more: central ops worklist {day.date()} --after {following}")


def _seconds(value: Decimal | None) -> str:
    return "-" if value is None else f"{value} s"


def _next(rows: list[dict[str, Any]], limit: int) -> str | None:
    return rows[-1]["meter"] if len(rows) == limit else None


def _command_line(command: dict[str, Any]) -> str:
    args = command["args"]
    parts = ["central ops command", command["kind"], "--gateway", command["gateway"]]
    meters = args.get("meters") or ([args["meter"]] if "meter" in args else [])
    for meter in meters:
        parts += ["--meter", meter]
    if "days" in args:
        parts += ["--days", str(args["days"])]
    if command["kind"] == "read_now" and args.get("what"):
        parts += ["--what", args["what"]]
    return " ".join(parts)


# --- readiness ------------------------------------------------------------------------------


@ops.command(
    "readiness",
    help=f"""Every meter that would not bill cleanly on reading day DAY, and why.

    After the freeze of DAY it checks DAY's readings; run before it, it checks the newest
    closed day and the gateways as they are now. Exit status 0 when every meter is ready,
    {NOT_READY_EXIT} when some are not (1 for errors).

    \b
    Examples:
      central ops readiness 2026-12-01
      central ops readiness 2026-12-01 --gateway gw-0001 --json
    """,
)
@click.argument("day", type=_DAY)
@click.option("--gateway", default=None, help="Only this gateway's meters.")
@click.option("--area", default=None, help="Only this transformer area's meters.")
@_now_option
@_rules_options
@_database_option
@_json_option
@_operator_errors
def readiness_command(
    day: datetime,
    gateway: str | None,
    area: str | None,
    now_text: str | None,
    zone: str | None,
    deadline: str | None,
    database_url: str,
    as_json: bool,
) -> None:
    from central.ops import readiness

    settings = _rules(zone, deadline)
    with _engine(database_url) as engine, engine.connect() as conn:
        report = readiness(
            conn, day.date(), gateway=gateway, area=area, settings=settings, now=_now(now_text)
        )
    if as_json:
        _echo_json(report)
    else:
        click.echo(
            f"reading day {report['reading_day']} ({report['mode']}, based on "
            f"{report['based_on']}): {report['meters_checked']} meters checked, "
            f"{report['meters_ready']} ready, {report['meters_not_ready']} not ready"
        )
        for name, count in report["problems"].items():
            click.echo(f"  {name:<20} {count}")
        for item in report["meters"]:
            problems = ", ".join(
                problem["problem"] + (f" ({problem['cause']})" if problem.get("cause") else "")
                for problem in item["problems"]
            )
            click.echo(f"{item['meter']}  {item['gateway'] or '-'}  {problems}")
    sys.stdout.flush()
    if not report["ready"]:
        sys.exit(NOT_READY_EXIT)


# --- health ---------------------------------------------------------------------------------


@ops.command(
    "health",
    help="""Gateway health from births and deaths: status, archive size, backlog, clock
    offset, the edge's daily success, uplink trouble, commands waiting, warnings.

    \b
    Examples:
      central ops health
      central ops health --gateway gw-0001 --json
    """,
)
@click.option("--gateway", default=None, help="Only this gateway.")
@_database_option
@_json_option
@_operator_errors
def health_command(gateway: str | None, database_url: str, as_json: bool) -> None:
    from central.ops import gateway_health

    with _engine(database_url) as engine, engine.connect() as conn:
        rows = gateway_health(conn, gateway)
    if as_json:
        _echo_json({"gateways": rows})
        return
    for row in rows:
        success = row["daily_success"]
        click.echo(
            f"{row['gateway']:<16} {row['status']:<16} meters {row['meters_in_archive']:>5}  "
            f"backlog {row['log_depth'] if row['log_depth'] is not None else '-'}  "
            f"clock {_seconds(row['clock_offset_s'])}  "
            f"daily success {success['rate'] if success else '-'}  "
            f"waiting commands {row['commands_waiting']}"
        )
        for warning in row["warnings"]:
            click.echo(f"    warning: {warning['code']}")


# --- commands -------------------------------------------------------------------------------


@ops.command(
    "command",
    help="""Sign a command with central's key and send it to a gateway.

    KIND is read_now, backfill, clock_sync, resend, resync or rebirth. The command is
    stored, signed with M2C_COMMAND_KEY_PATH and published at QoS 1 to M2C_BROKER_URL
    with central's broker identity (--tls-dir, as `central ingest run`). Its status
    afterwards: `central ops commands`.

    \b
    Examples:
      central ops command read_now --gateway gw-0001 --meter 000000001234
      central ops command read_now --gateway gw-0001 --meter 000000001234 --what daily
      central ops command backfill --gateway gw-0001 --meter 000000001234 --from 2026-11-28
      central ops command clock_sync --gateway gw-0001
      central ops command resend --gateway gw-0001 --meter 000000001234 \\
          --from 2026-11-28 --to 2026-11-30
    """,
)
@click.argument(
    "kind",
    type=click.Choice(["read_now", "backfill", "clock_sync", "resend", "resync", "rebirth"]),
)
@click.option("--gateway", required=True, help="The gateway to run it.")
@click.option("--meter", "meters", multiple=True, help="A meter (repeat for several).")
@click.option("--what", default=None, help="read_now: an OBIS code, realtime, daily, monthly.")
@click.option("--days", type=int, default=None, help="backfill: walk back this many days.")
@click.option(
    "--from",
    "from_day",
    type=_DAY,
    default=None,
    help="backfill: the oldest reading day to recover; resend: the first reading day.",
)
@click.option("--to", "to_day", type=_DAY, default=None, help="resend: the last reading day.")
@click.option("--obis", default=None, help="resend: one quantity (default all).")
@click.option("--from-seq", type=int, default=None, help="resync: the first seq to send again.")
@click.option("--ttl", default=60, show_default=True, help="Minutes the gateway may run it.")
@click.option(
    "--requested-by",
    envvar="USER",
    default="cli",
    show_default=True,
    help="Who asks (audited) [$USER].",
)
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="M2C_BROKER_TLS_DIR",
    show_envvar=True,
    help="Directory with ca.crt, central.crt, central.key.",
)
@click.option("--ca-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cert-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path))
@_rules_options
@_database_option
@_json_option
@_operator_errors
def command_command(
    kind: str,
    gateway: str,
    meters: tuple[str, ...],
    what: str | None,
    days: int | None,
    from_day: datetime | None,
    to_day: datetime | None,
    obis: str | None,
    from_seq: int | None,
    ttl: int,
    requested_by: str,
    tls_dir: Path | None,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    zone: str | None,
    deadline: str | None,
    database_url: str,
    as_json: bool,
) -> None:
    from central.commands import MqttCommandPublisher, issue_command, load_command_key
    from central.ingest.service import TlsFiles, broker_config
    from central.settings import Settings

    settings = _rules(zone, deadline)
    args = command_args(
        kind,
        meters=list(meters),
        what=what,
        days=days,
        from_day=from_day.date() if from_day else None,
        to_day=to_day.date() if to_day else None,
        obis=obis,
        from_seq=from_seq,
        settings=settings,
        today=settings.local_date(datetime.now(UTC)),
    )
    central_settings = Settings.from_env()
    key = load_command_key(central_settings.command_key_path)
    broker = broker_config(central_settings, TlsFiles(tls_dir, ca_file, cert_file, key_file))
    publisher = MqttCommandPublisher(broker, key)
    try:
        with _engine(database_url) as engine:
            row = issue_command(
                engine,
                publisher,
                gateway=gateway,
                kind=kind,
                args=args,
                requested_by=requested_by,
                ttl=timedelta(minutes=ttl),
            )
    finally:
        publisher.close()
    if as_json:
        _echo_json(row)
    else:
        click.echo(f"{row['id']} {row['kind']} → {row['gateway']}: {row['status']}")
        if row["status"] == "failed":
            click.echo(f"    {row['result_detail']}")
    if row["status"] == "failed":
        sys.exit(1)


def command_args(
    kind: str,
    *,
    meters: list[str],
    what: str | None = None,
    days: int | None = None,
    from_day: date | None = None,
    to_day: date | None = None,
    obis: str | None = None,
    from_seq: int | None = None,
    settings: Any,
    today: date,
) -> dict[str, Any]:
    """The wire args of ``kind`` from the CLI's options (``today`` in the reading zone)."""
    one_meter = kind in ("read_now", "resend")
    if one_meter and len(meters) != 1:
        raise click.UsageError(f"{kind} reads one meter: give exactly one --meter")
    if kind in ("rebirth", "resync") and meters:
        raise click.UsageError(f"{kind} is about the whole gateway: drop --meter")
    if kind == "read_now":
        return {"meter": meters[0], "what": what or settings.billing_obis}
    if kind == "backfill":
        if (days is None) == (from_day is None):
            raise click.UsageError("backfill needs either --days N or --from DAY")
        if to_day is not None:
            raise click.UsageError("backfill always walks up to today; --to is for resend")
        if from_day is not None:
            # the freeze of reading day D is on D+1: N days back from today reach it when
            # N = today - D (at least 1)
            days = max((today - from_day).days, 1)
        return {"days": days, "meters": meters or None}
    if kind == "clock_sync":
        return {"meters": meters or None}
    if kind == "resend":
        if from_day is None or to_day is None:
            raise click.UsageError("resend needs --from DAY and --to DAY (reading days)")
        if to_day < from_day:
            raise click.UsageError("--to must not be before --from")
        start = settings.reading_day(from_day).start
        # through the freeze that closes the last day (the wire's end is exclusive)
        end = settings.reading_day(to_day).freeze + timedelta(seconds=1)
        return {"meter": meters[0], "obis": obis, "start": start, "end": end}
    if kind == "resync":
        if from_seq is None:
            raise click.UsageError("resync needs --from-seq N")
        return {"from_seq": from_seq}
    return {}


@ops.command(
    "commands",
    help="""Commands sent to gateways and what became of them, newest first.

    Folds the gateways' results in first (and marks commands that outlived their expiry
    without an answer `expired`).

    \b
    Examples:
      central ops commands
      central ops commands --gateway gw-0001 --status failed --json
    """,
)
@click.option("--gateway", default=None, help="Only this gateway's commands.")
@click.option("--meter", default=None, help="Only commands about this meter.")
@click.option(
    "--status",
    type=click.Choice(["queued", "sent", "succeeded", "failed", "expired", "refused", "duplicate"]),
    default=None,
)
@click.option("--limit", default=50, show_default=True, help="Rows (1-1000).")
@click.option("--after", default=None, help="The id of the last row of the previous page.")
@_database_option
@_json_option
@_operator_errors
def commands_command(
    gateway: str | None,
    meter: str | None,
    status: str | None,
    limit: int,
    after: str | None,
    database_url: str,
    as_json: bool,
) -> None:
    from central.commands import list_commands, sync_results

    with _engine(database_url) as engine:
        with engine.begin() as conn:
            synced = sync_results(conn)
        with engine.connect() as conn:
            rows = list_commands(
                conn, gateway=gateway, meter=meter, status=status, after=after, limit=limit
            )
    if as_json:
        _echo_json({"synced": synced, "commands": rows})
        return
    for row in rows:
        click.echo(
            f"{row['id']}  {row['issued_at']:%Y-%m-%d %H:%M:%S}Z  {row['gateway']}  "
            f"{row['kind']:<10} {row['meter'] or '-'}  {row['status']:<9}  "
            f"{row['requested_by']}"
        )


# --- the command key ------------------------------------------------------------------------


@ops.group(
    "command-key",
    help="""Central's Ed25519 command key (M2C_COMMAND_KEY_PATH).

    \b
    Example:
      central ops command-key init --public-out /etc/meter2cash/central-command.pub
    """,
)
def command_key() -> None:
    pass


@command_key.command(
    "init",
    help="""Create central's command signing key (0600) and print its public key.

    Give the public key to every gateway (the edge's uplink.central_key_file): gateways
    refuse commands it did not sign. Refuses to replace an existing key without --force.

    \b
    Example:
      M2C_COMMAND_KEY_PATH=/etc/meter2cash/central-command.key \\
          central ops command-key init --public-out central-command.pub
    """,
)
@click.option("--force", is_flag=True, help="Replace an existing key (gateways need the new one).")
@click.option(
    "--public-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the public key PEM here.",
)
@_operator_errors
def command_key_init(force: bool, public_out: Path | None) -> None:
    from central.commands import create_command_key
    from central.settings import Settings

    path = Settings.from_env().command_key_path
    public = create_command_key(path, force=force)
    if public_out is not None:
        public_out.write_bytes(public)
        click.echo(f"wrote {path} (private, 0600) and {public_out} (public)", err=True)
    else:
        click.echo(f"wrote {path} (private, 0600); its public key:", err=True)
    click.echo(public.decode("ascii"), nl=False)


@command_key.command(
    "public",
    help="""Print the public key of central's command key (for gateways).

    \b
    Example:
      central ops command-key public > central-command.pub
    """,
)
@_operator_errors
def command_key_public() -> None:
    from central.commands import public_key_pem_of
    from central.settings import Settings

    click.echo(public_key_pem_of(Settings.from_env().command_key_path).decode("ascii"), nl=False)
