"""The Driver process's hub for its pages: which driver each page follows, what waits to be
sent to it, and the actions pages ask for.

A page says which driver id it follows (`select_driver`); the hub answers with that driver's
whole state (phase, live figures, last ticket, balance, services run, notifications), then pushes
only that driver's updates and the public board of CPs.  Everything shown lives here, in the
process: a reloaded page gets the same picture.  Two pages following two drivers never see each
other's messages: every update is filtered when it is queued and again when it is sent.

The hub observes `DriverService` once; it only puts items on bounded per-page queues (the service
never waits for a page), and one writer per page (`driver_session`) renders and sends them.
Actions (`request`, `stop`, `run_services`) run as tasks owned by the hub, so closing the page
does not cancel them.  Bad input gets `{"type": "error", "reason": ...}` back and a WARNING in
the log, and changes nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from evcharging.adapters.broker_state import KafkaState
from evcharging.adapters.web.driver_messages import (
    MAX_SERVICES,
    BadInput,
    Inbound,
    RequestSupply,
    SelectDriver,
    StopCharging,
    parse_inbound,
)
from evcharging.adapters.web.driver_runs import ServiceRuns
from evcharging.adapters.web.driver_texts import status_of
from evcharging.adapters.web.driver_views import (
    QUIET,
    Entry,
    Frame,
    cp_view,
    figures_view,
    ticket_view,
)
from evcharging.domain.money import euros
from evcharging.services.driver import DriverPhase, DriverService, Kind, Update
from evcharging.services.ports import DriverFeeds

log = logging.getLogger(__name__)

HISTORY = 100  # notifications kept per driver
OUTBOX = 500  # items queued per page before the oldest are dropped

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _text(value: object | None) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class _StateOf:
    """Send this driver's whole state (rendered when sent, if the page still follows it)."""

    driver_id: str


_Item = Frame | Entry | _StateOf


@dataclass(eq=False)
class Page:
    """One connected page: the driver it follows and what is waiting to be sent to it."""

    peer: str
    following: str | None = None
    outbox: asyncio.Queue[_Item] = field(default_factory=lambda: asyncio.Queue(OUTBOX))

    def push(self, item: _Item) -> None:
        if self.outbox.full():  # a page that lags loses old items; each update carries the state
            self.outbox.get_nowait()
        self.outbox.put_nowait(item)


class DriverHub:
    def __init__(
        self,
        service: DriverService,
        feeds: DriverFeeds,
        runs: ServiceRuns,
        *,
        default_driver_id: str | None = None,
        clock: Clock = _utc_now,
    ) -> None:
        self.service = service
        self.feeds = feeds
        self.runs = runs
        self.default_driver_id = default_driver_id
        self._clock = clock
        self._seq = itertools.count(1)
        self._last_seq = 0
        self._history: dict[str, deque[Entry]] = {}
        self._pages: set[Page] = set()
        self._waiting: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._unobserve = service.observe(self._on_update)
        self.kafka = KafkaState(up=True)

    def set_kafka(self, state: KafkaState) -> None:
        """Kafka reachable or not, as the process's watch says: every page shows a banner."""
        self.kafka = state
        for page in self._pages:
            page.push(self.kafka_frame())

    def kafka_frame(self) -> Frame:
        return {"type": "kafka", **self.kafka.as_dict()}

    # --- what the service reports

    def _on_update(self, update: Update) -> None:
        entry = self._record(update)
        for page in self._pages:
            if update.kind is Kind.BOARD or update.driver_id == page.following:
                page.push(entry)

    def _record(self, update: Update) -> Entry:
        self._last_seq = next(self._seq)
        entry = Entry(self._last_seq, self._clock(), update)
        if update.driver_id is not None and update.kind not in QUIET:
            self._history.setdefault(update.driver_id, deque(maxlen=HISTORY)).append(entry)
        return entry

    def _note(self, driver_id: str, message: str) -> None:
        """A notice of the dashboard's own (not from the service), for every page of the driver."""
        log.info("driver=%s: %s", driver_id, message)
        self._on_update(Update(Kind.NOTICE, driver_id, message=message))

    # --- frames

    def welcome(self) -> Frame:
        return {
            "type": "welcome",
            "default_driver_id": self.default_driver_id,
            "pause_s": self.runs.pause,
            "max_services": MAX_SERVICES,
        }

    def board(self) -> Frame:
        cps = sorted(self.service.board.values(), key=lambda cp: cp.cp_id)
        return {"type": "board", "cps": [cp_view(cp) for cp in cps]}

    def driver_view(self, driver_id: str) -> Frame:
        st = self.service.state(driver_id)
        history = self._history.get(driver_id, deque())
        label, detail = status_of(st, (e.update for e in reversed(history)))
        busy = st.phase in (DriverPhase.AUTHORISED, DriverPhase.SUPPLYING)
        listening = self.feeds.is_ready(driver_id)
        return {
            "driver_id": driver_id,
            "phase": st.phase.value,
            "status": label,
            "detail": detail,
            "cp_id": st.cp_id,
            "session_id": _text(st.session_id),
            "price_eur_per_kwh": _text(st.price_eur_per_kwh),
            "figures": figures_view(st.figures) if busy and st.figures is not None else None,
            "cp_error": st.cp_error,
            "known": st.known,
            "central_silent": st.central_silent,
            "ticket": None if st.last_ticket is None else ticket_view(st.last_ticket),
            "balance_eur": None if st.balance_eur is None else str(euros(st.balance_eur)),
            "listening": listening,
            "can_request": listening and not st.busy,
            "can_stop": busy,
            "services": self.runs.view(driver_id),
        }

    def state_frame(self, driver_id: str) -> Frame:
        history = self._history.get(driver_id, deque())
        return {
            "type": "state",
            "driver_id": driver_id,
            "seq": self._last_seq,
            "state": self.driver_view(driver_id),
            "notifications": [e.notification() for e in history],
        }

    def update_frame(self, entry: Entry) -> Frame:
        u = entry.update
        if u.kind is Kind.BOARD:
            cp = self.service.board.get(u.cp_id or "")
            return {"type": "cp_status", "cp": None if cp is None else cp_view(cp)}
        assert u.driver_id is not None
        frame: Frame = {
            "type": u.kind.value,
            "seq": entry.seq,
            "at": entry.at.isoformat(),
            "driver_id": u.driver_id,
            "cp_id": u.cp_id,
            "level": entry.level,
            "message": u.message,
            "notification": None if u.kind in QUIET else entry.notification(),
            "state": self.driver_view(u.driver_id),
        }
        if u.figures is not None:
            frame["figures"] = figures_view(u.figures)
        if u.ticket is not None:
            frame["ticket"] = ticket_view(u.ticket)
        return frame

    def render(self, page: Page, item: _Item) -> Frame | None:
        """At send time; None when the page no longer follows the driver the item is about."""
        if isinstance(item, _StateOf):
            return self.state_frame(item.driver_id) if item.driver_id == page.following else None
        if isinstance(item, Entry):
            u = item.update
            if u.kind is not Kind.BOARD and u.driver_id != page.following:
                return None
            return self.update_frame(item)
        return item

    # --- pages

    def connect(self, peer: str) -> Page:
        page = Page(peer)
        self._pages.add(page)
        page.push(self.welcome())
        page.push(self.kafka_frame())
        page.push(self.board())
        log.info("web: page connected from %s (%d open)", peer, len(self._pages))
        return page

    def disconnect(self, page: Page) -> None:
        self._pages.discard(page)
        log.info("web: page %s closed (driver=%s)", page.peer, page.following)

    async def receive(self, page: Page, text: str | None) -> None:
        """One frame from a page: act on it, or answer an error (and log why)."""
        try:
            if text is None:
                raise BadInput("binary frames are not accepted: send JSON text")
            self._act(page, parse_inbound(text))
        except BadInput as exc:
            log.warning(
                "web: refused message from %s (driver=%s): %s",
                page.peer,
                page.following,
                exc.reason,
            )
            page.push({"type": "error", "reason": exc.reason})

    def _act(self, page: Page, msg: Inbound) -> None:
        if isinstance(msg, SelectDriver):
            self._select(page, msg.driver_id)
            return
        driver_id = self._target(page, msg.driver_id)
        if isinstance(msg, RequestSupply):
            self._spawn(self._request(driver_id, msg.cp_id), f"request-{driver_id}")
            page.push({"type": "accepted", "action": "request", "driver_id": driver_id})
        elif isinstance(msg, StopCharging):
            self._spawn(self._stop(driver_id), f"stop-{driver_id}")
            page.push({"type": "accepted", "action": "stop", "driver_id": driver_id})
        else:
            self._run_services(page, driver_id, msg.services())

    def _select(self, page: Page, driver_id: str) -> None:
        refused = self.feeds.follow(driver_id)
        if refused is not None:
            raise BadInput(refused.reason)
        page.following = driver_id
        log.info("web: page %s follows driver=%s", page.peer, driver_id)
        page.push(_StateOf(driver_id))
        if not self.feeds.is_ready(driver_id) and driver_id not in self._waiting:
            self._waiting.add(driver_id)
            self._spawn(self._when_listening(driver_id), f"listen-{driver_id}")

    def _target(self, page: Page, driver_id: str | None) -> str:
        if page.following is None:
            raise BadInput("select a driver first (select_driver)")
        if driver_id is not None and driver_id != page.following:
            raise BadInput(f"this page follows {page.following}, not {driver_id}")
        return page.following

    def _run_services(self, page: Page, driver_id: str, cp_ids: list[str]) -> None:
        refused = self.runs.start(driver_id, cp_ids)
        if refused is not None:
            raise BadInput(refused.reason)
        page.push({"type": "accepted", "action": "run_services", "driver_id": driver_id})
        pause = f"{self.runs.pause:g}"
        self._note(
            driver_id,
            f"Services file started: {', '.join(cp_ids)} ({pause} s between services)",
        )

    async def _request(self, driver_id: str, cp_id: str) -> None:
        if not self.feeds.is_ready(driver_id):  # so that no answer slips past its reader
            log.info("driver=%s: request at %s waits for Kafka", driver_id, cp_id)
            await self.feeds.ready(driver_id)
        await self.service.request(driver_id, cp_id)

    async def _stop(self, driver_id: str) -> None:
        await self.service.stop(driver_id)

    async def _when_listening(self, driver_id: str) -> None:
        try:
            await self.feeds.ready(driver_id)
        finally:
            self._waiting.discard(driver_id)
        for page in self._pages:
            if page.following == driver_id:
                page.push(_StateOf(driver_id))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"driver-web-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        self._unobserve()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.runs.close()
