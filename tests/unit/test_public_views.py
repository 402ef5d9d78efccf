"""The public views' masking: driver ids masked everywhere, names and balances never shown."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from evcharging.domain.cp_state import CPFacts
from evcharging.domain.records import CPRecord
from evcharging.domain.session import open_session
from evcharging.services.central_live import LiveCP
from evcharging.services.central_views import MessageView, RequestView, cp_view
from evcharging.services.public_views import (
    mask,
    mask_text,
    public_cp,
    public_message,
    public_request,
    public_request_key,
)


@pytest.mark.parametrize(
    ("driver_id", "masked"),
    [("DRV001", "D****1"), ("D1", "**"), ("X", "**"), ("ABC", "A*C"), ("d-2:x", "d***x")],
)
def test_mask_keeps_first_and_last(driver_id: str, masked: str) -> None:
    assert mask(driver_id) == masked


@pytest.mark.parametrize(
    ("text", "public"),
    [
        (
            "Request from driver DRV001 at CP CP1: checking",
            "Request from driver D****1 at CP CP1: checking",
        ),
        ("Driver DRV001 stops charging at CP CP1", "Driver D****1 stops charging at CP CP1"),
        (
            "TICKET driver DRV001 CP CP1: 1.000 kWh, 0.40 € (completed); balance 12.34 €",
            "TICKET driver D****1 CP CP1: 1.000 kWh, 0.40 € (completed)",
        ),
        ("CP CP1 supplying driver D1", "CP CP1 supplying driver **"),
        (
            "DENIED driver GHOST at CP CP1: unknown driver",
            "DENIED driver G***T at CP CP1: unknown driver",
        ),
        ("CP CP1 stopped by Central -> Parado", "CP CP1 stopped by Central -> Parado"),
    ],
)
def test_message_texts_are_masked(text: str, public: str) -> None:
    assert mask_text(text) == public
    view = MessageView(datetime(2026, 1, 1, tzinfo=UTC), "info", text)
    assert public_message(view).text == public


def test_a_request_row_is_masked_key_included() -> None:
    row = RequestView(
        {
            "key": "DRV001@CP1",
            "date": "2026-01-01",
            "start": "12:00:00",
            "driver_id": "DRV001",
            "cp_id": "CP1",
            "status": "authorised",
        }
    )
    assert public_request(row).json == {**row.json, "key": "D****1@CP1", "driver_id": "D****1"}
    assert (
        public_request_key("0b7c9a2e-0000-4000-8000-000000000000")
        == "0b7c9a2e-0000-4000-8000-000000000000"
    )


def test_a_cp_without_a_supply_is_the_same_view() -> None:
    cp = LiveCP(CPRecord("CP1", "Alicante", Decimal("0.35")), CPFacts(monitor_connected=True))
    idle = cp_view(cp)
    assert public_cp(idle) is idle  # nothing to hide: no copy
    cp.attach(open_session("s1", "DRV001", "CP1", Decimal("0.35"), datetime.now(UTC)))
    busy = cp_view(cp)
    shown = public_cp(busy)
    assert shown.json == {**busy.json, "driver_id": "D****1"}
    assert busy.driver_id == "DRV001"  # the original view is never changed
