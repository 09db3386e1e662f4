"""The gateway's gate for central's commands: signed, for us, in date, and never twice.

``CommandGuard.check(payload)`` returns the :class:`Command` to run or raises
:class:`CommandRefusedError` whose ``reason`` is one of :data:`REFUSAL_REASONS` and whose
``status`` is the :class:`CommandResult` status to answer with (``expired``,
``duplicate`` or ``refused``). ``command`` is set whenever the payload was readable, so
the refusal can be answered by id.

Replay memory: an accepted id is remembered until it expires (plus the skew allowance),
after which the expiry check alone refuses it. The memory is bounded: when it is full the
earliest-issued ids are forgotten and every command issued at or before the newest
forgotten one is refused as ``too_old`` — the guard never accepts what it cannot prove is
new. Persist :meth:`CommandGuard.remembered` and pass it back after a restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Final, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared_protocol.errors import (
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    SignatureError,
)
from shared_protocol.wire._values import check_gateway_id, check_time
from shared_protocol.wire.envelope import PublicKeyLookup, decode, open_envelope, verify
from shared_protocol.wire.messages import Command

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_SKEW",
    "REFUSAL_REASONS",
    "CommandGuard",
    "CommandRefusedError",
    "RefusalReason",
]

RefusalReason = Literal[
    "malformed",
    "unsigned",
    "unknown_key",
    "bad_signature",
    "wrong_gateway",
    "not_yet_valid",
    "expired",
    "replayed",
    "too_old",
]
REFUSAL_REASONS: Final = frozenset(RefusalReason.__args__)  # type: ignore[attr-defined]

#: Gateway clocks drift between syncs and central's may be off too; five minutes is the
#: meter-clock threshold the field uses (edge.md D5) and far below any command lifetime.
DEFAULT_SKEW: Final = timedelta(minutes=5)
#: Ids remembered at most. Central sends a handful of commands a day per gateway; 4096
#: ids of ~100 bytes each is a few hundred KB at worst on a 256 MB gateway.
DEFAULT_CAPACITY: Final = 4096

_STATUS: Final[dict[str, str]] = {"expired": "expired", "replayed": "duplicate"}


class CommandRefusedError(RemoteProtocolError):
    """A command the gateway must not run; ``reason`` says why, ``status`` how to answer."""

    def __init__(self, reason: RefusalReason, text: str, command: Command | None = None) -> None:
        super().__init__(f"command refused ({reason}): {text}")
        self.reason: RefusalReason = reason
        self.command = command
        self.status = _STATUS.get(reason, "refused")


class CommandGuard:
    """Checks each command payload against central's key, the clock and the ids seen."""

    def __init__(
        self,
        public_key: Ed25519PublicKey | PublicKeyLookup,
        clock: Callable[[], datetime],
        *,
        gateway: str | None = None,
        skew: timedelta = DEFAULT_SKEW,
        capacity: int = DEFAULT_CAPACITY,
        remembered: Iterable[tuple[uuid.UUID, datetime, datetime]] = (),
    ) -> None:
        """``public_key``: central's Ed25519PublicKey, or a lookup ``key_id -> key | None``."""
        if isinstance(public_key, Ed25519PublicKey):
            key = public_key
            self._lookup: PublicKeyLookup = lambda _key_id: key
        elif callable(public_key):
            self._lookup = public_key
        else:
            raise LocalProtocolError("public_key must be an Ed25519PublicKey or a key lookup")
        if skew < timedelta(0) or capacity < 1:
            raise LocalProtocolError("skew must be >= 0 and capacity >= 1")
        self._clock = clock
        self._gateway = None if gateway is None else check_gateway_id(gateway)
        self._skew = skew
        self._capacity = capacity
        self._seen: dict[uuid.UUID, tuple[datetime, datetime]] = {}
        self._floor: datetime | None = None
        for command_id, issued_at, expires_at in remembered:
            self._remember(command_id, check_time(issued_at, "issued_at"), expires_at)

    def check(self, payload: bytes, *, topic: str | None = None) -> Command:
        """The command to run; :class:`CommandRefusedError` if it must not run."""
        command = self._authentic(payload, topic)
        now = check_time(self._clock(), "clock()")
        self._forget_expired(now)
        if self._gateway is not None and command.gateway != self._gateway:
            raise CommandRefusedError(
                "wrong_gateway",
                f"addressed to {command.gateway!r}, this is {self._gateway!r}",
                command,
            )
        if command.id in self._seen:
            raise CommandRefusedError("replayed", f"id {command.id} was already accepted", command)
        if command.issued_at > now + self._skew:
            raise CommandRefusedError(
                "not_yet_valid",
                f"issued at {command.issued_at.isoformat()}, now is {now.isoformat()} "
                f"(allowance {self._skew})",
                command,
            )
        if now > command.expires_at + self._skew:
            raise CommandRefusedError(
                "expired", f"expired at {command.expires_at.isoformat()}", command
            )
        if self._floor is not None and command.issued_at <= self._floor:
            raise CommandRefusedError(
                "too_old",
                f"issued at {command.issued_at.isoformat()}, before ids this gateway had to "
                "forget; it cannot be shown not to be a replay",
                command,
            )
        self._remember(command.id, command.issued_at, command.expires_at)
        return command

    def remembered(self) -> list[tuple[uuid.UUID, datetime, datetime]]:
        """(id, issued_at, expires_at) of every remembered id, to persist across restarts."""
        return [(key, issued, expires) for key, (issued, expires) in self._seen.items()]

    def _authentic(self, payload: bytes, topic: str | None) -> Command:
        try:
            message_type = open_envelope(payload).type
        except ProtocolError as exc:
            raise CommandRefusedError("malformed", str(exc)) from exc
        if message_type != Command.TYPE:
            raise CommandRefusedError("malformed", f"a {message_type} is not a command")
        try:
            message = verify(payload, self._lookup, topic=topic)
        except SignatureError as exc:
            reason: RefusalReason = (
                exc.reason if exc.reason in ("unsigned", "unknown_key") else "bad_signature"  # type: ignore[assignment]
            )
            raise CommandRefusedError(reason, str(exc), _readable(payload)) from exc
        except ProtocolError as exc:
            raise CommandRefusedError("malformed", str(exc)) from exc
        assert isinstance(message, Command)  # the envelope said so and from_wire agreed
        return message

    def _forget_expired(self, now: datetime) -> None:
        horizon = now - self._skew
        for key in [key for key, (_, expires) in self._seen.items() if expires < horizon]:
            del self._seen[key]

    def _remember(self, command_id: uuid.UUID, issued_at: datetime, expires_at: datetime) -> None:
        while len(self._seen) >= self._capacity:
            oldest = min(self._seen, key=lambda key: self._seen[key][0])
            forgotten_issued, _ = self._seen.pop(oldest)
            if self._floor is None or forgotten_issued > self._floor:
                self._floor = forgotten_issued
        self._seen[command_id] = (issued_at, expires_at)


def _readable(payload: bytes) -> Command | None:
    """The command in a payload that failed authentication, to answer it by id."""
    try:
        message = decode(payload)
    except ProtocolError:
        return None
    return message if isinstance(message, Command) else None
