"""Tables for VEE: rule parameters, exceptions, estimates, meter settings (issue 6).

Declared on central's one ``metadata`` (``central.db.schema``); the Alembic migration that
builds them is ``central/db/migrations/versions/0003_vee.py``.

* ``vee_rule_parameters`` — stored values of the rules' parameters, each valid over
  ``[effective_from, effective_to)`` (NULL: open-ended), so old data keeps old tolerances.
  Where no row covers an instant, the default in ``central.vee.rules`` applies.
* ``vee_exceptions`` — one row per rule failure: the reading's key (``obis`` NULL for a
  meter event), the value before VEE, and the audit trail of whoever closed it. ``day`` is
  the local day a meter-day rule evaluated (NULL for rules checked per reading): close_day
  replaces a day's open exceptions by that column.
* ``estimated_readings`` — estimates for missing curve points, never mixed into
  ``readings``: a real reading at the same key supersedes the estimate.
* ``vee_meter_settings`` — what the rules need to know about a meter that the gateway
  archive does not say (rating, CT/PT ratio, contracted capacity, removed), effective from
  an instant.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from central.db.schema import METER_ID, metadata
from central.db.types import ExactDecimal, UTCDateTime

__all__ = [
    "estimated_readings",
    "metadata",
    "vee_exceptions",
    "vee_meter_settings",
    "vee_rule_parameters",
]

vee_rule_parameters = Table(
    "vee_rule_parameters",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("rule", String(8), nullable=False),
    Column("name", String(64), nullable=False),
    Column("value", Text, nullable=False, comment="the value as text (decimal, int, codes)"),
    Column("effective_from", UTCDateTime, nullable=False),
    Column("effective_to", UTCDateTime, nullable=True, comment="NULL: until further notice"),
    Column("set_by", String(64), nullable=False),
    Column("set_at", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=True),
    UniqueConstraint("rule", "name", "effective_from"),
)

vee_exceptions = Table(
    "vee_exceptions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("meter", METER_ID, nullable=False),
    Column("obis", String(32), nullable=True, comment="NULL: about the meter (an event)"),
    Column("ts", UTCDateTime, nullable=False),
    Column("day", Date, nullable=True, comment="local day of a meter-day rule"),
    Column("rule", String(8), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("value_before", ExactDecimal, nullable=True, comment="the value before VEE"),
    Column("value_after", ExactDecimal, nullable=True, comment="an override's new value"),
    Column("detail", JSON, nullable=False),
    Column("raised_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False, comment="open, resolved or overridden"),
    Column("resolved_by", String(64), nullable=True),
    Column("resolved_at", UTCDateTime, nullable=True),
    Column("reason", Text, nullable=True),
    # Ids are never reused (SQLite would reuse a deleted highest id): the API pages by id.
    sqlite_autoincrement=True,
)
Index("ix_vee_exceptions_key", vee_exceptions.c.meter, vee_exceptions.c.obis, vee_exceptions.c.ts)
Index("ix_vee_exceptions_meter_day", vee_exceptions.c.meter, vee_exceptions.c.day)
Index("ix_vee_exceptions_status_id", vee_exceptions.c.status, vee_exceptions.c.id)

estimated_readings = Table(
    "estimated_readings",
    metadata,
    Column("meter", METER_ID, nullable=False),
    Column("obis", String(32), nullable=False),
    Column("ts", UTCDateTime, nullable=False),
    Column("value", ExactDecimal, nullable=False),
    Column("method", String(16), nullable=False, comment="LIN, REG or LIKEDAY"),
    Column("based_on", JSON, nullable=False, comment="what the estimate was made from"),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("meter", "obis", "ts"),
)

vee_meter_settings = Table(
    "vee_meter_settings",
    metadata,
    Column("meter", METER_ID, nullable=False),
    Column("effective_from", UTCDateTime, nullable=False),
    Column("phases", Integer, nullable=False),
    Column("voltage_v", ExactDecimal, nullable=False, comment="Un"),
    Column("max_current_a", ExactDecimal, nullable=False, comment="Imax"),
    Column("ct_ratio", ExactDecimal, nullable=False),
    Column("pt_ratio", ExactDecimal, nullable=False),
    Column("contract_kw", ExactDecimal, nullable=True),
    Column("active", Boolean, nullable=False, comment="false: removed from service"),
    Column("set_by", String(64), nullable=False),
    Column("set_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("meter", "effective_from"),
)
