"""EV_OCPP's core (`GatewayService`) with fakes for Central's logins, the charger's CALLs, the
state file and the clock: every decision the gateway makes, without WebSocket or Kafka."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.contracts.end_reasons import SupplyEndReason
from evcharging.contracts.events import (
    AuthorizationRequest,
    CpReportStatus,
    CpReset,
    CpResume,
    CpStop,
    CpTelemetry,
    RequestDenied,
    StopSupply,
    SupplyAuthorised,
    SupplyEnded,
    SupplyStarted,
)
from evcharging.contracts.ocpp import BootStatus, ChargerStatus, IdTagStatus
from evcharging.services.audit import Audit
from evcharging.services.ocpp_gateway import GatewayConfig, GatewayService
from evcharging.services.ports import GatewayState, LoginOutcome, LoginState
from tests.support.clock import Clock
from tests.support.fakes import RecordingPublisher
from tests.support.ocpp_fakes import AuditRows, FakeControls, FakeLogins, MemoryStore
from tests.support.waiting import eventually

CP = "OCPP01"
PRICE = Decimal("0.30")
T0 = "2026-12-02T02:00:00Z"
CONFIG = GatewayConfig(answer_timeout=2.0, resync_after=0.05)


class Rig:
    """One gateway and its fakes; `Rig(store=rig.store)` is the same gateway restarted."""

    def __init__(self, config: GatewayConfig = CONFIG, store: MemoryStore | None = None) -> None:
        self.publisher = RecordingPublisher()
        self.logins = FakeLogins()
        self.controls = FakeControls()
        self.store = store or MemoryStore()
        self.clock = Clock()
        self.audit = AuditRows()
        self.service = GatewayService(
            self.publisher,
            self.logins,
            self.controls,
            self.store,
            self.clock,
            config,
            audit=Audit([self.audit]),
        )

    def open(self, cp: str = CP, ip: str = "10.0.0.9", secret: str | None = "s3cret") -> object:
        connection = object()
        self.service.opened(cp, connection, ip, secret)
        return connection

    async def connect(self, cp: str = CP, ip: str = "10.0.0.9") -> object:
        """Opened, booted Accepted, Boot answered."""
        connection = self.open(cp, ip)
        answer = await self.service.boot(cp, "Vendor", "Model")
        assert answer.status is BootStatus.ACCEPTED
        self.service.boot_answered(cp)
        return connection

    async def sent(self) -> list[object]:
        await self.service.flush()
        return list(self.publisher.sent)

    async def of(self, cls: type) -> list[object]:
        await self.service.flush()
        return self.publisher.of(cls)

    async def request_for(self, driver: str) -> AuthorizationRequest:
        async def asked() -> AuthorizationRequest | None:
            found = [r for r in await self.of(AuthorizationRequest) if r.driver_id == driver]
            return found[-1] if found else None

        return await eventually(asked, what=f"an AUTHORIZATION_REQUEST for {driver}")

    def authorise(self, driver: str, cp: str = CP) -> UUID:
        session = uuid4()
        self.service.on_supply_authorised(
            SupplyAuthorised(
                cp_id=cp, session_id=session, driver_id=driver, price_eur_per_kwh=PRICE
            )
        )
        return session

    async def authorized(self, driver: str, cp: str = CP) -> UUID:
        """The charger's Authorize for `driver`, and Central's yes: the held session."""
        task = asyncio.create_task(self.service.authorize(cp, driver))
        await self.request_for(driver)
        session = self.authorise(driver, cp)
        assert await task is IdTagStatus.ACCEPTED
        return session

    async def started(self, driver: str = "D001", meter: int = 1000, cp: str = CP) -> int:
        await self.authorized(driver, cp)
        answer = await self.service.start_transaction(cp, 1, driver, meter, T0)
        assert answer.status is IdTagStatus.ACCEPTED
        return answer.transaction_id


# --- BootNotification --------------------------------------------------------------------


async def test_boot_is_accepted_once_central_authenticates_the_cp() -> None:
    rig = Rig()
    rig.open(secret="s3cret")
    answer = await rig.service.boot(CP, "Vendor", "Model")
    assert answer.status is BootStatus.ACCEPTED
    assert answer.interval == CONFIG.heartbeat_interval
    assert rig.logins.logins == [(CP, "s3cret")]
    assert rig.service.accepted(CP)
    assert rig.logins.last_health(CP) == (True, "")
    (row,) = rig.audit.of(AuditAction.OCPP_BOOT)
    assert (row.outcome, row.ip, row.cp_id) == (Outcome.OK, "10.0.0.9", CP)
    assert "s3cret" not in repr(rig.audit.rows)


async def test_boot_is_rejected_when_central_refuses_and_pending_when_unreachable() -> None:
    rig = Rig()
    rig.open()
    rig.logins.outcome = LoginOutcome(LoginState.DENIED, "wrong credential")
    answer = await rig.service.boot(CP)
    assert (answer.status, answer.interval) == (BootStatus.REJECTED, CONFIG.retry_interval)
    assert not rig.service.accepted(CP)
    (row,) = rig.audit.of(AuditAction.OCPP_BOOT)
    assert row.outcome is Outcome.DENIED
    assert "wrong credential" in row.detail

    rig.logins.outcome = LoginOutcome(LoginState.UNREACHABLE, "Central did not answer in time")
    answer = await rig.service.boot(CP)
    assert (answer.status, answer.interval) == (BootStatus.PENDING, CONFIG.retry_interval)
    assert not rig.service.accepted(CP)
    assert rig.logins.healths == []


async def test_a_charger_without_a_secret_is_rejected_without_asking_central() -> None:
    rig = Rig()
    rig.open(secret=None)
    assert (await rig.service.boot(CP)).status is BootStatus.REJECTED
    assert rig.logins.logins == []


async def test_repeated_refusals_are_throttled_by_the_gateway_itself() -> None:
    rig = Rig()
    rig.open()
    rig.logins.outcome = LoginOutcome(LoginState.DENIED, "wrong credential")
    for _ in range(4):  # three free failures, the fourth imposes a wait
        assert (await rig.service.boot(CP)).status is BootStatus.REJECTED
    asked = len(rig.logins.logins)
    throttled = await rig.service.boot(CP)
    assert throttled.status is BootStatus.REJECTED
    assert "too many refused boots" in throttled.reason
    assert len(rig.logins.logins) == asked  # Central was not asked again
    rig.clock.now += 60
    rig.logins.outcome = LoginOutcome(LoginState.ACCEPTED)
    assert (await rig.service.boot(CP)).status is BootStatus.ACCEPTED
    assert len(rig.logins.logins) == asked + 1


async def test_a_second_boot_while_accepted_is_accepted_without_a_new_login() -> None:
    rig = Rig()
    await rig.connect()
    again = await rig.service.boot(CP, "Vendor", "Model")
    assert again.status is BootStatus.ACCEPTED
    assert len(rig.logins.logins) == 1


# --- StatusNotification -> the CP's health at Central -----------------------------------


async def test_faulted_is_ko_with_its_error_code() -> None:
    rig = Rig()
    await rig.connect()
    rig.service.status(CP, 1, ChargerStatus.FAULTED, "GroundFailure", "RCD tripped")
    ok, reason = rig.logins.last_health(CP) or (True, "")
    assert not ok
    assert "Faulted" in reason
    assert "GroundFailure" in reason
    assert "RCD tripped" in reason
    rig.service.status(CP, 1, ChargerStatus.AVAILABLE, "NoError")
    assert rig.logins.last_health(CP) == (True, "")


async def test_unavailable_not_asked_by_central_is_ko() -> None:
    rig = Rig()
    await rig.connect()
    rig.service.status(CP, 0, ChargerStatus.UNAVAILABLE, "NoError")
    ok, reason = rig.logins.last_health(CP) or (True, "")
    assert not ok
    assert "Unavailable at the charger" in reason


async def test_unavailable_after_cp_stop_is_healthy_and_after_resume_until_the_next_status() -> (
    None
):
    rig = Rig()
    await rig.connect()
    rig.service.on_cp_stop(CpStop(cp_id=CP))
    rig.service.status(CP, 0, ChargerStatus.UNAVAILABLE, "NoError")
    rig.service.status(CP, 1, ChargerStatus.UNAVAILABLE, "NoError")
    assert rig.logins.last_health(CP) == (True, "")
    rig.service.on_cp_resume(CpResume(cp_id=CP))
    assert rig.logins.last_health(CP) == (True, "")  # the old Unavailable, until it says more
    rig.service.status(CP, 0, ChargerStatus.UNAVAILABLE, "NoError")  # still, after Operative
    ok, _ = rig.logins.last_health(CP) or (True, "")
    assert not ok
    await rig.service.settle_calls()


async def test_a_resumed_charger_stays_healthy_while_it_reports_its_connectors_one_by_one() -> None:
    """A charger made Operative reports connector 0, then 1: connector 1's old Unavailable (from
    Central's stop) is not a fault in between (no Averiado flicker at Central)."""
    rig = Rig()
    await rig.connect()
    rig.service.on_cp_stop(CpStop(cp_id=CP))
    rig.service.status(CP, 0, ChargerStatus.UNAVAILABLE, "NoError")
    rig.service.status(CP, 1, ChargerStatus.UNAVAILABLE, "NoError")
    rig.service.on_cp_resume(CpResume(cp_id=CP))
    rig.logins.healths.clear()
    rig.service.status(CP, 0, ChargerStatus.AVAILABLE, "NoError")
    rig.service.status(CP, 1, ChargerStatus.AVAILABLE, "NoError")
    assert all(ok for _, ok, _ in rig.logins.healths), rig.logins.healths
    await rig.service.settle_calls()


# --- Authorize ---------------------------------------------------------------------------


async def test_authorize_asks_central_and_is_accepted_on_supply_authorised() -> None:
    rig = Rig()
    await rig.connect()
    task = asyncio.create_task(rig.service.authorize(CP, "D001"))
    request = await rig.request_for("D001")
    assert (request.cp_id, request.origin, request.source) == (CP, "cp", f"EV_OCPP/{CP}")
    rig.authorise("D001")
    assert await task is IdTagStatus.ACCEPTED
    assert rig.controls.calls == []  # somebody at the charger asked: no RemoteStart
    # asked again at the charger while the session is held: accepted at once
    assert await rig.service.authorize(CP, "D001") is IdTagStatus.ACCEPTED
    assert len(await rig.of(AuthorizationRequest)) == 1


async def test_authorize_is_invalid_when_central_denies() -> None:
    rig = Rig()
    await rig.connect()
    task = asyncio.create_task(rig.service.authorize(CP, "D002"))
    request = await rig.request_for("D002")
    rig.service.on_request_denied(
        RequestDenied(
            cp_id=CP, request_id=request.request_id, driver_id="D002", reason="not enough money"
        )
    )
    assert await task is IdTagStatus.INVALID


async def test_authorize_is_invalid_when_central_does_not_answer_in_time() -> None:
    rig = Rig(GatewayConfig(answer_timeout=0.05))
    await rig.connect()
    assert await rig.service.authorize(CP, "D003") is IdTagStatus.INVALID
    assert len(await rig.of(AuthorizationRequest)) == 1


@pytest.mark.parametrize("tag", ["bad tag", "", "x" * 200, "D001\n"])
async def test_an_id_tag_that_is_no_driver_id_is_invalid_without_asking(tag: str) -> None:
    rig = Rig()
    await rig.connect()
    assert await rig.service.authorize(CP, tag) is IdTagStatus.INVALID
    assert await rig.sent() == []


# --- StartTransaction ------------------------------------------------------------------


async def test_a_start_is_bound_to_the_held_session() -> None:
    rig = Rig()
    await rig.connect()
    session = await rig.authorized("D001")
    answer = await rig.service.start_transaction(CP, 1, "D001", 1000, T0)
    assert answer.status is IdTagStatus.ACCEPTED
    assert answer.transaction_id == 1000  # the store's next id
    (started,) = await rig.of(SupplyStarted)
    assert (started.session_id, started.driver_id, started.cp_id) == (session, "D001", CP)
    saved = rig.store.state.transactions
    assert [t.transaction_id for t in saved] == [1000]
    assert saved[0].session_id == str(session)
    assert saved[0].price_eur_per_kwh == PRICE
    assert rig.store.state.next_transaction_id == 1001


async def test_a_start_nobody_asked_for_asks_central_first() -> None:
    rig = Rig()
    await rig.connect()
    task = asyncio.create_task(rig.service.start_transaction(CP, 1, "D004", 500, T0))
    await rig.request_for("D004")
    assert await rig.of(SupplyStarted) == []
    session = rig.authorise("D004")
    answer = await task
    assert answer.status is IdTagStatus.ACCEPTED
    (started,) = await rig.of(SupplyStarted)
    assert started.session_id == session
    assert rig.controls.calls == []


async def test_the_same_start_twice_gets_the_same_id_and_is_reported_once() -> None:
    rig = Rig()
    await rig.connect()
    tx = await rig.started("D001", 1000)
    again = await rig.service.start_transaction(CP, 1, "D001", 1000, T0)
    assert (again.transaction_id, again.status) == (tx, IdTagStatus.ACCEPTED)
    assert len(await rig.of(SupplyStarted)) == 1


async def test_a_second_transaction_while_one_supplies_is_concurrent_tx() -> None:
    rig = Rig()
    await rig.connect()
    tx = await rig.started("D001", 1000)
    other = await rig.service.start_transaction(CP, 2, "D002", 0, "2026-12-02T02:00:09Z")
    assert other.status is IdTagStatus.CONCURRENT_TX
    assert other.transaction_id != tx
    assert len(await rig.of(SupplyStarted)) == 1
    assert [r.driver_id for r in await rig.of(AuthorizationRequest)] == ["D001"]


async def test_a_refused_start_is_invalid_with_an_id_and_bills_nothing() -> None:
    rig = Rig()
    await rig.connect()
    task = asyncio.create_task(rig.service.start_transaction(CP, 1, "D005", 100, T0))
    request = await rig.request_for("D005")
    rig.service.on_request_denied(
        RequestDenied(cp_id=CP, request_id=request.request_id, driver_id="D005", reason="no")
    )
    answer = await task
    assert answer.status is IdTagStatus.INVALID
    assert answer.transaction_id > 0
    assert rig.service.stop_transaction(CP, answer.transaction_id, 900, "DeAuthorized") is (
        IdTagStatus.INVALID
    )
    assert await rig.of(SupplyStarted) == []
    assert await rig.of(SupplyEnded) == []
    assert rig.store.state.transactions == ()  # nothing left to bill after a restart


# --- MeterValues -> CP_TELEMETRY ---------------------------------------------------------


async def test_meter_values_are_telemetry_with_energy_amount_and_power() -> None:
    rig = Rig()
    await rig.connect()
    tx = await rig.started("D001", 1000)
    rig.clock.now += 60
    await rig.service.meter_values(CP, 1, tx, 1100)  # 100 Wh in a minute: 6 kW
    rig.clock.now += 60
    await rig.service.meter_values(CP, 1, tx, 1300)  # 200 Wh in a minute: 12 kW
    rig.clock.now += 60
    await rig.service.meter_values(CP, 1, tx, 1200)  # lower than the last: ignored
    await rig.service.meter_values(CP, 1, None, None)  # no register in it: ignored
    first, second = rig.publisher.of(CpTelemetry)
    assert (first.energy_kwh, first.kw, first.amount_eur) == (
        Decimal("0.1"),
        Decimal("6"),
        Decimal("0.03"),
    )
    assert (second.energy_kwh, second.kw, second.amount_eur, second.seq) == (
        Decimal("0.3"),
        Decimal("12"),
        Decimal("0.09"),
        2,
    )
    assert second.driver_id == "D001"
    assert second.cp_id == CP
    assert await rig.of(CpTelemetry) == [first, second]  # via publish_soon, not the outbox


async def test_meter_values_of_no_running_transaction_change_nothing() -> None:
    rig = Rig()
    await rig.connect()
    await rig.service.meter_values(CP, 1, 4242, 5000)
    await rig.service.meter_values(CP, 1, None, 5000)
    assert rig.publisher.sent == []


# --- StopTransaction -> SUPPLY_ENDED -----------------------------------------------------


async def test_a_stop_is_one_supply_ended_billed_from_the_meter() -> None:
    rig = Rig()
    await rig.connect()
    session = await rig.authorized("D001")
    tx = (await rig.service.start_transaction(CP, 1, "D001", 1000, T0)).transaction_id
    assert rig.service.stop_transaction(CP, tx, 3234, None) is IdTagStatus.ACCEPTED
    assert rig.service.stop_transaction(CP, tx, 3234, None) is IdTagStatus.ACCEPTED  # a retry
    (ended,) = await rig.of(SupplyEnded)
    assert (ended.session_id, ended.energy_kwh, ended.reason) == (
        session,
        Decimal("2.234"),
        SupplyEndReason.UNPLUGGED,
    )
    rig.service.stop_transaction(CP, tx, 3234, None)  # again, after it was delivered
    assert len(await rig.of(SupplyEnded)) == 1
    assert rig.store.state.transactions == ()  # delivered: forgotten


async def test_a_stop_of_an_unknown_transaction_is_acknowledged_with_no_event() -> None:
    rig = Rig()
    await rig.connect()
    assert rig.service.stop_transaction(CP, 777, 100, "Local") is None
    assert await rig.sent() == []


@pytest.mark.parametrize(
    ("ocpp_reason", "expected"),
    [
        (None, SupplyEndReason.UNPLUGGED),
        ("Local", SupplyEndReason.UNPLUGGED),
        ("EVDisconnected", SupplyEndReason.UNPLUGGED),
        ("Other", SupplyEndReason.UNPLUGGED),
        ("Remote", SupplyEndReason.STOPPED_BY_DRIVER),
        ("DeAuthorized", SupplyEndReason.STOPPED_BY_CENTRAL),
        ("EmergencyStop", SupplyEndReason.CP_FAULT),
        ("PowerLoss", SupplyEndReason.CP_FAULT),
        ("Reboot", SupplyEndReason.CP_FAULT),
        ("HardReset", SupplyEndReason.CP_FAULT),
        ("SoftReset", SupplyEndReason.CP_FAULT),
    ],
)
async def test_stop_reasons(ocpp_reason: str | None, expected: SupplyEndReason) -> None:
    rig = Rig()
    await rig.connect()
    tx = await rig.started()
    rig.service.stop_transaction(CP, tx, 2000, ocpp_reason)
    (ended,) = await rig.of(SupplyEnded)
    assert ended.reason is expected


async def test_a_remote_stop_keeps_the_reason_central_gave() -> None:
    rig = Rig()
    await rig.connect()
    session = await rig.authorized("D001")
    tx = (await rig.service.start_transaction(CP, 1, "D001", 1000, T0)).transaction_id
    rig.service.on_stop_supply(
        StopSupply(cp_id=CP, session_id=session, reason=SupplyEndReason.KEYS_REVOKED)
    )
    await rig.service.settle_calls()
    assert rig.controls.calls == [("remote_stop", CP, tx)]
    rig.service.stop_transaction(CP, tx, 1500, "Remote")
    (ended,) = await rig.of(SupplyEnded)
    assert ended.reason is SupplyEndReason.KEYS_REVOKED


# --- a restarted gateway -----------------------------------------------------------------


async def test_a_restarted_gateway_bills_a_stop_of_a_transaction_started_before() -> None:
    before = Rig()
    await before.connect()
    session = await before.authorized("D001")
    tx = (await before.service.start_transaction(CP, 1, "D001", 1000, T0)).transaction_id
    after = Rig(store=before.store)
    await after.connect()
    assert after.service.stop_transaction(CP, tx, 1800, "EVDisconnected") is IdTagStatus.ACCEPTED
    (ended,) = await after.of(SupplyEnded)
    assert (ended.session_id, ended.energy_kwh) == (session, Decimal("0.8"))
    assert after.store.state.next_transaction_id > tx  # ids never repeat across a restart


async def test_a_restarted_gateway_sends_an_undelivered_supply_ended_once() -> None:
    before = Rig()
    await before.connect()
    tx = await before.started("D001", 1000)
    before.service.stop_transaction(CP, tx, 2000, None)  # stopped before it was delivered
    again = Rig(store=before.store)
    (ended,) = await again.of(SupplyEnded)
    assert ended.energy_kwh == Decimal("1")
    assert again.store.state.transactions == ()
    assert await Rig(store=before.store).sent() == []


async def test_a_restarted_gateway_still_stops_the_transaction_a_charger_is_running() -> None:
    """After a restart the charger reconnects mid-transaction: Central's CP_STOP must still end
    it (RemoteStop), and its meter values are still the session's telemetry."""
    before = Rig()
    await before.connect()
    tx = await before.started("D001", 1000)
    after = Rig(store=before.store)
    await after.connect()
    after.clock.now += 60
    await after.service.meter_values(CP, 1, tx, 1100)
    assert [t.energy_kwh for t in after.publisher.of(CpTelemetry)] == [Decimal("0.1")]
    after.service.on_cp_stop(CpStop(cp_id=CP))
    await after.service.settle_calls()
    assert after.controls.calls == [("remote_stop", CP, tx), ("change_availability", CP, False)]


# --- Central's commands -> CALLs to the charger ------------------------------------------


async def test_a_driver_app_request_is_a_remote_start() -> None:
    rig = Rig()
    await rig.connect()
    session = rig.authorise("D001")
    await rig.service.settle_calls()
    assert rig.controls.calls == [("remote_start", CP, "D001", CONFIG.connector_id)]
    answer = await rig.service.start_transaction(CP, 1, "D001", 10, T0)
    assert answer.status is IdTagStatus.ACCEPTED
    (started,) = await rig.of(SupplyStarted)
    assert started.session_id == session
    assert await rig.of(AuthorizationRequest) == []


async def test_a_refused_remote_start_ends_the_session_never_plugged() -> None:
    rig = Rig()
    await rig.connect()
    rig.controls.answers["remote_start"] = "Rejected"
    session = rig.authorise("D001")
    await rig.service.settle_calls()
    (ended,) = await rig.of(SupplyEnded)
    assert (ended.session_id, ended.energy_kwh, ended.reason) == (
        session,
        Decimal(0),
        SupplyEndReason.NEVER_PLUGGED,
    )


async def test_a_redelivered_supply_authorised_is_ignored() -> None:
    rig = Rig()
    await rig.connect()
    event = SupplyAuthorised(
        cp_id=CP, session_id=uuid4(), driver_id="D001", price_eur_per_kwh=PRICE
    )
    rig.service.on_supply_authorised(event)
    rig.service.on_supply_authorised(event)
    await rig.service.settle_calls()
    await rig.service.start_transaction(CP, 1, "D001", 10, T0)
    rig.service.on_supply_authorised(event)  # after the transaction started, too
    await rig.service.settle_calls()
    assert rig.controls.names() == ["remote_start"]
    assert len(await rig.of(SupplyStarted)) == 1


async def test_stop_supply_is_a_remote_stop_and_of_a_held_session_withdraws_it() -> None:
    rig = Rig()
    await rig.connect()
    held = await rig.authorized("D002")
    rig.service.on_stop_supply(
        StopSupply(cp_id=CP, session_id=held, reason=SupplyEndReason.STOPPED_BY_DRIVER)
    )
    await rig.service.settle_calls()
    assert rig.controls.calls == []
    task = asyncio.create_task(rig.service.start_transaction(CP, 1, "D002", 1, T0))

    async def asked_again() -> bool:
        return len(await rig.of(AuthorizationRequest)) == 2

    await eventually(asked_again, what="the start asking Central again")
    task.cancel()  # the session was withdrawn: the start asks Central again


async def test_cp_stop_stops_the_running_transaction_then_makes_the_charger_inoperative() -> None:
    rig = Rig()
    await rig.connect()
    tx = await rig.started()
    rig.service.on_cp_stop(CpStop(cp_id=CP))
    await rig.service.settle_calls()
    assert rig.controls.calls == [("remote_stop", CP, tx), ("change_availability", CP, False)]
    assert rig.store.state.inoperative == frozenset({CP})
    rig.service.stop_transaction(CP, tx, 1500, "Remote")
    (ended,) = await rig.of(SupplyEnded)
    assert ended.reason is SupplyEndReason.STOPPED_BY_CENTRAL
    rig.service.on_cp_resume(CpResume(cp_id=CP))
    await rig.service.settle_calls()
    assert rig.controls.calls[-1] == ("change_availability", CP, True)
    assert rig.store.state.inoperative == frozenset()


async def test_report_status_and_reset_are_trigger_message_and_reset() -> None:
    rig = Rig()
    await rig.connect()
    rig.service.on_report_status(CpReportStatus(cp_id=CP))
    rig.service.on_reset(CpReset(cp_id=CP, hard=True))
    rig.service.on_reset(CpReset(cp_id=CP))
    rig.service.on_cp_resume(CpResume(cp_id="OTHER1"))  # not held here: nothing
    await rig.service.settle_calls()
    assert rig.controls.calls == [
        ("trigger_status", CP),
        ("reset", CP, True),
        ("reset", CP, False),
    ]


async def test_calls_wait_for_the_boot_answer() -> None:
    rig = Rig()
    rig.open()
    rig.service.on_cp_resume(CpResume(cp_id=CP))
    assert (await rig.service.boot(CP)).status is BootStatus.ACCEPTED
    for _ in range(10):
        await asyncio.sleep(0)
    assert rig.controls.calls == []  # accepted, but the Boot answer has not left yet
    rig.service.boot_answered(CP)
    await rig.service.settle_calls()
    assert rig.controls.calls == [("change_availability", CP, True)]


async def test_calls_to_a_disconnected_charger_fail_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig()
    connection = await rig.connect()
    await rig.service.closed(CP, connection)
    rig.service.on_reset(CpReset(cp_id=CP))
    session = rig.authorise("D001")
    await rig.service.settle_calls()
    assert rig.controls.calls == []
    assert "not connected" in caplog.text
    (ended,) = await rig.of(SupplyEnded)
    assert (ended.session_id, ended.reason) == (session, SupplyEndReason.NEVER_PLUGGED)


async def test_a_call_to_a_charger_that_never_boots_gives_up() -> None:
    rig = Rig(GatewayConfig(answer_timeout=0.05))
    rig.open()
    rig.service.on_reset(CpReset(cp_id=CP))
    await rig.service.settle_calls()
    assert rig.controls.calls == []


# --- the WebSocket's end ------------------------------------------------------------------


async def test_a_closed_connection_logs_the_cp_out_unless_a_newer_one_took_over() -> None:
    rig = Rig()
    first = await rig.connect()
    second = await rig.connect()
    await rig.service.closed(CP, first)  # the older connection's close, after the new one
    assert rig.logins.logouts == []
    assert rig.service.connected() == [CP]
    assert rig.service.accepted(CP)
    await rig.service.closed(CP, second)
    assert rig.logins.logouts == [CP]
    assert rig.service.connected() == []
    assert not rig.service.accepted(CP)
    assert rig.service.holds(CP)  # its commands still concern this gateway


async def test_a_closed_connection_answers_a_waiting_authorize_invalid() -> None:
    rig = Rig()
    connection = await rig.connect()
    task = asyncio.create_task(rig.service.authorize(CP, "D001"))
    await rig.request_for("D001")
    await rig.service.closed(CP, connection)
    assert await task is IdTagStatus.INVALID


# --- the resync after a Boot -------------------------------------------------------------


async def test_a_charger_left_inoperative_is_made_operative_if_central_does_not_stop_it() -> None:
    rig = Rig(store=MemoryStore(GatewayState(next_transaction_id=5, inoperative=frozenset({CP}))))
    await rig.connect()
    rig.service.status(CP, 0, ChargerStatus.UNAVAILABLE, "NoError")
    assert rig.logins.last_health(CP) == (True, "")  # stopped, as far as the gateway knows
    await rig.service.settle_calls()  # the resync's wait included
    assert rig.controls.calls == [("change_availability", CP, True)]
    assert rig.store.state.inoperative == frozenset()


async def test_a_charger_left_inoperative_stays_so_when_central_stops_it_again() -> None:
    rig = Rig(store=MemoryStore(GatewayState(next_transaction_id=5, inoperative=frozenset({CP}))))
    await rig.connect()
    rig.service.on_cp_stop(CpStop(cp_id=CP))  # Central's CP_STOP at the CP's login
    await rig.service.settle_calls()  # the resync's wait included
    assert rig.controls.calls == [("change_availability", CP, False)]
    assert rig.store.state.inoperative == frozenset({CP})


async def test_a_cp_stop_that_arrives_before_the_boot_answer_left_still_counts() -> None:
    """Central says CP_STOP at the login of a stopped CP; it may reach the gateway before the
    Boot answer has left: the resync must not make that charger Operative."""
    rig = Rig(store=MemoryStore(GatewayState(next_transaction_id=5, inoperative=frozenset({CP}))))
    rig.open()
    assert (await rig.service.boot(CP)).status is BootStatus.ACCEPTED
    rig.service.on_cp_stop(CpStop(cp_id=CP))
    rig.service.boot_answered(CP)
    await rig.service.settle_calls()  # the resync's wait included
    assert rig.controls.calls == [("change_availability", CP, False)]
    assert rig.store.state.inoperative == frozenset({CP})


async def test_strangers_that_were_never_accepted_leave_nothing_behind() -> None:
    """A flood of connections under made-up CP ids must not grow the gateway's memory: a charger
    whose boot was never accepted is forgotten when it hangs up (its throttling is kept)."""
    rig = Rig()
    rig.logins.outcome = LoginOutcome(LoginState.DENIED, "unknown CP")
    for n in range(50):
        cp = f"STRANGER{n}"
        connection = rig.open(cp)
        assert (await rig.service.boot(cp)).status is BootStatus.REJECTED
        await rig.service.closed(cp, connection)
        assert not rig.service.holds(cp)
    # the address is slowed after its 20 free failures, and stays so
    assert rig.service.throttle.wait(("ip:10.0.0.9",), rig.clock()) > 0
