"""The terminal panel renders every CP state with its caption (not only a colour) and the figures."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from rich.console import Console

from evcharging.adapters.tui.central_panel import render
from evcharging.contracts import events as ev
from evcharging.services.central import CentralService
from tests.support.builders import a_cp, a_driver, a_repo
from tests.support.fakes import RecordingPublisher


async def test_panel_shows_tiles_requests_and_messages() -> None:
    repo = a_repo()
    for cp in ("CP1", "CP2", "CP3", "CP4"):
        a_cp(repo, cp, location=f"Alicante {cp}")
    a_driver(repo, "D1")
    central = CentralService(
        repo, RecordingPublisher(), now=lambda: datetime(2026, 11, 27, 12, tzinfo=UTC)
    )
    await central.load()
    for cp in ("CP1", "CP2", "CP3"):
        await central.monitor_auth(cp, object())
    await central.on_authorization_request(ev.AuthorizationRequest(driver_id="D1", cp_id="CP1"))
    sid = central.cps["CP1"].session.session_id  # type: ignore[union-attr]
    await central.on_telemetry(
        ev.CpTelemetry(
            cp_id="CP1",
            session_id=sid,
            driver_id="D1",
            seq=1,
            kw=Decimal("22"),
            energy_kwh=Decimal("1.500"),
            amount_eur=Decimal("0.60"),
        )
    )
    await central.stop_cp("CP2")
    await central.simulate_error("CP3")
    console = Console(record=True, width=140, color_system=None)
    console.print(render(central))
    text = console.export_text()
    for expected in (
        "CP1",
        "Suministrando",
        "22 kW",
        "1.500 kWh",
        "0.60 €",
        "driver D1",
        "Out of Order",
        "Averiado",
        "Desconectado",
        "ON-GOING DRIVERS REQUESTS",
        "APLICATION MESSAGES",
        "AUTHORISED driver D1",
    ):
        assert expected in text, expected
