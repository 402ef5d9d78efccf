"""Central's live picture of one CP: what the database holds plus what the Monitor and Engine say."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from evcharging.domain.admin_rules import allowed_actions
from evcharging.domain.cp_state import CPFacts, CPState, derive_state
from evcharging.domain.records import CPRecord
from evcharging.domain.session import Session, SessionStatus


@dataclass
class LiveCP:
    record: CPRecord
    facts: CPFacts
    session: Session | None = None
    kw: Decimal = Decimal("0")
    monitor: object | None = None  # token of the Monitor connection that authenticated it
    last_heartbeat: float = 0.0
    fault_reason: str | None = None
    affected_driver: str | None = None  # who to tell when a fault clears
    published: tuple[str, bool] | None = field(default=None, repr=False)

    @property
    def cp_id(self) -> str:
        return self.record.cp_id

    @property
    def state(self) -> CPState:
        return derive_state(self.facts)

    @property
    def available(self) -> bool:
        return self.state is CPState.ACTIVADO and not self.facts.reserved

    def attach(self, session: Session | None) -> None:
        """Keep the facts in step with the session (one place, so they never disagree)."""
        self.session = session
        supplying = session is not None and session.status is SessionStatus.SUPPLYING
        self.facts = self.facts.with_(reserved=session is not None, supplying=supplying)
        if not supplying:
            self.kw = Decimal("0")

    def view(self) -> dict[str, Any]:
        """The CP as the API, the dashboards and the panel show it."""
        s = self.session
        state = self.state
        return {
            "id": self.cp_id,
            "location": self.record.location,
            "price_eur_per_kwh": str(self.record.price_eur_per_kwh),
            "state": state.value,
            "caption": state.caption,
            "colour": state.colour,
            "available": self.available,
            "admin_stopped": self.facts.admin_stopped,
            "error_simulated": self.facts.error_simulated,
            "actions": list(allowed_actions(self.facts)),  # what the admin page enables
            "fault_reason": self.fault_reason if state is CPState.AVERIADO else None,
            "driver_id": s.driver_id if s else None,
            "session_id": s.session_id if s else None,
            "session_status": s.status.value if s else None,
            "kw": str(self.kw) if s else None,
            "energy_kwh": str(s.energy_kwh) if s else None,
            "amount_eur": str(s.amount_eur) if s else None,
        }
