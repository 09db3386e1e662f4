"""O&M figures and commands to gateways: the commands table, an index of gateway events by
code and time

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 17:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import central.db.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "commands",
        sa.Column("id", sa.Uuid(), nullable=False, comment="the wire command id"),
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column(
            "meter",
            sa.String(length=64),
            nullable=True,
            comment="the one meter it is about, if any",
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False, comment="the wire args"),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("issued_at", central.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", central.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "sent_at",
            central.db.types.UTCDateTime(timezone=True),
            nullable=True,
            comment="the broker's PUBACK",
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result_detail", sa.JSON(), nullable=True),
        sa.Column(
            "result_at",
            central.db.types.UTCDateTime(timezone=True),
            nullable=True,
            comment="the gateway's result time",
        ),
        sa.ForeignKeyConstraint(
            ["gateway"], ["gateways.id"], name=op.f("fk_commands_gateway_gateways")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
    )
    op.create_index(
        "ix_commands_gateway_issued_at", "commands", ["gateway", "issued_at"], unique=False
    )
    op.create_index(
        "ix_commands_status_expires_at", "commands", ["status", "expires_at"], unique=False
    )
    op.create_index("ix_commands_issued_at", "commands", ["issued_at"], unique=False)
    op.create_index("ix_gateway_events_code_at", "gateway_events", ["code", "at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_gateway_events_code_at", table_name="gateway_events")
    op.drop_index("ix_commands_issued_at", table_name="commands")
    op.drop_index("ix_commands_status_expires_at", table_name="commands")
    op.drop_index("ix_commands_gateway_issued_at", table_name="commands")
    op.drop_table("commands")
