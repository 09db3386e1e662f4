"""Broker security against a real mosquitto running exactly the production config and ACL.

One broker serves the module (starting mosquitto costs little, TLS handshakes cost more);
each test uses its own gateway ids so that no test sees another's messages. "Receives
nothing" is never a bare sleep: after the forbidden message the test sends an allowed one on
the same path and waits for it, so MQTT's per-session ordering proves the forbidden one was
dropped, not late.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mosquitto_fixture import Broker, MqttSession, new_mqtt_client, start_broker

from central.security import (
    DeviceCA,
    enroll_gateway,
    issue_central_service_identity,
    revoke_gateway,
)
from central.security.enrolment import ca_directory
from shared_protocol.wire.envelope import MAX_PAYLOAD_BYTES
from shared_protocol.wire.topics import INGEST_SUBSCRIPTION

INGEST = INGEST_SUBSCRIPTION


@dataclass
class Deployment:
    """A state dir with a device CA, a broker trusting it, and helpers to make sessions."""

    state_dir: Path
    broker: Broker
    central_files: tuple[Path, Path, Path]
    sessions: list[MqttSession] = field(default_factory=list)

    def gateway(self, gateway_id: str) -> MqttSession:
        bundle = self.state_dir / "bundles" / gateway_id
        if not bundle.exists():
            enroll_gateway(self.state_dir, gateway_id)
        return self._session(
            gateway_id, bundle / "ca.crt", bundle / "gateway.crt", bundle / "gateway.key"
        )

    def central(self, client_id: str = "") -> MqttSession:
        ca_file, certificate_file, key_file = self.central_files
        return self._session(client_id, ca_file, certificate_file, key_file)

    def _session(self, client_id: str, ca_file: Path, cert: Path, key: Path) -> MqttSession:
        client = new_mqtt_client(client_id)
        client.tls_set(ca_certs=str(ca_file), certfile=str(cert), keyfile=str(key))
        session = MqttSession(client)
        assert session.connect(self.broker), self.broker.log()
        self.sessions.append(session)
        return session


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp_path = tmp_path_factory.mktemp("broker-security")
    state_dir = tmp_path / "state"
    ca = DeviceCA.create(ca_directory(state_dir))
    broker = start_broker(tmp_path, ca=ca)
    central_files = issue_central_service_identity(state_dir, tmp_path / "central")
    deployment = Deployment(state_dir, broker, central_files)
    yield deployment
    for session in deployment.sessions:
        session.close()
    broker.stop()


def _refused(broker: Broker, client: Any) -> bool:
    session = MqttSession(client)
    connected = session.connect(broker)
    session.close()
    return not connected


# --- who may connect ------------------------------------------------------------------------


def test_an_enrolled_gateway_batch_reaches_central_through_the_shared_subscription(
    deployment: Deployment,
) -> None:
    central = deployment.central("ingest-1")
    assert [code.value for code in central.subscribe(INGEST)] == [1]
    gateway = deployment.gateway("gw-ingest")

    assert gateway.publish("m2c/v1/gw/gw-ingest/batch", b"batch-1")

    message = central.next_message()
    assert (message.topic, message.payload) == ("m2c/v1/gw/gw-ingest/batch", b"batch-1")


def test_a_client_without_a_certificate_is_refused(deployment: Deployment) -> None:
    client = new_mqtt_client("anonymous")
    client.tls_set(ca_certs=str(deployment.broker.ca_file))
    client.username_pw_set("gw-anon", "any password")  # passwords are not an identity here
    assert _refused(deployment.broker, client)


def test_a_plaintext_connection_is_refused(deployment: Deployment) -> None:
    assert _refused(deployment.broker, new_mqtt_client("plaintext"))


def test_the_tls_port_is_the_only_one_mosquitto_opens(deployment: Deployment) -> None:
    # No default 1883 listener sneaks in beside ours: the config has exactly one listener.
    text = deployment.broker.config_file.read_text(encoding="utf-8")
    listeners = [line for line in text.splitlines() if line.startswith("listener ")]
    assert listeners == [f"listener {deployment.broker.port} 127.0.0.1"]


def test_a_certificate_from_another_ca_is_refused(deployment: Deployment, tmp_path: Path) -> None:
    impostor_ca = DeviceCA.create(tmp_path / "other-ca")
    impostor_ca.issue_client("gw-ingest").write(tmp_path, "client.crt", "client.key")
    client = new_mqtt_client("impostor")
    client.tls_set(
        ca_certs=str(deployment.broker.ca_file),
        certfile=str(tmp_path / "client.crt"),
        keyfile=str(tmp_path / "client.key"),
    )
    assert _refused(deployment.broker, client)


# --- what a connected gateway may touch -------------------------------------------------------


def test_gateway_a_cannot_publish_to_gateway_b_batch_topic(deployment: Deployment) -> None:
    central = deployment.central("ingest-isolation")
    central.subscribe("m2c/v1/gw/+/batch")
    deployment.gateway("gw-b-victim")
    attacker = deployment.gateway("gw-a-attacker")

    assert not attacker.publish("m2c/v1/gw/gw-b-victim/batch", b"forged")
    assert attacker.publish("m2c/v1/gw/gw-a-attacker/batch", b"own")

    message = central.next_message()
    assert (message.topic, message.payload) == ("m2c/v1/gw/gw-a-attacker/batch", b"own")
    assert central.messages.empty()


@pytest.mark.parametrize("topic", ["ack", "cmd"])
def test_gateway_a_cannot_read_gateway_b_acks_or_commands(
    deployment: Deployment, topic: str
) -> None:
    victim, attacker = f"gw-b-{topic}", f"gw-a-{topic}"
    deployment.gateway(victim)
    spy = deployment.gateway(attacker)
    spy.subscribe(f"m2c/v1/gw/{victim}/{topic}")
    spy.subscribe("m2c/v1/gw/+/#")
    spy.subscribe(f"m2c/v1/gw/{attacker}/{topic}")
    central = deployment.central()

    assert central.publish(f"m2c/v1/gw/{victim}/{topic}", b"for the victim")
    assert central.publish(f"m2c/v1/gw/{attacker}/{topic}", b"for the spy")

    message = spy.next_message()
    assert (message.topic, message.payload) == (f"m2c/v1/gw/{attacker}/{topic}", b"for the spy")
    # The own topic matched two of its subscriptions; anything else would be the victim's.
    while not spy.messages.empty():
        assert spy.messages.get_nowait().topic == f"m2c/v1/gw/{attacker}/{topic}"


def test_gateways_read_central_retained_state_but_cannot_write_it(
    deployment: Deployment,
) -> None:
    central = deployment.central()
    assert central.publish("m2c/v1/central/state", b"online", retain=True)
    gateway = deployment.gateway("gw-state")

    assert not gateway.publish("m2c/v1/central/state", b"offline", retain=True)
    gateway.subscribe("m2c/v1/central/state")

    message = gateway.next_message()
    assert (message.payload, message.retain) == (b"online", True)


def test_a_gateway_cannot_impersonate_central(deployment: Deployment) -> None:
    forger = deployment.gateway("gw-forger")
    deployment.gateway("gw-target")
    for topic in ("m2c/v1/gw/gw-target/ack", "m2c/v1/gw/gw-target/cmd"):
        assert not forger.publish(topic, b"forged")


def test_the_listener_speaks_tls_with_the_broker_certificate(deployment: Deployment) -> None:
    context = ssl.create_default_context(cafile=str(deployment.broker.ca_file))
    with (
        socket.create_connection((deployment.broker.host, deployment.broker.port)) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() in {"TLSv1.2", "TLSv1.3"}


def test_a_gateway_will_reaches_central_only_on_its_own_death_topic(
    deployment: Deployment,
) -> None:
    # The broker publishes a will on the gateway's behalf, under the gateway's ACL: a forged
    # death would make central mark another gateway offline.
    central = deployment.central()
    central.subscribe("m2c/v1/gw/+/death")
    deployment.gateway("gw-will-victim")
    enroll_gateway(deployment.state_dir, "gw-will-forger")
    enroll_gateway(deployment.state_dir, "gw-will-honest")

    for gateway_id, will_topic in (
        ("gw-will-forger", "m2c/v1/gw/gw-will-victim/death"),
        ("gw-will-honest", "m2c/v1/gw/gw-will-honest/death"),
    ):
        bundle = deployment.state_dir / "bundles" / gateway_id
        client = new_mqtt_client(gateway_id)
        client.tls_set(
            ca_certs=str(bundle / "ca.crt"),
            certfile=str(bundle / "gateway.crt"),
            keyfile=str(bundle / "gateway.key"),
        )
        client.will_set(will_topic, gateway_id.encode(), qos=1, retain=True)
        session = MqttSession(client)
        assert session.connect(deployment.broker)
        client.loop_stop()
        client.socket().close()  # a lost link, not a DISCONNECT: the will fires

    message = central.next_message()
    assert (message.topic, message.payload) == ("m2c/v1/gw/gw-will-honest/death", b"gw-will-honest")
    assert central.messages.empty()


def test_the_largest_payload_the_contract_allows_passes_the_broker(
    deployment: Deployment,
) -> None:
    # max_packet_size must leave room for a MAX_PAYLOAD_BYTES batch plus topic and properties.
    central = deployment.central("ingest-large")
    central.subscribe("m2c/v1/gw/gw-large/batch")
    gateway = deployment.gateway("gw-large")
    payload = bytes(range(256)) * (MAX_PAYLOAD_BYTES // 256)

    assert gateway.publish("m2c/v1/gw/gw-large/batch", payload)

    assert central.next_message().payload == payload


# --- revocation (each test on its own broker: a CRL reload must not disturb the others) ------


def _bundle_session(bundle: Path, client_id: str) -> MqttSession:
    client = new_mqtt_client(client_id)
    client.tls_set(
        ca_certs=str(bundle / "ca.crt"),
        certfile=str(bundle / "gateway.crt"),
        keyfile=str(bundle / "gateway.key"),
    )
    return MqttSession(client)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[Path, Broker]]:
    state_dir = tmp_path / "state"
    broker = start_broker(tmp_path, ca=DeviceCA.create(ca_directory(state_dir)))
    yield state_dir, broker
    broker.stop()


def _connects(broker: Broker, bundle: Path, client_id: str) -> bool:
    session = _bundle_session(bundle, client_id)
    connected = session.connect(broker)
    session.close()
    return connected


def test_a_revoked_gateway_is_refused_once_the_broker_has_the_crl(
    own_broker: tuple[Path, Broker],
) -> None:
    state_dir, broker = own_broker
    revoked = enroll_gateway(state_dir, "gw-stolen").bundle_directory
    kept = enroll_gateway(state_dir, "gw-kept").bundle_directory
    assert _connects(broker, revoked, "gw-stolen")

    revoke_gateway(state_dir, "gw-stolen")
    broker.install_crl()

    assert not _connects(broker, revoked, "gw-stolen")
    assert _connects(broker, kept, "gw-kept")


def test_re_enrolling_revokes_the_certificate_it_replaces(
    own_broker: tuple[Path, Broker], tmp_path: Path
) -> None:
    state_dir, broker = own_broker
    old = enroll_gateway(state_dir, "gw-swap", output_dir=tmp_path / "old").bundle_directory
    new = enroll_gateway(
        state_dir, "gw-swap", output_dir=tmp_path / "new", force=True
    ).bundle_directory

    broker.install_crl()

    assert not _connects(broker, old, "gw-swap-old")
    assert _connects(broker, new, "gw-swap-new")
