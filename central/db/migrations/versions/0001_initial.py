"""initial schema: gateways, meter archive, transformer areas, readings, ingest
watermarks, gateway events, statistics

Revision ID: 0001
Revises:
Create Date: 2026-11-29 15:28:45.831799
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import central.db.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateways",
        sa.Column("id", sa.String(length=64), nullable=False, comment="certificate CN"),
        sa.Column(
            "public_key_pem", sa.Text(), nullable=True, comment="Ed25519 key verifying batches"
        ),
        sa.Column("key_id", sa.String(length=64), nullable=True),
        sa.Column("enrolled_at", central.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_birth", sa.JSON(), nullable=True),
        sa.Column("last_birth_at", central.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_death_at", central.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("online", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "session", sa.String(length=64), nullable=True, comment="session of the last birth"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateways")),
    )
    op.create_table(
        "readings",
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column("obis", sa.String(length=32), nullable=False),
        sa.Column(
            "ts",
            central.db.types.UTCDateTime(timezone=True),
            nullable=False,
            comment="the meter's period, UTC",
        ),
        sa.Column("value", central.db.types.ExactDecimal(precision=20, scale=6), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("quality", sa.String(length=32), nullable=False),
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column(
            "seq", sa.BigInteger(), nullable=False, comment="gateway seq of the stored version"
        ),
        sa.Column("read_at", central.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_at", central.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "corrections",
            sa.Integer(),
            server_default=sa.text("0"),
            nullable=False,
            comment="times a higher seq replaced the value",
        ),
        sa.PrimaryKeyConstraint("meter", "obis", "ts", name=op.f("pk_readings")),
    )
    op.create_table(
        "transformer_areas",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transformer_areas")),
    )
    op.create_table(
        "gateway_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True, comment="NULL: raised by central"),
        sa.Column("meter", sa.String(length=64), nullable=True, comment="NULL: about the gateway"),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("at", central.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_at", central.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["gateway"], ["gateways.id"], name=op.f("fk_gateway_events_gateway_gateways")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_events")),
        sa.UniqueConstraint("gateway", "seq", name=op.f("uq_gateway_events_gateway_seq")),
    )
    op.create_table(
        "ingest_seq_ranges",
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("seq_from", sa.BigInteger(), nullable=False),
        sa.Column("seq_to", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["gateway"], ["gateways.id"], name=op.f("fk_ingest_seq_ranges_gateway_gateways")
        ),
        sa.PrimaryKeyConstraint("gateway", "seq_from", name=op.f("pk_ingest_seq_ranges")),
    )
    op.create_table(
        "ingest_watermarks",
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("up_to_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "session", sa.String(length=64), nullable=True, comment="session of the last batch"
        ),
        sa.Column("updated_at", central.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["gateway"], ["gateways.id"], name=op.f("fk_ingest_watermarks_gateway_gateways")
        ),
        sa.PrimaryKeyConstraint("gateway", name=op.f("pk_ingest_watermarks")),
    )
    op.create_table(
        "meters",
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=32), nullable=False),
        sa.Column("protocol", sa.String(length=16), nullable=False),
        sa.Column("bus", sa.String(length=64), nullable=True),
        sa.Column("transformer_area", sa.String(length=64), nullable=True),
        sa.Column("customer_class", sa.String(length=32), nullable=True),
        sa.Column("protected", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("prepaid", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("first_seen_at", central.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", central.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["gateway"], ["gateways.id"], name=op.f("fk_meters_gateway_gateways")
        ),
        sa.ForeignKeyConstraint(
            ["transformer_area"],
            ["transformer_areas.id"],
            name=op.f("fk_meters_transformer_area_transformer_areas"),
        ),
        sa.PrimaryKeyConstraint("meter", name=op.f("pk_meters")),
    )
    op.create_index(op.f("ix_meters_gateway"), "meters", ["gateway"], unique=False)

    op.create_table(
        "statistics",
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("value", central.db.types.ExactDecimal(precision=20, scale=6), nullable=False),
        sa.Column("at", central.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_at", central.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["gateway"], ["gateways.id"], name=op.f("fk_statistics_gateway_gateways")
        ),
        sa.PrimaryKeyConstraint("gateway", "seq", name=op.f("pk_statistics")),
    )


def downgrade() -> None:
    op.drop_table("statistics")
    op.drop_index(op.f("ix_meters_gateway"), table_name="meters")

    op.drop_table("meters")
    op.drop_table("ingest_watermarks")
    op.drop_table("ingest_seq_ranges")
    op.drop_table("gateway_events")
    op.drop_table("transformer_areas")
    op.drop_table("readings")
    op.drop_table("gateways")
