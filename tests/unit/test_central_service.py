"""CentralService with an in-memory SQLite repository and a recording publisher (no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest

from evcharging.contracts import events as ev
from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.contracts.end_reasons import SupplyEndReason
from evcharging.contracts.socket_ops import ErrReason
from evcharging.domain.admin_rules import Conflict, UnknownCP
from evcharging.domain.money import cost
from evcharging.services.audit import AuditEntry, AuditQuery
from evcharging.services.central import Answer, CentralService, Who
from evcharging.services.central_keys import CentralKeys
from evcharging.services.cp_auth import make_verifier, new_secret
from evcharging.services.cp_keys import CpKey, CpTopicCodec, KeyRing, MasterKey, RecordRejected
from evcharging.services.ports import Delivery
from tests.support.builders import a_cp, a_driver, a_repo
from tests.support.clock import Clock
from tests.support.fakes import RecordingPublisher

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


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
    clock.now += 2.0
    await central.check_heartbeats()
    assert state(central, "CP1") == "Suministrando"
    await central.heartbeat("CP1", token, engine_ok=True)
    clock.now += 3.5
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


# --- per-CP keys ------------------------------------------------------------------------------


class SealingPublisher(RecordingPublisher):
    """Seals every event with Central's codec when it is published, as the Kafka publisher does
    at each send: a command published once its CP's keys are gone raises KeyUnavailable.
    `sealed` keeps each record value (what an Engine would read)."""

    def __init__(self, codec: CpTopicCodec) -> None:
        super().__init__()
        self.codec = codec
        self.sealed: list[tuple[ev.Event, bytes]] = []

    async def publish(self, event, *, on_delivered=None):  # type: ignore[no-untyped-def]
        self.sealed.append((event, self.codec.encode(event)))
        return await super().publish(event, on_delivered=on_delivered)

    async def publish_soon(self, event: ev.Event) -> None:
        self.sealed.append((event, self.codec.encode(event)))
        await super().publish_soon(event)

    def commands(self) -> list[tuple[ev.Event, bytes]]:
        return [(e, value) for e, value in self.sealed if e.TOPIC.base == "cp-commands"]


MASTER = MasterKey(MasterKey.generate())


def keyed(repo, clock, *, encrypt: bool = True) -> CentralService:
    keys = CentralKeys(repo, MASTER, encrypt=encrypt)
    keys.load()
    return CentralService(
        repo, SealingPublisher(keys.codec), now=lambda: NOW, monotonic=clock, keys=keys
    )


@pytest.fixture
async def central_k(repo, clock) -> CentralService:
    service = keyed(repo, clock)
    await service.load()
    return service


def sealing(central: CentralService) -> SealingPublisher:
    assert isinstance(central.publisher, SealingPublisher)
    return central.publisher


def engine_holding(*keys: CpKey) -> CpTopicCodec:
    """An Engine's codec holding `keys` (what its Monitor handed over)."""
    codec = CpTopicCodec(KeyRing())
    for key in keys:
        codec.ring.install(key)
    return codec


async def authenticated(central: CentralService, cp_id: str = "CP1") -> tuple[object, CpKey]:
    """What the socket does at a right PROOF: monitor_auth, then issue_key."""
    token = await connect(central, cp_id)
    return token, await central.issue_key(cp_id, "10.0.0.21:40001")


def audit_rows(repo, action: AuditAction) -> list[AuditEntry]:
    return list(reversed(repo.find_audit(AuditQuery(action=action))))


async def test_issue_key_gives_a_new_version_each_time_and_audits_it_with_the_address(
    central_k: CentralService, repo
) -> None:
    _, first = await authenticated(central_k)
    second = await central_k.issue_key("CP1", "10.0.0.21:40002")
    assert (first.version, second.version) == (1, 2)
    assert central_k.keys is not None
    assert central_k.keys.ring.current("CP1") == second
    rows = audit_rows(repo, AuditAction.KEY_ISSUED)
    assert [(r.actor, r.ip, r.cp_id, r.outcome) for r in rows] == [
        ("cp:CP1", "10.0.0.21", "CP1", Outcome.OK)
    ] * 2
    assert [r.detail for r in rows] == [
        "key v1 issued at authentication",
        "key v2 issued at authentication",
    ]
    for row in rows:  # never the key
        assert second.secret.hex() not in repr(row)


async def test_revoking_keys_mid_supply_ends_it_stops_the_engine_with_the_old_key_then_drops_it(
    central_k: CentralService, repo
) -> None:
    """ "Restaurar claves": ticket from the last reading, STOP_SUPPLY and CP_STOP sealed with
    the key the Engine still holds (the fake publisher seals at publish time: after the keys
    are gone it could not), then no key, Parado, and every heartbeat told keys_revoked."""
    token, key = await authenticated(central_k)
    engine = engine_holding(key)
    sid = await supplying(central_k, kwh="2.500")
    view = await central_k.revoke_keys("CP1", Who("admin", "10.0.0.9"))

    assert view.state.value == "Parado"
    [ticket] = pub(central_k).of(ev.ChargingTicket)
    assert (ticket.session_id, ticket.energy_kwh, ticket.amount_eur) == (
        sid,
        Decimal("2.500"),
        Decimal("1.00"),
    )
    assert ticket.end_reason.value == "keys_revoked"
    assert repo.get_session(str(sid)).end_reason.value == "keys_revoked"
    assert repo.get_driver("D1").balance_eur == Decimal("99.00")
    sent = [
        (type(e), engine.decode("cp-commands", value)) for e, value in sealing(central_k).commands()
    ]
    assert [kind for kind, _ in sent][-2:] == [ev.StopSupply, ev.CpStop]
    stop, cp_stop = (opened for _, opened in sent[-2:])
    assert isinstance(stop, ev.StopSupply)
    assert (stop.session_id, stop.reason) == (sid, SupplyEndReason.KEYS_REVOKED)
    assert isinstance(cp_stop, ev.CpStop)

    assert central_k.keys is not None
    assert central_k.keys.ring.current("CP1") is None
    assert [k.cp_id for k in repo.stored_cp_keys()] == []
    assert repo.get_cp("CP1").keys_revoked
    for _ in range(3):
        assert central_k.heartbeat_now("CP1", token, True) == Answer(False, "keys_revoked")
    assert state(central_k, "CP1") == "Parado"
    [row] = audit_rows(repo, AuditAction.KEYS_REVOKED)
    assert (row.actor, row.ip, row.cp_id) == ("admin", "10.0.0.9", "CP1")
    assert "v1" in row.detail
    [incident] = audit_rows(repo, AuditAction.SUPPLY_INCIDENT)
    assert incident.params["reason"] == "keys_revoked"
    with pytest.raises(Conflict, match="already revoked"):
        await central_k.revoke_keys("CP1")
    with pytest.raises(UnknownCP):
        await central_k.revoke_keys("NOPE")


async def test_a_revoked_cp_is_refused_supplies_until_it_authenticates_again(
    central_k: CentralService, repo
) -> None:
    token, old = await authenticated(central_k)
    await central_k.revoke_keys("CP1")
    await central_k.on_authorization_request(ev.AuthorizationRequest(driver_id="D1", cp_id="CP1"))
    assert not pub(central_k).of(ev.AuthorizationResponse)[-1].authorised
    assert (await central_k.monitor_auth("CP1", token)).ok  # the same link, authenticating again
    new = await central_k.issue_key("CP1", "10.0.0.21:40001")
    assert new.version == old.version + 1
    assert state(central_k, "CP1") == "Activado"
    assert not repo.get_cp("CP1").keys_revoked
    assert central_k.heartbeat_now("CP1", token, True) == Answer(True)
    event, value = sealing(central_k).commands()[-1]
    assert isinstance(event, ev.CpResume)  # back in service, sealed with the new key
    assert isinstance(engine_holding(new).decode("cp-commands", value), ev.CpResume)
    with pytest.raises(RecordRejected):
        engine_holding(old).decode("cp-commands", value)
    await central_k.on_authorization_request(ev.AuthorizationRequest(driver_id="D1", cp_id="CP1"))
    assert pub(central_k).of(ev.AuthorizationResponse)[-1].authorised


async def test_a_cp_stopped_by_central_is_told_it_is_stopped_when_it_gets_a_new_key(
    central_k: CentralService,
) -> None:
    token, _ = await authenticated(central_k)
    await central_k.stop_cp("CP1")
    await central_k.revoke_keys("CP1")
    await central_k.monitor_auth("CP1", token)
    key = await central_k.issue_key("CP1")
    assert state(central_k, "CP1") == "Parado"  # still stopped by Central
    event, value = sealing(central_k).commands()[-1]
    assert isinstance(event, ev.CpStop)
    assert isinstance(engine_holding(key).decode("cp-commands", value), ev.CpStop)
    assert not [e for e, _ in sealing(central_k).commands() if isinstance(e, ev.CpResume)]


async def test_a_rotation_asks_only_connected_cps_whose_keys_are_not_revoked(
    central_k: CentralService, repo, clock
) -> None:
    a_cp(repo, "CP3")
    await central_k.ensure_cp("CP3")
    one, _ = await authenticated(central_k, "CP1")
    two, _ = await authenticated(central_k, "CP2")
    await central_k.revoke_keys("CP2")
    # CP3 is known but not connected
    asked = central_k.rotate_all_keys(Who("admin", "10.0.0.9"))
    assert asked == ["CP1"]
    assert central_k.heartbeat_now("CP1", one, True) == Answer(False, "rekey")
    assert central_k.heartbeat_now("CP1", one, True) == Answer(True)  # once
    assert central_k.heartbeat_now("CP2", two, True) == Answer(False, "keys_revoked")
    [row] = audit_rows(repo, AuditAction.KEYS_ROTATED)
    assert (row.actor, row.ip, row.detail) == (
        "admin",
        "10.0.0.9",
        "1 connected CPs asked for new keys",
    )
    assert state(central_k, "CP1") == "Activado"


async def test_a_heartbeat_that_changes_the_engine_health_still_carries_the_key_notice(
    central_k: CentralService,
) -> None:
    token, _ = await authenticated(central_k)
    await central_k.revoke_keys("CP1")
    assert await central_k.heartbeat("CP1", token, False) == Answer(False, "keys_revoked")
    assert await central_k.heartbeat("CP1", token, True) == Answer(False, "keys_revoked")
    central_k.rotate_all_keys()  # CP1 is revoked: not asked
    await central_k.monitor_auth("CP1", token)
    await central_k.issue_key("CP1")
    assert central_k.rotate_all_keys() == ["CP1"]
    assert await central_k.heartbeat("CP1", token, False) == Answer(False, "rekey")
    assert await central_k.heartbeat("CP1", token, True) == Answer(True)


async def test_in_comparison_mode_keys_cannot_be_revoked_or_rotated(repo, clock) -> None:
    central = keyed(repo, clock, encrypt=False)
    await central.load()
    await connect(central, "CP1")
    with pytest.raises(Conflict, match="--cp-encryption off"):
        await central.revoke_keys("CP1")
    with pytest.raises(Conflict, match="--cp-encryption off"):
        central.rotate_all_keys()
    assert state(central, "CP1") == "Activado"


async def test_a_restarted_central_opens_what_an_engine_sealed_with_the_key_issued_before(
    repo, clock
) -> None:
    """Central's start (`CentralKeys.load`) reads the keys back from the database with the
    master key: an Engine that keeps its key across Central's restart is still heard."""
    before = keyed(repo, clock)
    await before.load()
    _, key = await authenticated(before)
    engine = engine_holding(key)
    reading = ev.CpTelemetry(
        cp_id="CP1",
        session_id=UUID(int=1),
        driver_id="D1",
        seq=1,
        kw=Decimal("22"),
        energy_kwh=Decimal("0.1"),
        amount_eur=Decimal("0.04"),
    )
    after = keyed(repo, clock)  # a new process: same database, same master key
    await after.load()
    assert after.keys is not None
    assert after.keys.ring.current("CP1") == key
    assert after.keys.codec.decode("cp-events", engine.encode(reading)) == reading
    elsewhere = CentralKeys(repo, MasterKey(MasterKey.generate()))  # another master key
    assert elsewhere.load() == 0


# --- issue 15: the weather office's alerts (EV_W through API_Central) ----------------------------

EVW = Who("ev_w", "10.0.0.30")


def cp_commands(central: CentralService, cp: str = "CP1") -> list[ev.Event]:
    """What the CP's Engine was told (CP_STOP, CP_RESUME, STOP_SUPPLY, ...), in order."""
    return [e for e in pub(central).sent if e.TOPIC.base == "cp-commands" and e.key() == cp]


def stop_reason(central: CentralService, cp: str = "CP1") -> str | None:
    view = central.cp(cp)
    assert view is not None
    return view.stop_reason


async def test_a_weather_alert_on_an_idle_cp_stops_it_says_why_and_is_audited(
    central: CentralService, repo
) -> None:
    await connect(central, "CP1")
    view, new = await central.weather_alert("CP1", "Teruel", -3.0, EVW)
    assert new
    assert (view.state.value, view.stop_reason) == ("Parado", "weather alert")
    assert view.json["weather_alert"]
    assert view.json["weather"] == {"city": "Teruel", "temperature_c": -3.0}
    assert [(type(e), getattr(e, "reason", None)) for e in cp_commands(central)] == [
        (ev.CpStop, "weather alert")
    ]
    status = pub(central).of(ev.CpStatus)[-1]
    assert (status.state, status.available, status.stop_reason) == (
        "Parado",
        False,
        "weather alert",
    )
    [row] = rows(repo, AuditAction.WEATHER_ALERT)
    assert (row.actor, row.ip, row.cp_id) == ("ev_w", "10.0.0.30", "CP1")
    assert row.params["city"] == "Teruel"
    assert row.params["temperature_c"] == "-3"
    assert "Activado -> Parado" in [r.detail for r in rows(repo, AuditAction.CP_STATE, cp="CP1")]
    assert repo.get_cp("CP1").weather_alert
    await central.on_authorization_request(ev.AuthorizationRequest(driver_id="D1", cp_id="CP1"))
    answer = pub(central).of(ev.AuthorizationResponse)[-1]
    assert not answer.authorised
    assert answer.reason == "CP out of service: weather alert (Parado, Out of Order)"


async def test_a_weather_alert_mid_supply_lets_it_finish_normally_then_stops_the_cp(
    central: CentralService, repo
) -> None:
    await connect(central, "CP1")
    sid = await supplying(central, kwh="2.000")
    view, new = await central.weather_alert("CP1", "Teruel", -1.5, EVW)
    assert new
    assert (view.state.value, view.stop_reason) == ("Suministrando", None)
    assert view.json["weather_alert"]
    assert not [e for e in cp_commands(central) if isinstance(e, (ev.CpStop, ev.StopSupply))]
    assert pub(central).of(ev.ChargingTicket) == []
    await central.on_telemetry(
        ev.CpTelemetry(
            cp_id="CP1",
            session_id=sid,
            driver_id="D1",
            seq=4,
            kw=Decimal("22"),
            energy_kwh=Decimal("2.400"),
            amount_eur=Decimal("0"),
        )
    )
    assert state(central, "CP1") == "Suministrando"  # the supply goes on
    await central.on_supply_ended(
        ev.SupplyEnded(
            cp_id="CP1",
            session_id=sid,
            driver_id="D1",
            energy_kwh=Decimal("2.500"),
            reason="unplugged",
        )
    )
    [ticket] = pub(central).of(ev.ChargingTicket)
    assert (ticket.end_reason, ticket.energy_kwh, ticket.amount_eur) == (
        "unplugged",
        Decimal("2.500"),
        Decimal("1.00"),
    )
    assert not ticket.end_reason.interrupted
    sent = pub(central).sent
    [cp_stop] = [e for e in sent if isinstance(e, ev.CpStop)]
    assert cp_stop.reason == "weather alert"
    assert sent.index(ticket) < sent.index(cp_stop)  # the ticket first, then out of service
    assert (state(central, "CP1"), stop_reason(central)) == ("Parado", "weather alert")
    assert rows(repo, AuditAction.SUPPLY_INCIDENT) == []  # a normal end, not an incident


async def test_cancelling_a_weather_alert_resumes_the_cp_and_is_audited(
    central: CentralService, repo
) -> None:
    await connect(central, "CP1")
    await central.weather_alert("CP1", "Teruel", -3.0, EVW)
    view = await central.weather_cleared("CP1", EVW)
    assert (view.state.value, view.stop_reason) == ("Activado", None)
    assert (view.json["weather_alert"], view.json["weather"]) == (False, None)
    assert [type(e) for e in cp_commands(central)] == [ev.CpStop, ev.CpResume]
    assert pub(central).of(ev.CpStatus)[-1].stop_reason is None
    [row] = rows(repo, AuditAction.WEATHER_CLEARED)
    assert (row.actor, row.ip, row.cp_id, row.params["city"]) == (
        "ev_w",
        "10.0.0.30",
        "CP1",
        "Teruel",
    )
    assert not repo.get_cp("CP1").weather_alert
    assert central.weather_alerts() == []


async def test_cancelling_a_weather_alert_never_resumes_a_cp_stopped_by_central(
    central: CentralService,
) -> None:
    for first in ("admin", "weather"):  # whichever came first
        await connect(central, "CP1") if first == "admin" else None
        if first == "admin":
            await central.stop_cp("CP1")
            await central.weather_alert("CP1", "Teruel", -3.0, EVW)
        else:
            await central.weather_alert("CP1", "Teruel", -3.0, EVW)
            await central.stop_cp("CP1")
        assert stop_reason(central) == "stopped by Central; weather alert"
        before = len(cp_commands(central))
        view = await central.weather_cleared("CP1", EVW)
        assert (view.state.value, view.stop_reason) == ("Parado", "stopped by Central")
        assert not [e for e in cp_commands(central)[before:] if isinstance(e, ev.CpResume)]
        assert pub(central).of(ev.CpStatus)[-1].stop_reason == "stopped by Central"
        await central.resume_cp("CP1")
        assert state(central, "CP1") == "Activado"


async def test_an_admin_resume_while_the_weather_alert_stands_keeps_the_cp_parado(
    central: CentralService,
) -> None:
    await connect(central, "CP1")
    await central.stop_cp("CP1")
    await central.weather_alert("CP1", "Teruel", -3.0, EVW)
    before = len(cp_commands(central))
    view = await central.resume_cp("CP1")
    assert (view.state.value, view.stop_reason) == ("Parado", "weather alert")
    told = cp_commands(central)[before:]
    assert [(type(e), getattr(e, "reason", None)) for e in told] == [(ev.CpStop, "weather alert")]
    assert pub(central).of(ev.CpStatus)[-1].stop_reason == "weather alert"


async def test_a_repeated_weather_alert_changes_nothing_but_its_reading(
    central: CentralService, repo
) -> None:
    await connect(central, "CP1")
    await central.weather_alert("CP1", "Teruel", -3.0, EVW)
    commands, statuses = len(cp_commands(central)), len(pub(central).of(ev.CpStatus))
    view, new = await central.weather_alert("CP1", "Teruel", -4.5, EVW)
    assert not new
    assert (view.state.value, view.stop_reason) == ("Parado", "weather alert")
    assert view.json["weather"] == {"city": "Teruel", "temperature_c": -4.5}
    assert len(cp_commands(central)) == commands  # no second CP_STOP
    assert len(pub(central).of(ev.CpStatus)) == statuses  # nothing public changed
    assert [
        r.detail.endswith("already in force") for r in rows(repo, AuditAction.WEATHER_ALERT)
    ] == [
        False,
        True,
    ]
    assert [v.id for v in central.weather_alerts()] == ["CP1"]


async def test_cancelling_without_an_alert_is_a_conflict_and_unknown_cps_are_refused(
    central: CentralService, repo
) -> None:
    await connect(central, "CP1")
    with pytest.raises(Conflict, match="no weather alert"):
        await central.weather_cleared("CP1", EVW)
    with pytest.raises(UnknownCP):
        await central.weather_alert("NOPE", "Teruel", -3.0, EVW)
    with pytest.raises(UnknownCP):
        await central.weather_cleared("NOPE", EVW)
    assert state(central, "CP1") == "Activado"
    assert cp_commands(central) == []
    assert rows(repo, AuditAction.WEATHER_CLEARED) == []


async def test_a_restarted_central_keeps_the_weather_alert(
    central: CentralService, repo, clock: Clock
) -> None:
    await connect(central, "CP1")
    await central.weather_alert("CP1", "Teruel", -3.0, EVW)
    again = CentralService(repo, RecordingPublisher(), now=lambda: NOW, monotonic=clock)
    await again.load()
    view = again.cp("CP1")
    assert view is not None
    assert (view.state.value, view.json["weather_alert"], view.json["weather"]) == (
        "Desconectado",
        True,
        {"city": "Teruel", "temperature_c": -3.0},
    )
    await connect(again, "CP1")
    assert (state(again, "CP1"), stop_reason(again)) == ("Parado", "weather alert")
    assert [v.id for v in again.weather_alerts()] == ["CP1"]
    await again.weather_cleared("CP1", EVW)
    assert state(again, "CP1") == "Activado"


async def test_a_monitor_authenticating_again_under_an_alert_is_told_to_stop_again(
    central_k: CentralService,
) -> None:
    token, _ = await authenticated(central_k)
    await central_k.weather_alert("CP1", "Teruel", -3.0, EVW)
    await central_k.forget_auth("CP1", "test")  # its link dropped
    assert state(central_k, "CP1") == "Desconectado"
    await central_k.monitor_auth("CP1", token)
    key = await central_k.issue_key("CP1", "10.0.0.21:40001")
    assert (state(central_k, "CP1"), stop_reason(central_k)) == ("Parado", "weather alert")
    event, value = sealing(central_k).commands()[-1]
    assert isinstance(event, ev.CpStop)
    opened = engine_holding(key).decode("cp-commands", value)
    assert isinstance(opened, ev.CpStop)
    assert opened.reason == "weather alert"
    assert not [e for e, _ in sealing(central_k).commands() if isinstance(e, ev.CpResume)]


async def test_cp_status_is_published_again_when_only_the_stop_reason_changes(
    central: CentralService,
) -> None:
    await connect(central, "CP1")
    await central.stop_cp("CP1")
    await central.weather_alert("CP1", "Teruel", -3.0, EVW)
    await central.resume_cp("CP1")
    reasons = [(s.state, s.stop_reason) for s in pub(central).of(ev.CpStatus) if s.cp_id == "CP1"]
    assert reasons[-3:] == [
        ("Parado", "stopped by Central"),
        ("Parado", "stopped by Central; weather alert"),
        ("Parado", "weather alert"),
    ]


async def test_an_alert_cancelled_before_the_supply_ends_never_stops_the_cp(
    central: CentralService,
) -> None:
    await connect(central, "CP1")
    await supplying(central)
    await central.weather_alert("CP1", "Teruel", -1.0, EVW)
    view = await central.weather_cleared("CP1", EVW)
    assert (view.state.value, view.json["weather_alert"]) == ("Suministrando", False)
    await central.on_charging_stopped(ev.ChargingStopped(driver_id="D1", cp_id="CP1"))
    assert (state(central, "CP1"), stop_reason(central)) == ("Activado", None)
    assert not [e for e in cp_commands(central) if isinstance(e, (ev.CpStop, ev.CpResume))]


# --- issue 16: the admin asks a CP to report its status or to reset -----------------------------


def said(central: CentralService) -> list[str]:
    return [m.text for m in central.messages()]


async def test_report_status_asks_the_cp_and_changes_nothing_here(
    central: CentralService, repo
) -> None:
    await connect(central, "CP1")
    before = len(pub(central).sent)
    view = await central.report_status("CP1", Who("admin", "10.0.0.7"))
    assert (view.id, view.state.value) == ("CP1", "Activado")
    [asked] = pub(central).sent[before:]  # the ask alone: no CP_STATUS, no stop
    assert isinstance(asked, ev.CpReportStatus)
    assert (asked.TOPIC.base, asked.key(), asked.cp_id) == ("cp-commands", "CP1", "CP1")
    assert said(central)[-1] == "CP CP1 asked to report its status"
    assert rows(repo, AuditAction.CP_STATE, cp="CP1")[-1].detail == "Desconectado -> Activado"


async def test_reset_asks_the_cp_soft_or_hard_and_lets_its_supply_run(
    central: CentralService,
) -> None:
    await connect(central, "CP1")
    sid = await supplying(central)
    soft = await central.reset_cp("CP1")
    hard = await central.reset_cp("CP1", hard=True, who=Who("admin", "10.0.0.7"))
    resets = pub(central).of(ev.CpReset)
    assert [(e.cp_id, e.hard, e.key()) for e in resets] == [
        ("CP1", False, "CP1"),
        ("CP1", True, "CP1"),
    ]
    assert said(central)[-2:] == ["CP CP1 asked to reset (soft)", "CP CP1 asked to reset (hard)"]
    # the CP ends the supply itself if it must (SUPPLY_ENDED): Central ends nothing
    assert soft.state.value == hard.state.value == "Suministrando"
    assert hard.session_id == str(sid)
    assert not pub(central).of(ev.StopSupply)


async def test_asks_to_an_unknown_or_desconectado_cp_are_refused_and_nothing_is_sent(
    central: CentralService,
) -> None:
    before = (len(pub(central).sent), said(central))
    with pytest.raises(UnknownCP):
        await central.report_status("NOPE")
    with pytest.raises(UnknownCP):
        await central.reset_cp("NOPE", hard=True)
    with pytest.raises(Conflict, match="CP CP1 is Desconectado: no Monitor link, so nobody would"):
        await central.report_status("CP1")
    with pytest.raises(Conflict, match="CP CP1 is Desconectado: no Monitor link"):
        await central.reset_cp("CP1")
    assert (len(pub(central).sent), said(central)) == before


async def test_asks_to_a_cp_whose_keys_are_revoked_are_refused(central_k: CentralService) -> None:
    await authenticated(central_k)
    await central_k.revoke_keys("CP1")
    before = len(sealing(central_k).sent)
    for ask in (central_k.report_status("CP1"), central_k.reset_cp("CP1")):
        with pytest.raises(Conflict, match="CP CP1 has its keys revoked: nothing Central sends"):
            await ask
    assert len(sealing(central_k).sent) == before


class KeylessPublisher(RecordingPublisher):
    """Central's publisher for a CP that holds no key yet: a command is not sent."""

    async def publish(self, event, *, on_delivered=None):  # type: ignore[no-untyped-def]
        await super().publish(event, on_delivered=on_delivered)
        return Delivery.NOT_SENT_NO_KEY


async def test_an_ask_that_could_not_be_sealed_is_a_conflict_not_a_claim(repo, clock) -> None:
    central = CentralService(repo, KeylessPublisher(), now=lambda: NOW, monotonic=clock)
    await central.load()
    await connect(central, "CP1")
    with pytest.raises(Conflict, match="CP CP1 holds no key from Central yet: the request was not"):
        await central.reset_cp("CP1")
    assert not [m for m in said(central) if "asked to reset" in m]
