"""One example of every wire message, signed with fixed *example* keys, for the docs.

``docs/protocol.md`` shows :func:`example_payload` of each; a test decodes the doc's
blocks and compares them with :data:`EXAMPLES`, so the doc cannot drift from the code.
The example keys are derived from published bytes: never use them for anything real.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared_protocol.wire.envelope import SIGNATURE_REQUIRED, encode, sign
from shared_protocol.wire.messages import (
    Ack,
    ArchiveEntry,
    Birth,
    CentralState,
    Command,
    CommandResult,
    Death,
    Message,
    Nack,
    RecordBatch,
    ResendArgs,
    WireEvent,
    WireReading,
    WireStatistic,
)

__all__ = [
    "EXAMPLES",
    "EXAMPLE_CENTRAL_KEY",
    "EXAMPLE_GATEWAY_KEY",
    "example_key_id",
    "example_payload",
]

#: EXAMPLE ONLY — public test keys (the private bytes are 0..31 and 1..32).
EXAMPLE_GATEWAY_KEY: Final = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
EXAMPLE_CENTRAL_KEY: Final = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))

_GW: Final = "gw-0001"
_T: Final = datetime(2026, 11, 29, 0, 5, tzinfo=UTC)
_ID: Final = uuid.UUID("5b0e6c0e-3f7d-4c55-9a53-6a1f0b2f7c11")

EXAMPLES: Final[dict[str, Message]] = {
    "batch": RecordBatch(
        gateway=_GW,
        session=17,
        seq_from=1041,
        seq_to=1044,
        records=(
            WireReading(
                seq=1041,
                meter="000000123456",
                obis="1-0:1.8.0",
                time=datetime(2026, 11, 28, 16, 0, tzinfo=UTC),
                value=Decimal("12345.67"),
                unit="kWh",
                kind="daily",
                source="scheduled",
                quality="ok",
                read_at=_T + timedelta(seconds=2, microseconds=417_000),
            ),
            WireEvent(
                seq=1042,
                meter="000000123456",
                code="lid_open",
                detail={"count": 3},
                at=datetime(2026, 11, 28, 23, 41, 7, tzinfo=UTC),
            ),
            WireStatistic(
                seq=1044,
                name="collection_success",
                labels={"task": "daily", "day": "2026-11-28"},
                value=Decimal("0.9951"),
                at=_T + timedelta(minutes=10),
            ),
        ),
        historical=False,
        sent_at=_T + timedelta(minutes=10, seconds=1),
    ),
    "ack": Ack(
        gateway=_GW,
        session=17,
        up_to_seq=1044,
        received_at=_T + timedelta(minutes=10, seconds=1, milliseconds=80),
    ),
    "nack": Nack(
        gateway=_GW,
        session=17,
        seq_from=1045,
        seq_to=1544,
        reason="signature",
        detail="key 'gw-0001:2025' is unknown",
        at=_T + timedelta(minutes=11),
    ),
    "birth": Birth(
        gateway=_GW,
        session=17,
        software_version="0.1.0",
        config_hash="sha256:9f2c…e1",
        archive_hash="sha256:4b7a…0d",
        meter_count=2,
        meters=(
            ArchiveEntry(
                "000000123456", "dlt645-2007", "rs485-1", "T-017", "residential", False, True
            ),
            ArchiveEntry("rs485-2#7", "modbus-rtu", "rs485-2", "T-017", "commercial", True, False),
        ),
        tasks=("daily_frozen", "hourly_curve"),
        log_depth=4210,
        oldest_unacked_s=86400,
        last_seq=5254,
        acked_seq=1044,
        clock_offset_s=Decimal("-0.412"),
        boot_reason="power_on",
        sent_at=_T,
    ),
    "death": Death(gateway=_GW, session=17, at=_T),
    "central_state": CentralState(online=True, at=_T),
    "cmd": Command(
        id=_ID,
        gateway=_GW,
        args=ResendArgs(
            meter="000000123456",
            obis="1-0:1.8.0",
            start=datetime(2026, 11, 20, 16, 0, tzinfo=UTC),
            end=datetime(2026, 11, 23, 16, 0, tzinfo=UTC),
        ),
        issued_at=_T,
        expires_at=_T + timedelta(hours=1),
    ),
    "cmd_result": CommandResult(
        id=_ID,
        gateway=_GW,
        status="ok",
        detail={"queued_records": 3},
        meter_response_hex=None,
        at=_T + timedelta(seconds=4),
    ),
}


def example_key_id(message: Message) -> str:
    """The key id that signs the example: the gateway's own id, or ``central``."""
    return "central" if message.TYPE in {"cmd", "ack", "nack", "central_state"} else _GW


def example_payload(name: str, *, pretty: bool = True) -> str:
    """The example as the doc shows it: signed when its type must be, uncompressed."""
    message = EXAMPLES[name]
    if message.TYPE in SIGNATURE_REQUIRED:
        key = EXAMPLE_CENTRAL_KEY if example_key_id(message) == "central" else EXAMPLE_GATEWAY_KEY
        payload = sign(message, key, example_key_id(message), compress=False)
    else:
        payload = encode(message)
    if not pretty:
        return payload.decode("utf-8")
    # Pretty-printing changes no signature: receivers verify the canonical form.
    return json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
