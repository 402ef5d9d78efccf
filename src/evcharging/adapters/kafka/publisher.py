"""Publishes events to the topic and key their contract names.

`publish` has two modes, and says which one ran (`Delivery`, the port's type):

* `Delivery.ACKED`: the default. It returns once the broker has the event (acks=all).
* `Delivery.QUEUED_UNTIL_BATCH_COMMIT`: only in the task that handles a consumed batch inside
  `acks_before_commit()` (the consumer opens it around each fetched batch). The event is handed
  to the producer and `publish` returns at once; the consumer settles the acks of the whole batch
  before it commits the batch's offsets. A batch of N requests then costs one broker round trip,
  not N in a row (what lets Central hold N=10,000 CPs), and nothing is committed before what it
  caused is durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

from evcharging.adapters.kafka.partitions import partition_for
from evcharging.adapters.kafka.retry import describe, failure_level, start_with_retry
from evcharging.contracts.events import Event
from evcharging.services.cp_keys import CpTopicCodec, KeyUnavailable
from evcharging.services.ports import Delivery

log = logging.getLogger(__name__)

OnDelivered = Callable[[], None] | None
NOT_SENT_QUIET = 10.0  # seconds between two "not sent: no key" lines for one CP


@dataclass(eq=False)
class PendingAcks:
    """Events queued while one task handles a consumed batch, to be acked before its commit.

    Made by `acks_before_commit()`; its owner must `settle()` it before committing the batch."""

    owner: asyncio.Task[object] | None = field(default_factory=asyncio.current_task)
    _items: list[tuple[EventPublisher, asyncio.Future[object], Event, OnDelivered]] = field(
        default_factory=list
    )

    def __len__(self) -> int:
        return len(self._items)

    def add(
        self,
        publisher: EventPublisher,
        delivery: asyncio.Future[object],
        event: Event,
        on_delivered: OnDelivered,
    ) -> None:
        self._items.append((publisher, delivery, event, on_delivered))

    async def settle(self) -> None:
        """Every queued event acked (a failed one is re-sent until it is), in the order queued."""
        items, self._items = self._items, []
        for publisher, delivery, event, on_delivered in items:
            await publisher.confirm(delivery, event, on_delivered)


_pending: ContextVar[PendingAcks | None] = ContextVar("evcharging_pending_acks", default=None)


@contextmanager
def acks_before_commit() -> Iterator[PendingAcks]:
    """Batch mode for the current task: inside it, `publish` returns
    `Delivery.QUEUED_UNTIL_BATCH_COMMIT` instead of waiting for each ack.

    The caller owns the returned acks: it must `await acks.settle()` (every queued event acked,
    re-sent until it is, `on_delivered` run) before it commits the offsets of the batch handled
    inside. Tasks spawned inside are not in batch mode: their `publish` waits for the ack."""
    acks = PendingAcks()
    token = _pending.set(acks)
    try:
        yield acks
    finally:
        _pending.reset(token)


def _batch_acks_here() -> PendingAcks | None:
    """Only the task that opened the batch defers: tasks it spawns copy the context too."""
    acks = _pending.get()
    if acks is None or acks.owner is not asyncio.current_task():
        return None
    return acks


class EventPublisher:
    """One producer per process; `publish` waits for the broker instead of dropping an event."""

    def __init__(
        self,
        bootstrap: str,
        source: str,
        *,
        retry_delay: float = 0.5,
        codec: CpTopicCodec | None = None,
    ) -> None:
        """`codec`: seals the records of cp-events/cp-commands (Central, an Engine); without
        one, every record is the event's plain JSON (drivers, tools)."""
        self.bootstrap = bootstrap
        self.source = source
        self.codec = codec
        self._not_sent_said: dict[str, float] = {}  # CP id -> when its last refusal was logged
        self._retry_delay = retry_delay
        self._producer: AIOKafkaProducer | None = None
        self._ready = asyncio.Event()
        self._starter: asyncio.Task[None] | None = None
        self._retries: set[asyncio.Task[None]] = set()
        # publish_soon's queue, sent once the caller yields: the latest event per kind and key,
        # so it never holds more than one per driver or CP however far the broker falls behind
        self._soon: dict[tuple[str, str], Event] = {}
        self._soon_flush: asyncio.Task[None] | None = None
        self._soon_lock = asyncio.Lock()

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

    async def publish(self, event: Event, *, on_delivered: OnDelivered = None) -> Delivery:
        """Sends and waits for the broker's ack (`ACKED`) or, in `acks_before_commit()`, queues it
        for the batch's settle (`QUEUED_UNTIL_BATCH_COMMIT`); retries on broker errors so nothing
        is dropped. `on_delivered` runs after the ack."""
        if event.source == "unknown":
            event = event.model_copy(update={"source": self.source})
        if self.codec is not None and self.codec.not_to_send(event):
            self._say_not_sent(event)
            return Delivery.NOT_SENT_NO_KEY
        acks = _batch_acks_here()
        if acks is not None and self._producer is not None and self._ready.is_set():
            try:
                delivery = await self._send(event)
            except KeyUnavailable:
                pass  # sent by the loop below once a key is there
            except KafkaError as exc:
                log.log(
                    failure_level(exc),
                    "publish %s: %s; sending it with retries",
                    event.event_type,
                    describe(exc),
                )
            else:
                acks.add(self, delivery, event, on_delivered)
                return Delivery.QUEUED_UNTIL_BATCH_COMMIT
        await self._send_until_acked(event)
        if on_delivered is not None:
            on_delivered()
        return Delivery.ACKED

    async def confirm(
        self, delivery: asyncio.Future[object], event: Event, on_delivered: OnDelivered
    ) -> None:
        """Wait for a queued event's ack; if it failed, send it again until the broker has it."""
        try:
            await delivery
        except KafkaError as exc:
            log.log(
                failure_level(exc),
                "delivery of %s failed (%s), retrying",
                event.event_type,
                describe(exc),
            )
            await self._send_until_acked(event)
        if on_delivered is not None:
            on_delivered()

    async def _send_until_acked(self, event: Event) -> None:
        if not self._ready.is_set():
            self.start_in_background()
            await self._ready.wait()
        assert self._producer is not None
        delay = self._retry_delay
        while True:
            try:
                await (await self._send(event))
            except KeyUnavailable:
                assert self.codec is not None
                if not self.codec.hold_without_key:  # revoked between two attempts
                    log.warning(
                        "%s for CP %s dropped: its keys were revoked before it was sent",
                        event.event_type,
                        event.key(),
                    )
                    return
                log.info("%s for %s waits for the CP's key", event.event_type, event.key())
                await self.codec.key_for(event)
            except KafkaError as exc:
                log.log(
                    failure_level(exc),
                    "publish %s to %s failed (%s), retrying in %.1fs",
                    event.event_type,
                    event.TOPIC.name,
                    describe(exc),
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
        """Queues the event and returns; nobody waits for the broker.

        For high-rate events whose loss is harmless because a later one supersedes them (live
        progress, board states): an event still queued when a newer one of the same kind and key
        arrives is replaced by it. What is queued while the caller runs (a consumed batch, say)
        goes out once it yields, in one record batch per partition (half the CPU of
        `producer.send` per event). A failed delivery is retried in the background. Order holds
        among queued events of a key, not against `publish`: a driver drops progress that
        arrives after its ticket (`DriverService._stale`)."""
        if event.source == "unknown":
            event = event.model_copy(update={"source": self.source})
        if not self._ready.is_set() or self._producer is None:
            self._background(self._send_until_acked(event))
            return
        slot = (event.event_type, event.key())
        self._soon.pop(slot, None)  # superseded: only the latest per kind and key goes out
        self._soon[slot] = event
        if self._soon_flush is None:
            self._soon_flush = asyncio.create_task(self._flush_soon_when_idle())

    async def _flush_soon_when_idle(self) -> None:
        try:
            while self._soon:  # what was queued while a batch was on its way goes out too
                await self.flush_soon()
        finally:
            self._soon_flush = None

    async def flush_soon(self) -> None:
        """Send what `publish_soon` queued: one record batch per partition, in queued order."""
        async with self._soon_lock:
            events, self._soon = list(self._soon.values()), {}
            if not events:
                return
            assert self._producer is not None
            by_partition: dict[tuple[str, int], list[Event]] = {}
            counts: dict[str, int] = {}
            for event in events:
                topic = event.TOPIC.name
                count = counts.get(topic)
                if count is None:
                    count = counts[topic] = len(
                        self._producer.client.cluster.partitions_for_topic(topic) or ()
                    )
                if not count:  # no metadata yet: the producer's own path waits for it
                    await self._send_one_soon(event)
                    continue
                where = (topic, partition_for(event.key(), count))
                by_partition.setdefault(where, []).append(event)
            for (topic, partition), queued in by_partition.items():
                await self._send_batches(topic, partition, queued)

    async def _send_batches(self, topic: str, partition: int, events: list[Event]) -> None:
        assert self._producer is not None
        batch, in_batch = self._producer.create_batch(), list[Event]()
        for event in events:
            try:
                value, key = self._encode(event), event.key().encode()
            except KeyUnavailable:
                self._background(self._send_until_acked(event))
                continue
            if batch.append(key=key, value=value, timestamp=None) is None:
                await self._send_batch(batch, topic, partition, in_batch)
                batch, in_batch = self._producer.create_batch(), []
                if batch.append(key=key, value=value, timestamp=None) is None:
                    await self._send_one_soon(event)  # larger than a whole batch
                    continue
            in_batch.append(event)
        await self._send_batch(batch, topic, partition, in_batch)

    async def _send_batch(
        self, batch: BatchBuilder, topic: str, partition: int, events: list[Event]
    ) -> None:
        if not events:
            return
        assert self._producer is not None
        try:
            delivery = await self._producer.send_batch(batch, topic, partition=partition)
        except KafkaError as exc:
            log.log(
                failure_level(exc),
                "%d events to %s queued for retry (%s)",
                len(events),
                topic,
                describe(exc),
            )
            for event in events:
                self._background(self._send_until_acked(event))
            return
        delivery.add_done_callback(lambda f: self._delivered(f, events))

    async def _send_one_soon(self, event: Event) -> None:
        try:
            delivery = await self._send(event)
        except KeyUnavailable:
            self._background(self._send_until_acked(event))
            return
        except KafkaError as exc:
            log.log(
                failure_level(exc),
                "publish %s queued for retry (%s)",
                event.event_type,
                describe(exc),
            )
            self._background(self._send_until_acked(event))
            return
        delivery.add_done_callback(lambda f: self._delivered(f, [event]))

    def _say_not_sent(self, event: Event) -> None:
        """Once per CP per NOT_SENT_QUIET seconds (anyone can ask a CP's menu for a supply on
        driver-events, so an unauthenticated CP's refusals must not flood the log)."""
        cp_id, now = event.key(), time.monotonic()
        if now - self._not_sent_said.get(cp_id, -NOT_SENT_QUIET) < NOT_SENT_QUIET:
            return
        self._not_sent_said[cp_id] = now
        log.warning(
            "%s for CP %s not sent: it holds no key (not authenticated); said once per %g s",
            event.event_type,
            cp_id,
            NOT_SENT_QUIET,
        )

    def _encode(self, event: Event) -> bytes:
        """The record value: sealed at each send (a retry gets a fresh nonce and the newest
        key), so nothing sealed with a key revoked meanwhile is sent again."""
        return event.to_bytes() if self.codec is None else self.codec.encode(event)

    async def _send(self, event: Event) -> asyncio.Future[object]:
        """Hand one event to the producer (its topic, its key); the future is its ack.
        KeyUnavailable when it must be sealed and no key is held yet."""
        assert self._producer is not None
        return await self._producer.send(
            event.TOPIC.name, self._encode(event), key=event.key().encode()
        )

    def _delivered(self, delivery: asyncio.Future[object], events: list[Event]) -> None:
        if delivery.cancelled() or delivery.exception() is None:
            return
        exc = delivery.exception()
        assert exc is not None
        log.log(
            failure_level(exc),
            "delivery of %d %s failed (%s), retrying",
            len(events),
            events[0].event_type,
            describe(exc),
        )
        for event in events:
            self._background(self._send_until_acked(event))

    def _background(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(work)
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def stop(self) -> None:
        if self._starter is not None and not self._starter.done():
            self._starter.cancel()
        if self._producer is not None:
            await self.flush_soon()  # what was queued goes out with the producer's last flush
            await self._producer.stop()
