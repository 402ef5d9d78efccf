"""CentralService with an in-memory SQLite repository and a recording publisher (no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest

from evcharging.contracts import events as ev
from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.contracts.socket_ops import ErrReason
from evcharging.domain.money import cost
from evcharging.services.audit import AuditEntry, AuditQuery
from evcharging.services.central import Answer, CentralService, Who
from evcharging.services.cp_auth import make_verifier, new_secret
from tests.support.builders import a_cp, a_driver, a_repo
from tests.support.fakes import RecordingPublisher

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def repo():
    r = a_repo()
    a_cp(r, "CP1", price="0.40")
    a_cp(r, "CP2", price="0.50")
    a_driver(r, "D1", balance="100.00")
    a_driver(r, "D2", balance="50.00")
    a_driver(r, "BROKE", balance="0.00")
    return r


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def central(repo, clock) -> CentralService:
    service = CentralService(repo, RecordingPublisher(), now=lambda: NOW, monotonic=clock)
    await service.load()
    return service


def pub(central: CentralService) -> RecordingPublisher:
    assert isinstance(central.publisher, RecordingPublisher)
    return central.publisher


async def connect(central: CentralService, cp_id: str) -> object:
    token = object()
    assert (await central.monitor_auth(cp_id, token)).ok
    return token


async def authorised_session(central: CentralService, driver: str = "D1", cp: str = "CP1") -> UUID:
    await central.on_authorization_request(ev.AuthorizationRequest(driver_id=driver, cp_id=cp))
    answer = pub(central).of(ev.AuthorizationResponse)[-1]
    assert answer.authorised, answer.reason
    assert answer.session_id is not None
    return answer.session_id


async def supplying(
    central: CentralService, driver: str = "D1", cp: str = "CP1", kwh: str = "2.500"
) -> UUID:
    sid = await authorised_session(central, driver, cp)
    await central.on_supply_started(ev.SupplyStarted(cp_id=cp, session_id=sid, driver_id=driver))
    for i, e in enumerate(("0.800", "1.700", kwh), start=1):
        await central.on_telemetry(
            ev.CpTelemetry(
                cp_id=cp,
                session_id=sid,
                driver_id=driver,
                seq=i,
                kw=Decimal("22"),
                energy_kwh=Decimal(e),
                amount_eur=Decimal("0"),
            )
        )
    return sid


def state(central: CentralService, cp: str) -> str:
    view = central.cp(cp)
    assert view is not None
    return view.state.value


async def test_every_cp_starts_desconectado(central: CentralService) -> None:
    assert {view.state.value for view in central.cps()} == {"Desconectado"}
    assert {e.state for e in pub(central).of(ev.CpStatus)} == {"Desconectado"}


async def test_unknown_cp_and_second_monitor_are_refused(central: CentralService) -> None:
    assert (await central.monitor_auth("NOPE", object())).reason.startswith("unknown CP")
    await connect(central, "CP1")
    answer = await central.monitor_auth("CP1", object())
    assert not answer.ok
    assert "another Monitor" in answer.reason


async def test_happy_path_bills_energy_times_price_exactly_once(
    central: CentralService, repo
) -> None:
    await connect(central, "CP1")
    sid = await supplying(central, kwh="2.500")
    assert state(central, "CP1") == "Suministrando"
    assert central.cp("CP1").amount_eur == "1.00"  # type: ignore[union-attr]
    assert [e.energy_kwh for e in pub(central).of(ev.ChargingProgress)] == [
        Decimal("0.800"),
        Decimal("1.700"),
        Decimal("2.500"),
    ]
    end = ev.SupplyEnded(
        cp_id="CP1", session_id=sid, driver_id="D1", energy_kwh=Decimal("2.600"), reason="unplugged"
    )
    await central.on_supply_ended(end)
    await central.on_supply_ended(end)  # redelivered
    await central.on_supply_ended(
        end.model_copy(update={"event_id": UUID(int=7)})
    )  # the same unplug sent twice
    tickets = pub(central).of(ev.ChargingTicket)
    assert len(tickets) == 1
    assert tickets[0].energy_kwh == Decimal("2.600")
    assert tickets[0].amount_eur == cost(Decimal("2.6"), Decimal("0.40")) == Decimal("1.04")
    assert tickets[0].balance_eur == Decimal("98.96")
    assert repo.get_driver("D1").balance_eur == Decimal("98.96")
    assert state(central, "CP1") == "Activado"
    assert repo.get_session(str(sid)).end_reason.value == "unplugged"


async def test_a_redelivered_request_is_answered_again_without_a_second_session(
    central: CentralService, repo
) -> None:
    await connect(central, "CP1")
    request = ev.AuthorizationRequest(driver_id="D1", cp_id="CP1")
    await central.on_authorization_request(request)
    await central.on_authorization_request(request)
    answers = pub(central).of(ev.AuthorizationResponse)
    assert [a.authorised for a in answers] == [True, True]
    assert answers[0].session_id == answers[1].session_id
    assert len(repo.find_sessions(cp_id="CP1")) == 1
    assert len(pub(central).of(ev.SupplyAuthorised)) == 1


async def test_two_drivers_racing_for_one_cp_exactly_one_wins(central: CentralService) -> None:
    await connect(central, "CP1")
    await central.on_authorization_request(ev.AuthorizationRequest(driver_id="D1", cp_id="CP1"))
    await central.on_authorization_request(ev.AuthorizationRequest(driver_id="D2", cp_id="CP1"))
    answers = pub(central).of(ev.AuthorizationResponse)
    assert [a.authorised for a in answers] == [True, False]
    assert "busy" in (answers[1].reason or "")


@pytest.mark.parametrize(
    ("setup", "driver", "cp", "reason"),
    [
        ("none", "D1", "NOPE", "unknown CP"),
        ("connect", "GHOST", "CP1", "unknown driver"),
        ("none", "D1", "CP1", "Desconectado"),
        ("stop", "D1", "CP1", "Parado"),
        ("error", "D1", "CP1", "Averiado"),
        ("connect", "BROKE", "CP1", "insufficient balance"),
    ],
)
async def test_denials_carry_a_clear_reason(
    central: CentralService, setup: str, driver: str, cp: str, reason: str
) -> None:
    if setup != "none":
        await connect(central, "CP1")
    if setup == "stop":
        await central.stop_cp("CP1")
    if setup == "error":
        await central.simulate_error("CP1")
    await central.on_authorization_request(ev.AuthorizationRequest(driver_id=driver, cp_id=cp))
    answer = pub(central).of(ev.AuthorizationResponse)[-1]
    assert not answer.authorised
    assert reason in (answer.reason or "")


async def test_seed_flow_1_driver_stop_closes_bills_releases_and_stops_the_engine(
    central: CentralService, repo
) -> None:
    await connect(central, "CP1")
    sid = await supplying(central, kwh="3.000")
    stop = ev.ChargingStopped(driver_id="D1", cp_id="CP1")
    await central.on_charging_stopped(stop)
    await central.on_charging_stopped(stop)  # redelivered: nothing of D1's left to stop
    session = repo.get_session(str(sid))
    assert session.status.value == "ended"
    assert session.end_reason.value == "stopped_by_driver"
    assert session.amount_eur == Decimal("1.20")
    assert repo.get_driver("D1").balance_eur == Decimal("98.80")
    assert [s.session_id for s in pub(central).of(ev.StopSupply)] == [sid]
    assert len(pub(central).of(ev.ChargingTicket)) == 1
    assert state(central, "CP1") == "Activado"


async def test_a_driver_cannot_stop_someone_elses_supply(central: CentralService, repo) -> None:
    await connect(central, "CP1")
    sid = await supplying(central, driver="D1")
    await central.on_charging_stopped(
        ev.ChargingStopped(driver_id="D2", cp_id="CP1", session_id=sid)
    )
    assert repo.get_session(str(sid)).is_open
    notice = pub(central).of(ev.DriverNotice)[-1]
    assert notice.driver_id == "D2"
    assert state(central, "CP1") == "Suministrando"


async def test_seed_flow_2_simulated_error_tells_the_driver_ends_the_supply_and_fix_restores(
    central: CentralService, repo
) -> None:
    await connect(central, "CP1")
    sid = await supplying(central, kwh="2.000")
    await central.simulate_error("CP1")
    error = pub(central).of(ev.CpErrorSimulated)[-1]
    assert (error.cp_id, error.driver_id, error.key()) == ("CP1", "D1", "D1")
    ticket = pub(central).of(ev.ChargingTicket)[-1]
    assert (ticket.session_id, ticket.end_reason, ticket.amount_eur) == (
        sid,
        "cp_fault",
        Decimal("0.80"),
    )
    assert state(central, "CP1") == "Averiado"
    assert repo.get_cp("CP1").error_simulated
    await central.fix_error("CP1")
    fixed = pub(central).of(ev.CpErrorFixed)[-1]
    assert (fixed.cp_id, fixed.driver_id) == ("CP1", "D1")
    assert state(central, "CP1") == "Activado"


async def test_stop_all_ends_every_supply_with_a_ticket_and_resume_all_restores(
    central: CentralService,
) -> None:
    await connect(central, "CP1")
    await connect(central, "CP2")
    await supplying(central, "D1", "CP1")
    await supplying(central, "D2", "CP2")
    await central.stop_all()
    assert {state(central, c) for c in ("CP1", "CP2")} == {"Parado"}
    assert central.cp("CP1").caption == "Out of Order"  # type: ignore[union-attr]
    assert sorted(t.driver_id for t in pub(central).of(ev.ChargingTicket)) == ["D1", "D2"]
    assert {t.end_reason for t in pub(central).of(ev.ChargingTicket)} == {"stopped_by_central"}
    assert len(pub(central).of(ev.CpStop)) == 2
    await central.resume_all()
    assert {state(central, c) for c in ("CP1", "CP2")} == {"Activado"}


async def test_engine_ko_reported_by_the_monitor_faults_the_cp_and_ends_the_supply(
    central: CentralService,
) -> None:
    token = await connect(central, "CP1")
    await supplying(central)
    await central.heartbeat("CP1", token, engine_ok=False)
    assert state(central, "CP1") == "Averiado"
    assert pub(central).of(ev.ChargingTicket)[-1].end_reason == "cp_fault"
    assert "ERROR EN CP" in pub(central).of(ev.DriverNotice)[-1].message
    await central.monitor_recovered("CP1", token)
    assert state(central, "CP1") == "Activado"


async def test_a_silent_monitor_makes_the_cp_desconectado_and_ends_its_supply(
    central: CentralService, clock: Clock
) -> None:
    token = await connect(central, "CP1")
    await supplying(central)
    clock.t += 2.0
    await central.check_heartbeats()
    assert state(central, "CP1") == "Suministrando"
    await central.heartbeat("CP1", token, engine_ok=True)
    clock.t += 3.5
    await central.check_heartbeats()
    assert state(central, "CP1") == "Desconectado"
    assert pub(central).of(ev.ChargingTicket)[-1].end_reason == "monitor_lost"
    assert not (await central.heartbeat("CP1", token, engine_ok=True)).ok


async def test_telemetry_for_a_closed_session_tells_the_engine_to_stop(
    central: CentralService, clock: Clock
) -> None:
    await connect(central, "CP1")
    sid = await supplying(central)
    await central.on_charging_stopped(ev.ChargingStopped(driver_id="D1"))
    stops = len(pub(central).of(ev.StopSupply))
    late = ev.CpTelemetry(
        cp_id="CP1",
        session_id=sid,
        driver_id="D1",
        seq=9,
        kw=Decimal("22"),
        energy_kwh=Decimal("9"),
        amount_eur=Decimal("3.6"),
    )
    await central.on_telemetry(late)
    await central.on_telemetry(late)  # rate-limited
    assert len(pub(central).of(ev.StopSupply)) == stops + 1
    assert len(pub(central).of(ev.ChargingTicket)) == 1


async def test_a_restarted_central_reattaches_open_sessions_and_resends_unsent_tickets(
    central: CentralService, repo, clock: Clock
) -> None:
    await connect(central, "CP1")
    await connect(central, "CP2")
    open_sid = await supplying(central, "D1", "CP1", kwh="1.900")
    ended_sid = await supplying(central, "D2", "CP2")
    await central.on_charging_stopped(ev.ChargingStopped(driver_id="D2"))
    assert central.save_running_figures() == 1  # what Central's housekeeping does twice a second
    with repo._conn:  # simulate a crash between closing the session and sending its ticket
        repo._conn.execute(
            "UPDATE sessions SET ticket_sent = 0 WHERE session_id = ?", (str(ended_sid),)
        )
    again = CentralService(repo, RecordingPublisher(), now=lambda: NOW, monotonic=clock)
    await again.load()
    view = again.cp("CP1")
    assert view is not None
    assert (view.session_id, view.energy_kwh) == (str(open_sid), "1.900")
    assert [t.session_id for t in pub(again).of(ev.ChargingTicket)] == [ended_sid]
    assert repo.get_driver("D2").balance_eur == Decimal("48.75")  # debited once, not again
    assert state(again, "CP1") == "Desconectado"


async def test_a_final_reading_after_close_bills_the_difference_exactly_once(
    central: CentralService, repo
) -> None:
    await connect(central, "CP1")
    sid = await supplying(central, kwh="2.000")  # 0.80 EUR billed at 0.40 EUR/kWh
    await central.simulate_error("CP1")
    assert repo.get_driver("D1").balance_eur == Decimal("99.20")
    final = ev.SupplyEnded(
        cp_id="CP1",
        session_id=sid,
        driver_id="D1",
        energy_kwh=Decimal("2.500"),
        reason="engine_restarted",
    )
    await central.on_supply_ended(final)
    await central.on_supply_ended(final)  # redelivered
    await central.on_supply_ended(final.model_copy(update={"event_id": UUID(int=9)}))  # sent twice
    lower = final.model_copy(update={"event_id": UUID(int=10), "energy_kwh": Decimal("2.100")})
    await central.on_supply_ended(lower)
    session = repo.get_session(str(sid))
    assert (session.energy_kwh, session.amount_eur) == (Decimal("2.500"), Decimal("1.00"))
    assert repo.get_driver("D1").balance_eur == Decimal("99.00")
    tickets = pub(central).of(ev.ChargingTicket)
    assert [(t.energy_kwh, t.amount_eur, t.balance_eur) for t in tickets] == [
        (Decimal("2.000"), Decimal("0.80"), Decimal("99.20")),
        (Decimal("2.500"), Decimal("1.00"), Decimal("99.00")),
    ]


# --- a driver app asking what Central knows of it; denials at the CP's menu ----------------------


async def test_driver_status_tells_known_balance_and_the_open_supply(central) -> None:
    await connect(central, "CP1")
    sid = await authorised_session(central, "D1", "CP1")
    await central.on_driver_status_request(ev.DriverStatusRequest(driver_id="D1"))
    await central.on_driver_status_request(ev.DriverStatusRequest(driver_id="D2"))
    await central.on_driver_status_request(ev.DriverStatusRequest(driver_id="NOBODY"))

    d1, d2, nobody = pub(central).of(ev.DriverStatus)
    assert (d1.known, d1.session_id, d1.cp_id, d1.session_status) == (
        True,
        sid,
        "CP1",
        "authorised",
    )
    assert d1.balance_eur == Decimal("100.00")
    assert (d2.known, d2.session_id, d2.balance_eur) == (True, None, Decimal("50.00"))
    assert (nobody.known, nobody.balance_eur) == (False, None)


async def test_a_denial_of_a_request_made_at_the_cp_reaches_the_cp(central) -> None:
    await connect(central, "CP1")
    request = ev.AuthorizationRequest(driver_id="NOBODY", cp_id="CP1", origin="cp")
    await central.on_authorization_request(request)
    await central.on_authorization_request(ev.AuthorizationRequest(driver_id="NOBODY", cp_id="CP1"))

    [denial] = pub(central).of(ev.RequestDenied)  # only the one asked at the CP
    assert (denial.cp_id, denial.request_id, denial.reason) == (
        "CP1",
        request.request_id,
        "unknown driver",
    )


# --- issue 13: the audit log and the Registry's change feed ------------------------------------


def rows(repo, action: AuditAction | None = None, cp: str | None = None) -> list[AuditEntry]:
    """The audit log, oldest first."""
    found = repo.find_audit(AuditQuery(action=action, cp_id=cp, limit=500))
    return list(reversed(found))


def enrol(repo, cp_id: str, location: str = "Elche") -> None:
    """What EV_Registry does at an alta (a cheap scrypt: only the rows matter here)."""
    assert repo.enrol_cp(cp_id, location, Decimal("0.30"), make_verifier(new_secret(), n=2**4))


async def test_every_cp_state_change_is_audited_with_the_monitors_ip(
    central: CentralService, repo
) -> None:
    assert rows(repo, AuditAction.CP_STATE) == []  # loading shows Desconectado: no change
    token = object()
    assert (await central.monitor_auth("CP1", token, peer="10.0.0.5:40001")).ok
    await central.monitor_fault("CP1", token, "Engine KO")
    await central.monitor_recovered("CP1", token)
    await central.monitor_lost("CP1", token, "link lost")
    changes = rows(repo, AuditAction.CP_STATE)
    assert [(r.detail, r.params["from"], r.params["to"]) for r in changes] == [
        ("Desconectado -> Activado", "Desconectado", "Activado"),
        ("Activado -> Averiado", "Activado", "Averiado"),
        ("Averiado -> Activado", "Averiado", "Activado"),
        ("Activado -> Desconectado", "Activado", "Desconectado"),
    ]
    assert {(r.actor, r.ip, r.cp_id) for r in changes} == {("cp:CP1", "10.0.0.5", "CP1")}
    await central.monitor_auth("CP2", object())
    assert rows(repo, AuditAction.CP_STATE, cp="CP2")[0].ip == "-"  # no address given


async def test_stop_and_resume_are_audited_as_blocked_and_unblocked_with_who_asked(
    central: CentralService, repo
) -> None:
    await connect(central, "CP1")
    admin = Who("admin", "192.168.1.7")
    await central.stop_cp("CP1", admin)
    await central.resume_cp("CP1", admin)
    await central.stop_all()  # Central's own (no operator): actor "central"
    blocked = rows(repo, AuditAction.CP_BLOCKED)
    assert [(r.actor, r.ip, r.cp_id) for r in blocked] == [
        ("admin", "192.168.1.7", "CP1"),
        ("central", "-", "CP1"),
        ("central", "-", "CP2"),
    ]
    [unblocked] = rows(repo, AuditAction.CP_UNBLOCKED)
    assert (unblocked.actor, unblocked.ip, unblocked.cp_id) == ("admin", "192.168.1.7", "CP1")
    assert [r.detail for r in rows(repo, AuditAction.CP_STATE, cp="CP1")] == [
        "Desconectado -> Activado",
        "Activado -> Parado",
        "Parado -> Activado",
        "Activado -> Parado",
    ]


async def test_an_interrupted_supply_is_an_incident_and_a_finished_one_is_not(
    central: CentralService, repo
) -> None:
    token = await connect(central, "CP1")
    sid = await supplying(central, "D1", "CP1", kwh="2.500")
    await central.on_charging_stopped(ev.ChargingStopped(driver_id="D1", cp_id="CP1"))
    assert rows(repo, AuditAction.SUPPLY_INCIDENT) == []  # the driver ended it: no incident
    sid = await supplying(central, "D1", "CP1", kwh="1.000")
    await central.monitor_fault("CP1", token, "Engine KO")
    [incident] = rows(repo, AuditAction.SUPPLY_INCIDENT)
    assert incident.cp_id == "CP1"
    assert incident.params["session_id"] == str(sid)
    assert incident.params["driver"] == "D1"
    assert incident.params["reason"] == "cp_fault"
    assert "interrupted: cp fault" in incident.detail


async def test_a_denied_driver_is_audited_with_the_events_source(
    central: CentralService, repo
) -> None:
    await connect(central, "CP1")
    await central.on_authorization_request(
        ev.AuthorizationRequest(driver_id="BROKE", cp_id="CP1", source="driver-app-7")
    )
    [denied] = rows(repo, AuditAction.DRIVER_DENIED)
    assert (denied.actor, denied.ip, denied.cp_id) == ("driver:BROKE", "-", "CP1")
    assert denied.outcome is Outcome.DENIED
    assert denied.params["source"] == "driver-app-7"
    assert denied.detail == pub(central).of(ev.AuthorizationResponse)[-1].reason


async def test_forget_auth_disconnects_the_cp_ends_its_supply_and_refuses_its_link(
    central: CentralService, repo
) -> None:
    assert not await central.forget_auth("CP1", "deregistered")  # not authenticated: nothing
    token = await connect(central, "CP1")
    await supplying(central, "D1", "CP1")
    assert await central.forget_auth("CP1", "deregistered at EV_Registry")
    assert state(central, "CP1") == "Desconectado"
    assert pub(central).of(ev.ChargingTicket)[-1].end_reason == "monitor_lost"
    answer = central.heartbeat_now("CP1", token, True)
    assert answer is not None
    assert answer.reason == "not_authenticated"
    assert (await central.monitor_fault("CP1", token, "x")).reason == "not_authenticated"
    assert (await central.monitor_auth("CP1", object())).ok  # a new AUTH is heard again
    assert [r.params["reason"] for r in rows(repo, AuditAction.SUPPLY_INCIDENT)] == ["monitor_lost"]


async def test_a_cp_registered_after_start_up_is_loaded_when_it_authenticates(
    central: CentralService, repo
) -> None:
    enrol(repo, "ELX01")
    assert central.cp("ELX01") is None  # the feed has not been read yet
    assert (await central.monitor_auth("ELX01", object(), peer="10.0.0.8:5000")).ok
    view = central.cp("ELX01")
    assert view is not None
    assert (view.state.value, view.registered) == ("Activado", True)
    assert not await central.ensure_cp("NOPE")
    assert await central.ensure_cp("CP1")
    assert not (await central.monitor_auth("NOPE", object())).ok


async def test_the_registry_feed_shows_new_cps_and_drops_revoked_or_rotated_credentials(
    repo, clock
) -> None:
    enrol(repo, "CP1")  # registered before Central starts
    central = CentralService(repo, RecordingPublisher(), now=lambda: NOW, monotonic=clock)
    await central.load()
    assert [(v.id, v.registered) for v in central.cps()] == [("CP1", True), ("CP2", False)]
    assert await central.follow_registry() == 0  # what came before start-up is not news

    enrol(repo, "ELX01", location="Elche - Centro")
    assert await central.follow_registry() == 1
    view = central.cp("ELX01")
    assert view is not None
    assert (view.state.value, view.registered, view.location) == (
        "Desconectado",
        True,
        "Elche - Centro",
    )
    assert pub(central).of(ev.CpStatus)[-1].cp_id == "ELX01"

    token = await connect(central, "ELX01")
    assert repo.rotate_credentials("ELX01", make_verifier(new_secret(), n=2**4))
    await central.follow_registry()
    assert state(central, "ELX01") == "Desconectado"  # must prove its new secret
    assert central.cp("ELX01").registered  # type: ignore[union-attr]
    assert central.heartbeat_now("ELX01", token, True) == central_answer_not_authenticated()

    token = await connect(central, "ELX01")
    assert repo.deregister_cp("ELX01")
    await central.follow_registry()
    view = central.cp("ELX01")
    assert view is not None
    assert (view.state.value, view.registered) == ("Desconectado", False)
    assert central.heartbeat_now("ELX01", token, True) == central_answer_not_authenticated()
    assert "must authenticate again (deregistered at EV_Registry)" in central.messages()[-1].text


def central_answer_not_authenticated() -> Answer:
    return Answer(False, ErrReason.NOT_AUTHENTICATED)


async def test_a_cp_authenticates_with_the_location_and_price_the_registry_just_set(
    central: CentralService, repo
) -> None:
    """The Monitor registers (a new location and price) and authenticates within milliseconds,
    before Central's next poll of the change feed: the authentication reads the row itself, so
    no driver is authorised at the old price."""
    assert central.cp("CP1") is not None
    repo.update_cp("CP1", "Elche - Registry", Decimal("0.77"))
    await connect(central, "CP1")
    view = central.cp("CP1")
    assert view is not None
    assert view.location == "Elche - Registry"
    assert Decimal(view.price_eur_per_kwh) == Decimal("0.77")
