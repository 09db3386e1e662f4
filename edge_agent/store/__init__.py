"""The edge agent's durable log (SQLite): readings, events and statistics, each with a
gapless 64-bit seq, kept until central acknowledges them and retention or the disk quota
lets them go. See ``docs/edge-storage.md``."""

from __future__ import annotations

from edge_agent.store.errors import (
    AcknowledgementError,
    InvalidRecordError,
    SchemaVersionError,
    StoreError,
)
from edge_agent.store.log import EdgeLog, LogBatch, LogReader
from edge_agent.store.records import (
    EVICTION_ORDER,
    KINDS,
    SOURCES,
    Batch,
    EventRecord,
    Health,
    ReadingRecord,
    Record,
    RetentionRules,
    StatisticRecord,
)
from edge_agent.store.schema import SCHEMA_VERSION

__all__ = [
    "EVICTION_ORDER",
    "KINDS",
    "SCHEMA_VERSION",
    "SOURCES",
    "AcknowledgementError",
    "Batch",
    "EdgeLog",
    "EventRecord",
    "Health",
    "InvalidRecordError",
    "LogBatch",
    "LogReader",
    "ReadingRecord",
    "Record",
    "RetentionRules",
    "SchemaVersionError",
    "StatisticRecord",
    "StoreError",
]
