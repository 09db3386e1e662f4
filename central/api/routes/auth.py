"""Logging in (OAuth2 password flow → short-lived bearer token), who am I, and /healthz."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from central import audit
from central.api.deps import Api, CurrentUser
from central.api.errors import ErrorResponse, TooManyRequests, Unauthorized, Unavailable
from central.api.routing import ALL_ROLES, API_PREFIX, PUBLIC, ApiRouter, PublicModel
from central.api.tokens import issue_token
from central.api.users import authenticate_password

__all__ = ["health", "router"]

router = ApiRouter(prefix=API_PREFIX, tags=["auth"])
health = ApiRouter(tags=["health"])


class TokenPublic(PublicModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    expires_at: datetime


class ScopePublic(PublicModel):
    gateways: list[str]
    areas: list[str]


class MePublic(PublicModel):
    name: str
    kind: str
    role: str
    scope: ScopePublic


class HealthPublic(PublicModel):
    status: str
    database: str
    at: datetime


@router.post(
    "/auth/token",
    roles=PUBLIC,
    action="auth.login",
    response_model=TokenPublic,
    responses={429: {"model": ErrorResponse, "description": "Locked after wrong passwords"}},
)
def login(
    request: Request, api: Api, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> TokenPublic:
    """Exchange a user name and password (form fields `username`, `password`) for a bearer
    token valid for 15 minutes (configurable). Five wrong passwords in a row lock the user
    for 15 minutes (429)."""
    now = datetime.now(UTC)
    outcome = authenticate_password(api.engine, form.username, form.password, now=now)
    user = outcome.user
    with api.engine.begin() as conn:
        audit.record(
            conn,
            actor=form.username[:64],
            actor_role=user.role if user else None,
            action="auth.login",
            outcome="ok" if user else "denied",
            method="POST",
            route="/api/v1/auth/token",
            object_type="user",
            object_id=form.username[:64],
            after={"reason": outcome.reason},
            request_id=getattr(request.state, "request_id", None),
            at=now,
        )
    if user is not None:
        token, expires_at = issue_token(
            user.id, user.name, api.settings.secret_key, api.config.token_ttl, now=now
        )
        return TokenPublic(
            access_token=token,
            expires_in=int(api.config.token_ttl.total_seconds()),
            expires_at=expires_at,
        )
    if outcome.reason == "locked" and outcome.locked_until is not None:
        wait = max(1, int((outcome.locked_until - now).total_seconds()))
        raise TooManyRequests(
            f"too many wrong passwords for {form.username}: try again in {wait} s or ask an admin",
            headers={"Retry-After": str(wait)},
        )
    if outcome.reason == "user_disabled":
        raise Unauthorized(
            f"user {form.username} is disabled: ask an admin to enable it", code="user_disabled"
        )
    raise Unauthorized("wrong user name or password", code="invalid_credentials")


@router.get("/me", roles=ALL_ROLES, response_model=MePublic)
def me(user: CurrentUser) -> MePublic:
    """The logged-in user: name, role and scope."""
    return MePublic(
        name=user.name,
        kind=user.kind,
        role=user.role,
        scope=ScopePublic(**user.scope.as_dict()),
    )


@health.get(
    "/healthz",
    roles=PUBLIC,
    response_model=HealthPublic,
    responses={503: {"model": ErrorResponse, "description": "The database does not answer"}},
)
def healthz(api: Api) -> HealthPublic:
    """Liveness and database reachability (for load balancers; no login)."""
    try:
        with api.engine.connect() as conn:
            conn.execution_options(read_only=True)
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        raise Unavailable(
            f"the database does not answer ({type(error).__name__}): check M2C_DATABASE_URL "
            "and the database server"
        ) from None
    return HealthPublic(status="ok", database="ok", at=datetime.now(UTC))
