"""Following commands: list and read them, and fold the gateways' results into them.

Results arrive as ``command_result`` gateway events (the ingestion consumer stores every
verified ``cmd_result`` that way: detail ``{"id", "status", "detail"}``), so nothing in
ingestion has to know about this table. :func:`sync_results` matches them to rows by id
and, for rows still waiting past their expiry, records ``expired``. Run it before reading
statuses (``central ops commands`` does; the API can do the same, or run it on a timer).

Status mapping from the gateway's answer: ``ok`` → ``succeeded``, ``failed`` → ``failed``,
``refused`` → ``refused`` (bad signature, unknown meter, …), ``expired`` → ``expired``
(it arrived too late), ``duplicate`` → ``duplicate`` (an id it had already run).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, Row, and_, func, or_, select, update

from central.commands.errors import CommandError
from central.db.ops_tables import COMMAND_STATES, commands
from central.db.schema import gateway_events
from shared_protocol.wire.guard import DEFAULT_SKEW

__all__ = [
    "MAX_LIST_LIMIT",
    "command_dict",
    "count_waiting",
    "get_command",
    "list_commands",
    "sync_results",
]

MAX_LIST_LIMIT: Final = 1000
#: The gateway's answer → the row's status.
RESULT_STATUS: Final = {
    "ok": "succeeded",
    "failed": "failed",
    "refused": "refused",
    "expired": "expired",
    "duplicate": "duplicate",
}
#: Statuses still waiting for the gateway's answer.
WAITING: Final = ("queued", "sent")
#: A result may still come for a command this long after it was marked expired (the gateway
#: was offline and answers ``expired``, or ran it just in time and its result was delayed).
LATE_RESULT_GRACE: Final = timedelta(days=1)
#: Result times are the gateway's clock; look this far before the oldest waiting command.
GATEWAY_CLOCK_SLACK: Final = timedelta(days=1)


def command_dict(row: Row[Any]) -> dict[str, Any]:
    """A command row as a plain dict (``id`` as canonical text)."""
    data = dict(row._mapping)
    data["id"] = str(data["id"])
    return data


def get_command(conn: Connection, command_id: str | uuid.UUID) -> dict[str, Any] | None:
    """One command, or None."""
    row = conn.execute(select(commands).where(commands.c.id == _uuid(command_id))).first()
    return None if row is None else command_dict(row)


def list_commands(
    conn: Connection,
    *,
    gateway: str | None = None,
    meter: str | None = None,
    status: str | None = None,
    after: str | uuid.UUID | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Commands, newest first; ``after`` is the id of the last row of the previous page."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise CommandError(f"limit must be 1..{MAX_LIST_LIMIT}, not {limit}")
    query = select(commands)
    if gateway is not None:
        query = query.where(commands.c.gateway == gateway)
    if meter is not None:
        query = query.where(commands.c.meter == meter)
    if status is not None:
        if status not in COMMAND_STATES:
            raise CommandError(f"status {status!r} is not one of {', '.join(COMMAND_STATES)}")
        query = query.where(commands.c.status == status)
    if after is not None:
        cursor_id = _uuid(after)
        cursor = conn.execute(
            select(commands.c.issued_at).where(commands.c.id == cursor_id)
        ).scalar_one_or_none()
        if cursor is None:
            raise CommandError(f"after={after}: no such command (use the id of a listed row)")
        query = query.where(
            or_(
                commands.c.issued_at < cursor,
                and_(commands.c.issued_at == cursor, commands.c.id < cursor_id),
            )
        )
    query = query.order_by(commands.c.issued_at.desc(), commands.c.id.desc()).limit(limit)
    return [command_dict(row) for row in conn.execute(query)]


def sync_results(conn: Connection, *, now: datetime | None = None) -> dict[str, int]:
    """Fold ``command_result`` events into the commands table, then expire what waited too
    long; returns ``{"results": folded, "expired": newly expired}``. Idempotent."""
    moment = datetime.now(UTC) if now is None else now.astimezone(UTC)
    open_rows = conn.execute(
        select(commands.c.id, commands.c.issued_at).where(
            or_(
                commands.c.status.in_(WAITING),
                and_(
                    commands.c.status == "expired",
                    commands.c.result_at.is_(None),
                    commands.c.expires_at >= moment - LATE_RESULT_GRACE,
                ),
            )
        )
    ).all()
    folded = 0
    if open_rows:
        waiting = {row.id for row in open_rows}
        since = min(row.issued_at for row in open_rows) - GATEWAY_CLOCK_SLACK
        events = conn.execute(
            select(gateway_events.c.detail, gateway_events.c.at)
            .where(gateway_events.c.code == "command_result", gateway_events.c.at >= since)
            .order_by(gateway_events.c.id)
        ).all()
        for event in events:
            result = _result_of(event.detail)
            if result is None or result[0] not in waiting:
                continue
            command_id, status, detail = result
            changed = conn.execute(
                update(commands)
                .where(
                    commands.c.id == command_id,
                    commands.c.status.in_((*WAITING, "expired")),
                    commands.c.result_at.is_(None),
                )
                .values(status=status, result_detail=detail, result_at=event.at)
            ).rowcount
            waiting.discard(command_id)  # the first answer stands
            folded += changed
    expired = conn.execute(
        update(commands)
        .where(
            commands.c.status.in_(WAITING),
            # the gateway still runs a command up to its skew allowance past the expiry
            commands.c.expires_at < moment - DEFAULT_SKEW,
        )
        .values(
            status="expired",
            result_detail={"reason": "no result from the gateway before the command expired"},
        )
    ).rowcount
    return {"results": folded, "expired": expired}


def count_waiting(conn: Connection, gateway: str | None = None) -> int:
    """Commands still waiting for their gateway (queued or sent)."""
    query = select(func.count()).select_from(commands).where(commands.c.status.in_(WAITING))
    if gateway is not None:
        query = query.where(commands.c.gateway == gateway)
    return int(conn.execute(query).scalar_one())


def _result_of(detail: Any) -> tuple[uuid.UUID, str, Any] | None:
    """(id, status, detail) of a command_result event's detail; None when it is not one."""
    if not isinstance(detail, dict):
        return None
    try:
        command_id = uuid.UUID(str(detail.get("id")))
    except ValueError:
        return None
    status = RESULT_STATUS.get(str(detail.get("status")))
    if status is None:
        return None
    return command_id, status, detail.get("detail")


def _uuid(value: str | uuid.UUID) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise CommandError(f"{value!r} is not a command id (a UUID)") from exc
