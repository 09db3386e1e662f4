"""A real `mosquitto` for tests: own port, own config, own files, stopped afterwards.

    broker = start_broker(tmp_path)                 # production config: TLS + ACL
    central = broker.client_identity("central")      # cert/key from the broker's device CA
    client = broker.mqtt_client("central", client_id="ingest-1")   # paho, MQTT 5, TLS set up
    client.connect(broker.host, broker.port)
    ...
    broker.stop()

`start_broker(tmp_path, tls=False)` gives a plaintext, anonymous broker for tests that are
not about security (`broker.mqtt_client()` then needs no CN). With `tls=True` the config
and ACL are exactly what `central broker config` writes (central.security.broker_config);
pass `acl="..."` to use another ACL text, or `acl=None` for none. `kill()` + `restart()`
keep the port and the persistence directory, for broker-crash tests.

Never touches the shared broker on 1883. Skips the test when mosquitto is not installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from central.security import DeviceCA
from central.security.broker_config import BrokerSettings, render_acl, render_mosquitto_conf

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
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
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
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
