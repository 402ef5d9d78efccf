"""EV_Front's web site: the public page's files and `/config.json`, nothing else.

The page (adapters/web/static/front/, plus adapters/web/static/shared/: what it shares with the
admin dashboard, at the same path `/static/shared/` as on Central) reads API_Central v1 from the
browser, straight from Central: REST for the first picture, the `/api/v1/stream` WebSocket for
pushes. This server only tells it where Central is (`/config.json`) and lets it connect there (its
Content-Security-Policy names Central's origin); it holds no state, no token and no action.
docs/dashboards.md, "Public front", describes the page.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evcharging.adapters.web.pages import page

STATIC_DIR = Path(__file__).resolve().parent / "static" / "front"
SHARED_DIR = STATIC_DIR.parent / "shared"  # base.css, live.js: also the admin page's


def central_origins(central_url: str) -> tuple[str, str]:
    """Central's HTTP origin and the matching WebSocket origin (http -> ws, https -> wss)."""
    parts = urlsplit(central_url)
    ws_scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{parts.scheme}://{parts.netloc}", f"{ws_scheme}://{parts.netloc}"


def security_headers(central_url: str) -> dict[str, str]:
    """The page may load only its own files, and talk only to itself and to Central."""
    http, ws = central_origins(central_url)
    return {
        "Content-Security-Policy": (
            f"default-src 'self'; connect-src 'self' {http} {ws}; img-src 'self' data:; "
            "style-src 'self'; script-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


class _Headers:
    """Adds the same headers to every answer (the page, its files, the config)."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(self.headers)
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(central_url: str) -> ASGIApp:
    """The site for a Central at `central_url` (as the browser must reach it, no trailing /)."""
    config = {"central": central_url.rstrip("/")}

    async def index(_: Request) -> Response:
        return page(STATIC_DIR / "index.html")  # with its shared parts written in

    async def config_json(_: Request) -> Response:
        return JSONResponse(config)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/config.json", config_json),
            Route("/healthz", healthz),
            Mount("/static/front", StaticFiles(directory=STATIC_DIR), name="front-static"),
            Mount("/static/shared", StaticFiles(directory=SHARED_DIR), name="shared-static"),
        ]
    )
    return _Headers(app, security_headers(central_url))
