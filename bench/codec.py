"""Codec throughput: meter2cash next to the dlt645 and dlt698 peers, measured in one run.

    python bench/codec.py            # table
    python bench/codec.py --json     # machine-readable
    python bench/codec.py --seconds 2

One *exchange* is the work both ends of a read do: the master encodes the request, the
meter decodes it, the meter encodes the reply, the master decodes the reply into values.
That is four frame codec operations; "frames/s" below counts encode+decode pairs, i.e.
2 × exchanges/s. Each figure is the best of five timed runs of about ``--seconds / 5``.

Peers (test-only dependencies, never imported by our packages):
- ``dlt645`` 3.2.0, pure Python: ``DLT645Protocol.build_frame`` / ``deserialize`` and its
  meter (``MeterServerService.handle_request``) and client (``handle_response``) logic.
  It has no block reader (0001FF00), so for the block case it runs its frame codec plus
  its own ``float_to_bcd`` / ``bcd_to_float`` helpers for each of the five values.
- ``dlt698`` 1.0.1, a C++17 core bound with pybind11: ``encode_apdu`` / ``decode_apdu`` /
  ``encode_frame`` / ``decode_frame`` plus ``engineering_values`` for the scaled values.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared_protocol import dlt645, dlt698
from shared_protocol.dlt698 import (
    OAD,
    RCSD,
    RSD,
    Control,
    Data,
    DataType,
    DateTimeS,
    GetRequestNormal,
    GetRequestRecord,
    GetResponseNormal,
    GetResponseRecord,
    GetResult,
    RecordResult,
    ServerAddress,
)

ADDRESS = "000006605518"
ENERGY_DI = 0x00010000
BLOCK_DI = 0x0001FF00
ENERGY = [Decimal("230.93")]
BLOCK = [Decimal(x) for x in ("230.93", "0.00", "0.00", "221.76", "9.17")]


@dataclass
class Case:
    name: str
    ours: Callable[[], Any]
    peer: Callable[[], Any] | None
    peer_name: str
    target: str
    note: str = ""


# ------------------------------------------------------------------ DL/T 645-2007 (ours)


def ours_645_exchange(di: int, values: list[Decimal]) -> Callable[[], Any]:
    reply_data = dlt645.encode_values(di, values)

    def exchange() -> Any:
        request = dlt645.encode_frame(dlt645.read_request(ADDRESS, di))
        asked = dlt645.decode_read_request(dlt645.decode_frame(request))
        reply = dlt645.encode_frame(dlt645.read_response(ADDRESS, asked.di, reply_data), preamble=0)
        return dlt645.decode_read_response(dlt645.decode_frame(reply)).values

    result = exchange()
    assert [v.value for v in result] == values, result
    return exchange


# ------------------------------------------------------------------ DL/T 645-2007 (peer)


def peer_645_exchange() -> Callable[[], Any] | None:
    try:
        import dlt645 as peer  # the PyPI package, not ours
        from dlt645.protocol.protocol import DLT645Protocol
        from loguru import logger
    except ImportError:
        return None
    logger.remove()  # the peer logs every frame at debug level; measure codecs, not logging
    wire_address = bytes(dlt645.address_to_wire(ADDRESS))
    server = peer.MeterServerService(server=None, address=bytearray(wire_address))
    server.set_00(ENERGY_DI, float(ENERGY[0]))
    client = peer.MeterClientService(None)
    client.address = bytearray(wire_address)
    di_wire = ENERGY_DI.to_bytes(4, "little")

    def exchange() -> Any:
        request = DLT645Protocol.build_frame(wire_address, 0x11, di_wire, 4)
        reply = server.handle_request(DLT645Protocol.deserialize(request))
        return client.handle_response(DLT645Protocol.deserialize(reply)).value

    value = exchange()
    assert Decimal(str(value)) == ENERGY[0], value
    return exchange


def peer_645_block_exchange() -> Callable[[], Any] | None:
    """The peer has no block reader; give it its own BCD helpers per value, like for like."""
    try:
        from dlt645.common.transform import bcd_to_float, float_to_bcd
        from dlt645.protocol.protocol import DLT645Protocol
    except ImportError:
        return None
    wire_address = bytes(dlt645.address_to_wire(ADDRESS))
    di_wire = BLOCK_DI.to_bytes(4, "little")
    floats = [float(v) for v in BLOCK]

    def exchange() -> Any:
        request = DLT645Protocol.build_frame(wire_address, 0x11, di_wire, 4)
        asked = DLT645Protocol.deserialize(request).data[:4]
        body = bytearray(asked)
        for value in floats:
            body += float_to_bcd(value, "XXXXXX.XX", "little")
        reply = DLT645Protocol.deserialize(DLT645Protocol.build_frame(wire_address, 0x91, body, 0))
        data = reply.data
        return [bcd_to_float(data[i : i + 4], "XXXXXX.XX", "little") for i in range(4, 24, 4)]

    values = exchange()
    assert [Decimal(str(v)).quantize(Decimal("0.01")) for v in values] == BLOCK, values
    return exchange


# ------------------------------------------------------------------ DL/T 698.45 (ours)

METER_698 = ServerAddress.single("000000000105")
ENERGY_OAD = OAD.parse("00100200")
DAILY_OAD = OAD.parse("50040200")
FREEZE_TIME_OAD = OAD.parse("20210200")
ENERGY_COUNTS = (12345, 1, 2, 3, 4)
COLUMNS = RCSD.of(FREEZE_TIME_OAD, ENERGY_OAD)


def _energy_data() -> Data:
    return Data.array(*(Data(DataType.DOUBLE_LONG_UNSIGNED, v) for v in ENERGY_COUNTS))


def _frame(control: Control, apdu: bytes) -> bytes:
    return dlt698.encode_frame(dlt698.Frame(control, METER_698, 0x10, apdu))


def ours_698_get_normal() -> Callable[[], Any]:
    def exchange() -> Any:
        request = _frame(
            Control.client_request(), dlt698.encode_apdu(GetRequestNormal(1, ENERGY_OAD))
        )
        asked = dlt698.decode_apdu(dlt698.decode_frame(request).apdu)
        reply_apdu = GetResponseNormal(asked.piid, GetResult(asked.oad, _energy_data()))  # type: ignore[attr-defined]
        reply = _frame(Control.server_response(), dlt698.encode_apdu(reply_apdu))
        return dlt698.apdu_values(dlt698.decode_apdu(dlt698.decode_frame(reply).apdu))

    values = exchange()
    assert values[0].value == Decimal("123.45"), values
    return exchange


def ours_698_get_record() -> Callable[[], Any]:
    row = (
        Data(DataType.DATE_TIME_S, DateTimeS(2026, 11, 28, 0, 0, 0)),
        _energy_data(),
    )

    def exchange() -> Any:
        request = _frame(
            Control.client_request(),
            dlt698.encode_apdu(GetRequestRecord(2, DAILY_OAD, RSD.last(1), COLUMNS)),
        )
        asked = dlt698.decode_apdu(dlt698.decode_frame(request).apdu)
        result = RecordResult(asked.oad, asked.rcsd, rows=(row,))  # type: ignore[attr-defined]
        reply = _frame(
            Control.server_response(),
            dlt698.encode_apdu(GetResponseRecord(asked.piid, result)),  # type: ignore[attr-defined]
        )
        return dlt698.apdu_values(dlt698.decode_apdu(dlt698.decode_frame(reply).apdu))

    values = exchange()
    assert any(v.value == Decimal("123.45") for v in values), values
    return exchange


# ------------------------------------------------------------------ DL/T 698.45 (peer)


def _peer_698() -> Any:
    try:
        from dlt698 import _native
    except ImportError:
        return None
    return _native


def _peer_oad(peer: Any, oad: OAD) -> Any:
    return peer.Oad(oi=oad.oi, attribute=oad.attribute | oad.feature << 5, index=oad.index)


def _peer_frame(peer: Any, control: int, apdu: bytes) -> bytes:
    server = peer.ServerAddress(
        bytes=METER_698.wire, logical=METER_698.logical, type=peer.AddressType(0)
    )
    return bytes(
        peer.encode_frame(peer.Frame(client=0x10, control=control, payload=apdu, server=server))
    )


def peer_698_get_normal() -> Callable[[], Any] | None:
    peer = _peer_698()
    if peer is None:
        return None
    oad = _peer_oad(peer, ENERGY_OAD)
    # The reply APDU is built once by our encoder and decoded/re-encoded by the peer, so
    # the peer's loop does the same codec work as ours: four frame/APDU codec passes.
    reply_template = peer.decode_apdu(
        dlt698.encode_apdu(GetResponseNormal(1, GetResult(ENERGY_OAD, _energy_data())))
    )

    def exchange() -> Any:
        request = _peer_frame(
            peer, 0x43, bytes(peer.encode_apdu(peer.GetRequest(piid=1, attributes=[oad])))
        )
        peer.decode_apdu(peer.decode_frame(request).payload)
        reply = _peer_frame(peer, 0xC3, bytes(peer.encode_apdu(reply_template)))
        decoded = peer.decode_apdu(peer.decode_frame(reply).payload)
        return peer.engineering_values(oad, decoded.attributes[0].result)

    values = exchange()
    assert Decimal(peer.decimal_text(values[0])) == Decimal("123.45")
    return exchange


def peer_698_get_record() -> Callable[[], Any] | None:
    peer = _peer_698()
    if peer is None:
        return None
    record = peer.GetRecord(
        attribute=_peer_oad(peer, DAILY_OAD),
        columns=[_peer_oad(peer, FREEZE_TIME_OAD), _peer_oad(peer, ENERGY_OAD)],
        rows=peer.Selector9(previous=1),
    )
    row = (Data(DataType.DATE_TIME_S, DateTimeS(2026, 11, 28, 0, 0, 0)), _energy_data())
    reply_template = peer.decode_apdu(
        dlt698.encode_apdu(GetResponseRecord(2, RecordResult(DAILY_OAD, COLUMNS, rows=(row,))))
    )

    def exchange() -> Any:
        request = _peer_frame(
            peer, 0x43, bytes(peer.encode_apdu(peer.GetRecordRequest(piid=2, records=[record])))
        )
        peer.decode_apdu(peer.decode_frame(request).payload)
        reply = _peer_frame(peer, 0xC3, bytes(peer.encode_apdu(reply_template)))
        return peer.decode_apdu(peer.decode_frame(reply).payload)

    exchange()
    return exchange


# ------------------------------------------------------------------ timing


def rate(fn: Callable[[], Any], seconds: float) -> float:
    """Exchanges per second: best of five runs, each about ``seconds / 5`` long."""
    n = 1
    while True:  # calibrate a batch that takes ≥ 20 ms
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start >= 0.02:
            break
        n *= 2
    per_run = seconds / 5
    best = 0.0
    for _ in range(5):
        count = 0
        start = time.perf_counter()
        while time.perf_counter() - start < per_run:
            for _ in range(n):
                fn()
            count += n
        best = max(best, count / (time.perf_counter() - start))
    return best


def cases() -> list[Case]:
    return [
        Case(
            "645 energy read 00010000",
            ours_645_exchange(ENERGY_DI, ENERGY),
            peer_645_exchange(),
            "dlt645 3.2.0 (pure Python)",
            "≥ 3× peer",
        ),
        Case(
            "645 block read 0001FF00",
            ours_645_exchange(BLOCK_DI, BLOCK),
            peer_645_block_exchange(),
            "dlt645 3.2.0 (pure Python)",
            "≥ 3× peer",
            "peer: its frame codec + its own BCD helpers per value (it has no block reader)",
        ),
        Case(
            "698 GET-Normal 00100200",
            ours_698_get_normal(),
            peer_698_get_normal(),
            "dlt698 1.0.1 (C++ core)",
            "≥ 0.5× peer",
        ),
        Case(
            "698 GET-Record 50040200 last 1",
            ours_698_get_record(),
            peer_698_get_record(),
            "dlt698 1.0.1 (C++ core)",
            "≥ 0.5× peer",
            "peer: values left as Data (no scaling of record rows)",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.5, help="time per figure")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    rows = []
    for case in cases():
        ours = rate(case.ours, args.seconds)
        peer = rate(case.peer, args.seconds) if case.peer else None
        rows.append(
            {
                "case": case.name,
                "ours_exchanges_per_s": round(ours),
                "ours_frames_per_s": round(2 * ours),
                "peer": case.peer_name,
                "peer_exchanges_per_s": round(peer) if peer else None,
                "ratio": round(ours / peer, 2) if peer else None,
                "target": case.target,
                "note": case.note,
            }
        )
    machine = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cores_used": 1,
    }
    if args.json:
        print(json.dumps({"machine": machine, "results": rows}, indent=2, ensure_ascii=False))
        return
    print(f"Python {machine['python']} on {machine['machine']}, one core\n")
    header = (
        f"{'case':34} {'ours ex/s':>10} {'frames/s':>10} {'peer ex/s':>10} {'ratio':>6}  target"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        peer_rate = row["peer_exchanges_per_s"]
        print(
            f"{row['case']:34} {row['ours_exchanges_per_s']:>10} {row['ours_frames_per_s']:>10} "
            f"{peer_rate if peer_rate else '-':>10} {row['ratio'] or '-':>6}  {row['target']}"
            + (f"  ({row['note']})" if row["note"] else "")
        )


if __name__ == "__main__":
    main()
