"""A TCP relay that keeps every byte it forwards: the "capture of the socket traffic" of the
security tests (what a sniffer on the wire between Monitor and Central would read)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from tests.support.ports import free_port


class Relay:
    """Listens on 127.0.0.1:`port`; each connection is forwarded to `target`, both directions
    recorded in `captured` (one bytearray for the whole run)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.captured = bytearray()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Relay:
        self._spawn(self._accept)
        return self

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self._spawn(self._pipe, client, upstream)
            self._spawn(self._pipe, upstream, client)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.callback(sink.close)
            stack.callback(source.close)
            while True:
                try:
                    data = source.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self._lock:
                    self.captured += data
                try:
                    sink.sendall(data)
                except OSError:
                    return

    def bytes(self) -> bytes:
        with self._lock:
            return bytes(self.captured)

    def close(self) -> None:
        self._stopping.set()
        self._server.close()


@contextlib.contextmanager
def relay_to(target: tuple[str, int]) -> Iterator[Relay]:
    relay = Relay(target).start()
    try:
        yield relay
    finally:
        relay.close()
