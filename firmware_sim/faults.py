"""Wire faults: a declarative, seeded plan of what goes wrong with a meter's replies.

A plan is a list of rules; each rule names a fault kind, its parameters and when it fires.
The bus asks the plan about every reply a meter produces (``apply``) and gets back the
bytes to put on the line (or silence) and any extra delay. Faults work on bytes, so one
plan serves every protocol; where a fault must keep the frame's structure (bad checksum,
wrong address) the protocol's own codec re-encodes it.

Kinds (parameters in brackets)::

    no_answer                 the meter stays silent
    intermittent [p]          silent with probability p (any rule can also take probability)
    late [delay]              the reply starts ``delay`` seconds later
    garbage_before [length|bytes]   line noise before the reply
    garbage_after  [length|bytes]   line noise after the reply
    bad_checksum              645 CS / 698 FCS / Modbus CRC wrong, everything else right
    wrong_address [address]   the reply comes from another address (default: ours + 1)
    truncated [length]        only the first ``length`` bytes (default: a seeded cut)
    echo                      the meter's transceiver echoes the request before its reply

When a rule fires (all given conditions must hold; none given = always)::

    first = N                 the meter's first N replies (a bus plan: the bus's first N)
    between = [a, b]          its replies a..b (1-based, inclusive)
    probability = p           a seeded coin with P(fire) = p

Example, as a TOML config carries it::

    {"seed": 7, "faults": [
        {"kind": "no_answer", "first": 2},
        {"kind": "bad_checksum", "between": [5, 6]},
        {"kind": "late", "delay": 0.8, "probability": 0.1},
    ]}

Determinism: the draw for reply *n* of rule *i* comes from a generator seeded with
``(seed, i, n)``, so the same seed gives the same bytes whatever happened before.

Byte faults apply in a fixed order whatever the listing order, because each needs the
previous one's output to make sense: wrong_address → bad_checksum → truncated →
garbage_before/after → echo.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from shared_protocol import dlt645, dlt698, modbus
from shared_protocol.errors import ProtocolError

__all__ = ["FAULT_KINDS", "FaultOutcome", "FaultPlan", "FaultRule", "FaultState"]

FAULT_KINDS: Final = (
    "no_answer",
    "intermittent",
    "late",
    "garbage_before",
    "garbage_after",
    "bad_checksum",
    "wrong_address",
    "truncated",
    "echo",
)

# The order byte faults compose in (see the module docstring).
_BYTE_ORDER: Final = (
    "wrong_address",
    "bad_checksum",
    "truncated",
    "garbage_before",
    "garbage_after",
    "echo",
)

# Which parameters each kind takes, besides the schedule (first / between / probability).
_PARAMETERS: Final[dict[str, frozenset[str]]] = {
    "no_answer": frozenset(),
    "intermittent": frozenset(),
    "late": frozenset({"delay"}),
    "garbage_before": frozenset({"length", "bytes"}),
    "garbage_after": frozenset({"length", "bytes"}),
    "bad_checksum": frozenset(),
    "wrong_address": frozenset({"address"}),
    "truncated": frozenset({"length"}),
    "echo": frozenset(),
}
_SCHEDULE: Final = frozenset({"first", "between", "probability"})

# Random garbage avoids the bytes that open a frame (68, FE, and nothing else for 645/698)
# so "garbage before" is noise the master can skip, not a false start that swallows the
# reply; put explicit ``bytes`` in the plan to test false starts.
_FRAME_OPENERS: Final = frozenset({0x68, 0xFE})


@dataclass(frozen=True)
class FaultRule:
    """One fault and when it fires."""

    kind: str
    first: int | None = None
    between: tuple[int, int] | None = None
    probability: float | None = None
    delay: float = 0.0
    length: int | None = None
    garbage: bytes | None = None
    address: str | None = None

    def fires(self, number: int, rng: random.Random) -> bool:
        """Whether the rule fires for the meter's ``number``-th reply (1-based)."""
        if self.first is not None and number > self.first:
            return False
        if self.between is not None and not self.between[0] <= number <= self.between[1]:
            return False
        return self.probability is None or rng.random() < self.probability


@dataclass(frozen=True)
class FaultOutcome:
    """What goes on the line instead of the meter's reply."""

    reply: bytes | None
    delay: float = 0.0
    applied: tuple[str, ...] = ()


@dataclass(frozen=True)
class FaultPlan:
    """Rules for one meter (or one whole bus), seeded. Build with :meth:`from_dict`."""

    rules: tuple[FaultRule, ...] = ()
    seed: int = 0

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], where: str = "faults") -> FaultPlan:
        """Validate a plain dict (a TOML table); errors name the field and the problem."""
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where}: expected a table, got {type(spec).__name__}")
        unknown = set(spec) - {"seed", "faults"}
        if unknown:
            raise ValueError(f"{where}.{sorted(unknown)[0]}: unknown field (use seed, faults)")
        seed = spec.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"{where}.seed: expected an integer, got {seed!r}")
        rules = spec.get("faults", [])
        if isinstance(rules, str | bytes) or not isinstance(rules, Sequence):
            raise ValueError(f"{where}.faults: expected a list of fault tables")
        return cls(
            tuple(_rule(rule, f"{where}.faults[{index}]") for index, rule in enumerate(rules)),
            seed,
        )

    def start(self) -> FaultState:
        """A fresh counter of replies for one meter (or bus) following this plan."""
        return FaultState(self)


class FaultState:
    """A plan in use: counts the replies it has seen so schedules can fire."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.replies = 0

    def apply(self, line: str, request: bytes, reply: bytes) -> FaultOutcome:
        """The faulted version of ``reply`` to ``request`` on a ``line`` protocol family.

        ``line`` is ``"dlt645"``, ``"dlt698.45"`` or ``"modbus-rtu"``.
        """
        self.replies += 1
        number = self.replies
        firing: dict[str, tuple[FaultRule, random.Random]] = {}
        for index, rule in enumerate(self.plan.rules):
            rng = random.Random(f"{self.plan.seed}:{index}:{number}")
            if rule.fires(number, rng) and rule.kind not in firing:
                firing[rule.kind] = (rule, rng)
        if not firing:
            return FaultOutcome(reply)
        if "no_answer" in firing or "intermittent" in firing:
            kind = "no_answer" if "no_answer" in firing else "intermittent"
            return FaultOutcome(None, applied=(kind,))
        delay = firing["late"][0].delay if "late" in firing else 0.0
        applied = ["late"] if "late" in firing else []
        data = reply
        for kind in _BYTE_ORDER:
            if kind in firing:
                rule, rng = firing[kind]
                changed = _BYTE_FAULTS[kind](line, request, data, rule, rng)
                if changed is not None:
                    data = changed
                    applied.append(kind)
        return FaultOutcome(data, delay, tuple(applied))


# ---------------------------------------------------------------- validation


def _rule(spec: Any, where: str) -> FaultRule:
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a table with a kind, got {spec!r}")
    kind = spec.get("kind")
    if kind not in _PARAMETERS:
        raise ValueError(f"{where}.kind: {kind!r} is not one of {', '.join(FAULT_KINDS)}")
    allowed = _PARAMETERS[kind] | _SCHEDULE | {"kind"}
    for key in spec:
        if key not in allowed:
            extra = ", ".join(sorted(_PARAMETERS[kind])) or "none"
            raise ValueError(
                f"{where}.{key}: unknown for {kind} (its parameters: {extra};"
                " schedule: first, between, probability)"
            )
    fields: dict[str, Any] = {"kind": kind}
    if "first" in spec:
        fields["first"] = _positive_int(spec["first"], f"{where}.first")
    if "between" in spec:
        between = spec["between"]
        if (
            isinstance(between, str | bytes)
            or not isinstance(between, Sequence)
            or len(between) != 2
        ):
            raise ValueError(f"{where}.between: expected [first, last] reply numbers")
        low = _positive_int(between[0], f"{where}.between[0]")
        high = _positive_int(between[1], f"{where}.between[1]")
        if high < low:
            raise ValueError(f"{where}.between: last ({high}) is before first ({low})")
        fields["between"] = (low, high)
    if "probability" in spec:
        fields["probability"] = _probability(spec["probability"], f"{where}.probability")
    elif kind == "intermittent":
        raise ValueError(f"{where}.probability: intermittent needs a probability (0..1)")
    if kind == "late":
        if "delay" not in spec:
            raise ValueError(f"{where}.delay: late needs a delay in seconds")
        delay = spec["delay"]
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay <= 0:
            raise ValueError(f"{where}.delay: expected a positive number of seconds, got {delay!r}")
        fields["delay"] = float(delay)
    if "length" in spec:
        fields["length"] = _positive_int(spec["length"], f"{where}.length")
    if "bytes" in spec:
        if "length" in spec:
            raise ValueError(f"{where}.bytes: give bytes or length, not both")
        text = spec["bytes"]
        try:
            garbage = bytes.fromhex(text) if isinstance(text, str) else None
        except ValueError:
            garbage = None
        if not garbage:
            raise ValueError(f"{where}.bytes: expected hex text like 'FF 00 68', got {text!r}")
        fields["garbage"] = garbage
    if "address" in spec:
        address = spec["address"]
        if isinstance(address, bool) or not isinstance(address, str | int):
            raise ValueError(f"{where}.address: expected address digits or a unit id")
        fields["address"] = str(address)
    return FaultRule(**fields)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: expected a whole number ≥ 1, got {value!r}")
    return value


def _probability(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{where}: expected a probability between 0 and 1, got {value!r}")
    return float(value)


# ---------------------------------------------------------------- byte faults


def _garbage(line: str, rule: FaultRule, rng: random.Random) -> bytes:
    if rule.garbage is not None:
        return rule.garbage
    length = rule.length or rng.randint(1, 8)
    if line == "modbus-rtu":
        return bytes(rng.randrange(256) for _ in range(length))
    choices = [value for value in range(256) if value not in _FRAME_OPENERS and value != 0x16]
    return bytes(rng.choice(choices) for _ in range(length))


def _garbage_before(
    line: str, request: bytes, reply: bytes, rule: FaultRule, rng: random.Random
) -> bytes | None:
    return _garbage(line, rule, rng) + reply


def _garbage_after(
    line: str, request: bytes, reply: bytes, rule: FaultRule, rng: random.Random
) -> bytes | None:
    return reply + _garbage(line, rule, rng)


def _echo(
    line: str, request: bytes, reply: bytes, rule: FaultRule, rng: random.Random
) -> bytes | None:
    return request + reply


def _truncated(
    line: str, request: bytes, reply: bytes, rule: FaultRule, rng: random.Random
) -> bytes | None:
    if len(reply) < 2:
        return None
    keep = rule.length if rule.length is not None else rng.randint(1, len(reply) - 1)
    return reply[: min(keep, len(reply) - 1)]


def _bad_checksum(
    line: str, request: bytes, reply: bytes, rule: FaultRule, rng: random.Random
) -> bytes | None:
    """Spoil only the check bytes; the frame keeps its length, start and end bytes."""
    if not _decodes(line, reply):
        return None
    data = bytearray(reply)
    # 645: CS is the byte before 16. 698: FCS is the two bytes before 16 (the header's HCS
    # stays right, so a parser reads the whole frame before rejecting it). Modbus: CRC last.
    position = {"dlt645": -2, "dlt698.45": -3, "modbus-rtu": -2}[line]
    data[position] ^= rng.randint(1, 255)
    return bytes(data)


def _wrong_address(
    line: str, request: bytes, reply: bytes, rule: FaultRule, rng: random.Random
) -> bytes | None:
    """The same reply, re-encoded by the codec with another address (checksums right)."""
    try:
        if line == "dlt645":
            frame = dlt645.decode_frame(reply)
            address = rule.address or _next_digits(frame.address)
            moved = dataclasses.replace(frame, address=dlt645.normalize_address(address))
            return dlt645.encode_frame(moved, dlt645.count_preamble(reply))
        if line == "dlt698.45":
            frame698 = dlt698.decode_frame(reply)
            old = frame698.address
            digits = rule.address or _next_digits(old.digits)
            new = dataclasses.replace(
                dlt698.ServerAddress.single(digits, old.logical), type=old.type
            )
            preamble = len(reply) - len(reply.lstrip(b"\xfe"))
            return dlt698.encode_frame(dataclasses.replace(frame698, address=new), preamble)
        unit = int(rule.address) if rule.address is not None else reply[0] % 247 + 1
        body = bytes([unit]) + reply[1:-2]
        return body + modbus.crc16(body)
    except (ProtocolError, ValueError):
        return None  # not a frame we can re-address: leave the reply alone


def _next_digits(digits: str) -> str:
    """The neighbouring address: ``000000001234`` → ``000000001235`` (wraps to all zeros)."""
    if not digits.isdigit():
        return "1".rjust(len(digits), "0")
    return str((int(digits) + 1) % 10 ** len(digits)).rjust(len(digits), "0")


def _decodes(line: str, reply: bytes) -> bool:
    try:
        if line == "dlt645":
            dlt645.decode_frame(reply)
        elif line == "dlt698.45":
            dlt698.decode_frame(reply)
        else:
            return len(reply) >= 4 and modbus.crc16(reply[:-2]) == reply[-2:]
    except ProtocolError:
        return False
    return True


_BYTE_FAULTS: Final = {
    "wrong_address": _wrong_address,
    "bad_checksum": _bad_checksum,
    "truncated": _truncated,
    "garbage_before": _garbage_before,
    "garbage_after": _garbage_after,
    "echo": _echo,
}
