"""Free ports for tests, never fixed ones, and never from the kernel's ephemeral range.

A port the kernel handed out for `bind(0)` and that the test then released can be taken by any
outgoing connection (a Kafka client, say) before the program under test binds it; the demo test
once failed so ("address already in use" on an Engine's port). Ports below the ephemeral range
are only ever taken by an explicit bind, and each is handed out once per test run.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

_given: set[int] = set()


def _candidates() -> range:
    """Below the ephemeral range; with pytest-xdist, a slice of it per worker, so two workers
    never hand out the same port."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    whole = range(10000, max(low, 11000))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    size = len(whole) // max(count, 1)
    first = whole.start + size * int(worker or 0)
    return range(first, first + size)


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive free ports (for programs given a base port)."""
    candidates = _candidates()
    for _ in range(1000):
        first = random.randrange(candidates.start, candidates.stop - count)
        block = range(first, first + count)
        if _given.isdisjoint(block) and all(_bindable(host, p) for p in block):
            _given.update(block)
            return first
    raise RuntimeError(f"no {count} consecutive free ports in {candidates}")


def free_port(host: str = "127.0.0.1") -> int:
    return free_port_block(1, host)
