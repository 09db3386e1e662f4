"""users, roles, API keys and the audit log

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 17:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import central.db.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ROLES = "'collection_om', 'billing', 'fee_collection', 'supervisor', 'read_only', 'admin'"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False, comment="person | service"),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column(
            "password_hash",
            sa.String(length=255),
            nullable=True,
            comment="Argon2id; NULL for services",
        ),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("locked_until", central.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", central.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("updated_at", central.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('person', 'service')", name=op.f("ck_users_kind")),
        sa.CheckConstraint(f"role IN ({_ROLES})", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "user_scopes",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind", sa.String(length=16), nullable=False, comment="gateway | transformer_area"
        ),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            "kind IN ('gateway', 'transformer_area')", name=op.f("ck_user_scopes_kind")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_scopes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "kind", "value", name=op.f("pk_user_scopes")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False, comment="public part of the key"),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", central.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("revoked_at", central.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"], unique=False)
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", central.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "actor",
            sa.String(length=64),
            nullable=True,
            comment="user name; NULL: central itself",
        ),
        sa.Column("actor_role", sa.String(length=32), nullable=True),
        sa.Column(
            "action",
            sa.String(length=64),
            nullable=False,
            comment="e.g. user.create, vee.resolve",
        ),
        sa.Column("outcome", sa.String(length=16), nullable=False, comment="ok | denied"),
        sa.Column("method", sa.String(length=8), nullable=True),
        sa.Column("route", sa.String(length=200), nullable=True, comment="path template"),
        sa.Column("object_type", sa.String(length=32), nullable=True),
        sa.Column("object_id", sa.String(length=200), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_actor", "audit_log", ["actor"], unique=False)
    op.create_index("ix_audit_log_at", "audit_log", ["at"], unique=False)
    op.create_index(
        "ix_audit_log_object_type_object_id",
        "audit_log",
        ["object_type", "object_id"],
        unique=False,
    )
    op.create_index("ix_gateway_events_meter_id", "gateway_events", ["meter", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_gateway_events_meter_id", table_name="gateway_events")
    op.drop_index("ix_audit_log_object_type_object_id", table_name="audit_log")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_index("ix_audit_log_actor", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_api_keys_user_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("user_scopes")
    op.drop_table("users")
