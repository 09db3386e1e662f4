"""Transports over real byte streams: a pty opened with pyserial, TCP sockets, memory."""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

import pytest
import serial
from sim_bus_doubles import (
    BrokenMeter,
    Meter645,
    master_events,
    read_energy_request,
)

from firmware_sim.bus import Bus
from firmware_sim.faults import FaultPlan
from firmware_sim.transports import (
    MemoryTransport,
    PtyTransport,
    TcpSerialServer,
    start_transport,
)
from firmware_sim.wiretime import FixedLatency, WireTime
from shared_protocol import dlt645
from shared_protocol.stream import NEED_DATA, Discarded

A, B = "000000000001", "000000000002"


def energy_of(line: bytes) -> Decimal:
    [frame] = [e for e in master_events("dlt645", line) if not isinstance(e, Discarded)]
    assert isinstance(frame, dlt645.Frame)
    return dlt645.decode_read_response(frame).values[0].value


def read_reply(read: Callable[[int], bytes], deadline: float) -> bytes:
    """Read from a blocking port until a whole 645 frame is in (or the deadline)."""
    received = b""
    parser = dlt645.StreamParser()
    while time.monotonic() < deadline:
        chunk = read(64)
        if not chunk:
            continue
        received += chunk
        parser.receive_data(chunk)
        while (event := parser.next_event()) is not NEED_DATA:
            if isinstance(event, dlt645.Frame):
                return received
    return received


def asyncio_test(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 10.0))

    return run


def run_in_thread(function: Callable[[], object]) -> asyncio.Future[object]:
    return asyncio.get_running_loop().run_in_executor(None, function)


# ---------------------------------------------------------------- memory


@asyncio_test
async def test_memory_transport_read_transaction() -> None:
    bus = Bus("dlt645", [Meter645(A), Meter645(B, Decimal("7.00"))])
    async with MemoryTransport(bus) as line:
        line.write(read_energy_request(B))
        assert energy_of(await line.read()) == Decimal("7.00")
        line.write(read_energy_request("000000000009"))
        assert await line.read(timeout=0.05) == b""


@asyncio_test
async def test_memory_transport_survives_a_meter_that_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = Bus("dlt645", [BrokenMeter(A)])
    async with MemoryTransport(bus) as line:
        with caplog.at_level(logging.ERROR, logger="firmware_sim.transports"):
            line.write(read_energy_request(A))
            assert await line.read(timeout=0.05) == b""
        [record] = caplog.records
        assert "meter 000000000001 raised" in record.getMessage()
        assert record.exc_info is not None and record.exc_info[0] is RuntimeError
        line.write(read_energy_request(A))
        assert energy_of(await line.read()) == Decimal("1234.56")
    assert bus.counters.device_errors == 1


@asyncio_test
async def test_memory_transport_late_fault_is_slept() -> None:
    plan = FaultPlan.from_dict({"faults": [{"kind": "late", "delay": 0.15}]})
    bus = Bus("dlt645", [Meter645(A)], faults=plan)
    async with MemoryTransport(bus) as line:
        started = time.monotonic()
        line.write(read_energy_request(A))
        assert await line.read(timeout=0.05) == b""
        reply = await line.read(timeout=1.0)
        assert time.monotonic() - started >= 0.15
        assert energy_of(reply) == Decimal("1234.56")


@asyncio_test
async def test_memory_transport_paces_bytes_with_wire_time() -> None:
    bus = Bus("dlt645", [Meter645(A)], wire=WireTime(baud=9600))
    async with MemoryTransport(bus) as line:
        line.write(read_energy_request(A))
        first = await line.read(at_least=1)
        assert 0 < len(first) < 10  # bytes trickle in, they do not arrive as one block
        rest = await line.read(at_least=20 - len(first))
        assert energy_of(first + rest) == Decimal("1234.56")


# ---------------------------------------------------------------- pty


@asyncio_test
async def test_pty_read_transaction_with_pyserial() -> None:
    bus = Bus("dlt645", [Meter645(A), Meter645(B, Decimal("7.00"))])
    async with PtyTransport(bus) as pty:
        assert pty.path.startswith("/dev/")

        def transaction() -> bytes:
            with serial.Serial(pty.path, 2400, parity="E", timeout=0.1) as port:
                port.write(read_energy_request(B))
                return read_reply(port.read, time.monotonic() + 2.0)

        assert energy_of(await run_in_thread(transaction)) == Decimal("7.00")  # type: ignore[arg-type]
    assert bus.counters.requests == 1


@asyncio_test
async def test_pty_survives_a_meter_that_raises_and_the_port_reopens() -> None:
    bus = Bus("dlt645", [BrokenMeter(A)])
    async with PtyTransport(bus) as pty:

        def transactions() -> list[bytes]:
            replies = []
            for _ in range(2):
                with serial.Serial(pty.path, 2400, parity="E", timeout=0.05) as port:
                    port.write(read_energy_request(A))
                    replies.append(read_reply(port.read, time.monotonic() + 0.5))
            return replies

        silent, answered = await run_in_thread(transactions)  # type: ignore[misc]
    assert silent == b""
    assert energy_of(answered) == Decimal("1234.56")


@asyncio_test
async def test_pty_wire_time_round_trip_matches_theory() -> None:
    latency = 0.02
    wire = WireTime(baud=2400, latency=FixedLatency(latency))
    bus = Bus("dlt645", [Meter645(A)], wire=wire)
    request = read_energy_request(A)
    async with PtyTransport(bus) as pty:

        def transaction() -> tuple[float, bytes]:
            with serial.Serial(pty.path, 2400, parity="E", timeout=0.01) as port:
                started = time.perf_counter()
                port.write(request)
                reply = read_reply(port.read, time.monotonic() + 2.0)
                return time.perf_counter() - started, reply

        elapsed, reply = await run_in_thread(transaction)  # type: ignore[misc]
    theory = (len(request) + len(reply)) * 11 / 2400 + latency
    assert energy_of(reply) == Decimal("1234.56")
    assert theory <= elapsed * 1.01  # never faster than the wire allows
    assert elapsed < theory * 1.25  # generous: a loaded CI machine oversleeps


# ---------------------------------------------------------------- TCP


@asyncio_test
async def test_tcp_server_with_a_plain_socket() -> None:
    bus = Bus("dlt645", [Meter645(A)])
    async with TcpSerialServer(bus) as server:
        assert server.url == f"socket://127.0.0.1:{server.port}"
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(read_energy_request(A))
        reply = await asyncio.wait_for(reader.read(64), 2.0)
        assert energy_of(reply) == Decimal("1234.56")
        writer.close()
        await writer.wait_closed()


@asyncio_test
async def test_tcp_server_with_pyserial_socket_url() -> None:
    bus = Bus("dlt645", [Meter645(A), Meter645(B, Decimal("7.00"))])
    async with TcpSerialServer(bus) as server:

        def transaction() -> bytes:
            port = serial.serial_for_url(server.url, timeout=0.1)
            try:
                port.write(read_energy_request(B))
                return read_reply(port.read, time.monotonic() + 2.0)
            finally:
                port.close()

        assert energy_of(await run_in_thread(transaction)) == Decimal("7.00")  # type: ignore[arg-type]


@asyncio_test
async def test_tcp_second_client_replaces_the_first() -> None:
    bus = Bus("dlt645", [Meter645(A)])
    async with TcpSerialServer(bus) as server:
        old_reader, old_writer = await asyncio.open_connection("127.0.0.1", server.port)
        old_writer.write(read_energy_request(A)[:7])  # half a request, then the agent dies
        await asyncio.sleep(0.02)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(old_reader.read(64), 2.0) == b""  # closed by the server
        writer.write(read_energy_request(A))
        assert energy_of(await asyncio.wait_for(reader.read(64), 2.0)) == Decimal("1234.56")
        assert server.connections == 2
        writer.close()
        old_writer.close()


@asyncio_test
async def test_tcp_survives_a_meter_that_raises() -> None:
    bus = Bus("dlt645", [BrokenMeter(A)])
    async with TcpSerialServer(bus) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.settimeout(0.1)

        def transactions() -> list[bytes]:
            replies = []
            for _ in range(2):
                sock.sendall(read_energy_request(A))
                replies.append(read_reply(_recv(sock), time.monotonic() + 0.3))
            return replies

        try:
            silent, answered = await run_in_thread(transactions)  # type: ignore[misc]
        finally:
            sock.close()
    assert silent == b""
    assert energy_of(answered) == Decimal("1234.56")


def _recv(sock: socket.socket) -> Callable[[int], bytes]:
    def read(size: int) -> bytes:
        try:
            return sock.recv(size)
        except TimeoutError:
            return b""

    return read


@asyncio_test
async def test_start_transport_from_a_config_string() -> None:
    bus = Bus("dlt645", [Meter645(A)])
    pty = await start_transport(bus, "pty")
    assert isinstance(pty, PtyTransport) and pty.path.startswith("/dev/")
    await pty.close()
    server = await start_transport(bus, "tcp://127.0.0.1:0")
    assert isinstance(server, TcpSerialServer) and server.port > 0
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(read_energy_request(A))
    assert energy_of(await asyncio.wait_for(reader.read(64), 2.0)) == Decimal("1234.56")
    writer.close()
    await server.close()
    for bad in ("serial", "tcp://:80", "tcp://host:http", "socket://h:99999"):
        with pytest.raises(ValueError, match="listen"):
            await start_transport(bus, bad)
