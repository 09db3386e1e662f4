"""The Mosquitto 2.0 configuration and ACL, rendered from one table of grants.

The rendered text is the product: `central broker config` writes it, the templates in
`deploy/mosquitto/` are it with the default paths (a test keeps them equal), and the broker
security tests start a real `mosquitto` on exactly this text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from central.security.ca import (
    CA_CERTIFICATE_NAME,
    DEFAULT_SERVER_DAYS,
    DeviceCA,
    write_public_file,
)
from central.security.enrolment import CENTRAL_SERVICE_ID, ca_directory
from shared_protocol.wire.envelope import MAX_PAYLOAD_BYTES
from shared_protocol.wire.topics import CENTRAL_STATE, gateway_filter

# Topics come from the edge→central contract (shared_protocol.wire.topics).


def _own(kind: str) -> str:
    """`m2c/v1/gw/%u/<kind>`: the gateway-wide filter with the CN in the id level."""
    return gateway_filter(kind).replace("/+/", "/%u/", 1)


Access = Literal["read", "write", "readwrite"]


@dataclass(frozen=True)
class Grant:
    access: Access
    topic: str
    reason: str


# `%u` is the username, which `use_identity_as_username` sets to the certificate CN. Mosquitto
# substitutes it only when it is a whole topic level, and refuses usernames with '+', '#' or
# '/' in patterns — our gateway ids cannot contain them anyway (enrolment.GATEWAY_ID_PATTERN).
GATEWAY_GRANTS: tuple[Grant, ...] = (
    Grant("write", _own("batch"), "its signed record batches"),
    Grant("write", _own("birth"), "its retained birth after every connect"),
    Grant("write", _own("death"), "its will; the broker publishes it on a lost link"),
    Grant("write", _own("cmd_result"), "results of commands it ran"),
    Grant("read", _own("ack"), "central's acknowledgements of its batches"),
    Grant("read", _own("cmd"), "signed commands for it"),
    # No %u here, so Mosquitto logs a harmless warning at start; a `pattern` line is the
    # only way to grant one topic to every certificate user.
    Grant("read", CENTRAL_STATE, "central's retained online state gates publishing"),
)

# The central service reads every gateway's uplink. A subscription to
# $share/ingest/m2c/v1/gw/+/batch is checked against the filter after the share prefix, and
# each delivered message against its own topic, so `read m2c/v1/gw/+/batch` covers both.
CENTRAL_GRANTS: tuple[Grant, ...] = (
    Grant("read", gateway_filter("batch"), "batches, through $share/ingest/... consumers"),
    Grant("read", gateway_filter("birth"), "births (retained)"),
    Grant("read", gateway_filter("death"), "deaths (retained)"),
    Grant("read", gateway_filter("cmd_result"), "command results"),
    Grant("write", gateway_filter("ack"), "end-to-end acknowledgements"),
    Grant("write", gateway_filter("cmd"), "signed commands"),
    Grant("readwrite", CENTRAL_STATE, "its own retained online state and will"),
)


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker's files live and how it is sized. Defaults are the production ones."""

    config_dir: Path = Path("/etc/mosquitto/meter2cash")
    persistence_dir: Path = Path("/var/lib/mosquitto")
    port: int = 8883
    bind_address: str = "127.0.0.1"
    # Per client, QoS 1 messages the broker sends before it waits for PUBACKs. An ingestion
    # consumer acks only after its DB commit, so this is its pipeline depth: 20 (Mosquitto's
    # default) keeps a 2-core consumer busy without letting one slow consumer hoard batches
    # that the shared subscription could give to another.
    max_inflight_messages: int = 20
    # Per client, messages held beyond the in-flight window (also for an offline persistent
    # session). The edge keeps every unacknowledged record in its own log and resends on
    # timeout, so the broker queue only has to absorb a burst: ~100 gateways x a window of
    # ~50 batches for a consumer that is briefly behind, with room to spare. Past the limit
    # Mosquitto drops QoS 1 messages — safe, because the gateway will resend them.
    max_queued_messages: int = 10000
    # The wire contract's largest payload plus room for the topic and MQTT 5 properties;
    # anything larger is refused by the receivers anyway, and the cap bounds what one
    # misbehaving client can make the broker buffer per packet (OWASP API4).
    max_packet_size: int = MAX_PAYLOAD_BYTES + 64 * 1024
    # Persistence is a periodic snapshot (reliability.md B.3): a crash loses up to this many
    # seconds of queued messages. End-to-end acks make that a delay, not a loss; 60 s keeps the
    # resend after a crash short without rewriting the snapshot constantly.
    autosave_interval: int = 60
    # A gateway that vanishes for good must not pin its queue forever.
    persistent_client_expiration: str = "14d"
    # Mosquitto started as root drops to this user; None leaves its default (`mosquitto`),
    # which must then be able to read the key file and write the persistence directory.
    run_as_user: str | None = None
    log_destination: str = "stderr"

    @property
    def ca_file(self) -> Path:
        return self.config_dir / CA_CERTIFICATE_NAME

    @property
    def certificate_file(self) -> Path:
        return self.config_dir / "server.crt"

    @property
    def key_file(self) -> Path:
        return self.config_dir / "server.key"

    @property
    def crl_file(self) -> Path:
        return self.config_dir / "crl.pem"

    @property
    def acl_file(self) -> Path:
        return self.config_dir / "acl"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "mosquitto.conf"


def _grant_lines(keyword: str, grants: tuple[Grant, ...]) -> list[str]:
    lines: list[str] = []
    for grant in grants:
        lines.append(f"# {grant.reason}")
        lines.append(f"{keyword} {grant.access} {grant.topic}")
    return lines


def render_acl() -> str:
    """The ACL file: the central service by name, every gateway by pattern."""
    lines = [
        "# meter2cash broker ACL — generated by `central broker config`.",
        "# See docs/operations-broker.md. Usernames are certificate CNs",
        "# (use_identity_as_username); anything not granted here is denied.",
        "",
        "# Gateways: each one only its own topics (%u = its certificate CN = gateway id).",
        *_grant_lines("pattern", GATEWAY_GRANTS),
        "",
        f"# The central service (certificate CN `{CENTRAL_SERVICE_ID}`, reserved for it).",
        f"user {CENTRAL_SERVICE_ID}",
        *_grant_lines("topic", CENTRAL_GRANTS),
        "",
    ]
    return "\n".join(lines)


def render_mosquitto_conf(settings: BrokerSettings) -> str:
    """mosquitto.conf for Mosquitto 2.0: one TLS listener, certificate identities, the ACL."""
    persistence_location = str(settings.persistence_dir).rstrip("/") + "/"
    user_lines = (
        [
            "# Started as root, stay this user (tests run as root with keys in a private tmp).",
            f"user {settings.run_as_user}",
        ]
        if settings.run_as_user is not None
        else []
    )
    lines = [
        "# meter2cash broker — generated by `central broker config`.",
        "# See docs/operations-broker.md before changing anything here.",
        "",
        "per_listener_settings false",
        "# Every client presents a certificate from the device CA; nobody connects without one.",
        "allow_anonymous false",
        f"acl_file {settings.acl_file}",
        *user_lines,
        "",
        "# The only listener, TLS only. With any `listener` configured Mosquitto 2.0 opens no",
        "# default one, so there is no plaintext port. Bind to the address gateways reach.",
        f"listener {settings.port} {settings.bind_address}",
        "protocol mqtt",
        "# cafile is the *device* CA only: every certificate it signed can log in.",
        f"cafile {settings.ca_file}",
        f"certfile {settings.certificate_file}",
        f"keyfile {settings.key_file}",
        "# Revoked certificates (`central broker crl`). SIGHUP rereads it for new connections;",
        "# a revoked client already connected stays until it reconnects or mosquitto restarts.",
        f"crlfile {settings.crl_file}",
        "require_certificate true",
        "# The certificate CN becomes the username the ACL sees; passwords are ignored.",
        "use_identity_as_username true",
        "",
        "# Persistence is a periodic snapshot, not a log: a broker crash loses up to",
        "# autosave_interval seconds of queued messages. Gateways keep every record until",
        "# central acknowledges it end to end, so such a loss is resent, not lost.",
        "persistence true",
        f"persistence_location {persistence_location}",
        f"autosave_interval {settings.autosave_interval}",
        "autosave_on_changes false",
        f"persistent_client_expiration {settings.persistent_client_expiration}",
        "",
        "# Flow control per client; the reasons are in central/security/broker_config.py.",
        f"max_inflight_messages {settings.max_inflight_messages}",
        f"max_queued_messages {settings.max_queued_messages}",
        f"max_packet_size {settings.max_packet_size}",
        "set_tcp_nodelay true",
        "",
        f"log_dest {settings.log_destination}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages true",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class BrokerFiles:
    config_file: Path
    acl_file: Path
    ca_file: Path
    crl_file: Path
    certificate_file: Path
    key_file: Path


def write_broker_config(
    state_dir: Path,
    settings: BrokerSettings,
    hostnames: list[str],
    *,
    server_days: int = DEFAULT_SERVER_DAYS,
) -> BrokerFiles:
    """Write mosquitto.conf, acl, ca.crt, crl.pem and a fresh server certificate."""
    ca = DeviceCA.load(ca_directory(state_dir))
    settings.config_dir.mkdir(parents=True, exist_ok=True)
    write_public_file(settings.ca_file, ca.certificate_pem)
    write_public_file(settings.crl_file, ca.crl_pem())
    server = ca.issue_server(hostnames, days=server_days)
    server.write(settings.config_dir, settings.certificate_file.name, settings.key_file.name)
    write_public_file(settings.acl_file, render_acl().encode("utf-8"))
    write_public_file(settings.config_file, render_mosquitto_conf(settings).encode("utf-8"))
    return BrokerFiles(
        config_file=settings.config_file,
        acl_file=settings.acl_file,
        ca_file=settings.ca_file,
        crl_file=settings.crl_file,
        certificate_file=settings.certificate_file,
        key_file=settings.key_file,
    )
