"""Every write through the API leaves exactly one audit row — who, when, route, object,
before/after, request id — written in the write's own transaction; a refused write leaves
one ``denied`` row. On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from api_support import ROUTE_EXAMPLES, ApiWorld
from sqlalchemy import func, select

from central import audit
from central.api.routing import route_table
from central.db.auth_tables import audit_log

pytest_plugins = ["central_fixtures", "api_fixtures"]

#: Who makes each write: the first of these the route allows (None: a public route).
WRITERS = ("admin", "supervisor", "collection_om", "billing")


def writer(entry: Any) -> str | None:
    if entry.roles == {"public"}:
        return None
    return next(role for role in WRITERS if role in entry.roles)


def audit_rows(world: ApiWorld) -> int:
    with world.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_log)).scalar_one())


def newest(world: ApiWorld) -> audit.AuditEntry:
    with world.engine.connect() as conn:
        return audit.list_entries(conn, limit=1)[0]


def write_routes(world: ApiWorld) -> list[Any]:
    return [entry for entry in route_table(world.app) if entry.method != "GET"]


def test_every_write_route_declares_an_action(world: ApiWorld) -> None:
    writes = write_routes(world)
    assert len(writes) >= 6
    assert [f"{e.method} {e.path}" for e in writes if not e.action] == []
    assert [
        f"{e.method} {e.path}" for e in route_table(world.app) if e.method == "GET" and e.action
    ] == []


def test_each_write_leaves_exactly_one_row(world: ApiWorld) -> None:
    for entry in write_routes(world):
        example = ROUTE_EXAMPLES[(entry.method, entry.path)](world)
        path = entry.path.format(**example.get("path", {}))
        who = writer(entry)
        before = audit_rows(world)
        response = world.request(
            entry.method,
            path,
            who,
            **{key: example[key] for key in ("params", "json", "data") if key in example},
        )
        assert 200 <= response.status_code < 300, (entry.path, response.text)
        assert audit_rows(world) == before + 1, f"{entry.method} {entry.path}"
        row = newest(world)
        assert row.action == entry.action
        assert row.outcome == "ok"
        assert row.request_id == response.headers["x-request-id"]
        assert row.route == entry.path
        assert row.method == entry.method
        if who is not None:
            assert row.actor == who
        assert row.at is not None and row.at.utcoffset() is not None


def test_before_and_after_describe_the_change(world: ApiWorld) -> None:
    name = world.unique("audited-")
    world.request(
        "POST",
        "/api/v1/users",
        "admin",
        json={"name": name, "role": "read_only", "password": "correct horse battery staple"},
    )
    created = newest(world)
    assert created.object_type == "user" and created.object_id == name
    assert created.before is None
    assert created.after == {
        "name": name,
        "kind": "person",
        "role": "read_only",
        "disabled": False,
        "scope": {"gateways": [], "areas": []},
    }
    world.request(
        "PATCH",
        f"/api/v1/users/{name}",
        "admin",
        json={"role": "billing", "areas": ["TA-2"], "password": "another long passphrase"},
    )
    changed = newest(world)
    assert changed.before is not None and changed.after is not None
    assert changed.before["role"] == "read_only" and changed.after["role"] == "billing"
    assert changed.after["scope"] == {"gateways": [], "areas": ["TA-2"]}
    assert changed.after["password"] == "changed"
    assert "another long passphrase" not in str(changed.after)


def test_a_refused_write_leaves_one_denied_row(world: ApiWorld) -> None:
    before = audit_rows(world)
    response = world.request(
        "POST",
        "/api/v1/users",
        "billing",
        json={"name": world.unique("x-"), "role": "admin", "password": "p" * 20},
    )
    assert response.status_code == 403
    assert audit_rows(world) == before + 1
    row = newest(world)
    assert (row.actor, row.outcome, row.action) == ("billing", "denied", "user.create")
    assert row.after is not None and row.after["status"] == 403
    # reads are not audited, refused or not
    world.request("GET", "/api/v1/users", "billing")
    world.request("GET", "/api/v1/meters", "billing")
    assert audit_rows(world) == before + 1


def test_a_failed_write_leaves_no_ok_row(world: ApiWorld) -> None:
    """The row is in the write's transaction: a write that fails leaves neither."""
    before = audit_rows(world)
    response = world.request("PATCH", "/api/v1/users/admin", "admin", json={"role": "billing"})
    assert response.status_code == 409
    assert audit_rows(world) == before
    assert world.request("GET", "/api/v1/me", "admin").json()["role"] == "admin"


def test_audit_rows_page_and_filter(world: ApiWorld) -> None:
    rows = world.request("GET", "/api/v1/audit", "supervisor", params={"limit": 2}).json()
    assert len(rows["items"]) == 2 and rows["next"]
    following = world.request(
        "GET", "/api/v1/audit", "supervisor", params={"limit": 2, "after": rows["next"]}
    ).json()
    assert following["items"][0]["id"] < rows["items"][-1]["id"]
    only = world.request(
        "GET", "/api/v1/audit", "admin", params={"action": "user.create", "limit": 500}
    ).json()["items"]
    assert only and {r["action"] for r in only} == {"user.create"}
