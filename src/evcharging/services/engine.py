"""The CP Engine's use cases: the simulated charger's state machine, with no sockets and no Kafka.

Why a service: the same code runs in EV_CP_E (real Kafka publisher, JSON state file, monotonic
clock) and in unit tests (fakes), so every rule below is tested without a broker.

Rules, in one place:

* Every session the Engine takes (an authorisation it holds, or a supply) ends through `_end`,
  which emits exactly one `SupplyEnded`, whatever the cause (unplug, StopSupply, CpStop, KO).
* Events leave through the ordered outbox (`services/outbox.py`; `flush` / `run_outbox`): a transition never waits for
  Kafka, so the KO key and health answers stay instant while the broker is away, and Kafka
  receives the events of a CP in the order they happened.
* A supply's running figures are saved at plug-in and on every tick; once it ends, the record is
  kept (marked ended) until its `SupplyEnded` has been delivered.  An Engine that starts again
  reports whatever is left once, so what was supplied is never lost.
* The CP's key comes from the Monitor (KEYX, then KEY wrapped for that exchange) into the one
  `CpTopicCodec` the program seals and opens its records with; with no key, events wait in the
  outbox (the publisher waits for one).  KEY_DROP (Central revoked the keys): every key dropped,
  a running supply ends (`keys_revoked`; its SUPPLY_ENDED waits for the next key and reaches
  Central as a late final reading), and the CP takes nothing new until a new key comes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from functools import partial
from uuid import UUID

from pydantic import ValidationError

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
from evcharging.domain.cp_state import CPState, StopReason
from evcharging.domain.money import cost, kwh
from evcharging.services.cp_keys import (
    CpTopicCodec,
    Exchange,
    GrantError,
    KeyRing,
    handover_unwrap,
)
from evcharging.services.outbox import Outbox
from evcharging.services.ports import (
    Accepted,
    EngineOutcome,
    EngineRefusal,
    Health,
    Publisher,
    SupplyRecord,
    SupplyStore,
)

log = logging.getLogger(__name__)

MAX_ENERGY_KWH = Decimal(1000)  # the contracts' ceiling for one supply (events.Energy)
_REMEMBERED_SESSIONS = 200  # ended sessions kept to recognise redelivered commands

KEYS_REVOKED_TEXT = "keys revoked: waiting for the Monitor to authenticate again"

Clock = Callable[[], float]
"""Monotonic seconds (time.monotonic in the program, a settable fake in tests)."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    kw: Decimal = Decimal(22)
    speedup: Decimal = Decimal(60)
    supply_seconds: float | None = None  # unplug on its own after this many real seconds
    auto_plug: bool = False
    monitor_timeout: float = 3.0  # the Monitor link is alive if a HEALTH came this recently
    answer_timeout: float = 10.0  # a request at the CP's menu unanswered this long is given up


class EnginePhase(StrEnum):
    """The Engine's own phases; those that are CP states carry the CP state's one name."""

    WAITING_CP_ID = "Waiting for CP id"
    ACTIVADO = CPState.ACTIVADO.value
    AUTHORISED = "Authorised"
    SUMINISTRANDO = CPState.SUMINISTRANDO.value
    PARADO = CPState.PARADO.value
    KO = "KO"


@dataclass(frozen=True, slots=True)
class _Session:
    """A session this Engine holds: authorised, and supplying once `started_at` is set."""

    session_id: UUID
    driver_id: str
    price: Decimal
    started_at: float | None = None
    seq: int = 0
    energy: Decimal = Decimal("0.000")


def energy_after(kw: Decimal, seconds: float, speedup: Decimal) -> Decimal:
    """kW x elapsed x speedup / 3600, to the watt-hour, capped at the contracts' ceiling."""
    raw = kw * Decimal(max(seconds, 0.0)) * speedup / 3600
    return min(kwh(raw), MAX_ENERGY_KWH)


class EngineService:
    """One CP's Engine: health, CP id, Central's commands, the menu's actions, the ticks."""

    def __init__(
        self,
        publisher: Publisher,
        store: SupplyStore,
        clock: Clock,
        config: EngineConfig | None = None,
        *,
        codec: CpTopicCodec | None = None,
    ) -> None:
        """`codec`: the program's sealing of its Kafka records (the publisher's and the
        consumer's); the keys the Monitor hands over go into its ring."""
        self._publisher = publisher
        self.codec = codec or CpTopicCodec(KeyRing())
        self._exchange: tuple[Exchange, str] | None = None  # KEYX's: (ours, the Monitor's key)
        self._keys_revoked = False
        self._store = store
        self._clock = clock
        self.config = config or EngineConfig()
        self._cp_id: str | None = None
        self._ko_reason: str | None = None
        self._stopped = False
        self._stop_reason = StopReason.STOPPED_BY_CENTRAL
        self._central_up: bool | None = None  # None: the Monitor has not said yet
        self._monitor_seen: float | None = None
        self._session: _Session | None = None
        self._records: dict[str, SupplyRecord] = {}
        self._ended: deque[UUID] = deque(maxlen=_REMEMBERED_SESSIONS)
        self._asked: dict[UUID, tuple[str, float]] = {}  # menu requests: id -> (driver, when)
        self._outbox = Outbox(publisher)
        self._last_phase: EnginePhase | None = None
        self.cp_known = asyncio.Event()
        self._changed()

    # --- what others read -------------------------------------------------------------

    @property
    def cp_id(self) -> str | None:
        return self._cp_id

    @property
    def central_up(self) -> bool | None:
        """As the Monitor last said (None: not said yet)."""
        return self._central_up

    @property
    def pending_events(self) -> int:
        return len(self._outbox)

    @property
    def key_version(self) -> int | None:
        """The version of the key the Engine seals with (None: none held)."""
        if self._cp_id is None:
            return None
        key = self.codec.ring.current(self._cp_id)
        return key.version if key is not None else None

    @property
    def keys_revoked(self) -> bool:
        return self._keys_revoked

    def phase(self) -> EnginePhase:
        if self._ko_reason is not None:
            return EnginePhase.KO
        if self._cp_id is None:
            return EnginePhase.WAITING_CP_ID
        if self._stopped or self._keys_revoked:
            return EnginePhase.PARADO
        if self._session is None:
            return EnginePhase.ACTIVADO
        if self._session.started_at is None:
            return EnginePhase.AUTHORISED
        return EnginePhase.SUMINISTRANDO

    def monitor_alive(self) -> bool:
        seen = self._monitor_seen
        return seen is not None and self._clock() - seen <= self.config.monitor_timeout

    def status_line(self) -> str:
        """What the CP's screen says now."""
        text = self._phase_text()
        if self._central_up is False:
            text += " | Cannot connect to CENTRAL"
        if self._cp_id is not None and not self.monitor_alive():
            text += " | no Monitor link"
        if self._cp_id is not None and not self._keys_revoked and self.key_version is None:
            text += " | no key yet (events wait for it)"
        return text

    def _phase_text(self) -> str:
        phase, s = self.phase(), self._session
        if phase is EnginePhase.KO:
            return f"KO ({self._ko_reason})"
        if phase is EnginePhase.WAITING_CP_ID:
            return "Waiting for CP id (from the Monitor)"
        if phase is EnginePhase.PARADO:
            if self._keys_revoked:
                return f"{CPState.PARADO} - {KEYS_REVOKED_TEXT}"
            if self._stop_reason is StopReason.STOPPED_BY_CENTRAL:
                return f"{CPState.PARADO} - {CPState.PARADO.caption}"
            return f"{CPState.PARADO} - {CPState.PARADO.caption} ({self._stop_reason})"
        if s is None:
            return "Activado (idle)"
        if phase is EnginePhase.AUTHORISED:
            return f"Authorised: waiting for plug-in, driver {s.driver_id}"
        amount = cost(s.energy, s.price)
        return (
            f"Suministrando {self.config.kw} kW, {s.energy} kWh, {amount} €, driver {s.driver_id}"
        )

    # --- the Monitor link -------------------------------------------------------------

    def health_check(self) -> Health:
        """A HEALTH from the Monitor: answers it and proves the link alive."""
        self._monitor_seen = self._clock()
        return Health(self._ko_reason)

    def monitor_disconnected(self) -> None:
        self._monitor_seen = None
        self._exchange = None

    def key_exchange(self, monitor_public: str) -> str | EngineRefusal:
        """KEYX: a fresh X25519 exchange for the KEY that follows; our public key."""
        if self._cp_id is None:
            return self._refuse("key exchange", "CP id not known yet (SET_CP first)")
        exchange = Exchange()
        self._exchange = (exchange, monitor_public)
        return exchange.public

    def install_key(self, cp_id: str, version: int, wrapped: str) -> EngineOutcome:
        """KEY: the CP's key, unwrapped with the last KEYX's exchange (used once); a key the
        Engine already holds is accepted again (idempotent)."""
        pending, self._exchange = self._exchange, None
        if self._cp_id is None or cp_id != self._cp_id:
            mine = f"CP {self._cp_id}" if self._cp_id else "no CP yet"
            return self._refuse(f"key for CP {cp_id}", f"this Engine is {mine}")
        if pending is None:
            return self._refuse(f"key v{version}", "no key exchange in progress (KEYX first)")
        if version < 1 or self.codec.ring.retired(cp_id, version):
            return self._refuse(f"key v{version}", "an old or revoked key version")
        try:
            key = handover_unwrap(cp_id, version, wrapped, *pending)
        except GrantError as exc:
            return self._refuse(f"key v{version}", str(exc))
        ring = self.codec.ring
        if ring.get(cp_id, version) == key:
            return Accepted()
        if ring.current(cp_id) is None:  # a fresh or revoked ring: older keys can never come
            ring.forget_floor(cp_id, version - 1)
        self.codec.guard.forget(cp_id, ring.install(key))
        if self._keys_revoked:
            self._keys_revoked = False
            log.info("cp=%s: new key v%s from the Monitor (authenticated again)", cp_id, version)
        else:
            log.info("cp=%s: key v%s from the Monitor", cp_id, version)
        self._changed()
        return Accepted()

    def drop_keys(self, cp_id: str) -> EngineOutcome:
        """KEY_DROP: Central revoked the CP's keys; a running supply ends (its SUPPLY_ENDED
        waits in the outbox for the next key). Idempotent."""
        if cp_id != self._cp_id:
            mine = f"CP {self._cp_id}" if self._cp_id else "no CP yet"
            return self._refuse(f"key drop for CP {cp_id}", f"this Engine is {mine}")
        self._exchange = None
        self.codec.revoked(cp_id)
        if self._keys_revoked:
            return Accepted()
        self._keys_revoked = True
        log.warning(
            "cp=%s: %s (Central revoked them): a running supply ends, events wait for the next key",
            cp_id,
            KEYS_REVOKED_TEXT,
        )
        self._end(SupplyEndReason.KEYS_REVOKED)
        self._changed()
        return Accepted()

    def set_cp_id(self, cp_id: str) -> EngineOutcome:
        """SET_CP: the id Central accepted; learnt once, then leftovers of a crash are reported."""
        if self._cp_id == cp_id:
            return Accepted()
        if self._cp_id is not None:
            log.warning(
                "cp=%s: SET_CP#%s refused: this Engine is already CP %s",
                self._cp_id,
                cp_id,
                self._cp_id,
            )
            return EngineRefusal(f"this Engine is already CP {self._cp_id}")
        self._cp_id = cp_id
        log.info("cp=%s: CP id set by the Monitor (Central accepted the CP)", cp_id)
        self._report_leftovers(cp_id)
        self.cp_known.set()
        self._changed()
        return Accepted()

    def set_central(self, up: bool) -> None:
        """CENTRAL#UP/DOWN from the Monitor."""
        if self._central_up == up:
            return
        self._central_up = up
        if up:
            log.info("cp=%s: CENTRAL reachable (per the Monitor)", self._cp_id)
        else:
            log.warning(
                "cp=%s: Cannot connect to CENTRAL (per the Monitor): a running supply goes on, "
                "no new requests",
                self._cp_id,
            )

    # --- the menu ---------------------------------------------------------------------

    def plug(self) -> EngineOutcome:
        s = self._session
        if s is None or self.phase() is not EnginePhase.AUTHORISED:
            return self._refuse("plug in", "no authorised supply waiting for a vehicle")
        assert self._cp_id is not None
        self._session = s = replace(s, started_at=self._clock())
        self._save_record(s)
        self._emit(SupplyStarted(cp_id=self._cp_id, session_id=s.session_id, driver_id=s.driver_id))
        log.info(
            "cp=%s driver=%s session=%s: vehicle plugged in, supply started",
            self._cp_id,
            s.driver_id,
            s.session_id,
        )
        self._changed()
        return Accepted()

    def unplug(self) -> EngineOutcome:
        if self.phase() is not EnginePhase.SUMINISTRANDO:
            return self._refuse("unplug", "no vehicle is plugged in")
        self._end(SupplyEndReason.UNPLUGGED)
        self._changed()
        return Accepted()

    def report_ko(self, reason: str = "KO reported at the CP") -> None:
        """The KO key: health turns KO and a running supply ends at once."""
        if self._ko_reason is not None:
            log.info("cp=%s: already KO (%s)", self._cp_id, self._ko_reason)
            return
        self._ko_reason = reason
        log.warning(
            "cp=%s: KO (%s): the Monitor is told at its next health check", self._cp_id, reason
        )
        self._end(SupplyEndReason.CP_FAULT)
        self._changed()

    def recover(self) -> None:
        if self._ko_reason is None:
            log.info("cp=%s: not KO, nothing to recover", self._cp_id)
            return
        self._ko_reason = None
        log.info("cp=%s: recovered, health OK", self._cp_id)
        self._changed()

    def request_supply(self, driver_id: str) -> EngineOutcome:
        """The CP menu's manual request: sent to Central only when it can possibly be served."""
        refusal = self._why_no_request()
        if refusal is not None:
            return self._refuse(f"request for driver {driver_id}", refusal)
        assert self._cp_id is not None
        try:
            request = AuthorizationRequest(driver_id=driver_id, cp_id=self._cp_id, origin="cp")
        except ValidationError:
            return self._refuse(f"request for driver {driver_id!r}", "invalid driver id")
        self._emit(request)
        self._asked[request.request_id] = (driver_id, self._clock())
        log.info(
            "cp=%s driver=%s: supply requested at the CP, waiting for Central (request=%s)",
            self._cp_id,
            driver_id,
            request.request_id,
        )
        return Accepted()

    def _why_no_request(self) -> str | None:
        if self._cp_id is None:
            return "CP id not known yet (waiting for the Monitor)"
        if not self.monitor_alive():
            return "no Monitor link: the CP accepts no supplies"
        if self._central_up is None:
            return "Central not confirmed by the Monitor yet"
        if not self._central_up:
            return "Cannot connect to CENTRAL"
        phase = self.phase()
        if phase is not EnginePhase.ACTIVADO:
            return f"CP not available ({self._phase_text()})"
        return None

    # --- Central's commands (cp-commands) ---------------------------------------------

    def on_supply_authorised(self, ev: SupplyAuthorised) -> None:
        who = f"cp={ev.cp_id} driver={ev.driver_id} session={ev.session_id}"
        if not self._mine(ev.cp_id, ev.session_id, "SUPPLY_AUTHORISED"):
            return
        if self._session is not None and self._session.session_id == ev.session_id:
            log.info("%s: authorisation already held (redelivered), ignored", who)
            return
        if self.phase() is not EnginePhase.ACTIVADO:
            log.warning("%s: authorisation ignored: %s", who, self._phase_text())
            return
        self._session = _Session(ev.session_id, ev.driver_id, ev.price_eur_per_kwh)
        self._asked = {rid: a for rid, a in self._asked.items() if a[0] != ev.driver_id}
        log.info("%s: authorised at %s €/kWh, waiting for plug-in", who, ev.price_eur_per_kwh)
        self._changed()
        if self.config.auto_plug:
            self.plug()

    def on_request_denied(self, ev: RequestDenied) -> None:
        """Central's refusal of a request typed at this CP's menu: the CP's screen says why."""
        if not self._mine(ev.cp_id, None, "REQUEST_DENIED"):
            return
        if self._asked.pop(ev.request_id, None) is None:
            log.info(
                "cp=%s driver=%s: denial of an earlier request (%s)",
                ev.cp_id,
                ev.driver_id,
                ev.reason,
            )
            return
        log.warning(
            "cp=%s driver=%s: request DENIED by CENTRAL: %s", ev.cp_id, ev.driver_id, ev.reason
        )

    def _give_up_requests(self) -> None:
        """A menu request Central never answered is said so once, then forgotten."""
        limit = self._clock() - self.config.answer_timeout
        for request_id, (driver_id, at) in list(self._asked.items()):
            if at < limit:
                del self._asked[request_id]
                log.warning(
                    "cp=%s driver=%s: No answer from CENTRAL to the request (%gs)",
                    self._cp_id,
                    driver_id,
                    self.config.answer_timeout,
                )

    def on_stop_supply(self, ev: StopSupply) -> None:
        who = f"cp={ev.cp_id} session={ev.session_id}"
        if not self._mine(ev.cp_id, ev.session_id, "STOP_SUPPLY"):
            return
        if self._session is None or self._session.session_id != ev.session_id:
            log.info("%s: STOP_SUPPLY (%s) for a session not running here, ignored", who, ev.reason)
            return
        log.info("%s: Central stops the supply (%s)", who, ev.reason)
        self._end(ev.reason)
        self._changed()

    def on_cp_stop(self, ev: CpStop) -> None:
        if not self._mine(ev.cp_id, None, "CP_STOP"):
            return
        self._stopped = True
        self._stop_reason = ev.reason
        log.warning("cp=%s: %s: Parado - Out of Order", ev.cp_id, ev.reason)
        self._end(SupplyEndReason.STOPPED_BY_CENTRAL)
        self._changed()

    def on_cp_resume(self, ev: CpResume) -> None:
        if not self._mine(ev.cp_id, None, "CP_RESUME"):
            return
        if self._stopped:
            self._stopped = False
            log.info("cp=%s: resumed by Central", ev.cp_id)
        self._changed()

    def on_report_status(self, ev: CpReportStatus) -> None:
        """The admin asks for the CP's state: the screen shows it (the Monitor's heartbeats
        already carry the Engine's health to Central every second)."""
        if self._mine(ev.cp_id, None, "CP_REPORT_STATUS"):
            log.info("cp=%s: status asked by Central: %s", ev.cp_id, self.status_line())

    def on_reset(self, ev: CpReset) -> None:
        """A reset is a real charger's restart (OCPP Reset); the simulated Engine has no
        firmware to restart, so it says so and changes nothing."""
        if self._mine(ev.cp_id, None, "CP_RESET"):
            log.info(
                "cp=%s: %s reset asked by Central: nothing to restart in a simulated Engine",
                ev.cp_id,
                "hard" if ev.hard else "soft",
            )

    def _mine(self, cp_id: str, session_id: UUID | None, what: str) -> bool:
        if cp_id != self._cp_id:
            log.warning("cp=%s: %s for cp=%s ignored", self._cp_id, what, cp_id)
            return False
        if session_id is not None and session_id in self._ended:
            log.info("cp=%s session=%s: %s for an ended session ignored", cp_id, session_id, what)
            return False
        return True

    # --- time -------------------------------------------------------------------------

    def tick(self) -> None:
        """Once a tick: the running supply's reading, saved and sent; ends it when it is due."""
        if self._asked:
            self._give_up_requests()
        s = self._session
        if s is None or s.started_at is None or self._cp_id is None:
            return
        elapsed = self._clock() - s.started_at
        energy = max(s.energy, energy_after(self.config.kw, elapsed, self.config.speedup))
        self._session = s = replace(s, seq=s.seq + 1, energy=energy)
        self._save_record(s)
        amount = cost(energy, s.price)
        self._emit(
            CpTelemetry(
                cp_id=self._cp_id,
                session_id=s.session_id,
                driver_id=s.driver_id,
                seq=s.seq,
                kw=self.config.kw,
                energy_kwh=energy,
                amount_eur=amount,
            )
        )
        log.info(
            "cp=%s driver=%s session=%s: Suministrando %s kW, %s kWh, %s €",
            self._cp_id,
            s.driver_id,
            s.session_id,
            self.config.kw,
            energy,
            amount,
        )
        self._end_if_due(elapsed, energy)

    def _end_if_due(self, elapsed: float, energy: Decimal) -> None:
        if energy >= MAX_ENERGY_KWH:
            log.info("cp=%s: energy ceiling reached, ending the supply", self._cp_id)
            self._end(SupplyEndReason.ENERGY_LIMIT_REACHED)
        elif self.config.supply_seconds is not None and elapsed >= self.config.supply_seconds:
            log.info(
                "cp=%s: %ss of supply done, unplugging", self._cp_id, self.config.supply_seconds
            )
            self._end(SupplyEndReason.UNPLUGGED)
        else:
            return
        self._changed()

    # --- ending, and surviving a crash ------------------------------------------------

    def _end(self, reason: SupplyEndReason) -> None:
        """The one way a session held here ends: exactly one SupplyEnded."""
        s, cp_id = self._session, self._cp_id
        if s is None or cp_id is None:
            return
        energy = s.energy
        if s.started_at is not None:
            if (
                reason is SupplyEndReason.UNPLUGGED
            ):  # the meter's last reading is taken at the unplug itself
                elapsed = self._clock() - s.started_at
                energy = max(energy, energy_after(self.config.kw, elapsed, self.config.speedup))
            # Any other end (stop, fault) halts the meter at its last tick, the reading Central has.
            self._save_record(replace(s, energy=energy), ended_reason=reason)
        self._session = None
        self._ended.append(s.session_id)
        key = str(s.session_id)
        self._emit(
            SupplyEnded(
                cp_id=cp_id,
                session_id=s.session_id,
                driver_id=s.driver_id,
                energy_kwh=energy,
                reason=reason,
            ),
            delivered=partial(self._forget, key),
        )
        log.info(
            "cp=%s driver=%s session=%s: supply ended (%s): %s kWh, %s €",
            cp_id,
            s.driver_id,
            s.session_id,
            reason,
            energy,
            cost(energy, s.price),
        )

    def _report_leftovers(self, cp_id: str) -> None:
        for rec in self._store.load(cp_id):
            reason = rec.ended_reason or SupplyEndReason.ENGINE_RESTARTED
            self._records[rec.session_id] = replace(rec, ended_reason=reason)
            session_id = UUID(rec.session_id)
            self._ended.append(session_id)
            log.warning(
                "cp=%s driver=%s session=%s: supply left over from an earlier run, reporting its "
                "end (%s): %s kWh",
                cp_id,
                rec.driver_id,
                rec.session_id,
                reason,
                rec.energy_kwh,
            )
            self._emit(
                SupplyEnded(
                    cp_id=cp_id,
                    session_id=session_id,
                    driver_id=rec.driver_id,
                    energy_kwh=rec.energy_kwh,
                    reason=reason,
                ),
                delivered=partial(self._forget, rec.session_id),
            )
        self._persist()

    def _save_record(self, s: _Session, ended_reason: SupplyEndReason | None = None) -> None:
        key = str(s.session_id)
        self._records[key] = SupplyRecord(key, s.driver_id, s.price, s.energy, s.seq, ended_reason)
        self._persist()

    def _forget(self, session_id: str) -> None:
        if self._records.pop(session_id, None) is not None:
            self._persist()

    def _persist(self) -> None:
        if self._cp_id is not None:
            self._store.save(self._cp_id, list(self._records.values()))

    # --- the outbox -------------------------------------------------------------------

    def _emit(self, event: Event, delivered: Callable[[], None] | None = None) -> None:
        self._outbox.emit(event.model_copy(update={"source": f"EV_CP_E/{self._cp_id}"}), delivered)

    async def flush(self) -> None:
        """Publish everything pending, in order (shutdown, tests)."""
        await self._outbox.flush()

    async def run_outbox(self) -> None:
        """Background task of the program: deliver events as soon as they are emitted."""
        await self._outbox.run()

    # --- helpers ----------------------------------------------------------------------

    def _refuse(self, what: str, reason: str) -> EngineRefusal:
        log.warning("cp=%s: %s refused: %s", self._cp_id, what, reason)
        return EngineRefusal(reason)

    def _changed(self) -> None:
        phase = self.phase()
        if phase is self._last_phase:
            return
        self._last_phase = phase
        log.info("cp=%s: state: %s", self._cp_id, self.status_line())
