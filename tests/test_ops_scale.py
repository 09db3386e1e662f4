"""O&M queries at city scale (slow): 50 full gateways — 102 000 meters — on SQLite and
PostgreSQL, timed; the figures in docs/benchmarks.md ("Collection O&M queries") come from

    python -m pytest -m slow tests/test_ops_scale.py -s

Per meter: the daily freeze closing D-1 and D (1-0:1.8.0). Planted: every 50th meter has no
reading for D (2 040 meters, 2 %), every 97th meter's D reading is not validated. Counts are
checked against that plan, so the timing is of queries that give the right answer.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import insert

from central.db import make_engine, upgrade
from central.db.schema import gateways, meters, readings, transformer_areas
from central.ops import OpsSettings, daily_figures, gateway_health, readiness, worklist

pytest_plugins = ["central_fixtures"]

GATEWAYS = 50
PER_GATEWAY = 2040
DAY = date(2026, 12, 1)
SETTINGS = OpsSettings()


def _meter(g: int, k: int) -> str:
    return f"{g:04d}{k:08d}"


@pytest.mark.slow
def test_figures_worklist_readiness_at_city_scale(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    reading_day = SETTINGS.reading_day(DAY)
    previous = SETTINGS.reading_day(DAY - timedelta(days=1))
    born = datetime(2026, 11, 1, tzinfo=UTC)
    total = GATEWAYS * PER_GATEWAY
    missing = total // 50
    unvalidated = len([n for n in range(total) if n % 97 == 0 and n % 50 != 0])
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            insert(gateways),
            [
                {"id": f"gw-{g:04d}", "enrolled_at": born, "online": True, "last_birth_at": born}
                for g in range(GATEWAYS)
            ],
        )
        conn.execute(
            insert(transformer_areas),
            [{"id": f"T-{g:04d}", "name": f"T-{g:04d}"} for g in range(GATEWAYS)],
        )
        conn.execute(
            insert(meters),
            [
                {
                    "meter": _meter(g, k),
                    "gateway": f"gw-{g:04d}",
                    "address": _meter(g, k),
                    "protocol": "dlt645-2007",
                    "transformer_area": f"T-{g:04d}",
                    "first_seen_at": born,
                    "last_seen_at": born,
                }
                for g in range(GATEWAYS)
                for k in range(PER_GATEWAY)
            ],
        )
        rows = []
        for n in range(total):
            g, k = divmod(n, PER_GATEWAY)
            for day, present in ((previous, True), (reading_day, n % 50 != 0)):
                if not present:
                    continue
                rows.append(
                    {
                        "meter": _meter(g, k),
                        "obis": "1-0:1.8.0",
                        "ts": day.freeze,
                        "value": Decimal(n) / 100,
                        "unit": "kWh",
                        "kind": "daily",
                        "source": "scheduled",
                        "quality": "ok",
                        "gateway": f"gw-{g:04d}",
                        "seq": n + 1,
                        "read_at": day.freeze + timedelta(minutes=5),
                        "received_at": day.freeze + timedelta(minutes=6),
                        "vee_status": None if n % 97 == 0 and day is reading_day else "valid",
                    }
                )
        for start in range(0, len(rows), 20_000):
            conn.execute(insert(readings), rows[start : start + 20_000])
    loaded = time.perf_counter() - started
    timings: dict[str, float] = {}

    def timed(name: str, call: object) -> object:
        begun = time.perf_counter()
        result = call()  # type: ignore[operator]
        timings[name] = time.perf_counter() - begun
        return result

    with engine.connect().execution_options(read_only=True) as conn:
        [figures] = timed("figures total", lambda: daily_figures(conn, DAY, settings=SETTINGS))
        by_gateway = timed(
            "figures by gateway", lambda: daily_figures(conn, DAY, by="gateway", settings=SETTINGS)
        )
        page = timed("worklist page of 100", lambda: worklist(conn, DAY, settings=SETTINGS))
        report = timed(
            "readiness", lambda: readiness(conn, DAY, settings=SETTINGS, now=reading_day.deadline)
        )
        health = timed("gateway health", lambda: gateway_health(conn, settings=SETTINGS))
    engine.dispose()
    assert figures["meters"] == total
    assert figures["success"]["numerator"] == total - missing
    assert figures["accuracy"]["numerator"] == total - missing - unvalidated
    assert len(by_gateway) == GATEWAYS and len(page) == 100  # type: ignore[arg-type]
    assert report["problems"] == {"no_daily_reading": missing, "not_validated": unvalidated}  # type: ignore[index]
    assert len(health) == GATEWAYS  # type: ignore[arg-type]
    backend = database_url.split(":", 1)[0]
    print(f"\n{backend}: {total} meters, {len(rows)} readings loaded in {loaded:.1f} s")
    for name, seconds in timings.items():
        print(f"  {name:<22} {seconds:6.2f} s")
