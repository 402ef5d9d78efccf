"""Release 2, part 1, end to end: real processes, real TLS, the real socket exchange.

A CP registers at EV_Registry over HTTPS (its Monitor verifies the certificate against the
network's CA), gets credentials, authenticates at Central and supplies; a Monitor given another
CA is refused before it sends anything.  Unregistered, deregistered and wrong-secret CPs are
denied with their reason, each attempt is in the audit log with its IP, nothing is supplied, and a
capture of the socket traffic holds no secret.  A scripted run leaves an audit row of every kind
the issue lists.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import httpx
import pytest

from evcharging.adapters.credentials_file import StoredCredentials, default_path, load, save
from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.contracts.frames import NACK, encode
from evcharging.ops import certs
from evcharging.services.cp_auth import b64, new_secret
from tests.support.credentials import provision
from tests.support.processes import Network, Proc, wait_until
from tests.support.relay import relay_to

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


class Registry:
    """EV_Registry as a process, over HTTPS with the network's own CA."""

    def __init__(self, net: Network, folder: Path) -> None:
        certs.init(folder, hosts=["localhost"], ips=["127.0.0.1"])
        self.ca = folder / "ca.pem"
        self.proc, self.port = net.registry(folder)
        self.url = f"https://127.0.0.1:{self.port}"
        self.tls = ssl.create_default_context(cafile=str(self.ca))

    def get(self, cp_id: str) -> httpx.Response:
        return httpx.get(f"{self.url}/api/registry/cps/{cp_id}", verify=self.tls, timeout=10)

    def monitor_flags(self, location: str = "Elche - Centro", price: str = "0.41") -> list[str]:
        return [
            "--registry",
            self.url,
            "--ca-file",
            str(self.ca),
            "--location",
            location,
            "--price",
            price,
        ]


def secret_of(net: Network, cp_id: str) -> str:
    creds = load(net.workdir / default_path(cp_id))
    assert creds is not None
    return creds.secret


def database_bytes(net: Network) -> bytes:
    assert net.db_path is not None
    files = [net.db_path, Path(f"{net.db_path}-wal")]
    return b"".join(p.read_bytes() for p in files if p.exists())


def test_a_cp_registers_over_https_authenticates_and_supplies(
    network: Network, tmp_path: Path
) -> None:
    net = network
    net.central()
    registry = Registry(net, tmp_path / "certs")
    engine = net.engine("ELX01", "--auto-plug", "--supply-seconds", "3")
    engine.wait_for("waiting for the Monitor on", timeout=30)
    monitor = net.monitor("ELX01", *registry.monitor_flags(), "--register", register=False)
    monitor.wait_for("registered at the Registry", timeout=30)
    engine.wait_for("CP id set by the Monitor", timeout=30)
    cp = net.wait_state("ELX01", "Activado")
    assert cp["location"] == "Elche - Centro"

    secret = secret_of(net, "ELX01")
    creds_file = net.workdir / default_path("ELX01")
    assert creds_file.stat().st_mode & 0o777 == 0o600
    stored = database_bytes(net)
    assert secret.encode() not in stored, "the database holds the secret itself"
    repo = SqliteRepository(net.db_path or "")
    try:
        verifier = repo.get_verifier("ELX01")
    finally:
        repo.close()
    assert verifier is not None
    assert verifier.kdf.n >= 2**15

    driver = net.driver("D001", "--cp", "ELX01")
    driver.wait_for("AUTHORISED driver=D001 cp=ELX01")
    driver.wait_for("TICKET driver=D001 cp=ELX01", timeout=40)

    # A Monitor that trusts another CA refuses this Registry before sending anything.
    certs.init(tmp_path / "other-ca")
    other = net.monitor(
        "ELX02",
        *registry.monitor_flags(),
        "--ca-file",
        str(tmp_path / "other-ca" / "ca.pem"),
        "--register",
        register=False,
    )
    wait_until(lambda: not other.alive, 30, what=other.output())
    assert other.popen.returncode == 1
    assert "certificate" in other.output()
    assert registry.get("ELX02").status_code == 404
    assert "ELX02" not in registry.proc.output()


def _denied(proc: Proc, reason: str) -> None:
    proc.wait_for(reason, timeout=30)


def test_unregistered_deregistered_and_wrong_secret_cps_are_denied_audited_and_never_leak(
    network: Network, tmp_path: Path
) -> None:
    """The scripted run of the issue's acceptance: every denial is audited with its IP, nothing
    is supplied, the capture holds no secret, and every kind of audit row of §3 is there."""
    net = network
    net.central()
    registry = Registry(net, tmp_path / "certs")
    with relay_to(("127.0.0.1", net.central_port)) as relay:
        via_relay = f"127.0.0.1:{relay.port}"

        # 1. A CP that registers at the Registry and supplies: auth.ok, registry.registered.
        engine = net.engine("ELX01", "--auto-plug", "--supply-seconds", "30")
        engine.wait_for("waiting for the Monitor on", timeout=30)
        good = net.monitor(
            "ELX01", *registry.monitor_flags(), "--register", register=False, central=via_relay
        )
        net.wait_state("ELX01", "Activado", timeout=40)
        secrets_seen = {secret_of(net, "ELX01")}

        # 2. Never registered: a credentials file for an id nobody registered.
        save(net.workdir / default_path("GHOST1"), StoredCredentials("GHOST1", new_secret()))
        secrets_seen.add(secret_of(net, "GHOST1"))
        ghost = net.monitor("GHOST1", "--denied-retry", "0.3", register=False, central=via_relay)
        _denied(ghost, "not registered at the Registry")

        # 3. Wrong secret: ALC01 is registered, its Monitor holds another secret; it retries
        #    until the throttle refuses it unheard.
        assert net.db_path is not None
        real = provision(net.db_path, net.workdir, "ALC01")
        secrets_seen.add(real.secret)
        wrong = StoredCredentials("ALC01", new_secret())
        save(net.workdir / default_path("ALC01"), wrong)
        secrets_seen.add(wrong.secret)
        guesser = net.monitor("ALC01", "--denied-retry", "0.3", register=False, central=via_relay)
        _denied(guesser, "wrong credentials")
        _denied(guesser, "too many failed attempts")

        # 4. Deregistered: VLC01 registers, then deregisters from its own menu; an old copy of
        #    its secret is refused afterwards.
        vlc_engine = net.engine("VLC01")
        vlc_engine.wait_for("waiting for the Monitor on", timeout=30)
        vlc = net.monitor(
            "VLC01",
            *registry.monitor_flags("Valencia - Puerto", "0.33"),
            "--register",
            "--denied-retry",
            "0.3",
            register=False,
            central=via_relay,
        )
        net.wait_state("VLC01", "Activado", timeout=40)
        old = load(net.workdir / default_path("VLC01"))
        assert old is not None
        secrets_seen.add(old.secret)
        vlc.send("D")
        vlc.wait_for("deregistered from the Registry", timeout=30)
        net.wait_state("VLC01", "Desconectado", timeout=20)
        save(net.workdir / default_path("VLC01"), old)  # a thief's copy of the old file
        vlc.send("A")
        _denied(vlc, "not registered at the Registry")

        # 5. Nothing is supplied at a denied CP, not even from the CP's own menu (its Engine,
        #    told Central is not reachable for it, refuses before asking).
        vlc_engine.send("s D003")
        vlc_engine.wait_for("request for driver D003 refused", timeout=30)
        for cp_id in ("GHOST1", "ALC01", "VLC01"):
            refused = net.driver("D002", "--cp", cp_id, name=f"driver-at-{cp_id}")
            refused.wait_for("DENIED driver=D002", timeout=30)
            refused.terminate()
        for cp_id in ("GHOST1", "ALC01", "VLC01"):
            assert net.sessions(cp_id=cp_id) == []

        # 6. The rest of §3: a supply interrupted by a fault, admin actions (done and refused),
        #    a CP blocked and unblocked, a driver denied, a rejected frame.
        driver = net.driver("D001", "--cp", "ELX01")
        driver.wait_for("PROGRESS driver=D001 cp=ELX01", timeout=30)
        engine.send("k")
        driver.wait_for("charging interrupted", timeout=30)
        engine.send("r")
        net.wait_state("ELX01", "Activado", timeout=20)
        assert net.admin("/api/cps/ELX01/stop").status_code == 200
        assert net.admin("/api/cps/ELX01/resume").status_code == 200
        assert net.admin("/api/cps/ELX01/stop", token="not-the-token").status_code == 401
        unknown = net.driver("NOBODY", "--cp", "ELX01", name="driver-nobody")
        unknown.wait_for("DENIED driver=NOBODY", timeout=30)
        frame = bytearray(encode("HB", "ELX01", "OK"))
        frame[-1] ^= 0xFF  # a corrupt LRC
        with socket.create_connection(("127.0.0.1", net.central_port), timeout=5) as sock:
            sock.sendall(bytes(frame))
            assert sock.recv(1) == bytes([NACK])

        capture = relay.bytes()
    assert good.alive

    # Every denial is audited with the CP's IP.
    for cp_id, why in (
        ("GHOST1", "not registered"),
        ("ALC01", "wrong credentials"),
        ("VLC01", "not registered"),
    ):
        rows = wait_until(
            lambda cp_id=cp_id: net.audit(cp=cp_id, action="auth.failed"), 10, what=cp_id
        )
        assert any(why in r["detail"] for r in rows), rows
        assert {r["ip"] for r in rows} == {"127.0.0.1"}
    assert net.audit(cp="ALC01", action="auth.throttled")

    # Every kind of row the issue lists, from this one run.
    kinds = {
        "auth.ok",
        "auth.failed",
        "auth.throttled",
        "registry.registered",
        "registry.deregistered",
        "cp.state",
        "cp.blocked",
        "cp.unblocked",
        "supply.incident",
        "driver.denied",
        "admin.action",
        "admin.refused",
        "message.rejected",
    }
    for kind in sorted(kinds):
        rows = wait_until(lambda kind=kind: net.audit(action=kind), 10, what=f"audit {kind}")
        assert all(r["at"] and r["actor"] and r["ip"] for r in rows), rows
    admin_rows = net.audit(action="admin.refused")
    assert any(r["ip"] == "127.0.0.1" for r in admin_rows)

    # Nothing secret on the wire, in the audit log or in any program's output.
    assert b"PROOF#" in capture
    assert b"CHALLENGE#" in capture
    everything = [capture, database_bytes(net)]
    everything += [p.output().encode() for p in net.procs]
    everything += [f.read_bytes() for f in net.workdir.rglob("*audit*.jsonl")]
    for secret in secrets_seen:
        for blob in everything:
            assert secret.encode() not in blob
    repo = SqliteRepository(net.db_path or "")
    try:
        verifier = repo.get_verifier("ELX01")
    finally:
        repo.close()
    assert verifier is not None
    assert b64(verifier.stored_key).encode() not in capture
    assert b64(verifier.server_key).encode() not in capture
    assert net.admin_token.encode() not in b"".join(everything[1:])
