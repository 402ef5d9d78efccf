"""While a live panel owns the terminal, log lines reach the terminal only through the panel.

A log line written straight to the terminal between two frames of a live display moves the
cursor under the display's feet: the next frame then starts one line too low, leaving a stale copy
of its top line behind and drawing over the log line. So, for as long as the panel is shown, every
handler that writes to a terminal is set aside; its records are kept here, for the panel to print
above itself (formatted by the handler that was set aside, so the terminal's scrollback reads as
without the panel). Every record that reaches the root logger is also kept for the panel's
messages area, wherever else it goes (e.g. to a file when standard error is redirected). When the
panel closes the handlers return, and whatever the panel had not printed yet is written through
them.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from datetime import UTC, datetime
from typing import IO, Any

# (when, level name in lower case, one-line text): the shape of a MessageView.line of Central.
Line = tuple[datetime, str, str]


def _writes_to_terminal(handler: logging.Handler) -> bool:
    if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
        return False
    stream: IO[Any] = handler.stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _loggers() -> list[logging.Logger]:
    found = [logging.getLogger()]
    found += [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return found


class TerminalLogCapture(logging.Handler):
    """A context manager, and the handler that stands in for the terminal's log handlers."""

    def __init__(self, keep: int = 300) -> None:
        super().__init__()
        self._recent: deque[Line] = deque(maxlen=keep)
        self._unprinted: list[logging.LogRecord] = []
        self._unprinted_lock = threading.Lock()
        self._set_aside: list[tuple[logging.Logger, logging.Handler]] = []
        self._attached: list[logging.Logger] = []
        self._last: logging.LogRecord | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record is self._last:  # reached through two loggers this handler is attached to
            return
        self._last = record
        self._recent.append(_line(record))
        with self._unprinted_lock:
            self._unprinted.append(record)

    def lines(self) -> list[Line]:
        """The latest records as the panel shows them, oldest first (from any thread)."""
        return list(self._recent)

    def take_unprinted(self) -> list[str]:
        """The records not printed yet, formatted as the set-aside handlers would have written
        them (from any thread)."""
        with self._unprinted_lock:
            records, self._unprinted = self._unprinted, []
        return [h.format(r) for r in records for h in self._handlers_for(r) if h.filter(r)]

    def __enter__(self) -> TerminalLogCapture:
        root = logging.getLogger()
        for logger in _loggers():
            terminal = [h for h in logger.handlers if _writes_to_terminal(h)]
            for handler in terminal:
                logger.removeHandler(handler)
                self._set_aside.append((logger, handler))
            if terminal or logger is root:  # the root's records feed the panel in any case
                logger.addHandler(self)
                self._attached.append(logger)
        return self

    def __exit__(self, *exc: object) -> None:
        for logger in self._attached:
            logger.removeHandler(self)
        for logger, handler in self._set_aside:
            logger.addHandler(handler)
        with self._unprinted_lock:
            records, self._unprinted = self._unprinted, []
        for record in records:
            for handler in self._handlers_for(record):
                handler.handle(record)
        self._set_aside.clear()
        self._attached.clear()

    def _handlers_for(self, record: logging.LogRecord) -> list[logging.Handler]:
        """The set-aside handlers that would have taken `record`, as logging itself picks them."""
        found: list[logging.Handler] = []
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            found += [h for lg, h in self._set_aside if lg is logger and record.levelno >= h.level]
            logger = logger.parent if logger.propagate else None
        return found


def _line(record: logging.LogRecord) -> Line:
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        text = f"{text}: {type(error).__name__}: {error}"
    first, _, _ = text.partition("\n")
    return datetime.fromtimestamp(record.created, UTC), record.levelname.lower(), first
