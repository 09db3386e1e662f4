"""VEE rule parameters, exceptions and estimates

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 17:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import central.db.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _utc() -> central.db.types.UTCDateTime:
    return central.db.types.UTCDateTime(timezone=True)


def _decimal() -> central.db.types.ExactDecimal:
    return central.db.types.ExactDecimal(precision=20, scale=6)


def upgrade() -> None:
    op.create_table(
        "vee_rule_parameters",
        sa.Column("id", _ID, nullable=False),
        sa.Column("rule", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "value", sa.Text(), nullable=False, comment="the value as text (decimal, int, codes)"
        ),
        sa.Column("effective_from", _utc(), nullable=False),
        sa.Column("effective_to", _utc(), nullable=True, comment="NULL: until further notice"),
        sa.Column("set_by", sa.String(length=64), nullable=False),
        sa.Column("set_at", _utc(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vee_rule_parameters")),
        sa.UniqueConstraint(
            "rule",
            "name",
            "effective_from",
            name=op.f("uq_vee_rule_parameters_rule_name_effective_from"),
        ),
    )
    op.create_table(
        "vee_exceptions",
        sa.Column("id", _ID, nullable=False),
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column(
            "obis", sa.String(length=32), nullable=True, comment="NULL: about the meter (an event)"
        ),
        sa.Column("ts", _utc(), nullable=False),
        sa.Column("day", sa.Date(), nullable=True, comment="local day of a meter-day rule"),
        sa.Column("rule", sa.String(length=8), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("value_before", _decimal(), nullable=True, comment="the value before VEE"),
        sa.Column("value_after", _decimal(), nullable=True, comment="an override's new value"),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("raised_at", _utc(), nullable=False),
        sa.Column(
            "status", sa.String(length=16), nullable=False, comment="open, resolved or overridden"
        ),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        sa.Column("resolved_at", _utc(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vee_exceptions")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_vee_exceptions_key", "vee_exceptions", ["meter", "obis", "ts"])
    op.create_index("ix_vee_exceptions_meter_day", "vee_exceptions", ["meter", "day"])
    op.create_index("ix_vee_exceptions_status_id", "vee_exceptions", ["status", "id"])
    op.create_table(
        "estimated_readings",
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column("obis", sa.String(length=32), nullable=False),
        sa.Column("ts", _utc(), nullable=False),
        sa.Column("value", _decimal(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False, comment="LIN, REG or LIKEDAY"),
        sa.Column("based_on", sa.JSON(), nullable=False, comment="what the estimate was made from"),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("meter", "obis", "ts", name=op.f("pk_estimated_readings")),
    )
    op.create_table(
        "vee_meter_settings",
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column("effective_from", _utc(), nullable=False),
        sa.Column("phases", sa.Integer(), nullable=False),
        sa.Column("voltage_v", _decimal(), nullable=False, comment="Un"),
        sa.Column("max_current_a", _decimal(), nullable=False, comment="Imax"),
        sa.Column("ct_ratio", _decimal(), nullable=False),
        sa.Column("pt_ratio", _decimal(), nullable=False),
        sa.Column("contract_kw", _decimal(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False, comment="false: removed from service"),
        sa.Column("set_by", sa.String(length=64), nullable=False),
        sa.Column("set_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("meter", "effective_from", name=op.f("pk_vee_meter_settings")),
    )


def downgrade() -> None:
    op.drop_table("vee_meter_settings")
    op.drop_table("estimated_readings")
    op.drop_index("ix_vee_exceptions_status_id", table_name="vee_exceptions")
    op.drop_index("ix_vee_exceptions_meter_day", table_name="vee_exceptions")
    op.drop_index("ix_vee_exceptions_key", table_name="vee_exceptions")
    op.drop_table("vee_exceptions")
    op.drop_table("vee_rule_parameters")
