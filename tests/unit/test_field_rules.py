"""One rule per field (contracts/fields.py): the HTTP API, the admin WebSocket, the Monitor's
command line and the Kafka events accept and refuse the same ids, prices, locations and error
types, each through its own public entry point."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from pydantic import ValidationError

import evcharging.adapters.web
from evcharging.adapters.web import driver_web
from evcharging.adapters.web.central_api import create_app
from evcharging.apps import cp_monitor
from evcharging.contracts import events as ev
from evcharging.contracts.fields import ID_PATTERN, MAX_ID, MAX_LOCATION, is_valid_id
from evcharging.services.central import CentralService
from tests.support.asgi_websocket import PUSHED, Dashboard
from tests.support.builders import a_cp, a_repo
from tests.support.fakes import RecordingPublisher

pytestmark = pytest.mark.timeout(60)

TOKEN = "field-rules-token"
CP = {"cp_id": "CP9", "price": "0.35", "location": "Alicante"}  # good values, one varied per case

CASES = [  # (field, value, accepted)
    ("cp_id", "CP9", True),
    ("cp_id", "a.b:c-d_E", True),
    ("cp_id", "x" * 64, True),
    ("cp_id", "", False),
    ("cp_id", "a b", False),
    ("cp_id", "x" * 65, False),
    ("cp_id", "CP9\n", False),
    ("cp_id", "CP#9", False),
    ("cp_id", "CPñ", False),
    ("price", "0.01", True),
    ("price", "100", True),
    ("price", "0", False),
    ("price", "-1", False),
    ("price", "100.01", False),
    ("price", "lots", False),
    ("location", "Alicante - Puerto", True),
    ("location", "x" * 200, True),
    ("location", "", False),
    ("location", "x" * 201, False),
]
ERROR_TYPES = [("fault", True), ("x" * 50, True), ("", False), ("x" * 51, False)]


def _short(value: object) -> str:
    """Test ids: 'x' * 201 reads as x*201."""
    if isinstance(value, str) and len(value) > 20 and len(set(value)) == 1:
        return f"{value[0]}*{len(value)}"
    return repr(value)


# --- the doors -----------------------------------------------------------------------------


async def _central() -> CentralService:
    repo = a_repo()
    a_cp(repo, "CP1", location="Alicante")
    service = CentralService(repo, RecordingPublisher())
    await service.load()
    await service.monitor_auth("CP1", object())  # connected: an error may be simulated
    return service


async def by_events(cp_id: str, price: str, location: str) -> bool:
    try:
        ev.CpStatus(
            cp_id=cp_id,
            location=location,
            price_eur_per_kwh=price,
            state="Activado",
            available=True,
        )
        ev.SupplyAuthorised(
            cp_id=cp_id,
            session_id=uuid4(),
            driver_id="D1",
            price_eur_per_kwh=price,
        )
    except ValidationError:
        return False
    return True


async def by_command_line(cp_id: str, price: str, location: str) -> bool:
    """EV_CP_M's arguments (an empty --price/--location means "not given" there: not used)."""
    try:
        cp_monitor.parse_args(["e:1", "c:2", cp_id, f"--price={price}", f"--location={location}"])
    except SystemExit:
        return False
    return True


async def by_http(cp_id: str, price: str, location: str) -> bool:
    body = {"id": cp_id, "location": location, "price_eur_per_kwh": price}
    async with _http() as client:
        answer = await client.post("/api/cps", json=body, headers=_bearer())
    assert answer.status_code in (201, 422), answer.text
    return answer.status_code == 201


async def by_websocket(cp_id: str, price: str, location: str) -> bool:
    action = {"type": "register_cp", "cp_id": cp_id, "location": location}
    reply = await _ws_action({**action, "price_eur_per_kwh": price})
    assert reply["type"] == "cp_registered" or reply["reason"].startswith("invalid fields"), reply
    return bool(reply["type"] == "cp_registered")


Door = Callable[[str, str, str], Awaitable[bool]]
DOORS: list[Door] = [by_events, by_command_line, by_http, by_websocket]


@pytest.mark.parametrize("door", DOORS, ids=lambda d: d.__name__)
@pytest.mark.parametrize(("field", "value", "accepted"), CASES, ids=_short)
async def test_every_door_takes_and_refuses_the_same_values(
    door: Door, field: str, value: str, accepted: bool
) -> None:
    if door is by_command_line and field in ("price", "location") and value == "":
        accepted = True  # the Monitor's --price/--location are optional: empty means not given
    assert await door(**{**CP, field: value}) is accepted


@pytest.mark.parametrize(("field", "value", "accepted"), CASES, ids=_short)
def test_is_valid_id_is_the_same_id_rule(field: str, value: str, accepted: bool) -> None:
    if field == "cp_id":
        assert is_valid_id(value) is accepted


@pytest.mark.parametrize(("error_type", "accepted"), ERROR_TYPES, ids=_short)
async def test_every_door_takes_and_refuses_the_same_error_types(
    error_type: str, accepted: bool
) -> None:
    try:
        ev.CpErrorSimulated(cp_id="CP1", error_type=error_type, message="m")
        event_ok = True
    except ValidationError:
        event_ok = False
    async with _http() as client:
        answer = await client.post(
            "/api/cps/CP1/simulate-error", json={"error_type": error_type}, headers=_bearer()
        )
    action = {"type": "simulate_error", "cp_id": "CP1", "error_type": error_type}
    ws_ok = (await _ws_action(action))["type"] == "error_simulated"
    assert (event_ok, answer.status_code == 200, ws_ok) == (accepted, accepted, accepted)


# --- plumbing ------------------------------------------------------------------------------


def _bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@asynccontextmanager
async def _http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(await _central(), TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://central") as client:
        yield client


async def _ws_action(action: dict[str, Any]) -> dict[str, Any]:
    """One admin action over /ws (ASGI messages on this loop); its reply, pushes skipped."""
    ws = Dashboard(create_app(await _central(), TOKEN))
    await ws.open()
    try:
        await ws.send_text(json.dumps({**action, "token": TOKEN}))
        while True:
            frame = await ws.receive_json()
            if frame["type"] not in PUSHED:
                return frame
    finally:
        await ws.close()


STATIC = Path(evcharging.adapters.web.__file__).parent / "static"


def test_the_pages_spell_no_field_rule_of_their_own() -> None:
    """The forms' id pattern and lengths come from contracts/fields.py, filled in when served."""
    for file in STATIC.rglob("*"):
        if file.suffix in (".html", ".js"):
            text = file.read_text(encoding="utf-8")
            assert "A-Za-z0-9" not in text, file
            assert not re.search(r'maxlength="\d+"', text), file


async def test_the_admin_page_checks_ids_and_locations_with_the_contracts_rules() -> None:
    async with _http() as client:
        text = (await client.get("/")).text
    assert f'pattern="{html.escape(ID_PATTERN)}"' in text
    assert f'maxlength="{MAX_ID}"' in text
    assert f'maxlength="{MAX_LOCATION}"' in text
    assert "{{" not in text


async def test_the_driver_page_gets_the_id_rule_it_checks_with() -> None:
    app = driver_web.create_app(None)  # type: ignore[arg-type]  # serving the page needs no hub
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://driver") as client:
        text = (await client.get("/")).text
    assert f'data-id-pattern="{html.escape(ID_PATTERN)}"' in text
    assert "{{" not in text
