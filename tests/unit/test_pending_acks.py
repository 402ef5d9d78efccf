"""Publishing's two modes, visible in what `publish` returns, and acks settled per consumed batch:
in order, re-sent on failure, `on_delivered` only after, and the batch committed only then."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError

from evcharging.adapters.kafka.consumer import EventConsumer
from evcharging.adapters.kafka.publisher import (
    EventPublisher,
    PendingAcks,
    _batch_acks_here,
    acks_before_commit,
)
from evcharging.adapters.kafka.router import EventRouter
from evcharging.contracts import events as ev
from evcharging.contracts.topics import CP_COMMANDS
from evcharging.services.ports import Delivery
from tests.support.waiting import eventually


class _Resending(EventPublisher):
    """An EventPublisher whose blocking send is recorded instead of going to a broker."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:9", "test")
        self.resent: list[ev.Event] = []

    async def _send_until_acked(self, event: ev.Event) -> None:
        self.resent.append(event)


class _Producer:
    """Stands in for AIOKafkaProducer: `send` hands back the ack's future, held until released."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future[object]] = []
        self.auto_ack = False

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[object]:
        ack = asyncio.get_running_loop().create_future()
        if self.auto_ack:
            ack.set_result(None)
        self.acks.append(ack)
        return ack


def connected_publisher() -> tuple[EventPublisher, _Producer]:
    publisher, producer = EventPublisher("127.0.0.1:9", "test"), _Producer()
    publisher._producer = producer  # type: ignore[assignment]
    publisher._ready.set()
    return publisher, producer


async def test_publish_says_acked_outside_a_batch_and_queued_inside_one() -> None:
    publisher, producer = connected_publisher()
    producer.auto_ack = True
    done: list[str] = []
    delivery = await publisher.publish(ev.CpStop(cp_id="A"), on_delivered=lambda: done.append("A"))
    assert delivery is Delivery.ACKED
    assert done == ["A"]  # ACKED: the ack came and on_delivered ran before publish returned
    producer.auto_ack = False
    with acks_before_commit() as acks:
        delivery = await publisher.publish(
            ev.CpStop(cp_id="B"), on_delivered=lambda: done.append("B")
        )
    assert delivery is Delivery.QUEUED_UNTIL_BATCH_COMMIT
    assert (len(acks), done) == (1, ["A"])  # handed over, not acked yet
    producer.acks[-1].set_result(None)
    await acks.settle()
    assert done == ["A", "B"]
    producer.auto_ack = True
    assert await publisher.publish(ev.CpStop(cp_id="C")) is Delivery.ACKED  # batch mode is over


async def test_publish_outside_a_batch_returns_only_once_acked() -> None:
    publisher, producer = connected_publisher()
    publishing = asyncio.create_task(publisher.publish(ev.CpStop(cp_id="A")))
    await eventually(lambda: producer.acks, what="the event handed to the producer")
    assert not publishing.done()
    producer.acks[0].set_result(None)
    assert await publishing is Delivery.ACKED


async def test_on_delivered_runs_after_the_ack_and_a_failed_delivery_is_sent_again() -> None:
    publisher = _Resending()
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    done: list[str] = []
    acks = PendingAcks()
    a, b = ev.CpStop(cp_id="A"), ev.CpStop(cp_id="B")
    acks.add(publisher, first, a, lambda: done.append("A"))
    acks.add(publisher, second, b, lambda: done.append("B"))
    settling = asyncio.create_task(acks.settle())
    await asyncio.sleep(0)
    assert done == []  # nothing acked yet
    second.set_exception(KafkaTimeoutError())
    first.set_result(None)
    await settling
    assert done == ["A", "B"]
    assert publisher.resent == [b]
    assert len(acks) == 0


async def test_only_the_task_that_opened_the_batch_defers() -> None:
    """A task spawned in batch mode copies the context; its publishes must wait for their ack."""

    async def probe() -> PendingAcks | None:
        return _batch_acks_here()

    with acks_before_commit() as acks:
        assert _batch_acks_here() is acks
        assert await asyncio.create_task(probe()) is None
    assert _batch_acks_here() is None


class _Committer:
    """Stands in for AIOKafkaConsumer's commit: records what was committed."""

    def __init__(self) -> None:
        self.committed: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.append(dict(offsets))

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected consumer call {name}")


async def test_a_batch_is_committed_only_after_what_it_published_is_acked() -> None:
    publisher, producer = connected_publisher()
    consumer = EventConsumer("127.0.0.1:9", "g", EventRouter("test"), topics=[CP_COMMANDS])
    committer = _Committer()
    consumer._consumer = committer  # type: ignore[assignment]
    with acks_before_commit() as acks:
        assert await publisher.publish(ev.CpStop(cp_id="A")) is Delivery.QUEUED_UNTIL_BATCH_COMMIT
    offsets = {TopicPartition(CP_COMMANDS.name, 0): 42}
    settling = asyncio.create_task(consumer._settle(acks, offsets))
    for _ in range(5):
        await asyncio.sleep(0)
    assert committer.committed == []  # the reply is not durable yet: nothing committed
    producer.acks[0].set_result(None)
    await settling
    assert committer.committed == [offsets]
