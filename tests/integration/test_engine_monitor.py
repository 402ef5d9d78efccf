"""Engine + Monitor for real: their socket link, a fake Central speaking the frames, real Kafka."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from evcharging.adapters.kafka.consumer import EventConsumer, KeyedRead
from evcharging.adapters.kafka.publisher import EventPublisher
from evcharging.adapters.kafka.router import EventRouter
from evcharging.adapters.sockets.engine_link import EngineLinkServer
from evcharging.adapters.sockets.framing import FramedConnection, LinkError, open_framed
from evcharging.adapters.sockets.monitor_links import Timing
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
from evcharging.services.engine import EnginePhase
from evcharging.services.ports import Accepted, EngineOutcome, EngineRefusal, Health
from tests.support.builders import unique
from tests.support.ports import free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.kafka

log = logging.getLogger(__name__)

LOCAL = "127.0.0.1"
FAST = Timing(interval=0.2, timeout=1.0, max_backoff=0.5, denied_retry=0.5)


class FakeCentral:
    """Answers AUTH with AUTH_OK and everything else with OK, and keeps every frame it got."""

    def __init__(self, port: int, deny: str | None = None) -> None:
        self.port = port
        self.deny = deny
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

    def _reply(self, frame: Frame) -> tuple[str, ...]:
        if frame.opcode != "AUTH":
            return ("OK",)
        return ("AUTH_DENIED", self.deny) if self.deny else ("AUTH_OK", frame.fields[0])

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a task of ours, so close() may cancel it (asyncio's callback task must not be)
        task = asyncio.create_task(self._serve(FramedConnection(reader, writer)))
        self._links.add(task)
        task.add_done_callback(self._links.discard)

    async def _serve(self, conn: FramedConnection) -> None:
        try:
            while True:
                frame = await conn.recv_frame(timeout=None)
                self.frames.append(frame)
                reply = self._reply(frame)
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
        self.central = FakeCentral(free_port())
        self.reader = CpEventsReader(bootstrap, self.cp_id)
        self.engine = self.new_engine()
        self.monitor = MonitorApp(
            MonitorSettings(
                engine=(LOCAL, self.engine_port),
                central=(LOCAL, self.central.port),
                cp_id=self.cp_id,
                location="Test street",
                price="0.40",
                timing=FAST,
            )
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
    auth = await eventually(lambda: rig.central.of("AUTH"), what="AUTH at Central")
    assert auth[0].fields == (rig.cp_id, "Test street", "0.40", "OK", "")
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
    central = FakeCentral(free_port(), deny="unknown CP: not registered at Central")
    await central.start()
    monitor = MonitorApp(
        MonitorSettings(
            engine=(LOCAL, free_port()), central=(LOCAL, central.port), cp_id="CP77", timing=FAST
        )
    )
    monitor.start()
    try:
        await eventually(lambda: len(central.of("AUTH")) >= 2, what="AUTH retried")
        assert "Central refused the CP: unknown CP: not registered at Central" in caplog.text
        assert not central.of("HB")
        assert not monitor.service.cp_accepted
    finally:
        await monitor.stop()
        await central.close()
