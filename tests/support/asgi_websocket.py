"""A WebSocket client speaking ASGI straight to an app: what a browser tab does, minus the network."""

from __future__ import annotations

import asyncio
import json
from typing import Any

# The frames the hub pushes unasked (the full state and changes), as opposed to replies.
PUSHED = {
    "all_cps",
    "cps",
    "requests",
    "request_changes",
    "messages",
    "message",
    "kafka",
    "weather",
    "health",
}


class Dashboard:
    """A WebSocket client speaking ASGI to the app: what a browser tab does, minus the network."""

    def __init__(self, app: Any, path: str = "/ws") -> None:
        self.app = app
        self.path = path
        self.to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": self.path,
            "raw_path": self.path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"central")],
            "client": ("127.0.0.1", 50000),
            "server": ("central", 80),
            "subprotocols": [],
        }
        self.task = asyncio.create_task(self.app(scope, self.to_app.get, self.from_app.put))
        await self.to_app.put({"type": "websocket.connect"})
        assert (await self.next())["type"] == "websocket.accept"

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(5):
            return await self.from_app.get()

    async def receive_json(self) -> dict[str, Any]:
        message = await self.next()
        assert message["type"] == "websocket.send", message
        return dict(json.loads(message["text"]))

    async def send_text(self, text: str) -> None:
        await self.to_app.put({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self.to_app.put({"type": "websocket.receive", "bytes": data})

    async def close(self) -> None:
        await self.to_app.put({"type": "websocket.disconnect", "code": 1000})
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)
