"""API_Central v1 (`/api/v1`): the versioned REST API any external component uses, and its push
channel `/api/v1/stream` (docs/api.md).

Reads are public: no token, no personal data (driver ids masked, no names, no balances:
`services/public_views.py`); with Central's admin token they are whole. Writes need a role's token
(`services/roles.py`): the admin's go through Central's admin front door (`services/admin.py`),
EV_W's through the weather front door (`services/weather_desk.py`); both audit every outcome with
the caller's IP. Only HTTP is here: paths, verbs, bodies, and the status of each outcome.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from evcharging.adapters.web.audit_filter import AuditFilter, audit_rows
from evcharging.adapters.web.central_feed import DashboardHub
from evcharging.contracts.fields import ID_PATTERN, Location, Price
from evcharging.domain.admin_rules import UnknownCP
from evcharging.services.admin import (
    AdminDesk,
    Caller,
    Command,
    ErrorDetails,
    ResetDetails,
    Transport,
)
from evcharging.services.audit import UNKNOWN_IP
from evcharging.services.central import CentralService
from evcharging.services.central_views import AuditJson, BulkJson, CPJson, MessageJson, RequestJson
from evcharging.services.module_health import HealthJson, ModuleHealth
from evcharging.services.public_views import (
    FullDriverJson,
    PublicDriverJson,
    TransactionJson,
    driver_json,
    public_cp,
    public_message,
    public_request,
    transaction_json,
    where_drivers_are,
)
from evcharging.services.roles import Role
from evcharging.services.weather_desk import (
    AlertBody,
    AlertJson,
    WeatherDesk,
    WeatherJson,
    WeatherReport,
)

PREFIX = "/api/v1"

# The weather writes, by route name (a 422 on one of them is the weather desk's to audit).
WEATHER_ALERT = "weather_alert"
WEATHER_CLEARED = "weather_cleared"
WEATHER_REPORT = "weather_report"
WEATHER_REPORT_END = "weather_report_end"
WEATHER_WRITES = frozenset({WEATHER_ALERT, WEATHER_CLEARED, WEATHER_REPORT, WEATHER_REPORT_END})

_admin_bearer = HTTPBearer(
    scheme_name="AdminBearer", description="The admin token as a bearer token", auto_error=False
)
_weather_bearer = HTTPBearer(
    scheme_name="WeatherBearer",
    description="The weather office's token (Central's --weather-token), for EV_W's writes",
    auto_error=False,
)


class Problem(BaseModel):
    detail: str


def _answer(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


ADMIN_ONLY: dict[int | str, dict[str, Any]] = {
    401: _answer("No token, or an unknown one"),
    403: _answer("A token of another role (the weather office's)"),
}
WEATHER_ONLY: dict[int | str, dict[str, Any]] = {
    401: _answer("No token, an unknown one, or no weather token configured at Central"),
    403: _answer("A token of another role (the admin's)"),
}
READ: dict[int | str, dict[str, Any]] = {401: _answer("An unknown token (none: public view)")}
UNKNOWN_CP: dict[int | str, dict[str, Any]] = {404: _answer("Unknown CP")}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: _answer("Makes no sense in the CP's state: nothing changed (`detail` says why)")
}

CpId = Annotated[str, Path(pattern=f"^{ID_PATTERN}$", description="a CP id")]


class CPBody(BaseModel):
    """A CP's record: registered when the id is new, else replaced."""

    model_config = ConfigDict(extra="forbid")
    location: Location
    price_eur_per_kwh: Price


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


def caller_of(request: Request) -> Caller:
    """Who asks, as the front doors record it (anonymous until a token is accepted)."""
    ip = request.client.host if request.client else UNKNOWN_IP
    return Caller(Transport.HTTP, _peer(request), ip=ip)


def _route_name(request: Request) -> str | None:
    return getattr(request.scope.get("route"), "name", None)


def _given(request: Request, bearer: HTTPAuthorizationCredentials | None) -> str:
    return request.headers.get("x-admin-token") or (bearer.credentials if bearer else "")


def full_view(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> bool:
    """A read: whole with the admin token, public without one (or with EV_W's); an unknown
    token is refused (401, audited), not read as no token."""
    given = _given(request, bearer)
    if not given:
        return False
    desk: AdminDesk = request.app.state.admin_desk
    role = desk.roles.role_of(given)
    if role is Role.ADMIN:
        return True
    if role is None:
        desk.admit(caller_of(request), given, _route_name(request))  # raises: 401
    return False


def admin_caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> Caller:
    desk: AdminDesk = request.app.state.admin_desk
    caller = desk.admit(caller_of(request), _given(request, bearer), _route_name(request))
    request.state.admin_caller = caller  # a 422 found after this is the admin's
    return caller


def weather_caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_weather_bearer)],
) -> Caller:
    desk: WeatherDesk = request.app.state.weather_desk
    caller = desk.admit(caller_of(request), _given(request, bearer), _route_name(request) or "-")
    request.state.weather_caller = caller
    return caller


Full = Annotated[bool, Depends(full_view)]
Admin = Annotated[Caller, Depends(admin_caller)]
EvW = Annotated[Caller, Depends(weather_caller)]


def v1_router(
    service: CentralService, desk: AdminDesk, weather: WeatherDesk, health: ModuleHealth
) -> APIRouter:
    r = APIRouter(prefix=PREFIX, tags=["API_Central v1"])

    act, on_all = desk.act, desk.on_all

    async def on_cp(caller: Caller, name: Command, cp_id: str, **more: Any) -> CPJson:
        return await desk.on_cp(caller, name, {"cp_id": cp_id, **more})

    # --- reads ------------------------------------------------------------------------

    @r.get("/cps", responses=READ)
    async def cps(full: Full) -> list[CPJson]:
        """Every CP. Public: its supplying driver's id masked."""
        return [(v if full else public_cp(v)).json for v in service.cps()]

    @r.get("/cps/{cp_id}", responses={**READ, **UNKNOWN_CP})
    async def cp(cp_id: str, full: Full) -> CPJson:
        view = service.cp(cp_id)
        if view is None:
            raise HTTPException(status_code=404, detail=UnknownCP(cp_id).reason)
        return (view if full else public_cp(view)).json

    @r.get("/drivers", responses=READ)
    async def drivers(full: Full) -> list[FullDriverJson | PublicDriverJson]:
        """Every driver: idle, or authorised/supplying at `cp_id`. Public: id masked, no name
        or balance."""
        where = where_drivers_are(service.cps())
        return [driver_json(d, where, full=full) for d in service.drivers()]

    @r.get("/drivers/{driver_id}", responses={**READ, 404: _answer("Unknown driver")})
    async def driver(driver_id: str, full: Full) -> FullDriverJson | PublicDriverJson:
        view = service.driver(driver_id)
        if view is None:
            raise HTTPException(status_code=404, detail=f"unknown driver {driver_id}")
        return driver_json(view, where_drivers_are(service.cps()), full=full)

    @r.get("/transactions", responses=READ)
    async def transactions(full: Full) -> list[TransactionJson]:
        """The sessions under way (authorised or supplying), with their live figures."""
        kw = {v.session_id: v.kw for v in service.cps() if v.session_id}
        return [
            transaction_json(s, kw.get(s.session_id), full=full) for s in service.open_sessions()
        ]

    @r.get("/requests", responses=READ)
    async def requests(full: Full) -> list[RequestJson]:
        return [(v if full else public_request(v)).json for v in service.requests()]

    @r.get("/messages", responses=READ)
    async def messages(full: Full) -> list[MessageJson]:
        return [(v if full else public_message(v)).json for v in service.messages()]

    @r.get("/weather")
    async def weather_state() -> WeatherJson:
        """EV_W's state, the weather provider's, every city's last reading, the alerts."""
        return weather.json

    @r.get("/weather/alerts")
    async def weather_alerts() -> list[AlertJson]:
        """The CPs under a weather alert (what EV_W reconciles with)."""
        return weather.alerts()

    @r.get("/health")
    async def module_health() -> HealthJson:
        """Central, Kafka, EV_Registry, EV_W and the weather provider: up, down or unknown."""
        return health.json

    @r.get("/audit", responses=ADMIN_ONLY)
    async def audit_log(caller: Admin, query: AuditFilter) -> list[AuditJson]:
        """Central's audit log, newest first (admin only)."""
        return audit_rows(service, query)

    # --- the weather office's writes -----------------------------------------------------

    @r.put(
        "/weather/alerts/{cp_id}",
        name=WEATHER_ALERT,
        responses={**WEATHER_ONLY, **UNKNOWN_CP},
    )
    async def put_alert(cp_id: CpId, body: AlertBody, caller: EvW) -> CPJson:
        """The CP's city is below 0 °C: out of service ("weather alert") at once, or when its
        supply under way ends. Idempotent (a repeat updates the reading)."""
        return (await weather.alert(caller, cp_id, body)).json

    @r.delete(
        "/weather/alerts/{cp_id}",
        name=WEATHER_CLEARED,
        responses={**WEATHER_ONLY, **UNKNOWN_CP, 409: _answer("The CP has no weather alert")},
    )
    async def delete_alert(cp_id: CpId, caller: EvW) -> CPJson:
        """Above 0 °C again: the CP comes back unless something else stops it."""
        return (await weather.cleared(caller, cp_id)).json

    @r.put("/weather/report", name=WEATHER_REPORT, status_code=204, responses=WEATHER_ONLY)
    async def put_report(body: WeatherReport, caller: EvW) -> Response:
        """EV_W's report after each cycle (its liveness; the readings the front shows)."""
        weather.report(caller, body)
        return Response(status_code=204)

    @r.delete("/weather/report", name=WEATHER_REPORT_END, status_code=204, responses=WEATHER_ONLY)
    async def delete_report(caller: EvW) -> Response:
        """EV_W stops cleanly: shown down at once ("EV_W stopped")."""
        weather.stopped(caller)
        return Response(status_code=204)

    # --- the admin's writes ---------------------------------------------------------------

    @r.put(
        "/cps/{cp_id}",
        name=Command.EDIT_CP.value,
        responses={**ADMIN_ONLY, 201: {"description": "Registered (a new id)"}},
    )
    async def put_cp(cp_id: CpId, body: CPBody, caller: Admin, response: Response) -> CPJson:
        """Registers the CP (201) or sets its location and price (200; a supply already
        authorised keeps its price)."""
        fields = {"cp_id": cp_id, **body.model_dump()}
        name = Command.EDIT_CP
        if service.cp(cp_id) is None:
            name, response.status_code = Command.REGISTER_CP, 201
        reply = await act(caller, name, fields)
        assert reply.cp is not None
        return reply.cp.json

    @r.put(
        "/cps/{cp_id}/out-of-service",
        name=Command.STOP_CP.value,
        responses={**ADMIN_ONLY, **UNKNOWN_CP, **CONFLICT},
    )
    async def stop_cp(cp_id: CpId, caller: Admin) -> CPJson:
        """Stops the CP (a supply ends with its ticket). 409 if already stopped."""
        return await on_cp(caller, Command.STOP_CP, cp_id)

    @r.delete(
        "/cps/{cp_id}/out-of-service",
        name=Command.RESUME_CP.value,
        responses={**ADMIN_ONLY, **UNKNOWN_CP, **CONFLICT},
    )
    async def resume_cp(cp_id: CpId, caller: Admin) -> CPJson:
        """Lifts the stop. 409 if the CP is not stopped."""
        return await on_cp(caller, Command.RESUME_CP, cp_id)

    @r.put(
        "/cps/{cp_id}/simulated-error",
        name=Command.SIMULATE_ERROR.value,
        responses={**ADMIN_ONLY, **UNKNOWN_CP, **CONFLICT},
    )
    async def simulate_error(
        cp_id: CpId, caller: Admin, body: ErrorDetails | None = None
    ) -> CPJson:
        """The CP turns Averiado (seed flow 2). 409 unless connected without a simulated error."""
        details = body.model_dump() if body else {}
        return await on_cp(caller, Command.SIMULATE_ERROR, cp_id, **details)

    @r.delete(
        "/cps/{cp_id}/simulated-error",
        name=Command.FIX_ERROR.value,
        responses={**ADMIN_ONLY, **UNKNOWN_CP, **CONFLICT},
    )
    async def fix_error(cp_id: CpId, caller: Admin) -> CPJson:
        """Clears the simulated error. 409 if none."""
        return await on_cp(caller, Command.FIX_ERROR, cp_id)

    @r.delete(
        "/cps/{cp_id}/keys",
        name=Command.REVOKE_KEYS.value,
        responses={**ADMIN_ONLY, **UNKNOWN_CP, **CONFLICT},
    )
    async def revoke_keys(cp_id: CpId, caller: Admin) -> CPJson:
        """ "Restaurar claves": out of service until its Monitor authenticates again. 409 if
        already revoked."""
        return await on_cp(caller, Command.REVOKE_KEYS, cp_id)

    @r.post(
        "/cps/{cp_id}/status-report",
        name=Command.REPORT_STATUS.value,
        responses={**ADMIN_ONLY, **UNKNOWN_CP, **CONFLICT},
    )
    async def report_status(cp_id: CpId, caller: Admin) -> CPJson:
        """Asks the CP to report its state now (an OCPP charger: TriggerMessage
        StatusNotification). 409 if nothing would hear it (Desconectado, or keys revoked)."""
        return await on_cp(caller, Command.REPORT_STATUS, cp_id)

    @r.post(
        "/cps/{cp_id}/reset",
        name=Command.RESET_CP.value,
        responses={**ADMIN_ONLY, **UNKNOWN_CP, **CONFLICT},
    )
    async def reset_cp(cp_id: CpId, caller: Admin, body: ResetDetails | None = None) -> CPJson:
        """Asks the CP to restart (an OCPP charger: Reset), soft unless `{"hard": true}`. 409
        if nothing would hear it (Desconectado, or keys revoked)."""
        details = body.model_dump() if body else {}
        return await on_cp(caller, Command.RESET_CP, cp_id, **details)

    @r.put("/network/out-of-service", name=Command.STOP_ALL.value, responses=ADMIN_ONLY)
    async def stop_all(caller: Admin) -> BulkJson:
        """Stops every CP not yet stopped (`skipped`: the others, with the reason)."""
        return await on_all(caller, Command.STOP_ALL)

    @r.delete("/network/out-of-service", name=Command.RESUME_ALL.value, responses=ADMIN_ONLY)
    async def resume_all(caller: Admin) -> BulkJson:
        """Resumes every stopped CP."""
        return await on_all(caller, Command.RESUME_ALL)

    @r.post(
        "/network/key-rotation",
        name=Command.ROTATE_KEYS.value,
        responses={**ADMIN_ONLY, **CONFLICT},
    )
    async def rotate_keys(caller: Admin) -> dict[str, list[str]]:
        """Every connected CP asked to authenticate again for a new key (`asked`)."""
        reply = await act(caller, Command.ROTATE_KEYS, {})
        assert reply.asked is not None
        return {"asked": list(reply.asked)}

    return r


def mount_v1(
    app: FastAPI,
    service: CentralService,
    desk: AdminDesk,
    weather: WeatherDesk,
    health: ModuleHealth,
) -> DashboardHub:
    """The v1 routes and the public stream; returns the stream's hub."""
    app.state.weather_desk = weather
    app.state.health = health
    app.include_router(v1_router(service, desk, weather, health))
    stream = DashboardHub(service, desk, weather=weather, health=health, public=True)
    app.state.public_hub = stream
    app.add_api_websocket_route(f"{PREFIX}/stream", stream.serve)
    return stream
