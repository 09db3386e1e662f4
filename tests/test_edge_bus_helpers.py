"""Shared fixtures for the bus and driver tests: simulated meters on a real pty or TCP line.

The simulator's transports are asyncio; the bus master is a blocking thread. ``SimLine``
runs the simulator's event loop in a thread of its own, so the master talks to it over a
real pty or socket exactly as it would to a USB adapter or a serial server.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from edge_agent.archive import Meter as ArchiveMeter
from edge_agent.bus import BusMaster, TimingPolicy
from edge_agent.config import BusConfig
from firmware_sim.bus import Bus
from firmware_sim.clock import SimClock
from firmware_sim.device import Device
from firmware_sim.faults import FaultPlan
from firmware_sim.load import CustomerClass, LoadProfile
from firmware_sim.meter import Meter
from firmware_sim.responders import Dlt645Responder, Dlt698Responder, ModbusResponder
from firmware_sim.transports import start_transport
from firmware_sim.wiretime import WireTime
from shared_protocol.dlt645 import Standard

# 12:00 Shanghai: far from midnight, so no freeze happens while a test runs.
SIM_NOW = datetime(2026, 1, 10, 4, 0, tzinfo=UTC)
HISTORY_DAYS = 5


def test_helpers_are_importable() -> None:
    assert SIM_NOW.tzinfo is UTC


@functools.cache
def _history(address: str, seed: int, days: int) -> Meter:
    load = LoadProfile(CustomerClass.RESIDENTIAL, seed=seed)
    meter = Meter(address, load, SIM_NOW - timedelta(days=days), seed=seed)
    meter.advance(SIM_NOW)
    return meter


def model_meter(address: str, seed: int = 1, days: int = HISTORY_DAYS) -> Meter:
    """A meter model with ``days`` of freezes up to SIM_NOW (a fresh copy each call)."""
    return copy.deepcopy(_history(address, seed, days))


def address_645(index: int) -> str:
    return f"{index:012d}"


def sim_clock() -> SimClock:
    return SimClock(SIM_NOW)


class SimLine:
    """A simulated bus served on a pty or a TCP port from a background event loop."""

    def __init__(self, bus: Bus, listen: str = "pty") -> None:
        self.bus = bus
        self.listen = listen
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.transport: Any = None
        self.url = ""

    def start(self) -> str:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_transport(self.bus, self.listen), self.loop)
        self.transport = future.result(5)
        self.url = getattr(self.transport, "path", "") or self.transport.url
        return self.url

    def call(self, function: Any, *args: Any) -> Any:
        """Run ``function`` on the simulator's loop (meters are not thread-safe)."""

        async def run() -> Any:
            return function(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def stop(self) -> None:
        if self.transport is not None:
            closing = asyncio.run_coroutine_threadsafe(self.transport.close(), self.loop)
            try:
                closing.result(2)
            except TimeoutError:
                # Python 3.11's wait_for can swallow the cancel of the simulator's
                # LineDriver.run, so close() may never return; the loop stops anyway.
                closing.cancel()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def bus_config(url: str, protocol: str = "dlt645", **overrides: Any) -> BusConfig:
    settings: dict[str, Any] = {
        "baud": 115200,
        "response_timeout_ms": 300,
        "inter_byte_timeout_ms": 50,
        "turnaround_ms": 0,
        "pre_send_silence_ms": 0,
        "retries": 1,
    }
    settings.update(overrides)
    return BusConfig(name="rs485-1", port=url, protocol=protocol, **settings)


FAST_POLICY = TimingPolicy(min_response_timeout=0.1, probe_interval=0.5, max_probe_interval=2.0)


@contextmanager
def served(
    devices: Iterable[Device],
    line: str,
    listen: str = "pty",
    *,
    faults: FaultPlan | None = None,
    per_device_faults: dict[str, FaultPlan] | None = None,
    policy: TimingPolicy = FAST_POLICY,
    wire: WireTime | None = None,
    **config: Any,
) -> Iterator[tuple[BusMaster, SimLine]]:
    """A started BusMaster on a served simulated bus; both torn down afterwards."""
    bus = Bus(line, faults=faults, wire=wire)
    for device in devices:
        plan = (per_device_faults or {}).get(device.device_id)
        bus.attach(device, faults=plan)
    sim = SimLine(bus, listen)
    url = sim.start()
    master = BusMaster(
        bus_config(url, line if line != "dlt698.45" else "dlt698", **config), policy=policy
    )
    master.start()
    try:
        yield master, sim
    finally:
        master.stop()
        sim.stop()


def responders_645(
    count: int, clock: SimClock, standard: Standard = Standard.DLT645_2007, start: int = 1
) -> list[Dlt645Responder]:
    return [
        Dlt645Responder(model_meter(address_645(i), seed=i), clock, standard=standard)
        for i in range(start, start + count)
    ]


def archive_meter(address: str, protocol: str = "dlt645-2007", **fields: Any) -> ArchiveMeter:
    return replace(ArchiveMeter(address=address, protocol=protocol, bus="rs485-1"), **fields)


__all__ = [
    "FAST_POLICY",
    "SIM_NOW",
    "Dlt698Responder",
    "ModbusResponder",
    "SimLine",
    "address_645",
    "archive_meter",
    "bus_config",
    "model_meter",
    "responders_645",
    "served",
    "sim_clock",
]
