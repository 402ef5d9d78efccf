"""EV_Central's HTTP server (FastAPI): the REST API (reads, and admin actions with the admin
token), the admin dashboard page at `/` with its assets under `/static/admin/`, and its live
WebSocket feed at `/ws` (see central_ws.py and docs/dashboards.md)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from evcharging.adapters.web.central_ws import DashboardHub, message_rows
from evcharging.domain.session import Session
from evcharging.services.central import CentralService

log = logging.getLogger(__name__)

ADMIN_STATIC = Path(__file__).parent / "static" / "admin"


class NewCP(BaseModel):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
    location: Annotated[str, Field(min_length=1, max_length=200)]
    price_eur_per_kwh: Annotated[Decimal, Field(gt=0, le=100)]


class ErrorRequest(BaseModel):
    error_type: Annotated[str, Field(max_length=50)] = "fault"


def session_view(s: Session) -> dict[str, Any]:
    return {
        "session_id": s.session_id,
        "driver_id": s.driver_id,
        "cp_id": s.cp_id,
        "status": s.status.value,
        "price_eur_per_kwh": str(s.price_eur_per_kwh),
        "energy_kwh": str(s.energy_kwh),
        "amount_eur": str(s.amount_eur),
        "started_at": s.started_at.isoformat(),
        "ended_at": s.ended_at.isoformat() if s.ended_at else None,
        "end_reason": s.end_reason.value if s.end_reason else None,
    }


def create_app(service: CentralService, admin_token: str) -> FastAPI:
    app = FastAPI(title="EV_Central API", version="1", docs_url="/docs")

    def require_admin(
        authorization: Annotated[str | None, Header()] = None,
        x_admin_token: Annotated[str | None, Header()] = None,
    ) -> None:
        given = x_admin_token or (authorization or "").removeprefix("Bearer ").strip()
        if not given or not hmac.compare_digest(given.encode(), admin_token.encode()):
            log.warning("admin action refused: missing or wrong admin token")
            raise HTTPException(status_code=401, detail="admin token required")

    admin = [Depends(require_admin)]

    async def on_cp(
        action: Callable[[str], Awaitable[dict[str, Any]]], cp_id: str
    ) -> dict[str, Any]:
        try:
            return await action(cp_id)
        except KeyError:
            raise HTTPException(status_code=404, detail=f"unknown CP {cp_id}") from None

    @app.get("/api/cps")
    async def list_cps() -> list[dict[str, Any]]:
        return [cp.view() for cp in service.cps.values()]

    @app.get("/api/cps/{cp_id}")
    async def get_cp(cp_id: str) -> dict[str, Any]:
        cp = service.cps.get(cp_id)
        if cp is None:
            raise HTTPException(status_code=404, detail=f"unknown CP {cp_id}")
        return cp.view()

    @app.get("/api/drivers/{driver_id}")
    async def get_driver(driver_id: str) -> dict[str, Any]:
        driver = service.repo.get_driver(driver_id)
        if driver is None:
            raise HTTPException(status_code=404, detail=f"unknown driver {driver_id}")
        return {"id": driver.driver_id, "name": driver.name, "balance_eur": str(driver.balance_eur)}

    @app.get("/api/sessions")
    async def sessions(
        driver_id: str | None = None,
        cp_id: str | None = None,
        status: Annotated[str | None, Query(pattern="^(authorised|supplying|ended)$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        """Newest first, `limit` at a time; `offset` pages through the rest."""
        found = service.repo.find_sessions(
            driver_id=driver_id, cp_id=cp_id, status=status, limit=limit, offset=offset
        )
        return [session_view(s) for s in found]

    @app.get("/api/requests")
    async def requests() -> list[dict[str, Any]]:
        return service.request_rows()

    @app.get("/api/messages")
    async def messages() -> list[dict[str, str]]:
        return message_rows(service)

    @app.post("/api/cps", dependencies=admin, status_code=201)
    async def register_cp(body: NewCP) -> dict[str, Any]:
        return await service.register_cp(body.id, body.location, body.price_eur_per_kwh)

    @app.post("/api/cps/stop-all", dependencies=admin)
    async def stop_all() -> list[dict[str, Any]]:
        return await service.stop_all()

    @app.post("/api/cps/resume-all", dependencies=admin)
    async def resume_all() -> list[dict[str, Any]]:
        return await service.resume_all()

    @app.post("/api/cps/{cp_id}/stop", dependencies=admin)
    async def stop_cp(cp_id: str) -> dict[str, Any]:
        return await on_cp(service.stop_cp, cp_id)

    @app.post("/api/cps/{cp_id}/resume", dependencies=admin)
    async def resume_cp(cp_id: str) -> dict[str, Any]:
        return await on_cp(service.resume_cp, cp_id)

    @app.post("/api/cps/{cp_id}/simulate-error", dependencies=admin)
    async def simulate_error(cp_id: str, body: ErrorRequest | None = None) -> dict[str, Any]:
        error_type = body.error_type if body else "fault"
        return await on_cp(lambda c: service.simulate_error(c, error_type), cp_id)

    @app.post("/api/cps/{cp_id}/fix-error", dependencies=admin)
    async def fix_error(cp_id: str) -> dict[str, Any]:
        return await on_cp(service.fix_error, cp_id)

    mount_dashboard(app, DashboardHub(service, admin_token))
    return app


def mount_dashboard(app: FastAPI, hub: DashboardHub) -> None:
    """The admin page at `/`, its assets under `/static/admin/`, its live feed at `/ws`."""
    app.state.dashboard_hub = hub
    app.add_api_websocket_route("/ws", hub.serve)

    @app.get("/", include_in_schema=False)
    async def admin_page() -> FileResponse:
        return FileResponse(ADMIN_STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static/admin", StaticFiles(directory=ADMIN_STATIC), name="admin-static")
