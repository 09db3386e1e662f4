"""The bus master over real lines (pty and TCP from the simulator): timing, matching,
priorities, quarantine, echo, counters and the frame trace."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import replace
from decimal import Decimal

import pytest
from test_edge_bus_helpers import (
    FAST_POLICY,
    address_645,
    bus_config,
    model_meter,
    responders_645,
    served,
)

from edge_agent.bus import (
    BusMaster,
    Dlt645Match,
    Line,
    ModbusMatch,
    Outcome,
    Priority,
    Transaction,
    TransactionResult,
)
from firmware_sim.faults import FaultPlan
from firmware_sim.responders import Dlt645Responder, ModbusResponder
from firmware_sim.wiretime import WireTime
from shared_protocol import dlt645, modbus

LISTENS = ["pty", "tcp://127.0.0.1:0"]


def read_tx(address: str, di: int = 0x0001FF00) -> Transaction:
    request = dlt645.encode_frame(dlt645.read_request(address, di))
    return Transaction(address, request, Dlt645Match(address, 0x11, di), label=f"read {di:08X}")


def energy(result: TransactionResult) -> Decimal:
    assert isinstance(result.reply, dlt645.Frame)
    value = dlt645.decode_read_response(result.reply).values[0].value
    assert isinstance(value, Decimal)
    return value


def plan(*rules: dict[str, object], seed: int = 1) -> FaultPlan:
    return FaultPlan.from_dict({"seed": seed, "faults": list(rules)})


def static_meters(count: int) -> list[Dlt645Responder]:
    """Meters without a clock: their registers stay put, so every value is exact."""
    return [Dlt645Responder(model_meter(address_645(i), seed=i)) for i in range(1, count + 1)]


def truth(responder: Dlt645Responder) -> Decimal:
    return responder.meter.snapshot().import_kwh()


# ---------------------------------------------------------------- lines


@pytest.mark.parametrize("listen", LISTENS)
def test_reads_each_meter_over_a_real_line(listen: str) -> None:
    meters = static_meters(3)
    with served(meters, "dlt645", listen) as (master, _):
        for responder in meters:
            result = master.transact(read_tx(responder.meter.address))
            assert result.outcome is Outcome.OK
            assert result.attempts == 1
            assert energy(result) == truth(responder)
            assert result.tx_hex[0].startswith("FE FE FE FE 68")
            assert "68" in result.rx_hex
            assert result.latency_s is not None
        assert master.counters.tx_frames == master.counters.rx_frames == 3


def test_silent_meter_times_out_without_closing_the_port() -> None:
    meters = static_meters(1)
    with served(meters, "dlt645", "pty") as (master, _):
        started = time.monotonic()
        result = master.transact(read_tx("000000000099"))
        assert result.outcome is Outcome.TIMEOUT
        # never heard: the bus's response timeout (300 ms) + reply wire time, one attempt
        assert result.attempts == 1
        assert 0.25 < time.monotonic() - started < 0.6
        assert master.transact(read_tx(meters[0].meter.address)).ok
        assert master.counters.reopens == 0 and master.counters.io_errors == 0


def test_kernel_rs485_mode_refused_by_a_pty_is_counted_and_the_line_works() -> None:
    meters = static_meters(1)
    with served(meters, "dlt645", "pty", rs485_kernel_mode=True) as (master, _):
        assert master.transact(read_tx(meters[0].meter.address)).ok
        assert master.stats()["rs485_mode_refused"] == 1


# ---------------------------------------------------------------- queue


def test_on_demand_jumps_ahead_of_queued_backfill() -> None:
    meters = static_meters(4)
    with served(meters, "dlt645", "pty") as (master, _):
        order: list[str] = []
        lock = threading.Lock()

        def note(name: str) -> None:
            def done(_: Future[TransactionResult]) -> None:
                with lock:
                    order.append(name)

            return done  # type: ignore[return-value]

        # keep the worker busy with a silent meter so the queue fills up behind it
        blocker = master.submit(read_tx("000000000099"), Priority.BACKFILL)
        futures = []
        for index in range(20):
            future = master.submit(read_tx(address_645(1 + index % 4)), Priority.BACKFILL)
            future.add_done_callback(note(f"backfill-{index}"))
            futures.append(future)
        scheduled = master.submit(read_tx(address_645(2)), Priority.SCHEDULED)
        scheduled.add_done_callback(note("scheduled"))
        urgent = master.submit(read_tx(address_645(3)), Priority.ON_DEMAND)
        urgent.add_done_callback(note("on-demand"))
        for future in [blocker, *futures, scheduled, urgent]:
            future.result(10)
        assert order[0] == "on-demand"
        assert order[1] == "scheduled"
        # FIFO within a priority
        assert order[2:] == [f"backfill-{i}" for i in range(20)]


# ---------------------------------------------------------------- matching


def test_wrong_address_reply_is_counted_and_never_accepted() -> None:
    meters = static_meters(2)
    faults = {meters[0].device_id: plan({"kind": "wrong_address"})}
    with served(meters, "dlt645", "pty", per_device_faults=faults) as (master, _):
        result = master.transact(read_tx(meters[0].meter.address))
        assert result.outcome is Outcome.TIMEOUT
        assert result.reply is None
        assert result.wrong_address >= 1
        assert master.counters.wrong_address >= 1
        assert master.transact(read_tx(meters[1].meter.address)).ok


def test_bad_checksum_is_retried_and_counted() -> None:
    meters = static_meters(1)
    faults = {meters[0].device_id: plan({"kind": "bad_checksum", "first": 1})}
    with served(meters, "dlt645", "pty", per_device_faults=faults) as (master, _):
        # the first good read puts the meter in good standing
        first = master.transact(read_tx(meters[0].meter.address))
        assert first.outcome is Outcome.OK and first.attempts == 2
        assert master.counters.checksum_errors == 1
        assert master.counters.retries == 1
        # retrying a corrupted reply does not wait out the whole timeout
        assert first.duration_s < 0.3


def test_abnormal_reply_is_an_answer_not_a_failure() -> None:
    meters = static_meters(1)
    with served(meters, "dlt645", "pty") as (master, _):
        result = master.transact(read_tx(meters[0].meter.address, 0x0001FF0D))
        assert result.outcome is Outcome.ABNORMAL
        assert "no requested data" in result.detail
        assert result.code == 0x02
        assert master.health(meters[0].meter.address).failures == 0


def test_late_reply_lands_nowhere_but_its_own_meter() -> None:
    meters = static_meters(2)
    faults = {meters[0].device_id: plan({"kind": "late", "delay": 0.45})}
    with served(meters, "dlt645", "pty", per_device_faults=faults, retries=0) as (master, _):
        late = master.transact(read_tx(meters[0].meter.address))
        assert late.outcome is Outcome.TIMEOUT
        for _ in range(5):
            result = master.transact(read_tx(meters[1].meter.address))
            assert result.ok and energy(result) == truth(meters[1])
        time.sleep(0.3)
        result = master.transact(read_tx(meters[1].meter.address))
        assert result.ok and energy(result) == truth(meters[1])
        counters = master.counters
        assert counters.stale_flushed_bytes + counters.wrong_address * 20 > 0


def test_echo_of_our_request_is_discarded_on_a_modbus_line() -> None:
    responder = ModbusResponder(model_meter(address_645(7), seed=7), unit_id=7, model="sdm120")
    faults = {responder.device_id: plan({"kind": "echo"})}
    with served([responder], "modbus-rtu", "pty", per_device_faults=faults, echo=True) as (
        master,
        _,
    ):
        request = modbus.build_read_request(7, 4, 0x0000, 2)
        result = master.transact(Transaction("7", request.raw, ModbusMatch(7, 4, 2)))
        assert result.ok
        assert master.counters.echo_bytes == len(request.raw)
        assert master.counters.bad_frames == 0


def test_modbus_exception_is_reported() -> None:
    responder = ModbusResponder(model_meter(address_645(7), seed=7), unit_id=7, model="sdm120")
    with served([responder], "modbus-rtu", "tcp://127.0.0.1:0") as (master, _):
        request = modbus.build_read_request(7, 4, 0x0001, 1)  # half a float
        result = master.transact(Transaction("7", request.raw, ModbusMatch(7, 4, 1)))
        assert result.outcome is Outcome.EXCEPTION
        assert result.code == 2


# ---------------------------------------------------------------- quarantine


def test_dead_meter_is_quarantined_and_recovers_within_one_probe_period() -> None:
    meters = static_meters(2)
    dead = meters[0].meter.address
    faults = {meters[0].device_id: plan({"kind": "no_answer", "first": 3})}
    with served(meters, "dlt645", "pty", per_device_faults=faults) as (master, _):
        assert master.transact(read_tx(dead)).outcome is Outcome.TIMEOUT  # reply 1
        assert master.transact(read_tx(dead)).outcome is Outcome.TIMEOUT  # reply 2
        assert master.is_quarantined(dead)
        assert master.counters.quarantined_meters == 1
        # while quarantined it costs nothing on the line
        frames = master.counters.tx_frames
        for _ in range(10):
            assert master.transact(read_tx(dead)).outcome is Outcome.QUARANTINED
        assert master.counters.tx_frames == frames
        assert master.transact(read_tx(meters[1].meter.address)).ok
        # the probe after one period finds it still silent (reply 3): period doubles
        time.sleep(FAST_POLICY.probe_interval)
        assert master.transact(read_tx(dead)).outcome is Outcome.TIMEOUT
        back = time.monotonic()
        period = master.health(dead).probe_interval
        # it answers again now; poll as a task would
        while True:
            result = master.transact(read_tx(dead))
            if result.ok:
                break
            assert result.outcome is Outcome.QUARANTINED
            time.sleep(0.02)
        assert time.monotonic() - back <= period + 0.2
        assert not master.is_quarantined(dead)
        assert master.counters.quarantined_meters == 0
        assert energy(result) == truth(meters[0])


def test_adaptive_timeout_shrinks_for_a_fast_meter() -> None:
    meters = static_meters(1)
    with served(meters, "dlt645", "pty") as (master, _):
        for _ in range(5):
            assert master.transact(read_tx(meters[0].meter.address)).ok
        health = master.health(meters[0].meter.address)
        assert health.latency_ewma is not None
        assert health.timeout(master.policy, 0.3) == pytest.approx(
            FAST_POLICY.min_response_timeout, abs=0.05
        )


# ---------------------------------------------------------------- the port


def test_port_that_drops_is_reopened() -> None:
    meters = static_meters(1)
    with served(meters, "dlt645", "tcp://127.0.0.1:0") as (master, sim):
        address = meters[0].meter.address
        assert master.transact(read_tx(address)).ok
        host, port = sim.transport.host, sim.transport.port
        # a second client replaces ours (the converter closes our socket), then leaves
        intruder = socket.create_connection((host, port))
        time.sleep(0.1)
        intruder.close()
        outcomes = [master.transact(read_tx(address)).outcome for _ in range(6)]
        assert outcomes[-1] is Outcome.OK
        assert Outcome.IO_ERROR in outcomes or master.counters.reopens == 0
        assert master.counters.reopens >= (1 if Outcome.IO_ERROR in outcomes else 0)


def test_unopenable_port_fails_transactions_with_io_error_and_backs_off() -> None:
    master = BusMaster(bus_config("/dev/does-not-exist"), policy=FAST_POLICY)
    with master:
        results = [master.transact(read_tx(address_645(1))) for _ in range(3)]
    assert all(r.outcome is Outcome.IO_ERROR for r in results)
    assert master.counters.io_errors == 3


# ---------------------------------------------------------------- observability


def test_trace_ring_and_stats() -> None:
    meters = static_meters(2)
    with served(meters, "dlt645", "pty") as (master, _):
        for responder in meters * 3:
            master.transact(read_tx(responder.meter.address))
        trace = master.trace()
        assert [e.direction for e in trace[:2]] == ["tx", "rx"]
        assert trace[0].hex.startswith("FE FE FE FE 68 01 00")
        assert trace[0].at.tzinfo is not None
        only = master.trace(meters[1].meter.address)
        assert only and all(e.meter == meters[1].meter.address for e in only)
        stats = master.stats()
        assert stats["tx_frames"] == 6 and stats["rx_frames"] == 6
        assert stats["tx_bytes"] == 6 * 20
        assert stats["timeouts"] == 0 and stats["bus"] == "rs485-1"


def test_trace_ring_is_bounded() -> None:
    meters = static_meters(1)
    with served(meters, "dlt645", "pty") as (master, _):
        small = master._trace.maxlen
        for _ in range(small):
            master.transact(read_tx(meters[0].meter.address))
        assert len(master.trace()) == small


def test_line_needs_open_before_use() -> None:
    line = Line(bus_config("/dev/null"))
    assert not line.is_open


def test_stopped_master_refuses_work() -> None:
    master = BusMaster(bus_config("/dev/does-not-exist"))
    master.start()
    master.stop()
    with pytest.raises(RuntimeError):
        master.submit(read_tx(address_645(1)))


def test_responders_helper_builds_distinct_meters() -> None:
    meters = responders_645(3, clock=None)  # type: ignore[arg-type]
    assert len({truth(m) for m in meters}) == 3


def test_truncated_reply_is_cut_at_the_inter_byte_gap_and_retried() -> None:
    meters = static_meters(1)
    faults = {meters[0].device_id: plan({"kind": "truncated", "first": 1})}
    with served(meters, "dlt645", "pty", per_device_faults=faults) as (master, _):
        result = master.transact(read_tx(meters[0].meter.address))
        assert result.outcome is Outcome.OK and result.attempts == 2
        assert result.noise_bytes > 0
        assert energy(result) == truth(meters[0])


def test_public_names_are_pinned() -> None:
    import edge_agent.bus
    import edge_agent.drivers

    assert sorted(edge_agent.bus.__all__) == [
        "BusCounters",
        "BusMaster",
        "Dlt645Match",
        "Dlt698Match",
        "Line",
        "LineError",
        "LineEvent",
        "ListenOnly",
        "Match",
        "MeterHealth",
        "ModbusMatch",
        "Outcome",
        "Priority",
        "ReplyMatcher",
        "TimingPolicy",
        "TraceEntry",
        "Transaction",
        "TransactionResult",
        "Verdict",
        "new_parser",
    ]
    assert {
        "Reading",
        "ReadFailed",
        "driver_for",
        "scan_645",
        "sync_clock_broadcast",
        "Dlt645Driver",
        "Dlt698Driver",
        "ModbusDriver",
    } <= set(edge_agent.drivers.__all__)
    with pytest.raises(ValueError, match="no driver"):
        edge_agent.drivers.driver_for("iec62056", BusMaster(bus_config("/dev/null")))


@pytest.mark.parametrize("line_echo", [False, True])
def test_detect_echo(line_echo: bool) -> None:
    wire = WireTime(baud=115200, echo=line_echo)
    with served(static_meters(1), "dlt645", "pty", wire=wire) as (master, _):
        probe = dlt645.encode_frame(dlt645.read_request("999999999998", 0x04000401))
        assert master.detect_echo(probe, "dlt645") is line_echo


def test_reconfigure_applies_timing_and_reopens_for_port_settings() -> None:
    meters = static_meters(1)
    with served(meters, "dlt645", "pty") as (master, _):
        address = meters[0].meter.address
        assert master.transact(read_tx(address)).ok
        master.reconfigure(replace(master.config, retries=0, response_timeout_ms=150))
        assert master.transact(read_tx(address)).ok
        assert master.config.retries == 0 and master.counters.reopens == 0
        master.reconfigure(replace(master.config, baud=9600))
        assert master.transact(read_tx(address)).ok
        assert master.counters.reopens == 1


# ---------------------------------------------------------------- CPU: the caller's thread


def test_transact_runs_on_the_callers_thread_and_queued_requests_wait_for_it() -> None:
    meters = static_meters(3)
    with served(meters, "dlt645", "pty") as (master, _):
        seen: list[str] = []
        real = master._serve

        def serve(item: object) -> TransactionResult:
            seen.append(threading.current_thread().name)
            return real(item)  # type: ignore[arg-type]

        master._serve = serve  # type: ignore[method-assign]
        assert master.transact(read_tx(address_645(1))).ok
        assert seen == [threading.current_thread().name]  # no hand-off to the worker
        # while a caller holds the line (a silent meter: a whole timeout), a request
        # queued by another thread waits, and the worker serves it afterwards
        holder = threading.Thread(target=master.transact, args=(read_tx("000000000099"),))
        holder.start()
        deadline = time.monotonic() + 5
        while not master._busy and time.monotonic() < deadline:
            time.sleep(0.001)
        urgent = master.submit(read_tx(address_645(2)), Priority.ON_DEMAND)
        assert not urgent.done()
        holder.join(5)
        assert urgent.result(5).ok
        assert seen[-1] == f"bus-{master.name}"
        assert energy(urgent.result()) == truth(meters[1])


def test_stop_waits_for_a_callers_transaction() -> None:
    meters = static_meters(1)
    with served(meters, "dlt645", "pty") as (master, _):
        results: list[TransactionResult] = []
        holder = threading.Thread(
            target=lambda: results.append(master.transact(read_tx("000000000099")))
        )
        holder.start()
        deadline = time.monotonic() + 5
        while not master._busy and time.monotonic() < deadline:
            time.sleep(0.001)
        master.stop()  # returns only once the line is free
        assert not master._busy
        holder.join(5)
        assert results and results[0].outcome is Outcome.TIMEOUT
        with pytest.raises(RuntimeError, match="is stopped"):
            master.transact(read_tx(address_645(1)))


# ---------------------------------------------------------------- reading a reply


def test_a_reply_is_read_in_about_two_wake_ups_once_its_size_is_known() -> None:
    """At 2 400 baud with the simulator's wire timing: the first reply of a kind is read by
    its length field (a wake-up more), later ones in one sleep after the first byte: the
    size of the first is learned, the preamble taken from the line's last reply."""
    meters = static_meters(3)
    wire = WireTime(baud=2400)
    with served(meters, "dlt645", "pty", wire=wire, baud=2400, parity="E") as (master, _):
        reads: list[int] = []
        for responder in [*meters, *meters]:
            before = sum(entry.direction == "rx" for entry in master.trace())
            result = master.transact(read_tx(responder.meter.address))
            assert result.ok and energy(result) == truth(responder)
            reads.append(sum(entry.direction == "rx" for entry in master.trace()) - before)
        assert reads[0] >= 3  # first byte, up to the L byte, the rest
        assert sum(reads[1:]) / len(reads[1:]) <= 2.5  # a straggler byte now and then
        size = master._reply_sizes[("dlt645", "read 0001FF00", len(read_tx("0").request))]
        preamble = master.health(meters[0].meter.address).preamble
        assert preamble is not None and size + preamble == len(bytes.fromhex(result.rx_hex))


def test_the_pace_estimate_follows_a_slow_sender_and_drifts_back() -> None:
    from edge_agent.bus.line import _new_pace, _remaining, frame_length

    char = 0.004583
    slow = _new_pace(char, char, short=True, left=5, received=20, took=19 * 0.005)
    assert char < slow < 0.005  # a quarter of the way to what the frame showed
    assert _new_pace(char, char, short=True, left=5, received=3, took=1.0) == char  # too few
    capped = _new_pace(char, char, short=True, left=5, received=20, took=19 * 1.0)
    assert capped <= char + (1.25 * char - char) / 4 + 1e-12  # a pause is not a pace
    back = _new_pace(slow, char, short=False, left=0, received=30, took=0.1)
    assert char < back < slow
    # a 645 reply: 4 FE, then 68 + address…: before the L byte the hint decides
    length = frame_length("dlt645")
    assert length is not None
    head = bytearray(bytes.fromhex("FEFEFEFE6811"))
    assert _remaining(head, 2, length, None) == 12 + 4 - 6  # the shortest frame
    assert _remaining(head, 2, length, 30) == 30 - 6
