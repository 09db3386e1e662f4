"""The edge agent's MQTT uplink (edge.md D2): mutual TLS, birth and death, signed batches
in a sliding window released only by central's end-to-end ack, and central's commands.

    uplink = Uplink(settings, log, load_keys(signing_key, central_key, gateway_id))
    uplink.start()
    ...
    uplink.notify()        # after a commit: look at the log now
    uplink.health()        # for ``edge-agent status``
    uplink.stop()          # death (retained) + clean disconnect

See ``docs/edge-uplink.md``.
"""

from __future__ import annotations

from edge_agent.uplink.client import CollectorLike, InFlight, Uplink, UplinkHealth
from edge_agent.uplink.convert import plain_detail, to_wire_record, to_wire_records
from edge_agent.uplink.settings import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_WINDOW,
    BirthFacts,
    Keys,
    UplinkSettings,
    load_keys,
)
from edge_agent.uplink.wiring import (
    SchedulerCollector,
    archive_entries,
    settings_from_config,
    uplink_from_config,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_WINDOW",
    "BirthFacts",
    "CollectorLike",
    "InFlight",
    "Keys",
    "SchedulerCollector",
    "Uplink",
    "UplinkHealth",
    "UplinkSettings",
    "archive_entries",
    "load_keys",
    "plain_detail",
    "settings_from_config",
    "to_wire_record",
    "to_wire_records",
    "uplink_from_config",
]
