"""The public names of shared_protocol.wire are pinned: other packages build on them."""

from __future__ import annotations

import shared_protocol.wire as wire
from shared_protocol.errors import (
    FrameTooLargeError,
    MalformedFrameError,
    RemoteProtocolError,
    SignatureError,
    UnsupportedError,
)
from shared_protocol.wire import CommandRefusedError, TopicMismatchError, nack_reason

PINNED = {
    "CENTRAL_STATE", "COMMAND_KINDS", "COMMAND_STATUSES", "INGEST_SUBSCRIPTION",
    "MAX_BODY_BYTES", "MAX_PAYLOAD_BYTES", "MAX_RECORDS_PER_BATCH", "MESSAGE_TYPES",
    "NACK_REASONS", "QOS", "READING_KINDS", "READING_SOURCES", "REFUSAL_REASONS", "RETAINED",
    "SIGNATURE_REQUIRED", "WIRE_VERSION", "Ack", "ArchiveEntry", "BackfillArgs", "Birth",
    "CentralState", "ClockSyncArgs", "Command", "CommandArgs", "CommandGuard",
    "CommandRefusedError", "CommandResult", "Death", "Envelope", "Message", "Nack",
    "PublicKeyLookup", "ReadNowArgs", "RebirthArgs", "RecordBatch", "ResendArgs", "ResyncArgs",
    "ColumnarBatch", "READING_COLUMNS", "reading_columns",
    "Topic", "TopicMismatchError", "Verified", "WireEvent", "WireReading", "WireRecord",
    "WireStatistic", "ack_topic", "batch_topic", "birth_topic", "canonical_bytes",
    "canonical_json", "cmd_result_topic", "cmd_topic", "death_topic", "decode", "encode",
    "gateway_filter", "generate_private_key", "load_private_key", "load_public_key",
    "nack_reason", "open_envelope", "parse_topic", "private_key_pem", "public_key_pem", "sign",
    "topic_for", "verify", "verify_envelope",
}  # fmt: skip


def test_public_names_are_pinned() -> None:
    assert set(wire.__all__) == PINNED
    for name in wire.__all__:
        assert hasattr(wire, name), name


def test_wire_errors_sit_in_the_one_tree() -> None:
    assert issubclass(SignatureError, RemoteProtocolError)
    assert issubclass(CommandRefusedError, RemoteProtocolError)
    assert issubclass(TopicMismatchError, MalformedFrameError)


def test_nack_reasons_for_refused_batches() -> None:
    assert nack_reason(SignatureError("x", "unknown_key")) == "signature"
    assert nack_reason(FrameTooLargeError("x")) == "too_large"
    assert nack_reason(UnsupportedError("x")) == "unsupported_version"
    assert nack_reason(TopicMismatchError("x")) == "wrong_gateway"
    assert nack_reason(MalformedFrameError("x")) == "malformed"
    assert {nack_reason(e("x")) for e in (MalformedFrameError, FrameTooLargeError)} <= (
        wire.NACK_REASONS
    )
