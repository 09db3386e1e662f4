"""The `edge-agent` command line. Its commands arrive with the issues that build them."""

from __future__ import annotations

import click

import edge_agent
from edge_agent import __version__


@click.group(help=edge_agent.__doc__)
@click.version_option(__version__, prog_name="edge-agent")
def cli() -> None:
    pass


def main() -> None:
    cli()
