"""The network end to end: EV_Central, EV_CP_M, EV_CP_E and EV_Driver as separate processes,
talking over a real Apache Kafka broker and real TCP sockets."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from evcharging.adapters.kafka.consumer import EventConsumer, KeyedRead
from evcharging.adapters.kafka.router import EventRouter
from evcharging.contracts import events as ev
from evcharging.contracts.frames import NACK, encode
from evcharging.contracts.topics import CENTRAL_EVENTS
from evcharging.domain.money import cost
from tests.support.processes import Network, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) UTC ")  # one clock: UTC


def stamp_of(output: str, marker: str, nth: int = 0) -> datetime:
    """The log timestamp of the nth line containing `marker`."""
    lines = [line for line in output.splitlines() if marker in line]
    match = STAMP.match(lines[nth])
    assert match, lines[nth]
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")


def ended_session(net: Network, driver_id: str) -> dict:
    return wait_until(
        lambda: next(iter(net.sessions(driver_id=driver_id, status="ended")), None),
        30,
        what=f"an ended session of {driver_id}\n{net.tails()}",
    )


def test_full_happy_path_request_plug_telemetry_unplug_ticket(network: Network) -> None:
    net = network
    net.central()
    net.charging_point("ALC01", "--auto-plug", "--supply-seconds", "4")
    before = Decimal(net.balance("D001"))
    driver = net.driver("D001", "--cp", "ALC01")
    driver.wait_for("AUTHORISED driver=D001 cp=ALC01")
    view = net.wait_state("ALC01", "Suministrando")
    assert view["driver_id"] == "D001"
    driver.wait_for("TICKET driver=D001 cp=ALC01", timeout=30)
    assert (
        driver.count("PROGRESS driver=D001 cp=ALC01") >= 3
    )  # each relayed from a reading Central saw
    session = ended_session(net, "D001")
    energy, amount = Decimal(session["energy_kwh"]), Decimal(session["amount_eur"])
    assert session["end_reason"] == "unplugged"
    assert energy > 0
    assert amount == cost(energy, Decimal("0.35"))
    assert Decimal(net.balance("D001")) == before - amount
    net.wait_state("ALC01", "Activado")
    assert "charging completed" in driver.output()
    latency = stamp_of(driver.output(), "AUTHORISED driver=D001") - stamp_of(
        driver.output(), "REQUEST sent"
    )
    print(f"AUTHORIZATION_REQUEST -> answer at the driver: {latency.total_seconds() * 1000:.0f} ms")


def test_seed_flow_1_driver_stops_charging(network: Network) -> None:
    net = network
    net.central()
    engine, _ = net.charging_point("VLC01", "--auto-plug")
    driver = net.driver("D002", "--cp", "VLC01")
    at = driver.wait_for("PROGRESS driver=D002 cp=VLC01")
    driver.wait_for("PROGRESS driver=D002 cp=VLC01", after=at)
    driver.send("s")
    driver.wait_for("TICKET driver=D002 cp=VLC01")
    session = ended_session(net, "D002")
    assert session["end_reason"] == "stopped_by_driver"
    assert Decimal(session["energy_kwh"]) > 0
    assert Decimal(session["amount_eur"]) == cost(Decimal(session["energy_kwh"]), Decimal("0.42"))
    assert Decimal(net.balance("D002")) == Decimal("80.00") - Decimal(session["amount_eur"])
    net.wait_state("VLC01", "Activado")
    wait_until(
        lambda: "SUPPLY_ENDED" in engine.output() or "stopped" in engine.output().lower(),
        10,
        what=f"the Engine to stop supplying\n{engine.output()[-2000:]}",
    )


async def _central_events_for(
    kafka: str, driver_id: str, seen: list[str], stop: asyncio.Event
) -> None:
    router = EventRouter("test")

    async def keep(event: ev.Event) -> None:
        seen.append(event.event_type)

    for cls in (ev.CpErrorSimulated, ev.CpErrorFixed):
        router.add(cls, keep)
    router.ignore(*ev.EVENT_TYPES)
    consumer = EventConsumer(
        kafka, None, router, keyed=[KeyedRead(CENTRAL_EVENTS, driver_id)], offset_reset="earliest"
    )
    task = asyncio.create_task(consumer.run())
    await stop.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def read_error_events(kafka: str, driver_id: str, expected: int) -> list[str]:
    async def go() -> list[str]:
        seen: list[str] = []
        stop = asyncio.Event()
        reader = asyncio.create_task(_central_events_for(kafka, driver_id, seen, stop))
        for _ in range(200):
            if len(seen) >= expected:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await reader
        return seen

    return asyncio.run(go())


def test_seed_flow_2_simulated_error_and_fix(network: Network) -> None:
    net = network
    net.central()
    net.charging_point("MAD01", "--auto-plug")
    driver = net.driver("D003", "--cp", "MAD01")
    driver.wait_for("PROGRESS driver=D003 cp=MAD01")
    assert net.admin("/api/cps/MAD01/simulate-error").status_code == 200
    driver.wait_for("ERROR EN CP cp=MAD01")
    driver.wait_for("TICKET driver=D003 cp=MAD01")
    session = ended_session(net, "D003")
    assert session["end_reason"] == "cp_fault"
    assert Decimal(session["amount_eur"]) == cost(Decimal(session["energy_kwh"]), Decimal("0.49"))
    assert net.cp("MAD01")["state"] == "Averiado"
    assert net.admin("/api/cps/MAD01/fix-error").status_code == 200
    driver.wait_for("CP FIXED cp=MAD01")
    net.wait_state("MAD01", "Activado")
    assert read_error_events(net.kafka, "D003", 2) == ["CP_ERROR_SIMULATED", "CP_ERROR_FIXED"]


def test_denials_each_carry_a_clear_reason(network: Network) -> None:
    net = network
    net.central()
    engine, _ = net.charging_point("ALC01")
    net.charging_point("ALC02")
    engine.send("s GHOST")  # at the CP's own menu: the CP's screen is told why, too
    engine.wait_for("driver=GHOST: request DENIED by CENTRAL: unknown driver")
    cases = [
        ("D001", "NOPE", "unknown CP"),
        ("GHOST", "ALC01", "unknown driver"),
        ("D002", "BCN01", "Desconectado"),
    ]
    for driver_id, cp_id, reason in cases:
        proc = net.driver(driver_id, "--cp", cp_id, name=f"deny-{driver_id}-{cp_id}")
        proc.wait_for(f"DENIED driver={driver_id} cp={cp_id}")
        assert reason in proc.output()
    net.admin("/api/cps/ALC02/stop")
    proc = net.driver("D003", "--cp", "ALC02", name="deny-parado")
    proc.wait_for("DENIED driver=D003 cp=ALC02")
    assert "Parado" in proc.output()
    net.admin("/api/cps/ALC02/resume")
    net.admin("/api/cps/ALC02/simulate-error")
    proc = net.driver("D004", "--cp", "ALC02", name="deny-averiado")
    proc.wait_for("DENIED driver=D004 cp=ALC02")
    assert "Averiado" in proc.output()


def test_two_drivers_racing_for_one_cp_exactly_one_wins(network: Network) -> None:
    net = network
    net.central()
    net.charging_point("VLC02")
    first = net.driver("D001", "--cp", "VLC02")
    second = net.driver("D005", "--cp", "VLC02")
    wait_until(
        lambda: all(
            ("AUTHORISED driver" in p.output()) or ("DENIED driver" in p.output())
            for p in (first, second)
        ),
        30,
        what=net.tails(),
    )
    outcomes = sorted(
        "AUTHORISED" if "AUTHORISED driver" in p.output() else "DENIED" for p in (first, second)
    )
    assert outcomes == ["AUTHORISED", "DENIED"]
    loser = first if "DENIED driver" in first.output() else second
    assert "busy" in loser.output()


def test_stop_all_ends_every_supply_with_a_ticket_and_resume_all_brings_them_back(
    network: Network,
) -> None:
    net = network
    net.central()
    net.charging_point("ALC01", "--auto-plug")
    net.charging_point("VLC01", "--auto-plug")
    drivers = [net.driver("D001", "--cp", "ALC01"), net.driver("D002", "--cp", "VLC01")]
    for d in drivers:
        d.wait_for("PROGRESS driver=")
    assert net.admin("/api/cps/stop-all").status_code == 200
    for d in drivers:
        d.wait_for("TICKET driver=")
    for cp in ("ALC01", "VLC01"):
        view = net.wait_state(cp, "Parado")
        assert view["caption"] == "Out of Order"
    assert {s["end_reason"] for s in net.sessions(status="ended")} == {"stopped_by_central"}
    assert len(net.sessions(status="ended")) == 2
    assert net.admin("/api/cps/resume-all").status_code == 200
    for cp in ("ALC01", "VLC01"):
        net.wait_state(cp, "Activado")


def test_engine_ko_key_faults_the_cp_within_2_s_and_recover_restores_it(network: Network) -> None:
    net = network
    net.central()
    engine, _ = net.charging_point("BCN01")
    engine.send("k")
    net.wait_state("BCN01", "Averiado", timeout=2.5)
    engine.send("r")
    net.wait_state("BCN01", "Activado", timeout=2.5)


def test_a_services_file_of_10_cps_runs_to_the_end_with_4_s_pauses(
    network: Network, tmp_path: Path
) -> None:
    net = network
    net.central()
    net.charging_point("ALC01", "--auto-plug", "--supply-seconds", "2")
    cps = ["ALC01", "NOPE", "BCN03", "ALC01", "MAD02", "VLC03", "ALC01", "BCN02", "MAD03", "ALC01"]
    services = tmp_path / "services.txt"
    services.write_text("\n".join(cps) + "\n", encoding="utf-8")
    driver = net.driver("D005", "--file", str(services))
    driver.wait_for("SERVICES DONE driver=D005 n=10", timeout=120)
    out = driver.output()
    assert out.count("REQUEST sent driver=D005") == 10
    assert out.count("TICKET driver=D005 cp=ALC01") == 4
    sent = [stamp_of(out, "REQUEST sent driver=D005", i) for i in range(10)]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 4.0, gaps


def test_unknown_monitor_is_refused_and_a_bad_lrc_frame_is_nacked(network: Network) -> None:
    net = network
    central = net.central()
    monitor = net.monitor("NOPE", register=False)
    central.wait_for("CP NOPE refused: unknown CP")
    wait_until(lambda: "unknown CP" in monitor.output(), 10, what=monitor.output())
    frame = bytearray(encode("AUTH", "ALC01", "", ""))
    frame[-1] ^= 0xFF  # corrupt the LRC
    with socket.create_connection(("127.0.0.1", net.central_port), timeout=5) as sock:
        sock.sendall(bytes(frame))
        assert sock.recv(1) == bytes([NACK])
    assert net.cp("ALC01")["state"] == "Desconectado"
