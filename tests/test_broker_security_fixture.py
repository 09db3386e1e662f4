"""The mosquitto test fixture itself: other suites (uplink, ingest, faults) build on it."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

from mosquitto_fixture import Broker, start_broker

TIMEOUT_S = 5.0


def _roundtrip_retained(broker: Broker, common_name: str | None, topic: str) -> bytes:
    received: queue.Queue[Any] = queue.Queue()
    client = broker.mqtt_client(common_name, client_id="fixture-check")
    client.on_message = lambda _c, _u, message: received.put(message.payload)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.subscribe(topic, qos=1)
        payload: bytes = received.get(timeout=TIMEOUT_S)
        return payload
    finally:
        client.disconnect()
        client.loop_stop()


def _publish_retained(broker: Broker, common_name: str | None, topic: str, payload: bytes) -> None:
    client = broker.mqtt_client(common_name, client_id="fixture-publisher")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(TIMEOUT_S)
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_plaintext_broker_for_tests_that_are_not_about_security(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, tls=False)
    try:
        assert broker.ca_file is None
        _publish_retained(broker, None, "fixture/plain", b"hello")
        assert _roundtrip_retained(broker, None, "fixture/plain") == b"hello"
    finally:
        broker.stop()


def test_restart_keeps_the_port_and_the_persisted_retained_messages(tmp_path: Path) -> None:
    broker = start_broker(tmp_path)
    try:
        port = broker.port
        _publish_retained(broker, "central", "m2c/v1/central/state", b"online")

        broker.restart()  # SIGTERM: mosquitto writes its snapshot on the way down

        assert broker.port == port
        assert _roundtrip_retained(broker, "gw-fixture", "m2c/v1/central/state") == b"online"
    finally:
        broker.stop()


def test_stop_is_idempotent_and_kill_leaves_no_process(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, tls=False)
    broker.kill()
    broker.stop()
    broker.start()
    broker.stop()
