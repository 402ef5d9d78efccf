"""What a driver page is sent: the JSON views of figures, tickets, board CPs and notifications.

Everything the page shows is computed here, once, in Python (the page only renders): a board CP
carries its tag and tone, a notification its text and level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from evcharging.adapters.web.driver_texts import notification_text
from evcharging.contracts.events import CpStatus
from evcharging.domain.cp_state import CPState
from evcharging.domain.money import euros, kwh
from evcharging.services.driver import Figures, Kind, Ticket, Update

Frame = dict[str, Any]

_KW = Decimal("0.01")
_LEVELS = {
    Kind.CP_ERROR: "error",
    Kind.UNKNOWN_DRIVER: "warning",
    Kind.CENTRAL_SILENT: "warning",
    Kind.CENTRAL_BACK: "success",
    Kind.DENIED: "warning",
    Kind.NO_ANSWER: "warning",
    Kind.SERVICE_FAILED: "warning",
    Kind.REFUSED: "warning",
    Kind.TICKET: "success",
    Kind.CP_FIXED: "success",
}
QUIET = {Kind.PROGRESS, Kind.BOARD}  # live figures and the board: not notifications


def encode(frame: Frame) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def figures_view(f: Figures) -> Frame:
    return {
        "kw": str(f.kw.quantize(_KW, rounding=ROUND_HALF_UP)),
        "energy_kwh": str(kwh(f.energy_kwh)),
        "amount_eur": str(euros(f.amount_eur)),
    }


def ticket_view(t: Ticket) -> Frame:
    return {
        "session_id": str(t.session_id),
        "cp_id": t.cp_id,
        "energy_kwh": str(kwh(t.energy_kwh)),
        "price_eur_per_kwh": str(t.price_eur_per_kwh),
        "amount_eur": str(euros(t.amount_eur)),
        "end_reason": t.end_reason,
        "interrupted": t.interrupted,
        "outcome": t.outcome,
        "balance_eur": str(euros(t.balance_eur)),
        "ended_at": t.ended_at.isoformat(),
        "earlier": t.earlier,
    }


def cp_view(cp: CpStatus) -> Frame:
    return {
        "cp_id": cp.cp_id,
        "location": cp.location,
        "price_eur_per_kwh": str(cp.price_eur_per_kwh),
        "state": cp.state,
        "available": cp.available,
        "stop_reason": cp.stop_reason,
        **board_tag(CPState(cp.state), cp.available, cp.stop_reason),
    }


_TONES = {"green": "ok", "orange": "warn", "red": "error", "grey": "neutral"}  # CPState.colour
_BOARD_WORDS = {
    CPState.ACTIVADO: "available",
    CPState.SUMINISTRANDO: "supplying",
    CPState.PARADO: CPState.PARADO.caption,
    CPState.AVERIADO: "faulted",
    CPState.DESCONECTADO: "disconnected",
}


def board_tag(state: CPState, available: bool, stop_reason: str | None = None) -> Frame:
    """The CP's tag on the board: its state and what it means to a driver, and a tone.

    An Activado CP that is not available is held for an authorised driver: "reserved". A Parado
    CP says why it is out of service: "Parado (weather alert) · Out of Order"."""
    if state is CPState.ACTIVADO and not available:
        return {"tag": f"{state} · reserved", "tone": "info"}
    shown = f"{state} ({stop_reason})" if stop_reason else f"{state}"
    return {"tag": f"{shown} · {_BOARD_WORDS[state]}", "tone": _TONES[state.colour]}


@dataclass(frozen=True)
class Entry:
    """An update as the hub saw it: numbered (pages drop repeats) and timed."""

    seq: int
    at: datetime
    update: Update

    @property
    def level(self) -> str:
        ticket = self.update.ticket
        if self.update.kind is Kind.TICKET and ticket is not None and ticket.interrupted:
            return "warning"
        return _LEVELS.get(self.update.kind, self.update.level)

    def notification(self) -> Frame:
        u = self.update
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "kind": u.kind.value,
            "level": self.level,
            "cp_id": u.cp_id,
            "text": notification_text(u),
        }
