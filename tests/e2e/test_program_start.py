"""A program whose port is taken says so in one line and exits with code 2, without a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.processes import run_to_end

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
KAFKA = "127.0.0.1:1"  # never reached: the port is checked before anything else starts


def run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return run_to_end(tmp_path, *argv)


@pytest.fixture
def taken() -> Iterator[int]:
    """A port some other program is listening on."""
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        yield port


def test_engine_with_its_monitor_port_taken(tmp_path: Path, taken: int) -> None:
    done = run(tmp_path, "EV_CP_E", KAFKA, f"127.0.0.1:{taken}", "--no-menu")

    assert done.returncode == 2
    assert f"cannot listen for the Monitor on 127.0.0.1:{taken}: Address already in use" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_ocpp_gateway_with_its_port_taken(tmp_path: Path, taken: int) -> None:
    done = run(tmp_path, "EV_OCPP", KAFKA, "127.0.0.1:7000", "--listen", f"127.0.0.1:{taken}")

    assert done.returncode == 2
    assert f"cannot listen for the OCPP endpoint on 127.0.0.1:{taken}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("which", ["monitors", "http"])
def test_central_with_a_port_taken(tmp_path: Path, taken: int, which: str) -> None:
    monitors, http = (taken, free_port()) if which == "monitors" else (free_port(), taken)
    done = run(
        tmp_path,
        "EV_Central",
        str(monitors),
        KAFKA,
        "--db",
        str(tmp_path / "central.db"),
        "--http-host",
        "127.0.0.1",
        "--http-port",
        str(http),
        "--admin-token",
        "t",
        "--ui",
        "plain",
    )

    what = "Monitors on 0.0.0.0" if which == "monitors" else "the HTTP API on 127.0.0.1"
    assert done.returncode == 2
    assert f"cannot listen for {what}:{taken}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_driver_with_its_dashboard_port_taken(tmp_path: Path, taken: int) -> None:
    done = run(tmp_path, "EV_Driver", KAFKA, "D001", "--no-menu", "--web-port", str(taken))

    assert done.returncode == 2
    assert f"cannot listen for the dashboard on 127.0.0.1:{taken}: Address already in use" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
