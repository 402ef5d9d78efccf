"""EV_Central's HTTP server (FastAPI): the REST API (reads, and admin actions with the admin
token), the admin dashboard page at `/` with its assets under `/static/admin/`, and its live
WebSocket feed at `/ws` (see central_ws.py and docs/dashboards.md)."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, model_validator

from evcharging.adapters.web.central_ws import (
    CpId,
    DashboardHub,
    Location,
    message_rows,
    require_a_change,
)
from evcharging.contracts.fields import ErrorType, Price
from evcharging.domain.admin_rules import Conflict, UnknownCP
from evcharging.domain.session import Session
from evcharging.services.central import CentralService

log = logging.getLogger(__name__)

ADMIN_STATIC = Path(__file__).parent / "static" / "admin"

DESCRIPTION = """Reads need no token. Admin operations (marked with a lock) need Central's admin
token (`EV_Central --admin-token`), as `Authorization: Bearer <token>` or `X-Admin-Token: <token>`:
press **Authorize** and give it once. An admin action that makes no sense in the CP's state (stop a
stopped CP, resume an active one, simulate an error on a Desconectado CP, fix a CP with no
simulated error, register an id twice) is answered 409 with the reason, and changes nothing."""


class NewCP(BaseModel):
    id: CpId
    location: Location
    price_eur_per_kwh: Price


class CPChanges(BaseModel):
    """What to change of a registered CP: its location, its price, or both."""

    model_config = ConfigDict(extra="forbid")
    location: Location | None = None
    price_eur_per_kwh: Price | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> CPChanges:
        require_a_change(self.location, self.price_eur_per_kwh)
        return self


class ErrorRequest(BaseModel):
    error_type: ErrorType = "fault"


class Problem(BaseModel):
    """Every 4xx answer but 422 (whose `detail` lists the invalid fields)."""

    detail: str


def _answer(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


UNAUTHORISED: dict[int | str, dict[str, Any]] = {401: _answer("Missing or wrong admin token")}
UNKNOWN_CP: dict[int | str, dict[str, Any]] = {404: _answer("Unknown CP")}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: _answer("Makes no sense in the CP's state: nothing changed (`detail` says why)")
}
ON_CP = {**UNAUTHORISED, **UNKNOWN_CP, **CONFLICT}

_bearer = HTTPBearer(
    scheme_name="AdminBearer", description="The admin token as a bearer token", auto_error=False
)
_header = APIKeyHeader(
    name="X-Admin-Token",
    scheme_name="AdminTokenHeader",
    description="The admin token in a header of its own",
    auto_error=False,
)


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
    # FastAPIOffline serves Swagger UI's files from its package: /docs needs no network. ReDoc is
    # off: its page still loads a logo from its CDN.
    app = FastAPIOffline(
        title="EV_Central API",
        version="1",
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        static_url="/static/docs",
    )

    def require_admin(
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        x_admin_token: Annotated[str | None, Depends(_header)],
    ) -> None:
        given = x_admin_token or (bearer.credentials if bearer else "")
        if not given or not hmac.compare_digest(given.encode(), admin_token.encode()):
            log.warning("admin action refused: missing or wrong admin token")
            raise HTTPException(
                status_code=401,
                detail="admin token required",
                headers={"WWW-Authenticate": "Bearer"},
            )

    admin = [Depends(require_admin)]

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        log.warning("%s %s refused: %s", request.method, request.url.path, exc.reason)
        return JSONResponse(status_code=409, content={"detail": exc.reason})

    @app.exception_handler(UnknownCP)
    async def unknown_cp(request: Request, exc: UnknownCP) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": exc.reason})

    @app.get("/api/cps")
    async def list_cps() -> list[dict[str, Any]]:
        return [cp.view() for cp in service.cps.values()]

    @app.get("/api/cps/{cp_id}", responses=UNKNOWN_CP)
    async def get_cp(cp_id: str) -> dict[str, Any]:
        cp = service.cps.get(cp_id)
        if cp is None:
            raise UnknownCP(cp_id)
        return cp.view()

    @app.get("/api/drivers/{driver_id}", responses={404: _answer("Unknown driver")})
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

    @app.post(
        "/api/cps",
        dependencies=admin,
        status_code=201,
        responses={
            **UNAUTHORISED,
            409: _answer("The id is already registered: nothing changed (edit it with PATCH)"),
        },
    )
    async def register_cp(body: NewCP) -> dict[str, Any]:
        """A new CP, Desconectado until its Monitor connects. Never edits an existing one."""
        return await service.register_cp(body.id, body.location, body.price_eur_per_kwh)

    @app.patch("/api/cps/{cp_id}", dependencies=admin, responses={**UNAUTHORISED, **UNKNOWN_CP})
    async def edit_cp(cp_id: str, body: CPChanges) -> dict[str, Any]:
        """Sets a registered CP's location and/or price (a supply already authorised keeps its
        price)."""
        return await service.edit_cp(cp_id, body.location, body.price_eur_per_kwh)

    @app.post("/api/cps/stop-all", dependencies=admin, responses=UNAUTHORISED)
    async def stop_all() -> dict[str, Any]:
        """Stops every CP not yet stopped: `changed` has their views, `skipped` the others with
        the reason."""
        return await service.stop_all()

    @app.post("/api/cps/resume-all", dependencies=admin, responses=UNAUTHORISED)
    async def resume_all() -> dict[str, Any]:
        """Resumes every stopped CP: `changed` has their views, `skipped` the others with the
        reason."""
        return await service.resume_all()

    @app.post("/api/cps/{cp_id}/stop", dependencies=admin, responses=ON_CP)
    async def stop_cp(cp_id: str) -> dict[str, Any]:
        """Ends any supply (with its ticket); the CP shows Parado, "Out of Order". 409 if
        already stopped."""
        return await service.stop_cp(cp_id)

    @app.post("/api/cps/{cp_id}/resume", dependencies=admin, responses=ON_CP)
    async def resume_cp(cp_id: str) -> dict[str, Any]:
        """Lifts a stop. 409 if the CP is not stopped."""
        return await service.resume_cp(cp_id)

    @app.post("/api/cps/{cp_id}/simulate-error", dependencies=admin, responses=ON_CP)
    async def simulate_error(cp_id: str, body: ErrorRequest | None = None) -> dict[str, Any]:
        """Seed flow 2: the CP turns Averiado, a running supply ends with its ticket and
        CP_ERROR_SIMULATED goes to the driver. 409 unless the CP is connected and has no
        simulated error yet."""
        return await service.simulate_error(cp_id, body.error_type if body else "fault")

    @app.post("/api/cps/{cp_id}/fix-error", dependencies=admin, responses=ON_CP)
    async def fix_error(cp_id: str) -> dict[str, Any]:
        """Clears a simulated error (CP_ERROR_FIXED goes out). 409 if none is simulated."""
        return await service.fix_error(cp_id)

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
