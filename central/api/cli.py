"""`central api ...` commands: thin over the library in `central.api`."""

from __future__ import annotations

import click

__all__ = ["api", "user"]


@click.group(help="The back-office HTTP API.")
def api() -> None:
    pass


@click.group(help="Users of the back-office API and their roles.")
def user() -> None:
    pass
