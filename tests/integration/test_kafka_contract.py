"""The event contract against the real broker: round trips, bad input, committed offsets."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaProducer

from evcharging.adapters.kafka.consumer import EventConsumer, KeyedRead
from evcharging.adapters.kafka.publisher import EventPublisher
from evcharging.adapters.kafka.router import EventRouter
from evcharging.contracts import events as ev
from evcharging.contracts.topics import ALL_TOPICS, CENTRAL_EVENTS, Topic
from evcharging.services.ports import Delivery
from tests.support.broker import broker_config
from tests.support.builders import unique
from tests.support.ports import free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.kafka


def sample_events(tag: str) -> list[ev.Event]:
    """One instance of every event type, keyed by ids unique to this test."""
    sid, now = uuid4(), datetime.now(UTC)
    d, cp = f"D-{tag}", f"CP-{tag}"
    money = {"energy_kwh": Decimal("1.234"), "amount_eur": Decimal("0.49")}
    return [
        ev.AuthorizationRequest(driver_id=d, cp_id=cp),
        ev.ChargingStopped(driver_id=d, cp_id=cp, session_id=sid),
        ev.DriverStatusRequest(driver_id=d),
        ev.DriverStatus(
            request_id=uuid4(),
            driver_id=d,
            known=True,
            balance_eur=Decimal("99.51"),
            session_id=sid,
            cp_id=cp,
            session_status="supplying",
            price_eur_per_kwh=Decimal("0.40"),
            **money,
        ),
        ev.AuthorizationResponse(
            request_id=uuid4(), driver_id=d, cp_id=cp, authorised=False, reason="CP busy"
        ),
        ev.ChargingStarted(driver_id=d, cp_id=cp, session_id=sid),
        ev.ChargingProgress(driver_id=d, cp_id=cp, session_id=sid, kw=Decimal("22"), **money),
        ev.ChargingTicket(
            driver_id=d,
            cp_id=cp,
            session_id=sid,
            price_eur_per_kwh=Decimal("0.40"),
            end_reason="unplugged",
            started_at=now,
            ended_at=now,
            balance_eur=Decimal("99.51"),
            **money,
        ),
        ev.CpErrorSimulated(cp_id=cp, driver_id=d, message="boom"),
        ev.CpErrorFixed(cp_id=cp, driver_id=d, message="fixed"),
        ev.DriverNotice(driver_id=d, message="hello"),
        ev.CpStatus(
            cp_id=cp,
            location="Alicante",
            price_eur_per_kwh=Decimal("0.4"),
            state="Activado",
            available=True,
        ),
        ev.SupplyAuthorised(
            cp_id=cp, session_id=sid, driver_id=d, price_eur_per_kwh=Decimal("0.40")
        ),
        ev.RequestDenied(cp_id=cp, request_id=uuid4(), driver_id=d, reason="unknown driver"),
        ev.StopSupply(cp_id=cp, session_id=sid, reason="stopped_by_driver"),
        ev.CpStop(cp_id=cp),
        ev.CpResume(cp_id=cp),
        ev.CpReportStatus(cp_id=cp),
        ev.CpReset(cp_id=cp, hard=True),
        ev.SupplyStarted(cp_id=cp, session_id=sid, driver_id=d),
        ev.CpTelemetry(cp_id=cp, session_id=sid, driver_id=d, seq=1, kw=Decimal("22"), **money),
        ev.SupplyEnded(
            cp_id=cp, session_id=sid, driver_id=d, energy_kwh=Decimal("1.234"), reason="unplugged"
        ),
    ]


def collecting_router(received: list[ev.Event]) -> EventRouter:
    router = EventRouter("test")

    async def keep(event: ev.Event) -> None:
        received.append(event)

    for cls in ev.EVENT_TYPES:
        router.add(cls, keep)
    return router


def collecting_reader(
    bootstrap: str, group: str | None, received: list[ev.Event], topic: Topic, key: str
) -> EventConsumer:
    """A consumer of one key's partition from the start, keeping what it reads in `received`."""
    return EventConsumer(
        bootstrap,
        group,
        collecting_router(received),
        keyed=[KeyedRead(topic, key)],
        offset_reset="earliest",
    )


async def run_consumer(consumer: EventConsumer) -> asyncio.Task[None]:
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: consumer.ready.is_set() or task.done(), what="consumer assignment")
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_every_event_type_is_in_the_sample() -> None:
    assert {type(e) for e in sample_events("x")} == set(ev.EVENT_TYPES)


async def test_every_event_type_round_trips_through_kafka(kafka_bootstrap: str) -> None:
    sent = sample_events(unique("rt"))
    received: list[ev.Event] = []
    consumer = EventConsumer(
        kafka_bootstrap,
        unique("g"),
        collecting_router(received),
        topics=ALL_TOPICS,
        offset_reset="latest",
    )
    task = await run_consumer(consumer)
    publisher = EventPublisher(kafka_bootstrap, "test")
    try:
        await publisher.start()
        for event in sent:
            await publisher.publish(event)
        await eventually(lambda: len(received) >= len(sent), 30, what="all events back")
    finally:  # closed even on failure: a leaked client would trip a later test's log check
        await stop(task)
        await publisher.stop()
    by_id = {e.event_id: e for e in received}
    for event in sent:
        assert by_id[event.event_id] == event.model_copy(update={"source": "test"})
        assert type(by_id[event.event_id]) is type(event)


@pytest.mark.parametrize("topic", ALL_TOPICS, ids=lambda t: t.name)
async def test_malformed_messages_are_skipped_and_the_next_valid_one_is_handled(
    kafka_bootstrap: str, topic, caplog: pytest.LogCaptureFixture
) -> None:
    key = unique("K")
    received: list[ev.Event] = []
    consumer = EventConsumer(
        kafka_bootstrap, None, collecting_router(received), keyed=[KeyedRead(topic, key)]
    )
    task = await run_consumer(consumer)
    valid = ev.DriverNotice(driver_id=key, message="after the garbage")
    bad = [
        b"{not json",
        json.dumps({"event_type": "NO_SUCH_EVENT"}).encode(),
        json.dumps({"event_type": "CP_TELEMETRY", "cp_id": key}).encode(),
        json.dumps(
            {
                "event_type": "CP_TELEMETRY",
                "cp_id": key,
                "session_id": str(uuid4()),
                "driver_id": "D",
                "seq": 1,
                "kw": "22",
                "energy_kwh": "-5",
                "amount_eur": "1",
            }
        ).encode(),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    for raw in [*bad, valid.to_bytes()]:
        await producer.send_and_wait(topic.name, raw, key=key.encode())
    await producer.stop()
    await eventually(lambda: received, what="the valid event")
    await stop(task)
    assert received == [valid]
    assert consumer.stats.skipped_bad == 4
    reasons = " | ".join(consumer.stats.bad_reasons)
    assert "not valid JSON" in reasons
    assert "unknown event_type" in reasons
    assert "Field required" in reasons
    assert "greater than or equal to 0" in reasons
    assert "skipped bad message" in caplog.text


async def test_restarted_consumer_handles_exactly_the_remaining_events(
    kafka_bootstrap: str,
) -> None:
    cp, group, n, k = unique("CP"), unique("g"), 10, 4
    publisher = EventPublisher(kafka_bootstrap, "test")
    await publisher.start()
    sent = [ev.CpStop(cp_id=cp) for _ in range(n)]
    for event in sent[:k]:
        await publisher.publish(event)
    first: list[ev.Event] = []
    consumer = collecting_reader(kafka_bootstrap, group, first, ev.CpStop.TOPIC, cp)
    task = await run_consumer(consumer)
    await eventually(lambda: len(first) == k, what="first k events")
    await stop(task)
    for event in sent[k:]:
        await publisher.publish(event)
    second: list[ev.Event] = []
    again = collecting_reader(kafka_bootstrap, group, second, ev.CpStop.TOPIC, cp)
    task = await run_consumer(again)
    await eventually(lambda: len(second) >= n - k, what="remaining events")
    await publisher.publish(ev.CpResume(cp_id=cp))  # a marker: everything before it was delivered
    await eventually(lambda: any(isinstance(e, ev.CpResume) for e in second), what="marker")
    await stop(task)
    await publisher.stop()
    assert [e.event_id for e in first] == [e.event_id for e in sent[:k]]
    assert [e.event_id for e in second if isinstance(e, ev.CpStop)] == [
        e.event_id for e in sent[k:]
    ]


async def test_a_keyed_reader_gets_only_its_own_key(kafka_bootstrap: str) -> None:
    mine, other = unique("D"), unique("D")
    received: list[ev.Event] = []
    consumer = EventConsumer(
        kafka_bootstrap, None, collecting_router(received), keyed=[KeyedRead(CENTRAL_EVENTS, mine)]
    )
    task = await run_consumer(consumer)
    publisher = EventPublisher(kafka_bootstrap, "test")
    await publisher.start()
    for i in range(20):
        await publisher.publish(ev.DriverNotice(driver_id=other, message=f"not yours {i}"))
    await publisher.publish(ev.DriverNotice(driver_id=mine, message="yours"))
    await eventually(lambda: received, what="own message")
    await stop(task)
    await publisher.stop()
    assert [e.driver_id for e in received] == [mine]  # type: ignore[attr-defined]


async def test_a_publisher_started_before_the_broker_delivers_once_it_is_up(tmp_path: Path) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    publisher = EventPublisher(bootstrap, "early", retry_delay=0.2)
    event = ev.CpStop(cp_id=unique("CP"))
    sending = asyncio.create_task(publisher.publish(event))
    await asyncio.sleep(0)  # let it try and fail against the closed port
    assert not sending.done()
    cfg = broker_config(tmp_path / "kafka", port=port)
    from evcharging.ops import kafka_broker

    await asyncio.to_thread(kafka_broker.start, cfg)
    try:
        await asyncio.wait_for(sending, timeout=60)
        received: list[ev.Event] = []
        consumer = EventConsumer(
            bootstrap,
            None,
            collecting_router(received),
            keyed=[KeyedRead(ev.CpStop.TOPIC, event.cp_id)],
            offset_reset="earliest",
        )
        task = await run_consumer(consumer)
        await eventually(lambda: received, what="the early event")
        await stop(task)
        assert received[0].event_id == event.event_id
    finally:
        await publisher.stop()
        await asyncio.to_thread(kafka_broker.stop, cfg)


async def test_what_a_batch_publishes_is_acked_before_the_batch_is_committed(
    kafka_bootstrap: str,
) -> None:
    """A handler's `publish` only queues, and says so (a burst costs one round trip, not one per
    event); the consumer waits for those acks, runs `on_delivered` after each, then commits the
    batch. Outside a batch `publish` says the broker has the event."""
    cp, group, n = unique("CP"), unique("g"), 50
    publisher = EventPublisher(kafka_bootstrap, "test")
    await publisher.start()
    outside = {await publisher.publish(ev.CpStop(cp_id=cp)) for _ in range(n)}
    assert outside == {Delivery.ACKED}
    delivered: list[str] = []
    modes: list[Delivery] = []
    asked: list[ev.CpStop] = []
    router = EventRouter("test")
    router.ignore(ev.CpResume)

    async def answer(event: ev.CpStop) -> None:
        asked.append(event)
        reply = ev.CpResume(cp_id=event.cp_id)
        modes.append(
            await publisher.publish(
                reply, on_delivered=lambda: delivered.append(str(reply.event_id))
            )
        )

    router.add(ev.CpStop, answer)
    read = [KeyedRead(ev.CpStop.TOPIC, cp)]
    consumer = EventConsumer(kafka_bootstrap, group, router, keyed=read, offset_reset="earliest")
    task = await run_consumer(consumer)
    replies: list[ev.Event] = []
    watcher = collecting_reader(kafka_bootstrap, None, replies, ev.CpStop.TOPIC, cp)
    watching = await run_consumer(watcher)
    await eventually(lambda: len(delivered) == n, what="every reply acked")
    await eventually(
        lambda: {str(e.event_id) for e in replies if isinstance(e, ev.CpResume)} == set(delivered),
        what="every reply readable",
    )
    assert len(asked) == n
    assert set(modes) == {Delivery.QUEUED_UNTIL_BATCH_COMMIT}
    await stop(task)
    await stop(watching)
    again: list[ev.Event] = []
    restarted = collecting_reader(kafka_bootstrap, group, again, ev.CpStop.TOPIC, cp)
    task = await run_consumer(restarted)
    await publisher.publish(ev.CpStop(cp_id=cp, event_id=uuid4()))  # a marker after the rest
    await eventually(
        lambda: len([e for e in again if isinstance(e, ev.CpStop)]) == 1, what="marker"
    )
    await stop(task)
    await publisher.stop()
    assert consumer.stats.handler_errors == 0


async def test_queued_events_keep_their_order_and_only_the_latest_is_due(
    kafka_bootstrap: str,
) -> None:
    """`publish_soon` sends one record batch per partition once the caller yields; a newer event
    of the same kind and key replaces one still queued. A reader of the key sees the readings in
    order, the last one always, and `stop` sends what is still queued."""
    driver, sid = unique("D"), uuid4()
    received: list[ev.Event] = []
    consumer = collecting_reader(kafka_bootstrap, None, received, ev.ChargingProgress.TOPIC, driver)
    task = await run_consumer(consumer)
    publisher = EventPublisher(kafka_bootstrap, "test")
    await publisher.start()
    n = 600
    for i in range(1, n + 1):
        reading = Decimal(i) / 1000
        await publisher.publish_soon(
            ev.ChargingProgress(
                driver_id=driver,
                cp_id="CP1",
                session_id=sid,
                kw=Decimal("22"),
                energy_kwh=reading,
                amount_eur=reading,
            )
        )
        if i % 7 == 0:
            await asyncio.sleep(0)  # the queue goes out as the caller yields
    await publisher.stop()
    last = Decimal(n) / 1000
    await eventually(
        lambda: received and received[-1].energy_kwh == last,  # type: ignore[attr-defined]
        what="the last reading",
    )
    await stop(task)
    readings = [e.energy_kwh for e in received]  # type: ignore[attr-defined]
    assert readings == sorted(set(readings))
    assert 1 <= len(readings) <= n  # how many were superseded depends on the broker


async def test_an_event_queued_while_a_batch_is_being_sent_goes_out_without_another(
    kafka_bootstrap: str,
) -> None:
    """A reading queued while the previous batch is on its way to the broker is sent after it,
    not left until the next `publish_soon` (an OCPP charger's last MeterValues before it goes
    quiet: Central showed the reading before it, for ever)."""
    driver, sid = unique("D"), uuid4()
    received: list[ev.Event] = []
    consumer = collecting_reader(kafka_bootstrap, None, received, ev.ChargingProgress.TOPIC, driver)
    task = await run_consumer(consumer)
    publisher = EventPublisher(kafka_bootstrap, "test")
    await publisher.start()

    def reading(wh: int) -> ev.ChargingProgress:
        energy = Decimal(wh) / 1000
        return ev.ChargingProgress(
            driver_id=driver,
            cp_id="CP1",
            session_id=sid,
            kw=Decimal("22"),
            energy_kwh=energy,
            amount_eur=energy,
        )

    try:
        await publisher.publish_soon(reading(1))
        await asyncio.sleep(0)  # the flush task takes it, then waits for Kafka
        assert not publisher._soon
        assert publisher._soon_flush is not None
        await publisher.publish_soon(reading(2))  # while the first one is being sent
        await eventually(
            lambda: received and received[-1].energy_kwh == Decimal("0.002"),  # type: ignore[attr-defined]
            what="the second reading, with no later publish",
        )
    finally:
        await publisher.stop()
        await stop(task)
