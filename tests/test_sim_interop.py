"""Interop: independent client implementations read our simulated meters over real TCP.

The simulator is built from an area config and served on 127.0.0.1 by its
``TcpSerialServer`` (the RS-485-to-Ethernet converter); the peers are the PyPI packages
``dlt698`` (C++ core) and ``dlt645`` (pure Python), which share no code with ours. The
simulated clock is frozen (its wall clock never moves), so what a peer reads must equal
what the meter model holds at that instant, value for value.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from firmware_sim.clock import SimClock
from firmware_sim.config import Simulation, build, parse_config
from firmware_sim.meter import Meter

CONFIG = """
[simulation]
start = 2026-05-01T00:00:00Z
seed = 11
fast_forward_days = 3

[area]
id = "interop"
supply_bus = "line-698"

[[buses]]
name = "line-645"
protocol = "dlt645"
transport = "tcp://127.0.0.1:0"

[[buses]]
name = "line-698"
protocol = "dlt698.45"
transport = "tcp://127.0.0.1:0"

[[meters]]
id = "flat-645"
address = "000006605518"
protocol = "dlt645-2007"
bus = "line-645"

[[meters]]
id = "neighbour-645"
address = "000006605519"
protocol = "dlt645-2007"
bus = "line-645"

[[meters]]
id = "flat-698"
address = "000000001234"
protocol = "dlt698.45"
bus = "line-698"
customer_class = "commercial"

[[meters]]
id = "shop-698"
address = "000000001235"
protocol = "dlt698.45"
bus = "line-698"
"""


class Served:
    """A simulation served on its own event loop thread, as ``firmware-sim run`` does."""

    def __init__(self, simulation: Simulation) -> None:
        self.simulation = simulation
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.where: dict[str, str] = self.call(simulation.start())

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def host_port(self, bus: str) -> tuple[str, int]:
        host, port = self.where[bus].removeprefix("socket://").rsplit(":", 1)
        return host, int(port)

    def meter(self, meter_id: str) -> Meter:
        return self.simulation.area.meters[meter_id]

    def close(self) -> None:
        self.call(self.simulation.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    config = parse_config(CONFIG)
    frozen = SimClock(config.simulation.start, wall=lambda: 0.0)
    simulation = build(config, clock=frozen)
    simulation.fast_forward(config.simulation.fast_forward_days)
    server = Served(simulation)
    yield server
    server.close()


# ---------------------------------------------------------------- dlt698 (C++ core)


@pytest.fixture(scope="module")
def peer698() -> Any:
    return pytest.importorskip("dlt698")


def _connect_698(peer: Any, served: Served, address: str) -> Any:
    native = peer._native
    options = native.ClientOptions()
    options.login_timeout = 5.0
    options.transport_timeout = 5.0
    session = options.protocol
    # The peer's ServerAddress.bytes is wire order (low byte first), reference §3.
    session.server = native.ServerAddress(bytes=bytes.fromhex(address)[::-1])
    session.request_timeout = 5.0
    options.protocol = session
    client = peer.Client(options)
    # local_preset: a preset association, no LINK login or CONNECT — our meters, like a
    # meter on a local RS-485 port, answer GETs without an application association.
    host, port = served.host_port("line-698")
    client.connect_tcp(host, port, native.ConnectionProfile.local_preset)
    return client


def _close_698(client: Any) -> None:
    # disconnect() sends RELEASE, which our meters do not answer (no association to
    # release); request_disconnect drops the link without waiting for it.
    client.request_disconnect()
    client.close()


def _oad(peer: Any, oi: int, attribute: int) -> Any:
    return peer._native.Oad(oi=oi, attribute=attribute, index=0)


def test_dlt698_client_reads_energy_voltage_and_clock(peer698: Any, served: Served) -> None:
    client = _connect_698(peer698, served, "000000001234")
    try:
        energy = client.get(_oad(peer698, 0x0010, 2)).require_data()
        voltage = client.get(_oad(peer698, 0x2000, 2)).require_data()
        clock = client.get(_oad(peer698, 0x4000, 2)).require_data()
    finally:
        _close_698(client)

    meter = served.meter("flat-698")
    snapshot = meter.snapshot()
    # 00100200: forward active energy, total then tariffs 1-4, double-long-unsigned 0.01 kWh
    read = [Decimal(item.value).scaleb(-2) for item in energy.value]
    assert read == [snapshot.import_kwh(t) for t in range(5)]
    assert read[0] > 0 and read[0] == sum(read[1:])
    # 20000200: voltage per phase, long-unsigned 0.1 V
    volts = [Decimal(item.value).scaleb(-1) for item in voltage.value]
    assert volts == list(meter.instantaneous().voltage)
    assert all(Decimal(200) < v < Decimal(240) for v in volts)
    # 40000200: date_time_s; the peer gives the raw fields [year_hi, year_lo, M, D, h, m, s]
    year_hi, year_lo, month, day, hour, minute, second = clock.value
    shown = datetime(year_hi << 8 | year_lo, month, day, hour, minute, second)
    assert shown == meter.local_time().replace(microsecond=0)
    assert shown == datetime(2026, 5, 4, 8, 0, 0)  # 3 days after 00:00 UTC, in UTC+8


def test_dlt698_client_reads_the_right_meter_on_a_shared_line(peer698: Any, served: Served) -> None:
    readings = {}
    for meter_id, address in (("shop-698", "000000001235"), ("supply", "990000000001")):
        client = _connect_698(peer698, served, address)
        try:
            data = client.get(_oad(peer698, 0x0010, 2)).require_data()
        finally:
            _close_698(client)
        readings[meter_id] = Decimal(data.value[0].value).scaleb(-2)
    assert readings["shop-698"] == served.meter("shop-698").snapshot().import_kwh(0)
    assert readings["supply"] == served.simulation.area.supply.snapshot().import_kwh(0)
    assert readings["supply"] > readings["shop-698"]


# ---------------------------------------------------------------- dlt645 (pure Python)


def test_dlt645_client_reads_forward_active_energy(served: Served) -> None:
    peer = pytest.importorskip("dlt645")
    host, port = served.host_port("line-645")
    service = peer.MeterClientService.new_tcp_client(host, port, 5)
    try:
        for meter_id, address in (("flat-645", "000006605518"), ("neighbour-645", "000006605519")):
            # Bug B1 (reference §3): the peer puts the address on the wire in the order it
            # is given, not reversed as DL/T 645 requires. Giving it the wire order
            # (low byte first: 18 55 60 06 00 00) makes its bytes right.
            service.set_address(bytes.fromhex(address)[::-1].hex())
            item = service.read_00(0x00010000)
            assert item is not None, f"no answer from {address}"
            expected = served.meter(meter_id).snapshot().import_kwh(0)
            assert Decimal(str(item.value)) == expected
            assert expected > 0
    finally:
        service.client.disconnect()
