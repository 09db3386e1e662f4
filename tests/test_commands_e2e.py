"""Commands from central to a real edge agent through real Mosquitto (TLS, ACL), executed
against simulated meters, with their results folded back into the commands table.

The chain is ``tests/e2e_harness.py``'s (12 households + the supply meter); the edge is
configured with the public half of a central command key made here
(``create_command_key``), so every command it runs proves central's signature verifies
with the key the edge holds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from e2e_harness import START, open_chain, wait_for
from sqlalchemy import select

from central.cli import cli
from central.commands import (
    MemoryPublisher,
    MqttCommandPublisher,
    create_command_key,
    get_command,
    issue_command,
    load_command_key,
    sync_results,
)
from central.db.schema import meters, readings
from central.demo import mosquitto_binary
from edge_agent.config import load_config
from shared_protocol.wire import CommandGuard, CommandRefusedError, load_public_key

pytestmark = pytest.mark.skipif(
    mosquitto_binary() is None, reason="mosquitto is not installed (apt-get install mosquitto)"
)


def settle(engine: Any, command_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """Fold results in until the gateway's answer is in."""

    def answered() -> bool:
        with engine.begin() as conn:
            sync_results(conn)
            row = get_command(conn, command_id)
        return row is not None and row["result_at"] is not None

    assert wait_for(answered, timeout, interval=0.1), f"no result for {command_id}"
    with engine.connect() as conn:
        row = get_command(conn, command_id)
    assert row is not None
    return row


def send(chain: Any, key_path: Path, **request: Any) -> dict[str, Any]:
    """One command over the real broker, with central's identity and key."""
    with MqttCommandPublisher(chain.broker_config, load_command_key(key_path)) as publisher:
        return issue_command(
            chain.engine, publisher, gateway="gw-demo", requested_by="ops:e2e", **request
        )


@pytest.fixture(scope="module")
def chain_with_agent(tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = Path(tmp_path_factory.mktemp("cmd"))
    key_path = work / "keys" / "central-command.key"
    public = create_command_key(key_path)
    with open_chain(work, meters=4) as chain:
        # the edge trusts this key's public half (read when the agent opens)
        (chain.work / "central-command.pub").write_bytes(public)
        agent = chain.open_agent()
        try:
            assert wait_for(lambda: agent.uplink.health().central_online, 10)
            chain.collect_day(agent, START + timedelta(days=1))
            target = agent.log.last_seq()
            assert wait_for(lambda: (agent.uplink.health().last_ack_seq or 0) >= target, 30)
            with chain.engine.connect() as conn:
                archived = conn.execute(select(meters.c.meter)).scalars().all()
            assert len(archived) == 5
            yield chain, agent, key_path
        finally:
            agent.close()


def test_read_now_runs_on_the_gateway_and_its_result_comes_back(chain_with_agent: Any) -> None:
    chain, _, key_path = chain_with_agent
    meter = chain.meters[0].address
    row = send(chain, key_path, kind="read_now", args={"meter": meter, "what": "1-0:1.8.0"})
    assert row["status"] == "sent"
    done = settle(chain.engine, row["id"])
    assert done["status"] == "succeeded", done
    [value] = done["result_detail"]["result"]
    assert value["meter"] == meter and value["obis"] == "1-0:1.8.0"

    # the read went into the edge's log as on_demand and reached central like any reading
    def stored() -> Any:
        with chain.engine.connect() as conn:
            return conn.execute(
                select(readings.c.value).where(
                    readings.c.meter == meter, readings.c.source == "on_demand"
                )
            ).scalar_one_or_none()

    assert wait_for(lambda: stored() is not None, 20)
    assert stored() == Decimal(value["value"])


def test_clock_sync_checks_every_meter(chain_with_agent: Any) -> None:
    chain, _, key_path = chain_with_agent
    row = send(chain, key_path, kind="clock_sync")
    done = settle(chain.engine, row["id"])
    assert done["status"] == "succeeded", done
    checked = {check["meter"] for check in done["result_detail"]["result"]}
    assert checked == {m.address for m in chain.meters}


def test_an_expired_command_is_refused_by_the_gateway_and_recorded_expired(
    chain_with_agent: Any,
) -> None:
    """Issued 10 minutes ago with a one-minute life: past the gateway's 5-minute skew
    allowance, so the gateway answers ``expired`` and runs nothing. (Central may mark it
    expired itself first; the gateway's answer, when it comes, is recorded over that.)"""
    chain, _, key_path = chain_with_agent
    row = send(
        chain, key_path, kind="rebirth", ttl=60, now=datetime.now(UTC) - timedelta(minutes=10)
    )
    done = settle(chain.engine, row["id"])
    assert done["status"] == "expired"
    assert done["result_detail"]["reason"] == "expired"


def test_central_signature_verifies_with_the_key_the_edge_holds(chain_with_agent: Any) -> None:
    chain, _, key_path = chain_with_agent
    edge_key = load_public_key(
        Path(load_config(chain.edge_file).uplink.central_key_file).read_bytes()
    )
    publisher = MemoryPublisher(load_command_key(key_path))
    issue_command(
        chain.engine,
        publisher,
        gateway="gw-demo",
        kind="backfill",
        args={"days": 1},
        requested_by="ops:e2e",
    )
    [(topic, payload)] = publisher.messages
    guard = CommandGuard(edge_key, lambda: datetime.now(UTC), gateway="gw-demo")
    assert guard.check(payload, topic=topic).kind == "backfill"
    tampered = payload.replace(b'"days":1', b'"days":9')
    assert tampered != payload
    with pytest.raises(CommandRefusedError) as refused:
        CommandGuard(edge_key, lambda: datetime.now(UTC), gateway="gw-demo").check(tampered)
    assert refused.value.reason == "bad_signature"


def test_the_cli_sends_a_command_and_lists_it(chain_with_agent: Any) -> None:
    chain, _, key_path = chain_with_agent
    identity = chain.broker.client_identity("central")
    env = {
        "M2C_BROKER_URL": f"mqtts://127.0.0.1:{chain.broker.port}",
        "M2C_COMMAND_KEY_PATH": str(key_path),
        "M2C_DATABASE_URL": str(chain.engine.url),
    }
    tls = [
        "--ca-file",
        str(identity.ca_file),
        "--cert-file",
        str(identity.certificate_file),
        "--key-file",
        str(identity.key_file),
    ]
    meter = chain.meters[1].address
    runner = CliRunner()
    read_now = ["ops", "command", "read_now", "--gateway", "gw-demo", *tls]
    sent = runner.invoke(
        cli, [*read_now, "--meter", meter, "--requested-by", "ops:cli", "--json"], env=env
    )
    assert sent.exit_code == 0, sent.output
    row = json.loads(sent.output)
    assert (row["status"], row["requested_by"], row["meter"]) == ("sent", "ops:cli", meter)
    assert settle(chain.engine, row["id"])["status"] == "succeeded"
    listed = runner.invoke(cli, ["ops", "commands", "--gateway", "gw-demo"], env=env)
    assert listed.exit_code == 0 and row["id"] in listed.output
    unknown = runner.invoke(cli, [*read_now, "--meter", "nope"], env=env)
    assert unknown.exit_code == 1 and "in no gateway's archive" in unknown.output
    no_identity = runner.invoke(cli, ["ops", "command", "rebirth", "--gateway", "gw-demo"], env=env)
    assert no_identity.exit_code == 1 and "central broker service-cert" in no_identity.output
