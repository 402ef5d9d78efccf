"""Which partition a key lands in: Kafka's default partitioner (murmur2), remembered per key.

Readers use it to read only their own key's partition; the publisher to batch high-rate events
per partition. murmur2 is pure Python in aiokafka, so each key is hashed once."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import DefaultPartitioner

_partitioner = DefaultPartitioner()


@lru_cache(maxsize=200_000)
def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner puts `key` in, of `partitions` (0..n-1)."""
    all_partitions = list(range(partitions))
    return int(_partitioner(key.encode(), all_partitions, all_partitions))
