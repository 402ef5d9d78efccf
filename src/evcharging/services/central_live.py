"""Central's live picture of one CP and of one ongoing request: what the database holds plus what
the Monitor, the Engine and the drivers say. Internal to the service: the outside world sees them
only as the views of `central_views.py`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from evcharging.contracts.socket_ops import ErrReason
from evcharging.domain.cp_state import CPFacts, CPState, derive_state, is_available
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
    registered: bool = False  # has credentials (a row in cp_credentials): the Registry says
    ip: str = "-"  # its Monitor's address, as Central last saw it (audit rows)
    audited: CPState = CPState.DESCONECTADO  # the state the audit log last recorded
    rekey: bool = False  # asked (by a rotation) to authenticate again at its next heartbeat
    # what CP_STATUS last said: (state, available, stop_reason)
    published: tuple[str, bool, str | None] | None = field(default=None, repr=False)

    @property
    def cp_id(self) -> str:
        return self.record.cp_id

    @property
    def key_notice(self) -> ErrReason | None:
        """What its heartbeats are answered instead of OK: keys revoked (until it authenticates
        again), or a rotation's request for a new key."""
        if self.facts.keys_revoked:
            return ErrReason.KEYS_REVOKED
        return ErrReason.REKEY if self.rekey else None

    @property
    def state(self) -> CPState:
        return derive_state(self.facts)

    @property
    def available(self) -> bool:
        return is_available(self.facts)

    def attach(self, session: Session | None) -> None:
        """Keep the facts in step with the session (one place, so they never disagree)."""
        self.session = session
        supplying = session is not None and session.status is SessionStatus.SUPPLYING
        self.facts = self.facts.with_(reserved=session is not None, supplying=supplying)
        if not supplying:
            self.kw = Decimal("0")


@dataclass
class RequestRow:
    """A line of the table of ongoing driver requests."""

    at: datetime
    driver_id: str
    cp_id: str
    status: str
    session_id: str | None = None
