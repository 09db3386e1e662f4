"""Wire messages: every type round-trips, and the invariants are enforced on both sides."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from test_wire_strategies import messages

from shared_protocol.errors import LocalProtocolError, MalformedFrameError
from shared_protocol.wire import (
    MESSAGE_TYPES,
    Ack,
    BackfillArgs,
    Birth,
    Command,
    CommandResult,
    RecordBatch,
    ResendArgs,
    WireEvent,
    WireReading,
    WireStatistic,
    canonical_json,
    decode,
)
from shared_protocol.wire.envelope import TopicMismatchError, _parse_json

T0 = datetime(2026, 11, 29, 0, 5, tzinfo=UTC)


def reading(seq: int, **changes: Any) -> WireReading:
    fields: dict[str, Any] = {
        "seq": seq,
        "meter": "000000123456",
        "obis": "1-0:1.8.0",
        "time": T0,
        "value": Decimal("1234.56"),
        "unit": "kWh",
        "kind": "daily",
        "source": "scheduled",
        "quality": "ok",
        "read_at": T0 + timedelta(minutes=1),
    }
    fields.update(changes)
    return WireReading(**fields)


def batch(seq_from: int, seq_to: int, seqs: list[int]) -> RecordBatch:
    return RecordBatch("gw-1", 3, seq_from, seq_to, tuple(reading(s) for s in seqs), False, T0)


@given(messages)
def test_every_message_round_trips_through_its_body(message: Any) -> None:
    body = message.to_wire()
    # through real JSON text, as the wire carries it
    again = type(message).from_wire(_parse_json(canonical_json(body), "body"))
    assert again == message
    assert again.to_wire() == body


def test_every_type_is_registered() -> None:
    assert set(MESSAGE_TYPES) == {
        "batch",
        "ack",
        "nack",
        "birth",
        "death",
        "central_state",
        "cmd",
        "cmd_result",
    }


# -- seq invariants --------------------------------------------------------------------------


def test_batch_allows_holes_in_its_range() -> None:
    assert batch(10, 20, [10, 13, 20]).records[1].seq == 13
    assert batch(10, 20, []).records == ()  # a range of evicted records only


@pytest.mark.parametrize(
    ("seq_from", "seq_to", "seqs", "words"),
    [
        (5, 4, [], "empty seq range"),
        (5, 9, [5, 5], "rise strictly"),
        (5, 9, [7, 6], "rise strictly"),
        (5, 9, [4], "rise strictly"),
        (5, 9, [10], "beyond seq_to"),
        (0, 9, [], "seq_from 0"),
    ],
)
def test_batch_seq_invariants(seq_from: int, seq_to: int, seqs: list[int], words: str) -> None:
    with pytest.raises(LocalProtocolError, match=words):
        batch(seq_from, seq_to, seqs)


def test_a_bad_body_from_the_wire_is_malformed_not_local() -> None:
    body = batch(5, 9, [5, 6]).to_wire()
    body["readings"]["seq"][1] = 5
    with pytest.raises(MalformedFrameError, match=r"batch: readings\[1\].*rise strictly"):
        RecordBatch.from_wire(body)


# -- values ------------------------------------------------------------------------------------


def test_floats_are_refused_as_values() -> None:
    with pytest.raises(LocalProtocolError, match="float"):
        reading(1, value=1234.56)
    with pytest.raises(LocalProtocolError, match="float"):
        WireEvent(1, None, "x", {"v": 0.5}, T0)


def test_decimal_text_keeps_scale_and_never_uses_exponents() -> None:
    assert reading(1, value=Decimal("0.50")).to_wire()["value"] == "0.50"
    assert reading(1, value=Decimal("1.5E+3")).to_wire()["value"] == "1500"
    assert reading(1, value=Decimal("-0.00")).to_wire()["value"] == "0.00"
    assert reading(1, value=7).to_wire()["value"] == "7"


@pytest.mark.parametrize("text", ["1e3", "1.", ".5", "+1", "NaN", "1,5", " 1", "0x10", ""])
def test_decimal_text_from_the_wire_is_plain(text: str) -> None:
    body = reading(1).to_wire() | {"value": text}
    with pytest.raises(MalformedFrameError):
        RecordBatch.from_wire(batch(1, 1, []).to_wire() | {"records": [body]})


def test_times_are_utc_with_microseconds_and_z() -> None:
    cst = timezone(timedelta(hours=8))
    record = reading(1, time=datetime(2026, 11, 29, 8, 5, tzinfo=cst))
    assert record.to_wire()["time"] == "2026-11-29T00:05:00.000000Z"
    assert record.time == T0 and record.time.tzinfo is UTC
    with pytest.raises(LocalProtocolError, match="naive"):
        reading(1, time=datetime(2026, 11, 29))


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-29T00:05:00Z",
        "2026-11-29T00:05:00.000000+00:00",
        "2026-11-29 00:05:00.000000Z",
        "2026-13-29T00:05:00.000000Z",
        "2026-11-29T00:05:00.000000z",
    ],
)
def test_only_the_one_time_form_is_accepted(text: str) -> None:
    with pytest.raises(MalformedFrameError):
        Ack.from_wire({"gateway": "gw-1", "session": 1, "up_to_seq": 0, "received_at": text})


def test_bodies_are_strict_about_fields() -> None:
    body = Ack("gw-1", 1, 5, T0).to_wire()
    with pytest.raises(MalformedFrameError, match="unknown field"):
        Ack.from_wire(body | {"extra": 1})
    del body["session"]
    with pytest.raises(MalformedFrameError, match="lacks session"):
        Ack.from_wire(body)


def test_booleans_are_not_integers() -> None:
    with pytest.raises(LocalProtocolError, match="integer"):
        Ack("gw-1", True, 5, T0)  # type: ignore[arg-type]


def test_detail_is_copied_so_a_frozen_message_stays_frozen() -> None:
    detail: dict[str, Any] = {"a": [1]}
    event = WireEvent(1, None, "power_off", detail, T0)
    detail["a"].append(2)
    assert event.detail == {"a": [1]}
    assert hash(event) == hash(WireEvent(1, None, "power_off", {"b": 1}, T0))


def test_statistic_and_event_detail_turn_decimals_and_times_into_text() -> None:
    stat = WireStatistic(1, "success_rate", {"day": T0, "ratio": Decimal("0.995")}, 1, T0)
    assert stat.labels == {"day": "2026-11-29T00:05:00.000000Z", "ratio": "0.995"}


# -- birth and commands ------------------------------------------------------------------------


def _birth(**changes: Any) -> Birth:
    fields: dict[str, Any] = {
        "gateway": "gw-1",
        "session": 1,
        "software_version": "0.1.0",
        "config_hash": "c",
        "archive_hash": "a",
        "meter_count": 0,
        "meters": (),
        "log_depth": 0,
        "oldest_unacked_s": None,
        "last_seq": 10,
        "acked_seq": 10,
        "clock_offset_s": Decimal("-0.25"),
        "boot_reason": "power_on",
        "sent_at": T0,
    }
    fields.update(changes)
    return Birth(**fields)


def test_birth_invariants() -> None:
    assert _birth(meter_count=2040).meters == ()  # a light birth
    with pytest.raises(LocalProtocolError, match="acked_seq"):
        _birth(acked_seq=11)


def _command(args: Any, lifetime: timedelta = timedelta(hours=1)) -> Command:
    return Command(uuid.uuid4(), "gw-1", args, T0, T0 + lifetime)


def test_command_kind_follows_args() -> None:
    command = _command(BackfillArgs(days=3, meters=["a", "b"]))  # type: ignore[arg-type]
    assert command.kind == "backfill"
    assert command.args.meters == ("a", "b")  # type: ignore[union-attr]
    assert command.to_wire()["args"] == {"days": 3, "meters": ["a", "b"]}


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: _command(BackfillArgs(days=0)), "days"),
        (lambda: _command(ResendArgs("m", None, T0, T0)), "empty"),
        (lambda: _command(BackfillArgs(days=1), timedelta(0)), "after issued_at"),
        (lambda: _command(BackfillArgs(days=1), timedelta(days=8)), "at most"),
        (lambda: _command({"kind": "trip"}), "args must be"),
    ],
)
def test_command_rules(make: Any, words: str) -> None:
    with pytest.raises(LocalProtocolError, match=words):
        make()


def test_command_args_are_checked_per_kind_on_the_wire() -> None:
    body = _command(BackfillArgs(days=1)).to_wire()
    for args in ({"days": 1}, {"days": "1", "meters": None}, {"from_seq": 1}, []):
        with pytest.raises(MalformedFrameError):
            Command.from_wire(body | {"args": args})
    with pytest.raises(MalformedFrameError, match="command kind"):
        Command.from_wire(body | {"kind": "trip"})
    with pytest.raises(MalformedFrameError, match="canonical lower-case"):
        Command.from_wire(body | {"id": body["id"].upper()})


def test_command_result_hex_is_lower_case_whole_bytes() -> None:
    ok = CommandResult(uuid.uuid4(), "gw-1", "ok", {}, "6812", T0)
    assert ok.meter_response_hex == "6812"
    for bad in ("681", "68GG", "68AB"):
        with pytest.raises(LocalProtocolError, match="hex"):
            CommandResult(uuid.uuid4(), "gw-1", "ok", {}, bad, T0)


def test_decode_rejects_a_message_for_another_topic() -> None:
    from shared_protocol.wire import encode

    payload = encode(Ack("gw-1", 1, 5, T0))
    assert decode(payload, topic="m2c/v1/gw/gw-1/ack") == Ack("gw-1", 1, 5, T0)
    with pytest.raises(TopicMismatchError, match="arrived on"):
        decode(payload, topic="m2c/v1/gw/gw-2/ack")
    with pytest.raises(MalformedFrameError, match="does not belong"):
        decode(payload, topic="m2c/v1/gw/gw-1/cmd")
