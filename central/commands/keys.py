"""Central's Ed25519 command key: create it once, load it to sign, hand its public half to
every gateway (the edge's ``uplink.central_key_file``).

The key file is PKCS#8 PEM, mode 0600, at ``M2C_COMMAND_KEY_PATH``
(``central.settings.Settings.command_key_path``). Gateways refuse any command this key did
not sign (``shared_protocol.wire.CommandGuard``), so the file is as sensitive as the power to
read every meter now or reset its clock.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.commands.errors import CommandKeyError
from shared_protocol.errors import ProtocolError
from shared_protocol.wire import (
    generate_private_key,
    load_private_key,
    private_key_pem,
    public_key_pem,
)

__all__ = ["create_command_key", "load_command_key", "public_key_pem_of"]

_HOW = "create it with `central ops command-key init` (M2C_COMMAND_KEY_PATH names the file)"


def create_command_key(path: Path, *, force: bool = False) -> bytes:
    """Write a new key to ``path`` (0600, parents created); returns its public key PEM.

    Refuses to replace an existing key unless ``force``: every gateway holds the public
    half, and a new key makes them refuse central's commands until they get the new one.
    """
    path = Path(path)
    if path.exists() and not force:
        raise CommandKeyError(
            f"{path} already exists; every gateway trusts its public key. Use --force to "
            "replace it, then give the new public key to every gateway"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_private_key()
    temporary = path.with_name(path.name + ".new")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private_key_pem(key))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return public_key_pem(key)


def load_command_key(path: Path) -> Ed25519PrivateKey:
    """The signing key at ``path``; :class:`CommandKeyError` says what is wrong with it."""
    path = Path(path)
    try:
        pem = path.read_bytes()
    except FileNotFoundError as exc:
        raise CommandKeyError(f"central's command key {path} does not exist: {_HOW}") from exc
    except OSError as exc:
        raise CommandKeyError(f"central's command key {path} cannot be read: {exc}") from exc
    try:
        return load_private_key(pem)
    except ProtocolError as exc:
        raise CommandKeyError(f"{path} is not an Ed25519 private key PEM ({exc}); {_HOW}") from exc


def public_key_pem_of(path: Path) -> bytes:
    """The public key PEM of the key at ``path`` (what gateways are configured with)."""
    return public_key_pem(load_command_key(path))
