"""The test's view of the per-CP keys: what Central holds (opened with its master key, as an
attacker who stole both would), sealing with any key, and raw reads and writes of Kafka topics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.adapters.master_key_file import DEFAULT_PATH, load_or_create
from evcharging.contracts.events import Event
from evcharging.contracts.sealed import SealedHeader, associated_data
from evcharging.contracts.topics import Topic
from evcharging.services.cp_keys import CpKey, Sender, seal


@dataclass(frozen=True)
class Record:
    """One record as a plain Kafka consumer sees it."""

    topic: str
    key: bytes | None
    value: bytes


def held_keys(workdir: Path, db_path: Path) -> dict[str, CpKey]:
    """The newest key Central keeps for each CP (its database rows, opened with the master key
    file Central made in its working folder)."""
    master = load_or_create(workdir / DEFAULT_PATH, environ={})
    repo = SqliteRepository(str(db_path))
    try:
        rows = repo.stored_cp_keys()
    finally:
        repo.close()
    keys: dict[str, CpKey] = {}
    for row in rows:
        key = master.open_key(row.cp_id, row.version, row.sealed)
        if row.cp_id not in keys or key.version > keys[row.cp_id].version:
            keys[row.cp_id] = key
    return keys


def sealed_with(event: Event, key: CpKey) -> bytes:
    """`event` sealed with `key` by a sender of its own (a fresh epoch)."""
    return seal(event, key, Sender())


def sealed_with_raw(value: bytes, key: CpKey, topic_base: str = "cp-events") -> bytes:
    """Any bytes sealed as a record of `topic_base` with `key` (garbage a CP's key vouches for)."""
    nonce = Sender().next_nonce()
    header = SealedHeader(key.cp_id, key.version, nonce).to_bytes()
    return header + key.aead.encrypt(nonce, value, associated_data(topic_base, header))


def read_topic(kafka: str, topic: Topic) -> list[Record]:
    """Every record of the topic so far, as a plain Kafka consumer sees it."""
    return asyncio.run(_read(kafka, topic))


async def _read(kafka: str, topic: Topic) -> list[Record]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        found: list[Record] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [Record(r.topic, r.key, r.value or b"") for r in records]
        return found
    finally:
        await consumer.stop()


def produce(kafka: str, records: list[tuple[Topic, str, bytes]]) -> None:
    """Writes raw records (as anyone with access to the broker could)."""
    asyncio.run(_produce(kafka, records))


async def _produce(kafka: str, records: list[tuple[Topic, str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka)
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic.name, value, key=key.encode())
    finally:
        await producer.stop()
