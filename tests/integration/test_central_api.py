"""EV_Central's HTTP API over a real ASGI stack (FastAPI + httpx), with an in-memory repository."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import httpx
import pytest

from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.adapters.web.central_api import create_app
from evcharging.contracts import events as ev
from evcharging.contracts.audit import AuditAction
from evcharging.contracts.socket_ops import ErrReason
from evcharging.services.audit import AuditQuery
from evcharging.services.central import CentralService
from evcharging.services.central_keys import CentralKeys
from evcharging.services.cp_auth import make_verifier, new_secret
from evcharging.services.cp_keys import MasterKey
from tests.support.builders import a_cp, a_driver, a_repo
from tests.support.fakes import RecordingPublisher

TOKEN = "s3cret"


@pytest.fixture
def repo() -> SqliteRepository:
    return a_repo()


@pytest.fixture
def central(repo: SqliteRepository) -> CentralService:
    a_cp(repo, "CP1", price="0.35")  # never connected: Desconectado
    a_cp(repo, "CP2", price="0.39", location="Valencia")  # its Monitor connects: Activado
    a_driver(repo, "D1", balance="12.34")
    keys = CentralKeys(repo, MasterKey(MasterKey.generate()))
    return CentralService(repo, RecordingPublisher(), keys=keys)


MONITOR = object()  # the Monitor connection that authenticated CP2


@pytest.fixture
async def client(central: CentralService):
    await central.load()
    await central.monitor_auth("CP2", MONITOR)
    await central.issue_key("CP2")
    transport = httpx.ASGITransport(app=create_app(central, TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://central") as c:
        yield c


def admin(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sent(central: CentralService) -> list[Any]:
    publisher = central.publisher
    assert isinstance(publisher, RecordingPublisher)
    return list(publisher.sent)


def snapshot(central: CentralService, repo: SqliteRepository) -> tuple[Any, ...]:
    """Everything an admin action could change: views, stored records, events, messages."""
    return (central.cps(), repo.list_cps(), sent(central), central.messages())


OPERATOR_READS = [
    "/api/cps",
    "/api/cps/{cp_id}",
    "/api/drivers/{driver_id}",
    "/api/sessions",
    "/api/requests",
    "/api/messages",
]


async def test_reads_with_the_admin_token(client: httpx.AsyncClient) -> None:
    cps = (await client.get("/api/cps", headers=admin())).json()
    assert [(c["id"], c["state"], c["price_eur_per_kwh"]) for c in cps] == [
        ("CP1", "Desconectado", "0.35"),
        ("CP2", "Activado", "0.39"),
    ]
    assert (await client.get("/api/drivers/D1", headers=admin())).json()["balance_eur"] == "12.34"
    assert (await client.get("/api/drivers/NOPE", headers=admin())).status_code == 404
    assert (await client.get("/api/cps/NOPE", headers=admin())).json() == {
        "detail": "unknown CP NOPE"
    }
    assert (
        await client.get("/api/sessions?driver_id=D1&status=ended", headers=admin())
    ).json() == []
    assert (await client.get("/api/sessions?status=bogus", headers=admin())).status_code == 422
    assert (await client.get("/api/sessions?offset=5", headers=admin())).json() == []
    assert (await client.get("/api/sessions?offset=-1", headers=admin())).status_code == 422
    assert (await client.get("/docs")).status_code == 200
    assert "/api/cps/{cp_id}/simulate-error" in (await client.get("/openapi.json")).json()["paths"]


# (path, what must be done first so that the action makes sense)
ADMIN_ACTIONS = [
    ("/api/cps/CP2/stop", None),
    ("/api/cps/CP2/resume", "/api/cps/CP2/stop"),
    ("/api/cps/stop-all", None),
    ("/api/cps/resume-all", None),
    ("/api/cps/CP2/simulate-error", None),
    ("/api/cps/CP2/fix-error", "/api/cps/CP2/simulate-error"),
    ("/api/cps/CP2/revoke-keys", None),
    ("/api/cps/rotate-keys", None),
    ("/api/cps/CP2/report-status", None),
    ("/api/cps/CP2/reset", None),
]


# every per-CP action of the unversioned API (POST /api/cps/{cp_id}/...)
PER_CP = (
    "stop",
    "resume",
    "simulate-error",
    "fix-error",
    "revoke-keys",
    "report-status",
    "reset",
)


@pytest.mark.parametrize(("path", "before"), ADMIN_ACTIONS)
@pytest.mark.parametrize(
    "good", [admin(), {"X-Admin-Token": TOKEN}], ids=["bearer", "x-admin-token"]
)
async def test_admin_actions_need_the_admin_token(
    client: httpx.AsyncClient, path: str, before: str | None, good: dict[str, str]
) -> None:
    if before:
        assert (await client.post(before, headers=admin())).status_code == 200
    refused = await client.post(path)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.post(path, headers=admin("wrong"))).status_code == 401
    assert (await client.post(path, headers={"Authorization": TOKEN})).status_code == 401
    assert (await client.post(path, headers=good)).status_code == 200


async def test_actions_on_an_unknown_cp_are_404(client: httpx.AsyncClient) -> None:
    for action in PER_CP:
        answer = await client.post(f"/api/cps/NOPE/{action}", headers=admin())
        assert (answer.status_code, answer.json()) == (404, {"detail": "unknown CP NOPE"})


# --- issue point 15: an action that makes no sense in the CP's state is 409, with the reason ---


@pytest.mark.parametrize(
    ("before", "path", "reason"),
    [
        # the issue's three cases
        ([], "/api/cps/CP1/simulate-error", "CP CP1 is Desconectado: an error can only be"),
        ([], "/api/cps/CP2/fix-error", "CP CP2 has no simulated error to fix (Activado)"),
        ([], "/api/cps/CP2/resume", "CP CP2 is not stopped (Activado): nothing to resume"),
        # and their mirrors
        (["/api/cps/CP2/stop"], "/api/cps/CP2/stop", "CP CP2 is already stopped"),
        (
            ["/api/cps/CP2/simulate-error"],
            "/api/cps/CP2/simulate-error",
            "CP CP2 already has a simulated error: fix it first",
        ),
        ([], "/api/cps/CP1/fix-error", "CP CP1 has no simulated error to fix (Desconectado)"),
        # issue 16: an ask nobody would hear
        ([], "/api/cps/CP1/report-status", "CP CP1 is Desconectado: no Monitor link, so nobody"),
        ([], "/api/cps/CP1/reset", "CP CP1 is Desconectado: no Monitor link, so nobody"),
        (["/api/cps/CP2/revoke-keys"], "/api/cps/CP2/reset", "CP CP2 has its keys revoked"),
    ],
)
async def test_a_senseless_action_is_409_with_the_reason_and_changes_nothing(
    client: httpx.AsyncClient,
    central: CentralService,
    repo: SqliteRepository,
    caplog: pytest.LogCaptureFixture,
    before: list[str],
    path: str,
    reason: str,
) -> None:
    for step in before:
        assert (await client.post(step, headers=admin())).status_code == 200
    was = snapshot(central, repo)
    answer = await client.post(path, headers=admin())
    assert answer.status_code == 409
    assert answer.json()["detail"].startswith(reason)
    assert snapshot(central, repo) == was
    assert f"refused: {reason}" in caplog.text


async def test_simulate_error_on_a_desconectado_cp_no_longer_claims_averiado(
    client: httpx.AsyncClient, central: CentralService, repo: SqliteRepository
) -> None:
    """The issue's log line '-> Averiado' for a CP that stayed Desconectado."""
    answer = await client.post("/api/cps/CP1/simulate-error", headers=admin())
    assert answer.status_code == 409
    assert not any("Averiado" in m.text for m in central.messages())
    assert not repo.get_cp("CP1").error_simulated  # type: ignore[union-attr]
    assert (await client.get("/api/cps/CP1", headers=admin())).json()["actions"] == [
        "stop_cp",
        "revoke_keys",
    ]


async def test_stop_all_and_resume_all_act_where_it_makes_sense_and_say_what_they_skipped(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post("/api/cps/CP1/stop", headers=admin())).status_code == 200
    stopped = (await client.post("/api/cps/stop-all", headers=admin())).json()
    assert [v["id"] for v in stopped["changed"]] == ["CP2"]
    assert stopped["changed"][0]["caption"] == "Out of Order"
    assert stopped["skipped"] == [{"id": "CP1", "reason": "CP CP1 is already stopped"}]
    again = (await client.post("/api/cps/stop-all", headers=admin())).json()
    assert (again["changed"], [s["id"] for s in again["skipped"]]) == ([], ["CP1", "CP2"])
    resumed = (await client.post("/api/cps/resume-all", headers=admin())).json()
    assert [v["id"] for v in resumed["changed"]] == ["CP1", "CP2"]
    assert resumed["skipped"] == []
    nothing = (await client.post("/api/cps/resume-all", headers=admin())).json()
    assert nothing["changed"] == []
    assert nothing["skipped"][1] == {
        "id": "CP2",
        "reason": "CP CP2 is not stopped (Activado): nothing to resume",
    }


async def test_the_view_says_which_actions_make_sense(client: httpx.AsyncClient) -> None:
    async def actions(cp_id: str) -> list[str]:
        return list((await client.get(f"/api/cps/{cp_id}", headers=admin())).json()["actions"])

    asks = ["report_status", "reset_cp"]  # CP2 is connected: something hears them
    assert await actions("CP2") == ["stop_cp", "simulate_error", "revoke_keys", *asks]
    await client.post("/api/cps/CP2/stop", headers=admin())
    assert await actions("CP2") == ["resume_cp", "simulate_error", "revoke_keys", *asks]
    await client.post("/api/cps/CP2/simulate-error", headers=admin())
    assert await actions("CP2") == ["resume_cp", "fix_error", "revoke_keys", *asks]
    await client.post("/api/cps/CP2/revoke-keys", headers=admin())
    assert await actions("CP2") == ["resume_cp", "fix_error"]


# --- issue point 8: registering never overwrites; editing is PATCH --------------------------


async def test_stop_shows_out_of_order_and_register_adds_a_cp(client: httpx.AsyncClient) -> None:
    stopped = (await client.post("/api/cps/CP1/stop", headers=admin())).json()
    assert (stopped["state"], stopped["admin_stopped"]) == ("Desconectado", True)  # no Monitor yet
    body = {"id": "CP9", "location": "Murcia", "price_eur_per_kwh": "0.31"}
    assert (await client.post("/api/cps", json=body)).status_code == 401
    created = await client.post("/api/cps", json=body, headers=admin())
    assert created.status_code == 201
    assert created.json()["state"] == "Desconectado"
    bad = await client.post("/api/cps", json={**body, "price_eur_per_kwh": "-1"}, headers=admin())
    assert bad.status_code == 422
    malformed = await client.post(
        "/api/cps", content=b"{not json", headers={**admin(), "Content-Type": "application/json"}
    )
    assert malformed.status_code == 422


async def test_registering_an_existing_cp_is_409_and_changes_nothing(
    client: httpx.AsyncClient, central: CentralService, repo: SqliteRepository
) -> None:
    """The issue: 201, and the price changed from 0.39 to 9.99."""
    was = snapshot(central, repo)
    body = {"id": "CP2", "location": "Elsewhere", "price_eur_per_kwh": "9.99"}
    answer = await client.post("/api/cps", json=body, headers=admin())
    assert answer.status_code == 409
    assert answer.json()["detail"].startswith("CP CP2 is already registered: nothing changed")
    assert snapshot(central, repo) == was
    cp = (await client.get("/api/cps/CP2", headers=admin())).json()
    assert (cp["location"], cp["price_eur_per_kwh"], cp["state"]) == (
        "Valencia",
        "0.39",
        "Activado",
    )


async def test_patch_edits_location_and_price_of_a_registered_cp(
    client: httpx.AsyncClient, central: CentralService, repo: SqliteRepository
) -> None:
    path = "/api/cps/CP2"
    assert (await client.patch(path, json={"price_eur_per_kwh": "0.45"})).status_code == 401
    priced = await client.patch(path, json={"price_eur_per_kwh": "0.45"}, headers=admin())
    assert priced.status_code == 200
    assert (priced.json()["location"], priced.json()["price_eur_per_kwh"]) == ("Valencia", "0.45")
    moved = (await client.patch(path, json={"location": "Elche"}, headers=admin())).json()
    assert (moved["location"], moved["price_eur_per_kwh"], moved["state"]) == (
        "Elche",
        "0.45",
        "Activado",
    )
    stored = repo.get_cp("CP2")
    assert stored is not None
    assert (stored.location, str(stored.price_eur_per_kwh)) == ("Elche", "0.45")
    status = [e for e in sent(central) if isinstance(e, ev.CpStatus) and e.cp_id == "CP2"][-1]
    assert (status.location, str(status.price_eur_per_kwh)) == ("Elche", "0.45")  # drivers told
    assert any("CP CP2 edited: Elche, 0.45 €/kWh" in m.text for m in central.messages())


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/cps/NOPE", {"location": "X"}, 404),
        ("/api/cps/CP2", {}, 422),
        ("/api/cps/CP2", {"price_eur_per_kwh": "0"}, 422),
        ("/api/cps/CP2", {"location": ""}, 422),
        ("/api/cps/CP2", {"id": "CP3"}, 422),  # the id is not editable
    ],
)
async def test_a_bad_patch_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    central: CentralService,
    repo: SqliteRepository,
    path: str,
    body: Any,
    status: int,
) -> None:
    was = snapshot(central, repo)
    assert (await client.patch(path, json=body, headers=admin())).status_code == status
    assert snapshot(central, repo) == was


# --- issue point 13: the API docs work offline and document the token and the answers -----


async def test_docs_are_served_from_the_package_with_no_cdn(client: httpx.AsyncClient) -> None:
    html = (await client.get("/docs")).text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)""", html)
    assert set(urls) == {
        "/static/docs/swagger-ui-bundle.js",
        "/static/docs/swagger-ui.css",
        "/static/docs/favicon.png",
    }
    assert "cdn" not in html
    for url in urls:
        assert (await client.get(url)).status_code == 200
    assert (await client.get("/redoc")).status_code == 404  # off: it loads a logo from a CDN


async def test_openapi_declares_the_bearer_scheme_and_the_error_answers(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["AdminBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The admin token as a bearer token",
    }
    assert schemes["AdminTokenHeader"]["name"] == "X-Admin-Token"
    paths = spec["paths"]
    expected = {
        ("post", "/api/cps"): {"201", "401", "409", "422"},
        ("patch", "/api/cps/{cp_id}"): {"200", "401", "404", "422"},
        ("post", "/api/cps/stop-all"): {"200", "401"},
        ("post", "/api/cps/resume-all"): {"200", "401"},
        ("post", "/api/cps/rotate-keys"): {"200", "401", "409"},
        ("get", "/api/audit"): {"200", "401", "422"},
    }
    for action in PER_CP:
        expected[("post", f"/api/cps/{{cp_id}}/{action}")] = {"200", "401", "404", "409", "422"}
    for (method, path), answers in expected.items():
        operation = paths[path][method]
        assert set(operation["responses"]) == answers, (method, path)
        assert {"AdminBearer": []} in operation["security"]
        assert {"AdminTokenHeader": []} in operation["security"]
    # the reads are the operator's too (the public, masked ones are /api/v1's)
    for path in OPERATOR_READS:
        operation = paths[path]["get"]
        assert {"200", "401", "403"} <= set(operation["responses"]), path
        assert {"AdminBearer": []} in operation["security"]
        assert {"AdminTokenHeader": []} in operation["security"]
    assert set(paths["/api/cps/{cp_id}"]["get"]["responses"]) >= {"200", "404"}
    assert "Reads need no token" not in spec["info"]["description"]


async def test_admin_outcomes_are_audit_rows_with_the_callers_ip(
    client: httpx.AsyncClient, repo: SqliteRepository
) -> None:
    """Issue 13: done, refused (401, 409) and FastAPI's 422, each a row with the HTTP client's IP
    (httpx's ASGI transport calls from 127.0.0.1)."""
    assert (await client.post("/api/cps/CP2/stop", headers=admin("wrong"))).status_code == 401
    assert (await client.post("/api/cps/CP2/stop", headers=admin())).status_code == 200
    assert (await client.post("/api/cps/CP2/stop", headers=admin())).status_code == 409
    answer = await client.patch("/api/cps/CP2", json={"colour": "red"}, headers=admin())
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "colour"]  # FastAPI's own answer
    rows = [
        (r.action.value, r.actor, r.ip, r.outcome.value, r.params.get("command"))
        for r in reversed(repo.find_audit(AuditQuery(limit=50)))
        if r.action.value.startswith("admin.")
    ]
    assert rows == [
        ("admin.refused", "anonymous", "127.0.0.1", "denied", "stop_cp"),
        ("admin.action", "admin", "127.0.0.1", "ok", "stop_cp"),
        ("admin.refused", "admin", "127.0.0.1", "denied", "stop_cp"),
        ("admin.refused", "admin", "127.0.0.1", "denied", "edit_cp"),
    ]


async def test_cp_views_say_whether_the_cp_is_registered(
    client: httpx.AsyncClient, repo: SqliteRepository, central: CentralService
) -> None:
    """Issue 13: registered iff the CP has credentials (from EV_Registry)."""
    assert [
        (c["id"], c["registered"]) for c in (await client.get("/api/cps", headers=admin())).json()
    ] == [
        ("CP1", False),
        ("CP2", False),
    ]
    verifier = make_verifier(new_secret(), n=2**4)
    assert repo.enrol_cp("ELX01", "Elche", Decimal("0.30"), verifier)
    assert (await client.get("/api/cps/ELX01", headers=admin())).status_code == 404  # not read yet
    await central.follow_registry()
    view = (await client.get("/api/cps/ELX01", headers=admin())).json()
    assert (view["state"], view["registered"]) == ("Desconectado", True)


# --- issue 14: "restaurar claves" and rotating every key -------------------------------------


async def test_revoke_keys_ends_the_supply_stops_the_cp_and_says_why(
    client: httpx.AsyncClient, central: CentralService, repo: SqliteRepository
) -> None:
    await central.on_authorization_request(ev.AuthorizationRequest(driver_id="D1", cp_id="CP2"))
    session_id = central.cp("CP2").session_id  # type: ignore[union-attr]
    assert session_id is not None
    assert (await client.post("/api/cps/CP2/revoke-keys")).status_code == 401
    answer = await client.post("/api/cps/CP2/revoke-keys", headers=admin())
    assert answer.status_code == 200
    view = answer.json()
    assert (view["state"], view["caption"], view["stop_reason"], view["key"]) == (
        "Parado",
        "Out of Order",
        "keys revoked",
        "keys revoked",
    )
    assert (view["keys_revoked"], view["key_version"], view["session_id"]) == (True, None, None)
    assert (await client.get("/api/cps/CP2", headers=admin())).json() == view
    ended = repo.get_session(session_id)
    assert ended is not None
    assert ended.end_reason is not None
    assert ended.end_reason.value == "keys_revoked"
    events = sent(central)
    assert any(isinstance(e, ev.ChargingTicket) and e.driver_id == "D1" for e in events)
    assert any(isinstance(e, ev.CpStop) and e.cp_id == "CP2" for e in events)
    assert repo.stored_cp_keys() == []  # every key of CP2 deleted
    beat = central.heartbeat_now("CP2", MONITOR, engine_ok=True)
    assert beat is not None
    assert beat.reason == ErrReason.KEYS_REVOKED  # its Monitor is told to authenticate again

    was = snapshot(central, repo)
    again = await client.post("/api/cps/CP2/revoke-keys", headers=admin())
    assert again.status_code == 409
    assert again.json()["detail"] == (
        "CP CP2's keys are already revoked: its Monitor must authenticate again"
    )
    assert snapshot(central, repo) == was

    await central.issue_key("CP2")  # the Monitor authenticated again
    back = (await client.get("/api/cps/CP2", headers=admin())).json()
    assert (back["state"], back["keys_revoked"], back["stop_reason"]) == ("Activado", False, None)


async def test_a_cp_stopped_by_central_and_revoked_says_both(client: httpx.AsyncClient) -> None:
    await client.post("/api/cps/CP2/stop", headers=admin())
    assert (await client.get("/api/cps/CP2", headers=admin())).json()[
        "stop_reason"
    ] == "stopped by Central"
    view = (await client.post("/api/cps/CP2/revoke-keys", headers=admin())).json()
    assert view["stop_reason"] == "stopped by Central; keys revoked"


async def test_rotate_keys_asks_every_connected_cp_with_keys(
    client: httpx.AsyncClient, central: CentralService
) -> None:
    assert (await client.post("/api/cps/rotate-keys")).status_code == 401
    answer = await client.post("/api/cps/rotate-keys", headers=admin())
    assert (answer.status_code, answer.json()) == (200, {"asked": ["CP2"]})  # CP1: no Monitor
    beat = central.heartbeat_now("CP2", MONITOR, engine_ok=True)
    assert beat is not None
    assert beat.reason == ErrReason.REKEY
    assert (await client.get("/api/cps/CP2", headers=admin())).json()[
        "state"
    ] == "Activado"  # nothing stopped


async def test_key_actions_are_audited_with_the_admins_ip(
    client: httpx.AsyncClient, repo: SqliteRepository
) -> None:
    await client.post("/api/cps/CP2/revoke-keys", headers=admin())
    await client.post("/api/cps/CP2/revoke-keys", headers=admin())
    await client.post("/api/cps/rotate-keys", headers=admin())
    rows = [
        (r.action.value, r.actor, r.ip, r.cp_id, r.outcome.value, r.params.get("command"))
        for r in reversed(repo.find_audit(AuditQuery(limit=50)))
        if r.action in (AuditAction.KEYS_REVOKED, AuditAction.KEYS_ROTATED)
        or r.action.value.startswith("admin.")
    ]
    assert rows == [
        ("key.revoked", "admin", "127.0.0.1", "CP2", "ok", None),
        ("admin.action", "admin", "127.0.0.1", "CP2", "ok", "revoke_keys"),
        ("admin.refused", "admin", "127.0.0.1", "CP2", "denied", "revoke_keys"),
        ("key.rotated", "admin", "127.0.0.1", None, "ok", None),
        ("admin.action", "admin", "127.0.0.1", None, "ok", "rotate_keys"),
    ]


async def test_report_status_and_reset_ask_the_cp_and_are_audited_with_the_admins_ip(
    client: httpx.AsyncClient, central: CentralService, repo: SqliteRepository
) -> None:
    """Issue 16: the CP's view comes back unchanged, the ask goes out on cp-commands keyed by
    the CP, the reset is soft unless the body says `{"hard": true}`."""
    report = await client.post("/api/cps/CP2/report-status", headers=admin())
    assert (report.status_code, report.json()["state"]) == (200, "Activado")
    assert (await client.post("/api/cps/CP2/reset", headers=admin())).status_code == 200
    hard = await client.post("/api/cps/CP2/reset", json={"hard": True}, headers=admin())
    assert hard.json() == report.json()
    bad = await client.post("/api/cps/CP2/reset", json={"hard": "yes please"}, headers=admin())
    assert bad.status_code == 422
    out = [e for e in sent(central) if isinstance(e, (ev.CpReportStatus, ev.CpReset))]
    assert [(e.event_type, e.TOPIC.base, e.key(), getattr(e, "hard", None)) for e in out] == [
        ("CP_REPORT_STATUS", "cp-commands", "CP2", None),
        ("CP_RESET", "cp-commands", "CP2", False),
        ("CP_RESET", "cp-commands", "CP2", True),
    ]
    rows = [
        (r.action.value, r.ip, r.cp_id, r.params.get("command"), r.detail)
        for r in reversed(repo.find_audit(AuditQuery(limit=50)))
        if r.action.value.startswith("admin.") and r.cp_id
    ]
    assert rows == [
        ("admin.action", "127.0.0.1", "CP2", "report_status", "CP CP2 asked to report its status"),
        ("admin.action", "127.0.0.1", "CP2", "reset_cp", "CP CP2 asked to reset (soft)"),
        ("admin.action", "127.0.0.1", "CP2", "reset_cp", "CP CP2 asked to reset (hard)"),
    ]


async def test_a_central_without_keys_refuses_key_actions_with_a_reason(
    repo: SqliteRepository,
) -> None:
    a_cp(repo, "CP1")
    central = CentralService(repo, RecordingPublisher())
    await central.load()
    transport = httpx.ASGITransport(app=create_app(central, TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://central") as c:
        for path in ("/api/cps/CP1/revoke-keys", "/api/cps/rotate-keys"):
            answer = await c.post(path, headers=admin())
            assert answer.status_code == 409
            assert "issues no per-CP keys" in answer.json()["detail"]
    assert central.cp("CP1").state.value == "Desconectado"  # type: ignore[union-attr]


async def test_views_show_the_version_of_the_key_in_use(
    client: httpx.AsyncClient, central: CentralService
) -> None:
    assert (await client.get("/api/cps/CP2", headers=admin())).json()["key"] == "key v1"
    assert (await client.get("/api/cps/CP1", headers=admin())).json()[
        "key"
    ] == "no key"  # never authenticated
    await central.issue_key("CP2")  # a re-authentication, after a rotation
    view = (await client.get("/api/cps/CP2", headers=admin())).json()
    assert (view["key"], view["key_version"]) == ("key v2", 2)
    assert [v["key"] for v in (await client.get("/api/cps", headers=admin())).json()] == [
        "no key",
        "key v2",
    ]
