"""Why a supply ended, as Engine and Central say it on the wire, and what each means for billing.

The session's own reason (`domain.session.EndReason`, what a ticket and the database record) is a
subset of these; the Engine has two words more (`engine_restarted`, `energy_limit_reached`) and
Central one (`session_closed`: it stops an Engine supplying a session it already closed). Every
wire reason maps to exactly one session reason here, so nobody guesses: a reason outside this list
fails validation when the message is read, and the consumer logs and skips it.
"""

from __future__ import annotations

from enum import StrEnum

from evcharging.domain.session import EndReason


class SupplyEndReason(StrEnum):
    UNPLUGGED = "unplugged"
    STOPPED_BY_DRIVER = "stopped_by_driver"
    CP_FAULT = "cp_fault"
    MONITOR_LOST = "monitor_lost"
    STOPPED_BY_CENTRAL = "stopped_by_central"
    NEVER_PLUGGED = "never_plugged"
    KEYS_REVOKED = "keys_revoked"
    ENGINE_RESTARTED = "engine_restarted"  # a supply left over from before an Engine crash
    ENERGY_LIMIT_REACHED = "energy_limit_reached"  # the Engine's --supply-seconds ran out
    SESSION_CLOSED = "session_closed"  # Central had already closed the session

    @classmethod
    def of(cls, reason: EndReason) -> SupplyEndReason:
        """The session's reason as Central tells an Engine to stop for it."""
        return cls(reason.value)

    @property
    def session_reason(self) -> EndReason:
        """What the session records (and the ticket says) when a supply ends for this reason."""
        return _SESSION_REASON[self]


_SESSION_REASON: dict[SupplyEndReason, EndReason] = {
    **{SupplyEndReason(r.value): r for r in EndReason},
    SupplyEndReason.ENGINE_RESTARTED: EndReason.CP_FAULT,
    SupplyEndReason.ENERGY_LIMIT_REACHED: EndReason.UNPLUGGED,
    SupplyEndReason.SESSION_CLOSED: EndReason.STOPPED_BY_CENTRAL,
}
