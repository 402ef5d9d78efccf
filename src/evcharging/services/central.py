"""EV_Central's use cases: authorise supplies, follow them, end them, bill them, govern CPs.

Inputs arrive from three adapters (Monitor sockets, Kafka, the admin HTTP API) and all land here;
every way a supply ends goes through `_end`, which goes through the domain's `end_session`.
Handlers are idempotent: a redelivered event finds its effect already done and changes nothing.

What matters for security goes to the audit log (`services/audit.py`) from here: every CP state
change (with the CP's address), stops and resumes, interrupted supplies, drivers denied; the
Registry's change feed (`follow_registry`) keeps the CPs' `registered` flag and their
authentication in step with EV_Registry.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID, uuid4

from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.contracts.end_reasons import SupplyEndReason
from evcharging.contracts.events import (
    AuthorizationRequest,
    AuthorizationResponse,
    ChargingProgress,
    ChargingStarted,
    ChargingStopped,
    ChargingTicket,
    CpErrorFixed,
    CpErrorSimulated,
    CpReportStatus,
    CpReset,
    CpResume,
    CpStatus,
    CpStop,
    CpTelemetry,
    DriverNotice,
    DriverStatus,
    DriverStatusRequest,
    RequestDenied,
    StopSupply,
    SupplyAuthorised,
    SupplyEnded,
    SupplyStarted,
)
from evcharging.contracts.socket_ops import ErrReason
from evcharging.domain.admin_rules import AdminAction, Conflict, UnknownCP, refusal
from evcharging.domain.authorization import Denied, authorise
from evcharging.domain.cp_state import CPFacts, StopReason, stop_reasons
from evcharging.domain.money import cost, kwh
from evcharging.domain.records import CPRecord
from evcharging.domain.session import (
    EndReason,
    Session,
    end_session,
    open_session,
    record_reading,
    start_supply,
)
from evcharging.services.audit import UNKNOWN_IP, Audit, AuditEntry, AuditQuery, ip_of
from evcharging.services.central_keys import CentralKeys
from evcharging.services.central_live import LiveCP, RequestRow
from evcharging.services.central_views import (
    BulkOutcome,
    CentralChange,
    CPChanged,
    CPView,
    DriverView,
    MessageAdded,
    MessageView,
    RequestChanged,
    RequestView,
    SessionView,
    Skipped,
    cp_view,
    driver_view,
    request_view,
    session_view,
)
from evcharging.services.cp_keys import CpKey
from evcharging.services.ports import (
    Delivery,
    Publisher,
    RegistryChange,
    RegistryChangeKind,
    Repository,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """The result of a Monitor request: ok, or refused with a reason."""

    ok: bool
    reason: str = ""


_OK = Answer(True)


@dataclass(frozen=True, slots=True)
class Who:
    """Who asked Central for an action and from which address: what the audit log records."""

    actor: str = "central"  # "admin", "ev_w", "central"
    ip: str = UNKNOWN_IP


CENTRAL = Who()


def error_simulated_text(cp_id: str, error_type: str) -> str:
    """The seed's CP_ERROR_SIMULATED message, in the product's one language (English)."""
    return f'Error "{error_type}" simulated at {cp_id}'


def error_fixed_text(cp_id: str) -> str:
    return f"Error fixed at {cp_id}"


def status_asked_text(cp_id: str) -> str:
    return f"CP {cp_id} asked to report its status"


def reset_asked_text(cp_id: str, hard: bool) -> str:
    return f"CP {cp_id} asked to reset ({'hard' if hard else 'soft'})"


class CentralService:
    def __init__(
        self,
        repo: Repository,
        publisher: Publisher,
        *,
        heartbeat_timeout: float = 3.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        audit: Audit | None = None,
        keys: CentralKeys | None = None,
    ) -> None:
        """`audit`: where the audit log goes (default: the repository, which is an audit sink).
        `keys`: the per-CP keys (None: a Central without keys, e.g. unit tests of other rules)."""
        self._repo = repo
        self.audit = audit if audit is not None else Audit([repo])
        self.publisher = publisher
        self.heartbeat_timeout = heartbeat_timeout
        self._now = now
        self._monotonic = monotonic
        self._cps: dict[str, LiveCP] = {}
        self._requests: dict[str, RequestRow] = {}
        self._messages: deque[MessageView] = deque(maxlen=300)
        self._listeners: list[Callable[[CentralChange], None]] = []
        self._stop_sent: dict[str, float] = {}
        self._unsaved: dict[str, Session] = {}  # running figures not yet written (batched)
        self._driver_cp: dict[str, str] = {}  # driver id -> CP of its open session
        self._registry_seq = 0  # the last row of the Registry's change feed applied
        self._loaded = False
        self.keys = keys

    # --- what the outside world reads (HTTP API, WebSocket, panel) --------------------------

    def cps(self) -> list[CPView]:
        """Every CP, in the order Central loaded or registered them."""
        return [self._view(cp) for cp in self._cps.values()]

    def cp(self, cp_id: str) -> CPView | None:
        cp = self._cps.get(cp_id)
        return None if cp is None else self._view(cp)

    def requests(self) -> list[RequestView]:
        """The ongoing driver requests, oldest first."""
        return [request_view(key, r) for key, r in self._requests.items()]

    def messages(self) -> list[MessageView]:
        """The latest application messages (300 at most), oldest first."""
        return list(self._messages)

    def driver(self, driver_id: str) -> DriverView | None:
        record = self._repo.get_driver(driver_id)
        return None if record is None else driver_view(record)

    def drivers(self) -> list[DriverView]:
        """Every driver account, by id."""
        return [driver_view(record) for record in self._repo.list_drivers()]

    def open_sessions(self) -> list[SessionView]:
        """The sessions under way (authorised or supplying), live figures, in CP order."""
        return [session_view(cp.session) for cp in self._cps.values() if cp.session is not None]

    def sessions(
        self,
        *,
        driver_id: str | None = None,
        cp_id: str | None = None,
        status: str | None = None,
        limit: int = 200,
        offset: int = 0,
    ) -> list[SessionView]:
        """Newest first, `limit` at a time; `offset` pages through the rest."""
        found = self._repo.find_sessions(
            driver_id=driver_id, cp_id=cp_id, status=status, limit=limit, offset=offset
        )
        return [session_view(s) for s in found]

    def audit_rows(self, query: AuditQuery) -> Sequence[AuditEntry]:
        """The audit log, newest first, filtered and paged (`GET /api/audit`)."""
        return self._repo.find_audit(query)

    def subscribe(self, listener: Callable[[CentralChange], None]) -> None:
        """`listener` is called, synchronously and in the service's thread, with every change."""
        self._listeners.append(listener)

    def _view(self, cp: LiveCP) -> CPView:
        """The CP as every surface shows it, with the state of its keys (never the keys)."""
        return cp_view(cp, None if self.keys is None else self.keys.state(cp.cp_id))

    def _emit(self, change: CentralChange) -> None:
        for listener in self._listeners:
            listener(change)

    def say(self, text: str, level: str = "info") -> None:
        """A message about the network from outside the service's own work (a module that
        stops or starts answering): shown where Central's own messages are."""
        self._say(text, level)

    def _say(self, text: str, level: str = "info") -> None:
        """An application message: logged, kept for the panel, pushed to dashboards."""
        message = MessageView(self._now(), level, text)
        self._messages.append(message)
        log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", text)
        self._emit(MessageAdded(message))

    async def _changed(self, cp: LiveCP) -> CPView:
        view = self._view(cp)
        if cp.state is not cp.audited:
            was, cp.audited = cp.audited, cp.state
            self.audit.record(
                AuditAction.CP_STATE,
                actor=f"cp:{cp.cp_id}",
                ip=cp.ip,
                cp_id=cp.cp_id,
                detail=f"{was.value} -> {cp.state.value}",
                # "from" is a keyword: unpacked (mypy cannot tell these keys from ip, outcome)
                **{"from": was.value, "to": cp.state.value},  # type: ignore[arg-type]
            )
        self._emit(CPChanged(view))
        public = (view.json["state"], view.json["available"], view.json["stop_reason"])
        if public != cp.published:
            cp.published = public
            await self.publisher.publish_soon(
                CpStatus(
                    cp_id=cp.cp_id,
                    location=cp.record.location,
                    price_eur_per_kwh=cp.record.price_eur_per_kwh,
                    state=cp.state.value,
                    available=view.json["available"],
                    stop_reason=view.json["stop_reason"],
                )
            )
        return view

    def _request(self, driver_id: str, cp_id: str, status: str, session_id: str | None) -> None:
        key = session_id or f"{driver_id}@{cp_id}"
        if status in ("ended", "denied"):
            if self._requests.pop(key, None) is None:
                return
            view = None
        else:
            line = RequestRow(self._now(), driver_id, cp_id, status, session_id)
            self._requests[key] = line
            view = request_view(key, line)
        # One row per change, never the table: a burst of N authorisations must not cost N^2.
        self._emit(RequestChanged(key, view))

    def _attach(self, cp: LiveCP, session: Session | None) -> None:
        """Every change of a CP's session goes here, so the driver index never disagrees."""
        if cp.session is not None and self._driver_cp.get(cp.session.driver_id) == cp.cp_id:
            del self._driver_cp[cp.session.driver_id]
        cp.attach(session)
        if session is not None:
            self._driver_cp[session.driver_id] = cp.cp_id

    # --- start-up ---------------------------------------------------------------------

    async def load(self) -> None:
        """Every CP from the DB, Desconectado until its Monitor connects; open sessions re-attached."""
        self._registry_seq = self._repo.last_registry_change()
        registered = self._repo.registered_cps()
        for record in self._repo.list_cps():
            self._cps[record.cp_id] = _live(record, record.cp_id in registered)
        for session in self._repo.open_sessions():
            cp = self._cps.get(session.cp_id)
            if cp is not None:
                self._attach(cp, session)
                self._request(
                    session.driver_id, session.cp_id, session.status.value, session.session_id
                )
        for session in self._repo.unsent_tickets():
            driver = self._repo.get_driver(session.driver_id)
            await self._send_ticket(session, driver.balance_eur if driver else Decimal("0"))
        for cp in self._cps.values():
            await self._changed(cp)
        self._loaded = True
        self._say(
            f"Central started: {len(self._cps)} CPs loaded, all Desconectado until their Monitor connects"
        )

    async def ensure_cp(self, cp_id: str) -> bool:
        """True when Central knows the CP, loading it from the database if need be: one
        registered at EV_Registry after Central started, whose change the feed has not brought
        yet, can authenticate at once. False when the database has no such CP either."""
        if cp_id in self._cps:
            return True
        cp = self._load_cp(cp_id)
        if cp is None:
            return False
        self._say(
            f"CP {cp_id} ({cp.record.location}) loaded from the database: Desconectado until its "
            "Monitor connects"
        )
        await self._changed(cp)
        return True

    def _load_cp(self, cp_id: str) -> LiveCP | None:
        record = self._repo.get_cp(cp_id)
        if record is None:
            return None
        cp = self._cps[cp_id] = _live(record, self._repo.get_verifier(cp_id) is not None)
        return cp

    # --- the Registry's change feed (the database it shares with EV_Registry) -----------------

    async def follow_registry(self) -> int:
        """Applies the Registry's changes since the last call (Central polls it every second):
        a new registration is shown (Desconectado, registered); a deregistration or a rotation
        drops the CP's authentication, so its Monitor must prove its (new) credentials again.
        Returns how many changes were applied."""
        if not self._loaded:
            return 0
        changes = self._repo.registry_changes(self._registry_seq)
        for change in changes:
            self._registry_seq = change.seq
            await self._on_registry_change(change)
        return len(changes)

    async def _on_registry_change(self, change: RegistryChange) -> None:
        cp_id = change.cp_id
        cp = self._cps.get(cp_id) or self._load_cp(cp_id)
        if cp is None:
            log.warning("registry change %s: CP %s is not in the database; ignored", change, cp_id)
            return
        if change.kind is RegistryChangeKind.REGISTERED:
            cp.registered = True
            cp.record = self._repo.get_cp(cp_id) or cp.record  # the Registry sets location, price
            cp.published = None  # CP_STATUS carries them: publish it again
            self._say(
                f"CP {cp_id} registered at EV_Registry ({cp.record.location}): Desconectado "
                "until its Monitor connects"
                if cp.monitor is None
                else f"CP {cp_id} registered at EV_Registry ({cp.record.location})"
            )
            await self._changed(cp)
            return
        if change.kind is RegistryChangeKind.DEREGISTERED:
            cp.registered = False
            why = "deregistered at EV_Registry"
        else:
            why = "its credentials were replaced at EV_Registry"
        if not await self.forget_auth(cp_id, why):
            self._say(f"CP {cp_id} {why}")
            await self._changed(cp)

    async def forget_auth(self, cp_id: str, why: str) -> bool:
        """Drops a CP's authentication (its credentials were revoked or replaced): it shows
        Desconectado, a supply in progress ends, and its Monitor's link is refused
        `ERR#not_authenticated` at its next frame, so the Monitor authenticates again (and is
        denied if the CP is no longer registered). False when it was not authenticated."""
        cp = self._cps.get(cp_id)
        if cp is None or cp.monitor is None:
            return False
        cp.monitor = None
        cp.facts = cp.facts.with_(monitor_connected=False)
        self._say(f"CP {cp_id} must authenticate again ({why}) -> Desconectado", "warning")
        await self._end(cp, EndReason.MONITOR_LOST)
        await self._changed(cp)
        return True

    # --- Monitor (sockets) ------------------------------------------------------------

    async def monitor_auth(
        self,
        cp_id: str,
        token: object,
        *,
        engine_ok: bool = True,
        fault_reason: str | None = None,
        peer: str = UNKNOWN_IP,
    ) -> Answer:
        """A Monitor authenticates its CP, telling the Engine's health as it knows it: a CP is
        never shown or offered as available before Central knows its Engine is healthy. `peer`
        is the Monitor's address (host:port), kept for the audit rows of the CP's states."""
        cp = self._cps.get(cp_id)
        if cp is None and await self.ensure_cp(cp_id):
            cp = self._cps[cp_id]
        if cp is None:
            self._say(f"CP {cp_id} refused: unknown CP (register it at EV_Registry)", "warning")
            return Answer(False, "unknown CP: not registered at Central")
        if cp.monitor is not None and cp.monitor is not token:
            self._say(f"CP {cp_id} refused: already connected from another Monitor", "warning")
            return Answer(False, "CP already connected from another Monitor")
        cp.monitor = token
        cp.ip = ip_of(peer)
        # The Registry may have registered the CP, or set a new location or price, just now,
        # before the change feed's next poll: authentication reads them from the database.
        cp.registered = self._repo.get_verifier(cp_id) is not None
        record = self._repo.get_cp(cp_id)
        if record is not None and record != cp.record:
            cp.record = record
            cp.published = None
        cp.last_heartbeat = self._monotonic()
        cp.facts = cp.facts.with_(monitor_connected=True, engine_ok=engine_ok)
        cp.fault_reason = None if engine_ok else (fault_reason or "Engine KO")
        why = "" if engine_ok else f" ({cp.fault_reason})"
        self._say(
            f"CP {cp_id} authenticated ({cp.record.location}) -> {cp.state.value}{why}",
            "info" if engine_ok else "warning",
        )
        await self._changed(cp)
        return Answer(True)

    def _own(self, cp_id: str, token: object) -> LiveCP | None:
        cp = self._cps.get(cp_id)
        return cp if cp is not None and cp.monitor is token else None

    def heartbeat_now(self, cp_id: str, token: object, engine_ok: bool) -> Answer | None:
        """A heartbeat that changes nothing but the CP's liveness, answered without awaiting;
        None when the Engine's health changed (then `heartbeat` does the rest)."""
        cp = self._own(cp_id, token)
        if cp is None:
            return Answer(False, ErrReason.NOT_AUTHENTICATED)
        if engine_ok != cp.facts.engine_ok:
            return None
        cp.last_heartbeat = self._monotonic()
        return _OK if cp.key_notice is None else _key_notice(cp)  # the hot path: no call

    async def heartbeat(self, cp_id: str, token: object, engine_ok: bool) -> Answer:
        routine = self.heartbeat_now(cp_id, token, engine_ok)
        if routine is not None:
            return routine
        # the Engine's health changed: the same paths as RECOVER and FAULT frames
        if engine_ok:
            answer = await self.monitor_recovered(cp_id, token)
        else:
            answer = await self.monitor_fault(cp_id, token, "Engine KO")
        cp = self._own(cp_id, token)
        return answer if cp is None or not answer.ok else _key_notice(cp)

    async def monitor_fault(self, cp_id: str, token: object, reason: str) -> Answer:
        cp = self._own(cp_id, token)
        if cp is None:
            return Answer(False, ErrReason.NOT_AUTHENTICATED)
        cp.last_heartbeat = self._monotonic()
        if not cp.facts.engine_ok:
            if reason != cp.fault_reason:
                cp.fault_reason = reason  # e.g. the real reason after AUTH said only "KO"
                await self._changed(cp)
            return Answer(True)
        cp.facts = cp.facts.with_(engine_ok=False)
        cp.fault_reason = reason
        self._say(f"CP {cp_id} FAULT: {reason} -> Averiado", "warning")
        driver = cp.session.driver_id if cp.session else None
        if driver is not None:
            cp.affected_driver = driver
            await self.publisher.publish(
                DriverNotice(
                    driver_id=driver,
                    cp_id=cp_id,
                    level="error",
                    message=f"ERROR EN CP {cp_id}: {reason}",
                )
            )
        await self._end(cp, EndReason.CP_FAULT)
        await self._changed(cp)
        return Answer(True)

    async def monitor_recovered(self, cp_id: str, token: object) -> Answer:
        cp = self._own(cp_id, token)
        if cp is None:
            return Answer(False, ErrReason.NOT_AUTHENTICATED)
        cp.last_heartbeat = self._monotonic()
        if cp.facts.engine_ok:
            return Answer(True)
        cp.facts = cp.facts.with_(engine_ok=True)
        cp.fault_reason = None
        self._say(f"CP {cp_id} recovered -> {cp.state.value}")
        if cp.affected_driver is not None:
            await self.publisher.publish(
                DriverNotice(
                    driver_id=cp.affected_driver, cp_id=cp_id, message=f"CP {cp_id} recovered"
                )
            )
            cp.affected_driver = None
        await self._changed(cp)
        return Answer(True)

    async def monitor_lost(self, cp_id: str, token: object, why: str) -> None:
        cp = self._own(cp_id, token)
        if cp is None:
            return
        cp.monitor = None
        cp.facts = cp.facts.with_(monitor_connected=False)
        self._say(f"CP {cp_id} Desconectado: {why}", "warning")
        await self._end(cp, EndReason.MONITOR_LOST)
        await self._changed(cp)

    def save_running_figures(self) -> int:
        """Writes the latest reading of every supplying session in one transaction (called about
        twice a second): per-reading writes would cost one transaction per CP per second."""
        if not self._unsaved:
            return 0
        batch, self._unsaved = list(self._unsaved.values()), {}
        self._repo.record_energies([(s.session_id, s.energy_kwh, s.amount_eur) for s in batch])
        return len(batch)

    async def check_heartbeats(self) -> None:
        """Called periodically: a Monitor silent for longer than the timeout is lost."""
        limit = self._monotonic() - self.heartbeat_timeout
        for cp in list(self._cps.values()):
            if cp.monitor is not None and cp.last_heartbeat < limit:
                await self.monitor_lost(
                    cp.cp_id, cp.monitor, f"no heartbeat for {self.heartbeat_timeout:g}s"
                )

    # --- drivers (Kafka) --------------------------------------------------------------

    async def on_authorization_request(self, ev: AuthorizationRequest) -> None:
        seen = self._repo.session_by_request(str(ev.request_id))
        if seen is not None:  # redelivery: answer again, change nothing
            await self._answer(ev, None, seen)
            return
        who = f"driver {ev.driver_id} at CP {ev.cp_id}" + (
            " (at the CP)" if ev.origin == "cp" else ""
        )
        self._say(f"Request from {who}: checking")
        cp = self._cps.get(ev.cp_id)
        driver = self._repo.get_driver(ev.driver_id)
        busy = ev.driver_id in self._driver_cp
        decision = authorise(cp.facts if cp else None, driver.balance_eur if driver else None, busy)
        if isinstance(decision, Denied):
            await self._answer(ev, decision.reason, None)
            return
        assert cp is not None
        session = open_session(
            str(uuid4()), ev.driver_id, ev.cp_id, cp.record.price_eur_per_kwh, self._now()
        )
        if not self._repo.create_session(session, str(ev.request_id)):
            await self._answer(ev, "CP busy (another supply is open)", None)
            return
        self._attach(cp, session)
        go_ahead = SupplyAuthorised(
            cp_id=cp.cp_id,
            session_id=UUID(session.session_id),
            driver_id=ev.driver_id,
            price_eur_per_kwh=cp.record.price_eur_per_kwh,
        )
        # Engine and driver are told at once: in a consumed batch both are queued and acked
        # together with the rest of the batch (no gather: a task of its own would wait alone).
        await self.publisher.publish(go_ahead)
        await self._answer(ev, None, session)
        await self._changed(cp)

    async def _answer(
        self, ev: AuthorizationRequest, denied: str | None, session: Session | None
    ) -> None:
        if denied is not None:
            self._say(f"DENIED driver {ev.driver_id} at CP {ev.cp_id}: {denied}", "warning")
            self.audit.record(  # over Kafka: the driver's address is unknown, its source is not
                AuditAction.DRIVER_DENIED,
                actor=f"driver:{ev.driver_id}",
                outcome=Outcome.DENIED,
                cp_id=ev.cp_id,
                detail=denied,
                source=ev.source,
                origin=ev.origin,
                request_id=ev.request_id,
            )
            self._request(ev.driver_id, ev.cp_id, "denied", None)
        else:
            assert session is not None
            self._say(f"AUTHORISED driver {ev.driver_id} at CP {ev.cp_id}: plug in to start")
            self._request(ev.driver_id, ev.cp_id, "authorised", session.session_id)
        if denied is not None and ev.origin == "cp":  # the CP's screen says why, too
            await self.publisher.publish(
                RequestDenied(
                    cp_id=ev.cp_id, request_id=ev.request_id, driver_id=ev.driver_id, reason=denied
                )
            )
        await self.publisher.publish(
            AuthorizationResponse(
                request_id=ev.request_id,
                driver_id=ev.driver_id,
                cp_id=ev.cp_id,
                authorised=denied is None,
                reason=denied,
                session_id=UUID(session.session_id) if session else None,
                price_eur_per_kwh=session.price_eur_per_kwh if session else None,
            )
        )

    async def on_driver_status_request(self, ev: DriverStatusRequest) -> None:
        """A Driver app (re)starting learns whether its driver exists and which supply it has open
        (read-only, so a redelivery just answers again)."""
        driver = self._repo.get_driver(ev.driver_id)
        cp = self._cps.get(self._driver_cp.get(ev.driver_id, ""))
        session = cp.session if cp is not None else None
        if driver is None:
            log.info("driver %s asked for its status: unknown driver", ev.driver_id)
        await self.publisher.publish(
            DriverStatus(
                request_id=ev.request_id,
                driver_id=ev.driver_id,
                known=driver is not None,
                balance_eur=driver.balance_eur if driver else None,
                session_id=UUID(session.session_id) if session else None,
                cp_id=session.cp_id if session else None,
                session_status=session.status.value if session else None,  # type: ignore[arg-type]
                price_eur_per_kwh=session.price_eur_per_kwh if session else None,
                energy_kwh=session.energy_kwh if session else None,
                amount_eur=session.amount_eur if session else None,
            )
        )

    async def on_charging_stopped(self, ev: ChargingStopped) -> None:
        """Seed flow 1: a driver stops its own supply; nobody else's."""
        cp = self._cps.get(self._driver_cp.get(ev.driver_id, ""))
        if (
            cp is None
            or cp.session is None
            or (ev.cp_id and ev.cp_id != cp.cp_id)
            or (ev.session_id and str(ev.session_id) != cp.session.session_id)
        ):
            self._say(
                f"Stop from driver {ev.driver_id} ignored: no supply of theirs in progress",
                "warning",
            )
            await self.publisher.publish(
                DriverNotice(
                    driver_id=ev.driver_id,
                    cp_id=ev.cp_id,
                    level="warning",
                    message="No supply of yours in progress to stop",
                )
            )
            return
        self._say(f"Driver {ev.driver_id} stops charging at CP {cp.cp_id}")
        await self._end(cp, EndReason.STOPPED_BY_DRIVER)
        await self._changed(cp)

    # --- Engines (Kafka) --------------------------------------------------------------

    def _session_of(self, cp_id: str, session_id: UUID) -> LiveCP | None:
        cp = self._cps.get(cp_id)
        if cp is not None and cp.session is not None and cp.session.session_id == str(session_id):
            return cp
        return None

    async def on_supply_started(self, ev: SupplyStarted) -> None:
        cp = self._session_of(ev.cp_id, ev.session_id)
        if cp is None or cp.session is None:
            await self._stray(ev.cp_id, ev.session_id, "SUPPLY_STARTED")
            return
        was = cp.session.status
        self._attach(cp, start_supply(cp.session))
        if cp.session.status != was:
            self._repo.mark_supplying(cp.session.session_id)
            self._say(f"CP {ev.cp_id} supplying driver {cp.session.driver_id}")
            self._request(cp.session.driver_id, cp.cp_id, "supplying", cp.session.session_id)
            await self.publisher.publish(
                ChargingStarted(
                    driver_id=cp.session.driver_id, cp_id=cp.cp_id, session_id=ev.session_id
                )
            )
        await self._changed(cp)

    async def on_telemetry(self, ev: CpTelemetry) -> None:
        cp = self._session_of(ev.cp_id, ev.session_id)
        if cp is None or cp.session is None:
            await self._stray(ev.cp_id, ev.session_id, "CP_TELEMETRY")
            return
        if cp.session.status.value == "authorised":
            await self.on_supply_started(
                SupplyStarted(
                    cp_id=ev.cp_id, session_id=ev.session_id, driver_id=cp.session.driver_id
                )
            )
        session = record_reading(cp.session, ev.energy_kwh)
        self._attach(cp, session)
        cp.kw = ev.kw
        self._unsaved[session.session_id] = session
        self._emit(CPChanged(self._view(cp)))
        await self.publisher.publish_soon(
            ChargingProgress(
                driver_id=session.driver_id,
                cp_id=cp.cp_id,
                session_id=ev.session_id,
                kw=ev.kw,
                energy_kwh=session.energy_kwh,
                amount_eur=session.amount_eur,
            )
        )

    async def on_supply_ended(self, ev: SupplyEnded) -> None:
        cp = self._session_of(ev.cp_id, ev.session_id)
        if cp is None:
            await self._late_final_reading(ev)
            return
        self._say(f"CP {ev.cp_id} reports end of supply ({ev.reason}), {ev.energy_kwh} kWh")
        await self._end(cp, ev.reason.session_reason, final_kwh=ev.energy_kwh, tell_engine=False)
        await self._changed(cp)

    async def _late_final_reading(self, ev: SupplyEnded) -> None:
        """The Engine's final reading after Central closed the session (fault, crash, a reading in
        flight): if it is larger, the difference is billed once and a corrected ticket sent."""
        closed = self._repo.get_session(str(ev.session_id))
        if closed is None or closed.is_open or closed.cp_id != ev.cp_id:
            log.warning(
                "cp=%s session=%s: SUPPLY_ENDED for an unknown session ignored",
                ev.cp_id,
                ev.session_id,
            )
            return
        energy = kwh(ev.energy_kwh)
        if energy <= closed.energy_kwh:
            log.info("cp=%s session=%s: final reading already billed", ev.cp_id, ev.session_id)
            return
        amount = cost(energy, closed.price_eur_per_kwh)
        balance = self._repo.amend_energy(closed.session_id, energy, amount)
        if balance is None:
            return
        self._say(
            f"CP {ev.cp_id} final reading after close ({ev.reason}): {closed.energy_kwh} -> {energy} kWh, "
            f"corrected ticket for driver {closed.driver_id}"
        )
        await self._send_ticket(replace(closed, energy_kwh=energy, amount_eur=amount), balance)

    async def _stray(self, cp_id: str, session_id: UUID, what: str) -> None:
        """An Engine supplying a session Central has closed is told to stop (at most every 2 s)."""
        if cp_id not in self._cps:
            log.warning("cp=%s: %s for an unknown CP ignored", cp_id, what)
            return
        known = self._repo.get_session(str(session_id))
        if known is None or known.is_open:
            log.warning(
                "cp=%s session=%s: %s for an unknown session ignored", cp_id, session_id, what
            )
            return
        last = self._stop_sent.get(str(session_id), 0.0)
        if self._monotonic() - last > 2.0:
            self._stop_sent[str(session_id)] = self._monotonic()
            await self.publisher.publish(
                StopSupply(
                    cp_id=cp_id, session_id=session_id, reason=SupplyEndReason.SESSION_CLOSED
                )
            )

    # --- the one way a supply ends ----------------------------------------------------

    async def _end(
        self,
        cp: LiveCP,
        reason: EndReason,
        final_kwh: Decimal | None = None,
        *,
        tell_engine: bool = True,
    ) -> None:
        """The one end of every session, whatever ended it. A CP under a weather alert, which
        let its session finish, goes out of service now."""
        if cp.session is None:
            return
        await self._close(cp, reason, final_kwh, tell_engine=tell_engine)
        if stop_reasons(cp.facts) == (StopReason.WEATHER_ALERT,):
            self._say(f"CP {cp.cp_id} supply over: out of service for its weather alert", "warning")
            await self.publisher.publish(CpStop(cp_id=cp.cp_id, reason=StopReason.WEATHER_ALERT))

    async def _close(
        self, cp: LiveCP, reason: EndReason, final_kwh: Decimal | None, *, tell_engine: bool
    ) -> None:
        session = cp.session
        assert session is not None
        ended = end_session(session, reason, self._now(), final_kwh)
        self._attach(cp, None)
        self._unsaved.pop(session.session_id, None)  # the close writes the final figures
        if ended is None:
            return
        balance = self._repo.close_session(ended)
        if balance is None:
            log.info(
                "cp=%s session=%s: already closed, not billed again", cp.cp_id, session.session_id
            )
            return
        self._request(ended.driver_id, ended.cp_id, "ended", ended.session_id)
        if reason.interrupted:
            self.audit.record(
                AuditAction.SUPPLY_INCIDENT,
                actor="central",
                cp_id=cp.cp_id,
                detail=f"supply of driver {ended.driver_id} interrupted: {reason.words}",
                session_id=ended.session_id,
                driver=ended.driver_id,
                reason=reason.value,
                energy_kwh=ended.energy_kwh,
                amount_eur=ended.amount_eur,
            )
        if tell_engine:
            await self.publisher.publish(
                StopSupply(
                    cp_id=cp.cp_id,
                    session_id=UUID(ended.session_id),
                    reason=SupplyEndReason.of(reason),
                )
            )
        await self._send_ticket(ended, balance)

    async def _send_ticket(self, ended: Session, balance: Decimal) -> None:
        assert ended.ended_at is not None
        assert ended.end_reason is not None
        self._say(
            f"TICKET driver {ended.driver_id} CP {ended.cp_id}: {ended.energy_kwh} kWh, "
            f"{ended.amount_eur} € ({ended.end_reason.value}); balance {balance} €"
        )
        await self.publisher.publish(
            ChargingTicket(
                driver_id=ended.driver_id,
                cp_id=ended.cp_id,
                session_id=UUID(ended.session_id),
                energy_kwh=ended.energy_kwh,
                price_eur_per_kwh=ended.price_eur_per_kwh,
                amount_eur=ended.amount_eur,
                end_reason=ended.end_reason,
                started_at=ended.started_at,
                ended_at=ended.ended_at,
                balance_eur=balance,
            ),
            on_delivered=lambda: self._repo.mark_ticket_sent(ended.session_id),
        )

    # --- per-CP keys ------------------------------------------------------------------

    async def issue_key(self, cp_id: str, peer: str = UNKNOWN_IP) -> CpKey:
        """A right PROOF was accepted (`monitor_auth`): the CP's fresh key, for the socket to
        wrap into AUTH_OK. A CP whose keys had been revoked is back in service (CP_RESUME is
        sealed with the new key, so its Engine reads it once its Monitor has handed it over); a
        CP stopped by Central is told so again (CP_STOP), since a command for a CP that holds no
        key is not sent (`Delivery.NOT_SENT_NO_KEY`)."""
        assert self.keys is not None, "issue_key needs CentralKeys"
        key = self.keys.issue(cp_id)
        self.audit.record(
            AuditAction.KEY_ISSUED,
            actor=f"cp:{cp_id}",
            ip=ip_of(peer),
            cp_id=cp_id,
            detail=f"key v{key.version} issued at authentication",
        )
        cp = self._cps.get(cp_id)
        if cp is None:
            return key
        cp.rekey = False
        was_revoked = cp.facts.keys_revoked
        if was_revoked:
            self._repo.set_keys_revoked(cp_id, False)
            cp.facts = cp.facts.with_(keys_revoked=False)
            self._say(f"CP {cp_id} authenticated again: new key v{key.version} -> {cp.state.value}")
        await self._tell_engine_its_stop(cp, resume=was_revoked)
        await self._changed(cp)
        return key

    async def _tell_engine_its_stop(self, cp: LiveCP, *, resume: bool) -> None:
        """The Engine holds Parado for the CP's first stop reason (CP_STOP says which), or, when
        none stands and `resume`, is told to come back."""
        reasons = stop_reasons(cp.facts)
        if reasons:
            await self.publisher.publish(CpStop(cp_id=cp.cp_id, reason=reasons[0]))
        elif resume:
            await self.publisher.publish(CpResume(cp_id=cp.cp_id))

    async def revoke_keys(self, cp_id: str, who: Who = CENTRAL) -> CPView:
        """ "Restaurar claves": a supply in progress ends (ticket from the last reading Central
        accepted), the Engine is told to stop with the key it still holds, then every key of the
        CP is deleted: anything sealed with them is refused, and the CP stays Parado ("keys
        revoked") until its Monitor authenticates again."""
        assert self.keys is not None, "revoke_keys needs CentralKeys"
        cp = self._cp(cp_id)
        self._keys_in_use()
        if cp.facts.keys_revoked:
            raise Conflict(
                f"CP {cp_id}'s keys are already revoked: its Monitor must authenticate again"
            )
        await self._end(cp, EndReason.KEYS_REVOKED)
        await self.publisher.publish(CpStop(cp_id=cp_id))
        versions = self.keys.revoke(cp_id)
        self._repo.set_keys_revoked(cp_id, True)
        cp.facts = cp.facts.with_(keys_revoked=True)
        shown = ", ".join(f"v{v}" for v in versions) or "none held"
        self._say(
            f"CP {cp_id} keys revoked ({shown}) -> Parado until it authenticates again", "warning"
        )
        self.audit.record(
            AuditAction.KEYS_REVOKED,
            actor=who.actor,
            ip=who.ip,
            cp_id=cp_id,
            detail=f"keys of CP {cp_id} revoked ({shown}); out of service until re-authentication",
        )
        return await self._changed(cp)

    def rotate_all_keys(self, who: Who = CENTRAL) -> list[str]:
        """Every connected CP whose keys are not revoked is asked (at its next heartbeat) to
        authenticate again, which gives it a new key; nothing goes out of service. Returns them."""
        self._keys_in_use()
        asked = [
            cp.cp_id
            for cp in self._cps.values()
            if cp.monitor is not None and not cp.facts.keys_revoked
        ]
        for cp_id in asked:
            self._cps[cp_id].rekey = True
        self._say(f"key rotation: {len(asked)} connected CPs asked to authenticate again")
        self.audit.record(
            AuditAction.KEYS_ROTATED,
            actor=who.actor,
            ip=who.ip,
            detail=f"{len(asked)} connected CPs asked for new keys",
        )
        return asked

    def _keys_in_use(self) -> None:
        """In the benchmark's comparison mode no key is issued: revoking or rotating means
        nothing, so it is a Conflict that says why, and nothing is done."""
        if self.keys is not None and not self.keys.encrypt:
            raise Conflict(
                "CP keys are not in use: Central runs with --cp-encryption off (benchmark "
                "comparison only)"
            )

    # --- administration (HTTP API, dashboards) --------------------------------------------
    # An action that makes no sense in the CP's state raises Conflict with the domain's reason
    # and changes nothing; the bulk actions skip such CPs and say which and why.

    def _cp(self, cp_id: str, action: AdminAction | None = None) -> LiveCP:
        cp = self._cps.get(cp_id)
        if cp is None:
            raise UnknownCP(cp_id)
        reason = None if action is None else refusal(action, cp_id, cp.facts)
        if reason is not None:
            raise Conflict(reason)
        return cp

    async def stop_cp(self, cp_id: str, who: Who = CENTRAL) -> CPView:
        cp = self._cp(cp_id, AdminAction.STOP)
        self._repo.set_cp_stopped(cp_id, True)
        cp.record = self._repo.get_cp(cp_id) or cp.record
        cp.facts = cp.facts.with_(admin_stopped=True)
        self._say(f"CP {cp_id} stopped by Central -> {cp.state.caption}")
        self.audit.record(
            AuditAction.CP_BLOCKED,
            actor=who.actor,
            ip=who.ip,
            cp_id=cp_id,
            detail=f"CP {cp_id} put out of service ({cp.state.value})",
        )
        await self._end(cp, EndReason.STOPPED_BY_CENTRAL, tell_engine=False)
        await self.publisher.publish(CpStop(cp_id=cp_id))
        return await self._changed(cp)

    async def resume_cp(self, cp_id: str, who: Who = CENTRAL) -> CPView:
        cp = self._cp(cp_id, AdminAction.RESUME)
        self._repo.set_cp_stopped(cp_id, False)
        cp.facts = cp.facts.with_(admin_stopped=False)
        self._say(f"CP {cp_id} resumed by Central -> {cp.state.value}")
        self.audit.record(
            AuditAction.CP_UNBLOCKED,
            actor=who.actor,
            ip=who.ip,
            cp_id=cp_id,
            detail=f"CP {cp_id} back in service ({cp.state.value})",
        )
        await self._tell_engine_its_stop(cp, resume=True)  # a weather alert may still hold it
        return await self._changed(cp)

    async def stop_all(self, who: Who = CENTRAL) -> BulkOutcome:
        """Stops every CP not yet stopped: the views of those it stopped, and the others, why."""
        return await self._on_all(AdminAction.STOP, lambda cp_id: self.stop_cp(cp_id, who))

    async def resume_all(self, who: Who = CENTRAL) -> BulkOutcome:
        """Resumes every stopped CP: the views of those it resumed, and the others, why."""
        return await self._on_all(AdminAction.RESUME, lambda cp_id: self.resume_cp(cp_id, who))

    async def _on_all(
        self, action: AdminAction, run: Callable[[str], Awaitable[CPView]]
    ) -> BulkOutcome:
        changed: list[CPView] = []
        skipped: list[Skipped] = []
        for cp_id, cp in list(self._cps.items()):
            reason = refusal(action, cp_id, cp.facts)
            if reason is None:
                changed.append(await run(cp_id))
            else:
                skipped.append(Skipped(cp_id, reason))
        return BulkOutcome(tuple(changed), tuple(skipped))

    async def simulate_error(self, cp_id: str, error_type: str = "fault") -> CPView:
        """Seed flow 2: faulted CP, CP_ERROR_SIMULATED to the driver charging there, supply ended."""
        cp = self._cp(cp_id, AdminAction.SIMULATE_ERROR)
        self._repo.set_cp_error_simulated(cp_id, True)
        cp.facts = cp.facts.with_(error_simulated=True)
        message = error_simulated_text(cp_id, error_type)
        driver = cp.session.driver_id if cp.session else None
        cp.affected_driver = driver or cp.affected_driver
        self._say(f"CP {cp_id} error simulated ({error_type}) -> Averiado", "warning")
        await self.publisher.publish(
            CpErrorSimulated(cp_id=cp_id, driver_id=driver, error_type=error_type, message=message)
        )
        await self._end(cp, EndReason.CP_FAULT)
        return await self._changed(cp)

    async def fix_error(self, cp_id: str) -> CPView:
        cp = self._cp(cp_id, AdminAction.FIX_ERROR)
        self._repo.set_cp_error_simulated(cp_id, False)
        cp.facts = cp.facts.with_(error_simulated=False)
        self._say(f"CP {cp_id} error fixed -> {cp.state.value}")
        await self.publisher.publish(
            CpErrorFixed(
                cp_id=cp_id,
                driver_id=cp.affected_driver,
                new_status=cp.state.value,
                message=error_fixed_text(cp_id),
            )
        )
        cp.affected_driver = None
        return await self._changed(cp)

    async def report_status(self, cp_id: str, who: Who = CENTRAL) -> CPView:
        """Asks the CP to report its state now (CP_REPORT_STATUS: an OCPP charger's
        TriggerMessage StatusNotification). Changes nothing here: the answer comes back the way
        the CP's state always does. Conflict when nothing would hear it."""
        cp = self._cp(cp_id, AdminAction.REPORT_STATUS)
        await self._ask(cp, CpReportStatus(cp_id=cp_id), who)
        self._say(status_asked_text(cp_id))
        return self._view(cp)

    async def reset_cp(self, cp_id: str, hard: bool = False, who: Who = CENTRAL) -> CPView:
        """Asks the CP to restart, soft or `hard` (CP_RESET: an OCPP charger's Reset). A supply
        under way ends the way the CP then reports it; Central changes nothing itself.
        Conflict when nothing would hear it."""
        cp = self._cp(cp_id, AdminAction.RESET)
        await self._ask(cp, CpReset(cp_id=cp_id, hard=hard), who)
        self._say(reset_asked_text(cp_id, hard))
        return self._view(cp)

    async def _ask(self, cp: LiveCP, event: CpReportStatus | CpReset, who: Who) -> None:
        """Sends an ask to the CP; Conflict if it could not be sent (no key to seal it with)."""
        delivery = await self.publisher.publish(event)
        log.debug(
            "%s for CP %s (%s at %s): %s", event.event_type, cp.cp_id, who.actor, who.ip, delivery
        )
        if delivery is Delivery.NOT_SENT_NO_KEY:
            raise Conflict(
                f"CP {cp.cp_id} holds no key from Central yet: the request was not sent "
                "(ask again once its Monitor has authenticated)"
            )

    async def register_cp(self, cp_id: str, location: str, price: Decimal) -> CPView:
        """A new CP, Desconectado until its Monitor connects. An id already registered is a
        Conflict: registering never edits (that is `edit_cp`, an explicit action of its own)."""
        record = self._repo.add_cp(cp_id, location, price)
        if record is None:
            raise Conflict(
                f"CP {cp_id} is already registered: nothing changed (edit its location or price instead)"
            )
        cp = self._cps[cp_id] = _live(record, self._repo.get_verifier(cp_id) is not None)
        self._say(f"CP {cp_id} registered ({location}, {price} €/kWh)")
        return await self._changed(cp)

    async def edit_cp(
        self, cp_id: str, location: str | None = None, price: Decimal | None = None
    ) -> CPView:
        """Sets a registered CP's location and/or price. A supply already authorised keeps the
        price it was authorised at; drivers are sent the CP's new status."""
        cp = self._cp(cp_id)
        record = self._repo.update_cp(cp_id, location, price)
        if record is None:
            raise UnknownCP(cp_id)
        cp.record = record
        self._say(f"CP {cp_id} edited: {record.location}, {record.price_eur_per_kwh} €/kWh")
        cp.published = None  # CP_STATUS carries the location and price: publish it again
        return await self._changed(cp)

    # --- the weather office (EV_W, through API_Central) ---------------------------------

    def weather_alerts(self) -> list[CPView]:
        """The CPs under a weather alert."""
        return [self._view(cp) for cp in self._cps.values() if cp.facts.weather_alert]

    async def weather_alert(
        self, cp_id: str, city: str, temperature_c: float, who: Who = CENTRAL
    ) -> tuple[CPView, bool]:
        """EV_W: the CP's city is below 0 °C. The CP goes out of service ("weather alert") at
        once, or, with a session authorised or running, when that session ends normally. A
        repeated alert only updates its reading (False: nothing new); every call is audited."""
        cp = self._cp(cp_id)
        new = not cp.facts.weather_alert
        self._repo.set_weather_alert(cp_id, city, temperature_c)
        cp.record = replace(
            cp.record, weather_alert=True, weather_city=city, weather_temperature_c=temperature_c
        )
        cp.facts = cp.facts.with_(weather_alert=True)
        where = f"{city}, {temperature_c:g} °C"
        self.audit.record(
            AuditAction.WEATHER_ALERT,
            actor=who.actor,
            ip=who.ip,
            cp_id=cp_id,
            detail=f"weather alert for CP {cp_id} ({where})"
            + ("" if new else ": already in force"),
            city=city,
            temperature_c=f"{temperature_c:g}",
        )
        if new:
            if cp.facts.reserved:
                self._say(
                    f"CP {cp_id} weather alert ({where}): out of service once its supply ends",
                    "warning",
                )
            else:
                self._say(f"CP {cp_id} weather alert ({where}) -> {cp.state.value}", "warning")
            if stop_reasons(cp.facts) == (StopReason.WEATHER_ALERT,):
                await self.publisher.publish(CpStop(cp_id=cp_id, reason=StopReason.WEATHER_ALERT))
        return await self._changed(cp), new

    async def weather_cleared(self, cp_id: str, who: Who = CENTRAL) -> CPView:
        """EV_W: above 0 °C again. The CP comes back only if nothing else stops it (an admin
        stop stays). Conflict when the CP has no weather alert."""
        cp = self._cp(cp_id)
        if not cp.facts.weather_alert:
            raise Conflict(f"CP {cp_id} has no weather alert")
        held_by_weather = StopReason.WEATHER_ALERT in stop_reasons(cp.facts)
        city = cp.record.weather_city
        self._repo.set_weather_alert(cp_id, None)
        cp.record = replace(
            cp.record, weather_alert=False, weather_city=None, weather_temperature_c=None
        )
        cp.facts = cp.facts.with_(weather_alert=False)
        self.audit.record(
            AuditAction.WEATHER_CLEARED,
            actor=who.actor,
            ip=who.ip,
            cp_id=cp_id,
            detail=f"weather alert for CP {cp_id} ({city}) cancelled -> {cp.state.value}",
            city=city or "",
        )
        self._say(f"CP {cp_id} weather alert over ({city}) -> {cp.state.value}")
        if held_by_weather:
            await self._tell_engine_its_stop(cp, resume=True)
        return await self._changed(cp)


def _key_notice(cp: LiveCP) -> Answer:
    """A heartbeat's answer: OK, or the CP's key notice (keys revoked: every heartbeat until it
    authenticates again; rekey: once, and the Monitor authenticates again at once)."""
    notice = cp.key_notice
    if notice is None:
        return _OK
    if notice is ErrReason.REKEY:
        cp.rekey = False
    return Answer(False, notice)


def _live(record: CPRecord, registered: bool) -> LiveCP:
    """A CP as Central first holds it: Desconectado, its stored stop, simulated error and key
    revocation kept."""
    facts = CPFacts(
        admin_stopped=record.admin_stopped,
        error_simulated=record.error_simulated,
        keys_revoked=record.keys_revoked,
        weather_alert=record.weather_alert,
    )
    return LiveCP(record, facts, registered=registered)
