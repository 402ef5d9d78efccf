"""EV_CP_M: the charging point's Monitor (authenticates the CP, health-checks its Engine).

    EV_CP_M ENGINE_HOST:PORT CENTRAL_HOST:PORT CP_ID [--location TEXT] [--price P]
            [--interval 1.0] [--timeout 1.0] [--max-backoff 5.0] [--denied-retry 10.0]
            [--summary-every 30]

Thin main: arguments -> settings -> the Monitor service and its two link loops (Central, Engine),
each owning its own connection, run side by side until the program is stopped.  The terminal gets
a status line on every change (from the service) and a summary every `--summary-every` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import TypeAdapter, ValidationError

from evcharging.adapters.sockets.monitor_links import CentralLinkLoop, EngineLinkLoop, Timing
from evcharging.apps.common import env, host_port, positional, run, setup_logging
from evcharging.contracts.events import Id
from evcharging.services.monitor import MonitorService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorSettings:
    engine: tuple[str, int]
    central: tuple[str, int]
    cp_id: str
    location: str = ""
    price: str = ""  # empty: Central's database knows the price
    timing: Timing = field(default_factory=Timing)
    summary_every: float = 30.0  # seconds between summaries; 0 = none


class MonitorApp:
    """Everything EV_CP_M runs, startable and stoppable in-process (tests use it directly)."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self._central_wake = asyncio.Event()
        self._engine_wake = asyncio.Event()
        self.service = MonitorService(settings.cp_id, on_change=self._wake_all)
        self.central_link = CentralLinkLoop(
            self.service,
            settings.central,
            location=settings.location,
            price=settings.price,
            timing=settings.timing,
            wake=self._central_wake,
        )
        self.engine_link = EngineLinkLoop(
            self.service, settings.engine, timing=settings.timing, wake=self._engine_wake
        )
        self._tasks: list[asyncio.Task[None]] = []

    def _wake_all(self) -> None:
        self._central_wake.set()
        self._engine_wake.set()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.engine_link.run(), name="EV_CP_M engine-link"),
            asyncio.create_task(self.central_link.run(), name="EV_CP_M central-link"),
        ]
        if self.settings.summary_every > 0:
            self._tasks.append(asyncio.create_task(self._summaries(), name="EV_CP_M summaries"))

    async def _summaries(self) -> None:
        """Steady state prints nothing per second: this line shows the Monitor is alive."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.settings.summary_every)
            now = loop.time()
            log.info("%s", self.service.summary_line(now - last))
            last = now

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def run(self) -> int:
        self.start()
        try:
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("%s failed", task.get_name(), exc_info=task.exception())
            return 1
        finally:
            await self.stop()


# --- command line -------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _seconds_or_off(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = off), got {text!r}")
    return value


def _price(text: str) -> str:
    if not text:
        return ""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a price: {text!r}") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"price must be in (0, 100] EUR/kWh, got {text!r}")
    return str(value)


def _no_reserved(text: str) -> str:
    if any(c in text for c in "#\x02\x03"):
        raise argparse.ArgumentTypeError(f"'#' is not allowed here: {text!r}")
    return text


def _cp_id(text: str) -> str:
    try:
        return str(TypeAdapter(Id).validate_python(text))
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"CP id must be 1-64 of A-Z a-z 0-9 _ . : -, got {text!r}"
        ) from None


def _flag(p: argparse.ArgumentParser, name: str, env_name: str, default: str, **kw: Any) -> None:
    p.add_argument(name, default=env(env_name, default), help=f"(env {env_name})", **kw)


def parse_args(argv: list[str] | None = None) -> MonitorSettings:
    p = argparse.ArgumentParser(prog="EV_CP_M", description="Charging point Monitor.")
    positional(p, "engine", "EV_ENGINE", type=host_port, help="the Engine's HOST:PORT")
    positional(p, "central", "EV_CENTRAL", type=host_port, help="EV_Central's HOST:PORT")
    positional(p, "cp_id", "EV_CP_ID", type=_cp_id, help="this CP's id")
    _flag(p, "--location", "EV_CP_LOCATION", "", type=_no_reserved)
    _flag(p, "--price", "EV_CP_PRICE", "", type=_price)
    seconds: Callable[[str], float] = _positive_float
    _flag(p, "--interval", "EV_MONITOR_INTERVAL", "1.0", type=seconds)
    _flag(p, "--timeout", "EV_MONITOR_TIMEOUT", "1.0", type=seconds)
    _flag(p, "--max-backoff", "EV_MONITOR_MAX_BACKOFF", "5.0", type=seconds)
    _flag(p, "--denied-retry", "EV_MONITOR_DENIED_RETRY", "10.0", type=seconds)
    _flag(p, "--summary-every", "EV_MONITOR_SUMMARY_EVERY", "30", type=_seconds_or_off)
    args = p.parse_args(argv)
    if args.engine is None or args.central is None or args.cp_id is None:
        p.error("ENGINE_HOST:PORT, CENTRAL_HOST:PORT and CP_ID are required")
    return MonitorSettings(
        engine=args.engine,
        central=args.central,
        cp_id=args.cp_id,
        location=args.location,
        price=args.price,
        timing=Timing(args.interval, args.timeout, args.max_backoff, args.denied_retry),
        summary_every=args.summary_every,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    setup_logging("EV_CP_M")
    log.info(
        "Monitor starting: cp=%s, Engine %s:%s, Central %s:%s, every %ss",
        settings.cp_id,
        *settings.engine,
        *settings.central,
        settings.timing.interval,
    )
    return run(MonitorApp(settings).run())
