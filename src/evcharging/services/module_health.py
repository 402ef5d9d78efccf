"""Which of the network's modules answer, as Central sees them: the one home of that picture.

Central itself (up while it answers), Kafka (Central's Kafka watch), EV_Registry (Central's probe
of its `GET /healthz`, when given `--registry-url`), the weather office EV_W (its reports to
API_Central) and the weather provider EV_W reads (what EV_W's reports say of it). Whoever learns
something calls `set`; a change of state (to up or down) is written to the audit log once
(`module.up` / `module.down`), never once per probe, and every change (a new detail too) is told
to the subscribers: the dashboards' `health` frames and `GET /api/v1/health`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from typing_extensions import TypedDict

from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.services.audit import UNKNOWN_IP, Audit

log = logging.getLogger(__name__)


class Module(StrEnum):
    CENTRAL = "central"
    KAFKA = "kafka"
    REGISTRY = "registry"
    EV_W = "ev_w"
    WEATHER_PROVIDER = "weather_provider"


class Health(StrEnum):
    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"


LABEL = {
    Module.CENTRAL: "EV_Central",
    Module.KAFKA: "Kafka",
    Module.REGISTRY: "EV_Registry",
    Module.EV_W: "EV_W (weather office)",
    Module.WEATHER_PROVIDER: "the weather provider",
}

NOT_WATCHED = "not watched"


class ModuleJson(TypedDict):
    name: str
    state: str
    since: str | None  # ISO 8601, UTC: when it entered this state (None: unknown)
    detail: str


class HealthJson(TypedDict):
    modules: list[ModuleJson]


@dataclass(frozen=True, slots=True)
class ModuleState:
    name: Module
    state: Health
    since: datetime | None
    detail: str

    @property
    def json(self) -> ModuleJson:
        return {
            "name": self.name.value,
            "state": self.state.value,
            "since": self.since.isoformat() if self.since else None,
            "detail": self.detail,
        }


Listener = Callable[[HealthJson], None]


class ModuleHealth:
    def __init__(
        self,
        audit: Audit,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        say: Callable[[str, str], None] | None = None,
    ):
        """`say(text, level)`: where a change is told (Central's messages, which its panel and
        every page show); none: the log."""
        self.audit = audit
        self._now = now
        self._say = say
        start = now()
        self._modules = {
            Module.CENTRAL: ModuleState(Module.CENTRAL, Health.UP, start, "answering"),
            Module.KAFKA: ModuleState(Module.KAFKA, Health.UNKNOWN, None, NOT_WATCHED),
            Module.REGISTRY: ModuleState(Module.REGISTRY, Health.UNKNOWN, None, NOT_WATCHED),
            Module.EV_W: ModuleState(Module.EV_W, Health.UNKNOWN, None, "no report yet"),
            Module.WEATHER_PROVIDER: ModuleState(
                Module.WEATHER_PROVIDER, Health.UNKNOWN, None, "no report from EV_W yet"
            ),
        }
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def get(self, name: Module) -> ModuleState:
        return self._modules[name]

    @property
    def json(self) -> HealthJson:
        return {"modules": [m.json for m in self._modules.values()]}

    def set(
        self,
        name: Module,
        state: Health,
        detail: str,
        *,
        actor: str = "central",
        ip: str = UNKNOWN_IP,
        audited: bool = True,
        said: bool = False,
    ) -> bool:
        """What is known of `name` now; False when nothing changed. `actor`/`ip`: who said so
        (EV_W's own reports carry its address). `audited` False: a state the module is only
        assumed to have (at start), not an event to record or log. `said`: the caller logged the
        change already (the Kafka watch does)."""
        old = self._modules[name]
        if old.state is state and old.detail == detail:
            return False
        moved = old.state is not state
        since = (self._now() if state is not Health.UNKNOWN else None) if moved else old.since
        self._modules[name] = ModuleState(name, state, since, detail)
        if moved and state is not Health.UNKNOWN:
            text = f"{LABEL[name]} {state.value}: {detail}"
            if audited and not said:
                down = state is Health.DOWN
                if self._say is not None:
                    self._say(text, "warning" if down else "info")
                else:
                    log.log(logging.WARNING if down else logging.INFO, "%s", text)
            if audited:
                self.audit.record(
                    AuditAction.MODULE_DOWN if state is Health.DOWN else AuditAction.MODULE_UP,
                    actor=actor,
                    ip=ip,
                    outcome=Outcome.ERROR if state is Health.DOWN else Outcome.OK,
                    detail=text,
                    module=name.value,
                )
        body = self.json
        for listener in list(self._listeners):
            listener(body)
        return True
