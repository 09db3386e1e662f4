"""Authorization matrix, generated from the route table: every route × every role (and a
service account's API key, anonymous, a disabled user, an expired token) gets exactly
"allowed" (2xx with a valid request), 403 or 401 — on SQLite and PostgreSQL.

The expected answer comes from the roles each route declares (``x-roles``); the request for
each route comes from ``api_support.ROUTE_EXAMPLES``, and a route without an example or without
declared roles fails the test, so no route can be added without joining the matrix.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from api_support import ROLES, ROUTE_EXAMPLES, SECRET, ApiWorld

from central.api.app import create_app, undeclared_routes
from central.api.routing import PUBLIC, RouteEntry, route_table
from central.api.tokens import issue_token
from central.api.users import get_user

pytest_plugins = ["central_fixtures", "api_fixtures"]

#: Principals beyond one user per role: the API-key service account acts as its role.
SERVICE_ACCOUNT_ROLE = "billing"


def api_routes(world: ApiWorld) -> list[RouteEntry]:
    return route_table(world.app)


def make_request(world: ApiWorld, route: RouteEntry, who: str | None) -> Any:
    example = ROUTE_EXAMPLES[(route.method, route.path)](world)
    path = route.path.format(**example.get("path", {}))
    kwargs = {key: example[key] for key in ("params", "json", "data") if key in example}
    return world.request(route.method, path, who, **kwargs)


def test_every_route_declares_roles_and_has_an_example(world: ApiWorld) -> None:
    assert undeclared_routes(world.app) == []
    routes = {(r.method, r.path) for r in api_routes(world)}
    assert routes - set(ROUTE_EXAMPLES) == set(), "add an example request for these routes"
    assert set(ROUTE_EXAMPLES) - routes == set(), "examples for routes that no longer exist"
    for route in api_routes(world):
        assert route.roles, route.path


def test_an_undeclared_route_is_refused_at_start_up(world: ApiWorld) -> None:
    """The start-up check would catch a route added with plain FastAPI."""
    from central.api import app as app_module
    from central.api.routes import gateways

    def sneaky() -> dict[str, str]:
        return {}

    gateways.router.router.add_api_route("/sneaky", sneaky, methods=["GET"])
    try:
        try:
            create_app(world.app.state.api.settings, engine=world.engine)
        except RuntimeError as error:
            assert "/api/v1/gateways/sneaky" in str(error)
        else:
            raise AssertionError("create_app accepted a route without roles")
    finally:
        gateways.router.router.routes.pop()
    assert (
        app_module.undeclared_routes(create_app(world.app.state.api.settings, engine=world.engine))
        == []
    )


def test_matrix_every_route_every_role(world: ApiWorld) -> None:
    with world.engine.connect() as conn:
        disabled_id = get_user(conn, "disabled").id
        billing_id = get_user(conn, "billing").id
    expired, _ = issue_token(
        billing_id,
        "billing",
        SECRET,
        timedelta(minutes=15),
        now=datetime.now(UTC) - timedelta(hours=1),
    )
    world.tokens["expired"] = expired
    assert world.tokens["disabled"]  # a valid token whose user was disabled after issue
    assert disabled_id

    principals: dict[str, str | None] = {role: role for role in ROLES}
    principals |= {"svc": "svc", "anonymous": None, "disabled": "disabled", "expired": "expired"}
    mismatches = []
    checked = 0
    for route in api_routes(world):
        roles = route.roles
        assert roles is not None
        for label, who in principals.items():
            role = SERVICE_ACCOUNT_ROLE if label == "svc" else label
            if roles == PUBLIC:
                expected = "allowed"
            elif label in ("anonymous", "disabled", "expired"):
                expected = "401"
            else:
                expected = "allowed" if role in roles else "403"
            response = make_request(world, route, who)
            got = "allowed" if 200 <= response.status_code < 300 else str(response.status_code)
            checked += 1
            if got != expected:
                mismatches.append(
                    f"{route.method} {route.path} as {label}: expected "
                    f"{expected}, got {response.status_code} {response.text[:200]}"
                )
            elif expected in ("401", "403"):
                error = response.json()["error"]
                assert set(error) == {"code", "message", "detail"}
                if expected == "401":
                    want = {
                        "anonymous": "not_authenticated",
                        "disabled": "user_disabled",
                        "expired": "token_expired",
                    }[label]
                    assert error["code"] == want, (route.path, label, error)
    assert not mismatches, "\n".join(mismatches)
    assert checked == len(api_routes(world)) * len(principals)


def test_role_is_read_at_each_request_not_from_the_token(world: ApiWorld) -> None:
    """Demoting a user takes effect on their very next request with the same token."""
    assert world.request("GET", "/api/v1/users", "supervisor").status_code == 403
    admin_token = world.tokens["admin"]
    assert world.request("GET", "/api/v1/users", "admin").status_code == 200
    response = world.request("PATCH", "/api/v1/users/supervisor", "admin", json={"role": "admin"})
    assert response.status_code == 200, response.text
    assert world.request("GET", "/api/v1/users", "supervisor").status_code == 200
    assert world.tokens["admin"] == admin_token
    restored = world.request(
        "PATCH", "/api/v1/users/supervisor", "admin", json={"role": "supervisor"}
    )
    assert restored.status_code == 200
    assert world.request("GET", "/api/v1/users", "supervisor").status_code == 403
