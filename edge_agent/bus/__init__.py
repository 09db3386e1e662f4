"""The RS-485 side of the edge agent: one :class:`BusMaster` owns each line.

line      Line: a pyserial port (device, pty, socket://, rfc2217://) with deadlines
framing   which frame is the reply: per-protocol matchers, outcomes
master    BusMaster: priority queue, timing, retries, quarantine, counters, trace
"""

from edge_agent.bus.framing import (
    Dlt645Match,
    Dlt698Match,
    ListenOnly,
    Match,
    ModbusMatch,
    Outcome,
    ReplyMatcher,
    Verdict,
    new_parser,
)
from edge_agent.bus.line import Line, LineError, LineEvent
from edge_agent.bus.master import (
    BusCounters,
    BusMaster,
    MeterHealth,
    Priority,
    TimingPolicy,
    TraceEntry,
    Transaction,
    TransactionResult,
)

__all__ = [
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
