"""The errors VEE raises to its callers (the API maps them to HTTP statuses)::

    VeeError (ValueError)
    ├── ExceptionNotFoundError   404  no VEE exception with that id
    ├── ExceptionClosedError     409  the exception is already resolved or overridden
    └── InvalidVeeRequestError   422  bad input: unknown rule or parameter, a value out of
                                      range, a naive time, an override value that does not fit

Every message names what was wrong and what to do. Database errors propagate as
SQLAlchemy's.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ExceptionClosedError",
    "ExceptionNotFoundError",
    "InvalidVeeRequestError",
    "VeeError",
]


class VeeError(ValueError):
    """Base of VEE's errors; ``http_status`` is the status an API answers with."""

    http_status: ClassVar[int] = 422


class ExceptionNotFoundError(VeeError):
    """No VEE exception has the id asked for."""

    http_status: ClassVar[int] = 404


class ExceptionClosedError(VeeError):
    """The exception was already resolved or overridden; closed exceptions keep their audit
    fields and are not changed again."""

    http_status: ClassVar[int] = 409


class InvalidVeeRequestError(VeeError):
    """A request VEE cannot carry out as given; the message says which field and why."""

    http_status: ClassVar[int] = 422
