"""docs/api.md matches the code: its role matrix is the one the route table generates, and
it documents every error code the API answers with."""

from __future__ import annotations

import re
from pathlib import Path

from api_support import ApiWorld

from central.api.routing import role_matrix, route_table

pytest_plugins = ["central_fixtures", "api_fixtures"]

DOC = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text(encoding="utf-8")
SOURCES = Path(__file__).resolve().parent.parent / "central" / "api"


def test_the_role_matrix_in_the_docs_is_the_route_table(world: ApiWorld) -> None:
    documented = DOC.split("<!-- role-matrix:begin -->\n", 1)[1].split("<!-- role-matrix:end -->")[
        0
    ]
    assert documented == role_matrix(world.app), (
        "docs/api.md's role matrix is out of date: paste the output of `central api roles`"
    )
    # and the matrix has a row per route, so the test above is not comparing two empties
    assert documented.count("\n| `") == len(route_table(world.app)) >= 30


def test_every_error_code_is_documented() -> None:
    codes = set()
    for source in SOURCES.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        codes |= set(re.findall(r'code="([a-z_]+)"', text))
        codes |= set(re.findall(r'code = "([a-z_]+)"', text))
        codes |= set(re.findall(r'^\s+"([a-z_]+)",\n\s+f?"', text, flags=re.MULTILINE)) & {
            "payload_too_large",
            "invalid_characters",
        }
    codes |= {"validation_error", "method_not_allowed", "internal_error", "payload_too_large"}
    assert len(codes) >= 15, codes
    table = DOC.split("## Errors", 1)[1].split("## Pagination", 1)[0]
    missing = sorted(code for code in codes if f"`{code}`" not in table)
    assert not missing, f"docs/api.md's error table lacks {missing}"
