"""The `central` command line. Its commands arrive with the issues that build them.

Each command is a thin layer over a library function of the same name; errors an operator
must act on leave as one line on stderr and exit status 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

import central
from central import __version__
from central.security import (
    BrokerSettings,
    DeviceCA,
    SecurityError,
    enroll_gateway,
    issue_central_service_identity,
    list_gateways,
    revoke_gateway,
    write_broker_config,
)
from central.security.ca import write_public_file
from central.security.enrolment import ca_directory

F = TypeVar("F", bound=Callable[..., Any])


def _operator_errors(command: F) -> F:
    """Turn a SecurityError into `Error: <message>` and exit status 1, never a traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SecurityError as error:
            raise click.ClickException(str(error)) from error

    return wrapper  # type: ignore[return-value]


def _state_dir() -> Path:
    return Path(click.get_current_context().find_root().params["state_dir"])


_EXAMPLE = (
    "\b\nExample:\n  central --state-dir /var/lib/meter2cash/central gateway enroll gw-0001\n"
)


@click.group(help=f"{central.__doc__}\n\n{_EXAMPLE}")
@click.version_option(__version__, prog_name="central")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("central-state"),
    show_default=True,
    envvar="CENTRAL_STATE_DIR",
    show_envvar=True,
    help="Central's files: the device CA (ca/), the gateway registry (gateways/), bundles.",
)
def cli(state_dir: Path) -> None:
    pass


# --- ca -----------------------------------------------------------------------------------


@cli.group(
    help="""The device CA that signs every broker identity (gateways, central, the broker).

    \b
    Example:
      central --state-dir /var/lib/meter2cash/central ca init
    """
)
def ca() -> None:
    pass


@ca.command(
    "init",
    help="""Create the device CA (ECDSA P-256, key file 0600). Refuses if one exists.

    Use this CA for broker identities only: Mosquitto lets every certificate it signed log in.

    \b
    Example:
      central --state-dir /var/lib/meter2cash/central ca init
    """,
)
@click.option("--name", default="meter2cash device CA", show_default=True, help="CA subject CN.")
@_operator_errors
def ca_init(name: str) -> None:
    authority = DeviceCA.create(ca_directory(_state_dir()), name=name)
    click.echo(f"created device CA {authority.certificate_path}")


# --- gateway ------------------------------------------------------------------------------


@cli.group(
    help="""Gateways: enrol them with the broker and central.

    \b
    Example:
      central gateway enroll gw-0001
      central gateway list --json
    """
)
def gateway() -> None:
    pass


@gateway.command(
    "enroll",
    help="""Issue gateway NAME a broker certificate and a batch-signing key.

    NAME is 1-63 characters of a-z, 0-9 and '-' (it becomes the certificate CN and a topic
    level). Writes the bundle to install on the gateway (ca.crt, gateway.crt, gateway.key,
    signing.key, signing.pub, gateway.json) and records the gateway and its signing public
    key in <state dir>/gateways/NAME.json. Refuses a NAME already enrolled unless --force,
    which replaces its certificate and signing key.

    \b
    Example:
      central gateway enroll gw-0001 --out /media/usb/gw-0001
    """,
)
@click.argument("name")
@click.option(
    "--out",
    "output_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Bundle directory [default: <state dir>/bundles/NAME].",
)
@click.option("--force", is_flag=True, help="Re-enrol an enrolled gateway (new cert and key).")
@click.option("--days", default=730, show_default=True, help="Certificate validity in days.")
@click.option("--json", "as_json", is_flag=True, help="Print the registry entry as JSON.")
@_operator_errors
def gateway_enroll(
    name: str, output_dir: Path | None, force: bool, days: int, as_json: bool
) -> None:
    enrolment = enroll_gateway(_state_dir(), name, output_dir=output_dir, force=force, days=days)
    if as_json:
        click.echo(json.dumps(enrolment.summary(), sort_keys=True))
        return
    record = enrolment.record
    click.echo(f"enrolled gateway {enrolment.gateway_id}")
    click.echo(f"  bundle:            {enrolment.bundle_directory}")
    click.echo(f"  registry:          {enrolment.registry_path}")
    click.echo(f"  certificate sha256 {record['certificate_sha256']}")
    click.echo(f"  valid until        {record['certificate_not_after']}")
    click.echo(f"  signing key        ed25519 {record['signing_public_key']}")


@gateway.command(
    "list",
    help="""List enrolled gateways from the registry.

    \b
    Example:
      central gateway list --json
    """,
)
@click.option("--json", "as_json", is_flag=True, help="One JSON array of registry entries.")
def gateway_list(as_json: bool) -> None:
    entries = list_gateways(_state_dir())
    if as_json:
        click.echo(json.dumps(entries, sort_keys=True))
        return
    for entry in entries:
        click.echo(
            f"{entry['gateway_id']}  enrolled {entry['enrolled_at']}  "
            f"valid until {entry['certificate_not_after']}"
        )


@gateway.command(
    "revoke",
    help="""Revoke every certificate gateway NAME was issued (adds them to the CRL).

    Then install the new CRL on the broker (`central broker crl`) and reload mosquitto
    (SIGHUP refuses new connections; restart it to cut off a session already open).

    \b
    Example:
      central gateway revoke gw-0001
      central broker crl --out /etc/mosquitto/meter2cash && systemctl restart mosquitto
    """,
)
@click.argument("name")
@_operator_errors
def gateway_revoke(name: str) -> None:
    entry = revoke_gateway(_state_dir(), name)
    click.echo(f"revoked gateway {name} (since {entry['revoked_at']})")
    click.echo("install the CRL on the broker: central broker crl --out <broker config dir>")


# --- broker -------------------------------------------------------------------------------


@cli.group(
    help="""The Mosquitto broker's configuration and central's broker identity.

    \b
    Example:
      central broker config --out /etc/mosquitto/meter2cash --hostname mqtt.example.net
      central broker service-cert --out /etc/meter2cash/mqtt
    """
)
def broker() -> None:
    pass


@broker.command(
    "config",
    help="""Write mosquitto.conf, acl, ca.crt and a fresh server certificate to --out.

    The config has one TLS listener (client certificates required, CN = username), no
    anonymous access, persistence, and pattern ACLs that keep each gateway on its own
    topics. Include it from /etc/mosquitto/mosquitto.conf or start mosquitto with -c.

    \b
    Example:
      central broker config --out /etc/mosquitto/meter2cash --port 8883 \\
          --bind 0.0.0.0 --hostname mqtt.example.net
    """,
)
@click.option(
    "--out",
    "output_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/etc/mosquitto/meter2cash"),
    show_default=True,
    help="Where the config, ACL and certificates go (the paths inside the config).",
)
@click.option("--port", default=8883, show_default=True, help="TLS listener port.")
@click.option("--bind", "bind_address", default="127.0.0.1", show_default=True)
@click.option(
    "--hostname",
    "hostnames",
    multiple=True,
    help="Name or address gateways dial (repeatable) [default: localhost, 127.0.0.1].",
)
@click.option(
    "--persistence-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/mosquitto"),
    show_default=True,
)
@_operator_errors
def broker_config(
    output_dir: Path,
    port: int,
    bind_address: str,
    hostnames: tuple[str, ...],
    persistence_dir: Path,
) -> None:
    settings = BrokerSettings(
        config_dir=output_dir.absolute(),
        persistence_dir=persistence_dir.absolute(),
        port=port,
        bind_address=bind_address,
    )
    files = write_broker_config(
        _state_dir(), settings, list(hostnames) or ["localhost", "127.0.0.1"]
    )
    click.echo(f"wrote {files.config_file}")
    click.echo(f"wrote {files.acl_file}")
    click.echo(f"wrote {files.ca_file}, {files.certificate_file}, {files.key_file}")
    click.echo(f"start with: mosquitto -c {files.config_file}")


@broker.command(
    "service-cert",
    help="""Issue the central service's broker identity (CN central) into --out.

    Writes ca.crt, central.crt and central.key (0600); every ingestion consumer may use it.

    \b
    Example:
      central broker service-cert --out /etc/meter2cash/mqtt
    """,
)
@click.option(
    "--out",
    "output_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for ca.crt, central.crt, central.key.",
)
@_operator_errors
def broker_service_cert(output_dir: Path) -> None:
    for path in issue_central_service_identity(_state_dir(), output_dir):
        click.echo(f"wrote {path}")


@broker.command(
    "crl",
    help="""Write the device CA's revocation list to --out/crl.pem for the broker.

    \b
    Example:
      central broker crl --out /etc/mosquitto/meter2cash && systemctl reload mosquitto
    """,
)
@click.option(
    "--out",
    "output_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/etc/mosquitto/meter2cash"),
    show_default=True,
    help="The broker's config directory.",
)
@_operator_errors
def broker_crl(output_dir: Path) -> None:
    authority = DeviceCA.load(ca_directory(_state_dir()))
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "crl.pem"
    write_public_file(path, authority.crl_pem())
    click.echo(f"wrote {path} ({len(authority.revoked())} revoked certificates)")


def main() -> None:
    cli()
