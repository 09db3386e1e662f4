"""A *simulated* ESAM for DL/T 698.45 SECURITY APDUs — not SM4, not a real ESAM.

Real meters carry an ESAM chip that checks SM4-based MACs with keys the utility's key
management system issues. We have neither, so the simulator's ESAM computes
``HMAC-SHA256(key, RN ‖ plaintext APDU)`` truncated to 4 bytes (the size of a real MAC) with
``cryptography``. It proves the *flow* — the meter refuses ACTION 8000 without a MAC that
checks against its key, and refuses a replayed random number — not the cryptography of
the field. The same class is the client's side for tests and demos (:meth:`wrap`).
"""

from __future__ import annotations

import hmac as std_hmac
import os
from collections import deque

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC

from shared_protocol.dlt698 import (
    Apdu,
    SecurityRequest,
    SecurityVerification,
    VerificationKind,
    encode_apdu,
)

__all__ = ["MAC_SIZE", "RN_SIZE", "SimulatedEsam"]

MAC_SIZE = 4
RN_SIZE = 16
REPLAY_MEMORY = 1024  # how many recent RNs the meter remembers


class SimulatedEsam:
    """The meter's (or the master's) simulated security module for one key."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._seen: deque[bytes] = deque(maxlen=REPLAY_MEMORY)

    def mac(self, rn: bytes, payload: bytes) -> bytes:
        signer = HMAC(self.key, hashes.SHA256())
        signer.update(rn + payload)
        return signer.finalize()[:MAC_SIZE]

    def verify(self, rn: bytes, payload: bytes, mac: bytes) -> bool:
        return std_hmac.compare_digest(self.mac(rn, payload), mac)

    def fresh(self, rn: bytes) -> bool:
        """True the first time an RN is seen; a replayed RN is refused from then on."""
        if rn in self._seen:
            return False
        self._seen.append(rn)
        return True

    def wrap(self, inner: Apdu, rn: bytes | None = None) -> SecurityRequest:
        """Client side: plaintext ``inner`` + RN + MAC, as a master with the right key sends."""
        rn = rn if rn is not None else os.urandom(RN_SIZE)
        payload = encode_apdu(inner)
        verification = SecurityVerification(
            VerificationKind.RN_MAC, rn=rn, mac=self.mac(rn, payload)
        )
        return SecurityRequest(payload, verification)
