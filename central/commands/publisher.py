"""Putting signed commands on the broker: a small paho-mqtt publisher with central's
service identity, and an in-memory one for tests and dry runs.

A publisher carries the signing key with it (``signing_key``, ``key_id``), so one object is
everything :func:`central.commands.issue_command` needs to speak for central.

:class:`MqttCommandPublisher` connects like ``central ingest run`` does — MQTT 5, mutual
TLS with the identity ``central broker service-cert`` wrote (CN ``central``, which the ACL
lets write ``m2c/v1/gw/+/cmd``) — and publishes at QoS 1, waiting for the broker's PUBACK.
It sets no will and never touches ``central/state``: that retained flag belongs to the
ingestion consumers. Gateways hold persistent sessions, so a command published while a
gateway is offline waits at the broker until it reconnects (and the gateway refuses it if
it has expired by then).
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import uuid
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from central.commands.errors import CommandPublishError
from central.ingest.consumer import BrokerConfig

__all__ = ["CENTRAL_KEY_ID", "CommandPublisher", "MemoryPublisher", "MqttCommandPublisher"]

#: The key id central signs commands with: the wire contract's owner ``central``.
CENTRAL_KEY_ID = "central"


class CommandPublisher(Protocol):
    """What :func:`~central.commands.issue_command` needs: central's key and a way out."""

    @property
    def signing_key(self) -> Ed25519PrivateKey: ...

    @property
    def key_id(self) -> str: ...

    def publish(self, topic: str, payload: bytes) -> None:
        """Hand ``payload`` to the broker at QoS 1; return once it is taken (PUBACK), or
        raise :class:`CommandPublishError`."""
        ...


class MemoryPublisher:
    """Keeps every (topic, payload) it is given: tests, and a dry run that shows the
    signed payload without sending it."""

    def __init__(self, signing_key: Ed25519PrivateKey, key_id: str = CENTRAL_KEY_ID) -> None:
        self.signing_key = signing_key
        self.key_id = key_id
        self.messages: list[tuple[str, bytes]] = []
        self.fail_with: str | None = None  # set to make the next publishes fail

    def publish(self, topic: str, payload: bytes) -> None:
        if self.fail_with is not None:
            raise CommandPublishError(self.fail_with)
        self.messages.append((topic, payload))


class MqttCommandPublisher:
    """Publishes commands at QoS 1 over MQTT 5 with central's broker identity.

    Use as a context manager (connects on enter, disconnects on exit), or call
    :meth:`connect` and :meth:`close`.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        signing_key: Ed25519PrivateKey,
        *,
        key_id: str = CENTRAL_KEY_ID,
        client_id: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.broker = broker
        self.signing_key = signing_key
        self.key_id = key_id
        self.timeout_s = timeout_s
        self.client_id = client_id or _default_client_id()
        self._connected = threading.Event()
        self._refused: str | None = None
        self._client = self._make_client()
        self._started = False
        self._lock = threading.Lock()  # API workers publish from several threads

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
        )
        if self.broker.tls:
            client.tls_set(
                ca_certs=str(self.broker.ca_file),
                certfile=str(self.broker.cert_file) if self.broker.cert_file else None,
                keyfile=str(self.broker.key_file) if self.broker.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        return client

    def _on_connect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            return
        self._refused = None
        self._connected.set()

    def _on_disconnect(
        self, _client: Any, _userdata: Any, _flags: Any, _reason: ReasonCode, _p: Any
    ) -> None:
        self._connected.clear()

    def connect(self) -> None:
        """Connect and wait for the broker's CONNACK (:class:`CommandPublishError` if not)."""
        with self._lock:
            if not self._started:
                self._client.connect_async(
                    self.broker.host, self.broker.port, keepalive=self.broker.keepalive
                )
                self._client.loop_start()
                self._started = True
        if not self._connected.wait(self.timeout_s):
            why = f"refused: {self._refused}" if self._refused else "no answer"
            raise CommandPublishError(
                f"cannot reach the broker at {self.broker.host}:{self.broker.port} ({why} "
                f"within {self.timeout_s:g} s); check M2C_BROKER_URL and central's broker "
                "identity (--tls-dir from `central broker service-cert`)"
            )

    def publish(self, topic: str, payload: bytes) -> None:
        self.connect()
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise CommandPublishError(
                f"the publish on {topic} was not queued: {mqtt.error_string(info.rc)}"
            )
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise CommandPublishError(f"publishing on {topic} failed: {exc}") from exc
        if not info.is_published():
            raise CommandPublishError(
                f"no PUBACK from the broker for {topic} within {self.timeout_s:g} s"
            )

    def close(self) -> None:
        with self._lock:
            if self._started:
                self._client.disconnect()
                self._client.loop_stop()
                self._started = False
            self._connected.clear()

    def __enter__(self) -> MqttCommandPublisher:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _default_client_id() -> str:
    """``commands-<host>-<pid>-<random>``: several CLI runs and API workers may publish at
    once, and MQTT drops an older connection that reuses a client id."""
    host = socket.gethostname().split(".")[0].lower() or "host"
    return f"commands-{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
