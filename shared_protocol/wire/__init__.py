"""The edge→central wire contract: topics, messages, canonical bytes, signatures, commands.

Sans I/O: the edge uplink and central ingestion hand payload bytes and topics in and get
messages out (and the reverse); MQTT, TLS and storage live in their packages. See
``docs/protocol.md`` for the topic tree and every payload with an example.

Build a message, then ``sign(message, key, key_id)`` (batches, births, command results,
commands) or ``encode(message)`` (acks, nacks, death, central state) to get the payload.
Receive with ``verify(payload, public_keys, topic=...)`` — or ``decode`` for unsigned
types — and, on the gateway, ``CommandGuard(central_key, clock).check(payload)``.

Errors, all from :mod:`shared_protocol.errors`::

    ProtocolError
    ├── RemoteProtocolError
    │   ├── FrameTooLargeError     payload or inflated body over its limit
    │   ├── MalformedFrameError    not JSON, wrong shape, a field out of its rules
    │   │   └── TopicMismatchError a message on a topic of another kind or gateway
    │   ├── UnsupportedError       a future protocol version, an unknown type or encoding
    │   ├── SignatureError         .reason: unsigned, unknown_key, bad_signature, ...
    │   └── CommandRefusedError    (wire.guard) .reason, .status, .command
    └── LocalProtocolError         building a message that breaks the rules
"""

from shared_protocol.wire.envelope import (
    MAX_BODY_BYTES,
    MAX_PAYLOAD_BYTES,
    SIGNATURE_REQUIRED,
    WIRE_VERSION,
    Envelope,
    PublicKeyLookup,
    TopicMismatchError,
    Verified,
    canonical_bytes,
    canonical_json,
    decode,
    encode,
    generate_private_key,
    load_private_key,
    load_public_key,
    nack_reason,
    open_envelope,
    private_key_pem,
    public_key_pem,
    sign,
    verify,
    verify_envelope,
)
from shared_protocol.wire.guard import (
    REFUSAL_REASONS,
    CommandGuard,
    CommandRefusedError,
)
from shared_protocol.wire.messages import (
    COMMAND_KINDS,
    COMMAND_STATUSES,
    MAX_RECORDS_PER_BATCH,
    MESSAGE_TYPES,
    NACK_REASONS,
    READING_KINDS,
    READING_SOURCES,
    Ack,
    ArchiveEntry,
    BackfillArgs,
    Birth,
    CentralState,
    ClockSyncArgs,
    Command,
    CommandArgs,
    CommandResult,
    Death,
    Message,
    Nack,
    ReadNowArgs,
    RebirthArgs,
    RecordBatch,
    ResendArgs,
    ResyncArgs,
    WireEvent,
    WireReading,
    WireRecord,
    WireStatistic,
)
from shared_protocol.wire.topics import (
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

__all__ = [
    "CENTRAL_STATE",
    "COMMAND_KINDS",
    "COMMAND_STATUSES",
    "INGEST_SUBSCRIPTION",
    "MAX_BODY_BYTES",
    "MAX_PAYLOAD_BYTES",
    "MAX_RECORDS_PER_BATCH",
    "MESSAGE_TYPES",
    "NACK_REASONS",
    "QOS",
    "READING_KINDS",
    "READING_SOURCES",
    "REFUSAL_REASONS",
    "RETAINED",
    "SIGNATURE_REQUIRED",
    "WIRE_VERSION",
    "Ack",
    "ArchiveEntry",
    "BackfillArgs",
    "Birth",
    "CentralState",
    "ClockSyncArgs",
    "Command",
    "CommandArgs",
    "CommandGuard",
    "CommandRefusedError",
    "CommandResult",
    "Death",
    "Envelope",
    "Message",
    "Nack",
    "PublicKeyLookup",
    "ReadNowArgs",
    "RebirthArgs",
    "RecordBatch",
    "ResendArgs",
    "ResyncArgs",
    "Topic",
    "TopicMismatchError",
    "Verified",
    "WireEvent",
    "WireReading",
    "WireRecord",
    "WireStatistic",
    "ack_topic",
    "batch_topic",
    "birth_topic",
    "canonical_bytes",
    "canonical_json",
    "cmd_result_topic",
    "cmd_topic",
    "death_topic",
    "decode",
    "encode",
    "gateway_filter",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "nack_reason",
    "open_envelope",
    "parse_topic",
    "private_key_pem",
    "public_key_pem",
    "sign",
    "topic_for",
    "verify",
    "verify_envelope",
]
