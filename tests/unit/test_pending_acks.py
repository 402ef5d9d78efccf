"""Acks settled per consumed batch: in order, re-sent on failure, `on_delivered` only after."""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaTimeoutError

from evcharging.adapters.kafka.publisher import EventPublisher, PendingAcks, _collecting_here
from evcharging.contracts import events as ev


class _Resending(EventPublisher):
    """An EventPublisher whose blocking send is recorded instead of going to a broker."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:9", "test")
        self.resent: list[ev.Event] = []

    async def _send_until_acked(self, event: ev.Event) -> None:
        self.resent.append(event)


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
    """A task spawned while collecting copies the context; its publishes must not be deferred."""

    async def probe() -> PendingAcks | None:
        return _collecting_here()

    acks = PendingAcks()
    with acks.collecting():
        assert _collecting_here() is acks
        assert await asyncio.create_task(probe()) is None
    assert _collecting_here() is None
