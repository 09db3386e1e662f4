"""One function makes central's engine from the database URL, tuned per backend.

SQLite (the embedded default):

* WAL, so readers (the API) never block the ingest writer and the writer never blocks them.
* ``synchronous=FULL``: central acknowledges a batch after COMMIT and the gateway then
  deletes it. In WAL mode ``NORMAL`` keeps the file consistent but may lose the last
  commits on power loss — commits already acknowledged, so readings the gateway has
  released would be gone (reliability.md B.5: "ack ≠ fsync"). FULL costs one fsync of the
  WAL per commit, i.e. per batch of ~500 readings, which is affordable.
* Foreign keys on; a busy timeout so a second writer waits instead of failing.
* Every write transaction starts with ``BEGIN IMMEDIATE``: the write lock is taken at the
  start, so two ingest consumers serialise on it rather than one failing with "database
  is locked" when it upgrades a read lock mid-transaction. A connection given the
  execution option ``read_only=True`` starts a plain (deferred) ``BEGIN`` instead.

PostgreSQL: a connection pool with pre-ping; row locks (``SELECT … FOR UPDATE``) serialise
the writers of one gateway and leave other gateways' writers alone.
"""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["BUSY_TIMEOUT_MS", "json_dumps", "make_engine"]

#: How long a SQLite writer waits for another's transaction (a batch commits in ms).
BUSY_TIMEOUT_MS: Final = 30_000
#: WAL pages (4 KiB) written before SQLite checkpoints them into the database file.
WAL_CHECKPOINT_PAGES: Final = 16_384


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_dumps(value: Any) -> str:
    """JSON columns: Decimals as strings (exact), keys in order written."""
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def make_engine(url: str, *, echo: bool = False, pool_size: int = 5) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://…``).

    A bare ``postgresql://`` URL uses psycopg 3, the driver central installs.
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo)
    return create_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        json_serializer=json_dumps,
    )


def _sqlite_engine(url: Any, echo: bool) -> Engine:
    engine = create_engine(
        url,
        echo=echo,
        json_serializer=json_dumps,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite's own
        # transaction handling would start deferred transactions behind our back).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if url.database not in (None, "", ":memory:"):
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # Page cache of 64 MiB: the readings primary key stays in memory while a
            # backlog of millions of rows drains.
            cursor.execute("PRAGMA cache_size=-65536")
            # Checkpoint the WAL every 64 MiB instead of every 4 MiB: a backlog's commits
            # dirty index pages all over the readings key, and a page rewritten by several
            # commits is then copied into the database once, not once per commit (the
            # commit share of ingestion fell by ~40 %, docs/central-ingest.md); the WAL
            # file is cut back to that size after a checkpoint.
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            cursor.execute(f"PRAGMA journal_size_limit={WAL_CHECKPOINT_PAGES * 4096}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get("read_only"):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
