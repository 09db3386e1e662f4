"""Short-lived access tokens: JWT (HS256) signed with ``settings.secret_key``.

A token names the user (``sub`` = user id, ``name``) and expires after the configured
lifetime (15 minutes by default). It carries no role: every request loads the user, so a
role change or a disabled account takes effect at once, not when the token runs out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import jwt

__all__ = ["ALGORITHM", "TokenClaims", "TokenError", "issue_token", "read_token"]

ALGORITHM: Final = "HS256"
_ISSUER: Final = "meter2cash-central"


class TokenError(ValueError):
    """``reason``: ``expired`` or ``invalid``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    name: str
    expires_at: datetime


def issue_token(
    user_id: int, name: str, secret: str, ttl: timedelta, *, now: datetime | None = None
) -> tuple[str, datetime]:
    """A signed token and when it expires."""
    now = now or datetime.now(UTC)
    expires_at = now + ttl
    token = jwt.encode(
        {
            "sub": str(user_id),
            "name": name,
            "iss": _ISSUER,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
        },
        secret,
        algorithm=ALGORITHM,
    )
    return token, expires_at


def read_token(token: str, secret: str) -> TokenClaims:
    """The claims of a valid token; TokenError when it is expired, forged or malformed."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],  # never let the token pick its algorithm ("none")
            issuer=_ISSUER,
            options={"require": ["sub", "exp", "iat", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("expired", "the token has expired: log in again") from None
    except jwt.PyJWTError as error:
        raise TokenError("invalid", f"the token is not valid ({error}): log in again") from None
    try:
        user_id = int(claims["sub"])
    except (TypeError, ValueError):
        raise TokenError("invalid", "the token names no user: log in again") from None
    return TokenClaims(
        user_id=user_id,
        name=str(claims.get("name", "")),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )
