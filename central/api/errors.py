"""One error shape for every error the API returns, and the one place errors are translated.

Every error — ours, FastAPI's validation errors, Starlette's 404 and 405, a body that is
too large, an unexpected exception — leaves as::

    {"error": {"code": "not_found", "message": "meter 000000000001 not found", "detail": null}}

``code`` is a stable machine-readable word (the table below), ``message`` is for the person
reading it and says what to do, ``detail`` is structured extra information or null (for a
validation error: the list of ``{"loc", "msg", "type"}`` problems).

Exception tree (raised by routes and dependencies, translated by :func:`install`)::

    ApiError                      status  code
    ├── BadRequest                400     bad_request
    ├── Unauthorized              401     not_authenticated | token_expired | invalid_token
    │                                     | invalid_credentials | user_disabled
    ├── Forbidden                 403     forbidden
    ├── NotFound                  404     not_found
    ├── Conflict                  409     conflict
    ├── Invalid                   422     invalid (a value the schema allowed but the domain
    │                                     does not: an unknown cursor, a range too long)
    ├── TooManyRequests           429     too_many_requests
    └── Unavailable               503     unavailable (the database or broker is down)

Framework errors map to: 404 ``not_found``, 405 ``method_not_allowed``, 413
``payload_too_large``, 422 ``validation_error`` (the schema), ``invalid_characters`` (a NUL
in the path or query) or ``invalid`` (a value the database refuses); anything else is 500
``internal_error`` (logged with its traceback and the request id; the client sees only the
request id).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "ApiError",
    "BadRequest",
    "Conflict",
    "ErrorBody",
    "ErrorResponse",
    "Forbidden",
    "Invalid",
    "NotFound",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "error_response",
    "install",
]

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    code: str
    message: str
    detail: Any = None


class ErrorResponse(BaseModel):
    """The one error shape (documented in OpenAPI for every route)."""

    error: ErrorBody


class ApiError(Exception):
    """An error the client should see with ``status``, ``code`` and ``message``."""

    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        detail: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.detail = detail
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "not_authenticated"

    def __init__(self, message: str, *, code: str | None = None, detail: Any = None) -> None:
        # RFC 6750 §3: a 401 names the scheme the client should use.
        super().__init__(message, code=code, detail=detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Invalid(ApiError):
    status = 422
    code = "invalid"


class TooManyRequests(ApiError):
    status = 429
    code = "too_many_requests"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


#: Starlette / FastAPI HTTP statuses → our code and a message that says what to do.
_HTTP_CODES: Final[dict[int, tuple[str, str]]] = {
    400: ("bad_request", "the request could not be read"),
    401: ("not_authenticated", "log in: POST /api/v1/auth/token, then send the bearer token"),
    403: ("forbidden", "your role may not do this"),
    404: ("not_found", "no such resource: see /api/v1/openapi.json for the routes"),
    405: ("method_not_allowed", "this method is not allowed here"),
    413: ("payload_too_large", "the request body is too large"),
    415: ("unsupported_media_type", "send the body as application/json"),
}


def error_response(
    status: int,
    code: str,
    message: str,
    detail: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "detail": jsonable_encoder(detail)}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _validation_detail(errors: Any) -> list[dict[str, Any]]:
    # Keep what a client needs to find the field; drop pydantic's echo of the input (it can
    # be a 1 MB body or a password) and its documentation URL.
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in errors
    ]


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.detail, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = _validation_detail(exc.errors())
    fields = ", ".join(".".join(str(part) for part in item["loc"]) for item in detail[:5])
    return error_response(
        422, "validation_error", f"the request is not valid: check {fields or 'the input'}", detail
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, default_message = _HTTP_CODES.get(exc.status_code, ("http_error", "request failed"))
    message = default_message
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        if allowed:
            message = f"{request.method} is not allowed here; allowed: {allowed}"
    elif isinstance(exc.detail, str) and exc.detail and exc.status_code not in (404,):
        message = exc.detail
    return error_response(exc.status_code, code, message, None, exc.headers)


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    # The database refused a value the schema let through (a NUL inside a JSON string,
    # which PostgreSQL text cannot hold): the client's input, not a server fault.
    assert isinstance(exc, DataError)
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else "invalid value"
    return error_response(
        422, "invalid", f"a value in the request cannot be stored ({reason}): correct it"
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    log.exception(
        "unhandled error in %s %s (request %s)", request.method, request.url.path, request_id
    )
    return error_response(
        500,
        "internal_error",
        "the server failed to handle this request; report the request id to the operators",
        {"request_id": request_id},
    )


def install(app: FastAPI) -> None:
    """Route every error of ``app`` through the one shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(Exception, _unexpected_error)
