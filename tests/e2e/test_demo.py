"""`evcharging demo` runs a whole network unattended and busy, and leaves nothing running when it
stops: every seeded CP is one it started, each driver has its own CPs and never runs out, and a
real OCPP charger (ocpp-go's example CP, `make ocpp-go-cp`) charges through EV_OCPP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from evcharging.ops.demo import DemoConfig
from evcharging.services.driver import parse_services
from tests.support.ocpp_go import go_cp_binary
from tests.support.ports import free_port, free_port_block
from tests.support.waiting import eventually_sync

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

BIN = Path(sys.executable).parent
ADMIN = {"Authorization": f"Bearer {DemoConfig.admin_token}"}  # the demo's (documented) token


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


def unwrapped(output: str) -> str:
    """The merged output with each wrapped message on one row again (`label | message`, then
    `      |   rest` rows)."""
    rows: list[str] = []
    for row in output.splitlines():
        head, bar, rest = row.partition(" | ")
        if rows and bar and not head.strip() and rest.startswith("  "):
            rows[-1] += " " + rest.strip()
        else:
            rows.append(row)
    return "\n".join(rows)


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:  # gone since
        return ""


def test_demo_keeps_every_cp_connected_and_busy_and_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    http = free_port()
    engines, driver_webs = free_port_block(2), free_port_block(2)  # base ports: 2 CPs, 2 drivers
    ports = [
        str(p)
        for p in (free_port(), free_port(), http, engines, driver_webs, free_port(), free_port())
    ]
    front, ocpp = free_port(), free_port()
    charger = go_cp_binary()  # built first (make ocpp-go-cp), so the timings are the demo's
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        [
            str(BIN / "evcharging"),
            "demo",
            "--cps",
            "2",
            "--drivers",
            "2",
            "--for",
            "45s",
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
            "--registry-port",
            ports[5],
            "--weather-port",
            ports[6],
            "--front-port",
            str(front),
            "--ocpp-port",
            str(ocpp),
            "--ocpp-charger",
            str(charger),
            "--workdir",
            str(workdir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{http}/api"

    def get(path: str) -> list[dict[str, Any]]:
        try:
            answer = httpx.get(f"{api}/{path}", headers=ADMIN, timeout=2)  # the operator's reads
            found: list[dict[str, Any]] = answer.json()
        except (httpx.HTTPError, ValueError):
            return []
        return found

    def all_connected() -> list[dict[str, Any]]:
        """Both CPs and the OCPP charger's shown and connected (a CP is shown once it has been
        registered: by its Monitor, or by the demo for the charger)."""
        cps = get("cps")
        connected = [cp for cp in cps if cp["state"] != "Desconectado"]
        return cps if len(connected) == len(cps) == 3 else []

    def tickets_of_each_driver() -> set[str]:
        ended = get("sessions?status=ended")
        drivers = {
            s["driver_id"]
            for s in ended
            if s["end_reason"] == "unplugged" and s["driver_id"] in ("D001", "D002")
        }
        return drivers if drivers == {"D001", "D002"} else set()

    def ocpp_ticket() -> list[dict[str, Any]]:
        """The Go charger's session (idTag 12345), supplied and billed at OCPP01."""
        ended = get("sessions?status=ended")
        return [s for s in ended if s["cp_id"] == "OCPP01" and s["driver_id"] == "12345"]

    def ocpp01(state: str) -> bool:
        return any(cp["id"] == "OCPP01" and cp["state"] == state for cp in get("cps"))

    def teruel(alerted: bool) -> bool:
        """The demo's last CP, in the city that freezes and thaws, under an alert or not."""
        found = [cp for cp in get("cps") if cp["id"] == "ALC02"]
        return bool(found) and found[0]["weather_alert"] is alerted

    try:
        connected = eventually_sync(all_connected, 90, what="every seeded CP connected")
        # The first minute shows the whole weather mechanism: frozen, then thawed.
        eventually_sync(lambda: teruel(True), 30, what="ALC02 under Teruel's weather alert")
        frozen = next(cp for cp in get("cps") if cp["id"] == "ALC02")
        assert frozen["weather"]["city"] == "Teruel"
        eventually_sync(lambda: teruel(False), 30, what="Teruel thawed")
        page = httpx.get(f"http://127.0.0.1:{front}/config.json", timeout=5).json()
        assert page == {"central": f"http://127.0.0.1:{http}"}
        eventually_sync(tickets_of_each_driver, 60, what="a ticket for each driver")
        # The real charger's scripted session (~35 s from its boot) is billed to its idTag...
        [go_session] = eventually_sync(ocpp_ticket, 60, what="the Go charger's ticket")
        # ... and it stays booted, Activado, idling for 5 minutes.
        eventually_sync(lambda: ocpp01("Activado"), 20, what="OCPP01 Activado after its session")
    except AssertionError as exc:
        demo.terminate()
        demo.wait(timeout=60)
        log.close()
        tail = (tmp_path / "demo.log").read_text(encoding="utf-8", errors="replace")[-6000:]
        raise AssertionError(f"{exc}\n--- the demo's output, last lines ---\n{tail}") from exc
    # Only the CPs the demo started are known (each registered): no tile stays grey.
    assert sorted(cp["id"] for cp in connected) == ["ALC01", "ALC02", "OCPP01"]
    assert go_session["end_reason"] == "unplugged"  # its StopTransaction: EVDisconnected
    assert go_session["energy_kwh"] == "0.052"  # meterStop 52 Wh - meterStart 0
    assert float(go_session["amount_eur"]) > 0
    assert demo.wait(timeout=120) == 0
    log.close()
    output = (tmp_path / "demo.log").read_text(encoding="utf-8")

    # Each driver goes round its own CPs, with more services than any demo runs.
    services = {
        d: parse_services((workdir / f"services-{d}.txt").read_text(encoding="utf-8"))
        for d in ("D001", "D002")
    }
    assert set(services["D001"]) == {"ALC01"}
    assert set(services["D002"]) == {"ALC02"}
    assert all(len(s) * 10 >= 3600 for s in services.values())  # an hour, at 10 s a service
    assert "SERVICES DONE" not in output
    # ... so no request found its CP busy; only Teruel's frost denies any.
    assert "CP busy" not in output
    denials = [row for row in output.splitlines() if "DENIED driver=" in row]
    assert all("weather alert" in row for row in denials), denials
    final = re.findall(
        r"^demo +\| \d\d:\d\d:\d\d UTC: .*; (\d+) tickets, \d+ denied$", unwrapped(output), re.M
    )
    assert final, "no final summary line"
    assert int(final[-1]) >= 2

    # One `label | message` line per program line; the demo's own lines fit in 80 columns.
    assert "TICKET driver=D001 cp=ALC01" in output
    assert "TICKET driver=D002 cp=ALC02" in output
    assert re.search(r"^EV_Central +\| ", output, re.M)
    # EV_OCPP's lines are merged like the others; the Go charger printed no error.
    assert re.search(r"^EV_OCPP +\| cp=OCPP01: boot Accepted ", output, re.M)
    assert re.search(r"^EV_OCPP +\| cp=OCPP01 driver=12345 .* ended \(unplugged\)", output, re.M)
    assert re.search(r"^EV_Central +\| TICKET driver 12345 CP OCPP01: 0.052 kWh", output, re.M)
    assert not re.search(r"^OCPP01 Go CP +\| ", output, re.M), output[-3000:]
    assert f"  EV_OCPP:         wss://127.0.0.1:{ocpp}/<CP id> (OCPP 1.6J)" in output
    assert re.search(r"^ALC01 engine +\| ", output, re.M)
    assert re.search(
        r"^ALC02 monitor +\| Engine OK · Central up \(authenticated, key v\d+\)", output, re.M
    )
    assert not re.search(r"^\S.*\| \d{4}-\d\d-\d\d ", output, re.M)  # no raw log prefix
    own = [r for r in output.splitlines() if r.startswith("demo ") and str(tmp_path) not in r]
    assert "admin dashboard:" in output
    assert "driver D001:" in output
    assert max(len(row) for row in own) <= 80, max(own, key=len)
    readings = "session=[0-9a-f-]+: Suministrando "  # the Engine's per-second lines
    assert not re.search(f"^ALC01 engine .*{readings}", output, re.M)
    assert re.search(readings, (workdir / "logs" / "ALC01-engine.log").read_text(encoding="utf-8"))
    assert "demo stopped: no program left running" in output
    assert "exited on its own" not in output  # every program ran until the demo stopped it
    assert processes_in(workdir) == []


def test_a_closed_terminal_stops_the_demo_and_everything_it_started(tmp_path: Path) -> None:
    """SIGHUP (the terminal closed) is Ctrl+C for the demo: its programs, in sessions of their
    own, would otherwise run on with nobody to stop them."""
    workdir = tmp_path / "demo"
    ports = [str(free_port()) for _ in range(4)]
    charger = go_cp_binary()
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [
                str(BIN / "evcharging"),
                "demo",
                "--cps",
                "1",
                "--drivers",
                "1",
                *("--kafka-port", ports[0], "--central-port", ports[1], "--http-port", ports[2]),
                *("--engine-base-port", ports[3], "--driver-web-base-port", str(free_port())),
                *("--registry-port", str(free_port()), "--workdir", str(workdir)),
                *("--weather-port", str(free_port()), "--front-port", str(free_port())),
                *("--ocpp-port", str(free_port()), "--ocpp-charger", str(charger)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        eventually_sync(
            lambda: "EVCharging demo:" in log.read_text(errors="replace"),
            90,
            what="the demo running",
        )
        # Among what it started: EV_OCPP and the real OCPP charger (started before the banner).
        started = processes_in(workdir)
        assert any(str(charger) in command_line(pid) for pid in started), "no Go charger"
        assert any("EV_OCPP" in command_line(pid) for pid in started), "no EV_OCPP"
        demo.send_signal(signal.SIGHUP)
        assert demo.wait(timeout=60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
        left = processes_in(workdir)
        for pid in left:  # never leak them into the other tests, even when this one fails
            os.kill(pid, signal.SIGKILL)
    assert "demo stopped: no program left running" in log.read_text(errors="replace")
    assert left == []
