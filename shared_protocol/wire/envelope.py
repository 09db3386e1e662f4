"""Bytes on the wire: canonical JSON, the signed envelope, compression, decode and verify.

Every payload on every topic is one UTF-8 JSON object, the *envelope*::

    {"v": 1, "type": "batch", "enc": "zlib", "body": "<base64 of zlib(canonical body)>",
     "sig": {"alg": "ed25519", "key_id": "gw-0001", "value": "<base64, 64 bytes>"}}

- ``body`` is the message's JSON object, or — with ``"enc": "zlib"`` — the base64 text of
  the zlib-compressed canonical JSON of that object (``enc`` is absent when uncompressed).
- ``sig`` signs :func:`canonical_json` of the envelope *without* ``sig``. For an
  uncompressed message that is exactly :func:`canonical_bytes` of the message; for a
  compressed one it covers the compressed text, so :func:`verify` authenticates a payload
  before it decompresses anything.
- Canonical JSON: keys sorted, no whitespace, UTF-8 (``ensure_ascii=False``), no floats.

Who signs what (a key id is ``owner`` or ``owner:label``; the owner must match):
gateways sign ``batch``, ``birth``, ``cmd_result`` (required) and may sign ``death``;
central signs ``cmd`` (required) and may sign ``ack``, ``nack`` and ``central_state``.

Errors: :class:`FrameTooLargeError` (payload or decompressed body too large),
:class:`MalformedFrameError` (not JSON, wrong structure, bad field),
:class:`UnsupportedError` (a future version or unknown type), :class:`SignatureError`
(``reason`` says which check failed). Nothing else escapes :func:`decode` or :func:`verify`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from shared_protocol.errors import (
    FrameTooLargeError,
    LocalProtocolError,
    MalformedFrameError,
    ProtocolError,
    SignatureError,
    UnsupportedError,
)
from shared_protocol.wire._values import GATEWAY_ID_PATTERN
from shared_protocol.wire.messages import (
    MESSAGE_TYPES,
    ColumnarBatch,
    Message,
    RecordBatch,
    _batch_from_pairs,
)
from shared_protocol.wire.topics import parse_topic

__all__ = [
    "CENTRAL_SIGNED",
    "GATEWAY_SIGNED",
    "MAX_BODY_BYTES",
    "MAX_PAYLOAD_BYTES",
    "SIGNATURE_REQUIRED",
    "WIRE_VERSION",
    "Envelope",
    "PublicKeyLookup",
    "TopicMismatchError",
    "Verified",
    "canonical_bytes",
    "canonical_json",
    "decode",
    "encode",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "nack_reason",
    "open_envelope",
    "private_key_pem",
    "public_key_pem",
    "sign",
    "verify",
    "verify_envelope",
]

WIRE_VERSION: Final = 1
#: Largest payload accepted from the broker. A 1000-record batch compresses to ~40 KB and
#: a full 2040-meter birth to ~60 KB; 1 MiB is ample and bounds what one message costs
#: a consumer before anything is checked.
MAX_PAYLOAD_BYTES: Final = 1024 * 1024
#: Largest decompressed body (zip-bomb guard). 10 000 records (the batch limit) of
#: ~320 bytes each is ~3.2 MB; 8 MiB leaves room and stays small beside a gateway's RAM.
#: zlib reaches ~1000:1 on repetitive text, so without this a 1 MiB payload could expand
#: to a gigabyte.
MAX_BODY_BYTES: Final = 8 * 1024 * 1024

GATEWAY_SIGNED: Final = frozenset({"batch", "birth", "cmd_result", "death"})
CENTRAL_SIGNED: Final = frozenset({"cmd", "ack", "nack", "central_state"})
#: Types refused by :func:`verify` and :func:`encode` without a signature.
SIGNATURE_REQUIRED: Final = frozenset({"batch", "birth", "cmd", "cmd_result"})
#: Compressed by default: the big ones.
_COMPRESSED_BY_DEFAULT: Final = frozenset({"batch", "birth"})
#: Topic kind each message type travels on (nack shares the ack topic).
_TOPIC_KIND: Final = {
    "batch": "batch",
    "ack": "ack",
    "nack": "ack",
    "birth": "birth",
    "death": "death",
    "cmd": "cmd",
    "cmd_result": "cmd_result",
    "central_state": "central_state",
}
_ENVELOPE_KEYS: Final = frozenset({"v", "type", "enc", "body", "sig"})
_SIG_KEYS: Final = frozenset({"alg", "key_id", "value"})
_KEY_LABEL: Final = re.compile(r"[A-Za-z0-9._-]{1,32}")
_ZLIB_LEVEL: Final = 6  # 9 saves ~2 % more at twice the CPU on a Cortex-A7

PublicKeyLookup = Callable[[str], Ed25519PublicKey | None]


# -- canonical JSON --------------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8, no floats or NaN."""
    try:
        text = json.dumps(
            value,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=_refuse,
        )
        return text.encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError) as exc:
        raise LocalProtocolError(f"not canonical JSON material: {exc}") from exc


def _refuse(value: object) -> NoReturn:
    raise TypeError(f"{type(value).__name__} has no canonical JSON form")


def canonical_bytes(message: Message) -> bytes:
    """The canonical unsigned envelope of ``message``: what a signature of it covers."""
    return canonical_json(_plain_envelope(message))


def _plain_envelope(message: Message) -> dict[str, Any]:
    if type(message) not in MESSAGE_TYPES.values():
        raise LocalProtocolError(f"{type(message).__name__} is not a wire message")
    return {"v": WIRE_VERSION, "type": message.TYPE, "body": message.to_wire()}


# -- encoding and signing ------------------------------------------------------------------------


def encode(message: Message) -> bytes:
    """An unsigned payload (ack, nack, death, central_state); signed types use :func:`sign`."""
    if message.TYPE in SIGNATURE_REQUIRED:
        raise LocalProtocolError(f"a {message.TYPE} must be signed; use sign()")
    return canonical_bytes(message)


def sign(
    message: Message,
    private_key: Ed25519PrivateKey,
    key_id: str,
    *,
    compress: bool | None = None,
) -> bytes:
    """The signed payload of ``message``; batches and births are compressed by default."""
    if not isinstance(private_key, Ed25519PrivateKey):
        raise LocalProtocolError("private_key must be an Ed25519PrivateKey")
    _check_signer(key_id, message, LocalProtocolError)
    envelope = _plain_envelope(message)
    if compress is None:
        compress = message.TYPE in _COMPRESSED_BY_DEFAULT
    if compress:
        packed = zlib.compress(canonical_json(envelope["body"]), _ZLIB_LEVEL)
        if len(packed) > MAX_BODY_BYTES:
            raise LocalProtocolError("message too large even compressed")
        envelope["enc"] = "zlib"
        envelope["body"] = base64.b64encode(packed).decode("ascii")
    signature = private_key.sign(canonical_json(envelope))
    envelope["sig"] = {
        "alg": "ed25519",
        "key_id": key_id,
        "value": base64.b64encode(signature).decode("ascii"),
    }
    payload = canonical_json(envelope)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise LocalProtocolError(
            f"{message.TYPE} payload is {len(payload)} bytes; receivers accept at most "
            f"{MAX_PAYLOAD_BYTES} — send fewer records per batch"
        )
    return payload


def _key_owner(key_id: str) -> str:
    owner, _, label = key_id.partition(":")
    if not (owner == "central" or GATEWAY_ID_PATTERN.fullmatch(owner)) or (
        ":" in key_id and not _KEY_LABEL.fullmatch(label)
    ):
        raise ValueError(
            f"key id {key_id!r} is not 'OWNER' or 'OWNER:LABEL' "
            "(OWNER a gateway id or 'central', LABEL 1–32 of A-Z a-z 0-9 . _ -)"
        )
    return owner


def _check_signer(key_id: object, message: Message | ColumnarBatch, error: type[Exception]) -> None:
    """A gateway signs only its own messages; central signs only central's."""
    if not isinstance(key_id, str):
        raise error(f"key id must be a string, not {type(key_id).__name__}")
    try:
        owner = _key_owner(key_id)
    except ValueError as exc:
        raise error(str(exc)) from exc
    if message.TYPE in GATEWAY_SIGNED:
        expected = getattr(message, "gateway", None)
        if owner != expected:
            raise _signer_error(
                error, f"key {key_id!r} may not sign a {message.TYPE} of {expected!r}"
            )
    elif owner != "central":
        raise _signer_error(error, f"key {key_id!r} may not sign a {message.TYPE}: central's only")


def _signer_error(error: type[Exception], text: str) -> Exception:
    if error is SignatureError:
        return SignatureError(text, "wrong_signer")
    return error(text)


# -- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """A payload whose envelope parsed; the body is not checked or decompressed yet."""

    type: str
    compressed: bool
    body: Any  # the JSON object, or the base64 text when compressed
    key_id: str | None
    signature: bytes | None
    signed_bytes: bytes  # canonical JSON of the envelope without "sig"

    @property
    def signed(self) -> bool:
        return self.signature is not None


@dataclass(frozen=True, slots=True)
class Verified:
    """A message whose signature checked out, and the key that made it (a
    :class:`ColumnarBatch` only when asked for with ``columnar``)."""

    message: Message | ColumnarBatch
    key_id: str


def _malformed(text: str) -> NoReturn:
    raise MalformedFrameError(text)


def _duplicate_keys_refused(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise ValueError(f"key {twice!r} appears twice in one object")
    return result


def _float_refused(text: str) -> NoReturn:
    raise ValueError(f"number {text} is a float; decimals travel as strings")


def _constant_refused(text: str) -> NoReturn:
    raise ValueError(f"{text} is not JSON")


def _parse_json(data: bytes, what: str) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedFrameError(f"{what} is not UTF-8: {exc}") from exc
    try:
        return json.loads(
            text,
            object_pairs_hook=_duplicate_keys_refused,
            parse_float=_float_refused,
            parse_constant=_constant_refused,
        )
    except (ValueError, RecursionError) as exc:
        raise MalformedFrameError(f"{what} is not acceptable JSON: {exc}") from exc


def open_envelope(payload: bytes) -> Envelope:
    """Parse the envelope (size, JSON, version, type, signature fields) without the body."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"payload must be bytes, not {type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise FrameTooLargeError(
            f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit"
        )
    envelope = _parse_json(payload, "payload")
    if not isinstance(envelope, dict):
        _malformed(f"payload must be a JSON object, not {type(envelope).__name__}")
    version = envelope.get("v")
    if isinstance(version, bool) or not isinstance(version, int):
        _malformed('payload has no protocol version ("v": 1)')
    if version != WIRE_VERSION:
        raise UnsupportedError(
            f"protocol version {version} is not understood here (this reader speaks "
            f"v{WIRE_VERSION}); upgrade the reader or downgrade the sender"
        )
    unknown = envelope.keys() - _ENVELOPE_KEYS
    if unknown:
        _malformed(f"envelope has unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    message_type = envelope.get("type")
    if not isinstance(message_type, str):
        _malformed("envelope has no message type")
    if message_type not in MESSAGE_TYPES:
        raise UnsupportedError(
            f"message type {message_type!r} is unknown; v1 has {', '.join(sorted(MESSAGE_TYPES))}"
        )
    if "body" not in envelope:
        _malformed(f"{message_type} envelope has no body")
    encoding = envelope.get("enc")
    body = envelope["body"]
    if encoding is None and "enc" not in envelope:
        if not isinstance(body, dict):
            _malformed(f"{message_type} body must be a JSON object")
    elif encoding == "zlib":
        if not isinstance(body, str):
            _malformed(f"{message_type} compressed body must be base64 text")
    else:
        raise UnsupportedError(f"body encoding {encoding!r} is unknown; v1 has 'zlib'")
    key_id: str | None = None
    signature: bytes | None = None
    if "sig" in envelope:
        key_id, signature = _parse_sig(envelope.pop("sig"))
    try:
        signed_bytes = canonical_json(envelope)
    except LocalProtocolError as exc:  # e.g. text that is not valid Unicode
        raise MalformedFrameError(f"payload cannot be made canonical: {exc}") from exc
    return Envelope(message_type, encoding == "zlib", body, key_id, signature, signed_bytes)


def _parse_sig(sig: object) -> tuple[str, bytes]:
    if not isinstance(sig, dict) or sig.keys() != _SIG_KEYS:
        raise SignatureError(
            'sig must be {"alg": "ed25519", "key_id": …, "value": …}', "malformed_signature"
        )
    if sig["alg"] != "ed25519":
        raise SignatureError(
            f"signature algorithm {sig['alg']!r} is not accepted; v1 uses ed25519",
            "unsupported_algorithm",
        )
    key_id, value = sig["key_id"], sig["value"]
    if not isinstance(key_id, str) or not isinstance(value, str):
        raise SignatureError("sig key_id and value must be strings", "malformed_signature")
    try:
        _key_owner(key_id)
        signature = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise SignatureError(f"signature is malformed: {exc}", "malformed_signature") from exc
    if len(signature) != 64:
        raise SignatureError(
            f"an Ed25519 signature is 64 bytes, not {len(signature)}", "malformed_signature"
        )
    return key_id, signature


def _body_object(envelope: Envelope) -> Any:
    if not envelope.compressed:
        return envelope.body
    return _parse_json(_inflate(envelope), f"{envelope.type} body")


def _inflate(envelope: Envelope) -> bytes:
    try:
        packed = base64.b64decode(envelope.body, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise MalformedFrameError(f"{envelope.type} body is not base64: {exc}") from exc
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(packed, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise MalformedFrameError(f"{envelope.type} body is not zlib data: {exc}") from exc
    if len(data) > MAX_BODY_BYTES:
        raise FrameTooLargeError(
            f"{envelope.type} body inflates beyond the {MAX_BODY_BYTES}-byte limit"
        )
    if not inflater.eof or inflater.unused_data:
        raise MalformedFrameError(f"{envelope.type} body is truncated or has trailing bytes")
    return data


def _batch_fast(data: bytes, columnar: bool = False) -> Message | ColumnarBatch | None:
    """A compressed batch body decoded without building a dict per record (the ingest hot
    path), or None when anything is unusual — the caller then decodes it the generic way,
    which gives the usual error. Objects parse as tuples of pairs; ``_batch_from_pairs``
    accepts only canonical objects (sorted keys, none twice) that pass every check."""
    try:
        tree = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=tuple,
            parse_float=_float_refused,
            parse_constant=_constant_refused,
        )
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return _batch_from_pairs(tree, columnar)


def _message(
    envelope: Envelope, topic: str | None, columnar: bool = False
) -> Message | ColumnarBatch:
    message: Message | ColumnarBatch | None = None
    if envelope.type == "batch" and envelope.compressed:
        data = _inflate(envelope)
        message = _batch_fast(data, columnar)
        if message is None:
            message = RecordBatch.from_wire(_parse_json(data, "batch body"))
    else:
        message = MESSAGE_TYPES[envelope.type].from_wire(_body_object(envelope))
    if topic is not None:
        _check_topic(topic, message)
    return message


class TopicMismatchError(MalformedFrameError):
    """A well-formed message on a topic it does not belong to (kind or gateway)."""


def _check_topic(topic: str, message: Message | ColumnarBatch) -> None:
    parsed = parse_topic(topic)
    if parsed.kind != _TOPIC_KIND[message.TYPE]:
        raise TopicMismatchError(f"a {message.TYPE} does not belong on {topic!r}")
    gateway = getattr(message, "gateway", None)
    if gateway != parsed.gateway:
        raise TopicMismatchError(f"{message.TYPE} for gateway {gateway!r} arrived on {topic!r}")


def decode(payload: bytes, *, topic: str | None = None) -> Message:
    """The message in ``payload`` — *without* checking any signature.

    For unsigned types, tools and tests. Anything that acts on a signed type uses
    :func:`verify`. With ``topic``, the message must belong there (kind and gateway).
    """
    message = _message(open_envelope(payload), topic)
    assert not isinstance(message, ColumnarBatch)  # only asked for with columnar=True
    return message


def verify_envelope(
    payload: bytes,
    public_keys: PublicKeyLookup,
    *,
    topic: str | None = None,
    columnar: bool = False,
) -> Verified:
    """Authenticate ``payload`` (before decompressing it), then decode it. With
    ``columnar``, a batch whose readings came as columns (and pass the fast checks) is a
    :class:`ColumnarBatch`: central's ingest hot path, which never builds a reading object."""
    envelope = open_envelope(payload)
    if envelope.signature is None or envelope.key_id is None:
        raise SignatureError(f"{envelope.type} is not signed", "unsigned")
    try:
        public_key = public_keys(envelope.key_id)
    except Exception as exc:  # the caller's lookup failing is not the sender's fault
        raise LocalProtocolError(f"public key lookup failed: {exc!r}") from exc
    if public_key is None:
        raise SignatureError(f"key {envelope.key_id!r} is unknown", "unknown_key")
    if not isinstance(public_key, Ed25519PublicKey):
        raise LocalProtocolError("the key lookup must return an Ed25519PublicKey or None")
    try:
        public_key.verify(envelope.signature, envelope.signed_bytes)
    except InvalidSignature:
        raise SignatureError(
            f"{envelope.type} signature does not match key {envelope.key_id!r}",
            "bad_signature",
        ) from None
    message = _message(envelope, topic, columnar)
    _check_signer(envelope.key_id, message, SignatureError)
    return Verified(message, envelope.key_id)


def verify(payload: bytes, public_keys: PublicKeyLookup, *, topic: str | None = None) -> Message:
    """The message of a signed payload; :class:`SignatureError` says why it is not trusted."""
    message = verify_envelope(payload, public_keys, topic=topic).message
    assert not isinstance(message, ColumnarBatch)  # only asked for with columnar=True
    return message


def nack_reason(error: ProtocolError) -> str:
    """The :class:`Nack` reason for a batch that :func:`verify` refused with ``error``."""
    if isinstance(error, SignatureError):
        return "signature"
    if isinstance(error, FrameTooLargeError):
        return "too_large"
    if isinstance(error, UnsupportedError):
        return "unsupported_version"
    if isinstance(error, TopicMismatchError):
        return "wrong_gateway"
    return "malformed"


# -- keys ------------------------------------------------------------------------------------------


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted with ``password`` when given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def public_key_pem(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes, password: bytes | None = None) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise LocalProtocolError(f"not a usable private key PEM: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise LocalProtocolError(f"the key is {type(key).__name__}, not Ed25519")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise LocalProtocolError(f"not a usable public key PEM: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise LocalProtocolError(f"the key is {type(key).__name__}, not Ed25519")
    return key
