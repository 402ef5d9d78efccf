"""The statement's three-host layout (Release 2), for real: host A (PC1) runs Kafka, EV_Central
(API_Central over HTTPS), the PostgreSQL database and the public front; host B (PC2) two charging
points, EV_W and the weather provider (the local stand-in for OpenWeather); host C (PC3) two
drivers and EV_Registry; each in its own network namespace with its own address.  The Registry on
C and Central on A share the PostgreSQL database on A; the CPs on B register at the Registry over
HTTPS (verifying it against the network's CA) and authenticate at Central with the credentials
they got; EV_W on B tells Central on A of a freezing city over HTTPS with its own token.  A real
OCPP 1.6J charger (ocpp-go's example CP, security profile 3) on C joins through EV_OCPP on B, which
dials Central's socket and Kafka on A: its session runs alongside the rest and is checked at the
end.  Every component is given only the other hosts' addresses; nothing crosses through
localhost."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from evcharging.ops import certs
from tests.support.netns import BIN, Host, can_make_namespaces, http_in, run_in, three_hosts
from tests.support.ocpp_go import go_cp_binary, go_cp_env
from tests.support.postgres import scratch_dir
from tests.support.processes import SAMPLE, Network, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

KAFKA_PORT, CONTROLLER_PORT, CENTRAL_PORT, HTTP_PORT = 9092, 9093, 7000, 8000
PG_PORT, REGISTRY_PORT, WEATHER_PORT, FRONT_PORT = 5433, 8443, 8081, 8080
OCPP_PORT = 9000
GO_CP, GO_DRIVER = "GOCP01", "12345"  # the Go charger's idTag is "12345": a driver of the seed
TOKEN = "three-hosts-token"
WEATHER_TOKEN = "three-hosts-weather-token"


@pytest.fixture
def hosts() -> Iterator[dict[str, Host]]:
    if os.geteuid() != 0:
        pytest.skip("the three-host test makes network namespaces: it needs root")
    why = can_make_namespaces()
    if why is not None:
        pytest.skip(why)
    with three_hosts() as made:
        yield made


CA: list[Path] = []  # the network's CA certificate, once made


def api(a: Host) -> str:
    return f"https://{a.address}:{HTTP_PORT}"


def cp_view(a: Host, cp_id: str, on: Host | None = None) -> dict[str, object]:
    """The CP as API_Central v1 shows it to anyone, asked from host `on` (default A)."""
    status, body = http_in(on or a, "GET", f"{api(a)}/api/v1/cps/{cp_id}", cafile=CA[0])
    return body if status == 200 and isinstance(body, dict) else {"state": f"HTTP {status}"}


def cp_state(a: Host, cp_id: str) -> str:
    return str(cp_view(a, cp_id)["state"])


def module_states(a: Host, on: Host) -> dict[str, str]:
    status, body = http_in(on, "GET", f"{api(a)}/api/v1/health", cafile=CA[0])
    assert status == 200, body
    assert isinstance(body, dict)
    return {m["name"]: m["state"] for m in body["modules"]}


def seed_with_go_driver(workdir: Path) -> Path:
    network = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    network["drivers"].append({"id": GO_DRIVER, "name": "Go", "balance_eur": "50.00"})
    path = workdir / "seed.yaml"
    path.write_text(yaml.safe_dump(network), encoding="utf-8")
    return path


def ended_sessions(a: Host, cp_id: str, on: Host) -> list[dict[str, object]]:
    status, body = http_in(on, "GET", f"{api(a)}/api/sessions?cp_id={cp_id}", TOKEN, CA[0])
    assert status == 200, body
    assert isinstance(body, list)
    return [s for s in body if s.get("ended_at")]


def set_cities(cities: Path, text: str) -> None:
    """As an operator edits the weather service's file: in one step (it re-reads on change)."""
    tmp = cities.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(cities)


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
    certs.issue(tmp_path / "certs", "central", ips=[a.address])  # API_Central over HTTPS
    certs.issue(tmp_path / "certs", "ocpp", ips=[b.address])  # EV_OCPP's wss on B
    charger = certs.issue_client(tmp_path / "certs", GO_CP)  # the Go charger's (profile 3)
    go_cp = go_cp_binary()  # built before anything starts (make ocpp-go-cp)
    CA[:] = [tmp_path / "certs" / "ca.pem"]
    registry_url = f"https://{c.address}:{REGISTRY_PORT}"
    ocpp_dir = tmp_path / "ocpp"  # EV_OCPP's folder on B: credentials, state, audit file
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
            "--https-cert",
            str(tmp_path / "certs" / "central.pem"),
            "--https-key",
            str(tmp_path / "certs" / "central.key"),
            "--registry-url",
            registry_url,
            "--registry-ca-file",
            str(CA[0]),
            "--ui",
            "plain",
            "--seed",
            str(seed_with_go_driver(tmp_path)),
            env={**pg_env, "EV_WEATHER_TOKEN": WEATHER_TOKEN},
            netns=a.netns,
        )
        # EV_OCPP on B needs only Kafka until a charger logs in: it starts while Central does.
        gateway = net.start(
            "ocpp",
            "EV_OCPP",
            kafka,
            f"{a.address}:{CENTRAL_PORT}",
            "--listen",
            f"{b.address}:{OCPP_PORT}",
            "--tls-cert",
            str(tmp_path / "certs" / "ocpp.pem"),
            "--tls-key",
            str(tmp_path / "certs" / "ocpp.key"),
            "--client-ca",
            str(CA[0]),
            "--credentials-dir",
            str(ocpp_dir / "credentials"),
            "--state-dir",
            str(ocpp_dir / "state"),
            "--audit-file",
            str(ocpp_dir / "audit.jsonl"),
            "--retry-interval",
            "1",
            netns=b.netns,
        )
        wait_until(
            lambda: cp_state(a, "ALC01") == "Desconectado", 40, what=central.output()[-2000:]
        )
        # The real charger's CP: enrolled by the operator on A in the shared database; its
        # secret goes to EV_OCPP's credentials folder on B (copied there, in real life).
        enrolled = run_in(
            a,
            str(BIN / "evcharging"),
            "cp",
            "enrol",
            GO_CP,
            "--db",
            db_url,
            "--location",
            "Alicante - host B OCPP",
            "--price",
            "0.35",
            "--credentials",
            str(ocpp_dir / "credentials" / f"cp-{GO_CP}.json"),
            "--registry",
            registry_url,
            env=pg_env,
        )
        assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
        # The Go charger on C dials EV_OCPP on B; its ~35 s session runs while the rest goes on.
        gateway.wait_for("OCPP 1.6J central system at", timeout=40)
        go = net.start(
            f"ocpp-go-{GO_CP}",
            str(go_cp),  # an absolute path: Network.start runs it as it is
            env=go_cp_env(
                GO_CP,
                f"wss://{b.address}:{OCPP_PORT}",
                ca=CA[0],
                cert=charger.cert,
                key=charger.key,
            ),
            netns=c.netns,
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
        audit = http_in(a, "GET", f"{api(a)}/api/audit?cp=ALC01", TOKEN, CA[0])
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
        url = f"{api(a)}/api/cps/ALC02"
        assert http_in(a, "POST", f"{url}/simulate-error", TOKEN, CA[0])[0] == 200
        second.wait_for("ERROR EN CP cp=ALC02")
        second.wait_for("TICKET driver=D002 cp=ALC02")
        assert http_in(a, "POST", f"{url}/fix-error", TOKEN, CA[0])[0] == 200
        second.wait_for("CP FIXED cp=ALC02")
        wait_until(lambda: cp_state(a, "ALC02") == "Activado", 10)

        # The weather office on B: its provider on B, Central on A over HTTPS with its token.
        cities = tmp_path / "cities.yaml"
        cities.write_text("Alicante: 15\nTeruel: 6\n", encoding="utf-8")
        (tmp_path / "locations.yaml").write_text("ALC01: Alicante\nALC02: Teruel\n")
        token_file = tmp_path / "weather.token"
        token_file.write_text(WEATHER_TOKEN + "\n", encoding="utf-8")
        token_file.chmod(0o600)
        net.start(
            "weather-service",
            "EV_WeatherService",
            "--host",
            b.address,
            "--port",
            str(WEATHER_PORT),
            "--cities",
            str(cities),
            netns=b.netns,
        ).wait_for("EV_WeatherService on http://", timeout=40)
        net.start(
            "ev-w",
            "EV_W",
            "--central",
            api(a),
            "--ca-file",
            str(CA[0]),
            "--token-file",
            str(token_file),
            "--locations",
            str(tmp_path / "locations.yaml"),
            "--provider",
            f"http://{b.address}:{WEATHER_PORT}",
            netns=b.netns,
        )
        # The front on A, for a browser on any host: it points pages at API_Central.
        net.start(
            "front",
            "EV_Front",
            "--central",
            api(a),
            "--host",
            a.address,
            "--port",
            str(FRONT_PORT),
            netns=a.netns,
        ).wait_for("EV_Front on http://", timeout=40)
        front = http_in(c, "GET", f"http://{a.address}:{FRONT_PORT}/config.json")
        assert front == (200, {"central": api(a)})
        # From host C, API_Central shows every module up: EV_W (B) reports, the Registry (C)
        # answers Central's probe (A), Kafka (A).
        wait_until(
            lambda: all(
                module_states(a, on=c).get(m) == "up"
                for m in ("kafka", "registry", "ev_w", "weather_provider")
            ),
            30,
            what=net.tails(),
        )
        set_cities(cities, "Alicante: 15\nTeruel: -3\n")
        wait_until(lambda: cp_state(a, "ALC02") == "Parado", 30, what=net.tails())
        frozen = cp_view(a, "ALC02", on=c)
        assert frozen["stop_reason"] == "weather alert"
        assert frozen["weather"] == {"city": "Teruel", "temperature_c": -3.0}
        alert = http_in(a, "GET", f"{api(a)}/api/audit?action=weather.alert", TOKEN, CA[0])[1]
        assert isinstance(alert, list)
        assert alert[0]["ip"] == b.address  # EV_W's host
        set_cities(cities, "Alicante: 15\nTeruel: 4\n")
        wait_until(lambda: cp_state(a, "ALC02") == "Activado", 30, what=net.tails())

        # Killing host B's Monitor shows its CP Desconectado at Central.
        monitors["ALC01"].kill()
        wait_until(lambda: cp_state(a, "ALC01") == "Desconectado", 5, what=central.output()[-2000:])

        # The real charger (C) through EV_OCPP (B): its session billed at Central (A), read from C.
        ended = wait_until(lambda: ended_sessions(a, GO_CP, on=c), 60, what=net.tails())
        assert go.alive, f"the Go charger gave up:\n{go.output()[-2000:]}"
        assert "level=fatal" not in go.output()
        assert "level=error" not in go.output()
        assert ended[0]["driver_id"] == GO_DRIVER
        assert Decimal(str(ended[0]["energy_kwh"])) == Decimal("0.052")  # meterStop 52 Wh - 0
        wait_until(lambda: cp_view(a, GO_CP, on=c)["state"] == "Activado", 10, what=net.tails())
        driver = http_in(c, "GET", f"{api(a)}/api/drivers/{GO_DRIVER}", TOKEN, CA[0])[1]
        assert isinstance(driver, dict)
        paid = Decimal(str(ended[0]["amount_eur"]))
        assert paid > 0
        assert Decimal(str(driver["balance_eur"])) == Decimal("50.00") - paid
        assert " ERROR " not in gateway.output(), gateway.output()[-3000:]
        # Central saw the CP log in from the gateway's host; the gateway saw the charger's.
        audit = http_in(a, "GET", f"{api(a)}/api/audit?cp={GO_CP}", TOKEN, CA[0])
        assert isinstance(audit[1], list), audit
        assert {r["ip"] for r in audit[1] if r["action"] == "auth.ok"} == {b.address}
        rows = [json.loads(line) for line in (ocpp_dir / "audit.jsonl").read_text().splitlines()]
        boots = [r for r in rows if r["action"] == "ocpp.boot" and r["cp_id"] == GO_CP]
        assert {r["ip"] for r in boots} == {c.address}, rows  # one boot at least, all from C
        assert all(r["outcome"] == "ok" for r in boots), boots
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
