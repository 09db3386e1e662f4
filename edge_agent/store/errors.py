"""The errors the durable log raises.

::

    StoreError                     anything the log refuses
    ├── InvalidRecordError         (also ValueError) the caller passed a record we cannot
    │                              store: a naive datetime, a float value, an unknown kind
    ├── AcknowledgementError       (also ValueError) central acknowledged a seq we never
    │                              assigned, which means it is talking about another log
    └── SchemaVersionError         the file was written by a newer schema than this code

``sqlite3`` errors other than corruption (which :class:`~edge_agent.store.EdgeLog`
handles at open by quarantine) are not translated: a full disk or a locked file is an
operating problem the daemon must see as it is.
"""

from __future__ import annotations

__all__ = ["AcknowledgementError", "InvalidRecordError", "SchemaVersionError", "StoreError"]


class StoreError(Exception):
    """Base of every error the durable log raises."""


class InvalidRecordError(StoreError, ValueError):
    """The caller misused the API: the record cannot be stored as given (nothing was)."""


class AcknowledgementError(StoreError, ValueError):
    """An acknowledgement that cannot be true for this log (beyond the highest seq)."""


class SchemaVersionError(StoreError):
    """The file's schema is newer than this code knows; refuse rather than guess."""
