"""Simulator bus speed: transactions per second, and wire timing against theory.

    python bench/sim.py              # table
    python bench/sim.py --json       # machine-readable
    python bench/sim.py --seconds 2 --round-trips 20

(a) Throughput without wire-time: one *transaction* is a 645 read of DI 00010000 — the
    master encodes the request, the bus frames it and hands it to every meter on the line,
    the addressed meter decodes it and encodes its reply, the master decodes the reply into
    a value. Measured through the bus core alone and through the core + in-memory asyncio
    transport, with 1 and with 32 meters on the line (every meter sees every request, as on
    a real bus). Best of five runs of ``--seconds / 5``. Target: ≥ 2 000 tx/s on one core.
(b) Wire timing with emulation at 2400 baud 8E1 over a real pty opened with pyserial: each
    round trip (write request → last reply byte read) against the theory
    Σ bytes × 11 / 2400 + latency. Target: within 5 %.

The meters here are small codec-backed test meters (the same shape as the bus tests' test
doubles), so the figures measure the bus and transports, not the meter model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import serial

from firmware_sim.bus import Bus
from firmware_sim.transports import MemoryTransport, PtyTransport
from firmware_sim.wiretime import FixedLatency, WireTime
from shared_protocol import dlt645
from shared_protocol.errors import ProtocolError
from shared_protocol.stream import NEED_DATA

ENERGY_DI = 0x00010000
TARGET_ADDRESS = "000000000001"
LATENCY = 0.020
REPLY_SIZE = 20  # 68 A×6 68 91 08 DI×4 energy×4 CS 16
BAUD = 2400


class BenchMeter:
    """A 645-2007 meter answering DI 00010000 with a fixed reading (a test double)."""

    protocol = "dlt645-2007"

    def __init__(self, address: str) -> None:
        self.device_id = address
        self._reply = dlt645.encode_frame(
            dlt645.read_response(
                address, ENERGY_DI, dlt645.encode_values(ENERGY_DI, [Decimal("1234.56")])
            ),
            0,
        )

    def respond(self, request: bytes) -> bytes | None:
        try:
            frame = dlt645.decode_frame(request)
        except ProtocolError:
            return None
        if frame.address not in (self.device_id, dlt645.WILDCARD_ADDRESS):
            return None
        if dlt645.decode_read_request(frame).di != ENERGY_DI:
            return None
        # Re-encode each time, as a meter model would, so the codec cost is counted.
        data = dlt645.encode_values(ENERGY_DI, [Decimal("1234.56")])
        return dlt645.encode_frame(dlt645.read_response(self.device_id, ENERGY_DI, data), 0)


def make_bus(meters: int, wire: WireTime | None = None) -> Bus:
    addresses = [f"{index:012d}" for index in range(1, meters + 1)]
    return Bus("dlt645", [BenchMeter(address) for address in addresses], wire=wire)


def master_request() -> bytes:
    return dlt645.encode_frame(dlt645.read_request(TARGET_ADDRESS, ENERGY_DI))


def master_value(reply: bytes) -> Decimal:
    frame = dlt645.decode_frame(reply)
    return dlt645.decode_read_response(frame).values[0].value


def best_rate(run: Callable[[float], int], seconds: float) -> float:
    rates = []
    for _ in range(5):
        started = time.perf_counter()
        count = run(seconds / 5)
        rates.append(count / (time.perf_counter() - started))
    return max(rates)


def core_run(meters: int) -> Callable[[float], int]:
    bus = make_bus(meters)

    def run(budget: float) -> int:
        count = 0
        deadline = time.perf_counter() + budget
        while time.perf_counter() < deadline:
            bus.feed(master_request())
            assert master_value(bus.take_due(0.0)) == Decimal("1234.56")
            count += 1
        return count

    return run


def memory_run(meters: int) -> Callable[[float], int]:
    def run(budget: float) -> int:
        async def main() -> int:
            async with MemoryTransport(make_bus(meters)) as line:
                count = 0
                deadline = time.perf_counter() + budget
                while time.perf_counter() < deadline:
                    line.write(master_request())
                    assert master_value(await line.read(at_least=REPLY_SIZE)) == Decimal("1234.56")
                    count += 1
                return count

        return asyncio.run(main())

    return run


MODEL_DIS = (0x00010000, 0x0001FF00, 0x02010100, 0x05060101)  # energy, block, voltage, daily


def model_run(meters: int) -> Callable[[float], int]:
    """The real meter model: a transformer area of 645-2007 households on the bus core.

    The master cycles through the meters and a realistic DI mix (energy, the tariff block,
    voltage, yesterday's daily freeze), so the figure includes the model's register
    integration, freezes and the responder, not a canned reply.
    """
    from datetime import UTC, datetime, timedelta

    from firmware_sim.area import HouseholdSpec, TransformerArea
    from firmware_sim.clock import SimClock

    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = SimClock(start, acceleration=60.0)
    addresses = [f"{index:012d}" for index in range(1, meters + 1)]
    area = TransformerArea(
        [HouseholdSpec(f"h{index}", address) for index, address in enumerate(addresses)],
        start,
        clock=clock,
    )
    area.fast_forward(timedelta(days=2))
    devices = [d for name, d in area.devices().items() if name != "supply"]
    bus = Bus("dlt645", devices)
    requests = [
        dlt645.encode_frame(dlt645.read_request(address, di))
        for address in addresses
        for di in MODEL_DIS
    ]

    def run(budget: float) -> int:
        count = 0
        deadline = time.perf_counter() + budget
        while time.perf_counter() < deadline:
            bus.feed(requests[count % len(requests)])
            reply = dlt645.decode_frame(bus.take_due(0.0))
            assert dlt645.decode_read_response(reply).values
            count += 1
        return count

    return run


def throughput(seconds: float) -> list[dict[str, Any]]:
    rows = []
    paths = (
        ("bus core, test-double meters", core_run),
        ("core + memory transport, test-double meters", memory_run),
        ("bus core, meter model (energy/block/voltage/daily mix)", model_run),
    )
    for path, factory in paths:
        for meters in (1, 32):
            rate = best_rate(factory(meters), seconds)
            rows.append({"path": path, "meters": meters, "tx_per_s": round(rate)})
    return rows


def read_frame(port: serial.Serial, deadline: float) -> bytes:
    """Read until one whole 645 frame is in, without waiting on pyserial's timeout."""
    parser = dlt645.StreamParser()
    received = b""
    while time.monotonic() < deadline:
        chunk = port.read(max(1, port.in_waiting))
        received += chunk
        parser.receive_data(chunk)
        while (event := parser.next_event()) is not NEED_DATA:
            if isinstance(event, dlt645.Frame):
                return received
    raise TimeoutError(f"no reply frame within the deadline (got {received.hex()})")


def wire_timing(round_trips: int) -> dict[str, Any]:
    request = master_request()
    measured: list[float] = []
    reply_sizes: list[int] = []

    async def main() -> None:
        wire = WireTime(baud=BAUD, latency=FixedLatency(LATENCY))
        async with PtyTransport(make_bus(1, wire)) as pty:

            def master() -> None:
                with serial.Serial(pty.path, BAUD, parity="E", timeout=0.5) as port:
                    for _ in range(round_trips):
                        started = time.perf_counter()
                        port.write(request)
                        reply = read_frame(port, time.monotonic() + 2.0)
                        measured.append(time.perf_counter() - started)
                        reply_sizes.append(len(reply))
                        time.sleep(0.02)  # inter-frame silence before the next request

            await asyncio.get_running_loop().run_in_executor(None, master)

    asyncio.run(main())
    reply_size = reply_sizes[0]
    theory = (len(request) + reply_size) * 11 / BAUD + LATENCY
    mean = statistics.fmean(measured)
    return {
        "baud": BAUD,
        "request_bytes": len(request),
        "reply_bytes": reply_size,
        "latency_s": LATENCY,
        "round_trips": round_trips,
        "theory_ms": round(theory * 1000, 2),
        "measured_mean_ms": round(mean * 1000, 2),
        "measured_min_ms": round(min(measured) * 1000, 2),
        "measured_max_ms": round(max(measured) * 1000, 2),
        "error_pct": round((mean - theory) / theory * 100, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--seconds", type=float, default=2.5, help="time budget per figure")
    parser.add_argument("--round-trips", type=int, default=20, help="pty round trips to time")
    args = parser.parse_args()
    machine = (
        f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}"
    )
    rows = throughput(args.seconds)
    timing = wire_timing(args.round_trips)
    if args.json:
        print(json.dumps({"machine": machine, "throughput": rows, "wire_timing": timing}, indent=2))
        return
    print(f"# firmware_sim bus — {machine}\n")
    print("| path | meters on the line | tx/s |")
    print("|---|---:|---:|")
    for row in rows:
        print(f"| {row['path']} | {row['meters']} | {row['tx_per_s']:,} |")
    print(
        f"\nWire time at {timing['baud']} baud 8E1 over a pty (pyserial),"
        f" {timing['round_trips']} round trips:\n"
    )
    print("| request B | reply B | latency | theory | measured mean (min–max) | error |")
    print("|---:|---:|---:|---:|---:|---:|")
    latency_ms = timing["latency_s"] * 1000
    spread = f"{timing['measured_min_ms']}–{timing['measured_max_ms']}"
    print(
        f"| {timing['request_bytes']} | {timing['reply_bytes']} | {latency_ms:.0f} ms"
        f" | {timing['theory_ms']} ms | {timing['measured_mean_ms']} ms ({spread})"
        f" | {timing['error_pct']:+.2f} % |"
    )


if __name__ == "__main__":
    main()
