"""The end-to-end chain of `central demo`, as pieces a fault test can break (issue 5).

`central.demo` composes the chain once, start to end; a fault test needs to stop and start
its parts in between. :func:`open_chain` builds the same chain from the demo's own pieces
(`demo_meters`, `area_toml`, `edge_toml`, the simulator thread, `truth_freezes`,
`reconcile`) on `tests/mosquitto_fixture.Broker` (so the broker can be SIGKILLed and
restarted on the same port and persistence directory):

- a device CA and the enrolled gateway `gw-demo`; mosquitto with the production TLS/ACL
  config (or, ``tls=False``, a plaintext test-only broker for the packet-level proxy);
- central ingestion (`IngestConsumer` → `IngestStore`) on SQLite, startable and stoppable;
- the simulated transformer area (12 households + the supply meter) on its own thread;
- the edge agent's files (`edge.toml`, archive) — the agent itself is opened by the test:
  in-process (:meth:`Chain.open_agent`, the demo's way) or in a forked child.

:meth:`Chain.oracle` is the demo's reconciliation: central's daily readings against every
meter model's own daily freeze, for every meter and day.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from mosquitto_fixture import Broker, start_broker
from sqlalchemy import Engine

from central.db import make_engine, upgrade
from central.demo import (
    COLLECT_AT,
    GATEWAY,
    HOST,
    ZONE,
    DemoMeter,
    DemoOptions,
    Reconciliation,
    _local_midnight_utc,
    _SimThread,
    _tick,
    area_toml,
    demo_meters,
    edge_toml,
    reconcile,
    stored_daily_readings,
    truth_freezes,
)
from central.ingest.consumer import BrokerConfig, IngestConsumer, import_registry
from central.ingest.store import IngestStore

START = date(2026, 1, 1)


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def freeze_days(days: int) -> list[date]:
    """The freezes of ``days`` simulated days: the freeze of D+1 00:00 closes day D."""
    return [START + timedelta(days=k) for k in range(1, days + 1)]


def collect_instant(freeze_day: date) -> Any:
    """Local 00:06 of ``freeze_day`` in UTC (the daily task is due at 00:05)."""
    return _local_midnight_utc(freeze_day) + COLLECT_AT


@dataclass
class Chain:
    work: Path
    broker: Broker
    engine: Engine
    store: IngestStore
    broker_config: BrokerConfig
    sim: Any
    runner: _SimThread
    meters: list[DemoMeter]
    edge_file: Path
    consumer: IngestConsumer | None = None
    consumers_started: int = 0
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    # -- central ------------------------------------------------------------------------

    def start_consumer(self) -> IngestConsumer:
        self.consumers_started += 1
        consumer = IngestConsumer(
            self.store, self.broker_config, f"ingest-e2e-{self.consumers_started}"
        )
        consumer.start()
        if not consumer.wait_connected(10):
            consumer.stop()
            raise AssertionError(f"the consumer did not connect:\n{self.broker.log()[-2000:]}")
        self.consumer = consumer
        return consumer

    def stop_consumer(self) -> None:
        if self.consumer is not None:
            self.consumer.stop()
            self.consumer = None

    def watermark(self) -> int:
        return self.store.watermark(GATEWAY)

    # -- the simulated clock --------------------------------------------------------------

    @property
    def clock(self) -> Any:
        return self.sim.clock

    def jump_to(self, freeze_day: date) -> None:
        """The simulated clock to 00:06 local of ``freeze_day`` (no agent may be collecting)."""
        self.clock.advance_to(collect_instant(freeze_day))

    # -- the edge -------------------------------------------------------------------------

    @property
    def edge_db(self) -> Path:
        return self.work / "edge" / "edge.db"

    def edge_meta(self) -> tuple[int, int]:
        """(last_seq, acked_seq) of the edge log, read-only from its file."""
        if not self.edge_db.exists():
            return 0, 0
        conn = sqlite3.connect(f"file:{self.edge_db}?mode=ro", uri=True, timeout=10)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        finally:
            conn.close()
        return int(meta.get("last_seq", 0)), int(meta.get("acked_seq", 0))

    def open_agent(self, tick_s: float = 0.2) -> Any:
        """The edge agent in this process, its Collector on the simulator's clock (the
        demo's composition); the caller closes it."""
        from edge_agent.config import load_config
        from edge_agent.service import Agent, ledger_path
        from edge_agent.tasks import Collector, Ledger

        clock = self.clock

        def collector_factory(agent: Agent, archive: Any) -> Collector:
            agent.ledger = Ledger(ledger_path(agent.config), zone=ZONE)
            assert agent.log is not None
            return Collector(
                agent.config, archive, agent.log, agent.masters, agent.ledger, now=clock.now
            )

        agent = Agent(
            load_config(self.edge_file),
            environ={},
            tick_s=tick_s,
            collector_factory=collector_factory,
        )
        agent.open()
        if agent.collector is None:
            agent.close()
            raise AssertionError(f"the collector did not start: {agent.last_error}")
        return agent

    def collect_day(self, agent: Any, freeze_day: date) -> Any:
        """The demo's day: jump and run the due collection on the agent's scheduler thread."""
        from central.demo import _next_day

        report = agent.on_scheduler(partial(_next_day, self.clock, freeze_day, agent.collector))
        if agent.uplink is not None:
            agent.uplink.notify()
        return report

    def slots(self, days: list[date]) -> tuple[int, int]:
        """(expected, got) daily slots over ``days`` from the ledger file."""
        from edge_agent.tasks import Ledger

        expected = got = 0
        with Ledger(self.work / "edge" / "ledger.db", zone=ZONE) as ledger:
            for day in days:
                success = ledger.success(task="daily_frozen", day=day)
                expected += success.expected
                got += success.got
        return expected, got

    # -- the oracle -----------------------------------------------------------------------

    def oracle(self, days: list[date]) -> Reconciliation:
        """Central's daily readings against every meter model's own freeze of ``days``."""
        self.runner.run(_tick(self.sim))  # the area up to the clock: every freeze taken
        truth = truth_freezes(self.sim, self.meters, days)
        return reconcile(truth, stored_daily_readings(self.engine), self.meters, days)


def assert_oracle_holds(chain: Chain, days: list[date]) -> Reconciliation:
    result = chain.oracle(days)
    assert result.expected == len(chain.meters) * len(days) * 10
    assert result.holds, (
        f"matched {result.matched}/{result.expected}, missing {result.missing}, "
        f"mismatched {result.mismatched}, extra {result.extra}, duplicates "
        f"{result.duplicates}, corrected {result.corrected}: {result.examples}"
    )
    return result


def plaintext_edge(text: str, port: int) -> str:
    """The demo's edge.toml without the TLS files, to ``port`` (a test-only listener)."""
    lines = [
        line
        for line in text.splitlines()
        if not line.startswith(("ca_file", "cert_file", "key_file"))
    ]
    return "\n".join(
        f"port = {port}" if line.startswith("port = ") and line[7:].isdigit() else line
        for line in lines
    )


@contextlib.contextmanager
def open_chain(
    tmp_path: Path,
    *,
    meters: int = 12,
    tls: bool = True,
    edge_port: Callable[[Broker], int] | None = None,
    consumer: bool = True,
    start: date = START,
    area_edit: Callable[[str], str] | None = None,
    edge_edit: Callable[[str], str] | None = None,
) -> Iterator[Chain]:
    """Everything but the edge agent, running; stopped in reverse order afterwards.

    ``edge_port(broker)`` gives the port the edge connects to (default the broker's; a
    proxy's for the fault script). ``tls=False``: a plaintext, anonymous test-only broker
    and a plaintext edge uplink (no ACL: this is not the security configuration).
    ``start`` is the first simulated local day; ``area_edit`` / ``edge_edit`` rewrite the
    area's and the edge's TOML (planted faults, tasks switched on).
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from central.security import DeviceCA, enroll_gateway, list_gateways
    from central.security.enrolment import ca_directory
    from edge_agent.archive import Meter, MeterArchive
    from edge_agent.config import load_config
    from firmware_sim.config import build, parse_config
    from shared_protocol.wire import public_key_pem

    work = tmp_path
    options = DemoOptions(days=1, meters=meters, workdir=work, start=start)
    state = work / "central-state"
    ca = DeviceCA.create(ca_directory(state))
    enrolment = enroll_gateway(state, GATEWAY)
    (work / "central-command.pub").write_bytes(public_key_pem(Ed25519PrivateKey.generate()))
    with contextlib.ExitStack() as stack:
        broker = start_broker(work, tls=tls, ca=ca if tls else None)
        stack.callback(broker.stop)
        if tls:
            central = broker.client_identity("central")
            broker_config = BrokerConfig(
                HOST,
                broker.port,
                central.ca_file,
                central.certificate_file,
                central.key_file,
            )
        else:
            broker_config = BrokerConfig(HOST, broker.port)
        database_url = f"sqlite:///{work / 'central.sqlite3'}"
        upgrade(database_url)
        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        store = IngestStore(engine)
        import_registry(store, list_gateways(state))

        chosen = demo_meters(options)
        area_text = area_toml(options, chosen)
        if area_edit is not None:
            area_text = area_edit(area_text)
        (work / "area.toml").write_text(area_text, encoding="utf-8")
        sim = build(parse_config(area_text, str(work / "area.toml")))
        runner = _SimThread()
        stack.callback(runner.stop)
        ports: dict[str, str] = runner.run(sim.start())
        stack.callback(lambda: runner.run(sim.close()))

        (work / "edge").mkdir()
        edge_file = work / "edge.toml"
        port = broker.port if edge_port is None else edge_port(broker)
        text = edge_toml(work, ports, port, enrolment.bundle_directory)
        if not tls:
            text = plaintext_edge(text, port)
        if edge_edit is not None:
            text = edge_edit(text)
        edge_file.write_text(text, encoding="utf-8")
        with MeterArchive.from_config(load_config(edge_file)) as archive:
            for meter in chosen:
                archive.add(
                    Meter(
                        meter.address,
                        meter.protocol,
                        meter.bus,
                        area="demo-area",
                        account=meter.account,
                        customer_class="supply" if meter.account == "supply" else "residential",
                    )
                )
        chain = Chain(
            work=work,
            broker=broker,
            engine=engine,
            store=store,
            broker_config=broker_config,
            sim=sim,
            runner=runner,
            meters=chosen,
            edge_file=edge_file,
        )
        stack.callback(chain.stop_consumer)
        if consumer:
            chain.start_consumer()
        yield chain
