"""EV_Driver's web dashboard: the HTTP app serving the page, its files and its WebSocket.

One page per driver id, live over one WebSocket (`/ws`) per page; the modules beside this one
hold the rest, one concept each:

* `driver_hub`: the pages, what each follows and is sent, and the actions they ask for;
* `driver_session`: one page's WebSocket (origin check, reader, writer);
* `driver_messages`: what a page may send, checked (`BadInput` otherwise);
* `driver_views`: what a page is sent (figures, tickets, board CPs with their tag, notifications);
* `driver_texts`: the words a driver reads (notification lines, the status in words);
* `driver_runs`: services files run in the process.

The protocol is documented in docs/dashboard-driver.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from evcharging.adapters.web.driver_hub import DriverHub
from evcharging.adapters.web.driver_messages import MAX_MESSAGE_CHARS
from evcharging.adapters.web.driver_session import serve_page
from evcharging.adapters.web.embedded import EmbeddedServer
from evcharging.adapters.web.pages import page

STATIC_DIR = Path(__file__).resolve().parent / "static" / "driver"

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "style-src 'self'; script-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(hub: DriverHub) -> FastAPI:
    app = FastAPI(title="EV_Driver dashboard", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.update(_HEADERS)
        return response

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return page(STATIC_DIR / "index.html")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await serve_page(hub, websocket)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def web_server(hub: DriverHub) -> EmbeddedServer:
    config = uvicorn.Config(
        create_app(hub),
        log_level="warning",
        lifespan="off",
        ws_max_size=2 * MAX_MESSAGE_CHARS,
        timeout_graceful_shutdown=2,
    )
    return EmbeddedServer(config)
