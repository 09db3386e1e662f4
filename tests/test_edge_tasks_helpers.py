"""Shared set-up for the task, ledger and clock tests: a Collector over simulated meters.

The meters sit on a real pty (``served`` from the bus helpers); the archive, the log and
the ledger are real SQLite files in ``tmp_path``; the collector's clock is the simulator's
``SimClock``, so a test moves simulated time with ``fast_forward`` instead of waiting.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from test_edge_bus_helpers import SIM_NOW, SimLine, address_645, served

from edge_agent.archive import Meter as ArchiveMeter
from edge_agent.archive import MeterArchive
from edge_agent.bus import BusMaster, TimingPolicy
from edge_agent.config import (
    ClockCheckTask,
    ClockConfig,
    CurveTask,
    DailyFrozenTask,
    EdgeConfig,
    EventTask,
    GatewayConfig,
    MonthlyFrozenTask,
    TasksConfig,
)
from edge_agent.store import EdgeLog
from edge_agent.store.records import EventRecord, ReadingRecord, StatisticRecord
from edge_agent.tasks import Collector, Ledger
from firmware_sim.clock import SimClock
from firmware_sim.device import Device
from firmware_sim.faults import FaultPlan
from firmware_sim.meter import Meter as ModelMeter

ZONE = "Asia/Shanghai"
# Quarantined meters are probed again at once: simulated days pass in real milliseconds.
TASK_POLICY = TimingPolicy(min_response_timeout=0.1, probe_interval=0.01, max_probe_interval=0.02)


def test_helpers_are_importable() -> None:
    assert SIM_NOW.tzinfo is UTC


def tasks_config(*enabled: str, backfill_days: int = 3) -> TasksConfig:
    """Only the named tasks enabled (so a test reads only what it checks)."""
    return TasksConfig(
        daily_frozen=DailyFrozenTask(enabled="daily_frozen" in enabled),
        monthly_frozen=MonthlyFrozenTask(enabled="monthly_frozen" in enabled),
        curve=CurveTask(enabled="curve" in enabled),
        events=EventTask(enabled="events" in enabled),
        clock_check=ClockCheckTask(enabled="clock_check" in enabled),
        backfill_days=backfill_days,
    )


def edge_config(
    master: BusMaster, tasks: TasksConfig, clock: ClockConfig | None = None
) -> EdgeConfig:
    return EdgeConfig(
        gateway=GatewayConfig(id="gw-test", timezone=ZONE),
        buses=(master.config,),
        tasks=tasks,
        clock=clock or ClockConfig(),
    )


@dataclass
class Rig:
    """Everything a task test touches."""

    clock: SimClock
    master: BusMaster
    line: SimLine
    config: EdgeConfig
    archive: MeterArchive
    log: EdgeLog
    ledger: Ledger
    collector: Collector
    models: dict[str, ModelMeter]
    tmp: Path

    def restart(self, **changes: Any) -> Collector:
        """A new Collector on the same files (a daemon restart); config changes allowed."""
        self.ledger.close()
        self.ledger = Ledger(self.tmp / "ledger.db", zone=ZONE)
        if changes:
            self.config = replace(self.config, **changes)
        self.collector = Collector(
            self.config, self.archive, self.log, {"rs485-1": self.master}, self.ledger,
            now=self.clock.now,
        )  # fmt: skip
        return self.collector

    def set_bus_fault(self, plan: FaultPlan | None) -> None:
        """A bus-wide fault plan from now on (None: the line is healthy again)."""
        bus = self.line.bus

        def change() -> None:
            bus._faults = (
                plan.start() if plan is not None else None
            )  # the simulator has no public switch for a bus-wide plan

        self.line.call(change)

    def readings(self, meter: str) -> list[ReadingRecord]:
        start = datetime(2000, 1, 1, tzinfo=UTC)
        return self.log.find_readings(meter, None, start, start + timedelta(days=365 * 100))

    def events(self, code: str | None = None) -> list[EventRecord]:
        records = self.log.pending(limit=1_000_000)
        return [
            r for r in records if isinstance(r, EventRecord) and (code is None or r.code == code)
        ]

    def statistics(self) -> list[StatisticRecord]:
        records = self.log.pending(limit=1_000_000)
        return [r for r in records if isinstance(r, StatisticRecord)]


@contextmanager
def rig(
    tmp_path: Path,
    devices: Sequence[Device],
    tasks: TasksConfig,
    *,
    clock: SimClock,
    clock_config: ClockConfig | None = None,
    extra_meters: Sequence[ArchiveMeter] = (),
    **served_options: Any,
) -> Iterator[Rig]:
    """A collector over ``devices`` on one simulated 645/698 line."""
    line = "dlt698.45" if devices and devices[0].protocol.startswith("dlt698") else "dlt645"
    served_options.setdefault("policy", TASK_POLICY)
    served_options.setdefault("response_timeout_ms", 150)
    with served(devices, line, "pty", **served_options) as (master, sim):
        config = edge_config(master, tasks, clock_config)
        archive = MeterArchive(tmp_path / "archive.db")
        models: dict[str, ModelMeter] = {}
        for device in devices:
            model: ModelMeter = device.meter  # type: ignore[attr-defined]
            protocol = "dlt698.45" if line == "dlt698.45" else "dlt645-2007"
            archive.add(ArchiveMeter(address=model.address, protocol=protocol, bus="rs485-1"))
            models[model.address] = model
        for meter in extra_meters:
            archive.add(meter)
        log = EdgeLog(tmp_path / "edge.db")
        ledger = Ledger(tmp_path / "ledger.db", zone=ZONE)
        collector = Collector(config, archive, log, {"rs485-1": master}, ledger, now=clock.now)
        try:
            yield Rig(clock, master, sim, config, archive, log, ledger, collector, models, tmp_path)
        finally:
            ledger.close()
            log.close()
            archive.close()


def freeze_values(model: ModelMeter, freeze_day: date) -> tuple[datetime, dict[str, Decimal]]:
    """The model's daily record frozen at ``freeze_day`` 00:00: its time (UTC) and values."""
    from shared_protocol.timebase import meter_time_to_utc

    for record in model.daily:
        if record.time.date() == freeze_day and record.time.hour == 0:
            registers = record.registers
            values = {f"1-0:1.8.{t}": registers.import_kwh(t) for t in range(5)}
            values |= {f"1-0:2.8.{t}": registers.export_kwh(t) for t in range(5)}
            return meter_time_to_utc(record.time, ZONE), values
    raise AssertionError(f"meter {model.address} has no freeze on {freeze_day}")


def utc_text(instant: datetime) -> str:
    """The log's fixed-width UTC text of an instant."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def missing_meter(index: int = 999) -> ArchiveMeter:
    """An archive meter nobody on the line answers for."""
    return ArchiveMeter(address=address_645(index), protocol="dlt645-2007", bus="rs485-1")


__all__ = [
    "TASK_POLICY",
    "ZONE",
    "Rig",
    "edge_config",
    "freeze_values",
    "missing_meter",
    "rig",
    "tasks_config",
    "utc_text",
]
