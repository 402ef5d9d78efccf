"""The statement's three-host layout, for real: host A runs Kafka and EV_Central, host B two
charging points, host C two drivers, each in its own network namespace with its own address.
Every component is given only the other hosts' addresses; nothing crosses through localhost."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import BIN, Host, can_make_namespaces, http_in, run_in, three_hosts
from tests.support.processes import SAMPLE, Network, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

KAFKA_PORT, CONTROLLER_PORT, CENTRAL_PORT, HTTP_PORT = 9092, 9093, 7000, 8000
TOKEN = "three-hosts-token"


@pytest.fixture
def hosts() -> Iterator[dict[str, Host]]:
    if os.geteuid() != 0:
        pytest.skip("the three-host test makes network namespaces: it needs root")
    why = can_make_namespaces()
    if why is not None:
        pytest.skip(why)
    with three_hosts() as made:
        yield made


def cp_state(a: Host, cp_id: str) -> str:
    status, body = http_in(a, "GET", f"http://{a.address}:{HTTP_PORT}/api/cps/{cp_id}")
    return str(body["state"]) if status == 200 and isinstance(body, dict) else f"HTTP {status}"


def test_a_network_across_three_hosts(hosts: dict[str, Host], tmp_path: Path) -> None:
    a, b, c = hosts["A"], hosts["B"], hosts["C"]
    kafka = f"{a.address}:{KAFKA_PORT}"
    data = tmp_path / "kafka"
    started = run_in(
        a,
        str(BIN / "evcharging"),
        "kafka",
        "start",
        "--host",
        a.address,
        "--port",
        str(KAFKA_PORT),
        "--controller-port",
        str(CONTROLLER_PORT),
        "--data-dir",
        str(data),
        "--heap",
        "384m",
        timeout=120,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    net = Network(kafka=kafka, workdir=tmp_path)
    try:
        central = net.start(
            "central",
            "EV_Central",
            str(CENTRAL_PORT),
            kafka,
            "--db",
            str(tmp_path / "central.db"),
            "--listen-host",
            a.address,
            "--http-host",
            a.address,
            "--http-port",
            str(HTTP_PORT),
            "--admin-token",
            TOKEN,
            "--ui",
            "plain",
            "--seed",
            str(SAMPLE),
            netns=a.netns,
        )
        wait_until(
            lambda: cp_state(a, "ALC01") == "Desconectado", 40, what=central.output()[-2000:]
        )
        monitors = {}
        for i, (cp, flags) in enumerate((("ALC01", ["--supply-seconds", "4"]), ("ALC02", []))):
            link = f"{b.address}:{7101 + i}"
            net.start(
                f"engine-{cp}",
                "EV_CP_E",
                kafka,
                link,
                "--auto-plug",
                "--no-menu",
                "--state-dir",
                str(tmp_path / "engine"),
                *flags,
                netns=b.netns,
            )
            monitors[cp] = net.start(
                f"monitor-{cp}", "EV_CP_M", link, f"{a.address}:{CENTRAL_PORT}", cp, netns=b.netns
            )
        for cp in monitors:
            wait_until(lambda cp=cp: cp_state(a, cp) == "Activado", 30, what=net.tails())

        # A full supply: driver on C, CP on B, Central and Kafka on A.
        first = net.start("driver-D001", "EV_Driver", kafka, "D001", "--cp", "ALC01", netns=c.netns)
        first.wait_for("TICKET driver=D001 cp=ALC01", timeout=40)
        assert first.count("PROGRESS driver=D001 cp=ALC01") >= 2

        # Seed flow 2 across hosts: admin simulates an error on the CP where D002 charges.
        second = net.start(
            "driver-D002", "EV_Driver", kafka, "D002", "--cp", "ALC02", netns=c.netns
        )
        second.wait_for("PROGRESS driver=D002 cp=ALC02", timeout=40)
        url = f"http://{a.address}:{HTTP_PORT}/api/cps/ALC02"
        assert http_in(a, "POST", f"{url}/simulate-error", TOKEN)[0] == 200
        second.wait_for("ERROR EN CP cp=ALC02")
        second.wait_for("TICKET driver=D002 cp=ALC02")
        assert http_in(a, "POST", f"{url}/fix-error", TOKEN)[0] == 200
        second.wait_for("CP FIXED cp=ALC02")
        wait_until(lambda: cp_state(a, "ALC02") == "Activado", 10)

        # Killing host B's Monitor shows its CP Desconectado at Central.
        monitors["ALC01"].kill()
        wait_until(lambda: cp_state(a, "ALC01") == "Desconectado", 5, what=central.output()[-2000:])
        for proc in net.procs:
            assert "127.0.0.1" not in " ".join(proc.popen.args)  # type: ignore[arg-type]
    finally:
        net.stop_all()
        run_in(
            a,
            str(BIN / "evcharging"),
            "kafka",
            "stop",
            "--host",
            a.address,
            "--port",
            str(KAFKA_PORT),
            "--controller-port",
            str(CONTROLLER_PORT),
            "--data-dir",
            str(data),
            timeout=60,
        )
