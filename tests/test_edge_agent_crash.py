"""Crash safety of the agent's collection (issue 4): SIGKILL it at random points.

A child process is the agent's collection side: two simulated 645-2007 lines (8 meters
each, the simulator's meter model, served from the child's own event loop on real ptys),
a ``BusMaster`` per line, the ``Collector`` with its ``Ledger`` and the ``EdgeLog`` — the
real pieces; the buses run in parallel, so two threads commit into the log. The child
loops over seeded random work: collect a daily freeze (a random past day, all meters or
some, scheduled or on demand), 补抄, ``run_due``. Its log is wrapped so that, only after
``COMMIT`` has returned, it prints every reading the batch stored (seq and natural key) —
one ``os.write`` per line, which a pipe keeps whole, so a kill never leaves half a line.

The test kills it at a seeded random moment (sometimes while it is still opening the
files), then opens the files as the restarted agent would and checks after every kill:

- ``PRAGMA integrity_check`` is ok for the log (opened with the full check) and the ledger;
- every reading the child reported committed is there, with its value;
- no duplicate natural key (meter, OBIS, meter time);
- seqs gapless from 1 to the highest (nothing here deletes; no correction ever happens
  because a meter's freeze never changes), and every reported seq is ≤ the highest;
- the ledger agrees with the log: every slot marked ``got`` has the meter's full frozen
  record in the log (the values of the simulator's model for that freeze).

The files live on across kills (each run starts from what the previous kill left), and a
fresh set is started every ``GENERATION`` kills so new readings keep being written: a
filled log only sees identical re-reads, which take no seq.

Start-up cost is paid once: a zygote imports everything and builds the meter models, then
forks one child per kill. Forking is safe because the zygote holds no thread, no SQLite
connection and no event loop; each child makes its own.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from test_edge_bus_helpers import address_645, model_meter
from test_edge_tasks_helpers import ZONE, freeze_values, utc_text

from edge_agent.archive import Meter, MeterArchive
from edge_agent.store import EdgeLog
from edge_agent.store.obis_codes import OBIS_CODES
from edge_agent.store.records import micros_text
from edge_agent.tasks import Ledger

ROOT = Path(__file__).resolve().parent.parent
BUSES = ("rs485-1", "rs485-2")
PER_BUS = 8
GENERATION = 10  # kills per set of files
DAYS = [date(2026, 1, day) for day in range(6, 11)]  # the models' daily freezes

ZYGOTE = """
import os, random, sys, time
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import date
from pathlib import Path

sys.path.insert(0, {tests!r})
from test_edge_bus_helpers import address_645, model_meter, served, sim_clock
from test_edge_tasks_helpers import ZONE, edge_config, tasks_config
from edge_agent.bus import TimingPolicy
from edge_agent.archive import MeterArchive
from edge_agent.store import EdgeLog
from edge_agent.tasks import Collector, Ledger
from firmware_sim.responders import Dlt645Responder

BUSES = {buses!r}
PER_BUS = {per_bus}
DAYS = [date(2026, 1, day) for day in range(6, 11)]
POLICY = TimingPolicy(min_response_timeout=0.1, probe_interval=0.01, max_probe_interval=0.02)
MODELS = [model_meter(address_645(i), seed=i) for i in range(1, len(BUSES) * PER_BUS + 1)]


def say(text):
    os.write(1, text.encode())


class ReportingLog(EdgeLog):
    \"\"\"The real log; each batch's stored readings are printed once COMMIT returned.\"\"\"

    @contextmanager
    def batch(self):
        stored = []
        with super().batch() as batch:
            add = batch.add_reading

            def add_reading(meter, obis, period, value, unit, **fields):
                seq = add(meter, obis, period, value, unit, **fields)
                if seq is not None:
                    stamp = period.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                    stored.append(f"r {{seq}} {{meter}} {{obis}} {{stamp}} {{value}}\\n")
                return seq

            batch.add_reading = add_reading
            yield batch
        # COMMIT has returned: the batch is durable
        say(f"b {{batch.first_seq}} {{batch.last_seq}}\\n")
        for line in stored:
            say(line)


def agent(directory, seed):
    rng = random.Random(seed)
    directory = Path(directory)
    clock = sim_clock()
    with ExitStack() as stack:
        masters = {{}}
        for index, name in enumerate(BUSES):
            responders = [
                Dlt645Responder(model, clock) for model in MODELS[index * PER_BUS:][:PER_BUS]
            ]
            master, _ = stack.enter_context(
                served(responders, "dlt645", "pty", policy=POLICY, response_timeout_ms=150)
            )
            master.config = replace(master.config, name=name)
            masters[name] = master
        config = replace(
            edge_config(masters[BUSES[0]], tasks_config("daily_frozen")),
            buses=tuple(m.config for m in masters.values()),
        )
        archive = stack.enter_context(MeterArchive(directory / "archive.db"))
        log = stack.enter_context(ReportingLog(directory / "edge.db", check="quick"))
        ledger = stack.enter_context(Ledger(directory / "ledger.db", zone=ZONE))
        collector = Collector(config, archive, log, masters, ledger, now=clock.now)
        say("ready\\n")
        keys = [model.address for model in MODELS]
        while True:
            choice = rng.random()
            if choice < 0.6:
                meters = None if rng.random() < 0.5 else rng.sample(keys, rng.randint(1, 6))
                source = rng.choice(("scheduled", "on_demand"))
                collector.collect("daily_frozen", rng.choice(DAYS), meters, source=source)
            elif choice < 0.8:
                collector.backfill(days=rng.randint(1, 4))
            else:
                collector.run_due()


while True:
    request = sys.stdin.readline()
    if not request:
        break
    directory, seed = request.split()
    pid = os.fork()
    if pid == 0:
        try:
            agent(directory, int(seed))
        finally:
            os._exit(1)
    say(f"pid {{pid}}\\n")
    _, status = os.waitpid(pid, 0)
    say(f"exit {{status}}\\n")
"""


@dataclass
class Generation:
    """One set of files and what the children reported committed into it."""

    directory: Path
    readings: dict[tuple[str, str, str], Decimal] = field(default_factory=dict)
    high_reported: int = 0
    batches: int = 0


def new_generation(root: Path, number: int) -> Generation:
    directory = root / f"gen{number:03d}"
    directory.mkdir()
    with MeterArchive(directory / "archive.db") as archive:
        for index in range(len(BUSES) * PER_BUS):
            bus = BUSES[index // PER_BUS]
            archive.add(Meter(address=address_645(index + 1), protocol="dlt645-2007", bus=bus))
    return Generation(directory)


def expected_freezes() -> dict[tuple[str, str], dict[str, Decimal]]:
    """(meter, slot UTC text) → the model's frozen values, for every day the test reads."""
    out = {}
    for index in range(1, len(BUSES) * PER_BUS + 1):
        model = model_meter(address_645(index), seed=index)
        for day in DAYS:
            instant, values = freeze_values(model, day)
            out[(model.address, utc_text(instant))] = values
    return out


def crash_loop(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    freezes = expected_freezes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    source = ZYGOTE.format(tests=str(ROOT / "tests"), buses=BUSES, per_bus=PER_BUS)
    errors_path = tmp_path / "zygote.err"
    totals = {"batches": 0, "readings": 0, "got_slots": 0, "early": 0}
    generation = new_generation(tmp_path, 0)
    with errors_path.open("w") as errors:
        zygote = subprocess.Popen(
            [sys.executable, "-c", source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
            cwd=ROOT,
        )
    assert zygote.stdin is not None and zygote.stdout is not None
    try:
        for kill in range(kills):
            if kill and kill % GENERATION == 0:
                generation = new_generation(tmp_path, kill // GENERATION)
            zygote.stdin.write(f"{generation.directory} {rng.randrange(2**32)}\n")
            zygote.stdin.flush()
            pid_line = zygote.stdout.readline()
            assert pid_line.startswith("pid "), errors_path.read_text()
            if rng.random() < 0.1:  # sometimes while it opens the lines and the files
                totals["early"] += 1
                time.sleep(rng.uniform(0, 0.03))
            else:
                line = zygote.stdout.readline()
                assert line == "ready\n", errors_path.read_text() + line
                time.sleep(rng.uniform(0, 0.12))
            os.kill(int(pid_line.split()[1]), signal.SIGKILL)
            status = None
            for line in iter(zygote.stdout.readline, ""):
                if line.startswith("exit "):
                    status = int(line.split()[1])
                    break
                parse_line(line, generation)
            assert status is not None, errors_path.read_text()
            assert os.WIFSIGNALED(status), errors_path.read_text()
            assert os.WTERMSIG(status) == signal.SIGKILL, errors_path.read_text()
            got_slots = verify(generation, freezes, kill)
            totals["batches"] += generation.batches
            generation.batches = 0
            if kill % GENERATION == GENERATION - 1 or kill == kills - 1:
                totals["readings"] += len(generation.readings)
                totals["got_slots"] += got_slots
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=10)
    print(f"{kills} kills: {totals}")
    # the kills landed while the agent was committing, not only before it started
    assert totals["batches"] > kills // 2


def parse_line(line: str, generation: Generation) -> None:
    kind, *fields = line.split()
    if kind == "ready":
        return
    if kind == "b":
        generation.batches += 1
        if fields[1] != "None":
            generation.high_reported = max(generation.high_reported, int(fields[1]))
        return
    assert kind == "r", line
    seq, meter, obis, stamp, value = fields
    key = (meter, obis, stamp)
    assert key not in generation.readings or generation.readings[key] == Decimal(value), line
    generation.readings[key] = Decimal(value)
    generation.high_reported = max(generation.high_reported, int(seq))


def verify(
    generation: Generation, freezes: dict[tuple[str, str], dict[str, Decimal]], kill: int
) -> int:
    """Open the files as the restarted agent would; returns how many slots are got."""
    directory = generation.directory
    where = f"kill {kill} ({directory.name})"
    if not (directory / "edge.db").exists():
        assert not generation.readings, f"{where}: the log is gone"
        return 0
    with EdgeLog(directory / "edge.db") as log:
        assert log.integrity == "ok", f"{where}: {log.integrity}"
        assert log.quarantined_to is None, where
        conn = log._conn
        count, low, high = conn.execute(
            "SELECT count(*), min(seq), max(seq) FROM records"
        ).fetchone()
        high = high or 0
        if count:
            assert (low, count) == (1, high), f"{where}: seqs are not gapless"
        assert log.last_seq() == high, where
        assert generation.high_reported <= high, f"{where}: committed seq lost"
        (dupes,) = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM records WHERE type = 0 "
            "GROUP BY data_ts, meter, obis HAVING count(*) > 1)"
        ).fetchone()
        assert dupes == 0, f"{where}: duplicate natural keys"
        stored: dict[tuple[str, str, str], Decimal] = {
            (meter, OBIS_CODES[obis], micros_text(data_ts)): Decimal(value)
            for meter, obis, data_ts, value in conn.execute(
                "SELECT meter, obis, data_ts, value FROM records WHERE type = 0"
            )
        }
    for key, value in generation.readings.items():
        assert stored.get(key) == value, f"{where}: committed reading {key} lost"
    with Ledger(directory / "ledger.db", zone=ZONE) as ledger:
        got = ledger.slots(task="daily_frozen", state="got")
    (ledger_check,) = (
        sqlite3.connect(directory / "ledger.db").execute("PRAGMA integrity_check").fetchone()
    )
    assert ledger_check == "ok", f"{where}: ledger {ledger_check}"
    for slot in got:
        stamp = utc_text(slot.slot)
        truth = freezes[(slot.meter, stamp)]
        in_log = {obis: stored.get((slot.meter, obis, stamp)) for obis in truth}
        assert in_log == truth, f"{where}: slot {slot.meter}@{stamp} is got, the log has {in_log}"
    return len(got)


def test_sigkill_during_collection(tmp_path: Path) -> None:
    crash_loop(tmp_path, kills=200, seed=20261129)


@pytest.mark.slow
def test_sigkill_during_collection_slow(tmp_path: Path) -> None:
    crash_loop(tmp_path, kills=1000, seed=645698)
