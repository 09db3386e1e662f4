"""``explain`` answers for any bytes: a technician can paste anything and never see a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared_protocol.explain import PROTOCOLS, explain, parse_hex

VECTORS = Path(__file__).parent / "vectors"
SEEDS = [
    parse_hex(v["frame_hex"])
    for name in ("dlt645.json", "dlt698.json")
    for v in json.loads((VECTORS / name).read_text())["vectors"]
    if "frame_hex" in v
]


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """A real frame with a few bytes flipped, cut or inserted: the faults a bus produces."""
    frame = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(0, len(frame) - 1)))
        if action == "flip" and frame:
            frame[pos] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del frame[pos:]
        else:
            frame[pos:pos] = draw(st.binary(min_size=1, max_size=4))
    return bytes(frame)


INPUTS = st.one_of(st.binary(max_size=300), mutated_frames())


def _check(raw: bytes, protocol: str) -> None:
    result = explain(raw, protocol)
    json.dumps(result)
    assert isinstance(result["valid"], bool)
    assert result["valid"] or isinstance(result["error"], str)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(raw=INPUTS, protocol=st.sampled_from(PROTOCOLS))
def test_explain_never_raises(raw: bytes, protocol: str) -> None:
    _check(raw, protocol)


@pytest.mark.slow
@settings(max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=INPUTS, protocol=st.sampled_from(PROTOCOLS))
def test_explain_never_raises_long_run(raw: bytes, protocol: str) -> None:
    _check(raw, protocol)
