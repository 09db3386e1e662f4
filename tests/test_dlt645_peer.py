"""Differential tests against the PyPI package ``dlt645`` 3.2.0 (test-only peer).

Where the peer is right we must agree with it byte for byte and value for value; where it
is wrong (reference §3, bugs B1-B7) the test shows the peer's bytes next to ours and the
real-meter evidence that ours are the standard's. The peer talks through an in-memory
line (no sockets): it records what the peer sends and plays back a canned reply.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared_protocol.dlt645 import (
    YYMMDDHHMM,
    Bcd,
    Frame,
    change_baud_request,
    decode_frame,
    decode_read_response,
    encode_frame,
    explain,
    freeze_request,
    meter_clear_request,
    read_request,
    read_response,
    time_sync_request,
)

dlt645 = pytest.importorskip("dlt645")

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "vectors" / "dlt645.json").read_text(encoding="utf-8")
)["vectors"]


class MemoryLine:
    """Stands in for the peer's TcpClient/RtuClient: records frames, replays a reply."""

    def __init__(self, reply: bytes | None = None) -> None:
        self.sent: list[bytes] = []
        self.reply = reply

    def _ensure_connection(self) -> bool:
        return True

    def send_request(self, data: bytes, *args: Any, **kwargs: Any) -> bytes | None:
        self.sent.append(bytes(data))
        return self.reply

    def send_only(self, data: bytes, *args: Any, **kwargs: Any) -> bool:
        self.sent.append(bytes(data))
        return True


@functools.cache
def _shared_service() -> Any:
    # building the peer's service deep-copies its whole DI map (~1 s), so tests share one
    return dlt645.MeterClientService(MemoryLine())


def peer_client(reply: bytes | None = None) -> tuple[Any, MemoryLine]:
    line = MemoryLine(reply)
    service = _shared_service()
    service.client = line
    service.address = bytearray(6)
    return service, line


def peer_data(raw: bytes) -> bytes:
    """The data field of a frame the peer sent, −33H."""
    return decode_frame(raw).data


# ---------------------------------------------------------------- agreement


@pytest.mark.parametrize(
    ("address", "di", "peer_read"),
    [
        ("000000000161", 0x00010000, "read_00"),  # public request 645-002
        ("000006605518", 0x00010300, "read_00"),
        ("558890213594", 0x02010100, "read_02"),
        ("558890213594", 0x02020100, "read_02"),
        ("000006605518", 0x04000402, "read_04"),
        ("100170021852", 0x0001FF00, "read_00"),
    ],
)
def test_read_requests_match_the_peer_byte_for_byte(address: str, di: int, peer_read: str) -> None:
    service, line = peer_client()
    # the peer stores addresses unreversed (B1), so we hand it wire order
    service.address = bytearray(bytes.fromhex(address)[::-1])
    getattr(service, peer_read)(di)
    assert line.sent == [encode_frame(read_request(address, di))]


def _peer_value(raw: bytes) -> Any:
    frame = dlt645.DLT645Protocol.deserialize(raw)
    service, _ = peer_client()
    service.address = bytearray(frame.addr)
    item = service.handle_response(frame)
    return None if item is None else item.value


REPLIES = [
    v
    for v in VECTORS
    if v["verified"]
    and v["standard"].endswith("2007")
    and v["decoded"]["control"] == "91"
    and isinstance(v["decoded"].get("value"), int | float)
]


@pytest.mark.parametrize("vector", REPLIES, ids=[v["id"] for v in REPLIES])
def test_scalar_replies_decode_to_the_same_value_as_the_peer(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["frame_hex"])
    theirs = _peer_value(raw)
    if not isinstance(theirs, int | float):
        pytest.skip(f"peer does not decode DI {vector['decoded']['DI']} to a number ({theirs!r})")
    ours = Decimal(explain(raw)["values"][0]["value"])
    assert ours == Decimal(str(theirs))


def test_peer_cannot_decode_a_block_reply_that_we_can() -> None:
    (vector,) = [v for v in VECTORS if v["id"] == "645-027"]
    raw = bytes.fromhex(vector["frame_hex"])
    reply = decode_read_response(decode_frame(raw))
    assert [v.value for v in reply.values] == [Decimal(x) for x in ("3.89", "0", "0", "3.89", "0")]
    theirs = _peer_value(raw)
    assert not isinstance(theirs, list)  # the peer returns a single number, or nothing


# ---------------------------------------------------------------- where the peer is wrong


def test_b1_peer_sends_the_nameplate_address_unreversed() -> None:
    service, line = peer_client()
    service.set_address("000006605518")
    service.read_00(0x00010000)
    assert decode_frame(line.sent[0]).wire_address == bytes.fromhex("000006605518")  # peer
    ours = encode_frame(read_request("000006605518", 0x00010000))
    # a real meter with this nameplate number answers from 18 55 60 06 00 00 (645-043…055)
    assert ours[5:11] == bytes.fromhex("185560060000")
    assert line.sent[0] != ours


def test_b2_peer_broadcast_time_sync_sends_yy_first() -> None:
    moment = datetime(2019, 12, 7, 16, 28, 0)
    service, line = peer_client()
    service.broadcast_time_sync(moment)
    assert peer_data(line.sent[0]) == bytes.fromhex("191207162800")  # YY MM DD hh mm ss
    ours = time_sync_request(moment)
    assert ours.data == bytes.fromhex("002816071219")  # ss mm hh DD MM YY
    # qiujianhong's real broadcast (vector 645-063) is ours, byte for byte
    assert encode_frame(ours, preamble=0) == bytes.fromhex(
        "68 99 99 99 99 99 99 68 08 06 33 5B 49 3A 45 4C 16 16"
    )


def test_b3_peer_freeze_sends_month_first() -> None:
    service, line = peer_client(reply=b"")
    service.freeze(month=12, day=7, hour=16, minute=28, broadcast=True)
    assert peer_data(line.sent[0]) == bytes.fromhex("12071628")  # MM DD hh mm
    assert freeze_request(month=12, day=7, hour=16, minute=28).data == bytes.fromhex("28160712")


@pytest.mark.parametrize(
    ("baud", "peer_byte", "flag"), [(4800, 0x16, 0x10), (9600, 0x32, 0x20), (19200, 0x64, 0x40)]
)
def test_b6_peer_baud_feature_byte_is_not_the_bit_flag(
    baud: int, peer_byte: int, flag: int
) -> None:
    service, line = peer_client()
    service.address = bytearray(bytes.fromhex("010012011920"))
    service.change_baud_rate(baud)
    assert peer_data(line.sent[0]) == bytes([peer_byte])
    assert change_baud_request("201901120001", baud).data == bytes([flag])


@pytest.mark.parametrize("baud", [1200, 2400])
def test_b6_peer_agrees_where_bcd_and_flag_coincide(baud: int) -> None:
    service, line = peer_client()
    service.address = bytearray(bytes.fromhex("010012011920"))
    service.change_baud_rate(baud)
    assert line.sent == [encode_frame(change_baud_request("201901120001", baud))]


def test_b4_peer_change_password_uses_di_4000_0c_xx() -> None:
    service, line = peer_client()
    service.address = bytearray(bytes.fromhex("185560060000"))
    service.password_manager.set_password(bytes.fromhex("02000000"))
    service.change_password("02000000", "02123456")
    if not line.sent:
        pytest.skip("peer refused the password pair before sending")
    di = int.from_bytes(peer_data(line.sent[0])[:4], "little")
    assert di == 0x40000C02  # the standard's level-2 password DI is 04000C03 [U]


def test_b7_peer_reads_the_demand_time_in_the_wrong_order() -> None:
    # 12.3456 kW at 2024-03-05 12:15; the time goes on the wire low byte first (mm first)
    moment = datetime(2024, 3, 5, 12, 15)
    data = Bcd(3, 4).encode(Decimal("12.3456")) + YYMMDDHHMM.encode(moment)
    frame = read_response("000006605518", 0x01010000, data)
    ours = decode_read_response(frame).values
    assert [v.value for v in ours] == [Decimal("12.3456"), moment]
    theirs = _peer_value(encode_frame(frame, preamble=0))
    assert theirs is not None
    assert theirs.time != moment  # the peer reads mm hh DD MM YY as YY MM DD hh mm
    assert theirs.time == datetime(2015, 12, 5, 3, 24)


def test_frames_from_the_peer_decode_here() -> None:
    raw = bytes(
        dlt645.DLT645Protocol.build_frame(bytes.fromhex("185560060000"), 0x11, b"\x00\x00\x01\x00")
    )
    assert decode_frame(raw) == Frame(
        "000006605518", read_request("000006605518", 0x00010000).control, b"\x00\x00\x01\x00"
    )


def test_b5_peer_meter_clear_sends_a_di_before_the_password() -> None:
    service, line = peer_client()
    service.address = bytearray(bytes.fromhex("185560060000"))
    service.clear_meter("02000000")
    assert peer_data(line.sent[0])[:4] == bytes(4)  # a DI 00000000 first
    ours = meter_clear_request("000006605518")
    assert ours.data == bytes.fromhex("02 00 00 00 00 00 00 00")  # PA..P2 + C0..C3 [U]
