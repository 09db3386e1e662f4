"""Object-level access (OWASP API1/API3): a scoped user never reads or acts on another
scope's gateway or meter — by path, by query, or by an id in a JSON body — and a client can
never set a server-owned field. On SQLite and PostgreSQL.

Scopes (api_support): om-ta1 sees area TA-1 (meter 1, and gw-a which reads it); om-gwb sees
gateway gw-b (meter 3).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from api_support import ENERGY, PASSWORD, T0, ApiWorld
from fastapi.routing import APIRoute

from central.api.access import NOT_OBJECT_REFERENCES, RESOLVERS
from central.api.app import ROUTERS
from central.api.routes.auth import health
from central.api.routing import route_table

pytest_plugins = ["central_fixtures", "api_fixtures"]

M1, M2, M3 = "000000000001", "000000000002", "000000000003"
SERIES = {"obis": ENERGY, "start": T0.isoformat(), "end": (T0 + timedelta(days=2)).isoformat()}


def items(response: object) -> list[dict[str, object]]:
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]
    return response.json()["items"]  # type: ignore[attr-defined,no-any-return]


def assert_not_found(response: object, what: str) -> None:
    assert response.status_code == 404, response.text  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == "not_found"
    assert what in error["message"]


def test_lists_show_only_the_scope(world: ApiWorld) -> None:
    assert [m["meter"] for m in items(world.request("GET", "/api/v1/meters", "om-ta1"))] == [M1]
    assert [m["meter"] for m in items(world.request("GET", "/api/v1/meters", "om-gwb"))] == [M3]
    assert [m["meter"] for m in items(world.request("GET", "/api/v1/meters", "admin"))] == [
        M1,
        M2,
        M3,
    ]
    assert [g["id"] for g in items(world.request("GET", "/api/v1/gateways", "om-ta1"))] == ["gw-a"]
    assert [g["id"] for g in items(world.request("GET", "/api/v1/gateways", "om-gwb"))] == ["gw-b"]
    readings = items(world.request("GET", "/api/v1/readings?limit=500", "om-ta1"))
    assert readings and {r["meter"] for r in readings} == {M1}
    commands = items(world.request("GET", "/api/v1/commands", "om-gwb"))
    assert commands and {c["gateway"] for c in commands} == {"gw-b"}


@pytest.mark.parametrize(
    ("path", "params", "what"),
    [
        (f"/api/v1/meters/{M2}", None, "meter"),
        (f"/api/v1/meters/{M2}/latest", None, "meter"),
        (f"/api/v1/meters/{M2}/series", SERIES, "meter"),
        (f"/api/v1/meters/{M2}/events", None, "meter"),
        (f"/api/v1/meters/{M3}", None, "meter"),
        ("/api/v1/gateways/gw-b", None, "gateway"),
        # ids in the query string
        ("/api/v1/readings", {"meter": M2}, "meter"),
        ("/api/v1/readings", {"gateway": "gw-b"}, "gateway"),
        ("/api/v1/meters", {"gateway": "gw-b"}, "gateway"),
        ("/api/v1/meters", {"area": "TA-2"}, "transformer area"),
        ("/api/v1/commands", {"gateway": "gw-b"}, "gateway"),
        ("/api/v1/commands", {"meter": M3}, "meter"),
    ],
)
def test_reads_outside_the_scope_are_not_found(
    world: ApiWorld, path: str, params: dict[str, str] | None, what: str
) -> None:
    assert_not_found(world.request("GET", path, "om-ta1", params=params), what)
    # the same request inside an unrestricted user's view is fine (the 404 is the scope)
    assert world.request("GET", path, "collection_om", params=params).status_code == 200


def test_a_command_of_another_scope_is_not_found(world: ApiWorld) -> None:
    other = world.commands["gw-b"]
    assert_not_found(world.request("GET", f"/api/v1/commands/{other}", "om-ta1"), "command")
    mine = world.commands["gw-a"]
    assert world.request("GET", f"/api/v1/commands/{mine}", "om-ta1").status_code == 200


def test_an_existing_and_a_missing_meter_look_the_same(world: ApiWorld) -> None:
    """No probing: another area's meter answers exactly like a meter that does not exist."""
    hidden = world.request("GET", f"/api/v1/meters/{M2}", "om-ta1").json()
    missing = world.request("GET", "/api/v1/meters/999999999999", "om-ta1").json()
    assert hidden["error"]["code"] == missing["error"]["code"] == "not_found"
    assert hidden["error"]["message"].replace(M2, "X") == missing["error"]["message"].replace(
        "999999999999", "X"
    )


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "read_now", "gateway": "gw-a", "meter": M2},  # other area's meter, my gateway
        {"kind": "read_now", "gateway": "gw-b", "meter": M3},  # other gateway entirely
        {"kind": "backfill", "gateway": "gw-a", "days": 2, "meters": [M1, M2]},
        {"kind": "backfill", "gateway": "gw-a", "days": 2},  # all of gw-a: not only TA-1
        {"kind": "clock_sync", "gateway": "gw-a", "meters": None},
        {"kind": "clock_sync", "gateway": "gw-b", "meters": [M3]},
    ],
)
def test_commands_outside_the_scope_are_refused_and_audited(
    world: ApiWorld, body: dict[str, object]
) -> None:
    before = len(world.publisher.messages)
    response = world.request("POST", "/api/v1/commands", "om-ta1", json=body)
    assert response.status_code == 404, response.text
    assert len(world.publisher.messages) == before  # nothing left for the gateway
    audit = items(world.request("GET", "/api/v1/audit", "admin", params={"actor": "om-ta1"}))
    assert audit[0]["outcome"] == "denied"
    assert audit[0]["action"] == "command.issue"
    assert audit[0]["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "read_now", "gateway": "gw-a", "meter": M1},
        {"kind": "backfill", "gateway": "gw-a", "days": 2, "meters": [M1]},
        {"kind": "clock_sync", "gateway": "gw-a", "meters": [M1]},
    ],
)
def test_commands_inside_the_scope_go_out(world: ApiWorld, body: dict[str, object]) -> None:
    before = len(world.publisher.messages)
    response = world.request("POST", "/api/v1/commands", "om-ta1", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "sent"
    assert len(world.publisher.messages) == before + 1
    assert world.publisher.messages[-1][0] == "m2c/v1/gw/gw-a/cmd"


def test_a_gateway_scoped_user_may_act_on_the_whole_gateway(world: ApiWorld) -> None:
    response = world.request(
        "POST", "/api/v1/commands", "om-gwb", json={"kind": "clock_sync", "gateway": "gw-b"}
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/users", {"id": 1}),
        ("POST", "/api/v1/users", {"created_at": "2026-01-01T00:00:00Z"}),
        ("POST", "/api/v1/users", {"created_by": "someone-else"}),
        ("POST", "/api/v1/users", {"password_hash": "$argon2id$..."}),
        ("POST", "/api/v1/users", {"failed_logins": 0}),
        ("PATCH", "/api/v1/users/billing", {"kind": "service"}),
        ("PATCH", "/api/v1/users/billing", {"name": "renamed"}),
        ("PATCH", "/api/v1/users/billing", {"updated_at": "2026-01-01T00:00:00Z"}),
        ("POST", "/api/v1/commands", {"status": "succeeded"}),
        ("POST", "/api/v1/commands", {"requested_by": "someone-else"}),
        ("POST", "/api/v1/commands", {"id": "5b0e6c0e-3f7d-4c55-9a53-6a1f0b2f7c11"}),
        ("POST", "/api/v1/commands", {"issued_at": "2026-01-01T00:00:00Z"}),
    ],
)
def test_server_owned_fields_cannot_be_set(
    world: ApiWorld, method: str, path: str, body: dict[str, object]
) -> None:
    valid = {
        "/api/v1/users": {"name": "mass-assign", "role": "read_only", "password": PASSWORD},
        "/api/v1/users/billing": {"role": "billing"},
        "/api/v1/commands": {"kind": "read_now", "gateway": "gw-a", "meter": M1},
    }[path]
    who = "collection_om" if path == "/api/v1/commands" else "admin"
    response = world.request(method, path, who, json={**valid, **body})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    field = next(iter(body))
    assert any(item["loc"][-1] == field for item in error["detail"]), error
    assert any(item["type"] == "extra_forbidden" for item in error["detail"])


def _parameter_names(dependant: Any) -> list[str]:
    names = [p.name for p in dependant.path_params + dependant.query_params]
    for body in dependant.body_params:
        names.append(body.name)
        annotation = body.field_info.annotation
        for model in getattr(annotation, "__args__", (annotation,)):
            names += list(getattr(model, "model_fields", None) or [])
    for sub in dependant.dependencies:
        names += _parameter_names(sub)
    return names


def test_every_parameter_is_checked_or_declared_harmless(world: ApiWorld) -> None:
    """A new route parameter that names an object must be added to the resolvers (and one
    that does not, to NOT_OBJECT_REFERENCES): nothing slips past the one check."""
    routes = [
        route
        for router in (*ROUTERS, health)
        for route in router.router.routes
        if isinstance(route, APIRoute)
    ]
    assert {(next(iter(r.methods)), r.path) for r in routes} == {
        (e.method, e.path) for e in route_table(world.app)
    }
    ignored = {"request", "body", "form", "api", "conn", "user", "audit", "token", "api_key"}
    unknown = [
        f"{next(iter(route.methods))} {route.path}: {name}"
        for route in routes
        for name in _parameter_names(route.dependant)
        if name not in RESOLVERS and name not in NOT_OBJECT_REFERENCES and name not in ignored
    ]
    assert not unknown, unknown
