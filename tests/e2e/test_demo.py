"""`evcharging demo` runs a whole network unattended, and leaves nothing running when it stops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port, free_port_block
from tests.support.waiting import eventually_sync

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

BIN = Path(sys.executable).parent


def processes_in(folder: Path) -> list[int]:
    """Pids whose working directory or command line is inside `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(folder)) or str(folder) in cmdline:
            found.append(int(entry.name))
    return found


def test_demo_runs_sessions_to_tickets_and_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    http = free_port()
    engines, driver_webs = free_port_block(2), free_port_block(1)  # base ports: 2 CPs, 1 driver
    ports = [str(p) for p in (free_port(), free_port(), http, engines, driver_webs)]
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        [
            str(BIN / "evcharging"),
            "demo",
            "--cps",
            "2",
            "--drivers",
            "1",
            "--for",
            "40s",
            "--kafka-port",
            ports[0],
            "--central-port",
            ports[1],
            "--http-port",
            ports[2],
            "--engine-base-port",
            ports[3],
            "--driver-web-base-port",
            ports[4],
            "--workdir",
            str(workdir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{http}/api"

    def tickets() -> list:
        try:
            return [
                s
                for s in httpx.get(f"{api}/sessions?status=ended", timeout=2).json()
                if s["end_reason"] == "unplugged"
            ]
        except httpx.HTTPError:
            return []

    try:
        ended = eventually_sync(tickets, 45, what="a session that ended with its unplug")
    except AssertionError as exc:
        demo.terminate()
        demo.wait(timeout=60)
        log.close()
        tail = (tmp_path / "demo.log").read_text(encoding="utf-8", errors="replace")[-6000:]
        raise AssertionError(f"{exc}\n--- the demo's output, last lines ---\n{tail}") from exc
    assert ended[0]["driver_id"] == "D001"
    assert float(ended[0]["amount_eur"]) > 0
    assert demo.wait(timeout=90) == 0
    log.close()
    output = (tmp_path / "demo.log").read_text(encoding="utf-8")
    assert "admin dashboard:" in output
    assert "driver D001 dashboard:" in output
    assert "TICKET driver=D001" in output
    assert "[EV_Central" in output
    assert "[ALC01 engine" in output
    assert "demo stopped: no program left running" in output
    assert "exited on its own" not in output  # every program ran until the demo stopped it
    assert processes_in(workdir) == []
