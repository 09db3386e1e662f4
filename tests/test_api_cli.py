"""`central user …` and `central api …`: every command has help with an example and a
section in docs/api.md; the first admin is bootstrapped from the command line and can log
in over HTTP; keys issued by the CLI work; mistakes are one line `Error: …`, exit 1 or 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from api_support import CHEAP_HASHER
from click.testing import CliRunner
from fastapi.testclient import TestClient

from central.api import users as user_library
from central.api.app import create_app
from central.api.cli import api, user
from central.cli import cli
from central.settings import Settings

DOC = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text(encoding="utf-8")
PASSWORD = "first admin passphrase"


@pytest.mark.parametrize(
    ("group", "name"),
    [("user", name) for name in sorted(user.commands)]
    + [("api", name) for name in sorted(api.commands)],
)
def test_every_command_has_an_example_and_a_doc_section(group: str, name: str) -> None:
    help_text = CliRunner().invoke(cli, [group, name, "--help"]).output
    assert "Example" in help_text and f"central {group} {name}" in help_text
    assert f"`central {group} {name}`" in DOC, f"docs/api.md has no section for {name}"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setattr(user_library, "_hasher", CHEAP_HASHER)
    return {
        "M2C_DATABASE_URL": f"sqlite:///{tmp_path / 'central.sqlite3'}",
        "M2C_SECRET_KEY": "cli-test-secret-" + "c" * 32,
    }


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env, input=stdin)
    return result.exit_code, result.output


def test_bootstrap_the_first_admin_and_log_in(env: dict[str, str]) -> None:
    code, out = run(
        env, "user", "add", "admin", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert code == 0, out
    assert out.strip() == "created person admin  role admin  enabled  scope: everything"
    code, out = run(
        env,
        "user",
        "add",
        "li.wei",
        "--role",
        "collection_om",
        "--area",
        "TA-01",
        "--password-stdin",
        "--json",
        stdin=PASSWORD + "\n",
    )
    assert code == 0 and json.loads(out)["scope"] == {"gateways": [], "areas": ["TA-01"]}
    code, out = run(env, "user", "add", "batch", "--role", "billing", "--service")
    assert code == 0
    code, out = run(env, "user", "api-key", "batch", "--json")
    key = json.loads(out)["key"]
    code, out = run(env, "user", "list", "--json")
    assert [u["name"] for u in json.loads(out)] == ["admin", "batch", "li.wei"]

    settings = Settings.from_env(env)
    client = TestClient(create_app(settings))
    with client:
        token = client.post(
            "/api/v1/auth/token", data={"username": "admin", "password": PASSWORD}
        ).json()
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token['access_token']}"})
        assert me.json()["role"] == "admin"
        assert client.get("/api/v1/me", headers={"X-API-Key": key}).json()["name"] == "batch"
        audit = client.get(
            "/api/v1/audit",
            params={"action": "user.create"},
            headers={"Authorization": f"Bearer {token['access_token']}"},
        ).json()
        assert {row["object_id"] for row in audit["items"]} == {"admin", "li.wei", "batch"}
        assert all(row["actor"].startswith("cli:") for row in audit["items"])

        code, out = run(env, "user", "disable", "li.wei")
        assert code == 0 and out.strip() == "disabled li.wei"
        refused = client.post(
            "/api/v1/auth/token", data={"username": "li.wei", "password": PASSWORD}
        )
        assert refused.json()["error"]["code"] == "user_disabled"
        code, out = run(env, "user", "enable", "li.wei")
        assert code == 0
        assert (
            client.post(
                "/api/v1/auth/token", data={"username": "li.wei", "password": PASSWORD}
            ).status_code
            == 200
        )


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ["user", "add", "Bad Name", "--role", "admin", "--password-stdin"],
            "x" * 20,
            "is not valid",
        ),
        (["user", "add", "short", "--role", "admin", "--password-stdin"], "short", "too short"),
        (["user", "disable", "nobody"], None, "user nobody not found"),
        (["user", "api-key", "nobody"], None, "user nobody not found"),
    ],
)
def test_mistakes_are_one_line(
    env: dict[str, str], args: list[str], stdin: str | None, message: str
) -> None:
    code, out = run(env, *args, stdin=stdin)
    assert code == 1
    assert out.startswith("Error: ") and message in out and len(out.strip().splitlines()) == 1


def test_a_person_gets_no_key_and_a_name_is_taken_once(env: dict[str, str]) -> None:
    run(env, "user", "add", "ops", "--role", "read_only", "--password-stdin", stdin=PASSWORD)
    code, out = run(env, "user", "api-key", "ops")
    assert code == 1 and "API keys are for service accounts" in out
    code, out = run(env, "user", "add", "ops", "--role", "read_only", "--service")
    assert code == 1 and "already exists" in out
    code, out = run(env, "user", "add", "x", "--role", "root", "--service")
    assert code == 2 and "'root' is not one of" in out


def test_api_roles_prints_the_matrix(env: dict[str, str]) -> None:
    code, out = run(env, "api", "roles")
    assert code == 0 and out.startswith("| route | collection_om |")
    code, out = run(env, "api", "roles", "--json")
    routes = json.loads(out)
    assert {
        "method": "POST",
        "path": "/api/v1/commands",
        "roles": ["collection_om", "supervisor"],
        "action": "command.issue",
    } in routes
