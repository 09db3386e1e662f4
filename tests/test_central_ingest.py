"""The ingestion consumer on a real Mosquitto (production TLS config and ACL) and a real
database (SQLite and PostgreSQL): verify, store, commit, then ack; refuse bad batches with a
nack and an event and carry on; idempotent under replays; births and deaths."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from central_ingest_support import (
    T0,
    events,
    gateway_double,
    make_batch,
    running_consumer,
    wait_for,
)
from mosquitto_fixture import Broker, start_broker
from sqlalchemy import Engine

from central.ingest.consumer import GatewayKeys, import_registry
from central.ingest.store import IngestStore
from shared_protocol.wire import (
    Ack,
    ArchiveEntry,
    Birth,
    Death,
    Nack,
    batch_topic,
    birth_topic,
    canonical_json,
    death_topic,
    encode,
    generate_private_key,
    load_private_key,
    public_key_pem,
    sign,
    verify,
)

pytest_plugins = ["central_fixtures"]


@pytest.fixture
def broker(tmp_path: Path) -> Broker:
    broker = start_broker(tmp_path)
    yield broker  # type: ignore[misc]
    broker.stop()


def test_signed_batch_is_stored_then_acked(broker: Broker, engine: Engine) -> None:
    store = IngestStore(engine)
    gw = gateway_double(broker, store, "gw-0001")
    with running_consumer(broker, engine) as consumer:
        batch = make_batch("gw-0001", 1, 500)
        gw.publish(gw.sign(batch))
        ack = gw.wait_ack(500)
        # The ack is published after COMMIT: the rows are visible the moment it arrives.
        assert store.count_readings("gw-0001") == 500
        assert store.watermark("gw-0001") == 500
        assert (ack.gateway, ack.session, ack.up_to_seq) == ("gw-0001", 1, 500)
        # The next batch moves the contiguous watermark on.
        gw.publish(gw.sign(make_batch("gw-0001", 501, 10)))
        assert gw.wait_ack(510).up_to_seq == 510
        stats = consumer.stats()
        assert stats.batches == 2 and stats.readings_inserted == 510 and stats.acks == 2
    gw.close()


def test_gap_acks_the_contiguous_watermark(broker: Broker, engine: Engine) -> None:
    store = IngestStore(engine)
    gw = gateway_double(broker, store, "gw-0001")
    with running_consumer(broker, engine):
        gw.publish(gw.sign(make_batch("gw-0001", 11, 10)))  # 1..10 not yet here
        reply = gw.next_reply()
        assert isinstance(reply, Ack) and reply.up_to_seq == 0
        gw.publish(gw.sign(make_batch("gw-0001", 1, 10)))
        assert gw.wait_ack(20).up_to_seq == 20
    assert store.count_readings("gw-0001") == 20
    gw.close()


def test_bad_batches_are_nacked_recorded_and_the_consumer_carries_on(
    broker: Broker, engine: Engine
) -> None:
    store = IngestStore(engine)
    gw = gateway_double(broker, store, "gw-0001")
    stranger = gateway_double(broker, None, "gw-0099")  # a certificate, never enrolled
    with running_consumer(broker, engine):
        # 1. Signed with a key that is not the enrolled one.
        forged = gw.sign(make_batch("gw-0001", 1, 5), key=generate_private_key())
        gw.publish(forged)
        nack = gw.next_reply()
        assert isinstance(nack, Nack)
        assert (nack.reason, nack.seq_from, nack.seq_to, nack.session) == ("signature", 1, 5, 1)
        # 2. Not a payload at all.
        gw.publish(b"\x00not json")
        nack = gw.next_reply()
        assert isinstance(nack, Nack) and nack.reason == "malformed"
        assert nack.seq_from is None and nack.session is None
        # 3. Unsigned.
        unsigned = {"v": 1, "type": "batch", "body": make_batch("gw-0001", 1, 5).to_wire()}
        gw.publish(canonical_json(unsigned))
        nack = gw.next_reply()
        assert isinstance(nack, Nack) and nack.reason == "signature"
        # 4. A gateway nobody enrolled (its certificate lets it publish on its own topic).
        stranger.publish(stranger.sign(make_batch("gw-0099", 1, 5)))
        nack = stranger.next_reply()
        assert isinstance(nack, Nack) and nack.reason == "signature"
        assert "unknown" in nack.detail
        # The consumer still serves the next good batch.
        gw.publish(gw.sign(make_batch("gw-0001", 1, 5)))
        assert gw.wait_ack(5).up_to_seq == 5
    assert store.count_readings("gw-0001") == 5
    assert store.count_readings("gw-0099") == 0
    rejected = events(engine, "gw-0001", "batch_rejected")
    assert sorted(e["reason"] for e in rejected) == ["malformed", "signature", "signature"]
    assert any(e.get("seq_from") == 1 for e in rejected)
    gw.close()
    stranger.close()


def test_wrong_gateway_in_the_body_is_refused(broker: Broker, engine: Engine) -> None:
    store = IngestStore(engine)
    gw = gateway_double(broker, store, "gw-0001")
    other = gateway_double(broker, store, "gw-0002")
    with running_consumer(broker, engine):
        # gw-0001 publishes on its own topic a batch signed as gw-0002 (its key stolen).
        gw.publish(sign(make_batch("gw-0002", 1, 5), other.key, "gw-0002"))
        nack = gw.next_reply()
        assert isinstance(nack, Nack) and nack.reason == "wrong_gateway"
        gw.publish(gw.sign(make_batch("gw-0001", 1, 5)))
        assert gw.wait_ack(5).up_to_seq == 5
    assert store.count_readings("gw-0002") == 0
    gw.close()
    other.close()


def test_replayed_three_times_shuffled_each_reading_once(broker: Broker, engine: Engine) -> None:
    store = IngestStore(engine)
    gw = gateway_double(broker, store, "gw-0001")
    payloads = [gw.sign(make_batch("gw-0001", 1 + 100 * i, 100)) for i in range(20)]
    sent = payloads * 3
    random.Random(7).shuffle(sent)
    with running_consumer(broker, engine) as consumer:
        for payload in sent:
            gw.publish(payload)
        gw.wait_ack(2000)
        wait_for(lambda: consumer.stats().batches == 60, what="all 60 batches processed")
    assert store.count_readings("gw-0001") == 2000
    assert store.watermark("gw-0001") == 2000
    stats = consumer.stats()
    assert stats.readings_inserted == 2000
    assert stats.duplicates == 4000
    assert stats.nacks == 0
    gw.close()


def test_births_and_deaths_set_the_gateway_state(broker: Broker, engine: Engine) -> None:
    store = IngestStore(engine)
    gw = gateway_double(broker, store, "gw-0001")
    birth = Birth(
        gateway="gw-0001",
        session=3,
        software_version="1.0.0",
        config_hash="sha256:aa",
        archive_hash="sha256:bb",
        meter_count=1,
        meters=(
            ArchiveEntry(
                address="000000000001",
                protocol="dlt645",
                bus="rs485-1",
                area="T1",
                customer_class="residential",
                protected=False,
                prepaid=False,
            ),
        ),
        log_depth=0,
        oldest_unacked_s=None,
        last_seq=0,
        acked_seq=0,
        clock_offset_s=None,
        boot_reason="power_on",
        sent_at=T0,
    )
    # Retained before the consumer starts: it sees it on subscribing.
    assert gw.session.publish(birth_topic("gw-0001"), sign(birth, gw.key, "gw-0001"), retain=True)
    with running_consumer(broker, engine) as consumer:
        wait_for(lambda: (info := store.gateway("gw-0001")) is not None and info.online)
        info = store.gateway("gw-0001")
        assert info is not None and info.session == "3"
        death = Death(gateway="gw-0001", session=3, at=T0)
        assert gw.session.publish(death_topic("gw-0001"), encode(death), retain=True)
        wait_for(lambda: not store.gateway("gw-0001").online, what="offline")  # type: ignore[union-attr]
        # A forged birth (wrong key) changes nothing and the consumer keeps going.
        forged = sign(birth, generate_private_key(), "gw-0001")
        assert gw.session.publish(birth_topic("gw-0001"), forged, retain=True)
        wait_for(lambda: consumer.stats().dropped >= 1, what="forged birth dropped")
        assert not store.gateway("gw-0001").online  # type: ignore[union-attr]
    gw.close()


def test_central_state_online_retained_and_restored(broker: Broker, engine: Engine) -> None:
    from shared_protocol.wire import CENTRAL_STATE, CentralState, decode

    watcher = broker.session("gw-0001", client_id="watcher")
    with running_consumer(broker, engine, "ingest-a"):
        watcher.subscribe(CENTRAL_STATE)
        state = decode(watcher.next_message().payload)
        assert isinstance(state, CentralState) and state.online
        with running_consumer(broker, engine, "ingest-b"):
            pass
        # ingest-b left with its will (offline); ingest-a puts online back.
        seen: list[bool] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (False not in seen or not seen[-1]):
            seen.append(decode(watcher.next_message().payload).online)  # type: ignore[attr-defined]
        assert seen[-2:] == [False, True], seen
    watcher.close()


def test_key_lookup_follows_enrolment(engine: Engine) -> None:
    store = IngestStore(engine)
    keys = GatewayKeys(store)
    assert keys("gw-0001") is None
    key = generate_private_key()
    store.enroll_gateway("gw-0001", public_key_pem(key).decode(), "gw-0001:2027")
    keys.forget()
    assert keys("gw-0001") is None  # the enrolled key id is gw-0001:2027
    assert keys("gw-0001:2027") is not None
    assert keys("gw-0002:2027") is None


def test_import_registry_enrols_gateways_and_drops_revoked_keys(engine: Engine) -> None:
    store = IngestStore(engine)
    key = generate_private_key()
    pem = public_key_pem(key).decode()
    entries = [
        {"gateway_id": "gw-0001", "signing_key_id": "gw-0001", "signing_public_key_pem": pem},
        {
            "gateway_id": "gw-0002",
            "signing_key_id": "gw-0002",
            "signing_public_key_pem": pem,
            "revoked_at": "2026-11-01T00:00:00Z",
        },
    ]
    assert import_registry(store, entries) == ["gw-0001", "gw-0002"]
    one, two = store.gateway("gw-0001"), store.gateway("gw-0002")
    assert one is not None and one.key_id == "gw-0001" and one.public_key_pem == pem
    assert two is not None and two.public_key_pem is None


def test_batch_topic_helper_matches_subscription() -> None:
    assert batch_topic("gw-0001") == "m2c/v1/gw/gw-0001/batch"


def test_cli_import_registry_then_ingest_verifies_with_the_enrolled_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from central.cli import cli
    from central.db import make_engine

    url = f"sqlite:///{tmp_path / 'central.sqlite3'}"
    monkeypatch.setenv("M2C_DATABASE_URL", url)
    state = ["--state-dir", str(tmp_path / "state")]
    runner = CliRunner()
    assert runner.invoke(cli, [*state, "ca", "init"]).exit_code == 0
    enrolled = runner.invoke(cli, [*state, "gateway", "enroll", "gw-0001"])
    assert enrolled.exit_code == 0, enrolled.output
    result = runner.invoke(cli, [*state, "gateway", "import-registry", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"imported": ["gw-0001"]}
    engine = make_engine(url)
    try:
        info = IngestStore(engine).gateway("gw-0001")
        assert info is not None and info.key_id == "gw-0001" and info.public_key_pem
        bundle_key = (tmp_path / "state" / "bundles" / "gw-0001" / "signing.key").read_bytes()
        payload = sign(make_batch("gw-0001", 1, 3), load_private_key(bundle_key), "gw-0001")
        keys = GatewayKeys(IngestStore(engine))
        assert verify(payload, keys, topic=batch_topic("gw-0001")).gateway == "gw-0001"  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def test_cli_ingest_run_refuses_mqtts_without_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from central.cli import cli

    monkeypatch.setenv("M2C_BROKER_URL", "mqtts://127.0.0.1:8883")
    result = CliRunner().invoke(cli, ["ingest", "run"])
    assert result.exit_code == 1
    assert "service-cert" in result.output
