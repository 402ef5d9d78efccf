"""The Driver wired to a real Kafka broker, against a fake Central.

The fake Central reads driver-events (its own consumer group) and answers the drivers of its
test: authorised, started, one progress reading, and a ticket (at once, or when the driver stops).
Each test uses its own driver ids, so tests never see each other's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from evcharging.adapters.kafka.consumer import EventConsumer, partition_for
from evcharging.adapters.kafka.publisher import EventPublisher
from evcharging.adapters.kafka.router import EventRouter
from evcharging.apps.driver import driver_consumers
from evcharging.contracts.events import (
    AuthorizationRequest,
    AuthorizationResponse,
    ChargingProgress,
    ChargingStarted,
    ChargingStopped,
    CpErrorSimulated,
    CpStatus,
    DriverNotice,
    Event,
)
from evcharging.contracts.topics import CENTRAL_EVENTS, DRIVER_EVENTS
from evcharging.services.driver import DriverPhase, DriverService, Kind, ServiceOutcome, Update
from tests.support.builders import a_ticket

pytestmark = pytest.mark.kafka

DEADLINE = 30.0
ROOT = Path(__file__).resolve().parents[2]
PARK = "test: park the consumer"


def a_driver_id() -> str:
    return f"T-{uuid4().hex[:16]}"


async def until(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    """Wait for a condition, polling; fail with `what` after the deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        if loop.time() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class FakeCentral:
    """Answers the AuthorizationRequests of `drivers`; with `hold`, tickets only on a stop."""

    def __init__(self, bootstrap: str, drivers: set[str], *, hold: bool = False) -> None:
        self.drivers = drivers
        self.hold = hold
        self.received: list[Event] = []
        self.sessions: dict[str, tuple[str, UUID]] = {}
        self.publisher = EventPublisher(bootstrap, "fake-central")
        router = EventRouter("fake-central")
        router.add(AuthorizationRequest, self._on_request)
        router.add(ChargingStopped, self._on_stop)
        # no group: nothing to commit, so cancelling it never orphans a commit (see RunningDriver)
        self.consumer = EventConsumer(bootstrap, None, router, topics=[DRIVER_EVENTS])
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FakeCentral:
        await self.publisher.start()
        self._task = asyncio.create_task(self.consumer.run())
        await asyncio.wait_for(self.consumer.ready.wait(), DEADLINE)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.publisher.stop()

    def of(self, cls: type[Event]) -> list[Event]:
        return [e for e in self.received if isinstance(e, cls)]

    async def _on_request(self, req: AuthorizationRequest) -> None:
        if req.driver_id not in self.drivers:
            return
        self.received.append(req)
        session_id = uuid4()
        self.sessions[req.driver_id] = (req.cp_id, session_id)
        await self.publisher.publish(
            AuthorizationResponse(
                request_id=req.request_id,
                driver_id=req.driver_id,
                cp_id=req.cp_id,
                authorised=True,
                session_id=session_id,
                price_eur_per_kwh=Decimal("0.35"),
            )
        )
        for event in (
            ChargingStarted(driver_id=req.driver_id, cp_id=req.cp_id, session_id=session_id),
            ChargingProgress(
                driver_id=req.driver_id,
                cp_id=req.cp_id,
                session_id=session_id,
                kw=Decimal("7.2"),
                energy_kwh=Decimal("1.000"),
                amount_eur=Decimal("0.35"),
            ),
        ):
            await self.publisher.publish(event)
        if not self.hold:
            await self.send_ticket(req.driver_id, "unplugged")

    async def _on_stop(self, stop: ChargingStopped) -> None:
        if stop.driver_id in self.drivers:
            self.received.append(stop)
            await self.send_ticket(stop.driver_id, "stopped_by_driver")

    async def send_ticket(self, driver_id: str, reason: str) -> None:
        cp_id, session_id = self.sessions[driver_id]
        await self.publisher.publish(
            a_ticket(driver_id, cp_id, session_id, reason=reason, balance="99.30")
        )


class RunningDriver:
    """A DriverService wired like EV_Driver: its own publisher and consumers on real Kafka."""

    def __init__(self, bootstrap: str, driver_id: str) -> None:
        self.driver_id = driver_id
        self.publisher = EventPublisher(bootstrap, f"test-driver-{driver_id}")
        self.service = DriverService(self.publisher, answer_timeout=DEADLINE)
        self.service.add_driver(driver_id)
        self.updates: list[Update] = []
        self.events: list[Event] = []
        self.service.observe(self.updates.append)
        self._closing = False
        self._parked = asyncio.Event()
        handle = self.service.handle

        async def recording(event: Event) -> None:
            if self._closing and isinstance(event, DriverNotice) and event.message == PARK:
                self._parked.set()
                await asyncio.Event().wait()  # cancelled here, between two commits
            self.events.append(event)
            await handle(event)

        self.service.handle = recording  # type: ignore[method-assign]
        self.own, self.board = driver_consumers(bootstrap, self.service, [driver_id])
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> RunningDriver:
        await self.publisher.start()
        self._tasks = [asyncio.create_task(self.own.run()), asyncio.create_task(self.board.run())]
        await asyncio.wait_for(self.own.ready.wait(), DEADLINE)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._park()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.service.close()
        await self.publisher.stop()

    async def _park(self) -> None:
        """Hold the consumer inside a handler before cancelling it.

        Cancelled during its offset commit, aiokafka's shielded commit task outlives the client
        and fails ("Task exception was never retrieved"); a consumer parked in a handler has no
        commit in flight.
        """
        self._closing = True
        await self.publisher.publish(DriverNotice(driver_id=self.driver_id, message=PARK))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._parked.wait(), DEADLINE)

    def kinds(self) -> list[Kind]:
        return [u.kind for u in self.updates if u.driver_id == self.driver_id]


@pytest.fixture
async def driver(kafka_bootstrap: str) -> AsyncIterator[RunningDriver]:
    async with RunningDriver(kafka_bootstrap, a_driver_id()) as running:
        yield running


async def test_driver_gets_answer_progress_and_ticket(kafka_bootstrap, driver) -> None:
    async with FakeCentral(kafka_bootstrap, {driver.driver_id}):
        result = await asyncio.wait_for(driver.service.serve(driver.driver_id, "ALC01"), DEADLINE)

    assert result.outcome is ServiceOutcome.TICKET
    assert result.ticket is not None
    assert result.ticket.amount_eur == Decimal("0.70")
    st = driver.service.state(driver.driver_id)
    assert st.balance_eur == Decimal("99.30")
    assert st.figures is not None
    assert st.figures.energy_kwh == Decimal("1.000")
    assert driver.kinds() == [
        Kind.REQUEST_SENT,
        Kind.AUTHORISED,
        Kind.SUPPLYING,
        Kind.PROGRESS,
        Kind.TICKET,
    ]


async def test_a_driver_reads_only_its_own_messages(kafka_bootstrap, driver) -> None:
    mine = driver.driver_id
    partition = partition_for(mine, CENTRAL_EVENTS.partitions)
    other = a_driver_id()
    while partition_for(other, CENTRAL_EVENTS.partitions) != partition:
        other = a_driver_id()  # same partition: only the key filter can keep it out

    async with (
        FakeCentral(kafka_bootstrap, {mine, other}),
        RunningDriver(kafka_bootstrap, other) as neighbour,
    ):
        theirs = await asyncio.wait_for(neighbour.service.serve(other, "VLC01"), DEADLINE)
        ours = await asyncio.wait_for(driver.service.serve(mine, "ALC01"), DEADLINE)

    assert (theirs.outcome, ours.outcome) == (ServiceOutcome.TICKET, ServiceOutcome.TICKET)
    # Board events (CP_STATUS, public) carry no driver id; everything addressed to a driver is ours.
    assert {e.driver_id for e in driver.events if hasattr(e, "driver_id")} == {mine}
    assert {e.driver_id for e in neighbour.events if hasattr(e, "driver_id")} == {other}


async def test_stop_publishes_charging_stopped_and_the_ticket_follows(
    kafka_bootstrap, driver
) -> None:
    me = driver.driver_id
    async with FakeCentral(kafka_bootstrap, {me}, hold=True) as central:
        serving = asyncio.create_task(driver.service.serve(me, "BCN01"))
        await until(lambda: driver.service.state(me).phase is DriverPhase.SUPPLYING, "supplying")
        _, session_id = central.sessions[me]

        assert await driver.service.stop(me) is None

        result = await asyncio.wait_for(serving, DEADLINE)
        [stop] = central.of(ChargingStopped)

    assert isinstance(stop, ChargingStopped)
    assert (stop.driver_id, stop.cp_id, stop.session_id) == (me, "BCN01", session_id)
    assert (result.outcome, result.reason) == (ServiceOutcome.TICKET, "stopped_by_driver")
    assert Kind.STOP_SENT in driver.kinds()


async def test_cp_error_reaches_the_driver_charging_there(kafka_bootstrap, driver) -> None:
    me = driver.driver_id
    async with FakeCentral(kafka_bootstrap, {me}, hold=True) as central:
        serving = asyncio.create_task(driver.service.serve(me, "MAD01"))
        await until(lambda: driver.service.state(me).phase is DriverPhase.SUPPLYING, "supplying")

        await central.publisher.publish(
            CpErrorSimulated(cp_id="MAD01", driver_id=me, message='Error "fault" simulated')
        )
        await until(lambda: Kind.CP_ERROR in driver.kinds(), "ERROR EN CP")
        await central.send_ticket(me, "cp_fault")
        result = await asyncio.wait_for(serving, DEADLINE)

    assert driver.service.state(me).cp_error == 'Error "fault" simulated'
    assert (result.outcome, result.reason) == (ServiceOutcome.TICKET, "cp_fault")


async def test_a_restarted_driver_sees_the_ticket_sent_while_it_was_down(kafka_bootstrap) -> None:
    me = a_driver_id()
    async with FakeCentral(kafka_bootstrap, {me}, hold=True) as central:
        async with RunningDriver(kafka_bootstrap, me) as first:
            asyncio.create_task(first.service.serve(me, "ALC02"))  # noqa: RUF006
            await until(lambda: first.service.state(me).phase is DriverPhase.SUPPLYING, "supplying")

        await central.send_ticket(me, "unplugged")  # while the driver is down

        async with RunningDriver(kafka_bootstrap, me) as second:
            await until(lambda: Kind.TICKET in second.kinds(), "the ticket after the restart")

    ticket = second.service.state(me).last_ticket
    assert ticket is not None
    assert ticket.earlier
    assert ticket.session_id == central.sessions[me][1]


async def test_ev_driver_program_runs_a_service_and_quits_on_q(kafka_bootstrap) -> None:
    me = a_driver_id()
    async with FakeCentral(kafka_bootstrap, {me}) as central:
        await central.publisher.publish(
            CpStatus(
                cp_id="ALC03",
                location="Alicante - Universidad",
                price_eur_per_kwh=Decimal("0.30"),
                state="Activado",
                available=True,
            )
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "evcharging.apps.driver",
            kafka_bootstrap,
            me,
            "--cp",
            "ALC01",
            "--pause",
            "0.1",
            stdin=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=ROOT,
        )
        try:
            lines = await _read_until(proc, f"SERVICES DONE driver={me} n=1")
            assert proc.stdin is not None
            proc.stdin.write(b"l\n")
            await proc.stdin.drain()
            lines += await _read_until(proc, "ALC03 0.30 €/kWh")
            proc.stdin.write(b"q\n")
            await proc.stdin.drain()
            code = await asyncio.wait_for(proc.wait(), DEADLINE)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    text = "\n".join(lines)
    assert code == 0
    for marker in (
        f"REQUEST sent driver={me} cp=ALC01",
        f"AUTHORISED driver={me} cp=ALC01 session=",
        f"SUPPLYING driver={me} cp=ALC01",
        f"PROGRESS driver={me} cp=ALC01 kw=7.20 kwh=1.000 eur=0.35",
        f"TICKET driver={me} cp=ALC01 kwh=2.000 eur=0.70 reason=unplugged balance=99.30 "
        "charging completed",
    ):
        assert marker in text
    assert all(" EV_Driver " in line for line in lines)


async def _read_until(proc: asyncio.subprocess.Process, marker: str) -> list[str]:
    assert proc.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(DEADLINE):
        while not any(marker in line for line in lines):
            raw = await proc.stderr.readline()
            if not raw:
                pytest.fail(f"EV_Driver ended before {marker!r}:\n" + "\n".join(lines))
            lines.append(raw.decode().rstrip())
    return lines
