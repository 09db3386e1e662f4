"""Tables for collection O&M and commands to gateways (issue 6).

Declared on central's one ``metadata`` (``central.db.schema``); the Alembic migration that
builds them is ``central/db/migrations/versions/0004_ops.py``.

* ``commands`` — every command central signed for a gateway, who asked for it, and what
  became of it. Status moves ``queued`` (stored, not yet on the broker) → ``sent`` (the
  broker took it, QoS 1 PUBACK) → one of ``succeeded`` / ``failed`` / ``refused`` /
  ``duplicate`` (the gateway's signed result) or ``expired`` (no result by its expiry). A
  result that arrives after ``expired`` still wins: it says what the gateway did.
* ``ix_gateway_events_code_at`` — an index on the ingest owner's ``gateway_events``:
  folding ``command_result`` events into ``commands`` and finding clock evidence look up
  events by code and time; without it both read every event of every gateway.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import JSON, Column, ForeignKey, Index, String, Table, Uuid

from central.db.schema import GATEWAY_ID, METER_ID, gateway_events, metadata
from central.db.types import UTCDateTime

__all__ = ["COMMAND_STATES", "commands", "metadata"]

#: Every status a command row can have (see the module doc for the order).
COMMAND_STATES: Final = (
    "queued",
    "sent",
    "succeeded",
    "failed",
    "expired",
    "refused",
    "duplicate",
)

commands = Table(
    "commands",
    metadata,
    Column("id", Uuid(as_uuid=True), primary_key=True, comment="the wire command id"),
    Column("gateway", GATEWAY_ID, ForeignKey("gateways.id"), nullable=False),
    Column("meter", METER_ID, nullable=True, comment="the one meter it is about, if any"),
    Column("kind", String(16), nullable=False),
    Column("args", JSON, nullable=False, comment="the wire args"),
    Column("requested_by", String(128), nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True, comment="the broker's PUBACK"),
    Column("status", String(16), nullable=False),
    Column("result_detail", JSON, nullable=True),
    Column("result_at", UTCDateTime, nullable=True, comment="the gateway's result time"),
)
Index("ix_commands_gateway_issued_at", commands.c.gateway, commands.c.issued_at)
Index("ix_commands_status_expires_at", commands.c.status, commands.c.expires_at)
Index("ix_commands_issued_at", commands.c.issued_at)
Index("ix_gateway_events_code_at", gateway_events.c.code, gateway_events.c.at)
