"""The `central` command line. Its commands arrive with the issues that build them."""

from __future__ import annotations

import click

import central
from central import __version__


@click.group(help=central.__doc__)
@click.version_option(__version__, prog_name="central")
def cli() -> None:
    pass


def main() -> None:
    cli()
