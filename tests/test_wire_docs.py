"""docs/protocol.md: every example payload decodes, verifies and is the code's example.

When an example changes, regenerate the blocks with ``example_payload(name)`` (the
compressed one with ``sign(EXAMPLES["batch"], EXAMPLE_GATEWAY_KEY, "gw-0001")``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared_protocol.wire import (
    CENTRAL_STATE,
    INGEST_SUBSCRIPTION,
    MESSAGE_TYPES,
    decode,
    gateway_filter,
    verify,
)
from shared_protocol.wire.examples import (
    EXAMPLE_CENTRAL_KEY,
    EXAMPLE_GATEWAY_KEY,
    EXAMPLES,
    example_payload,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
BLOCK = re.compile(r"<!-- (example|example-compressed): (\w+) -->\n```json\n(.*?)\n```", re.S)


def blocks() -> list[tuple[str, str, str]]:
    return [(m.group(1), m.group(2), m.group(3)) for m in BLOCK.finditer(DOC.read_text())]


def keys(key_id: str) -> object:
    return (EXAMPLE_CENTRAL_KEY if key_id == "central" else EXAMPLE_GATEWAY_KEY).public_key()


def test_every_message_type_has_an_example_in_the_doc() -> None:
    shown = {name for kind, name, _ in blocks() if kind == "example"}
    assert shown == set(MESSAGE_TYPES) == set(EXAMPLES)


@pytest.mark.parametrize(("kind", "name", "text"), blocks())
def test_doc_examples_decode_and_verify(kind: str, name: str, text: str) -> None:
    payload = text.encode("utf-8")
    assert decode(payload) == EXAMPLES[name]
    if '"sig"' in text:
        assert verify(payload, keys) == EXAMPLES[name]  # type: ignore[arg-type]
    if kind == "example":
        assert text == example_payload(name), "regenerate the block from examples.py"


def test_doc_names_the_fixed_topics() -> None:
    text = DOC.read_text()
    for topic in (
        CENTRAL_STATE,
        INGEST_SUBSCRIPTION,
        "m2c/v1/gw/{gw}/batch",
        "m2c/v1/gw/{gw}/cmd/result",
    ):
        assert topic in text
    assert gateway_filter("birth") in text
