"""Routes that declare their roles, and the pagination every list shares.

``ApiRouter`` wraps FastAPI's ``APIRouter``: every route must say ``roles=`` (a set of
roles, or :data:`PUBLIC`). The router attaches the role check and the object-level check
(``central.api.deps``) and writes the roles into the route's OpenAPI entry as ``x-roles``,
where the authorization-matrix test and ``docs/api.md`` read them. A write route also names
its audit ``action`` (``x-action``). ``central.api.app`` refuses to start if any route under
``/api/v1`` lacks ``x-roles``.

Pagination: lists answer ``{"items": [...], "next": "<cursor>" | null}``. Pass ``next`` back
as ``after=`` for the following page; ``limit`` is 1–500 (default 100). Cursors are opaque
(base64 of a small JSON array) and tied to the list's order.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Final, Generic, TypeVar

import annotated_types
from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.params import Depends as DependsParam
from pydantic import AwareDatetime, BaseModel, ConfigDict

from central.api.deps import RoleCheck, authorize_objects
from central.api.errors import ErrorResponse, Invalid
from central.db.auth_tables import ROLES

__all__ = [
    "ALL_ROLES",
    "API_PREFIX",
    "EARLIEST",
    "LATEST",
    "MAX_LIMIT",
    "PUBLIC",
    "After",
    "ApiRouter",
    "Day",
    "Limit",
    "Moment",
    "Page",
    "PublicModel",
    "RouteEntry",
    "WriteModel",
    "cursor_time",
    "decode_cursor",
    "encode_cursor",
    "role_matrix",
    "route_roles",
    "route_table",
]

#: Every API route lives under this prefix (``/healthz`` is the one exception).
API_PREFIX: Final = "/api/v1"
PUBLIC: Final = frozenset({"public"})
ALL_ROLES: Final = frozenset(ROLES)
MAX_LIMIT: Final = 500
DEFAULT_LIMIT: Final = 100

#: Times and days a request may name. Outside them a date is no meter's and the arithmetic
#: of time zones overflows (year 1 minus eight hours): 422, never a 500.
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)
FIRST_DAY: Final = date(1970, 1, 2)
LAST_DAY: Final = date(2099, 12, 31)


#: An aware time a request may name (query parameters: ``Annotated[Moment, Query(...)]``).
Moment = Annotated[AwareDatetime, annotated_types.Interval(ge=EARLIEST, le=LATEST)]
#: A local date a request may name.
Day = Annotated[date, annotated_types.Interval(ge=FIRST_DAY, le=LAST_DAY)]


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page (1-{MAX_LIMIT}).")]
After = Annotated[
    str | None,
    Query(max_length=512, description="The `next` cursor of the previous page."),
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": ErrorResponse, "description": "Not logged in, or the token/key is bad"},
    403: {"model": ErrorResponse, "description": "Your role may not use this route"},
    404: {"model": ErrorResponse, "description": "No such object (or not in your scope)"},
    422: {"model": ErrorResponse, "description": "The request is not valid"},
}
_WRITE_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    409: {"model": ErrorResponse, "description": "Conflicts with the current state"},
    413: {"model": ErrorResponse, "description": "The body is larger than the limit"},
}


class PublicModel(BaseModel):
    """What the API returns."""

    model_config = ConfigDict(from_attributes=True)


class WriteModel(BaseModel):
    """What a client sends: unknown fields are refused (422), so server-owned fields —
    ids, timestamps, status — can never be set by mass assignment."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next: str | None = None


def encode_cursor(*values: Any) -> str:
    raw = json.dumps(list(values), separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, *types: type) -> tuple[Any, ...] | None:
    """The values of a cursor made by :func:`encode_cursor`; 422 when it is not one."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError("wrong length")
        decoded = []
        for value, kind in zip(values, types, strict=True):
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError("wrong type")
            decoded.append(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Invalid(
            "the cursor 'after' is not one this list gave out: pass the 'next' value of "
            "the previous page unchanged, or leave it out to start from the beginning",
            code="invalid_cursor",
        ) from None
    return tuple(decoded)


def cursor_time(value: str) -> datetime:
    """A time stored in a cursor (ISO-8601 with its offset); 422 when it is not one."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        raise Invalid("the cursor 'after' is not valid", code="invalid_cursor")
    return moment


def route_roles(route: Any) -> frozenset[str] | None:
    """The roles a route declares (None when it declares none)."""
    extra = getattr(route, "openapi_extra", None) or {}
    roles = extra.get("x-roles")
    return None if roles is None else frozenset(roles)


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One operation of the API as its OpenAPI document describes it."""

    method: str
    path: str
    roles: frozenset[str] | None
    action: str | None
    summary: str


def route_table(app: FastAPI) -> list[RouteEntry]:
    """Every operation of ``app`` with its declared roles and audit action, read from the
    OpenAPI document (the one complete, public list of what the app serves)."""
    entries = []
    for path, operations in app.openapi().get("paths", {}).items():
        for method, operation in operations.items():
            roles = operation.get("x-roles")
            entries.append(
                RouteEntry(
                    method=method.upper(),
                    path=path,
                    roles=None if roles is None else frozenset(roles),
                    action=operation.get("x-action"),
                    summary=operation.get("summary", ""),
                )
            )
    return sorted(entries, key=lambda entry: (entry.path, entry.method))


class ApiRouter:
    """``APIRouter`` whose routes must declare ``roles`` (and, for writes, ``action``).

    ``prefix`` is the full path prefix (``API_PREFIX + "/meters"``) and the app includes
    the router without adding one, so a route's ``path`` — what the audit log records —
    is the whole template (``/api/v1/meters/{meter}``)."""

    def __init__(self, *, prefix: str = "", tags: Iterable[str] = ()) -> None:
        self.router = APIRouter(prefix=prefix, tags=list(tags))

    def get(
        self, path: str, *, roles: frozenset[str], narrow: bool = False, **kwargs: Any
    ) -> Callable[[F], F]:
        """``narrow``: the route aggregates over meters (figures, worklists), so a scoped
        user must narrow it to one of their areas or gateways (``central.api.access``)."""
        if narrow:
            kwargs["openapi_extra"] = {**kwargs.get("openapi_extra", {}), "x-narrow": True}
        return self._route("GET", path, roles=roles, action=None, **kwargs)

    def post(
        self, path: str, *, roles: frozenset[str], action: str | None, **kwargs: Any
    ) -> Callable[[F], F]:
        return self._route("POST", path, roles=roles, action=action, **kwargs)

    def patch(
        self, path: str, *, roles: frozenset[str], action: str, **kwargs: Any
    ) -> Callable[[F], F]:
        return self._route("PATCH", path, roles=roles, action=action, **kwargs)

    def delete(
        self, path: str, *, roles: frozenset[str], action: str, **kwargs: Any
    ) -> Callable[[F], F]:
        return self._route("DELETE", path, roles=roles, action=action, **kwargs)

    def _route(
        self,
        method: str,
        path: str,
        *,
        roles: frozenset[str],
        action: str | None,
        **kwargs: Any,
    ) -> Callable[[F], F]:
        if not roles:
            raise ValueError(f"{method} {path}: declare roles= (a set of roles, or PUBLIC)")
        unknown = set(roles) - ALL_ROLES - PUBLIC
        if unknown or (PUBLIC & roles and roles != PUBLIC):
            raise ValueError(f"{method} {path}: unknown roles {sorted(unknown)} (or PUBLIC mixed)")
        dependencies: list[DependsParam] = list(kwargs.pop("dependencies", []))
        if roles != PUBLIC:
            dependencies += [Depends(RoleCheck(frozenset(roles))), Depends(authorize_objects)]
        extra = dict(kwargs.pop("openapi_extra", None) or {})
        extra["x-roles"] = sorted(roles)
        if action is not None:
            extra["x-action"] = action
        responses = dict(_ERROR_RESPONSES)
        if method != "GET":
            responses.update(_WRITE_RESPONSES)
        responses.update(kwargs.pop("responses", {}))
        description = kwargs.pop("description", None)
        roles_text = "anyone" if roles == PUBLIC else ", ".join(sorted(roles))

        def decorator(endpoint: F) -> F:
            doc = description or (endpoint.__doc__ or "").strip()
            self.router.add_api_route(
                path,
                endpoint,
                methods=[method],
                dependencies=dependencies,
                openapi_extra=extra,
                responses=responses,
                description=f"{doc}\n\n**Roles:** {roles_text}".strip(),
                **kwargs,
            )
            return endpoint

        return decorator


def role_matrix(app: FastAPI) -> str:
    """The role matrix as a Markdown table (docs/api.md carries it; a test compares)."""
    roles = list(ROLES)
    lines = [
        "| route | " + " | ".join(roles) + " | audit action |",
        "|---|" + "---|" * len(roles) + "---|",
    ]
    for entry in route_table(app):
        granted = entry.roles or frozenset()
        if granted == PUBLIC:
            cells = ["anyone"] + [""] * (len(roles) - 1)
        else:
            cells = ["✓" if role in granted else "" for role in roles]
        lines.append(
            f"| `{entry.method} {entry.path}` | " + " | ".join(cells) + f" | {entry.action or ''} |"
        )
    return "\n".join(lines) + "\n"
