"""Central's audit log over its HTTP API (issue 13): `GET /api/audit` (admin only, filters, paging,
newest first), admin outcomes recorded with the caller's IP (401s and FastAPI's own 422s too),
and never the admin token, in the table or in the JSON-lines file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition

from evcharging.adapters.audit_file import AuditFile
from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.adapters.kafka.consumer import EventConsumer
from evcharging.adapters.kafka.router import EventRouter
from evcharging.adapters.web.central_api import create_app
from evcharging.apps import central as central_app
from evcharging.apps.central import audit_consumer, build_router
from evcharging.contracts.audit import AuditAction
from evcharging.contracts.events import DriverStatusRequest
from evcharging.contracts.topics import DRIVER_EVENTS
from evcharging.services.audit import Audit, AuditQuery
from evcharging.services.central import CentralService
from tests.integration.test_central_ws import dashboard, reply_to
from tests.support.builders import a_cp, a_driver, a_repo
from tests.support.fakes import RecordingPublisher

pytestmark = pytest.mark.timeout(60)

TOKEN = "s3cret-admin-token-4f1c"
WRONG = "not-the-token-9b2e"
CLIENT_IP = "10.1.2.3"
ROW_KEYS = {"at", "action", "actor", "ip", "outcome", "cp_id", "detail", "params", "seq"}


class Rig:
    def __init__(self, repo: SqliteRepository, file: AuditFile, central: CentralService) -> None:
        self.repo = repo
        self.file = file
        self.central = central

    def table_text(self) -> str:
        """Every column of every row of the audit table, as text."""
        rows = self.repo._conn.execute("SELECT * FROM audit_log").fetchall()
        return "\n".join(" | ".join(str(value) for value in tuple(row)) for row in rows)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    repo = a_repo()
    a_cp(repo, "CP1", price="0.35")
    a_cp(repo, "CP2", price="0.39", location="Valencia")
    a_driver(repo, "D1")
    file = AuditFile(tmp_path / "central-audit.jsonl")
    central = CentralService(repo, RecordingPublisher(), audit=Audit([repo, file]))
    await central.load()
    await central.monitor_auth("CP2", object(), peer="10.0.0.22:40000")
    yield Rig(repo, file, central)
    file.close()


@pytest.fixture
async def client(rig: Rig) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(rig.central, TOKEN)
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 51234))
    async with httpx.AsyncClient(transport=transport, base_url="http://central") as c:
        yield c


def admin(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def audit(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    answer = await client.get("/api/audit", params=params, headers=admin())
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()
    return rows


async def test_reading_the_audit_log_needs_the_admin_token_and_a_refusal_is_audited_with_the_ip(
    client: httpx.AsyncClient,
) -> None:
    for headers in ({}, admin(WRONG), {"X-Admin-Token": ""}):
        answer = await client.get("/api/audit", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    refused = await audit(client, action="admin.refused")
    assert [(r["actor"], r["ip"], r["outcome"], r["params"]) for r in refused] == [
        ("anonymous", CLIENT_IP, "denied", {"command": "audit_log", "transport": "http"})
    ] * 3
    assert [r["detail"] for r in refused] == [
        "admin token required",
        "wrong admin token",
        "admin token required",
    ]
    assert {r["action"] for r in await audit(client)} <= {"admin.refused", "cp.state"}


async def test_admin_actions_and_refusals_are_rows_with_the_callers_ip(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post("/api/cps/CP2/stop", headers=admin())).status_code == 200
    assert (await client.post("/api/cps/CP2/stop", headers=admin())).status_code == 409
    assert (await client.post("/api/cps/NOPE/resume", headers=admin())).status_code == 404
    rows = await audit(client)
    assert [(r["action"], r["cp_id"], r["detail"]) for r in rows[:5]] == [
        ("admin.refused", "NOPE", "unknown CP NOPE"),
        ("admin.refused", "CP2", "CP CP2 is already stopped"),
        ("admin.action", "CP2", "CP CP2 stopped: Out of Order"),
        ("cp.state", "CP2", "Activado -> Parado"),
        ("cp.blocked", "CP2", "CP CP2 put out of service (Parado)"),
    ]
    assert {r["ip"] for r in rows[:3] + rows[4:5]} == {CLIENT_IP}
    assert {r["actor"] for r in rows[:3] + rows[4:5]} == {"admin"}
    assert (rows[3]["actor"], rows[3]["ip"]) == ("cp:CP2", "10.0.0.22")  # the CP's own address
    assert set(rows[0]) == ROW_KEYS
    assert rows[0]["seq"] > rows[1]["seq"]  # newest first


async def test_a_fastapi_422_is_audited_with_the_ip_and_answered_as_before(
    client: httpx.AsyncClient,
) -> None:
    body = {"id": "bad id!", "location": "Murcia", "price_eur_per_kwh": "0.31"}
    answer = await client.post("/api/cps", json=body, headers=admin())
    assert answer.status_code == 422
    [problem] = answer.json()["detail"]  # FastAPI's own shape, unchanged
    assert (problem["loc"], problem["type"]) == (["body", "id"], "string_pattern_mismatch")
    bad_query = await client.get("/api/sessions", params={"limit": "0"}, headers=admin())
    assert bad_query.status_code == 422
    assert bad_query.json()["detail"][0]["loc"] == ["query", "limit"]

    refused = await audit(client, action="admin.refused")
    assert [(r["actor"], r["ip"], r["params"]["command"]) for r in refused] == [
        ("admin", CLIENT_IP, "sessions"),  # a read (the operator's: with the token)
        ("admin", CLIENT_IP, "register_cp"),
    ]
    assert refused[1]["detail"].startswith("invalid fields: body.id: String should match")
    assert "bad id!" not in refused[1]["detail"]  # the input is not echoed


async def test_filters_and_paging(client: httpx.AsyncClient, rig: Rig) -> None:
    start = datetime.now(UTC)
    await rig.central.monitor_auth("CP1", object(), peer="10.0.0.11:40001")
    for action in ("stop", "resume", "stop"):
        assert (await client.post(f"/api/cps/CP1/{action}", headers=admin())).status_code == 200
    everything = await audit(client)
    assert [r["seq"] for r in everything] == sorted((r["seq"] for r in everything), reverse=True)

    blocked = await audit(client, action="cp.blocked")
    assert [(r["cp_id"], r["ip"]) for r in blocked] == [("CP1", CLIENT_IP)] * 2
    assert {r["cp_id"] for r in await audit(client, cp="CP1")} == {"CP1"}
    assert len(await audit(client, cp="CP1", action="cp.state")) == 4
    from_cp = await audit(client, ip="10.0.0.11")
    assert [r["detail"] for r in from_cp] == [
        "Activado -> Parado",
        "Parado -> Activado",
        "Activado -> Parado",
        "Desconectado -> Activado",
    ]
    assert await audit(client, since=(start + timedelta(hours=1)).isoformat()) == []
    assert await audit(client, until=(start - timedelta(hours=1)).isoformat()) == []
    naive = start.replace(tzinfo=None)  # no offset: UTC
    assert len(await audit(client, since=naive.isoformat())) == len(everything) - 1  # not CP2's
    in_madrid = start.astimezone(timezone(timedelta(hours=1))).isoformat()
    assert len(await audit(client, since=in_madrid)) == len(everything) - 1
    assert len(await audit(client, until=(start + timedelta(hours=1)).isoformat())) == len(
        everything
    )

    one, two = await audit(client, limit=1), await audit(client, limit=1, offset=1)
    assert [one[0]["seq"], two[0]["seq"]] == [everything[0]["seq"], everything[1]["seq"]]
    assert await audit(client, offset=len(everything)) == []

    for bad in ({"action": "bogus"}, {"limit": 0}, {"limit": 501}, {"offset": -1}, {"since": "x"}):
        answer = await client.get("/api/audit", params=bad, headers=admin())
        assert answer.status_code == 422, bad
    rows = await audit(client, action="admin.refused", limit=5)
    assert [r["params"]["command"] for r in rows] == ["audit_log"] * 5
    assert rows[-1]["detail"].startswith("invalid fields: query.action: Input should be")


async def test_the_api_documents_the_audit_endpoint(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/api/audit"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert names == {"since", "until", "cp", "action", "ip", "limit", "offset"}
    assert {"401", "422"} <= set(operation["responses"])
    row = schema["components"]["schemas"]["AuditJson"]
    assert set(row["properties"]) == ROW_KEYS
    actions = schema["components"]["schemas"]["AuditAction"]["enum"]
    assert set(actions) == {a.value for a in AuditAction}
    assert (await client.get("/docs")).status_code == 200


async def test_the_admin_token_never_reaches_the_audit_log(
    client: httpx.AsyncClient, rig: Rig
) -> None:
    await client.post("/api/cps/CP1/stop", headers=admin(WRONG))
    await client.post("/api/cps/CP1/stop", headers={"X-Admin-Token": TOKEN})
    await client.post("/api/cps", json={"id": TOKEN, "location": "x"}, headers=admin())
    await client.get("/api/audit", params={"ip": TOKEN}, headers=admin())
    app = create_app(rig.central, TOKEN)
    async with dashboard(app) as ws:
        await reply_to(ws, {"type": "login", "token": TOKEN})
        await reply_to(ws, {"type": "stop_all", "token": WRONG})
        await reply_to(ws, {"type": "resume_cp", "cp_id": "CP1", "token": TOKEN})
    rows = await audit(client, limit=500)
    assert {"admin.action", "admin.refused", "cp.blocked", "cp.unblocked"} <= {
        r["action"] for r in rows
    }
    websocket = [r for r in rows if r["params"].get("transport") == "websocket"]
    assert [(r["actor"], r["ip"], r["params"]["command"]) for r in websocket] == [
        ("admin", "127.0.0.1", "resume_cp"),
        ("anonymous", "127.0.0.1", "stop_all"),
        ("admin", "127.0.0.1", "login"),
    ]
    table, lines = rig.table_text(), rig.file.path.read_text(encoding="utf-8")
    assert len(lines.splitlines()) == len(rows)  # both sinks have every row
    for secret in (TOKEN, WRONG):
        assert secret not in table
        assert secret not in lines


async def test_every_row_is_an_audit_action(client: httpx.AsyncClient) -> None:
    await client.post("/api/cps/CP2/simulate-error", headers=admin())
    await client.post("/api/cps/CP2/fix-error", headers=admin())
    rows = await audit(client)
    assert {r["action"] for r in rows} <= {a.value for a in AuditAction}
    assert all(r["at"].endswith("+00:00") for r in rows)  # UTC


# --- Central's wiring (apps/central.py) ---------------------------------------------------------


async def test_a_malformed_event_read_by_central_is_one_rejected_row(rig: Rig) -> None:
    rejected, failed = audit_consumer(rig.central.audit)
    reader = EventConsumer(
        "127.0.0.1:9",
        "ev-central",
        build_router(rig.central),
        topics=[DRIVER_EVENTS],
        on_rejected=rejected,
        on_error=failed,
    )
    tp = TopicPartition("driver-events", 2)
    await reader._handle(tp, SimpleNamespace(key=b"D1", value=b"{not json", offset=41))  # type: ignore[arg-type]
    [row] = rig.repo.find_audit(AuditQuery(action=AuditAction.MESSAGE_REJECTED))
    assert (row.actor, row.ip, row.outcome.value) == ("unknown", "-", "denied")
    assert row.params == {"topic": "driver-events", "partition": "2", "offset": "41"}
    assert row.detail == reader.stats.bad_reasons[0]


async def test_a_handler_that_fails_is_one_error_row(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """The statement's "errores": a bug in a handler is logged once with its traceback and is an
    `error` row (the reader goes on with the next message)."""
    rejected, failed = audit_consumer(rig.central.audit)
    router = EventRouter("central")

    async def broken(_event: DriverStatusRequest) -> None:
        raise RuntimeError("a bug")

    router.add(DriverStatusRequest, broken)
    reader = EventConsumer(
        "127.0.0.1:9",
        "ev-central",
        router,
        topics=[DRIVER_EVENTS],
        on_rejected=rejected,
        on_error=failed,
    )
    event = DriverStatusRequest(driver_id="D1")
    tp = TopicPartition("driver-events", 1)
    await reader._handle(tp, SimpleNamespace(key=b"D1", value=event.to_bytes(), offset=7))  # type: ignore[arg-type]
    [row] = rig.repo.find_audit(AuditQuery(action=AuditAction.ERROR))
    assert (row.actor, row.outcome.value) == ("central", "error")
    assert row.detail == "handling DRIVER_STATUS_REQUEST failed: RuntimeError"
    assert row.params["event_id"] == str(event.event_id)
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(logged) == 1  # logged once, by the reader
    caplog.clear()  # the one expected error: not a failure of this test


def test_the_audit_file_lives_next_to_the_database_unless_told() -> None:
    assert central_app.parse_args(["7000", "k:9092"]).audit_file == Path(".run/central-audit.jsonl")
    given = central_app.parse_args(["7000", "k:9092", "--db", "/var/ev/c.db"])
    assert given.audit_file == Path("/var/ev/central-audit.jsonl")
    pg = central_app.default_audit_file("postgresql://ev@db/ev")
    assert pg == Path(".evcharging/central-audit.jsonl")
    told = central_app.parse_args(["7000", "k:9092", "--audit-file", "/log/a.jsonl"])
    assert told.audit_file == Path("/log/a.jsonl")
