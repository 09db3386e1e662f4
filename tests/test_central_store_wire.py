"""The ingest store fed with the wire contract's messages (``shared_protocol.wire``), as
the MQTT consumer will: batches, births (the archive, the gateway's acked seq) and deaths.
On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select

from central.db import gateway_events, meters, transformer_areas
from central.ingest.store import ApplyResult, IngestStore
from shared_protocol.wire import (
    ArchiveEntry,
    Birth,
    Death,
    RecordBatch,
    WireEvent,
    WireReading,
    WireStatistic,
)

pytest_plugins = ["central_fixtures"]

GATEWAY = "gw-0001"
T0 = datetime(2026, 11, 29, tzinfo=UTC)


def wire_batch(seq_from: int, seq_to: int, session: int = 1) -> RecordBatch:
    records: list[WireReading | WireEvent | WireStatistic] = []
    for seq in range(seq_from, seq_to + 1):
        if seq % 10 == 0:
            records.append(WireEvent(seq, "000000000001", "cover_open", {"n": seq}, T0))
        elif seq % 10 == 5:
            records.append(WireStatistic(seq, "bus_errors", {"bus": "rs485-1"}, Decimal(seq), T0))
        else:
            records.append(
                WireReading(
                    seq=seq,
                    meter=f"{seq % 4:012d}",
                    obis="1.8.0",
                    time=T0 + timedelta(minutes=15 * seq),
                    value=Decimal(seq) / 8,
                    unit="kWh",
                    kind="curve",
                    source="scheduled",
                    quality="ok",
                    read_at=T0 + timedelta(minutes=15 * seq, seconds=30),
                )
            )
    return RecordBatch(GATEWAY, session, seq_from, seq_to, tuple(records), False, T0)


def birth(session: int, sent_at: datetime, acked_seq: int = 0, archive: bool = True) -> Birth:
    entries = (
        (
            ArchiveEntry("000000000001", "dlt645", "rs485-1", "area-7", "resident", False, True),
            ArchiveEntry("000000000002", "dlt698", "rs485-2", "", "industry", True, False),
        )
        if archive
        else ()
    )
    return Birth(
        gateway=GATEWAY,
        session=session,
        software_version="0.1.0",
        config_hash="c0ffee",
        archive_hash="ab12",
        meter_count=2,
        meters=entries,
        log_depth=0,
        oldest_unacked_s=None,
        last_seq=max(acked_seq, 40),
        acked_seq=acked_seq,
        clock_offset_s=Decimal("0.25"),
        boot_reason="power_on",
        sent_at=sent_at,
    )


def test_record_batches_are_stored_idempotently(store: IngestStore) -> None:
    store.enroll_gateway(GATEWAY)
    first = store.apply_record_batch(wire_batch(1, 20))
    assert first == ApplyResult(20, 20, 0, 0)
    assert store.apply_record_batch(wire_batch(1, 20)) == ApplyResult(20, 0, 20, 0)
    assert store.count_readings() == 16
    (reading,) = store.readings(
        f"{3:012d}", "1.8.0", T0 + timedelta(minutes=45), T0 + timedelta(minutes=46)
    )
    assert (reading.value, reading.seq) == (Decimal("0.375"), 3)


def test_a_birth_stores_the_archive_and_areas(store: IngestStore) -> None:
    store.enroll_gateway(GATEWAY)
    assert store.record_birth_message(birth(1, T0))
    info = store.gateway(GATEWAY)
    assert info is not None and info.online and info.session == "1"
    assert info.last_birth is not None
    assert info.last_birth["archive_hash"] == "ab12"
    assert "meters" not in info.last_birth
    with store.engine.connect() as conn:
        rows = {r.meter: r for r in conn.execute(select(meters)).all()}
        areas = conn.execute(select(transformer_areas.c.id)).scalars().all()
    assert rows["000000000001"].transformer_area == "area-7"
    assert rows["000000000002"].transformer_area is None
    assert rows["000000000002"].protected is True
    assert areas == ["area-7"]

    # A light birth (no archive) keeps the archive.
    assert store.record_birth_message(birth(2, T0 + timedelta(hours=1), archive=False))
    with store.engine.connect() as conn:
        assert len(conn.execute(select(meters)).all()) == 2


def test_a_late_will_of_an_older_session_is_ignored(store: IngestStore) -> None:
    store.enroll_gateway(GATEWAY)
    store.record_birth_message(birth(3, T0))
    # The will of session 2 carries that session's connect time; it arrives late.
    assert not store.record_death_message(Death(GATEWAY, 2, T0 - timedelta(hours=2)))
    assert store.gateway(GATEWAY).online  # type: ignore[union-attr]
    assert store.record_death_message(Death(GATEWAY, 3, T0 - timedelta(minutes=1)))
    info = store.gateway(GATEWAY)
    assert info is not None and not info.online
    # A retained birth of an older session redelivered later is stale.
    assert not store.record_birth_message(birth(2, T0 + timedelta(days=1)))


def test_a_birth_acked_above_the_watermark_moves_it_and_says_so(store: IngestStore) -> None:
    """The gateway released records on an ack this database does not remember: waiting
    for them would stall it for ever."""
    store.enroll_gateway(GATEWAY)
    store.apply_record_batch(wire_batch(1, 10))
    store.apply_record_batch(wire_batch(31, 40))  # pending above a gap
    assert store.record_birth_message(birth(1, T0, acked_seq=25))
    assert store.watermark(GATEWAY) == 25
    assert store.pending_ranges(GATEWAY) == [(31, 40)]
    assert store.apply_record_batch(wire_batch(26, 30)).up_to_seq == 40
    with store.engine.connect() as conn:
        (event,) = conn.execute(
            select(gateway_events).where(gateway_events.c.code == "watermark_adopted")
        ).all()
    assert event.detail["seq_from"] == 11 and event.detail["seq_to"] == 25

    # Acked at or below the watermark: nothing to adopt.
    assert store.record_birth_message(birth(2, T0 + timedelta(hours=1), acked_seq=20))
    assert store.watermark(GATEWAY) == 40
