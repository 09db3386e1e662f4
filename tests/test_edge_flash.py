"""What the collector writes to flash, on simulated meters: only the frames of exchanges
that went wrong reach the log (the rest stay in the trace ring), one group commit per bus
cycle bounded by meters and seconds, and meters numbered bus by bus in both files."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_edge_bus_helpers import responders_645, sim_clock
from test_edge_tasks_helpers import missing_meter, rig, tasks_config

from edge_agent.archive import Meter
from edge_agent.bus.master import FailedExchange
from edge_agent.tasks import collector as collector_module
from edge_agent.tasks.collector import CYCLE_METERS
from shared_protocol import dlt645


def frames(r: object) -> list[tuple[str, str, str | None, str | None, bytes]]:
    log = r.log  # type: ignore[attr-defined]
    return log._conn.execute(  # type: ignore[no-any-return]
        "SELECT bus, direction, meter, note, frame FROM raw_frames ORDER BY id"
    ).fetchall()


def test_only_failed_exchanges_leave_frames_in_the_log(tmp_path: Path) -> None:
    clock = sim_clock()
    absent = missing_meter()
    with rig(
        tmp_path, responders_645(3, clock), tasks_config("daily_frozen"), clock=clock,
        extra_meters=[absent],
    ) as r:  # fmt: skip
        report = r.collector.run_due()
        assert report.got == 3 and report.failed >= 1  # the pass, then 补抄 tries it again
        kept = frames(r)
        # the silent meter's requests (every attempt), nothing of the three that answered
        assert kept and {meter for _, _, meter, _, _ in kept} == {absent.key}
        assert {direction for _, direction, _, _, _ in kept} == {"tx"}  # nothing came back
        bus, _, _, note, frame = kept[0]
        assert bus == "rs485-1" and note is not None and note.startswith("timeout: no reply")
        assert dlt645.decode_frame(frame).address == absent.address
        # the technician's trace ring still has every frame of the live meters
        live = {entry.meter for entry in r.master.trace()}
        assert set(r.models) <= live
        # 补抄 tried the silent meter again and stored nothing: those frames wait
        assert all(e.meter == absent.key for e in r.master.take_failed())


def test_frames_with_no_readings_to_ride_on_are_kept_after_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = sim_clock()
    absent = missing_meter(998)
    with rig(
        tmp_path, responders_645(1, clock), tasks_config(), clock=clock, extra_meters=[absent]
    ) as r:
        with pytest.raises(Exception, match="timeout"):
            r.collector.read_now(absent.key, "1-0:1.8.0")  # a technician's on-demand read
        r.collector.run_due()  # nothing due: the frames wait (FRAMES_WAIT_S) for company
        assert frames(r) == [] and r.master.failed_waiting()[0] == 1
        monkeypatch.setattr(collector_module, "FRAMES_WAIT_S", 0.0)
        r.collector.run_due()  # they have waited long enough: written on their own
        assert {meter for _, _, meter, _, _ in frames(r)} == {absent.key}
        assert r.master.failed_waiting() == (0, 0.0)


def test_a_kept_exchange_says_how_it_went(tmp_path: Path) -> None:
    clock = sim_clock()
    with rig(tmp_path, responders_645(1, clock), tasks_config(), clock=clock) as r:
        exchange = FailedExchange(
            clock.now(), "000000000001", "bad_frame: only garbled replies (2 attempts)",
            (b"\x68\x01", b"\x68\x01"), b"\xfe\x68\x99", 0.25,
        )  # fmt: skip
        r.master._keep_failed(exchange)
        assert r.collector.keep_failed_frames(now=True) == 1
        kept = frames(r)
        assert [(d, m, f) for _, d, m, _, f in kept] == [
            ("tx", "000000000001", b"\x68\x01"),
            ("tx", "000000000001", b"\x68\x01"),
            ("rx", "000000000001", b"\xfe\x68\x99"),
        ]
        assert r.collector.keep_failed_frames(now=True) == 0


def test_one_commit_per_collection_cycle_bounded_by_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readings of one cycle share the batch's created_at: one commit for the whole pass
    by default, one per meter when the time bound is zero."""
    assert CYCLE_METERS >= 2040  # a full concentrator's pass in one cycle
    clock = sim_clock()
    with rig(tmp_path, responders_645(4, clock), tasks_config("daily_frozen"), clock=clock) as r:
        r.collector.run_due()
        commits = {rec.created_at for a in r.models for rec in r.readings(a)}
        assert len(commits) == 1
    monkeypatch.setattr(collector_module, "CYCLE_SECONDS", 0.0)
    clock = sim_clock()
    with rig(
        tmp_path / "b", responders_645(4, clock), tasks_config("daily_frozen"), clock=clock
    ) as r:
        r.collector.run_due()
        per_meter = {a: {rec.created_at for rec in r.readings(a)} for a in r.models}
        assert all(len(stamps) == 1 for stamps in per_meter.values())
        assert len(set().union(*per_meter.values())) == 4


def test_meters_are_numbered_bus_by_bus_before_a_pass(tmp_path: Path) -> None:
    clock = sim_clock()
    with rig(tmp_path, responders_645(3, clock), tasks_config("daily_frozen"), clock=clock) as r:
        keys = sorted(r.models)
        # another bus's meter whose key sorts between this bus's ones
        r.archive.add(Meter(address=keys[0][:-1] + "9", protocol="dlt645-2007", bus="rs485-0"))
        r.collector.run_due()
        ranks = dict(r.log._conn.execute("SELECT meter, rank FROM meters"))
        order = sorted(ranks, key=ranks.__getitem__)
        assert order == [keys[0][:-1] + "9", *keys]  # rs485-0 first, then rs485-1 in key order
        mids = dict(r.ledger._db.execute("SELECT meter, mid FROM meters"))
        assert sorted(mids, key=mids.__getitem__) == order
