"""O&M figures and the readiness check from the real chain, against the simulator's plan.

A simulated transformer area (8 households + the supply meter) with planted faults runs
behind a real edge agent, real Mosquitto (TLS, ACL) and central ingestion on SQLite
(``tests/e2e_harness.py``):

* ``m02`` (DL/T 645-2007) and ``m08`` (DL/T 698.45) are dead: they never answer;
* ``m04`` (645) and ``m07`` (698) have clocks running 3000 ppm fast (≈ 260 s a day), and
  the agent's daily clock check (switched on here) finds and sets them every day;
* ``m05``'s readings are left unvalidated by the VEE stand-in below.

Two reading days are collected. Every expected number is counted from that plan, never
from our output: 9 meters in the archive, 7 reached, 9 daily readings expected, 7
received, all 7 timely (the simulated days lie in the future, so central has every reading
long before its simulated deadline), 6 passed VEE. The readiness check must name exactly
the planted problems: the two dead meters (no daily reading, meter silent), the two
drifting clocks, the unvalidated meter — and nothing else.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import open_chain, wait_for
from sqlalchemy import update

from central.db.schema import meters, readings
from central.demo import mosquitto_binary
from central.ops import OpsSettings, daily_figures, gateway_health, readiness, worklist

pytestmark = pytest.mark.skipif(
    mosquitto_binary() is None, reason="mosquitto is not installed (apt-get install mosquitto)"
)

HOUSEHOLDS = 8  # m01-m06 speak DL/T 645-2007, m07-m08 DL/T 698.45; plus the supply meter
SILENT = ("m02", "m08")
DRIFTING = ("m04", "m07")
UNVALIDATED = "m05"
DRIFT_PPM = 3000  # 0.003 × 86 760 s ≈ 260 s by the first check, far past the 60 s threshold
DAYS = 2
SETTINGS = OpsSettings()


def plant_faults(area: str) -> str:
    for account in SILENT:
        area = area.replace(f'id = "{account}"\n', f'id = "{account}"\ndead = true\n')
    for account in DRIFTING:
        area = area.replace(f'id = "{account}"\n', f'id = "{account}"\ndrift_ppm = {DRIFT_PPM}\n')
    assert area.count("dead = true") == 2 and area.count("drift_ppm") == 2
    return area


def daily_clock_checks(edge: str) -> str:
    off = "[tasks.clock_check]\nenabled = false\nafter_power_up = false\n"
    assert off in edge
    return edge.replace(off, '[tasks.clock_check]\nenabled = true\nat = "03:30"\n')


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The chain after two collected reading days; the agent still running (its death
    would make the gateway offline)."""
    # The agent's control socket path must fit AF_UNIX's 108 bytes: a short directory.
    work = Path(tmp_path_factory.mktemp("ops"))
    start = datetime.now(UTC).date() + timedelta(days=10)
    with open_chain(
        work,
        meters=HOUSEHOLDS,
        start=start,
        area_edit=plant_faults,
        edge_edit=daily_clock_checks,
    ) as chain:
        agent = chain.open_agent()
        try:
            uplink = agent.uplink
            assert wait_for(lambda: uplink.health().central_online, 10)
            for k in range(1, DAYS + 1):
                chain.collect_day(agent, start + timedelta(days=k))
                target = agent.log.last_seq()
                assert wait_for(lambda t=target: (uplink.health().last_ack_seq or 0) >= t, 60), (
                    f"central did not acknowledge day {k}: {uplink.health()}"
                )
            address = {m.account: m.address for m in chain.meters}
            # Stands in for the VEE worker (central/vee, built alongside): every reading
            # passes except the planted unvalidated meter's.
            with chain.engine.begin() as conn:
                conn.execute(
                    update(readings)
                    .where(readings.c.meter != address[UNVALIDATED])
                    .values(vee_status="valid")
                )
            yield chain, agent, address, [start + timedelta(days=k) for k in range(DAYS)]
        finally:
            agent.close()


def test_archive_came_from_the_birth(collected: Any) -> None:
    chain, _, address, _ = collected
    with chain.engine.connect() as conn:
        archive = {row.meter: row for row in conn.execute(meters.select())}
    assert set(archive) == set(address.values())
    assert {row.transformer_area for row in archive.values()} == {"demo-area"}


def test_figures_match_the_plan(collected: Any) -> None:
    chain, _, address, days = collected
    dead = {address[a] for a in SILENT}
    unvalidated = address[UNVALIDATED]
    everyone = set(address.values())
    with chain.engine.connect() as conn:
        for day in days:
            [total] = daily_figures(conn, day, settings=SETTINGS)
            counts = {
                name: (total[name]["numerator"], total[name]["denominator"])
                for name in ("coverage", "success", "timeliness", "accuracy")
            }
            assert total["meters"] == HOUSEHOLDS + 1
            assert counts == {
                "coverage": (9 - 2, 9),
                "success": (9 - 2, 9),
                "timeliness": (9 - 2, 9),
                "accuracy": (7 - 1, 7),
            }, day
            by_area = daily_figures(conn, day, by="area", settings=SETTINGS)
            by_gateway = daily_figures(conn, day, by="gateway", settings=SETTINGS)
            assert [(r["area"], r["success"]["numerator"]) for r in by_area] == [("demo-area", 7)]
            assert [(r["gateway"], r["coverage"]["numerator"]) for r in by_gateway] == [
                ("gw-demo", 7)
            ]
            per_meter = {
                row["meter"]: (
                    row["coverage"]["numerator"],
                    row["success"]["numerator"],
                    row["timeliness"]["numerator"],
                    row["accuracy"]["numerator"],
                )
                for row in daily_figures(conn, day, by="meter", settings=SETTINGS)
            }
            expected = {
                meter: (0, 0, 0, 0)
                if meter in dead
                else (1, 1, 1, 0 if meter == unvalidated else 1)
                for meter in everyone
            }
            assert per_meter == expected, day
    # the edge's own ledger agrees: 9 slots a day, 7 got
    expected_slots, got_slots = chain.slots([day + timedelta(days=1) for day in days])
    assert (expected_slots, got_slots) == (9 * DAYS, 7 * DAYS)


def test_readiness_names_every_planted_problem_and_nothing_else(collected: Any) -> None:
    chain, _, address, days = collected
    now = chain.clock.now()
    with chain.engine.connect() as conn:
        report = readiness(conn, days[-1], settings=SETTINGS, now=now)
    named = {
        item["meter"]: sorted(
            (problem["problem"], problem.get("cause")) for problem in item["problems"]
        )
        for item in report["meters"]
    }
    assert report["mode"] == "after_collection"
    assert named == {
        address["m02"]: [("no_daily_reading", "meter_silent")],
        address["m08"]: [("no_daily_reading", "meter_silent")],
        address["m04"]: [("clock_drift", None)],
        address["m07"]: [("clock_drift", None)],
        address["m05"]: [("not_validated", None)],
    }
    for meter in (address["m04"], address["m07"]):
        [item] = [i for i in report["meters"] if i["meter"] == meter]
        [drift] = [p for p in item["problems"] if p["problem"] == "clock_drift"]
        offsets = [abs(o["offset_s"]) for o in drift["detail"]]
        # the check at 00:06 finds ≈ 0.003 × 86 400 s: between 240 and 280 s
        assert offsets and all(240 < offset < 280 for offset in offsets), offsets
    assert (report["meters_checked"], report["meters_not_ready"]) == (9, 5)


def test_worklist_names_the_silent_meters_with_the_edge_evidence(collected: Any) -> None:
    chain, _, address, days = collected
    now = chain.clock.now()
    with chain.engine.connect() as conn:
        first_day = worklist(conn, days[0], settings=SETTINGS, now=now)
        health = gateway_health(conn, settings=SETTINGS, now=now)
    causes = {row["meter"]: row["cause"] for row in first_day}
    assert causes == {
        address["m02"]: "meter_silent",
        address["m08"]: "meter_silent",
        address["m05"]: "not_validated",
    }
    silent = next(row for row in first_day if row["meter"] == address["m02"])
    # the edge published the finished ledger day (the freeze date) with this meter at 0
    edge = silent["causes"][0]["evidence"]["edge"]
    assert any(sign.get("got") == 0 and sign.get("failed") for sign in edge), edge
    assert [remedy["action"] for remedy in silent["remedies"]] == ["read_now", "backfill"]
    assert silent["remedies"][1]["command"]["args"]["meters"] == [address["m02"]]
    [gateway] = health
    assert gateway["status"] == "online" and gateway["meters_in_archive"] == 9


def test_an_empty_future_day_is_not_collected(collected: Any) -> None:
    """The day after the last collected one: its freeze was never read, nothing counts."""
    chain, _, _, days = collected
    with chain.engine.connect() as conn:
        [total] = daily_figures(conn, days[-1] + timedelta(days=1), settings=SETTINGS)
    assert total["success"]["numerator"] == 0 and total["meters"] == HOUSEHOLDS + 1
    assert isinstance(days[0], date)
