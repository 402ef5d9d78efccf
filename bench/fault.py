"""Fault propagation, two paths:

1. admin -> driver: `POST /api/cps/{id}/simulate-error` (Bearer token) while a driver holds the
   CP -> that driver has `CP_ERROR_SIMULATED` on central-events (keyed by the driver's id).
   Then `fix-error`, and the next sample.
2. Engine KO -> screen: the Monitor's `FAULT#cp#reason` (or `HB#cp#KO`) frame written ->
   Central's admin WebSocket shows the CP Averiado. Then recovery, and the next sample.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from bench.context import Context, connected_cps, running_central
from bench.harness import ADMIN_TOKEN, Central, Network, write_result
from bench.loadgen import LoadGenerator
from bench.observer import Dashboard, DriverInbox
from bench.stats import summary_ms
from evcharging.adapters.kafka.publisher import EventPublisher
from evcharging.contracts.events import AuthorizationRequest

log = logging.getLogger(__name__)

KINDS = ("FAULT", "HB_KO")


@dataclass(frozen=True)
class FaultParams:
    samples: int = 200
    cps: int = 50

    @classmethod
    def quick(cls) -> FaultParams:
        return cls(samples=20, cps=10)


async def run(ctx: Context, params: FaultParams) -> dict[str, Any]:
    net = Network("FA", params.cps)
    async with (
        running_central(ctx, net, "fault") as central,
        connected_cps(ctx, central, net) as gen,
    ):
        dashboard = Dashboard(central.ws_url, net.cp_ids, ADMIN_TOKEN)
        inbox = DriverInbox(ctx.kafka)
        publisher = EventPublisher(ctx.kafka, "bench-drivers")
        await dashboard.start()
        await inbox.start()
        await publisher.start()
        try:
            admin = await _admin_to_driver(central, net, inbox, publisher, params.samples)
            engine = await _engine_ko_to_screen(gen, dashboard, net, params.samples)
        finally:
            await publisher.stop()
            await inbox.close()
            await dashboard.close()
        results = {
            "admin_to_driver": admin,
            "engine_ko_to_screen": engine,
            "central_log": central.log_counts(),
        }
    write_result("fault", {**asdict(params), "encryption": ctx.mode}, results)
    return results


async def _admin_to_driver(
    central: Central, net: Network, inbox: DriverInbox, publisher: EventPublisher, samples: int
) -> dict[str, Any]:
    to_driver: list[float] = []
    http_reply: list[float] = []
    fixed_to_driver: list[float] = []
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=central.api, headers=headers, timeout=10) as http:
        for k in range(samples):
            i = k % net.size
            cp, driver = net.cp_id(i), net.driver_id(i)
            await _hold(cp, driver, inbox, publisher)
            simulated = inbox.expect("CP_ERROR_SIMULATED", cp, driver)
            t0 = time.time()
            (
                await http.post(f"/api/cps/{cp}/simulate-error", json={"error_type": "bench"})
            ).raise_for_status()
            http_reply.append(time.time() - t0)
            async with asyncio.timeout(10):
                t1, _ = await simulated
            to_driver.append(t1 - t0)
            fixed = inbox.expect("CP_ERROR_FIXED", cp, driver)
            t2 = time.time()
            (await http.post(f"/api/cps/{cp}/fix-error")).raise_for_status()
            async with asyncio.timeout(10):
                t3, _ = await fixed
            fixed_to_driver.append(t3 - t2)
    return {
        "simulate_error_to_driver": summary_ms(to_driver),
        "simulate_error_http_reply": summary_ms(http_reply),
        "fix_error_to_driver": summary_ms(fixed_to_driver),
    }


async def _hold(cp: str, driver: str, inbox: DriverInbox, publisher: EventPublisher) -> None:
    """The driver is authorised at the CP, so the error concerns them."""
    request = AuthorizationRequest(driver_id=driver, cp_id=cp)
    answer = inbox.expect("AUTHORIZATION_RESPONSE", str(request.request_id))
    await publisher.publish(request)
    async with asyncio.timeout(10):
        _, event = await answer
    if not event["authorised"]:
        raise RuntimeError(f"driver {driver} at {cp} denied: {event['reason']}")


async def _engine_ko_to_screen(
    gen: LoadGenerator, dashboard: Dashboard, net: Network, samples: int
) -> dict[str, Any]:
    by_kind: dict[str, list[float]] = {kind: [] for kind in KINDS}
    recovered: list[float] = []
    for k in range(samples):
        cp, kind = net.cp_id(k % net.size), KINDS[k % len(KINDS)]
        shown = dashboard.until(cp, lambda v: v["state"] == "Averiado")
        t0 = await gen.inject_fault(cp, kind)
        async with asyncio.timeout(10):
            t1 = await shown
        by_kind[kind].append(t1 - t0)
        back = dashboard.until(cp, lambda v: v["state"] == "Activado")
        t2 = await gen.recover(cp, kind)
        async with asyncio.timeout(10):
            t3 = await back
        recovered.append(t3 - t2)
    return {
        "all": summary_ms(by_kind["FAULT"] + by_kind["HB_KO"]),
        "fault_frame": summary_ms(by_kind["FAULT"]),
        "hb_ko_frame": summary_ms(by_kind["HB_KO"]),
        "recovery_to_screen": summary_ms(recovered),
    }
