"""What anyone may read of Central without a token: its views with no personal data.

The statement wants a public front, and no personal data in public answers: a driver's id is
masked everywhere it appears ("DRV001" -> "D****1": its first and last character, `*` for the
rest; an id of 1 or 2 characters -> "**"), in a CP's live supply, in a request row (its `driver_id`
and its `key`), in a transaction, in a message's text; a driver's name and balance never appear
(a message's "balance N €" is cut). The admin, with the token, reads the views unchanged.

Cheap where it matters: a CP view without a supply (most of them) is returned as it is; one with
a supply costs one dict copy (docs/api.md gives the figure at 1,000 CPs).
"""

from __future__ import annotations

import re
from typing import Literal

from typing_extensions import TypedDict

from evcharging.contracts.fields import ID_PATTERN
from evcharging.services.central_views import (
    CPJson,
    CPView,
    DriverView,
    MessageJson,
    MessageView,
    RequestJson,
    RequestView,
    SessionView,
)


def mask(driver_id: str) -> str:
    """ "DRV001" -> "D****1"; 1-2 characters -> "**" (they would be shown whole)."""
    if len(driver_id) <= 2:
        return "**"
    return f"{driver_id[0]}{'*' * (len(driver_id) - 2)}{driver_id[-1]}"


# Central names a driver in its messages as "driver ID" / "Driver ID" (services/central.py).
_DRIVER_IN_TEXT = re.compile(rf"\b([Dd]river) ({ID_PATTERN})")
_BALANCE_IN_TEXT = re.compile(r"[;,]? ?\bbalance -?[0-9]+(?:\.[0-9]+)? ?€")


def mask_text(text: str) -> str:
    """A message as the public reads it: driver ids masked, balances cut."""
    if "river " not in text and "balance" not in text:
        return text
    text = _DRIVER_IN_TEXT.sub(lambda m: f"{m[1]} {mask(m[2])}", text)
    return _BALANCE_IN_TEXT.sub("", text)


def public_cp(view: CPView) -> CPView:
    """The CP with its supplying driver masked (the same view when it has none)."""
    driver = view.json["driver_id"]
    if driver is None:
        return view
    masked: CPJson = {**view.json, "driver_id": mask(driver)}
    return CPView(masked)


def public_request_key(key: str) -> str:
    """A request row's key: a session id, or "DRIVER@CP" for a request with no session."""
    driver, at, cp = key.rpartition("@")
    return f"{mask(driver)}@{cp}" if at else key


def public_request(view: RequestView) -> RequestView:
    row: RequestJson = {
        **view.json,
        "key": public_request_key(view.key),
        "driver_id": mask(view.driver_id),
    }
    return RequestView(row)


def public_message(view: MessageView) -> MessageView:
    text = mask_text(view.text)
    return view if text == view.text else MessageView(view.at, view.level, text)


def public_message_json(message: MessageJson) -> MessageJson:
    return {**message, "text": mask_text(message["text"])}


# --- drivers and transactions (API v1's own shapes) --------------------------------------

DriverState = Literal["idle", "authorised", "supplying"]


class PublicDriverJson(TypedDict):
    id: str
    state: DriverState
    cp_id: str | None


class FullDriverJson(PublicDriverJson):
    name: str
    balance_eur: str


class TransactionJson(TypedDict):
    session_id: str
    driver_id: str
    cp_id: str
    status: str
    price_eur_per_kwh: str
    energy_kwh: str
    amount_eur: str
    kw: str | None
    started_at: str


def where_drivers_are(cps: list[CPView]) -> dict[str, tuple[DriverState, str]]:
    """Driver id -> (its session's status, its CP), from the CPs' live supplies."""
    found: dict[str, tuple[DriverState, str]] = {}
    for view in cps:
        j = view.json
        if j["driver_id"] is not None:
            status: DriverState = (
                "supplying" if j["session_status"] == "supplying" else "authorised"
            )
            found[j["driver_id"]] = (status, j["id"])
    return found


def driver_json(
    view: DriverView, where: dict[str, tuple[DriverState, str]], *, full: bool
) -> PublicDriverJson | FullDriverJson:
    state: DriverState = "idle"
    cp_id: str | None = None
    if view.id in where:
        state, cp_id = where[view.id]
    if not full:
        return {"id": mask(view.id), "state": state, "cp_id": cp_id}
    return {
        "id": view.id,
        "state": state,
        "cp_id": cp_id,
        "name": view.name,
        "balance_eur": view.balance_eur,
    }


def transaction_json(session: SessionView, kw: str | None, *, full: bool) -> TransactionJson:
    s = session.json
    return {
        "session_id": s["session_id"],
        "driver_id": s["driver_id"] if full else mask(s["driver_id"]),
        "cp_id": s["cp_id"],
        "status": s["status"],
        "price_eur_per_kwh": s["price_eur_per_kwh"],
        "energy_kwh": s["energy_kwh"],
        "amount_eur": s["amount_eur"],
        "kw": kw,
        "started_at": s["started_at"],
    }
