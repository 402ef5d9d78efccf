"""The life of one supply session and the single rule that ends it.

requested -> authorised -> supplying -> ended.  Every way a supply ends (unplug at the CP, driver
stop, CP fault, Monitor lost, Central stop) goes through `end_session`; ending an ended session
returns None, so a repeated or late end changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from evcharging.domain.money import cost, kwh


class SessionStatus(StrEnum):
    AUTHORISED = "authorised"
    SUPPLYING = "supplying"
    ENDED = "ended"


class EndReason(StrEnum):
    UNPLUGGED = "unplugged"
    STOPPED_BY_DRIVER = "stopped_by_driver"
    CP_FAULT = "cp_fault"
    MONITOR_LOST = "monitor_lost"
    STOPPED_BY_CENTRAL = "stopped_by_central"
    NEVER_PLUGGED = "never_plugged"
    KEYS_REVOKED = "keys_revoked"  # Central revoked the CP's keys mid-supply

    @property
    def interrupted(self) -> bool:
        """Cut short by a fault, a lost Monitor or Central, not ended by the driver or the plug:
        the driver is told "interrupted" and why, not "completed"."""
        return self in _INTERRUPTIONS

    @property
    def words(self) -> str:
        return self.value.replace("_", " ")


_INTERRUPTIONS = frozenset(
    {
        EndReason.CP_FAULT,
        EndReason.MONITOR_LOST,
        EndReason.STOPPED_BY_CENTRAL,
        EndReason.KEYS_REVOKED,
    }
)


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    driver_id: str
    cp_id: str
    price_eur_per_kwh: Decimal
    status: SessionStatus
    started_at: datetime
    energy_kwh: Decimal = Decimal("0.000")
    amount_eur: Decimal = Decimal("0.00")
    ended_at: datetime | None = None
    end_reason: EndReason | None = None

    @property
    def is_open(self) -> bool:
        return self.status is not SessionStatus.ENDED


def open_session(
    session_id: str, driver_id: str, cp_id: str, price: Decimal, now: datetime
) -> Session:
    return Session(session_id, driver_id, cp_id, price, SessionStatus.AUTHORISED, now)


def start_supply(session: Session) -> Session:
    """Plug-in: idempotent, and never reopens an ended session."""
    if session.status is SessionStatus.AUTHORISED:
        return replace(session, status=SessionStatus.SUPPLYING)
    return session


def record_reading(session: Session, energy_kwh: Decimal) -> Session:
    """Telemetry is cumulative: keep the largest reading so a stale or repeated one is harmless."""
    if not session.is_open:
        return session
    energy = max(session.energy_kwh, kwh(energy_kwh))
    return replace(
        session,
        status=SessionStatus.SUPPLYING,
        energy_kwh=energy,
        amount_eur=cost(energy, session.price_eur_per_kwh),
    )


def end_session(
    session: Session, reason: EndReason, now: datetime, final_kwh: Decimal | None = None
) -> Session | None:
    """The one way a session ends.  Returns the ended session, or None if it had already ended."""
    if not session.is_open:
        return None
    energy = session.energy_kwh if final_kwh is None else max(session.energy_kwh, kwh(final_kwh))
    if session.status is SessionStatus.AUTHORISED and energy == 0 and reason is EndReason.UNPLUGGED:
        reason = EndReason.NEVER_PLUGGED
    return replace(
        session,
        status=SessionStatus.ENDED,
        energy_kwh=energy,
        amount_eur=cost(energy, session.price_eur_per_kwh),
        ended_at=now,
        end_reason=reason,
    )
