"""The driver page's board tags and notification lines, computed once in Python (the page only
renders them)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from evcharging.adapters.web.driver_texts import notification_text
from evcharging.adapters.web.driver_views import board_tag, cp_view
from evcharging.contracts.events import CpStatus
from evcharging.domain.cp_state import CPState
from evcharging.services.driver import Kind, Update


@pytest.mark.parametrize(
    ("state", "available", "tag", "tone"),
    [
        (CPState.ACTIVADO, True, "Activado · available", "ok"),
        (CPState.ACTIVADO, False, "Activado · reserved", "info"),
        (CPState.SUMINISTRANDO, False, "Suministrando · supplying", "ok"),
        (CPState.PARADO, False, "Parado · Out of Order", "warn"),
        (CPState.AVERIADO, False, "Averiado · faulted", "error"),
        (CPState.DESCONECTADO, False, "Desconectado · disconnected", "neutral"),
    ],
)
def test_every_cp_state_has_its_tag_and_tone(
    state: CPState, available: bool, tag: str, tone: str
) -> None:
    assert board_tag(state, available) == {"tag": tag, "tone": tone}


def test_a_board_cp_carries_its_tag() -> None:
    cp = CpStatus(
        cp_id="ALC01",
        location="Alicante",
        price_eur_per_kwh=Decimal("0.35"),
        state="Parado",
        available=False,
    )
    view = cp_view(cp)
    assert (view["state"], view["tag"], view["tone"]) == ("Parado", "Parado · Out of Order", "warn")


def test_a_refusal_reads_refused() -> None:
    update = Update(Kind.REFUSED, "D1", message="no supply in progress to stop")
    assert notification_text(update) == "Refused: no supply in progress to stop"


def test_a_parado_cp_on_the_board_says_why_it_is_out_of_service() -> None:
    cp = CpStatus(
        cp_id="TER01",
        location="Teruel",
        price_eur_per_kwh=Decimal("0.35"),
        state="Parado",
        available=False,
        stop_reason="weather alert",
    )
    view = cp_view(cp)
    assert (view["stop_reason"], view["tag"], view["tone"]) == (
        "weather alert",
        "Parado (weather alert) · Out of Order",
        "warn",
    )


def test_a_denial_names_the_reason_central_gave() -> None:
    reason = "CP out of service: weather alert (Parado, Out of Order)"
    update = Update(Kind.DENIED, "D1", "TER01", message=reason)
    assert notification_text(update) == f"Denied at TER01: {reason}"
