"""The meter archive (档案): CRUD, limits, conflicts, CSV, change notification, hashing."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_agent.archive import (
    CSV_COLUMNS,
    ArchiveError,
    Change,
    Meter,
    MeterArchive,
    canonical_address,
    check_meters,
)
from edge_agent.config import example

ROOT = Path(__file__).resolve().parent.parent
HEADER = ",".join(CSV_COLUMNS)


def m645(n: int, bus: str = "rs485-1", **fields: object) -> Meter:
    return Meter(f"{n:012d}", "dlt645-2007", bus, **fields)  # type: ignore[arg-type]


@pytest.fixture
def archive(tmp_path: Path) -> MeterArchive:
    with MeterArchive(tmp_path / "archive.db") as opened:
        yield opened  # type: ignore[misc]


@pytest.fixture
def configured(tmp_path: Path) -> MeterArchive:
    """An archive that knows the example config's buses (rs485-1, rs485-2, modbus-1)."""
    config = example()
    with MeterArchive(
        tmp_path / "configured.db",
        max_meters=config.archive.max_meters,
        bus_limits={bus.name: bus.max_meters for bus in config.buses},
        bus_families={bus.name: bus.protocol for bus in config.buses},
    ) as opened:
        yield opened  # type: ignore[misc]


# -- addresses ---------------------------------------------------------------------------------

ADDRESSES = [
    ("dlt645-2007", "000000000001", "000000000001"),
    ("dlt645-1997", " 1234 5678 9012 ", "123456789012"),
    ("dlt698.45", "202300000011", "202300000011"),
    ("dlt698.45", "123", "0123"),  # odd digit count: padded to whole bytes, as on the wire
    ("dlt698.45", "1" * 32, "1" * 32),
    ("modbus-rtu", "1", "1"),
    ("modbus-rtu", "007", "7"),
    ("modbus-rtu", "247", "247"),
]


@pytest.mark.parametrize(("protocol", "given", "stored"), ADDRESSES)
def test_canonical_address(protocol: str, given: str, stored: str) -> None:
    assert canonical_address(protocol, given) == stored


BAD_ADDRESSES = [
    ("dlt645-2007", "1", "'1' is not a full DL/T 645 address; write all 12 nameplate digits"),
    ("dlt645-2007", "AAAAAAAAAAA1", "wildcards A are for searching, not for the archive"),
    ("dlt645-2007", "12345678901X", "'12345678901X' is not a DL/T 645 address"),
    ("dlt645-2007", "1234567890123", "is not a DL/T 645 address"),
    ("dlt698.45", "1" * 33, "write 1-32 nameplate digits (1-16 bytes)"),
    ("dlt698.45", "12AB", "is not a DL/T 698.45 address"),
    ("modbus-rtu", "0", "'0' is not a Modbus unit id; use 1-247 (0 is broadcast)"),
    ("modbus-rtu", "248", "use 1-247"),
    ("iec", "1", "unknown protocol 'iec'"),
]


@pytest.mark.parametrize(("protocol", "given", "complaint"), BAD_ADDRESSES)
def test_bad_addresses(protocol: str, given: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        canonical_address(protocol, given)


# -- CRUD -----------------------------------------------------------------------------------------


def test_add_get_update_remove(archive: MeterArchive) -> None:
    stored = archive.add(Meter("1234 5678 9012", "dlt645-2007", "rs485-1", area="TA-1"))
    assert stored.address == "123456789012" and stored.key == "123456789012"
    assert archive.get("123456789012") == stored
    assert "123456789012" in archive and len(archive) == 1

    updated = archive.update("123456789012", ct_ratio=50, pt_ratio=100, protected=True)
    assert (updated.ct_ratio, updated.pt_ratio, updated.multiplier) == (50, 100, 5000)
    assert archive.get("123456789012").protected

    removed = archive.remove("123456789012")
    assert removed == updated and len(archive) == 0
    with pytest.raises(KeyError, match="no meter '123456789012' in the archive"):
        archive.get("123456789012")


def test_modbus_key_is_bus_and_unit(archive: MeterArchive) -> None:
    a = archive.add(Meter("1", "modbus-rtu", "modbus-1", modbus_model="SDM630"))
    b = archive.add(Meter("1", "modbus-rtu", "modbus-2", modbus_model="sdm120"))
    assert (a.key, b.key, a.modbus_model) == ("modbus-1#1", "modbus-2#1", "sdm630")
    assert archive.get("modbus-2#1").modbus_model == "sdm120"
    moved = archive.update("modbus-1#1", bus="modbus-3")
    assert moved.key == "modbus-3#1"
    assert [meter.key for meter in archive.list()] == ["modbus-2#1", "modbus-3#1"]


def test_list_filters_by_bus_and_area(archive: MeterArchive) -> None:
    archive.add(m645(1, "a", area="TA-1"))
    archive.add(m645(2, "a", area="TA-2"))
    archive.add(m645(3, "b", area="TA-1"))
    assert [m.address[-1] for m in archive.list(bus="a")] == ["1", "2"]
    assert [m.address[-1] for m in archive.list(area="TA-1")] == ["1", "3"]
    assert [m.address[-1] for m in archive.list(bus="b", area="TA-1")] == ["3"]
    assert archive.list(bus="c") == []


def test_invalid_meter_is_refused_with_every_reason(archive: MeterArchive) -> None:
    with pytest.raises(ArchiveError) as caught:
        archive.add(Meter("1", "modbus-rtu", "m", ct_ratio=0, customer_class="vip", tariff_count=9))
    messages = [problem.message for problem in caught.value.problems]
    assert messages == [
        "a Modbus meter needs modbus_model; one of sdm120, sdm630, ddsu666, dtsu666",
        "ct_ratio 0 must be a whole number 1-100000 (1 for direct connection)",
        "customer_class 'vip' is unknown; use one of residential, commercial, "
        "small_industrial, supply",
        "tariff_count 9 must be 1-8",
    ]
    with pytest.raises(ArchiveError, match="modbus_model is only for modbus-rtu meters"):
        archive.add(m645(1, modbus_model="sdm630"))
    with pytest.raises(ArchiveError, match="modbus_model 'abb' is unknown"):
        archive.add(Meter("2", "modbus-rtu", "m", modbus_model="abb"))
    assert len(archive) == 0


def test_update_refuses_bad_values_and_unknown_fields(archive: MeterArchive) -> None:
    archive.add(m645(1))
    with pytest.raises(ArchiveError, match="tariff_count 0 must be 1-8"):
        archive.update("000000000001", tariff_count=0)
    with pytest.raises(ArchiveError, match="unknown field"):
        archive.update("000000000001", colour="red")
    with pytest.raises(ArchiveError, match="no meter"):
        archive.update("000000000009", ct_ratio=2)
    assert archive.get("000000000001") == m645(1)


# -- duplicates, conflicts, limits -------------------------------------------------------------


def test_duplicate_and_same_address_on_two_buses(archive: MeterArchive) -> None:
    archive.add(m645(1, "a"))
    with pytest.raises(ArchiveError, match="is already in the archive; use update to change it"):
        archive.add(m645(1, "a"))
    with pytest.raises(ArchiveError, match="the address is already on bus 'a'; keep it on one"):
        archive.add(m645(1, "b"))
    # The same digits as a 698 meter are the same physical address.
    with pytest.raises(ArchiveError, match="already on bus 'a'"):
        archive.add(Meter("000000000001", "dlt698.45", "b"))


def test_gateway_limit_2040_and_the_2041st_is_refused(archive: MeterArchive) -> None:
    assert archive.max_meters == 2040
    rows = [f"{n:012d},dlt645-2007,bus-{n % 8}" for n in range(1, 2041)]
    report = archive.import_csv("address,protocol,bus\n" + "\n".join(rows) + "\n")
    assert report.applied and len(report.added) == 2040
    assert len(archive) == 2040
    with pytest.raises(ArchiveError) as caught:
        archive.add(m645(2041))
    assert str(caught.value) == (
        "meter 000000002041: the archive is full (2040 meters, the gateway limit); "
        "remove a meter first or raise archive.max_meters"
    )
    # Updating a meter in a full archive is still fine.
    assert archive.update("000000000001", notes="still fine").notes == "still fine"


def test_bus_limit_and_unknown_bus(configured: MeterArchive) -> None:
    with pytest.raises(ArchiveError) as caught:
        configured.add(m645(1, "rs485-9"))
    assert caught.value.problems[0].message == (
        "bus 'rs485-9' is not in the config; use one of rs485-1, rs485-2, modbus-1"
    )
    with pytest.raises(
        ArchiveError, match=r"dlt698\.45 meter on bus 'rs485-1', which speaks dlt645"
    ):
        configured.add(Meter("1", "dlt698.45", "rs485-1"))
    for unit in range(1, 33):
        configured.add(Meter(str(unit), "modbus-rtu", "modbus-1", modbus_model="sdm120"))
    with pytest.raises(ArchiveError, match="bus 'modbus-1' is full \\(32 meters\\)"):
        configured.add(Meter("33", "modbus-rtu", "modbus-1", modbus_model="sdm120"))


def test_check_meters_finds_duplicates_conflicts_and_limits() -> None:
    meters = [m645(1, "a"), m645(1, "b"), m645(2, "a"), m645(2, "a"), m645(3, "zz"), m645(4, "a")]
    problems = check_meters(
        meters, max_meters=5, bus_limits={"a": 3, "b": 5}, bus_families={"a": "dlt645"}
    )
    assert [str(p) for p in problems] == [
        "meter 000000000003: bus 'zz' is not in the config; use one of a, b",
        "meter 000000000001: the same address is on buses a, b; keep it on one",
        "meter 000000000002: listed 2 times; keep one entry",
        "archive: 6 meters exceed the gateway limit of 5; remove some or raise archive.max_meters",
        "bus a: 4 meters exceed the bus limit of 3; move some to another bus or raise its "
        "max_meters",
    ]


def test_validate_against_config(archive: MeterArchive) -> None:
    archive.add(m645(1, "rs485-1"))
    archive.add(m645(2, "rs485-2"))  # rs485-2 speaks dlt698 in the example
    archive.add(m645(3, "gone"))
    assert archive.validate() == []
    assert [str(p) for p in archive.validate(example())] == [
        "meter 000000000003: bus 'gone' is not in the config; use one of rs485-1, rs485-2, "
        "modbus-1",
        "meter 000000000002: dlt645-2007 meter on bus 'rs485-2', which speaks dlt698; move it "
        "to a dlt645 bus",
    ]


def test_from_config(tmp_path: Path) -> None:
    text = (ROOT / "examples" / "edge.toml").read_text()
    text = text.replace("/var/lib/meter2cash/archive.db", str(tmp_path / "archive.db"))
    from edge_agent.config import parse_config

    config = parse_config(text)
    with MeterArchive.from_config(config) as archive:
        assert archive.bus_limits == {"rs485-1": 256, "rs485-2": 256, "modbus-1": 32}
        assert archive.import_csv(ROOT / "examples" / "archive.csv").applied
        assert archive.validate() == []


# -- CSV -------------------------------------------------------------------------------------------


def test_example_csv_imports(configured: MeterArchive) -> None:
    report = configured.import_csv(ROOT / "examples" / "archive.csv")
    assert report.ok and report.applied and len(report.added) == 8
    protocols = {meter.protocol for meter in configured.list()}
    assert protocols == {"dlt645-2007", "dlt645-1997", "dlt698.45", "modbus-rtu"}
    supply = configured.get("000000009001")
    assert supply.customer_class == "supply" and supply.ct_ratio == 200
    assert configured.get("000000000002").protected
    assert configured.get("202300000012").notes == "workshop, disconnected for renovation"
    assert not configured.get("202300000012").enabled
    assert configured.get("modbus-1#2").multiplier == 5000
    assert configured.validate() == []


def test_csv_round_trip(tmp_path: Path, configured: MeterArchive) -> None:
    configured.import_csv(ROOT / "examples" / "archive.csv")
    exported = configured.export_csv(tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text(encoding="utf-8") == exported
    assert exported.splitlines()[0] == HEADER
    with MeterArchive(tmp_path / "copy.db") as copy:
        report = copy.import_csv(tmp_path / "out.csv", mode="replace")
        assert report.applied and len(report.added) == 8
        assert copy.export_csv() == exported
        assert copy.archive_hash() == configured.archive_hash()
    again = configured.import_csv(exported)
    assert len(again.unchanged) == 8 and not (again.added or again.updated or again.removed)


def test_csv_accepts_bom_gbk_loose_case_and_defaults(tmp_path: Path, archive: MeterArchive) -> None:
    path = tmp_path / "excel.csv"
    text = "Address,PROTOCOL,bus,notes,protected\n000000000001,DLT645-2007,a,一号楼,是\n"
    path.write_bytes(text.encode("gb18030"))
    report = archive.import_csv(path)
    assert report.applied, report.rejected
    meter = archive.get("000000000001")
    assert (meter.notes, meter.protected, meter.ct_ratio, meter.tariff_count) == (
        "一号楼",
        True,
        1,
        4,
    )
    path.write_bytes(("\ufeff" + text.replace("0001", "0002")).encode("utf-8"))
    assert archive.import_csv(path).added == ["000000000002"]


BAD_ROWS = (
    "address,protocol,bus,ct_ratio,tariff_count,customer_class,protected\n"
    "000000000001,dlt645-2007,rs485-1,1,4,residential,false\n"  # row 2: fine
    "1,dlt645-2007,rs485-1,1,4,residential,false\n"  # row 3: short address
    "000000000003,dlt645-2007,rs485-1,x,4,residential,false\n"  # row 4: ct_ratio
    "000000000004,dlt645-2007,rs485-1,1,0,vip,maybe\n"  # row 5: several
    "000000000001,dlt645-2007,rs485-2,1,4,residential,false\n"  # row 6: same address again
    ",dlt645-2007,rs485-1,1,4,residential,false\n"  # row 7: no address
    "\n"  # blank: skipped, still counts as a row
    "000000000009,dlt645-2007,rs485-1,1,4,residential,false,extra\n"  # row 9: extra cell
    "000000000010,dlt645-2007,rs485-1,1,4,residential,false\n"  # row 10: fine
)


def test_bad_rows_are_rejected_with_row_numbers_and_reasons(archive: MeterArchive) -> None:
    archive.add(m645(1, "rs485-1", notes="keep me"))
    before = archive.export_csv()
    report = archive.import_csv(BAD_ROWS, mode="replace")
    assert not report.applied
    assert [str(row) for row in report.rejected] == [
        "row 3 (1): address '1' is not a full DL/T 645 address; write all 12 nameplate digits "
        "(pad with leading zeros; wildcards A are for searching, not for the archive)",
        "row 4 (000000000003): ct_ratio 'x' is not a whole number",
        "row 5 (000000000004): protected 'maybe' is not true/false; customer_class 'vip' is "
        "unknown; use one of residential, commercial, small_industrial, supply; tariff_count 0 "
        "must be 1-8",
        "row 6 (000000000001): the same address is on bus 'rs485-1' in row 2; keep it on one bus",
        "row 7 (no address): address is empty",
        "row 9 (000000000009): 8 cells but 7 columns; quote cells holding commas",
    ]
    assert archive.export_csv() == before  # replace mode: nothing applied, nothing lost
    assert archive.revision == 1

    merged = archive.import_csv(BAD_ROWS, mode="merge")
    assert merged.applied and len(merged.rejected) == 6
    assert merged.updated == ["000000000001"] and merged.added == ["000000000010"]
    assert archive.get("000000000001").notes == ""  # the file's row wins in a merge
    assert len(archive) == 2


def test_row_with_several_problems_lists_them_all(archive: MeterArchive) -> None:
    report = archive.import_csv(
        "address,protocol,bus,tariff_count,customer_class\n000000000004,dlt645-2007,a,0,vip\n"
    )
    (row,) = report.rejected
    assert row.row == 2
    assert row.reasons == (
        "customer_class 'vip' is unknown; use one of residential, commercial, "
        "small_industrial, supply",
        "tariff_count 0 must be 1-8",
    )


def test_bad_header_rejects_the_file(archive: MeterArchive) -> None:
    report = archive.import_csv("addr,protocol,colour\n1,dlt645-2007,red\n")
    assert not report.applied
    (row,) = report.rejected
    assert row.row == 1
    assert row.reasons[:2] == ("missing column(s) address, bus", "unknown column(s) addr, colour")


def test_replace_removes_unlisted_and_dry_run_changes_nothing(archive: MeterArchive) -> None:
    archive.add(m645(1))
    archive.add(m645(2))
    text = f"address,protocol,bus\n{2:012d},dlt645-2007,rs485-1\n{3:012d},dlt645-2007,rs485-1\n"
    preview = archive.import_csv(text, mode="replace", dry_run=True)
    assert not preview.applied
    assert (preview.added, preview.unchanged, preview.removed) == (
        ["000000000003"],
        ["000000000002"],
        ["000000000001"],
    )
    assert len(archive) == 2 and archive.revision == 2
    report = archive.import_csv(text, mode="replace")
    assert report.applied and report.revision == 4
    assert [m.address for m in archive.list()] == ["000000000002", "000000000003"]


def test_import_over_the_limit(tmp_path: Path) -> None:
    with MeterArchive(tmp_path / "small.db", max_meters=2) as archive:
        rows = "\n".join(f"{n:012d},dlt645-2007,a" for n in range(1, 4))
        merge = archive.import_csv("address,protocol,bus\n" + rows + "\n")
        assert merge.added == ["000000000001", "000000000002"]
        assert [str(r) for r in merge.rejected] == [
            "row 4 (000000000003): the archive would exceed the gateway limit of 2 meters"
        ]
        replace = archive.import_csv("address,protocol,bus\n" + rows + "\n", mode="replace")
        assert not replace.applied and len(replace.rejected) == 1
        assert len(archive) == 2


def test_report_to_dict_and_summary(archive: MeterArchive) -> None:
    report = archive.import_csv("address,protocol,bus\n000000000001,dlt645-2007,a\n1,x,a\n")
    assert report.summary() == (
        "merge import applied: 1 added, 0 updated, 0 unchanged, 0 removed, 1 rejected"
    )
    data = report.to_dict()
    assert data["rejected"][0]["row"] == 3 and data["added"] == ["000000000001"]


# -- change notification -------------------------------------------------------------------------


def test_revision_and_changes_since(archive: MeterArchive) -> None:
    assert archive.revision == 0 and archive.changes_since(0) == []
    archive.add(m645(1))
    archive.add(m645(2))
    archive.update("000000000001", ct_ratio=5)
    archive.update("000000000001", ct_ratio=5)  # no change, no revision
    archive.remove("000000000002")
    assert archive.revision == 4
    assert archive.changes_since(0) == [
        Change(1, "add", "000000000001"),
        Change(2, "add", "000000000002"),
        Change(3, "update", "000000000001"),
        Change(4, "remove", "000000000002"),
    ]
    assert archive.changes_since(3) == [Change(4, "remove", "000000000002")]
    assert archive.changes_since(4) == []


def test_refused_changes_leave_the_revision(archive: MeterArchive) -> None:
    archive.add(m645(1))
    with pytest.raises(ArchiveError):
        archive.add(m645(1))
    assert archive.revision == 1


def test_changes_since_asks_for_reload_when_the_log_is_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge_agent.archive as module

    monkeypatch.setattr(module, "CHANGE_LOG_KEEP", 3)
    with MeterArchive(tmp_path / "a.db") as archive:
        for n in range(1, 7):
            archive.import_csv(f"address,protocol,bus\n{n:012d},dlt645-2007,a\n")
        assert archive.revision == 6
        assert archive.changes_since(0) == [Change(6, "reload", "")]
        assert [c.revision for c in archive.changes_since(3)] == [4, 5, 6]


def test_another_process_changes_the_archive_while_we_hold_it_open(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with MeterArchive(path) as daemon:
        daemon.add(m645(1))
        seen = daemon.revision
        script = textwrap.dedent(
            f"""
            from edge_agent.archive import Meter, MeterArchive
            with MeterArchive({str(path)!r}) as cli:
                cli.add(Meter("000000000002", "dlt645-2007", "rs485-1"))
                cli.update("000000000001", ct_ratio=20)
                print(cli.revision)
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
        )
        assert int(done.stdout) == 3
        assert daemon.revision == 3
        assert daemon.changes_since(seen) == [
            Change(2, "add", "000000000002"),
            Change(3, "update", "000000000001"),
        ]
        assert daemon.get("000000000001").ct_ratio == 20


def test_readonly_archive(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with MeterArchive(path) as writer:
        writer.add(m645(1))
    with MeterArchive(path, readonly=True) as reader:
        assert len(reader) == 1 and reader.revision == 1
        with pytest.raises(ArchiveError, match="read-only"):
            reader.add(m645(2))


# -- hashing -------------------------------------------------------------------------------------


def test_archive_hash_is_stable_and_content_only(tmp_path: Path) -> None:
    with MeterArchive(tmp_path / "a.db") as a, MeterArchive(tmp_path / "b.db") as b:
        assert a.archive_hash() == b.archive_hash()
        for n in (1, 2, 3):
            a.add(m645(n))
        for n in (3, 1, 2):
            b.add(m645(n))
        assert a.archive_hash() == b.archive_hash()
        first = a.archive_hash()
        a.update("000000000002", notes="x")
        assert a.archive_hash() != first
        a.update("000000000002", notes="")
        assert a.archive_hash() == first  # content, not history
        assert len(first) == 64


def test_docs_describe_every_csv_column() -> None:
    doc = (ROOT / "docs" / "edge-config.md").read_text(encoding="utf-8")
    assert HEADER in doc
    for column in CSV_COLUMNS:
        assert f"`{column}`" in doc


def test_meter_from_row_parses_text_fields() -> None:
    meter = Meter.from_row(
        {
            "address": "1",
            "protocol": "modbus-rtu",
            "bus": "m",
            "modbus_model": "DTSU666",
            "ct_ratio": "50",
            "protected": "yes",
        }
    )
    assert (meter.key, meter.modbus_model, meter.ct_ratio, meter.protected) == (
        "m#1",
        "dtsu666",
        50,
        True,
    )
    with pytest.raises(ArchiveError) as caught:
        Meter.from_row({"address": "1", "protocol": "dlt645-2007", "bus": "", "pt_ratio": "x"})
    assert [p.message for p in caught.value.problems] == [
        "bus is empty",
        "pt_ratio 'x' is not a whole number",
        "address '1' is not a full DL/T 645 address; write all 12 nameplate digits (pad with "
        "leading zeros; wildcards A are for searching, not for the archive)",
    ]
    with pytest.raises(ArchiveError, match="unknown field"):
        Meter.from_row({"address": "1", "protocol": "modbus-rtu", "bus": "m", "colour": "red"})


def test_a_file_that_is_not_an_archive_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "archive.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ArchiveError) as caught:
        MeterArchive(path)
    message = str(caught.value)
    assert message.startswith(f"archive: cannot open {path} as a meter archive (")
    assert "move the file aside and import the last export" in message
    with pytest.raises(ArchiveError, match="cannot open"):
        MeterArchive(tmp_path / "missing.db", readonly=True)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "archive.db"
    MeterArchive(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(ArchiveError, match="schema version 99 is newer than this agent's 1"):
        MeterArchive(path)


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    script = textwrap.dedent(
        f"""
        from edge_agent.archive import Meter, MeterArchive
        with MeterArchive({str(path)!r}) as cli:
            for n in range(1000, 1050):
                cli.add(Meter(f"{{n:012d}}", "dlt645-2007", "rs485-2"))
        """
    )
    with MeterArchive(path) as daemon:
        child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
        for n in range(1, 51):
            daemon.add(m645(n))
        assert child.wait(timeout=60) == 0
        assert len(daemon) == 100
        assert daemon.revision == 100
        changes = daemon.changes_since(0)
        assert [c.revision for c in changes] == list(range(1, 101))
        assert {c.key for c in changes} == {m.key for m in daemon.list()}


def test_merge_moves_a_meter_between_buses_within_their_limits(tmp_path: Path) -> None:
    limits = {"a": 2, "b": 1}
    with MeterArchive(tmp_path / "a.db", bus_limits=limits) as archive:
        archive.add(m645(1, "a"))
        archive.add(m645(2, "a"))
        archive.add(m645(3, "b"))
        text = "address,protocol,bus\n000000000001,dlt645-2007,b\n000000000003,dlt645-2007,a\n"
        report = archive.import_csv(text)
        # A merge goes row by row, so neither meter can move into the other's full bus...
        assert [str(r) for r in report.rejected] == [
            "row 2 (000000000001): bus 'b' would exceed its max_meters (1)",
            "row 3 (000000000003): bus 'a' would exceed its max_meters (2)",
        ]
        assert not report.updated and len(archive.list(bus="a")) == 2
        # ...while a replace sees the whole new layout.
        swap = archive.import_csv(
            "address,protocol,bus\n000000000001,dlt645-2007,b\n"
            "000000000002,dlt645-2007,a\n000000000003,dlt645-2007,a\n",
            mode="replace",
        )
        assert swap.applied and swap.updated == ["000000000001", "000000000003"]
        assert [m.address for m in archive.list(bus="b")] == ["000000000001"]


def test_public_names_are_pinned() -> None:
    import edge_agent.archive as archive_module
    import edge_agent.config as config_module

    assert sorted(archive_module.__all__) == sorted(
        ["CSV_COLUMNS", "CUSTOMER_CLASSES", "METER_PROTOCOLS", "PROTOCOL_FAMILY", "ArchiveError",
         "Change", "ImportReport", "Meter", "MeterArchive", "RejectedRow", "canonical_address",
         "check_meter", "check_meters"]
    )  # fmt: skip
    assert "load_config" in config_module.__all__ and "config_diff" in config_module.__all__
    for module in (archive_module, config_module):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
