"""Which admin actions make sense for a CP in its present facts, and why not.

One rule for every way an operator acts on a CP: the HTTP API and the dashboard's WebSocket
answer a senseless action with its reason (and change nothing), the bulk actions skip the CPs it
refuses, and the admin page enables a tile's buttons by it. Before it, simulating an error on a
Desconectado CP logged "-> Averiado" and changed nothing visible.

Two actions (`ASKS`) change none of Central's facts: they ask the CP itself to do something (an
OCPP charger behind EV_OCPP: TriggerMessage StatusNotification, Reset). They make sense only
when something would hear them: a Monitor link, and keys Central can seal the command with.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache

from evcharging.domain.cp_state import CPFacts, derive_state


class AdminAction(StrEnum):
    """The per-CP actions; the values are the dashboard's action names."""

    STOP = "stop_cp"
    RESUME = "resume_cp"
    SIMULATE_ERROR = "simulate_error"
    FIX_ERROR = "fix_error"
    REVOKE_KEYS = "revoke_keys"  # "restaurar claves": out of service until it re-authenticates
    REPORT_STATUS = "report_status"  # asks the CP to report its state now (CP_REPORT_STATUS)
    RESET = "reset_cp"  # asks the CP to restart, soft or hard (CP_RESET)


ASKS = frozenset({AdminAction.REPORT_STATUS, AdminAction.RESET})
"""The actions that ask the CP for something and change nothing Central knows of it."""


class Conflict(Exception):
    """An admin action that makes no sense in the CP's state (or a CP registered twice):
    nothing was changed. HTTP answers 409, the dashboard an `error` frame, both with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownCP(LookupError):
    """An admin action names a CP Central does not know."""

    def __init__(self, cp_id: str) -> None:
        super().__init__(f"unknown CP {cp_id}")
        self.cp_id = cp_id
        self.reason = f"unknown CP {cp_id}"


def refusal(action: AdminAction, cp_id: str, facts: CPFacts) -> str | None:
    """None when `action` makes sense for a CP with these facts, else why it does not."""
    why = _why_not(action, facts)
    return None if why is None else f"CP {cp_id} {why}"


def _why_not(action: AdminAction, facts: CPFacts) -> str | None:
    state = derive_state(facts)
    if action is AdminAction.STOP:
        return "is already stopped" if facts.admin_stopped else None
    if action is AdminAction.RESUME:
        return None if facts.admin_stopped else f"is not stopped ({state}): nothing to resume"
    if action is AdminAction.SIMULATE_ERROR:
        if not facts.monitor_connected:
            return f"is {state}: an error can only be simulated on a connected CP"
        return "already has a simulated error: fix it first" if facts.error_simulated else None
    if action in ASKS:
        if not facts.monitor_connected:
            return f"is {state}: no Monitor link, so nobody would hear the request"
        if facts.keys_revoked:
            return (
                "has its keys revoked: nothing Central sends can reach it until its Monitor "
                "authenticates again"
            )
        return None
    if action is AdminAction.REVOKE_KEYS:
        if facts.keys_revoked:
            return "already has its keys revoked: its Monitor must authenticate again"
        return None
    if facts.error_simulated:
        return None
    if facts.monitor_connected and not facts.engine_ok:
        return "has no simulated error to fix: its Engine's fault clears when the Engine recovers"
    return f"has no simulated error to fix ({state})"


@lru_cache(maxsize=256)  # CPFacts is eight booleans: 256 combinations; a view is built per reading
def allowed_actions(facts: CPFacts) -> tuple[str, ...]:
    """The actions that make sense now, in AdminAction order (what the page enables)."""
    return tuple(a.value for a in AdminAction if _why_not(a, facts) is None)
