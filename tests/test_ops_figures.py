"""O&M figures, worklist causes, readiness problems and gateway health, computed from
hand-built rows on SQLite and PostgreSQL; every expected number is counted by hand below.

The reading day is D = 2026-12-01 in Asia/Shanghai (UTC+8):

* D's daily reading is the freeze at local 2026-12-02 00:00 = 2026-12-01T16:00Z;
* the day's data window is (2026-11-30T16:00Z, 2026-12-01T16:00Z];
* the deadline is local 2026-12-02 06:00 = 2026-12-01T22:00Z.

The area (``meters``): gateways gw-a (online), gw-b (dead since 2026-12-01T10:00Z, before
the deadline), gw-c (enrolled, never born); areas T1, T2.

=====  ====  ==========  ====  =============================================  ==========
meter  gw    protocol    area  what central holds for D                       cause
=====  ====  ==========  ====  =============================================  ==========
m01    a     645-2007    T1    daily reading, on time, VEE valid              (passes)
m02    a     698.45      T1    daily reading, on time, not validated          not_validated
m03    a     645-2007    T1    daily reading, received 03:00Z (late), valid   late
m04    a     645-2007    T1    nothing; edge statistic: got 0 of 1            meter_silent
m05    a     modbus-rtu  T1    an instant 1-0:1.8.0 at noon (reached)         (passes)
m06    a     modbus-rtu  T1    nothing                                        meter_silent
m07    a     645-2007    T2    a curve point at noon, no daily; clock +300 s  clock_drift
m08    a     645-2007    T2    nothing; backfill_exhausted "bad_frame: …"     checksum_errors
m09    a     698.45      T2    daily reading, on time, VEE estimated          estimated
m10    a     698.45      T2    daily reading, on time, VEE "suspect"          vee_exception
m11    b     645-2007    T2    nothing                                        gateway_offline
m12    c     645-2007    —     nothing                                        gateway_offline
m13    a     645-2007    T1    first seen after the deadline, nothing         (not in D's archive)
m14    a     645-2007    T1    first seen after the deadline, daily on time   (passes; counts)
m99    a     —           —     a daily reading, but no archive lists it       not_in_archive
=====  ====  ==========  ====  =============================================  ==========
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from central.db import make_engine, upgrade
from central.db.ops_tables import commands
from central.db.schema import (
    gateway_events,
    gateways,
    meters,
    readings,
    statistics,
    transformer_areas,
)
from central.ops import OpsSettings, OpsSettingsError, daily_figures, gateway_health
from central.ops import readiness as readiness_check
from central.ops import worklist as failing_meters
from central.ops.settings import ReadingDay

pytest_plugins = ["central_fixtures"]

DAY = date(2026, 12, 1)
START = datetime(2026, 11, 30, 16, tzinfo=UTC)
FREEZE = datetime(2026, 12, 1, 16, tzinfo=UTC)
DEADLINE = datetime(2026, 12, 1, 22, tzinfo=UTC)
NOON = datetime(2026, 12, 1, 4, tzinfo=UTC)  # local 12:00 of D
BORN = datetime(2026, 11, 1, tzinfo=UTC)
LATER = datetime(2026, 12, 3, tzinfo=UTC)  # after the deadline
NOW = datetime(2026, 12, 3, 2, tzinfo=UTC)  # local 2026-12-03 10:00
SETTINGS = OpsSettings()

ARCHIVE = [
    # meter, gateway, protocol, area, first seen
    ("m01", "gw-a", "dlt645-2007", "T1", BORN),
    ("m02", "gw-a", "dlt698.45", "T1", BORN),
    ("m03", "gw-a", "dlt645-2007", "T1", BORN),
    ("m04", "gw-a", "dlt645-2007", "T1", BORN),
    ("m05", "gw-a", "modbus-rtu", "T1", BORN),
    ("m06", "gw-a", "modbus-rtu", "T1", BORN),
    ("m07", "gw-a", "dlt645-2007", "T2", BORN),
    ("m08", "gw-a", "dlt645-2007", "T2", BORN),
    ("m09", "gw-a", "dlt698.45", "T2", BORN),
    ("m10", "gw-a", "dlt698.45", "T2", BORN),
    ("m11", "gw-b", "dlt645-2007", "T2", BORN),
    ("m12", "gw-c", "dlt645-2007", None, BORN),
    ("m13", "gw-a", "dlt645-2007", "T1", LATER),
    ("m14", "gw-a", "dlt645-2007", "T1", LATER),
]
ON_TIME = FREEZE + timedelta(minutes=6)


def _reading(
    meter: str,
    ts: datetime,
    *,
    received_at: datetime = ON_TIME,
    vee_status: str | None = "valid",
    kind: str = "daily",
    obis: str = "1-0:1.8.0",
    gateway: str = "gw-a",
) -> dict[str, Any]:
    return {
        "meter": meter,
        "obis": obis,
        "ts": ts,
        "value": Decimal("1234.56"),
        "unit": "kWh",
        "kind": kind,
        "source": "scheduled",
        "quality": "ok",
        "gateway": gateway,
        "seq": 1,
        "read_at": received_at - timedelta(seconds=30),
        "received_at": received_at,
        "vee_status": vee_status,
    }


def build_area(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(gateways),
            [
                {
                    "id": "gw-a",
                    "enrolled_at": BORN,
                    "online": True,
                    "last_birth_at": BORN,
                    "last_death_at": None,
                    "last_birth": {
                        "software_version": "0.1.0",
                        "clock_offset_s": "-75.5",
                        "oldest_unacked_s": 30000,
                        "log_depth": 12,
                        "session": 3,
                    },
                },
                {
                    "id": "gw-b",
                    "enrolled_at": BORN,
                    "online": False,
                    "last_birth_at": BORN,
                    "last_death_at": datetime(2026, 12, 1, 10, tzinfo=UTC),
                    "last_birth": {"software_version": "0.1.0", "clock_offset_s": "0.4"},
                },
                {
                    "id": "gw-c",
                    "enrolled_at": BORN,
                    "online": False,
                    "last_birth_at": None,
                    "last_death_at": None,
                    "last_birth": None,
                },
            ],
        )
        conn.execute(insert(transformer_areas), [{"id": a, "name": a} for a in ("T1", "T2")])
        conn.execute(
            insert(meters),
            [
                {
                    "meter": meter,
                    "gateway": gateway,
                    "address": meter,
                    "protocol": protocol,
                    "bus": "rs485-1",
                    "transformer_area": area,
                    "first_seen_at": seen,
                    "last_seen_at": seen,
                }
                for meter, gateway, protocol, area, seen in ARCHIVE
            ],
        )
        conn.execute(
            insert(readings),
            [
                _reading("m01", FREEZE),
                _reading("m02", FREEZE, vee_status=None),
                _reading("m03", FREEZE, received_at=DEADLINE + timedelta(hours=5)),
                _reading("m05", NOON, kind="instant"),
                _reading("m07", NOON, kind="curve"),
                _reading("m09", FREEZE, vee_status="estimated"),
                _reading("m10", FREEZE, vee_status="suspect"),
                _reading("m14", FREEZE),
                _reading("m99", FREEZE),
                # the freeze that opens D belongs to D-1: it reaches no meter for D
                _reading("m04", START),
            ],
        )
        conn.execute(
            insert(gateway_events),
            [
                {
                    "gateway": "gw-a",
                    "seq": 10,
                    "meter": "m07",
                    "code": "clock_offset",
                    "detail": {"offset_s": "300.25", "threshold_s": 60, "decision": "sync"},
                    "at": FREEZE + timedelta(minutes=7),
                    "received_at": ON_TIME,
                },
                {
                    # within the threshold: not drift
                    "gateway": "gw-a",
                    "seq": 11,
                    "meter": "m01",
                    "code": "clock_offset",
                    "detail": {"offset_s": 12, "threshold_s": 60, "decision": "capped"},
                    "at": FREEZE + timedelta(minutes=7),
                    "received_at": ON_TIME,
                },
                {
                    "gateway": "gw-a",
                    "seq": 12,
                    "meter": "m08",
                    "code": "backfill_exhausted",
                    "detail": {"task": "daily_frozen", "reason": "bad_frame: read 05060101"},
                    "at": FREEZE + timedelta(days=3),
                    "received_at": FREEZE + timedelta(days=3),
                },
                {
                    "gateway": "gw-a",
                    "seq": 13,
                    "meter": None,
                    "code": "uplink_nack",
                    "detail": {"reason": "storage"},
                    "at": NOW - timedelta(hours=2),
                    "received_at": NOW - timedelta(hours=2),
                },
            ],
        )
        conn.execute(
            insert(commands),
            {
                "id": uuid.uuid4(),
                "gateway": "gw-a",
                "kind": "rebirth",
                "args": {},
                "requested_by": "test",
                "issued_at": NOW,
                "expires_at": NOW + timedelta(hours=1),
                "status": "sent",
            },
        )
        conn.execute(
            insert(statistics),
            [
                {
                    "gateway": "gw-a",
                    "seq": 20,
                    "name": "collection.success_rate",
                    "labels": {
                        "task": "daily_frozen",
                        "day": "2026-12-02",
                        "meter": "m04",
                        "expected": 1,
                        "got": 0,
                        "failed": 1,
                        "consecutive_failures": 4,
                    },
                    "value": Decimal("0"),
                    "at": FREEZE + timedelta(days=1, minutes=6),
                    "received_at": FREEZE + timedelta(days=1, minutes=7),
                },
                {
                    "gateway": "gw-a",
                    "seq": 21,
                    "name": "collection.success_rate",
                    "labels": {"task": "daily_frozen", "day": "2026-12-02", "expected": 10},
                    "value": Decimal("0.9"),
                    "at": FREEZE + timedelta(days=1, minutes=6),
                    "received_at": FREEZE + timedelta(days=1, minutes=7),
                },
            ],
        )


@pytest.fixture(scope="module", params=("sqlite", "postgresql"))
def area(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The area above, built once per backend (every test here only reads it)."""
    from central_fixtures import (  # loaded as a plugin first (pytest_plugins)
        create_postgres_database,
        drop_postgres_database,
        postgres_unreachable,
    )

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('ops') / 'central.sqlite3'}"
    else:
        reason = postgres_unreachable()
        if reason is not None:
            pytest.skip(reason)
        url = create_postgres_database()
    try:
        upgrade(url)
        engine = make_engine(url)
        build_area(engine)
        yield engine
        engine.dispose()
    finally:
        if request.param == "postgresql":
            drop_postgres_database(url)


def test_reading_day_instants() -> None:
    day = SETTINGS.reading_day(DAY)
    assert (day.start, day.freeze, day.deadline) == (START, FREEZE, DEADLINE)
    assert day.freeze_date == date(2026, 12, 2)
    late = OpsSettings(deadline_days=2).with_deadline("D+2 09:30").reading_day(DAY)
    assert late.deadline == datetime(2026, 12, 3, 1, 30, tzinfo=UTC)
    utc = OpsSettings(zone="UTC").reading_day(DAY)
    assert utc.freeze == datetime(2026, 12, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("tomorrow", "expected 'D\\+N HH:MM'"),
        ("D+1 25:00", "not a time of day"),
        ("D+40 06:00", "at most 31 days"),
    ],
)
def test_bad_deadline_is_named(text: str, words: str) -> None:
    with pytest.raises(OpsSettingsError, match=words):
        SETTINGS.with_deadline(text)


def test_settings_from_env() -> None:
    env = {"M2C_OPS_ZONE": "Asia/Urumqi", "M2C_OPS_DEADLINE": "D+1 08:00"}
    settings = OpsSettings.from_env(env)
    # Urumqi is UTC+6: local 2026-12-02 08:00 is 02:00Z
    assert settings.reading_day(DAY).deadline == datetime(2026, 12, 2, 2, tzinfo=UTC)
    with pytest.raises(OpsSettingsError, match="not a time zone"):
        OpsSettings.from_env({"M2C_OPS_ZONE": "Mars/Olympus"})
    with pytest.raises(OpsSettingsError, match="a date"):
        ReadingDay.of(datetime(2026, 12, 1), SETTINGS)  # type: ignore[arg-type]


def _counts(row: dict[str, Any]) -> tuple[int, ...]:
    return (
        row["meters"],
        row["coverage"]["numerator"],
        row["success"]["denominator"],
        row["success"]["numerator"],
        row["timeliness"]["numerator"],
        row["accuracy"]["numerator"],
    )


def test_total_figures(area: Engine) -> None:
    with area.connect() as conn:
        [total] = daily_figures(conn, DAY, settings=SETTINGS)
    # archive 13 (m01-m12, m14); reached 8 (m01 m02 m03 m05 m07 m09 m10 m14); expected 11
    # (all but the Modbus m05, m06); received 6 (m01 m02 m03 m09 m10 m14); timely 5 (not
    # m03); passed VEE 3 (m01 m03 m14).
    assert _counts(total) == (13, 8, 11, 6, 5, 3)
    assert total["coverage"] == {
        "numerator": 8,
        "denominator": 13,
        "ratio": Decimal("0.615384"),  # 8/13 = 0.6153846…, cut, not rounded
        "target": Decimal("0.99"),
        "meets_target": False,
    }
    assert total["success"]["ratio"] == Decimal("0.545454")  # 6/11
    assert total["timeliness"]["ratio"] == Decimal("0.454545")  # 5/11
    assert (total["accuracy"]["numerator"], total["accuracy"]["denominator"]) == (3, 6)
    assert total["accuracy"]["ratio"] == Decimal("0.5")


def test_figures_by_gateway_and_area(area: Engine) -> None:
    with area.connect() as conn:
        by_gateway = {
            row["gateway"]: _counts(row)
            for row in daily_figures(conn, DAY, by="gateway", settings=SETTINGS)
        }
        by_area = {
            row["area"]: _counts(row)
            for row in daily_figures(conn, DAY, by="area", settings=SETTINGS)
        }
        only_t1 = daily_figures(conn, DAY, area="T1", settings=SETTINGS)
        only_b = daily_figures(conn, DAY, by="gateway", gateway="gw-b", settings=SETTINGS)
    assert by_gateway == {
        "gw-a": (11, 8, 9, 6, 5, 3),
        "gw-b": (1, 0, 1, 0, 0, 0),
        "gw-c": (1, 0, 1, 0, 0, 0),
    }
    # T1: m01-m06, m14; T2: m07-m11; no area: m12
    assert by_area == {
        None: (1, 0, 1, 0, 0, 0),
        "T1": (7, 5, 5, 4, 3, 3),
        "T2": (5, 3, 5, 2, 2, 0),
    }
    assert _counts(only_t1[0]) == by_area["T1"]
    assert [row["gateway"] for row in only_b] == ["gw-b"]
    assert only_b[0]["accuracy"]["ratio"] is None  # 0/0: no reading to judge


def test_figures_by_meter(area: Engine) -> None:
    with area.connect() as conn:
        rows = {
            row["meter"]: row for row in daily_figures(conn, DAY, by="meter", settings=SETTINGS)
        }
    assert sorted(rows) == [f"m{n:02d}" for n in (*range(1, 13), 14)]
    assert _counts(rows["m03"]) == (1, 1, 1, 1, 0, 1)  # late but valid
    assert _counts(rows["m05"]) == (1, 1, 0, 0, 0, 0)  # Modbus: reached, nothing expected
    assert rows["m05"]["success"]["ratio"] is None
    assert rows["m07"]["area"] == "T2" and rows["m07"]["gateway"] == "gw-a"


def test_empty_day_gives_one_total_row(area: Engine) -> None:
    with area.connect() as conn:
        [total] = daily_figures(conn, date(2026, 10, 1), settings=SETTINGS)
        with pytest.raises(OpsSettingsError, match="by='feeder'"):
            daily_figures(conn, DAY, by="feeder", settings=SETTINGS)
    assert total["meters"] == 0 and total["coverage"]["ratio"] is None


def test_deadline_moves_timeliness(area: Engine) -> None:
    """m03 arrived at 03:00Z (local 11:00 on D+1): timely under a D+1 12:00 deadline."""
    later = SETTINGS.with_deadline("D+1 12:00")
    with area.connect() as conn:
        [total] = daily_figures(conn, DAY, settings=later)
    assert total["timeliness"]["numerator"] == 6


WORKLIST_CAUSES = {
    "m02": ("not_validated", ["not_passed"], []),
    "m03": ("late", ["late"], []),
    "m04": ("meter_silent", ["not_reached", "missing"], ["read_now", "backfill"]),
    "m06": ("meter_silent", ["not_reached"], ["read_now", "backfill"]),
    "m07": ("clock_drift", ["missing"], ["clock_sync", "backfill", "read_now"]),
    "m08": ("checksum_errors", ["not_reached", "missing"], ["read_now", "backfill"]),
    "m09": ("estimated", ["not_passed"], ["backfill"]),
    "m10": ("vee_exception", ["not_passed"], []),
    "m11": ("gateway_offline", ["not_reached", "missing"], []),
    "m12": ("gateway_offline", ["not_reached", "missing"], []),
}


def test_worklist_causes_and_remedies(area: Engine) -> None:
    with area.connect() as conn:
        rows = failing_meters(conn, DAY, settings=SETTINGS, now=NOW)
    got = {
        row["meter"]: (row["cause"], row["problems"], [r["action"] for r in row["remedies"]])
        for row in rows
    }
    assert got == WORKLIST_CAUSES
    by_meter = {row["meter"]: row for row in rows}
    # m07: drift first, then "the freeze was not collected" (it answered that day)
    assert [c["cause"] for c in by_meter["m07"]["causes"]] == ["clock_drift", "not_collected"]
    drift = by_meter["m07"]["causes"][0]["evidence"][0]
    assert drift["offset_s"] == Decimal("300.25") and drift["code"] == "clock_offset"
    silent = by_meter["m04"]["causes"][0]["evidence"]
    assert silent["last_billing_reading_at"] == START  # heard last at D-1's freeze
    assert silent["edge"][0]["consecutive_failures"] == 4
    assert by_meter["m11"]["causes"][0]["evidence"]["since"] == datetime(
        2026, 12, 1, 10, tzinfo=UTC
    )
    assert "never connected" in by_meter["m12"]["causes"][0]["evidence"]["reason"]
    # now is local 2026-12-03: a 2-day window reaches the freeze of 2026-12-02
    backfill = by_meter["m04"]["remedies"][1]["command"]
    assert backfill == {
        "gateway": "gw-a",
        "kind": "backfill",
        "args": {"days": 2, "meters": ["m04"]},
    }
    assert by_meter["m07"]["remedies"][0]["command"] == {
        "gateway": "gw-a",
        "kind": "clock_sync",
        "args": {"meters": ["m07"]},
    }
    assert by_meter["m03"]["reading"]["vee_status"] == "valid"
    assert by_meter["m04"]["reading"] is None


def test_worklist_pages_and_filters(area: Engine) -> None:
    with area.connect() as conn:
        first = failing_meters(conn, DAY, limit=4, settings=SETTINGS, now=NOW)
        second = failing_meters(
            conn, DAY, limit=4, after=first[-1]["meter"], settings=SETTINGS, now=NOW
        )
        third = failing_meters(
            conn, DAY, limit=4, after=second[-1]["meter"], settings=SETTINGS, now=NOW
        )
        t2 = failing_meters(conn, DAY, area="T2", settings=SETTINGS, now=NOW)
        with pytest.raises(OpsSettingsError, match="limit"):
            failing_meters(conn, DAY, limit=0, settings=SETTINGS)
    pages = [[row["meter"] for row in page] for page in (first, second, third)]
    assert pages == [["m02", "m03", "m04", "m06"], ["m07", "m08", "m09", "m10"], ["m11", "m12"]]
    assert [row["meter"] for row in t2] == ["m07", "m08", "m09", "m10", "m11"]


def test_backfill_is_not_offered_past_the_wire_window(area: Engine) -> None:
    with area.connect() as conn:
        rows = failing_meters(conn, DAY, settings=SETTINGS, now=NOW + timedelta(days=40))
    silent = next(row for row in rows if row["meter"] == "m04")
    assert [r["action"] for r in silent["remedies"]] == ["read_now"]


def test_readiness_after_collection(area: Engine) -> None:
    with area.connect() as conn:
        report = readiness_check(conn, DAY, settings=SETTINGS, now=NOW)
    named = {item["meter"]: [p["problem"] for p in item["problems"]] for item in report["meters"]}
    assert named == {
        "m02": ["not_validated"],
        "m04": ["no_daily_reading"],
        "m06": ["no_reading"],
        "m07": ["no_daily_reading", "clock_drift"],
        "m08": ["no_daily_reading"],
        "m09": ["estimated"],
        "m10": ["open_vee_exception"],
        "m11": ["gateway_offline", "no_daily_reading"],
        "m12": ["gateway_offline", "no_daily_reading"],
        "m99": ["not_in_archive"],
    }
    causes = {
        item["meter"]: p.get("cause")
        for item in report["meters"]
        for p in item["problems"]
        if p["problem"] in ("no_daily_reading", "no_reading")
    }
    assert causes == {
        "m04": "meter_silent",
        "m06": "meter_silent",
        "m07": "clock_drift",
        "m08": "checksum_errors",
        "m11": "gateway_offline",
        "m12": "gateway_offline",
    }
    assert report["mode"] == "after_collection" and report["based_on"] == DAY
    assert (report["meters_checked"], report["meters_ready"], report["meters_not_ready"]) == (
        13,
        4,  # m01 m03 m05 m14 (m03 was late, but its reading is there and valid)
        10,
    )
    assert report["ready"] is False
    assert report["problems"] == {
        "clock_drift": 1,
        "estimated": 1,
        "gateway_offline": 2,
        "no_daily_reading": 5,
        "no_reading": 1,
        "not_in_archive": 1,
        "not_validated": 1,
        "open_vee_exception": 1,
    }
    m99 = next(item for item in report["meters"] if item["meter"] == "m99")
    assert m99["gateway"] == "gw-a"


def test_readiness_ahead_checks_the_newest_closed_day(area: Engine) -> None:
    """Run on local 2026-12-02 10:00 for reading day 12-02 (its freeze is still ahead): the
    check is based on 12-01, the newest closed day, and on gateways as they are now."""
    with area.connect() as conn:
        report = readiness_check(
            conn, date(2026, 12, 2), settings=SETTINGS, now=FREEZE + timedelta(hours=2)
        )
        only_b = readiness_check(
            conn,
            date(2026, 12, 2),
            settings=SETTINGS,
            now=FREEZE + timedelta(hours=2),
            gateway="gw-b",
        )
    assert report["mode"] == "ahead" and report["based_on"] == DAY
    assert report["problems"]["gateway_offline"] == 2
    assert [item["meter"] for item in only_b["meters"]] == ["m11"]


def test_gateway_health(area: Engine) -> None:
    with area.connect() as conn:
        health = {row["gateway"]: row for row in gateway_health(conn, settings=SETTINGS, now=NOW)}
        one = gateway_health(conn, "gw-b", settings=SETTINGS, now=NOW)
    assert [row["gateway"] for row in one] == ["gw-b"]
    assert {gw: row["status"] for gw, row in health.items()} == {
        "gw-a": "online",
        "gw-b": "offline",
        "gw-c": "never_connected",
    }
    a = health["gw-a"]
    assert a["meters_in_archive"] == 12 and a["commands_waiting"] == 1
    assert a["clock_offset_s"] == Decimal("-75.5")
    assert (
        a["daily_success"]["rate"] == Decimal("0.9") and a["daily_success"]["day"] == "2026-12-02"
    )
    assert a["trouble_24h"] == {"uplink_nack": 1}
    assert [w["code"] for w in a["warnings"]] == [
        "clock_offset",
        "uplink_backlog",
        "low_success",
        "uplink_trouble",
    ]
    assert [w["code"] for w in health["gw-b"]["warnings"]] == ["offline"]
    assert [w["code"] for w in health["gw-c"]["warnings"]] == ["never_connected"]


# --- the command line (thin over the same library) -------------------------------------------


def _cli(engine: Engine, *args: str) -> Any:
    from click.testing import CliRunner

    from central.cli import cli

    url = engine.url.render_as_string(hide_password=False)
    return CliRunner().invoke(cli, ["ops", *args, "--database-url", url])


def test_cli_figures(area: Engine) -> None:
    import json

    text = _cli(area, "figures", "2026-12-01")
    assert text.exit_code == 0, text.output
    assert "coverage 8/13 61.53 % !" in text.output and "accuracy 3/6 50.00 % !" in text.output
    as_json = _cli(area, "figures", "2026-12-01", "--by", "gateway", "--json")
    rows = {row["gateway"]: row for row in json.loads(as_json.output)["rows"]}
    assert rows["gw-a"]["success"]["numerator"] == 6
    assert rows["gw-a"]["success"]["ratio"] == "0.666666"  # 6/9, as exact text
    bad = _cli(area, "figures", "2026-12-01", "--deadline", "noon")
    assert bad.exit_code == 1 and "Error: --deadline='noon'" in bad.output


def test_cli_worklist_readiness_health(area: Engine) -> None:
    import json

    at = ["--now", "2026-12-03T10:00+08:00"]
    page = _cli(area, "worklist", "2026-12-01", "--limit", "4", *at)
    assert page.exit_code == 0, page.output
    assert "m04  gw-a  T1  not_reached,missing  cause: meter_silent" in page.output
    assert "remedy: central ops command read_now --gateway gw-a --meter m04" in page.output
    assert "remedy: central ops command backfill --gateway gw-a --meter m04 --days 2" in page.output
    assert "more: central ops worklist 2026-12-01 --after m06" in page.output
    ready = _cli(area, "readiness", "2026-12-01", "--json", *at)
    assert ready.exit_code == 3  # some meters are not ready
    assert json.loads(ready.output)["problems"]["no_daily_reading"] == 5
    ahead = _cli(area, "readiness", "2026-12-02", "--now", "2026-12-02T10:00+08:00")
    assert ahead.exit_code == 3 and "(ahead, based on 2026-12-01)" in ahead.output
    bad = _cli(area, "readiness", "2026-12-01", "--now", "2026-12-03 10:00")
    assert bad.exit_code == 2 and "give the offset" in bad.output
    health = _cli(area, "health")
    assert health.exit_code == 0 and "gw-c" in health.output and "never_connected" in health.output


def test_every_ops_command_has_help_with_an_example() -> None:
    import click

    from central.ops.cli import ops

    def walk(group: click.Group, path: str) -> list[tuple[str, click.Command]]:
        found = []
        for name, command in group.commands.items():
            found.append((f"{path} {name}", command))
            if isinstance(command, click.Group):
                found += walk(command, f"{path} {name}")
        return found

    commands = walk(ops, "ops")
    assert len(commands) >= 9
    for name, command in commands:
        assert "Example" in (command.help or ""), f"{name} has no example in its help"


def test_cli_command_arguments() -> None:
    import click

    from central.ops.cli import command_args

    today = date(2026, 12, 5)

    def args(kind: str, **options: Any) -> dict[str, Any]:
        return command_args(kind, settings=SETTINGS, today=today, **options)

    # reading day 12-01 is frozen on 12-02: 4 days back from 12-05 reach it (12-02..12-05)
    assert args("backfill", meters=["m1"], from_day=DAY) == {"days": 4, "meters": ["m1"]}
    assert args("backfill", meters=[], days=2) == {"days": 2, "meters": None}
    assert args("read_now", meters=["m1"]) == {"meter": "m1", "what": "1-0:1.8.0"}
    assert args("clock_sync", meters=[]) == {"meters": None}
    assert args("resync", meters=[], from_seq=7) == {"from_seq": 7}
    resend = args("resend", meters=["m1"], from_day=DAY, to_day=date(2026, 12, 2))
    assert resend["start"] == START
    assert resend["end"] == datetime(2026, 12, 2, 16, 0, 1, tzinfo=UTC)
    for kind, options, words in [
        ("read_now", {"meters": []}, "exactly one --meter"),
        ("backfill", {"meters": []}, "either --days N or --from DAY"),
        ("backfill", {"meters": [], "days": 1, "to_day": DAY}, "--to is for resend"),
        ("resend", {"meters": ["m1"], "from_day": DAY}, "--from DAY and --to DAY"),
        ("rebirth", {"meters": ["m1"]}, "drop --meter"),
        ("resync", {"meters": []}, "--from-seq"),
    ]:
        with pytest.raises(click.UsageError, match=words):
            args(kind, **options)
