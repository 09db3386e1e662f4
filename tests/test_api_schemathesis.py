"""Property-based requests generated from our own OpenAPI document (schemathesis 4): every
operation, with a token of a role it allows (admin where admin is allowed), gets requests
schemathesis derives from the schema; none may answer 5xx, every answer must match the
documented status codes, content type and response schema, and every error must have the
one error shape. On SQLite and PostgreSQL.

The default run is sized for the suite (a few examples an operation); the slow run
(`pytest -m slow tests/test_api_schemathesis.py`) makes a hundred an operation.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from api_support import ApiWorld
from hypothesis import HealthCheck, given, settings

pytest_plugins = ["central_fixtures", "api_fixtures"]

#: When admin may not use a route, the first of these that may.
ROLE_PREFERENCE = ("admin", "supervisor", "collection_om", "billing", "fee_collection")


#: Requests the schema allows may still be refused by the domain with a documented 422: an
#: opaque pagination cursor, `end` before `start`, a user name already taken. schemathesis's
#: "schema-valid data must be accepted" check cannot know those rules.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


def principal(operation: Any) -> str | None:
    roles = operation.definition.raw.get("x-roles")
    assert roles, f"{operation.method} {operation.path} declares no roles"
    if roles == ["public"]:
        return None
    return next(role for role in ROLE_PREFERENCE if role in roles)


def check_operation(world: ApiWorld, operation: Any, examples: int) -> int:
    """Run ``examples`` generated requests against one operation; how many were made."""
    headers = world.auth(principal(operation))
    calls = 0

    @given(case=operation.as_strategy())
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        nonlocal calls
        response = case.call_and_validate(headers=headers, excluded_checks=EXCLUDED)
        calls += 1
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"}, body
            assert set(body["error"]) == {"code", "message", "detail"}, body

    run()
    return calls


def fuzz(world: ApiWorld, examples: int) -> int:
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", world.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    return sum(check_operation(world, operation, examples) for operation in operations)


def test_generated_requests_never_fail_the_server(world: ApiWorld) -> None:
    assert fuzz(world, examples=5) > 100


@pytest.mark.slow
def test_generated_requests_never_fail_the_server_long(world: ApiWorld) -> None:
    assert fuzz(world, examples=100) > 1000
