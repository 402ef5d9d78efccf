"""Consumes events at least once: offsets are committed only after the handler returned.

Two ways to read: a group subscription to whole topics (Central), or only the partition one key
hashes to (an Engine reads its CP's commands, a Driver its own messages) so no client reads
everybody's traffic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from evcharging.adapters.kafka.partitions import partition_for
from evcharging.adapters.kafka.publisher import PendingAcks, acks_before_commit
from evcharging.adapters.kafka.retry import describe, failure_level, start_with_retry
from evcharging.adapters.kafka.router import EventRouter
from evcharging.contracts.events import BadEvent, Event, parse_event
from evcharging.contracts.sealed import SEALED_TOPICS, RejectKind
from evcharging.contracts.topics import Topic, base_of, namespaced
from evcharging.services.cp_keys import CpTopicCodec, RecordRejected

log = logging.getLogger(__name__)

__all__ = [
    "ConsumerStats",
    "EventConsumer",
    "KeyedRead",
    "Offsets",
    "Rejected",
    "end_offsets",
    "partition_for",
]

Offsets = dict[TopicPartition, int]

COMMIT_EVERY = 0.2  # seconds: the most a crash makes Central handle twice (idempotently)
QUIET_FOR = 10.0  # seconds: a kind of rejected record is logged once per this (each is audited)


@dataclass
class ConsumerStats:
    handled: int = 0
    skipped_bad: int = 0
    handler_errors: int = 0
    rejected: int = 0  # sealed records dropped (forged, replayed, old key, ...)
    bad_reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message skipped (malformed, or refused by the sealed topics' rules): where it was and
    why (never its content); `kind` is `malformed` or a `contracts.sealed.RejectKind`, `cp_id`
    the CP a sealed record claimed to come from."""

    topic: str
    partition: int
    offset: int
    reason: str
    kind: str = "malformed"
    cp_id: str | None = None


@dataclass(frozen=True)
class KeyedRead:
    """Read only the partition of `topic` that `key` hashes to, and only messages with that key."""

    topic: Topic
    key: str


async def end_offsets(bootstrap: str, topic: Topic) -> Offsets:
    """Where each partition of `topic` ends now (retrying until Kafka answers).

    A reader that learns its key later starts there on its first-ever run, so nothing sent to it
    between this snapshot and the moment it is positioned is skipped."""
    found: Offsets = {}

    async def attempt() -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="evcharging-snapshot")
        try:  # a consumer whose start failed is stopped too (else "Unclosed AIOKafkaConsumer")
            await consumer.start()
            partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
            found.update(await consumer.end_offsets(partitions))
        finally:
            await consumer.stop()

    await start_with_retry(attempt, bootstrap, f"end offsets of {topic.name}")
    return found


class EventConsumer:
    def __init__(
        self,
        bootstrap: str,
        group_id: str | None,
        router: EventRouter,
        *,
        topics: Sequence[Topic] = (),
        keyed: Sequence[KeyedRead] = (),
        offset_reset: str = "earliest",
        start_at: Offsets | None = None,
        on_error: Callable[[Event, Exception], Awaitable[None]] | None = None,
        static_member: str | None = None,
        on_rejected: Callable[[Rejected], None] | None = None,
        codec: CpTopicCodec | None = None,
        await_keys: float = 0.0,
        accept_key: Callable[[str], bool] | None = None,
    ) -> None:
        """`static_member`: a stable name for this reader in its group (Kafka's static
        membership), so a restarted process takes its partitions over at once instead of waiting
        for its dead predecessor's session to time out (measured: 9.7 s after a SIGKILL).
        `on_rejected`: told of every malformed message skipped (Central's audit log), once each.
        `codec`: opens the sealed records of cp-events/cp-commands (without one, plain JSON).
        `await_keys`: seconds to hold a record sealed with a key not held *yet* (an Engine
        reading a command sealed with the key its Monitor is about to hand over); 0: refuse.
        `accept_key`: with a subscription, which record keys concern this reader (EV_OCPP reads
        the commands of the CPs it holds); the others are skipped unread, before decoding."""
        if bool(topics) == bool(keyed):
            raise ValueError("give either topics (subscription) or keyed reads, not both")
        self.bootstrap = bootstrap
        self.group_id = namespaced(group_id) if group_id else None
        self.router = router
        self._topics = list(topics)
        self._keyed = list(keyed)
        self._offset_reset = offset_reset
        self._start_at = dict(start_at or {})
        self._on_error_cb = on_error
        self._on_rejected = on_rejected
        self._codec = codec
        self._await_keys = await_keys
        self._accept_key = accept_key
        self._quiet_until: dict[str, float] = {}  # per kind of rejection: no log line before
        self._quieted: dict[str, int] = {}  # rejections not logged meanwhile
        self._static_member = namespaced(static_member) if static_member else None
        self._committing: asyncio.Future[None] | None = None
        self._due: dict[TopicPartition, int] = {}  # settled, not yet committed
        self._last_commit = 0.0
        self._consumer: AIOKafkaConsumer | None = None
        self._keys: dict[TopicPartition, set[bytes]] = {}
        self.stats = ConsumerStats()
        self.ready = asyncio.Event()

    @property
    def name(self) -> str:
        """Its group, or (no group) what it reads."""
        if self.group_id:
            return self.group_id
        topics = ", ".join(t.name for t in self._topics)
        return f"of {topics}" if topics else "of keyed reads"

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            group_instance_id=self._static_member,
            client_id=self.group_id or "evcharging-reader",
            enable_auto_commit=False,
            auto_offset_reset=self._offset_reset,
            fetch_max_wait_ms=20,
            fetch_min_bytes=1,
            max_poll_records=500,
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
            retry_backoff_ms=100,
            metadata_max_age_ms=30000,
        )

    async def start(self) -> None:
        async def attempt() -> None:
            consumer = self._new_consumer()
            try:
                await consumer.start()
                await self._attach(consumer)
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer

        await start_with_retry(attempt, self.bootstrap, f"consumer {self.name}")
        log.info("consumer %s reading from Kafka at %s", self.name, self.bootstrap)

    async def _attach(self, consumer: AIOKafkaConsumer) -> None:
        if self._topics:
            consumer.subscribe([t.name for t in self._topics])
            return
        self._keys.clear()
        for read in self._keyed:
            tp = TopicPartition(read.topic.name, partition_for(read.key, read.topic.partitions))
            self._keys.setdefault(tp, set()).add(read.key.encode())
        consumer.assign(list(self._keys))
        for tp in self._keys:
            if self.group_id is None or await consumer.committed(tp) is None:
                if tp in self._start_at:
                    consumer.seek(tp, self._start_at[tp])
                elif self._offset_reset == "latest":
                    await consumer.seek_to_end(tp)
                else:
                    await consumer.seek_to_beginning(tp)

    async def _positioned(self) -> None:
        """Every assigned partition's position known ("latest" resolved to an offset), so that
        `ready` means: every event published from now on will be read."""
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            await self._consumer.position(tp)

    async def run(self) -> None:
        """Start (with retries), then handle messages until cancelled.

        A fetched batch is handled in order; what its handlers published is acked and its offsets
        committed by a settle task while the next batch is handled (one settle at a time, so
        commits stay in order, and none before the events they caused are durable)."""
        if self._consumer is None:
            await self.start()
        assert self._consumer is not None
        settling: asyncio.Task[None] | None = None
        try:
            while True:
                batches = await self._consumer.getmany(timeout_ms=200)
                if not self.ready.is_set() and self._consumer.assignment():
                    await self._positioned()
                    self.ready.set()
                if not batches:
                    if settling is not None and settling.done():
                        await settling
                        settling = None
                        await self._commit_settled()  # the tail of a burst, once quiet
                    continue
                # publish() in here returns QUEUED_UNTIL_BATCH_COMMIT: settled before the commit
                with acks_before_commit() as acks:
                    for tp, records in batches.items():
                        for record in records:
                            await self._handle(tp, record)
                offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
                if settling is not None:
                    await settling
                settling = asyncio.create_task(self._settle(acks, offsets), name="kafka-settle")
        finally:
            if settling is not None:
                await self._finish(settling)
            await self._commit_settled()
            await self._settle_commit()
            await self._consumer.stop()

    async def _settle(self, acks: PendingAcks, offsets: dict[TopicPartition, int]) -> None:
        """Acks, then the batch's offsets are due; committed at most every COMMIT_EVERY seconds
        (a commit per batch, or per partition, would cost a round trip each at high rates; a
        crash redelivers at most that much, and every handler is idempotent)."""
        try:
            await acks.settle()
        except Exception:  # a bug after an ack (e.g. in on_delivered): logged, the loop goes on
            log.exception("%s: settling a batch failed", self.group_id)
        self._due.update(offsets)
        if time.monotonic() - self._last_commit >= COMMIT_EVERY:
            await self._commit_settled()

    async def _commit_settled(self) -> None:
        if not self._due:
            return
        offsets, self._due = self._due, {}
        self._last_commit = time.monotonic()
        await self._commit(offsets)

    async def _finish(self, settling: asyncio.Task[None]) -> None:
        """On shutdown, give the last batch's acks and commit a moment; uncommitted is redelivered."""
        done, _ = await asyncio.wait([settling], timeout=5.0)
        if not done:
            settling.cancel()
            log.warning("%s: last batch not settled in 5 s; it will be redelivered", self.group_id)
            await asyncio.wait([settling])
        elif not settling.cancelled() and (exc := settling.exception()) is not None:
            log.log(
                failure_level(exc),
                "%s: last batch not settled (%s); it will be redelivered",
                self.group_id,
                describe(exc),
            )

    async def _settle_commit(self) -> None:
        """Let a commit cut short by cancellation finish, so its result is not lost in the void."""
        pending = self._committing
        if pending is None:
            return
        if not pending.done():
            await asyncio.wait([pending], timeout=2.0)
        if pending.done() and not pending.cancelled() and (exc := pending.exception()) is not None:
            log.log(
                failure_level(exc),
                "%s: last commit failed (%s); events may be redelivered",
                self.group_id,
                describe(exc),
            )

    async def _handle(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        wanted = self._keys.get(tp)
        if wanted is not None and record.key not in wanted:
            return
        if self._accept_key is not None and not self._accept_key(
            (record.key or b"").decode("utf-8", "replace")
        ):
            return
        try:
            event = await self._decode(tp, record)
        except RecordRejected as exc:
            self._refused(tp, record.offset, exc)
            return
        except BadEvent as exc:
            self.stats.skipped_bad += 1
            self.stats.bad_reasons.append(exc.reason)
            log.warning(
                "%s | %s | offset %s: skipped bad message: %s",
                tp.topic,
                self.group_id,
                record.offset,
                exc.reason,
            )
            if self._on_rejected is not None:
                claimed = None  # a sealed record's key names the CP whose key opened it
                if self._codec is not None and base_of(tp.topic) in SEALED_TOPICS and record.key:
                    claimed = record.key.decode("utf-8", "replace")[:40]
                self._on_rejected(
                    Rejected(tp.topic, tp.partition, record.offset, exc.reason, cp_id=claimed)
                )
            return
        if event is None:  # a redelivery of a record already accepted
            return
        try:
            await self.router.dispatch(event)
        except Exception as exc:  # a handler bug must not stop the consumer or lose the log
            self.stats.handler_errors += 1
            log.exception(
                "%s | %s | %s id=%s: handler failed",
                tp.topic,
                self.group_id,
                event.event_type,
                event.event_id,
            )
            await self._on_error(event, exc)
            return
        self.stats.handled += 1

    async def _decode(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]
    ) -> Event | None:
        codec = self._codec
        if codec is None:
            return parse_event(record.value)
        topic = base_of(tp.topic)
        try:
            return codec.decode(
                topic,
                record.value,
                record_key=record.key,
                partition=tp.partition,
                offset=record.offset,
            )
        except RecordRejected as exc:
            await self._wait_for_key(tp, exc)  # re-raises unless the key may still come
        return codec.decode(
            topic, record.value, record_key=record.key, partition=tp.partition, offset=record.offset
        )

    async def _wait_for_key(self, tp: TopicPartition, exc: RecordRejected) -> None:
        """Returns once the key a record was sealed with is held; re-raises `exc` when it will
        not come (this reader does not wait, the version is older than the key held, or the
        wait ran out)."""
        assert self._codec is not None
        cp_id, version = exc.cp_id, exc.key_version
        waits = exc.kind in (RejectKind.UNKNOWN_KEY, RejectKind.NO_KEY)
        if not (waits and self._await_keys > 0 and cp_id and version is not None):
            raise exc
        held = self._codec.ring.current(cp_id)
        if held is not None and version < held.version:
            raise exc  # older than the key held: it will never be handed over
        log.info(
            "%s: record sealed with key v%s of %s, not held yet: waiting up to %g s",
            tp.topic,
            version,
            cp_id,
            self._await_keys,
        )
        try:
            async with asyncio.timeout(self._await_keys):
                await self._codec.ring.wait_for(cp_id, version)
        except TimeoutError:
            raise exc from None

    def _refused(self, tp: TopicPartition, offset: int, exc: RecordRejected) -> None:
        """A sealed record dropped: never handled, always told to `on_rejected` (the audit log),
        logged once per kind per QUIET_FOR seconds (a flood of forgeries cannot flood a log)."""
        self.stats.rejected += 1
        kind = exc.kind.value
        now = time.monotonic()
        if now >= self._quiet_until.get(kind, 0.0):
            more = self._quieted.pop(kind, 0)
            log.warning(
                "%s | %s | offset %s: dropped: %s%s",
                tp.topic,
                self.group_id,
                offset,
                exc.reason,
                f" ({more} more of this kind in the last {QUIET_FOR:g} s)" if more else "",
            )
            self._quiet_until[kind] = now + QUIET_FOR
        else:
            self._quieted[kind] = self._quieted.get(kind, 0) + 1
        if self._on_rejected is not None:
            self._on_rejected(Rejected(tp.topic, tp.partition, offset, exc.reason, kind, exc.cp_id))

    async def _on_error(self, event: Event, exc: Exception) -> None:
        if self._on_error_cb is not None:
            await self._on_error_cb(event, exc)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        if self.group_id is None:
            return
        self._committing = asyncio.ensure_future(self._consumer.commit(offsets))
        try:
            await asyncio.shield(self._committing)
        except KafkaError as exc:
            log.log(
                failure_level(exc),
                "%s: commit of %d partitions failed (%s); their events may be redelivered",
                self.group_id,
                len(offsets),
                describe(exc),
            )

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
