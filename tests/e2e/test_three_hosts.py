"""The statement's three-host layout (Release 2), for real: host A (PC1) runs Kafka, EV_Central and
the PostgreSQL database, host B (PC2) two charging points, host C (PC3) two drivers and EV_Registry,
each in its own network namespace with its own address.  The Registry on C and Central on A share
the PostgreSQL database on A; the CPs on B register at the Registry over HTTPS (verifying it
against the network's CA) and authenticate at Central with the credentials they got.  Every
component is given only the other hosts' addresses; nothing crosses through localhost."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from evcharging.ops import certs
from tests.support.netns import BIN, Host, can_make_namespaces, http_in, run_in, three_hosts
from tests.support.postgres import scratch_dir
from tests.support.processes import SAMPLE, Network, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

KAFKA_PORT, CONTROLLER_PORT, CENTRAL_PORT, HTTP_PORT = 9092, 9093, 7000, 8000
PG_PORT, REGISTRY_PORT = 5433, 8443
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
    pg_dir = scratch_dir("evcharging-3hosts-pg-")  # the server runs as `postgres`: not tmp_path
    pg = run_in(
        a,
        str(BIN / "evcharging"),
        "postgres",
        "start",
        "--host",
        a.address,
        "--port",
        str(PG_PORT),
        "--data-dir",
        str(pg_dir),
        timeout=120,
    )
    assert pg.returncode == 0, pg.stdout + pg.stderr
    db_url = f"postgresql://evcharging@{a.address}:{PG_PORT}/evcharging"
    pg_env = {"PGPASSFILE": str(pg_dir / "pgpass")}  # the password is never on a command line
    certs.init(tmp_path / "certs", hosts=["registry"], ips=[c.address])
    registry_url = f"https://{c.address}:{REGISTRY_PORT}"
    net = Network(kafka=kafka, workdir=tmp_path)
    try:
        central = net.start(
            "central",
            "EV_Central",
            str(CENTRAL_PORT),
            kafka,
            "--db",
            db_url,
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
            env=pg_env,
            netns=a.netns,
        )
        wait_until(
            lambda: cp_state(a, "ALC01") == "Desconectado", 40, what=central.output()[-2000:]
        )
        registry = net.start(
            "registry",
            "EV_Registry",
            "--host",
            c.address,
            "--port",
            str(REGISTRY_PORT),
            "--db",
            db_url,
            "--cert",
            str(tmp_path / "certs" / "server.pem"),
            "--key",
            str(tmp_path / "certs" / "server.key"),
            "--admin-token",
            TOKEN,
            env=pg_env,
            netns=c.netns,
        )
        registry.wait_for("EV_Registry on https://", timeout=40)
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
                f"monitor-{cp}",
                "EV_CP_M",
                link,
                f"{a.address}:{CENTRAL_PORT}",
                cp,
                "--registry",
                registry_url,
                "--ca-file",
                str(tmp_path / "certs" / "ca.pem"),
                "--location",
                f"Alicante - host B {i}",
                "--price",
                "0.35",
                "--register",
                netns=b.netns,
            )
        for cp in monitors:
            monitors[cp].wait_for("registered at the Registry", timeout=40)
            wait_until(lambda cp=cp: cp_state(a, cp) == "Activado", 30, what=net.tails())
        # Registered on C, stored in A's PostgreSQL, authenticated at A: one database, two hosts.
        audit = http_in(a, "GET", f"http://{a.address}:{HTTP_PORT}/api/audit?cp=ALC01", TOKEN)
        actions = {row["action"] for row in audit[1]} if isinstance(audit[1], list) else set()
        assert {"registry.registered", "auth.ok"} <= actions, audit
        ips = {row["action"]: row["ip"] for row in audit[1]} if isinstance(audit[1], list) else {}
        assert ips["auth.ok"] == b.address  # the CP's host, as Central saw it
        assert ips["registry.registered"] == b.address  # as the Registry on C saw it

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
        run_in(a, str(BIN / "evcharging"), "postgres", "stop", "--data-dir", str(pg_dir))
        shutil.rmtree(pg_dir, ignore_errors=True)
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
