"""What is typed at Central's terminal while its live panel is shown, read without blocking.

On a terminal, the line discipline's echo and line editing are switched off (the panel draws the
line being typed itself: a character echoed between two frames would move the cursor under the
panel, as a stray log line would), signals stay on (Ctrl+C still stops Central), and the
terminal's own settings come back when the panel closes. From a pipe, the text is read as it
comes. The end of the input (a closed pipe, /dev/null) only ends the command line.

Job control: a process in the background that reads its terminal, or changes its settings, is
stopped by the kernel (SIGTTIN, SIGTTOU), and a stopped Central would stop the network. So the
terminal is touched only while Central is its foreground job (`EV_Central ... &` never reads it;
after Ctrl+Z and `bg` reading pauses, and comes back within a second of `fg`).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import termios
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

RECHECK = 1.0  # seconds between two looks at whether Central is the foreground job again


class TerminalInput:
    """Calls `on_text` with each piece of text read from `fd` (in the event loop's thread), and
    `on_end` once the input ends."""

    def __init__(self, fd: int, on_text: Callable[[str], None], on_end: Callable[[], None]) -> None:
        self.fd = fd
        self._on_text = on_text
        self._on_end = on_end
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._tty = False
        self._saved: list[Any] | None = None  # the terminal's settings before the panel
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._recheck: asyncio.TimerHandle | None = None

    @property
    def reading(self) -> bool:
        """The terminal is being read now (not while in the background, or after its end)."""
        return self._reading

    def start(self) -> bool:
        """Starts reading (inside the running event loop); False if it cannot (a terminal whose
        echo cannot be switched off: typing would scribble over the panel)."""
        self._loop = asyncio.get_running_loop()
        self._tty = os.isatty(self.fd)
        if self._foreground():
            return self._take()
        self._wait_for_foreground()
        return True

    def stop(self) -> None:
        """Stops reading; the terminal's settings as they were."""
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        self._release()
        self._loop = None
        if self._saved is not None and self._foreground():
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            except termios.error as exc:  # the terminal is gone (closed window): nothing to restore
                log.debug("terminal settings not restored: %s", exc)
        self._saved = None

    # --- the foreground job owns the terminal ---------------------------------------------

    def _foreground(self) -> bool:
        if not self._tty:
            return True
        try:
            return os.tcgetpgrp(self.fd) == os.getpgrp()
        except OSError:  # not this process's controlling terminal: no job control applies
            return True

    def _take(self) -> bool:
        if self._tty and not self._keys_only():
            return False
        assert self._loop is not None
        self._loop.add_reader(self.fd, self._readable)
        self._reading = True
        return True

    def _release(self) -> None:
        if self._reading and self._loop is not None:
            with contextlib.suppress(ValueError, RuntimeError):  # closed fd, or a closed loop
                self._loop.remove_reader(self.fd)
        self._reading = False

    def _wait_for_foreground(self) -> None:
        assert self._loop is not None
        self._recheck = self._loop.call_later(RECHECK, self._back_in_foreground)

    def _back_in_foreground(self) -> None:
        self._recheck = None
        if self._loop is None:
            return
        if not self._foreground():
            self._wait_for_foreground()
        elif not self._take():
            self._on_end()

    def _keys_only(self) -> bool:
        """Each key as it is typed, not echoed; Ctrl+C and Ctrl+Z still work."""
        try:
            current = termios.tcgetattr(self.fd)
            keys = [*current[:6], list(current[6])]
            keys[3] = int(current[3]) & ~(termios.ICANON | termios.ECHO)  # lflag
            keys[6][termios.VMIN] = 1
            keys[6][termios.VTIME] = 0
            termios.tcsetattr(self.fd, termios.TCSANOW, keys)
        except termios.error as exc:
            log.warning("typed commands off: the terminal's echo cannot be switched off (%s)", exc)
            return False
        if self._saved is None:  # the settings to give back: those from before the panel
            self._saved = current
        return True

    # --- reading ------------------------------------------------------------------------

    def _readable(self) -> None:
        if not self._foreground():  # sent to the background (Ctrl+Z, bg): a read would stop us
            self._release()
            self._wait_for_foreground()
            return
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the terminal went away
            log.info("typed commands off: the terminal's input is gone (%s)", exc)
            data = b""
        if not data:
            self.stop()
            self._on_end()
            return
        text = self._decoder.decode(data)
        if text:
            self._on_text(text)
