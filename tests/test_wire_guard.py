"""The gateway's command guard: only fresh, signed commands for this gateway run, once."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared_protocol.errors import RemoteProtocolError
from shared_protocol.wire import (
    REFUSAL_REASONS,
    Ack,
    Command,
    CommandGuard,
    CommandRefusedError,
    RebirthArgs,
    ResyncArgs,
    canonical_bytes,
    cmd_topic,
    encode,
    sign,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CENTRAL = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def command(
    issued: timedelta = timedelta(0),
    lifetime: timedelta = timedelta(minutes=10),
    gateway: str = "gw-1",
) -> Command:
    return Command(
        uuid.uuid4(), gateway, ResyncArgs(from_seq=7), NOW + issued, NOW + issued + lifetime
    )


def signed(cmd: Command, key: Ed25519PrivateKey = CENTRAL) -> bytes:
    return sign(cmd, key, "central")


def guard(clock: Clock | None = None, **options: object) -> CommandGuard:
    return CommandGuard(CENTRAL.public_key(), clock or Clock(), gateway="gw-1", **options)  # type: ignore[arg-type]


def refusal(check: CommandGuard, payload: bytes) -> CommandRefusedError:
    with pytest.raises(CommandRefusedError) as caught:
        check.check(payload)
    assert isinstance(caught.value, RemoteProtocolError)
    assert caught.value.reason in REFUSAL_REASONS
    return caught.value


def test_a_fresh_signed_command_is_accepted() -> None:
    cmd = command()
    assert guard().check(signed(cmd), topic=cmd_topic("gw-1")) == cmd


def test_unsigned_is_refused() -> None:
    cmd = command()
    error = refusal(guard(), canonical_bytes(cmd))
    assert (error.reason, error.status) == ("unsigned", "refused")
    assert error.command == cmd  # readable, so it can be answered by id


def test_signed_by_another_key_is_refused() -> None:
    error = refusal(guard(), signed(command(), Ed25519PrivateKey.generate()))
    assert error.reason == "bad_signature"


def test_a_gateway_key_cannot_issue_commands() -> None:
    cmd = command()
    envelope = json.loads(signed(cmd))
    envelope["sig"]["key_id"] = "gw-1"
    error = refusal(
        CommandGuard(lambda _: CENTRAL.public_key(), Clock()), json.dumps(envelope).encode()
    )
    assert error.reason == "bad_signature" and "may not sign" in str(error)


def test_unknown_key_is_refused() -> None:
    error = refusal(CommandGuard(lambda _: None, Clock()), signed(command()))
    assert error.reason == "unknown_key"


def test_expired_is_refused_after_the_skew_allowance() -> None:
    clock = Clock()
    check = guard(clock, skew=timedelta(seconds=30))
    clock.now = NOW + timedelta(minutes=10, seconds=30)
    cmd = command()
    assert check.check(signed(cmd)) == cmd  # at the edge of the allowance
    clock.now += timedelta(microseconds=1)
    error = refusal(check, signed(command()))
    assert (error.reason, error.status) == ("expired", "expired")


def test_not_yet_valid_is_refused() -> None:
    check = guard(skew=timedelta(seconds=30))
    assert check.check(signed(command(issued=timedelta(seconds=30))))
    error = refusal(check, signed(command(issued=timedelta(seconds=31))))
    assert error.reason == "not_yet_valid"


def test_a_replay_is_refused_even_when_central_signs_it_again() -> None:
    check = guard()
    cmd = command()
    check.check(signed(cmd))
    error = refusal(check, signed(cmd))
    assert (error.reason, error.status) == ("replayed", "duplicate")
    assert error.command == cmd


def test_a_command_for_another_gateway_is_refused() -> None:
    error = refusal(guard(), signed(command(gateway="gw-2")))
    assert error.reason == "wrong_gateway"


def test_not_a_command_is_malformed() -> None:
    error = refusal(guard(), encode(Ack("gw-1", 1, 1, NOW)))
    assert error.reason == "malformed"
    assert refusal(guard(), b"\x00garbage").reason == "malformed"


def test_memory_is_bounded_and_never_accepts_what_it_forgot() -> None:
    clock = Clock()
    check = guard(clock, capacity=3)
    first = [command(issued=timedelta(seconds=-i)) for i in (5, 4, 3)]
    for cmd in first:
        check.check(signed(cmd))
    newest = command(issued=timedelta(seconds=-2))
    check.check(signed(newest))  # forgets the earliest-issued id
    assert len(check.remembered()) == 3
    error = refusal(check, signed(first[0]))  # forgotten, but not accepted again
    assert error.reason == "too_old"
    assert check.check(signed(command(issued=timedelta(seconds=-1))))


def test_expired_ids_are_forgotten_and_stay_refused() -> None:
    clock = Clock()
    check = guard(clock, skew=timedelta(0))
    cmd = command()
    check.check(signed(cmd))
    clock.now = NOW + timedelta(hours=1)
    check.check(signed(command(issued=timedelta(minutes=59))))
    assert [entry[0] for entry in check.remembered()] != [cmd.id]
    assert refusal(check, signed(cmd)).reason == "expired"


def test_remembered_ids_survive_a_restart() -> None:
    clock = Clock()
    cmd = command()
    before = guard(clock)
    before.check(signed(cmd))
    after = guard(clock, remembered=before.remembered())
    assert refusal(after, signed(cmd)).reason == "replayed"


def test_a_rebirth_command_has_no_arguments() -> None:
    cmd = Command(uuid.uuid4(), "gw-1", RebirthArgs(), NOW, NOW + timedelta(minutes=1))
    assert guard().check(signed(cmd)).kind == "rebirth"
