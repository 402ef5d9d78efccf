"""The state of a charging point, derived from what Central knows about it.

The state is never stored as such: it follows from the Monitor link, the Engine's health (as the
Monitor reports it), an administrative stop, a simulated error and a running session.  Deriving it
keeps the five states consistent whatever order the facts arrive in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class CPState(StrEnum):
    DESCONECTADO = "Desconectado"
    ACTIVADO = "Activado"
    SUMINISTRANDO = "Suministrando"
    PARADO = "Parado"
    AVERIADO = "Averiado"

    @property
    def colour(self) -> str:
        return _COLOURS[self]

    @property
    def caption(self) -> str:
        return "Out of Order" if self is CPState.PARADO else self.value


_COLOURS = {
    CPState.DESCONECTADO: "grey",
    CPState.ACTIVADO: "green",
    CPState.SUMINISTRANDO: "green",
    CPState.PARADO: "orange",
    CPState.AVERIADO: "red",
}


@dataclass(frozen=True, slots=True)
class CPFacts:
    """What Central knows about one CP; each field is set by exactly one kind of input."""

    monitor_connected: bool = False
    engine_ok: bool = True
    admin_stopped: bool = False
    error_simulated: bool = False
    reserved: bool = False  # an authorised session waits for the plug
    supplying: bool = False
    keys_revoked: bool = False  # Central deleted its keys: out of service until it re-authenticates
    weather_alert: bool = False  # EV_W: its city is freezing (out of service once no session runs)

    def with_(self, **changes: bool) -> CPFacts:
        return replace(self, **changes)


class StopReason(StrEnum):
    """Why a CP is out of service (Parado); the values are what every screen shows."""

    STOPPED_BY_CENTRAL = "stopped by Central"
    KEYS_REVOKED = "keys revoked"
    WEATHER_ALERT = "weather alert"


def stop_reasons(facts: CPFacts) -> tuple[StopReason, ...]:
    """Every reason the CP is (or, once its session ends, will be) out of service. A weather
    alert lets a session already authorised or running finish normally (the statement): it
    stops the CP only when no session holds it."""
    reasons = []
    if facts.admin_stopped:
        reasons.append(StopReason.STOPPED_BY_CENTRAL)
    if facts.keys_revoked:
        reasons.append(StopReason.KEYS_REVOKED)
    if facts.weather_alert and not facts.reserved:
        reasons.append(StopReason.WEATHER_ALERT)
    return tuple(reasons)


def derive_state(facts: CPFacts) -> CPState:
    """Monitor down wins over everything; a fault over a stop; a stop over a supply (but a
    weather alert waits for the session to end)."""
    if not facts.monitor_connected:
        return CPState.DESCONECTADO
    if not facts.engine_ok or facts.error_simulated:
        return CPState.AVERIADO
    if stop_reasons(facts):
        return CPState.PARADO
    if facts.supplying:
        return CPState.SUMINISTRANDO
    return CPState.ACTIVADO


def is_available(facts: CPFacts) -> bool:
    """Offered to drivers: Activado and not reserved for an authorised driver still to plug in."""
    return not facts.reserved and derive_state(facts) is CPState.ACTIVADO
