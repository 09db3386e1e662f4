"""`central ops ...` commands: thin over the library in `central.ops`."""

from __future__ import annotations

import click

__all__ = ["ops"]


@click.group(help="Collection O&M figures, the worklist, the readiness check and commands.")
def ops() -> None:
    pass
