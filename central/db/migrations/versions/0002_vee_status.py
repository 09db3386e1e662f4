"""readings.vee_status and the index of readings waiting for VEE

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 17:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_PENDING = sa.text("vee_status IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("readings") as batch:
        batch.add_column(
            sa.Column(
                "vee_status",
                sa.String(length=16),
                nullable=True,
                comment="NULL: not validated yet (new or corrected); else the VEE outcome",
            )
        )
    op.create_index(
        "ix_readings_vee_pending",
        "readings",
        ["meter", "obis", "ts"],
        unique=False,
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_readings_vee_pending", table_name="readings")
    with op.batch_alter_table("readings") as batch:
        batch.drop_column("vee_status")
