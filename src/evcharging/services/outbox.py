"""The ordered outbox of a CP's events, for every program that speaks as CPs (the Engine, EV_OCPP).

Why one home: a CP's events must reach Kafka in the order they happened, a state change must
never wait for the broker (a KO, a charger's answer stay instant while Kafka is away), and an
event leaves the queue only once delivered, so what the broker has not acked is sent again.
`delivered` callbacks run after the ack (the Engine and the gateway forget a finished supply
then, not before).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from evcharging.contracts.events import Event
from evcharging.services.ports import Publisher


@dataclass
class _Outgoing:
    event: Event
    delivered: Callable[[], None] | None = None


class Outbox:
    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self._queue: deque[_Outgoing] = deque()
        self._flushing = asyncio.Lock()
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def emit(self, event: Event, delivered: Callable[[], None] | None = None) -> None:
        self._queue.append(_Outgoing(event, delivered))
        self._wake.set()

    async def flush(self) -> None:
        """Publish everything pending, in order; an event leaves the queue once delivered."""
        async with self._flushing:
            while self._queue:
                item = self._queue[0]
                # `delivered` runs once acked, whichever mode `publish` ran in
                await self._publisher.publish(item.event, on_delivered=item.delivered)
                self._queue.popleft()

    async def run(self) -> None:
        """The program's background task: deliver events as soon as they are emitted."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
