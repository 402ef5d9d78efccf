"""uvicorn run inside a program's own event loop, beside its Kafka and socket tasks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """The program, not uvicorn, handles SIGINT/SIGTERM (`apps.common.run` cancels everything)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
