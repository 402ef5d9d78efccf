"""Central's one admin front door (issue 12, points 2 and 3): HTTP and WebSocket check the token
with the same function, reach every action of the one table and say the same thing about it; the
HTTP API, the WebSocket and the terminal panel show the same figures of a CP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from evcharging.adapters.tui.central_panel import cp_line, snapshot
from evcharging.adapters.web.central_api import create_app
from evcharging.contracts import events as ev
from evcharging.services import admin, roles
from evcharging.services.admin import TABLE, AdminDesk, Caller, Command
from evcharging.services.central import CentralService
from evcharging.services.central_keys import CentralKeys
from evcharging.services.cp_keys import MasterKey
from tests.integration.test_central_ws import FULL_STATE, Dashboard, dashboard, reply_to
from tests.support.builders import a_cp, a_driver, a_repo
from tests.support.fakes import RecordingPublisher

pytestmark = pytest.mark.timeout(60)

TOKEN = "s3cret-admin-token"
WRONG = "not-the-token-123"


async def a_central() -> CentralService:
    repo = a_repo()
    a_cp(repo, "CP1", price="0.35", location="Alicante")
    a_cp(repo, "CP2", price="0.40", location="Valencia")
    a_driver(repo, "D1")
    keys = CentralKeys(repo, MasterKey(MasterKey.generate()))
    service = CentralService(repo, RecordingPublisher(), keys=keys)
    await service.load()
    await service.monitor_auth("CP1", object())
    await service.issue_key("CP1")
    return service


@pytest.fixture
async def http() -> AsyncIterator[tuple[CentralService, httpx.AsyncClient]]:
    central = await a_central()
    transport = httpx.ASGITransport(app=create_app(central, TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://central") as client:
        yield central, client


@pytest.fixture
async def ws_app() -> tuple[CentralService, FastAPI]:
    central = await a_central()
    return central, create_app(central, TOKEN)


Record = tuple[str, str | None, str, bool]


@pytest.fixture
def records(monkeypatch: pytest.MonkeyPatch) -> list[Record]:
    """Every outcome the front door records: (transport, action, outcome, refused)."""
    seen: list[Record] = []
    record = AdminDesk._record

    def spy(
        self: AdminDesk,
        caller: Caller,
        action: str | None,
        outcome: str,
        *,
        refused: bool,
        **more: Any,
    ) -> None:
        seen.append((str(caller.transport), action, outcome, refused))
        record(self, caller, action, outcome, refused=refused, **more)

    monkeypatch.setattr(AdminDesk, "_record", spy)
    return seen


# --- one token check -------------------------------------------------------------------------


async def test_the_same_wrong_token_is_refused_by_http_and_websocket_through_one_check(
    monkeypatch: pytest.MonkeyPatch,
    http: tuple[CentralService, httpx.AsyncClient],
    ws_app: tuple[CentralService, FastAPI],
    caplog: pytest.LogCaptureFixture,
) -> None:
    compared: list[str] = []
    check = roles.token_matches  # the one comparison, of every front door

    def spy(given: str, expected: bytes) -> bool:
        compared.append(given)
        return check(given, expected)

    monkeypatch.setattr(roles, "token_matches", spy)
    _, client = http
    answer = await client.post("/api/cps/CP1/stop", headers={"X-Admin-Token": WRONG})
    assert (answer.status_code, answer.json()) == (401, {"detail": "wrong admin token"})
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    async with dashboard(ws_app[1]) as ws:
        reply = await reply_to(ws, {"type": "stop_cp", "cp_id": "CP1", "token": WRONG})
    assert (reply["type"], reply["reason"]) == ("error", "wrong admin token")
    assert compared == [WRONG, WRONG]  # one check, used by both transports
    assert "anonymous via http 127.0.0.1:" in caplog.text
    assert "anonymous via websocket #" in caplog.text
    assert WRONG not in caplog.text


async def test_an_action_run_without_admission_is_refused(
    ws_app: tuple[CentralService, FastAPI],
) -> None:
    """A transport that forgot to admit its caller cannot act: the desk checks who asks."""
    central, _ = ws_app
    desk = AdminDesk(central, TOKEN)
    stranger = Caller(admin.Transport.HTTP, "10.0.0.9:4000")
    with pytest.raises(admin.AdminRefusal) as refused:
        await desk.run(stranger, admin.StopAll())
    assert refused.value.kind is admin.Refusal.UNAUTHORISED
    assert not central.cp("CP1").admin_stopped  # type: ignore[union-attr]


# --- one table, one set of replies -----------------------------------------------------------

# command -> (HTTP method, path, JSON body or None), WebSocket fields, what must be done first
WAYS: dict[Command, tuple[tuple[str, str, Any], dict[str, Any], str | None]] = {
    Command.STOP_CP: (("POST", "/api/cps/CP1/stop", None), {"cp_id": "CP1"}, None),
    Command.RESUME_CP: (("POST", "/api/cps/CP1/resume", None), {"cp_id": "CP1"}, "stop_cp"),
    Command.SIMULATE_ERROR: (
        ("POST", "/api/cps/CP1/simulate-error", {"error_type": "bench"}),
        {"cp_id": "CP1", "error_type": "bench"},
        None,
    ),
    Command.FIX_ERROR: (
        ("POST", "/api/cps/CP1/fix-error", None),
        {"cp_id": "CP1"},
        "simulate_error",
    ),
    Command.REVOKE_KEYS: (("POST", "/api/cps/CP1/revoke-keys", None), {"cp_id": "CP1"}, None),
    Command.REPORT_STATUS: (("POST", "/api/cps/CP1/report-status", None), {"cp_id": "CP1"}, None),
    Command.RESET_CP: (
        ("POST", "/api/cps/CP1/reset", {"hard": True}),
        {"cp_id": "CP1", "hard": True},
        None,
    ),
    Command.STOP_ALL: (("POST", "/api/cps/stop-all", None), {}, None),
    Command.RESUME_ALL: (("POST", "/api/cps/resume-all", None), {}, "stop_cp"),
    Command.ROTATE_KEYS: (("POST", "/api/cps/rotate-keys", None), {}, None),
    Command.REGISTER_CP: (
        ("POST", "/api/cps", {"id": "CP9", "location": "Murcia", "price_eur_per_kwh": "0.31"}),
        {"cp_id": "CP9", "location": "Murcia", "price_eur_per_kwh": "0.31"},
        None,
    ),
    Command.EDIT_CP: (
        ("PATCH", "/api/cps/CP1", {"location": "Elche", "price_eur_per_kwh": "0.45"}),
        {"cp_id": "CP1", "location": "Elche", "price_eur_per_kwh": "0.45"},
        None,
    ),
}


def test_every_command_of_the_table_has_a_way_in() -> None:
    assert set(WAYS) == set(TABLE) == set(Command)


@pytest.mark.parametrize("command", list(Command), ids=[c.value for c in Command])
async def test_every_action_is_reachable_from_both_transports_with_the_same_reply(
    command: Command,
    http: tuple[CentralService, httpx.AsyncClient],
    ws_app: tuple[CentralService, FastAPI],
    records: list[Record],
    caplog: pytest.LogCaptureFixture,
) -> None:
    (method, path, body), fields, first = WAYS[command]
    by_http, client = http
    by_ws, app = ws_app
    if first is not None:
        await getattr(by_http, first)("CP1")
        await getattr(by_ws, first)("CP1")

    answer = await client.request(method, path, json=body, headers={"X-Admin-Token": TOKEN})
    assert answer.status_code == (201 if command is Command.REGISTER_CP else 200), answer.text
    async with dashboard(app) as ws:
        reply = await reply_to(ws, {"type": command.value, **fields, "token": TOKEN})

    assert reply["type"] != "error", reply
    done = [(transport, outcome) for transport, action, outcome, refused in records if not refused]
    assert [transport for transport, _ in done] == ["http", "websocket"]
    assert done[0][1] == done[1][1] == reply["message"]  # one reply text, whichever transport
    if "cp" in reply:
        assert answer.json() == reply["cp"]  # and the same view of the CP
    elif command is Command.ROTATE_KEYS:
        assert answer.json()["asked"] == reply["cp_ids"] == ["CP1"]
    else:
        assert [v["id"] for v in answer.json()["changed"]] == reply["cp_ids"]
        assert answer.json()["skipped"] == reply["skipped"]
    assert TOKEN not in json.dumps(records)
    for who in ("admin via http 127.0.0.1:", "admin via websocket #"):  # who, how, from where
        assert f"{who}" in caplog.text
        assert f"admin action {command.value} done: {reply['message']}" in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("path", "frame", "reason"),
    [
        ("/api/cps/CP1/resume", {"type": "resume_cp", "cp_id": "CP1"}, "CP CP1 is not stopped"),
        ("/api/cps/NOPE/stop", {"type": "stop_cp", "cp_id": "NOPE"}, "unknown CP NOPE"),
    ],
)
async def test_a_refusal_has_the_same_reason_on_both_transports(
    http: tuple[CentralService, httpx.AsyncClient],
    ws_app: tuple[CentralService, FastAPI],
    records: list[Record],
    path: str,
    frame: dict[str, Any],
    reason: str,
) -> None:
    answer = await http[1].post(path, headers={"Authorization": f"Bearer {TOKEN}"})
    async with dashboard(ws_app[1]) as ws:
        reply = await reply_to(ws, {**frame, "token": TOKEN})
    assert answer.json()["detail"] == reply["reason"]
    assert reply["reason"].startswith(reason)
    assert [(t, outcome) for t, _, outcome, refused in records if refused] == [
        ("http", reply["reason"]),
        ("websocket", reply["reason"]),
    ]


# --- one views module -------------------------------------------------------------------------


async def test_the_panel_the_api_and_the_websocket_show_the_same_cp_figures(
    http: tuple[CentralService, httpx.AsyncClient],
) -> None:
    central, client = http
    await central.on_authorization_request(ev.AuthorizationRequest(driver_id="D1", cp_id="CP1"))
    view = central.cp("CP1")
    assert view is not None
    assert view.session_id is not None
    await central.on_telemetry(
        ev.CpTelemetry(
            cp_id="CP1",
            session_id=view.session_id,
            driver_id="D1",
            seq=1,
            kw=Decimal("22"),
            energy_kwh=Decimal("1.500"),
            amount_eur=Decimal("0.53"),
        )
    )
    await central.monitor_auth("CP2", object())
    await central.stop_cp("CP2")

    by_api = (await client.get("/api/cps", headers={"X-Admin-Token": TOKEN})).json()
    ws = Dashboard(create_app(central, TOKEN))
    await ws.open()
    [await ws.receive_json() for _ in FULL_STATE]  # masked: the page has not logged in yet
    await ws.send_text(json.dumps({"type": "login", "token": TOKEN}))
    assert (await ws.receive_json())["type"] == "logged_in"
    first = [await ws.receive_json() for _ in FULL_STATE]  # then the whole state, unmasked
    await ws.close()
    by_ws = first[0]["charging_points"]
    by_panel = [v.json for v in snapshot(central).cps]

    assert by_api == by_ws == by_panel
    supplying = by_api[0]
    assert (
        supplying["state"],
        supplying["kw"],
        supplying["energy_kwh"],
        supplying["amount_eur"],
    ) == (
        "Suministrando",
        "22",
        "1.500",
        "0.53",
    )
    assert [v["tone"] for v in by_api] == ["ok", "stopped"]  # the admin page's class, from Central
    line = cp_line(snapshot(central).cps[0], 80).plain
    for figure in ("22 kW", "1.500 kWh", "0.53 €", "driver D1"):
        assert figure in line
    requests = (await client.get("/api/requests", headers={"X-Admin-Token": TOKEN})).json()
    assert (
        requests
        == [r.json for r in central.requests()]
        == [r.json for r in snapshot(central).requests]
    )


# --- one set of command models: the same field rules on both transports ----------------------


@pytest.mark.parametrize(
    ("path", "body", "frame", "field"),
    [
        (
            "/api/cps/CP1/simulate-error",
            {"error_type": ""},
            {"type": "simulate_error", "cp_id": "CP1", "error_type": ""},
            "error_type",
        ),
        (
            "/api/cps",
            {"id": "CP9", "location": "X", "price_eur_per_kwh": "0.31", "colour": "red"},
            {
                "type": "register_cp",
                "cp_id": "CP9",
                "location": "X",
                "price_eur_per_kwh": "0.31",
                "colour": "red",
            },
            "colour",
        ),
        (
            "/api/cps",
            {"id": "CP9", "location": "X", "price_eur_per_kwh": "-1"},
            {"type": "register_cp", "cp_id": "CP9", "location": "X", "price_eur_per_kwh": "-1"},
            "price_eur_per_kwh",
        ),
    ],
    ids=["empty-error-type", "unknown-field", "negative-price"],
)
async def test_a_field_breaking_a_rule_is_refused_by_both_transports(
    http: tuple[CentralService, httpx.AsyncClient],
    ws_app: tuple[CentralService, FastAPI],
    path: str,
    body: dict[str, Any],
    frame: dict[str, Any],
    field: str,
) -> None:
    answer = await http[1].post(path, json=body, headers={"X-Admin-Token": TOKEN})
    assert answer.status_code == 422
    assert field in json.dumps(answer.json()["detail"])
    async with dashboard(ws_app[1]) as ws:
        reply = await reply_to(ws, {**frame, "token": TOKEN})
    assert reply["type"] == "error"
    assert reply["reason"].startswith(f"invalid fields: {field}")
    for central in (http[0], ws_app[0]):
        assert central.cp("CP9") is None
        assert not central.cp("CP1").error_simulated  # type: ignore[union-attr]
