"""A real `mosquitto` for tests: own port, own config, own files, stopped afterwards.

    broker = start_broker(tmp_path)                 # production config: TLS + ACL
    central = broker.session("central", client_id="ingest-1")   # connected, synchronous
    central.subscribe("$share/ingest/m2c/v1/gw/+/batch")
    gateway = broker.session("gw-0001", client_id="gw-0001")
    assert gateway.publish("m2c/v1/gw/gw-0001/batch", b"...")   # True = PUBACK accepted
    message = central.next_message()
    broker.stop()

`broker.mqtt_client(cn, client_id=...)` is the bare paho 2.x MQTT 5 client with TLS set up
(for code under test that drives paho itself); `broker.client_identity(cn)` gives the
cert/key files from the broker's device CA.

`start_broker(tmp_path, tls=False)` gives a plaintext, anonymous broker for tests that are
not about security (`broker.mqtt_client()` then needs no CN). With `tls=True` the config
and ACL are exactly what `central broker config` writes (central.security.broker_config);
pass `acl="..."` to use another ACL text, or `acl=None` for none. `kill()` + `restart()`
keep the port and the persistence directory, for broker-crash tests.

Never touches the shared broker on 1883. Skips the test when mosquitto is not installed.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from central.security import DeviceCA
from central.security.broker_config import BrokerSettings, render_acl, render_mosquitto_conf

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
TIMEOUT_S = 5.0  # for one CONNACK, SUBACK, PUBACK or message
_DEFAULT_ACL = object()


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def require_mosquitto() -> str:
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); CI installs it")
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def new_mqtt_client(client_id: str = "") -> Any:
    """A bare paho-mqtt 2.x client speaking MQTT 5 (no TLS set up)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    return mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )


@dataclass
class MqttSession:
    """A paho client driven synchronously: connect, subscribe, publish, and wait.

    Every wait is bounded by TIMEOUT_S; messages arrive in `messages` (paho MQTTMessage).
    """

    client: Any
    messages: queue.Queue[Any] = field(default_factory=queue.Queue)
    connack: queue.Queue[Any] = field(default_factory=queue.Queue)
    subacks: queue.Queue[list[Any]] = field(default_factory=queue.Queue)
    pubacks: dict[int, Any] = field(default_factory=dict)
    _puback_event: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.connack.put(reason)
        self.client.on_connect_fail = lambda _c, _u: self.connack.put("connect failed")
        self.client.on_disconnect = lambda _c, _u, _f, reason, _p: self.connack.put(reason)
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.put(codes)
        self.client.on_publish = self._on_publish

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._puback_event:
            self.pubacks[mid] = reason
            self._puback_event.notify_all()

    def connect(self, broker: Broker) -> bool:
        """True when the broker sent CONNACK success; False on any refusal or TLS failure."""
        try:
            self.client.connect(broker.host, broker.port, keepalive=30)
        except (OSError, ssl.SSLError):
            return False
        self.client.loop_start()
        try:
            reason = self.connack.get(timeout=TIMEOUT_S)
        except queue.Empty:
            return False
        return not isinstance(reason, str) and not reason.is_failure and reason == 0

    def subscribe(self, topic: str) -> list[Any]:
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=TIMEOUT_S)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Publish at QoS 1; True when the PUBACK says accepted (MQTT 5 reason code < 0x80).

        Mosquitto answers a publish the ACL denies with 0x87 Not authorized.
        """
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._puback_event:
            assert self._puback_event.wait_for(lambda: info.mid in self.pubacks, TIMEOUT_S)
            return not self.pubacks[info.mid].is_failure

    def next_message(self) -> Any:
        return self.messages.get(timeout=TIMEOUT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class ClientIdentity:
    common_name: str
    ca_file: Path
    certificate_file: Path
    key_file: Path


@dataclass
class Broker:
    host: str
    port: int
    ca_file: Path | None
    directory: Path
    config_file: Path
    log_file: Path
    ca: DeviceCA | None = None
    _binary: str = "mosquitto"
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.ca is not None

    def client_identity(self, common_name: str) -> ClientIdentity:
        """A client certificate from this broker's device CA (CN = MQTT username)."""
        if self.ca is None or self.ca_file is None:
            raise RuntimeError("a plaintext broker has no CA")
        directory = self.directory / "clients" / common_name
        certificate_file = directory / "client.crt"
        key_file = directory / "client.key"
        if not certificate_file.exists():
            self.ca.issue_client(common_name).write(directory, "client.crt", "client.key")
        return ClientIdentity(common_name, self.ca_file, certificate_file, key_file)

    def mqtt_client(self, common_name: str | None = None, *, client_id: str = "") -> Any:
        """A paho-mqtt 2.x MQTT 5 client, with TLS as `common_name` when the broker is TLS."""
        client = new_mqtt_client(client_id)
        if self.tls:
            if common_name is None:
                raise ValueError("a TLS broker needs the CN of a client certificate")
            identity = self.client_identity(common_name)
            client.tls_set(
                ca_certs=str(identity.ca_file),
                certfile=str(identity.certificate_file),
                keyfile=str(identity.key_file),
                cert_reqs=ssl.CERT_REQUIRED,
            )
        return client

    def session(self, common_name: str | None = None, *, client_id: str = "") -> MqttSession:
        """A connected `MqttSession` (as `common_name` on a TLS broker); fails if refused."""
        session = MqttSession(self.mqtt_client(common_name, client_id=client_id))
        if not session.connect(self):
            raise AssertionError(f"{common_name or 'anonymous'} was refused:\n{self.log()}")
        return session

    def start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError("broker already running")
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [self._binary, "-c", str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self._process.returncode}:\n{self.log()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} in time:\n{self.log()}")

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """SIGTERM (Mosquitto saves its persistence snapshot), SIGKILL after 5 s."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL: a crash, no snapshot written."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: Mosquitto 2.0 rereads config, certificates and CRL; sessions stay open."""
        if self._process is None:
            raise RuntimeError("broker not running")
        os.kill(self._process.pid, signal.SIGHUP)
        time.sleep(0.2)  # the broker handles the signal in its next loop pass

    def install_crl(self) -> None:
        """Give the broker the CA's current CRL and reload it (new connections are checked)."""
        if self.ca is None:
            raise RuntimeError("a plaintext broker has no CA")
        (self.config_file.parent / "crl.pem").write_bytes(self.ca.crl_pem())
        self.reload()


def start_broker(
    tmp_path: Path,
    *,
    tls: bool = True,
    acl: object = _DEFAULT_ACL,
    settings: dict[str, Any] | None = None,
    extra_config: str = "",
    ca: DeviceCA | None = None,
) -> Broker:
    """Start mosquitto on a free port with its config in `tmp_path/mosquitto`.

    tls=True: the production config (central.security.broker_config) with a device CA and a
    server certificate for 127.0.0.1/localhost; `acl` is the production ACL unless given
    (text, or None for no ACL file); `settings` overrides BrokerSettings fields, e.g.
    {"max_queued_messages": 100}; `ca` is the device CA to trust (e.g. the one
    `central gateway enroll` used), default a new one in tmp_path/mosquitto/ca.
    tls=False: one plaintext listener, anonymous allowed, no ACL unless `acl` is text.
    `extra_config` is appended verbatim (mosquitto.conf lines) in both modes.
    """
    binary = require_mosquitto()
    directory = tmp_path / "mosquitto"
    (directory / "config").mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(parents=True, exist_ok=True)
    if tls:
        ca = ca or DeviceCA.load_or_create(directory / "ca")
    for attempt in range(3):
        port = free_port()
        config_file, ca_file = _write_config(
            directory, port, tls=tls, acl=acl, settings=settings, extra=extra_config, ca=ca
        )
        broker = Broker(
            host=HOST,
            port=port,
            ca_file=ca_file,
            directory=directory,
            config_file=config_file,
            log_file=directory / "mosquitto.log",
            ca=ca if tls else None,
            _binary=binary,
        )
        try:
            broker.start()
        except RuntimeError:
            # Another process took the free port between probe and bind: try another one.
            if attempt == 2 or "Address already in use" not in broker.log():
                raise
            continue
        return broker
    raise AssertionError("unreachable")


def _write_config(
    directory: Path,
    port: int,
    *,
    tls: bool,
    acl: object,
    settings: dict[str, Any] | None,
    extra: str,
    ca: DeviceCA | None,
) -> tuple[Path, Path | None]:
    config_dir = directory / "config"
    persistence_dir = directory / "data"
    # Started as root, mosquitto would drop to user `mosquitto`, which cannot read a 0600 key
    # in root's private pytest tmp; the production config leaves `user` at its default.
    run_as_user = "root" if os.geteuid() == 0 else None
    if tls:
        assert ca is not None
        broker_settings = BrokerSettings(
            config_dir=config_dir,
            persistence_dir=persistence_dir,
            port=port,
            bind_address=HOST,
            run_as_user=run_as_user,
            **(settings or {}),
        )
        broker_settings.ca_file.write_bytes(ca.certificate_pem)
        broker_settings.crl_file.write_bytes(ca.crl_pem())
        if not broker_settings.certificate_file.exists():
            ca.issue_server([HOST, "localhost"]).write(config_dir, "server.crt", "server.key")
        acl_text = render_acl() if acl is _DEFAULT_ACL else acl
        text = render_mosquitto_conf(broker_settings)
        if acl_text is None:
            text = text.replace(f"acl_file {broker_settings.acl_file}\n", "")
        else:
            broker_settings.acl_file.write_text(str(acl_text), encoding="utf-8")
        broker_settings.config_file.write_text(text + extra, encoding="utf-8")
        return broker_settings.config_file, broker_settings.ca_file

    lines = [
        f"listener {port} {HOST}",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {persistence_dir}/",
        "log_dest stderr",
        *([f"user {run_as_user}"] if run_as_user else []),
    ]
    if acl not in (_DEFAULT_ACL, None):
        (config_dir / "acl").write_text(str(acl), encoding="utf-8")
        lines.append(f"acl_file {config_dir / 'acl'}")
    config_file = config_dir / "mosquitto.conf"
    config_file.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return config_file, None


@pytest.fixture
def mosquitto_broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The production-config TLS broker, stopped after the test."""
    broker = start_broker(tmp_path)
    yield broker
    broker.stop()
