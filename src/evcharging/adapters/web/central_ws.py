"""EV_Central's WebSocket hub (`/ws`): the admin dashboard's live feed and its admin actions.

A new socket first gets the whole picture (`all_cps`, `requests`, `messages`); after that the hub
pushes only what changed. It subscribes once to `CentralService`; every client has a bounded queue
and one sender task that drains all that is pending, keeps only the latest view of each CP and
sends one `cps` frame per batch, so a push costs the same however many CPs the network has.

Central never waits for a page: the listener only puts items on queues. A client that falls
`queue_size` items behind loses its backlog and is sent the full state again; one that cannot take
a frame within `send_timeout` seconds is disconnected. Both are logged at WARNING.

Every frame the server sends carries `ts`, epoch milliseconds at Central: for pushed changes the
moment the (oldest coalesced) change happened, for replies and snapshots the moment of sending.
The protocol is documented in docs/dashboards.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from evcharging.adapters.broker_state import KafkaState
from evcharging.contracts.events import Id, Price
from evcharging.domain.admin_rules import Conflict, UnknownCP
from evcharging.services.central import CentralService, error_fixed_text, error_simulated_text

log = logging.getLogger(__name__)

Frame = dict[str, Any]
Item = tuple[str, dict[str, Any], int]  # (kind, payload, ts in epoch ms)

MAX_FRAME_CHARS = 16_384
_SEND_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def message_rows(service: CentralService) -> list[dict[str, str]]:
    """Central's application messages as the API and the dashboard show them, oldest first."""
    return [
        {"at": at.isoformat(), "level": lvl, "text": text} for at, lvl, text in service.messages
    ]


def encode(frame: Frame) -> str:
    """orjson: at thousands of CP views a second, the stdlib encoder was 4 % of Central's time."""
    return orjson.dumps(frame).decode()


# --- client -> server: admin actions ----------------------------------------------------------

# The fields of a CP as both transports accept them (the HTTP API imports these); the id and
# price rules are the contracts' own.
CpId = Id
Location = Annotated[str, Field(min_length=1, max_length=200)]


def require_a_change(location: str | None, price: Decimal | None) -> None:
    """An edit of a CP names its location, its price, or both (HTTP and WebSocket alike)."""
    if location is None and price is None:
        raise ValueError("give location and/or price_eur_per_kwh")


class _Args(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _OnCP(_Args):
    cp_id: CpId


class _SimulateError(_OnCP):
    error_type: Annotated[str, Field(min_length=1, max_length=50)] = "fault"


class _RegisterCP(_Args):
    cp_id: CpId
    location: Location
    price_eur_per_kwh: Price


class _EditCP(_OnCP):
    location: Location | None = None
    price_eur_per_kwh: Price | None = None

    @model_validator(mode="after")
    def _something_to_edit(self) -> _EditCP:
        require_a_change(self.location, self.price_eur_per_kwh)
        return self


class Refused(Exception):
    """An action the hub answers with `{"type": "error", "reason": ...}`; nothing changed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _login(svc: CentralService, a: _Args) -> Frame:
    return {"type": "logged_in", "message": "admin token accepted"}


async def _simulate_error(svc: CentralService, a: _SimulateError) -> Frame:
    view = await svc.simulate_error(a.cp_id, a.error_type)
    message = error_simulated_text(a.cp_id, a.error_type)
    reply = {"type": "error_simulated", "cp_id": a.cp_id, "message": message, "cp": view}
    return {**reply, "error_type": a.error_type}


async def _fix_error(svc: CentralService, a: _OnCP) -> Frame:
    view = await svc.fix_error(a.cp_id)
    message = error_fixed_text(a.cp_id)
    return {"type": "error_fixed", "cp_id": a.cp_id, "message": message, "cp": view}


async def _stop_cp(svc: CentralService, a: _OnCP) -> Frame:
    view = await svc.stop_cp(a.cp_id)
    message = f"CP {a.cp_id} stopped: {view['caption']}"
    return {"type": "cp_stopped", "cp_id": a.cp_id, "message": message, "cp": view}


async def _resume_cp(svc: CentralService, a: _OnCP) -> Frame:
    view = await svc.resume_cp(a.cp_id)
    message = f"CP {a.cp_id} resumed: {view['state']}"
    return {"type": "cp_resumed", "cp_id": a.cp_id, "message": message, "cp": view}


def _bulk(kind: str, done: str, why_skipped: str, outcome: dict[str, Any]) -> Frame:
    ids = [view["id"] for view in outcome["changed"]]
    skipped = outcome["skipped"]
    cps = "1 CP" if len(ids) == 1 else f"{len(ids)} CPs"
    message = f"{cps} {done}" + (f"; {len(skipped)} skipped ({why_skipped})" if skipped else "")
    return {"type": kind, "cp_ids": ids, "skipped": skipped, "message": message}


async def _stop_all(svc: CentralService, a: _Args) -> Frame:
    return _bulk("all_stopped", "stopped", "already stopped", await svc.stop_all())


async def _resume_all(svc: CentralService, a: _Args) -> Frame:
    return _bulk("all_resumed", "resumed", "not stopped", await svc.resume_all())


async def _register_cp(svc: CentralService, a: _RegisterCP) -> Frame:
    view = await svc.register_cp(a.cp_id, a.location, a.price_eur_per_kwh)
    message = f"CP {a.cp_id} registered ({a.location}, {a.price_eur_per_kwh} €/kWh)"
    return {"type": "cp_registered", "cp_id": a.cp_id, "message": message, "cp": view}


async def _edit_cp(svc: CentralService, a: _EditCP) -> Frame:
    view = await svc.edit_cp(a.cp_id, a.location, a.price_eur_per_kwh)
    message = f"CP {a.cp_id} edited ({view['location']}, {view['price_eur_per_kwh']} €/kWh)"
    return {"type": "cp_edited", "cp_id": a.cp_id, "message": message, "cp": view}


@dataclass(frozen=True)
class _Action:
    args: type[_Args]
    run: Callable[[CentralService, Any], Awaitable[Frame]]


ACTIONS: dict[str, _Action] = {
    "login": _Action(_Args, _login),
    "simulate_error": _Action(_SimulateError, _simulate_error),
    "fix_error": _Action(_OnCP, _fix_error),
    "stop_cp": _Action(_OnCP, _stop_cp),
    "resume_cp": _Action(_OnCP, _resume_cp),
    "stop_all": _Action(_Args, _stop_all),
    "resume_all": _Action(_Args, _resume_all),
    "register_cp": _Action(_RegisterCP, _register_cp),
    "edit_cp": _Action(_EditCP, _edit_cp),
}


def _invalid(exc: ValidationError) -> str:
    """The fields at fault, without echoing the input back."""
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors)


class AdminActions:
    """Parse -> check the token -> validate -> call one service coroutine -> reply."""

    def __init__(self, service: CentralService, admin_token: str) -> None:
        self.service = service
        self._token = admin_token.encode()

    def _parse(self, text: str) -> tuple[str, _Action, dict[str, Any]]:
        if len(text) > MAX_FRAME_CHARS:
            raise Refused(f"message too large (over {MAX_FRAME_CHARS} characters)")
        try:
            data = json.loads(text)
        except ValueError:
            raise Refused("malformed JSON") from None
        if not isinstance(data, dict):
            raise Refused("a message must be a JSON object")
        kind = data.get("type")
        action = ACTIONS.get(kind) if isinstance(kind, str) else None
        if action is None:
            raise Refused(f"unknown action {str(kind)[:50]!r}")
        return str(kind), action, data

    def _check_token(self, data: dict[str, Any]) -> None:
        given = data.pop("token", None)
        if not isinstance(given, str) or not given:
            raise Refused("admin token required")
        if not hmac.compare_digest(given.encode(), self._token):
            raise Refused("wrong admin token")

    async def handle(self, text: str, who: str) -> Frame:
        kind = None
        try:
            kind, action, data = self._parse(text)
            self._check_token(data)
            args = action.args.model_validate(data)
            reply = await action.run(self.service, args)
        except (Refused, Conflict, UnknownCP) as refused:  # the HTTP API: 4xx, 409, 404
            return refusal(who, kind, refused.reason)
        except ValidationError as exc:
            return refusal(who, kind, f"invalid fields: {_invalid(exc)}")
        except Exception:  # a bug: details in the log, a generic reply on the wire
            log.exception("ws %s: action %s failed", who, kind)
            return {"type": "error", "action": kind, "reason": "internal error"}
        log.info("ws %s: admin action %s done: %s", who, kind, reply.get("message", ""))
        return reply


def refusal(who: str, kind: str | None, reason: str) -> Frame:
    """The reply to input the hub will not act on, logged at WARNING with the reason."""
    log.warning("ws %s: action %s refused: %s", who, kind or "-", reason)
    return {"type": "error", "action": kind, "reason": reason}


# --- server -> client: the live feed ------------------------------------------------------


def coalesce(batch: list[Item]) -> list[Frame]:
    """Pending changes -> frames: the latest view per CP, the latest state of each changed request
    row (None: it left the table), then every message. Each frame's `ts` is its oldest change."""
    cps: dict[str, dict[str, Any]] = {}
    cps_ts: int | None = None
    rows: dict[str, dict[str, Any] | None] = {}
    rows_ts: int | None = None
    messages: list[Frame] = []
    for kind, payload, ts in batch:
        if kind == "cp":
            cps.pop(payload["id"], None)
            cps[payload["id"]] = payload
            cps_ts = ts if cps_ts is None else min(cps_ts, ts)
        elif kind == "request":
            rows.pop(payload["key"], None)
            rows[payload["key"]] = payload["row"]
            rows_ts = ts if rows_ts is None else min(rows_ts, ts)
        elif kind == "message":
            messages.append({"type": "message", **payload, "ts": ts})
        elif kind == "kafka":
            messages.append({"type": "kafka", **payload, "ts": ts})
    frames: list[Frame] = []
    if cps:
        frames.append({"type": "cps", "charging_points": list(cps.values()), "ts": cps_ts})
    if rows:
        changed = [row for row in rows.values() if row is not None]
        removed = [key for key, row in rows.items() if row is None]
        frames.append(
            {"type": "request_changes", "changed": changed, "removed": removed, "ts": rows_ts}
        )
    return frames + messages


@dataclass(eq=False)
class _Client:
    ws: WebSocket
    name: str
    queue: asyncio.Queue[Item]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    behind: bool = False

    def offer(self, item: Item) -> None:
        """Never blocks: a full queue is dropped and replaced by a request for the full state."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(("resync", {}, item[2]))
            if not self.behind:
                log.warning(
                    "ws %s: client too slow, %d pending changes dropped; it gets the full state",
                    self.name,
                    self.queue.maxsize,
                )
            self.behind = True

    async def next_batch(self) -> list[Item]:
        batch = [await self.queue.get()]
        while not self.queue.empty():
            batch.append(self.queue.get_nowait())
        return batch


class DashboardHub:
    """Pushes Central's changes to every open `/ws` socket and runs the admin actions they send."""

    def __init__(
        self,
        service: CentralService,
        admin_token: str,
        *,
        queue_size: int = 1000,
        send_timeout: float = 5.0,
    ) -> None:
        self.service = service
        self.actions = AdminActions(service, admin_token)
        self.queue_size = queue_size
        self.send_timeout = send_timeout
        self._clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self.kafka = KafkaState(up=True)
        service.subscribe(self._on_change)

    def set_kafka(self, state: KafkaState) -> None:
        """Kafka reachable or not, as Central's watch says: every page shows a banner."""
        self.kafka = state
        self._on_change("kafka", state.as_dict())

    @property
    def client_count(self) -> int:
        return len(self._clients)

    # --- fan-out (called synchronously by CentralService) ---------------------------------

    def _on_change(self, kind: str, payload: dict[str, Any]) -> None:
        loop = self._loop
        if loop is None or not self._clients:
            return
        item: Item = (kind, payload, now_ms())
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._fan_out(item)
        else:  # a change made on another thread or loop: hand it over, never touch queues here
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody to tell
                loop.call_soon_threadsafe(self._fan_out, item)

    def _fan_out(self, item: Item) -> None:
        for client in tuple(self._clients):
            client.offer(item)

    def snapshot(self) -> list[Frame]:
        ts = now_ms()
        cps = [cp.view() for cp in self.service.cps.values()]
        return [
            {"type": "all_cps", "charging_points": cps, "ts": ts},
            {"type": "requests", "requests": self.service.request_rows(), "ts": ts},
            {"type": "messages", "messages": message_rows(self.service), "ts": ts},
            {"type": "kafka", **self.kafka.as_dict(), "ts": ts},
        ]

    # --- one socket ----------------------------------------------------------------------

    async def serve(self, ws: WebSocket) -> None:
        """The `/ws` endpoint: full state, then pushes, while reading actions from the page."""
        await ws.accept()
        self._loop = asyncio.get_running_loop()
        client = _Client(ws, self._name(ws), asyncio.Queue(self.queue_size))
        self._clients.add(client)  # joined and snapshotted in one step: no change falls between
        first = self.snapshot()
        log.info("ws %s: dashboard connected (%d open)", client.name, len(self._clients))
        tasks = [
            asyncio.create_task(self._push(client, first), name=f"ws-push-{client.name}"),
            asyncio.create_task(self._read(client), name=f"ws-read-{client.name}"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._clients.discard(client)
            for task in tasks:
                task.cancel()
            for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(outcome, Exception) and not isinstance(outcome, _SEND_ERRORS):
                    log.error("ws %s: dashboard task failed", client.name, exc_info=outcome)
            await self._close(client)
            log.info("ws %s: dashboard gone (%d open)", client.name, len(self._clients))

    def _name(self, ws: WebSocket) -> str:
        peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
        return f"#{next(self._ids)} {peer}"

    async def _push(self, client: _Client, first: list[Frame]) -> None:
        if not await self._send(client, first):
            return
        while True:
            batch = await client.next_batch()
            if any(kind == "resync" for kind, _, _ in batch):
                client.behind = False
                frames = self.snapshot()
            else:
                frames = coalesce(batch)
            if not await self._send(client, frames):
                return

    async def _read(self, client: _Client) -> None:
        while True:
            message = await client.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                reply = refusal(client.name, None, "binary frames are not accepted")
            else:
                reply = await self.actions.handle(text, client.name)
            if not await self._send(client, [{**reply, "ts": now_ms()}]):
                return

    async def _send(self, client: _Client, frames: list[Frame]) -> bool:
        """Send in order, one writer at a time; False when the client is gone or too slow."""
        async with client.lock:
            for frame in frames:
                try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                    async with asyncio.timeout(self.send_timeout):
                        await client.ws.send_text(encode(frame))
                except TimeoutError:
                    log.warning(
                        "ws %s: client took over %gs to take a frame: disconnected",
                        client.name,
                        self.send_timeout,
                    )
                    return False
                except _SEND_ERRORS:
                    return False
        return True

    async def _close(self, client: _Client) -> None:
        ws = client.ws
        if WebSocketState.DISCONNECTED in (ws.client_state, ws.application_state):
            return
        with contextlib.suppress(*_SEND_ERRORS, TimeoutError):
            async with asyncio.timeout(1.0):
                await ws.close(code=1001)
