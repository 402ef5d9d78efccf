"""EV_Central's WebSocket hub (/ws) driven through its ASGI interface, with an in-memory
repository: full state first, pushes, coalescing, admin actions and their refusals, slow clients.

Starlette's TestClient is not used: it runs the app on another thread and now warns about httpx.
`Dashboard` speaks the ASGI WebSocket messages directly on the test's own event loop."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.websockets import WebSocketState

from evcharging.adapters.broker_state import KafkaState
from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.adapters.web.central_api import create_app, mount_dashboard
from evcharging.adapters.web.central_feed import DashboardHub, coalesce
from evcharging.contracts import events as ev
from evcharging.contracts.audit import AuditAction
from evcharging.services.admin import AdminDesk
from evcharging.services.audit import AuditQuery
from evcharging.services.central import CentralService
from evcharging.services.central_keys import CentralKeys
from evcharging.services.central_views import (
    CentralChange,
    CPChanged,
    CPView,
    MessageAdded,
    MessageView,
    RequestChanged,
    RequestView,
)
from evcharging.services.cp_keys import MasterKey
from evcharging.services.module_health import ModuleHealth
from evcharging.services.roles import Roles
from evcharging.services.weather_desk import WeatherDesk
from tests.support.asgi_websocket import PUSHED, Dashboard
from tests.support.builders import a_cp, a_driver, a_repo
from tests.support.fakes import RecordingPublisher

pytestmark = pytest.mark.timeout(60)

TOKEN = "s3cret-admin-token"
WRONG = "not-the-token-123"
FULL_STATE = ["all_cps", "requests", "messages", "kafka", "weather", "health"]
NOON = datetime(2026, 11, 27, 12, tzinfo=UTC)
MONITOR = object()  # stands for the Monitor connection that authenticated a CP


@pytest.fixture
def repo() -> SqliteRepository:
    return a_repo()


@pytest.fixture
async def central(repo: SqliteRepository) -> CentralService:
    a_cp(repo, "CP1", price="0.35", location="Alicante")
    a_cp(repo, "CP2", price="0.40", location="Valencia")
    a_driver(repo, "D1")
    keys = CentralKeys(repo, MasterKey(MasterKey.generate()))
    service = CentralService(repo, RecordingPublisher(), keys=keys)
    await service.load()
    await service.monitor_auth("CP1", MONITOR)
    await service.issue_key("CP1")
    return service


@pytest.fixture
def app(central: CentralService) -> FastAPI:
    return create_app(central, TOKEN)


@asynccontextmanager
async def dashboard(app: Any) -> AsyncIterator[Dashboard]:
    """An open /ws whose full-state frames have been read."""
    ws = Dashboard(app)
    await ws.open()
    first = [await ws.receive_json() for _ in FULL_STATE]
    assert [f["type"] for f in first] == FULL_STATE
    try:
        yield ws
    finally:
        await ws.close()


async def reply_to(ws: Dashboard, action: dict[str, Any]) -> dict[str, Any]:
    """Send an action; the first frame that is not a push is its reply."""
    await ws.send_text(json.dumps(action))
    while (frame := await ws.receive_json())["type"] in PUSHED:
        pass
    return frame


async def pushed(ws: Dashboard, until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Frames received until `until(frame)` is true (that one included)."""
    frames = [await ws.receive_json()]
    while not until(frames[-1]):
        frames.append(await ws.receive_json())
    return frames


def state_of(central: CentralService) -> tuple[Any, ...]:
    views = tuple(central.cps())
    sink = central.publisher
    assert isinstance(sink, RecordingPublisher)
    return views, len(sink.sent)


# --- the feed -----------------------------------------------------------------------------


async def test_a_new_socket_gets_the_full_state_first(app: FastAPI) -> None:
    ws = Dashboard(app)
    await ws.open()
    cps, requests, messages, kafka, weather, health = [await ws.receive_json() for _ in FULL_STATE]
    await ws.close()
    assert (kafka["type"], kafka["up"]) == ("kafka", True)
    assert (weather["office"]["state"], weather["alerts"]) == ("unknown", [])
    assert [m["name"] for m in health["modules"]] == [
        "central",
        "kafka",
        "registry",
        "ev_w",
        "weather_provider",
    ]
    assert cps["type"] == "all_cps"
    assert {v["id"]: v["state"] for v in cps["charging_points"]} == {
        "CP1": "Activado",
        "CP2": "Desconectado",
    }
    assert requests == {"type": "requests", "requests": [], "ts": requests["ts"]}
    assert messages["type"] == "messages"
    assert any("Central started" in m["text"] for m in messages["messages"])
    assert all(isinstance(f["ts"], int) and f["ts"] > 1_600_000_000_000 for f in (cps, messages))


async def test_a_change_at_central_is_pushed_as_it_happens(
    app: FastAPI, central: CentralService
) -> None:
    async with dashboard(app) as ws:
        await central.monitor_auth("CP2", MONITOR)
        frames = await pushed(ws, lambda f: f["type"] == "cps")
        assert frames[-1]["charging_points"] == [central.cp("CP2").json]  # type: ignore[union-attr]
        assert frames[-1]["charging_points"][0]["state"] == "Activado"
        frames += await pushed(ws, lambda f: f["type"] == "message")
        assert any("CP CP2 authenticated" in f.get("text", "") for f in frames)


async def test_changes_of_one_cp_are_coalesced_and_only_changed_cps_are_sent(
    app: FastAPI, central: CentralService
) -> None:
    async with dashboard(app) as ws:
        # Nothing below yields to the event loop, so the sender finds all of it pending at once.
        await central.stop_cp("CP1")
        await central.resume_cp("CP1")
        await central.simulate_error("CP1")
        await central.fix_error("CP1")
        await central.stop_cp("CP1")
        first = await ws.receive_json()
        assert first["type"] == "cps"
        assert [(v["id"], v["state"], v["caption"]) for v in first["charging_points"]] == [
            ("CP1", "Parado", "Out of Order")
        ]
        texts = [(await ws.receive_json())["text"] for _ in range(5)]
        assert "stopped by Central" in texts[0]
        assert "stopped by Central" in texts[-1]


async def test_a_change_made_on_another_thread_is_handed_to_the_hub_loop(
    app: FastAPI, central: CentralService
) -> None:
    async with dashboard(app) as ws:
        await asyncio.to_thread(asyncio.run, central.stop_cp("CP2"))
        frames = await pushed(ws, lambda f: f["type"] == "cps")
        assert frames[-1]["charging_points"][0]["id"] == "CP2"
        assert frames[-1]["charging_points"][0]["admin_stopped"] is True


def _cp(cp_id: str, state: str) -> CPView:
    return CPView({"id": cp_id, "state": state})  # type: ignore[typeddict-item]


def _row(key: str, status: str) -> RequestView:
    return RequestView({"key": key, "status": status})  # type: ignore[typeddict-item]


def test_coalesce_keeps_the_latest_view_per_cp_and_row_and_the_oldest_stamp() -> None:
    batch: list[Any] = [
        (CPChanged(_cp("A", "Activado")), 10),
        (MessageAdded(MessageView(NOON, "info", "one")), 11),
        (CPChanged(_cp("B", "Parado")), 12),
        (RequestChanged("s1", _row("s1", "authorised")), 13),
        (RequestChanged("s2", _row("s2", "authorised")), 13),
        (CPChanged(_cp("A", "Averiado")), 14),
        (RequestChanged("s1", _row("s1", "supplying")), 15),
        (RequestChanged("s2", None), 16),
    ]
    assert coalesce(batch) == [
        {
            "type": "cps",
            "charging_points": [{"id": "B", "state": "Parado"}, {"id": "A", "state": "Averiado"}],
            "ts": 10,
        },
        {
            "type": "request_changes",
            "changed": [{"key": "s1", "status": "supplying"}],
            "removed": ["s2"],
            "ts": 13,
        },
        {"type": "message", "at": NOON.isoformat(), "level": "info", "text": "one", "ts": 11},
    ]


async def test_a_request_row_push_does_not_grow_with_the_table(central: CentralService) -> None:
    """A burst of N authorisations must cost N, not N^2: each push carries only its own row."""
    seen: list[CentralChange] = []
    central.subscribe(seen.append)
    for i in range(50):
        central._request(f"D{i}", "CP1", "authorised", f"s{i}")
    rows = [change for change in seen if isinstance(change, RequestChanged)]
    assert len(rows) == 50
    assert coalesce([(rows[-1], 1)]) == [
        {
            "type": "request_changes",
            "changed": [central.requests()[-1].json],
            "removed": [],
            "ts": 1,
        }
    ]
    assert len(central.requests()) == 50


# --- admin actions --------------------------------------------------------------------------

ACTIONS = [
    ({"type": "login"}, "logged_in"),
    ({"type": "edit_cp", "cp_id": "CP1", "price_eur_per_kwh": "0.45"}, "cp_edited"),
    ({"type": "simulate_error", "cp_id": "CP1", "error_type": "fault"}, "error_simulated"),
    ({"type": "fix_error", "cp_id": "CP1"}, "error_fixed"),
    ({"type": "stop_cp", "cp_id": "CP1"}, "cp_stopped"),
    ({"type": "resume_cp", "cp_id": "CP1"}, "cp_resumed"),
    ({"type": "stop_all"}, "all_stopped"),
    ({"type": "resume_all"}, "all_resumed"),
    ({"type": "revoke_keys", "cp_id": "CP1"}, "keys_revoked"),
    ({"type": "rotate_keys"}, "keys_rotated"),
    ({"type": "report_status", "cp_id": "CP1"}, "status_asked"),
    ({"type": "reset_cp", "cp_id": "CP1", "hard": True}, "reset_asked"),
    (
        {"type": "register_cp", "cp_id": "CP9", "location": "Murcia", "price_eur_per_kwh": "0.31"},
        "cp_registered",
    ),
]
ACTION_IDS = [a["type"] for a, _ in ACTIONS]


@pytest.mark.parametrize(("action", "answer"), ACTIONS, ids=ACTION_IDS)
@pytest.mark.parametrize(
    ("token", "reason"),
    [(None, "admin token required"), ("", "admin token required"), (WRONG, "wrong admin token")],
    ids=["missing", "empty", "wrong"],
)
async def test_every_action_needs_the_admin_token(
    app: FastAPI,
    central: CentralService,
    caplog: pytest.LogCaptureFixture,
    action: dict[str, Any],
    answer: str,
    token: str | None,
    reason: str,
) -> None:
    before = state_of(central)
    async with dashboard(app) as ws:
        sent = action if token is None else {**action, "token": token}
        reply = await reply_to(ws, sent)
    assert {k: v for k, v in reply.items() if k != "ts"} == {
        "type": "error",
        "action": action["type"],
        "reason": reason,
    }
    assert state_of(central) == before
    assert f"action {action['type']} refused: {reason}" in caplog.text
    assert WRONG not in caplog.text


# What must be done first so that an action makes sense (issue point 15).
PREPARE = {"fix_error": "simulate_error", "resume_cp": "stop_cp"}


@pytest.mark.parametrize(("action", "answer"), ACTIONS, ids=ACTION_IDS)
async def test_every_action_with_the_token_is_done_and_answered(
    app: FastAPI,
    central: CentralService,
    caplog: pytest.LogCaptureFixture,
    action: dict[str, Any],
    answer: str,
) -> None:
    if action["type"] in PREPARE:
        await getattr(central, PREPARE[action["type"]])(action["cp_id"])
    async with dashboard(app) as ws:
        reply = await reply_to(ws, {**action, "token": TOKEN})
    assert reply["type"] == answer
    assert isinstance(reply["ts"], int)
    assert reply["message"]
    if "cp_id" in action:
        assert reply["cp_id"] == action["cp_id"]
        assert reply["cp"]["id"] == action["cp_id"]
    assert TOKEN not in caplog.text


async def test_seed_flow_2_simulate_and_fix_error_replies_and_events(
    app: FastAPI, central: CentralService
) -> None:
    sink = central.publisher
    assert isinstance(sink, RecordingPublisher)
    async with dashboard(app) as ws:
        simulated = await reply_to(ws, {"type": "simulate_error", "cp_id": "CP1", "token": TOKEN})
        assert simulated["message"] == 'Error "fault" simulated at CP1'
        assert simulated["cp"]["state"] == "Averiado"
        fixed = await reply_to(ws, {"type": "fix_error", "cp_id": "CP1", "token": TOKEN})
        assert fixed["message"] == "Error fixed at CP1"
        assert fixed["cp"]["state"] == "Activado"
        stopped = await reply_to(ws, {"type": "stop_all", "token": TOKEN})
    assert stopped["cp_ids"] == ["CP1", "CP2"]
    errors = [e for e in sink.sent if isinstance(e, ev.CpErrorSimulated | ev.CpErrorFixed)]
    assert [type(e) for e in errors] == [ev.CpErrorSimulated, ev.CpErrorFixed]
    assert central.cp("CP1").caption == "Out of Order"  # type: ignore[union-attr]


# --- issue point 15: an action that makes no sense is refused with the reason, as HTTP's 409 ---


@pytest.mark.parametrize(
    ("before", "action", "reason"),
    [
        # the issue's three cases (CP2 has no Monitor: Desconectado)
        ([], {"type": "simulate_error", "cp_id": "CP2"}, "CP CP2 is Desconectado: an error can"),
        ([], {"type": "fix_error", "cp_id": "CP1"}, "CP CP1 has no simulated error to fix"),
        ([], {"type": "resume_cp", "cp_id": "CP1"}, "CP CP1 is not stopped (Activado)"),
        # their mirrors, and registering an id twice (issue point 8)
        (["stop_cp"], {"type": "stop_cp", "cp_id": "CP1"}, "CP CP1 is already stopped"),
        (
            ["simulate_error"],
            {"type": "simulate_error", "cp_id": "CP1"},
            "CP CP1 already has a simulated error: fix it first",
        ),
        (
            [],
            {"type": "register_cp", "cp_id": "CP1", "location": "X", "price_eur_per_kwh": "9.99"},
            "CP CP1 is already registered: nothing changed",
        ),
        # issue 16: an ask nobody would hear
        ([], {"type": "report_status", "cp_id": "CP2"}, "CP CP2 is Desconectado: no Monitor"),
        ([], {"type": "reset_cp", "cp_id": "CP2"}, "CP CP2 is Desconectado: no Monitor"),
        ([], {"type": "reset_cp", "cp_id": "NOPE"}, "unknown CP NOPE"),
    ],
)
async def test_a_senseless_action_is_refused_with_the_reason_and_changes_nothing(
    app: FastAPI,
    central: CentralService,
    repo: SqliteRepository,
    caplog: pytest.LogCaptureFixture,
    before: list[str],
    action: dict[str, Any],
    reason: str,
) -> None:
    for step in before:
        await getattr(central, step)("CP1")
    was = state_of(central), repo.list_cps(), central.messages()
    async with dashboard(app) as ws:
        reply = await reply_to(ws, {**action, "token": TOKEN})
    assert {k: v for k, v in reply.items() if k not in ("ts", "reason")} == {
        "type": "error",
        "action": action["type"],
    }
    assert reply["reason"].startswith(reason)
    assert (state_of(central), repo.list_cps(), central.messages()) == was
    assert f"action {action['type']} refused: {reason}" in caplog.text


async def test_stop_all_says_which_cps_it_stopped_and_which_it_skipped(
    app: FastAPI, central: CentralService
) -> None:
    await central.stop_cp("CP2")
    async with dashboard(app) as ws:
        stopped = await reply_to(ws, {"type": "stop_all", "token": TOKEN})
        resumed = await reply_to(ws, {"type": "resume_all", "token": TOKEN})
        none = await reply_to(ws, {"type": "resume_all", "token": TOKEN})
    assert stopped["cp_ids"] == ["CP1"]
    assert stopped["skipped"] == [{"id": "CP2", "reason": "CP CP2 is already stopped"}]
    assert stopped["message"] == "1 CP stopped; 1 skipped (already stopped)"
    assert (resumed["cp_ids"], resumed["skipped"], resumed["message"]) == (
        ["CP1", "CP2"],
        [],
        "2 CPs resumed",
    )
    assert none["type"] == "all_resumed"
    assert none["message"] == "0 CPs resumed; 2 skipped (not stopped)"


async def test_edit_cp_changes_location_and_price_and_every_page_sees_it(
    app: FastAPI, repo: SqliteRepository
) -> None:
    async with dashboard(app) as admin, dashboard(app) as watcher:
        edit = {"type": "edit_cp", "cp_id": "CP1", "location": "Elche", "token": TOKEN}
        reply = await reply_to(admin, {**edit, "price_eur_per_kwh": "0.45"})
        frames = await pushed(watcher, lambda f: f["type"] == "cps")
    assert reply["type"] == "cp_edited"
    assert reply["message"] == "CP CP1 edited (Elche, 0.45 €/kWh)"
    assert (reply["cp"]["location"], reply["cp"]["price_eur_per_kwh"]) == ("Elche", "0.45")
    assert frames[-1]["charging_points"][0]["price_eur_per_kwh"] == "0.45"
    stored = repo.get_cp("CP1")
    assert stored is not None
    assert (stored.location, str(stored.price_eur_per_kwh)) == ("Elche", "0.45")


async def test_another_dashboard_sees_the_change_an_admin_made(app: FastAPI) -> None:
    async with dashboard(app) as admin, dashboard(app) as watcher:
        await reply_to(admin, {"type": "simulate_error", "cp_id": "CP1", "token": TOKEN})
        frames = await pushed(watcher, lambda f: f["type"] == "cps")
        assert frames[-1]["charging_points"][0]["state"] == "Averiado"


def _with_token(**fields: Any) -> str:
    return json.dumps({**fields, "token": TOKEN})


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "a message must be a JSON object"),
        (json.dumps({"cp_id": "CP1"}), "unknown action 'None'"),
        (_with_token(type="explode"), "unknown action 'explode'"),
        (_with_token(type="stop_cp"), "invalid fields: cp_id: Field required"),
        (_with_token(type="stop_cp", cp_id="NOPE"), "unknown CP NOPE"),
        (_with_token(type="simulate_error", cp_id="NOPE"), "unknown CP NOPE"),
        (_with_token(type="fix_error", cp_id="a b"), "invalid fields: cp_id"),
        (_with_token(type="simulate_error", cp_id="CP1", error_type=""), "invalid fields"),
        (
            _with_token(type="register_cp", cp_id="CP9", location="X", price_eur_per_kwh="-1"),
            "invalid fields: price_eur_per_kwh",
        ),
        (_with_token(type="register_cp", cp_id="CP9"), "invalid fields: location"),
        (_with_token(type="edit_cp", cp_id="CP1"), "invalid fields: body: Value error, give"),
        (_with_token(type="edit_cp", cp_id="CP1", location=""), "invalid fields: location"),
        (_with_token(type="edit_cp", cp_id="NOPE", location="X"), "unknown CP NOPE"),
        (json.dumps({"type": "stop_cp", "cp_id": "CP1", "token": 7}), "admin token required"),
        ("x" * 20_000, "message too large"),
    ],
)
async def test_bad_input_is_refused_with_a_reason_and_changes_nothing(
    app: FastAPI,
    central: CentralService,
    caplog: pytest.LogCaptureFixture,
    raw: str,
    reason: str,
) -> None:
    before = state_of(central)
    async with dashboard(app) as ws:
        await ws.send_text(raw)
        reply = await ws.receive_json()
        assert reply["type"] == "error"
        assert reply["reason"].startswith(reason)
        after = await reply_to(ws, {"type": "login", "token": TOKEN})
        assert after["type"] == "logged_in"  # the socket is still usable
    assert state_of(central) == before
    refused = [r for r in caplog.records if r.levelno == logging.WARNING and "refused" in r.msg]
    assert refused
    assert TOKEN not in caplog.text


async def test_websocket_admin_outcomes_are_audit_rows_with_the_pages_ip(
    app: FastAPI, repo: SqliteRepository
) -> None:
    """Issue 13: a malformed frame, a wrong token, a senseless action and a done one: each a row
    with the page's address (the ASGI client: 127.0.0.1), never the token."""
    async with dashboard(app) as ws:
        await ws.send_text("{not json")
        assert (await ws.receive_json())["reason"] == "malformed JSON"
        await reply_to(ws, {"type": "stop_cp", "cp_id": "CP1", "token": WRONG})
        await reply_to(ws, {"type": "resume_cp", "cp_id": "CP1", "token": TOKEN})
        assert (await reply_to(ws, {"type": "stop_cp", "cp_id": "CP1", "token": TOKEN}))[
            "type"
        ] == "cp_stopped"
    rows = [
        (r.action.value, r.actor, r.ip, r.cp_id, r.detail)
        for r in reversed(repo.find_audit(AuditQuery(limit=50)))
        if r.params.get("transport") == "websocket"
    ]
    assert rows == [
        ("admin.refused", "anonymous", "127.0.0.1", None, "malformed JSON"),
        ("admin.refused", "anonymous", "127.0.0.1", None, "wrong admin token"),
        (
            "admin.refused",
            "admin",
            "127.0.0.1",
            "CP1",
            "CP CP1 is not stopped (Activado): nothing to resume",
        ),
        ("admin.action", "admin", "127.0.0.1", "CP1", "CP CP1 stopped: Out of Order"),
    ]
    [blocked] = repo.find_audit(AuditQuery(action=AuditAction.CP_BLOCKED))
    assert (blocked.actor, blocked.ip, blocked.cp_id) == ("admin", "127.0.0.1", "CP1")
    everything = " ".join(f"{r.detail} {r.params}" for r in repo.find_audit(AuditQuery(limit=500)))
    assert TOKEN not in everything
    assert WRONG not in everything


async def test_revoke_keys_pushes_the_cp_parado_with_the_reason_and_is_audited(
    app: FastAPI, central: CentralService, repo: SqliteRepository
) -> None:
    """Issue 14: "restaurar claves" from a page: the reply and every page's push show the CP
    Parado, "keys revoked"; a second revoke is refused with the reason and changes nothing."""
    async with dashboard(app) as ws, dashboard(app) as other:
        reply = await reply_to(ws, {"type": "revoke_keys", "cp_id": "CP1", "token": TOKEN})
        assert reply["type"] == "keys_revoked"
        assert reply["message"] == (
            "CP CP1 keys revoked: out of service until its Monitor authenticates again"
        )
        view = reply["cp"]
        assert (view["state"], view["caption"], view["stop_reason"]) == (
            "Parado",
            "Out of Order",
            "keys revoked",
        )
        assert (view["key"], view["key_version"], view["keys_revoked"]) == (
            "keys revoked",
            None,
            True,
        )
        assert "revoke_keys" not in view["actions"]
        frames = await pushed(other, lambda f: f["type"] == "cps")
        assert frames[-1]["charging_points"][-1] == view
        before = state_of(central)
        again = await reply_to(ws, {"type": "revoke_keys", "cp_id": "CP1", "token": TOKEN})
        assert (again["type"], again["action"]) == ("error", "revoke_keys")
        assert again["reason"].startswith("CP CP1's keys are already revoked")
        assert state_of(central) == before
        rotated = await reply_to(ws, {"type": "rotate_keys", "token": TOKEN})
        assert (rotated["cp_ids"], rotated["message"]) == (
            [],
            "no connected CP to ask for a new key",
        )
    rows = [
        (r.action.value, r.actor, r.ip, r.cp_id, r.outcome.value)
        for r in reversed(repo.find_audit(AuditQuery(limit=50)))
        if r.action.value.startswith(("key.", "admin."))
    ]
    assert rows == [
        ("key.issued", "cp:CP1", "-", "CP1", "ok"),
        ("key.revoked", "admin", "127.0.0.1", "CP1", "ok"),
        ("admin.action", "admin", "127.0.0.1", "CP1", "ok"),
        ("admin.refused", "admin", "127.0.0.1", "CP1", "denied"),
        ("key.rotated", "admin", "127.0.0.1", None, "ok"),
        ("admin.action", "admin", "127.0.0.1", None, "ok"),
    ]


async def test_cp_views_on_the_feed_say_whether_the_cp_is_registered(app: FastAPI) -> None:
    ws = Dashboard(app)
    await ws.open()
    try:
        first = await ws.receive_json()
    finally:
        await ws.close()
    assert first["type"] == "all_cps"
    assert [(c["id"], c["registered"]) for c in first["charging_points"]] == [
        ("CP1", False),
        ("CP2", False),
    ]


async def test_a_binary_frame_is_refused(app: FastAPI) -> None:
    async with dashboard(app) as ws:
        await ws.send_bytes(b"\x00\x01")
        assert (await ws.receive_json())["reason"] == "binary frames are not accepted"


# --- slow and dead clients -----------------------------------------------------------------------


async def test_a_client_that_falls_behind_gets_the_full_state_again(
    central: CentralService, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()
    health = ModuleHealth(central.audit)
    weather = WeatherDesk(central, Roles(TOKEN), health)
    hub = DashboardHub(
        central, AdminDesk(central, TOKEN), queue_size=3, weather=weather, health=health
    )
    mount_dashboard(app, hub)
    async with dashboard(app) as ws:
        for _ in range(2):  # 6+ changes without yielding: more than the queue holds
            await central.stop_all()
            await central.resume_all()
        await central.stop_all()
        again = [await ws.receive_json() for _ in FULL_STATE]
    assert [f["type"] for f in again] == FULL_STATE
    assert all(v["admin_stopped"] for v in again[0]["charging_points"])
    assert "client too slow" in caplog.text


class StuckSocket:
    """A peer that never reads: every send hangs."""

    client = None
    client_state = application_state = WebSocketState.CONNECTED

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def accept(self) -> None:
        pass

    async def receive(self) -> dict[str, Any]:
        await self.closed.wait()
        return {"type": "websocket.disconnect"}

    async def send_text(self, text: str) -> None:
        await asyncio.Event().wait()

    async def close(self, code: int = 1000) -> None:
        self.closed.set()


async def test_a_client_that_takes_nothing_is_disconnected_and_never_blocks_central(
    central: CentralService, caplog: pytest.LogCaptureFixture
) -> None:
    hub = DashboardHub(central, AdminDesk(central, TOKEN), queue_size=2, send_timeout=0.2)
    serving = asyncio.create_task(hub.serve(StuckSocket()))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert hub.client_count == 1
    for _ in range(3):  # Central goes on while the page is stuck
        await asyncio.wait_for(central.stop_all(), 1)
        await asyncio.wait_for(central.resume_all(), 1)
    await asyncio.wait_for(serving, 5)
    assert hub.client_count == 0
    assert "took over 0.2s to take a frame: disconnected" in caplog.text


# --- the page ----------------------------------------------------------------------------------


async def test_the_admin_page_and_its_assets_are_served(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://central") as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert 'data-testid="ws-status"' in page.text
        for asset, kind in [("admin.js", "javascript"), ("admin.css", "text/css")]:
            response = await client.get(f"/static/admin/{asset}")
            assert response.status_code == 200
            assert kind in response.headers["content-type"]
        assert (await client.get("/static/admin/nope.js")).status_code == 404
        assert "/ws" not in (await client.get("/openapi.json")).json()["paths"]


async def test_kafka_going_and_coming_back_is_pushed(app: FastAPI) -> None:
    hub = app.state.dashboard_hub
    async with dashboard(app) as ws:
        hub.set_kafka(KafkaState(up=False, problem="Kafka unreachable at k:9092", since=5.0))
        [down] = await pushed(ws, lambda f: f["type"] == "kafka")
        hub.set_kafka(KafkaState(up=True, since=20.0))
        [up] = await pushed(ws, lambda f: f["type"] == "kafka")
    assert (down["up"], down["problem"], down["since"]) == (
        False,
        "Kafka unreachable at k:9092",
        5.0,
    )
    assert up["up"] is True


async def test_report_status_and_reset_from_a_page_ask_the_cp_and_are_audited(
    app: FastAPI, central: CentralService, repo: SqliteRepository
) -> None:
    """Issue 16: the reply names the CP, says what was asked (a reset says which), carries the
    CP's unchanged view; the ask goes to the CP's Engine (or EV_OCPP) on cp-commands."""
    sink = central.publisher
    assert isinstance(sink, RecordingPublisher)
    async with dashboard(app) as ws:
        report = await reply_to(ws, {"type": "report_status", "cp_id": "CP1", "token": TOKEN})
        soft = await reply_to(ws, {"type": "reset_cp", "cp_id": "CP1", "token": TOKEN})
        hard = await reply_to(
            ws, {"type": "reset_cp", "cp_id": "CP1", "hard": True, "token": TOKEN}
        )
        bad = await reply_to(ws, {"type": "reset_cp", "cp_id": "CP1", "hard": 2, "token": TOKEN})
    assert (report["type"], report["cp_id"], report["message"]) == (
        "status_asked",
        "CP1",
        "CP CP1 asked to report its status",
    )
    assert report["cp"]["state"] == "Activado"
    assert [(r["type"], r["hard"], r["message"]) for r in (soft, hard)] == [
        ("reset_asked", False, "CP CP1 asked to reset (soft)"),
        ("reset_asked", True, "CP CP1 asked to reset (hard)"),
    ]
    assert bad["type"] == "error"
    assert bad["reason"].startswith("invalid fields: hard: ")
    asked = [e for e in sink.sent if isinstance(e, ev.CpReportStatus | ev.CpReset)]
    assert [(e.event_type, e.key(), getattr(e, "hard", None)) for e in asked] == [
        ("CP_REPORT_STATUS", "CP1", None),
        ("CP_RESET", "CP1", False),
        ("CP_RESET", "CP1", True),
    ]
    rows = [
        (r.action.value, r.ip, r.cp_id, r.params["command"], r.params["transport"])
        for r in reversed(repo.find_audit(AuditQuery(limit=50)))
        if r.action.value.startswith("admin.")
    ]
    assert rows == [
        ("admin.action", "127.0.0.1", "CP1", "report_status", "websocket"),
        ("admin.action", "127.0.0.1", "CP1", "reset_cp", "websocket"),
        ("admin.action", "127.0.0.1", "CP1", "reset_cp", "websocket"),
        ("admin.refused", "127.0.0.1", None, "reset_cp", "websocket"),
    ]
