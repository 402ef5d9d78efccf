"""Central's Kafka reader and writer with the CP keys, against the real broker.

What reaches Central on cp-events from somebody other than the CP's Engine (a forged record, one
with a flipped byte, a record replayed, one sealed with a key that has been replaced) is dropped,
each once, as one `message.rejected` audit row (the hook `apps.central` wires), and the reader
goes on with the next good record.  What Central sends on cp-commands is sealed on the wire, and
a command for a CP without a key is not waited for.  Each test uses its own CP id and group.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.adapters.kafka.consumer import EventConsumer, partition_for
from evcharging.adapters.kafka.publisher import EventPublisher
from evcharging.adapters.kafka.router import EventRouter
from evcharging.apps.central import audit_consumer
from evcharging.contracts import events as ev
from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.contracts.sealed import is_sealed
from evcharging.contracts.topics import CP_COMMANDS, CP_EVENTS
from evcharging.services.audit import Audit, AuditEntry, AuditQuery
from evcharging.services.central import CentralService
from evcharging.services.central_keys import CentralKeys
from evcharging.services.cp_keys import CpKey, CpTopicCodec, KeyRing, MasterKey, new_key
from evcharging.services.ports import Delivery
from tests.support.builders import a_cp, a_driver, a_repo, unique
from tests.support.waiting import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]


def engine_with(key: CpKey) -> CpTopicCodec:
    """An Engine's codec holding `key` (each one is a sender of its own: its own nonces)."""
    codec = CpTopicCodec(KeyRing())
    codec.ring.install(key)
    return codec


@dataclass
class Central:
    """Central's side as EV_Central wires it: the keys, the reader of cp-events with their codec
    and the audit hook of apps/central, and what the reader handed on."""

    cp_id: str
    repo: SqliteRepository
    keys: CentralKeys
    reader: EventConsumer
    handled: list[ev.Event]

    def rejected(self) -> list[AuditEntry]:
        rows = self.repo.find_audit(AuditQuery(action=AuditAction.MESSAGE_REJECTED, limit=100))
        return list(reversed(rows))


@pytest.fixture
async def central(kafka_bootstrap: str) -> AsyncIterator[Central]:
    cp_id = unique("CPK")
    repo = a_repo()
    a_cp(repo, cp_id)
    keys = CentralKeys(repo, MasterKey(MasterKey.generate()))
    handled: list[ev.Event] = []

    async def keep(event: ev.CpTelemetry) -> None:
        if event.cp_id == cp_id:
            handled.append(event)

    router = EventRouter("central")
    router.add(ev.CpTelemetry, keep)
    rejected, failed = audit_consumer(Audit([repo]))
    reader = EventConsumer(
        kafka_bootstrap,
        unique("central"),
        router,
        topics=[CP_EVENTS],
        offset_reset="latest",
        on_rejected=rejected,
        on_error=failed,
        codec=keys.codec,
    )
    task = asyncio.create_task(reader.run())
    await eventually(lambda: reader.ready.is_set() or task.done(), 30, what="reader assigned")
    try:
        yield Central(cp_id, repo, keys, reader, handled)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def reading(cp_id: str, seq: int) -> ev.CpTelemetry:
    return ev.CpTelemetry(
        cp_id=cp_id,
        session_id=uuid4(),
        driver_id="D1",
        seq=seq,
        kw=Decimal("22"),
        energy_kwh=Decimal(seq) / 10,
        amount_eur=Decimal(seq) / 25,
    )


def flipped(value: bytes) -> bytes:
    """One bit of the ciphertext changed (past the clear header)."""
    at = len(value) - 20
    return value[:at] + bytes([value[at] ^ 0x01]) + value[at + 1 :]


async def test_forged_altered_replayed_and_old_key_records_are_each_dropped_once_and_audited(
    kafka_bootstrap: str, central: Central
) -> None:
    cp_id = central.cp_id
    v1 = central.keys.issue(cp_id)
    engine = engine_with(v1)
    good = engine.encode(reading(cp_id, 1))
    forger = engine_with(new_key(cp_id, v1.version))  # the right CP and version, a guessed key
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:

        async def send(value: bytes) -> int:
            sent = await producer.send_and_wait(CP_EVENTS.name, value, key=cp_id.encode())
            return int(sent.offset)

        await send(good)
        forged_at = await send(forger.encode(reading(cp_id, 2)))
        altered_at = await send(flipped(engine.encode(reading(cp_id, 3))))
        replayed_at = await send(good)  # the very bytes, again, at a new offset
        v2 = central.keys.issue(cp_id)  # the Monitor authenticated again: the Engine uses v2
        await send(engine_with(v2).encode(reading(cp_id, 4)))  # v1 is retired once v2 is used
        old_at = await send(engine.encode(reading(cp_id, 5)))  # sealed with v1 after that
        await send(engine_with(v2).encode(reading(cp_id, 6)))
        await eventually(
            lambda: [e.seq for e in central.handled][-1:] == [6], 30, what="the last good record"
        )
    finally:
        await producer.stop()

    assert [e.seq for e in central.handled] == [1, 4, 6]  # type: ignore[attr-defined]
    rows = [r for r in central.rejected() if r.cp_id == cp_id]
    assert [(r.params["kind"], int(r.params["offset"])) for r in rows] == [
        ("forged", forged_at),
        ("forged", altered_at),
        ("replayed", replayed_at),
        ("old_key", old_at),
    ]
    for row in rows:
        assert (row.actor, row.ip, row.outcome) == (f"cp:{cp_id}", "-", Outcome.DENIED)
        assert row.params["topic"] == CP_EVENTS.name
        assert int(row.params["partition"]) == partition_for(cp_id, CP_EVENTS.partitions)
    assert central.reader.stats.rejected >= 4
    assert central.keys.ring.versions(cp_id) == [2]
    assert [k.version for k in central.repo.stored_cp_keys()] == [2]


async def test_a_plain_record_and_one_for_a_cp_without_a_key_are_dropped_too(
    kafka_bootstrap: str, central: Central
) -> None:
    cp_id = central.cp_id
    stranger = unique("CPX")  # a CP Central never gave a key
    key = central.keys.issue(cp_id)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        plain = await producer.send_and_wait(
            CP_EVENTS.name, reading(cp_id, 1).to_bytes(), key=cp_id.encode()
        )
        await producer.send_and_wait(
            CP_EVENTS.name,
            engine_with(new_key(stranger, 1)).encode(reading(stranger, 1)),
            key=stranger.encode(),
        )
        await producer.send_and_wait(
            CP_EVENTS.name, engine_with(key).encode(reading(cp_id, 2)), key=cp_id.encode()
        )
        await eventually(lambda: central.handled, 30, what="the good record")
        await eventually(
            lambda: any(r.cp_id == stranger for r in central.rejected()), 30, what="stranger"
        )
    finally:
        await producer.stop()
    assert [e.seq for e in central.handled] == [2]  # type: ignore[attr-defined]
    mine = [r for r in central.rejected() if r.cp_id == cp_id]
    assert [(r.params["kind"], int(r.params["offset"])) for r in mine] == [
        ("not_sealed", plain.offset)
    ]
    [theirs] = [r for r in central.rejected() if r.cp_id == stranger]
    assert (theirs.actor, theirs.params["kind"]) == (f"cp:{stranger}", "no_key")


async def test_centrals_commands_are_sealed_on_the_wire_and_none_waits_for_a_missing_key(
    kafka_bootstrap: str,
) -> None:
    """Central's publisher as EV_Central wires it (its codec: `CentralKeys.codec`): a CP_STOP
    travels sealed with the CP's key; a refusal to the CP menu of a CP whose keys were revoked
    (which anyone can ask for on driver-events) is not sent and nothing waits for a key, so
    Central's Kafka reader is not held up until that CP authenticates again."""
    cp_id, revoked = unique("CPK"), unique("CPR")
    repo = a_repo()
    a_cp(repo, cp_id)
    a_cp(repo, revoked)
    a_driver(repo, "D1")
    keys = CentralKeys(repo, MasterKey(MasterKey.generate()))
    tp = TopicPartition(CP_COMMANDS.name, partition_for(cp_id, CP_COMMANDS.partitions))
    raw = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await raw.start()
    publisher = EventPublisher(kafka_bootstrap, "central", codec=keys.codec)
    try:
        raw.assign([tp])
        await raw.seek_to_end(tp)
        start = await raw.position(tp)
        await publisher.start()
        central = CentralService(repo, publisher, keys=keys)
        await central.load()
        for cp in (cp_id, revoked):
            assert (await central.monitor_auth(cp, object())).ok
        key = await central.issue_key(cp_id)
        await central.issue_key(revoked)
        await central.revoke_keys(revoked)
        ask = ev.AuthorizationRequest(driver_id="D1", cp_id=revoked, origin="cp")
        await asyncio.wait_for(central.on_authorization_request(ask), 10)
        stop = ev.CpStop(cp_id=cp_id)
        assert await publisher.publish(stop) is Delivery.ACKED
        keyless = ev.CpStop(cp_id=revoked)
        assert await asyncio.wait_for(publisher.publish(keyless), 5) is Delivery.NOT_SENT_NO_KEY
        raw.seek(tp, start)

        async def ours() -> list[bytes]:
            batches = await raw.getmany(tp, timeout_ms=200)
            return [r.value for r in batches.get(tp, []) if r.key == cp_id.encode() and r.value]

        [value] = await eventually(ours, 30, what="the CP_STOP on the wire")
    finally:
        await publisher.stop()
        await raw.stop()
    assert is_sealed(value)
    assert b"CP_STOP" not in value  # the command is inside the ciphertext
    opened = engine_with(key).decode("cp-commands", value)
    assert opened is not None
    assert opened.event_id == stop.event_id
