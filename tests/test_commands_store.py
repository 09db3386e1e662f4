"""Commands to gateways on SQLite and PostgreSQL: issuing checks, stores, signs and
publishes; results fold in from gateway events; overdue commands expire; listing pages.

The publisher here is the in-memory one (the transport is swappable); the same calls over
a real broker to a real edge agent are in ``test_commands_e2e.py``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from central.commands import (
    CommandError,
    CommandKeyError,
    MemoryPublisher,
    build_args,
    create_command_key,
    get_command,
    issue_command,
    list_commands,
    load_command_key,
    public_key_pem_of,
    sync_results,
)
from central.db.schema import gateways, meters
from central.ingest.store import IngestStore
from central.ops import worklist
from shared_protocol.wire import (
    BackfillArgs,
    ClockSyncArgs,
    Command,
    CommandGuard,
    CommandRefusedError,
    ReadNowArgs,
    ResendArgs,
    generate_private_key,
    load_public_key,
)

pytest_plugins = ["central_fixtures"]

T0 = datetime(2026, 12, 2, 2, tzinfo=UTC)


@pytest.fixture
def key() -> Any:
    return generate_private_key()


@pytest.fixture
def area(engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.execute(
            insert(gateways),
            [
                {"id": gateway, "enrolled_at": T0, "online": True, "last_birth_at": T0}
                for gateway in ("gw-a", "gw-b")
            ],
        )
        conn.execute(
            insert(meters),
            [
                {
                    "meter": meter,
                    "gateway": gateway,
                    "address": meter,
                    "protocol": "dlt645-2007",
                    "first_seen_at": T0,
                    "last_seen_at": T0,
                }
                for meter, gateway in (("m1", "gw-a"), ("m2", "gw-a"), ("m9", "gw-b"))
            ],
        )
    return engine


def issue(engine: Engine, publisher: MemoryPublisher, **kwargs: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "gateway": "gw-a",
        "kind": "read_now",
        "args": {"meter": "m1"},
        "requested_by": "ops:test",
        "now": T0,
    }
    params.update(kwargs)
    return issue_command(engine, publisher, **params)


def test_issue_stores_signs_and_publishes(area: Engine, key: Any) -> None:
    publisher = MemoryPublisher(key)
    row = issue(area, publisher, ttl=timedelta(minutes=30))
    assert row["status"] == "sent" and row["sent_at"] is not None
    assert (row["gateway"], row["meter"], row["kind"]) == ("gw-a", "m1", "read_now")
    assert row["args"] == {"meter": "m1", "what": "1-0:1.8.0"}
    assert row["issued_at"] == T0 and row["expires_at"] == T0 + timedelta(minutes=30)
    assert row["requested_by"] == "ops:test"
    [(topic, payload)] = publisher.messages
    assert topic == "m2c/v1/gw/gw-a/cmd"
    # what a gateway does with it: central's public key, the gateway's clock
    guard = CommandGuard(key.public_key(), lambda: T0 + timedelta(seconds=5), gateway="gw-a")
    command = guard.check(payload, topic=topic)
    assert isinstance(command, Command)
    assert str(command.id) == row["id"] and command.args == ReadNowArgs("m1", "1-0:1.8.0")
    assert command.expires_at == row["expires_at"]
    with area.connect() as conn:
        assert get_command(conn, row["id"]) == row
        assert get_command(conn, uuid.uuid4()) is None


def test_another_key_is_refused_by_the_gateway(area: Engine, key: Any) -> None:
    publisher = MemoryPublisher(key)
    issue(area, publisher)
    other = CommandGuard(generate_private_key().public_key(), lambda: T0, gateway="gw-a")
    with pytest.raises(CommandRefusedError) as refused:
        other.check(publisher.messages[0][1])
    assert refused.value.reason == "bad_signature"


@pytest.mark.parametrize(
    ("kind", "args", "meter", "expected"),
    [
        ("read_now", {"meter": "m1", "what": "daily"}, None, ReadNowArgs("m1", "daily")),
        ("read_now", None, "m2", ReadNowArgs("m2", "1-0:1.8.0")),
        ("backfill", {"days": 3}, None, BackfillArgs(3, None)),
        ("backfill", {"days": 2}, "m1", BackfillArgs(2, ("m1",))),
        ("clock_sync", None, None, ClockSyncArgs(None)),
        ("clock_sync", {"meters": ["m1", "m2"]}, None, ClockSyncArgs(("m1", "m2"))),
        (
            "resend",
            {"meter": "m1", "start": "2026-12-01T00:00:00+08:00", "end": "2026-12-02T00:00Z"},
            None,
            ResendArgs(
                "m1",
                None,
                datetime(2026, 11, 30, 16, tzinfo=UTC),
                datetime(2026, 12, 2, tzinfo=UTC),
            ),
        ),
    ],
)
def test_build_args(kind: str, args: Any, meter: str | None, expected: Any) -> None:
    assert build_args(kind, args, meter) == expected


BAD_REQUESTS = [
    ({"kind": "reboot"}, "unknown command kind 'reboot'"),
    ({"kind": "backfill", "args": {"days": 0}}, "days"),
    ({"kind": "backfill", "args": {"days": 40}}, "days"),
    ({"kind": "backfill", "args": {"days": "3"}}, "whole number"),
    ({"kind": "backfill", "args": {"day": 3}}, "not day"),
    ({"kind": "read_now", "args": {}}, "missing 'meter'"),
    ({"kind": "rebirth", "args": None, "meter": "m1"}, "takes no meter"),
    ({"kind": "clock_sync", "args": {"meters": "m1"}}, "list of meter ids"),
    ({"kind": "resend", "args": {"meter": "m1", "start": "yesterday", "end": "x"}}, "ISO"),
    ({"gateway": "gw-z"}, "not enrolled"),
    ({"args": {"meter": "m7"}}, "in no gateway's archive"),
    ({"args": {"meter": "m9"}}, "archive of gateway 'gw-b'"),
    ({"ttl": timedelta(days=8)}, "at most 7 days"),
    ({"ttl": 0}, "more than 0"),
    ({"requested_by": " "}, "requested_by"),
]


def test_bad_requests_are_named_and_store_nothing(area: Engine, key: Any) -> None:
    publisher = MemoryPublisher(key)
    for kwargs, words in BAD_REQUESTS:
        with pytest.raises(CommandError, match=words):
            issue(area, publisher, **kwargs)
    assert publisher.messages == []
    with area.connect() as conn:
        assert list_commands(conn) == []


def test_a_publish_that_fails_is_recorded_failed(area: Engine, key: Any) -> None:
    publisher = MemoryPublisher(key)
    publisher.fail_with = "cannot reach the broker at 127.0.0.1:8883"
    row = issue(area, publisher)
    assert row["status"] == "failed" and row["sent_at"] is None
    assert row["result_detail"] == {
        "reason": "not_published",
        "error": "cannot reach the broker at 127.0.0.1:8883",
    }


def _result(store: IngestStore, command_id: str, status: str, at: datetime, **detail: Any) -> None:
    store.record_gateway_event(
        "gw-a",
        "command_result",
        {"id": command_id, "status": status, "detail": detail},
        at=at,
    )


def test_results_fold_in_and_overdue_commands_expire(area: Engine, key: Any) -> None:
    publisher = MemoryPublisher(key)
    store = IngestStore(area)
    ok = issue(area, publisher)
    failed = issue(area, publisher, args={"meter": "m2"})
    refused = issue(area, publisher, kind="clock_sync", args=None)
    silent = issue(area, publisher, kind="backfill", args={"days": 1}, ttl=60)
    late = issue(area, publisher, kind="rebirth", args=None, ttl=60)
    _result(store, ok["id"], "ok", T0 + timedelta(seconds=3), result=[{"value": "12.34"}])
    _result(store, failed["id"], "failed", T0 + timedelta(seconds=4), error="ReadFailed: timeout")
    _result(store, refused["id"], "refused", T0 + timedelta(seconds=4), reason="bad_signature")
    _result(store, ok["id"], "duplicate", T0 + timedelta(seconds=9))  # the first answer stands
    _result(store, str(uuid.uuid4()), "ok", T0)  # not ours
    store.record_gateway_event("gw-a", "command_result", {"id": "garbage"}, at=T0)
    with area.begin() as conn:
        # 1 min + the gateway's 5 min skew allowance have not passed: nothing expires yet
        assert sync_results(conn, now=T0 + timedelta(minutes=5)) == {"results": 3, "expired": 0}
        assert sync_results(conn, now=T0 + timedelta(minutes=5)) == {"results": 0, "expired": 0}
        assert sync_results(conn, now=T0 + timedelta(minutes=7)) == {"results": 0, "expired": 2}
        got = {row["id"]: row for row in list_commands(conn)}
    assert got[ok["id"]]["status"] == "succeeded"
    assert got[ok["id"]]["result_detail"] == {"result": [{"value": "12.34"}]}
    assert got[ok["id"]]["result_at"] == T0 + timedelta(seconds=3)
    assert got[failed["id"]]["status"] == "failed"
    assert got[refused["id"]]["status"] == "refused"
    assert got[silent["id"]]["status"] == "expired"
    assert "no result" in got[silent["id"]]["result_detail"]["reason"]
    # a result that comes after all (the gateway was slow) says what really happened
    _result(store, late["id"], "ok", T0 + timedelta(minutes=8), session=4)
    with area.begin() as conn:
        assert sync_results(conn, now=T0 + timedelta(minutes=9)) == {"results": 1, "expired": 0}
        assert get_command(conn, late["id"])["status"] == "succeeded"  # type: ignore[index]
        assert get_command(conn, silent["id"])["status"] == "expired"  # type: ignore[index]


def test_listing_pages_and_filters(area: Engine, key: Any) -> None:
    publisher = MemoryPublisher(key)
    rows = [
        issue(area, publisher, now=T0 + timedelta(seconds=n), args={"meter": f"m{1 + n % 2}"})
        for n in range(5)
    ]
    newest_first = [row["id"] for row in reversed(rows)]
    with area.connect() as conn:
        first = list_commands(conn, limit=2)
        second = list_commands(conn, limit=2, after=first[-1]["id"])
        third = list_commands(conn, limit=2, after=second[-1]["id"])
        assert [r["id"] for r in first + second + third] == newest_first
        assert [r["meter"] for r in list_commands(conn, meter="m2")] == ["m2", "m2"]
        assert list_commands(conn, gateway="gw-b") == []
        assert len(list_commands(conn, status="sent")) == 5
        with pytest.raises(CommandError, match="status 'done'"):
            list_commands(conn, status="done")
        with pytest.raises(CommandError, match="limit"):
            list_commands(conn, limit=5000)
        with pytest.raises(CommandError, match="no such command"):
            list_commands(conn, after=uuid.uuid4())
        with pytest.raises(CommandError, match="not a command id"):
            get_command(conn, "42")


def test_a_worklist_remedy_is_one_call(area: Engine, key: Any) -> None:
    """m1 has no reading for 2026-12-02 while gw-a is online: the worklist says silent and
    offers read_now and backfill; each goes out with one issue_command call."""
    publisher = MemoryPublisher(key)
    day = datetime(2026, 12, 2).date()
    with area.connect() as conn:
        [entry] = [row for row in worklist(conn, day, now=T0) if row["meter"] == "m1"]
    assert entry["cause"] == "meter_silent"
    sent = [
        issue_command(area, publisher, requested_by="ops:test", now=T0, **remedy["command"])
        for remedy in entry["remedies"]
    ]
    assert [(row["kind"], row["args"], row["status"]) for row in sent] == [
        ("read_now", {"meter": "m1", "what": "1-0:1.8.0"}, "sent"),
        ("backfill", {"days": 1, "meters": ["m1"]}, "sent"),
    ]


def test_command_key_files(tmp_path: Any) -> None:
    path = tmp_path / "keys" / "central-command.key"
    with pytest.raises(CommandKeyError, match="does not exist"):
        load_command_key(path)
    public = create_command_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert public == public_key_pem_of(path)
    signing = load_command_key(path)
    assert load_public_key(public).public_bytes_raw() == signing.public_key().public_bytes_raw()
    with pytest.raises(CommandKeyError, match="already exists"):
        create_command_key(path)
    assert create_command_key(path, force=True) != public
    path.write_text("not a key")
    with pytest.raises(CommandKeyError, match="not an Ed25519 private key"):
        load_command_key(path)


def test_an_unreachable_broker_is_named_and_the_command_recorded_failed(
    area: Engine, key: Any
) -> None:
    import socket

    from central.commands import MqttCommandPublisher
    from central.ingest.consumer import BrokerConfig

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    publisher = MqttCommandPublisher(BrokerConfig("127.0.0.1", port), key, timeout_s=0.5)
    try:
        row = issue_command(
            area, publisher, gateway="gw-a", kind="rebirth", requested_by="ops:test"
        )
    finally:
        publisher.close()
    assert row["status"] == "failed"
    assert f"cannot reach the broker at 127.0.0.1:{port}" in row["result_detail"]["error"]
