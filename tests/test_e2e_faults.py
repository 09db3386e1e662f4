"""End-to-end faults over the whole chain, each checked with the reconciliation oracle (issue 5).

The chain is `central demo`'s (tests/e2e_harness.py): simulated transformer area (12
households + the supply meter, DL/T 645-2007 on a pty and 698.45 on TCP) → edge agent
(bus masters, Collector on the simulator's clock, EdgeLog, MQTT uplink) → mosquitto →
central ingestion on SQLite. Every test ends with the oracle: central's daily readings
equal every simulated meter's own daily freeze for every meter and day — nothing missing,
wrong, extra, doubled or corrected. And the edge never releases early: a sampled
``acked_seq`` of the edge log is never above central's committed watermark.

Not here (covered elsewhere): the same batches replayed three times in shuffled order and
two consumers with one killed mid-batch (tests/test_central_ingest*.py).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from e2e_harness import Chain, assert_oracle_holds, freeze_days, open_chain, wait_for

DRAIN_TIMEOUT_S = 60.0


class NoEarlyRelease:
    """Samples the edge log's acked seq, then central's watermark: the first may never
    exceed the second (central commits before it acknowledges; the watermark only grows)."""

    def __init__(self, chain: Chain, acked: Any = None) -> None:
        self.chain = chain
        self.acked = acked or (lambda: chain.edge_meta()[1])
        self.samples = 0
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="no-early-release", daemon=True)

    def check(self) -> None:
        acked = self.acked()
        watermark = self.chain.watermark()
        self.samples += 1
        if acked > watermark:
            self.violations.append(f"edge acked {acked} > central watermark {watermark}")

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.check()

    def __enter__(self) -> NoEarlyRelease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.check()
        assert not self.violations, self.violations[:5]


@contextmanager
def running_agent(chain: Chain) -> Iterator[Any]:
    agent = chain.open_agent()
    try:
        assert wait_for(lambda: agent.uplink.health().central_online, 10), agent.uplink.health()
        yield agent
    finally:
        agent.close()


def drained(agent: Any) -> bool:
    log = agent.log
    return log.last_seq() > 0 and log.acked_seq() == log.last_seq()


def wait_drained(agent: Any) -> None:
    assert wait_for(lambda: drained(agent), DRAIN_TIMEOUT_S, 0.05), (
        agent.log.last_seq(),
        agent.log.acked_seq(),
        agent.uplink.health(),
    )


# --------------------------------------------------------------------------- broker crash


def test_broker_killed_and_restarted_mid_stream(tmp_path: Path) -> None:
    """mosquitto (production TLS/ACL config, persistence on) is SIGKILLed while a day's
    records are being collected and uploaded, and restarted on the same port and
    persistence directory — twice, at seeded moments. Everything arrives, exactly once;
    the edge releases nothing central has not committed."""
    rng = random.Random(20261129)
    days = freeze_days(4)
    kills = 0
    in_flight_at_kill = []
    with open_chain(tmp_path) as chain:
        with running_agent(chain) as agent, NoEarlyRelease(chain, agent.log.acked_seq):
            for index, day in enumerate(days):
                if index % 2 == 0:
                    chain.collect_day(agent, day)
                    wait_drained(agent)
                    continue
                collecting = threading.Thread(target=chain.collect_day, args=(agent, day))
                collecting.start()
                # mid-stream: the pass has committed records the uplink is sending
                assert wait_for(lambda: agent.log.last_seq() > agent.log.acked_seq(), 30, 0.002)
                time.sleep(rng.uniform(0, 0.01))
                chain.broker.kill()
                kills += 1
                in_flight_at_kill.append(agent.log.last_seq() - agent.log.acked_seq())
                time.sleep(rng.uniform(0.2, 1.0))
                chain.broker.start()
                collecting.join(60)
                assert not collecting.is_alive()
                wait_drained(agent)
            health = agent.uplink.health()
        assert health.connects >= 1 + kills, health
        assert health.nacks == 0
        assert kills == 2
        assert all(in_flight_at_kill), in_flight_at_kill  # the kills caught records in flight
        assert_oracle_holds(chain, days)


# --------------------------------------------------------------------------- central down


def test_central_ingestion_down_for_a_simulated_day_then_back(tmp_path: Path) -> None:
    """The ingestion consumer stops (its will / disconnect publishes central offline); the
    edge keeps collecting a whole simulated day and buffers it — gated, it sends no batch
    and releases nothing — then central comes back and the gateway drains."""
    days = freeze_days(3)
    with open_chain(tmp_path) as chain:
        with running_agent(chain) as agent, NoEarlyRelease(chain, agent.log.acked_seq):
            uplink = agent.uplink
            chain.collect_day(agent, days[0])
            wait_drained(agent)

            chain.stop_consumer()
            assert wait_for(lambda: not uplink.health().central_online, 10), uplink.health()
            sent_before = uplink.health().batches_sent
            acked_before = agent.log.acked_seq()
            chain.collect_day(agent, days[1])  # a simulated day with central down
            expected, got = chain.slots(days[:2])
            assert got == expected == len(chain.meters) * 2
            buffered = agent.log.last_seq() - agent.log.acked_seq()
            time.sleep(1.0)  # the uplink would have sent by now if it were not gated
            assert uplink.health().batches_sent == sent_before
            assert agent.log.acked_seq() == acked_before
            assert buffered > len(chain.meters) * 10  # the day's readings wait in the log

            chain.start_consumer()
            assert wait_for(lambda: uplink.health().central_online, 10), uplink.health()
            wait_drained(agent)
            chain.collect_day(agent, days[2])
            wait_drained(agent)
            assert uplink.health().nacks == 0
        assert_oracle_holds(chain, days)
