"""The collector's own cost on a line with wire-time emulation: ledger marks and the log's
group commits must add little to what the wire and the meters take (issue 4: a daily pass
≤ 1.10 × Σ frame bytes × 11 / baud + meter latency)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_edge_bus_helpers import responders_645, sim_clock
from test_edge_tasks_helpers import rig, tasks_config

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
