"""The collector's own cost on a line with wire-time emulation: ledger marks and the log's
group commits must add little to what the wire and the meters take (issue 4: a daily pass
≤ 1.10 × Σ frame bytes × 11 / baud + meter latency)."""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest
from test_edge_bus_helpers import responders_645, served, sim_clock
from test_edge_tasks_helpers import TASK_POLICY, edge_config, rig, tasks_config

from edge_agent.archive import Meter, MeterArchive
from edge_agent.store import EdgeLog
from edge_agent.tasks import Collector, Ledger
from firmware_sim.wiretime import FixedLatency, WireTime

LATENCY = 0.02


def _daily_pass(tmp_path: Path, meters: int, baud: int) -> tuple[float, float]:
    clock = sim_clock()
    wire = WireTime(baud=baud, latency=FixedLatency(LATENCY))
    with rig(
        tmp_path, responders_645(meters, clock), tasks_config("daily_frozen"), clock=clock,
        wire=wire, baud=baud, response_timeout_ms=1000,
    ) as r:  # fmt: skip
        started = time.monotonic()
        report = r.collector.collect("daily_frozen", source="scheduled")
        elapsed = time.monotonic() - started
        assert report.got == meters and r.ledger.success().rate == 1
        counters = r.master.counters
        theoretical = (counters.tx_bytes + counters.rx_bytes) * 11 / baud
        theoretical += counters.tx_frames * LATENCY
        print(
            f"{meters} meters at {baud} baud: {elapsed:.2f} s, theoretical {theoretical:.2f} s "
            f"({elapsed / theoretical:.3f} ×), {counters.tx_frames} frames"
        )
        return elapsed, theoretical


def test_daily_pass_costs_little_more_than_the_wire(tmp_path: Path) -> None:
    elapsed, theoretical = _daily_pass(tmp_path, 8, 9600)
    assert elapsed <= 1.3 * theoretical


@pytest.mark.slow
def test_32_meters_at_2400_baud(tmp_path: Path) -> None:
    elapsed, theoretical = _daily_pass(tmp_path, 32, 2400)
    assert elapsed <= 1.15 * theoretical


def test_buses_are_collected_in_parallel(tmp_path: Path) -> None:
    """Two lines of 8 meters each: the pass takes about as long as one line, not two."""
    clock = sim_clock()
    lines = []
    masters = {}
    stack = ExitStack()
    with stack:
        for index, name in enumerate(("rs485-1", "rs485-2")):
            wire = WireTime(baud=9600, latency=FixedLatency(LATENCY))
            responders = responders_645(8, clock, start=1 + 100 * index)
            master, _ = stack.enter_context(
                served(responders, "dlt645", "pty", wire=wire, baud=9600, policy=TASK_POLICY)
            )
            master.config = replace(master.config, name=name)
            masters[name] = master
            lines.append((name, responders))
        config = replace(
            edge_config(masters["rs485-1"], tasks_config("daily_frozen")),
            buses=tuple(m.config for m in masters.values()),
        )
        archive = stack.enter_context(MeterArchive(tmp_path / "archive.db"))
        for name, responders in lines:
            for responder in responders:
                archive.add(
                    Meter(address=responder.meter.address, protocol="dlt645-2007", bus=name)
                )
        log = stack.enter_context(EdgeLog(tmp_path / "edge.db"))
        ledger = stack.enter_context(Ledger(tmp_path / "ledger.db"))
        collector = Collector(config, archive, log, masters, ledger, now=clock.now)
        report = collector.collect("daily_frozen", source="scheduled")
        assert report.got == 16
        per_bus = {part.bus: part.duration_s for part in report.parts}
        print(f"two buses: {report.duration_s:.2f} s; per bus {per_bus}")
        assert report.duration_s < 0.75 * sum(per_bus.values())
        for name in masters:
            assert ledger.success(task="daily_frozen", bus=name).got == 8
