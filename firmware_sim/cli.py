"""The `firmware-sim` command line. Its commands arrive with the issues that build them."""

from __future__ import annotations

import click

import firmware_sim
from firmware_sim import __version__


@click.group(help=firmware_sim.__doc__)
@click.version_option(__version__, prog_name="firmware-sim")
def cli() -> None:
    pass


def main() -> None:
    cli()
