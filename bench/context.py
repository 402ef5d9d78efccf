"""One benchmark's surroundings: a work folder, the broker, and a way to run a Central with a
network of simulated CPs in this process (for the latency benchmarks, which use few CPs)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    BENCH_SECRET,
    CENTRAL_TOPICS,
    Central,
    Network,
    issue_credentials,
    new_group_id,
    start_central,
    start_group_at_end,
)
from bench.loadgen import CpSpec, LoadConfig, LoadGenerator

log = logging.getLogger(__name__)


@dataclass
class Context:
    kafka: str
    broker_pid: int
    workdir: Path
    quick: bool
    deadline: float  # time.monotonic() by which the whole suite should be done
    encryption: bool = True  # False: Central with --cp-encryption off, the generator plain too

    @property
    def mode(self) -> str:
        return "on" if self.encryption else "off"

    @property
    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def cp_specs(net: Network) -> list[CpSpec]:
    return [
        CpSpec(i, net.cp_id(i), net.driver_id(i), net.location(i), net.price(i))
        for i in range(net.size)
    ]


@contextlib.asynccontextmanager
async def running_central(ctx: Context, net: Network, name: str) -> AsyncIterator[Central]:
    """A fresh EV_Central (own DB, own group starting at the topics' ends) with `net` seeded."""
    seed = net.write_seed(ctx.workdir / f"{name}-seed.yaml")
    group = new_group_id(name)
    await start_group_at_end(ctx.kafka, group, CENTRAL_TOPICS)  # before Central joins it
    issue_credentials(ctx.workdir / f"{name}.db", net)
    central = start_central(ctx.kafka, ctx.workdir, seed, name, group, encryption=ctx.encryption)
    try:
        await central.wait_loaded(net.size, within=180)
        yield central
    finally:
        central.stop()


@contextlib.asynccontextmanager
async def connected_cps(
    ctx: Context, central: Central, net: Network
) -> AsyncIterator[LoadGenerator]:
    """Every CP of `net` connected to Central and heartbeating, from this process; nobody plugs
    in, so an authorised CP waits (reserved) until its driver stops or it faults."""
    cfg = LoadConfig(
        kafka=ctx.kafka,
        central_host="127.0.0.1",
        central_port=central.port,
        plug_in=False,
        secret=BENCH_SECRET,
        encryption=ctx.encryption,
    )
    gen = LoadGenerator(cfg, cp_specs(net))
    await gen.start()
    try:
        result = await gen.connect()
        if result["connected"] != net.size:
            raise RuntimeError(f"only {result['connected']} of {net.size} CPs connected: {result}")
        yield gen
    finally:
        await gen.close()
