"""Crash safety of the durable log with real processes: SIGKILL a writer at random points.

A writer subprocess loops over group-commit batches (new readings, identical re-reads of
the last ones, an event, raw frames, now and then an ack) and prints each batch's seq range
only after COMMIT has returned. The test kills it at a seeded random moment (sometimes
while it is still opening the file), then opens the log itself and checks what the issue
asks: integrity ok, every reported seq present with its reading, no duplicate natural key,
seqs gapless from 1 to the highest. One database is reused across all kills, so every run
starts from the state the previous kill left.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from edge_agent.store import EdgeLog
from edge_agent.store.records import micros_text

ROOT = Path(__file__).resolve().parent.parent
BASE = datetime(2026, 1, 1, tzinfo=UTC)
METERS = 32

# A zygote: imports once, then forks one writer per kill so each run starts in a few ms.
# Forking is safe here because the zygote never opens the database (a SQLite connection must
# not cross a fork); each child opens its own. Lines go out with one os.write each, which a
# pipe keeps whole, so a kill never leaves half a line.
ZYGOTE = """
import os, random, sys, time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from edge_agent.store import EdgeLog

BASE = datetime(2026, 1, 1, tzinfo=UTC)

def key(i):
    # reading number i -> (meter, period, value): the value is a function of the key
    return f"{i % 32:012d}", BASE + timedelta(minutes=15 * (i // 32)), Decimal(i) / 1000

def say(text):
    os.write(1, text.encode())

def writer(path, seed):
    rng = random.Random(seed)
    log = EdgeLog(path, check='quick')  # the parent runs the full check after each kill
    (k,) = log._conn.execute("SELECT count(*) FROM records WHERE type = 0").fetchone()
    say("ready\\n")
    while True:
        size = rng.randint(1, 32)
        with log.batch() as b:
            for i in range(max(0, k - 3), k):  # a re-read of the last values: duplicates
                meter, period, value = key(i)
                assert b.add_reading(meter, "1-0:1.8.0", period, value, "kWh",
                                     read_ts=period, source="backfill", kind="curve") is None
            for i in range(k, k + size):
                meter, period, value = key(i)
                b.add_reading(meter, "1-0:1.8.0", period, value, "kWh", read_ts=period,
                              source="scheduled", kind="curve")
            if rng.random() < 0.3:
                b.add_event(None, "bus.cycle", {"k": k}, period)
            b.add_raw_frame("bus1", "rx", "68AA16", period)
        k += size
        say(f"{b.first_seq} {b.last_seq}\\n")  # only after COMMIT returned
        if rng.random() < 0.1:
            log.acknowledge(b.first_seq)
        time.sleep(rng.uniform(0, 0.003))  # the bus's turn: keeps the file small, kills vary

while True:
    request = sys.stdin.readline()
    if not request:
        break
    path, seed = request.split()
    pid = os.fork()
    if pid == 0:
        try:
            writer(path, int(seed))
        finally:
            os._exit(1)
    say(f"pid {pid}\\n")
    _, status = os.waitpid(pid, 0)
    say(f"exit {status}\\n")
"""


def expected(i: int) -> tuple[str, str, Decimal]:
    period = BASE + timedelta(minutes=15 * (i // METERS))
    return f"{i % METERS:012d}", period.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), Decimal(i) / 1000


def crash_loop(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "edge.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    verified_seq = 0
    checked_reading = 0
    committed_batches = 0
    last_ack = 0
    with (tmp_path / "zygote.err").open("w") as errors:
        zygote = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
        )
    assert zygote.stdin is not None and zygote.stdout is not None
    try:
        for kill in range(kills):
            zygote.stdin.write(f"{path} {rng.randrange(2**32)}\n")
            zygote.stdin.flush()
            pid_line = zygote.stdout.readline()
            assert pid_line.startswith("pid "), (tmp_path / "zygote.err").read_text()
            if rng.random() < 0.1:  # sometimes while it opens and checks the file
                time.sleep(rng.uniform(0, 0.03))
            else:
                line = zygote.stdout.readline()
                assert line == "ready\n", (tmp_path / "zygote.err").read_text() + line
                time.sleep(rng.uniform(0, 0.04))
            os.kill(int(pid_line.split()[1]), signal.SIGKILL)
            ranges: list[tuple[int, int]] = []
            for line in iter(zygote.stdout.readline, ""):
                if line.startswith("exit "):
                    status = int(line.split()[1])
                    break
                if line != "ready\n":
                    first, last = map(int, line.split())
                    ranges.append((first, last))
            assert os.WIFSIGNALED(status), (tmp_path / "zygote.err").read_text()
            assert os.WTERMSIG(status) == signal.SIGKILL
            committed_batches += len(ranges)
            verified_seq, checked_reading, last_ack = verify(
                path, kill, ranges, verified_seq, checked_reading, last_ack
            )
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=10)
    assert committed_batches > kills  # the kills landed while batches were committing


def verify(
    path: Path,
    kill: int,
    ranges: list[tuple[int, int]],
    verified_seq: int,
    checked_reading: int,
    last_ack: int,
) -> tuple[int, int, int]:
    """Open the log as the restarted agent would and check the issue's four promises."""
    with EdgeLog(path) as log:
        assert log.integrity == "ok", f"kill {kill}: {log.integrity}"
        assert log.quarantined_to is None
        conn = log._conn
        count, low, high = conn.execute(
            "SELECT count(*), min(seq), max(seq) FROM records"
        ).fetchone()
        high = high or 0
        if count:  # gapless: nothing in this test deletes or corrects
            assert (low, count) == (1, high), f"kill {kill}: seqs are not gapless"
        assert log.last_seq() == high
        for first, last in ranges:
            assert 1 <= first <= last <= high, f"kill {kill}: committed seq {last} is lost"
        assert last_ack <= log.acked_seq() <= high, f"kill {kill}: the ack went back"
        (dupes,) = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM records WHERE type = 0 "
            "GROUP BY data_ts, meter, obis HAVING count(*) > 1)"
        ).fetchone()
        assert dupes == 0, f"kill {kill}: duplicate natural keys"
        # every new reading is there once, with the value of its key, in key order
        rows = conn.execute(
            "SELECT meter, data_ts, value FROM records WHERE type = 0 AND seq > ? ORDER BY seq",
            (verified_seq,),
        ).fetchall()
        for meter, data_ts, value in rows:
            got = (meter, micros_text(data_ts), Decimal(value))
            assert got == expected(checked_reading), f"kill {kill}"
            checked_reading += 1
        (readings,) = conn.execute("SELECT count(*) FROM records WHERE type = 0").fetchone()
        assert readings == checked_reading
        return high, checked_reading, log.acked_seq()


def test_sigkill_during_group_commit(tmp_path: Path) -> None:
    crash_loop(tmp_path, kills=200, seed=20261129)


@pytest.mark.slow
def test_sigkill_during_group_commit_slow(tmp_path: Path) -> None:
    crash_loop(tmp_path, kills=1000, seed=645698)
