"""The bus core, sans I/O: who answers, collisions, chunking, wire-time arithmetic."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_bus_doubles import (
    ENERGY_DI,
    BrokenMeter,
    Meter645,
    Meter698,
    MeterModbus,
    master_events,
    read_698_request,
    read_energy_request,
)

from firmware_sim.bus import Bus, line_family
from firmware_sim.wiretime import (
    FixedLatency,
    NormalLatency,
    UniformLatency,
    WireTime,
    byte_time,
    latency_from_dict,
)
from shared_protocol import dlt645, dlt698, modbus
from shared_protocol.stream import Discarded

A, B, C = "000000000001", "000000000002", "000000000003"


def three_meters(**kwargs: object) -> Bus:
    return Bus("dlt645", [Meter645(A), Meter645(B, Decimal("7.00")), Meter645(C)], **kwargs)  # type: ignore[arg-type]


def frames(line: str, data: bytes) -> list[object]:
    return [event for event in master_events(line, data) if not isinstance(event, Discarded)]


# ---------------------------------------------------------------- who answers


def test_only_the_addressed_meter_answers() -> None:
    bus = three_meters()
    bus.feed(read_energy_request(B))
    [reply] = frames("dlt645", bus.take_due(0.0))
    assert isinstance(reply, dlt645.Frame)
    assert reply.address == B
    assert dlt645.decode_read_response(reply).values[0].value == Decimal("7.00")
    assert (bus.counters.requests, bus.counters.replies, bus.counters.silences) == (1, 1, 0)


def test_broadcast_gets_no_answer() -> None:
    bus = three_meters()
    bus.feed(read_energy_request(dlt645.BROADCAST_ADDRESS))
    assert bus.take_due(1e9) == b""
    assert bus.next_due() is None
    assert bus.counters.silences == 1


def test_unknown_address_gets_no_answer() -> None:
    bus = three_meters()
    bus.feed(read_energy_request("000000000099"))
    assert bus.take_due(1e9) == b""


def test_wildcard_with_one_meter_answers_with_its_real_address() -> None:
    bus = Bus("dlt645", [Meter645(A)])
    bus.feed(read_energy_request(dlt645.WILDCARD_ADDRESS))
    [reply] = frames("dlt645", bus.take_due(0.0))
    assert isinstance(reply, dlt645.Frame)
    assert reply.address == A
    assert bus.counters.collisions == 0


def test_wildcard_with_two_meters_collides() -> None:
    bus = Bus("dlt645", [Meter645(A), Meter645(B)])
    bus.feed(read_energy_request(dlt645.WILDCARD_ADDRESS))
    line = bus.take_due(0.0)
    assert frames("dlt645", line) == []  # garbled: the master's parser finds no frame
    assert master_events("dlt645", line)  # … but it did receive bytes
    assert bus.counters.collisions == 1
    assert bus.counters.replies == 2


def test_collision_is_deterministic_by_seed() -> None:
    def garbled(seed: int) -> bytes:
        bus = Bus("dlt645", [Meter645(A), Meter645(B)], seed=seed)
        bus.feed(read_energy_request(dlt645.WILDCARD_ADDRESS))
        return bus.take_due(0.0)

    assert garbled(1) == garbled(1)
    assert garbled(1) != garbled(2)


def test_collision_keeps_the_bits_both_meters_agree_on() -> None:
    bus = Bus("dlt645", [Meter645(A), Meter645(B)])
    bus.feed(read_energy_request(dlt645.WILDCARD_ADDRESS))
    line = bus.take_due(0.0)
    reply_a = dlt645.encode_frame(
        dlt645.read_response(A, ENERGY_DI, dlt645.encode_values(ENERGY_DI, [Decimal("1234.56")])),
        0,
    )
    reply_b = dlt645.encode_frame(
        dlt645.read_response(B, ENERGY_DI, dlt645.encode_values(ENERGY_DI, [Decimal("1234.56")])),
        0,
    )
    for seen, a, b in zip(line, reply_a, reply_b, strict=True):
        agree = ~(a ^ b) & 0xFF
        assert seen & agree == a & agree


@pytest.mark.parametrize("split", range(1, 20))
def test_request_split_anywhere_is_answered_once(split: int) -> None:
    request = read_energy_request(A)
    assert len(request) == 20
    bus = three_meters()
    bus.feed(request[:split])
    assert bus.take_due(0.0) == b""
    bus.feed(request[split:])
    assert len(frames("dlt645", bus.take_due(0.0))) == 1
    assert bus.counters.requests == 1


def test_request_byte_by_byte_and_back_to_back() -> None:
    bus = three_meters()
    stream = read_energy_request(A) + read_energy_request(C) + read_energy_request(B)
    for value in stream:
        bus.feed(bytes([value]))
    replies = frames("dlt645", bus.take_due(0.0))
    assert [reply.address for reply in replies] == [A, C, B]  # type: ignore[attr-defined]


def test_noise_before_a_request_is_counted_and_skipped() -> None:
    bus = three_meters()
    bus.feed(b"\x00\x11\x22" + read_energy_request(A))
    assert len(frames("dlt645", bus.take_due(0.0))) == 1
    assert bus.counters.bad_frames == 1
    assert bus.counters.discarded_bytes == 3


def test_a_partial_frame_is_dropped_when_the_line_goes_idle() -> None:
    bus = three_meters()
    bus.feed(read_energy_request(A)[:9])
    bus.line_idle()
    assert bus.counters.bad_frames == 1
    bus.feed(read_energy_request(A))
    assert len(frames("dlt645", bus.take_due(0.0))) == 1


def test_698_line() -> None:
    bus = Bus("dlt698.45", [Meter698(A), Meter698(B)])
    bus.feed(read_698_request(B))
    [reply] = frames("dlt698.45", bus.take_due(0.0))
    assert isinstance(reply, dlt698.Frame)
    assert reply.address.digits == B
    assert isinstance(dlt698.decode_apdu(reply.apdu), dlt698.GetResponseNormal)


def test_modbus_line_and_broadcast() -> None:
    bus = Bus("modbus-rtu", [MeterModbus(1), MeterModbus(2)])
    bus.feed(modbus.build_read_request(2, 3, 0, 4).raw)
    [reply] = frames("modbus-rtu", bus.take_due(0.0))
    assert isinstance(reply, modbus.Frame)
    assert (reply.unit_id, reply.registers) == (2, (1, 2, 3, 4))
    bus.feed(modbus.build_write_single_request(0, 10, 5).raw)
    assert bus.take_due(0.0) == b""
    assert bus.counters.silences == 1


def test_a_meter_that_raises_is_counted_and_the_next_request_served() -> None:
    bus = Bus("dlt645", [BrokenMeter(A)])
    bus.feed(read_energy_request(A))
    assert bus.take_due(0.0) == b""
    [failure] = bus.take_failures()
    assert failure.device_id == A
    assert isinstance(failure.error, RuntimeError)
    assert bus.counters.device_errors == 1
    bus.feed(read_energy_request(A))
    assert len(frames("dlt645", bus.take_due(0.0))) == 1


def test_a_meter_of_another_protocol_cannot_join_the_line() -> None:
    with pytest.raises(ValueError, match="cannot share a dlt645 line"):
        Bus("dlt645", [Meter698(A)])
    assert line_family("dlt645-1997") == "dlt645"
    with pytest.raises(ValueError, match="not one of"):
        line_family("iec62056")


# ---------------------------------------------------------------- wire time


def test_byte_time_is_eleven_bits() -> None:
    assert byte_time(2400) == 11 / 2400
    assert WireTime(baud=9600).transmit_time(10) == 10 * 11 / 9600


@pytest.mark.parametrize("baud", [1200, 2400, 9600])
@pytest.mark.parametrize("latency", [0.0, 0.035])
def test_reply_timing_is_bytes_times_eleven_over_baud_plus_latency(
    baud: int, latency: float
) -> None:
    wire = WireTime(baud=baud, turnaround=0.002, latency=FixedLatency(latency))
    bus = Bus("dlt645", [Meter645(A)], wire=wire)
    request = read_energy_request(A)
    [reply] = bus.feed(request, now=10.0)
    request_time = len(request) * 11 / baud
    assert reply.start == pytest.approx(10.0 + request_time + 0.002 + latency, abs=1e-12)
    assert reply.end == pytest.approx(
        10.0 + (len(request) + len(reply.data)) * 11 / baud + 0.002 + latency, abs=1e-12
    )
    # byte by byte: the k-th byte is due when its stop bit ends
    assert bus.next_due() == pytest.approx(reply.start + 11 / baud, abs=1e-12)
    assert bus.take_due(reply.start) == b""
    assert bus.take_due(reply.start + 3 * 11 / baud) == reply.data[:3]
    assert bus.take_due(reply.end) == reply.data[3:]


def test_latency_distribution_is_seeded_per_meter() -> None:
    def starts(seed: int) -> list[float]:
        wire = WireTime(baud=9600, latency=UniformLatency(0.02, 0.08))
        bus = Bus("dlt645", [Meter645(A)], wire=wire, seed=seed)
        out = []
        for index in range(5):
            [reply] = bus.feed(read_energy_request(A), now=index * 10.0)
            out.append(reply.start - index * 10.0)
            bus.take_due(1e9)
        return out

    first = starts(3)
    assert first == starts(3)
    assert first != starts(4)
    request_time = 20 * 11 / 9600
    assert all(0.02 <= start - request_time <= 0.08 for start in first)


def test_echo_returns_the_masters_bytes_first() -> None:
    bus = Bus("dlt645", [Meter645(A)], wire=WireTime(baud=2400, echo=True))
    request = read_energy_request(A)
    sent = bus.feed(request, now=0.0)
    assert [t.kind for t in sent] == ["echo", "reply"]
    line = bus.take_due(1e9)
    assert line.startswith(request)
    assert line[len(request) :] == sent[1].data


def test_request_sent_while_a_reply_is_on_the_wire_collides() -> None:
    bus = Bus("dlt645", [Meter645(A), Meter645(B)], wire=WireTime(baud=2400))
    [reply] = bus.feed(read_energy_request(A), now=0.0)
    halfway = (reply.start + reply.end) / 2
    before = bus.take_due(halfway)
    bus.feed(read_energy_request(B), now=halfway)  # the master did not wait
    rest = bus.take_due(1e9)
    assert bus.counters.collisions == 1
    assert frames("dlt645", before + rest) == []  # the reply was spoiled …
    assert bus.counters.requests == 1  # … and so was the request the meters heard


def test_two_replies_with_different_latencies_overlap_partly() -> None:
    wire = WireTime(baud=2400)
    bus = Bus("dlt645", wire=wire)
    bus.attach(Meter645(A), latency=FixedLatency(0.0))
    bus.attach(Meter645(B), latency=FixedLatency(10 * 11 / 2400))  # 10 byte times later
    first, second = bus.feed(read_energy_request(dlt645.WILDCARD_ADDRESS), now=0.0)
    line = bus.take_due(1e9)
    assert bus.counters.collisions == 1
    assert line[:10] == first.data[:10]  # before the second meter starts, the line is clean
    assert len(line) == 10 + len(second.data)
    assert line[len(first.data) :] == second.data[len(first.data) - 10 :]


def test_wire_time_from_dict_names_the_bad_field() -> None:
    wire = WireTime.from_dict(
        {
            "baud": 9600,
            "turnaround": 0.003,
            "latency": {"distribution": "uniform", "low": 0.01, "high": 0.02},
        }
    )
    assert wire.latency == UniformLatency(0.01, 0.02)
    with pytest.raises(ValueError, match=r"wire_time\.baud"):
        WireTime.from_dict({"baud": "fast"})
    with pytest.raises(ValueError, match=r"wire_time\.latency\.high"):
        WireTime.from_dict({"latency": {"distribution": "uniform", "low": 0.2, "high": 0.1}})
    with pytest.raises(ValueError, match=r"wire_time\.latency\.distribution"):
        WireTime.from_dict({"latency": {"distribution": "poisson"}})
    with pytest.raises(ValueError, match=r"wire_time\.parity"):
        WireTime.from_dict({"parity": "E"})


def test_bus_from_a_config_table() -> None:
    bus = Bus.from_dict(
        {
            "line": "dlt645-2007",
            "seed": 3,
            "wire_time": {"baud": 9600, "echo": True},
            "faults": {"faults": [{"kind": "no_answer", "first": 1}]},
        },
        [Meter645(A)],
    )
    assert (bus.line, bus.seed, bus.wire) == ("dlt645", 3, WireTime(baud=9600, echo=True))
    bus.feed(read_energy_request(A), now=0.0)
    assert frames("dlt645", bus.take_due(1e9)) == [dlt645.decode_frame(read_energy_request(A))]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, r"bus\.line: missing"),
        ({"line": "can"}, r"bus\.line: protocol 'can' is not one of"),
        ({"line": "dlt645", "seed": 1.5}, r"bus\.seed: expected an integer"),
        ({"line": "dlt645", "wire_time": {"baud": 0}}, r"bus\.wire_time\.baud"),
        ({"line": "dlt645", "faults": {"faults": [{"kind": "x"}]}}, r"bus\.faults\.faults\[0\]"),
        ({"line": "dlt645", "speed": 1}, r"bus\.speed: unknown field"),
    ],
)
def test_bus_config_errors_name_the_field(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Bus.from_dict(spec)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_chunking_of_any_protocol_is_answered_once_per_request(data: st.DataObject) -> None:
    line, bus, requests = data.draw(
        st.sampled_from(
            [
                (
                    "dlt645",
                    lambda: Bus("dlt645", [Meter645(A), Meter645(B)]),
                    [read_energy_request(A), read_energy_request(B)],
                ),
                (
                    "dlt698.45",
                    lambda: Bus("dlt698.45", [Meter698(A), Meter698(B)]),
                    [read_698_request(A), read_698_request(B)],
                ),
                (
                    "modbus-rtu",
                    lambda: Bus("modbus-rtu", [MeterModbus(1), MeterModbus(2)]),
                    [
                        modbus.build_read_request(1, 3, 0, 2).raw,
                        modbus.build_read_request(2, 4, 8, 1).raw,
                    ],
                ),
            ]
        ).map(lambda case: (case[0], case[1](), case[2]))
    )
    stream = b"".join(requests * 2)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=12)))
    out = b""
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        bus.feed(stream[start:end])
        out += bus.take_due(0.0)
    assert len(frames(line, out)) == 4
    assert bus.counters.requests == 4
    assert bus.counters.bad_frames == 0


def test_normal_latency_is_clipped_and_loads_from_a_table() -> None:
    latency = latency_from_dict(
        {"distribution": "normal", "mean": 0.05, "stdev": 0.5, "low": 0.01, "high": 0.09}
    )
    assert isinstance(latency, NormalLatency)
    rng = random.Random(1)
    draws = [latency.draw(rng) for _ in range(200)]
    assert min(draws) == 0.01 and max(draws) == 0.09
    assert latency_from_dict(0.03) == FixedLatency(0.03)
    with pytest.raises(ValueError, match=r"latency\.stdev: must not be negative"):
        latency_from_dict({"distribution": "normal", "mean": 0.05, "stdev": -1})
    with pytest.raises(ValueError, match=r"latency\.mean: expected seconds"):
        latency_from_dict({"distribution": "normal", "mean": "soon", "stdev": 1})
