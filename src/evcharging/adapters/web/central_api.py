"""EV_Central's HTTP server (FastAPI): API_Central v1 under `/api/v1` (api_v1.py, docs/api.md),
the older unversioned REST API under `/api`, the operator's (reads and admin actions, all with
the admin token; the public reads are v1's), the admin dashboard page at `/` with its assets
under `/static/admin/`, and its live WebSocket feed at `/ws`, masked until the page logs in (see
central_feed.py and docs/dashboards.md). Admin actions go through Central's one admin front door
(`services/admin.py`), as the WebSocket's do; every outcome, a 401 or a 422 included, reaches the
audit log there, which `GET /api/audit` reads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel

from evcharging.adapters.web.api_v1 import WEATHER_WRITES, mount_v1
from evcharging.adapters.web.audit_filter import AuditFilter, audit_rows
from evcharging.adapters.web.central_feed import DashboardHub
from evcharging.adapters.web.pages import page
from evcharging.domain.admin_rules import UnknownCP
from evcharging.services.admin import (
    AdminDesk,
    AdminRefusal,
    Caller,
    Command,
    CPChanges,
    ErrorDetails,
    Refusal,
    RegisterCP,
    ResetDetails,
    Transport,
)
from evcharging.services.audit import UNKNOWN_IP, Audit
from evcharging.services.central import CentralService
from evcharging.services.central_views import (
    AuditJson,
    BulkJson,
    CPJson,
    DriverJson,
    MessageJson,
    RequestJson,
    RotationJson,
    SessionJson,
)
from evcharging.services.module_health import ModuleHealth
from evcharging.services.roles import Roles
from evcharging.services.weather_desk import WeatherDesk, WeatherRefusal

log = logging.getLogger(__name__)

ADMIN_STATIC = Path(__file__).parent / "static" / "admin"
SHARED_STATIC = ADMIN_STATIC.parent / "shared"  # base.css, live.js: also the public front's

DESCRIPTION = """**API_Central v1** is under `/api/v1` (docs/api.md): public reads (driver ids masked,
no names or balances; whole with the admin token), the weather office's writes with its own
token (**WeatherBearer**), the admin's with the admin token, and the push channel
`/api/v1/stream` (WebSocket). A known token of the wrong role is answered 403.

The unversioned `/api/...` below is the operator's (the admin dashboard's): every operation, reads
included, needs Central's admin token (`EV_Central --admin-token`), as `Authorization: Bearer
<token>` or `X-Admin-Token: <token>`: press **Authorize** and give it once. Without it (or with an
unknown one) the answer is 401, with the weather office's token 403; anyone may read the public,
masked views of `/api/v1`. An admin action that makes no sense in the CP's state (stop a
stopped CP, resume an active one, simulate an error on a Desconectado CP, fix a CP with no
simulated error, register an id twice, revoke keys already revoked, ask a Desconectado CP to
report its status or to reset) is answered 409 with the reason, and changes nothing.
Every admin action, done or refused (401, 403, 404, 409, 422), and every refused read is written to
Central's audit log, with the caller's IP (never the token); admins read it with `GET /api/audit`
(a read with the token is not recorded)."""


class Problem(BaseModel):
    """Every 4xx answer but 422 (whose `detail` lists the invalid fields)."""

    detail: str


def _answer(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


UNAUTHORISED: dict[int | str, dict[str, Any]] = {401: _answer("Missing or wrong admin token")}
ADMIN_READ: dict[int | str, dict[str, Any]] = {
    **UNAUTHORISED,
    403: _answer("A token of another role (the weather office's)"),
}
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
    Refusal.FORBIDDEN: 403,
    Refusal.INVALID: 422,
    Refusal.UNKNOWN_CP: 404,
    Refusal.CONFLICT: 409,
}


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


def _caller(request: Request) -> Caller:
    """Who asks: the admin, once `admitted` accepted the token in this request; else anonymous."""
    admitted_caller = getattr(request.state, "admin_caller", None)
    if isinstance(admitted_caller, Caller):
        return admitted_caller
    ip = request.client.host if request.client else UNKNOWN_IP
    return Caller(Transport.HTTP, _peer(request), ip=ip)


def _route_name(request: Request) -> str | None:
    return getattr(request.scope.get("route"), "name", None)  # endpoints named as Commands


def _invalid_fields(exc: RequestValidationError) -> str:
    """The fields at fault and their rules, without the input (as the WebSocket says it)."""
    return "; ".join(
        f"{'.'.join(map(str, e.get('loc', ()))) or 'body'}: {e.get('msg', 'invalid')}"
        for e in exc.errors()
    )


def admitted(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    x_admin_token: Annotated[str | None, Depends(_header)],
) -> Caller:
    """The front door's one token check, before the body is looked at."""
    desk: AdminDesk = request.app.state.admin_desk
    given = x_admin_token or (bearer.credentials if bearer else "")
    caller = desk.admit(_caller(request), given, _route_name(request))
    request.state.admin_caller = caller  # a 422 found after this is the admin's
    return caller


Admin = Annotated[Caller, Depends(admitted)]


def create_app(
    service: CentralService,
    admin_token: str,
    audit: Audit | None = None,
    *,
    weather_token: str | None = None,
    health: ModuleHealth | None = None,
    weather: WeatherDesk | None = None,
) -> FastAPI:
    """`audit`: where admin outcomes go (default: the service's audit log). `weather_token`: the
    weather office's (None: every weather write is refused). `health`, `weather`: the modules'
    health and the weather desk, when the program wires them to its probes (default: new ones;
    `weather` must then be built with the same tokens)."""
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

    roles = Roles(admin_token, weather_token)
    desk = app.state.admin_desk = AdminDesk(service, admin_token, audit, roles=roles)
    records = audit if audit is not None else service.audit
    health = health if health is not None else ModuleHealth(records)
    weather = weather if weather is not None else WeatherDesk(service, roles, health, records)
    # the public front is served from another origin: it may read, never write
    app.add_middleware(
        CORSMiddleware, allow_origins=["*"], allow_methods=["GET"], allow_credentials=False
    )

    act, on_cp, on_all = desk.act, desk.on_cp, desk.on_all

    @app.exception_handler(AdminRefusal)
    async def refused(request: Request, exc: AdminRefusal) -> JSONResponse:
        """Logged, with who asked, by the front door."""
        headers = {"WWW-Authenticate": "Bearer"} if exc.kind is Refusal.UNAUTHORISED else None
        return JSONResponse({"detail": exc.reason}, status_code=_STATUS[exc.kind], headers=headers)

    @app.exception_handler(WeatherRefusal)
    async def weather_refused(request: Request, exc: WeatherRefusal) -> JSONResponse:
        """Logged and audited by the weather desk."""
        headers = {"WWW-Authenticate": "Bearer"} if exc.kind is Refusal.UNAUTHORISED else None
        return JSONResponse({"detail": exc.reason}, status_code=_STATUS[exc.kind], headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's own 422 (body, path or query): audited as a refusal, answered as before (a
        weather write's by the weather desk)."""
        name = _route_name(request)
        reason = f"invalid fields: {_invalid_fields(exc)}"
        if name in WEATHER_WRITES:
            who = getattr(request.state, "weather_caller", None)
            weather.invalid(who if isinstance(who, Caller) else _caller(request), name, reason)
        else:
            desk.invalid(_caller(request), name, reason)
        return await request_validation_exception_handler(request, exc)

    # The operator's reads: the admin token (the same check and audit as the admin writes; a
    # read with it is not audited, as `GET /api/audit` is not). The public reads are /api/v1's.
    admin_only = [Depends(admitted)]

    @app.get("/api/cps", dependencies=admin_only, responses=ADMIN_READ)
    async def list_cps() -> list[CPJson]:
        return [view.json for view in service.cps()]

    @app.get("/api/cps/{cp_id}", dependencies=admin_only, responses={**ADMIN_READ, **UNKNOWN_CP})
    async def get_cp(cp_id: str) -> CPJson:
        view = service.cp(cp_id)
        if view is None:
            raise HTTPException(status_code=404, detail=UnknownCP(cp_id).reason)
        return view.json

    @app.get(
        "/api/drivers/{driver_id}",
        dependencies=admin_only,
        responses={**ADMIN_READ, 404: _answer("Unknown driver")},
    )
    async def get_driver(driver_id: str) -> DriverJson:
        view = service.driver(driver_id)
        if view is None:
            raise HTTPException(status_code=404, detail=f"unknown driver {driver_id}")
        return view.json

    @app.get("/api/sessions", dependencies=admin_only, responses=ADMIN_READ)
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

    @app.get("/api/requests", dependencies=admin_only, responses=ADMIN_READ)
    async def requests() -> list[RequestJson]:
        return [view.json for view in service.requests()]

    @app.get("/api/messages", dependencies=admin_only, responses=ADMIN_READ)
    async def messages() -> list[MessageJson]:
        return [view.json for view in service.messages()]

    @app.get("/api/audit", responses=UNAUTHORISED)
    async def audit_log(caller: Admin, query: AuditFilter) -> list[AuditJson]:
        """Central's audit log, newest first, `limit` rows at a time (`offset` pages on): who
        did what, from which IP, when (UTC). Admin only; reading it is not itself recorded."""
        return audit_rows(service, query)

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

    @app.post("/api/cps/rotate-keys", responses={**UNAUTHORISED, **CONFLICT})
    async def rotate_keys(caller: Admin) -> RotationJson:
        """Asks every connected CP whose keys are not revoked to authenticate again (at its next
        heartbeat), which gives it a new key; nothing goes out of service and no supply ends.
        `asked` lists them. Central keeps each CP's old key until its Engine uses the new one."""
        reply = await act(caller, Command.ROTATE_KEYS, {})
        assert reply.asked is not None
        return {"asked": list(reply.asked)}

    @app.post("/api/cps/{cp_id}/revoke-keys", responses=ON_CP)
    async def revoke_keys(cp_id: str, caller: Admin) -> CPJson:
        """ "Restaurar claves": a running supply ends (ticket for what was supplied), the Engine
        is told to stop, every key of the CP is deleted (anything sealed with them is refused)
        and the CP is Parado ("keys revoked") until its Monitor authenticates again. 409 if its
        keys are already revoked."""
        return await on_cp(caller, Command.REVOKE_KEYS, {"cp_id": cp_id})

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

    @app.post("/api/cps/{cp_id}/report-status", responses=ON_CP)
    async def report_status(cp_id: str, caller: Admin) -> CPJson:
        """Asks the CP to report its state now (CP_REPORT_STATUS; an OCPP charger behind EV_OCPP:
        TriggerMessage StatusNotification); its answer shows the way its state always does.
        409 if nothing would hear it (Desconectado, or its keys revoked)."""
        return await on_cp(caller, Command.REPORT_STATUS, {"cp_id": cp_id})

    @app.post("/api/cps/{cp_id}/reset", responses=ON_CP)
    async def reset_cp(cp_id: str, caller: Admin, body: ResetDetails | None = None) -> CPJson:
        """Asks the CP to restart (CP_RESET; an OCPP charger: Reset), soft unless the body says
        `{"hard": true}`; a supply under way ends the way the CP then reports it. 409 if nothing
        would hear it (Desconectado, or its keys revoked)."""
        details = body.model_dump() if body else {}
        return await on_cp(caller, Command.RESET_CP, {"cp_id": cp_id, **details})

    mount_v1(app, service, desk, weather, health)
    mount_dashboard(app, DashboardHub(service, desk, weather=weather, health=health))
    return app


def mount_dashboard(app: FastAPI, hub: DashboardHub) -> None:
    """The admin page at `/`, its assets under `/static/admin/` (and those it shares with the public
    front under `/static/shared/`), its live feed at `/ws`."""
    app.state.dashboard_hub = hub
    app.add_api_websocket_route("/ws", hub.serve)

    @app.get("/", include_in_schema=False)
    async def admin_page() -> HTMLResponse:
        return page(ADMIN_STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static/admin", StaticFiles(directory=ADMIN_STATIC), name="admin-static")
    app.mount("/static/shared", StaticFiles(directory=SHARED_STATIC), name="shared-static")
