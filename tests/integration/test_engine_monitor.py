"""Engine + Monitor for real: their socket link, a fake Central speaking the frames (and the
SCRAM login of services.cp_auth), real Kafka; and the Monitor's Central link against a real
Central (MonitorServer, CentralService, CPLogin) with no Kafka."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.adapters.kafka.consumer import EventConsumer, KeyedRead
from evcharging.adapters.kafka.publisher import EventPublisher
from evcharging.adapters.kafka.router import EventRouter
from evcharging.adapters.sockets.central_server import MonitorServer
from evcharging.adapters.sockets.engine_link import EngineLinkServer
from evcharging.adapters.sockets.framing import FramedConnection, LinkError, open_framed
from evcharging.adapters.sockets.monitor_links import (
    CentralLinkLoop,
    Credentials,
    EngineLinkLoop,
    Timing,
)
from evcharging.apps.cp_engine import EngineApp, EngineSettings
from evcharging.contracts.events import (
    CpTelemetry,
    Event,
    SupplyAuthorised,
    SupplyEnded,
    SupplyStarted,
)
from evcharging.contracts.frames import Frame
from evcharging.contracts.topics import CP_EVENTS
from evcharging.services.audit import Audit, AuditQuery
from evcharging.services.central import CentralService
from evcharging.services.cp_auth import Challenge, Verifier, b64, make_verifier, new_secret
from evcharging.services.cp_login import CPLogin
from evcharging.services.engine import EnginePhase
from evcharging.services.monitor import CentralLink, MonitorService
from evcharging.services.ports import Accepted, EngineOutcome, EngineRefusal, Health
from tests.support.builders import a_repo, unique
from tests.support.cp_credentials import FAST_N, FixedCredentials, enrol
from tests.support.fakes import RecordingPublisher
from tests.support.ports import free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.kafka

log = logging.getLogger(__name__)

LOCAL = "127.0.0.1"
FAST = Timing(interval=0.2, timeout=1.0, max_backoff=0.5, denied_retry=0.5)


class MonitorLoops:
    """The Monitor's service and its two link loops, wired as EV_CP_M wires them (without the
    app's command line and credentials file: the test hands the credentials in)."""

    def __init__(
        self,
        engine: tuple[str, int],
        central: tuple[str, int],
        cp_id: str,
        credentials: Credentials,
        timing: Timing = FAST,
    ) -> None:
        self._central_wake, self._engine_wake = asyncio.Event(), asyncio.Event()
        self.service = MonitorService(cp_id, on_change=self._wake_all)
        self.central_link = CentralLinkLoop(
            self.service, central, credentials=credentials, timing=timing, wake=self._central_wake
        )
        self.engine_link = EngineLinkLoop(
            self.service, engine, timing=timing, wake=self._engine_wake
        )
        self._tasks: list[asyncio.Task[None]] = []

    def _wake_all(self) -> None:
        self._central_wake.set()
        self._engine_wake.set()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.engine_link.run(), name="test engine-link"),
            asyncio.create_task(self.central_link.run(), name="test central-link"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class FakeCentral:
    """Central's side of the login (CHALLENGE for the CPs in `verifiers`, AUTH_OK with Central's
    signature after a right PROOF), OK to everything else; keeps every frame it got.
    `deny`: AUTH_DENIED#deny to every AUTH.  `impostor`: a Central that does not know the CP's
    verifier, yet says AUTH_OK (with a signature it cannot make right)."""

    def __init__(
        self,
        port: int,
        verifiers: dict[str, Verifier] | None = None,
        *,
        deny: str | None = None,
        impostor: bool = False,
        cost: tuple[str, str, str] | None = None,
    ) -> None:
        self.port = port
        self.verifiers = verifiers or {}
        self.deny = deny
        self.impostor = impostor
        self.cost = cost  # the scrypt n, r, p to claim in CHALLENGE instead of the verifier's
        self.connections = 0
        self.frames: list[Frame] = []
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOCAL, self.port)

    async def close(self) -> None:
        """Central goes away: listening socket and every open link."""
        if self._server is not None:
            self._server.close()
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def of(self, opcode: str) -> list[Frame]:
        return [f for f in self.frames if f.opcode == opcode]

    def _reply(
        self, frame: Frame, challenge: Challenge | None
    ) -> tuple[tuple[str, ...], Challenge | None]:
        if frame.opcode == "AUTH":
            if self.deny:
                return ("AUTH_DENIED", self.deny), None
            cp_id, client_nonce = frame.fields[0], frame.fields[3]
            verifier = self.verifiers.get(cp_id)
            if self.impostor:
                verifier = make_verifier("not the CP's secret", n=FAST_N)
            if verifier is None:
                return ("AUTH_DENIED", "not registered at the Registry"), None
            challenge = Challenge.start(cp_id, client_nonce, verifier)
            kdf = verifier.kdf
            cost = self.cost or (str(kdf.n), str(kdf.r), str(kdf.p))
            fields = (b64(kdf.salt), *cost, challenge.nonce)
            return ("CHALLENGE", *fields), challenge
        if frame.opcode == "PROOF":
            if challenge is None:
                return ("AUTH_DENIED", "PROOF without a CHALLENGE"), None
            signature = challenge.check(frame.fields[1])
            if self.impostor:
                signature = bytes(32)
            if signature is None:
                return ("AUTH_DENIED", "wrong credentials"), None
            return ("AUTH_OK", challenge.cp_id, b64(signature)), None
        return ("OK",), challenge

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a task of ours, so close() may cancel it (asyncio's callback task must not be)
        self.connections += 1
        task = asyncio.create_task(self._serve(FramedConnection(reader, writer)))
        self._links.add(task)
        task.add_done_callback(self._links.discard)

    async def _serve(self, conn: FramedConnection) -> None:
        challenge: Challenge | None = None  # one login exchange per link
        try:
            while True:
                frame = await conn.recv_frame(timeout=None)
                self.frames.append(frame)
                reply, challenge = self._reply(frame, challenge)
                await conn.send_frame(*reply, timeout=2.0)
        except LinkError as exc:
            log.info("fake Central: link ended: %s", exc)
        finally:
            await conn.close()


class CpEventsReader:
    """Everything the Engine publishes for one CP on cp-events, from now on."""

    def __init__(self, bootstrap: str, cp_id: str) -> None:
        self.events: list[Event] = []
        router = EventRouter("test-cp-events")
        for cls in (SupplyStarted, CpTelemetry, SupplyEnded):
            router.add(cls, self._keep)
        self.consumer = EventConsumer(
            bootstrap, None, router, keyed=[KeyedRead(CP_EVENTS, cp_id)], offset_reset="latest"
        )
        self._task: asyncio.Task[None] | None = None

    async def _keep(self, event: Event) -> None:
        self.events.append(event)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.consumer.run())
        await eventually(self.consumer.ready.is_set, timeout=30, what="cp-events reader ready")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def of(self, cls: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, cls)]

    def of_session(self, session_id: UUID) -> list[Event]:
        return [e for e in self.events if getattr(e, "session_id", None) == session_id]


class Rig:
    """A fake Central, a real Engine and a real Monitor for one fresh CP id."""

    def __init__(self, bootstrap: str, state_dir: Path) -> None:
        self.bootstrap = bootstrap
        self.cp_id = unique("CP")
        self.state_dir = state_dir
        self.engine_port = free_port()
        secret = new_secret()
        self.central = FakeCentral(free_port(), {self.cp_id: make_verifier(secret, n=FAST_N)})
        self.reader = CpEventsReader(bootstrap, self.cp_id)
        self.engine = self.new_engine()
        self.monitor = MonitorLoops(
            (LOCAL, self.engine_port),
            (LOCAL, self.central.port),
            self.cp_id,
            FixedCredentials(self.cp_id, secret),
        )
        self.publisher = EventPublisher(bootstrap, source="test-central")

    def new_engine(self) -> EngineApp:
        settings = EngineSettings(
            kafka=self.bootstrap,
            link=(LOCAL, self.engine_port),
            speedup=Decimal(600),
            tick=0.2,
            state_dir=self.state_dir,
            menu=False,
        )
        return EngineApp(settings)

    async def start(self) -> None:
        await self.reader.start()
        await self.central.start()
        await self.engine.start()
        self.monitor.start()

    async def stop(self) -> None:
        await self.monitor.stop()
        await self.engine.stop()
        await self.central.close()
        await self.reader.stop()
        await self.publisher.stop()

    async def engine_ready(self, engine: EngineApp) -> None:
        await eventually(lambda: engine.service.cp_id == self.cp_id, what="SET_CP at the Engine")
        await eventually(engine.consumer_ready.is_set, timeout=30, what="Engine reading commands")

    async def authorise(self, driver: str = "D1") -> UUID:
        session = uuid4()
        await self.publisher.publish(
            SupplyAuthorised(
                cp_id=self.cp_id,
                session_id=session,
                driver_id=driver,
                price_eur_per_kwh=Decimal("0.40"),
            )
        )
        await eventually(
            lambda: self.engine.service.phase() is EnginePhase.AUTHORISED, what="authorisation held"
        )
        return session


@pytest.fixture
async def rig(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Rig]:
    rig = Rig(kafka_bootstrap, tmp_path / "engine")
    await rig.start()
    try:
        yield rig
    finally:
        await rig.stop()


async def test_monitor_authenticates_heartbeats_and_reports_ko_and_recovery(rig: Rig) -> None:
    await eventually(lambda: rig.central.of("PROOF"), what="PROOF at Central")
    assert rig.central.of("AUTH")[0].fields[:3] == (rig.cp_id, "OK", "")  # health, no reason
    await eventually(lambda: len(rig.central.of("HB")) >= 2, what="two heartbeats")
    assert rig.central.of("HB")[-1].fields == (rig.cp_id, "OK")
    await rig.engine_ready(rig.engine)
    await eventually(lambda: rig.engine.service.central_up, what="CENTRAL#UP at the Engine")
    assert not rig.central.of("FAULT")

    rig.engine.menu.handle("k")
    fault = await eventually(lambda: rig.central.of("FAULT"), timeout=2.0, what="FAULT")
    assert fault[0].fields == (rig.cp_id, "KO key pressed")
    await eventually(lambda: rig.central.of("HB")[-1].fields[1] == "KO", what="HB#KO")

    rig.engine.menu.handle("r")
    await eventually(lambda: rig.central.of("RECOVER"), timeout=2.0, what="RECOVER")
    await eventually(lambda: rig.central.of("HB")[-1].fields[1] == "OK", what="HB#OK again")
    assert len(rig.central.of("FAULT")) == 1
    assert len(rig.central.of("RECOVER")) == 1


async def test_authorised_supply_is_plugged_reported_every_tick_and_unplugged(rig: Rig) -> None:
    await rig.engine_ready(rig.engine)
    session = await rig.authorise()
    rig.engine.menu.handle("p")
    await eventually(
        lambda: len(rig.reader.of(CpTelemetry)) >= 2, timeout=15, what="two telemetry readings"
    )
    rig.engine.menu.handle("u")
    await eventually(lambda: rig.reader.of(SupplyEnded), timeout=15, what="SUPPLY_ENDED")

    history = rig.reader.of_session(session)
    kinds = [e.event_type for e in history]
    assert kinds[0] == "SUPPLY_STARTED"
    assert kinds[-1] == "SUPPLY_ENDED"
    assert set(kinds[1:-1]) == {"CP_TELEMETRY"}
    readings = [e for e in history if isinstance(e, CpTelemetry)]
    assert [r.seq for r in readings] == list(range(1, len(readings) + 1))
    assert readings[0].energy_kwh > 0
    ended = history[-1]
    assert isinstance(ended, SupplyEnded)
    assert ended.reason == "unplugged"
    assert ended.energy_kwh >= readings[-1].energy_kwh
    await eventually(lambda: not list(rig.state_dir.glob("*.json")), what="state file cleared")


async def test_engine_restart_reports_the_supply_it_was_running(rig: Rig) -> None:
    await rig.engine_ready(rig.engine)
    session = await rig.authorise("D2")
    rig.engine.menu.handle("p")
    await eventually(lambda: rig.reader.of(CpTelemetry), timeout=15, what="a telemetry reading")
    await rig.engine.stop()  # the Engine dies mid-supply
    assert (rig.state_dir / f"{rig.cp_id}.json").exists()
    fault = await eventually(lambda: rig.central.of("FAULT"), timeout=2.0, what="FAULT")
    assert "not answering" in fault[0].fields[1]

    rig.engine = rig.new_engine()
    await rig.engine.start()
    ended = await eventually(lambda: rig.reader.of(SupplyEnded), timeout=15, what="SUPPLY_ENDED")
    assert len(ended) == 1
    final = ended[0]
    assert isinstance(final, SupplyEnded)
    assert (final.session_id, final.driver_id, final.reason) == (session, "D2", "engine_restarted")
    last = [e for e in rig.reader.of(CpTelemetry) if isinstance(e, CpTelemetry)][-1]
    assert final.energy_kwh >= last.energy_kwh > 0
    await eventually(lambda: rig.central.of("RECOVER"), timeout=2.0, what="RECOVER")
    await eventually(lambda: not list(rig.state_dir.glob("*.json")), what="state file cleared")


async def test_a_first_ever_engine_reads_commands_sent_before_it_knew_its_id(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Central may authorise a driver as soon as it accepts the Monitor, before the Engine's
    reader of its CP's partition is positioned; a fresh Engine (no committed offset) still reads
    that command."""
    cp_id = unique("CP")
    engine = EngineApp(
        EngineSettings(
            kafka=kafka_bootstrap,
            link=(LOCAL, free_port()),
            speedup=Decimal(600),
            tick=0.2,
            state_dir=tmp_path / "engine",
            menu=False,
        )
    )
    publisher = EventPublisher(kafka_bootstrap, source="test-central")
    await engine.start()
    try:
        await eventually(lambda: engine.commands_at_start is not None, timeout=30, what="snapshot")
        session = uuid4()
        await publisher.publish(
            SupplyAuthorised(
                cp_id=cp_id, session_id=session, driver_id="D9", price_eur_per_kwh=Decimal("0.40")
            )
        )
        assert engine.service.set_cp_id(cp_id) == Accepted()  # what the Monitor's SET_CP does

        await eventually(
            lambda: engine.service.phase() is EnginePhase.AUTHORISED, timeout=30, what="authorised"
        )
    finally:
        await engine.stop()
        await publisher.stop()


async def test_central_lost_and_back(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    await rig.engine_ready(rig.engine)
    await eventually(lambda: rig.engine.service.central_up, what="CENTRAL#UP at the Engine")
    assert rig.engine.service.request_supply("D3") == Accepted()

    await rig.central.close()
    await eventually(
        lambda: "Cannot connect to CENTRAL" in caplog.text, what="Monitor says Central is gone"
    )
    await eventually(lambda: rig.engine.service.central_up is False, what="CENTRAL#DOWN")
    assert "Cannot connect to CENTRAL" in rig.engine.service.status_line()
    refused = rig.engine.service.request_supply("D3")
    assert not isinstance(refused, Accepted)
    assert "Cannot connect to CENTRAL" in refused.reason

    auths = len(rig.central.of("AUTH"))
    await rig.central.start()
    await eventually(lambda: len(rig.central.of("AUTH")) > auths, what="AUTH again")
    await eventually(lambda: rig.engine.service.central_up, what="CENTRAL#UP again")


# --- the links on their own (no Kafka needed) -----------------------------------------------


class StubEngine:
    def __init__(self) -> None:
        self.ko: str | None = None
        self.cp_id: str | None = None
        self.central: bool | None = None
        self.disconnects = 0

    def health_check(self) -> Health:
        return Health(self.ko)

    def set_cp_id(self, cp_id: str) -> EngineOutcome:
        if self.cp_id not in (None, cp_id):
            return EngineRefusal(f"this Engine is already CP {self.cp_id}")
        self.cp_id = cp_id
        return Accepted()

    def set_central(self, up: bool) -> None:
        self.central = up

    def monitor_disconnected(self) -> None:
        self.disconnects += 1


@pytest.fixture
async def engine_link() -> AsyncIterator[tuple[EngineLinkServer, StubEngine]]:
    stub = StubEngine()
    server = EngineLinkServer(stub, LOCAL, 0)
    await server.start()
    try:
        yield server, stub
    finally:
        await server.close()


async def test_engine_link_answers_the_monitor_protocol(
    engine_link: tuple[EngineLinkServer, StubEngine],
) -> None:
    server, stub = engine_link
    conn = await open_framed(LOCAL, server.port, 2.0)
    try:
        assert await conn.request("HEALTH", timeout=2) == Frame("OK")
        stub.ko = "fan#broken"
        assert await conn.request("HEALTH", timeout=2) == Frame("KO", ("fan broken",))
        assert await conn.request("SET_CP", "CP01", timeout=2) == Frame("OK")
        refused = await conn.request("SET_CP", "CP02", timeout=2)
        assert refused.opcode == "ERR"
        assert "CP01" in refused.fields[0]
        assert await conn.request("CENTRAL", "DOWN", timeout=2) == Frame("OK")
        assert stub.central is False
        assert (await conn.request("NONSENSE", timeout=2)).opcode == "ERR"
        assert (await conn.request("CENTRAL", "MAYBE", timeout=2)).opcode == "ERR"
    finally:
        await conn.close()
    await eventually(lambda: stub.disconnects == 1, what="link loss noticed")


async def test_a_second_monitor_replaces_the_first(
    engine_link: tuple[EngineLinkServer, StubEngine],
) -> None:
    server, stub = engine_link
    first = await open_framed(LOCAL, server.port, 2.0)
    second = await open_framed(LOCAL, server.port, 2.0)
    try:
        assert await second.request("HEALTH", timeout=2) == Frame("OK")
        with pytest.raises(LinkError):
            await first.request("HEALTH", timeout=2)
        assert await second.request("HEALTH", timeout=2) == Frame("OK")
        assert stub.disconnects == 0  # the newcomer holds the link
    finally:
        await first.close()
        await second.close()


async def test_a_denied_cp_is_retried_slowly_and_the_engine_never_learns_its_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    central = FakeCentral(free_port(), deny="not registered at the Registry")
    await central.start()
    monitor = MonitorLoops(
        (LOCAL, free_port()), (LOCAL, central.port), "CP77", FixedCredentials("CP77", "secret")
    )
    monitor.start()
    try:
        await eventually(lambda: len(central.of("AUTH")) >= 2, what="AUTH retried")
        assert "Central refused the CP: not registered at the Registry" in caplog.text
        assert not central.of("HB")
        assert not central.of("PROOF")
        assert not monitor.service.cp_accepted
    finally:
        await monitor.stop()
        await central.close()


# --- the Monitor's login, against fake and real Centrals (no Kafka needed) -------------------


@pytest.fixture
async def real_central() -> AsyncIterator[tuple[MonitorServer, CentralService, SqliteRepository]]:
    """A real Central's Monitor side: MonitorServer, CentralService and CPLogin on SQLite."""
    repo = a_repo()
    service = CentralService(repo, RecordingPublisher(), heartbeat_timeout=3.0)
    server = MonitorServer(service, LOCAL, 0, login=CPLogin(repo, Audit([repo])))
    await server.start()
    try:
        yield server, service, repo
    finally:
        await server.close()


def auth_rows(repo: SqliteRepository) -> list[tuple[str, str, str]]:
    rows = reversed(repo.find_audit(AuditQuery()))
    return [(r.action.value, r.ip, r.detail) for r in rows if r.action.value.startswith("auth.")]


async def test_a_registered_monitor_logs_in_and_only_then_the_engine_learns_its_id(
    real_central: tuple[MonitorServer, CentralService, SqliteRepository],
    engine_link: tuple[EngineLinkServer, StubEngine],
) -> None:
    server, central, repo = real_central
    secret = enrol(repo, "CPR")
    await central.load()
    monitor = MonitorLoops(
        (LOCAL, engine_link[0].port),
        (LOCAL, server.bound_port),
        "CPR",
        FixedCredentials("CPR", secret),
    )
    monitor.start()
    try:
        await eventually(lambda: monitor.service.central is CentralLink.UP, what="logged in")
        await eventually(lambda: engine_link[1].cp_id == "CPR", what="SET_CP after AUTH_OK")
        await eventually(lambda: central.cp("CPR").state.value == "Activado", what="Activado")  # type: ignore[union-attr]
        await eventually(lambda: monitor.service.counts.hb_answered >= 2, what="heartbeats")
        assert auth_rows(repo) == [("auth.ok", "127.0.0.1", "proof accepted")]
    finally:
        await monitor.stop()


async def test_without_credentials_the_monitor_does_not_connect_until_it_has_them(
    engine_link: tuple[EngineLinkServer, StubEngine],
) -> None:
    secret = new_secret()
    central = FakeCentral(free_port(), {"CPN": make_verifier(secret, n=FAST_N)})
    await central.start()
    credentials = FixedCredentials("CPN", None)
    monitor = MonitorLoops((LOCAL, engine_link[0].port), (LOCAL, central.port), "CPN", credentials)
    monitor.start()
    try:
        await eventually(
            lambda: monitor.service.central is CentralLink.NOT_REGISTERED, what="not registered"
        )
        assert "not registered (register with the Registry first)" in monitor.service.status_line()
        await eventually(lambda: engine_link[1].central is False, what="CENTRAL#DOWN")
        checks = monitor.service.counts.checks
        await eventually(lambda: monitor.service.counts.checks >= checks + 3, what="time passes")
        assert central.connections == 0
        assert engine_link[1].cp_id is None

        credentials.set(secret)  # registered meanwhile (the app's menu, or a file now there)
        monitor.central_link.reauthenticate()
        await eventually(lambda: monitor.service.central is CentralLink.UP, what="logged in")
        await eventually(lambda: engine_link[1].cp_id == "CPN", what="SET_CP")
        assert central.connections == 1
    finally:
        await monitor.stop()
        await central.close()


async def test_a_wrong_secret_is_denied_and_retried_slowly(
    real_central: tuple[MonitorServer, CentralService, SqliteRepository],
    engine_link: tuple[EngineLinkServer, StubEngine],
) -> None:
    server, central, repo = real_central
    enrol(repo, "CPW")
    await central.load()
    monitor = MonitorLoops(
        (LOCAL, engine_link[0].port),
        (LOCAL, server.bound_port),
        "CPW",
        FixedCredentials("CPW", "not its secret"),
    )
    monitor.start()
    try:
        await eventually(lambda: len(auth_rows(repo)) >= 2, what="denied, and tried again")
        assert monitor.service.central is CentralLink.DENIED
        assert monitor.service.central_text() == "Central refused the CP: wrong credentials"
        assert auth_rows(repo)[:2] == [("auth.failed", "127.0.0.1", "wrong credentials")] * 2
        assert engine_link[1].cp_id is None
    finally:
        await monitor.stop()


@pytest.mark.parametrize(
    ("central_kind", "said"),
    [
        ("impostor", "could not prove it knows this CP"),
        ("absurd-cost", "refusing a scrypt cost of n=2097152"),
    ],
)
async def test_the_monitor_refuses_a_central_that_cannot_prove_it_knows_the_cp(
    engine_link: tuple[EngineLinkServer, StubEngine],
    caplog: pytest.LogCaptureFixture,
    central_kind: str,
    said: str,
) -> None:
    """Mutual authentication: a man in the middle (or a fake Central) that does not hold the
    CP's verifier cannot sign AUTH_OK, and cannot make the Monitor burn memory on scrypt."""
    secret = new_secret()
    central = FakeCentral(
        free_port(),
        {"CPX": make_verifier(secret, n=FAST_N)},
        impostor=central_kind == "impostor",
        cost=("2097152", "8", "1") if central_kind == "absurd-cost" else None,
    )
    await central.start()
    monitor = MonitorLoops(
        (LOCAL, engine_link[0].port), (LOCAL, central.port), "CPX", FixedCredentials("CPX", secret)
    )
    monitor.start()
    try:
        await eventually(lambda: said in caplog.text, what=said)
        await eventually(lambda: len(central.of("AUTH")) >= 2, what="tried again")
        assert monitor.service.central is CentralLink.DOWN
        assert not central.of("HB")
        assert engine_link[1].cp_id is None
        if central_kind == "absurd-cost":
            assert not central.of("PROOF")
    finally:
        await monitor.stop()
        await central.close()


async def test_reauthenticate_proves_the_cp_again_on_the_same_link_and_sees_a_deregistration(
    real_central: tuple[MonitorServer, CentralService, SqliteRepository],
    engine_link: tuple[EngineLinkServer, StubEngine],
) -> None:
    server, central, repo = real_central
    secret = enrol(repo, "CPA")
    await central.load()
    monitor = MonitorLoops(
        (LOCAL, engine_link[0].port),
        (LOCAL, server.bound_port),
        "CPA",
        FixedCredentials("CPA", secret),
    )
    monitor.start()
    try:
        await eventually(lambda: central.cp("CPA").state.value == "Activado", what="Activado")  # type: ignore[union-attr]
        monitor.central_link.reauthenticate()
        await eventually(lambda: len(auth_rows(repo)) == 2, what="a second login")
        assert [row[0] for row in auth_rows(repo)] == ["auth.ok", "auth.ok"]
        assert central.cp("CPA").state.value == "Activado"  # type: ignore[union-attr]
        assert len(server._links) == 1  # the same link: Central never lost the Monitor

        assert repo.deregister_cp("CPA")  # baja at the Registry
        monitor.central_link.reauthenticate()
        await eventually(lambda: monitor.service.central is CentralLink.DENIED, what="denied")
        assert monitor.service.central_reason == "not registered at the Registry"
        await eventually(
            lambda: central.cp("CPA").state.value == "Desconectado",
            what="Desconectado",  # type: ignore[union-attr]
        )
    finally:
        await monitor.stop()
