"""EV_Central's HTTP server (FastAPI): the REST API (reads, and admin actions with the admin
token), the admin dashboard page at `/` with its assets under `/static/admin/`, and its live
WebSocket feed at `/ws` (see central_feed.py and docs/dashboards.md). Admin actions go
through Central's one admin front door (`services/admin.py`), as the WebSocket's do."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel

from evcharging.adapters.web.central_feed import DashboardHub
from evcharging.adapters.web.pages import page
from evcharging.domain.admin_rules import UnknownCP
from evcharging.services.admin import (
    AdminDesk,
    AdminRefusal,
    AdminReply,
    Caller,
    Command,
    CPChanges,
    ErrorDetails,
    Refusal,
    RegisterCP,
    Transport,
)
from evcharging.services.central import CentralService
from evcharging.services.central_views import (
    BulkJson,
    CPJson,
    DriverJson,
    MessageJson,
    RequestJson,
    SessionJson,
)

log = logging.getLogger(__name__)

ADMIN_STATIC = Path(__file__).parent / "static" / "admin"

DESCRIPTION = """Reads need no token. Admin operations (marked with a lock) need Central's admin
token (`EV_Central --admin-token`), as `Authorization: Bearer <token>` or `X-Admin-Token: <token>`:
press **Authorize** and give it once. An admin action that makes no sense in the CP's state (stop a
stopped CP, resume an active one, simulate an error on a Desconectado CP, fix a CP with no
simulated error, register an id twice) is answered 409 with the reason, and changes nothing."""


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


_STATUS = {
    Refusal.UNAUTHORISED: 401,
    Refusal.INVALID: 422,
    Refusal.UNKNOWN_CP: 404,
    Refusal.CONFLICT: 409,
}


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


def admitted(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    x_admin_token: Annotated[str | None, Depends(_header)],
) -> Caller:
    """The front door's one token check, before the body is looked at."""
    desk: AdminDesk = request.app.state.admin_desk
    given = x_admin_token or (bearer.credentials if bearer else "")
    action = getattr(request.scope.get("route"), "name", None)  # endpoints named as Commands
    return desk.admit(Caller(Transport.HTTP, _peer(request)), given, action)


Admin = Annotated[Caller, Depends(admitted)]


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

    desk = app.state.admin_desk = AdminDesk(service, admin_token)

    async def act(caller: Caller, name: Command, fields: dict[str, Any]) -> AdminReply:
        return await desk.run(caller, desk.command(caller, name, fields))

    async def on_cp(caller: Caller, name: Command, fields: dict[str, Any]) -> CPJson:
        reply = await act(caller, name, fields)
        assert reply.cp is not None
        return reply.cp.json

    async def on_all(caller: Caller, name: Command) -> BulkJson:
        reply = await act(caller, name, {})
        assert reply.bulk is not None
        return reply.bulk.json

    @app.exception_handler(AdminRefusal)
    async def refused(request: Request, exc: AdminRefusal) -> JSONResponse:
        """Logged, with who asked, by the front door."""
        headers = {"WWW-Authenticate": "Bearer"} if exc.kind is Refusal.UNAUTHORISED else None
        return JSONResponse({"detail": exc.reason}, status_code=_STATUS[exc.kind], headers=headers)

    @app.get("/api/cps")
    async def list_cps() -> list[CPJson]:
        return [view.json for view in service.cps()]

    @app.get("/api/cps/{cp_id}", responses=UNKNOWN_CP)
    async def get_cp(cp_id: str) -> CPJson:
        view = service.cp(cp_id)
        if view is None:
            raise HTTPException(status_code=404, detail=UnknownCP(cp_id).reason)
        return view.json

    @app.get("/api/drivers/{driver_id}", responses={404: _answer("Unknown driver")})
    async def get_driver(driver_id: str) -> DriverJson:
        view = service.driver(driver_id)
        if view is None:
            raise HTTPException(status_code=404, detail=f"unknown driver {driver_id}")
        return view.json

    @app.get("/api/sessions")
    async def sessions(
        driver_id: str | None = None,
        cp_id: str | None = None,
        status: Annotated[str | None, Query(pattern="^(authorised|supplying|ended)$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[SessionJson]:
        """Newest first, `limit` at a time; `offset` pages through the rest."""
        found = service.sessions(
            driver_id=driver_id, cp_id=cp_id, status=status, limit=limit, offset=offset
        )
        return [view.json for view in found]

    @app.get("/api/requests")
    async def requests() -> list[RequestJson]:
        return [view.json for view in service.requests()]

    @app.get("/api/messages")
    async def messages() -> list[MessageJson]:
        return [view.json for view in service.messages()]

    @app.post(
        "/api/cps",
        status_code=201,
        responses={
            **UNAUTHORISED,
            409: _answer("The id is already registered: nothing changed (edit it with PATCH)"),
        },
    )
    async def register_cp(body: RegisterCP, caller: Admin) -> CPJson:
        """A new CP, Desconectado until its Monitor connects. Never edits an existing one."""
        reply = await desk.run(caller, body)
        assert reply.cp is not None
        return reply.cp.json

    @app.patch("/api/cps/{cp_id}", responses={**UNAUTHORISED, **UNKNOWN_CP})
    async def edit_cp(cp_id: str, body: CPChanges, caller: Admin) -> CPJson:
        """Sets a registered CP's location and/or price (a supply already authorised keeps its
        price)."""
        changes = body.model_dump(exclude_none=True)
        return await on_cp(caller, Command.EDIT_CP, {"cp_id": cp_id, **changes})

    @app.post("/api/cps/stop-all", responses=UNAUTHORISED)
    async def stop_all(caller: Admin) -> BulkJson:
        """Stops every CP not yet stopped: `changed` has their views, `skipped` the others with
        the reason."""
        return await on_all(caller, Command.STOP_ALL)

    @app.post("/api/cps/resume-all", responses=UNAUTHORISED)
    async def resume_all(caller: Admin) -> BulkJson:
        """Resumes every stopped CP: `changed` has their views, `skipped` the others with the
        reason."""
        return await on_all(caller, Command.RESUME_ALL)

    @app.post("/api/cps/{cp_id}/stop", responses=ON_CP)
    async def stop_cp(cp_id: str, caller: Admin) -> CPJson:
        """Ends any supply (with its ticket); the CP shows Parado, "Out of Order". 409 if
        already stopped."""
        return await on_cp(caller, Command.STOP_CP, {"cp_id": cp_id})

    @app.post("/api/cps/{cp_id}/resume", responses=ON_CP)
    async def resume_cp(cp_id: str, caller: Admin) -> CPJson:
        """Lifts a stop. 409 if the CP is not stopped."""
        return await on_cp(caller, Command.RESUME_CP, {"cp_id": cp_id})

    @app.post("/api/cps/{cp_id}/simulate-error", responses=ON_CP)
    async def simulate_error(cp_id: str, caller: Admin, body: ErrorDetails | None = None) -> CPJson:
        """Seed flow 2: the CP turns Averiado, a running supply ends with its ticket and
        CP_ERROR_SIMULATED goes to the driver. 409 unless the CP is connected and has no
        simulated error yet."""
        details = body.model_dump() if body else {}
        return await on_cp(caller, Command.SIMULATE_ERROR, {"cp_id": cp_id, **details})

    @app.post("/api/cps/{cp_id}/fix-error", responses=ON_CP)
    async def fix_error(cp_id: str, caller: Admin) -> CPJson:
        """Clears a simulated error (CP_ERROR_FIXED goes out). 409 if none is simulated."""
        return await on_cp(caller, Command.FIX_ERROR, {"cp_id": cp_id})

    mount_dashboard(app, DashboardHub(service, desk))
    return app


def mount_dashboard(app: FastAPI, hub: DashboardHub) -> None:
    """The admin page at `/`, its assets under `/static/admin/`, its live feed at `/ws`."""
    app.state.dashboard_hub = hub
    app.add_api_websocket_route("/ws", hub.serve)

    @app.get("/", include_in_schema=False)
    async def admin_page() -> HTMLResponse:
        return page(ADMIN_STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static/admin", StaticFiles(directory=ADMIN_STATIC), name="admin-static")
