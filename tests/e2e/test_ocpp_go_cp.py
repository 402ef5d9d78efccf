"""Issue 16's proof by somebody else's charger: ocpp-go v0.19.0's example 1.6 charge point, built
from the Go module proxy (scripts/build-ocpp-go-cp.sh), runs its whole scripted session against
EV_OCPP: boot, status, the Security-extension messages, Authorize, StartTransaction, five
MeterValues, StopTransaction. It exits on any CALLERROR, so every message must be answered.

It cannot send HTTP Basic credentials (gorilla/websocket refuses user:password in a URL), so it
connects as OCPP security profile 3: wss with a client certificate from the project's CA whose
common name is its CP id, and the CP's Registry secret enrolled in the gateway's credentials
folder. Its idTag is "12345": the seed has that driver.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from evcharging.ops import certs
from tests.support.credentials import provision
from tests.support.ocpp_go import go_cp, go_cp_binary
from tests.support.processes import SAMPLE, Network, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

CP = "GOCP01"
DRIVER = "12345"  # the example's dummyClientIdTag


def seed_with_go_driver(workdir: Path) -> Path:
    network = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    network["drivers"].append({"id": DRIVER, "name": "Go", "balance_eur": "50.00"})
    path = workdir / "seed.yaml"
    path.write_text(yaml.safe_dump(network), encoding="utf-8")
    return path


def test_the_ocpp_go_example_charge_point_runs_its_whole_session(
    network: Network, tmp_path: Path
) -> None:
    net = network
    go_cp_binary()  # built first (make ocpp-go-cp), so the timings below are the run alone
    net.central(seed=seed_with_go_driver(net.workdir))
    provision(net.db_path, net.workdir, CP)  # type: ignore[arg-type]  # registered + enrolled
    folder = tmp_path / "certs"
    certs.init(folder)
    client = certs.issue_client(folder, CP)
    gateway = net.ocpp_gateway(
        "--tls-cert",
        str(folder / "server.pem"),
        "--tls-key",
        str(folder / "server.key"),
        "--client-ca",
        str(folder / "ca.pem"),
    )
    driver = net.driver(DRIVER)  # the driver's app, following its own messages
    driver.wait_for("reading its messages", timeout=30)
    before = Decimal(net.balance(DRIVER))
    with go_cp(
        net.workdir,
        CP,
        f"wss://127.0.0.1:{net.ocpp_port}/",
        ca=folder / "ca.pem",
        cert=client.cert,
        key=client.key,
    ) as charger:
        net.wait_state(CP, "Activado", timeout=30)  # what the admin dashboard shows
        ended = wait_until(
            lambda: [s for s in net.sessions(cp_id=CP) if s.get("ended_at")],
            90,
            "the Go CP's ticket",
        )
        driver.wait_for(f"TICKET driver={DRIVER} cp={CP}", timeout=30)
        assert charger.alive, f"the Go CP gave up:\n{charger.output()[-2000:]}"
    assert "level=fatal" not in charger.output()
    assert "level=error" not in charger.output()
    session = ended[0]
    assert session["driver_id"] == DRIVER
    assert Decimal(session["energy_kwh"]) == Decimal("0.052")  # meterStop 52 - meterStart 0 Wh
    assert Decimal(net.balance(DRIVER)) == before - Decimal(session["amount_eur"])
    gateway_log = gateway.output()
    assert " ERROR " not in gateway_log, gateway_log[-3000:]
    assert "transaction" in gateway_log
    assert "ended (unplugged)" in gateway_log
