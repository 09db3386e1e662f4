"""Two small ASGI middlewares: a request id on every exchange, and a cap on body size.

They are plain ASGI (not Starlette's ``BaseHTTPMiddleware``) so a large body is refused
before the application reads it, and streaming responses pass through untouched.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimitMiddleware", "RejectNulMiddleware", "RequestIdMiddleware"]

REQUEST_ID_HEADER: Final = b"x-request-id"
# A client may pass its own id (a proxy's trace id); anything else is replaced, so a
# header cannot smuggle text into the audit log.
_CLIENT_ID: Final = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RequestIdMiddleware:
    """Sets ``request.state.request_id`` and echoes it in the ``X-Request-ID`` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope.get("headers", ()):
            if name == REQUEST_ID_HEADER and _CLIENT_ID.match(value):
                request_id = value.decode()
                break
        if request_id is None:
            request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        encoded = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name != REQUEST_ID_HEADER
                ]
                headers.append((REQUEST_ID_HEADER, encoded))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def _error(status: int, code: str, message: str, detail: Any) -> tuple[dict[str, Any], bytes]:
    """An error response in the API's one shape, for middlewares (outside FastAPI)."""
    body = json.dumps({"error": {"code": code, "message": message, "detail": detail}}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, body


class BodyLimitMiddleware:
    """Refuses a request body over ``max_bytes`` with 413 in the API's error shape.

    A declared ``Content-Length`` over the limit is refused before reading anything; a
    body without one (chunked) is read up to the limit and refused when it goes past it.
    Accepted bodies are handed on unchanged (they are at most ``max_bytes``, buffered).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        start, body = _error(
            413,
            "payload_too_large",
            f"the request body is larger than {self.max_bytes} bytes: send less per request",
            {"max_bytes": self.max_bytes},
        )
        await send(start)
        await send({"type": "http.response.body", "body": body})


class RejectNulMiddleware:
    """Refuses a NUL character in the path or query string (422).

    No identifier of ours contains one, PostgreSQL cannot store one in text at all, and a
    NUL in a log line or a file name is a classic injection; refusing it at the door keeps
    every route from having to think about it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope.get("path", "")
            or b"%00" in scope.get("query_string", b"")
            or b"\x00" in scope.get("query_string", b"")
        ):
            start, body = _error(
                422,
                "invalid_characters",
                "the path or query contains a NUL character (%00): remove it",
                None,
            )
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
