"""A program run in a pseudo-terminal of a given size, its output fed into a `pyte` screen.

What a person would see is then what the test asserts on: a program that draws past the bottom of
the screen, or leaves stale copies of what it drew, shows it on the emulated screen too.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyte

from tests.support.ports import free_port
from tests.support.processes import BIN, SAMPLE, Network, Proc
from tests.support.waiting import eventually_sync


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """An xterm-like terminal of `cols` x `rows` running one program; everything it receives is
    also kept, raw, in `log` (a test artifact)."""

    def __init__(self, argv: list[str], cols: int, rows: int, cwd: Path, log: Path) -> None:
        master, slave = os.openpty()
        _set_size(slave, cols, rows)
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        env.update(TERM="xterm-256color", PYTHONUNBUFFERED="1", EV_LOG_LEVEL="INFO")
        self.popen = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self._master = master
        self._lock = threading.Lock()
        self.screen = pyte.Screen(cols, rows)
        self._stream = pyte.ByteStream(self.screen)
        self.log = log
        self._reader = threading.Thread(target=self._read, name="pty-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with self.log.open("ab") as raw:
            while True:
                try:
                    data = os.read(self._master, 65536)
                except OSError:  # EIO: the program has closed the terminal
                    return
                if not data:
                    return
                raw.write(data)
                raw.flush()  # the log is read by tests too
                with self._lock:
                    self._stream.feed(data)

    def resize(self, cols: int, rows: int) -> None:
        """As when a person drags the window's corner: the screen and the tty's size change."""
        with self._lock:
            self.screen.resize(rows, cols)
            _set_size(self._master, cols, rows)

    def type(self, text: str) -> None:
        """As when a person types at the keyboard (Enter is "\r")."""
        os.write(self._master, text.encode())

    def lines(self) -> list[str]:
        with self._lock:
            return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines())

    def wait_until(self, check: Callable[[str], object], what: str, timeout: float = 30.0) -> str:
        """Wait until `check(screen text)` holds; returns that screen."""

        def seen() -> str | None:
            screen = self.text()
            return screen if check(screen) else None

        try:
            return eventually_sync(seen, timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- screen ---\n{self.text()}") from None

    def close(self) -> None:
        self._reader.join(timeout=10)
        os.close(self._master)


@contextmanager
def central_in_terminal(network: Network, cols: int, rows: int, *extra: str) -> Iterator[Terminal]:
    """EV_Central with its live panel (`--ui panel`) in a terminal, seeded with the sample network,
    once its HTTP API answers; stopped (SIGTERM) on leaving. Its raw output is kept with the
    other programs' logs."""
    network.central_port = network.central_port or free_port()
    network.http_port = network.http_port or free_port()
    network.db_path = network.workdir / "central.db"  # Monitors are registered in it
    log = network.workdir / "central-terminal.log"
    argv = [
        str(BIN / "EV_Central"),
        str(network.central_port),
        network.kafka,
        "--db",
        str(network.db_path),
        "--http-port",
        str(network.http_port),
        "--http-host",
        "127.0.0.1",
        "--admin-token",
        network.admin_token,
        "--ui",
        "panel",
        "--seed",
        str(SAMPLE),
        "--group-id",
        f"central-{network.workdir.name}",
        "--kafka-namespace",
        network.namespace,
        *extra,
    ]
    terminal = Terminal(argv, cols, rows, network.workdir, log)
    proc = Proc("central-terminal", terminal.popen, log)
    network.procs.append(proc)
    try:
        eventually_sync(
            network._api_up, 30, what=f"Central's API\n--- screen ---\n{terminal.text()}"
        )
        yield terminal
    finally:
        proc.terminate()
        terminal.close()
