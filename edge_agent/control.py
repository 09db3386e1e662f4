"""The daemon's control socket: a Unix stream socket speaking newline-delimited JSON.

One request per line, one response per line, any number per connection::

    → {"op": "read", "args": {"meter": "000000000011", "what": "00010000"}}
    ← {"ok": true, "result": {...}}
    ← {"ok": false, "error": "no meter '42' in the archive"}

Access is by file permissions (``[control] mode``, default 0660: the agent's user and
group), not by a shared secret (edge.md D7.1). The socket file is bound under a temporary
name, given its mode and then renamed into place, so it is never reachable with looser
permissions. At start a live socket (another daemon answers on it) is refused; a stale one
(the file is there, nobody listens) is replaced.

Each client has its own thread; a malformed line gets an error response and the
connection stays usable, so one client's bad request never affects another.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_REQUEST_BYTES",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "DaemonNotRunning",
    "RemoteError",
    "socket_is_live",
]

logger = logging.getLogger("edge_agent.control")

# A request is a small JSON object; a client that sends more without a newline is broken
# (or hostile) and must not make the daemon buffer without bound.
MAX_REQUEST_BYTES = 64 * 1024

Handler = Callable[[str, Mapping[str, Any]], Any]


class ControlError(RuntimeError):
    """The control socket cannot be served or reached."""


class DaemonNotRunning(ControlError):
    """Nobody listens on the control socket."""


class RemoteError(ControlError):
    """The daemon answered ``{"ok": false, "error": ...}``."""


def socket_is_live(path: str | os.PathLike[str], timeout: float = 1.0) -> bool:
    """True when a process accepts connections on the Unix socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError:
            return False
        return True


class ControlServer:
    """Serves ``handler(op, args)`` on a Unix socket; ``claim()`` then ``start()``."""

    def __init__(self, path: str | os.PathLike[str], mode: int, handler: Handler) -> None:
        self.path = Path(path)
        self.mode = mode
        self.handler = handler
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.requests = 0
        self.errors = 0

    def claim(self) -> None:
        """Bind the socket, or refuse when another daemon is live on it."""
        if self.path.exists() or self.path.is_symlink():
            if socket_is_live(self.path):
                raise ControlError(
                    f"another edge-agent is running (it answers on {self.path}); "
                    "stop it first (systemctl stop meter2cash-edge)"
                )
            logger.info("removing stale control socket %s", self.path)
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(temporary))
            os.chmod(temporary, self.mode)
            sock.listen(16)
            os.rename(temporary, self.path)
        except BaseException:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise
        self._sock = sock

    def start(self) -> None:
        if self._sock is None:
            self.claim()
        self._thread = threading.Thread(target=self._accept, name="control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(2)

    def _accept(self) -> None:
        while not self._closing.is_set():
            sock = self._sock
            if sock is None:
                return
            try:
                client, _ = sock.accept()
            except OSError:
                if self._closing.is_set():
                    return
                continue
            with self._lock:
                self._clients.add(client)
            threading.Thread(
                target=self._serve_client, args=(client,), name="control-client", daemon=True
            ).start()

    def _serve_client(self, client: socket.socket) -> None:
        buffer = bytearray()
        try:
            while not self._closing.is_set():
                chunk = client.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, _, rest = bytes(buffer).partition(b"\n")
                    buffer = bytearray(rest)
                    if line.strip():
                        client.sendall(self.respond(line))
                if len(buffer) > MAX_REQUEST_BYTES:
                    client.sendall(
                        _encode(
                            {"ok": False, "error": f"request longer than {MAX_REQUEST_BYTES} bytes"}
                        )
                    )
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._clients.discard(client)
            client.close()

    def respond(self, line: bytes) -> bytes:
        """One request line → one response line (never raises)."""
        self.requests += 1
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.errors += 1
            return _encode({"ok": False, "error": f"not a JSON request: {exc}"})
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            self.errors += 1
            return _encode({"ok": False, "error": 'a request is {"op": "NAME", "args": {...}}'})
        args = request.get("args") or {}
        if not isinstance(args, dict):
            self.errors += 1
            return _encode({"ok": False, "error": "args must be a JSON object"})
        try:
            result = self.handler(request["op"], args)
        except Exception as exc:  # the client sees it; the daemon goes on
            self.errors += 1
            if not isinstance(exc, ValueError | LookupError | RuntimeError):
                # not a refusal but a bug: the traceback goes to the daemon's log
                logger.exception("control op %s failed", request["op"])
            return _encode({"ok": False, "error": str(exc) or type(exc).__name__})
        return _encode({"ok": True, "result": result})


def _encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, default=str).encode("utf-8") + b"\n"


class ControlClient:
    """The CLI's side: ``ControlClient(path).call("status")``."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 120.0) -> None:
        self.path = Path(path)
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> Any:
        """Send one request; the result, or :class:`RemoteError` with the daemon's message."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(os.fspath(self.path))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise DaemonNotRunning(
                    f"the daemon is not running (nothing listens on {self.path})"
                ) from exc
            except PermissionError as exc:
                raise ControlError(
                    f"no permission to use {self.path}; run as the agent's user or a member "
                    "of its group"
                ) from exc
            sock.sendall(_encode({"op": op, "args": args}))
            buffer = bytearray()
            while b"\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ControlError(f"the daemon closed {self.path} without an answer")
                buffer += chunk
        response = json.loads(bytes(buffer).partition(b"\n")[0])
        if not response.get("ok"):
            raise RemoteError(str(response.get("error")))
        return response.get("result")
