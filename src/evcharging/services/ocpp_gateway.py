"""EV_OCPP's core: OCPP 1.6J chargers become CPs of the network, with no WebSocket and no Kafka.

Why a service: the WebSocket adapter (`adapters/ocpp/`) only turns OCPP frames into these calls and
back; every decision is here and unit-tested with fakes. For each charger it holds, the gateway is
what the Engine and the Monitor are for our own CPs, so Central needs no OCPP:

* The Monitor's part (`CentralLogins`): BootNotification logs the CP in at Central with the secret
  the charger presented (HTTP Basic, OCPP security profiles 1 and 2) or the one the gateway keeps
  for it (a client certificate, profile 3). Central accepts only CPs registered at EV_Registry, so
  Boot is Accepted exactly then; a refusal is Rejected, Central unreachable Pending. The link
  heartbeats every second with the charger's health: Faulted is KO (Averiado), and a closed
  WebSocket closes the link (Desconectado).
* The Engine's part: Central's commands (cp-commands) become OCPP CALLs (`ChargerControls`) and
  the charger's transactions become the Engine's events (cp-events). A driver's request held here
  (SUPPLY_AUTHORISED) is a RemoteStartTransaction; a stop a RemoteStopTransaction; CP_STOP ends a
  running transaction and makes the charger Inoperative (ChangeAvailability), CP_RESUME Operative.
  Authorize and a StartTransaction nobody asked for are AUTHORIZATION_REQUESTs from the CP, as
  from our Engine's menu. MeterValues are telemetry; StopTransaction is SUPPLY_ENDED, billed from
  meterStop - meterStart.

Idempotency: transactions are numbered here and kept in a state file (`GatewayStore`) until their
SUPPLY_ENDED is delivered, so a StopTransaction sent after the gateway restarted is billed; a
StartTransaction or StopTransaction sent twice (a repeated message id, a charger replaying its
offline queue) is answered the same and reported once; Central bills a session once whatever
arrives twice. Outgoing CALLs to one charger run one at a time, in order, after its Boot answer
(a charger may not be sent a CALL before), and never inside a charger message's handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.contracts.end_reasons import SupplyEndReason
from evcharging.contracts.events import (
    AuthorizationRequest,
    CpReportStatus,
    CpReset,
    CpResume,
    CpStop,
    CpTelemetry,
    Event,
    RequestDenied,
    StopSupply,
    SupplyAuthorised,
    SupplyEnded,
    SupplyStarted,
)
from evcharging.contracts.fields import is_valid_id
from evcharging.contracts.ocpp import BootStatus, ChargerStatus, IdTagStatus, end_reason
from evcharging.domain.money import cost, kwh
from evcharging.domain.throttle import FailureThrottle
from evcharging.services.audit import Audit
from evcharging.services.outbox import Outbox
from evcharging.services.ports import (
    CentralLogins,
    ChargerControls,
    GatewayStore,
    LoginState,
    Publisher,
    TransactionRecord,
)

log = logging.getLogger(__name__)

SOURCE = "EV_OCPP"
MAX_ENERGY_KWH = Decimal(1000)  # the contracts' ceiling for one supply (events.Energy)
MAX_KW = Decimal(1000)  # the contracts' ceiling for power (events.Power)
_REMEMBERED_ENDED = 500  # ended transactions kept to answer a replayed StopTransaction the same

Clock = Callable[[], float]
"""Monotonic seconds (time.monotonic in the program, a settable fake in tests)."""


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    heartbeat_interval: int = 60  # seconds between a charger's OCPP Heartbeats (Boot's interval)
    retry_interval: int = 10  # seconds a Rejected or Pending charger waits before booting again
    answer_timeout: float = 10.0  # seconds Central has to answer an Authorize or a start
    connector_id: int = 1  # the connector a RemoteStartTransaction names (one supply per CP)
    flush_before_logout: float = 2.0  # seconds a hung-up charger's events have to reach Kafka
    resync_after: float = 3.0  # seconds after a Boot to learn whether Central still stops the CP


@dataclass(frozen=True, slots=True)
class BootAnswer:
    status: BootStatus
    interval: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StartAnswer:
    transaction_id: int
    status: IdTagStatus


@dataclass(frozen=True, slots=True)
class _Held:
    """A session Central authorised at this CP, waiting for the charger's StartTransaction."""

    session_id: UUID
    driver_id: str
    price: Decimal
    remote: bool  # asked of the charger with RemoteStartTransaction (a driver's app request)


@dataclass
class _Meter:
    """The running transaction's last reading, for the telemetry's power and sequence."""

    wh: int
    at: float
    seq: int = 0
    kw: Decimal = Decimal(0)


Verdict = SupplyAuthorised | RequestDenied | None  # None: no answer in time


@dataclass
class _Charger:
    """One charger the gateway holds, connected or not."""

    cp_id: str
    ip: str = "-"
    secret: str | None = None
    connection: object = None  # the adapter's token of the current WebSocket (None: not connected)
    accepted: bool = False  # Boot accepted on the current connection
    booted: asyncio.Event = field(default_factory=asyncio.Event)  # its Boot answer was sent
    statuses: dict[int, tuple[ChargerStatus, str]] = field(default_factory=dict)
    held: _Held | None = None
    running: int | None = None  # the transaction supplying now
    meter: _Meter | None = None
    asked_stop: dict[int, SupplyEndReason] = field(default_factory=dict)  # tx -> why we asked
    stopped: bool = False  # out of service: CP_STOP received (or left Inoperative), no resume
    stop_told: bool = False  # a CP_STOP arrived since the charger's last login at Central
    resuming: set[int] = field(default_factory=set)  # connectors with no status since Operative
    waiting: dict[str, asyncio.Future[Verdict]] = field(default_factory=dict)  # by driver id
    requests: dict[UUID, str] = field(default_factory=dict)  # request id -> driver id
    calls: asyncio.Lock = field(default_factory=asyncio.Lock)


class GatewayService:
    """Every charger of one EV_OCPP process."""

    def __init__(
        self,
        publisher: Publisher,
        logins: CentralLogins,
        controls: ChargerControls,
        store: GatewayStore,
        clock: Clock,
        config: GatewayConfig | None = None,
        *,
        audit: Audit | None = None,
    ) -> None:
        self._publisher = publisher
        self._logins = logins
        self._controls = controls
        self._store = store
        self._clock = clock
        self.config = config or GatewayConfig()
        self.audit = audit or Audit()
        self.throttle = FailureThrottle()
        self._chargers: dict[str, _Charger] = {}
        state = store.load()
        self._next_tx = state.next_transaction_id
        self._txs: dict[int, TransactionRecord] = {t.transaction_id: t for t in state.transactions}
        self._inoperative = set(state.inoperative)
        self._ended: dict[int, tuple[str, IdTagStatus]] = {}  # tx -> (CP, its stop's answer)
        self._outbox = Outbox(publisher)
        self._tasks: set[asyncio.Task[None]] = set()
        for tx in list(self._txs.values()):
            if tx.ended:  # its SUPPLY_ENDED was not delivered before the gateway stopped
                self._report_end(tx)

    # --- what others read ---------------------------------------------------------------

    def holds(self, cp_id: str) -> bool:
        """Whether cp-commands for `cp_id` concern this gateway (the consumer's key filter)."""
        return cp_id in self._chargers

    def accepted(self, cp_id: str) -> bool:
        ch = self._chargers.get(cp_id)
        return ch is not None and ch.accepted

    def connected(self) -> list[str]:
        return sorted(c.cp_id for c in self._chargers.values() if c.connection is not None)

    def transaction(self, transaction_id: int) -> TransactionRecord | None:
        return self._txs.get(transaction_id)

    @property
    def pending_events(self) -> int:
        return len(self._outbox)

    # --- a charger's WebSocket ----------------------------------------------------------

    def opened(self, cp_id: str, connection: object, ip: str, secret: str | None) -> None:
        """A charger's WebSocket is open (its credentials checked as far as the handshake can):
        it replaces an earlier connection of the same CP, which the adapter closes."""
        ch = self._chargers.get(cp_id)
        if ch is None:  # new here, or the gateway restarted: a transaction may still be running
            ch = self._chargers[cp_id] = _Charger(cp_id, stopped=cp_id in self._inoperative)
            ch.running = max(
                (
                    t.transaction_id
                    for t in self._txs.values()
                    if t.cp_id == cp_id and t.session_id is not None and not t.ended
                ),
                default=None,
            )
        ch.connection, ch.ip, ch.secret = connection, ip, secret
        ch.accepted = False
        ch.booted = asyncio.Event()
        log.info("cp=%s: charger connected from %s, waiting for its BootNotification", cp_id, ip)

    async def closed(self, cp_id: str, connection: object) -> None:
        """The WebSocket closed (or was lost): the CP's link to Central closes (Desconectado,
        and Central ends a supply in progress), unless a newer connection took over. What the
        charger reported is delivered first (for up to `flush_before_logout`): a charger that
        stops its transaction and hangs up is billed from its StopTransaction, not from an older
        reading Central would have to correct."""
        ch = self._chargers.get(cp_id)
        if ch is None or ch.connection is not connection:
            return
        was_a_cp = ch.accepted
        ch.connection, ch.accepted, ch.held = None, False, None
        ch.booted = asyncio.Event()
        for waiter in ch.waiting.values():
            if not waiter.done():
                waiter.set_result(None)
        if not was_a_cp:
            log.info("cp=%s: charger disconnected (its boot was not accepted)", cp_id)
            if not any(t.cp_id == cp_id for t in self._txs.values()):
                del self._chargers[cp_id]  # strangers trying ids leave nothing behind
            await self._logins.logout(cp_id)
            return
        try:
            async with asyncio.timeout(self.config.flush_before_logout):
                await self.flush()
        except TimeoutError:
            log.warning("cp=%s: its last events are not delivered yet (Kafka)", cp_id)
        if ch.connection is not None:  # it reconnected meanwhile: its link stays
            return
        log.warning("cp=%s: charger disconnected -> Desconectado at Central", cp_id)
        await self._logins.logout(cp_id)

    # --- charger -> central system --------------------------------------------------------

    async def boot(self, cp_id: str, vendor: str = "", model: str = "") -> BootAnswer:
        """BootNotification: Accepted only once Central authenticated the CP."""
        ch = self._chargers[cp_id]
        retry = self.config.retry_interval
        if ch.accepted:
            return BootAnswer(BootStatus.ACCEPTED, self.config.heartbeat_interval)
        wait = self.throttle.wait(self._throttle_keys(ch), self._clock())
        if wait > 0:
            reason = f"too many refused boots: try again in {wait:.0f} s"
            return self._rejected(ch, reason, max(retry, int(wait) + 1))
        if ch.secret is None:
            return self._rejected(ch, "no credential for this CP", retry)
        ch.stop_told = False  # Central's CP_STOP for this login may come before its Boot answer
        outcome = await self._logins.login(cp_id, ch.secret)
        if outcome.state is LoginState.UNREACHABLE:
            log.warning("cp=%s: boot Pending: Central unreachable (%s)", cp_id, outcome.reason)
            return BootAnswer(BootStatus.PENDING, retry, outcome.reason)
        if outcome.state is LoginState.DENIED:
            self.throttle.failed(self._throttle_keys(ch), self._clock())
            return self._rejected(ch, outcome.reason, retry)
        self.throttle.succeeded(f"cp:{cp_id}")  # not the address: see domain/throttle.py
        ch.accepted = True
        self._report_health(ch)
        self.audit.record(
            AuditAction.OCPP_BOOT,
            actor=f"cp:{cp_id}",
            ip=ch.ip,
            cp_id=cp_id,
            detail=f"charger {vendor} {model} accepted: authenticated at Central".replace(
                "  ", " "
            ),
        )
        log.info("cp=%s: boot Accepted (%s %s): a CP of the network", cp_id, vendor, model)
        return BootAnswer(BootStatus.ACCEPTED, self.config.heartbeat_interval)

    def boot_answered(self, cp_id: str) -> None:
        """The Boot answer left: CALLs to the charger may go now (and the availability the
        network last asked for is set again, in case the charger lost it)."""
        ch = self._chargers.get(cp_id)
        if ch is None or not ch.accepted:
            return
        ch.booted.set()
        if cp_id in self._inoperative:
            self._spawn(self._resync(ch, ch.connection))

    async def _resync(self, ch: _Charger, connection: object) -> None:
        """A charger the gateway left Inoperative, and Central does not stop again within
        `resync_after` of its login (it says CP_STOP at every login of a stopped CP), was resumed
        while it was away: it is made Operative."""
        await asyncio.sleep(self.config.resync_after)
        if ch.connection is connection and ch.accepted and not ch.stop_told:
            log.info(
                "cp=%s: not stopped at Central any more: ChangeAvailability Operative", ch.cp_id
            )
            ch.stopped = False
            self._availability(ch, operative=True)

    def _rejected(self, ch: _Charger, reason: str, interval: int) -> BootAnswer:
        log.warning("cp=%s: boot Rejected: %s", ch.cp_id, reason)
        self.audit.record(
            AuditAction.OCPP_BOOT,
            actor=f"cp:{ch.cp_id}",
            ip=ch.ip,
            outcome=Outcome.DENIED,
            cp_id=ch.cp_id,
            detail=f"charger refused: {reason}",
        )
        return BootAnswer(BootStatus.REJECTED, interval, reason)

    def _throttle_keys(self, ch: _Charger) -> tuple[str, ...]:
        return (f"cp:{ch.cp_id}", f"ip:{ch.ip}")

    def status(
        self, cp_id: str, connector_id: int, status: ChargerStatus, error_code: str, info: str = ""
    ) -> None:
        """StatusNotification: Faulted on any connector (or the charger, connector 0) is KO; an
        Unavailable the network did not ask for is KO too (the charger is out of order, not
        stopped by Central); anything else is healthy."""
        ch = self._chargers[cp_id]
        words = " ".join(w for w in (error_code if error_code != "NoError" else "", info) if w)
        was = ch.statuses.get(connector_id)
        ch.statuses[connector_id] = (status, words)
        ch.resuming.discard(connector_id)
        if was is None or was[0] is not status:
            log.info("cp=%s: connector %s %s %s", cp_id, connector_id, status, words)
        self._report_health(ch)

    def _health(self, ch: _Charger) -> tuple[bool, str]:
        for connector, (status, words) in sorted(ch.statuses.items()):
            if status is ChargerStatus.FAULTED:
                return False, f"charger Faulted ({words or 'no error code'})"
            if status is ChargerStatus.UNAVAILABLE and not (ch.stopped or connector in ch.resuming):
                where = "the charger" if connector == 0 else f"connector {connector}"
                return False, f"{where} Unavailable at the charger"
        return True, ""

    def _report_health(self, ch: _Charger) -> None:
        if ch.accepted:
            self._logins.health(ch.cp_id, *self._health(ch))

    def security_event(self, cp_id: str, kind: str, info: str = "") -> None:
        """SecurityEventNotification: a charger's own security log line, into the audit log."""
        ch = self._chargers[cp_id]
        log.warning("cp=%s: security event from the charger: %s %s", cp_id, kind, info)
        self.audit.record(
            AuditAction.OCPP_SECURITY_EVENT,
            actor=f"cp:{cp_id}",
            ip=ch.ip,
            cp_id=cp_id,
            detail=f"{kind}: {info}" if info else kind,
        )

    async def authorize(self, cp_id: str, id_tag: str) -> IdTagStatus:
        """Authorize: the driver (idTag = driver id) asks at the charger; Central decides, as for
        a request at our Engine's menu."""
        ch = self._chargers[cp_id]
        if ch.held is not None and ch.held.driver_id == id_tag:
            return IdTagStatus.ACCEPTED
        running = self._txs.get(ch.running) if ch.running is not None else None
        if running is not None:  # to stop its own transaction, or another driver's attempt
            return IdTagStatus.ACCEPTED if running.id_tag == id_tag else IdTagStatus.CONCURRENT_TX
        verdict = await self._ask_central(ch, id_tag)
        return (
            IdTagStatus.ACCEPTED if isinstance(verdict, SupplyAuthorised) else IdTagStatus.INVALID
        )

    async def start_transaction(
        self, cp_id: str, connector_id: int, id_tag: str, meter_start_wh: int, timestamp: str
    ) -> StartAnswer:
        """StartTransaction: bound to the session held for this driver, else (a start nobody
        asked for, or an offline transaction replayed) Central is asked first. A transaction id is
        always given (OCPP), even when Central refuses: that one bills nothing."""
        ch = self._chargers[cp_id]
        for tx in self._txs.values():  # the same start again (a retry, a replay)
            if (tx.cp_id, tx.connector_id, tx.id_tag, tx.meter_start_wh, tx.started_at) == (
                cp_id,
                connector_id,
                id_tag,
                meter_start_wh,
                timestamp,
            ):
                status = IdTagStatus.ACCEPTED if tx.session_id else IdTagStatus.INVALID
                return StartAnswer(tx.transaction_id, status)
        tx_id = self._new_transaction_id()
        record = TransactionRecord(tx_id, cp_id, connector_id, id_tag, meter_start_wh, timestamp)
        if ch.running is not None and ch.running in self._txs:
            log.warning(
                "cp=%s: transaction %s on connector %s refused: transaction %s is supplying "
                "(one supply per CP)",
                cp_id,
                tx_id,
                connector_id,
                ch.running,
            )
            self._save_tx(record)
            return StartAnswer(tx_id, IdTagStatus.CONCURRENT_TX)
        held = ch.held if ch.held is not None and ch.held.driver_id == id_tag else None
        if held is None:
            verdict = await self._ask_central(ch, id_tag)
            if isinstance(verdict, SupplyAuthorised):
                held = ch.held
        if held is None:
            log.warning(
                "cp=%s driver=%s: transaction %s not authorised by Central: it bills nothing",
                cp_id,
                id_tag,
                tx_id,
            )
            self._save_tx(record)
            return StartAnswer(tx_id, IdTagStatus.INVALID)
        ch.held = None
        record = replace(record, session_id=str(held.session_id), price_eur_per_kwh=held.price)
        ch.running = tx_id
        ch.meter = _Meter(meter_start_wh, self._clock())
        self._save_tx(record)
        self._emit(SupplyStarted(cp_id=cp_id, session_id=held.session_id, driver_id=id_tag))
        log.info(
            "cp=%s driver=%s session=%s: transaction %s started, meter %s Wh",
            cp_id,
            id_tag,
            held.session_id,
            tx_id,
            meter_start_wh,
        )
        return StartAnswer(tx_id, IdTagStatus.ACCEPTED)

    async def meter_values(
        self, cp_id: str, connector_id: int, transaction_id: int | None, wh: int | None
    ) -> None:
        """MeterValues: the register of a supplying transaction, as live telemetry (a reading
        lower than the last, or of no supplying transaction, changes nothing)."""
        ch = self._chargers[cp_id]
        tx_id = transaction_id if transaction_id is not None else ch.running
        tx = self._txs.get(tx_id) if tx_id is not None else None
        if wh is None or tx is None or tx.session_id is None or tx.ended or tx_id != ch.running:
            return
        meter, now = ch.meter or _Meter(tx.meter_start_wh, self._clock()), self._clock()
        if wh < meter.wh:
            return
        if now > meter.at and wh > meter.wh:
            kw = Decimal(wh - meter.wh) * Decimal(3600) / Decimal(1000) / Decimal(now - meter.at)
            meter.kw = min(kw.quantize(Decimal("0.01")), MAX_KW)
        meter.wh, meter.at, meter.seq = wh, now, meter.seq + 1
        ch.meter = meter
        energy = _energy(tx.meter_start_wh, wh)
        assert tx.price_eur_per_kwh is not None
        await self._publisher.publish_soon(
            CpTelemetry(
                cp_id=cp_id,
                session_id=UUID(tx.session_id),
                driver_id=tx.id_tag,
                seq=meter.seq,
                kw=meter.kw,
                energy_kwh=energy,
                amount_eur=cost(energy, tx.price_eur_per_kwh),
                source=f"{SOURCE}/{cp_id}",
            )
        )

    def stop_transaction(
        self, cp_id: str, transaction_id: int, meter_stop_wh: int, reason: str | None
    ) -> IdTagStatus | None:
        """StopTransaction: the end of the supply, billed from meterStop - meterStart; the same
        stop again is answered the same and reported once. Never refused (a charger would resend
        it forever): an unknown transaction is logged and acknowledged."""
        ch = self._chargers[cp_id]
        tx = self._txs.get(transaction_id)
        if ch.running == transaction_id:
            ch.running, ch.meter = None, None
        if tx is None or tx.cp_id != cp_id:
            ended = self._ended.get(transaction_id)
            if ended is not None and ended[0] == cp_id:  # its end was delivered: the same answer
                return ended[1]
            log.warning(
                "cp=%s: StopTransaction for transaction %s, unknown here: acknowledged, "
                "nothing billed",
                cp_id,
                transaction_id,
            )
            return None
        if tx.ended:
            return IdTagStatus.ACCEPTED
        why = end_reason(reason, ch.asked_stop.pop(transaction_id, None))
        tx = replace(tx, meter_stop_wh=max(meter_stop_wh, tx.meter_start_wh), end_reason=why)
        self._save_tx(tx)
        if tx.session_id is None:
            self._forget(transaction_id)
            return IdTagStatus.INVALID
        self._report_end(tx)
        return IdTagStatus.ACCEPTED

    def _report_end(self, tx: TransactionRecord) -> None:
        """One SUPPLY_ENDED per transaction, forgotten once delivered (a restarted gateway sends
        one it had not delivered; Central bills a session once, whatever arrives twice)."""
        if tx.session_id is None or tx.meter_stop_wh is None or tx.end_reason is None:
            self._forget(tx.transaction_id)
            return
        energy, reason = _energy(tx.meter_start_wh, tx.meter_stop_wh), tx.end_reason
        self._emit(
            SupplyEnded(
                cp_id=tx.cp_id,
                session_id=UUID(tx.session_id),
                driver_id=tx.id_tag,
                energy_kwh=energy,
                reason=reason,
            ),
            delivered=lambda: self._forget(tx.transaction_id),
        )
        log.info(
            "cp=%s driver=%s session=%s: transaction %s ended (%s): %s kWh, %s €",
            tx.cp_id,
            tx.id_tag,
            tx.session_id,
            tx.transaction_id,
            reason,
            energy,
            cost(energy, tx.price_eur_per_kwh or Decimal(0)),
        )

    # --- central system -> charger (cp-commands) ------------------------------------------

    def on_supply_authorised(self, ev: SupplyAuthorised) -> None:
        ch = self._chargers.get(ev.cp_id)
        if ch is None:
            return
        if (ch.held is not None and ch.held.session_id == ev.session_id) or any(
            t.session_id == str(ev.session_id) for t in self._txs.values()
        ):
            log.info(
                "cp=%s session=%s: authorisation redelivered, ignored", ev.cp_id, ev.session_id
            )
            return
        waiter = ch.waiting.pop(ev.driver_id, None)
        remote = waiter is None or waiter.done()
        ch.held = _Held(ev.session_id, ev.driver_id, ev.price_eur_per_kwh, remote=remote)
        log.info(
            "cp=%s driver=%s session=%s: authorised at %s €/kWh%s",
            ev.cp_id,
            ev.driver_id,
            ev.session_id,
            ev.price_eur_per_kwh,
            ": RemoteStartTransaction" if remote else "",
        )
        if not remote:
            assert waiter is not None
            waiter.set_result(ev)
            return
        held = ch.held

        async def start() -> str:
            return await self._controls.remote_start(
                ev.cp_id, ev.driver_id, self.config.connector_id
            )

        def answered(answer: str) -> None:
            if answer != "Accepted" and ch.held is held:
                log.warning(
                    "cp=%s driver=%s: the charger did not start (%s): the session ends unsupplied",
                    ev.cp_id,
                    ev.driver_id,
                    answer,
                )
                ch.held = None
                self._emit(
                    SupplyEnded(
                        cp_id=ev.cp_id,
                        session_id=ev.session_id,
                        driver_id=ev.driver_id,
                        energy_kwh=kwh(0),
                        reason=SupplyEndReason.NEVER_PLUGGED,
                    )
                )

        self._call(ch, "RemoteStartTransaction", start, answered)

    def on_request_denied(self, ev: RequestDenied) -> None:
        ch = self._chargers.get(ev.cp_id)
        if ch is None:
            return
        driver = ch.requests.pop(ev.request_id, None)
        waiter = ch.waiting.pop(driver, None) if driver is not None else None
        if waiter is None or waiter.done():
            log.info(
                "cp=%s driver=%s: denial of an earlier request (%s)",
                ev.cp_id,
                ev.driver_id,
                ev.reason,
            )
            return
        log.warning("cp=%s driver=%s: DENIED by Central: %s", ev.cp_id, ev.driver_id, ev.reason)
        waiter.set_result(ev)

    def on_stop_supply(self, ev: StopSupply) -> None:
        ch = self._chargers.get(ev.cp_id)
        if ch is None:
            return
        if ch.held is not None and ch.held.session_id == ev.session_id:
            log.info(
                "cp=%s session=%s: authorisation withdrawn (%s)", ev.cp_id, ev.session_id, ev.reason
            )
            ch.held = None
            return
        tx = next(
            (t for t in self._txs.values() if t.session_id == str(ev.session_id) and not t.ended),
            None,
        )
        if tx is None:
            log.info(
                "cp=%s session=%s: STOP_SUPPLY for no running transaction", ev.cp_id, ev.session_id
            )
            return
        self._remote_stop(ch, tx.transaction_id, ev.reason)

    def on_cp_stop(self, ev: CpStop) -> None:
        """Out of service: a running transaction is stopped, then the charger Inoperative (it
        answers Scheduled while a transaction runs, and goes Unavailable once it ends)."""
        ch = self._chargers.get(ev.cp_id)
        if ch is None:
            return
        ch.stopped, ch.stop_told, ch.held = True, True, None
        log.warning("cp=%s: %s: ChangeAvailability Inoperative", ev.cp_id, ev.reason)
        if ch.running is not None:
            self._remote_stop(ch, ch.running, SupplyEndReason.STOPPED_BY_CENTRAL)
        self._availability(ch, operative=False)

    def on_cp_resume(self, ev: CpResume) -> None:
        ch = self._chargers.get(ev.cp_id)
        if ch is None:
            return
        ch.stopped = False
        log.info("cp=%s: resumed by Central: ChangeAvailability Operative", ev.cp_id)
        self._availability(ch, operative=True)

    def on_report_status(self, ev: CpReportStatus) -> None:
        ch = self._chargers.get(ev.cp_id)
        if ch is not None:
            self._call(
                ch,
                "TriggerMessage StatusNotification",
                lambda: self._controls.trigger_status(ev.cp_id),
            )

    def on_reset(self, ev: CpReset) -> None:
        ch = self._chargers.get(ev.cp_id)
        if ch is not None:
            kind = "Hard" if ev.hard else "Soft"
            self._call(ch, f"Reset {kind}", lambda: self._controls.reset(ev.cp_id, ev.hard))

    def _remote_stop(self, ch: _Charger, tx_id: int, reason: SupplyEndReason) -> None:
        ch.asked_stop[tx_id] = reason
        self._call(
            ch,
            f"RemoteStopTransaction {tx_id} ({reason})",
            lambda: self._controls.remote_stop(ch.cp_id, tx_id),
        )

    def _availability(self, ch: _Charger, *, operative: bool) -> None:
        if operative:
            self._inoperative.discard(ch.cp_id)
            ch.resuming = set(ch.statuses)  # each connector's Unavailable stands until it reports
        else:
            self._inoperative.add(ch.cp_id)
        self._store.gateway(self._next_tx, frozenset(self._inoperative))
        word = "Operative" if operative else "Inoperative"
        self._call(
            ch,
            f"ChangeAvailability {word}",
            lambda: self._controls.change_availability(ch.cp_id, operative),
        )
        self._report_health(ch)

    # --- asking Central -----------------------------------------------------------------

    async def _ask_central(self, ch: _Charger, id_tag: str) -> Verdict:
        """An AUTHORIZATION_REQUEST from the CP for `id_tag`, and Central's verdict (None: not in
        time, or the charger went away)."""
        if not is_valid_id(id_tag):
            log.warning("cp=%s: idTag %r is not a driver id: Invalid", ch.cp_id, id_tag[:40])
            return None
        waiter = ch.waiting.get(id_tag)
        if waiter is None or waiter.done():
            try:
                request = AuthorizationRequest(driver_id=id_tag, cp_id=ch.cp_id, origin="cp")
            except ValidationError:
                return None
            waiter = asyncio.get_running_loop().create_future()
            ch.waiting[id_tag] = waiter
            ch.requests[request.request_id] = id_tag
            self._emit(request)
            log.info(
                "cp=%s driver=%s: asking Central (request=%s)", ch.cp_id, id_tag, request.request_id
            )
        try:
            async with asyncio.timeout(self.config.answer_timeout):
                return await asyncio.shield(waiter)
        except TimeoutError:
            log.warning(
                "cp=%s driver=%s: no answer from Central in %g s: Invalid",
                ch.cp_id,
                id_tag,
                self.config.answer_timeout,
            )
            ch.waiting.pop(id_tag, None)
            return None

    # --- CALLs to a charger: one at a time, in order, after its Boot answer ----------------

    def _call(
        self,
        ch: _Charger,
        what: str,
        call: Callable[[], Awaitable[str]],
        then: Callable[[str], None] | None = None,
    ) -> None:
        async def run() -> None:
            async with ch.calls:
                if ch.connection is None:
                    answer = "failed: the charger is not connected"
                else:
                    try:
                        async with asyncio.timeout(self.config.answer_timeout):
                            await ch.booted.wait()
                    except TimeoutError:
                        answer = "failed: the charger has not booted"
                    else:
                        answer = await call()
            level = logging.INFO if not answer.startswith("failed") else logging.WARNING
            log.log(level, "cp=%s: %s -> %s", ch.cp_id, what, answer)
            if then is not None:
                then(answer)

        self._spawn(run())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle_calls(self) -> None:
        """Wait for the CALLs under way (tests; shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- transactions on disk -----------------------------------------------------------

    def _new_transaction_id(self) -> int:
        tx_id, self._next_tx = self._next_tx, self._next_tx + 1
        self._store.gateway(self._next_tx, frozenset(self._inoperative))
        return tx_id

    def _save_tx(self, tx: TransactionRecord) -> None:
        self._txs[tx.transaction_id] = tx
        self._store.put(tx)

    def _forget(self, transaction_id: int) -> None:
        """An ended transaction leaves the state file; its stop's answer is remembered (the
        latest `_REMEMBERED_ENDED`) for a charger that sends that stop again."""
        tx = self._txs.pop(transaction_id, None)
        if tx is None:
            return
        answer = IdTagStatus.ACCEPTED if tx.session_id is not None else IdTagStatus.INVALID
        self._ended[transaction_id] = (tx.cp_id, answer)
        if len(self._ended) > _REMEMBERED_ENDED:
            del self._ended[next(iter(self._ended))]
        self._store.drop(transaction_id)

    # --- the outbox ---------------------------------------------------------------------

    def _emit(self, event: Event, delivered: Callable[[], None] | None = None) -> None:
        self._outbox.emit(
            event.model_copy(update={"source": f"{SOURCE}/{getattr(event, 'cp_id', '')}"}),
            delivered,
        )

    async def flush(self) -> None:
        """Publish everything pending, in order (shutdown, tests)."""
        await self._outbox.flush()

    async def run_outbox(self) -> None:
        """Background task of the program: deliver events as soon as they are emitted."""
        await self._outbox.run()


def _energy(meter_start_wh: int, meter_wh: int) -> Decimal:
    """kWh between two register readings, to the Wh, within the contracts' ceiling."""
    return min(kwh(Decimal(max(meter_wh - meter_start_wh, 0)) / 1000), MAX_ENERGY_KWH)
