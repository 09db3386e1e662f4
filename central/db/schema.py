"""Central's tables, declared once as SQLAlchemy Core metadata.

The Alembic migrations in ``central/db/migrations`` build exactly this schema (a test
compares them on SQLite and PostgreSQL); change both together.

Keys and why:

* ``readings`` — primary key (meter, obis, ts): the natural key the edge also uses, so a
  reading re-sent any number of times is stored once; ``seq`` is the gateway's sequence
  number of the version stored, and a correction (re-sent with a higher seq) replaces it.
  The key leads with the meter because central reads one meter's quantity over a time range
  (billing, VEE); PostgreSQL will partition this table by month on ``ts`` (ARCHITECTURE.md,
  "Scaling past one machine"), which the key already contains.
* ``ingest_watermarks`` + ``ingest_seq_ranges`` — per gateway, the highest seq below which
  every batch has been committed, and the batches received above it (merged, so a handful
  of rows) so out-of-order batches still yield the right contiguous high-water mark.
* ``gateway_events`` / ``statistics`` — keyed by (gateway, seq) when they came from the edge's
  log; events central raises itself (a rejected batch) have no seq.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from central.db.types import ExactDecimal, UTCDateTime

__all__ = [
    "gateway_events",
    "gateways",
    "ingest_seq_ranges",
    "ingest_watermarks",
    "metadata",
    "meters",
    "readings",
    "statistics",
    "transformer_areas",
]

#: Constraint names are explicit so migrations can refer to them on both backends.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

GATEWAY_ID = String(64)  # certificate CN
METER_ID = String(64)  # meter address as the edge names it (12 BCD digits for DL/T 645)

gateways = Table(
    "gateways",
    metadata,
    Column("id", GATEWAY_ID, primary_key=True, comment="certificate CN"),
    Column("public_key_pem", Text, nullable=True, comment="Ed25519 key verifying batches"),
    Column("key_id", String(64), nullable=True),
    Column("enrolled_at", UTCDateTime, nullable=False),
    Column("last_birth", JSON, nullable=True),
    Column("last_birth_at", UTCDateTime, nullable=True),
    Column("last_death_at", UTCDateTime, nullable=True),
    Column("online", Boolean, nullable=False, server_default=false()),
    Column("session", String(64), nullable=True, comment="session of the last birth"),
)

transformer_areas = Table(
    "transformer_areas",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
)

meters = Table(
    "meters",
    metadata,
    Column("meter", METER_ID, primary_key=True),
    Column("gateway", GATEWAY_ID, ForeignKey("gateways.id"), nullable=False, index=True),
    Column("address", String(32), nullable=False),
    Column("protocol", String(16), nullable=False),
    Column("bus", String(64), nullable=True),
    Column("transformer_area", String(64), ForeignKey("transformer_areas.id"), nullable=True),
    Column("customer_class", String(32), nullable=True),
    Column("protected", Boolean, nullable=False, server_default=false()),
    Column("prepaid", Boolean, nullable=False, server_default=false()),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
)

readings = Table(
    "readings",
    metadata,
    Column("meter", METER_ID, nullable=False),
    Column("obis", String(32), nullable=False),
    Column("ts", UTCDateTime, nullable=False, comment="the meter's period, UTC"),
    Column("value", ExactDecimal, nullable=False),
    Column("unit", String(16), nullable=True),
    Column("kind", String(16), nullable=False),
    Column("source", String(16), nullable=False),
    Column("quality", String(32), nullable=False),
    Column("gateway", GATEWAY_ID, nullable=False),
    Column("seq", BigInteger, nullable=False, comment="gateway seq of the stored version"),
    Column("read_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column(
        "corrections",
        Integer,
        nullable=False,
        server_default=text("0"),
        comment="times a higher seq replaced the value",
    ),
    Column(
        "vee_status",
        String(16),
        nullable=True,
        comment="NULL: not validated yet (new or corrected); else the VEE outcome",
    ),
    PrimaryKeyConstraint("meter", "obis", "ts"),
)
# The VEE worker's queue: only readings still waiting for validation are in this index.
Index(
    "ix_readings_vee_pending",
    readings.c.meter,
    readings.c.obis,
    readings.c.ts,
    sqlite_where=readings.c.vee_status.is_(None),
    postgresql_where=readings.c.vee_status.is_(None),
)

ingest_watermarks = Table(
    "ingest_watermarks",
    metadata,
    Column("gateway", GATEWAY_ID, ForeignKey("gateways.id"), primary_key=True),
    Column("up_to_seq", BigInteger, nullable=False, server_default=text("0")),
    Column("session", String(64), nullable=True, comment="session of the last batch"),
    Column("updated_at", UTCDateTime, nullable=True),
)

ingest_seq_ranges = Table(
    "ingest_seq_ranges",
    metadata,
    Column("gateway", GATEWAY_ID, ForeignKey("gateways.id"), nullable=False),
    Column("seq_from", BigInteger, nullable=False),
    Column("seq_to", BigInteger, nullable=False),
    PrimaryKeyConstraint("gateway", "seq_from"),
)

gateway_events = Table(
    "gateway_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("gateway", GATEWAY_ID, ForeignKey("gateways.id"), nullable=False),
    Column("seq", BigInteger, nullable=True, comment="NULL: raised by central"),
    Column("meter", METER_ID, nullable=True, comment="NULL: about the gateway"),
    Column("code", String(64), nullable=False),
    Column("detail", JSON, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    UniqueConstraint("gateway", "seq"),
)

statistics = Table(
    "statistics",
    metadata,
    Column("gateway", GATEWAY_ID, ForeignKey("gateways.id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("name", String(64), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("value", ExactDecimal, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("gateway", "seq"),
)


# Tables of later capabilities live in their own modules on this metadata (one owner each);
# importing them here makes ``metadata`` describe the whole schema.
from central.db import auth_tables, ops_tables, vee_tables  # noqa: E402

LATER_TABLE_MODULES: Final = (auth_tables, ops_tables, vee_tables)
