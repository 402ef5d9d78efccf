"""Whether a driver may start a supply at a CP: answers, not exceptions."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from evcharging.domain.cp_state import CPFacts, CPState, derive_state, stop_reasons


@dataclass(frozen=True, slots=True)
class Authorised:
    pass


@dataclass(frozen=True, slots=True)
class Denied:
    reason: str


Decision = Authorised | Denied


def authorise(cp: CPFacts | None, driver_balance: Decimal | None, driver_busy: bool) -> Decision:
    """CP known, connected, Activado and idle; driver known, positive balance, not already charging."""
    if cp is None:
        return Denied("unknown CP")
    if driver_balance is None:
        return Denied("unknown driver")
    state = derive_state(cp)
    if state is CPState.ACTIVADO and cp.reserved:
        return Denied("CP busy (reserved for another driver)")
    if state is CPState.PARADO:  # the driver is told why: "weather alert", "stopped by Central"
        return Denied(f"CP out of service: {'; '.join(stop_reasons(cp))} (Parado, Out of Order)")
    if state is not CPState.ACTIVADO:
        return Denied(_STATE_REASONS[state])
    if driver_balance <= 0:
        return Denied("insufficient balance")
    if driver_busy:
        return Denied("driver already has a supply in progress")
    return Authorised()


_STATE_REASONS = {
    CPState.DESCONECTADO: "CP disconnected (Desconectado)",
    CPState.SUMINISTRANDO: "CP busy (Suministrando)",
    CPState.AVERIADO: "CP faulted (Averiado)",
}
