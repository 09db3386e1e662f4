"""The canonical vocabulary is data: check it as data."""

from __future__ import annotations

import pytest

from shared_protocol.errors import LocalProtocolError
from shared_protocol.quantities import (
    QUANTITIES,
    base_obis,
    quantity,
    with_billing_period,
)


def test_codes_are_unique_and_well_formed() -> None:
    for code, entry in QUANTITIES.items():
        assert code == entry.obis
        assert quantity(code) is entry


@pytest.mark.parametrize(
    ("code", "name_part", "unit"),
    [
        # IEC 62056-61: C=1 import active, D=8 time integral 1 (energy), E=tariff
        ("1-0:1.8.0", "import active energy total", "kWh"),
        ("1-0:1.8.3", "tariff 3 (flat)", "kWh"),
        ("1-0:2.8.0", "export active energy total", "kWh"),
        # C=32 voltage L1, C=31 current L1, D=7 instantaneous
        ("1-0:32.7.0", "voltage L1", "V"),
        ("1-0:72.7.0", "voltage L3", "V"),
        ("1-0:31.7.0", "current L1", "A"),
        ("1-0:14.7.0", "frequency", "Hz"),
    ],
)
def test_standard_codes_mean_what_iec_62056_says(code: str, name_part: str, unit: str) -> None:
    entry = quantity(code)
    assert name_part in entry.name
    assert entry.unit == unit


def test_billing_period_suffix_keeps_unit_and_names_the_period() -> None:
    code = with_billing_period("1-0:1.8.0", 3)
    assert code == "1-0:1.8.0*3"
    assert base_obis(code) == "1-0:1.8.0"
    entry = quantity(code)
    assert entry.unit == "kWh"
    assert "settlement −3" in entry.name
    assert with_billing_period("1-0:1.8.0", 0) == "1-0:1.8.0"


@pytest.mark.parametrize("bad", ["1.8.0", "1-0:1.8", "voltage", "1-0:250.250.250"])
def test_unknown_or_malformed_codes_are_refused_with_the_code_named(bad: str) -> None:
    with pytest.raises(LocalProtocolError, match=r"1\.8|voltage|250"):
        quantity(bad)


def test_billing_period_out_of_range_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        with_billing_period("1-0:1.8.0", 100)


def test_docs_carry_the_vocabulary_table() -> None:
    from pathlib import Path

    from shared_protocol.quantities import vocabulary_markdown

    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocols.md").read_text()
    assert vocabulary_markdown() in doc, "regenerate the table in docs/protocols.md"


def test_every_protocol_table_names_known_quantities() -> None:
    from shared_protocol.dlt645 import DATA_ITEMS
    from shared_protocol.dlt698 import CATALOGUE
    from shared_protocol.modbus import METER_MAPS

    codes: set[str] = set()
    for items in DATA_ITEMS.values():
        for item in items.values():
            codes |= {field.obis for field in item.fields if field.obis}
    for entry in CATALOGUE.values():
        codes |= set(entry.obis)
    for register_map in METER_MAPS.values():
        codes |= {entry.obis for entry in register_map.entries}
    assert codes, "protocol tables name no quantities"
    for code in codes:
        quantity(code)  # raises for a code outside the vocabulary
