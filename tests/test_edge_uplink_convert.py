"""Log records → wire records without a broker: what the wire refuses is made safe, never
dropped."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from edge_agent.store import EventRecord, ReadingRecord, StatisticRecord
from edge_agent.uplink import UplinkSettings, plain_detail, to_wire_record
from shared_protocol.wire import WireEvent, WireReading, WireStatistic

AT = "2026-11-29T00:05:00.000000Z"


def test_a_reading_keeps_its_seq_time_and_exact_value() -> None:
    record = ReadingRecord(
        seq=7, kind="daily", created_at=AT, meter="000000123456", obis="1-0:1.8.0",
        period_ts="2026-11-28T16:00:00.000000Z", value="12345.670", unit="kWh", read_ts=AT,
        source="scheduled", quality="ok", corrections=0,
    )  # fmt: skip
    wire = to_wire_record(record)
    assert isinstance(wire, WireReading)
    assert wire.seq == 7 and wire.value == Decimal("12345.670")
    assert wire.time == datetime(2026, 11, 28, 16, tzinfo=UTC)
    assert wire.to_wire()["value"] == "12345.670"


def test_floats_in_a_detail_become_text() -> None:
    record = EventRecord(
        seq=3, kind="event", created_at=AT, meter=None, code="x", detail={"r": 0.5}, at=AT
    )
    wire = to_wire_record(record)
    assert isinstance(wire, WireEvent) and wire.detail == {"r": "0.5"}
    stat = StatisticRecord(
        seq=4, kind="event", created_at=AT, name="s", labels={"f": 1.25}, value="0.9", at=AT
    )
    assert to_wire_record(stat) == WireStatistic(
        4, "s", {"f": "1.25"}, Decimal("0.9"), datetime(2026, 11, 29, 0, 5, tzinfo=UTC)
    )


def test_an_unsendable_record_travels_as_an_event_under_its_seq() -> None:
    record = ReadingRecord(
        seq=9, kind="weird", created_at=AT, meter="m", obis="1-0:1.8.0", period_ts=AT,
        value="1", unit=None, read_ts=AT, source="scheduled", quality="ok", corrections=0,
    )  # fmt: skip
    wire = to_wire_record(record)
    assert isinstance(wire, WireEvent)
    assert wire.seq == 9 and wire.code == "uplink_unsendable_record"


def test_plain_detail_handles_what_collectors_return() -> None:
    value = plain_detail(
        {"when": datetime(2026, 1, 1, tzinfo=UTC), "n": Decimal("1.0"), 1: b"\x01"}
    )
    assert value == {"when": "2026-01-01T00:00:00.000000Z", "n": "1.0", "1": "01"}


def test_settings_refuse_half_a_tls_identity_and_silly_sizes() -> None:
    with pytest.raises(ValueError, match="go together"):
        UplinkSettings("gw-1", ca_file=None, cert_file=Path("/x"))
    with pytest.raises(ValueError, match="batch_size"):
        UplinkSettings("gw-1", batch_size=0)
    with pytest.raises(ValueError, match="window"):
        UplinkSettings("gw-1", window=0)
