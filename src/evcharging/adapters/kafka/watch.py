"""Whether this process can use Kafka, said once per change, never once per retry.

aiokafka retries on its own while a broker is away, logging every failed connection, metadata
refresh and fetch (tens of lines a second per program; see `quiet_client_logs`). A program runs
one `KafkaWatch` instead: it asks the broker for its metadata every second, and says in one line
when Kafka becomes unreachable (or lacks our topics) and one line when it is back, with how long
it was away. Dashboards show the same state as a banner (`subscribe`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from evcharging.adapters.broker_state import KafkaState
from evcharging.contracts.topics import ALL_TOPICS, Topic

log = logging.getLogger(__name__)


def quiet_client_logs() -> None:
    """aiokafka's own log lines are for debugging it: `EV_LOG_LEVEL=DEBUG` shows them again."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


Listener = Callable[[KafkaState], None]


class KafkaWatch:
    def __init__(
        self,
        bootstrap: str,
        *,
        topics: Sequence[Topic] = ALL_TOPICS,
        interval: float = 1.0,
        failures_to_say: int = 2,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = tuple(topics)
        self.interval = interval
        self.failures_to_say = failures_to_say  # one lost probe is not an outage
        self.state = KafkaState(up=True, since=time.time())
        self._said_up = False
        self._failures = 0
        self._down_at: float | None = None
        self._client: AIOKafkaClient | None = None
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def run(self) -> None:
        try:
            while True:
                self.observe(await self.probe())
                await asyncio.sleep(self.interval)
        finally:
            await self._drop_client()

    async def probe(self) -> str | None:
        """None when the broker answers and has our topics; otherwise what is wrong."""
        try:
            async with asyncio.timeout(max(self.interval, 1.0)):
                if self._client is None:
                    client = AIOKafkaClient(
                        bootstrap_servers=self.bootstrap, client_id="evcharging-watch"
                    )
                    self._client = client
                    await client.bootstrap()
                cluster = await self._client.fetch_all_metadata()
        except (KafkaError, OSError, TimeoutError):
            await self._drop_client()
            return f"Kafka unreachable at {self.bootstrap}"
        missing = [t.name for t in self.topics if t.name not in cluster.topics()]
        if missing:
            return f"Kafka at {self.bootstrap} has no topic {', '.join(missing)} yet"
        return None

    def observe(self, problem: str | None) -> None:
        """One probe's outcome -> at most one line, when the state changes."""
        now = time.time()
        if problem is None:
            self._failures = 0
            if not self.state.up:
                away = now - (self._down_at or now)
                log.warning("Kafka back at %s after %.0f s", self.bootstrap, away)
                self._set(KafkaState(up=True, since=now))
            elif not self._said_up:
                log.info("Kafka reachable at %s", self.bootstrap)
            self._said_up = True
            return
        self._failures += 1
        if self._failures == 1:
            self._down_at = now
        if self.state.up and self._failures >= self.failures_to_say:
            hint = "retrying" if "unreachable" in problem else "waiting (evcharging kafka topics)"
            log.warning("%s; %s", problem, hint)
            self._set(KafkaState(up=False, problem=problem, since=self._down_at or now))

    def _set(self, state: KafkaState) -> None:
        self.state = state
        for listener in list(self._listeners):
            listener(state)

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except (KafkaError, OSError) as exc:
                log.debug("closing the watch's Kafka client: %s", exc)
