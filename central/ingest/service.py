"""The ingestion service: settings in, a running :class:`IngestConsumer` until told to stop.

``central ingest run`` is a thin layer over :func:`run_ingest`. The broker comes from
``M2C_BROKER_URL`` (``mqtts://host:8883`` with TLS, ``mqtt://host:1883`` plaintext — tests
and the demo only) and central's broker identity from a directory written by
``central broker service-cert`` (``ca.crt``, ``central.crt``, ``central.key``) or three
files named one by one.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from central.db import make_engine, upgrade
from central.ingest.consumer import BrokerConfig, ConsumerStats, IngestConsumer, import_registry
from central.ingest.store import IngestStore
from central.settings import Settings, SettingsError
from central.vee import InlineValidator

__all__ = ["TlsFiles", "broker_config", "default_consumer_id", "run_ingest"]

log = logging.getLogger("central.ingest")


@dataclass(frozen=True)
class TlsFiles:
    """Central's broker identity: a directory from ``central broker service-cert`` or the
    three files (a file given explicitly wins over the directory's)."""

    directory: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def resolve(self) -> tuple[Path | None, Path | None, Path | None]:
        base = self.directory
        return (
            self.ca_file or (base / "ca.crt" if base else None),
            self.cert_file or (base / "central.crt" if base else None),
            self.key_file or (base / "central.key" if base else None),
        )


def broker_config(settings: Settings, tls: TlsFiles, *, keepalive: int = 30) -> BrokerConfig:
    """Where to connect (``settings.broker_url``) and with which identity."""
    url = urlsplit(settings.broker_url)
    secure = url.scheme in ("mqtts", "ssl")
    if url.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not url.hostname:
        raise SettingsError(
            f"M2C_BROKER_URL={settings.broker_url!r}: expected mqtts://host:port or mqtt://host:port"
        )
    port = url.port or (8883 if secure else 1883)
    if not secure:
        return BrokerConfig(url.hostname, port, keepalive=keepalive)
    ca_file, cert_file, key_file = tls.resolve()
    missing = [
        name
        for name, path in (("CA", ca_file), ("certificate", cert_file), ("key", key_file))
        if path is None or not path.is_file()
    ]
    if missing:
        raise SettingsError(
            f"mqtts needs central's broker identity; missing {', '.join(missing)} "
            "(write them with `central broker service-cert --out DIR`, pass --tls-dir DIR)"
        )
    return BrokerConfig(url.hostname, port, ca_file, cert_file, key_file, keepalive=keepalive)


def default_consumer_id() -> str:
    """``ingest-<host>-<pid>``: unique per process, readable in the broker's log."""
    host = socket.gethostname().split(".")[0].lower() or "host"
    return f"ingest-{host}-{os.getpid()}"


#: Allocations between young-generation collections while ingesting (CPython's default is
#: 700): a 20 000-reading transaction allocates hundreds of thousands of short-lived tuples.
GC_YOUNG_THRESHOLD: Final = 100_000
#: The GIL switch interval of an ingest process (see tune_thread_switching).
SWITCH_INTERVAL_S: Final = 0.001


def tune_garbage_collector() -> None:
    """Set the cyclic GC for a long-running ingest process: what exists after start-up is
    frozen (never scanned again) and collections run every 100 000 allocations, not 700.
    With the defaults, full collections scanning the validator's register cache took 10 µs
    a reading in one batch of three (docs/central-ingest.md). Ingestion makes almost no
    reference cycles, so this costs little memory."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 1000)


def tune_thread_switching() -> None:
    """Shorten the interval after which a thread waiting for the GIL asks for it (CPython's
    default 5 ms → :data:`SWITCH_INTERVAL_S`). The store thread gives the GIL up around
    every SQLite step and every large numpy loop of the in-line VEE, and the verify
    thread, busy in Python, keeps it until asked: with the default, the store thread
    waited up to 5 ms each time to get it back. Measured with `python bench/ingest.py`
    (docs/central-ingest.md): with VEE, 78.8 % of the throughput without it at 5 ms,
    89.8 % at 1 ms (medians of 7 and 5 rounds)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def run_ingest(
    settings: Settings,
    broker: BrokerConfig,
    *,
    consumer_id: str | None = None,
    migrate: bool = True,
    registry_entries: list[dict[str, Any]] | None = None,
    stop: threading.Event | None = None,
    status_every_s: float = 10.0,
    on_status: Callable[[dict[str, Any]], None] | None = None,
    vee: bool = True,
    **consumer_options: Any,
) -> ConsumerStats:
    """Run one consumer until ``stop`` is set; returns its final counters.

    ``migrate`` upgrades the database first; ``registry_entries`` (from
    ``central.security.list_gateways``) are enrolled into the database before consuming.
    ``on_status`` gets a status dict when connected (``"event": "ready"``), every
    ``status_every_s`` seconds (``"status"``) and at the end (``"stopped"``). ``vee`` runs
    the in-line VEE on every stored reading (``central.vee.InlineValidator``); without it
    readings are stored unvalidated, for ``central vee pending`` to catch up.
    """
    stop = stop or threading.Event()
    if migrate:
        upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        store = IngestStore(engine, InlineValidator(engine) if vee else None)
        if registry_entries:
            imported = import_registry(store, registry_entries)
            log.info("imported %d gateways from the registry", len(imported))
        consumer = IngestConsumer(
            store, broker, consumer_id or default_consumer_id(), **consumer_options
        )
        tune_garbage_collector()
        tune_thread_switching()

        def report(event: str) -> None:
            if on_status is not None:
                on_status(
                    {
                        "event": event,
                        "consumer": consumer.consumer_id,
                        "connected": consumer.connected,
                        "backlog": consumer.backlog,
                        **consumer.stats().as_dict(),
                    }
                )

        consumer.start()
        try:
            ready = False
            next_status = time.monotonic() + status_every_s
            while not stop.wait(0.1):
                if not ready and consumer.connected:
                    ready = True
                    report("ready")
                if time.monotonic() >= next_status:
                    next_status += status_every_s
                    report("status")
        finally:
            consumer.stop()
        report("stopped")
        return consumer.stats()
    finally:
        engine.dispose()
