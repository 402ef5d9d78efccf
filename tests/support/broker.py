"""A real Apache Kafka broker for tests, in a temporary folder on ephemeral ports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evcharging.ops import kafka_broker
from tests.support.ports import free_port_pair


def broker_config(data_dir: Path, port: int | None = None) -> kafka_broker.BrokerConfig:
    a, b = free_port_pair()
    if port is not None and b == port:
        b = a
    return kafka_broker.BrokerConfig(
        port=port or a, controller_port=b, data_dir=data_dir, heap="384m"
    )


@contextmanager
def running_broker(data_dir: Path, port: int | None = None) -> Iterator[kafka_broker.BrokerConfig]:
    cfg = broker_config(data_dir, port)
    kafka_broker.start(cfg)
    try:
        yield cfg
    finally:
        kafka_broker.stop(cfg)
