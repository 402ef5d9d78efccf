"""Issue 4's acceptance with both dashboards open at once, in Debian's Chromium: the driver's page
and the admin page follow one supply live; seed flow 2 from the admin page reaches the driver's."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.ports import free_port
from tests.support.processes import Network

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

WAIT_MS = 20_000


def open_page(browser: Browser, url: str, width: int = 1280) -> Page:
    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
    page.goto(url)
    return page


def admin_page(browser: Browser, net: Network) -> Page:
    page = open_page(browser, f"{net.api}/")
    expect(page.get_by_test_id("ws-status")).to_have_attribute(
        "data-status", "connected", timeout=WAIT_MS
    )
    page.get_by_test_id("token-input").fill(net.admin_token)
    page.get_by_test_id("token-save").click()
    return page


def driver_page(browser: Browser, net: Network, driver_id: str) -> Page:
    port = free_port()
    proc = net.driver(driver_id, "--web-port", str(port))
    proc.wait_for("driver dashboard on http://")
    proc.wait_for(f"driver={driver_id}: listening to its messages", timeout=30)
    page = open_page(browser, f"http://127.0.0.1:{port}/")
    expect(page.get_by_test_id("ws-status")).to_have_text("Connected", timeout=WAIT_MS)
    page.get_by_test_id("driver-id-input").fill(driver_id)
    page.get_by_test_id("driver-id-select").click()
    expect(page.get_by_text(f"Following {driver_id}.")).to_be_visible(timeout=WAIT_MS)
    return page


def number(page: Page, test_id: str) -> Decimal:
    text = page.get_by_test_id(test_id).inner_text().strip()
    return Decimal(text) if text and text[0].isdigit() else Decimal(-1)


def rises(page: Page, test_id: str) -> None:
    """The figure shown grows while we watch (two different readings, the second larger)."""
    first = Decimal(-1)
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        value = number(page, test_id)
        if first < 0 <= value:
            first = value
        elif value > first >= 0:
            return
        page.wait_for_timeout(200)
    raise AssertionError(f"{test_id} did not rise from {first}")


def test_one_supply_followed_live_in_both_pages(
    network: Network, browser: Browser, screenshots: Path
) -> None:
    net = network
    net.central()
    net.charging_point("ALC01", "--auto-plug")
    admin = admin_page(browser, net)
    driver = driver_page(browser, net, "D001")
    request = driver.get_by_test_id("request-ALC01")
    expect(request).to_be_enabled(timeout=WAIT_MS)
    request.click()
    expect(driver.get_by_test_id("status")).to_have_text("Supplying", timeout=WAIT_MS)
    expect(admin.get_by_test_id("tile-ALC01")).to_have_attribute(
        "data-state", "Suministrando", timeout=WAIT_MS
    )
    expect(admin.get_by_test_id("tile-ALC01-driver")).to_contain_text("D001")
    rises(driver, "kwh")
    rises(admin, "tile-ALC01-kwh")
    driver.reload()  # mid-supply: the same state comes back from the Driver process
    expect(driver.get_by_test_id("status")).to_have_text("Supplying", timeout=WAIT_MS)
    admin.reload()
    expect(admin.get_by_test_id("tile-ALC01")).to_have_attribute(
        "data-state", "Suministrando", timeout=WAIT_MS
    )
    driver.screenshot(path=str(screenshots / "driver-supplying.png"), full_page=True)
    admin.screenshot(path=str(screenshots / "admin-supplying.png"), full_page=True)
    driver.get_by_test_id("stop").click()
    expect(driver.get_by_test_id("ticket")).to_be_visible(timeout=WAIT_MS)
    expect(driver.get_by_test_id("ticket-reason")).to_contain_text("driver", timeout=WAIT_MS)
    assert number(driver, "ticket-kwh") > 0
    expect(admin.get_by_test_id("tile-ALC01")).to_have_attribute(
        "data-state", "Activado", timeout=WAIT_MS
    )
    session = net.sessions(driver_id="D001", status="ended")[0]
    expect(driver.get_by_test_id("balance")).to_contain_text(net.balance("D001"))
    assert session["end_reason"] == "stopped_by_driver"
    driver.screenshot(path=str(screenshots / "driver-ticket.png"), full_page=True)


def test_seed_flow_2_from_the_admin_page_reaches_the_driver_page_within_1_s(
    network: Network, browser: Browser, screenshots: Path
) -> None:
    net = network
    net.central()
    net.charging_point("MAD01", "--auto-plug")
    admin = admin_page(browser, net)
    driver = driver_page(browser, net, "D003")
    driver.get_by_test_id("request-MAD01").click()
    expect(driver.get_by_test_id("status")).to_have_text("Supplying", timeout=WAIT_MS)
    expect(admin.get_by_test_id("tile-MAD01")).to_have_attribute(
        "data-state", "Suministrando", timeout=WAIT_MS
    )
    clicked = time.monotonic()
    admin.get_by_test_id("error-MAD01").click()
    expect(driver.get_by_test_id("status")).to_have_text("ERROR EN CP", timeout=1000)
    shown_after = time.monotonic() - clicked
    expect(driver.get_by_test_id("notifications")).to_contain_text("simulated at MAD01")
    expect(admin.get_by_test_id("tile-MAD01")).to_have_attribute(
        "data-state", "Averiado", timeout=WAIT_MS
    )
    driver.screenshot(path=str(screenshots / "driver-error-en-cp.png"), full_page=True)
    admin.screenshot(path=str(screenshots / "admin-averiado.png"), full_page=True)
    admin.get_by_test_id("fix-MAD01").click()
    expect(driver.get_by_test_id("notifications")).to_contain_text(
        "fixed at MAD01", timeout=WAIT_MS
    )
    expect(admin.get_by_test_id("tile-MAD01")).to_have_attribute(
        "data-state", "Activado", timeout=WAIT_MS
    )
    print(f"simulate-error click -> ERROR EN CP in the driver page: {shown_after * 1000:.0f} ms")
