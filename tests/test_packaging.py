"""The repository keeps the shape the product owner fixed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared_protocol", "firmware_sim", "edge_agent", "central")

# ARCHITECTURE.md: shared_protocol imports nothing of ours; the others import only it.
ALLOWED = {
    "shared_protocol": {"shared_protocol"},
    "firmware_sim": {"firmware_sim", "shared_protocol"},
    "edge_agent": {"edge_agent", "shared_protocol"},
    "central": {"central", "shared_protocol"},
}
# Composition roots: modules whose job is to run the packages together, and nothing else.
# `central demo` (issue 5) starts the simulator and an edge agent next to central on one
# machine; the central service itself never imports them (the demo imports them lazily).
COMPOSITION_ROOTS = {
    "central/demo.py": {"edge_agent", "firmware_sim"},
}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", PACKAGES)
def test_package_boundaries(package: str) -> None:
    ours = set(PACKAGES)
    for path in (ROOT / package).rglob("*.py"):
        allowed = ALLOWED[package] | COMPOSITION_ROOTS.get(path.relative_to(ROOT).as_posix(), set())
        crossing = (_imported_roots(path) & ours) - allowed
        assert not crossing, f"{path.relative_to(ROOT)} imports {sorted(crossing)}"


def test_codecs_do_no_io() -> None:
    """Sans-I/O: no serial, socket, MQTT, SQLite or logging inside shared_protocol."""
    forbidden = {"serial", "socket", "paho", "sqlite3", "sqlite_utils", "logging", "asyncio"}
    for path in (ROOT / "shared_protocol").rglob("*.py"):
        used = _imported_roots(path) & forbidden
        assert not used, f"{path.relative_to(ROOT)} imports {sorted(used)}"


@pytest.mark.parametrize("package", PACKAGES)
def test_python_dash_m_runs(package: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", package, "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_console_scripts_are_declared() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "meter2cash"
    scripts = project["scripts"]
    for name in ("edge-agent", "central", "firmware-sim"):
        assert name in scripts
    for extra in ("edge", "central", "sim", "dev"):
        assert extra in project["optional-dependencies"]


def test_public_names_are_pinned() -> None:
    import shared_protocol

    assert set(shared_protocol.__all__) == {
        "NEED_DATA",
        "QUANTITIES",
        "ChecksumError",
        "Discarded",
        "FrameTooLargeError",
        "LocalProtocolError",
        "MalformedFrameError",
        "MeterValue",
        "ProtocolError",
        "Quantity",
        "RemoteProtocolError",
        "UnsupportedError",
        "__version__",
        "quantity",
    }
    for name in shared_protocol.__all__:
        assert hasattr(shared_protocol, name)


def test_error_tree() -> None:
    from shared_protocol import errors

    remote = (
        errors.ChecksumError,
        errors.FrameTooLargeError,
        errors.MalformedFrameError,
        errors.UnsupportedError,
    )
    for cls in remote:
        assert issubclass(cls, errors.RemoteProtocolError)
    assert issubclass(errors.RemoteProtocolError, errors.ProtocolError)
    assert issubclass(errors.LocalProtocolError, errors.ProtocolError)
    assert not issubclass(errors.LocalProtocolError, errors.RemoteProtocolError)
