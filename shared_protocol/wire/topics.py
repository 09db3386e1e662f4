"""The MQTT topic tree of the edge→central contract, as functions and constants.

::

    m2c/v1/gw/{gw}/batch        edge → central   QoS 1            signed, compressed record batch
    m2c/v1/gw/{gw}/ack          central → edge   QoS 1            ack (high-water seq) or nack
    m2c/v1/gw/{gw}/birth        edge → central   QoS 1 retained   after every connect / rebirth
    m2c/v1/gw/{gw}/death        edge (MQTT will) QoS 1 retained
    m2c/v1/gw/{gw}/cmd          central → edge   QoS 1            signed command
    m2c/v1/gw/{gw}/cmd/result   edge → central   QoS 1            command result
    m2c/v1/central/state        central → all    QoS 1 retained   online/offline (will = offline)

Ingest consumers share the batch stream: ``$share/ingest/m2c/v1/gw/+/batch``.

The gateway id is a topic level, so every helper refuses an id that could widen a
subscription or climb the tree (``+``, ``#``, ``/``) with :class:`LocalProtocolError`;
:func:`parse_topic` turns a received topic back into (kind, gateway) and refuses anything
outside the tree with :class:`MalformedFrameError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from shared_protocol.errors import LocalProtocolError, MalformedFrameError
from shared_protocol.wire._values import check_gateway_id

__all__ = [
    "CENTRAL_STATE",
    "INGEST_SHARE_GROUP",
    "INGEST_SUBSCRIPTION",
    "PREFIX",
    "QOS",
    "RETAINED",
    "TOPIC_KINDS",
    "Topic",
    "TopicKind",
    "ack_topic",
    "batch_topic",
    "birth_topic",
    "cmd_result_topic",
    "cmd_topic",
    "death_topic",
    "gateway_filter",
    "parse_topic",
    "topic_for",
]

PREFIX: Final = "m2c/v1"
CENTRAL_STATE: Final = f"{PREFIX}/central/state"
INGEST_SHARE_GROUP: Final = "ingest"
#: MQTT 5 shared subscription: the broker gives each batch to one consumer of the group.
INGEST_SUBSCRIPTION: Final = f"$share/{INGEST_SHARE_GROUP}/{PREFIX}/gw/+/batch"

TopicKind = Literal["batch", "ack", "birth", "death", "cmd", "cmd_result", "central_state"]
#: Topic kind → the path below ``m2c/v1/gw/{gw}/``.
_GATEWAY_SUFFIX: Final[dict[str, str]] = {
    "batch": "batch",
    "ack": "ack",
    "birth": "birth",
    "death": "death",
    "cmd": "cmd",
    "cmd_result": "cmd/result",
}
_KIND_OF_SUFFIX: Final = {suffix: kind for kind, suffix in _GATEWAY_SUFFIX.items()}
TOPIC_KINDS: Final = frozenset(_GATEWAY_SUFFIX) | {"central_state"}

#: Every topic is QoS 1: duplicates are harmless (idempotent storage, command ids), loss is
#: not. Correctness rests on the application ack, never on PUBACK (reliability.md B.2).
QOS: Final = 1
#: Retained topics hold *state* a late subscriber must see at once.
RETAINED: Final = frozenset({"birth", "death", "central_state"})


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: what kind of message it carries and for which gateway."""

    kind: TopicKind
    gateway: str | None  # None only for central_state

    @property
    def text(self) -> str:
        if self.kind == "central_state":
            return CENTRAL_STATE
        assert self.gateway is not None
        return f"{PREFIX}/gw/{check_gateway_id(self.gateway)}/{_GATEWAY_SUFFIX[self.kind]}"

    @property
    def retained(self) -> bool:
        return self.kind in RETAINED


def topic_for(kind: str, gateway: str | None = None) -> str:
    """The topic of ``kind`` for ``gateway`` (no gateway for ``central_state``)."""
    if kind == "central_state":
        if gateway is not None:
            raise LocalProtocolError("central_state is one topic for all gateways")
        return CENTRAL_STATE
    if kind not in _GATEWAY_SUFFIX:
        raise LocalProtocolError(f"unknown topic kind {kind!r}; use one of {sorted(TOPIC_KINDS)}")
    return f"{PREFIX}/gw/{check_gateway_id(gateway)}/{_GATEWAY_SUFFIX[kind]}"


def batch_topic(gateway: str) -> str:
    return topic_for("batch", gateway)


def ack_topic(gateway: str) -> str:
    return topic_for("ack", gateway)


def birth_topic(gateway: str) -> str:
    return topic_for("birth", gateway)


def death_topic(gateway: str) -> str:
    return topic_for("death", gateway)


def cmd_topic(gateway: str) -> str:
    return topic_for("cmd", gateway)


def cmd_result_topic(gateway: str) -> str:
    return topic_for("cmd_result", gateway)


def gateway_filter(kind: str) -> str:
    """A subscription to ``kind`` for every gateway, e.g. ``m2c/v1/gw/+/birth``."""
    if kind not in _GATEWAY_SUFFIX:
        raise LocalProtocolError(f"{kind!r} is not a per-gateway topic kind")
    return f"{PREFIX}/gw/+/{_GATEWAY_SUFFIX[kind]}"


def parse_topic(topic: str) -> Topic:
    """The kind and gateway of a received topic; anything outside the tree is refused."""
    if not isinstance(topic, str):
        raise MalformedFrameError(f"topic must be a string, not {type(topic).__name__}")
    if topic == CENTRAL_STATE:
        return Topic("central_state", None)
    head = f"{PREFIX}/gw/"
    if not topic.startswith(head):
        raise MalformedFrameError(f"topic {topic!r} is not in the {PREFIX} tree")
    gateway, _, suffix = topic[len(head) :].partition("/")
    kind = _KIND_OF_SUFFIX.get(suffix)
    if kind is None:
        raise MalformedFrameError(f"topic {topic!r} has no message kind {suffix!r}")
    try:
        check_gateway_id(gateway)
    except LocalProtocolError as exc:
        raise MalformedFrameError(f"topic {topic!r}: {exc}") from exc
    return Topic(kind, gateway)  # type: ignore[arg-type]  # values of _KIND_OF_SUFFIX
