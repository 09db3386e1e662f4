"""The one error tree of every codec in :mod:`shared_protocol`.

Nothing but these escapes a decoder or encoder; a fuzz test holds us to it::

    ProtocolError                      anything a codec refuses
    ├── RemoteProtocolError            the bytes from the line are not acceptable
    │   ├── ChecksumError              CS (645), HCS/FCS (698) or CRC (Modbus) mismatch
    │   ├── FrameTooLargeError         a frame longer than the protocol allows
    │   ├── MalformedFrameError        truncated, wrong delimiters, lengths that disagree
    │   ├── SignatureError             a wire message (shared_protocol.wire) whose
    │   │                              signature is missing, unknown or wrong
    │   └── UnsupportedError           well formed, but a function, DI, OAD or type we
    │                                  do not know; the raw bytes stay available
    └── LocalProtocolError             the caller asked for something impossible
                                       (bad address string, value out of range)

``RemoteProtocolError`` is what a technician sees when a meter or a cable misbehaves;
``LocalProtocolError`` is a bug or a typo on our side of the line.
"""

from __future__ import annotations

__all__ = [
    "ChecksumError",
    "FrameTooLargeError",
    "LocalProtocolError",
    "MalformedFrameError",
    "ProtocolError",
    "RemoteProtocolError",
    "SignatureError",
    "UnsupportedError",
]


class ProtocolError(Exception):
    """Base of every error a codec raises."""


class RemoteProtocolError(ProtocolError):
    """The peer (a meter, a terminal, a noisy line) sent bytes we cannot accept."""


class ChecksumError(RemoteProtocolError):
    """The frame's checksum or CRC does not match its contents."""


class FrameTooLargeError(RemoteProtocolError):
    """A frame (or the bytes buffered while waiting for one) exceeds the protocol's limit."""


class MalformedFrameError(RemoteProtocolError):
    """Structure is wrong: truncated, bad delimiters, or lengths that disagree."""


class SignatureError(RemoteProtocolError):
    """A signed wire message failed authentication.

    ``reason`` names the failure for counters and nacks: ``unsigned``, ``unknown_key``,
    ``bad_signature``, ``malformed_signature``, ``unsupported_algorithm``, ``wrong_signer``.
    """

    def __init__(self, message: str, reason: str = "bad_signature") -> None:
        super().__init__(message)
        self.reason = reason


class UnsupportedError(RemoteProtocolError):
    """Well formed, but it uses a function, identifier or type this codec does not know."""


class LocalProtocolError(ProtocolError):
    """The caller misused the API: an impossible address, value or combination."""
