"""The API's one boundary to the other central libraries (VEE, O&M, commands): calls them
and translates their exceptions into the API's errors (``central.api.errors``), so routes
stay thin and no library error ever leaves as a 500.

=========================  ==========================================
library error              API error
=========================  ==========================================
``VeeError``               its ``http_status`` (404 / 409 / 422)
``CommandKeyError``        503 unavailable (no signing key here)
``CommandError``           422 invalid (bad kind, arguments, target)
``OpsError``               422 invalid
=========================  ==========================================
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from central.api.deps import ApiState
from central.api.errors import ApiError, Conflict, Invalid, NotFound, Unavailable

__all__ = [
    "command_gateway",
    "command_publisher",
    "exception_meter",
    "translated",
]

T = TypeVar("T")

_publisher_lock = threading.Lock()


@contextmanager
def translated() -> Iterator[None]:
    """Run a library call; its errors leave as the API's."""
    from central.commands import CommandError, CommandKeyError

    try:
        yield
    except CommandKeyError as error:
        raise Unavailable(f"commands cannot be signed on this server: {error}") from None
    except CommandError as error:
        raise Invalid(str(error)) from None
    except ValueError as error:
        raise _from_value_error(error) from None


def _from_value_error(error: ValueError) -> ApiError:
    status = getattr(error, "http_status", 422)
    if status == 404:
        return NotFound(str(error))
    if status == 409:
        return Conflict(str(error))
    return Invalid(str(error))


def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with translated():
        return function(*args, **kwargs)


# -- commands --------------------------------------------------------------------------------


def command_gateway(conn: Connection, command_id: object) -> str | None:
    """The gateway a command was sent to; None when there is no such command."""
    from central.commands import get_command

    try:
        uuid.UUID(str(command_id))
    except ValueError:
        return None
    row = get_command(conn, str(command_id))
    return None if row is None else str(row["gateway"])


def command_publisher(api: ApiState) -> Any:
    """The publisher commands go out through: the one the app was built with, or (first use)
    an MQTT publisher with central's broker identity (``M2C_BROKER_TLS_DIR``) and signing
    key (``M2C_COMMAND_KEY_PATH``)."""
    if api.command_publisher is not None:
        return api.command_publisher
    from central.commands import MqttCommandPublisher, load_command_key
    from central.ingest.service import TlsFiles, broker_config
    from central.settings import SettingsError

    with _publisher_lock:
        if api.command_publisher is None:
            with translated():
                key = load_command_key(api.settings.command_key_path)
            tls_dir = os.environ.get("M2C_BROKER_TLS_DIR")
            try:
                broker = broker_config(api.settings, TlsFiles(Path(tls_dir) if tls_dir else None))
            except SettingsError as error:
                raise Unavailable(f"commands cannot reach the broker: {error}") from None
            api.command_publisher = MqttCommandPublisher(broker, key)
    return api.command_publisher


# -- VEE -------------------------------------------------------------------------------------


def exception_meter(conn: Connection, exception_id: object) -> str | None:
    """The meter a VEE exception is about; None when there is no such exception."""
    from central.vee import get_exception

    try:
        number = int(str(exception_id))
    except ValueError:
        return None
    if not 1 <= number < 2**63:
        return None
    found = get_exception(conn, number)
    return None if found is None else str(found["meter"])
