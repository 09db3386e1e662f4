"""Typed dependencies every route builds on (the full-stack-fastapi-template's ``deps``).

* ``Conn`` — a database connection in a transaction for this request: read-only (a plain
  ``BEGIN`` on SQLite, never the write lock) for GET, a write transaction for everything
  else, committed when the route returns and *before* the response is sent, rolled back
  when it raises. ``ReadConn`` is the read-only one alone (authentication and object checks
  use it; a GET route's ``Conn`` is the same connection).
* ``CurrentUser`` — the authenticated user, from a bearer token or an ``X-API-Key``,
  loaded from the database on every request (a disabled user or a changed role counts at
  once). 401 when there is none or it is not valid.
* ``RoleCheck(roles)`` — 403 unless the user's role is one of ``roles``. Routes do not use it
  directly: ``central.api.routing.ApiRouter`` attaches it from the route's ``roles=`` and
  records the roles in the route's OpenAPI entry (``x-roles``).
* ``authorize_objects`` — the one object-level check (``central.api.access``).
* ``Api`` — the application's state: settings, engine, configuration, command publisher.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from central import audit
from central.api.access import AccessDenied, ScopeRequired, check_narrowed, check_references
from central.api.errors import Forbidden, Invalid, NotFound, Unauthorized
from central.api.tokens import TokenError, read_token
from central.api.users import User, UserNotFound, authenticate_api_key, get_user_by_id
from central.settings import Settings

__all__ = [
    "TOKEN_URL",
    "Api",
    "ApiConfig",
    "ApiState",
    "AuditLog",
    "Auditor",
    "Conn",
    "CurrentUser",
    "ReadConn",
    "RoleCheck",
    "authorize_objects",
    "get_conn",
    "get_current_user",
]

TOKEN_URL: Final = "/api/v1/auth/token"
READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """Knobs of the API process (not secrets; those are in ``Settings``)."""

    token_ttl: timedelta = timedelta(minutes=15)
    max_body_bytes: int = 1024 * 1024
    #: How often the process folds gateways' command results into the commands table
    #: (``central.commands.sync_results``); None: never (another process does it).
    command_sync_s: float | None = 10.0


@dataclass(slots=True)
class ApiState:
    settings: Settings
    engine: Engine
    config: ApiConfig = field(default_factory=ApiConfig)
    command_publisher: Any = None
    ops_settings: Any = None  # central.ops.OpsSettings; from M2C_OPS_* when not given


# Dependencies that do no I/O are ``async``: FastAPI runs a plain ``def`` dependency in the
# thread pool, a hop that costs more than the dependency itself.
async def get_api(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


Api = Annotated[ApiState, Depends(get_api)]


def get_read_conn(api: Api) -> Iterator[Connection]:
    with api.engine.connect() as conn:
        conn.execution_options(read_only=True)
        with conn.begin():
            yield conn


#: Requests inside the database at once, per process. A request holds at most two pooled
#: connections (its read connection and a write transaction, or a library's own), so 4
#: leaves spare connections in make_engine's pool (10 on PostgreSQL, 15 on SQLite) for the
#: calls that take one for a moment (login, /healthz, a refusal's audit row). Without the
#: bound, 50 concurrent requests exhausted the pool and threads waiting for a connection
#: starved the requests holding one (bench/api_latency.py; docs/api.md, "Speed").
#: Waiting for a slot uses no thread.
DATABASE_CONCURRENCY: Final = 4

# scope="function": the transaction ends when the route returns, before the response is
# sent, so a client never sees 200 for a write that then fails to commit.
ReadConn = Annotated[
    Connection,
    Depends(get_read_conn, scope="function", max_concurrency=DATABASE_CONCURRENCY),
]


def get_conn(request: Request, api: Api, read: ReadConn) -> Iterator[Connection]:
    # Authentication and the object checks read through ``read``; a write route gets its
    # own transaction, begun only now. On SQLite a write transaction holds the database
    # write lock, so it must not be open while a route hands the engine to a library that
    # commits on its own (issue_command commits the command before publishing it).
    if request.method in READ_METHODS:
        yield read
    else:
        with api.engine.begin() as conn:
            yield conn


Conn = Annotated[Connection, Depends(get_conn, scope="function")]

_bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)
_api_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="Service accounts: the key from `central user api-key NAME`.",
)


def get_current_user(
    request: Request,
    api: Api,
    conn: ReadConn,
    token: Annotated[str | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> User:
    if api_key:
        user = authenticate_api_key(conn, api_key)
        if user is None:
            raise Unauthorized(
                "the API key is not valid (unknown, revoked or mistyped): ask an admin for a "
                "new one",
                code="invalid_api_key",
            )
    elif token:
        try:
            claims = read_token(token, api.settings.secret_key)
        except TokenError as error:
            code = "token_expired" if error.reason == "expired" else "invalid_token"
            raise Unauthorized(f"{error} ({TOKEN_URL})", code=code) from None
        try:
            user = get_user_by_id(conn, claims.user_id)
        except UserNotFound:
            raise Unauthorized("the token's user no longer exists", code="invalid_token") from None
    else:
        raise Unauthorized(
            f"not logged in: get a token from POST {TOKEN_URL} and send "
            "'Authorization: Bearer <token>' (service accounts: 'X-API-Key: <key>')"
        )
    if user.disabled:
        raise Unauthorized(
            f"user {user.name} is disabled: ask an admin to enable it", code="user_disabled"
        )
    request.state.user = user
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


class RoleCheck:
    """403 unless the current user's role is in ``roles``."""

    def __init__(self, roles: frozenset[str]) -> None:
        self.roles = roles

    async def __call__(self, request: Request, user: CurrentUser) -> User:
        if user.role not in self.roles:
            route = request.scope.get("route")
            path = getattr(route, "path", request.url.path)
            raise Forbidden(
                f"role {user.role} may not {request.method} {path}; "
                f"allowed roles: {', '.join(sorted(self.roles))}",
                detail={"role": user.role, "allowed": sorted(self.roles)},
            )
        return user


class ObjectNotFound(NotFound):
    """An object outside the user's scope: answered like one that does not exist."""

    refused = True


async def authorize_objects(request: Request, user: CurrentUser, conn: ReadConn) -> None:
    """Check every gateway, meter, area, exception or command the request names against
    the user's scope (path, query and JSON body alike); 404 for any outside it."""
    if user.scope.unrestricted:
        return
    references: list[tuple[str, Any]] = list(request.path_params.items())
    references += request.query_params.multi_items()
    write = request.method not in READ_METHODS
    if write and request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            body = None  # the route's body validation answers 422
        if isinstance(body, dict):
            references += list(body.items())
    route = request.scope.get("route")
    if (getattr(route, "openapi_extra", None) or {}).get("x-narrow"):
        try:
            check_narrowed(user.scope, references)
        except ScopeRequired as error:
            raise Invalid(str(error), code="scope_required") from None
    try:
        await run_in_threadpool(check_references, conn, user.scope, references, write=write)
    except AccessDenied as denied:
        raise ObjectNotFound(str(denied)) from None


class Auditor:
    """Writes the one audit row of a write route, in the route's transaction. The action
    is the route's declared ``x-action``; who, route and request id come from the request."""

    def __init__(self, request: Request, user: User) -> None:
        self.request = request
        self.user = user
        self.written = 0

    def __call__(
        self,
        conn: Connection,
        *,
        object_type: str | None,
        object_id: object = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        route = self.request.scope.get("route")
        extra = getattr(route, "openapi_extra", None) or {}
        audit.record(
            conn,
            actor=self.user.name,
            actor_role=self.user.role,
            action=extra.get("x-action") or "unknown",
            method=self.request.method,
            route=getattr(route, "path", self.request.url.path),
            object_type=object_type,
            object_id=None if object_id is None else str(object_id),
            before=before,
            after=after,
            request_id=getattr(self.request.state, "request_id", None),
        )
        self.written += 1


async def get_auditor(request: Request, user: CurrentUser) -> Auditor:
    return Auditor(request, user)


AuditLog = Annotated[Auditor, Depends(get_auditor)]
