"""Runs the network's programs as real OS processes for end-to-end tests, and kills them for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.credentials import provision
from tests.support.ports import free_port
from tests.support.waiting import eventually_sync

BIN = Path(sys.executable).parent
SAMPLE = Path(__file__).resolve().parents[2] / "src" / "evcharging" / "data" / "sample_network.yaml"


def run_to_end(
    workdir: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A program run to its exit (a start-up check), its output captured, no stdin."""
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@dataclass
class Proc:
    """One program: its process, its merged output file, and a way to talk to its menu."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, timeout: float = 20.0, after: int = 0) -> int:
        """Wait until `text` appears in the output (past offset `after`); returns the offset after it."""

        def seen() -> int:
            out = self.output()
            at = out.find(text, after)
            return at + len(text) if at >= 0 else 0

        return eventually_sync(
            seen,
            timeout,
            what=f"{self.name} to print {text!r}\n--- output ---\n{self.output()[-3000:]}",
        )

    def count(self, text: str) -> int:
        return self.output().count(text)

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(f"{line}\n".encode())
        self.popen.stdin.flush()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up code runs, as when a terminal is closed or a machine dies."""
        if self.alive:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop_by(self, how: signal.Signals) -> None:
        """Stop it the way a user does: Ctrl+C (SIGINT), SIGTERM, a closed terminal (SIGHUP) or
        SIGKILL; waits until it is gone."""
        if how is signal.SIGKILL:
            self.kill()
            return
        if self.alive:
            self.popen.send_signal(how)
            self.popen.wait(timeout=20)

    def terminate(self) -> None:
        if self.alive:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Network:
    """A whole network on loopback: the broker is given; programs are started on demand."""

    kafka: str
    workdir: Path
    admin_token: str = "test-admin-token"
    procs: list[Proc] = field(default_factory=list)
    central_port: int = 0
    http_port: int = 0
    engine_ports: dict[str, int] = field(default_factory=dict)
    broker: Any = None  # the BrokerConfig, for tests that stop and restart Kafka
    namespace: str = ""  # the Kafka namespace every program of this network uses
    db_path: Path | None = None  # Central's SQLite file, once Central was started
    ocpp_port: int = 0  # EV_OCPP's port, once started

    def start(
        self, name: str, *args: str, env: dict[str, str] | None = None, netns: str | None = None
    ) -> Proc:
        log = self.workdir / f"{name}.log"
        handle = log.open("ab")
        full_env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "EV_LOG_LEVEL": "INFO",
            "EV_KAFKA_NAMESPACE": self.namespace,
            **(env or {}),
        }
        prefix = ["ip", "netns", "exec", netns] if netns else []
        popen = subprocess.Popen(
            [*prefix, str(BIN / args[0]), *args[1:]],
            stdin=subprocess.PIPE,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=full_env,
            start_new_session=True,
        )
        handle.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    # --- the four programs ---------------------------------------------------------------

    def central(self, *extra: str, seed: Path = SAMPLE, db: str = "central.db") -> Proc:
        proc = self.start_central(*extra, seed=seed, db=db)
        eventually_sync(lambda: self._api_up(), 30, what=f"Central's API\n{proc.output()[-2000:]}")
        return proc

    def start_central(self, *extra: str, seed: Path = SAMPLE, db: str = "central.db") -> Proc:
        """EV_Central started, not waited for (same ports, group and database every time)."""
        self.central_port = self.central_port or free_port()
        self.http_port = self.http_port or free_port()
        self.db_path = self.workdir / db
        return self.start(
            "central",
            "EV_Central",
            str(self.central_port),
            self.kafka,
            "--db",
            str(self.workdir / db),
            "--http-port",
            str(self.http_port),
            "--http-host",
            "127.0.0.1",
            "--admin-token",
            self.admin_token,
            "--ui",
            "plain",
            "--seed",
            str(seed),
            "--group-id",
            f"central-{self.workdir.name}",
            *extra,
        )

    def engine(self, cp_id: str, *extra: str) -> Proc:
        port = self.engine_ports.setdefault(cp_id, free_port())
        return self.start(
            f"engine-{cp_id}",
            "EV_CP_E",
            self.kafka,
            f"127.0.0.1:{port}",
            "--state-dir",
            str(self.workdir / "engine-state"),
            *extra,
        )

    def monitor(
        self, cp_id: str, *extra: str, register: bool = True, central: str | None = None
    ) -> Proc:
        """EV_CP_M for `cp_id`, registered first (credentials issued into Central's database and
        written where the Monitor looks for them) unless `register` is False; `central` is the
        address it dials (default Central's own; a relay's in the capture tests)."""
        port = self.engine_ports.setdefault(cp_id, free_port())
        if register:
            assert self.db_path is not None, "start Central before a registered Monitor"
            provision(self.db_path, self.workdir, cp_id)
        return self.start(
            f"monitor-{cp_id}",
            "EV_CP_M",
            f"127.0.0.1:{port}",
            central or f"127.0.0.1:{self.central_port}",
            cp_id,
            *extra,
        )

    def charging_point(self, cp_id: str, *engine_flags: str) -> tuple[Proc, Proc]:
        """Engine first (listening), then its Monitor; ready once the Engine knows its CP id and
        Central shows the CP Activado (no transient state from a Monitor that beat its Engine)."""
        engine = self.engine(cp_id, *engine_flags)
        engine.wait_for("waiting for the Monitor on", timeout=30)
        monitor = self.monitor(cp_id)
        engine.wait_for("CP id set by the Monitor", timeout=30)
        self.wait_state(cp_id, "Activado")
        return engine, monitor

    def registry(self, certs_dir: Path, *extra: str, db: Path | None = None) -> tuple[Proc, int]:
        """EV_Registry over HTTPS on loopback with the certificates in `certs_dir` (made by
        `ops.certs.init`), sharing Central's database unless `db` is given; (process, port),
        once it says it listens."""
        db = db or self.db_path
        assert db is not None, "start Central first, or give the Registry a database"
        port = free_port()
        proc = self.start(
            f"registry-{port}",  # a log of its own: a restarted Registry's lines are its own
            "EV_Registry",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--cert",
            str(certs_dir / "server.pem"),
            "--key",
            str(certs_dir / "server.key"),
            "--db",
            str(db),
            *extra,
            env={"EV_ADMIN_TOKEN": self.admin_token},
        )
        proc.wait_for("EV_Registry on https://", timeout=30)  # its socket listens already
        return proc, port

    def ocpp_gateway(self, *extra: str, port: int | None = None, name: str = "ocpp") -> Proc:
        """EV_OCPP on loopback, talking to this network's Central (start Central first); the
        chargers' URL is `ws://127.0.0.1:{port}/CP_ID` (`ocpp_port`), once it says it serves."""
        assert self.central_port, "start Central before EV_OCPP"
        self.ocpp_port = port or self.ocpp_port or free_port()
        log = self.workdir / f"{name}.log"
        # a restart appends to the same log: its "serves" line is looked for after the last run's
        earlier = len(log.read_text(encoding="utf-8", errors="replace")) if log.exists() else 0
        proc = self.start(
            name,
            "EV_OCPP",
            self.kafka,
            f"127.0.0.1:{self.central_port}",
            "--listen",
            f"127.0.0.1:{self.ocpp_port}",
            "--name",
            f"{name}-{self.workdir.name}",
            "--retry-interval",
            "1",
            *extra,
        )
        proc.wait_for("OCPP 1.6J central system at", timeout=40, after=earlier)
        return proc

    def driver(self, driver_id: str, *extra: str, name: str | None = None) -> Proc:
        return self.start(name or f"driver-{driver_id}", "EV_Driver", self.kafka, driver_id, *extra)

    # --- Central's API ------------------------------------------------------------------

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def auth(self) -> dict[str, str]:
        """The admin token's header: the unversioned `/api/...` is the operator's, reads too."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    def _api_up(self) -> bool:
        try:
            return httpx.get(f"{self.api}/api/cps", headers=self.auth, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.api}{path}", headers=self.auth, timeout=5)
        response.raise_for_status()
        return response.json()

    def admin(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.post(f"{self.api}{path}", headers=headers, timeout=10)

    def cp(self, cp_id: str) -> dict[str, Any]:
        return dict(self.get(f"/api/cps/{cp_id}"))

    def wait_state(self, cp_id: str, state: str, timeout: float = 20.0) -> dict[str, Any]:
        def seen() -> dict[str, Any] | bool:
            response = httpx.get(f"{self.api}/api/cps/{cp_id}", headers=self.auth, timeout=5)
            if response.status_code == 404:  # not registered yet: the Registry's feed adds it
                return False
            response.raise_for_status()
            view = dict(response.json())
            return view["state"] == state and view

        return eventually_sync(
            seen,
            timeout,
            what=f"{cp_id} {state}; procs:\n" + self.tails(),
        )

    def audit(self, **query: str) -> list[dict[str, Any]]:
        """Central's audit rows (newest first), filtered like `GET /api/audit` (cp, action, ip...)."""
        response = httpx.get(
            f"{self.api}/api/audit",
            params={"limit": "500", **query},
            headers=self.auth,
            timeout=10,
        )
        response.raise_for_status()
        body = response.json()
        return list(body["rows"] if isinstance(body, dict) else body)

    def sessions(self, **query: str) -> list[dict[str, Any]]:
        return list(self.get("/api/sessions?" + "&".join(f"{k}={v}" for k, v in query.items())))

    def balance(self, driver_id: str) -> str:
        return str(self.get(f"/api/drivers/{driver_id}")["balance_eur"])

    def tails(self, chars: int = 1500) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.output()[-chars:]}" for p in self.procs)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()


def wait_until(check: Any, timeout: float = 20.0, what: str = "") -> Any:
    return eventually_sync(check, timeout, what=what)


def now() -> float:
    return time.monotonic()
