"""The meter archive (档案): which meters the gateway reads, on which bus, and how.

One small SQLite file of its own (WAL; one writer at a time through ``BEGIN IMMEDIATE``), so
the daemon and a technician's ``edge-agent meters ...`` process can both open it: the CLI
writes, the daemon's bus master polls :attr:`MeterArchive.revision` and applies
:meth:`MeterArchive.changes_since` without a restart (the 698 ``6000`` update-event idea).
Nothing depends on file mtimes: every change appends a row to a change log in the same
transaction, and the log's autoincrement id is the revision.

A meter is keyed by :attr:`Meter.key`: its canonical address for DL/T 645 and 698.45
(addresses are unique on the whole gateway, so the same address on two buses is a
conflict), and ``BUS#UNIT`` for Modbus RTU (unit ids repeat from bus to bus).

Exceptions::

    ValueError
     └── ArchiveError      .problems: list[Problem(key, message)]

CSV import (:meth:`MeterArchive.import_csv`) checks every row first and reports each bad one
with its spreadsheet row number (header = row 1); in ``replace`` mode nothing is applied
when any row is bad, in ``merge`` mode the good rows are applied and the bad ones left out.
Either way nothing already in the archive is lost to a bad row.
"""

from __future__ import annotations

import builtins
import csv
import hashlib
import io
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from edge_agent.config import GATEWAY_METER_LIMIT, EdgeConfig, Problem
from shared_protocol.dlt645 import normalize_address
from shared_protocol.dlt698 import ServerAddress
from shared_protocol.errors import ProtocolError
from shared_protocol.modbus import METER_MAPS

__all__ = [
    "CSV_COLUMNS",
    "CUSTOMER_CLASSES",
    "METER_PROTOCOLS",
    "PROTOCOL_FAMILY",
    "ArchiveError",
    "Change",
    "ImportReport",
    "Meter",
    "MeterArchive",
    "RejectedRow",
    "canonical_address",
    "check_meter",
    "check_meters",
]

METER_PROTOCOLS = ("dlt645-2007", "dlt645-1997", "dlt698.45", "modbus-rtu")
# Bus protocol family (config [[buses]].protocol) of each meter protocol.
PROTOCOL_FAMILY = {
    "dlt645-2007": "dlt645",
    "dlt645-1997": "dlt645",
    "dlt698.45": "dlt698",
    "modbus-rtu": "modbus-rtu",
}
# "supply" is the transformer-area supply meter (台区总表): line loss = supply − Σ customers.
CUSTOMER_CLASSES = ("residential", "commercial", "small_industrial", "supply")
MAX_TARIFFS = 8
MAX_RATIO = 100_000
# Change-log rows kept; a poller further behind than this is told to reload everything.
CHANGE_LOG_KEEP = 20_000

CSV_COLUMNS = (
    "address",
    "protocol",
    "bus",
    "modbus_model",
    "ct_ratio",
    "pt_ratio",
    "customer_class",
    "tariff_count",
    "area",
    "account",
    "protected",
    "prepaid",
    "enabled",
    "notes",
)
_REQUIRED_COLUMNS = ("address", "protocol", "bus")
_TRUE = {"true", "yes", "y", "1", "是"}
_FALSE = {"false", "no", "n", "0", "否", ""}


class ArchiveError(ValueError):
    """An archive change was refused; :attr:`problems` says why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))


def canonical_address(protocol: str, address: str) -> str:
    """The address as stored: 12 digits for 645, BCD digits for 698, the unit id for Modbus.

    Raises :class:`ValueError` with a message a technician can act on.
    """
    text = str(address).strip().replace(" ", "")
    if protocol in ("dlt645-2007", "dlt645-1997"):
        if not text.isdigit() or len(text) != 12:
            try:
                normalize_address(text)
            except ProtocolError:
                raise ValueError(
                    f"{text!r} is not a DL/T 645 address; write the 12 nameplate digits"
                ) from None
            raise ValueError(
                f"{text!r} is not a full DL/T 645 address; write all 12 nameplate digits "
                "(pad with leading zeros; wildcards A are for searching, not for the archive)"
            )
        return normalize_address(text)
    if protocol == "dlt698.45":
        if not text.isdigit() or not 1 <= len(text) <= 32:
            raise ValueError(
                f"{text!r} is not a DL/T 698.45 address; write 1-32 nameplate digits (1-16 bytes)"
            )
        try:
            return ServerAddress.single(text).digits
        except ProtocolError as exc:
            raise ValueError(f"{text!r} is not a DL/T 698.45 address: {exc}") from None
    if protocol == "modbus-rtu":
        if not text.isdigit() or not 1 <= int(text) <= 247:
            raise ValueError(f"{text!r} is not a Modbus unit id; use 1-247 (0 is broadcast)")
        return str(int(text))
    raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(METER_PROTOCOLS)}")


@dataclass(frozen=True)
class Meter:
    """One archive entry, as AFN04 F10 / 698 ``6001`` keep it (plus billing-side facts)."""

    address: str
    protocol: str
    bus: str
    modbus_model: str | None = None
    ct_ratio: int = 1
    pt_ratio: int = 1
    customer_class: str = "residential"
    tariff_count: int = 4
    area: str = ""
    account: str | None = None
    protected: bool = False
    prepaid: bool = False
    enabled: bool = True
    notes: str = ""

    @property
    def key(self) -> str:
        """Unique on the gateway: the address, or ``BUS#UNIT`` for Modbus."""
        if self.protocol == "modbus-rtu":
            return f"{self.bus}#{self.address}"
        return self.address

    @property
    def family(self) -> str:
        return PROTOCOL_FAMILY.get(self.protocol, "")

    @property
    def multiplier(self) -> int:
        """CT × PT: what the meter's secondary registers are multiplied by."""
        return self.ct_ratio * self.pt_ratio

    def normalized(self) -> Meter:
        """This meter with a canonical address and model; raises ArchiveError if invalid."""
        problems = check_meter(self)
        if problems:
            raise ArchiveError(problems)
        return replace(
            self,
            address=canonical_address(self.protocol, self.address),
            modbus_model=self.modbus_model.lower() if self.modbus_model else None,
        )

    @classmethod
    def from_row(cls, row: Mapping[str, str | None]) -> Meter:
        """A meter from text fields as in the CSV (what ``meters add`` takes); validated.

        Raises :class:`ArchiveError` listing every problem.
        """
        unknown = sorted(set(row) - set(CSV_COLUMNS))
        if unknown:
            where = f"meter {(row.get('address') or '').strip()}"
            message = f"unknown field(s) {', '.join(unknown)}; use {', '.join(CSV_COLUMNS)}"
            raise ArchiveError([Problem(where, message)])
        meter, reasons = _parse_row(row, cls(address="", protocol="", bus=""))
        if meter is None:
            where = f"meter {(row.get('address') or '').strip()}"
            raise ArchiveError([Problem(where, reason) for reason in reasons])
        return meter

    def to_row(self) -> dict[str, str]:
        """The CSV row (all columns as text)."""
        row: dict[str, str] = {}
        for name in CSV_COLUMNS:
            value = getattr(self, name)
            if isinstance(value, bool):
                row[name] = "true" if value else "false"
            else:
                row[name] = "" if value is None else str(value)
        return row


def check_meter(meter: Meter) -> list[Problem]:
    """Everything wrong with one meter on its own (no archive or config context)."""
    where = f"meter {meter.address}"
    problems: list[Problem] = []

    def bad(message: str) -> None:
        problems.append(Problem(where, message))

    if meter.protocol not in METER_PROTOCOLS:
        bad(f"protocol {meter.protocol!r} is unknown; use one of {', '.join(METER_PROTOCOLS)}")
    else:
        try:
            canonical_address(meter.protocol, meter.address)
        except ValueError as exc:
            bad(f"address {exc}")
    if meter.protocol == "modbus-rtu":
        if not meter.modbus_model:
            bad(f"a Modbus meter needs modbus_model; one of {', '.join(METER_MAPS)}")
        elif meter.modbus_model.lower() not in METER_MAPS:
            known = ", ".join(METER_MAPS)
            bad(f"modbus_model {meter.modbus_model!r} is unknown; use one of {known}")
    elif meter.modbus_model:
        bad(f"modbus_model is only for modbus-rtu meters; clear it for {meter.protocol}")
    if not meter.bus:
        bad("bus is required; name one of the config's [[buses]]")
    for name in ("ct_ratio", "pt_ratio"):
        value = getattr(meter, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RATIO:
            bad(f"{name} {value!r} must be a whole number 1-{MAX_RATIO} (1 for direct connection)")
    if meter.customer_class not in CUSTOMER_CLASSES:
        bad(
            f"customer_class {meter.customer_class!r} is unknown; "
            f"use one of {', '.join(CUSTOMER_CLASSES)}"
        )
    tariffs = meter.tariff_count
    if isinstance(tariffs, bool) or not isinstance(tariffs, int) or not 1 <= tariffs <= MAX_TARIFFS:
        bad(f"tariff_count {tariffs!r} must be 1-{MAX_TARIFFS}")
    return problems


def check_meters(
    meters: Iterable[Meter],
    *,
    max_meters: int = GATEWAY_METER_LIMIT,
    bus_limits: Mapping[str, int] | None = None,
    bus_families: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Everything wrong with a whole archive: each meter, duplicates, conflicts and limits.

    ``bus_limits``/``bus_families`` come from the config; without them bus names are not
    checked.
    """
    problems: list[Problem] = []
    by_key: dict[str, list[Meter]] = {}
    per_bus: Counter[str] = Counter()
    all_meters = list(meters)
    for meter in all_meters:
        own = check_meter(meter)
        problems += own
        if own:
            continue
        canonical = replace(meter, address=canonical_address(meter.protocol, meter.address))
        by_key.setdefault(canonical.key, []).append(canonical)
        per_bus[meter.bus] += 1
        if bus_limits is not None and meter.bus not in bus_limits:
            problems.append(
                Problem(
                    f"meter {canonical.key}",
                    f"bus {meter.bus!r} is not in the config; use one of "
                    f"{', '.join(bus_limits) or '(no buses configured)'}",
                )
            )
        elif bus_families is not None and bus_families.get(meter.bus, meter.family) != meter.family:
            problems.append(
                Problem(
                    f"meter {canonical.key}",
                    f"{meter.protocol} meter on bus {meter.bus!r}, which speaks "
                    f"{bus_families[meter.bus]}; move it to a {meter.family} bus",
                )
            )
    for key, entries in by_key.items():
        if len(entries) < 2:
            continue
        buses = sorted({entry.bus for entry in entries})
        if len(buses) > 1:
            message = f"the same address is on buses {', '.join(buses)}; keep it on one"
        else:
            message = f"listed {len(entries)} times; keep one entry"
        problems.append(Problem(f"meter {key}", message))
    if len(all_meters) > max_meters:
        problems.append(
            Problem(
                "archive",
                f"{len(all_meters)} meters exceed the gateway limit of {max_meters}; "
                "remove some or raise archive.max_meters",
            )
        )
    for bus, count in sorted(per_bus.items()):
        limit = (bus_limits or {}).get(bus)
        if limit is not None and count > limit:
            problems.append(
                Problem(
                    f"bus {bus}",
                    f"{count} meters exceed the bus limit of {limit}; "
                    "move some to another bus or raise its max_meters",
                )
            )
    return problems


@dataclass(frozen=True)
class Change:
    """One archive change: ``op`` is add, update, remove, or reload (poller fell behind)."""

    revision: int
    op: Literal["add", "update", "remove", "reload"]
    key: str


@dataclass(frozen=True)
class RejectedRow:
    row: int
    address: str
    reasons: tuple[str, ...]

    def __str__(self) -> str:
        return f"row {self.row} ({self.address or 'no address'}): {'; '.join(self.reasons)}"


@dataclass
class ImportReport:
    """What an import did (or, when ``applied`` is false, would have done)."""

    mode: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    applied: bool = False
    revision: int = 0

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        parts = [
            f"{len(self.added)} added",
            f"{len(self.updated)} updated",
            f"{len(self.unchanged)} unchanged",
            f"{len(self.removed)} removed",
            f"{len(self.rejected)} rejected",
        ]
        verdict = "applied" if self.applied else "NOT applied"
        return f"{self.mode} import {verdict}: {', '.join(parts)}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rejected"] = [
            {"row": r.row, "address": r.address, "reasons": list(r.reasons)} for r in self.rejected
        ]
        return data


# ---------------------------------------------------------------------------------------------
# CSV rows


def _parse_row(row: Mapping[str, str | None], defaults: Meter) -> tuple[Meter | None, list[str]]:
    reasons: list[str] = []

    def text(name: str) -> str:
        return (row.get(name) or "").strip()

    def integer(name: str, default: int) -> int:
        value = text(name)
        if not value:
            return default
        try:
            return int(value)
        except ValueError:
            reasons.append(f"{name} {value!r} is not a whole number")
            return default

    def flag(name: str, default: bool) -> bool:
        value = text(name).lower()
        if name not in row or row.get(name) is None:
            return default
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        reasons.append(f"{name} {value!r} is not true/false")
        return default

    for name in _REQUIRED_COLUMNS:
        if not text(name):
            reasons.append(f"{name} is empty")
    meter = Meter(
        address=text("address"),
        protocol=text("protocol").lower(),
        bus=text("bus"),
        modbus_model=text("modbus_model").lower() or None,
        ct_ratio=integer("ct_ratio", defaults.ct_ratio),
        pt_ratio=integer("pt_ratio", defaults.pt_ratio),
        customer_class=text("customer_class").lower() or defaults.customer_class,
        tariff_count=integer("tariff_count", defaults.tariff_count),
        area=text("area"),
        account=text("account") or None,
        protected=flag("protected", defaults.protected),
        prepaid=flag("prepaid", defaults.prepaid),
        enabled=flag("enabled", defaults.enabled),
        notes=(row.get("notes") or "").strip(),
    )
    empty = {name for name in _REQUIRED_COLUMNS if not text(name)}
    for problem in check_meter(meter):
        # An empty required cell is reported once, not again as a bad address or protocol.
        if not any(problem.message.startswith(name) for name in empty):
            reasons.append(problem.message)
    if reasons:
        return None, reasons
    return meter.normalized(), []


def _decode(data: bytes) -> str:
    # Excel saves UTF-8 with a BOM, and on a Chinese Windows CSV in GB18030/GBK.
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("gb18030")


# ---------------------------------------------------------------------------------------------
# The archive

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meters (
    key TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    protocol TEXT NOT NULL,
    bus TEXT NOT NULL,
    modbus_model TEXT,
    ct_ratio INTEGER NOT NULL,
    pt_ratio INTEGER NOT NULL,
    customer_class TEXT NOT NULL,
    tariff_count INTEGER NOT NULL,
    area TEXT NOT NULL,
    account TEXT,
    protected INTEGER NOT NULL,
    prepaid INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    notes TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS meters_bus ON meters(bus);
CREATE INDEX IF NOT EXISTS meters_area ON meters(area);
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL,
    key TEXT NOT NULL,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
"""
_FIELDS = tuple(f.name for f in fields(Meter))
_BOOL_FIELDS = ("protected", "prepaid", "enabled")


class MeterArchive:
    """The archive in its own SQLite file; safe to open from the daemon and the CLI at once.

    ``max_meters`` is the gateway limit (config ``archive.max_meters``); ``bus_limits`` maps
    each configured bus to its ``max_meters`` and, when given, meters on other buses are
    refused. :meth:`from_config` fills both from an :class:`EdgeConfig`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_meters: int = GATEWAY_METER_LIMIT,
        bus_limits: Mapping[str, int] | None = None,
        bus_families: Mapping[str, str] | None = None,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.max_meters = max_meters
        self.bus_limits = dict(bus_limits) if bus_limits is not None else None
        self.bus_families = dict(bus_families) if bus_families is not None else None
        self.readonly = readonly
        try:
            self._db = self._open()
        except sqlite3.Error as exc:
            # The one place SQLite's errors become ours: a technician sees what to do.
            raise ArchiveError(
                [
                    Problem(
                        "archive",
                        f"cannot open {self.path} as a meter archive ({exc}); check the path "
                        "and permissions, or move the file aside and import the last export",
                    )
                ]
            ) from None

    def _open(self) -> sqlite3.Connection:
        if self.readonly:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=10000")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            db.close()
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this agent's {_SCHEMA_VERSION}"
            )
        if version == 0 and not self.readonly:
            with MeterArchive._Transaction(db):
                if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        return db

    @classmethod
    def from_config(cls, config: EdgeConfig, *, readonly: bool = False) -> MeterArchive:
        return cls(
            config.archive.path,
            max_meters=config.archive.max_meters,
            bus_limits={bus.name: bus.max_meters for bus in config.buses},
            bus_families={bus.name: bus.protocol for bus in config.buses},
            readonly=readonly,
        )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> MeterArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions --------------------------------------------------------------------------

    class _Transaction:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            # IMMEDIATE takes the write lock up front, so two writers queue instead of one
            # failing with SQLITE_BUSY halfway through a read-then-write.
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type: object, *rest: object) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _write(self) -> MeterArchive._Transaction:
        if self.readonly:
            raise ArchiveError([Problem("archive", f"{self.path} is open read-only")])
        return MeterArchive._Transaction(self._db)

    # -- reading -------------------------------------------------------------------------------

    @staticmethod
    def _meter(row: Sequence[Any]) -> Meter:
        values = dict(zip(_FIELDS, row, strict=True))
        for name in _BOOL_FIELDS:
            values[name] = bool(values[name])
        return Meter(**values)

    def _select(self, where: str = "", params: Sequence[Any] = ()) -> builtins.list[Meter]:
        sql = f"SELECT {', '.join(_FIELDS)} FROM meters {where} ORDER BY bus, key"
        return [self._meter(row) for row in self._db.execute(sql, params)]

    def get(self, key: str) -> Meter:
        """The meter with this key (or address); raises KeyError naming what was asked."""
        rows = self._select("WHERE key = ?", (key,))
        if not rows:
            rows = self._select("WHERE address = ? AND protocol != 'modbus-rtu'", (key,))
            if not rows:
                for protocol in ("dlt645-2007", "dlt698.45"):
                    try:
                        canonical = canonical_address(protocol, key)
                    except ValueError:
                        continue
                    rows = self._select("WHERE key = ?", (canonical,))
                    if rows:
                        break
        if not rows:
            raise KeyError(f"no meter {key!r} in the archive")
        return rows[0]

    def __contains__(self, key: object) -> bool:
        try:
            self.get(str(key))
        except KeyError:
            return False
        return True

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM meters").fetchone()[0])

    def __iter__(self) -> Iterator[Meter]:
        return iter(self.list())

    def list(self, bus: str | None = None, area: str | None = None) -> builtins.list[Meter]:
        """Meters ordered by bus then key, optionally only one bus and/or transformer area."""
        clauses, params = [], []
        if bus is not None:
            clauses.append("bus = ?")
            params.append(bus)
        if area is not None:
            clauses.append("area = ?")
            params.append(area)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._select(where, params)

    # -- changing ------------------------------------------------------------------------------

    def _context_problems(
        self, db: sqlite3.Connection, meter: Meter, replacing: str | None
    ) -> builtins.list[Problem]:
        """Limits and bus checks for putting ``meter`` in (instead of ``replacing``)."""
        problems: builtins.list[Problem] = []
        where = f"meter {meter.key}"
        if self.bus_limits is not None and meter.bus not in self.bus_limits:
            problems.append(
                Problem(
                    where,
                    f"bus {meter.bus!r} is not in the config; use one of "
                    f"{', '.join(self.bus_limits) or '(no buses configured)'}",
                )
            )
        elif self.bus_families is not None and self.bus_families[meter.bus] != meter.family:
            problems.append(
                Problem(
                    where,
                    f"{meter.protocol} meter on bus {meter.bus!r}, which speaks "
                    f"{self.bus_families[meter.bus]}; move it to a {meter.family} bus",
                )
            )
        existing = db.execute(
            "SELECT bus FROM meters WHERE key = ? AND key IS NOT ?", (meter.key, replacing)
        ).fetchone()
        if existing:
            if existing[0] != meter.bus:
                problems.append(
                    Problem(where, f"the address is already on bus {existing[0]!r}; keep it on one")
                )
            else:
                problems.append(
                    Problem(where, "is already in the archive; use update to change it")
                )
        total = db.execute("SELECT count(*) FROM meters").fetchone()[0] + (replacing is None)
        if total > self.max_meters:
            problems.append(
                Problem(
                    where,
                    f"the archive is full ({self.max_meters} meters, the gateway limit); "
                    "remove a meter first or raise archive.max_meters",
                )
            )
        limit = (self.bus_limits or {}).get(meter.bus)
        if limit is not None:
            on_bus = db.execute(
                "SELECT count(*) FROM meters WHERE bus = ? AND key IS NOT ?", (meter.bus, replacing)
            ).fetchone()[0]
            if on_bus + 1 > limit:
                problems.append(
                    Problem(
                        where,
                        f"bus {meter.bus!r} is full ({limit} meters); "
                        "use another bus or raise its max_meters",
                    )
                )
        return problems

    @staticmethod
    def _store(db: sqlite3.Connection, meter: Meter) -> None:
        values = [getattr(meter, name) for name in _FIELDS]
        db.execute(
            f"INSERT OR REPLACE INTO meters (key, {', '.join(_FIELDS)}) "
            f"VALUES (?, {', '.join('?' for _ in _FIELDS)})",
            [meter.key, *values],
        )

    @staticmethod
    def _log(db: sqlite3.Connection, op: str, key: str) -> None:
        db.execute("INSERT INTO changes (op, key) VALUES (?, ?)", (op, key))

    def _prune(self, db: sqlite3.Connection) -> None:
        db.execute(
            "DELETE FROM changes WHERE revision <= (SELECT max(revision) FROM changes) - ?",
            (CHANGE_LOG_KEEP,),
        )

    def add(self, meter: Meter) -> Meter:
        """Add a new meter; returns it as stored. Raises ArchiveError saying what to fix."""
        meter = meter.normalized()
        with self._write() as db:
            problems = self._context_problems(db, meter, None)
            if problems:
                raise ArchiveError(problems)
            self._store(db, meter)
            self._log(db, "add", meter.key)
        return meter

    def update(self, key: str, **changes: Any) -> Meter:
        """Change fields of an existing meter (``update(key, ct_ratio=50)``); returns it."""
        unknown = set(changes) - set(_FIELDS)
        if unknown:
            raise ArchiveError(
                [Problem(f"meter {key}", f"unknown field(s) {', '.join(sorted(unknown))}")]
            )
        with self._write() as db:
            try:
                old = self.get(key)
            except KeyError as exc:
                raise ArchiveError([Problem(f"meter {key}", str(exc.args[0]))]) from None
            new = replace(old, **changes).normalized()
            if new == old:
                return old
            problems = self._context_problems(db, new, old.key)
            if problems:
                raise ArchiveError(problems)
            if new.key != old.key:
                db.execute("DELETE FROM meters WHERE key = ?", (old.key,))
                self._log(db, "remove", old.key)
                self._store(db, new)
                self._log(db, "add", new.key)
            else:
                self._store(db, new)
                self._log(db, "update", new.key)
        return new

    def remove(self, key: str) -> Meter:
        """Remove a meter; returns what was removed. KeyError if there is no such meter."""
        with self._write() as db:
            meter = self.get(key)
            db.execute("DELETE FROM meters WHERE key = ?", (meter.key,))
            self._log(db, "remove", meter.key)
        return meter

    # -- change notification -------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """Increases with every change, from any process; 0 for a new archive."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return int(row[0]) if row else 0

    def changes_since(self, revision: int) -> builtins.list[Change]:
        """Changes after ``revision``, oldest first.

        A single ``reload`` change means the log no longer reaches back that far: reread
        the whole archive with :meth:`list`.
        """
        with self._snapshot():
            oldest = self._db.execute("SELECT min(revision) FROM changes").fetchone()[0]
            current = self.revision
            if current > revision and (oldest is None or oldest > revision + 1):
                return [Change(current, "reload", "")]
            rows = self._db.execute(
                "SELECT revision, op, key FROM changes WHERE revision > ? ORDER BY revision",
                (revision,),
            ).fetchall()
        return [Change(int(rev), op, key) for rev, op, key in rows]

    class _Snapshot:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            self.db.execute("BEGIN")

        def __exit__(self, *exc: object) -> None:
            self.db.execute("COMMIT")

    def _snapshot(self) -> MeterArchive._Snapshot:
        return MeterArchive._Snapshot(self._db)

    # -- validation and hashing ----------------------------------------------------------------

    def validate(self, config: EdgeConfig | None = None) -> builtins.list[Problem]:
        """Every problem with the stored archive, against ``config`` if given."""
        if config is not None:
            return check_meters(
                self.list(),
                max_meters=config.archive.max_meters,
                bus_limits={bus.name: bus.max_meters for bus in config.buses},
                bus_families={bus.name: bus.protocol for bus in config.buses},
            )
        return check_meters(
            self.list(),
            max_meters=self.max_meters,
            bus_limits=self.bus_limits,
            bus_families=self.bus_families,
        )

    def archive_hash(self) -> str:
        """SHA-256 (hex) of the meters' content, independent of insertion order."""
        meters = sorted(self.list(), key=lambda meter: meter.key)
        canonical = json.dumps(
            [asdict(meter) for meter in meters], separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    # -- CSV -----------------------------------------------------------------------------------

    def export_csv(self, path: str | os.PathLike[str] | None = None) -> str:
        """The archive as CSV (header row, :data:`CSV_COLUMNS`), also written to ``path``."""
        out = io.StringIO()
        writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for meter in self.list():
            writer.writerow(meter.to_row())
        text = out.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def import_csv(
        self,
        source: str | os.PathLike[str],
        mode: Literal["merge", "replace"] = "merge",
        *,
        dry_run: bool = False,
    ) -> ImportReport:
        """Import meters from a CSV file path or CSV text (see ``docs/edge-config.md``).

        ``merge`` adds new meters and updates listed ones, leaving the rest; ``replace``
        makes the archive exactly the file. Bad rows are reported with their row numbers
        and reasons; in ``replace`` mode (and on a ``dry_run``) nothing is applied then.
        """
        if mode not in ("merge", "replace"):
            raise ValueError(f"mode {mode!r} must be 'merge' or 'replace'")
        report = ImportReport(mode=mode)
        text = self._csv_text(source)
        # csv.reader, not DictReader: it keeps blank lines, so our row numbers are the ones
        # a spreadsheet shows (header = row 1).
        records = csv.reader(io.StringIO(text))
        header = [name.strip().lower() for name in next(records, [])]
        missing = [name for name in _REQUIRED_COLUMNS if name not in header]
        unknown = [name for name in header if name not in CSV_COLUMNS]
        if missing or unknown:
            reasons = []
            if missing:
                reasons.append(f"missing column(s) {', '.join(missing)}")
            if unknown:
                reasons.append(f"unknown column(s) {', '.join(unknown)}")
            reasons.append(f"the header row must name columns from: {', '.join(CSV_COLUMNS)}")
            report.rejected.append(RejectedRow(1, "", tuple(reasons)))
            report.revision = self.revision
            return report

        defaults = Meter(address="", protocol="", bus="")
        parsed: builtins.list[tuple[int, Meter]] = []
        first_row: dict[str, tuple[int, str]] = {}  # key → (row number, bus)
        for index, cells in enumerate(records, start=2):
            if not any(cell.strip() for cell in cells):
                continue  # blank line
            row = dict(zip(header, cells, strict=False))
            if len(cells) > len(header):
                address = (row.get("address") or "").strip()
                reason = f"{len(cells)} cells but {len(header)} columns; quote cells holding commas"
                report.rejected.append(RejectedRow(index, address, (reason,)))
                continue
            meter, reasons = _parse_row(row, defaults)
            address = (row.get("address") or "").strip()
            if meter is not None and meter.key in first_row:
                earlier, earlier_bus = first_row[meter.key]
                if earlier_bus != meter.bus:
                    reasons = [
                        f"the same address is on bus {earlier_bus!r} in row {earlier}; "
                        "keep it on one bus"
                    ]
                else:
                    reasons = [f"the same meter is already on row {earlier}; keep one row"]
            if meter is None or reasons:
                report.rejected.append(RejectedRow(index, address, tuple(reasons)))
                continue
            first_row[meter.key] = (index, meter.bus)
            parsed.append((index, meter))

        with self._write() as db:
            current = {meter.key: meter for meter in self.list()}
            final = dict(current) if mode == "merge" else {}
            on_bus = Counter(meter.bus for meter in final.values())
            accepted: builtins.list[tuple[int, Meter]] = []
            for index, meter in parsed:
                reasons = self._import_conflicts(meter)
                before = final.get(meter.key)
                if before is None and len(final) + 1 > self.max_meters:
                    reasons.append(
                        f"the archive would exceed the gateway limit of {self.max_meters} meters"
                    )
                limit = (self.bus_limits or {}).get(meter.bus)
                moves_in = before is None or before.bus != meter.bus
                if limit is not None and moves_in and on_bus[meter.bus] + 1 > limit:
                    reasons.append(f"bus {meter.bus!r} would exceed its max_meters ({limit})")
                if reasons:
                    report.rejected.append(RejectedRow(index, meter.address, tuple(reasons)))
                    continue
                if before is not None:
                    on_bus[before.bus] -= 1
                on_bus[meter.bus] += 1
                final[meter.key] = meter
                accepted.append((index, meter))

            for _, meter in accepted:
                old = current.get(meter.key)
                if old is None:
                    report.added.append(meter.key)
                elif old == meter:
                    report.unchanged.append(meter.key)
                else:
                    report.updated.append(meter.key)
            if mode == "replace":
                report.removed = sorted(set(current) - set(final))

            apply = not dry_run and not (mode == "replace" and report.rejected)
            if apply:
                for key in report.removed:
                    db.execute("DELETE FROM meters WHERE key = ?", (key,))
                    self._log(db, "remove", key)
                for _, meter in accepted:
                    old = current.get(meter.key)
                    if old == meter:
                        continue
                    self._store(db, meter)
                    self._log(db, "add" if old is None else "update", meter.key)
                self._prune(db)
                report.applied = True
        report.revision = self.revision
        return report

    def _import_conflicts(self, meter: Meter) -> builtins.list[str]:
        reasons: builtins.list[str] = []
        if self.bus_limits is not None and meter.bus not in self.bus_limits:
            reasons.append(
                f"bus {meter.bus!r} is not in the config; use one of "
                f"{', '.join(self.bus_limits) or '(no buses configured)'}"
            )
        elif self.bus_families is not None and self.bus_families[meter.bus] != meter.family:
            reasons.append(
                f"{meter.protocol} meter on bus {meter.bus!r}, which speaks "
                f"{self.bus_families[meter.bus]}"
            )
        return reasons

    @staticmethod
    def _csv_text(source: str | os.PathLike[str]) -> str:
        if isinstance(source, str) and ("\n" in source or "," in source):
            return source
        return _decode(Path(source).read_bytes())
