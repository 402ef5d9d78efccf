"""Ephemeral ports for tests: never fixed ones."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_port_pair(host: str = "127.0.0.1") -> tuple[int, int]:
    a = free_port(host)
    b = free_port(host)
    while b == a:
        b = free_port(host)
    return a, b
