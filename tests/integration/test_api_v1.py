"""API_Central v1 (`/api/v1`) over a real ASGI stack with a real CentralService: every endpoint's
answer and errors (401/403/404/409/422), no personal data in public answers, the audit rows (with
the IP) of every write and refusal, the push channel, EV_W's liveness; and Central over HTTPS."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response

from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.adapters.registry_probe import RegistryProbe
from evcharging.adapters.web.central_api import create_app
from evcharging.adapters.web.embedded import EmbeddedServer
from evcharging.apps import central as central_app
from evcharging.contracts import events as ev
from evcharging.contracts.audit import AuditAction
from evcharging.contracts.end_reasons import SupplyEndReason
from evcharging.ops import certs
from evcharging.services.audit import AuditEntry, AuditQuery
from evcharging.services.central import CentralService
from evcharging.services.central_keys import CentralKeys
from evcharging.services.cp_keys import MasterKey
from evcharging.services.module_health import Module, ModuleHealth
from evcharging.services.roles import Roles
from evcharging.services.weather_desk import WeatherDesk
from tests.support.asgi_websocket import Dashboard
from tests.support.builders import a_cp, a_repo
from tests.support.clock import Clock
from tests.support.fakes import RecordingPublisher
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

ADMIN = "admin-token-123"
WEATHER = "weather-token-456"
UNKNOWN = "nobody-knows-789"
IP = "127.0.0.1"  # httpx's ASGI transport: the client's address
PERSONAL = ("DRV001", "DRV002", "Alice Example", "Bob Example", "12.34", "50.00")


@pytest.fixture
def repo() -> SqliteRepository:
    return a_repo()


@pytest.fixture
async def central(repo: SqliteRepository) -> CentralService:
    """CP1 Desconectado; CP2 supplying DRV001 (Alice, 12.34 €); CP3 connected, whose supply for
    DRV002 (Bob) ended with a ticket (a message with a balance)."""
    a_cp(repo, "CP1", price="0.35")
    a_cp(repo, "CP2", price="0.40", location="Valencia")
    a_cp(repo, "CP3", price="0.45", location="Teruel")
    repo.upsert_driver("DRV001", "Alice Example", Decimal("12.34"))
    repo.upsert_driver("DRV002", "Bob Example", Decimal("50.00"))
    keys = CentralKeys(repo, MasterKey(MasterKey.generate()))
    service = CentralService(repo, RecordingPublisher(), keys=keys)
    await service.load()
    for cp in ("CP2", "CP3"):
        await service.monitor_auth(cp, object())
        await service.issue_key(cp)
    for driver, cp in (("DRV001", "CP2"), ("DRV002", "CP3")):
        await service.on_authorization_request(ev.AuthorizationRequest(driver_id=driver, cp_id=cp))
        view = service.cp(cp)
        assert view is not None
        assert view.session_id is not None
        await service.on_supply_started(
            ev.SupplyStarted(cp_id=cp, session_id=view.session_id, driver_id=driver)
        )
        await service.on_telemetry(
            ev.CpTelemetry(
                cp_id=cp,
                session_id=view.session_id,
                driver_id=driver,
                seq=1,
                kw=Decimal("22"),
                energy_kwh=Decimal("1.000"),
                amount_eur=Decimal("0.40"),
            )
        )
    await service.stop_cp("CP3")  # DRV002's supply ends: its ticket (and balance) in a message
    await service.resume_cp("CP3")
    return service


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(central: CentralService, clock: Clock) -> FastAPI:
    health = ModuleHealth(central.audit)
    weather = WeatherDesk(central, Roles(ADMIN, WEATHER), health, monotonic=clock)
    return create_app(central, ADMIN, weather_token=WEATHER, health=health, weather=weather)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://central") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rows(central: CentralService, action: AuditAction) -> list[AuditEntry]:
    return list(central.audit_rows(AuditQuery(action=action, limit=500)))


def no_personal_data(text: str) -> None:
    for word in PERSONAL:
        assert word not in text, word
    assert "balance" not in text


# --- public reads --------------------------------------------------------------------------

PUBLIC_READS = [
    "/api/v1/cps",
    "/api/v1/cps/CP2",
    "/api/v1/drivers",
    "/api/v1/drivers/DRV001",
    "/api/v1/transactions",
    "/api/v1/requests",
    "/api/v1/messages",
    "/api/v1/weather",
    "/api/v1/weather/alerts",
    "/api/v1/health",
]


@pytest.mark.parametrize("path", PUBLIC_READS)
async def test_public_reads_carry_no_personal_data(client: httpx.AsyncClient, path: str) -> None:
    for headers in ({}, bearer(WEATHER)):  # EV_W's token reads the public view
        answer = await client.get(path, headers=headers)
        assert answer.status_code == 200
        no_personal_data(answer.text)


async def test_public_reads_show_masked_ids(client: httpx.AsyncClient) -> None:
    cp2 = (await client.get("/api/v1/cps/CP2")).json()
    assert (cp2["state"], cp2["driver_id"], cp2["energy_kwh"]) == (
        "Suministrando",
        "D****1",
        "1.000",
    )
    drivers = (await client.get("/api/v1/drivers")).json()
    assert drivers == [
        {"id": "D****1", "state": "supplying", "cp_id": "CP2"},
        {"id": "D****2", "state": "idle", "cp_id": None},
    ]
    [tx] = (await client.get("/api/v1/transactions")).json()
    assert (tx["driver_id"], tx["cp_id"], tx["status"], tx["kw"]) == (
        "D****1",
        "CP2",
        "supplying",
        "22",
    )
    assert set(tx) == {
        "session_id",
        "driver_id",
        "cp_id",
        "status",
        "price_eur_per_kwh",
        "energy_kwh",
        "amount_eur",
        "kw",
        "started_at",
    }
    [row] = (await client.get("/api/v1/requests")).json()
    assert (row["driver_id"], row["cp_id"], row["status"]) == ("D****1", "CP2", "supplying")
    texts = [m["text"] for m in (await client.get("/api/v1/messages")).json()]
    assert any("TICKET driver D****2 CP CP3" in t for t in texts), texts


async def test_the_admin_reads_everything(client: httpx.AsyncClient) -> None:
    for headers in (bearer(ADMIN), {"X-Admin-Token": ADMIN}):
        cp2 = (await client.get("/api/v1/cps/CP2", headers=headers)).json()
        assert cp2["driver_id"] == "DRV001"
        alice = (await client.get("/api/v1/drivers/DRV001", headers=headers)).json()
        assert alice == {
            "id": "DRV001",
            "state": "supplying",
            "cp_id": "CP2",
            "name": "Alice Example",
            "balance_eur": "12.34",
        }
    texts = [
        m["text"] for m in (await client.get("/api/v1/messages", headers=bearer(ADMIN))).json()
    ]
    assert any("TICKET driver DRV002" in t and "balance" in t for t in texts)
    [tx] = (await client.get("/api/v1/transactions", headers=bearer(ADMIN))).json()
    assert tx["driver_id"] == "DRV001"


async def test_reads_with_an_unknown_token_are_refused(
    client: httpx.AsyncClient, central: CentralService
) -> None:
    answer = await client.get("/api/v1/cps", headers=bearer(UNKNOWN))
    assert (answer.status_code, answer.json()) == (401, {"detail": "wrong admin token"})
    assert rows(central, AuditAction.ADMIN_REFUSED)[0].ip == IP


async def test_unknown_ids_are_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/cps/NOPE")).json() == {"detail": "unknown CP NOPE"}
    answer = await client.get("/api/v1/drivers/NOPE")
    assert (answer.status_code, answer.json()) == (404, {"detail": "unknown driver NOPE"})


async def test_the_audit_log_is_the_admins_alone(
    client: httpx.AsyncClient, central: CentralService
) -> None:
    assert (await client.get("/api/v1/audit")).status_code == 401
    forbidden = await client.get("/api/v1/audit", headers=bearer(WEATHER))
    assert forbidden.json() == {"detail": "the weather office's token cannot do admin actions"}
    assert forbidden.status_code == 403
    assert (await client.get("/api/v1/audit?limit=0", headers=bearer(ADMIN))).status_code == 422
    found = (await client.get("/api/v1/audit?action=admin.refused", headers=bearer(ADMIN))).json()
    assert [(r["ip"], r["outcome"]) for r in found][:2] == [(IP, "denied"), (IP, "denied")]


# --- the older unversioned reads: the operator's --------------------------------------------

OPERATOR_READS = [
    "/api/cps",
    "/api/cps/CP2",
    "/api/drivers/DRV001",
    "/api/sessions",
    "/api/requests",
    "/api/messages",
]
FAR_IP = "10.20.30.40"  # another host than the tests' own


async def test_the_unversioned_reads_need_the_admin_token(
    app: FastAPI, central: CentralService
) -> None:
    """No token or an unknown one: 401, and an `admin.refused` row with the caller's IP; the
    weather token: 403 (audited too); the admin token: the whole data, and no row."""
    transport = httpx.ASGITransport(app=app, client=(FAR_IP, 41000))
    async with httpx.AsyncClient(transport=transport, base_url="http://central") as far:
        for path in OPERATOR_READS:
            for headers, status in (({}, 401), (bearer(UNKNOWN), 401), (bearer(WEATHER), 403)):
                answer = await far.get(path, headers=headers)
                assert answer.status_code == status, (path, headers)
                no_personal_data(answer.text)
                if status == 401:
                    assert answer.headers["WWW-Authenticate"] == "Bearer"
        refused = rows(central, AuditAction.ADMIN_REFUSED)
        assert len(refused) == 3 * len(OPERATOR_READS)
        assert {(r.actor, r.ip, r.outcome.value) for r in refused} == {
            ("anonymous", FAR_IP, "denied")
        }
        assert sorted({r.detail for r in refused}) == [
            "admin token required",
            "the weather office's token cannot do admin actions",
            "wrong admin token",
        ]

        full = {
            path: (await far.get(path, headers={"X-Admin-Token": ADMIN})) for path in OPERATOR_READS
        }
    assert {path: a.status_code for path, a in full.items()} == dict.fromkeys(OPERATOR_READS, 200)
    assert len(rows(central, AuditAction.ADMIN_REFUSED)) == 3 * len(OPERATOR_READS)
    assert rows(central, AuditAction.ADMIN_ACTION) == []  # a read with the token: not audited
    assert full["/api/drivers/DRV001"].json()["balance_eur"] == "12.34"
    assert full["/api/cps/CP2"].json()["driver_id"] == "DRV001"
    assert "DRV002" in full["/api/sessions"].text
    assert "DRV001" in full["/api/requests"].text
    assert "balance" in full["/api/messages"].text  # DRV002's ticket, whole


# --- the weather office's writes ---------------------------------------------------------


async def test_a_weather_alert_and_its_cancellation(
    client: httpx.AsyncClient, central: CentralService
) -> None:
    body = {"city": "Teruel", "temperature_c": -4.5}
    first = await client.put("/api/v1/weather/alerts/CP3", json=body, headers=bearer(WEATHER))
    assert first.status_code == 200
    view = first.json()
    assert (view["state"], view["stop_reason"], view["weather"]) == (
        "Parado",
        "weather alert",
        {"city": "Teruel", "temperature_c": -4.5},
    )
    again = await client.put("/api/v1/weather/alerts/CP3", json=body, headers=bearer(WEATHER))
    assert again.status_code == 200  # idempotent
    alerts = [{"cp_id": "CP3", "city": "Teruel", "temperature_c": -4.5}]
    assert (await client.get("/api/v1/weather/alerts")).json() == alerts
    assert (await client.get("/api/v1/weather")).json()["alerts"] == alerts
    cleared = await client.delete("/api/v1/weather/alerts/CP3", headers=bearer(WEATHER))
    assert (cleared.status_code, cleared.json()["state"]) == (200, "Activado")
    twice = await client.delete("/api/v1/weather/alerts/CP3", headers=bearer(WEATHER))
    assert (twice.status_code, twice.json()) == (409, {"detail": "CP CP3 has no weather alert"})
    done = rows(central, AuditAction.WEATHER_ALERT) + rows(central, AuditAction.WEATHER_CLEARED)
    assert [(r.actor, r.ip) for r in done] == [("ev_w", IP)] * 3
    [refused] = rows(central, AuditAction.WEATHER_REFUSED)
    assert (refused.ip, refused.cp_id, refused.detail) == (IP, "CP3", "CP CP3 has no weather alert")


WEATHER_WRITES: list[tuple[str, str, Any]] = [
    ("PUT", "/api/v1/weather/alerts/CP3", {"city": "Teruel", "temperature_c": -1}),
    ("DELETE", "/api/v1/weather/alerts/CP3", None),
    ("PUT", "/api/v1/weather/report", {"locations": [], "cps": {}, "interval_s": 4}),
    ("DELETE", "/api/v1/weather/report", None),
]


@pytest.mark.parametrize(("method", "path", "body"), WEATHER_WRITES)
async def test_weather_writes_need_the_weather_token(
    client: httpx.AsyncClient, central: CentralService, method: str, path: str, body: Any
) -> None:
    none = await client.request(method, path, json=body)
    assert (none.status_code, none.json()) == (401, {"detail": "weather token required"})
    assert none.headers["WWW-Authenticate"] == "Bearer"
    wrong = await client.request(method, path, json=body, headers=bearer(UNKNOWN))
    assert (wrong.status_code, wrong.json()) == (401, {"detail": "wrong weather token"})
    for admin in (bearer(ADMIN), {"X-Admin-Token": ADMIN}):
        forbidden = await client.request(method, path, json=body, headers=admin)
        assert forbidden.status_code == 403
        assert "the admin token cannot make weather writes" in forbidden.json()["detail"]
    refused = rows(central, AuditAction.WEATHER_REFUSED)
    assert [(r.ip, r.outcome.value) for r in refused] == [(IP, "denied")] * 4
    assert UNKNOWN not in str(refused)
    assert ADMIN not in str(refused)
    assert central.weather_alerts() == []


async def test_without_a_weather_token_at_central_every_weather_write_is_401(
    central: CentralService,
) -> None:
    app = create_app(central, ADMIN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c:
        for method, path, body in WEATHER_WRITES:
            for headers in ({}, bearer(WEATHER), bearer(ADMIN)):
                answer = await c.request(method, path, json=body, headers=headers)
                assert answer.status_code == 401
                assert answer.json() == {"detail": "no weather token configured at Central"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("PUT", "/api/v1/weather/alerts/NOPE", {"city": "Teruel", "temperature_c": -1}, 404),
        ("DELETE", "/api/v1/weather/alerts/NOPE", None, 404),
        ("PUT", "/api/v1/weather/alerts/CP3", {"city": "Teruel"}, 422),
        ("PUT", "/api/v1/weather/alerts/CP3", {"city": "", "temperature_c": -1}, 422),
        ("PUT", "/api/v1/weather/alerts/CP3", {"city": "T", "temperature_c": "cold"}, 422),
        ("PUT", "/api/v1/weather/alerts/CP3", {"city": "T", "temperature_c": -1, "x": 1}, 422),
        ("PUT", "/api/v1/weather/alerts/bad%20id", {"city": "T", "temperature_c": -1}, 422),
        ("PUT", "/api/v1/weather/report", {"locations": [], "cps": {}}, 422),
        ("PUT", "/api/v1/weather/report", {"locations": [], "cps": {}, "interval_s": 0}, 422),
        (
            "PUT",
            "/api/v1/weather/report",
            {
                "locations": [{"city": "T", "temperature_c": 1, "error": "x"}],
                "cps": {},
                "interval_s": 4,
            },
            422,
        ),
    ],
)
async def test_weather_writes_refused_for_what_they_ask(
    client: httpx.AsyncClient,
    central: CentralService,
    method: str,
    path: str,
    body: Any,
    status: int,
) -> None:
    answer = await client.request(method, path, json=body, headers=bearer(WEATHER))
    assert answer.status_code == status, answer.text
    [refused] = rows(central, AuditAction.WEATHER_REFUSED)
    assert (refused.actor, refused.ip) == ("ev_w", IP)
    assert rows(central, AuditAction.ADMIN_REFUSED) == []


REPORT = {
    "locations": [
        {"city": "Teruel", "temperature_c": -3.5},
        {"city": "Valencia", "error": "HTTP 503"},
    ],
    "cps": {"CP3": "Teruel", "CP2": "Valencia", "CP1": "Teruel"},
    "interval_s": 4,
}


async def test_evw_reports_then_stops(client: httpx.AsyncClient, central: CentralService) -> None:
    before = (await client.get("/api/v1/weather")).json()
    assert before["office"] == {
        "state": "unknown",
        "since": None,
        "last_report_at": None,
        "detail": "no report yet",
    }
    for _ in range(2):  # a report that changes nothing is not audited again
        sent = await client.put("/api/v1/weather/report", json=REPORT, headers=bearer(WEATHER))
        assert sent.status_code == 204
    shown = (await client.get("/api/v1/weather")).json()
    assert (shown["office"]["state"], shown["office"]["detail"]) == ("up", "reporting every 4 s")
    assert shown["office"]["last_report_at"] is not None
    assert shown["provider"] == {
        "state": "up",
        "detail": "1 of 2 cities read; no reading for Valencia (HTTP 503)",
    }
    teruel, valencia = shown["locations"]
    assert (teruel["city"], teruel["temperature_c"], teruel["error"], teruel["cps"]) == (
        "Teruel",
        -3.5,
        None,
        ["CP1", "CP3"],
    )
    assert (valencia["temperature_c"], valencia["error"]) == (None, "HTTP 503")
    up = rows(central, AuditAction.MODULE_UP)
    assert [(r.params["module"], r.actor, r.ip) for r in up] == [
        ("weather_provider", "ev_w", IP),
        ("ev_w", "ev_w", IP),
    ]
    gone = await client.delete("/api/v1/weather/report", headers=bearer(WEATHER))
    assert gone.status_code == 204
    office = (await client.get("/api/v1/weather")).json()["office"]
    assert (office["state"], office["detail"]) == ("down", "EV_W stopped")
    [down] = rows(central, AuditAction.MODULE_DOWN)
    assert (down.params["module"], down.ip, down.detail) == (
        "ev_w",
        IP,
        "EV_W (weather office) down: EV_W stopped",
    )
    health = {m["name"]: m for m in (await client.get("/api/v1/health")).json()["modules"]}
    assert (health["ev_w"]["state"], health["weather_provider"]["state"]) == ("down", "unknown")


async def test_evw_silent_too_long_is_down(
    client: httpx.AsyncClient, central: CentralService, app: FastAPI, clock: Clock
) -> None:
    report = {**REPORT, "interval_s": 1}  # down after max(3 x 1, 10) = 10 s
    assert (
        await client.put("/api/v1/weather/report", json=report, headers=bearer(WEATHER))
    ).status_code == 204
    desk: WeatherDesk = app.state.weather_desk
    clock.now += 9.9
    desk.check()
    assert (await client.get("/api/v1/weather")).json()["office"]["state"] == "up"
    clock.now += 0.2
    checker = asyncio.create_task(desk.keep_checking(every=0.01))  # Central's task
    try:
        await eventually(lambda: desk.health.get(Module.EV_W).state.value == "down")
    finally:
        checker.cancel()
    office = (await client.get("/api/v1/weather")).json()["office"]
    assert office["detail"] == "no report for 10 s (expected every 1 s)"
    [down] = rows(central, AuditAction.MODULE_DOWN)
    assert (down.params["module"], down.actor) == ("ev_w", "central")
    provider = (await client.get("/api/v1/weather")).json()["provider"]
    assert provider == {"state": "unknown", "detail": "EV_W is down"}


async def test_the_provider_down_when_every_city_fails(
    client: httpx.AsyncClient, central: CentralService
) -> None:
    report = {"locations": [{"city": "Teruel", "error": "timeout"}], "cps": {}, "interval_s": 4}
    await client.put("/api/v1/weather/report", json=report, headers=bearer(WEATHER))
    health = {m["name"]: m for m in (await client.get("/api/v1/health")).json()["modules"]}
    assert health["weather_provider"]["state"] == "down"
    assert health["weather_provider"]["detail"] == "no city read: Teruel (timeout)"
    [down] = rows(central, AuditAction.MODULE_DOWN)
    assert down.params["module"] == "weather_provider"


# --- the admin's writes ------------------------------------------------------------------

# (method, path, body, what must be done first, the conflict that follows when done twice)
ADMIN_WRITES: list[tuple[str, str, Any, tuple[str, str] | None, bool]] = [
    ("PUT", "/api/v1/cps/CP3/out-of-service", None, None, True),
    (
        "DELETE",
        "/api/v1/cps/CP3/out-of-service",
        None,
        ("PUT", "/api/v1/cps/CP3/out-of-service"),
        True,
    ),
    ("PUT", "/api/v1/cps/CP3/simulated-error", {"error_type": "fault"}, None, True),
    (
        "DELETE",
        "/api/v1/cps/CP3/simulated-error",
        None,
        ("PUT", "/api/v1/cps/CP3/simulated-error"),
        True,
    ),
    ("DELETE", "/api/v1/cps/CP3/keys", None, None, True),
    ("PUT", "/api/v1/network/out-of-service", None, None, False),
    ("DELETE", "/api/v1/network/out-of-service", None, None, False),
    ("POST", "/api/v1/network/key-rotation", None, None, False),
    ("PUT", "/api/v1/cps/CP3", {"location": "Teruel", "price_eur_per_kwh": "0.5"}, None, False),
    # issue 16: asks, not changes: asking twice is no conflict
    ("POST", "/api/v1/cps/CP3/status-report", None, None, False),
    ("POST", "/api/v1/cps/CP3/reset", {"hard": True}, None, False),
]


@pytest.mark.parametrize(("method", "path", "body", "before", "conflicts"), ADMIN_WRITES)
async def test_admin_writes(
    client: httpx.AsyncClient,
    central: CentralService,
    method: str,
    path: str,
    body: Any,
    before: tuple[str, str] | None,
    conflicts: bool,
) -> None:
    if before:
        assert (await client.request(*before, headers=bearer(ADMIN))).status_code == 200
    none = await client.request(method, path, json=body)
    assert (none.status_code, none.headers["WWW-Authenticate"]) == (401, "Bearer")
    assert (
        await client.request(method, path, json=body, headers=bearer(UNKNOWN))
    ).status_code == 401
    forbidden = await client.request(method, path, json=body, headers=bearer(WEATHER))
    assert (forbidden.status_code, forbidden.json()) == (
        403,
        {"detail": "the weather office's token cannot do admin actions"},
    )
    done = await client.request(method, path, json=body, headers={"X-Admin-Token": ADMIN})
    assert done.status_code == 200, done.text
    if conflicts:
        again = await client.request(method, path, json=body, headers=bearer(ADMIN))
        assert again.status_code == 409
        unknown = await client.request(
            method, path.replace("CP3", "NOPE"), json=body, headers=bearer(ADMIN)
        )
        assert (unknown.status_code, unknown.json()) == (404, {"detail": "unknown CP NOPE"})
    refused = rows(central, AuditAction.ADMIN_REFUSED)
    assert {r.ip for r in refused} == {IP}
    assert len(refused) == 3 + (2 if conflicts else 0)
    actions = [r for r in rows(central, AuditAction.ADMIN_ACTION) if r.actor == "admin"]
    assert [r.ip for r in actions] == [IP] * (2 if before else 1)


def asks(central: CentralService) -> list[tuple[str, str, bool | None]]:
    """The CP_REPORT_STATUS and CP_RESET sent: (type, CP, hard)."""
    assert isinstance(central.publisher, RecordingPublisher)
    return [
        (e.event_type, e.cp_id, getattr(e, "hard", None))
        for e in central.publisher.sent
        if isinstance(e, (ev.CpReportStatus, ev.CpReset))
    ]


async def test_the_admin_asks_a_cp_to_report_its_status_or_to_reset(
    client: httpx.AsyncClient, central: CentralService
) -> None:
    """Issue 16: the CP answers with its view (unchanged: an ask changes nothing at Central); a
    Desconectado CP (CP1) is a 409 with the reason, an unknown one a 404; all audited with the IP."""
    admin = bearer(ADMIN)
    report = await client.post("/api/v1/cps/CP2/status-report", headers=admin)
    assert (report.status_code, report.json()["id"], report.json()["state"]) == (
        200,
        "CP2",
        "Suministrando",
    )
    soft = await client.post("/api/v1/cps/CP2/reset", headers=admin)
    hard = await client.post("/api/v1/cps/CP3/reset", json={"hard": True}, headers=admin)
    assert (soft.status_code, hard.status_code) == (200, 200)
    assert soft.json()["state"] == "Suministrando"  # the CP ends its supply itself, if it does
    assert asks(central) == [
        ("CP_REPORT_STATUS", "CP2", None),
        ("CP_RESET", "CP2", False),
        ("CP_RESET", "CP3", True),
    ]
    said = [m.text for m in central.messages()[-3:]]
    assert said == [
        "CP CP2 asked to report its status",
        "CP CP2 asked to reset (soft)",
        "CP CP3 asked to reset (hard)",
    ]
    done = [r for r in rows(central, AuditAction.ADMIN_ACTION) if r.actor == "admin"]
    assert [(r.ip, r.cp_id, r.params["command"], r.detail) for r in reversed(done)] == [
        (IP, "CP2", "report_status", said[0]),
        (IP, "CP2", "reset_cp", said[1]),
        (IP, "CP3", "reset_cp", said[2]),
    ]

    for path in ("/api/v1/cps/CP1/status-report", "/api/v1/cps/CP1/reset"):
        refused = await client.post(path, headers=admin)
        assert (refused.status_code, refused.json()) == (
            409,
            {"detail": "CP CP1 is Desconectado: no Monitor link, so nobody would hear the request"},
        )
        unknown = await client.post(path.replace("CP1", "NOPE"), headers=admin)
        assert (unknown.status_code, unknown.json()) == (404, {"detail": "unknown CP NOPE"})
    bad = await client.post("/api/v1/cps/CP2/reset", json={"hard": "very"}, headers=admin)
    assert bad.status_code == 422
    extra = await client.post("/api/v1/cps/CP2/reset", json={"soft": True}, headers=admin)
    assert extra.status_code == 422
    assert len(asks(central)) == 3  # nothing more sent
    refusals = [r for r in rows(central, AuditAction.ADMIN_REFUSED) if r.actor == "admin"]
    assert sorted((r.params["command"], r.cp_id, r.ip) for r in refusals if r.cp_id) == [
        ("report_status", "CP1", IP),
        ("report_status", "NOPE", IP),
        ("reset_cp", "CP1", IP),
        ("reset_cp", "NOPE", IP),
    ]
    assert len(refusals) == 6  # and the two invalid bodies


async def test_put_cp_registers_then_edits(
    client: httpx.AsyncClient, central: CentralService
) -> None:
    body = {"location": "Huesca", "price_eur_per_kwh": "0.31"}
    new = await client.put("/api/v1/cps/CP9", json=body, headers=bearer(ADMIN))
    assert (new.status_code, new.json()["state"], new.json()["location"]) == (
        201,
        "Desconectado",
        "Huesca",
    )
    body["location"] = "Jaca"
    edited = await client.put("/api/v1/cps/CP9", json=body, headers=bearer(ADMIN))
    assert (edited.status_code, edited.json()["location"]) == (200, "Jaca")
    for bad in (
        {"location": "Jaca"},
        {"location": "Jaca", "price_eur_per_kwh": "-1"},
        {**body, "x": 1},
    ):
        assert (
            await client.put("/api/v1/cps/CP9", json=bad, headers=bearer(ADMIN))
        ).status_code == 422
    assert (
        await client.put("/api/v1/cps/bad id", json=body, headers=bearer(ADMIN))
    ).status_code == 422
    invalid = [r for r in rows(central, AuditAction.ADMIN_REFUSED) if "invalid" in r.detail]
    assert [(r.ip, r.actor) for r in invalid] == [(IP, "admin")] * 4


# --- OpenAPI, CORS -----------------------------------------------------------------------


async def test_openapi_offline_with_both_roles(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert {"AdminBearer", "AdminTokenHeader", "WeatherBearer"} <= set(
        spec["components"]["securitySchemes"]
    )
    put_alert = spec["paths"]["/api/v1/weather/alerts/{cp_id}"]["put"]
    assert put_alert["security"] == [{"WeatherBearer": []}]
    assert {"401", "403", "404", "422"} <= set(put_alert["responses"])
    stop = spec["paths"]["/api/v1/cps/{cp_id}/out-of-service"]["put"]
    assert stop["security"] == [{"AdminBearer": []}]
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "cdn" not in docs.text.lower()


async def test_cors_lets_any_origin_read_and_none_write(client: httpx.AsyncClient) -> None:
    origin = {"Origin": "http://front.example:8080"}
    read = await client.get("/api/v1/cps", headers=origin)
    assert read.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in read.headers
    preflight = await client.options(
        "/api/v1/cps/CP3/out-of-service",
        headers={**origin, "Access-Control-Request-Method": "PUT"},
    )
    assert preflight.status_code == 400


# --- the push channel ----------------------------------------------------------------------

STREAM_FIRST = ["all_cps", "requests", "messages", "kafka", "weather", "health"]


async def frames_until(
    ws: Dashboard, kind: str, also: Callable[[dict[str, Any]], bool] = lambda _: True
) -> list[dict[str, Any]]:
    """Frames received up to the first of type `kind` for which `also` holds (included)."""
    frames = [await ws.receive_json()]
    while frames[-1]["type"] != kind or not also(frames[-1]):
        frames.append(await ws.receive_json())
    return frames


async def test_the_stream_is_public_and_read_only(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    ws = Dashboard(app, "/api/v1/stream")
    await ws.open()
    first = [await ws.receive_json() for _ in STREAM_FIRST]
    try:
        assert [f["type"] for f in first] == STREAM_FIRST
        assert all(isinstance(f["ts"], int) for f in first)
        no_personal_data(json.dumps(first))
        cps = {v["id"]: v for v in first[0]["charging_points"]}
        assert cps["CP2"]["driver_id"] == "D****1"
        assert first[4]["office"]["state"] == "unknown"
        assert [m["name"] for m in first[5]["modules"]][:2] == ["central", "kafka"]

        await ws.send_text(json.dumps({"type": "stop_all", "token": ADMIN}))  # ignored
        await ws.send_text("again")
        body = {"city": "Teruel", "temperature_c": -2}
        await client.put("/api/v1/weather/alerts/CP2", json=body, headers=bearer(WEATHER))
        pushed = await frames_until(ws, "weather")
        assert pushed[-1]["alerts"] == [{"cp_id": "CP2", "city": "Teruel", "temperature_c": -2}]
        changed = [f for f in pushed if f["type"] == "cps"]
        assert changed
        assert changed[0]["charging_points"][0]["driver_id"] == "D****1"
        await client.put("/api/v1/weather/report", json=REPORT, headers=bearer(WEATHER))
        health = (await frames_until(ws, "health"))[-1]
        assert {m["name"]: m["state"] for m in health["modules"]}["ev_w"] == "up"
        await client.post("/api/cps/CP2/stop", headers=bearer(ADMIN))  # the supply ends
        more = await frames_until(ws, "request_changes")
        no_personal_data(json.dumps(more))
    finally:
        await ws.close()
    assert caplog.text.count("the stream is read only") == 1
    assert not any(v.admin_stopped for v in app.state.public_hub.service.cps() if v.id != "CP2")


async def test_the_admin_feed_gets_weather_and_health(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    ws = Dashboard(app, "/ws")
    await ws.open()
    try:
        [await ws.receive_json() for _ in STREAM_FIRST]
        await ws.send_text(json.dumps({"type": "login", "token": ADMIN}))
        assert (await ws.receive_json())["type"] == "logged_in"
        first = [await ws.receive_json() for _ in STREAM_FIRST]
        assert first[0]["charging_points"][1]["driver_id"] == "DRV001"  # not masked
        await client.put("/api/v1/weather/report", json=REPORT, headers=bearer(WEATHER))
        seen = {(await ws.receive_json())["type"] for _ in range(2)}
        assert seen == {"weather", "health"}
    finally:
        await ws.close()


async def a_supply(central: CentralService, driver: str, cp: str) -> None:
    """A whole supply, as Central hears it: request, start, two readings, the end (a ticket)."""
    await central.on_authorization_request(ev.AuthorizationRequest(driver_id=driver, cp_id=cp))
    view = central.cp(cp)
    assert view is not None
    assert view.session_id is not None
    session = view.session_id
    await central.on_supply_started(
        ev.SupplyStarted(cp_id=cp, session_id=session, driver_id=driver)
    )
    for seq in (1, 2):
        await central.on_telemetry(
            ev.CpTelemetry(
                cp_id=cp,
                session_id=session,
                driver_id=driver,
                seq=seq,
                kw=Decimal("22"),
                energy_kwh=Decimal(seq),
                amount_eur=Decimal("0.45") * seq,
            )
        )
    await central.on_supply_ended(
        ev.SupplyEnded(
            cp_id=cp,
            session_id=session,
            driver_id=driver,
            energy_kwh=Decimal("2"),
            reason=SupplyEndReason.UNPLUGGED,
        )
    )


async def reading(central: CentralService, cp: str, driver: str, seq: int) -> None:
    view = central.cp(cp)
    assert view is not None
    assert view.session_id is not None
    await central.on_telemetry(
        ev.CpTelemetry(
            cp_id=cp,
            session_id=view.session_id,
            driver_id=driver,
            seq=seq,
            kw=Decimal("22"),
            energy_kwh=Decimal(seq),
            amount_eur=Decimal("0.40") * seq,
        )
    )


async def supply_frames(ws: Dashboard, central: CentralService) -> list[dict[str, Any]]:
    """The frames a page gets while DRV002 charges at CP3 from request to ticket."""
    await a_supply(central, "DRV002", "CP3")
    return await frames_until(ws, "message", lambda f: "2.000 kWh" in f["text"])


async def test_the_admin_feed_is_masked_until_the_page_logs_in(
    app: FastAPI, central: CentralService
) -> None:
    ws = Dashboard(app, "/ws")
    await ws.open()
    try:
        first = [await ws.receive_json() for _ in STREAM_FIRST]
        assert [f["type"] for f in first] == STREAM_FIRST
        assert {v["id"]: v["driver_id"] for v in first[0]["charging_points"]}["CP2"] == "D****1"
        seen = first + await supply_frames(ws, central)
        assert {"cps", "request_changes", "message"} <= {f["type"] for f in seen}
        no_personal_data(json.dumps(seen))

        await ws.send_text(json.dumps({"type": "login", "token": UNKNOWN}))
        seen = await frames_until(ws, "error")
        assert seen[-1]["reason"] == "wrong admin token"
        await reading(central, "CP2", "DRV001", 2)
        seen += await frames_until(ws, "cps")
        assert seen[-1]["charging_points"][0]["driver_id"] == "D****1"
        no_personal_data(json.dumps(seen))

        await ws.send_text(json.dumps({"type": "login", "token": ADMIN}))
        no_personal_data(json.dumps(await frames_until(ws, "logged_in")))
        full = [await ws.receive_json() for _ in STREAM_FIRST]  # at once: the whole state
        assert [f["type"] for f in full] == STREAM_FIRST
        cps = {v["id"]: v for v in full[0]["charging_points"]}
        assert cps["CP2"]["driver_id"] == "DRV001"
        assert "DRV002" in json.dumps(full[1:3])  # the requests and the messages, whole
        assert "balance" in json.dumps(full[2])
        await reading(central, "CP2", "DRV001", 3)
        pushed = (await frames_until(ws, "cps"))[-1]
        assert pushed["charging_points"][0]["driver_id"] == "DRV001"
        assert "DRV002" in json.dumps(await supply_frames(ws, central))
    finally:
        await ws.close()


async def test_an_admin_action_with_the_token_also_unmasks_the_socket(app: FastAPI) -> None:
    ws = Dashboard(app, "/ws")
    await ws.open()
    try:
        first = [await ws.receive_json() for _ in STREAM_FIRST]
        no_personal_data(json.dumps(first))
        await ws.send_text(json.dumps({"type": "stop_cp", "cp_id": "CP1", "token": ADMIN}))
        assert (await frames_until(ws, "cp_stopped"))[-1]["cp_id"] == "CP1"
        full = [await ws.receive_json() for _ in STREAM_FIRST]
        assert {v["id"]: v["driver_id"] for v in full[0]["charging_points"]}["CP2"] == "DRV001"
    finally:
        await ws.close()


# --- HTTPS, and the Registry probe -----------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The project's CA (`evcharging certs init`) with a server certificate, and another CA."""
    ours = tmp_path_factory.mktemp("ours")
    certs.init(ours)
    other = tmp_path_factory.mktemp("other")
    certs.init(other)
    return ours, other


def settings(ours: Path) -> central_app.CentralSettings:
    return central_app.parse_args(
        [
            "7000",
            "127.0.0.1:9092",
            "--admin-token",
            ADMIN,
            "--https-cert",
            str(ours / "server.pem"),
            "--https-key",
            str(ours / "server.key"),
        ]
    )


@asynccontextmanager
async def served(app: FastAPI, cfg: central_app.CentralSettings) -> AsyncIterator[str]:
    """`app` served as EV_Central serves its HTTP API (`http_config`) on a free port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    server = EmbeddedServer(central_app.http_config(app, cfg))
    task = asyncio.create_task(server.serve([listener]))
    await eventually(lambda: server.started)
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        listener.close()


async def test_central_serves_https_verified_by_the_projects_ca(
    pki: tuple[Path, Path], app: FastAPI
) -> None:
    ours, other = pki
    async with served(app, settings(ours)) as url:
        trusted = ssl.create_default_context(cafile=str(ours / "ca.pem"))
        async with httpx.AsyncClient(verify=trusted) as c:
            answer = await c.get(f"{url}/api/v1/health")
        assert answer.status_code == 200
        stranger = ssl.create_default_context(cafile=str(other / "ca.pem"))
        async with httpx.AsyncClient(verify=stranger) as c:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await c.get(f"{url}/api/v1/health")


async def test_the_registry_probe_verifies_the_registry(
    pki: tuple[Path, Path], central: CentralService
) -> None:
    ours, other = pki
    registry = FastAPI()
    answer = {"status": 200}

    @registry.get("/healthz")
    async def healthz() -> Response:
        return Response(status_code=answer["status"])

    health = ModuleHealth(central.audit)
    async with served(registry, settings(ours)) as url:
        wrong = RegistryProbe(url, ssl.create_default_context(cafile=str(other / "ca.pem")), health)
        wrong.observe(await wrong.probe())
        assert (health.get(Module.REGISTRY).state.value, health.get(Module.REGISTRY).detail) == (
            "down",
            f"EV_Registry unreachable at {url}: its certificate is not signed by the CA given "
            "(--registry-ca-file)",
        )
        probe = RegistryProbe(url, ssl.create_default_context(cafile=str(ours / "ca.pem")), health)
        probe.observe(await probe.probe())
        assert health.get(Module.REGISTRY).detail == f"answering at {url}"
        answer["status"] = 503
        assert await probe.probe() == f"EV_Registry at {url} answered 503"
    assert (
        await probe.probe()
        == f"EV_Registry unreachable at {url}: connection refused or host unreachable"
    )
    [down] = rows(central, AuditAction.MODULE_DOWN)
    [up] = rows(central, AuditAction.MODULE_UP)
    assert (down.params["module"], up.params["module"]) == ("registry", "registry")
