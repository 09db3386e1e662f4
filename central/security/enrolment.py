"""Gateway enrolment: a broker identity, a batch-signing key, and a registry entry.

`enroll_gateway` gives a gateway everything it needs to join, as a directory to copy onto it
(the *bundle*), and records in `<state dir>/gateways/<id>.json` what central must know to
trust its batches (the *registry*). The central database imports the registry later; until
then the JSON files are the record, so their format is small and fixed (format 1):

    {
      "format": 1,
      "gateway_id": "gw-0001",
      "signing_key_algorithm": "ed25519",
      "signing_key_id": "gw-0001",
      "signing_public_key": "<base64 of the raw 32-byte Ed25519 public key>",
      "signing_public_key_pem": "-----BEGIN PUBLIC KEY-----\n...",
      "certificate_serial": "<hex>",
      "certificate_sha256": "<hex fingerprint of the DER certificate>",
      "certificate_not_after": "2028-11-29T15:30:00Z",
      "enrolled_at": "2026-11-29T15:30:00Z",
      "superseded_certificate_serials": ["<hex>", ...],
      "revoked_at": null
    }

Re-enrolling (`--force`) revokes the certificate it replaces; `revoke_gateway` revokes the
current one and sets `revoked_at`. Revocation reaches the broker through the CRL
(`central broker crl`): SIGHUP makes Mosquitto check new connections against it, a restart
also cuts off a revoked gateway that is still connected.

The bundle (`<out>/`): `ca.crt`, `gateway.crt`, `gateway.key` (0600), `signing.key` (0600,
Ed25519 PKCS#8 PEM), `signing.pub` (PEM) and `gateway.json` (the registry entry, so the
technician can check the fingerprint on site).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.security.ca import (
    CA_CERTIFICATE_NAME,
    DEFAULT_CLIENT_DAYS,
    DeviceCA,
    SecurityError,
    write_private_file,
    write_public_file,
)

REGISTRY_FORMAT = 1

# A gateway id is the certificate CN, the MQTT username and one topic level
# (m2c/v1/gw/{gw}/...): no '/', '+', '#' (they would let a name span or wildcard levels in
# the ACL patterns), no uppercase (ids are compared as written, and a technician typing
# GW-1 for gw-1 would enrol a second gateway), at most 63 characters like a DNS label.
GATEWAY_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

# CN `central` is the ingestion service's broker identity; a gateway with that name would
# inherit central's ACL (read every gateway, write acks and commands).
CENTRAL_SERVICE_ID = "central"
RESERVED_IDS = frozenset({CENTRAL_SERVICE_ID})

BUNDLE_FILES = (
    CA_CERTIFICATE_NAME,
    "gateway.crt",
    "gateway.key",
    "signing.key",
    "signing.pub",
    "gateway.json",
)


class EnrolmentError(SecurityError):
    """An enrolment was refused: bad id, already enrolled, or no CA."""


def ca_directory(state_dir: Path) -> Path:
    return state_dir / "ca"


def registry_directory(state_dir: Path) -> Path:
    return state_dir / "gateways"


def default_bundle_directory(state_dir: Path, gateway_id: str) -> Path:
    return state_dir / "bundles" / gateway_id


def validate_gateway_id(gateway_id: str) -> str:
    """Return `gateway_id` if it can be a gateway's identity, else raise `EnrolmentError`."""
    if not GATEWAY_ID_PATTERN.fullmatch(gateway_id):
        raise EnrolmentError(
            f"gateway id {gateway_id!r} is not valid: use 1-63 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit (the id becomes the certificate CN and an MQTT "
            "topic level, so '/', '+', '#', spaces and uppercase are not allowed)"
        )
    if gateway_id in RESERVED_IDS:
        raise EnrolmentError(
            f"gateway id {gateway_id!r} is reserved for the central service's broker identity"
        )
    return gateway_id


@dataclass(frozen=True)
class GatewayEnrolment:
    """What one enrolment produced."""

    gateway_id: str
    bundle_directory: Path
    registry_path: Path
    signing_public_key: bytes  # raw 32-byte Ed25519
    record: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            **self.record,
            "bundle_directory": str(self.bundle_directory),
            "registry_path": str(self.registry_path),
        }


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_registry_entry(state_dir: Path, gateway_id: str) -> dict[str, Any] | None:
    path = registry_directory(state_dir) / f"{gateway_id}.json"
    if not path.exists():
        return None
    entry: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return entry


def list_gateways(state_dir: Path) -> list[dict[str, Any]]:
    """Every registry entry, ordered by gateway id."""
    directory = registry_directory(state_dir)
    if not directory.is_dir():
        return []
    return [
        json.loads(path.read_text(encoding="utf-8")) for path in sorted(directory.glob("*.json"))
    ]


def enroll_gateway(
    state_dir: Path,
    gateway_id: str,
    *,
    output_dir: Path | None = None,
    force: bool = False,
    days: int = DEFAULT_CLIENT_DAYS,
) -> GatewayEnrolment:
    """Issue `gateway_id` a certificate and signing key, write its bundle, record it.

    Refuses an id that is already enrolled unless `force`: re-enrolling replaces the signing
    key central trusts, so the old gateway install stops being accepted.
    """
    validate_gateway_id(gateway_id)
    ca = DeviceCA.load(ca_directory(state_dir))
    previous = read_registry_entry(state_dir, gateway_id)
    if previous is not None and not force:
        raise EnrolmentError(
            f"gateway {gateway_id!r} is already enrolled (since {previous.get('enrolled_at')}, "
            f"certificate serial {previous.get('certificate_serial')}). Re-enrolling issues a new "
            "certificate and signing key and the gateway must get the new bundle; "
            "pass --force to do that."
        )

    identity = ca.issue_client(gateway_id, days=days)
    signing_key = Ed25519PrivateKey.generate()
    signing_public = signing_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    signing_public_pem = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    superseded: list[str] = []
    if previous is not None:
        superseded = [
            *previous.get("superseded_certificate_serials", []),
            previous["certificate_serial"],
        ]
    record: dict[str, Any] = {
        "format": REGISTRY_FORMAT,
        "gateway_id": gateway_id,
        "signing_key_algorithm": "ed25519",
        # The key id the gateway puts in its envelopes' `sig.key_id` (shared_protocol.wire).
        "signing_key_id": gateway_id,
        "signing_public_key": base64.b64encode(signing_public).decode("ascii"),
        # The same key as PEM, the form central's `gateways.public_key_pem` column stores.
        "signing_public_key_pem": signing_public_pem.decode("ascii"),
        "certificate_serial": f"{identity.serial_number:x}",
        "certificate_sha256": identity.fingerprint_sha256,
        "certificate_not_after": _timestamp(identity.not_after),
        "enrolled_at": _timestamp(dt.datetime.now(dt.UTC)),
        "superseded_certificate_serials": superseded,
        "revoked_at": None,
    }

    # Bundle first, registry last: a crash in between leaves no registry entry, so running
    # the same command again works without --force.
    bundle = output_dir or default_bundle_directory(state_dir, gateway_id)
    if not bundle.exists():
        # 0700 only for a directory we create: --out may name an existing one (a USB stick).
        bundle.mkdir(parents=True)
        bundle.chmod(0o700)
    write_public_file(bundle / CA_CERTIFICATE_NAME, ca.certificate_pem)
    identity.write(bundle, "gateway.crt", "gateway.key")
    write_private_file(
        bundle / "signing.key",
        signing_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_public_file(bundle / "signing.pub", signing_public_pem)
    entry_text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    write_public_file(bundle / "gateway.json", entry_text.encode("utf-8"))

    registry_path = registry_directory(state_dir) / f"{gateway_id}.json"
    write_public_file(registry_path, entry_text.encode("utf-8"))
    # The replaced certificate stays valid at the broker until the new CRL is installed
    # there; the registry already holds the new signing key, so central refuses its batches.
    for serial in superseded:
        ca.revoke(serial, gateway_id)
    return GatewayEnrolment(
        gateway_id=gateway_id,
        bundle_directory=bundle,
        registry_path=registry_path,
        signing_public_key=signing_public,
        record=record,
    )


def issue_central_service_identity(
    state_dir: Path, output_dir: Path, *, days: int = DEFAULT_CLIENT_DAYS
) -> tuple[Path, Path, Path]:
    """Write `ca.crt`, `central.crt`, `central.key` for the ingestion service (CN central).

    Returns (ca file, certificate file, key file). Every ingestion consumer may share this
    identity: the shared subscription splits work between sessions, not usernames.
    """
    ca = DeviceCA.load(ca_directory(state_dir))
    identity = ca.issue_client(CENTRAL_SERVICE_ID, days=days)
    output_dir.mkdir(parents=True, exist_ok=True)
    ca_file = output_dir / CA_CERTIFICATE_NAME
    write_public_file(ca_file, ca.certificate_pem)
    certificate_file, key_file = identity.write(output_dir, "central.crt", "central.key")
    return ca_file, certificate_file, key_file


def revoke_gateway(state_dir: Path, gateway_id: str) -> dict[str, Any]:
    """Revoke every certificate `gateway_id` was issued; returns the updated registry entry.

    The registry entry stays (with `revoked_at`) so that central keeps the gateway's history;
    enrolling the id again needs --force.
    """
    validate_gateway_id(gateway_id)
    entry = read_registry_entry(state_dir, gateway_id)
    if entry is None:
        raise EnrolmentError(f"gateway {gateway_id!r} is not enrolled; nothing to revoke")
    ca = DeviceCA.load(ca_directory(state_dir))
    for serial in [*entry.get("superseded_certificate_serials", []), entry["certificate_serial"]]:
        ca.revoke(serial, gateway_id)
    if entry.get("revoked_at") is None:
        entry["revoked_at"] = _timestamp(dt.datetime.now(dt.UTC))
        text = json.dumps(entry, indent=2, sort_keys=True) + "\n"
        write_public_file(registry_directory(state_dir) / f"{gateway_id}.json", text.encode())
    return entry
