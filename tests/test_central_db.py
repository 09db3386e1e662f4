"""Central storage: the migrations build exactly the declared schema, and values come back
exactly as stored — on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, insert, inspect, select, text
from sqlalchemy.exc import StatementError

from central.db import make_engine, metadata, readings, upgrade
from central.db.migrate import alembic_config
from central.db.types import decimal_text

pytest_plugins = ["central_fixtures"]

EXACT_DECIMALS = [
    Decimal("0.000001"),
    Decimal("99999999999999.999999"),
    Decimal("-99999999999999.999999"),
    Decimal("0"),
    Decimal("1"),
    Decimal("1.5"),
    Decimal("12345.678901"),
    Decimal("100"),
    Decimal("0.1"),
]


def _reading(ts: datetime, value: object, meter: str = "000000000001") -> dict[str, object]:
    return {
        "meter": meter,
        "obis": "1.8.0",
        "ts": ts,
        "value": value,
        "unit": "kWh",
        "kind": "daily",
        "source": "scheduled",
        "quality": "ok",
        "gateway": "gw-1",
        "seq": 1,
        "read_at": ts,
        "received_at": ts,
    }


def test_migration_builds_exactly_the_metadata(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            assert compare_metadata(context, metadata) == []
            assert set(inspect(conn).get_table_names()) == set(metadata.tables) | {
                "alembic_version"
            }
    finally:
        engine.dispose()


def test_comparison_sees_a_missing_table(database_url: str) -> None:
    """The test above would notice a difference: an empty database differs."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        assert {d[1].name for d in diffs if d[0] == "add_table"} == set(metadata.tables)
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
    finally:
        engine.dispose()


@pytest.mark.parametrize("value", EXACT_DECIMALS, ids=str)
def test_decimal_round_trip_is_exact(engine: Engine, value: Decimal) -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(insert(readings), [_reading(ts, value)])
    with engine.connect() as conn:
        stored = conn.execute(select(readings.c.value)).scalar_one()
    assert isinstance(stored, Decimal)
    assert stored == value
    assert str(stored) == decimal_text(value)  # one written form on both backends


def test_decimal_written_forms_agree(engine: Engine) -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    values = ["1.50", "1E+2", "0.000", "-0", "7.000100"]
    with engine.begin() as conn:
        conn.execute(
            insert(readings),
            [_reading(ts, Decimal(v), meter=f"m{i}") for i, v in enumerate(values)],
        )
    with engine.connect() as conn:
        stored = conn.execute(select(readings.c.value).order_by(readings.c.meter)).scalars()
        assert [str(v) for v in stored] == ["1.5", "100", "0", "0", "7.0001"]


@pytest.mark.parametrize(
    "value",
    [Decimal("0.0000001"), Decimal("100000000000000"), Decimal("NaN"), 1.5, Decimal("Infinity")],
    ids=str,
)
def test_decimal_that_does_not_fit_is_refused_not_rounded(engine: Engine, value: object) -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(StatementError), engine.begin() as conn:
        conn.execute(insert(readings), [_reading(ts, value)])


def test_trailing_zeros_beyond_the_scale_are_fine(engine: Engine) -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(insert(readings), [_reading(ts, Decimal("2.50000000"))])
    with engine.connect() as conn:
        assert conn.execute(select(readings.c.value)).scalar_one() == Decimal("2.5")


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 29, 0, 5, tzinfo=UTC),
        datetime(2026, 11, 29, 8, 5, 1, 123456, tzinfo=timezone(timedelta(hours=8))),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
    ],
    ids=str,
)
def test_datetime_round_trip_is_aware_utc(engine: Engine, moment: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(insert(readings), [_reading(moment, Decimal(1))])
    with engine.connect() as conn:
        stored = conn.execute(select(readings.c.ts)).scalar_one()
    assert stored == moment
    assert stored.utcoffset() == timedelta(0)
    assert stored.tzinfo == UTC


def test_naive_datetime_is_refused(engine: Engine) -> None:
    with pytest.raises(StatementError, match="naive"), engine.begin() as conn:
        conn.execute(insert(readings), [_reading(datetime(2026, 1, 1), Decimal(1))])


def test_timestamps_order_as_time(engine: Engine) -> None:
    """Shanghai 08:00 is UTC 00:00: ordering and range queries follow the instant."""
    shanghai = timezone(timedelta(hours=8))
    moments = [
        datetime(2026, 1, 1, 7, 0, tzinfo=shanghai),  # 2025-12-31 23:00 UTC
        datetime(2026, 1, 1, 0, 30, tzinfo=UTC),
        datetime(2026, 1, 1, 8, 0, tzinfo=shanghai),  # 00:00 UTC
    ]
    with engine.begin() as conn:
        conn.execute(
            insert(readings),
            [_reading(m, Decimal(i), meter=f"m{i}") for i, m in enumerate(moments)],
        )
    with engine.connect() as conn:
        got = conn.execute(
            select(readings.c.meter)
            .where(readings.c.ts >= datetime(2026, 1, 1, tzinfo=UTC))
            .order_by(readings.c.ts)
        ).scalars()
        assert list(got) == ["m2", "m1"]


def test_sqlite_engine_pragmas(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/p.sqlite3")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        engine.dispose()
