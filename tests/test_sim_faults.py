"""Fault plans: each kind does what the plan says, reproducibly by seed, for every protocol."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sim_bus_doubles import (
    Meter645,
    Meter698,
    MeterModbus,
    master_events,
    read_698_request,
    read_energy_request,
)

from firmware_sim.bus import Bus, Transmission
from firmware_sim.faults import FaultPlan
from firmware_sim.wiretime import WireTime
from shared_protocol import dlt645, dlt698, modbus
from shared_protocol.errors import ChecksumError, MalformedFrameError
from shared_protocol.stream import Discarded

A, B = "000000000001", "000000000002"


def plan(*faults: dict[str, Any], seed: int = 0) -> FaultPlan:
    return FaultPlan.from_dict({"seed": seed, "faults": list(faults)})


def meter_645(faults: FaultPlan, **bus_options: Any) -> Bus:
    bus = Bus("dlt645", **bus_options)
    bus.attach(Meter645(A), faults=faults)
    bus.attach(Meter645(B))
    return bus


def ask(bus: Bus, request: bytes | None = None) -> bytes:
    bus.feed(request or read_energy_request(A), now=0.0)
    return bus.take_due(1e9)


def clean_reply() -> bytes:
    return ask(Bus("dlt645", [Meter645(A)]))


# ---------------------------------------------------------------- schedules


def test_no_answer_for_the_first_n_replies() -> None:
    bus = meter_645(plan({"kind": "no_answer", "first": 2}))
    assert [ask(bus) == b"" for _ in range(4)] == [True, True, False, False]
    assert bus.counters.faults_injected == 2
    assert bus.counters.silences == 2


def test_between_counts_only_this_meters_replies() -> None:
    bus = meter_645(plan({"kind": "no_answer", "between": [2, 3]}))
    ask(bus, read_energy_request(B))  # another meter's traffic does not advance the count
    assert [ask(bus) == b"" for _ in range(5)] == [False, True, True, False, False]


def test_intermittent_is_seeded() -> None:
    def pattern(seed: int) -> list[bool]:
        bus = meter_645(plan({"kind": "intermittent", "probability": 0.5}, seed=seed))
        return [ask(bus) == b"" for _ in range(40)]

    first = pattern(11)
    assert first == pattern(11)
    assert first != pattern(12)
    assert 8 < sum(first) < 32


def test_probability_applies_to_any_fault() -> None:
    bus = meter_645(plan({"kind": "bad_checksum", "probability": 0.3}, seed=5))
    outcomes = [ask(bus) == clean_reply() for _ in range(50)]
    assert 5 < outcomes.count(False) < 25
    assert bus.counters.faults_injected == outcomes.count(False)


def test_a_bus_plan_applies_to_every_meter() -> None:
    bus = Bus("dlt645", [Meter645(A), Meter645(B)], faults=plan({"kind": "no_answer"}))
    assert ask(bus, read_energy_request(A)) == b""
    assert ask(bus, read_energy_request(B)) == b""
    assert bus.counters.faults_injected == 2


# ---------------------------------------------------------------- timing


def test_late_answer_adds_its_delay() -> None:
    bus = meter_645(plan({"kind": "late", "delay": 0.8}), wire=WireTime(baud=2400))
    request = read_energy_request(A)
    [reply] = bus.feed(request, now=0.0)
    assert isinstance(reply, Transmission)
    assert reply.faults == ("late",)
    assert reply.start == pytest.approx(len(request) * 11 / 2400 + 0.8, abs=1e-12)


def test_late_answer_without_wire_time() -> None:
    bus = meter_645(plan({"kind": "late", "delay": 0.5}))
    bus.feed(read_energy_request(A), now=3.0)
    assert bus.take_due(3.4) == b""
    assert bus.take_due(3.5) == clean_reply()


# ---------------------------------------------------------------- bytes


def test_garbage_before_is_skipped_by_the_masters_parser() -> None:
    bus = meter_645(plan({"kind": "garbage_before", "bytes": "00 FF 55"}))
    line = ask(bus)
    assert line == bytes.fromhex("00FF55") + clean_reply()
    discarded, frame = master_events("dlt645", line)
    assert isinstance(discarded, Discarded) and discarded.data == bytes.fromhex("00FF55")
    assert isinstance(frame, dlt645.Frame) and frame.address == A


@pytest.mark.parametrize("kind", ["garbage_before", "garbage_after"])
def test_random_garbage_is_seeded_and_never_hides_the_frame(kind: str) -> None:
    def line(seed: int) -> bytes:
        return ask(meter_645(plan({"kind": kind, "length": 6}, seed=seed)))

    assert line(1) == line(1)
    assert line(1) != line(2)
    for seed in range(30):
        data = line(seed)
        assert len(data) == len(clean_reply()) + 6
        events = master_events("dlt645", data)
        assert [type(e) for e in events] == (
            [Discarded, dlt645.Frame] if kind == "garbage_before" else [dlt645.Frame, Discarded]
        )


def test_bad_checksum_645_keeps_the_structure() -> None:
    line = ask(meter_645(plan({"kind": "bad_checksum"})))
    good = clean_reply()
    assert len(line) == len(good)
    assert [i for i in range(len(good)) if line[i] != good[i]] == [len(good) - 2]
    with pytest.raises(ChecksumError):
        dlt645.decode_frame(line)


def test_bad_checksum_698_spoils_only_the_fcs() -> None:
    bus = Bus("dlt698.45")
    bus.attach(Meter698(A), faults=plan({"kind": "bad_checksum"}))
    line = ask(bus, read_698_request(A))
    with pytest.raises(ChecksumError, match="FCS"):
        dlt698.decode_frame(line)
    dlt698.frame.decode_header(line)  # the header (and its HCS) is still right


def test_bad_checksum_modbus() -> None:
    bus = Bus("modbus-rtu")
    bus.attach(MeterModbus(3), faults=plan({"kind": "bad_checksum"}))
    line = ask(bus, modbus.build_read_request(3, 4, 0, 2).raw)
    with pytest.raises(ChecksumError):
        modbus.decode_frame(line, modbus.Direction.RESPONSE)


def test_bad_checksum_is_seeded() -> None:
    def line(seed: int) -> bytes:
        return ask(meter_645(plan({"kind": "bad_checksum"}, seed=seed)))

    assert line(7) == line(7)
    assert {line(seed) for seed in range(10)} != {line(7)}


def test_wrong_address_645_is_a_valid_frame_from_the_neighbour() -> None:
    line = ask(meter_645(plan({"kind": "wrong_address"})))
    frame = dlt645.decode_frame(line)
    assert frame.address == "000000000002"
    assert dlt645.decode_read_response(frame).values[0].value == Decimal("1234.56")


def test_wrong_address_given_in_the_plan() -> None:
    line = ask(meter_645(plan({"kind": "wrong_address", "address": "123456789012"})))
    assert dlt645.decode_frame(line).address == "123456789012"


def test_wrong_address_698_and_modbus() -> None:
    bus = Bus("dlt698.45")
    bus.attach(Meter698(A), faults=plan({"kind": "wrong_address", "address": "000000000777"}))
    frame = dlt698.decode_frame(ask(bus, read_698_request(A)))
    assert frame.address.digits == "000000000777"

    bus = Bus("modbus-rtu")
    bus.attach(MeterModbus(3), faults=plan({"kind": "wrong_address"}))
    reply = modbus.decode_frame(
        ask(bus, modbus.build_read_request(3, 3, 0, 2).raw), modbus.Direction.RESPONSE
    )
    assert (reply.unit_id, reply.registers) == (4, (1, 2))


def test_truncated_frame() -> None:
    line = ask(meter_645(plan({"kind": "truncated", "length": 9})))
    assert line == clean_reply()[:9]
    [event] = master_events("dlt645", line)
    assert isinstance(event, Discarded) and "ended inside a frame" in event.reason
    with pytest.raises(MalformedFrameError):
        dlt645.decode_frame(line)


def test_truncated_at_a_seeded_point() -> None:
    def line(seed: int) -> bytes:
        return ask(meter_645(plan({"kind": "truncated"}, seed=seed)))

    cuts = {len(line(seed)) for seed in range(20)}
    assert len(cuts) > 3
    assert all(1 <= cut < len(clean_reply()) for cut in cuts)
    assert line(4) == line(4)


def test_echo_puts_the_request_before_the_reply() -> None:
    request = read_energy_request(A)
    line = ask(meter_645(plan({"kind": "echo"})), request)
    assert line == dlt645.encode_frame(dlt645.decode_frame(request), 0) + clean_reply()
    echoed, reply = master_events("dlt645", line)
    assert isinstance(echoed, dlt645.Frame) and not echoed.control.response
    assert isinstance(reply, dlt645.Frame) and reply.control.response


def test_faults_compose_in_a_fixed_order() -> None:
    # listed "wrong" way round: truncation still applies to the re-addressed frame,
    # and garbage is added around the result
    faults = plan(
        {"kind": "garbage_after", "bytes": "EE"},
        {"kind": "truncated", "length": 12},
        {"kind": "wrong_address", "address": "000000000009"},
    )
    line = ask(meter_645(faults))
    assert line[-1:] == b"\xee"
    assert len(line) == 13
    assert dlt645.address_from_wire(line[1:7]) == "000000000009"


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"faults": [{"kind": "meltdown"}]},
            r"faults\.faults\[0\]\.kind: 'meltdown' is not one of",
        ),
        ({"faults": [{"kind": "late"}]}, r"faults\[0\]\.delay: late needs a delay"),
        ({"faults": [{"kind": "late", "delay": -1}]}, r"faults\[0\]\.delay: expected a positive"),
        ({"faults": [{"kind": "no_answer", "first": 0}]}, r"faults\[0\]\.first: expected a whole"),
        ({"faults": [{"kind": "echo", "between": [5, 2]}]}, r"faults\[0\]\.between: last \(2\)"),
        ({"faults": [{"kind": "echo", "probability": 2}]}, r"faults\[0\]\.probability"),
        ({"faults": [{"kind": "intermittent"}]}, r"faults\[0\]\.probability: intermittent needs"),
        ({"faults": [{"kind": "echo", "delay": 1}]}, r"faults\[0\]\.delay: unknown for echo"),
        (
            {"faults": [{"kind": "garbage_before", "bytes": "zz"}]},
            r"faults\[0\]\.bytes: expected hex",
        ),
        ({"faults": [{}, {"kind": "echo"}]}, r"faults\[0\]\.kind"),
        ({"seed": "x"}, r"faults\.seed: expected an integer"),
        ({"fault": []}, r"faults\.fault: unknown field"),
        ({"faults": "no_answer"}, r"faults\.faults: expected a list"),
    ],
)
def test_plan_validation_names_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaultPlan.from_dict(spec)


def test_plan_from_a_toml_table() -> None:
    import tomllib

    text = """
    seed = 7
    [[faults]]
    kind = "no_answer"
    first = 2
    [[faults]]
    kind = "late"
    delay = 0.8
    probability = 0.1
    """
    loaded = FaultPlan.from_dict(tomllib.loads(text))
    assert loaded.seed == 7
    assert [rule.kind for rule in loaded.rules] == ["no_answer", "late"]
    assert loaded.rules[1].probability == 0.1
