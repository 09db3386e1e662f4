"""``python -m shared_protocol``: the technician's frame decoder and request builder.

Paste a frame captured on an RS-485 bus and see what it means::

    python -m shared_protocol decode \
        'FE FE FE FE 68 18 55 60 06 00 00 68 91 08 33 36 34 33 A9 54 35 33 71 16'

Build a request to send to a meter by hand::

    python -m shared_protocol encode read --address 000006605518 --di 00010000

Output is one JSON object per frame. Exit status 0 for any well-formed hex (even a frame
that turns out invalid: that is an answer, reported in ``valid`` and ``error``), 2 for bad
usage such as non-hex input.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from shared_protocol import __version__
from shared_protocol.errors import LocalProtocolError
from shared_protocol.explain import PROTOCOLS, explain, parse_hex

__all__ = ["cli", "main"]


def _emit(document: Any, compact: bool) -> None:
    text = json.dumps(document, ensure_ascii=False, indent=None if compact else 2)
    click.echo(text)


def _read_hex(parts: tuple[str, ...]) -> bytes:
    text = " ".join(parts)
    if not parts or text.strip() == "-":
        text = sys.stdin.read()
    try:
        return parse_hex(text)
    except LocalProtocolError as exc:
        raise click.UsageError(str(exc)) from None


@click.group(help=__doc__)
@click.version_option(__version__, prog_name="shared_protocol")
def cli() -> None:
    pass


@cli.command(
    help="""Decode one captured frame given as hex (spaces allowed; '-' or nothing reads stdin).

\b
Examples:
  python -m shared_protocol decode 68 AA AA AA AA AA AA 68 13 00 DF 16
  python -m shared_protocol decode --protocol dlt698.45 \
      '68 17 00 43 45 AA AA AA AA AA AA 10 DA 5F 05 01 01 40 01 02 00 00 C6 07 16'
"""
)
@click.argument("hex_text", nargs=-1, metavar="HEX")
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default="auto",
    show_default=True,
    help="Which protocol the frame is in; auto guesses from its structure.",
)
@click.option("--compact", is_flag=True, help="One line of JSON instead of indented JSON.")
def decode(hex_text: tuple[str, ...], protocol: str, compact: bool) -> None:
    raw = _read_hex(hex_text)
    _emit(explain(raw, protocol), compact)


def main() -> None:
    cli()
