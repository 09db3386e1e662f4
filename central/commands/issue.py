"""Issuing a command: check it, store it, sign it with central's key, publish it.

``issue_command(engine, publisher, gateway=…, kind=…, args=…, requested_by=…)`` is the one
call behind every remedy of the O&M worklist and every command the API or the CLI sends:

1. the arguments are built into the wire's typed args (``shared_protocol.wire``) — a bad
   one is a :class:`CommandError` naming the field;
2. the gateway must be enrolled and every meter named must be in that gateway's archive;
3. the row is stored ``queued`` (committed first when given an engine, so a crash after
   publishing never leaves a command central has no record of);
4. the :class:`~shared_protocol.wire.Command` is signed with the publisher's key and
   published at QoS 1 on ``m2c/v1/gw/{gateway}/cmd``;
5. the broker's PUBACK makes it ``sent``; a publish that fails makes it ``failed`` with the
   reason in ``result_detail`` (nothing reached the gateway, so nothing will answer).

The gateway's signed result comes back as a ``command_result`` gateway event, which
:func:`central.commands.sync_results` folds into the row.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, Engine, select, update

from central.commands.errors import CommandError, CommandPublishError
from central.commands.publisher import CommandPublisher
from central.commands.tracking import command_dict
from central.db.ops_tables import commands
from central.db.schema import gateways, meters
from shared_protocol.errors import ProtocolError
from shared_protocol.wire import (
    COMMAND_KINDS,
    BackfillArgs,
    ClockSyncArgs,
    Command,
    CommandArgs,
    ReadNowArgs,
    RebirthArgs,
    ResendArgs,
    ResyncArgs,
    cmd_topic,
    sign,
)
from shared_protocol.wire.messages import MAX_COMMAND_LIFETIME

__all__ = ["DEFAULT_TTL", "build_args", "issue_command"]

#: How long a command stays valid unless the caller says otherwise. Long enough for a
#: gateway that reconnects within the hour to still run it, short enough that a read-now
#: never runs the next morning.
DEFAULT_TTL: Final = timedelta(hours=1)


def issue_command(
    target: Engine | Connection,
    publisher: CommandPublisher,
    *,
    gateway: str,
    kind: str,
    args: Mapping[str, Any] | None = None,
    requested_by: str,
    ttl: timedelta | float = DEFAULT_TTL,
    meter: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Issue one signed command; returns its row (``status`` ``sent`` or ``failed``).

    ``args`` are the wire arguments of ``kind`` (docs/protocol.md, "cmd"); ``meter``
    fills the meter of ``read_now`` / ``resend`` or the one-meter list of ``backfill`` /
    ``clock_sync``. ``ttl`` (a timedelta or seconds, at most 7 days) sets the expiry.
    ``target`` is an engine (the row is committed before publishing) or a connection
    (the caller's transaction).
    """
    who = (requested_by or "").strip()
    if not who or len(who) > 128:
        raise CommandError("requested_by must name who asks (1-128 characters): it is audited")
    lifetime = ttl if isinstance(ttl, timedelta) else timedelta(seconds=float(ttl))
    if not timedelta(0) < lifetime <= MAX_COMMAND_LIFETIME:
        raise CommandError(
            f"ttl must be more than 0 and at most {MAX_COMMAND_LIFETIME} (the gateway refuses "
            f"longer-lived commands), not {lifetime}"
        )
    wire_args = build_args(kind, args, meter)
    issued_at = _utc(now)
    try:
        command = Command(uuid.uuid4(), gateway, wire_args, issued_at, issued_at + lifetime)
    except ProtocolError as exc:
        raise CommandError(f"cannot build the {kind} command: {exc}") from exc
    payload = sign(command, publisher.signing_key, publisher.key_id)
    named = meters_named(wire_args)
    row = {
        "id": command.id,
        "gateway": gateway,
        "meter": named[0] if len(named) == 1 else None,
        "kind": kind,
        "args": wire_args.to_wire(),
        "requested_by": who,
        "issued_at": command.issued_at,
        "expires_at": command.expires_at,
        "status": "queued",
    }

    def store(conn: Connection) -> None:
        _check_target(conn, gateway, named)
        conn.execute(commands.insert().values(**row))

    _run(target, store)
    try:
        publisher.publish(cmd_topic(gateway), payload)
    except CommandPublishError as exc:
        failed = {"reason": "not_published", "error": str(exc)}
        _run(target, lambda conn: _set_status(conn, command.id, "failed", failed))
    else:
        _run(target, lambda conn: _set_status(conn, command.id, "sent", None))
    stored: dict[str, Any] = _run(target, lambda conn: _read(conn, command.id))
    return stored


def build_args(
    kind: str, args: Mapping[str, Any] | None = None, meter: str | None = None
) -> CommandArgs:
    """The wire args of ``kind`` from plain values; :class:`CommandError` names what is wrong.

    ``read_now``: ``meter``, ``what`` (an OBIS code or ``realtime``/``daily``/``monthly``;
    default ``1-0:1.8.0``). ``backfill``: ``days`` (1-31), ``meters`` (default all).
    ``clock_sync``: ``meters`` (default all). ``resend``: ``meter``, ``obis`` (default all),
    ``start``, ``end`` (aware datetimes or ISO 8601 text). ``resync``: ``from_seq``.
    ``rebirth``: nothing.
    """
    if kind not in COMMAND_KINDS:
        raise CommandError(
            f"unknown command kind {kind!r}: expected one of {', '.join(sorted(COMMAND_KINDS))}"
        )
    builder, allowed = _BUILDERS[kind]
    given = dict(args or {})
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise CommandError(
            f"{kind} takes {', '.join(sorted(allowed)) or 'no arguments'}; not {', '.join(unknown)}"
        )
    if meter is not None:
        if "meter" in allowed:
            given.setdefault("meter", meter)
        elif "meters" in allowed:
            if given.get("meters") not in (None, [meter]):
                raise CommandError(f"{kind}: give the meter either as meter or in meters")
            given["meters"] = [meter]
        else:
            raise CommandError(f"{kind} is about the whole gateway; it takes no meter")
    try:
        return builder(given)
    except CommandError:
        raise
    except (ProtocolError, KeyError, TypeError, ValueError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise CommandError(f"{kind} arguments: {what}") from exc


def meters_named(args: CommandArgs) -> list[str]:
    """The meters a command is about (empty: the whole gateway or all its meters)."""
    if isinstance(args, ReadNowArgs | ResendArgs):
        return [args.meter]
    if isinstance(args, BackfillArgs | ClockSyncArgs) and args.meters is not None:
        return list(args.meters)
    return []


def _time(value: Any, name: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise CommandError(f"{name} {value!r} is not an ISO 8601 time") from exc
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise CommandError(f"{name} must be a time with its offset (2026-12-01T00:00:00+08:00)")
    return value.astimezone(UTC)


def _meters(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise CommandError(f"meters must be a list of meter ids or null, not {value!r}")
    return tuple(value)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandError(f"{name} must be a whole number, not {value!r}")
    return value


_BUILDERS: Final[dict[str, tuple[Callable[[dict[str, Any]], CommandArgs], frozenset[str]]]] = {
    "rebirth": (lambda a: RebirthArgs(), frozenset()),
    "resync": (lambda a: ResyncArgs(_int(a["from_seq"], "from_seq")), frozenset({"from_seq"})),
    "resend": (
        lambda a: ResendArgs(
            a["meter"], a.get("obis"), _time(a["start"], "start"), _time(a["end"], "end")
        ),
        frozenset({"meter", "obis", "start", "end"}),
    ),
    "read_now": (
        lambda a: ReadNowArgs(a["meter"], a.get("what") or "1-0:1.8.0"),
        frozenset({"meter", "what"}),
    ),
    "backfill": (
        lambda a: BackfillArgs(_int(a["days"], "days"), _meters(a.get("meters"))),
        frozenset({"days", "meters"}),
    ),
    "clock_sync": (lambda a: ClockSyncArgs(_meters(a.get("meters"))), frozenset({"meters"})),
}


def _check_target(conn: Connection, gateway: str, named: list[str]) -> None:
    known = conn.execute(select(gateways.c.id).where(gateways.c.id == gateway)).first()
    if known is None:
        raise CommandError(
            f"gateway {gateway!r} is not enrolled in central's database; enrol it "
            "(`central gateway enroll`, then `central gateway import-registry`)"
        )
    if not named:
        return
    found = {
        meter: owner
        for meter, owner in conn.execute(
            select(meters.c.meter, meters.c.gateway).where(meters.c.meter.in_(named))
        )
    }
    for meter in named:
        if meter not in found:
            raise CommandError(
                f"meter {meter!r} is in no gateway's archive; central learns the archive "
                "from the gateway's birth (send a rebirth command if it was added lately)"
            )
        if found[meter] != gateway:
            raise CommandError(
                f"meter {meter!r} is in the archive of gateway {found[meter]!r}, not {gateway!r}"
            )


def _set_status(
    conn: Connection, command_id: uuid.UUID, status: str, detail: dict[str, Any] | None
) -> None:
    values: dict[str, Any] = {"status": status}
    if status == "sent":
        values["sent_at"] = _utc(None)
    else:
        values["result_detail"] = detail
    # Only a queued row moves: a fast gateway's result may already have been folded in.
    conn.execute(
        update(commands)
        .where(commands.c.id == command_id, commands.c.status == "queued")
        .values(**values)
    )


def _read(conn: Connection, command_id: uuid.UUID) -> dict[str, Any]:
    row = conn.execute(select(commands).where(commands.c.id == command_id)).one()
    return command_dict(row)


def _run(target: Engine | Connection, work: Callable[[Connection], Any]) -> Any:
    if isinstance(target, Engine):
        with target.begin() as conn:
            return work(conn)
    return work(target)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise CommandError("now must be an aware time")
    return now.astimezone(UTC)
