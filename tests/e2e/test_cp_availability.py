"""A CP is never shown or offered as available before Central knows its Engine is healthy."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import websockets
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from evcharging.contracts import events as ev
from evcharging.contracts.topics import CENTRAL_EVENTS, CP_STATUS, DRIVER_EVENTS
from tests.support.ports import free_port
from tests.support.processes import Network

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

CP = "ALC01"
DRIVERS = ("D001", "D002", "D003", "D004")


class Watch:
    """Everything seen of the CP while a Monitor starts against a dead Engine."""

    def __init__(self) -> None:
        self.api: list[tuple[str, bool]] = []
        self.board: list[tuple[str, bool]] = []
        self.feed: list[tuple[str, bool]] = []
        self.authorised: list[str] = []
        self.requests = 0


async def poll_api(net: Network, watch: Watch, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=net.api, headers=net.auth, timeout=2) as client:
        while not stop.is_set():
            view = (await client.get(f"/api/cps/{CP}")).json()
            watch.api.append((view["state"], view["available"]))
            await asyncio.sleep(0.02)


async def read_board(net: Network, watch: Watch, stop: asyncio.Event) -> None:
    """Every cp-status record of the CP, from the start of the topic (not a sample of them)."""
    consumer = AIOKafkaConsumer(
        CP_STATUS.name, bootstrap_servers=net.kafka, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=20)).values():
                for record in records:
                    status = ev.parse_event(record.value)
                    if isinstance(status, ev.CpStatus) and status.cp_id == CP:
                        watch.board.append((status.state, status.available))
    finally:
        await consumer.stop()


async def follow_admin_feed(net: Network, watch: Watch, stop: asyncio.Event) -> None:
    """Every change Central pushes to the admin dashboard (each one, not sampled)."""
    async with websockets.connect(f"ws://127.0.0.1:{net.http_port}/ws") as ws:
        while not stop.is_set():
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 0.1))
            except TimeoutError:
                continue
            for view in frame.get("charging_points", []):
                if view["id"] == CP:
                    watch.feed.append((view["state"], view["available"]))


async def flood_requests(net: Network, watch: Watch, stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=net.kafka)
    await producer.start()
    try:
        while not stop.is_set():
            driver = DRIVERS[watch.requests % len(DRIVERS)]
            request = ev.AuthorizationRequest(driver_id=driver, cp_id=CP)
            await producer.send_and_wait(
                DRIVER_EVENTS.name, request.to_bytes(), key=driver.encode()
            )
            watch.requests += 1
            await asyncio.sleep(0.02)
    finally:
        await producer.stop()


async def read_answers(net: Network, watch: Watch, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        CENTRAL_EVENTS.name, bootstrap_servers=net.kafka, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=20)).values():
                for record in records:
                    answer = ev.parse_event(record.value)
                    if (
                        isinstance(answer, ev.AuthorizationResponse)
                        and answer.cp_id == CP
                        and answer.authorised
                    ):
                        watch.authorised.append(answer.driver_id)
    finally:
        await consumer.stop()


async def watch_monitor_start(net: Network, dead_engine: int) -> tuple[Watch, Any]:
    watch, stop = Watch(), asyncio.Event()
    tasks = [
        asyncio.create_task(job(net, watch, stop))
        for job in (poll_api, read_board, follow_admin_feed, flood_requests, read_answers)
    ]
    await asyncio.sleep(0.5)  # the watchers are in place before the Monitor starts
    net.engine_ports[CP] = dead_engine
    monitor = net.monitor(CP)
    deadline = time.monotonic() + 30
    while not any(state == "Averiado" for state, _ in watch.api):
        assert time.monotonic() < deadline, f"never Averiado\n{net.tails()}"
        await asyncio.sleep(0.05)
    # three more heartbeats and health checks: still never offered
    await asyncio.sleep(3)  # an observation window, not a wait for a condition
    stop.set()
    await asyncio.gather(*tasks)
    return watch, monitor


def test_a_monitor_started_against_a_dead_engine_never_offers_its_cp(network: Network) -> None:
    net = network
    net.central()
    watch, monitor = asyncio.run(watch_monitor_start(net, free_port()))

    assert watch.requests > 50, watch.requests
    seen = watch.api + watch.board + watch.feed
    assert watch.api
    assert watch.feed
    assert [s for s in seen if s[0] == "Activado" or s[1]] == [], seen
    assert watch.authorised == []
    assert net.sessions(cp_id=CP) == []
    assert net.cp(CP)["state"] == "Averiado"
    assert "Engine not answering" in (net.cp(CP)["fault_reason"] or "")
    assert monitor.alive
