"""EV_Central's WebSocket hubs: the admin dashboard's live feed (`/ws`; its admin actions are
read by `central_ws_admin.py` and carried out by Central's admin front door, `services/admin.py`),
and, in its public mode, API_Central's push channel (`/api/v1/stream`): the same frames with every
driver id masked and no balance (`services/public_views.py`), read only (anything sent to it is
ignored, and logged once per socket).

On `/ws`, a socket is public until it proves the admin token: until then it gets exactly what the
public stream gets (masked frames); once a `login` (or any admin action) carries the token, the
socket is the admin's for as long as it stays open: the reply, then at once the whole state
unmasked, then unmasked pushes. Whatever was still queued for it masked is dropped (that state
covers it).

A new socket first gets the whole picture (`all_cps`, `requests`, `messages`, `kafka`, and with a
weather desk and module health, `weather` and `health`); after that the hub pushes only what
changed (a `weather` or `health` frame carries the whole body again: they are small). It subscribes once to `CentralService`; every client has a bounded queue
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
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from evcharging.adapters.broker_state import KafkaState
from evcharging.adapters.web.central_ws_admin import WsAdmin
from evcharging.services.admin import AdminDesk
from evcharging.services.audit import UNKNOWN_IP
from evcharging.services.central import CentralService
from evcharging.services.central_views import (
    CentralChange,
    CPChanged,
    CPView,
    MessageAdded,
    RequestChanged,
    RequestView,
)
from evcharging.services.module_health import HealthJson, ModuleHealth
from evcharging.services.public_views import (
    public_cp,
    public_message,
    public_request,
    public_request_key,
)
from evcharging.services.weather_desk import WeatherDesk

log = logging.getLogger(__name__)

Frame = dict[str, Any]

_SEND_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def encode(frame: Frame) -> str:
    """orjson: at thousands of CP views a second, the stdlib encoder was 4 % of Central's time."""
    return orjson.dumps(frame).decode()


@dataclass(frozen=True, slots=True)
class _Kafka:
    state: dict[str, object]


@dataclass(frozen=True, slots=True)
class _Weather:
    body: dict[str, Any]  # GET /api/v1/weather's body


@dataclass(frozen=True, slots=True)
class _Health:
    body: dict[str, Any]  # GET /api/v1/health's body


class _Resync:
    """The queue overflowed: send the full state again."""


Change = CentralChange | _Kafka | _Weather | _Health | _Resync
Item = tuple[Change, int]  # (change, ts in epoch ms)


# --- server -> client: the live feed ------------------------------------------------------


def coalesce(batch: list[Item]) -> list[Frame]:
    """Pending changes -> frames: the latest view per CP, the latest state of each changed request
    row (None: it left the table), then every message, then the latest weather and health bodies.
    Each frame's `ts` is its oldest change (the weather's and health's: their latest)."""
    latest: dict[str, Frame] = {}
    cps: dict[str, CPView] = {}
    cps_ts: int | None = None
    rows: dict[str, RequestView | None] = {}
    rows_ts: int | None = None
    messages: list[Frame] = []
    for change, ts in batch:
        if isinstance(change, CPChanged):
            cp_id = change.view.json["id"]
            cps.pop(cp_id, None)
            cps[cp_id] = change.view
            cps_ts = ts if cps_ts is None else min(cps_ts, ts)
        elif isinstance(change, RequestChanged):
            rows.pop(change.key, None)
            rows[change.key] = change.view
            rows_ts = ts if rows_ts is None else min(rows_ts, ts)
        elif isinstance(change, MessageAdded):
            messages.append({"type": "message", **change.view.json, "ts": ts})
        elif isinstance(change, _Kafka):
            messages.append({"type": "kafka", **change.state, "ts": ts})
        elif isinstance(change, _Weather):
            latest["weather"] = {"type": "weather", **change.body, "ts": ts}
        elif isinstance(change, _Health):
            latest["health"] = {"type": "health", **change.body, "ts": ts}
    frames: list[Frame] = []
    if cps:
        views = [view.json for view in cps.values()]
        frames.append({"type": "cps", "charging_points": views, "ts": cps_ts})
    if rows:
        changed = [row.json for row in rows.values() if row is not None]
        removed = [key for key, row in rows.items() if row is None]
        frames.append(
            {"type": "request_changes", "changed": changed, "removed": removed, "ts": rows_ts}
        )
    return frames + messages + list(latest.values())


@dataclass(eq=False)
class _Client:
    ws: WebSocket
    name: str
    ip: str  # the page's address: admin rows in the audit log carry it
    queue: asyncio.Queue[Item]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    behind: bool = False
    admin: bool = False  # proved the admin token: unmasked views from then on
    epoch: int = 0  # bumped at login: a batch taken before it is covered by the new snapshot

    def offer(self, item: Item) -> None:
        """Never blocks: a full queue is dropped and replaced by a request for the full state."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait((_Resync(), item[1]))
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


def _public(change: Change) -> Change:
    """A change as the public stream carries it (masked once, whatever the number of sockets)."""
    if isinstance(change, CPChanged):
        shown = public_cp(change.view)
        return change if shown is change.view else CPChanged(shown)
    if isinstance(change, RequestChanged):
        view = None if change.view is None else public_request(change.view)
        return RequestChanged(public_request_key(change.key), view)
    if isinstance(change, MessageAdded):
        return MessageAdded(public_message(change.view))
    return change


class DashboardHub:
    """Pushes Central's changes to every open socket (masked to any that has not proved the admin
    token) and, unless `public`, runs the admin actions they send. `weather` and `health`: where the `weather` and `health` frames come from (None:
    none are sent)."""

    def __init__(
        self,
        service: CentralService,
        desk: AdminDesk,
        *,
        queue_size: int = 1000,
        send_timeout: float = 5.0,
        weather: WeatherDesk | None = None,
        health: ModuleHealth | None = None,
        public: bool = False,
    ) -> None:
        self.service = service
        self.admin = WsAdmin(desk)  # the admin front door the HTTP API uses too
        self.queue_size = queue_size
        self.send_timeout = send_timeout
        self.public = public
        self.label = "stream" if public else "ws"
        self.weather = weather
        self.health = health
        self._clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self.kafka: dict[str, object] = KafkaState(up=True).as_dict()
        service.subscribe(self._on_change)
        if weather is not None:
            weather.subscribe(self._on_weather)
        if health is not None:
            health.subscribe(self._on_health)

    def _on_weather(self) -> None:
        if self._clients and self.weather is not None:
            self._on_change(_Weather(dict(self.weather.json)))

    def _on_health(self, body: HealthJson) -> None:
        self._on_change(_Health(dict(body)))

    def set_kafka(self, state: KafkaState) -> None:
        """Kafka reachable or not, as Central's watch says: every page shows a banner."""
        self.kafka = state.as_dict()
        self._on_change(_Kafka(self.kafka))

    @property
    def client_count(self) -> int:
        return len(self._clients)

    # --- fan-out (called synchronously by CentralService) ---------------------------------

    def _on_change(self, change: Change) -> None:
        loop = self._loop
        if loop is None or not self._clients:
            return
        item: Item = (change, now_ms())
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
        """Each socket gets the change as it may see it: masked once for every public one."""
        clients = tuple(self._clients)
        masked: Item | None = None
        for client in clients:
            if client.admin:
                client.offer(item)
                continue
            if masked is None:
                masked = (_public(item[0]), item[1])
            client.offer(masked)

    def snapshot(self, *, full: bool = False) -> list[Frame]:
        """The whole state, masked unless `full` (a public hub's is always masked)."""
        ts = now_ms()
        svc = self.service
        cps, requests, messages = svc.cps(), svc.requests(), svc.messages()
        if self.public or not full:
            cps = [public_cp(v) for v in cps]
            requests = [public_request(v) for v in requests]
            messages = [public_message(v) for v in messages]
        frames: list[Frame] = [
            {"type": "all_cps", "charging_points": [v.json for v in cps], "ts": ts},
            {"type": "requests", "requests": [v.json for v in requests], "ts": ts},
            {"type": "messages", "messages": [v.json for v in messages], "ts": ts},
            {"type": "kafka", **self.kafka, "ts": ts},
        ]
        if self.weather is not None:
            frames.append({"type": "weather", **self.weather.json, "ts": ts})
        if self.health is not None:
            frames.append({"type": "health", **self.health.json, "ts": ts})
        return frames

    # --- one socket ----------------------------------------------------------------------

    async def serve(self, ws: WebSocket) -> None:
        """The `/ws` endpoint: full state, then pushes, while reading actions from the page."""
        await ws.accept()
        self._loop = asyncio.get_running_loop()
        ip = ws.client.host if ws.client else UNKNOWN_IP
        client = _Client(ws, self._name(ws), ip, asyncio.Queue(self.queue_size))
        self._clients.add(client)  # joined and snapshotted in one step: no change falls between
        first = self.snapshot()
        log.info("%s %s: connected (%d open)", self.label, client.name, len(self._clients))
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
                    log.error("%s %s: task failed", self.label, client.name, exc_info=outcome)
            await self._close(client)
            log.info("%s %s: gone (%d open)", self.label, client.name, len(self._clients))

    def _name(self, ws: WebSocket) -> str:
        peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
        return f"#{next(self._ids)} {peer}"

    async def _push(self, client: _Client, first: list[Frame]) -> None:
        if not await self._send(client, first, 0):
            return
        while True:
            batch = await client.next_batch()
            epoch = client.epoch
            if any(isinstance(change, _Resync) for change, _ in batch):
                client.behind = False
                frames = self.snapshot(full=client.admin)
            else:
                frames = coalesce(batch)
            if not await self._send(client, frames, epoch):
                return

    async def _read(self, client: _Client) -> None:
        said = False
        while True:
            message = await client.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if self.public:  # read only: nothing a page sends is acted on
                if not said:
                    log.info("stream %s: sent a frame; the stream is read only", client.name)
                said = True
                continue
            reply = await self.admin.handle(message.get("text"), client.name, client.ip)
            if not await self._reply(client, {**reply, "ts": now_ms()}):
                return

    async def _reply(self, client: _Client, reply: Frame) -> bool:
        """The reply to the socket's own frame; the first one that shows the admin token was
        accepted makes the socket the admin's, and is followed by the whole state unmasked."""
        if client.admin or reply.get("type") == "error":
            return await self._send(client, [reply])
        async with client.lock:  # no masked frame slips in between: the pusher waits here
            client.admin = True
            client.epoch += 1  # a batch the pusher already took is covered by this snapshot
            while not client.queue.empty():
                client.queue.get_nowait()
            client.behind = False
            frames = [reply, *self.snapshot(full=True)]
            log.info("%s %s: admin logged in: unmasked views", self.label, client.name)
            return await self._send_locked(client, frames)

    async def _send(self, client: _Client, frames: list[Frame], epoch: int | None = None) -> bool:
        """Send in order, one writer at a time; False when the client is gone or too slow.
        `epoch`: the client's when the frames were made; frames made before a login are dropped
        (the login's snapshot, already sent, covers them)."""
        async with client.lock:
            if epoch is not None and epoch != client.epoch:
                return True
            return await self._send_locked(client, frames)

    async def _send_locked(self, client: _Client, frames: list[Frame]) -> bool:
        """Send in order; the caller holds the client's lock."""
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
