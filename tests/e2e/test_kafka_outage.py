"""A 15 s broker outage mid-supply is said once per program, shown on both pages, and recovered.

Before: ~30 aiokafka ERROR lines a second per program, "Unclosed AIOKafkaConsumer" per retry,
Python reprs; the admin page said "Live" and the driver page a frozen "Supplying".
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import Browser, expect

from evcharging.ops import kafka_broker
from tests.support.ports import free_port
from tests.support.processes import Network

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

OUTAGE_S = 15.0
MAX_LINES = 5
TICK = ": Suministrando "  # the Engine's per-second supply line: the CP's own screen, not noise


def off_this_thread(action, *args):  # type: ignore[no-untyped-def]
    """The broker's start/stop use asyncio.run(); Playwright's loop is running in this thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(action, *args).result()


def test_a_broker_outage_is_said_once_per_program_and_shown_on_both_pages(
    network_own_broker: Network, browser: Browser
) -> None:
    net = network_own_broker
    central = net.central()
    engine, monitor = net.charging_point("ALC01", "--auto-plug", "--supply-seconds", "45")
    web = free_port()
    driver = net.driver("D001", "--cp", "ALC01", "--web-port", str(web))
    driver.wait_for("PROGRESS driver=D001 cp=ALC01", timeout=30)
    admin = browser.new_page()
    admin.goto(net.api + "/")
    mine = browser.new_page()
    mine.goto(f"http://127.0.0.1:{web}/")
    expect(mine.get_by_test_id("status")).to_have_text("Supplying", timeout=20_000)
    programs = (central, engine, monitor, driver)
    marks = {p.name: len(p.output()) for p in programs}

    off_this_thread(kafka_broker.stop, net.broker)
    stopped = time.monotonic()
    expect(admin.get_by_test_id("kafka-banner")).to_contain_text(
        "Kafka unreachable at", timeout=10_000
    )
    expect(mine.get_by_test_id("kafka-banner")).to_contain_text(
        "Kafka unreachable at", timeout=10_000
    )
    expect(admin.get_by_test_id("ws-status")).to_contain_text("Kafka is down")
    expect(mine.get_by_test_id("status")).to_have_text("No news from CENTRAL", timeout=10_000)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))  # the outage itself
    during = {p.name: p.output()[marks[p.name] :] for p in programs}
    off_this_thread(kafka_broker.start, net.broker)

    for name, text in during.items():
        lines = [line for line in text.splitlines() if TICK not in line]
        assert len(lines) <= MAX_LINES, f"{name} printed {len(lines)} lines:\n" + "\n".join(lines)
        assert "Traceback" not in text
        assert "Unclosed" not in text
    for proc in (central, engine, driver):
        assert "Kafka unreachable at" in during[proc.name], proc.name
        proc.wait_for("Kafka back at", timeout=30, after=marks[proc.name])
    expect(admin.get_by_test_id("kafka-banner")).to_be_hidden(timeout=15_000)
    expect(mine.get_by_test_id("kafka-banner")).to_be_hidden(timeout=15_000)
    driver.wait_for("TICKET driver=D001 cp=ALC01", timeout=60)
