"""The errors of commands to gateways; each message says what was wrong and what to do."""

from __future__ import annotations

__all__ = ["CommandError", "CommandKeyError", "CommandPublishError"]


class CommandError(ValueError):
    """The request cannot become a command: an unknown kind, bad arguments, a gateway that
    is not enrolled, a meter not in the gateway's archive, a lifetime out of range."""


class CommandKeyError(CommandError):
    """Central's command signing key is missing or unusable."""


class CommandPublishError(RuntimeError):
    """The broker did not take the command (no connection, refused, no PUBACK in time)."""
