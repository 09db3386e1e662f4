"""Hypothesis strategies for every wire message, shared by the other tests/test_wire*.py files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from shared_protocol.wire import (
    COMMAND_STATUSES,
    NACK_REASONS,
    READING_KINDS,
    READING_SOURCES,
    Ack,
    ArchiveEntry,
    BackfillArgs,
    Birth,
    CentralState,
    ClockSyncArgs,
    Command,
    CommandResult,
    Death,
    Nack,
    ReadNowArgs,
    RebirthArgs,
    RecordBatch,
    ResendArgs,
    ResyncArgs,
    WireEvent,
    WireReading,
    WireStatistic,
)

MAX64 = 2**63 - 1

gateway_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True).filter(
    lambda g: g != "central"
)
texts = st.text(
    st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]), min_size=1, max_size=20
)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
decimals = st.decimals(
    allow_nan=False, allow_infinity=False, places=3, min_value=-(10**9), max_value=10**9
)
seqs = st.integers(1, MAX64)
sessions = st.integers(0, MAX64)
json_leaves = st.none() | st.booleans() | st.integers(-MAX64, MAX64) | texts
details = st.dictionaries(
    texts,
    st.recursive(
        json_leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
        max_leaves=8,
    ),
    max_size=4,
)


def reading(seq: int) -> st.SearchStrategy[WireReading]:
    return st.builds(
        WireReading,
        seq=st.just(seq),
        meter=texts,
        obis=texts,
        time=times,
        value=decimals,
        unit=st.none() | texts,
        kind=st.sampled_from(sorted(READING_KINDS)),
        source=st.sampled_from(sorted(READING_SOURCES)),
        quality=texts,
        read_at=times,
    )


def event(seq: int) -> st.SearchStrategy[WireEvent]:
    return st.builds(
        WireEvent, seq=st.just(seq), meter=st.none() | texts, code=texts, detail=details, at=times
    )


def statistic(seq: int) -> st.SearchStrategy[WireStatistic]:
    return st.builds(
        WireStatistic, seq=st.just(seq), name=texts, labels=details, value=decimals, at=times
    )


@st.composite
def batches(draw: st.DrawFn) -> RecordBatch:
    seq_from = draw(st.integers(1, 10**12))
    picked = draw(st.lists(st.integers(0, 50), max_size=12, unique=True))
    span = draw(st.integers(max(picked, default=0), 60))
    records = tuple(
        draw(st.one_of(reading(seq_from + i), event(seq_from + i), statistic(seq_from + i)))
        for i in sorted(picked)
    )
    return RecordBatch(
        gateway=draw(gateway_ids),
        session=draw(sessions),
        seq_from=seq_from,
        seq_to=seq_from + span,
        records=records,
        historical=draw(st.booleans()),
        sent_at=draw(times),
    )


archive_entries = st.builds(
    ArchiveEntry,
    address=texts,
    protocol=st.sampled_from(["dlt645-2007", "dlt645-1997", "dlt698.45", "modbus-rtu"]),
    bus=texts,
    area=st.text(max_size=5, alphabet="abc-"),
    customer_class=texts,
    protected=st.booleans(),
    prepaid=st.booleans(),
)


@st.composite
def births(draw: st.DrawFn) -> Birth:
    meters = draw(st.lists(archive_entries, max_size=5, unique_by=lambda e: e.address))
    last_seq = draw(st.integers(0, MAX64))
    return Birth(
        gateway=draw(gateway_ids),
        session=draw(sessions),
        software_version=draw(texts),
        config_hash=draw(texts),
        archive_hash=draw(texts),
        meter_count=len(meters) if meters else draw(st.integers(0, 4096)),
        meters=tuple(meters),
        tasks=tuple(draw(st.lists(texts, max_size=3))),
        log_depth=draw(st.integers(0, MAX64)),
        oldest_unacked_s=draw(st.none() | st.integers(0, 10**9)),
        last_seq=last_seq,
        acked_seq=draw(st.integers(0, last_seq)),
        clock_offset_s=draw(st.none() | decimals),
        boot_reason=draw(texts),
        sent_at=draw(times),
    )


acks = st.builds(
    Ack, gateway=gateway_ids, session=sessions, up_to_seq=st.integers(0, MAX64), received_at=times
)


@st.composite
def nacks(draw: st.DrawFn) -> Nack:
    known = draw(st.booleans())
    seq_from = draw(seqs) if known else None
    seq_to = draw(st.integers(seq_from, MAX64)) if seq_from is not None else None
    return Nack(
        gateway=draw(gateway_ids),
        session=draw(st.none() | sessions),
        seq_from=seq_from,
        seq_to=seq_to,
        reason=draw(st.sampled_from(sorted(NACK_REASONS))),
        detail=draw(
            st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs"]), max_size=30)
        ),
        at=draw(times),
    )


deaths = st.builds(Death, gateway=gateway_ids, session=sessions, at=times)
central_states = st.builds(CentralState, online=st.booleans(), at=times)

meter_lists = st.none() | st.lists(texts, max_size=3).map(tuple)


@st.composite
def resend_args(draw: st.DrawFn) -> ResendArgs:
    start = draw(times)
    return ResendArgs(
        meter=draw(texts),
        obis=draw(st.none() | texts),
        start=start,
        end=start + draw(st.timedeltas(timedelta(microseconds=1), timedelta(days=40))),
    )


command_args = st.one_of(
    st.just(RebirthArgs()),
    st.builds(ResyncArgs, from_seq=st.integers(0, MAX64)),
    resend_args(),
    st.builds(ReadNowArgs, meter=texts, what=texts),
    st.builds(BackfillArgs, days=st.integers(1, 31), meters=meter_lists),
    st.builds(ClockSyncArgs, meters=meter_lists),
)


@st.composite
def commands(draw: st.DrawFn) -> Command:
    issued = draw(times)
    return Command(
        id=draw(st.uuids()),
        gateway=draw(gateway_ids),
        args=draw(command_args),
        issued_at=issued,
        expires_at=issued + draw(st.timedeltas(timedelta(seconds=1), timedelta(days=7))),
    )


command_results = st.builds(
    CommandResult,
    id=st.uuids(),
    gateway=gateway_ids,
    status=st.sampled_from(sorted(COMMAND_STATUSES)),
    detail=details,
    meter_response_hex=st.none() | st.binary(max_size=40).map(bytes.hex),
    at=times,
)

messages = st.one_of(
    batches(), acks, nacks(), births(), deaths, central_states, commands(), command_results
)


@given(messages)
def test_strategies_build_valid_messages(message: object) -> None:
    assert type(message).__name__ in {
        "RecordBatch",
        "Ack",
        "Nack",
        "Birth",
        "Death",
        "CentralState",
        "Command",
        "CommandResult",
    }
