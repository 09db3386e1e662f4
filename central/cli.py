"""The `central` command line. Its commands arrive with the issues that build them.

Each command is a thin layer over a library function of the same name; errors an operator
must act on leave as one line on stderr and exit status 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

import central
from central import __version__
from central.api.cli import api as api_group
from central.api.cli import user as user_group
from central.ops.cli import ops as ops_group
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
from central.vee.cli import vee as vee_group

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


# --- gateway import-registry ----------------------------------------------------------------


@gateway.command(
    "import-registry",
    help="""Enrol every gateway of <state dir>/gateways/ into the central database.

    Copies each gateway's signing public key and key id into the gateways table (the
    ingestion consumer verifies batches against it); a revoked gateway is kept with no key,
    so its batches are refused. Safe to run again. Uses M2C_DATABASE_URL and migrates the
    database first.

    \b
    Example:
      M2C_DATABASE_URL=sqlite:///./central.sqlite3 central gateway import-registry
    """,
)
@click.option("--json", "as_json", is_flag=True, help="Print the imported ids as JSON.")
@_operator_errors
def gateway_import_registry(as_json: bool) -> None:
    from central.db import make_engine, upgrade
    from central.ingest.consumer import import_registry
    from central.ingest.store import IngestStore

    settings = _settings()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        imported = import_registry(IngestStore(engine), list_gateways(_state_dir()))
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"imported": imported}))
        return
    click.echo(f"imported {len(imported)} gateways into the central database")


# --- ingest -------------------------------------------------------------------------------


def _settings() -> Any:
    from central.settings import Settings, SettingsError

    try:
        return Settings.from_env()
    except SettingsError as error:
        raise click.ClickException(str(error)) from error


@cli.group(
    help="""Ingestion: consume gateways' batches from the broker into the database.

    \b
    Example:
      M2C_BROKER_URL=mqtts://127.0.0.1:8883 central ingest run --tls-dir /etc/meter2cash/mqtt
    """
)
def ingest() -> None:
    pass


@ingest.command(
    "run",
    help="""Run one ingestion consumer until SIGTERM or SIGINT.

    Joins the shared subscription $share/ingest/m2c/v1/gw/+/batch (start as many as you
    like), verifies each batch against the gateway's enrolled key, stores it, commits, and
    then acknowledges it to the gateway. The database is M2C_DATABASE_URL (migrated at
    start), the broker M2C_BROKER_URL; with mqtts:// central's identity comes from --tls-dir
    (what `central broker service-cert --out` wrote) or --ca-file/--cert-file/--key-file.

    \b
    Example:
      M2C_DATABASE_URL=postgresql://ingest@db/m2c M2C_BROKER_URL=mqtts://mqtt:8883 \\
          central ingest run --tls-dir /etc/meter2cash/mqtt --import-registry --json
    """,
)
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="M2C_BROKER_TLS_DIR",
    show_envvar=True,
    help="Directory with ca.crt, central.crt, central.key.",
)
@click.option("--ca-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cert-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--consumer-id", default=None, help="MQTT client id [ingest-<host>-<pid>].")
@click.option(
    "--import-registry",
    "import_registry_",
    is_flag=True,
    help="Enrol the gateways of <state dir>/gateways/ into the database first.",
)
@click.option(
    "--persistent-session",
    is_flag=True,
    help="Keep the MQTT session (needs a stable --consumer-id).",
)
@click.option("--max-group", default=40, show_default=True, help="Batches per transaction.")
@click.option(
    "--status-every", default=10.0, show_default=True, help="Seconds between status lines."
)
@click.option(
    "--vee/--no-vee",
    default=True,
    show_default=True,
    help="Validate every reading as it is stored (--no-vee: leave them for `central vee pending`).",
)
@click.option("--json", "as_json", is_flag=True, help="Status lines as JSON on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Log every connection and refusal.")
@_operator_errors
def ingest_run(
    tls_dir: Path | None,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    consumer_id: str | None,
    import_registry_: bool,
    persistent_session: bool,
    max_group: int,
    status_every: float,
    vee: bool,
    as_json: bool,
    verbose: bool,
) -> None:
    import logging
    import signal
    import threading

    from central.ingest.service import TlsFiles, broker_config, run_ingest
    from central.settings import SettingsError

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = _settings()
    try:
        broker = broker_config(settings, TlsFiles(tls_dir, ca_file, cert_file, key_file))
    except SettingsError as error:
        raise click.ClickException(str(error)) from error
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def status(line: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(line, sort_keys=True))
        else:
            click.echo(
                f"{line['event']}: {line['consumer']} connected={line['connected']} "
                f"batches={line['batches']} readings={line['readings_inserted']} "
                f"duplicates={line['duplicates']} nacks={line['nacks']}"
            )
        sys.stdout.flush()

    run_ingest(
        settings,
        broker,
        consumer_id=consumer_id,
        registry_entries=list_gateways(_state_dir()) if import_registry_ else None,
        stop=stop,
        status_every_s=status_every,
        on_status=status,
        max_group=max_group,
        persistent_session=persistent_session,
        vee=vee,
    )


# --- demo ---------------------------------------------------------------------------------


@cli.command(
    "demo",
    help="""Run the whole chain on this machine and check it against the simulator.

    Starts Mosquitto with the production TLS/ACL config (a device CA and one enrolled
    gateway in a temporary directory), central ingestion on SQLite, a simulated transformer
    area (DL/T 645-2007 meters on a pty, DL/T 698.45 meters on TCP) and an edge agent whose
    buses point at it; runs N simulated days (the clock jumps to each day's collection, so
    a day takes about a second), then compares central's daily frozen readings with what
    every simulated meter froze at 00:00, and the consumption with the ground truth.
    Exit status 0 when the reconciliation holds, 1 otherwise. Needs `mosquitto`.

    \b
    Example:
      central demo --headless --days 3 --json
    """,
)
@click.option("--days", default=3, show_default=True, help="Simulated days (1-60).")
@click.option("--meters", default=12, show_default=True, help="Household meters (+ supply).")
@click.option("--seed", default=1, show_default=True, help="The simulated area's seed.")
@click.option("--headless", is_flag=True, help="Run straight through (no pause per day).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--keep", is_flag=True, help="Keep the temporary work directory.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Work here instead of a new temporary directory (kept).",
)
def demo(
    days: int,
    meters: int,
    seed: int,
    headless: bool,
    as_json: bool,
    keep: bool,
    workdir: Path | None,
) -> None:
    import signal

    from central.demo import DemoError, DemoOptions, format_summary, run_demo

    def on_sigterm(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds: every part stopped, the directory removed

    signal.signal(signal.SIGTERM, on_sigterm)

    try:
        options = DemoOptions(
            days=days,
            meters=meters,
            seed=seed,
            pace_s=0.0 if headless else 1.0,
            keep=keep,
            workdir=workdir,
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from error

    def progress(line: str) -> None:
        click.echo(line, err=as_json)

    try:
        summary = run_demo(options, progress)
    except DemoError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        click.echo(format_summary(summary))
    sys.exit(0 if summary["holds"] else 1)


# The groups of later capabilities live beside their libraries (one owner each).
cli.add_command(vee_group)
cli.add_command(ops_group)
cli.add_command(api_group)
cli.add_command(user_group)


def main() -> None:
    cli()
