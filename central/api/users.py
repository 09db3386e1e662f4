"""Users of the back-office API: people with passwords, service accounts with API keys,
one role each, an optional scope, and the checks that log them in.

* Passwords are hashed with **Argon2id** (pwdlib, argon2-cffi's defaults: 64 MiB, t=3, p=4);
  an unknown user name costs the same hash as a wrong password, so timing does not tell
  which names exist.
* **Login throttle**: after :data:`MAX_FAILED_LOGINS` wrong passwords in a row a user is
  locked for :data:`LOCK_DURATION` (stored in the database, so every API process agrees).
* **API keys** (service accounts only) look like ``m2c_<key id>_<secret>``. Only the
  SHA-256 of the secret is stored: the secret is 256 random bits, so a fast hash is as
  strong as a slow one here (Argon2 exists for guessable passwords) and checking a key costs
  microseconds on every request. The key is shown once, when issued.

Every function but :func:`authenticate_password` takes a SQLAlchemy ``Connection`` inside
the caller's transaction; the caller commits (the API's ``Conn`` dependency, or
``engine.begin()`` in the CLI). :func:`authenticate_password` takes the engine: it keeps
the slow hash check outside any transaction.

Errors (all ``UserError``, a ``ValueError``): :class:`UserNotFound`, :class:`UserExists`,
:class:`InvalidUser` (bad name, role, password, kind or scope).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.engine import Connection

from central.api.access import Scope
from central.db.auth_tables import ROLES, USER_KINDS, api_keys, user_scopes, users

__all__ = [
    "LOCK_DURATION",
    "MAX_FAILED_LOGINS",
    "MIN_PASSWORD_LENGTH",
    "ApiKeyInfo",
    "InvalidUser",
    "LoginOutcome",
    "User",
    "UserError",
    "UserExists",
    "UserNotFound",
    "add_user",
    "authenticate_api_key",
    "authenticate_password",
    "get_user",
    "get_user_by_id",
    "issue_api_key",
    "list_api_keys",
    "list_users",
    "revoke_api_key",
    "update_user",
]

MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 1024  # Argon2 hashes any length; refuse megabyte "passwords"
MAX_FAILED_LOGINS: Final = 5
LOCK_DURATION: Final = timedelta(minutes=15)
API_KEY_PREFIX: Final = "m2c"
NAME_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

_hasher = PasswordHash((Argon2Hasher(),))
# Verified against when the user does not exist, so the answer takes as long either way.
_DUMMY_HASH: Final = _hasher.hash(secrets.token_hex(16))

Kind = Literal["person", "service"]


class UserError(ValueError):
    """A user operation that cannot be done; the message says why and what to do."""


class UserNotFound(UserError):
    pass


class UserExists(UserError):
    pass


class InvalidUser(UserError):
    pass


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    kind: str
    role: str
    disabled: bool
    scope: Scope
    created_at: datetime
    created_by: str | None
    updated_at: datetime

    def summary(self) -> dict[str, Any]:
        """What the audit log records of a user (never the hash)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "role": self.role,
            "disabled": self.disabled,
            "scope": self.scope.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: str
    user: str
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    """What a password check found. ``user`` is set only on success; ``reason`` is one of
    ``ok``, ``invalid_credentials``, ``user_disabled``, ``locked``."""

    reason: str
    user: User | None = None
    locked_until: datetime | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidUser(
            f"user name {name!r} is not valid: use 1-64 lower-case letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidUser(f"role {role!r} does not exist: choose one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidUser(
            f"password too short: use at least {MIN_PASSWORD_LENGTH} characters "
            "(a passphrase of several words is easiest)"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidUser(f"password too long: at most {MAX_PASSWORD_LENGTH} characters")
    return password


def _check_scope(scope: Scope) -> Scope:
    for value in (*scope.gateways, *scope.areas):
        if not value or len(value) > 64:
            raise InvalidUser(f"scope entry {value!r}: give a gateway or area id of 1-64 chars")
    return scope


def _load_scopes(conn: Connection, user_ids: list[int]) -> dict[int, Scope]:
    """The scopes of several users in one query (users without rows see everything)."""
    found: dict[int, tuple[set[str], set[str]]] = {user_id: (set(), set()) for user_id in user_ids}
    rows = conn.execute(
        select(user_scopes.c.user_id, user_scopes.c.kind, user_scopes.c.value).where(
            user_scopes.c.user_id.in_(user_ids)
        )
    ).all()
    for user_id, kind, value in rows:
        found[user_id][0 if kind == "gateway" else 1].add(value)
    return {
        user_id: Scope(frozenset(gateways), frozenset(areas))
        for user_id, (gateways, areas) in found.items()
    }


def _users(conn: Connection, rows: list[Any]) -> list[User]:
    scopes = _load_scopes(conn, [row.id for row in rows])
    return [
        User(
            id=row.id,
            name=row.name,
            kind=row.kind,
            role=row.role,
            disabled=bool(row.disabled),
            scope=scopes[row.id],
            created_at=row.created_at,
            created_by=row.created_by,
            updated_at=row.updated_at,
        )
        for row in rows
    ]


def _user(conn: Connection, row: Any) -> User:
    return _users(conn, [row])[0]


def _write_scope(conn: Connection, user_id: int, scope: Scope) -> None:
    conn.execute(delete(user_scopes).where(user_scopes.c.user_id == user_id))
    rows = [{"user_id": user_id, "kind": "gateway", "value": g} for g in sorted(scope.gateways)]
    rows += [
        {"user_id": user_id, "kind": "transformer_area", "value": a} for a in sorted(scope.areas)
    ]
    if rows:
        conn.execute(insert(user_scopes), rows)


def add_user(
    conn: Connection,
    name: str,
    role: str,
    *,
    kind: str = "person",
    password: str | None = None,
    scope: Scope | None = None,
    created_by: str | None = None,
) -> User:
    """Create a person (``password`` required) or a service account (no password: it
    authenticates with API keys from :func:`issue_api_key`)."""
    check_name(name)
    check_role(role)
    scope = _check_scope(scope or Scope())
    if kind not in USER_KINDS:
        raise InvalidUser(f"kind {kind!r}: expected one of {', '.join(USER_KINDS)}")
    if kind == "person":
        if password is None:
            raise InvalidUser(f"user {name}: a person needs a password")
        password_hash: str | None = _hasher.hash(check_password(password))
    else:
        if password is not None:
            raise InvalidUser(
                f"user {name}: a service account has no password; issue an API key instead"
            )
        password_hash = None
    if conn.execute(select(users.c.id).where(users.c.name == name)).first() is not None:
        raise UserExists(f"user {name} already exists")
    now = _now()
    user_id = conn.execute(
        insert(users)
        .values(
            name=name,
            kind=kind,
            role=role,
            password_hash=password_hash,
            disabled=False,
            failed_logins=0,
            created_at=now,
            created_by=created_by,
            updated_at=now,
        )
        .returning(users.c.id)
    ).scalar_one()
    _write_scope(conn, user_id, scope)
    return get_user_by_id(conn, user_id)


def get_user(conn: Connection, name: str) -> User:
    row = conn.execute(select(users).where(users.c.name == name)).first()
    if row is None:
        raise UserNotFound(f"user {name} not found (list them with `central user list`)")
    return _user(conn, row)


def get_user_by_id(conn: Connection, user_id: int) -> User:
    row = conn.execute(select(users).where(users.c.id == user_id)).first()
    if row is None:
        raise UserNotFound(f"user #{user_id} not found")
    return _user(conn, row)


def list_users(conn: Connection, *, after: str | None = None, limit: int = 100) -> list[User]:
    """Users by name, ``limit`` of them after the name ``after``."""
    query = select(users).order_by(users.c.name).limit(limit)
    if after is not None:
        query = query.where(users.c.name > after)
    return _users(conn, list(conn.execute(query).all()))


def update_user(
    conn: Connection,
    name: str,
    *,
    role: str | None = None,
    disabled: bool | None = None,
    password: str | None = None,
    scope: Scope | None = None,
) -> tuple[User, User]:
    """Change what is given; returns (before, after)."""
    before = get_user(conn, name)
    values: dict[str, Any] = {}
    if role is not None:
        values["role"] = check_role(role)
    if disabled is not None:
        values["disabled"] = disabled
        if not disabled:
            values["failed_logins"] = 0
            values["locked_until"] = None
    if password is not None:
        if before.kind != "person":
            raise InvalidUser(f"user {name} is a service account: it has no password")
        values["password_hash"] = _hasher.hash(check_password(password))
        values["failed_logins"] = 0
        values["locked_until"] = None
    if values:
        values["updated_at"] = _now()
        conn.execute(update(users).where(users.c.id == before.id).values(**values))
    if scope is not None:
        _write_scope(conn, before.id, _check_scope(scope))
    return before, get_user_by_id(conn, before.id)


# -- passwords -------------------------------------------------------------------------------


def authenticate_password(
    engine: Engine, name: str, password: str, *, now: datetime | None = None
) -> LoginOutcome:
    """Check a login and record its consequence (failure count, lock, a rehash).

    The Argon2 verification (~0.2 s by design) runs with no transaction open: on SQLite a
    write transaction holds the database's write lock, and ingestion must not wait for
    somebody typing a password. The failure count is incremented in SQL, so two wrong
    passwords at once both count.
    """
    now = now or _now()
    with engine.connect() as conn:
        conn.execution_options(read_only=True)
        with conn.begin():
            row = conn.execute(select(users).where(users.c.name == name)).first()
    if row is None or row.password_hash is None or len(password) > MAX_PASSWORD_LENGTH:
        _hasher.verify(password[:MAX_PASSWORD_LENGTH], _DUMMY_HASH)
        return LoginOutcome("invalid_credentials")
    if row.locked_until is not None and row.locked_until > now:
        return LoginOutcome("locked", locked_until=row.locked_until)
    valid, new_hash = _hasher.verify_and_update(password, row.password_hash)
    with engine.begin() as conn:
        if not valid:
            failures = conn.execute(
                update(users)
                .where(users.c.id == row.id)
                .values(failed_logins=users.c.failed_logins + 1)
                .returning(users.c.failed_logins)
            ).scalar_one()
            if failures < MAX_FAILED_LOGINS:
                return LoginOutcome("invalid_credentials")
            locked_until = now + LOCK_DURATION
            conn.execute(
                update(users)
                .where(users.c.id == row.id)
                .values(failed_logins=0, locked_until=locked_until)
            )
            return LoginOutcome("locked", locked_until=locked_until)
        if row.disabled:
            return LoginOutcome("user_disabled")
        values: dict[str, Any] = {}
        if row.failed_logins or row.locked_until is not None:
            values.update(failed_logins=0, locked_until=None)
        if new_hash is not None:  # argon2 parameters were raised since this hash was made
            values["password_hash"] = new_hash
        if values:
            conn.execute(update(users).where(users.c.id == row.id).values(**values))
        return LoginOutcome("ok", user=_user(conn, row))


# -- API keys --------------------------------------------------------------------------------


def _secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_api_key(
    conn: Connection, name: str, *, created_by: str | None = None
) -> tuple[str, ApiKeyInfo]:
    """A new key for service account ``name``: (the key — shown once, never stored —, info)."""
    user = get_user(conn, name)
    if user.kind != "service":
        raise InvalidUser(
            f"user {name} is a person: API keys are for service accounts "
            "(create one with `central user add NAME --role ROLE --service`)"
        )
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = _now()
    conn.execute(
        insert(api_keys).values(
            id=key_id,
            user_id=user.id,
            secret_sha256=_secret_digest(secret),
            created_at=now,
            created_by=created_by,
        )
    )
    info = ApiKeyInfo(key_id, name, now, created_by, None)
    return f"{API_KEY_PREFIX}_{key_id}_{secret}", info


def list_api_keys(conn: Connection, name: str) -> list[ApiKeyInfo]:
    user = get_user(conn, name)
    rows = conn.execute(
        select(api_keys).where(api_keys.c.user_id == user.id).order_by(api_keys.c.created_at)
    ).all()
    return [ApiKeyInfo(r.id, name, r.created_at, r.created_by, r.revoked_at) for r in rows]


def revoke_api_key(conn: Connection, name: str, key_id: str) -> ApiKeyInfo:
    user = get_user(conn, name)
    row = conn.execute(
        select(api_keys).where(api_keys.c.id == key_id, api_keys.c.user_id == user.id)
    ).first()
    if row is None:
        raise UserNotFound(f"user {name} has no API key {key_id}")
    revoked_at = row.revoked_at or _now()
    if row.revoked_at is None:
        conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=revoked_at))
    return ApiKeyInfo(row.id, name, row.created_at, row.created_by, revoked_at)


def authenticate_api_key(conn: Connection, key: str) -> User | None:
    """The service account a key belongs to; None for a malformed, unknown or revoked key.
    A disabled account is returned (the caller refuses it with its own message)."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or len(parts[1]) > 32:
        return None
    row = conn.execute(
        select(api_keys.c.user_id, api_keys.c.secret_sha256, api_keys.c.revoked_at).where(
            api_keys.c.id == parts[1]
        )
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_sha256, _secret_digest(parts[2])):
        return None
    return get_user_by_id(conn, row.user_id)
