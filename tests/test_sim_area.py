"""Transformer area: the supply meter balances, scenario knobs do what they say, ground truth."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from firmware_sim.area import HouseholdSpec, TransformerArea
from firmware_sim.clock import SimClock
from firmware_sim.device import Device
from firmware_sim.load import ConstantLoad
from firmware_sim.meter import RelayResult, RelayState
from firmware_sim.truth import truth_rows, write_csv, write_jsonl
from shared_protocol import dlt645, dlt698, modbus

START = datetime(2025, 12, 31, 16, 0, tzinfo=UTC)  # 2026-01-01 00:00 Shanghai


def scenario(seed: int = 1) -> TransformerArea:
    households = [
        HouseholdSpec("honest", "000000000001"),
        HouseholdSpec("bypass", "000000000002", protocol="dlt698.45", bypass_percent=40),
        HouseholdSpec("reversed", "000000000003", reversed_wiring=True),
        HouseholdSpec("flat-a", "000000000004", wired_to="flat-b"),
        HouseholdSpec("flat-b", "000000000005", wired_to="flat-a", scale=3.0),
        HouseholdSpec("dead", "000000000006", dead=True),
        HouseholdSpec("drift", "000000000007", drift_ppm=500),
        HouseholdSpec("solar", "7", protocol="modbus-rtu", unit_id=7, pv_peak_watts=4000),
        HouseholdSpec("prepaid", "000000000008", prepaid=True),
        HouseholdSpec("protected", "000000000009", protected=True),
    ]
    return TransformerArea(
        households, START, seed=seed, loss_percent=Decimal("4.5"), theft=ConstantLoad(300)
    )


@pytest.fixture(scope="module")
def area() -> TransformerArea:
    built = scenario()
    built.advance(START + timedelta(days=7, hours=6))
    return built


def test_supply_equals_households_plus_loss_plus_theft_exactly(area: TransformerArea) -> None:
    balance = area.balance()
    assert balance.holds
    assert balance.theft_uj == 300 * (7 * 86_400 + 6 * 3600) * 1_000_000
    # loss is 4.5 % of what is delivered, floored per 15-minute slot (at most 1 W short each)
    delivered = balance.households_uj + balance.theft_uj
    slots = 7 * 96 + 24
    assert 0 <= delivered * 45 // 1000 - balance.loss_uj <= slots * 900 * 1_000_000
    assert sum(area.household_uj.values()) == balance.households_uj


def test_bypass_reversed_cross_wired_and_dead_meters(area: TransformerArea) -> None:
    m, truth = area.meters, area.household_uj
    bypass = m["bypass"].snapshot().import_uj[0]
    # the element sees floor(60 % of the watts): at most 1 W short at any moment
    duration_us = (7 * 86_400 + 6 * 3600) * 1_000_000
    assert 0 <= truth["bypass"] * 60 // 100 - bypass <= duration_us
    reversed_meter = m["reversed"].snapshot()
    assert reversed_meter.import_uj[0] == 0 and reversed_meter.export_uj[0] > 0
    # 串户: each flat's meter registers the other flat's consumption
    assert m["flat-a"].snapshot().import_uj[0] == truth["flat-b"]
    assert m["flat-b"].snapshot().import_uj[0] == truth["flat-a"]
    assert m["dead"].snapshot().import_uj[0] == 0 and truth["dead"] > 0
    assert m["honest"].snapshot().import_uj[0] == truth["honest"]
    assert abs(m["drift"].clock.error(area.supply.now_us)) > timedelta(minutes=5)
    assert m["prepaid"].remaining_credit() is not None
    assert m["protected"].trip() is RelayResult.KEEP_POWER


def test_the_same_seed_builds_the_same_area() -> None:
    a, b, c = scenario(3), scenario(3), scenario(4)
    for built in (a, b, c):
        built.advance(START + timedelta(days=2))
    assert a.balance() == b.balance()
    assert [r.as_dict() for r in truth_rows(a)] == [r.as_dict() for r in truth_rows(b)]
    assert a.balance() != c.balance()


def test_ground_truth_rows_per_meter_per_day(area: TransformerArea) -> None:
    rows = list(truth_rows(area))
    days = {r.day for r in rows}
    assert len(days) == 6  # seven midnights give six whole days
    assert len(rows) == 6 * (len(area.meters) + 1)
    day = sorted(days)[2]
    by_account = {r.account: r for r in rows if r.day == day}
    assert by_account["dead"].shown_import_kwh == 0 < by_account["dead"].true_kwh
    assert by_account["dead"].anomalies == "dead_meter"
    assert by_account["honest"].shown_import_kwh == by_account["honest"].true_kwh
    assert "bypass:40%" in by_account["bypass"].anomalies
    assert by_account["flat-a"].shown_import_kwh == by_account["flat-b"].true_kwh
    supply = by_account["supply"]
    assert supply.theft_kwh == Decimal("7.2000")  # 300 W × 24 h
    households = sum(r.true_kwh for a, r in by_account.items() if a != "supply")
    total = households + (supply.loss_kwh or 0) + (supply.theft_kwh or 0)
    assert abs(supply.true_kwh - total) <= Decimal("0.0001") * (len(by_account) + 2)


def test_truth_exports_as_json_lines_and_csv(area: TransformerArea) -> None:
    out = io.StringIO()
    count = write_jsonl(area, out)
    lines = out.getvalue().splitlines()
    assert count == len(lines) > 0
    first = json.loads(lines[0])
    assert set(first) >= {"day", "account", "address", "true_kwh", "shown_import_kwh", "anomalies"}
    text = io.StringIO()
    assert write_csv(area, text) == count
    parsed = list(csv.DictReader(io.StringIO(text.getvalue())))
    assert parsed[0]["true_kwh"] == first["true_kwh"]


def test_devices_answer_on_their_protocols_and_trips_reach_the_supply() -> None:
    wall = [0.0]
    clock = SimClock(START, acceleration=3600, wall=lambda: wall[0])  # an hour per second
    area = TransformerArea(
        [
            HouseholdSpec("a", "000000000011", allow_plaintext_remote_control=True),
            HouseholdSpec("b", "000000000012", protocol="dlt698.45"),
            HouseholdSpec("c", "13", protocol="modbus-rtu", unit_id=13, modbus_model="ddsu666"),
        ],
        START,
        clock=clock,
    )
    devices = area.devices()
    assert all(isinstance(d, Device) for d in devices.values())
    assert {d.protocol for d in devices.values()} == {"dlt645-2007", "dlt698.45", "modbus-rtu"}
    assert devices["c"].device_id == "modbus:13"
    wall[0] = 24.0  # a simulated day later
    reply = devices["a"].respond(
        dlt645.encode_frame(dlt645.read_request("000000000011", 0x00010000))
    )
    assert reply is not None
    energy = dlt645.decode_read_response(dlt645.decode_frame(reply)).values[0].value
    assert energy == area.meters["a"].snapshot().import_kwh() > 0
    assert area.now == START + timedelta(days=1)
    get = dlt698.Frame(
        dlt698.Control.client_request(),
        dlt698.ServerAddress.single("000000000012"),
        0x10,
        dlt698.encode_apdu(dlt698.GetRequestNormal(1, dlt698.OAD(0x0010, 2))),
    )
    assert devices["b"].respond(dlt698.encode_frame(get)) is not None
    read = modbus.build_read_request(13, 3, 16384, 2)
    assert devices["c"].respond(read.raw) is not None
    until = area.meters["a"].local_time() + timedelta(minutes=5)
    trip = dlt645.remote_control_request("000000000011", dlt645.RemoteCommand.TRIP, until)
    assert devices["a"].respond(dlt645.encode_frame(trip)) is not None
    assert area.meters["a"].relay is RelayState.OPEN
    wall[0] = 48.0
    area.advance(clock.now())
    assert area.balance().holds
    assert devices["supply"].device_id == area.supply.address


def test_bad_scenarios_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="protocol"):
        HouseholdSpec("x", "1", protocol="iec62056")
    with pytest.raises(ValueError, match="wired_to"):
        TransformerArea([HouseholdSpec("x", "1", wired_to="nobody")], START)
    with pytest.raises(ValueError, match="unique"):
        TransformerArea([HouseholdSpec("x", "1"), HouseholdSpec("x", "2")], START)
