"""A server address that cannot be bound is a start-up error said in one line, not a traceback."""

from __future__ import annotations

import os
import socket


class CannotListen(RuntimeError):
    """Raised by a server's start; a program's `run` logs it and exits with code 2."""

    @classmethod
    def because(cls, what: str, host: str, port: int, exc: OSError) -> CannotListen:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return cls(f"cannot listen for {what} on {host}:{port}: {reason}")


def bind(what: str, host: str, port: int) -> socket.socket:
    """A listening socket bound now, so a taken port is reported before anything else starts."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise CannotListen.because(what, host, port, exc) from exc
