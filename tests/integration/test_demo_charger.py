"""`evcharging demo`'s real OCPP charger, without the network: the demo runs without it (one line)
when its program is not built, lists EV_OCPP's endpoint, and starts the charger again each time it
leaves, until the demo stops (a stand-in program here: the real one runs ~6 minutes a round)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from evcharging.ops.demo import Demo, DemoConfig
from evcharging.ops.demo_plan import RESTART_SECONDS
from tests.support.waiting import eventually

BANNER_ROOM = 80 - len("demo          | ")  # the banner's rows, after the merged label


def program(folder: Path, body: str) -> Path:
    path = folder / "charger"
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_without_the_charger_program_the_demo_says_so_once_and_plans_no_ocpp_cp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = Demo(DemoConfig(ocpp_charger=tmp_path / "missing" / "cp16", workdir=tmp_path / "w"))
    assert demo.charger is None
    assert demo.plan.ocpp is None
    assert "12345" not in [row["id"] for row in demo.plan.seed["drivers"]]
    assert demo.no_charger.startswith("no OCPP charger: ")
    assert "make ocpp-go-cp" in demo.no_charger
    assert "\n" not in demo.no_charger
    monkeypatch.chdir(tmp_path)  # no .cache/ocpp-go/cp16 here
    assert len(f"demo          | {Demo(DemoConfig()).no_charger}") <= 80  # the default path
    banner = demo._banner([])
    assert "  EV_OCPP:         wss://127.0.0.1:9000/<CP id> (OCPP 1.6J)" in banner.splitlines()
    assert "OCPP charger:    none" in banner
    assert max(len(row) for row in banner.splitlines() if "logs/" not in row) <= BANNER_ROOM


def test_with_the_charger_program_the_demo_plans_its_cp_and_shows_it(tmp_path: Path) -> None:
    binary = program(tmp_path, "exit 0")
    demo = Demo(DemoConfig(ocpp_charger=binary, ocpp_port=9443, workdir=tmp_path / "w"))
    assert demo.charger == binary.resolve()
    assert demo.no_charger == ""
    assert demo.plan.ocpp is not None
    assert demo.plan.ocpp.cp_id == "OCPP01"
    assert demo.weather.locations["OCPP01"] == "Valencia"
    banner = demo._banner([])
    assert "wss://127.0.0.1:9443/<CP id>" in banner
    assert "OCPP charger:    OCPP01" in banner
    assert max(len(row) for row in banner.splitlines() if "logs/" not in row) <= BANNER_ROOM
    not_runnable = tmp_path / "plain-file"
    not_runnable.write_text("", encoding="utf-8")
    assert Demo(DemoConfig(ocpp_charger=not_runnable)).charger is None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_the_charger_is_started_again_each_time_it_leaves_until_the_demo_stops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A charger that leaves at once is started again (after RESTART_SECONDS[0]); one still
    running when the demo stops is stopped with it, and none is started after."""
    runs = tmp_path / "runs"
    # The first run leaves at once, every later run stays (as the real one idles 5 minutes).
    binary = program(
        tmp_path,
        f'echo "$CLIENT_ID $TLS_ENABLED" >> {runs}\n[ "$(wc -l < {runs})" -gt 1 ] || exit 0\n'
        "exec sleep 600",
    )
    workdir = tmp_path / "w"
    workdir.mkdir()
    demo = Demo(DemoConfig(ocpp_charger=binary, workdir=workdir))
    assert demo.plan.ocpp is not None
    env = {"PATH": os.environ["PATH"], "CLIENT_ID": "OCPP01", "TLS_ENABLED": "true"}
    keeper = asyncio.create_task(demo._keep_charger(demo.plan.ocpp, binary, env))
    demo._keeper = keeper

    def two_runs() -> bool:
        started = runs.exists() and len(runs.read_text().splitlines()) == 2
        return started and len(demo.children) == 1  # the second one, known to the demo

    await eventually(two_runs, timeout=RESTART_SECONDS[0] + 20, what="the charger run twice")
    [running] = demo.children  # the one that left is forgotten, the running one is known
    assert running.name == "OCPP01 Go CP"
    assert running.restarts
    assert running.cp_id == "OCPP01"
    assert running.proc.returncode is None
    await demo.stop()
    assert keeper.done()
    assert running.proc.returncode is not None
    assert not alive(running.proc.pid)
    assert runs.read_text().splitlines() == ["OCPP01 true", "OCPP01 true"]
    said = capsys.readouterr().out
    assert "OCPP01's charger left after 0 s (code 0); again in 2 s" in said
    assert "exited on its own" not in said
    assert (workdir / "logs" / "OCPP01-Go-CP.log").exists()


def test_the_demos_own_lines_fit_80_columns_even_in_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its summary grows with the CPs' states (three with the OCPP charger's CP, up to five)."""
    demo = Demo(DemoConfig(ocpp_charger=tmp_path / "missing", workdir=tmp_path / "w"))
    demo.width = None  # not a terminal
    demo.say("02:18:06 UTC: 1 Activado, 1 Suministrando, 1 Parado; 5 tickets, 4 denied")
    theirs = "x" * 30 + " " + "y" * 70
    demo.say(theirs, "EV_Central")  # the programs' lines are kept whole (grep their logs)
    rows = capsys.readouterr().out.splitlines()
    assert rows == [
        "demo          | 02:18:06 UTC: 1 Activado, 1 Suministrando, 1 Parado; 5 tickets,",
        "              |   4 denied",
        f"EV_Central    | {theirs}",
    ]
