"""The three teams' daily tasks through the API, on SQLite and PostgreSQL — what
docs/api.md shows with curl:

* reading & billing: the readiness check, VEE exceptions resolved and overridden with a
  reason (and the reading's value replaced);
* collection O&M: the figures and the worklist, a remedy posted as a command in one call;
* fee collection: a meter's latest values and time series (tests/test_api_errors.py).

The answers must equal what the libraries (central.ops, central.vee) give for the same
day: the API adds access, paging and shape, never its own arithmetic.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from api_support import (
    BACKWARDS_HOUR,
    COMMAND_SYNC_S,
    ENERGY,
    READING_DAY,
    T0,
    ApiWorld,
    open_exception,
)

from central.ingest.store import IngestStore
from central.ops import daily_figures, readiness

pytest_plugins = ["central_fixtures", "api_fixtures"]

M1, M2, M3 = "000000000001", "000000000002", "000000000003"


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])


# -- reading & billing -----------------------------------------------------------------------


def test_readiness_names_the_silent_meter_with_remedies(world: ApiWorld) -> None:
    body = ok(
        world.request(
            "GET", "/api/v1/ops/readiness", "billing", params={"reading_day": READING_DAY}
        )
    )
    assert body["ready"] is False
    assert body["meters_checked"] == 3 and body["meters_not_ready"] == 1
    (item,) = body["meters"]
    assert item["meter"] == M3
    assert [p["problem"] for p in item["problems"]] == ["no_daily_reading"]
    assert {r["action"] for r in item["remedies"]} >= {"read_now", "backfill"}
    with world.engine.connect() as conn:
        library = readiness(
            conn, date.fromisoformat(READING_DAY), settings=world.app.state.api.ops_settings
        )
    assert body["problems"] == library["problems"] == {"no_daily_reading": 1}


def test_billing_resolves_an_exception_once(world: ApiWorld) -> None:
    exception_id = open_exception(world, M2)
    path = f"/api/v1/vee/exceptions/{exception_id}/resolve"
    resolved = ok(
        world.request(
            "POST", path, "billing", json={"reason": "meter exchanged on 2 Nov, see work order"}
        )
    )
    assert resolved["status"] == "resolved"
    assert resolved["resolved_by"] == "billing"
    assert resolved["reason"] == "meter exchanged on 2 Nov, see work order"
    again = world.request("POST", path, "supervisor", json={"reason": "second try"})
    assert again.status_code == 409 and error_code(again) == "conflict"
    short = world.request(
        "POST",
        f"/api/v1/vee/exceptions/{open_exception(world, M2)}/resolve",
        "billing",
        json={"reason": ""},
    )
    assert short.status_code == 422


def test_supervisor_overrides_with_a_value(world: ApiWorld) -> None:
    """The reading at the backwards step becomes the corrected value; the exception keeps
    the value before VEE."""
    exception_id = open_exception(world, M3)
    before = ok(world.request("GET", f"/api/v1/vee/exceptions/{exception_id}", "supervisor"))
    body = ok(
        world.request(
            "POST",
            f"/api/v1/vee/exceptions/{exception_id}/override",
            "supervisor",
            json={"reason": "customer's photo of the register", "value": "3022.5"},
        )
    )
    assert body["status"] == "overridden"
    assert body["value_after"] == "3022.5"
    assert body["value_before"] == before["value_before"]
    at = T0 + timedelta(hours=BACKWARDS_HOUR)
    series = ok(
        world.request(
            "GET",
            f"/api/v1/meters/{M3}/series",
            "fee_collection",
            params={
                "obis": ENERGY,
                "start": at.isoformat(),
                "end": (at + timedelta(hours=1)).isoformat(),
            },
        )
    )
    assert [Decimal(p["value"]) for p in series["items"]] == [Decimal("3022.5")]
    bad = world.request(
        "POST",
        f"/api/v1/vee/exceptions/{open_exception(world, M3)}/override",
        "supervisor",
        json={"reason": "too precise", "value": "1.0000001"},
    )
    assert bad.status_code == 422


def test_exceptions_are_scoped_and_closing_needs_the_role(world: ApiWorld) -> None:
    seeded_m3 = world.exceptions[M3]
    listed = ok(world.request("GET", "/api/v1/vee/exceptions", "om-gwb", params={"limit": 500}))[
        "items"
    ]
    assert listed and {row["meter"] for row in listed} == {M3}
    assert ok(world.request("GET", "/api/v1/vee/exceptions", "om-ta1"))["items"] == []
    hidden = world.request("GET", f"/api/v1/vee/exceptions/{seeded_m3}", "om-ta1")
    assert hidden.status_code == 404
    refused = world.request(
        "POST",
        f"/api/v1/vee/exceptions/{seeded_m3}/resolve",
        "om-gwb",
        json={"reason": "not my job"},
    )
    assert refused.status_code == 403
    assert world.request("GET", "/api/v1/vee/exceptions/999999", "admin").status_code == 404


def test_rule_table(world: ApiWorld) -> None:
    rules = ok(world.request("GET", "/api/v1/vee/rules", "read_only"))
    assert [rule["id"] for rule in rules] == [f"V{n}" for n in range(1, 17)]


# -- collection O&M --------------------------------------------------------------------------


def test_figures_equal_the_library(world: ApiWorld) -> None:
    day = date.fromisoformat(READING_DAY)
    for by in ("total", "gateway", "area", "meter"):
        body = ok(
            world.request(
                "GET", "/api/v1/ops/figures", "collection_om", params={"day": READING_DAY, "by": by}
            )
        )
        with world.engine.connect() as conn:
            library = daily_figures(conn, day, by=by, settings=world.app.state.api.ops_settings)
        assert len(body) == len(library)
        for got, want in zip(body, library, strict=True):
            for name in ("coverage", "success", "timeliness", "accuracy"):
                ratio = want[name]["ratio"]
                assert got[name]["ratio"] == (None if ratio is None else str(ratio))
                assert got[name]["numerator"] == want[name]["numerator"]
    total = ok(world.request("GET", "/api/v1/ops/figures", "admin", params={"day": READING_DAY}))
    # 3 meters expect a daily reading; meter 3 has none: success 2/3, cut to 6 places
    assert total[0]["success"]["numerator"] == 2 and total[0]["success"]["denominator"] == 3
    assert total[0]["success"]["ratio"] == "0.666666"


def test_figures_and_worklist_must_be_narrowed_by_a_scoped_user(world: ApiWorld) -> None:
    for path, params in (
        ("/api/v1/ops/figures", {"day": READING_DAY}),
        ("/api/v1/ops/worklist", {"day": READING_DAY}),
        ("/api/v1/ops/readiness", {"reading_day": READING_DAY}),
    ):
        bare = world.request("GET", path, "om-ta1", params=params)
        assert bare.status_code == 422 and error_code(bare) == "scope_required"
        assert "area=TA-1" in bare.json()["error"]["message"]
        # gw-a serves TA-1 but also TA-2: not narrow enough
        wide = world.request("GET", path, "om-ta1", params={**params, "gateway": "gw-a"})
        assert error_code(wide) == "scope_required"
        other = world.request("GET", path, "om-ta1", params={**params, "area": "TA-2"})
        assert other.status_code == 404
        assert (
            world.request("GET", path, "om-ta1", params={**params, "area": "TA-1"}).status_code
            == 200
        )
        assert (
            world.request("GET", path, "om-gwb", params={**params, "gateway": "gw-b"}).status_code
            == 200
        )
    mine = ok(
        world.request(
            "GET",
            "/api/v1/ops/figures",
            "om-ta1",
            params={"day": READING_DAY, "by": "meter", "area": "TA-1"},
        )
    )
    assert [row["meter"] for row in mine] == [M1]


def test_worklist_remedy_is_one_click(world: ApiWorld) -> None:
    """Collection O&M's loop: the worklist names meter 3 (no daily reading) with remedies
    whose command is the body of POST /commands, as is."""
    worklist = ok(
        world.request(
            "GET",
            "/api/v1/ops/worklist",
            "collection_om",
            params={"day": READING_DAY, "gateway": "gw-b"},
        )
    )["items"]
    (item,) = worklist
    assert item["meter"] == M3 and "missing" in item["problems"]
    remedy = next(r for r in item["remedies"] if r["action"] == "read_now")
    assert remedy["command"] == {"kind": "read_now", "gateway": "gw-b", "meter": M3, "what": ENERGY}
    before = len(world.publisher.messages)
    command = ok(
        world.request("POST", "/api/v1/commands", "collection_om", json=remedy["command"]), 201
    )
    assert command["status"] == "sent" and command["requested_by"] == "api:collection_om"
    assert len(world.publisher.messages) == before + 1
    followed = ok(world.request("GET", f"/api/v1/commands/{command['id']}", "read_only"))
    assert followed["id"] == command["id"]


def test_worklist_pages(world: ApiWorld) -> None:
    seen = []
    cursor = None
    while True:
        params = {"day": READING_DAY, "limit": 1, **({"after": cursor} if cursor else {})}
        page = ok(world.request("GET", "/api/v1/ops/worklist", "admin", params=params))
        seen += [item["meter"] for item in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [M1, M2, M3]  # 1 and 2 arrived after the deadline, 3 not at all


def test_gateway_health(world: ApiWorld) -> None:
    health = ok(world.request("GET", "/api/v1/gateways/gw-a/health", "read_only"))
    assert health["status"] == "online" and health["meters_in_archive"] == 2
    assert health["clock_offset_s"] == "0.5"
    assert world.request("GET", "/api/v1/gateways/gw-b/health", "om-ta1").status_code == 404
    assert world.request("GET", "/api/v1/gateways/nope/health", "admin").status_code == 404


def test_a_gateways_result_reaches_the_command(world: ApiWorld) -> None:
    """The app folds command results in the background: the gateway's answer (a
    ``command_result`` event stored by ingestion) shows on GET /commands/{id}."""
    command = ok(
        world.request(
            "POST",
            "/api/v1/commands",
            "collection_om",
            json={"kind": "clock_sync", "gateway": "gw-b"},
        ),
        201,
    )
    IngestStore(world.engine).record_gateway_event(
        "gw-b",
        "command_result",
        {"id": command["id"], "status": "ok", "detail": {"set": 1}},
        at=datetime.now(UTC),
    )
    deadline = time.monotonic() + 10
    while True:
        body = ok(world.request("GET", f"/api/v1/commands/{command['id']}", "read_only"))
        if body["status"] != "sent" or time.monotonic() > deadline:
            break
        time.sleep(COMMAND_SYNC_S)
    assert body["status"] == "succeeded"
    assert body["result_detail"] == {"set": 1}
