"""EV_CP_M and EV_Registry over real HTTPS: alta, baja, the credentials file, the refusals.

The Registry is the real one: `adapters.web.registry_api` over a `RegistryService` (SQLite in
tmp_path, its audit log, a `FailureThrottle`), served by uvicorn with TLS, its certificates made
by `ops.certs` (the network's own CA).  Where a test is about the Monitor's Central link, the link
is the real `CentralLinkLoop` against a real Central's Monitor side (`MonitorServer`,
`CentralService`, `CPLogin`) on loopback, reading the verifiers from the same database the
Registry writes, as the two programs do.
"""

from __future__ import annotations

import asyncio
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from evcharging.adapters import credentials_file
from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.adapters.registry_client import RegistryClient, RegistryError, registry_url
from evcharging.adapters.sockets.central_server import MonitorServer
from evcharging.adapters.sockets.monitor_links import Timing
from evcharging.adapters.web.registry_api import create_app
from evcharging.apps import cp_monitor
from evcharging.apps.cp_monitor import MonitorApp, MonitorSettings
from evcharging.domain.throttle import FailureThrottle
from evcharging.ops import certs
from evcharging.services.audit import Audit, AuditQuery
from evcharging.services.central import CentralService
from evcharging.services.central_keys import CentralKeys
from evcharging.services.cp_auth import secret_matches
from evcharging.services.cp_keys import MasterKey
from evcharging.services.cp_login import CPLogin
from evcharging.services.monitor import CentralLink
from evcharging.services.registry import Caller, RegistryService
from tests.support.builders import a_cp
from tests.support.fakes import RecordingPublisher
from tests.support.ports import free_port
from tests.support.waiting import eventually, eventually_sync

LOCAL = "127.0.0.1"
FROZEN = 1000.0  # the Registry's throttle clock: a wait it imposes is exactly what it says

# --- certificates (ops.certs: the network's CA and the Registry's server certificate) --------


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def make_pki(folder: Path) -> Pki:
    """`evcharging certs init`: a CA and the certificate `server` for localhost, 127.0.0.1."""
    certs.init(folder)
    where = certs.CertFolder(folder)
    return Pki(ca=where.ca_pem, cert=where.pem("server"), key=where.key("server"))


# --- the Registry (the real app over the real service) ----------------------------------------


class Registry:
    """EV_Registry's service and app; `seen` is every HTTP request that reached the app."""

    def __init__(self, db: Path) -> None:
        self.repo = SqliteRepository(db)
        # 2 free failures, then 30 s: the third wrong secret makes the fourth attempt wait 30 s
        throttle = FailureThrottle(free=2, first=30.0, cap=60.0)
        self.service = RegistryService(
            self.repo, Audit([self.repo]), throttle, clock=lambda: FROZEN
        )
        self.seen: list[tuple[str, str]] = []
        self._app = create_app(self.service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self._app(scope, receive, send)

    def secret_is_current(self, cp_id: str, secret: str) -> bool:
        verifier = self.repo.get_verifier(cp_id)
        return verifier is not None and secret_matches(verifier, secret)

    def registered(self, cp_id: str) -> bool:
        view = self.service.get(cp_id)
        return view is not None and view.registered


class TlsServer:
    """uvicorn with TLS in a thread of its own (its own event loop)."""

    def __init__(self, app: ASGIApp, pki: Pki) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=LOCAL,
                port=self.port,
                ssl_certfile=str(pki.cert),
                ssl_keyfile=str(pki.key),
                log_level="warning",
                lifespan="off",
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="registry", daemon=True)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def __enter__(self) -> TlsServer:
        self.thread.start()
        eventually_sync(lambda: self.server.started, what="the HTTPS server started")
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The network's database, shared by the Registry and Central."""
    return tmp_path / "network.db"


@pytest.fixture
def registry(db: Path) -> Iterator[Registry]:
    reg = Registry(db)
    yield reg
    reg.repo.close()


@pytest.fixture
def server(registry: Registry, pki: Pki) -> Iterator[TlsServer]:
    with TlsServer(registry, pki) as running:
        yield running


@pytest.fixture
def client(server: TlsServer, pki: Pki) -> RegistryClient:
    return RegistryClient(server.url, pki.ca, timeout=10)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the client ----------------------------------------------------------------------------------


async def test_register_lookup_and_deregister_over_https(
    client: RegistryClient, registry: Registry
) -> None:
    made = await client.register("CP01", "Calle Mayor 1", Decimal("0.40"))

    assert (made.cp_id, made.location, made.price_eur_per_kwh) == (
        "CP01",
        "Calle Mayor 1",
        Decimal("0.40"),
    )
    assert registry.secret_is_current("CP01", made.secret)
    assert made.secret not in repr(made)
    found = await client.lookup("CP01")
    assert found is not None
    assert found.registered
    assert await client.lookup("NOPE") is None

    await client.deregister("CP01", made.secret)
    found = await client.lookup("CP01")
    assert found is not None
    assert not found.registered


async def test_a_registered_cp_is_409_unless_it_proves_it_then_gets_a_new_secret(
    client: RegistryClient,
) -> None:
    first = await client.register("CP02", "A", "0.30")
    with pytest.raises(RegistryError, match="already registered: deregister first or prove it"):
        await client.register("CP02", "B", "0.35")

    again = await client.register("CP02", "B", "0.35", proof=first.secret)

    assert again.secret != first.secret
    assert again.location == "B"


async def test_wrong_secrets_are_401_then_429_with_retry_after(client: RegistryClient) -> None:
    await client.register("CP03", "A", "0.30")
    for _ in range(3):
        with pytest.raises(RegistryError, match="refused CP03's credentials") as wrong:
            await client.deregister("CP03", "not-the-secret")
        assert wrong.value.status == 401
        assert "not-the-secret" not in str(wrong.value)

    with pytest.raises(RegistryError) as throttled:
        await client.register("CP03", "A", "0.30", proof="not-the-secret")

    assert str(throttled.value) == "too many failed attempts at the Registry; try again in 30 s"
    assert throttled.value.retry_after == 30


async def test_a_refused_field_is_named(client: RegistryClient) -> None:
    with pytest.raises(RegistryError) as refused:
        await client.register("CP04", "A", "500")
    assert refused.value.status == 422
    assert str(refused.value).startswith("the Registry refused a field: price_eur_per_kwh: ")
    assert "\n" not in str(refused.value)


async def test_deregistering_an_unknown_cp_says_it_is_not_registered(
    client: RegistryClient,
) -> None:
    with pytest.raises(RegistryError, match="CP05 is not registered at the Registry"):
        await client.deregister("CP05", "whatever")


async def test_a_server_signed_by_another_ca_is_refused_before_anything_is_sent(
    server: TlsServer, registry: Registry, tmp_path: Path
) -> None:
    other = make_pki(tmp_path / "other")
    client = RegistryClient(server.url, other.ca, timeout=10)

    with pytest.raises(RegistryError) as refused:
        await client.register("CP06", "A", "0.30", proof="a-secret-that-must-not-leave")

    reason = str(refused.value)
    assert reason.startswith(f"the Registry's certificate is not trusted (CA file {other.ca}): ")
    assert "\n" not in reason
    assert registry.seen == []  # not even the request line reached the server


async def test_the_system_cas_do_not_trust_a_private_ca_either(server: TlsServer) -> None:
    with pytest.raises(RegistryError, match=r"not trusted \(the system's CAs\)"):
        await RegistryClient(server.url, None, timeout=10).lookup("CP07")


async def test_http_is_refused_before_any_connection() -> None:
    with pytest.raises(RegistryError, match="HTTPS only"):
        RegistryClient("http://127.0.0.1:1")
    with pytest.raises(ValueError, match="HTTPS only"):
        registry_url("http://localhost:8443")
    for bad in ("localhost:8443", "https://", "https://h:99999", "https://h:1/api", "ftp://h"):
        with pytest.raises(ValueError, match="https://HOST:PORT"):
            registry_url(bad)
    assert registry_url("https://registry.example:8443/") == "https://registry.example:8443"


async def test_nobody_listening_is_connection_refused(pki: Pki) -> None:
    client = RegistryClient(f"https://127.0.0.1:{free_port()}", pki.ca, timeout=5)
    with pytest.raises(RegistryError, match="connection refused by the Registry at https://"):
        await client.lookup("CP08")


# --- the Monitor ---------------------------------------------------------------------------------


@dataclass
class Central:
    """A real Central's Monitor side on loopback, on the database the Registry writes."""

    server: MonitorServer
    service: CentralService
    repo: SqliteRepository

    @property
    def address(self) -> tuple[str, int]:
        return (LOCAL, self.server.bound_port)

    def auth_rows(self) -> list[tuple[str, str]]:
        """Central's login rows, oldest first: (action, detail)."""
        rows = reversed(self.repo.find_audit(AuditQuery(cp_id="CP10")))
        return [(r.action.value, r.detail) for r in rows if r.action.value.startswith("auth.")]


@pytest.fixture
async def central(db: Path, registry: Registry) -> AsyncIterator[Central]:
    repo = SqliteRepository(db)
    # CP10 exists at Central (added by an admin) but has no credentials: the Registry's alta is
    # what lets it log in (its 201 case for a CP row without credentials)
    a_cp(repo, "CP10", location="Calle Mayor 1")
    keys = CentralKeys(repo, MasterKey(MasterKey.generate()))
    service = CentralService(repo, RecordingPublisher(), heartbeat_timeout=5.0, keys=keys)
    await service.load()
    server = MonitorServer(service, LOCAL, 0, login=CPLogin(repo, Audit([repo])))
    await server.start()
    try:
        yield Central(server, service, repo)
    finally:
        await server.close()
        repo.close()


def settings(server: TlsServer, pki: Pki, tmp_path: Path, **more: Any) -> MonitorSettings:
    """CP10's Monitor; `central` is a real Central's address where the link matters, else a
    port nobody listens on (the Monitor keeps trying, harmlessly), as for the Engine."""
    nowhere = (LOCAL, free_port())  # no Engine: the Monitor keeps checking, harmlessly
    central = more.pop("central", (LOCAL, free_port()))
    values: dict[str, Any] = {
        "location": "Calle Mayor 1",
        "price": "0.40",
        "registry": server.url,
        "ca_file": pki.ca,
        "credentials": tmp_path / "creds" / "cp-CP10.json",
        # timeout: each AUTH round trip, with a real Central on a loaded machine
        "timing": Timing(interval=0.2, timeout=2.0, max_backoff=0.5, denied_retry=0.5),
        "summary_every": 0,
    }
    return MonitorSettings(nowhere, central, "CP10", **{**values, **more})


class Keys:
    """The menu's stdin: lines pushed by the test, closed when it says so."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()

    def press(self, line: str) -> None:
        self.queue.put_nowait(line + "\n")

    def close(self) -> None:
        self.queue.put_nowait(None)

    async def lines(self) -> AsyncIterator[str]:
        while (line := await self.queue.get()) is not None:
            yield line


def said(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


async def test_r_registers_d_deregisters_and_the_link_follows(
    server: TlsServer,
    pki: Pki,
    registry: Registry,
    central: Central,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = MonitorApp(settings(server, pki, tmp_path, central=central.address))
    keys = Keys()
    task = asyncio.create_task(app.run(keys.lines()))
    try:
        await eventually(lambda: said(caplog, cp_monitor.HELP), what="the keys, once")
        assert said(caplog, "not registered: press R to register with the Registry")
        await eventually(
            lambda: app.service.central is CentralLink.NOT_REGISTERED,
            what="an unregistered link, waiting",
        )
        assert not said(caplog, "connected to CENTRAL")  # it does not even connect
        assert central.auth_rows() == []

        keys.press("R")
        path = app.settings.credentials_path
        await eventually(path.exists, what="the credentials file")
        assert mode(path) == 0o600
        stored = credentials_file.load(path)
        assert stored is not None
        assert (stored.cp_id, stored.registry) == ("CP10", server.url)
        assert registry.secret_is_current("CP10", stored.secret)
        await eventually(
            lambda: app.service.central is CentralLink.UP, what="the link AUTHs with the new secret"
        )
        assert central.auth_rows() == [("auth.ok", "proof accepted")]
        assert said(caplog, "registered at the Registry: Calle Mayor 1, 0.40 €/kWh")
        assert not said(caplog, stored.secret)

        caplog.clear()
        keys.press("s")
        await eventually(lambda: said(caplog, "registered since "), what="the status")
        assert said(caplog, f"UTC at {server.url}")

        keys.press("D")
        await eventually(lambda: not path.exists(), what="the credentials file deleted")
        await eventually(
            lambda: app.service.central is CentralLink.NOT_REGISTERED,
            what="the link stops: not registered",
        )
        assert not registry.registered("CP10")
        assert said(caplog, f"deregistered from the Registry; {path} deleted")

        keys.close()  # an unattended Monitor: stdin closed
        await eventually(lambda: said(caplog, "stdin closed"), what="the menu ends")
        assert not task.done()  # ...and the Monitor goes on
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_r_without_a_price_says_what_is_missing_and_sends_nothing(
    server: TlsServer,
    pki: Pki,
    registry: Registry,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = MonitorApp(settings(server, pki, tmp_path, price=""))
    await app.menu.handle("r")
    assert said(caplog, "cannot register: --price not given")
    assert registry.seen == []

    unconfigured = MonitorApp(settings(server, pki, tmp_path, registry=""))
    await unconfigured.menu.handle("R")
    assert said(caplog, "no Registry given: start with --registry https://HOST:PORT")


async def test_r_when_registered_proves_it_and_stores_the_new_secret(
    server: TlsServer, pki: Pki, registry: Registry, tmp_path: Path
) -> None:
    app = MonitorApp(settings(server, pki, tmp_path))
    await app.menu.handle("R")
    path = app.settings.credentials_path
    first = credentials_file.load(path)
    assert first is not None

    await app.menu.handle("R")

    second = credentials_file.load(path)
    assert second is not None
    assert second.secret != first.secret
    assert registry.secret_is_current("CP10", second.secret)
    assert not registry.secret_is_current("CP10", first.secret)
    assert mode(path) == 0o600


async def test_register_at_start_then_deregister_once(
    server: TlsServer,
    pki: Pki,
    registry: Registry,
    central: Central,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = MonitorApp(settings(server, pki, tmp_path, register=True, central=central.address))
    task = asyncio.create_task(app.run(None))
    try:
        await eventually(
            lambda: app.service.central is CentralLink.UP,
            what="registered before the link started, then logged in",
        )
        # the very first AUTH already had the secret: never "not registered", at either end
        assert central.auth_rows() == [("auth.ok", "proof accepted")]
        assert not said(caplog, "not registered")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert await cp_monitor.deregister_once(settings(server, pki, tmp_path, deregister=True)) == 0
    assert not app.settings.credentials_path.exists()
    assert not registry.registered("CP10")


async def test_deregister_once_fails_in_one_line_when_the_registry_is_untrusted(
    server: TlsServer,
    pki: Pki,
    registry: Registry,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = MonitorApp(settings(server, pki, tmp_path))
    await app.menu.handle("R")
    other = make_pki(tmp_path / "other")
    seen = len(registry.seen)

    once = settings(server, pki, tmp_path, ca_file=other.ca, deregister=True)
    assert await cp_monitor.deregister_once(once) == 1

    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [errors[0]]
    assert "cannot deregister: the Registry's certificate is not trusted" in errors[0]
    assert app.settings.credentials_path.exists()  # still registered: the secret is kept
    assert registry.registered("CP10")
    assert len(registry.seen) == seen
    caplog.clear()  # the ERROR line was the point


async def test_register_at_start_that_fails_stops_the_monitor_with_one_line(
    server: TlsServer,
    pki: Pki,
    registry: Registry,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry.service.register("CP10", "Elsewhere", "0.30", Caller.operator())  # someone else's
    app = MonitorApp(settings(server, pki, tmp_path, register=True))

    assert await app.run(None) == 1

    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        "cp=CP10: cannot register: CP10 is already registered: deregister first or prove it "
        "(its credentials file, or an admin)"
    ]
    assert not app.settings.credentials_path.exists()
    caplog.clear()  # the ERROR line was the point
