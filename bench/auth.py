"""Authorisation latency: a driver's AUTHORIZATION_REQUEST published -> that driver has the
AUTHORIZATION_RESPONSE (read from central-events).

`concurrency` drivers ask at once, each at its own CPs; after an authorisation the driver stops
(`charging_stopped`) and waits for its ticket, which frees the CP for the next round. The CPs
are connected and heartbeating, so Central works as in service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from bench.context import Context, connected_cps, running_central
from bench.harness import CpuWatch, Network, rss_kb, write_result
from bench.observer import DriverInbox
from bench.stats import summary_ms
from evcharging.adapters.kafka.publisher import EventPublisher
from evcharging.contracts.events import AuthorizationRequest, ChargingStopped, DriverNotice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuthParams:
    requests: int = 1000
    concurrency: int = 4
    cps: int = 100
    warmup: int = 20

    @classmethod
    def quick(cls) -> AuthParams:
        return cls(requests=100, concurrency=2, cps=20, warmup=5)


@dataclass
class _Tally:
    left: int
    latencies: list[float]
    authorised: int = 0
    denied: int = 0
    stop_to_ticket: list[float] | None = None
    to_central: list[float] = field(default_factory=list)
    from_central: list[float] = field(default_factory=list)


async def run(ctx: Context, params: AuthParams) -> dict[str, Any]:
    results, _ = await measure(ctx, params)
    write_result("auth", {**asdict(params), "encryption": ctx.mode}, results)
    return results


async def measure(
    ctx: Context, params: AuthParams, name: str = "auth"
) -> tuple[dict[str, Any], list[float]]:
    """One run against a fresh Central (database and log `name`): its figures, and every
    request's latency (seconds)."""
    net = Network("AU", params.cps)
    async with running_central(ctx, net, name) as central, connected_cps(ctx, central, net):
        inbox = DriverInbox(ctx.kafka)
        publisher = EventPublisher(ctx.kafka, "bench-drivers")
        await inbox.start()
        await publisher.start()
        try:
            await _rounds(net, inbox, publisher, params, _Tally(params.warmup, []))  # warm-up
            hop = await _kafka_hop(inbox, publisher, params.requests // 4)
            tally = _Tally(params.requests, [], stop_to_ticket=[])
            pids = {"central": central.pid, "broker": ctx.broker_pid, "bench": os.getpid()}
            cpu = CpuWatch(pids)
            cpu.start()
            started = time.monotonic()
            await _rounds(net, inbox, publisher, params, tally)
            elapsed = time.monotonic() - started
            usage = cpu.stop()
        finally:
            await publisher.stop()
            await inbox.close()
        results = {
            "request_to_response": summary_ms(tally.latencies),
            "request_to_response_made": summary_ms(tally.to_central),
            "response_made_to_driver": summary_ms(tally.from_central),
            "stop_to_ticket": summary_ms(tally.stop_to_ticket or []),
            "kafka_hop_baseline": hop,
            "authorised": tally.authorised,
            "denied": tally.denied,
            "requests_per_s": round(len(tally.latencies) / elapsed, 1),
            "central_rss_mb": round(rss_kb(central.pid) / 1024, 1),
            **usage,
            "central_log": central.log_counts(),
            "encryption": ctx.mode,
        }
    return results, tally.latencies


async def _rounds(
    net: Network,
    inbox: DriverInbox,
    publisher: EventPublisher,
    params: AuthParams,
    tally: _Tally,
) -> None:
    async def driver(k: int) -> None:
        mine = [i for i in range(net.size) if i % params.concurrency == k]
        turn = 0
        while tally.left > 0:
            tally.left -= 1
            i = mine[turn % len(mine)]
            turn += 1
            await _one(net, i, inbox, publisher, tally)

    await asyncio.gather(*(driver(k) for k in range(params.concurrency)))


async def _one(
    net: Network, i: int, inbox: DriverInbox, publisher: EventPublisher, tally: _Tally
) -> None:
    request = AuthorizationRequest(driver_id=net.driver_id(i), cp_id=net.cp_id(i))
    answer = inbox.expect("AUTHORIZATION_RESPONSE", str(request.request_id))
    t0 = time.time()
    await publisher.publish(request)
    async with asyncio.timeout(30):
        t1, event = await answer
    tally.latencies.append(t1 - t0)
    made = datetime.fromisoformat(event["ts"]).timestamp()  # Central's clock: the same machine
    tally.to_central.append(made - t0)
    tally.from_central.append(t1 - made)
    if not event["authorised"]:
        tally.denied += 1
        log.warning("driver %s at %s denied: %s", request.driver_id, request.cp_id, event["reason"])
        return
    tally.authorised += 1
    ticket = inbox.expect("CHARGING_TICKET", str(event["session_id"]))
    t2 = time.time()
    await publisher.publish(
        ChargingStopped(
            driver_id=request.driver_id, cp_id=request.cp_id, session_id=event["session_id"]
        )
    )
    async with asyncio.timeout(30):
        t3, _ = await ticket
    if tally.stop_to_ticket is not None:
        tally.stop_to_ticket.append(t3 - t2)


async def _kafka_hop(inbox: DriverInbox, publisher: EventPublisher, samples: int) -> dict[str, Any]:
    """The floor under every Kafka figure: one event published (as Central publishes, waiting
    for the broker's ack) -> read by a consumer set up as the Driver's; Central is not involved."""
    hops: list[float] = []
    for k in range(samples):
        probe = DriverNotice(driver_id="bench-probe", message=f"probe {k}")
        arrived = inbox.expect("DRIVER_NOTICE", "bench-probe", probe.message)
        t0 = time.time()
        await publisher.publish(probe)
        async with asyncio.timeout(10):
            t1, _ = await arrived
        hops.append(t1 - t0)
    return summary_ms(hops)
