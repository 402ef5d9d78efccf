"""One driver page's WebSocket: same-origin check, then a reader (the page's messages to the
hub) and one writer (the hub's queued items for the page, rendered when sent)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from starlette.websockets import WebSocket, WebSocketDisconnect

from evcharging.adapters.web.driver_hub import DriverHub, Page
from evcharging.adapters.web.driver_views import encode

log = logging.getLogger(__name__)

_SEND_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)


async def serve_page(hub: DriverHub, ws: WebSocket) -> None:
    """Serve one page until it goes away: a reader (this task) and a writer task."""
    peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
    if not _same_origin(ws):
        log.warning("web: refused a WebSocket from %s: origin %s", peer, ws.headers["origin"])
        await ws.close(code=1008)
        return
    await ws.accept()
    page = hub.connect(peer)
    writer = asyncio.create_task(_write(hub, ws, page), name=f"driver-web-writer-{peer}")
    try:
        while (message := await ws.receive())["type"] == "websocket.receive":
            await hub.receive(page, message.get("text"))
    except _SEND_ERRORS as exc:
        log.debug("web: page %s went away: %r", peer, exc)
    finally:
        hub.disconnect(page)
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)


async def _write(hub: DriverHub, ws: WebSocket, page: Page) -> None:
    """The page's only sender; a bug here is logged and closes the page, not the process."""
    try:
        while True:
            frame = hub.render(page, await page.outbox.get())
            if frame is not None:
                await ws.send_text(encode(frame))
    except _SEND_ERRORS as exc:
        log.debug("web: page %s: send failed: %r", page.peer, exc)
    except Exception:
        log.exception("web: page %s: cannot send", page.peer)
        with contextlib.suppress(*_SEND_ERRORS):
            await ws.close(code=1011)


def _same_origin(ws: WebSocket) -> bool:
    """Browsers send Origin: refuse pages of other sites (tools without Origin are let in)."""
    origin = ws.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == ws.headers.get("host")
