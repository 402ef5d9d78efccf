"""EV_Driver's web dashboard: one page per driver id, live over one WebSocket (`/ws`) per page.

A page says which driver id it follows (`select_driver`); the hub answers with that driver's
whole state (phase, live figures, last ticket, balance, services run, notifications), then pushes
only that driver's updates and the public board of CPs.  Everything shown lives here, in the
process: a reloaded page gets the same picture.  Two pages following two drivers never see each
other's messages: every update is filtered when it is queued and again when it is sent.

The hub observes `DriverService` once; it only puts items on bounded per-page queues (the service
never waits for a page), and one writer task per page renders and sends them.  Actions (`request`,
`stop`, `run_services`) run as tasks owned by the hub, so closing the page does not cancel them; a
services file runs through `DriverService.run_services` (the same 4 s rule as the terminal).
Bad input gets `{"type": "error", "reason": ...}` back and a WARNING in the log, and changes
nothing.  The protocol is documented in docs/dashboard-driver.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from evcharging.adapters.kafka.watch import KafkaState
from evcharging.adapters.web.embedded import EmbeddedServer
from evcharging.contracts.events import CpStatus, Id
from evcharging.domain.money import euros, kwh
from evcharging.services.driver import (
    NO_ANSWER_TEXT,
    NO_NEWS_TEXT,
    DriverPhase,
    DriverService,
    DriverState,
    Figures,
    Kind,
    ServiceResult,
    Ticket,
    Update,
    parse_services,
)
from evcharging.services.ports import DriverFeeds, DriverRefusal

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static" / "driver"
MAX_MESSAGE_CHARS = 64_000  # a services file of a few hundred lines fits
MAX_SERVICES = 100
HISTORY = 100  # notifications kept per driver
OUTBOX = 500  # items queued per page before the oldest are dropped

Frame = dict[str, Any]
Clock = Callable[[], datetime]
_SEND_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)


def encode(frame: Frame) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _text(value: object | None) -> str | None:
    return None if value is None else str(value)


# --- page -> server -----------------------------------------------------------------------


class BadInput(ValueError):
    """A message the hub refuses; `reason` goes back to the page and into the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Inbound(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SelectDriver(_Inbound):
    type: Literal["select_driver"]
    driver_id: Id


class RequestSupply(_Inbound):
    type: Literal["request"]
    cp_id: Id
    driver_id: Id | None = None


class StopCharging(_Inbound):
    type: Literal["stop"]
    driver_id: Id | None = None


class RunServices(_Inbound):
    """Either `cp_ids`, or `text`: a services file (one CP id per line, `#` comments)."""

    type: Literal["run_services"]
    cp_ids: Annotated[list[Id], Field(min_length=1, max_length=MAX_SERVICES)] | None = None
    text: Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)] | None = None
    driver_id: Id | None = None

    def services(self) -> list[str]:
        if (self.cp_ids is None) == (self.text is None):
            raise BadInput("run_services needs either cp_ids or text")
        if self.cp_ids is not None:
            return list(self.cp_ids)
        try:
            cp_ids = parse_services(self.text or "")
        except ValueError as exc:
            raise BadInput(f"services file: {exc}") from None
        if not cp_ids:
            raise BadInput("services file: no CP id in it")
        if len(cp_ids) > MAX_SERVICES:
            raise BadInput(f"services file: {len(cp_ids)} services, at most {MAX_SERVICES}")
        return cp_ids


Inbound = SelectDriver | RequestSupply | StopCharging | RunServices
INBOUND: dict[str, type[Inbound]] = {
    "select_driver": SelectDriver,
    "request": RequestSupply,
    "stop": StopCharging,
    "run_services": RunServices,
}


def parse_inbound(text: str) -> Inbound:
    """One text frame from a page -> its message, or BadInput with a reason a person can act on."""
    if len(text) > MAX_MESSAGE_CHARS:
        raise BadInput(f"message too long ({len(text)} characters, at most {MAX_MESSAGE_CHARS})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise BadInput("not a JSON object")
    kind = data.get("type")
    model = INBOUND.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise BadInput(f"unknown message type {kind!r} (expected one of {', '.join(INBOUND)})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadInput(f"invalid {kind}: {_summarise(exc)}") from None


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


# --- views: what the page is sent -----------------------------------------------------------

_KW = Decimal("0.01")
_ENDINGS = {
    Kind.TICKET: "Charging completed",
    Kind.DENIED: "Denied",
    Kind.NO_ANSWER: "No answer from CENTRAL",
    Kind.SERVICE_FAILED: "Service failed",
}
_LEVELS = {
    Kind.CP_ERROR: "error",
    Kind.UNKNOWN_DRIVER: "warning",
    Kind.CENTRAL_SILENT: "warning",
    Kind.CENTRAL_BACK: "success",
    Kind.DENIED: "warning",
    Kind.NO_ANSWER: "warning",
    Kind.SERVICE_FAILED: "warning",
    Kind.REFUSED: "warning",
    Kind.TICKET: "success",
    Kind.CP_FIXED: "success",
}
_QUIET = {Kind.PROGRESS, Kind.BOARD}  # live figures and the board: not notifications


def figures_view(f: Figures) -> Frame:
    return {
        "kw": str(f.kw.quantize(_KW, rounding=ROUND_HALF_UP)),
        "energy_kwh": str(kwh(f.energy_kwh)),
        "amount_eur": str(euros(f.amount_eur)),
    }


def ticket_view(t: Ticket) -> Frame:
    return {
        "session_id": str(t.session_id),
        "cp_id": t.cp_id,
        "energy_kwh": str(kwh(t.energy_kwh)),
        "price_eur_per_kwh": str(t.price_eur_per_kwh),
        "amount_eur": str(euros(t.amount_eur)),
        "end_reason": t.end_reason,
        "interrupted": t.interrupted,
        "outcome": t.outcome,
        "balance_eur": str(euros(t.balance_eur)),
        "ended_at": t.ended_at.isoformat(),
        "earlier": t.earlier,
    }


def cp_view(cp: CpStatus) -> Frame:
    return {
        "cp_id": cp.cp_id,
        "location": cp.location,
        "price_eur_per_kwh": str(cp.price_eur_per_kwh),
        "state": cp.state,
        "available": cp.available,
    }


def words(code: str) -> str:
    """An end reason as Central codes it (`stopped_by_driver`) in words."""
    return code.replace("_", " ")


def notification_text(u: Update) -> str:
    """One line a driver reads (the terminal keeps `describe`'s marker lines)."""
    cp = u.cp_id or "?"
    if u.kind is Kind.TICKET and u.ticket is not None:
        t = u.ticket
        outcome = "Charging interrupted" if t.interrupted else "Charging completed"
        text = (
            f"{outcome} at {t.cp_id}: {kwh(t.energy_kwh)} kWh, {euros(t.amount_eur)} €"
            f" ({words(t.end_reason)}); balance {euros(t.balance_eur)} €"
        )
        return f"{text} (an earlier session)" if t.earlier else text
    price = f" at {u.message} €/kWh" if u.message else ""
    texts: dict[Kind, str] = {
        Kind.REQUEST_SENT: f"Request sent for {cp}",
        Kind.AUTHORISED: f"Authorised at {cp}{price}: plug in your vehicle",
        Kind.DENIED: f"Denied at {cp}: {u.message}",
        Kind.NO_ANSWER: f"{u.message} (request at {cp})",
        Kind.SUPPLYING: f"Supplying at {cp}",
        Kind.CP_ERROR: f"ERROR EN CP {cp}: {u.message}",
        Kind.CP_FIXED: f"CP {cp} fixed: {u.message}",
        Kind.CP_STATE: f"CP {cp} is now {u.message}",
        Kind.SERVICE_FAILED: f"Service at {cp} failed: {u.message}",
        Kind.STOP_SENT: f"Stop sent for {cp}",
        Kind.REFUSED: f"DriverRefusal: {u.message}",
        Kind.NEXT: f"Next service at {cp} {u.message}",
        Kind.SERVICES_DONE: f"Services file done: {u.count} service(s)",
        Kind.RESUMED: f"Supply in progress at {cp} ({u.message}): found at CENTRAL, "
        "you can stop it here",
        Kind.UNKNOWN_DRIVER: f"Unknown driver {u.driver_id}: {u.message}",
        Kind.CENTRAL_SILENT: f"{NO_NEWS_TEXT} {u.message}",
        Kind.CENTRAL_BACK: "News from CENTRAL again",
    }
    return texts.get(u.kind, u.message or u.kind.value)


@dataclass(frozen=True)
class Entry:
    """An update as the hub saw it: numbered (pages drop repeats) and timed."""

    seq: int
    at: datetime
    update: Update

    @property
    def level(self) -> str:
        ticket = self.update.ticket
        if self.update.kind is Kind.TICKET and ticket is not None and ticket.interrupted:
            return "warning"
        return _LEVELS.get(self.update.kind, self.update.level)

    def notification(self) -> Frame:
        u = self.update
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "kind": u.kind.value,
            "level": self.level,
            "cp_id": u.cp_id,
            "text": notification_text(u),
        }


def status_of(st: DriverState, history: Iterator[Entry]) -> tuple[str, str]:
    """The phase as words (label, detail): the page shows them, not only a colour."""
    cp = st.cp_id or "?"
    if st.cp_error is not None:
        return "ERROR EN CP", f"{cp}: {st.cp_error}"
    if st.known is False:
        return "Unknown driver", f"{st.driver_id} is not registered at CENTRAL"
    if st.central_silent:
        return NO_NEWS_TEXT, f"Charging at {cp}: the supply goes on at the CP"
    busy = {
        DriverPhase.REQUESTED: ("Waiting for CENTRAL", f"Request sent for {cp}"),
        DriverPhase.AUTHORISED: ("Authorised", f"Plug in your vehicle at {cp}"),
        DriverPhase.SUPPLYING: ("Supplying", f"Charging at {cp}"),
    }
    if st.phase in busy:
        return busy[st.phase]
    for entry in history:  # newest first: how did the last service end?
        u = entry.update
        if u.kind in _ENDINGS:
            if u.kind is Kind.TICKET and u.ticket is not None:
                label = "Charging interrupted" if u.ticket.interrupted else _ENDINGS[u.kind]
                return label, f"{u.ticket.cp_id}: {words(u.ticket.end_reason)}"
            detail = NO_ANSWER_TEXT if u.kind is Kind.NO_ANSWER else f"{cp}: {u.message}"
            return _ENDINGS[u.kind], detail
    return "Idle", "Choose an available CP to charge"


# --- services files, run server-side -------------------------------------------------------


@dataclass
class _Run:
    cp_ids: tuple[str, ...]
    task: asyncio.Task[list[ServiceResult]]


class ServiceRuns:
    """Services files run in the process (mechanic 12): they go on when the page is closed."""

    def __init__(
        self,
        service: DriverService,
        pause: float,
        ready: Callable[[str], Awaitable[None]],
    ) -> None:
        self.service = service
        self.pause = pause
        self._ready = ready
        self._runs: dict[str, _Run] = {}

    def running(self, driver_id: str) -> bool:
        run = self._runs.get(driver_id)
        return run is not None and not run.task.done()

    def start(self, driver_id: str, cp_ids: list[str]) -> DriverRefusal | None:
        if self.running(driver_id):
            return DriverRefusal(f"a services file is already running for {driver_id}")
        task = asyncio.create_task(self._run(driver_id, cp_ids), name=f"services-{driver_id}")
        task.add_done_callback(self._ended)
        self._runs[driver_id] = _Run(tuple(cp_ids), task)
        return None

    async def _run(self, driver_id: str, cp_ids: list[str]) -> list[ServiceResult]:
        await self._ready(driver_id)  # so that no answer slips past the driver's reader
        log.info("driver=%s: %d service(s) to run", driver_id, len(cp_ids))
        return await self.service.run_services(driver_id, cp_ids, self.pause)

    def _ended(self, task: asyncio.Task[list[ServiceResult]]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def view(self, driver_id: str) -> Frame | None:
        run = self._runs.get(driver_id)
        if run is None:
            return None
        return {"running": not run.task.done(), "cp_ids": list(run.cp_ids)}

    async def close(self) -> None:
        tasks = [run.task for run in self._runs.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- the hub: pages, their queues and the actions -------------------------------------------


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
        if update.driver_id is not None and update.kind not in _QUIET:
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
        label, detail = status_of(st, reversed(history))
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
            "notification": None if u.kind in _QUIET else entry.notification(),
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

    # --- one WebSocket

    async def session(self, ws: WebSocket) -> None:
        """Serve one page until it goes away: a reader (this task) and a writer task."""
        peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
        if not _same_origin(ws):
            log.warning("web: refused a WebSocket from %s: origin %s", peer, ws.headers["origin"])
            await ws.close(code=1008)
            return
        await ws.accept()
        page = self.connect(peer)
        writer = asyncio.create_task(self._write(ws, page), name=f"driver-web-writer-{peer}")
        try:
            while (message := await ws.receive())["type"] == "websocket.receive":
                await self.receive(page, message.get("text"))
        except _SEND_ERRORS as exc:
            log.debug("web: page %s went away: %r", peer, exc)
        finally:
            self.disconnect(page)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _write(self, ws: WebSocket, page: Page) -> None:
        """The page's only sender; a bug here is logged and closes the page, not the process."""
        try:
            while True:
                frame = self.render(page, await page.outbox.get())
                if frame is not None:
                    await ws.send_text(encode(frame))
        except _SEND_ERRORS as exc:
            log.debug("web: page %s: send failed: %r", page.peer, exc)
        except Exception:
            log.exception("web: page %s: cannot send", page.peer)
            with contextlib.suppress(*_SEND_ERRORS):
                await ws.close(code=1011)


def _same_origin(ws: WebSocket) -> bool:
    """Browsers send Origin: refuse pages of other sites (tools without Origin are let in)."""
    origin = ws.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == ws.headers.get("host")


# --- HTTP ---------------------------------------------------------------------------------

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "style-src 'self'; script-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(hub: DriverHub) -> FastAPI:
    app = FastAPI(title="EV_Driver dashboard", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.update(_HEADERS)
        return response

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await hub.session(websocket)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def web_server(hub: DriverHub) -> EmbeddedServer:
    config = uvicorn.Config(
        create_app(hub),
        log_level="warning",
        lifespan="off",
        ws_max_size=2 * MAX_MESSAGE_CHARS,
        timeout_graceful_shutdown=2,
    )
    return EmbeddedServer(config)
