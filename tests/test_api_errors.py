"""One error shape everywhere, pagination caps and cursors, the body size limit, request
ids, login (token, throttle) and API keys — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import anyio.to_thread
import httpx
import pytest
from api_support import ENERGY, HOURS, PASSWORD, T0, VOLTAGE, ApiWorld, energy_at

from central.api.routes.meters import SERIES_MAX_LIMIT
from central.api.routing import MAX_LIMIT
from central.api.users import MAX_FAILED_LOGINS

pytest_plugins = ["central_fixtures", "api_fixtures"]

M1 = "000000000001"
LISTS = [
    "/api/v1/gateways",
    "/api/v1/meters",
    f"/api/v1/meters/{M1}/events",
    "/api/v1/readings",
    "/api/v1/commands",
    "/api/v1/users",
    "/api/v1/audit",
]


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "detail"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert response.headers["x-request-id"]
    return body["error"]  # type: ignore[no-any-return]


# -- the error shape -----------------------------------------------------------------------


def test_404_unknown_route_and_unknown_object(world: ApiWorld) -> None:
    assert_error(world.request("GET", "/api/v1/nowhere", "admin"), 404, "not_found")
    assert_error(world.request("GET", "/nowhere", None), 404, "not_found")
    error = assert_error(world.request("GET", "/api/v1/gateways/gw-zz", "admin"), 404, "not_found")
    assert "gw-zz" in error["message"]


def test_405(world: ApiWorld) -> None:
    error = assert_error(
        world.request("DELETE", "/api/v1/meters", "admin"), 405, "method_not_allowed"
    )
    assert "GET" in error["message"]


def test_422_names_the_field(world: ApiWorld) -> None:
    error = assert_error(
        world.request("GET", f"/api/v1/meters/{M1}/series", "admin", params={"obis": ENERGY}),
        422,
        "validation_error",
    )
    assert {tuple(item["loc"]) for item in error["detail"]} == {
        ("query", "start"),
        ("query", "end"),
    }
    naive = {"obis": ENERGY, "start": "2026-11-01T00:00:00", "end": "2026-11-02T00:00:00"}
    error = assert_error(
        world.request("GET", f"/api/v1/meters/{M1}/series", "admin", params=naive),
        422,
        "validation_error",
    )
    assert ["query", "start"] in [item["loc"] for item in error["detail"]]
    backwards = {"obis": ENERGY, "start": "2026-11-02T00:00:00Z", "end": "2026-11-01T00:00:00Z"}
    assert_error(
        world.request("GET", f"/api/v1/meters/{M1}/series", "admin", params=backwards),
        422,
        "invalid",
    )
    assert_error(
        world.request("POST", "/api/v1/users", "admin", content=b"{not json"),
        422,
        "validation_error",
    )


def test_times_and_days_out_of_range_are_422_not_500(world: ApiWorld) -> None:
    """Found by the long schemathesis run: year 1 made the reading-day arithmetic overflow."""
    for day in ("0001-01-01", "9999-12-31"):
        assert_error(
            world.request("GET", "/api/v1/ops/figures", "admin", params={"day": day}),
            422,
            "validation_error",
        )
    ancient = {"obis": ENERGY, "start": "0001-01-01T00:00:00+08:00", "end": T0.isoformat()}
    assert_error(
        world.request("GET", f"/api/v1/meters/{M1}/series", "admin", params=ancient),
        422,
        "validation_error",
    )


def test_422_does_not_echo_a_password(world: ApiWorld) -> None:
    response = world.request(
        "POST",
        "/api/v1/users",
        "admin",
        json={"name": "Bad Name!", "role": "admin", "password": "s3cret-but-long"},
    )
    assert_error(response, 422, "validation_error")
    assert "s3cret" not in response.text


def test_nul_characters_are_refused_not_crashed_on(world: ApiWorld) -> None:
    """Found by the schemathesis run: PostgreSQL cannot hold NUL in text (it was a 500)."""
    assert_error(world.request("GET", "/api/v1/users/%00", "admin"), 422, "invalid_characters")
    assert_error(
        world.request("GET", "/api/v1/meters", "admin", params={"gateway": "\x00"}),
        422,
        "invalid_characters",
    )
    response = world.request(
        "POST",
        "/api/v1/commands",
        "collection_om",
        json={"kind": "read_now", "gateway": "gw-a", "meter": "\u0000"},
    )
    assert_error(response, 422, "invalid")


def test_401_and_403(world: ApiWorld) -> None:
    assert_error(world.request("GET", "/api/v1/me", None), 401, "not_authenticated")
    assert world.request("GET", "/api/v1/me", None).headers["www-authenticate"] == "Bearer"
    bad = {"Authorization": "Bearer not-a-jwt"}
    assert_error(world.client.get("/api/v1/me", headers=bad), 401, "invalid_token")
    assert_error(
        world.client.get("/api/v1/me", headers={"X-API-Key": "m2c_nope_nope"}),
        401,
        "invalid_api_key",
    )
    error = assert_error(world.request("GET", "/api/v1/users", "billing"), 403, "forbidden")
    assert error["detail"] == {"role": "billing", "allowed": ["admin"]}


def test_a_token_signed_with_another_key_is_refused(world: ApiWorld) -> None:
    from central.api.tokens import issue_token

    forged, _ = issue_token(1, "admin", "another-secret-" + "x" * 32, timedelta(minutes=5))
    response = world.client.get("/api/v1/me", headers={"Authorization": f"Bearer {forged}"})
    assert_error(response, 401, "invalid_token")


# -- body size -----------------------------------------------------------------------------


def test_413_declared_length(world: ApiWorld) -> None:
    limit = world.app.state.api.config.max_body_bytes
    body = b'{"name": "' + b"x" * limit + b'"}'
    error = assert_error(
        world.request("POST", "/api/v1/users", "admin", content=body), 413, "payload_too_large"
    )
    assert error["detail"] == {"max_bytes": limit}


def test_413_chunked_body_without_length(world: ApiWorld) -> None:
    limit = world.app.state.api.config.max_body_bytes

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    response = world.request("POST", "/api/v1/users", "admin", content=chunks())
    assert_error(response, 413, "payload_too_large")


def test_a_body_under_the_limit_passes(world: ApiWorld) -> None:
    name = world.unique("big-")
    padding = "p" * 900_000  # well under 1 MiB, refused by the model, not by the limit
    response = world.request(
        "POST",
        "/api/v1/users",
        "admin",
        json={"name": name, "role": "read_only", "password": PASSWORD, "pad": padding},
    )
    assert_error(response, 422, "validation_error")


# -- pagination ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", LISTS)
def test_limit_is_capped(world: ApiWorld, path: str) -> None:
    assert world.request("GET", path, "admin", params={"limit": MAX_LIMIT}).status_code == 200
    error = assert_error(
        world.request("GET", path, "admin", params={"limit": MAX_LIMIT + 1}),
        422,
        "validation_error",
    )
    assert error["detail"][0]["loc"] == ["query", "limit"]
    assert_error(world.request("GET", path, "admin", params={"limit": 0}), 422, "validation_error")


def test_series_page_is_capped(world: ApiWorld) -> None:
    params = {"obis": ENERGY, "start": T0.isoformat(), "end": (T0 + timedelta(days=2)).isoformat()}
    path = f"/api/v1/meters/{M1}/series"
    assert_error(
        world.request("GET", path, "admin", params={**params, "limit": SERIES_MAX_LIMIT + 1}),
        422,
        "validation_error",
    )


@pytest.mark.parametrize("path", LISTS)
def test_a_forged_cursor_is_a_clear_422(world: ApiWorld, path: str) -> None:
    for cursor in ("garbage!", "WzEsMiwzLDRd", "W10"):
        error = assert_error(
            world.request("GET", path, "admin", params={"after": cursor}), 422, "invalid_cursor"
        )
        assert "next" in error["message"]


def walk(world: ApiWorld, path: str, params: dict[str, Any], limit: int) -> list[Any]:
    seen: list[Any] = []
    cursor = None
    for _ in range(10_000):
        query = {**params, "limit": limit, **({"after": cursor} if cursor else {})}
        body = world.request("GET", path, "admin", params=query).json()
        assert len(body["items"]) <= limit
        seen += body["items"]
        cursor = body["next"]
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end")


def test_pages_cover_a_list_exactly_once(world: ApiWorld) -> None:
    meters = walk(world, "/api/v1/meters", {}, 1)
    assert [m["meter"] for m in meters] == ["000000000001", "000000000002", "000000000003"]
    readings = walk(world, "/api/v1/readings", {"meter": M1}, 7)
    keys = [(r["obis"], r["ts"]) for r in readings]
    assert len(keys) == len(set(keys)) == HOURS + 1  # 48 hourly energy values + 1 voltage
    events = walk(world, f"/api/v1/meters/{M1}/events", {}, 2)
    assert len(events) == 3
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)


def test_series_values_are_exact_and_paged(world: ApiWorld) -> None:
    params = {"obis": ENERGY, "start": T0.isoformat(), "end": (T0 + timedelta(days=2)).isoformat()}
    points = walk(world, f"/api/v1/meters/{M1}/series", params, 10)
    assert len(points) == HOURS
    # decimals travel as strings: 1000 + 0.25 kWh an hour for meter 1, hour 7 = 1001.75
    assert points[7]["value"] == "1001.75"
    assert [Decimal(p["value"]) for p in points] == [energy_at(M1, h) for h in range(HOURS)]
    body = world.request("GET", f"/api/v1/meters/{M1}/series", "admin", params=params).json()
    assert body["unit"] == "kWh" and body["next"] is None and len(body["items"]) == HOURS


def test_latest_values(world: ApiWorld) -> None:
    body = world.request("GET", f"/api/v1/meters/{M1}/latest", "fee_collection").json()
    latest = {v["obis"]: v for v in body["values"]}
    assert set(latest) == {ENERGY, VOLTAGE}
    assert Decimal(latest[ENERGY]["value"]) == energy_at(M1, HOURS - 1)  # 1011.75
    assert latest[VOLTAGE]["value"] == "229.5"


# -- request ids ---------------------------------------------------------------------------


def test_request_id_is_echoed_or_made(world: ApiWorld) -> None:
    mine = world.request("GET", "/healthz", None, headers={"X-Request-ID": "trace-42"})
    assert mine.headers["x-request-id"] == "trace-42"
    made = world.request("GET", "/healthz", None, headers={"X-Request-ID": "bad id\x7f"})
    assert made.headers["x-request-id"] != "bad id\x7f" and len(made.headers["x-request-id"]) == 32


# -- login and API keys --------------------------------------------------------------------


def login(world: ApiWorld, name: str, password: str) -> Any:
    return world.client.post("/api/v1/auth/token", data={"username": name, "password": password})


def test_login_gives_a_working_short_lived_token(world: ApiWorld) -> None:
    response = login(world, "billing", PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 15 * 60
    me = world.client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json()["role"] == "billing"
    assert_error(login(world, "billing", "wrong password!"), 401, "invalid_credentials")
    assert_error(login(world, "nobody-at-all", PASSWORD), 401, "invalid_credentials")
    assert_error(login(world, "disabled", PASSWORD), 401, "user_disabled")


def test_repeated_wrong_passwords_lock_the_user(world: ApiWorld) -> None:
    name = world.unique("locked-")
    created = world.request(
        "POST",
        "/api/v1/users",
        "admin",
        json={"name": name, "role": "read_only", "password": PASSWORD},
    )
    assert created.status_code == 201
    for _ in range(MAX_FAILED_LOGINS - 1):
        assert_error(login(world, name, "not the password"), 401, "invalid_credentials")
    locked = login(world, name, "not the password")
    assert_error(locked, 429, "too_many_requests")
    assert int(locked.headers["retry-after"]) > 0
    # locked even with the right password, until an admin re-enables it
    assert_error(login(world, name, PASSWORD), 429, "too_many_requests")
    world.request("PATCH", f"/api/v1/users/{name}", "admin", json={"disabled": False})
    assert login(world, name, PASSWORD).status_code == 200
    rows = world.request(
        "GET", "/api/v1/audit", "admin", params={"action": "auth.login", "object_id": name}
    ).json()["items"]
    assert [r["outcome"] for r in rows][:3] == ["ok", "denied", "denied"]


def test_service_account_key_lifecycle(world: ApiWorld) -> None:
    name = world.unique("batch-")
    created = world.request(
        "POST",
        "/api/v1/users",
        "admin",
        json={"name": name, "role": "fee_collection", "kind": "service"},
    )
    assert created.status_code == 201, created.text
    issued = world.request("POST", f"/api/v1/users/{name}/api-keys", "admin")
    assert issued.status_code == 201
    key, key_id = issued.json()["key"], issued.json()["id"]
    me = world.client.get("/api/v1/me", headers={"X-API-Key": key})
    assert me.json() == {
        "name": name,
        "kind": "service",
        "role": "fee_collection",
        "scope": {"gateways": [], "areas": []},
    }
    listed = world.request("GET", f"/api/v1/users/{name}/api-keys", "admin").json()
    assert [k["id"] for k in listed] == [key_id] and "key" not in listed[0]
    assert key not in world.request("GET", "/api/v1/audit", "admin", params={"limit": 500}).text
    revoked = world.request("DELETE", f"/api/v1/users/{name}/api-keys/{key_id}", "admin")
    assert revoked.json()["revoked_at"]
    assert_error(world.client.get("/api/v1/me", headers={"X-API-Key": key}), 401, "invalid_api_key")
    # a person gets no key; a service account has no password
    assert_error(world.request("POST", "/api/v1/users/billing/api-keys", "admin"), 422, "invalid")
    assert_error(login(world, name, PASSWORD), 401, "invalid_credentials")


def test_the_last_admin_cannot_be_removed(world: ApiWorld) -> None:
    users = world.request("GET", "/api/v1/users", "admin", params={"limit": 500}).json()["items"]
    admins = [u["name"] for u in users if u["role"] == "admin" and not u["disabled"]]
    assert admins == ["admin"]
    error = assert_error(
        world.request("PATCH", "/api/v1/users/admin", "admin", json={"role": "read_only"}),
        409,
        "conflict",
    )
    assert "last enabled admin" in error["message"]
    assert world.request("GET", "/api/v1/me", "admin").json()["role"] == "admin"


# -- concurrency -----------------------------------------------------------------------------


def test_many_concurrent_requests_with_few_threads_all_complete(world: ApiWorld) -> None:
    """More requests in flight than pooled connections, and few threads: a request waits
    for a database slot without holding a thread, so nobody starves (before the bound, 50
    clients on 4 threads stalled until the pool's 30 s timeout)."""

    async def main() -> list[int]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 4
        transport = httpx.ASGITransport(app=world.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            params = {
                "obis": ENERGY,
                "start": T0.isoformat(),
                "end": (T0 + timedelta(days=2)).isoformat(),
            }
            calls = [
                client.get(
                    f"/api/v1/meters/{M1}/series",
                    params=params,
                    headers=world.auth("fee_collection"),
                )
                for _ in range(40)
            ]
            responses = await asyncio.wait_for(asyncio.gather(*calls), timeout=20)
        return [response.status_code for response in responses]

    assert asyncio.run(main()) == [200] * 40
