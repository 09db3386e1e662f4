"""Central's storage: the schema (SQLAlchemy Core), the engine, and migrations.

``make_engine(url)`` gives an engine for SQLite (embedded default) or PostgreSQL
(production); ``upgrade(url)`` migrates a database to the newest schema; ``metadata`` and
the tables describe that schema.
"""

from central.db.engine import make_engine
from central.db.migrate import upgrade
from central.db.schema import (
    gateway_events,
    gateways,
    ingest_seq_ranges,
    ingest_watermarks,
    metadata,
    meters,
    readings,
    statistics,
    transformer_areas,
)

__all__ = [
    "gateway_events",
    "gateways",
    "ingest_seq_ranges",
    "ingest_watermarks",
    "make_engine",
    "metadata",
    "meters",
    "readings",
    "statistics",
    "transformer_areas",
    "upgrade",
]
