"""Where a simulated bus meets the agent: a pty, a TCP serial server, or memory (asyncio).

All three run the same :class:`LineDriver`, which owns the real-time part of a
:class:`~firmware_sim.bus.Bus`: it feeds the master's bytes in with the loop's monotonic
clock, sleeps until the next line byte is due and writes it, and tells the bus when the
master's line has gone quiet. The bus core never sleeps and never logs; the driver logs a
meter that raised (with its traceback) and carries on with the next request.

- :class:`PtyTransport` — ``os.openpty()`` in raw mode; the agent opens :attr:`path` like
  a USB RS-485 adapter (``serial.Serial(path, 2400, parity="E")``).
- :class:`TcpSerialServer` — ``socket://host:port``, like the RS-485-to-Ethernet converters
  in the field. One client at a time, as on those converters; a second connection
  **replaces** the first (the old socket is closed and half-received bytes are
  forgotten). We chose replace over wait because an agent that restarts after a crash or
  a network cut would otherwise be locked out by its own dead connection until TCP
  keepalive noticed.
- :class:`MemoryTransport` — a master end in memory for tests and the benchmark.

Usage::

    async with PtyTransport(bus) as pty:
        print(pty.path)              # /dev/pts/7
        await pty.serve_forever()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import termios
import tty
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Final, Self

from firmware_sim.bus import Bus

__all__ = ["LineDriver", "MemoryTransport", "PtyTransport", "TcpSerialServer", "start_transport"]

logger = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT: Final = 0.05
"""Seconds of master silence after which a half-received frame is dropped.

Longer than Modbus t3.5 at any baud a meter uses (16 ms at 2400) and short enough that a
stray byte never delays the next request noticeably.
"""


SPEED_RELEASE_INTERVAL_S = 0.05


class LineDriver:
    """Drives one :class:`Bus` in real time over a byte-writing callable."""

    def __init__(
        self,
        bus: Bus,
        write: Callable[[bytes], None],
        *,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self.bus = bus
        self._write = write
        self._idle_timeout = idle_timeout
        self._idle_at: float | None = None
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        """The master wrote ``data`` (call from the transport's read callback)."""
        now = self._loop.time()
        try:
            self.bus.feed(data, now)
        except Exception:  # the core promises not to raise; if it does, keep the line alive
            logger.exception(
                "bus %s failed on %d master bytes; line reset", self.bus.line, len(data)
            )
            self.bus.reset_line()
        self._log_failures()
        self._idle_at = now + self._idle_timeout
        self._flush(now)
        self._wake.set()

    async def run(self) -> None:
        """Write line bytes as they fall due; runs until cancelled."""
        loop = self._loop
        while True:
            now = loop.time()
            if self._idle_at is not None and now >= self._idle_at:
                self._idle_at = None
                self.bus.line_idle()
                self._log_failures()
            self._flush(now)
            deadlines = [d for d in (self.bus.next_due(), self._idle_at) if d is not None]
            self._wake.clear()
            if not deadlines:
                await self._wake.wait()
                continue
            timeout = min(deadlines) - loop.time()
            if timeout > 0:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that races with the event firing, and close() then hangs.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()

    def _flush(self, now: float) -> None:
        out = self.bus.take_due(now)
        if out:
            self._write(out)

    def _log_failures(self) -> None:
        for failure in self.bus.take_failures():
            logger.error(
                "meter %s raised on request %s; it stays silent for this request",
                failure.device_id,
                failure.request.hex(" ").upper(),
                exc_info=failure.error,
            )


async def start_transport(
    bus: Bus, listen: str, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT
) -> PtyTransport | TcpSerialServer:
    """Start serving ``bus`` where a config says: ``"pty"`` or ``"tcp://HOST:PORT"``.

    ``socket://HOST:PORT`` (pyserial's spelling) is accepted too; port 0 picks a free
    port. The returned transport's :attr:`path` / :attr:`url` is what the agent opens.
    """
    if listen == "pty":
        pty = PtyTransport(bus, idle_timeout=idle_timeout)
        await pty.start()
        return pty
    for scheme in ("tcp://", "socket://"):
        if listen.startswith(scheme):
            host, _, port_text = listen[len(scheme) :].rpartition(":")
            if not host or not port_text.isdigit() or int(port_text) > 65535:
                break
            server = TcpSerialServer(bus, host, int(port_text), idle_timeout=idle_timeout)
            await server.start()
            return server
    raise ValueError(f"listen: {listen!r} is not 'pty' or 'tcp://HOST:PORT'")


class _Served:
    """Shared start/stop plumbing: a driver task that the transport owns."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stopped.set()

    async def serve_forever(self) -> None:
        """Wait until :meth:`close` (the transport already serves once started)."""
        await self._stopped.wait()

    async def start(self) -> object:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class PtyTransport(_Served):
    """The bus on a pseudo-terminal; the agent opens :attr:`path` as its serial port."""

    def __init__(self, bus: Bus, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        super().__init__()
        self.bus = bus
        self._idle_timeout = idle_timeout
        self._master_fd = -1
        self._slave_fd = -1
        self._outgoing = bytearray()
        self.path = ""

    async def start(self) -> str:
        """Open the pty pair and start serving; returns the device path for the agent."""
        master_fd, slave_fd = os.openpty()
        # Raw mode: no echo, no line editing, no CR/LF translation — bytes pass untouched.
        # We keep our slave fd open so the master end never sees a hang-up (EIO) while the
        # agent closes and reopens the port.
        tty.setraw(slave_fd)
        os.set_blocking(master_fd, False)
        self._master_fd, self._slave_fd = master_fd, slave_fd
        self._release_speed()
        self.path = os.ttyname(slave_fd)
        loop = asyncio.get_running_loop()
        driver = LineDriver(self.bus, self._write, idle_timeout=self._idle_timeout)
        self._driver = driver
        loop.add_reader(master_fd, self._readable)
        self._spawn(driver.run())
        self._spawn(self._keep_speed_released())
        return self.path

    async def _keep_speed_released(self) -> None:
        """Re-park the speed even when no request came: an agent killed between opening
        the port and sending would otherwise leave 2400 8E1 set, and every later open with
        the same settings is refused (see :meth:`_release_speed`)."""
        while True:
            await asyncio.sleep(SPEED_RELEASE_INTERVAL_S)
            self._release_speed()

    def _readable(self) -> None:
        try:
            data = os.read(self._master_fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            logger.warning("pty %s read failed: %s", self.path, exc)
            return
        if data:
            self._driver.data_received(data)
            self._release_speed()

    def _release_speed(self) -> None:
        """Park the pty at 38400 baud so the agent's next open changes the speed.

        Some kernels refuse (EINVAL) a pty termios update that asks for parity without
        changing the speed, and pyserial re-applies its settings on every open: the first
        ``Serial(path, 2400, parity="E")`` works, a reopen would fail. A pty ignores the
        speed anyway, so after each request we set it back to B38400 and every open is a
        speed change the kernel accepts (it drops the parity bit, which a pty lacks).
        """
        try:
            attributes = termios.tcgetattr(self._slave_fd)
            if attributes[4] != termios.B38400 or attributes[5] != termios.B38400:
                attributes[4] = attributes[5] = termios.B38400
                termios.tcsetattr(self._slave_fd, termios.TCSANOW, attributes)
        except termios.error as exc:
            logger.debug("pty %s: could not reset the speed: %s", self.path, exc)

    def _write(self, data: bytes) -> None:
        self._outgoing += data
        self._drain_outgoing()

    def _drain_outgoing(self) -> None:
        loop = asyncio.get_running_loop()
        while self._outgoing:
            try:
                written = os.write(self._master_fd, self._outgoing)
            except BlockingIOError:
                loop.add_writer(self._master_fd, self._writable)
                return
            except OSError as exc:
                logger.warning("pty %s write failed: %s", self.path, exc)
                self._outgoing.clear()
                return
            del self._outgoing[:written]
        loop.remove_writer(self._master_fd)

    def _writable(self) -> None:
        self._drain_outgoing()

    async def close(self) -> None:
        if self._master_fd < 0:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._master_fd)
        loop.remove_writer(self._master_fd)
        await self._cancel_tasks()
        os.close(self._master_fd)
        os.close(self._slave_fd)
        self._master_fd = self._slave_fd = -1


class TcpSerialServer(_Served):
    """The bus behind a TCP port, like an RS-485-to-Ethernet converter in server mode."""

    def __init__(
        self,
        bus: Bus,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        super().__init__()
        self.bus = bus
        self.host = host
        self.port = port
        self._idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._client: asyncio.StreamWriter | None = None
        self._client_task: asyncio.Task[None] | None = None
        self.connections = 0

    @property
    def url(self) -> str:
        """What the agent configures: ``socket://127.0.0.1:PORT`` (pyserial's URL form)."""
        return f"socket://{self.host}:{self.port}"

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._connected, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        previous, self._client = self._client, writer
        self.connections += 1
        if previous is not None:
            peer = previous.get_extra_info("peername")
            logger.info("%s: new client replaces %s", self.url, peer)
            previous.close()
        if self._client_task is not None:
            self._client_task.cancel()
        self.bus.reset_line()
        task = asyncio.current_task()
        assert task is not None
        self._client_task = task
        driver = LineDriver(self.bus, writer.write, idle_timeout=self._idle_timeout)
        runner = asyncio.create_task(driver.run())
        try:
            while data := await reader.read(4096):
                driver.data_received(data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            if self._client is writer:
                self._client = None
                self._client_task = None
            writer.close()

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        if self._client is not None:
            self._client.close()
        if self._client_task is not None:
            self._client_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._client_task
        await self._server.wait_closed()
        self._server = None
        await self._cancel_tasks()


class MemoryTransport(_Served):
    """The master's end of the line in memory: :meth:`write` requests, :meth:`read` bytes."""

    def __init__(self, bus: Bus, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        super().__init__()
        self.bus = bus
        self._idle_timeout = idle_timeout
        self._received = bytearray()
        self._arrived = asyncio.Event()

    async def start(self) -> None:
        self._driver = LineDriver(self.bus, self._deliver, idle_timeout=self._idle_timeout)
        self._spawn(self._driver.run())

    def _deliver(self, data: bytes) -> None:
        self._received += data
        self._arrived.set()

    def write(self, data: bytes) -> None:
        """The master sends ``data`` on the line."""
        self._driver.data_received(data)

    async def read(self, at_least: int = 1, timeout: float = 1.0) -> bytes:
        """Everything received so far once ``at_least`` bytes are in; ``b""`` on timeout
        with nothing received (what a master sees from a silent meter)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self._received) < at_least:
            self._arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        data = bytes(self._received)
        self._received.clear()
        return data

    def read_nowait(self) -> bytes:
        """Whatever has arrived, without waiting."""
        data = bytes(self._received)
        self._received.clear()
        return data

    async def close(self) -> None:
        await self._cancel_tasks()
