"""The words a driver reads on the page: one line per notification, and the status in words.

Each follows the UI text policy: English, except the Spanish CP state names and "ERROR EN CP";
money in €.
"""

from __future__ import annotations

from collections.abc import Iterable

from evcharging.domain.money import euros, kwh
from evcharging.services.driver import (
    NO_ANSWER_TEXT,
    NO_NEWS_TEXT,
    DriverPhase,
    DriverState,
    Kind,
    Update,
)

_ENDINGS = {
    Kind.TICKET: "Charging completed",
    Kind.DENIED: "Denied",
    Kind.NO_ANSWER: "No answer from CENTRAL",
    Kind.SERVICE_FAILED: "Service failed",
}


def notification_text(u: Update) -> str:
    """One line a driver reads (the terminal keeps `describe`'s marker lines)."""
    cp = u.cp_id or "?"
    if u.kind is Kind.TICKET and u.ticket is not None:
        t = u.ticket
        outcome = "Charging interrupted" if t.interrupted else "Charging completed"
        text = (
            f"{outcome} at {t.cp_id}: {kwh(t.energy_kwh)} kWh, {euros(t.amount_eur)} €"
            f" ({t.end_reason.words}); balance {euros(t.balance_eur)} €"
        )
        return f"{text} (an earlier session)" if t.earlier else text
    price = f" at {u.message} €/kWh" if u.message else ""
    texts: dict[Kind, str] = {
        Kind.REQUEST_SENT: f"Request sent for {cp}",
        Kind.AUTHORISED: f"Authorised at {cp}{price}: plug in your vehicle",
        Kind.DENIED: f"Denied at {cp}: {u.message}",
        Kind.NO_ANSWER: f"{u.message} (request at {cp})",
        Kind.SUPPLYING: f"Supplying at {cp}",
        Kind.CP_ERROR: f"ERROR EN CP {cp}: {u.message}",
        Kind.CP_FIXED: f"CP {cp} fixed: {u.message}",
        Kind.CP_STATE: f"CP {cp} is now {u.message}",
        Kind.SERVICE_FAILED: f"Service at {cp} failed: {u.message}",
        Kind.STOP_SENT: f"Stop sent for {cp}",
        Kind.REFUSED: f"Refused: {u.message}",
        Kind.NEXT: f"Next service at {cp} {u.message}",
        Kind.SERVICES_DONE: f"Services file done: {u.count} service(s)",
        Kind.RESUMED: f"Supply in progress at {cp} ({u.message}): found at CENTRAL, "
        "you can stop it here",
        Kind.UNKNOWN_DRIVER: f"Unknown driver {u.driver_id}: {u.message}",
        Kind.CENTRAL_SILENT: f"{NO_NEWS_TEXT} {u.message}",
        Kind.CENTRAL_BACK: "News from CENTRAL again",
    }
    return texts.get(u.kind, u.message or u.kind.value)


def status_of(st: DriverState, history: Iterable[Update]) -> tuple[str, str]:
    """The phase as words (label, detail): the page shows them, not only a colour."""
    cp = st.cp_id or "?"
    if st.cp_error is not None:
        return "ERROR EN CP", f"{cp}: {st.cp_error}"
    if st.known is False:
        return "Unknown driver", f"{st.driver_id} is not registered at CENTRAL"
    if st.central_silent:
        return NO_NEWS_TEXT, f"Charging at {cp}: the supply goes on at the CP"
    busy = {
        DriverPhase.REQUESTED: ("Waiting for CENTRAL", f"Request sent for {cp}"),
        DriverPhase.AUTHORISED: ("Authorised", f"Plug in your vehicle at {cp}"),
        DriverPhase.SUPPLYING: ("Supplying", f"Charging at {cp}"),
    }
    if st.phase in busy:
        return busy[st.phase]
    for u in history:  # newest first: how did the last service end?
        if u.kind in _ENDINGS:
            if u.kind is Kind.TICKET and u.ticket is not None:
                label = "Charging interrupted" if u.ticket.interrupted else _ENDINGS[u.kind]
                return label, f"{u.ticket.cp_id}: {u.ticket.end_reason.words}"
            detail = NO_ANSWER_TEXT if u.kind is Kind.NO_ANSWER else f"{cp}: {u.message}"
            return _ENDINGS[u.kind], detail
    return "Idle", "Choose an available CP to charge"
