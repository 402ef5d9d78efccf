"""DriverService without Kafka: events in, state and updates out; time is a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml

from evcharging.apps.driver import driver_router, list_available, parse_args
from evcharging.contracts.events import (
    EVENT_TYPES,
    AuthorizationRequest,
    AuthorizationResponse,
    ChargingProgress,
    ChargingStarted,
    ChargingStopped,
    CpErrorFixed,
    CpErrorSimulated,
    CpStatus,
    DriverNotice,
    DriverStatus,
    DriverStatusRequest,
    Event,
)
from evcharging.contracts.topics import CENTRAL_EVENTS
from evcharging.services.central import CentralService
from evcharging.services.driver import (
    NO_ANSWER_TEXT,
    DriverPhase,
    DriverService,
    Figures,
    Kind,
    ServiceOutcome,
    ServiceResult,
    Ticket,
    Update,
    describe,
    parse_services,
    state_text,
)
from evcharging.services.ports import Delivery, DriverRefusal
from tests.support.builders import a_cp, a_driver, a_repo, a_ticket
from tests.support.fakes import RecordingPublisher

ROOT = Path(__file__).resolve().parents[2]
D1, D2 = "D001", "D002"


# --- builders and fakes ----------------------------------------------------------------------


class FakeClock:
    """`sleep` that returns only when the test advances time past its deadline."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + delay, fut))
        await fut

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, fut in list(self._sleepers):
            if deadline <= self.now + 1e-9:
                self._sleepers.remove((deadline, fut))
                if not fut.done():
                    fut.set_result(None)
        await settle()


class FakePublisher(RecordingPublisher):
    def last_request(self) -> AuthorizationRequest:
        requests = self.of(AuthorizationRequest)
        assert requests, "no AuthorizationRequest was published"
        last = requests[-1]
        assert isinstance(last, AuthorizationRequest)
        return last


async def settle() -> None:
    """Let every ready task run (no wall-clock time passes)."""
    for _ in range(50):
        await asyncio.sleep(0)


def an_answer(req: AuthorizationRequest, *, ok: bool = True, reason: str | None = None):
    return AuthorizationResponse(
        request_id=req.request_id,
        driver_id=req.driver_id,
        cp_id=req.cp_id,
        authorised=ok,
        reason=reason,
        session_id=uuid4() if ok else None,
        price_eur_per_kwh=Decimal("0.35") if ok else None,
    )


def progress(answer: AuthorizationResponse, kwh: str = "1.500", eur: str = "0.53"):
    assert answer.session_id is not None
    return ChargingProgress(
        driver_id=answer.driver_id,
        cp_id=answer.cp_id,
        session_id=answer.session_id,
        kw=Decimal("7.2"),
        energy_kwh=Decimal(kwh),
        amount_eur=Decimal(eur),
    )


def a_status(
    cp_id: str, state: str = "Activado", available: bool = True, stop_reason: str | None = None
) -> CpStatus:
    return CpStatus(
        cp_id=cp_id,
        location=f"somewhere {cp_id}",
        price_eur_per_kwh=Decimal("0.40"),
        state=state,  # type: ignore[arg-type]
        available=available,
        stop_reason=stop_reason,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def service(clock: FakeClock, publisher: FakePublisher) -> AsyncIterator[DriverService]:
    svc = DriverService(publisher, answer_timeout=10.0, sleep=clock.sleep)
    svc.add_driver(D1)
    yield svc
    await svc.close()


@pytest.fixture
def updates(service: DriverService) -> list[Update]:
    seen: list[Update] = []
    service.observe(seen.append)
    return seen


def kinds(updates: list[Update], driver_id: str | None = D1) -> list[Kind]:
    return [u.kind for u in updates if u.driver_id == driver_id]


async def authorised(
    service: DriverService, publisher: FakePublisher, cp_id: str = "ALC01"
) -> AuthorizationResponse:
    await service.request(D1, cp_id)
    answer = an_answer(publisher.last_request())
    await service.handle(answer)
    return answer


# --- one service -----------------------------------------------------------------------------


async def test_request_publishes_and_waits_for_the_answer(service, publisher, updates) -> None:
    request_id = await service.request(D1, "ALC01")

    [req] = publisher.of(AuthorizationRequest)
    assert isinstance(req, AuthorizationRequest)
    assert (req.driver_id, req.cp_id, req.request_id) == (D1, "ALC01", request_id)
    st = service.state(D1)
    assert (st.phase, st.cp_id, st.request_id) == (DriverPhase.REQUESTED, "ALC01", request_id)
    assert kinds(updates) == [Kind.REQUEST_SENT]


async def test_authorised_supply_progress_and_ticket(service, publisher, updates) -> None:
    serving = asyncio.create_task(service.serve(D1, "ALC01"))
    await settle()
    answer = an_answer(publisher.last_request())
    assert answer.session_id is not None

    await service.handle(answer)
    assert service.state(D1).phase is DriverPhase.AUTHORISED
    await service.handle(ChargingStarted(driver_id=D1, cp_id="ALC01", session_id=answer.session_id))
    await service.handle(progress(answer))
    st = service.state(D1)
    assert st.phase is DriverPhase.SUPPLYING
    assert st.figures is not None
    assert st.figures.energy_kwh == Decimal("1.500")
    await service.handle(a_ticket(D1, "ALC01", answer.session_id))

    result = await asyncio.wait_for(serving, 1)
    assert result.outcome is ServiceOutcome.TICKET
    assert result.ticket is not None
    assert not result.ticket.earlier
    assert st.phase is DriverPhase.IDLE
    assert st.balance_eur == Decimal("149.30")
    assert st.last_ticket == result.ticket
    assert kinds(updates) == [
        Kind.REQUEST_SENT,
        Kind.AUTHORISED,
        Kind.SUPPLYING,
        Kind.PROGRESS,
        Kind.TICKET,
    ]


async def test_denial_ends_the_service_with_its_reason(service, publisher, updates) -> None:
    serving = asyncio.create_task(service.serve(D1, "ALC01"))
    await settle()

    await service.handle(an_answer(publisher.last_request(), ok=False, reason="CP busy"))

    result = await asyncio.wait_for(serving, 1)
    assert (result.outcome, result.reason) == (ServiceOutcome.DENIED, "CP busy")
    assert service.state(D1).phase is DriverPhase.IDLE
    assert updates[-1].kind is Kind.DENIED
    assert describe(updates[-1]) == "DENIED driver=D001 cp=ALC01 reason=CP busy"


async def test_no_answer_within_the_timeout_fails_the_service(service, clock, updates) -> None:
    serving = asyncio.create_task(service.serve(D1, "ALC01"))
    await settle()

    await clock.advance(9.9)
    assert service.state(D1).phase is DriverPhase.REQUESTED
    assert Kind.NO_ANSWER not in kinds(updates)

    await clock.advance(0.1)
    result = await asyncio.wait_for(serving, 1)
    assert (result.outcome, result.reason) == (ServiceOutcome.NO_ANSWER, NO_ANSWER_TEXT)
    assert service.state(D1).phase is DriverPhase.IDLE
    assert describe(updates[-1]) == (
        "NO ANSWER driver=D001 cp=ALC01: No answer from CENTRAL (is it running?)"
    )


async def test_an_answer_in_time_cancels_the_timeout(service, publisher, clock, updates) -> None:
    await authorised(service, publisher)

    await clock.advance(60)

    assert service.state(D1).phase is DriverPhase.AUTHORISED
    assert Kind.NO_ANSWER not in kinds(updates)


async def test_a_late_authorisation_is_cancelled(service, publisher, clock, updates) -> None:
    await service.request(D1, "ALC01")
    req = publisher.last_request()
    await clock.advance(10)

    late = an_answer(req)
    await service.handle(late)

    [stop] = publisher.of(ChargingStopped)
    assert isinstance(stop, ChargingStopped)
    assert (stop.driver_id, stop.cp_id, stop.session_id) == (D1, "ALC01", late.session_id)
    assert service.state(D1).phase is DriverPhase.IDLE
    assert updates[-1].kind is Kind.NOTICE


async def test_kafka_down_gives_no_answer_and_drops_the_pending_send(clock) -> None:
    class StuckPublisher(FakePublisher):
        async def publish(self, event: Event, **kwargs: Any) -> Delivery:
            await asyncio.Event().wait()
            raise AssertionError("never acked")

    svc = DriverService(StuckPublisher(), sleep=clock.sleep)
    try:
        serving = asyncio.create_task(svc.serve(D1, "ALC01"))
        await settle()
        await clock.advance(10)

        result = await asyncio.wait_for(serving, 1)
        assert result.outcome is ServiceOutcome.NO_ANSWER
    finally:
        await svc.close()


async def test_an_answer_before_the_request_ack_still_shows_request_sent_first(clock) -> None:
    """Under load Central's answer (and even the ticket) can beat the ack of the request."""
    acked = asyncio.Event()

    class SlowAckPublisher(FakePublisher):
        async def publish(self, event: Event, **kwargs: Any) -> Delivery:
            delivery = await super().publish(event, **kwargs)
            if isinstance(event, AuthorizationRequest):
                await acked.wait()
            return delivery

    publisher = SlowAckPublisher()
    svc = DriverService(publisher, sleep=clock.sleep)
    seen: list[Update] = []
    svc.observe(seen.append)
    try:
        serving = asyncio.create_task(svc.serve(D1, "ALC01"))
        await settle()
        answer = an_answer(publisher.last_request())
        await svc.handle(answer)
        assert answer.session_id is not None
        await svc.handle(a_ticket(D1, "ALC01", answer.session_id))
        acked.set()
        result = await asyncio.wait_for(serving, 1)
        await settle()
    finally:
        await svc.close()

    assert result.outcome is ServiceOutcome.TICKET
    assert kinds(seen) == [Kind.REQUEST_SENT, Kind.AUTHORISED, Kind.TICKET]


# --- what is not the current service -----------------------------------------------------


async def test_events_of_other_sessions_are_ignored(service, publisher, updates) -> None:
    answer = await authorised(service, publisher)
    other = uuid4()

    await service.handle(ChargingStarted(driver_id=D1, cp_id="ALC01", session_id=other))
    await service.handle(progress(answer).model_copy(update={"session_id": other}))

    st = service.state(D1)
    assert (st.phase, st.figures) == (DriverPhase.AUTHORISED, None)
    assert kinds(updates) == [Kind.REQUEST_SENT, Kind.AUTHORISED]


async def test_an_answer_to_another_request_is_ignored(service, publisher, updates) -> None:
    await service.request(D1, "ALC01")

    stray = an_answer(publisher.last_request()).model_copy(update={"request_id": uuid4()})
    await service.handle(stray)

    assert service.state(D1).phase is DriverPhase.REQUESTED
    assert kinds(updates) == [Kind.REQUEST_SENT]


async def test_ticket_of_an_earlier_session_is_shown_as_such(service, publisher, updates) -> None:
    await authorised(service, publisher)
    old = uuid4()

    await service.handle(a_ticket(D1, "VLC01", old, reason="cp_fault"))

    st = service.state(D1)
    assert st.phase is DriverPhase.AUTHORISED, "the current service goes on"
    assert st.last_ticket is not None
    assert st.last_ticket.earlier
    assert st.balance_eur == Decimal("149.30")
    assert describe(updates[-1]).endswith(
        f"charging interrupted (cp fault) (earlier session {old})"
    )


async def test_a_repeated_ticket_is_shown_once(service, publisher, updates) -> None:
    ticket = a_ticket(D1, "ALC01", uuid4())

    await service.handle(ticket)
    await service.handle(ticket)

    assert kinds(updates) == [Kind.TICKET]


async def test_events_for_drivers_not_served_here_are_ignored(service, publisher, updates) -> None:
    await authorised(service, publisher)

    await service.handle(a_ticket("D999", "ALC01", uuid4()))
    await service.handle(DriverNotice(driver_id="D999", message="hello"))

    assert kinds(updates, "D999") == []
    assert service.driver_ids == [D1]


# --- CP errors (seed flow 2) ---------------------------------------------------------------


async def test_cp_error_on_my_cp_is_shown_at_once(service, publisher, updates) -> None:
    answer = await authorised(service, publisher)
    await service.handle(progress(answer))

    await service.handle(CpErrorSimulated(cp_id="ALC01", driver_id=D1, message="Error simulated"))

    assert service.state(D1).cp_error == "Error simulated"
    assert updates[-1].kind is Kind.CP_ERROR
    assert describe(updates[-1]) == ("ERROR EN CP cp=ALC01 message=Error simulated [driver=D001]")


async def test_the_ticket_after_a_cp_error_ends_the_service(service, publisher) -> None:
    serving = asyncio.create_task(service.serve(D1, "ALC01"))
    await settle()
    answer = an_answer(publisher.last_request())
    assert answer.session_id is not None
    await service.handle(answer)
    await service.handle(CpErrorSimulated(cp_id="ALC01", driver_id=D1, message="fault"))

    await service.handle(a_ticket(D1, "ALC01", answer.session_id, reason="cp_fault"))

    result = await asyncio.wait_for(serving, 1)
    assert (result.outcome, result.reason) == (ServiceOutcome.TICKET, "cp_fault")


async def test_no_ticket_after_a_cp_error_fails_the_service(service, publisher, clock) -> None:
    serving = asyncio.create_task(service.serve(D1, "ALC01"))
    await settle()
    await service.handle(an_answer(publisher.last_request()))
    await service.handle(CpErrorSimulated(cp_id="ALC01", driver_id=D1, message="fault"))
    await settle()

    await clock.advance(9)
    assert not serving.done()
    await clock.advance(1)

    result = await asyncio.wait_for(serving, 1)
    assert result.outcome is ServiceOutcome.ERROR
    assert "fault" in result.reason


async def test_an_authorised_supply_waits_for_its_ticket(service, publisher, clock) -> None:
    serving = asyncio.create_task(service.serve(D1, "ALC01"))
    await settle()
    await service.handle(an_answer(publisher.last_request()))

    await clock.advance(3600)

    assert not serving.done()
    serving.cancel()


async def test_cp_error_elsewhere_is_ignored(service, publisher, updates) -> None:
    await authorised(service, publisher, "ALC01")

    await service.handle(CpErrorSimulated(cp_id="MAD01", driver_id=D1, message="fault"))

    assert Kind.CP_ERROR not in kinds(updates)
    assert service.state(D1).cp_error is None


async def test_cp_error_keyed_by_cp_reaches_every_driver_there(service, publisher) -> None:
    service.add_driver(D2)
    await service.request(D1, "ALC01")
    await service.request(D2, "ALC01")
    seen: list[Update] = []
    service.observe(seen.append)

    await service.handle(CpErrorSimulated(cp_id="ALC01", message="fault"))

    assert {u.driver_id for u in seen if u.kind is Kind.CP_ERROR} == {D1, D2}


async def test_cp_fixed_is_shown_and_clears_the_error(service, publisher, updates) -> None:
    await authorised(service, publisher)
    await service.handle(CpErrorSimulated(cp_id="ALC01", driver_id=D1, message="fault"))

    await service.handle(CpErrorFixed(cp_id="ALC01", driver_id=D1, message="Error fixed"))

    assert service.state(D1).cp_error is None
    assert describe(updates[-1]) == "CP FIXED cp=ALC01 message=Error fixed [driver=D001]"


# --- commands ----------------------------------------------------------------------------


async def test_stop_publishes_charging_stopped_for_the_session(service, publisher, updates) -> None:
    answer = await authorised(service, publisher)

    assert await service.stop(D1) is None

    [stop] = publisher.of(ChargingStopped)
    assert isinstance(stop, ChargingStopped)
    assert (stop.driver_id, stop.cp_id, stop.session_id) == (D1, "ALC01", answer.session_id)
    assert updates[-1].kind is Kind.STOP_SENT


async def test_stop_with_no_supply_is_refused(service, publisher) -> None:
    refused = await service.stop(D1)

    assert isinstance(refused, DriverRefusal)
    assert publisher.of(ChargingStopped) == []


async def test_a_second_request_while_busy_is_refused(service, publisher) -> None:
    await service.request(D1, "ALC01")

    refused = await service.request(D1, "VLC01")

    assert isinstance(refused, DriverRefusal)
    assert "ALC01" in refused.reason
    assert len(publisher.of(AuthorizationRequest)) == 1


async def test_an_invalid_cp_id_is_refused(service, publisher) -> None:
    refused = await service.request(D1, "no spaces allowed")

    assert isinstance(refused, DriverRefusal)
    assert publisher.events == []


async def test_one_service_serves_several_drivers(service, publisher) -> None:
    service.add_driver(D2)
    await service.request(D1, "ALC01")
    await service.request(D2, "VLC01")
    _, req2 = publisher.of(AuthorizationRequest)
    assert isinstance(req2, AuthorizationRequest)

    await service.handle(an_answer(req2, ok=False, reason="CP busy"))

    assert service.state(D1).phase is DriverPhase.REQUESTED
    assert service.state(D2).phase is DriverPhase.IDLE


# --- services file (mechanic 12) -----------------------------------------------------------


async def answer_each(publisher: FakePublisher, service: DriverService, n: int) -> None:
    """Deny each request as it comes, up to n of them."""
    answered = 0
    while answered < n:
        await asyncio.sleep(0)
        requests = publisher.of(AuthorizationRequest)
        if len(requests) > answered:
            req = requests[answered]
            assert isinstance(req, AuthorizationRequest)
            await service.handle(an_answer(req, ok=False, reason="CP busy"))
            answered += 1


async def test_next_service_waits_the_pause_after_the_previous_ended(
    service, publisher, clock, updates
) -> None:
    running = asyncio.create_task(service.run_services(D1, ["ALC01", "VLC01", "MAD01"], 4.0))
    await settle()
    await service.handle(an_answer(publisher.last_request(), ok=False, reason="CP busy"))
    await settle()
    assert len(publisher.of(AuthorizationRequest)) == 1

    await clock.advance(3.9)
    assert len(publisher.of(AuthorizationRequest)) == 1
    await clock.advance(0.1)
    assert publisher.last_request().cp_id == "VLC01"

    await clock.advance(10)  # VLC01: no answer
    await clock.advance(4)
    assert publisher.last_request().cp_id == "MAD01"
    await service.handle(an_answer(publisher.last_request(), ok=False))

    results: list[ServiceResult] = await asyncio.wait_for(running, 1)
    assert [r.outcome for r in results] == [
        ServiceOutcome.DENIED,
        ServiceOutcome.NO_ANSWER,
        ServiceOutcome.DENIED,
    ]
    assert clock.slept.count(4.0) == 2, "a pause between services, none after the last"
    assert describe(updates[-1]) == "SERVICES DONE driver=D001 n=3"


async def test_a_service_started_from_the_menu_is_waited_for(service, publisher, clock) -> None:
    await service.request(D1, "ALC01")
    running = asyncio.create_task(service.run_services(D1, ["VLC01"], 4.0))
    await settle()
    assert len(publisher.of(AuthorizationRequest)) == 1

    await service.handle(an_answer(publisher.last_request(), ok=False))
    await settle()

    assert publisher.last_request().cp_id == "VLC01"
    running.cancel()


def test_services_file_skips_blanks_and_comments() -> None:
    text = "# my day\nALC01\n\n  VLC02  # near work\n#MAD01\nBCN03\n"

    assert parse_services(text) == ["ALC01", "VLC02", "BCN03"]


def test_services_file_names_a_bad_line() -> None:
    with pytest.raises(ValueError, match=r"line 2: 'ALC 01'"):
        parse_services("ALC01\nALC 01\n")


@pytest.mark.parametrize("driver_id", ["D001", "D002", "D003"])
def test_sample_services_files_use_known_cps(driver_id: str) -> None:
    network = yaml.safe_load((ROOT / "src/evcharging/data/sample_network.yaml").read_text())
    known = {cp["id"] for cp in network["charging_points"]}

    cp_ids = parse_services((ROOT / f"services/driver_{driver_id}.txt").read_text())

    assert len(cp_ids) >= 10
    assert set(cp_ids) <= known


# --- board, observers, lines -------------------------------------------------------------


async def test_board_lists_available_cps(service) -> None:
    await service.handle(a_status("VLC01"))
    await service.handle(a_status("ALC01"))
    await service.handle(a_status("MAD01", "Averiado", available=False))

    assert [s.cp_id for s in service.available_cps()] == ["ALC01", "VLC01"]
    assert set(service.board) == {"ALC01", "VLC01", "MAD01"}


async def test_a_driver_sees_the_state_of_the_cp_serving_it(service, publisher, updates) -> None:
    await service.handle(a_status("ALC01"))
    await authorised(service, publisher)

    await service.handle(a_status("ALC01", "Suministrando", available=False))
    await service.handle(a_status("ALC01", "Suministrando", available=False))

    [change] = [u for u in updates if u.kind is Kind.CP_STATE]
    assert describe(change) == "CP STATE driver=D001 cp=ALC01 state=Suministrando"


async def test_a_driver_sees_why_the_cp_serving_it_went_out_of_service(
    service, publisher, updates
) -> None:
    await service.handle(a_status("ALC01"))
    await authorised(service, publisher)

    await service.handle(a_status("ALC01", "Parado", False, "stopped by Central"))
    await service.handle(a_status("ALC01", "Parado", False, "stopped by Central; weather alert"))
    await service.handle(a_status("ALC01", "Parado", False, "stopped by Central; weather alert"))

    assert [describe(u) for u in updates if u.kind is Kind.CP_STATE] == [
        "CP STATE driver=D001 cp=ALC01 state=Parado (stopped by Central)",
        "CP STATE driver=D001 cp=ALC01 state=Parado (stopped by Central; weather alert)",
    ]
    assert [u.message for u in updates if u.kind is Kind.BOARD][-1] == (
        "Parado (stopped by Central; weather alert)"
    )


def test_a_cp_status_from_a_central_that_gives_no_reason_shows_the_state_alone() -> None:
    legacy = a_status("ALC01", "Parado", False).model_dump(mode="json")
    del legacy["stop_reason"]
    assert state_text(CpStatus.model_validate(legacy)) == "Parado"
    assert state_text(a_status("ALC01", "Parado", False, "weather alert")) == (
        "Parado (weather alert)"
    )


async def test_the_terminals_list_says_why_the_other_cps_cannot_be_asked_for(
    service, caplog
) -> None:
    await service.handle(a_status("ALC01"))
    await service.handle(a_status("TER01", "Parado", False, "weather alert"))
    await service.handle(a_status("MAD01", "Averiado", False))
    with caplog.at_level("INFO", logger="evcharging.apps.driver"):
        list_available(service)
    assert caplog.messages == [
        "AVAILABLE n=1 of 3 CPs",
        "  ALC01 0.40 €/kWh somewhere ALC01",
        "NOT AVAILABLE n=2",
        "  MAD01 Averiado",
        "  TER01 Parado (weather alert)",
    ]


async def test_a_driver_asking_for_a_cp_under_a_weather_alert_is_told_why(
    service, publisher, updates
) -> None:
    """Through the real Central: EV_W's alert stops the CP; the board and the denial say why."""
    repo = a_repo()
    a_cp(repo, "TER01")
    a_driver(repo, D1)
    central_out = RecordingPublisher()
    central = CentralService(repo, central_out)
    await central.load()
    assert (await central.monitor_auth("TER01", object())).ok
    await central.weather_alert("TER01", "Teruel", -3.0)
    for event in central_out.of(CpStatus):
        await service.handle(event)
    assert state_text(service.board["TER01"]) == "Parado (weather alert)"

    await service.request(D1, "TER01")
    await central.on_authorization_request(publisher.last_request())
    for event in central_out.of(AuthorizationResponse):
        await service.handle(event)

    [denied] = [u for u in updates if u.kind is Kind.DENIED]
    assert denied.message == "CP out of service: weather alert (Parado, Out of Order)"
    assert service.state(D1).phase is DriverPhase.IDLE


async def test_a_queue_subscriber_gets_every_update(service, publisher) -> None:
    queue = service.subscribe()
    await service.request(D1, "ALC01")
    service.unsubscribe(queue)
    await service.handle(DriverNotice(driver_id=D1, message="after unsubscribe"))

    assert queue.qsize() == 1
    assert queue.get_nowait().kind is Kind.REQUEST_SENT


async def test_history_keeps_notifications_but_not_each_progress(service, publisher) -> None:
    answer = await authorised(service, publisher)
    await service.handle(progress(answer))
    await service.handle(DriverNotice(driver_id=D1, level="warning", message="low balance"))

    history = [u.kind for u in service.state(D1).notifications]
    assert history == [Kind.REQUEST_SENT, Kind.AUTHORISED, Kind.SUPPLYING, Kind.NOTICE]


def test_lines_carry_the_markers() -> None:
    session = uuid4()
    ticket = a_ticket(D1, "ALC01", session)
    lines = {
        describe(Update(Kind.REQUEST_SENT, D1, "ALC01")),
        describe(Update(Kind.AUTHORISED, D1, "ALC01", session, "0.35")),
        describe(Update(Kind.SUPPLYING, D1, "ALC01", session)),
        describe(
            Update(
                Kind.PROGRESS,
                D1,
                "ALC01",
                session,
                figures=Figures(Decimal("7.2"), Decimal("1.5"), Decimal("0.525")),
            )
        ),
        describe(
            Update(Kind.TICKET, D1, "ALC01", session, ticket=Ticket.of(ticket, earlier=False))
        ),
    }

    assert lines == {
        "REQUEST sent driver=D001 cp=ALC01",
        f"AUTHORISED driver=D001 cp=ALC01 session={session} price=0.35 €/kWh",
        f"SUPPLYING driver=D001 cp=ALC01 session={session}",
        "PROGRESS driver=D001 cp=ALC01 kw=7.20 kwh=1.500 eur=0.53",
        "TICKET driver=D001 cp=ALC01 kwh=2.000 eur=0.70 reason=unplugged balance=149.30 "
        "charging completed",
    }


# --- app wiring and settings ----------------------------------------------------------------


def test_every_event_for_drivers_has_a_handler(service) -> None:
    router = driver_router(service)
    for_drivers = {cls for cls in EVENT_TYPES if cls.TOPIC == CENTRAL_EVENTS}

    assert router.handled | router.ignored == for_drivers


def test_settings_from_command_line_and_file(tmp_path: Path) -> None:
    services = tmp_path / "s.txt"
    services.write_text("VLC01\n# x\nMAD02\n")

    s = parse_args(
        ["kafka.example:9092", "D001", "--cp", "ALC01", "--file", str(services), "--pause", "1"]
    )

    assert (s.bootstrap, s.driver_id) == ("kafka.example:9092", "D001")
    assert s.services == ("ALC01", "VLC01", "MAD02")
    assert (s.pause, s.answer_timeout, s.menu) == (1.0, 10.0, True)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EV_KAFKA", "k:19092")
    monkeypatch.setenv("EV_DRIVER_ID", "D003")
    monkeypatch.setenv("EV_DRIVER_ANSWER_TIMEOUT", "2.5")
    monkeypatch.setenv("EV_DRIVER_NO_MENU", "1")

    s = parse_args([])

    assert (s.bootstrap, s.driver_id, s.answer_timeout, s.menu) == ("k:19092", "D003", 2.5, False)


@pytest.mark.parametrize(
    "argv",
    [["nohostport", "D001"], ["k:9092", "bad id"], ["k:9092", "D001", "--file", "/nonexistent"]],
)
def test_bad_settings_exit_with_a_message(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)

    assert exc.value.code == 2
    assert "EV_Driver: error:" in capsys.readouterr().err


# --- what Central knows of the driver at start; silence; interruptions --------------------------


async def nothing_to_wait_for() -> None:
    return None


def a_driver_status(request: DriverStatusRequest, **session: Any) -> DriverStatus:
    return DriverStatus(
        request_id=request.request_id,
        driver_id=request.driver_id,
        known=session.pop("known", True),
        balance_eur=Decimal("120.00"),
        **session,
    )


async def test_a_restarted_driver_takes_up_its_open_supply_and_can_stop_it(
    service, publisher, updates
) -> None:
    service.sync_soon(D1, nothing_to_wait_for)
    await settle()
    [ask] = publisher.of(DriverStatusRequest)
    running = asyncio.create_task(service.run_services(D1, ["VLC01"], pause=0))
    await settle()
    assert not publisher.of(AuthorizationRequest), "the services file waits for Central's answer"
    sid = uuid4()
    await service.handle(
        a_driver_status(
            ask,
            session_id=sid,
            cp_id="ALC01",
            session_status="supplying",
            price_eur_per_kwh=Decimal("0.35"),
            energy_kwh=Decimal("2.500"),
            amount_eur=Decimal("0.88"),
        )
    )
    await settle()

    st = service.state(D1)
    assert (st.phase, st.cp_id, st.session_id) == (DriverPhase.SUPPLYING, "ALC01", sid)
    assert st.figures == Figures(Decimal(0), Decimal("2.500"), Decimal("0.88"))
    assert st.balance_eur == Decimal("120.00")
    assert describe(updates[-1]) == (
        f"RESUMED driver={D1} cp=ALC01 session={sid}: supply in progress (supplying)"
    )
    assert not publisher.of(AuthorizationRequest), "the open supply is followed first"
    assert await service.stop(D1) is None
    [stop] = publisher.of(ChargingStopped)
    assert (stop.cp_id, stop.session_id) == ("ALC01", sid)
    await service.handle(a_ticket(D1, "ALC01", sid, reason="stopped_by_driver"))
    await settle()
    assert publisher.last_request().cp_id == "VLC01", "then the services file goes on"
    running.cancel()


async def test_an_unknown_driver_is_told_so(service, publisher, updates) -> None:
    service.sync_soon(D1, nothing_to_wait_for)
    await settle()
    [ask] = publisher.of(DriverStatusRequest)

    await service.handle(a_driver_status(ask, known=False))

    assert service.state(D1).known is False
    assert describe(updates[-1]).startswith(f"UNKNOWN DRIVER driver={D1}: not registered")


async def test_without_an_answer_services_go_on_after_the_timeout(
    service, publisher, clock
) -> None:
    service.sync_soon(D1, nothing_to_wait_for)
    await settle()
    asking = asyncio.create_task(service.request(D1, "ALC01"))
    await settle()
    assert not publisher.of(AuthorizationRequest)
    await clock.advance(10.0)
    await asyncio.wait_for(asking, 1)
    assert publisher.last_request().cp_id == "ALC01"


async def test_no_news_from_central_mid_supply_is_shown_then_cleared(
    service, publisher, updates, clock
) -> None:
    answer = await authorised(service, publisher)
    await service.handle(progress(answer))
    await settle()  # the watch starts now
    await clock.advance(4.9)
    assert Kind.CENTRAL_SILENT not in kinds(updates)
    await service.handle(progress(answer, kwh="1.600"))
    await settle()
    await clock.advance(4.9)
    assert Kind.CENTRAL_SILENT not in kinds(updates), "each reading restarts the watch"
    await clock.advance(0.2)

    assert kinds(updates)[-1] is Kind.CENTRAL_SILENT
    assert service.state(D1).central_silent
    assert describe(updates[-1]).startswith(f"NO NEWS FROM CENTRAL driver={D1} cp=ALC01 for 5 s")
    await clock.advance(30)
    assert kinds(updates).count(Kind.CENTRAL_SILENT) == 1, "said once, not every 5 s"

    await service.handle(progress(answer, kwh="1.700"))
    assert kinds(updates)[-2:] == [Kind.CENTRAL_BACK, Kind.PROGRESS]
    assert not service.state(D1).central_silent


async def test_no_silence_is_watched_while_waiting_for_the_plug(
    service, publisher, updates, clock
) -> None:
    await authorised(service, publisher)
    await clock.advance(60)
    assert Kind.CENTRAL_SILENT not in kinds(updates)


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("unplugged", "charging completed"),
        ("stopped_by_driver", "charging completed"),
        ("cp_fault", "charging interrupted (cp fault)"),
        ("monitor_lost", "charging interrupted (monitor lost)"),
        ("stopped_by_central", "charging interrupted (stopped by central)"),
    ],
)
async def test_a_ticket_says_completed_or_interrupted_and_why(
    service, publisher, updates, reason: str, words: str
) -> None:
    answer = await authorised(service, publisher)
    assert answer.session_id is not None
    await service.handle(a_ticket(D1, "ALC01", answer.session_id, reason=reason))

    ticket = updates[-1]
    assert describe(ticket).endswith(words)
    assert ticket.level == ("warning" if "interrupted" in words else "info")
