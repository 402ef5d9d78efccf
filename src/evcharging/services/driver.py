"""The Driver's use cases, apart from Kafka and the terminal.

One `DriverService` serves any number of driver ids (the terminal app serves one, a web dashboard
may serve many).  It sends requests and stops through a `Publisher` port, is fed Central's events
through `handle`, keeps per-driver state and the public board of CPs, and tells its observers of
every change as an `Update`.  Time is injected (`sleep`) so that the pause between services
(mechanic 12) and the answer timeout are tested without waiting.

The life of one service: `request` -> Central's answer (denied: the service ends) -> authorised ->
supplying -> the ticket ends it.  With no answer within `answer_timeout` the service fails ("No
answer from CENTRAL").  An authorised supply waits for its ticket as long as needed; a CP error
on its CP is shown at once, and if no ticket follows within `answer_timeout` the service ends as
failed (a ticket that comes later is still shown, as the ticket of an earlier session).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple
from uuid import UUID

from evcharging.contracts.events import (
    AuthorizationRequest,
    AuthorizationResponse,
    ChargingProgress,
    ChargingStarted,
    ChargingStopped,
    ChargingTicket,
    CpErrorFixed,
    CpErrorSimulated,
    CpStatus,
    DriverNotice,
    DriverStatus,
    DriverStatusRequest,
    Event,
)
from evcharging.contracts.fields import is_valid_id
from evcharging.domain.money import euros, kwh
from evcharging.domain.session import EndReason
from evcharging.services.ports import DriverRefusal, Publisher

log = logging.getLogger(__name__)

NO_ANSWER_TEXT = "No answer from CENTRAL (is it running?)"
NO_NEWS_TEXT = "No news from CENTRAL"

Sleep = Callable[[float], Coroutine[Any, Any, None]]
Observer = Callable[["Update"], None]


def state_text(status: CpStatus) -> str:
    """A CP's state as a driver reads it: "Parado (weather alert)" says why a Parado CP is out
    of service (CP_STATUS's `stop_reason`; a Central before issue 15 sends none)."""
    if status.stop_reason:
        return f"{status.state} ({status.stop_reason})"
    return str(status.state)


def parse_services(text: str) -> list[str]:
    """A services file: one CP id per line; blank lines and `#` comments are skipped."""
    cp_ids = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not is_valid_id(line):
            raise ValueError(f"line {number}: {raw.strip()!r} is not a CP id")
        cp_ids.append(line)
    return cp_ids


class DriverPhase(StrEnum):
    IDLE = "idle"
    REQUESTED = "requested"  # request sent, waiting for Central's answer
    AUTHORISED = "authorised"  # may plug in at the CP
    SUPPLYING = "supplying"


class Kind(StrEnum):
    """What an `Update` reports; `describe` turns each into one line."""

    REQUEST_SENT = "request_sent"
    AUTHORISED = "authorised"
    DENIED = "denied"
    NO_ANSWER = "no_answer"
    SUPPLYING = "supplying"
    PROGRESS = "progress"
    TICKET = "ticket"
    CP_ERROR = "cp_error"
    CP_FIXED = "cp_fixed"
    CP_STATE = "cp_state"
    SERVICE_FAILED = "service_failed"
    STOP_SENT = "stop_sent"
    NOTICE = "notice"
    REFUSED = "refused"
    NEXT = "next"
    SERVICES_DONE = "services_done"
    BOARD = "board"
    RESUMED = "resumed"  # a supply this driver has open, learnt from Central at start
    UNKNOWN_DRIVER = "unknown_driver"
    CENTRAL_SILENT = "central_silent"  # mid-supply, nothing from Central for a while
    CENTRAL_BACK = "central_back"


class ServiceOutcome(StrEnum):
    """How a service ended."""

    TICKET = "ticket"
    DENIED = "denied"
    NO_ANSWER = "no_answer"
    ERROR = "error"
    REFUSED = "refused"


@dataclass(frozen=True)
class Figures:
    kw: Decimal
    energy_kwh: Decimal
    amount_eur: Decimal


@dataclass(frozen=True)
class Ticket:
    """`earlier`: not the ticket of the current service (e.g. it ended while this app was down)."""

    session_id: UUID
    cp_id: str
    energy_kwh: Decimal
    price_eur_per_kwh: Decimal
    amount_eur: Decimal
    end_reason: EndReason
    balance_eur: Decimal
    ended_at: datetime
    earlier: bool = False

    @property
    def interrupted(self) -> bool:
        """Cut short (CP fault, Monitor lost, stopped by Central): said so, never "completed"."""
        return self.end_reason.interrupted

    @property
    def outcome(self) -> str:
        """How the supply ended, in words: "charging completed" or "charging interrupted (why)"."""
        if self.interrupted:
            return f"charging interrupted ({self.end_reason.words})"
        return "charging completed"

    @classmethod
    def of(cls, ev: ChargingTicket, *, earlier: bool) -> Ticket:
        return cls(
            ev.session_id,
            ev.cp_id,
            ev.energy_kwh,
            ev.price_eur_per_kwh,
            ev.amount_eur,
            ev.end_reason,
            ev.balance_eur,
            ev.ended_at,
            earlier,
        )


@dataclass(frozen=True)
class Update:
    """One change, for observers: a terminal prints it, a web page pushes it."""

    kind: Kind
    driver_id: str | None = None
    cp_id: str | None = None
    session_id: UUID | None = None
    message: str = ""
    level: str = "info"
    figures: Figures | None = None
    ticket: Ticket | None = None
    count: int | None = None


@dataclass(frozen=True)
class ServiceResult:
    driver_id: str
    cp_id: str
    outcome: ServiceOutcome
    reason: str = ""
    ticket: Ticket | None = None


@dataclass
class DriverState:
    """What one driver sees.  Read it, do not change it: only the service does."""

    driver_id: str
    phase: DriverPhase = DriverPhase.IDLE
    cp_id: str | None = None  # the CP of the current service, or of the last one when idle
    request_id: UUID | None = None
    session_id: UUID | None = None
    price_eur_per_kwh: Decimal | None = None
    figures: Figures | None = None
    cp_error: str | None = None
    last_ticket: Ticket | None = None
    balance_eur: Decimal | None = None
    known: bool | None = None  # as Central last said (None: not asked or not answered yet)
    central_silent: bool = False  # mid-supply, no news from Central for `silence_timeout`
    notifications: deque[Update] = field(default_factory=lambda: deque(maxlen=100))

    @property
    def busy(self) -> bool:
        return self.phase is not DriverPhase.IDLE


@dataclass
class _Track:
    """Per-driver machinery behind the state: the running service's future and its tasks."""

    done: asyncio.Future[ServiceResult] | None = None
    timer: asyncio.Task[None] | None = None
    sending: asyncio.Task[None] | None = None
    silence: asyncio.Task[None] | None = None  # fires when Central goes quiet mid-supply
    # Set while the driver's status is being asked of Central at start: services wait for it, so
    # a supply left open (e.g. by a crash) is followed to its end before the next request.
    syncing: asyncio.Future[bool] | None = None
    # The request whose REQUEST_SENT was shown: by its ack, or by Central's answer beating the ack.
    shown_sent: UUID | None = None
    # (session, energy): a corrected ticket (a final reading after close) is shown; a repeat is not.
    ticketed: deque[tuple[UUID, Decimal]] = field(default_factory=lambda: deque(maxlen=200))
    abandoned: deque[UUID] = field(default_factory=lambda: deque(maxlen=20))


class _Started(NamedTuple):
    request_id: UUID
    done: asyncio.Future[ServiceResult]
    sending: asyncio.Task[None]


_QUIET = {Kind.PROGRESS, Kind.BOARD}  # too frequent for the per-driver history


class DriverService:
    def __init__(
        self,
        publisher: Publisher,
        *,
        answer_timeout: float = 10.0,
        silence_timeout: float = 5.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._publisher = publisher
        self.answer_timeout = answer_timeout
        self.silence_timeout = silence_timeout
        self._sleep = sleep
        self._drivers: dict[str, DriverState] = {}
        self._tracks: dict[str, _Track] = {}
        self._board: dict[str, CpStatus] = {}
        self._observers: list[Observer] = []
        self._queues: list[asyncio.Queue[Update]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: Mapping[type[Event], Callable[[Any], Coroutine[Any, Any, None]]] = {
            AuthorizationResponse: self._on_answer,
            ChargingStarted: self._on_started,
            ChargingProgress: self._on_progress,
            ChargingTicket: self._on_ticket,
            CpErrorSimulated: self._on_cp_error,
            CpErrorFixed: self._on_cp_fixed,
            DriverNotice: self._on_notice,
            DriverStatus: self._on_driver_status,
            CpStatus: self._on_status,
        }

    # --- drivers and board ---------------------------------------------------------------

    def add_driver(self, driver_id: str) -> DriverState:
        """Serve `driver_id` (idempotent); events for drivers not added are ignored."""
        if not is_valid_id(driver_id):
            raise ValueError(f"{driver_id!r} is not a valid driver id")
        if driver_id not in self._drivers:
            self._drivers[driver_id] = DriverState(driver_id)
            self._tracks[driver_id] = _Track()
        return self._drivers[driver_id]

    @property
    def driver_ids(self) -> list[str]:
        return list(self._drivers)

    def state(self, driver_id: str) -> DriverState:
        return self._drivers[driver_id]

    @property
    def handled_events(self) -> frozenset[type[Event]]:
        return frozenset(self._handlers)

    @property
    def board(self) -> Mapping[str, CpStatus]:
        return dict(self._board)

    def available_cps(self) -> list[CpStatus]:
        return sorted((s for s in self._board.values() if s.available), key=lambda s: s.cp_id)

    # --- observers -----------------------------------------------------------------------

    def observe(self, fn: Observer) -> Callable[[], None]:
        """Call `fn` on every update; returns the function that stops it."""
        self._observers.append(fn)
        return lambda: self._observers.remove(fn)

    def subscribe(self, maxsize: int = 1000) -> asyncio.Queue[Update]:
        """A queue of updates for one subscriber (e.g. a web socket); the oldest go if it lags."""
        queue: asyncio.Queue[Update] = asyncio.Queue(maxsize)
        self._queues.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Update]) -> None:
        if queue in self._queues:
            self._queues.remove(queue)

    def _emit(self, update: Update) -> None:
        if update.driver_id in self._drivers and update.kind not in _QUIET:
            self._drivers[update.driver_id].notifications.append(update)
        for fn in list(self._observers):
            try:
                fn(update)
            except Exception:  # one broken view must not stop the others or the service
                log.exception("observer %r failed on %s", fn, update.kind)
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(update)

    # --- commands ------------------------------------------------------------------------

    async def request(self, driver_id: str, cp_id: str) -> UUID | DriverRefusal:
        """Ask Central for a supply; returns once sent (or failed), the answer comes as events."""
        await self._synced(driver_id)
        started = self._begin(driver_id, cp_id)
        if isinstance(started, DriverRefusal):
            return started
        either: list[asyncio.Future[Any]] = [started.sending, started.done]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        return started.request_id

    async def serve(self, driver_id: str, cp_id: str) -> ServiceResult:
        """One whole service: waits for one already running, requests, returns how it ended."""
        await self._synced(driver_id)
        await self._idle(driver_id)
        started = self._begin(driver_id, cp_id)
        if isinstance(started, DriverRefusal):
            return ServiceResult(driver_id, cp_id, ServiceOutcome.REFUSED, started.reason)
        return await asyncio.shield(started.done)

    async def run_services(
        self, driver_id: str, cp_ids: Iterable[str], pause: float = 4.0
    ) -> list[ServiceResult]:
        """Mechanic 12: each service in turn, `pause` seconds after the previous one ended."""
        cp_ids = list(cp_ids)
        results: list[ServiceResult] = []
        for number, cp_id in enumerate(cp_ids, start=1):
            if results:
                self._emit(
                    Update(
                        Kind.NEXT,
                        driver_id,
                        cp_id,
                        message=f"in {pause:g}s ({number}/{len(cp_ids)})",
                    )
                )
                await self._sleep(pause)
            results.append(await self.serve(driver_id, cp_id))
        self._emit(Update(Kind.SERVICES_DONE, driver_id, count=len(results)))
        return results

    async def stop(self, driver_id: str) -> DriverRefusal | None:
        """Seed flow 1: the driver stops its own supply; Central answers with the ticket."""
        st = self.add_driver(driver_id)
        if st.phase not in (DriverPhase.AUTHORISED, DriverPhase.SUPPLYING) or st.cp_id is None:
            return self._refuse(st, None, "no supply in progress to stop")
        event = ChargingStopped(driver_id=driver_id, cp_id=st.cp_id, session_id=st.session_id)
        await self._publisher.publish(event)
        self._emit(Update(Kind.STOP_SENT, driver_id, event.cp_id, event.session_id))
        return None

    def sync_soon(self, driver_id: str, ready: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Once `ready` (the driver's messages are being read), ask Central what it knows of the
        driver: unknown drivers are said so, and a supply it has open is taken up (shown with its
        figures, stoppable, followed to its ticket). Requests and services wait for the answer, or
        for `answer_timeout` without one (Central down: they go on and are answered, or not)."""
        st = self.add_driver(driver_id)
        track = self._tracks[driver_id]
        if track.syncing is not None and not track.syncing.done():
            return
        track.syncing = asyncio.get_running_loop().create_future()
        self._spawn(self._sync(st, track.syncing, ready), "sync")

    async def _sync(
        self,
        st: DriverState,
        answered: asyncio.Future[bool],
        ready: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        try:
            await ready()
            await self._publisher.publish(DriverStatusRequest(driver_id=st.driver_id))
            deadline = self._spawn(self._sync_deadline(st, answered), "sync-deadline")
            await asyncio.wait([answered])
            deadline.cancel()
        finally:
            if not answered.done():
                answered.set_result(False)

    async def _sync_deadline(self, st: DriverState, answered: asyncio.Future[bool]) -> None:
        await self._sleep(self.answer_timeout)
        if not answered.done():
            log.info("driver=%s: no status from CENTRAL yet; going on", st.driver_id)
            answered.set_result(False)

    async def _synced(self, driver_id: str) -> None:
        track = self._tracks.get(driver_id)
        if track is not None and track.syncing is not None and not track.syncing.done():
            await asyncio.shield(track.syncing)

    async def close(self) -> None:
        """Cancel the timers and pending sends (on shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for track in self._tracks.values():
            if track.done is not None and not track.done.done():
                track.done.cancel()

    def _refuse(self, st: DriverState, cp_id: str | None, reason: str) -> DriverRefusal:
        self._emit(Update(Kind.REFUSED, st.driver_id, cp_id, message=reason, level="warning"))
        return DriverRefusal(reason)

    async def _idle(self, driver_id: str) -> None:
        track = self._tracks.get(driver_id)
        while track is not None and track.done is not None and not track.done.done():
            await asyncio.shield(track.done)

    def _begin(self, driver_id: str, cp_id: str) -> _Started | DriverRefusal:
        st = self.add_driver(driver_id)
        if not is_valid_id(cp_id):
            return self._refuse(st, None, f"{cp_id!r} is not a valid CP id")
        if st.busy:
            return self._refuse(st, cp_id, f"a service is already in progress at {st.cp_id}")
        event = AuthorizationRequest(driver_id=driver_id, cp_id=cp_id)
        st.phase, st.cp_id, st.request_id = DriverPhase.REQUESTED, cp_id, event.request_id
        st.session_id = st.price_eur_per_kwh = st.figures = st.cp_error = None
        track = self._tracks[driver_id]
        track.done = asyncio.get_running_loop().create_future()
        track.timer = self._spawn(self._answer_deadline(st, event.request_id), "answer-timeout")
        track.sending = self._spawn(self._send_request(st, event), "send-request")
        return _Started(event.request_id, track.done, track.sending)

    async def _send_request(self, st: DriverState, event: AuthorizationRequest) -> None:
        await self._publisher.publish(event)
        if st.request_id == event.request_id:
            self._show_sent(st, event.request_id, event.cp_id)

    def _show_sent(self, st: DriverState, request_id: UUID, cp_id: str) -> None:
        """REQUEST_SENT once per request, before its answer even when the answer beats the ack."""
        track = self._tracks[st.driver_id]
        if track.shown_sent != request_id:
            track.shown_sent = request_id
            self._emit(Update(Kind.REQUEST_SENT, st.driver_id, cp_id))

    async def _answer_deadline(self, st: DriverState, request_id: UUID) -> None:
        await self._sleep(self.answer_timeout)
        if st.phase is DriverPhase.REQUESTED and st.request_id == request_id:
            self._tracks[st.driver_id].abandoned.append(request_id)
            update = Update(Kind.NO_ANSWER, st.driver_id, st.cp_id, message=NO_ANSWER_TEXT)
            self._finish(st, ServiceOutcome.NO_ANSWER, NO_ANSWER_TEXT)
            self._emit(update)

    async def _error_deadline(self, st: DriverState, session_id: UUID | None) -> None:
        await self._sleep(self.answer_timeout)
        if st.busy and st.session_id == session_id:
            reason = f"CP error ({st.cp_error}) and no ticket within {self.answer_timeout:g}s"
            update = Update(Kind.SERVICE_FAILED, st.driver_id, st.cp_id, session_id, reason)
            self._finish(st, ServiceOutcome.ERROR, reason)
            self._emit(update)

    def _finish(
        self, st: DriverState, outcome: ServiceOutcome, reason: str, ticket: Ticket | None = None
    ) -> None:
        """End the current service: back to idle, its waiters get the result."""
        result = ServiceResult(st.driver_id, st.cp_id or "", outcome, reason, ticket)
        st.phase, st.request_id, st.session_id = DriverPhase.IDLE, None, None
        st.central_silent = False
        track = self._tracks[st.driver_id]
        for task in (track.timer, track.sending, track.silence):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()
        track.timer = track.sending = track.silence = None
        if track.done is not None and not track.done.done():
            track.done.set_result(result)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"driver-service-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    # --- events --------------------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        """Apply one event from Central (central-events, or the cp-status board)."""
        handler = self._handlers.get(type(event))
        if handler is None:
            log.debug(
                "%s id=%s is not for the driver app, ignored", event.event_type, event.event_id
            )
            return
        await handler(event)

    def _mine(self, event: Event, driver_id: str | None) -> DriverState | None:
        st = self._drivers.get(driver_id) if driver_id is not None else None
        if st is None:
            log.debug("%s for driver=%s: not served here, ignored", event.event_type, driver_id)
        else:
            self._news(st)
        return st

    def _news(self, st: DriverState) -> None:
        """Central spoke to this driver: a silence shown is over; mid-supply, the next one is
        watched for (progress comes every second while energy flows)."""
        track = self._tracks[st.driver_id]
        if track.silence is not None and track.silence is not asyncio.current_task():
            track.silence.cancel()
        track.silence = None
        if st.central_silent:
            st.central_silent = False
            self._emit(Update(Kind.CENTRAL_BACK, st.driver_id, st.cp_id, message="news again"))
        self._watch_silence(st)

    def _watch_silence(self, st: DriverState) -> None:
        track = self._tracks[st.driver_id]
        if st.phase is DriverPhase.SUPPLYING and track.silence is None:
            track.silence = self._spawn(self._silence_deadline(st, st.session_id), "silence")

    async def _silence_deadline(self, st: DriverState, session_id: UUID | None) -> None:
        await self._sleep(self.silence_timeout)
        if (
            st.phase is DriverPhase.SUPPLYING
            and st.session_id == session_id
            and not st.central_silent
        ):
            st.central_silent = True
            message = f"for {self.silence_timeout:g} s; the supply goes on at the CP"
            self._emit(
                Update(Kind.CENTRAL_SILENT, st.driver_id, st.cp_id, session_id, message, "warning")
            )

    def _current(self, st: DriverState, session_id: UUID, cp_id: str) -> bool:
        """Is this session the driver's current one? (adopts it if Central gave no session id)"""
        if st.phase not in (DriverPhase.AUTHORISED, DriverPhase.SUPPLYING):
            return False
        if st.session_id is None and st.cp_id == cp_id:
            st.session_id = session_id
        return st.session_id == session_id

    def _stale(self, st: DriverState, event: Event, session_id: UUID) -> None:
        log.debug(
            "driver=%s: %s of session %s is not the current one, ignored",
            st.driver_id,
            event.event_type,
            session_id,
        )

    async def _on_answer(self, ev: AuthorizationResponse) -> None:
        st = self._mine(ev, ev.driver_id)
        if st is None:
            return
        if st.phase is not DriverPhase.REQUESTED or st.request_id != ev.request_id:
            await self._late_answer(st, ev)
            return
        self._show_sent(st, ev.request_id, ev.cp_id)  # an answer proves the request got through
        track = self._tracks[st.driver_id]
        if track.timer is not None:
            track.timer.cancel()
            track.timer = None
        if not ev.authorised:
            reason = ev.reason or "denied by CENTRAL"
            self._finish(st, ServiceOutcome.DENIED, reason)
            self._emit(Update(Kind.DENIED, st.driver_id, ev.cp_id, message=reason, level="warning"))
            return
        st.phase, st.session_id, st.price_eur_per_kwh = (
            DriverPhase.AUTHORISED,
            ev.session_id,
            ev.price_eur_per_kwh,
        )
        price = "" if ev.price_eur_per_kwh is None else f"{ev.price_eur_per_kwh}"
        self._emit(Update(Kind.AUTHORISED, st.driver_id, ev.cp_id, ev.session_id, price))

    async def _late_answer(self, st: DriverState, ev: AuthorizationResponse) -> None:
        """An answer to a request given up on: a late authorisation is cancelled, not left open."""
        track = self._tracks[st.driver_id]
        if not (ev.authorised and ev.request_id in track.abandoned):
            log.debug(
                "driver=%s: answer to request %s is stale, ignored", st.driver_id, ev.request_id
            )
            return
        track.abandoned.remove(ev.request_id)
        await self._publisher.publish(
            ChargingStopped(driver_id=st.driver_id, cp_id=ev.cp_id, session_id=ev.session_id)
        )
        message = (
            f"late authorisation at {ev.cp_id} after giving up on it: asked CENTRAL to cancel it"
        )
        self._emit(Update(Kind.NOTICE, st.driver_id, ev.cp_id, ev.session_id, message, "warning"))

    async def _on_started(self, ev: ChargingStarted) -> None:
        st = self._mine(ev, ev.driver_id)
        if st is None:
            return
        if not self._current(st, ev.session_id, ev.cp_id):
            self._stale(st, ev, ev.session_id)
            return
        self._supplying(st)

    def _supplying(self, st: DriverState) -> None:
        if st.phase is DriverPhase.AUTHORISED:
            st.phase = DriverPhase.SUPPLYING
            self._emit(Update(Kind.SUPPLYING, st.driver_id, st.cp_id, st.session_id))
        self._watch_silence(st)

    async def _on_progress(self, ev: ChargingProgress) -> None:
        st = self._mine(ev, ev.driver_id)
        if st is None:
            return
        if not self._current(st, ev.session_id, ev.cp_id):
            self._stale(st, ev, ev.session_id)
            return
        self._supplying(st)
        st.figures = Figures(ev.kw, ev.energy_kwh, ev.amount_eur)
        self._emit(Update(Kind.PROGRESS, st.driver_id, ev.cp_id, ev.session_id, figures=st.figures))

    async def _on_ticket(self, ev: ChargingTicket) -> None:
        st = self._mine(ev, ev.driver_id)
        if st is None:
            return
        track = self._tracks[st.driver_id]
        if (ev.session_id, ev.energy_kwh) in track.ticketed:
            log.debug("driver=%s: ticket of session %s again, ignored", st.driver_id, ev.session_id)
            return
        track.ticketed.append((ev.session_id, ev.energy_kwh))
        current = self._current(st, ev.session_id, ev.cp_id)
        ticket = Ticket.of(ev, earlier=not current)
        st.last_ticket, st.balance_eur = ticket, ev.balance_eur
        if current:
            self._finish(st, ServiceOutcome.TICKET, ev.end_reason, ticket)
        level = "warning" if ticket.interrupted else "info"
        self._emit(
            Update(Kind.TICKET, st.driver_id, ev.cp_id, ev.session_id, ticket=ticket, level=level)
        )

    async def _on_cp_error(self, ev: CpErrorSimulated) -> None:
        """Seed flow 2: "ERROR EN CP" for each of our drivers with a service at that CP."""
        for st in self._concerned(ev, ev.driver_id, ev.cp_id):
            if not st.busy or st.cp_id != ev.cp_id:
                log.debug(
                    "driver=%s: error of CP %s is not its CP, ignored", st.driver_id, ev.cp_id
                )
                continue
            st.cp_error = ev.message
            self._emit(
                Update(Kind.CP_ERROR, st.driver_id, ev.cp_id, st.session_id, ev.message, "warning")
            )
            if st.phase is not DriverPhase.REQUESTED:
                track = self._tracks[st.driver_id]
                track.timer = track.timer or self._spawn(
                    self._error_deadline(st, st.session_id), "error-grace"
                )

    async def _on_cp_fixed(self, ev: CpErrorFixed) -> None:
        for st in self._concerned(ev, ev.driver_id, ev.cp_id):
            if st.cp_id == ev.cp_id:
                st.cp_error = None
            self._emit(Update(Kind.CP_FIXED, st.driver_id, ev.cp_id, message=ev.message))

    def _concerned(self, event: Event, driver_id: str | None, cp_id: str) -> list[DriverState]:
        """The addressed driver, or (a message keyed by CP) every driver served here."""
        if driver_id is None:
            return list(self._drivers.values())
        st = self._mine(event, driver_id)
        return [] if st is None else [st]

    async def _on_notice(self, ev: DriverNotice) -> None:
        st = self._mine(ev, ev.driver_id)
        if st is not None:
            self._emit(
                Update(Kind.NOTICE, st.driver_id, ev.cp_id, message=ev.message, level=ev.level)
            )

    async def _on_driver_status(self, ev: DriverStatus) -> None:
        """What Central knows of this driver (asked at start): known or not, its open supply."""
        st = self._mine(ev, ev.driver_id)
        if st is None:
            return
        track = self._tracks[st.driver_id]
        st.known = ev.known
        if ev.balance_eur is not None:
            st.balance_eur = ev.balance_eur
        if not ev.known:
            message = "not registered at CENTRAL: requests will be denied"
            self._emit(Update(Kind.UNKNOWN_DRIVER, st.driver_id, message=message, level="warning"))
        elif ev.session_id is not None and ev.cp_id is not None and st.phase is DriverPhase.IDLE:
            self._take_up(st, ev)
        if track.syncing is not None and not track.syncing.done():
            track.syncing.set_result(True)

    def _take_up(self, st: DriverState, ev: DriverStatus) -> None:
        """A supply this driver has open at Central (started before this app (re)started)."""
        track = self._tracks[st.driver_id]
        if any(session == ev.session_id for session, _ in track.ticketed):
            return  # its ticket is already here: it has ended
        supplying = ev.session_status == "supplying"
        st.phase = DriverPhase.SUPPLYING if supplying else DriverPhase.AUTHORISED
        st.cp_id, st.session_id, st.request_id = ev.cp_id, ev.session_id, None
        st.price_eur_per_kwh, st.cp_error = ev.price_eur_per_kwh, None
        st.figures = Figures(Decimal(0), ev.energy_kwh or Decimal(0), ev.amount_eur or Decimal(0))
        track.done = asyncio.get_running_loop().create_future()
        status = "supplying" if supplying else "authorised, waiting for the plug"
        self._emit(Update(Kind.RESUMED, st.driver_id, st.cp_id, st.session_id, status))
        self._watch_silence(st)

    async def _on_status(self, ev: CpStatus) -> None:
        before = self._board.get(ev.cp_id)
        self._board[ev.cp_id] = ev
        shown = state_text(ev)
        self._emit(Update(Kind.BOARD, None, ev.cp_id, message=shown))
        if before is not None and state_text(before) == shown:
            return
        for st in self._drivers.values():
            if st.busy and st.cp_id == ev.cp_id:
                self._emit(Update(Kind.CP_STATE, st.driver_id, ev.cp_id, message=shown))


def _money(value: Decimal) -> str:
    """Shown with the network's one rounding rule (cents, half up)."""
    return str(euros(value))


def _energy(value: Decimal) -> str:
    return str(kwh(value))


def describe(update: Update) -> str:
    """One line per update, with the markers operators and tests follow (same on every screen)."""
    u = update
    who = f"driver={u.driver_id}" + ("" if u.cp_id is None else f" cp={u.cp_id}")
    if u.kind is Kind.PROGRESS and u.figures is not None:
        f = u.figures
        return (
            f"PROGRESS {who} kw={f.kw:.2f} kwh={_energy(f.energy_kwh)} eur={_money(f.amount_eur)}"
        )
    if u.kind is Kind.TICKET and u.ticket is not None:
        return _describe_ticket(u, u.ticket)
    simple: dict[Kind, str] = {
        Kind.REQUEST_SENT: f"REQUEST sent {who}",
        Kind.AUTHORISED: f"AUTHORISED {who} session={u.session_id} price={u.message or '?'} €/kWh",
        Kind.DENIED: f"DENIED {who} reason={u.message}",
        Kind.NO_ANSWER: f"NO ANSWER {who}: {u.message}",
        Kind.SUPPLYING: f"SUPPLYING {who} session={u.session_id}",
        Kind.CP_ERROR: f"ERROR EN CP cp={u.cp_id} message={u.message} [driver={u.driver_id}]",
        Kind.CP_FIXED: f"CP FIXED cp={u.cp_id} message={u.message} [driver={u.driver_id}]",
        Kind.CP_STATE: f"CP STATE {who} state={u.message}",
        Kind.SERVICE_FAILED: f"SERVICE FAILED {who} reason={u.message}",
        Kind.STOP_SENT: f"STOP sent {who} session={u.session_id}",
        Kind.NOTICE: f"NOTICE {who} level={u.level}: {u.message}",
        Kind.REFUSED: f"REFUSED {who}: {u.message}",
        Kind.NEXT: f"NEXT {who} {u.message}",
        Kind.SERVICES_DONE: f"SERVICES DONE driver={u.driver_id} n={u.count}",
        Kind.BOARD: f"BOARD cp={u.cp_id} state={u.message}",
        Kind.RESUMED: f"RESUMED {who} session={u.session_id}: supply in progress ({u.message})",
        Kind.UNKNOWN_DRIVER: f"UNKNOWN DRIVER driver={u.driver_id}: {u.message}",
        Kind.CENTRAL_SILENT: f"{NO_NEWS_TEXT.upper()} {who} {u.message}",
        Kind.CENTRAL_BACK: f"CENTRAL BACK {who}: {u.message}",
    }
    return simple.get(u.kind, f"{u.kind.upper()} {who} {u.message}")


def _describe_ticket(u: Update, t: Ticket) -> str:
    line = (
        f"TICKET driver={u.driver_id} cp={t.cp_id} kwh={_energy(t.energy_kwh)} "
        f"eur={_money(t.amount_eur)} reason={t.end_reason} balance={_money(t.balance_eur)} "
        f"{t.outcome}"
    )
    return f"{line} (earlier session {t.session_id})" if t.earlier else line
