"""A real Apache Kafka broker for tests, in a temporary folder, on free ports."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evcharging.contracts import topics
from evcharging.ops import kafka_broker
from tests.support.ports import free_port


def broker_config(data_dir: Path, port: int | None = None) -> kafka_broker.BrokerConfig:
    return kafka_broker.BrokerConfig(
        port=port or free_port(), controller_port=free_port(), data_dir=data_dir, heap="384m"
    )


@contextmanager
def running_broker(data_dir: Path, port: int | None = None) -> Iterator[kafka_broker.BrokerConfig]:
    cfg = broker_config(data_dir, port)
    kafka_broker.start(cfg)
    try:
        yield cfg
    finally:
        kafka_broker.stop(cfg)


@contextmanager
def in_namespace(bootstrap: str, namespace: str) -> Iterator[None]:
    """This test process uses `namespace` (and its topics exist) until the block ends."""
    topics.set_namespace(namespace)
    try:
        asyncio.run(kafka_broker.create_topics(bootstrap))
        yield
    finally:
        topics.set_namespace("")
