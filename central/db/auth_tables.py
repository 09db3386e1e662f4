"""Tables for users, roles, API keys and the audit log (issue 6).

Declared on central's one ``metadata`` (``central.db.schema``); the Alembic migration that
builds them is ``central/db/migrations/versions/0005_auth.py``.

* ``users`` — people (password, Argon2id hash) and service accounts (API keys only). A
  user has exactly one role; ``disabled`` users cannot log in and their tokens and keys stop
  working at once (every request loads the user). ``failed_logins`` / ``locked_until``
  throttle password guessing across every API process (they share the database).
* ``user_scopes`` — what a user may see: none = everything; otherwise the gateways and
  transformer areas listed (``central.api.access`` enforces it).
* ``api_keys`` — only a SHA-256 of each key's secret is stored; the key is shown once.
* ``audit_log`` — one row per write through the API (and per refused write attempt): who,
  when, route, object, before/after summary, request id.
* ``ix_gateway_events_meter_id`` — an index on ``gateway_events`` (declared in
  ``central.db.schema``) for the API's "events of one meter, newest first" page.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    false,
    text,
)

from central.db.schema import gateway_events, metadata
from central.db.types import UTCDateTime

__all__ = [
    "ROLES",
    "USER_KINDS",
    "api_keys",
    "audit_log",
    "metadata",
    "user_scopes",
    "users",
]

#: The API's roles (MISSION.md's three teams, the approver, read-only and admin).
ROLES: Final = ("collection_om", "billing", "fee_collection", "supervisor", "read_only", "admin")
USER_KINDS: Final = ("person", "service")
SCOPE_KINDS: Final = ("gateway", "transformer_area")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False, comment="person | service"),
    Column("role", String(32), nullable=False),
    Column("password_hash", String(255), nullable=True, comment="Argon2id; NULL for services"),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    Column("failed_logins", Integer, nullable=False, server_default=text("0")),
    Column("locked_until", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(64), nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint(_one_of("role", ROLES), name="role"),
    CheckConstraint(_one_of("kind", USER_KINDS), name="kind"),
)

user_scopes = Table(
    "user_scopes",
    metadata,
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False, comment="gateway | transformer_area"),
    Column("value", String(64), nullable=False),
    PrimaryKeyConstraint("user_id", "kind", "value"),
    CheckConstraint(_one_of("kind", SCOPE_KINDS), name="kind"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True, comment="public part of the key"),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(64), nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Index("ix_api_keys_user_id", "user_id"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(64), nullable=True, comment="user name; NULL: central itself"),
    Column("actor_role", String(32), nullable=True),
    Column("action", String(64), nullable=False, comment="e.g. user.create, vee.resolve"),
    Column("outcome", String(16), nullable=False, comment="ok | denied"),
    Column("method", String(8), nullable=True),
    Column("route", String(200), nullable=True, comment="path template"),
    Column("object_type", String(32), nullable=True),
    Column("object_id", String(200), nullable=True),
    Column("before", JSON, nullable=True),
    Column("after", JSON, nullable=True),
    Column("request_id", String(64), nullable=True),
    Index("ix_audit_log_at", "at"),
    Index("ix_audit_log_object_type_object_id", "object_type", "object_id"),
    Index("ix_audit_log_actor", "actor"),
)

# The API pages through one meter's events newest first (GET /meters/{meter}/events).
Index("ix_gateway_events_meter_id", gateway_events.c.meter, gateway_events.c.id)
