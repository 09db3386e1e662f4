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
from datetime import UTC, datetime
from typing import Any

import click

from shared_protocol import __version__
from shared_protocol import common_requests as requests
from shared_protocol.errors import LocalProtocolError
from shared_protocol.explain import PROTOCOLS, explain, parse_hex
from shared_protocol.timebase import DEFAULT_METER_ZONE, utc_to_meter_time

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
  python -m shared_protocol decode --model sdm630 --start 0 01 04 04 43 66 00 00 0E 1F
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
@click.option(
    "--model",
    help="Modbus meter model (sdm120, sdm630, ddsu666, dtsu666): decode register values.",
)
@click.option("--start", help="Modbus: first register the read asked for (72, 0x48 or 48h).")
@click.option("--compact", is_flag=True, help="One line of JSON instead of indented JSON.")
def decode(
    hex_text: tuple[str, ...],
    protocol: str,
    model: str | None,
    start: str | None,
    compact: bool,
) -> None:
    raw = _read_hex(hex_text)
    try:
        result = explain(
            raw,
            protocol,
            modbus_model=model,
            modbus_start=None if start is None else _int(start),
        )
    except LocalProtocolError as exc:
        raise _local_error(exc) from None
    _emit(result, compact)


def _hex(raw: bytes) -> str:
    return raw.hex(" ").upper()


def _emit_frame(raw: bytes, as_json: bool, protocol: str) -> None:
    if as_json:
        _emit({"hex": _hex(raw), "explain": explain(raw, protocol)}, compact=False)
    else:
        click.echo(_hex(raw))


def _local_error(exc: LocalProtocolError) -> click.UsageError:
    return click.UsageError(str(exc))


def _int(text: str) -> int:
    """Register numbers and unit ids as technicians write them: 72, 0x48 or 48h."""
    cleaned = text.strip().lower()
    try:
        if cleaned.endswith("h"):
            return int(cleaned[:-1], 16)
        return int(cleaned, 0)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a number (write 72, 0x48 or 48h)") from None


_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the hex and its decoded explanation as JSON."
)


@cli.group(
    help="""Build a request frame to send to a meter by hand; prints it as hex.

\b
Examples:
  python -m shared_protocol encode read --address 000006605518 --di 00010000
  python -m shared_protocol encode read --protocol dlt645-1997 --address 000000063295 --di 9010
  python -m shared_protocol encode read --address 123456789012 --oad 00100200
  python -m shared_protocol encode read-address
  python -m shared_protocol encode time-sync --at '2026-11-29 22:00:00'
  python -m shared_protocol encode modbus-read --unit 1 --function 4 --start 0x0000 --count 2
"""
)
def encode() -> None:
    pass


@encode.command(
    "read",
    help="""Read one data item: a 645 DI (--di) or a 698.45 OAD (--oad).

\b
Examples:
  python -m shared_protocol encode read --address 000006605518 --di 00010000
  python -m shared_protocol encode read --address 123456789012 --oad 00100200 --json
""",
)
@click.option("--address", required=True, help="Meter address as on the nameplate.")
@click.option("--di", help="645 data identifier: 8 hex digits (2007) or 4 (1997).")
@click.option("--oad", help="698.45 object attribute descriptor, 8 hex digits.")
@click.option(
    "--protocol",
    type=click.Choice(["dlt645-2007", "dlt645-1997", "dlt698.45"]),
    help="Default: dlt698.45 with --oad, dlt645-2007 (or 1997 for a 4-digit DI) with --di.",
)
@click.option("--ca", default="10", show_default=True, help="698.45 client address (hex).")
@click.option("--piid", default=1, show_default=True, help="698.45 invoke id, 0..63.")
@click.option("--preamble", default=4, show_default=True, help="FE wake-up bytes before the frame.")
@_json_option
def encode_read(
    address: str,
    di: str | None,
    oad: str | None,
    protocol: str | None,
    ca: str,
    piid: int,
    preamble: int,
    as_json: bool,
) -> None:
    if (di is None) == (oad is None):
        raise click.UsageError("give exactly one of --di (DL/T 645) or --oad (DL/T 698.45)")
    try:
        if oad is not None:
            if protocol not in (None, "dlt698.45"):
                raise click.UsageError("--oad is a DL/T 698.45 identifier; use --di for 645")
            raw = requests.read_698(address, oad, _int("0x" + ca), piid, preamble)
            _emit_frame(raw, as_json, "dlt698.45")
            return
        assert di is not None
        if protocol is None:
            protocol = "dlt645-1997" if len(di.strip()) == 4 else "dlt645-2007"
        if protocol == "dlt698.45":
            raise click.UsageError("--di is a DL/T 645 identifier; use --oad for 698.45")
        raw = requests.read_645(address, di, protocol, preamble)
        _emit_frame(raw, as_json, protocol)
    except LocalProtocolError as exc:
        raise _local_error(exc) from None


@encode.command(
    "read-address",
    help="""Ask the only meter on the line for its address (645 C=13H or 698.45 GET 40010200
to the wildcard address).

\b
Example:
  python -m shared_protocol encode read-address --protocol dlt698.45
""",
)
@click.option(
    "--protocol",
    type=click.Choice(["dlt645-2007", "dlt698.45"]),
    default="dlt645-2007",
    show_default=True,
)
@click.option("--preamble", default=4, show_default=True)
@_json_option
def encode_read_address(protocol: str, preamble: int, as_json: bool) -> None:
    raw = requests.read_address(protocol, preamble)
    _emit_frame(raw, as_json, protocol)


@encode.command(
    "time-sync",
    help="""Broadcast time sync (645 C=08H to 99…99). Meters do not answer it.

The time is the meters' local wall time: --at as given, or now in --zone.

\b
Example:
  python -m shared_protocol encode time-sync --at '2026-11-29 22:00:00'
""",
)
@click.option("--at", "at", help="Local meter time 'YYYY-MM-DD HH:MM:SS' (default: now).")
@click.option("--zone", default=DEFAULT_METER_ZONE, show_default=True, help="Meters' zone.")
@click.option("--preamble", default=4, show_default=True)
@_json_option
def encode_time_sync(at: str | None, zone: str, preamble: int, as_json: bool) -> None:
    if at is None:
        moment = utc_to_meter_time(datetime.now(UTC), zone)
    else:
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            raise click.BadParameter(f"{at!r} is not 'YYYY-MM-DD HH:MM:SS'") from None
    try:
        raw = requests.time_sync_645(moment, preamble)
    except LocalProtocolError as exc:
        raise _local_error(exc) from None
    _emit_frame(raw, as_json, "dlt645-2007")


@encode.command(
    "modbus-read",
    help="""Read registers of a Modbus RTU meter (function 03 or 04).

Either name a meter model to read its first planned block, or give --start and --count.

\b
Examples:
  python -m shared_protocol encode modbus-read --unit 1 --model sdm630
  python -m shared_protocol encode modbus-read --unit 1 --function 4 --start 0x48 --count 2
""",
)
@click.option("--unit", default="1", show_default=True, help="Modbus unit id (slave address).")
@click.option("--model", help="A meter model with a register map, e.g. sdm630, dtsu666.")
@click.option("--function", "function_code", type=click.Choice(["3", "4"]), default="4")
@click.option("--start", help="First register (protocol address, 0-based).")
@click.option("--count", default=2, show_default=True, help="How many 16-bit registers.")
@_json_option
def encode_modbus_read(
    unit: str,
    model: str | None,
    function_code: str,
    start: str | None,
    count: int,
    as_json: bool,
) -> None:
    try:
        if model is not None:
            raw = requests.read_modbus_model(_int(unit), model)
        elif start is not None:
            raw = requests.read_modbus(_int(unit), int(function_code), _int(start), count)
        else:
            raise click.UsageError("give --model, or --start (and --count)")
    except LocalProtocolError as exc:
        raise _local_error(exc) from None
    _emit_frame(raw, as_json, "modbus-rtu")


def main() -> None:
    cli()
