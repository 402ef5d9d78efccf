"""What the benchmarks watch: Central's admin WebSocket (the screen) and central-events (what the
drivers get), each message stamped with the wall-clock time it arrived."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from websockets.asyncio.client import connect

from evcharging.contracts.topics import CENTRAL_EVENTS

log = logging.getLogger(__name__)

View = dict[str, Any]
Waiter = tuple[Callable[[View], bool], "asyncio.Future[float]"]


def energy_wh(view: View) -> int:
    text = view.get("energy_kwh")
    return -1 if text is None else round(float(text) * 1000)


class Dashboard:
    """Central's `/ws` as an operator's page gets it: logged in with `token` (a page that has not
    logged in gets driver ids masked), the `all_cps` after that, then `cps` pushes.

    Keeps each CP's latest state and energy; while `recording`, also every energy each CP showed
    and when (for the telemetry join), the delay of each `cps` frame after Central's `ts`, and
    the CPs shown Desconectado while `watch_disconnects` is on (none should be)."""

    def __init__(self, url: str, cp_ids: Sequence[str], token: str | None = None) -> None:
        self.url = url
        self.token = token
        self.logged_in = token is None
        self.index = {cp_id: i for i, cp_id in enumerate(cp_ids)}
        n = len(cp_ids)
        self.state: list[str | None] = [None] * n
        self.energy: list[int] = [-1] * n
        self.with_session: list[bool] = [False] * n
        self.counts: Counter[str] = Counter()
        self.recording = False
        self.seen_wh: list[array[int]] = [array("i") for _ in range(n)]
        self.seen_t: list[array[float]] = [array("d") for _ in range(n)]
        self.push_delay_s: array[float] = array("d")
        self.watch_disconnects = False
        self.wrongly_disconnected: set[str] = set()
        self.frames: Counter[str] = Counter()
        self.views = 0
        self.snapshot = asyncio.Event()
        self._waiters: dict[int, list[Waiter]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self, within: float = 60.0) -> None:
        self._task = asyncio.create_task(self._run(), name="dashboard")
        async with asyncio.timeout(within):
            await self.snapshot.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def failed(self) -> BaseException | None:
        task = self._task
        return (
            task.exception() if task is not None and task.done() and not task.cancelled() else None
        )

    async def _run(self) -> None:
        async with connect(self.url, max_size=None, ping_interval=None) as ws:
            if self.token is not None:
                await ws.send(json.dumps({"type": "login", "token": self.token}))
            async for message in ws:
                self._on_frame(json.loads(message), time.time())

    def _on_frame(self, frame: dict[str, Any], t: float) -> None:
        kind = frame.get("type", "?")
        self.frames[kind] += 1
        if kind == "all_cps":
            for view in frame["charging_points"]:
                self._on_view(view, t)
            if self.logged_in:  # the whole state the operator sees (right after `logged_in`)
                self.snapshot.set()
        elif kind == "logged_in":
            self.logged_in = True
        elif kind == "error":
            log.error("Central refused the observer's frame: %s", frame.get("reason"))
        elif kind == "cps":
            if self.recording:
                self.push_delay_s.append(max(0.0, t - frame["ts"] / 1000))
            for view in frame["charging_points"]:
                self._on_view(view, t)

    def _on_view(self, view: View, t: float) -> None:
        i = self.index.get(view["id"])
        if i is None:
            return
        self.views += 1
        state = view["state"]
        if state != self.state[i]:
            if self.state[i] is not None:
                self.counts[self.state[i]] -= 1  # type: ignore[index]
            self.counts[state] += 1
            self.state[i] = state
            if state == "Desconectado" and self.watch_disconnects:
                self.wrongly_disconnected.add(view["id"])
        self.with_session[i] = view.get("session_id") is not None
        wh = energy_wh(view)
        if wh != self.energy[i]:
            self.energy[i] = wh
            if self.recording and wh >= 0:
                self.seen_wh[i].append(wh)
                self.seen_t[i].append(t)
        waiters = self._waiters.get(i)
        if waiters:
            for waiter in list(waiters):
                check, fut = waiter
                if not fut.done() and check(view):
                    fut.set_result(t)
                    waiters.remove(waiter)

    def until(self, cp_id: str, check: Callable[[View], bool]) -> asyncio.Future[float]:
        """A future set to the arrival time of the first view of `cp_id` that passes `check`."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(self.index[cp_id], []).append((check, fut))
        return fut

    def seen(self) -> dict[int, tuple[array[int], array[float]]]:
        return {i: (self.seen_wh[i], self.seen_t[i]) for i in range(len(self.seen_wh))}

    async def wait_count(self, state: str, count: int, within: float) -> bool:
        """Until at least `count` CPs show `state` (polled every 50 ms); False on timeout."""
        deadline = time.monotonic() + within
        while self.counts[state] < count:
            if time.monotonic() > deadline or self.failed is not None:
                return False
            await asyncio.sleep(0.05)
        return True

    async def wait_no_sessions(self, within: float) -> bool:
        deadline = time.monotonic() + within
        while any(self.with_session):
            if time.monotonic() > deadline or self.failed is not None:
                return False
            await asyncio.sleep(0.1)
        return True


class DriverInbox:
    """central-events from now on, as the drivers get them, matched to what a benchmark awaits.

    A waiter is registered before the request is sent, under a key made of the event type and
    the fields that identify the answer (request id, session id, or CP and driver)."""

    def __init__(self, kafka: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka,
            client_id="bench-drivers",
            enable_auto_commit=False,
            fetch_max_wait_ms=20,  # as the Driver's own consumer (adapters/kafka/consumer.py)
        )
        self._waiters: dict[tuple[str, ...], asyncio.Future[tuple[float, dict[str, Any]]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.received = 0

    async def start(self) -> None:
        await self._consumer.start()
        tps = [TopicPartition(CENTRAL_EVENTS.name, p) for p in range(CENTRAL_EVENTS.partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run(), name="driver-inbox")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    def expect(self, *key: str) -> asyncio.Future[tuple[float, dict[str, Any]]]:
        fut: asyncio.Future[tuple[float, dict[str, Any]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiters[key] = fut
        return fut

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            t = time.time()
            for records in batches.values():
                for record in records:
                    self.received += 1
                    self._on_event(json.loads(record.value or b"{}"), t)

    def _on_event(self, event: dict[str, Any], t: float) -> None:
        kind = event.get("event_type", "")
        if kind == "AUTHORIZATION_RESPONSE":
            key: tuple[str, ...] = (kind, str(event["request_id"]))
        elif kind == "CHARGING_TICKET":
            key = (kind, str(event["session_id"]))
        elif kind == "DRIVER_NOTICE":
            key = (kind, str(event["driver_id"]), str(event["message"]))
        elif kind in ("CP_ERROR_SIMULATED", "CP_ERROR_FIXED"):
            key = (kind, str(event["cp_id"]), str(event.get("driver_id")))
        else:
            return
        fut = self._waiters.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result((t, event))
