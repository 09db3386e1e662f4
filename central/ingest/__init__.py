"""Central ingestion: gateways' batches, births and deaths into the database, exactly once in
effect. :mod:`central.ingest.store` is the storing half (idempotent, acknowledge after
commit); the MQTT consumer maps wire messages onto it."""

from central.ingest.store import (
    ApplyResult,
    IncomingBatch,
    IncomingEvent,
    IncomingReading,
    IncomingStatistic,
    IngestStore,
    InvalidBatchError,
    MeterEntry,
    UnknownGatewayError,
)

__all__ = [
    "ApplyResult",
    "IncomingBatch",
    "IncomingEvent",
    "IncomingReading",
    "IncomingStatistic",
    "IngestStore",
    "InvalidBatchError",
    "MeterEntry",
    "UnknownGatewayError",
]
