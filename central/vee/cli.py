"""`central vee ...` commands: thin over the library in `central.vee`."""

from __future__ import annotations

import click

__all__ = ["vee"]


@click.group(help="Validation, estimation and editing of readings.")
def vee() -> None:
    pass
