"""Engine + Monitor for real: their socket link, a fake Central speaking the frames (and the
SCRAM login of services.cp_auth), real Kafka; and the Monitor's Central link against a real
Central (MonitorServer, CentralService, CPLogin) with no Kafka."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from evcharging.adapters import credentials_file
from evcharging.adapters.credentials_file import StoredCredentials
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
from evcharging.apps.cp_monitor import MonitorApp, MonitorSettings
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
from evcharging.services.central_keys import CentralKeys
from evcharging.services.cp_auth import (
    Challenge,
    Verifier,
    b64,
    make_verifier,
    new_secret,
    server_signature,
)
from evcharging.services.cp_keys import (
    CpKey,
    CpTopicCodec,
    Exchange,
    KeyRing,
    MasterKey,
    grant_key,
    handover_unwrap,
    handover_wrap,
    new_key,
)
from evcharging.services.cp_login import CPLogin
from evcharging.services.engine import KEYS_REVOKED_TEXT, EnginePhase, EngineService
from evcharging.services.monitor import CentralLink, MonitorService
from evcharging.services.ports import (
    Accepted,
    EngineOutcome,
    EngineRefusal,
    Health,
    SupplyRecord,
)
from tests.support.builders import a_repo, unique
from tests.support.cp_credentials import FAST_N, FixedCredentials, enrol
from tests.support.fakes import RecordingPublisher
from tests.support.ports import free_port
from tests.support.relay import relay_to
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
    signature and a fresh key for the CP, `grant_key`, after a right PROOF), OK to everything
    else; keeps every frame it got.  `deny`: AUTH_DENIED#deny to every AUTH.  `impostor`: a
    Central that does not know the CP's verifier, yet says AUTH_OK (with a signature it cannot
    make right).  `grant`: "key" (right), "none" (issue 13's AUTH_OK#cp#signature), "bad-wrap"
    (the wrapped key altered).  `revoke()` / `rotate()`: Central's key notices at heartbeats.
    `codec`: Central's sealing with the keys it issued (for its Kafka reader and publisher)."""

    def __init__(
        self,
        port: int,
        verifiers: dict[str, Verifier] | None = None,
        *,
        deny: str | None = None,
        impostor: bool = False,
        cost: tuple[str, str, str] | None = None,
        grant: str = "key",
    ) -> None:
        self.port = port
        self.verifiers = verifiers or {}
        self.deny = deny
        self.impostor = impostor
        self.cost = cost  # the scrypt n, r, p to claim in CHALLENGE instead of the verifier's
        self.grant = grant
        self.codec = CpTopicCodec(KeyRing())
        self.issued: list[CpKey] = []
        self.revoked: set[str] = set()
        self.rekey: set[str] = set()
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

    def revoke(self, cp_id: str) -> None:
        """ "Restaurar claves": the keys dropped, every heartbeat answered ERR#keys_revoked."""
        self.codec.revoked(cp_id)
        self.revoked.add(cp_id)

    def rotate(self, cp_id: str) -> None:
        """The next heartbeat is answered ERR#rekey (once)."""
        self.rekey.add(cp_id)

    def _issue(self, cp_id: str) -> CpKey:
        key = new_key(cp_id, len([k for k in self.issued if k.cp_id == cp_id]) + 1)
        self.issued.append(key)
        self.codec.ring.install(key)
        self.revoked.discard(cp_id)
        self.rekey.discard(cp_id)
        return key

    def _auth_ok(self, challenge: Challenge, proof: str) -> tuple[str, ...]:
        cp_id, verifier = challenge.cp_id, challenge.verifier
        client_key = challenge.client_key(proof)
        if self.impostor:  # it cannot recover the client key nor sign: it makes them up
            client_key = bytes(32)
        if client_key is None:
            return ("AUTH_DENIED", "wrong credentials")
        if self.grant == "none":
            signature = server_signature(verifier.server_key, challenge.message)
            return ("AUTH_OK", cp_id, b64(signature))
        grant = grant_key(
            self._issue(cp_id),
            auth_message=challenge.message,
            client_key=client_key,
            server_key=verifier.server_key,
            monitor_public=challenge.exchange,
        )
        if self.grant == "bad-wrap":
            wrapped = grant.wrapped
            grant = replace(grant, wrapped=("A" if wrapped[0] != "A" else "B") + wrapped[1:])
        return ("AUTH_OK", cp_id, *grant.fields())

    def _heartbeat(self, frame: Frame) -> tuple[str, ...]:
        cp_id = frame.fields[0]
        if cp_id in self.revoked:
            return ("ERR", "keys_revoked")
        if cp_id in self.rekey:
            self.rekey.discard(cp_id)
            return ("ERR", "rekey")
        return ("OK",)

    def _reply(
        self, frame: Frame, challenge: Challenge | None
    ) -> tuple[tuple[str, ...], Challenge | None]:
        if frame.opcode == "AUTH":
            if self.deny:
                return ("AUTH_DENIED", self.deny), None
            cp_id, client_nonce, exchange = frame.fields[0], frame.fields[3], frame.fields[4]
            verifier = self.verifiers.get(cp_id)
            if self.impostor:
                verifier = make_verifier("not the CP's secret", n=FAST_N)
            if verifier is None:
                return ("AUTH_DENIED", "not registered at the Registry"), None
            challenge = Challenge.start(cp_id, client_nonce, verifier, exchange)
            kdf = verifier.kdf
            cost = self.cost or (str(kdf.n), str(kdf.r), str(kdf.p))
            fields = (b64(kdf.salt), *cost, challenge.nonce)
            return ("CHALLENGE", *fields), challenge
        if frame.opcode == "PROOF":
            if challenge is None:
                return ("AUTH_DENIED", "PROOF without a CHALLENGE"), None
            return self._auth_ok(challenge, frame.fields[1]), None
        if frame.opcode == "HB":
            return self._heartbeat(frame), challenge
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
    """Everything the Engine publishes for one CP on cp-events, from now on, opened with
    Central's keys (`codec`)."""

    def __init__(self, bootstrap: str, cp_id: str, codec: CpTopicCodec) -> None:
        self.events: list[Event] = []
        router = EventRouter("test-cp-events")
        for cls in (SupplyStarted, CpTelemetry, SupplyEnded):
            router.add(cls, self._keep)
        self.consumer = EventConsumer(
            bootstrap,
            None,
            router,
            keyed=[KeyedRead(CP_EVENTS, cp_id)],
            offset_reset="latest",
            codec=codec,
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
        self.reader = CpEventsReader(bootstrap, self.cp_id, self.central.codec)
        self.engine = self.new_engine()
        self.monitor = MonitorLoops(
            (LOCAL, self.engine_port),
            (LOCAL, self.central.port),
            self.cp_id,
            FixedCredentials(self.cp_id, secret),
        )
        self.publisher = EventPublisher(bootstrap, source="test-central", codec=self.central.codec)

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
        await eventually(
            lambda: engine.codec.ring.current(self.cp_id) == self.central.issued[-1],
            what="the CP's key at the Engine",
        )
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


async def test_a_first_ever_engine_reads_commands_sent_before_it_knew_its_id_or_its_key(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Central may authorise a driver as soon as it accepts the Monitor, before the Engine's
    reader of its CP's partition is positioned; a fresh Engine (no committed offset) still reads
    that command.  It is sealed with the key Central granted at AUTH_OK, which the Monitor hands
    over moments later: the command is held until the key is there, not dropped."""
    caplog.set_level(logging.INFO, logger="evcharging.adapters.kafka.consumer")
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
    central = CpTopicCodec(KeyRing())
    key = new_key(cp_id, 1)
    central.ring.install(key)
    publisher = EventPublisher(kafka_bootstrap, source="test-central", codec=central)
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
            lambda: f"key v1 of {cp_id}, not held yet: waiting up to 10 s" in caplog.text,
            timeout=30,
            what="the command held for its key",
        )
        assert engine.service.phase() is EnginePhase.ACTIVADO
        assert hand_over(engine.service, key) == Accepted()  # what the Monitor's KEYX/KEY do

        await eventually(
            lambda: engine.service.phase() is EnginePhase.AUTHORISED, timeout=30, what="authorised"
        )
        assert engine.consumer is not None
        assert engine.consumer.stats.rejected == 0
    finally:
        await engine.stop()
        await publisher.stop()


async def test_revoked_mid_supply_the_supply_ends_and_its_end_waits_for_the_next_key(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await rig.engine_ready(rig.engine)
    session = await rig.authorise("D5")
    rig.engine.menu.handle("p")
    await eventually(lambda: rig.reader.of(CpTelemetry), timeout=15, what="a telemetry reading")

    rig.central.revoke(rig.cp_id)  # Central: keys deleted, heartbeats answered keys_revoked
    await eventually(lambda: rig.engine.service.keys_revoked, what="KEY_DROP at the Engine")
    assert rig.engine.codec.ring.current(rig.cp_id) is None
    assert rig.engine.service.status_line() == f"Parado - {KEYS_REVOKED_TEXT}"
    await eventually(lambda: rig.engine.service.pending_events == 1, what="SUPPLY_ENDED waiting")
    heartbeats = len(rig.central.of("HB"))
    await eventually(lambda: len(rig.central.of("HB")) >= heartbeats + 3, what="heartbeats go on")
    assert rig.engine.service.pending_events == 1  # no key, so it still waits
    assert caplog.text.count("Central revoked this CP's keys: press A") == 1

    rig.monitor.central_link.reauthenticate()  # the menu's A
    ended = await eventually(lambda: rig.reader.of(SupplyEnded), timeout=15, what="SUPPLY_ENDED")
    final = ended[0]
    assert isinstance(final, SupplyEnded)
    assert (final.session_id, final.reason) == (session, "keys_revoked")
    assert final.energy_kwh > 0
    assert rig.central.codec.ring.versions(rig.cp_id) == [2]  # sealed with the new key
    assert rig.engine.service.phase() is EnginePhase.ACTIVADO


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


def hand_over(engine: EngineService, key: CpKey) -> object:
    """What the Monitor's KEYX and KEY do, straight to an Engine service."""
    exchange = Exchange()
    engine_public = engine.key_exchange(exchange.public)
    assert isinstance(engine_public, str)
    return engine.install_key(key.cp_id, key.version, handover_wrap(key, exchange, engine_public))


def in_clear(key: CpKey) -> list[bytes]:
    """The forms a key could be read in (raw, hex, base64 of both alphabets)."""
    raw = key.secret
    return [raw, raw.hex().encode(), b64(raw).encode(), base64.b64encode(raw).rstrip(b"=")]


class StubEngine:
    def __init__(self) -> None:
        self.ko: str | None = None
        self.cp_id: str | None = None
        self.central: bool | None = None
        self.disconnects = 0
        self.keys: list[CpKey] = []  # as unwrapped from KEY
        self.drops = 0
        self._exchange: tuple[Exchange, str] | None = None

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

    def key_exchange(self, monitor_public: str) -> str | EngineRefusal:
        exchange = Exchange()
        self._exchange = (exchange, monitor_public)
        return exchange.public

    def install_key(self, cp_id: str, version: int, wrapped: str) -> EngineOutcome:
        pending, self._exchange = self._exchange, None
        if pending is None:
            return EngineRefusal("no key exchange in progress")
        self.keys.append(handover_unwrap(cp_id, version, wrapped, *pending))
        return Accepted()

    def drop_keys(self, cp_id: str) -> EngineOutcome:
        self.drops += 1
        return Accepted()


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
    """A real Central's Monitor side: MonitorServer, CentralService (with its per-CP keys) and
    CPLogin on SQLite."""
    repo = a_repo()
    keys = CentralKeys(repo, MasterKey(MasterKey.generate()))
    service = CentralService(repo, RecordingPublisher(), heartbeat_timeout=3.0, keys=keys)
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
        assert central.keys is not None
        held = central.keys.ring.current("CPR")  # the key Central issued at AUTH_OK...
        assert held is not None
        assert monitor.service.key == held  # ...opened by the Monitor...
        await eventually(lambda: engine_link[1].keys == [held], what="...and handed to the Engine")
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
        (
            "impostor",
            "Central sent a key that does not verify: could not prove it knows this CP "
            "(wrong server signature)",
        ),
        ("absurd-cost", "refusing a scrypt cost of n=2097152"),
        ("no-key", "Central sent no key (an AUTH_OK without a key grant)"),
        ("bad-wrap", "Central sent a key that does not verify: the wrapped key does not verify"),
    ],
)
async def test_the_monitor_refuses_a_central_that_cannot_prove_it_knows_the_cp(
    engine_link: tuple[EngineLinkServer, StubEngine],
    caplog: pytest.LogCaptureFixture,
    central_kind: str,
    said: str,
) -> None:
    """Mutual authentication: a man in the middle (or a fake Central) that does not hold the
    CP's verifier cannot sign AUTH_OK, and cannot make the Monitor burn memory on scrypt.  An
    AUTH_OK must carry the CP's key, wrapped so that it verifies (else: no key, no service)."""
    secret = new_secret()
    central = FakeCentral(
        free_port(),
        {"CPX": make_verifier(secret, n=FAST_N)},
        impostor=central_kind == "impostor",
        cost=("2097152", "8", "1") if central_kind == "absurd-cost" else None,
        grant={"no-key": "none", "bad-wrap": "bad-wrap"}.get(central_kind, "key"),
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
        assert monitor.service.key is None
        assert not central.of("HB")
        assert engine_link[1].cp_id is None
        assert engine_link[1].keys == []
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


# --- the CP's key: Central -> Monitor -> Engine (issue 14; no Kafka needed) ----------------------


class MemoryStore:
    def load(self, cp_id: str) -> list[SupplyRecord]:
        return []

    def save(self, cp_id: str, records: Sequence[SupplyRecord]) -> None:
        pass


class LiveEngine:
    """A real Engine service behind its Monitor link (events recorded, no Kafka)."""

    def __init__(self) -> None:
        self.publisher = RecordingPublisher()
        self.service = EngineService(self.publisher, MemoryStore(), time.monotonic)
        self.server = EngineLinkServer(self.service, LOCAL, 0)

    @property
    def address(self) -> tuple[str, int]:
        return (LOCAL, self.server.port)

    def key(self, cp_id: str) -> CpKey | None:
        return self.service.codec.ring.current(cp_id)


@pytest.fixture
async def live_engine() -> AsyncIterator[LiveEngine]:
    engine = LiveEngine()
    await engine.server.start()
    try:
        yield engine
    finally:
        await engine.server.close()


def a_central(cp_id: str, **options: Any) -> tuple[FakeCentral, str]:
    secret = new_secret()
    return FakeCentral(free_port(), {cp_id: make_verifier(secret, n=FAST_N)}, **options), secret


async def test_the_key_reaches_the_engine_and_never_crosses_either_link_in_clear(
    live_engine: LiveEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    central, secret = a_central("CPK")
    await central.start()
    with relay_to((LOCAL, central.port)) as to_central, relay_to(live_engine.address) as to_engine:
        monitor = MonitorLoops(
            (LOCAL, to_engine.port),
            (LOCAL, to_central.port),
            "CPK",
            FixedCredentials("CPK", secret),
        )
        monitor.start()
        try:
            await eventually(
                lambda: central.issued and live_engine.key("CPK") == central.issued[0],
                what="key v1 at the Engine",
            )
            assert monitor.service.key == central.issued[0]
            monitor.central_link.reauthenticate()  # a new key goes the same way
            await eventually(
                lambda: len(central.issued) == 2 and live_engine.key("CPK") == central.issued[1],
                what="key v2 at the Engine",
            )
            assert "Central up (authenticated, key v2)" in monitor.service.status_line()
        finally:
            await monitor.stop()
    await central.close()

    socket_to_central, socket_to_engine = to_central.bytes(), to_engine.bytes()
    assert b"AUTH_OK#CPK#" in socket_to_central
    assert b"KEY#CPK#2#" in socket_to_engine
    for key in central.issued:
        for form in in_clear(key):
            assert form not in socket_to_central
            assert form not in socket_to_engine
            assert form.decode("latin-1") not in caplog.text


@pytest.mark.parametrize("auto_reauth", [None, 0.5], ids=["menu-A", "auto-reauth"])
async def test_revoked_keys_are_dropped_at_the_engine_said_once_and_a_new_login_restores_them(
    live_engine: LiveEngine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    auto_reauth: float | None,
) -> None:
    caplog.set_level(logging.INFO)
    central, secret = a_central("CPV")
    await central.start()
    credentials = tmp_path / "cp-CPV.json"
    credentials_file.save(credentials, StoredCredentials("CPV", secret))
    app = MonitorApp(
        MonitorSettings(
            live_engine.address,
            (LOCAL, central.port),
            "CPV",
            credentials=credentials,
            timing=FAST,
            summary_every=0,
            auto_reauth=auto_reauth,
        )
    )
    app.start()
    engine = live_engine.service
    try:
        await eventually(lambda: engine.key_version == 1, what="key v1 at the Engine")
        session = uuid4()
        engine.on_supply_authorised(
            SupplyAuthorised(
                cp_id="CPV", session_id=session, driver_id="D7", price_eur_per_kwh=Decimal("0.40")
            )
        )
        assert engine.plug() == Accepted()

        central.revoke("CPV")
        await eventually(lambda: engine.keys_revoked, what="KEY_DROP at the Engine")
        assert live_engine.key("CPV") is None
        assert engine.status_line().startswith(f"Parado - {KEYS_REVOKED_TEXT}")
        await engine.flush()
        ended = [e for e in live_engine.publisher.events if isinstance(e, SupplyEnded)]
        assert [(e.session_id, e.reason) for e in ended] == [(session, "keys_revoked")]
        if auto_reauth is None:
            heartbeats = len(central.of("HB"))
            await eventually(
                lambda: len(central.of("HB")) >= heartbeats + 3, what="heartbeats go on"
            )
            assert app.service.central is CentralLink.UP
            assert app.service.key_text() == "keys revoked"
            assert len(central.issued) == 1  # nobody asked for a new key yet
            await app.menu.handle("A")
        await eventually(lambda: engine.key_version == 2, what="a new key at the Engine")
        assert live_engine.key("CPV") == central.issued[1]
        assert not engine.keys_revoked
        assert engine.phase() is EnginePhase.ACTIVADO
        assert central.connections == 1  # one link all along: Central never lost the Monitor
    finally:
        await app.stop()
        await central.close()
    monitor_said = [r.getMessage() for r in caplog.records if r.name.endswith("services.monitor")]
    notices = [line for line in monitor_said if "Central revoked this CP's keys" in line]
    expected = (
        "press A to authenticate again"
        if auto_reauth is None
        else "authenticating again in 0.5s (--auto-reauth), or press A now"
    )
    assert notices == [f"cp=CPV: Central revoked this CP's keys: {expected}"]
    assert caplog.text.count("Engine told to drop its keys") == 1


async def test_a_rotation_gets_a_new_key_at_once_without_a_notice(
    live_engine: LiveEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    central, secret = a_central("CPR")
    await central.start()
    monitor = MonitorLoops(
        live_engine.address, (LOCAL, central.port), "CPR", FixedCredentials("CPR", secret)
    )
    monitor.start()
    try:
        await eventually(lambda: live_engine.service.key_version == 1, what="key v1")
        central.rotate("CPR")  # the next heartbeat is answered ERR#rekey
        await eventually(lambda: live_engine.service.key_version == 2, what="key v2")
        assert live_engine.key("CPR") == central.issued[1]
        assert central.connections == 1
        assert not live_engine.service.keys_revoked
        assert monitor.service.central is CentralLink.UP
        assert "Central rotates the keys: authenticating again" in caplog.text
        assert "revoked" not in caplog.text
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        await monitor.stop()
        await central.close()


def flipped(text: str) -> str:
    return ("A" if text[0] != "A" else "B") + text[1:]


async def test_bad_key_frames_are_refused_by_the_engine_which_goes_on(
    live_engine: LiveEngine,
) -> None:
    conn = await open_framed(LOCAL, live_engine.server.port, 2.0)
    key = new_key("CPB", 1)
    try:
        assert await conn.request("SET_CP", "CPB", timeout=2) == Frame("OK")
        no_keyx = await conn.request("KEY", "CPB", "1", "AAAA", timeout=2)
        assert no_keyx == Frame("ERR", ("no key exchange in progress (KEYX first)",))
        assert await conn.request("KEYX", "not-a-key", timeout=2) == Frame(
            "ERR", ("malformed KEYX: not an exchange key",)
        )
        assert (await conn.request("KEYX", timeout=2)).opcode == "ERR"

        exchange = Exchange()
        reply = await conn.request("KEYX", exchange.public, timeout=2)
        assert reply.opcode == "OK"
        wrapped = handover_wrap(key, exchange, reply.fields[0])
        assert await conn.request("KEY", "CPB", "one", wrapped, timeout=2) == Frame(
            "ERR", ("malformed KEY: the version is not a number",)
        )
        assert await conn.request("KEY", "CPB", "1", flipped(wrapped), timeout=2) == Frame(
            "ERR", ("the handed-over key does not verify",)
        )
        replayed = await conn.request("KEY", "CPB", "1", wrapped, timeout=2)
        assert replayed.opcode == "ERR"  # the exchange served one KEY: a replay gets nothing
        assert (await conn.request("KEY", "CPB", "1", timeout=2)).opcode == "ERR"
        assert (await conn.request("KEY_DROP", timeout=2)).opcode == "ERR"
        assert (await conn.request("KEY_DROP", "CPX", timeout=2)).opcode == "ERR"
        assert live_engine.key("CPB") is None
        assert not live_engine.service.keys_revoked
        assert await conn.request("HEALTH", timeout=2) == Frame("OK")

        exchange = Exchange()  # and a right handover still works on the same link
        reply = await conn.request("KEYX", exchange.public, timeout=2)
        wrapped = handover_wrap(key, exchange, reply.fields[0])
        assert await conn.request("KEY", "CPB", "1", wrapped, timeout=2) == Frame("OK")
        assert live_engine.key("CPB") == key
        assert await conn.request("KEY_DROP", "CPB", timeout=2) == Frame("OK")
        assert live_engine.service.keys_revoked
    finally:
        await conn.close()
