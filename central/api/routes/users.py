"""User administration (admin only): people, service accounts, roles, scopes, API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from central.api import users as library
from central.api.access import Scope
from central.api.deps import AuditLog, Conn, CurrentUser
from central.api.errors import Conflict, Invalid, NotFound
from central.api.routing import (
    API_PREFIX,
    After,
    ApiRouter,
    Limit,
    Page,
    PublicModel,
    WriteModel,
    decode_cursor,
    encode_cursor,
)
from central.db.auth_tables import ROLES, users

__all__ = ["router"]

ADMIN = frozenset({"admin"})
router = ApiRouter(prefix=f"{API_PREFIX}/users", tags=["users"])

Role = Literal["collection_om", "billing", "fee_collection", "supervisor", "read_only", "admin"]
assert set(Role.__args__) == set(ROLES)  # type: ignore[attr-defined]
UserName = Annotated[str, Path(max_length=64, description="The user's name.")]
ScopeEntry = Annotated[str, Field(pattern=r"^[\x21-\x7e]{1,64}$")]


class UserPublic(PublicModel):
    name: str
    kind: str
    role: str
    disabled: bool
    gateways: list[str]
    areas: list[str]
    created_at: datetime
    created_by: str | None
    updated_at: datetime


class UserCreate(WriteModel):
    name: str = Field(..., pattern=library.NAME_PATTERN.pattern, max_length=64)
    role: Role
    kind: Literal["person", "service"] = "person"
    password: str | None = Field(
        None,
        min_length=library.MIN_PASSWORD_LENGTH,
        max_length=library.MAX_PASSWORD_LENGTH,
        description="Required for a person; none for a service account.",
    )
    gateways: list[ScopeEntry] = Field(default_factory=list, max_length=2000)
    areas: list[ScopeEntry] = Field(default_factory=list, max_length=2000)


class UserUpdate(WriteModel):
    role: Role | None = None
    disabled: bool | None = None
    password: str | None = Field(
        None, min_length=library.MIN_PASSWORD_LENGTH, max_length=library.MAX_PASSWORD_LENGTH
    )
    gateways: list[ScopeEntry] | None = Field(None, max_length=2000)
    areas: list[ScopeEntry] | None = Field(None, max_length=2000)


class ApiKeyPublic(PublicModel):
    id: str
    user: str
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None


class ApiKeyIssued(ApiKeyPublic):
    key: str = Field(..., description="Shown once: store it now; only its hash is kept.")


def _public(user: library.User) -> UserPublic:
    return UserPublic(
        name=user.name,
        kind=user.kind,
        role=user.role,
        disabled=user.disabled,
        gateways=sorted(user.scope.gateways),
        areas=sorted(user.scope.areas),
        created_at=user.created_at,
        created_by=user.created_by,
        updated_at=user.updated_at,
    )


def _translate(error: library.UserError) -> Exception:
    if isinstance(error, library.UserNotFound):
        return NotFound(str(error))
    if isinstance(error, library.UserExists):
        return Conflict(str(error))
    return Invalid(str(error))


def _enabled_admins(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count()).where(users.c.role == "admin", users.c.disabled.is_(False))
        ).scalar_one()
    )


@router.get("", roles=ADMIN, response_model=Page[UserPublic])
def list_users(conn: Conn, limit: Limit = 100, after: After = None) -> Page[UserPublic]:
    """Every user and service account, by name."""
    cursor = decode_cursor(after, str)
    found = library.list_users(conn, after=cursor[0] if cursor else None, limit=limit)
    next_cursor = encode_cursor(found[-1].name) if len(found) == limit else None
    return Page[UserPublic](items=[_public(user) for user in found], next=next_cursor)


@router.post("", roles=ADMIN, action="user.create", response_model=UserPublic, status_code=201)
def create_user(conn: Conn, body: UserCreate, user: CurrentUser, audit: AuditLog) -> UserPublic:
    """Create a person (with a password) or a service account (then issue it an API key).
    An empty scope (no gateways, no areas) means the whole system."""
    try:
        created = library.add_user(
            conn,
            body.name,
            body.role,
            kind=body.kind,
            password=body.password,
            scope=Scope(frozenset(body.gateways), frozenset(body.areas)),
            created_by=user.name,
        )
    except library.UserError as error:
        raise _translate(error) from None
    audit(conn, object_type="user", object_id=created.name, after=created.summary())
    return _public(created)


@router.get("/{name}", roles=ADMIN, response_model=UserPublic)
def get_user(conn: Conn, name: UserName) -> UserPublic:
    """One user."""
    try:
        return _public(library.get_user(conn, name))
    except library.UserError as error:
        raise _translate(error) from None


@router.patch("/{name}", roles=ADMIN, action="user.update", response_model=UserPublic)
def update_user(conn: Conn, body: UserUpdate, audit: AuditLog, name: UserName) -> UserPublic:
    """Change a user's role, password, scope, or disable / enable it. Refused (409) when it
    would leave no enabled admin."""
    try:
        current = library.get_user(conn, name)
        scope = None
        if body.gateways is not None or body.areas is not None:
            scope = Scope(
                frozenset(current.scope.gateways if body.gateways is None else body.gateways),
                frozenset(current.scope.areas if body.areas is None else body.areas),
            )
        before, after = library.update_user(
            conn,
            name,
            role=body.role,
            disabled=body.disabled,
            password=body.password,
            scope=scope,
        )
    except library.UserError as error:
        raise _translate(error) from None
    if before.role == "admin" and not before.disabled and _enabled_admins(conn) == 0:
        raise Conflict(f"refusing to change {name}: it is the last enabled admin")
    changes = before.summary() != after.summary() or body.password is not None
    summary_after = after.summary() | ({"password": "changed"} if body.password else {})
    audit(
        conn,
        object_type="user",
        object_id=name,
        before=before.summary(),
        after=summary_after if changes else before.summary(),
    )
    return _public(after)


@router.get("/{name}/api-keys", roles=ADMIN, response_model=list[ApiKeyPublic])
def list_api_keys(conn: Conn, name: UserName) -> list[ApiKeyPublic]:
    """A service account's keys (ids and dates; the keys themselves are never kept)."""
    try:
        keys = library.list_api_keys(conn, name)
    except library.UserError as error:
        raise _translate(error) from None
    return [ApiKeyPublic.model_validate(key) for key in keys]


@router.post(
    "/{name}/api-keys",
    roles=ADMIN,
    action="api_key.issue",
    response_model=ApiKeyIssued,
    status_code=201,
)
def issue_api_key(conn: Conn, user: CurrentUser, audit: AuditLog, name: UserName) -> ApiKeyIssued:
    """A new API key for a service account, shown once (send it as `X-API-Key`)."""
    try:
        key, info = library.issue_api_key(conn, name, created_by=user.name)
    except library.UserError as error:
        raise _translate(error) from None
    audit(conn, object_type="api_key", object_id=info.id, after={"user": name, "id": info.id})
    return ApiKeyIssued(key=key, **ApiKeyPublic.model_validate(info).model_dump())


@router.delete(
    "/{name}/api-keys/{key_id}",
    roles=ADMIN,
    action="api_key.revoke",
    response_model=ApiKeyPublic,
)
def revoke_api_key(
    conn: Conn,
    audit: AuditLog,
    name: UserName,
    key_id: Annotated[str, Path(max_length=32)],
) -> ApiKeyPublic:
    """Revoke a key at once (requests with it get 401 from now on)."""
    try:
        info = library.revoke_api_key(conn, name, key_id)
    except library.UserError as error:
        raise _translate(error) from None
    audit(
        conn,
        object_type="api_key",
        object_id=key_id,
        before={"user": name, "revoked": False},
        after={"user": name, "revoked": True},
    )
    return ApiKeyPublic.model_validate(info)
