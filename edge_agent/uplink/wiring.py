"""Building the uplink from the agent's configuration (``[uplink]``) and its parts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.config import EdgeConfig, config_hash
from edge_agent.store import EdgeLog
from edge_agent.uplink.client import CollectorLike, Uplink
from edge_agent.uplink.settings import BirthFacts, UplinkSettings, load_keys
from shared_protocol.wire import ArchiveEntry

__all__ = [
    "SchedulerCollector",
    "archive_entries",
    "settings_from_config",
    "uplink_from_config",
]


def settings_from_config(config: EdgeConfig) -> UplinkSettings:
    """:class:`UplinkSettings` for ``config.uplink`` (client id defaults to the gateway id)."""
    section = config.uplink
    return UplinkSettings(
        gateway_id=section.client_id or config.gateway.id,
        host=section.host,
        port=section.port,
        ca_file=Path(section.ca_file),
        cert_file=Path(section.cert_file),
        key_file=Path(section.key_file),
        keepalive_s=section.keepalive_s,
        batch_size=section.batch_size,
        window=section.window,
        resend_timeout_s=float(section.resend_timeout_s),
        command_memory_file=Path(config.storage.path).with_name("uplink-commands.json"),
    )


def archive_entries(meters: list[Any]) -> tuple[ArchiveEntry, ...]:
    """The archive as a birth lists it (``edge_agent.archive.Meter`` → ``ArchiveEntry``)."""
    return tuple(
        ArchiveEntry(
            address=meter.key,
            protocol=meter.protocol,
            bus=meter.bus,
            area=meter.area,
            customer_class=meter.customer_class,
            protected=meter.protected,
            prepaid=meter.prepaid,
        )
        for meter in meters
    )


def uplink_from_config(
    config: EdgeConfig,
    log: EdgeLog,
    *,
    software_version: str,
    archive: Callable[[], tuple[str, list[Any]]] | None = None,
    collector: CollectorLike | None = None,
    boot_reason: str = "start",
) -> Uplink:
    """The uplink the agent runs: keys from the configured files, birth facts from the
    config and ``archive() -> (archive_hash, meters)`` (read at every birth)."""
    settings = settings_from_config(config)
    keys = load_keys(
        Path(config.uplink.signing_key_file),
        Path(config.uplink.central_key_file),
        settings.gateway_id,
    )
    digest = "sha256:" + config_hash(config)

    def facts() -> BirthFacts:
        archive_hash, meters = archive() if archive is not None else ("sha256:none", [])
        return BirthFacts(
            software_version=software_version,
            config_hash=digest,
            archive_hash=archive_hash,
            meters=archive_entries(meters),
            boot_reason=boot_reason,
        )

    return Uplink(settings, log, keys, birth_facts=facts, collector=collector)


class SchedulerCollector:
    """Central's collector commands run on the agent's scheduler thread (which owns the
    collector): ``get()`` gives the current collector, ``run(job)`` runs a job there."""

    def __init__(self, get: Callable[[], Any], run: Callable[[Callable[[], Any]], Any]) -> None:
        self._get = get
        self._run = run

    def _collector(self) -> Any:
        collector = self._get()
        if collector is None:
            raise RuntimeError("not available: no collector is running")
        return collector

    def read_now(self, meter_key: str, what: str, *, store: bool = True) -> Any:
        collector = self._collector()
        return self._run(lambda: collector.read_now(meter_key, what, store=store))

    def backfill(self, days: int | None = None, meters: Any = None) -> Any:
        collector = self._collector()
        return self._run(lambda: collector.backfill(days, meters))

    def clock_check(self, meters: Any = None, *, sync: bool = True) -> Any:
        collector = self._collector()
        return self._run(lambda: collector.clock_check(meters, sync=sync))
