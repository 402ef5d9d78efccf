"""Central's Monitor server over real loopback TCP, with a real CentralService behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from evcharging.adapters.sockets.central_server import MonitorServer
from evcharging.contracts.events import AuthorizationRequest, ChargingTicket, StopSupply
from evcharging.contracts.frames import ACK, NACK, Frame, FrameDecoder, encode
from evcharging.services.central import CentralService
from tests.support.builders import a_cp, a_driver, a_repo
from tests.support.fakes import RecordingPublisher
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)

WAIT = 5.0


class Monitor:
    """A raw Monitor end: writes bytes, reads the ACK byte and the answer frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder()

    async def byte(self) -> int:
        return (await asyncio.wait_for(self.reader.readexactly(1), WAIT))[0]

    async def answer(self) -> Frame:
        while True:
            chunk = await asyncio.wait_for(self.reader.read(1), WAIT)
            assert chunk, "Central closed the link"
            for result in self.decoder.feed(chunk):
                assert isinstance(result, Frame), result
                return result

    async def ask(self, opcode: str, *fields: str, ack: bool = True) -> Frame:
        self.writer.write(encode(opcode, *fields))
        assert await self.byte() == ACK
        answer = await self.answer()
        if ack:
            self.writer.write(bytes((ACK,)))
        return answer

    async def closed_by_central(self) -> bool:
        """EOF, or a reset when Central closed with our last ACK still unread."""
        try:
            data = await asyncio.wait_for(self.reader.read(100), WAIT)
        except ConnectionResetError:
            return True
        return data == b""


@pytest.fixture
async def central() -> CentralService:
    repo = a_repo()
    a_cp(repo, "CP1", price="0.35", location="Alicante")
    a_cp(repo, "CP2", price="0.40", location="Valencia")
    service = CentralService(repo, RecordingPublisher(), heartbeat_timeout=0.6)
    await service.load()
    return service


@pytest.fixture
async def server(central: CentralService) -> AsyncIterator[MonitorServer]:
    srv = MonitorServer(central, "127.0.0.1", 0, answer_timeout=0.6)
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
async def monitor(server: MonitorServer) -> AsyncIterator[Monitor]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
    yield Monitor(reader, writer)
    writer.close()


def state(central: CentralService, cp_id: str) -> str:
    return central.cp(cp_id).state.value  # type: ignore[union-attr]


async def test_auth_then_heartbeats_keep_the_cp_activado(
    central: CentralService, monitor: Monitor
) -> None:
    assert await monitor.ask("AUTH", "CP1", "", "", "OK", "") == Frame("AUTH_OK", ("CP1",))
    assert state(central, "CP1") == "Activado"
    for _ in range(3):
        assert await monitor.ask("HB", "CP1", "OK") == Frame("OK")
    assert state(central, "CP1") == "Activado"


async def test_frames_before_auth_or_unknown_are_refused_and_change_nothing(
    central: CentralService, monitor: Monitor
) -> None:
    assert await monitor.ask("FAULT", "CP1", "forged") == Frame("ERR", ("not_authenticated",))
    assert await monitor.ask("FLY", "CP1") == Frame("ERR", ("unknown_opcode",))
    assert await monitor.ask("AUTH", "NOPE", "", "") == Frame(
        "AUTH_DENIED", ("unknown CP: not registered at Central",)
    )
    assert state(central, "CP1") == "Desconectado"


@pytest.mark.parametrize(
    "health", [("KO", "Engine not answering: refused"), ()], ids=["KO", "not-told"]
)
async def test_a_cp_is_never_activado_before_its_engine_is_known_healthy(
    central: CentralService, monitor: Monitor, health: tuple[str, ...]
) -> None:
    """The Engine's health comes with AUTH; without it, the CP waits for an OK heartbeat."""
    assert await monitor.ask("AUTH", "CP1", "", "", *health) == Frame("AUTH_OK", ("CP1",))
    cp = central.cp("CP1")
    assert cp is not None
    assert (cp.state.value, cp.available) == ("Averiado", False)
    assert cp.fault_reason == (health[1] if health else "Engine health not reported yet")
    assert await monitor.ask("HB", "CP1", "OK") == Frame("OK")
    assert state(central, "CP1") == "Activado"


async def test_engine_ko_and_back_by_heartbeat(central: CentralService, monitor: Monitor) -> None:
    await monitor.ask("AUTH", "CP1", "", "", "OK", "")
    assert await monitor.ask("HB", "CP1", "KO") == Frame("OK")
    assert state(central, "CP1") == "Averiado"
    assert await monitor.ask("HB", "CP1", "KO") == Frame("OK")
    assert await monitor.ask("HB", "CP1", "OK") == Frame("OK")
    assert state(central, "CP1") == "Activado"


async def test_bad_frames_are_nacked_and_five_in_a_row_end_the_link(monitor: Monitor) -> None:
    hb = encode("HB", "CP1", "OK")
    bad = hb[:-1] + bytes([hb[-1] ^ 0xFF])
    monitor.writer.write(bad)
    assert await monitor.byte() == NACK
    assert await monitor.ask("AUTH", "CP1", "", "") == Frame("AUTH_OK", ("CP1",))  # still served
    for _ in range(5):
        monitor.writer.write(bad)
        assert await monitor.byte() == NACK
    assert await monitor.closed_by_central()


async def test_silence_ends_the_link_and_the_cp_is_desconectado(
    central: CentralService, monitor: Monitor
) -> None:
    await monitor.ask("AUTH", "CP1", "", "")
    assert await monitor.closed_by_central()
    await eventually(lambda: state(central, "CP1") == "Desconectado", what="Desconectado")


async def test_an_answer_never_acked_ends_the_link(
    central: CentralService, monitor: Monitor
) -> None:
    await monitor.ask("AUTH", "CP1", "", "")
    await monitor.ask("HB", "CP1", "OK", ack=False)
    assert await monitor.closed_by_central()
    await eventually(lambda: state(central, "CP1") == "Desconectado", what="Desconectado")


async def test_frames_sent_ahead_are_answered_in_turn(monitor: Monitor) -> None:
    await monitor.ask("AUTH", "CP1", "", "")
    monitor.writer.write(encode("HB", "CP1", "OK") + encode("HB", "CP1", "KO"))
    assert await monitor.byte() == ACK
    assert await monitor.answer() == Frame("OK")
    monitor.writer.write(bytes((ACK,)))
    assert await monitor.byte() == ACK
    assert await monitor.answer() == Frame("OK")
    monitor.writer.write(bytes((ACK,)))


async def test_closing_the_server_ends_every_link_and_no_supply(
    central: CentralService, server: MonitorServer, monitor: Monitor
) -> None:
    """A stopping Central drops its links as a dying one would: nothing is ended or billed."""
    a_driver(central._repo, "D1")  # type: ignore[arg-type]
    await monitor.ask("AUTH", "CP1", "", "", "OK", "")
    await central.on_authorization_request(AuthorizationRequest(driver_id="D1", cp_id="CP1"))
    assert central.cp("CP1").session_id is not None  # type: ignore[union-attr]
    await server.close()
    assert await monitor.closed_by_central()
    publisher = central.publisher
    assert isinstance(publisher, RecordingPublisher)
    assert not publisher.of(ChargingTicket)
    assert not publisher.of(StopSupply)
    assert central.cp("CP1").session_id is not None  # type: ignore[union-attr]
    assert [s.cp_id for s in central._repo.open_sessions()] == ["CP1"]
