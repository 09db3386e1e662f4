"""The API tests' world (no tests here): a migrated database on SQLite or PostgreSQL with two
gateways, three meters in three transformer areas, readings, meter events, commands and VEE
data; one user per role plus a disabled one, two scoped O&M users and a service account; and
the app in a TestClient. The fixtures that build it are in ``api_fixtures`` (load with
``pytest_plugins = ["central_fixtures", "api_fixtures"]``).

Layout (who sees what under the scoping model of ``central.api.access``)::

    gw-a ── 000000000001  area TA-1      om-ta1 (area TA-1) sees meter 1 and gw-a
        └── 000000000002  area TA-2
    gw-b ── 000000000003  area TA-3      om-gwb (gateway gw-b) sees meter 3 and gw-b
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import Engine

from central.api import users as user_library
from central.api.access import Scope
from central.api.app import create_app
from central.api.deps import ApiConfig
from central.api.tokens import issue_token
from central.commands import MemoryPublisher, issue_command
from central.ingest.store import IncomingEvent, IncomingReading, IngestStore, MeterEntry
from central.settings import Settings
from central.vee import get_exception, list_exceptions, validate_pending
from central.vee.exceptions import insert_exceptions, new_exception
from shared_protocol.wire import generate_private_key

SECRET = "api-test-secret-" + "k" * 32
#: Argon2id with test-sized cost (the production parameters take ~0.2 s a hash on this
#: machine; the algorithm and the code path are the same).
CHEAP_HASHER = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))
#: The app folds command results this often in tests (10 s in production).
COMMAND_SYNC_S = 0.2
PASSWORD = "correct horse battery staple"
ROLES = ("collection_om", "billing", "fee_collection", "supervisor", "read_only", "admin")
T0 = datetime(2026, 11, 1, tzinfo=UTC)
HOURS = 48
METERS = {
    "000000000001": ("gw-a", "TA-1"),
    "000000000002": ("gw-a", "TA-2"),
    "000000000003": ("gw-b", "TA-3"),
}
ENERGY = "1-0:1.8.0"
READING_DAY = "2026-11-01"
#: Reading day 2026-11-01 (Asia/Shanghai) freezes at 2026-11-01 16:00 UTC = hour 16 of the
#: seed. Meter 3 has no reading then: O&M's worklist and readiness list it as missing.
SILENT_AT_FREEZE = ("000000000003", 16)
VOLTAGE = "1-0:32.7.0"


def energy_at(meter: str, hour: int) -> Decimal:
    """The seeded register: meter n starts at 1000·n kWh and adds 0.25·n kWh an hour."""
    n = int(meter)
    return Decimal(1000 * n) + Decimal("0.25") * n * hour


@dataclass
class ApiWorld:
    app: FastAPI
    client: TestClient
    engine: Engine
    publisher: MemoryPublisher
    tokens: dict[str, str]
    api_key: str
    api_key_id: str
    commands: dict[str, str] = field(default_factory=dict)  # gateway -> a command id
    exceptions: dict[str, int] = field(default_factory=dict)  # meter -> its V7 exception
    counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def auth(self, who: str | None) -> dict[str, str]:
        """Headers for a principal: a user name, ``svc`` (API key) or None (anonymous)."""
        if who is None:
            return {}
        if who == "svc":
            return {"X-API-Key": self.api_key}
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def request(self, method: str, path: str, who: str | None, **kwargs: Any) -> Any:
        headers = {**self.auth(who), **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def unique(self, prefix: str) -> str:
        return f"{prefix}{next(self.counter)}"


def _seed_readings(store: IngestStore) -> None:
    for gateway in ("gw-a", "gw-b"):
        store.enroll_gateway(gateway, at=T0 - timedelta(days=30))
        archive = [
            MeterEntry(
                meter=m, address=m, protocol="dlt645-2007", bus="bus1", transformer_area=area
            )
            for m, (gw, area) in METERS.items()
            if gw == gateway
        ]
        store.record_birth(
            gateway,
            1,
            {"software_version": "1.0.0", "log_depth": 0, "clock_offset_s": 0.5},
            T0,
            archive=archive,
        )
        seq = 0
        records = []
        events = []
        for meter, (gw, _area) in METERS.items():
            if gw != gateway:
                continue
            for hour in range(HOURS):
                if meter == SILENT_AT_FREEZE[0] and hour == SILENT_AT_FREEZE[1]:
                    continue
                seq += 1
                ts = T0 + timedelta(hours=hour)
                records.append(
                    IncomingReading(
                        seq,
                        meter,
                        ENERGY,
                        ts,
                        energy_at(meter, hour),
                        "kWh",
                        "curve",
                        "scheduled",
                        "ok",
                        ts + timedelta(seconds=5),
                    )
                )
            seq += 1
            records.append(
                IncomingReading(
                    seq,
                    meter,
                    VOLTAGE,
                    T0 + timedelta(hours=HOURS - 1),
                    Decimal("229.5"),
                    "V",
                    "instant",
                    "scheduled",
                    "ok",
                    T0 + timedelta(hours=HOURS - 1),
                )
            )
            for code in ("power_down", "power_up", "cover_open"):
                seq += 1
                events.append(
                    IncomingEvent(seq, code, T0 + timedelta(hours=seq % 24), {"n": seq}, meter)
                )
        store.apply_batch(gateway, 1, 1, seq, records, events)


#: The hour at which meters 2 and 3 report a register lower than the hour before: VEE rule
#: V7 (register going backwards) opens one exception on each.
BACKWARDS_HOUR = 30


def _seed_vee(engine: Engine, store: IngestStore) -> dict[str, int]:
    """Registers going backwards on meters 2 and 3, then VEE over every pending reading."""
    for gateway, meter in (("gw-a", "000000000002"), ("gw-b", "000000000003")):
        ts = T0 + timedelta(hours=BACKWARDS_HOUR)
        value = energy_at(meter, BACKWARDS_HOUR - 1) - 5
        reading = IncomingReading(
            1000, meter, ENERGY, ts, value, "kWh", "curve", "scheduled", "ok", ts
        )
        store.apply_batch(gateway, 1, 1000, 1000, [reading])
    validate_pending(engine)
    with engine.connect() as conn:
        found = list_exceptions(conn, rule="V7")
    assert [row["meter"] for row in found] == ["000000000002", "000000000003"], found
    return {row["meter"]: row["id"] for row in found}


def open_exception(world: ApiWorld, meter: str = "000000000002") -> int:
    """A new open exception on ``meter`` (a copy of its seeded V7 one), for writes."""
    with world.engine.begin() as conn:
        seeded = get_exception(conn, world.exceptions[meter])
        assert seeded is not None
        insert_exceptions(
            conn,
            [
                new_exception(
                    meter,
                    seeded["obis"],
                    seeded["ts"],
                    "V7",
                    seeded["severity"],
                    seeded["value_before"],
                    {"copy_of": seeded["id"]},
                    datetime.now(UTC),
                )
            ],
        )
        newest = list_exceptions(conn, meter=meter, status="open", limit=1000)[-1]
    return int(newest["id"])


def build_world(engine: Engine, tmp_path: Path) -> ApiWorld:
    store = IngestStore(engine)
    _seed_readings(store)
    exceptions = _seed_vee(engine, store)
    key = generate_private_key()
    publisher = MemoryPublisher(key)
    settings = Settings(
        env="development",
        database_url=str(engine.url),
        broker_url="mqtt://127.0.0.1:1",
        secret_key=SECRET,
        command_key_path=tmp_path / "no-command.key",
        device_ca_key_path=tmp_path / "no-ca.key",
        device_ca_cert_path=tmp_path / "no-ca.pem",
    )
    tokens: dict[str, str] = {}
    with engine.begin() as conn:
        people: list[tuple[str, str, Scope, bool]] = [
            (role, role, Scope(), False) for role in ROLES
        ]
        people += [
            ("disabled", "admin", Scope(), True),
            ("om-ta1", "collection_om", Scope(areas=frozenset({"TA-1"})), False),
            ("om-gwb", "collection_om", Scope(gateways=frozenset({"gw-b"})), False),
        ]
        for name, role, scope, disabled in people:
            user = user_library.add_user(conn, name, role, password=PASSWORD, scope=scope)
            if disabled:
                user_library.update_user(conn, user.name, disabled=True)
            tokens[name], _ = issue_token(user.id, user.name, SECRET, timedelta(minutes=15))
        user_library.add_user(conn, "svc", "billing", kind="service")
        api_key, info = user_library.issue_api_key(conn, "svc")
    world = ApiWorld(
        app=create_app(
            settings,
            engine=engine,
            config=ApiConfig(command_sync_s=COMMAND_SYNC_S),
            command_publisher=publisher,
        ),
        client=None,  # type: ignore[arg-type]
        engine=engine,
        publisher=publisher,
        tokens=tokens,
        api_key=api_key,
        api_key_id=info.id,
        exceptions=exceptions,
    )
    world.client = TestClient(world.app, raise_server_exceptions=False)
    for gateway, meter in (("gw-a", "000000000001"), ("gw-b", "000000000003")):
        row = issue_command(
            engine,
            publisher,
            gateway=gateway,
            kind="read_now",
            args={"meter": meter, "what": ENERGY},
            requested_by="seed",
        )
        world.commands[gateway] = row["id"]
    return world


ExampleRequest = Callable[[ApiWorld], dict[str, Any]]

SERIES = {"obis": ENERGY, "start": T0.isoformat(), "end": (T0 + timedelta(days=2)).isoformat()}


def _new_user(world: ApiWorld) -> dict[str, Any]:
    return {"json": {"name": world.unique("new-user-"), "role": "read_only", "password": PASSWORD}}


def _revocable_key(world: ApiWorld) -> dict[str, Any]:
    with world.engine.begin() as conn:
        name = world.unique("svc-")
        user_library.add_user(conn, name, "read_only", kind="service")
        _, info = user_library.issue_api_key(conn, name)
    return {"path": {"name": name, "key_id": info.id}}


#: (method, route template) → the valid request an allowed principal makes. Every route of
#: the app must have one (tests/test_api_authz.py), so every route joins the matrix.
ROUTE_EXAMPLES: dict[tuple[str, str], ExampleRequest] = {
    ("POST", "/api/v1/auth/token"): lambda w: {
        "data": {"username": "read_only", "password": PASSWORD}
    },
    ("GET", "/healthz"): lambda w: {},
    ("GET", "/api/v1/me"): lambda w: {},
    ("GET", "/api/v1/gateways"): lambda w: {},
    ("GET", "/api/v1/gateways/{gateway}"): lambda w: {"path": {"gateway": "gw-a"}},
    ("GET", "/api/v1/meters"): lambda w: {"params": {"gateway": "gw-a"}},
    ("GET", "/api/v1/meters/{meter}"): lambda w: {"path": {"meter": "000000000001"}},
    ("GET", "/api/v1/meters/{meter}/latest"): lambda w: {"path": {"meter": "000000000001"}},
    ("GET", "/api/v1/meters/{meter}/series"): lambda w: {
        "path": {"meter": "000000000001"},
        "params": SERIES,
    },
    ("GET", "/api/v1/meters/{meter}/events"): lambda w: {"path": {"meter": "000000000001"}},
    ("GET", "/api/v1/readings"): lambda w: {"params": {"meter": "000000000002", "limit": 5}},
    ("GET", "/api/v1/commands"): lambda w: {"params": {"gateway": "gw-a"}},
    ("GET", "/api/v1/commands/{command_id}"): lambda w: {
        "path": {"command_id": w.commands["gw-a"]}
    },
    ("POST", "/api/v1/commands"): lambda w: {
        "json": {"kind": "read_now", "gateway": "gw-a", "meter": "000000000001"}
    },
    ("GET", "/api/v1/users"): lambda w: {},
    ("POST", "/api/v1/users"): _new_user,
    ("GET", "/api/v1/users/{name}"): lambda w: {"path": {"name": "billing"}},
    ("PATCH", "/api/v1/users/{name}"): lambda w: {
        "path": {"name": "read_only"},
        "json": {"role": "read_only"},
    },
    ("GET", "/api/v1/users/{name}/api-keys"): lambda w: {"path": {"name": "svc"}},
    ("POST", "/api/v1/users/{name}/api-keys"): lambda w: {"path": {"name": "svc"}},
    ("DELETE", "/api/v1/users/{name}/api-keys/{key_id}"): _revocable_key,
    ("GET", "/api/v1/audit"): lambda w: {"params": {"limit": 10}},
    ("GET", "/api/v1/gateways/{gateway}/health"): lambda w: {"path": {"gateway": "gw-b"}},
    ("GET", "/api/v1/vee/exceptions"): lambda w: {"params": {"status": "open"}},
    ("GET", "/api/v1/vee/exceptions/{exception_id}"): lambda w: {
        "path": {"exception_id": w.exceptions["000000000002"]}
    },
    ("POST", "/api/v1/vee/exceptions/{exception_id}/resolve"): lambda w: {
        "path": {"exception_id": open_exception(w)},
        "json": {"reason": "register replaced on site, new meter reads from zero"},
    },
    ("POST", "/api/v1/vee/exceptions/{exception_id}/override"): lambda w: {
        "path": {"exception_id": open_exception(w)},
        "json": {"reason": "confirmed with the customer's own reading"},
    },
    ("GET", "/api/v1/vee/rules"): lambda w: {},
    ("GET", "/api/v1/ops/figures"): lambda w: {"params": {"day": READING_DAY, "by": "area"}},
    ("GET", "/api/v1/ops/worklist"): lambda w: {"params": {"day": READING_DAY}},
    ("GET", "/api/v1/ops/readiness"): lambda w: {"params": {"reading_day": READING_DAY}},
}
