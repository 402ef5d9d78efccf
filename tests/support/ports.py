"""Free ports for tests, never fixed ones, and never from the kernel's ephemeral range.

A port the kernel handed out for `bind(0)` and that the test then released can be taken by any
outgoing connection (a Kafka client, say) before the program under test binds it; the demo test
once failed so ("address already in use" on an Engine's port). Ports below the ephemeral range
are only ever taken by an explicit bind, and each is handed out once per test run.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_given: set[int] = set()


def _candidates() -> range:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, max(low, 11000))


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
