"""What the uplink needs to run: where the broker is, who we are, how hard to push.

:class:`UplinkSettings` is plain data (the config file's ``[uplink]`` section maps onto it);
:class:`BirthFacts` is what the rest of the agent knows about itself for the birth message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared_protocol.wire import ArchiveEntry, load_private_key, load_public_key

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_WINDOW",
    "BirthFacts",
    "Keys",
    "UplinkSettings",
    "load_keys",
]

#: Unacknowledged batches in flight (edge.md D2.6: "a sliding window of N unacked batches").
DEFAULT_WINDOW = 4
#: Records per batch: 500 readings are ~12 kB signed and compressed (docs/protocol.md).
DEFAULT_BATCH_SIZE = 500


@dataclass(frozen=True)
class UplinkSettings:
    """How to reach the broker and how to send.

    ``ca_file``/``cert_file``/``key_file`` are the enrolment bundle's ``ca.crt``,
    ``gateway.crt`` and ``gateway.key`` (mutual TLS; all three or none — none means a
    plaintext broker, for the demo and tests only). The client id is the gateway id.
    """

    gateway_id: str
    host: str = "127.0.0.1"
    port: int = 8883
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    #: How long the broker keeps our session (subscriptions, queued acks and commands).
    session_expiry_s: int = 7 * 24 * 3600
    batch_size: int = DEFAULT_BATCH_SIZE
    window: int = DEFAULT_WINDOW
    #: No ack progress for this long: the oldest batches go again, same range, same bytes.
    resend_timeout_s: float = 30.0
    #: Ceiling of the resend / nack back-off.
    max_backoff_s: float = 3600.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 60.0
    #: How often the log is polled for new records when nobody calls ``Uplink.notify()``.
    poll_interval_s: float = 1.0
    #: Publish batches only while central's retained state says online (D2.5).
    require_central_online: bool = True
    #: Where accepted command ids are kept across restarts (replay protection); None = RAM.
    command_memory_file: Path | None = None

    def __post_init__(self) -> None:
        tls = (self.ca_file, self.cert_file, self.key_file)
        if any(p is not None for p in tls) and not all(p is not None for p in tls):
            raise ValueError("ca_file, cert_file and key_file go together (mutual TLS)")
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError(f"batch_size {self.batch_size} is not within 1..10000")
        if not 1 <= self.window <= 64:
            raise ValueError(f"window {self.window} is not within 1..64")
        if self.resend_timeout_s <= 0 or self.poll_interval_s <= 0:
            raise ValueError("resend_timeout_s and poll_interval_s must be > 0")

    @property
    def tls(self) -> bool:
        return self.ca_file is not None


@dataclass(frozen=True)
class BirthFacts:
    """What the birth says about the agent beyond the log (which the uplink reads itself).

    ``clock_offset_s`` None lets the uplink report its own estimate from central's acks.
    """

    software_version: str = "0"
    config_hash: str = "sha256:unknown"
    archive_hash: str = "sha256:empty"
    meters: tuple[ArchiveEntry, ...] = ()
    meter_count: int | None = None
    tasks: tuple[str, ...] = ()
    boot_reason: str = "unknown"
    clock_offset_s: Decimal | None = None


BirthSource = Callable[[], BirthFacts]


@dataclass(frozen=True)
class Keys:
    signing_key: Ed25519PrivateKey
    key_id: str
    central_key: Ed25519PublicKey = field(repr=False)


def load_keys(signing_key_file: Path, central_key_file: Path, key_id: str) -> Keys:
    """The bundle's ``signing.key`` and central's public key (PEM files)."""
    return Keys(
        load_private_key(Path(signing_key_file).read_bytes()),
        key_id,
        load_public_key(Path(central_key_file).read_bytes()),
    )
