"""The driver dashboard in a real browser, against the real network.

Kafka, EV_Central, CPs (Engine + Monitor, plugging in on their own) and one EV_Driver started with
`--web-port` run as processes; Debian's Chromium, driven by Playwright, is the driver.  Every wait
is for a condition in the page (Playwright's expect / wait_for_function), never a fixed sleep.
Screenshots go to test-artifacts/screenshots/<test>/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.support.ports import free_port
from tests.support.processes import Network, Proc, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

KAFKA_MS = 20_000  # a step that goes through Kafka and Central
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 360, "height": 800}
# a function, not an expression: the page's CSP (no eval) refuses string predicates
KWH_ABOVE = "(v) => parseFloat(document.querySelector('[data-testid=kwh]').textContent) > v"
KWH_AT_LEAST = "(v) => parseFloat(document.querySelector('[data-testid=kwh]').textContent) >= v"


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    """Browser contexts (separate browsers, as far as the pages can tell), closed at the end."""
    opened: list[BrowserContext] = []
    yield opened
    for context in opened:
        context.close()


def open_page(contexts: list[BrowserContext], browser: Browser, url: str, viewport: Any) -> Page:
    context = browser.new_context(viewport=viewport)
    contexts.append(context)
    page = context.new_page()
    page.goto(url)
    expect(page.get_by_test_id("ws-status")).to_have_text("Connected")
    return page


def start_driver(net: Network, driver_id: str) -> tuple[Proc, str]:
    port = free_port()
    proc = net.driver(driver_id, "--web-port", str(port))
    proc.wait_for("driver dashboard on http://")
    proc.wait_for(f"driver={driver_id}: listening to its messages", timeout=30)
    return proc, f"http://127.0.0.1:{port}/"


def follow(page: Page, driver_id: str) -> None:
    page.get_by_test_id("driver-id-input").fill(driver_id)
    page.get_by_test_id("driver-id-select").click()
    expect(page.get_by_text(f"Following {driver_id}.")).to_be_visible(timeout=KAFKA_MS)


def request_and_supply(page: Page, cp_id: str) -> None:
    button = page.get_by_test_id(f"request-{cp_id}")
    expect(button).to_be_enabled(timeout=KAFKA_MS)
    button.click()
    expect(page.get_by_test_id("status")).to_have_text("Supplying", timeout=KAFKA_MS)
    page.wait_for_function(KWH_ABOVE, arg=0, timeout=KAFKA_MS)


def kwh_now(page: Page) -> Decimal:
    return Decimal(page.get_by_test_id("kwh").inner_text())


def notifications(page: Page) -> str:
    return page.get_by_test_id("notifications").inner_text()


def test_request_watch_kwh_reload_and_stop_from_the_page_with_two_drivers_apart(
    network: Network, browser: Browser, contexts: list[BrowserContext], screenshots: Path
) -> None:
    net = network
    net.central()
    net.charging_point("ALC01", "--auto-plug")
    net.charging_point("VLC01", "--auto-plug")
    _, url = start_driver(net, "D001")

    ana = open_page(contexts, browser, url, DESKTOP)
    expect(ana.get_by_test_id("driver-id-input")).to_have_value("D001")  # the command line's id
    ana.get_by_test_id("driver-id-select").click()
    expect(ana.get_by_test_id("status")).to_have_text("Idle", timeout=KAFKA_MS)
    expect(ana.get_by_test_id("cp-ALC01")).to_contain_text("Activado · available")
    ana.screenshot(path=screenshots / "d001-1280-idle.png", full_page=True)

    request_and_supply(ana, "ALC01")
    first = kwh_now(ana)
    ana.wait_for_function(KWH_ABOVE, arg=float(first), timeout=KAFKA_MS)  # kWh rises, live
    expect(ana.get_by_test_id("eur")).not_to_have_text("—")
    expect(ana.get_by_test_id("kw")).to_have_text("22.00")
    expect(ana.get_by_test_id("stop")).to_be_enabled()

    # a reload mid-supply shows the same state: nothing lived only in the page
    before_reload = kwh_now(ana)
    ana.reload()
    expect(ana.get_by_test_id("status")).to_have_text("Supplying", timeout=KAFKA_MS)
    expect(ana.get_by_test_id("driver-id-input")).to_have_value("D001")
    ana.wait_for_function(KWH_AT_LEAST, arg=float(before_reload), timeout=KAFKA_MS)
    expect(ana.get_by_test_id("notifications")).to_contain_text("Authorised at ALC01")
    expect(ana.get_by_test_id("cp-ALC01")).to_contain_text("your CP")

    # a second driver, in another browser, on the same Driver process
    bruno = open_page(contexts, browser, url, PHONE)
    follow(bruno, "D002")
    expect(bruno.get_by_test_id("status")).to_have_text("Idle")
    expect(bruno.get_by_test_id("kwh")).to_have_text("—")
    request_and_supply(bruno, "VLC01")
    bruno_kwh = kwh_now(bruno)
    ana.wait_for_function(KWH_ABOVE, arg=float(kwh_now(ana)), timeout=KAFKA_MS)  # both live at once
    bruno.wait_for_function(KWH_ABOVE, arg=float(bruno_kwh), timeout=KAFKA_MS)
    ana.screenshot(path=screenshots / "d001-1280-supplying.png", full_page=True)
    bruno.screenshot(path=screenshots / "d002-360-supplying.png", full_page=True)

    # stop from the page: the ticket and the new balance
    ana.get_by_test_id("stop").click()
    ticket = ana.get_by_test_id("ticket")
    expect(ticket).to_be_visible(timeout=KAFKA_MS)
    expect(ana.get_by_test_id("status")).to_have_text("Charging completed")
    expect(ana.get_by_test_id("ticket-reason")).to_have_text("stopped by driver")
    session = wait_until(
        lambda: next(iter(net.sessions(driver_id="D001", status="ended")), None), 20
    )
    assert Decimal(ana.get_by_test_id("ticket-kwh").inner_text()) == Decimal(session["energy_kwh"])
    assert Decimal(ana.get_by_test_id("ticket-eur").inner_text()) == Decimal(session["amount_eur"])
    expect(ana.get_by_test_id("balance")).to_have_text(net.balance("D001"))
    expect(ana.get_by_test_id("kwh")).to_have_text("—")
    ana.screenshot(path=screenshots / "d001-1280-ticket.png", full_page=True)

    # D002 goes on, untouched; neither page ever showed the other's session
    expect(bruno.get_by_test_id("status")).to_have_text("Supplying")
    expect(bruno.get_by_test_id("ticket")).to_be_hidden()
    assert "ALC01" not in notifications(bruno)
    assert "VLC01" not in notifications(ana)
    assert "D001" not in bruno.locator("#following").inner_text()

    bruno.get_by_test_id("stop").click()
    expect(bruno.get_by_test_id("ticket-reason")).to_have_text(
        "stopped by driver", timeout=KAFKA_MS
    )
    expect(bruno.get_by_test_id("balance")).to_have_text(net.balance("D002"))
    bruno.screenshot(path=screenshots / "d002-360-ticket.png", full_page=True)
    assert net.cp("ALC01")["state"] == "Activado"


def test_cp_error_reaches_the_page_as_error_en_cp_and_the_fix_follows(
    network: Network, browser: Browser, contexts: list[BrowserContext], screenshots: Path
) -> None:
    net = network
    net.central()
    net.charging_point("MAD01", "--auto-plug")
    _, url = start_driver(net, "D003")
    page = open_page(contexts, browser, url, PHONE)
    page.get_by_test_id("driver-id-select").click()
    request_and_supply(page, "MAD01")

    asked = time.monotonic()
    assert net.admin("/api/cps/MAD01/simulate-error").status_code == 200
    expect(page.get_by_test_id("status")).to_have_text("ERROR EN CP", timeout=1_000)
    seen_after = time.monotonic() - asked
    expect(page.get_by_test_id("status-detail")).to_contain_text("MAD01")
    expect(page.get_by_test_id("notifications")).to_contain_text("ERROR EN CP MAD01")
    expect(page.get_by_test_id("ticket-reason")).to_be_visible(timeout=KAFKA_MS)  # supply ended
    page.screenshot(path=screenshots / "d003-360-error-en-cp.png", full_page=True)

    assert net.admin("/api/cps/MAD01/fix-error").status_code == 200
    expect(page.get_by_test_id("notifications")).to_contain_text("CP MAD01 fixed", timeout=KAFKA_MS)
    expect(page.get_by_test_id("status")).to_have_text("Charging interrupted")
    expect(page.locator("#h-ticket")).to_have_text("Ticket · charging interrupted (cp fault)")
    expect(page.get_by_test_id("cp-MAD01")).to_contain_text("Activado", timeout=KAFKA_MS)
    page.screenshot(path=screenshots / "d003-360-fixed.png", full_page=True)
    print(
        f"simulate-error at Central -> ERROR EN CP in the driver page: {seen_after * 1000:.0f} ms"
    )


def test_a_restarted_driver_app_opens_on_its_driver_with_its_supply_and_stops_it(
    network: Network, browser: Browser, contexts: list[BrowserContext], screenshots: Path
) -> None:
    net = network
    net.central()
    net.charging_point("MAD01", "--auto-plug")  # supplies until stopped
    first = net.driver("D001", "--cp", "MAD01")
    first.wait_for("PROGRESS driver=D001 cp=MAD01", timeout=30)
    first.kill()
    _, url = start_driver(net, "D001")  # the same driver, now with its dashboard

    page = open_page(contexts, browser, url, DESKTOP)  # the URL as printed: no ?driver=
    expect(page.locator("#following")).to_have_text("Following D001.", timeout=KAFKA_MS)
    expect(page.get_by_test_id("status")).to_have_text("Supplying", timeout=KAFKA_MS)
    expect(page.get_by_test_id("notifications")).to_contain_text("Supply in progress at MAD01")
    expect(page.locator("#notifications time").first).to_have_text(
        re.compile(r"^\d\d:\d\d:\d\d UTC$")
    )
    page.wait_for_function(KWH_ABOVE, arg=0, timeout=KAFKA_MS)
    expect(page.get_by_test_id("stop")).to_be_enabled()
    page.screenshot(path=screenshots / "d001-resumed.png", full_page=True)
    page.get_by_test_id("stop").click()
    expect(page.get_by_test_id("status")).to_have_text("Charging completed", timeout=KAFKA_MS)
    expect(page.get_by_test_id("ticket-reason")).to_have_text("stopped by driver")
    net.wait_state("MAD01", "Activado")

    stranger = open_page(contexts, browser, f"{url}?driver=NOBODY", DESKTOP)
    expect(stranger.get_by_test_id("status")).to_have_text("Unknown driver", timeout=KAFKA_MS)
    expect(stranger.get_by_test_id("status-detail")).to_contain_text("not registered at CENTRAL")
