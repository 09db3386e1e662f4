"""Collection tasks: the wall-clock schedule, the expected-slot ledger with 补抄, clock discipline.

    schedule    when each task's slots fall due (pure functions of config and time)
    ledger      Ledger: expected / got / failed / exhausted per (task, meter, slot), own SQLite
    collector   Collector: runs tasks over the bus masters, writes readings to the EdgeLog
    clock       the meter-clock rules (threshold, forbidden window, daily cap)

The daemon calls :meth:`Collector.run_due` on a timer; the control socket and the CLI call
``collect``, ``backfill``, ``clock_check``, ``read_now`` and ``status``.
"""

from __future__ import annotations

from edge_agent.tasks.clock import ClockCheck, ClockDecision, decide
from edge_agent.tasks.collector import TASK_KINDS, Collector, RunReport, utc_now
from edge_agent.tasks.ledger import STATES, Ledger, MeterSummary, Slot, SuccessStats
from edge_agent.tasks.schedule import TASKS, due_slots, due_time, latest_slot, next_due

__all__ = [
    "STATES",
    "TASKS",
    "TASK_KINDS",
    "ClockCheck",
    "ClockDecision",
    "Collector",
    "Ledger",
    "MeterSummary",
    "RunReport",
    "Slot",
    "SuccessStats",
    "decide",
    "due_slots",
    "due_time",
    "latest_slot",
    "next_due",
    "utc_now",
]
