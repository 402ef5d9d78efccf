"""Publishes events to the topic and key their contract names."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from evcharging.adapters.kafka.retry import start_with_retry
from evcharging.contracts.events import Event

log = logging.getLogger(__name__)


class EventPublisher:
    """One producer per process; `publish` waits for the broker instead of dropping an event."""

    def __init__(self, bootstrap: str, source: str, *, retry_delay: float = 0.5) -> None:
        self.bootstrap = bootstrap
        self.source = source
        self._retry_delay = retry_delay
        self._producer: AIOKafkaProducer | None = None
        self._ready = asyncio.Event()
        self._starter: asyncio.Task[None] | None = None
        self._retries: set[asyncio.Task[None]] = set()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.source,
            acks="all",
            linger_ms=0,
            request_timeout_ms=10000,
            retry_backoff_ms=100,
        )

    async def start(self) -> None:
        """Connects, retrying until the broker answers."""

        async def attempt() -> None:
            producer = self._new_producer()
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer

        await start_with_retry(attempt, self.bootstrap, f"producer {self.source}")
        self._ready.set()
        log.info("producer %s connected to Kafka at %s", self.source, self.bootstrap)

    def start_in_background(self) -> None:
        """For programs that must come up (and show their screen) before the broker does."""
        if self._starter is None:
            self._starter = asyncio.create_task(self.start(), name=f"kafka-producer-{self.source}")

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def publish(self, event: Event) -> None:
        """Sends and waits for the broker's ack; retries on broker errors so nothing is dropped."""
        if event.source == "unknown":
            event = event.model_copy(update={"source": self.source})
        if not self._ready.is_set():
            self.start_in_background()
            await self._ready.wait()
        assert self._producer is not None
        delay = self._retry_delay
        while True:
            try:
                await self._producer.send_and_wait(
                    event.TOPIC.name, event.to_bytes(), key=event.key().encode()
                )
            except KafkaError as exc:
                log.warning(
                    "publish %s to %s failed (%s), retrying in %.1fs",
                    event.event_type,
                    event.TOPIC.name,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                log.debug(
                    "published %s key=%s id=%s", event.event_type, event.key(), event.event_id
                )
                return

    async def publish_soon(self, event: Event) -> None:
        """Hands the event to the producer's batch and returns without waiting for the broker.

        For high-rate events whose loss is harmless because a later one supersedes them (live
        progress, board states): a failed delivery is retried in the background, in order per key
        as far as Kafka keeps it, but nobody waits for it."""
        if event.source == "unknown":
            event = event.model_copy(update={"source": self.source})
        if not self._ready.is_set() or self._producer is None:
            self._background(self.publish(event))
            return
        try:
            delivery = await self._producer.send(
                event.TOPIC.name, event.to_bytes(), key=event.key().encode()
            )
        except KafkaError as exc:
            log.warning("publish %s queued for retry (%s)", event.event_type, exc)
            self._background(self.publish(event))
            return
        delivery.add_done_callback(lambda f: self._delivered(f, event))

    def _delivered(self, delivery: asyncio.Future[object], event: Event) -> None:
        if delivery.cancelled() or delivery.exception() is None:
            return
        log.warning("delivery of %s failed (%s), retrying", event.event_type, delivery.exception())
        self._background(self.publish(event))

    def _background(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(work)
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def stop(self) -> None:
        if self._starter is not None and not self._starter.done():
            self._starter.cancel()
        if self._producer is not None:
            await self._producer.stop()
