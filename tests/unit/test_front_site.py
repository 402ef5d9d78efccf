"""EV_Front's site: the page, its files and /config.json, with a policy that lets the page talk to
Central (and nowhere else); EV_Front's settings from its arguments."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, WebSocket

from evcharging.adapters.web.central_api import mount_dashboard
from evcharging.adapters.web.front_site import SHARED_DIR, STATIC_DIR, create_app
from evcharging.apps import front

SHARED = ("/static/shared/base.css", "/static/shared/live.js")


async def _get(central: str, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(central))
    async with httpx.AsyncClient(transport=transport, base_url="http://front") as client:
        return await client.get(path)


async def test_config_json_says_where_central_is() -> None:
    answer = await _get("http://10.0.0.1:8000/", "/config.json")
    assert answer.status_code == 200
    assert answer.json() == {"central": "http://10.0.0.1:8000"}


@pytest.mark.parametrize(
    ("central", "http", "ws"),
    [
        ("http://10.0.0.1:8000", "http://10.0.0.1:8000", "ws://10.0.0.1:8000"),
        (
            "https://central.example:8443",
            "https://central.example:8443",
            "wss://central.example:8443",
        ),
    ],
)
async def test_the_page_may_connect_to_central_and_nowhere_else(
    central: str, http: str, ws: str
) -> None:
    answer = await _get(central, "/")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    assert f"connect-src 'self' {http} {ws};" in policy
    assert "script-src 'self';" in policy
    assert 'data-testid="alerts"' in answer.text


async def test_the_page_and_its_files_load_nothing_from_the_internet() -> None:
    files = [STATIC_DIR / name for name in ("index.html", "front.js", "front.css")]
    for file in [*files, *SHARED_DIR.iterdir(), *(STATIC_DIR.parent / "parts").iterdir()]:
        text = file.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), f"{file.name} names a URL"
    for path in ("/static/front/front.js", "/static/front/front.css", *SHARED):
        answer = await _get("http://c:8000", path)
        assert answer.status_code == 200, path
        assert "content-security-policy" in answer.headers


async def _central_page_server(path: str) -> httpx.Response:
    """Central's admin page and its assets, as `mount_dashboard` serves them."""

    async def serve(_: WebSocket) -> None:
        return None

    app = FastAPI()
    hub: Any = SimpleNamespace(serve=serve)  # serving files needs no live feed
    mount_dashboard(app, hub)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://central") as client:
        return await client.get(path)


async def test_the_front_and_the_admin_page_share_their_common_assets() -> None:
    """One home for the palette, the tiles and the live helpers: both servers serve the same
    files at the same path, and both pages load them before their own."""
    for path in SHARED:
        at_front, at_central = await _get("http://c:8000", path), await _central_page_server(path)
        assert at_front.status_code == at_central.status_code == 200, path
        assert at_front.content == at_central.content, path
    for answer, own in [
        (await _get("http://c:8000", "/"), "front"),
        (await _central_page_server("/"), "admin"),
    ]:
        text = answer.text
        order = [
            text.index(f'"{p}"')
            for p in (SHARED[0], f"/static/{own}/{own}.css", SHARED[1], f"/static/{own}/{own}.js")
        ]
        assert order == sorted(order), own
        # the live supply's markup is shared too (static/parts/supply.html), written in when served
        assert text.count('data-part="supply"') == 1, own
        assert "{{" not in text, own


def test_ev_front_settings_come_from_its_arguments() -> None:
    cfg = front.parse_args(["--central", "http://10.0.0.1:8000/", "--port", "9090"])
    assert cfg == front.FrontSettings(central="http://10.0.0.1:8000", port=9090)
    assert front.parse_args(["--central", "https://c.example"]).port == 8080


@pytest.mark.parametrize(
    "url",
    ["ftp://c:8000", "c:8000", "http://:8000", "http://c:0", "http://u:p@c:8000", "http://c/#x"],
)
def test_ev_front_refuses_a_url_a_browser_cannot_use(url: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        front.central_url(url)
