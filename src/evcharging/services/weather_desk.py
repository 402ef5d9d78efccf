"""Central's weather front door: what the weather office EV_W may write, and what it last said.

Like the admin front door (`services/admin.py`) for the operators, the one place for EV_W's
writes, whatever the transport: the token check (`services/roles.py`: no weather token at
Central, none given or an unknown one -> unauthorised; the admin's token -> forbidden), the
alert and its cancellation (`CentralService.weather_alert` / `weather_cleared`, which audit them
with the caller's IP), EV_W's report (its liveness, the readings of every city, the provider's
state) and its clean stop. Every refusal is audited here (`weather.refused`, with the IP).

EV_W is up while it reports; it is down at once when it says it stops (`stopped`), or when no
report came for max(3 x its interval, 10 s) (`check`, every 0.5 s). Its state and the weather
provider's are kept in `ModuleHealth`, which audits their changes; a report that changes nothing
there is not audited (it comes every few seconds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import TypedDict

from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.contracts.fields import Id, Location
from evcharging.domain.admin_rules import Conflict, UnknownCP
from evcharging.services.admin import Caller, Refusal
from evcharging.services.audit import Audit
from evcharging.services.central import CentralService
from evcharging.services.central_views import CPView
from evcharging.services.module_health import Health, Module, ModuleHealth
from evcharging.services.roles import WHO, Role, Roles

log = logging.getLogger(__name__)

EV_W = "ev_w"  # the actor of EV_W's writes in the audit log
MIN_SILENCE = 10.0  # seconds: EV_W is down after max(3 x its interval, this) without a report
CHECK_EVERY = 0.5  # seconds between two staleness checks
NO_WEATHER_TOKEN = "no weather token configured at Central"
STOPPED = "EV_W stopped"

Temperature = Annotated[float, Field(ge=-273.15, le=200, allow_inf_nan=False)]


# --- what EV_W sends ----------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlertBody(_Body):
    """A CP's city is below 0 °C: the reading behind the alert."""

    city: Location
    temperature_c: Temperature


class Reading(_Body):
    """A city's reading this cycle: a temperature, or why there is none (never both)."""

    city: Location
    temperature_c: Temperature | None = None
    error: Annotated[str, Field(min_length=1, max_length=300)] | None = None

    @model_validator(mode="after")
    def _one_of_them(self) -> Reading:
        if (self.temperature_c is None) == (self.error is None):
            raise ValueError("give temperature_c or error, not both")
        return self


class WeatherReport(_Body):
    """EV_W's report after each cycle: its liveness, and what the public front shows."""

    locations: Annotated[list[Reading], Field(max_length=10_000)]
    cps: Annotated[dict[Id, Location], Field(max_length=100_000)]  # CP id -> its city
    interval_s: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]


# --- what is shown ------------------------------------------------------------------------


class OfficeJson(TypedDict):
    state: str
    since: str | None
    last_report_at: str | None
    detail: str


class ProviderJson(TypedDict):
    state: str
    detail: str


class LocationJson(TypedDict):
    city: str
    temperature_c: float | None
    error: str | None
    at: str  # when Central received the reading (ISO 8601, UTC)
    cps: list[str]


class AlertJson(TypedDict):
    cp_id: str
    city: str
    temperature_c: float | None


class WeatherJson(TypedDict):
    office: OfficeJson
    provider: ProviderJson
    locations: list[LocationJson]
    alerts: list[AlertJson]


def alert_of(view: CPView) -> AlertJson:
    note = view.json["weather"]
    return {
        "cp_id": view.id,
        "city": note["city"] if note else "",
        "temperature_c": note["temperature_c"] if note else None,
    }


def provider_health(readings: list[Reading]) -> tuple[Health, str]:
    """Every city an error: down; some: up, naming them; none watched: unknown."""
    if not readings:
        return Health.UNKNOWN, "no city to read"
    failed = [f"{r.city} ({r.error})" for r in readings if r.error is not None]
    read = len(readings) - len(failed)
    if not failed:
        return Health.UP, f"{read} {'city' if read == 1 else 'cities'} read"
    if not read:
        return Health.DOWN, f"no city read: {', '.join(failed)}"
    return Health.UP, f"{read} of {len(readings)} cities read; no reading for {', '.join(failed)}"


class WeatherRefusal(Exception):
    """A weather write not carried out (nothing changed), with its kind and reason."""

    def __init__(self, kind: Refusal, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Last:
    report: WeatherReport
    at: datetime  # wall clock, for people
    mono: float  # monotonic, for the staleness check


# --- the desk -----------------------------------------------------------------------------


class WeatherDesk:
    def __init__(
        self,
        service: CentralService,
        roles: Roles,
        health: ModuleHealth,
        audit: Audit | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.roles = roles
        self.health = health
        self.audit = audit if audit is not None else service.audit
        self._now = now
        self._monotonic = monotonic
        self._last: _Last | None = None
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Told after every change of what `json` shows (a push of the `weather` frame)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    # --- the token ------------------------------------------------------------------------

    def admit(self, caller: Caller, token: object, action: str) -> Caller:
        """The caller as EV_W if `token` is the weather token; else WeatherRefusal (audited)."""
        role = self.roles.role_of(token)
        if role is Role.WEATHER:
            return replace(caller, who=EV_W)
        if not self.roles.has(Role.WEATHER):
            raise self._refuse(caller, action, Refusal.UNAUTHORISED, NO_WEATHER_TOKEN)
        if role is not None:
            reason = f"{WHO[role]} cannot make weather writes (the weather office's token can)"
            raise self._refuse(caller, action, Refusal.FORBIDDEN, reason)
        given = isinstance(token, str) and bool(token)
        reason = "wrong weather token" if given else "weather token required"
        raise self._refuse(caller, action, Refusal.UNAUTHORISED, reason)

    # --- the writes -----------------------------------------------------------------------

    async def alert(self, caller: Caller, cp_id: str, body: AlertBody) -> CPView:
        """Idempotent: a repeated alert only updates its reading."""
        try:
            view, _new = await self.service.weather_alert(
                cp_id, body.city, body.temperature_c, caller.as_who
            )
        except UnknownCP as exc:
            raise self._refuse(
                caller, "weather_alert", Refusal.UNKNOWN_CP, exc.reason, cp_id
            ) from None
        self._changed()
        return view

    async def cleared(self, caller: Caller, cp_id: str) -> CPView:
        """Conflict (409) when the CP has no alert: EV_W reads it as "already cancelled"."""
        try:
            view = await self.service.weather_cleared(cp_id, caller.as_who)
        except UnknownCP as exc:
            raise self._refuse(
                caller, "weather_cleared", Refusal.UNKNOWN_CP, exc.reason, cp_id
            ) from None
        except Conflict as exc:
            raise self._refuse(
                caller, "weather_cleared", Refusal.CONFLICT, exc.reason, cp_id
            ) from None
        self._changed()
        return view

    def report(self, caller: Caller, report: WeatherReport) -> None:
        """EV_W's liveness and readings; audited only when EV_W's or the provider's state
        changes (as `module.up` / `module.down`, with EV_W's IP)."""
        self._last = _Last(report, self._now(), self._monotonic())
        self.health.set(
            Module.EV_W,
            Health.UP,
            f"reporting every {report.interval_s:g} s",
            actor=caller.who,
            ip=caller.ip,
        )
        state, detail = provider_health(report.locations)
        self.health.set(Module.WEATHER_PROVIDER, state, detail, actor=caller.who, ip=caller.ip)
        self._changed()

    def stopped(self, caller: Caller) -> None:
        """EV_W stops cleanly: down at once (idempotent)."""
        self._down(STOPPED, actor=caller.who, ip=caller.ip)

    def check(self) -> None:
        """EV_W down when its reports stopped coming (max(3 x interval, 10 s) of silence)."""
        last = self._last
        if last is None or self.health.get(Module.EV_W).state is not Health.UP:
            return
        silence = self._monotonic() - last.mono
        if silence >= max(3 * last.report.interval_s, MIN_SILENCE):
            self._down(
                f"no report for {silence:.0f} s (expected every {last.report.interval_s:g} s)"
            )

    async def keep_checking(self, every: float = CHECK_EVERY) -> None:
        """Central's task: `check` twice a second."""
        while True:
            await asyncio.sleep(every)
            self.check()

    def _down(self, detail: str, actor: str = "central", ip: str = "-") -> None:
        moved = self.health.set(Module.EV_W, Health.DOWN, detail, actor=actor, ip=ip)
        moved |= self.health.set(Module.WEATHER_PROVIDER, Health.UNKNOWN, "EV_W is down")
        if moved:
            self._changed()

    def invalid(self, caller: Caller, action: str | None, reason: str) -> None:
        """A body, path or query the transport refused (HTTP 422): audited like any refusal."""
        self._record(caller, action, reason)

    # --- the reads ------------------------------------------------------------------------

    def alerts(self) -> list[AlertJson]:
        return [alert_of(view) for view in self.service.weather_alerts()]

    @property
    def json(self) -> WeatherJson:
        office = self.health.get(Module.EV_W)
        provider = self.health.get(Module.WEATHER_PROVIDER)
        last = self._last
        return {
            "office": {
                "state": office.state.value,
                "since": office.json["since"],
                "last_report_at": last.at.isoformat() if last else None,
                "detail": office.detail,
            },
            "provider": {"state": provider.state.value, "detail": provider.detail},
            "locations": self._locations(last) if last else [],
            "alerts": self.alerts(),
        }

    @staticmethod
    def _locations(last: _Last) -> list[LocationJson]:
        cps: dict[str, list[str]] = {}
        for cp_id, city in last.report.cps.items():
            cps.setdefault(city, []).append(cp_id)
        at = last.at.isoformat()
        return [
            {
                "city": r.city,
                "temperature_c": r.temperature_c,
                "error": r.error,
                "at": at,
                "cps": sorted(cps.get(r.city, [])),
            }
            for r in last.report.locations
        ]

    # --- refusals -------------------------------------------------------------------------

    def _refuse(
        self,
        caller: Caller,
        action: str,
        kind: Refusal,
        reason: str,
        cp_id: str | None = None,
    ) -> WeatherRefusal:
        self._record(caller, action, reason, cp_id)
        return WeatherRefusal(kind, reason)

    def _record(
        self, caller: Caller, action: str | None, reason: str, cp_id: str | None = None
    ) -> None:
        log.warning("%s: weather write %s refused: %s", caller, action or "-", reason)
        self.audit.record(
            AuditAction.WEATHER_REFUSED,
            actor=caller.who,
            ip=caller.ip,
            outcome=Outcome.DENIED,
            cp_id=cp_id,
            detail=reason,
            command=action or "-",
            transport=caller.transport.value,
        )
