"""`central api ...` and `central user ...` commands: thin over `central.api` and
`central.api.users`.

Both use ``M2C_DATABASE_URL`` (and ``M2C_SECRET_KEY`` for tokens) and migrate the database
first, so the very first command on a new installation — ``central user add admin --role
admin`` — creates the schema too.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["api", "user"]

F = TypeVar("F", bound=Callable[..., Any])

ROLE_CHOICE = click.Choice(
    ["collection_om", "billing", "fee_collection", "supervisor", "read_only", "admin"]
)


def _user_errors(command: F) -> F:
    """A UserError or a settings problem leaves as one line on stderr, exit status 1."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from central.api.users import UserError
        from central.settings import SettingsError

        try:
            return command(*args, **kwargs)
        except (UserError, SettingsError) as error:
            raise click.ClickException(str(error)) from error

    return wrapper  # type: ignore[return-value]


@contextmanager
def _transaction() -> Iterator[Connection]:
    from central.db import make_engine, upgrade
    from central.settings import Settings

    settings = Settings.from_env()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


@click.group(
    help="""The back-office HTTP API.

    \b
    Example:
      M2C_DATABASE_URL=sqlite:///./central.sqlite3 M2C_SECRET_KEY=... \\
          central api serve --host 0.0.0.0 --port 8000
    """
)
def api() -> None:
    pass


@api.command(
    "serve",
    help="""Run the API with uvicorn until SIGTERM or SIGINT.

    Migrates M2C_DATABASE_URL first, then serves central.api.app:create_app. OpenAPI is at
    /api/v1/openapi.json, interactive docs at /api/v1/docs, the health check at /healthz.
    Put TLS in front (a reverse proxy) in production.

    \b
    Example:
      central api serve --host 127.0.0.1 --port 8000 --workers 2
    """,
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@_user_errors
def serve(host: str, port: int, workers: int, log_level: str) -> None:
    import uvicorn

    from central.db import upgrade
    from central.settings import Settings

    settings = Settings.from_env()
    upgrade(settings.database_url)
    uvicorn.run(
        "central.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        proxy_headers=True,
    )


@api.command(
    "roles",
    help="""Print the role matrix: every route and the roles that may use it.

    Read from the app's OpenAPI document (each route's x-roles); docs/api.md carries the
    same table.

    \b
    Example:
      central api roles
    """,
)
@click.option("--json", "as_json", is_flag=True, help="One JSON array of routes.")
@_user_errors
def roles(as_json: bool) -> None:
    from central.api.app import create_app
    from central.api.routing import role_matrix, route_table

    app = create_app()
    if as_json:
        table = [
            {
                "method": entry.method,
                "path": entry.path,
                "roles": sorted(entry.roles or ()),
                "action": entry.action,
            }
            for entry in route_table(app)
        ]
        click.echo(json.dumps(table))
        return
    click.echo(role_matrix(app), nl=False)


@click.group(
    help="""Users of the back-office API and their roles.

    Roles: collection_om, billing, fee_collection, supervisor, read_only, admin.

    \b
    Example (bootstrap the first admin):
      central user add admin --role admin
    """
)
def user() -> None:
    pass


def _audit(conn: Connection, action: str, object_type: str, object_id: str, **states: Any) -> None:
    """CLI changes are audited like API ones; the actor is the operating-system user."""
    import getpass

    from central import audit

    audit.record(
        conn,
        actor=f"cli:{getpass.getuser()}"[:64],
        actor_role=None,
        action=action,
        method="CLI",
        route=f"central user {action.split('.')[-1]}",
        object_type=object_type,
        object_id=object_id,
        **states,
    )


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@user.command(
    "add",
    help="""Create user NAME with --role.

    A person gets a password (prompted twice, or one line on stdin with --password-stdin);
    a service account (--service) gets none: issue it a key with `central user api-key`.
    --gateway / --area limit what the user sees (repeatable; none = everything).

    \b
    Examples:
      central user add admin --role admin
      echo "$PW" | central user add li.wei --role collection_om --area TA-01 --password-stdin
      central user add billing-batch --role billing --service
    """,
)
@click.argument("name")
@click.option("--role", required=True, type=ROLE_CHOICE)
@click.option("--service", is_flag=True, help="A service account (API keys, no password).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--gateway", "gateways", multiple=True, help="Limit to this gateway.")
@click.option("--area", "areas", multiple=True, help="Limit to this transformer area.")
@click.option("--json", "as_json", is_flag=True, help="Print the user as JSON.")
@_user_errors
def user_add(
    name: str,
    role: str,
    service: bool,
    password_stdin: bool,
    gateways: tuple[str, ...],
    areas: tuple[str, ...],
    as_json: bool,
) -> None:
    from central.api.access import Scope
    from central.api.users import add_user, check_name, check_password

    check_name(name)
    password = None
    if not service:
        password = check_password(_read_password(password_stdin))
    with _transaction() as conn:
        created = add_user(
            conn,
            name,
            role,
            kind="service" if service else "person",
            password=password,
            scope=Scope(frozenset(gateways), frozenset(areas)),
            created_by="cli",
        )
        _audit(conn, "user.create", "user", name, after=created.summary())
    _print_user(created.summary(), as_json, prefix="created ")


def _print_user(summary: dict[str, Any], as_json: bool, prefix: str = "") -> None:
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
        return
    scope = summary["scope"]
    where = ", ".join(
        [f"gateway {g}" for g in scope["gateways"]] + [f"area {a}" for a in scope["areas"]]
    )
    state = "disabled" if summary["disabled"] else "enabled"
    click.echo(
        f"{prefix}{summary['kind']} {summary['name']}  role {summary['role']}  {state}  "
        f"scope: {where or 'everything'}"
    )


@user.command(
    "list",
    help="""List users with their role, state and scope.

    \b
    Example:
      central user list --json
    """,
)
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@_user_errors
def user_list(as_json: bool) -> None:
    from central.api.users import list_users

    found = []
    with _transaction() as conn:
        after = None
        while True:
            page = list_users(conn, after=after, limit=500)
            found += page
            if len(page) < 500:
                break
            after = page[-1].name
    if as_json:
        click.echo(json.dumps([u.summary() for u in found], sort_keys=True))
        return
    for item in found:
        _print_user(item.summary(), False)


@user.command(
    "disable",
    help="""Disable user NAME: its tokens and API keys stop working at once.

    \b
    Example:
      central user disable li.wei
    """,
)
@click.argument("name")
@_user_errors
def user_disable(name: str) -> None:
    _set_disabled(name, True)
    click.echo(f"disabled {name}")


@user.command(
    "enable",
    help="""Enable user NAME again (and clear a login lock).

    \b
    Example:
      central user enable li.wei
    """,
)
@click.argument("name")
@_user_errors
def user_enable(name: str) -> None:
    _set_disabled(name, False)
    click.echo(f"enabled {name}")


def _set_disabled(name: str, disabled: bool) -> None:
    from central.api.users import update_user

    action = "user.disable" if disabled else "user.enable"
    with _transaction() as conn:
        before, after = update_user(conn, name, disabled=disabled)
        _audit(conn, action, "user", name, before=before.summary(), after=after.summary())


@user.command(
    "api-key",
    help="""Issue a new API key for service account NAME and print it once.

    Only its hash is stored: copy it now. Clients send it as the X-API-Key header.

    \b
    Example:
      central user api-key billing-batch
    """,
)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print {key, id, user} as JSON.")
@_user_errors
def user_api_key(name: str, as_json: bool) -> None:
    from central.api.users import issue_api_key

    with _transaction() as conn:
        key, info = issue_api_key(conn, name, created_by="cli")
        _audit(conn, "api_key.issue", "api_key", info.id, after={"user": name, "id": info.id})
    if as_json:
        click.echo(json.dumps({"key": key, "id": info.id, "user": name}))
        return
    click.echo(key)
    click.echo(f"(key id {info.id} for {name}: shown once, store it now)", err=True)
