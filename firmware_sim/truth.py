"""Ground truth per meter per day: what the household really used, what its meter showed.

Rows come from the area's midnight snapshots (:class:`~firmware_sim.area.TruthSnapshot`):
one row per account per area-local day, with the true net energy of the household, the
change of its meter's import/export registers over the same true day, and the anomalies
active at the day's end. The supply meter gets a row too (account ``"supply"``) with the
day's technical loss and theft. Energy is ``Decimal`` kWh at 0.0001.

Written as JSON lines or CSV; no other I/O in the simulator touches files.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import TextIO

from firmware_sim.area import TransformerArea
from firmware_sim.meter import kwh

__all__ = ["TruthRow", "truth_rows", "write_csv", "write_jsonl"]


@dataclass(frozen=True)
class TruthRow:
    day: str  # area-local date the row covers (ISO)
    area: str
    account: str
    address: str
    true_kwh: Decimal  # household's real net consumption
    shown_import_kwh: Decimal  # import register change over the same day
    shown_export_kwh: Decimal
    anomalies: str  # ";"-joined, empty when none
    loss_kwh: Decimal | None = None  # supply row only
    theft_kwh: Decimal | None = None  # supply row only

    def as_dict(self) -> dict[str, str | None]:
        return {k: None if v is None else str(v) for k, v in asdict(self).items()}


def truth_rows(area: TransformerArea) -> Iterator[TruthRow]:
    for before, after in zip(area.truth, area.truth[1:], strict=False):
        day = before.time.date().isoformat()
        for account in after.household_uj:
            yield TruthRow(
                day=day,
                area=area.name,
                account=account,
                address=after.addresses[account],
                true_kwh=kwh(after.household_uj[account] - before.household_uj[account], 4),
                shown_import_kwh=kwh(
                    after.register_import_uj[account] - before.register_import_uj[account], 4
                ),
                shown_export_kwh=kwh(
                    after.register_export_uj[account] - before.register_export_uj[account], 4
                ),
                anomalies=";".join(after.anomalies[account]),
            )
        yield TruthRow(
            day=day,
            area=area.name,
            account="supply",
            address=area.supply.address,
            true_kwh=kwh(after.supply_uj - before.supply_uj, 4),
            shown_import_kwh=kwh(after.supply_uj - before.supply_uj, 4),
            shown_export_kwh=Decimal("0.0000"),
            anomalies="",
            loss_kwh=kwh(after.loss_uj - before.loss_uj, 4),
            theft_kwh=kwh(after.theft_uj - before.theft_uj, 4),
        )


def write_jsonl(area: TransformerArea, out: TextIO) -> int:
    count = 0
    for row in truth_rows(area):
        out.write(json.dumps(row.as_dict(), ensure_ascii=False) + "\n")
        count += 1
    return count


def write_csv(area: TransformerArea, out: TextIO) -> int:
    fields = list(TruthRow.__dataclass_fields__)
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in truth_rows(area):
        writer.writerow({k: "" if v is None else v for k, v in row.as_dict().items()})
        count += 1
    return count


def to_csv_text(area: TransformerArea) -> str:
    buffer = io.StringIO()
    write_csv(area, buffer)
    return buffer.getvalue()
