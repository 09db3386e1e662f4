"""The topic tree: exactly the fixed names, and no gateway id that could widen a topic."""

from __future__ import annotations

import pytest

from shared_protocol.errors import LocalProtocolError, MalformedFrameError
from shared_protocol.wire import (
    CENTRAL_STATE,
    INGEST_SUBSCRIPTION,
    QOS,
    RETAINED,
    Topic,
    ack_topic,
    batch_topic,
    birth_topic,
    cmd_result_topic,
    cmd_topic,
    death_topic,
    gateway_filter,
    parse_topic,
    topic_for,
)

TREE = [
    (batch_topic, "m2c/v1/gw/gw-0001/batch", "batch"),
    (ack_topic, "m2c/v1/gw/gw-0001/ack", "ack"),
    (birth_topic, "m2c/v1/gw/gw-0001/birth", "birth"),
    (death_topic, "m2c/v1/gw/gw-0001/death", "death"),
    (cmd_topic, "m2c/v1/gw/gw-0001/cmd", "cmd"),
    (cmd_result_topic, "m2c/v1/gw/gw-0001/cmd/result", "cmd_result"),
]


@pytest.mark.parametrize(("make", "text", "kind"), TREE)
def test_the_fixed_tree(make: object, text: str, kind: str) -> None:
    assert make("gw-0001") == text  # type: ignore[operator]
    assert topic_for(kind, "gw-0001") == text
    assert parse_topic(text) == Topic(kind, "gw-0001")  # type: ignore[arg-type]
    assert parse_topic(text).text == text


def test_central_and_shared_subscription() -> None:
    assert CENTRAL_STATE == "m2c/v1/central/state"
    assert parse_topic(CENTRAL_STATE) == Topic("central_state", None)
    assert INGEST_SUBSCRIPTION == "$share/ingest/m2c/v1/gw/+/batch"
    assert gateway_filter("birth") == "m2c/v1/gw/+/birth"
    assert QOS == 1
    assert {"birth", "death", "central_state"} == RETAINED
    assert parse_topic(birth_topic("a")).retained and not parse_topic(ack_topic("a")).retained


@pytest.mark.parametrize(
    "gateway",
    [
        "",
        "+",
        "#",
        "gw/1",
        "gw+",
        "GW-1",
        "-gw",
        "gw 1",
        "gw_1",
        "a" * 64,
        "central",
        "gé",
        None,
        7,
    ],
)
def test_bad_gateway_ids_are_refused(gateway: object) -> None:
    with pytest.raises(LocalProtocolError):
        batch_topic(gateway)  # type: ignore[arg-type]


def test_longest_gateway_id() -> None:
    assert batch_topic("a" * 63).count("/") == 4


@pytest.mark.parametrize(
    "topic",
    [
        "m2c/v2/gw/gw-1/batch",
        "m2c/v1/gw/gw-1/bat",
        "m2c/v1/gw/gw-1",
        "m2c/v1/gw/+/batch",
        "m2c/v1/gw/GW/batch",
        "m2c/v1/gw/gw-1/cmd/result/x",
        "m2c/v1/central/state/x",
        "",
    ],
)
def test_topics_outside_the_tree_are_refused(topic: str) -> None:
    with pytest.raises(MalformedFrameError):
        parse_topic(topic)


def test_unknown_kinds_are_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        topic_for("telemetry", "gw-1")
    with pytest.raises(LocalProtocolError):
        topic_for("central_state", "gw-1")
    with pytest.raises(LocalProtocolError):
        gateway_filter("central_state")
