"""EV_Central's HTTP API over a real ASGI stack (FastAPI + httpx), with an in-memory repository."""

from __future__ import annotations

import httpx
import pytest

from evcharging.adapters.web.central_api import create_app
from evcharging.services.central import CentralService
from tests.support.builders import a_cp, a_driver, a_repo
from tests.support.fakes import RecordingPublisher

TOKEN = "s3cret"


@pytest.fixture
async def client():
    repo = a_repo()
    a_cp(repo, "CP1", price="0.35")
    a_driver(repo, "D1", balance="12.34")
    central = CentralService(repo, RecordingPublisher())
    await central.load()
    transport = httpx.ASGITransport(app=create_app(central, TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://central") as c:
        yield c


def admin(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_reads_need_no_token(client: httpx.AsyncClient) -> None:
    cps = (await client.get("/api/cps")).json()
    assert [(c["id"], c["state"], c["price_eur_per_kwh"]) for c in cps] == [
        ("CP1", "Desconectado", "0.35")
    ]
    assert (await client.get("/api/drivers/D1")).json()["balance_eur"] == "12.34"
    assert (await client.get("/api/drivers/NOPE")).status_code == 404
    assert (await client.get("/api/sessions?driver_id=D1&status=ended")).json() == []
    assert (await client.get("/api/sessions?status=bogus")).status_code == 422
    assert (await client.get("/api/sessions?offset=5")).json() == []
    assert (await client.get("/api/sessions?offset=-1")).status_code == 422
    assert (await client.get("/docs")).status_code == 200
    assert "/api/cps/{cp_id}/simulate-error" in (await client.get("/openapi.json")).json()["paths"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/cps/CP1/stop",
        "/api/cps/CP1/resume",
        "/api/cps/stop-all",
        "/api/cps/resume-all",
        "/api/cps/CP1/simulate-error",
        "/api/cps/CP1/fix-error",
    ],
)
async def test_admin_actions_need_the_admin_token(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.post(path)).status_code == 401
    assert (await client.post(path, headers=admin("wrong"))).status_code == 401
    assert (await client.post(path, headers=admin())).status_code == 200
    assert (await client.post(path, headers={"X-Admin-Token": TOKEN})).status_code == 200


async def test_actions_on_an_unknown_cp_are_404(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/cps/NOPE/stop", headers=admin())).status_code == 404


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
