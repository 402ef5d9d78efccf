"""EV_Front: the public web front of the EVCharging Network.

    EV_Front --central URL [--host 0.0.0.0] [--port 8080]

Thin main, shaped as the other programs: arguments -> `FrontSettings` -> `FrontApp` -> run. It
serves a static page and `/config.json` (Central's URL); the browser reads API_Central v1
directly (REST, then the `/api/v1/stream` push channel). No login, no admin action, no state.
`--central` is the address a *browser* uses to reach Central's HTTP API (not a loopback address
when people open the page from other hosts). docs/dashboards.md, "Public front".
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

import uvicorn

from evcharging.adapters.listening import bind
from evcharging.adapters.web.embedded import EmbeddedServer
from evcharging.adapters.web.front_site import create_app
from evcharging.apps.common import Parser, port, run, setup_logging

log = logging.getLogger("evcharging.front")


@dataclass(frozen=True)
class FrontSettings:
    central: str
    host: str = "0.0.0.0"
    port: int = 8080
    log_level: str = "INFO"


class FrontApp:
    """The page's HTTP server; the port is taken first, so a taken port is one line."""

    def __init__(self, settings: FrontSettings) -> None:
        self.settings = settings

    async def run(self) -> int:
        cfg = self.settings
        listener = bind("the public front", cfg.host, cfg.port)
        http = EmbeddedServer(
            uvicorn.Config(
                create_app(cfg.central),
                host=cfg.host,
                port=cfg.port,
                log_level="warning",
                lifespan="off",
                server_header=False,
                timeout_graceful_shutdown=2,
            )
        )
        log.info(
            "EV_Front on http://%s:%s/ reading API_Central at %s",
            cfg.host,
            cfg.port,
            cfg.central,
        )
        try:
            await http.serve([listener])
        finally:
            http.should_exit = True
            listener.close()
        return 0


def central_url(value: str) -> str:
    """Central's API as a browser reaches it: http(s)://HOST[:PORT][/PATH], no query or user."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        if parts.port == 0:  # urlsplit itself refuses anything outside 0-65535
            raise ValueError
    except ValueError:
        raise ValueError("not a URL with a valid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected http://HOST:PORT or https://HOST:PORT (Central's HTTP API)")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("expected http(s)://HOST:PORT with no user, query or fragment")
    if any(c.isspace() or c in "\"'<>\\" for c in text):
        raise ValueError("the URL has spaces or quotes")
    return text.rstrip("/")


# --- command line -------------------------------------------------------------------------


def build_parser() -> Parser:
    p = Parser(
        prog="EV_Front",
        description="Public web front of the EVCharging Network (reads API_Central only)",
    )
    p.option(
        "--central",
        env="EV_FRONT_CENTRAL",
        type=central_url,
        metavar="URL",
        help="(required) Central's HTTP API as a browser reaches it, e.g. http://10.0.0.1:8000",
    )
    p.option("--host", env="EV_FRONT_HOST", default="0.0.0.0", help="HTTP bind address")
    p.option("--port", env="EV_FRONT_PORT", type=port, default=8080, help="HTTP port")
    p.log_level_option()
    return p


def parse_args(argv: list[str] | None = None) -> FrontSettings:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.central is None:
        parser.error("--central URL is required: Central's HTTP API, e.g. http://HOST:8000")
    return FrontSettings(central=a.central, host=a.host, port=a.port, log_level=a.log_level)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    setup_logging("EV_Front", cfg.log_level)
    return run(FrontApp(cfg).run())


if __name__ == "__main__":
    sys.exit(main())
