"""EV_CP_M and EV_Registry over real HTTPS: alta, baja, the credentials file, the refusals.

The server is a real uvicorn with TLS, certificates made here with `cryptography` (a local CA and
a localhost certificate).  STAND-INS UNTIL MERGE (issue 13): `StandInRegistry` implements the
Registry's REST paths exactly as docs ISSUE13 says (to be replaced by the real `registry_api`
app), `make_ca`/`make_server_cert` stand in for `ops/certs.py`, and `StandInCentralLink` for
socketauth's `CentralLinkLoop(service, address, *, credentials, timing, wake)`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import secrets
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from evcharging.adapters import credentials_file
from evcharging.adapters.registry_client import RegistryClient, RegistryError, registry_url
from evcharging.adapters.sockets.monitor_links import Timing
from evcharging.apps import cp_monitor
from evcharging.apps.cp_monitor import MonitorApp, MonitorSettings
from evcharging.contracts.fields import Location, Price
from evcharging.services.cp_auth import Prover
from tests.support.ports import free_port
from tests.support.waiting import eventually, eventually_sync

# --- certificates (stand-in for ops/certs.py) ----------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def make_pki(folder: Path, label: str) -> Pki:
    """A CA and a certificate it signs for localhost and 127.0.0.1."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(f"test CA {label}"))
        .issuer_name(_name(f"test CA {label}"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Pki(
        ca=_write(folder / f"{label}-ca.pem", ca.public_bytes(pem)),
        cert=_write(folder / f"{label}-server.pem", cert.public_bytes(pem)),
        key=_write(
            folder / f"{label}-server.key",
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        ),
    )


# --- the Registry (stand-in for adapters/web/registry_api.py until merge) -----------------------


class Enrol(BaseModel):
    location: Location
    price_eur_per_kwh: Price


@dataclass
class StandInRegistry:
    """The REST paths of ISSUE13.md, in memory; `seen` is every request that reached it."""

    cps: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: list[tuple[str, str, bytes]] = field(default_factory=list)
    failures: int = 0
    free_failures: int = 3

    def app(self) -> FastAPI:
        app = FastAPI()
        reg = self

        @app.middleware("http")
        async def record(request: Request, call_next: Any) -> Response:
            reg.seen.append((request.method, request.url.path, await request.body()))
            response: Response = await call_next(request)
            return response

        def proven(cp: dict[str, Any], authorization: str | None) -> bool | None:
            """None: no proof given; True/False: right or wrong secret."""
            if authorization is None:
                return None
            return authorization == f"CP {cp['secret']}"

        def throttled() -> Response | None:
            if reg.failures >= reg.free_failures:
                return JSONResponse(
                    {"detail": "too many failed attempts"},
                    status_code=429,
                    headers={"Retry-After": "30"},
                )
            return None

        def wrong() -> Response:
            reg.failures += 1
            return JSONResponse({"detail": "wrong credentials"}, status_code=401)

        @app.put("/api/registry/cps/{cp_id}")
        def register(
            cp_id: str, body: Enrol, authorization: Annotated[str | None, Header()] = None
        ) -> Response:
            if (refused := throttled()) is not None:
                return refused
            cp = reg.cps.get(cp_id)
            status = 201
            if cp is not None and cp["registered"]:
                ok = proven(cp, authorization)
                if ok is None:
                    return JSONResponse({"detail": "already registered"}, status_code=409)
                if not ok:
                    return wrong()
                status = 200
            cp = reg.cps[cp_id] = {
                "cp_id": cp_id,
                "location": body.location,
                "price_eur_per_kwh": str(body.price_eur_per_kwh),
                "registered": True,
                "registered_at": dt.datetime.now(dt.UTC).isoformat(),
                "secret": secrets.token_urlsafe(24),
            }
            answer = {k: v for k, v in cp.items() if k != "registered"}
            return JSONResponse(answer, status_code=status)

        @app.delete("/api/registry/cps/{cp_id}")
        def deregister(
            cp_id: str, authorization: Annotated[str | None, Header()] = None
        ) -> Response:
            if (refused := throttled()) is not None:
                return refused
            cp = reg.cps.get(cp_id)
            if cp is None or not cp["registered"]:
                return JSONResponse({"detail": "not registered"}, status_code=404)
            if not proven(cp, authorization):
                return wrong()
            cp["registered"], cp["secret"] = False, None
            return Response(status_code=204)

        @app.get("/api/registry/cps/{cp_id}")
        def lookup(cp_id: str) -> Response:
            cp = reg.cps.get(cp_id)
            if cp is None:
                return JSONResponse({"detail": "unknown CP"}, status_code=404)
            return JSONResponse({k: v for k, v in cp.items() if k != "secret"})

        @app.get("/healthz")
        def healthz() -> dict[str, str]:
            return {"status": "ok"}

        return app


class TlsServer:
    """uvicorn with TLS in a thread of its own (its own event loop)."""

    def __init__(self, app: FastAPI, pki: Pki) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
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
    return make_pki(tmp_path_factory.mktemp("pki"), "good")


@pytest.fixture
def registry() -> StandInRegistry:
    return StandInRegistry()


@pytest.fixture
def server(registry: StandInRegistry, pki: Pki) -> Iterator[TlsServer]:
    with TlsServer(registry.app(), pki) as running:
        yield running


@pytest.fixture
def client(server: TlsServer, pki: Pki) -> RegistryClient:
    return RegistryClient(server.url, pki.ca, timeout=10)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the client ----------------------------------------------------------------------------------


async def test_register_lookup_and_deregister_over_https(
    client: RegistryClient, registry: StandInRegistry
) -> None:
    made = await client.register("CP01", "Calle Mayor 1", Decimal("0.40"))

    assert (made.cp_id, made.location, made.price_eur_per_kwh) == (
        "CP01",
        "Calle Mayor 1",
        Decimal("0.40"),
    )
    assert made.secret == registry.cps["CP01"]["secret"]
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
    server: TlsServer, registry: StandInRegistry, tmp_path: Path
) -> None:
    other = make_pki(tmp_path, "other")
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


class StandInCentralLink:
    """Stand-in for socketauth's CentralLinkLoop until merge: at each (re)AUTH it asks the
    credentials for a Prover, as the real loop does, and records what it got."""

    def __init__(
        self,
        service: Any,
        address: tuple[str, int],
        *,
        credentials: Any,
        timing: Timing | None = None,
        wake: asyncio.Event | None = None,
    ) -> None:
        self.credentials = credentials
        self.provers: list[Prover | None] = []
        self.reauthentications = 0
        self._again = asyncio.Event()

    async def run(self) -> None:
        while True:
            self.provers.append(self.credentials.prover())
            await self._again.wait()
            self._again.clear()

    def reauthenticate(self) -> None:
        self.reauthentications += 1
        self._again.set()

    @property
    def registered(self) -> bool:
        return bool(self.provers) and self.provers[-1] is not None


@pytest.fixture
def stand_in_link(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cp_monitor, "CentralLinkLoop", StandInCentralLink)


def settings(server: TlsServer, pki: Pki, tmp_path: Path, **more: Any) -> MonitorSettings:
    nowhere = ("127.0.0.1", free_port())  # no Engine: the Monitor keeps checking, harmlessly
    values: dict[str, Any] = {
        "location": "Calle Mayor 1",
        "price": "0.40",
        "registry": server.url,
        "ca_file": pki.ca,
        "credentials": tmp_path / "creds" / "cp-CP10.json",
        "timing": Timing(interval=0.2, timeout=0.2, max_backoff=0.2),
        "summary_every": 0,
    }
    return MonitorSettings(nowhere, nowhere, "CP10", **{**values, **more})


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


@pytest.mark.usefixtures("stand_in_link")
async def test_r_registers_d_deregisters_and_the_link_follows(
    server: TlsServer,
    pki: Pki,
    registry: StandInRegistry,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = MonitorApp(settings(server, pki, tmp_path))
    link = app.central_link
    assert isinstance(link, StandInCentralLink)
    keys = Keys()
    task = asyncio.create_task(app.run(keys.lines()))
    try:
        await eventually(lambda: said(caplog, cp_monitor.HELP), what="the keys, once")
        assert said(caplog, "not registered: press R to register with the Registry")
        await eventually(lambda: link.provers == [None], what="an unregistered link, waiting")

        keys.press("R")
        path = app.settings.credentials_path
        await eventually(path.exists, what="the credentials file")
        assert mode(path) == 0o600
        stored = credentials_file.load(path)
        assert stored is not None
        assert (stored.cp_id, stored.registry) == ("CP10", server.url)
        assert stored.secret == registry.cps["CP10"]["secret"]
        await eventually(lambda: link.registered, what="the link AUTHs with the new secret")
        assert said(caplog, "registered at the Registry: Calle Mayor 1, 0.40 €/kWh")
        assert not said(caplog, stored.secret)

        caplog.clear()
        keys.press("s")
        await eventually(lambda: said(caplog, "registered since "), what="the status")
        assert said(caplog, f"UTC at {server.url}")

        keys.press("D")
        await eventually(lambda: not path.exists(), what="the credentials file deleted")
        await eventually(lambda: not link.registered, what="the link stops: not registered")
        assert registry.cps["CP10"]["registered"] is False
        assert said(caplog, f"deregistered from the Registry; {path} deleted")

        keys.close()  # an unattended Monitor: stdin closed
        await eventually(lambda: said(caplog, "stdin closed"), what="the menu ends")
        assert not task.done()  # ...and the Monitor goes on
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.usefixtures("stand_in_link")
async def test_r_without_a_price_says_what_is_missing_and_sends_nothing(
    server: TlsServer,
    pki: Pki,
    registry: StandInRegistry,
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


@pytest.mark.usefixtures("stand_in_link")
async def test_r_when_registered_proves_it_and_stores_the_new_secret(
    server: TlsServer, pki: Pki, registry: StandInRegistry, tmp_path: Path
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
    assert second.secret == registry.cps["CP10"]["secret"]
    assert mode(path) == 0o600


@pytest.mark.usefixtures("stand_in_link")
async def test_register_at_start_then_deregister_once(
    server: TlsServer, pki: Pki, registry: StandInRegistry, tmp_path: Path
) -> None:
    app = MonitorApp(settings(server, pki, tmp_path, register=True))
    task = asyncio.create_task(app.run(None))
    try:
        link = app.central_link
        assert isinstance(link, StandInCentralLink)
        await eventually(lambda: link.registered, what="registered before the link started")
        assert link.provers[0] is not None  # the very first AUTH already has the secret
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert await cp_monitor.deregister_once(settings(server, pki, tmp_path, deregister=True)) == 0
    assert not app.settings.credentials_path.exists()
    assert registry.cps["CP10"]["registered"] is False


@pytest.mark.usefixtures("stand_in_link")
async def test_deregister_once_fails_in_one_line_when_the_registry_is_untrusted(
    server: TlsServer,
    pki: Pki,
    registry: StandInRegistry,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = MonitorApp(settings(server, pki, tmp_path))
    await app.menu.handle("R")
    other = make_pki(tmp_path, "other")
    seen = len(registry.seen)

    once = settings(server, pki, tmp_path, ca_file=other.ca, deregister=True)
    assert await cp_monitor.deregister_once(once) == 1

    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [errors[0]]
    assert "cannot deregister: the Registry's certificate is not trusted" in errors[0]
    assert app.settings.credentials_path.exists()  # still registered: the secret is kept
    assert len(registry.seen) == seen
    caplog.clear()  # the ERROR line was the point


@pytest.mark.usefixtures("stand_in_link")
async def test_register_at_start_that_fails_stops_the_monitor_with_one_line(
    server: TlsServer,
    pki: Pki,
    registry: StandInRegistry,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry.cps["CP10"] = {"registered": True, "secret": "someone else's"}
    app = MonitorApp(settings(server, pki, tmp_path, register=True))

    assert await app.run(None) == 1

    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        "cp=CP10: cannot register: CP10 is already registered: deregister first or prove it "
        "(its credentials file, or an admin)"
    ]
    assert not app.settings.credentials_path.exists()
    caplog.clear()  # the ERROR line was the point
