"""Fixtures of the API tests (a pytest plugin), on SQLite and PostgreSQL:

* ``world`` — one :class:`api_support.ApiWorld` per test module and backend (building it
  takes a database, migrations, seed data and users: about a second on PostgreSQL, so
  read-mostly tests share it; tests that write use unique names).
* ``fresh_world`` — a new world for one test (on ``central_fixtures``' ``engine``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import CHEAP_HASHER, ApiWorld, build_world
from central_fixtures import (
    BACKENDS,
    create_postgres_database,
    drop_postgres_database,
    postgres_unreachable,
)
from sqlalchemy import Engine

from central.api import users as user_library
from central.db import make_engine, upgrade


@pytest.fixture(scope="module")
def cheap_passwords() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(user_library, "_hasher", CHEAP_HASHER)
        yield


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, cheap_passwords: None
) -> Iterator[ApiWorld]:
    directory = tmp_path_factory.mktemp("api")
    if request.param == "sqlite":
        url = f"sqlite:///{directory / 'central.sqlite3'}"
    else:
        reason = postgres_unreachable()
        if reason is not None:
            pytest.skip(reason)
        url = create_postgres_database()
    upgrade(url)
    engine = make_engine(url)
    try:
        built = build_world(engine, directory)
        with built.client:
            yield built
    finally:
        engine.dispose()
        if request.param != "sqlite":
            drop_postgres_database(url)


@pytest.fixture
def fresh_world(engine: Engine, tmp_path: Path, cheap_passwords: None) -> Iterator[ApiWorld]:
    built = build_world(engine, tmp_path)
    with built.client:
        yield built
