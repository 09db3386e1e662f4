"""Schema migrations: ``upgrade(url)`` brings a database to the newest revision.

Central calls it at start-up; tests call it on an empty database. The Alembic scripts live
next to this module (``central/db/migrations``), so no ``alembic.ini`` is needed; for the
``alembic`` command line, ``central/db/alembic.ini`` points at them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

__all__ = ["MIGRATIONS_DIR", "alembic_config", "upgrade"]

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None, engine: Engine | None = None) -> Config:
    """An Alembic config for central's scripts, aimed at ``url`` or an existing ``engine``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(url: str | Engine, revision: str = "head") -> None:
    """Migrate the database at ``url`` (or behind an engine) to ``revision``."""
    if isinstance(url, Engine):
        command.upgrade(alembic_config(engine=url), revision)
    else:
        command.upgrade(alembic_config(url=url), revision)
