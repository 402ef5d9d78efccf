"""EV_CP_E: the charging point's Engine (simulated charger hardware, supply, telemetry).

    EV_CP_E KAFKA_HOST:PORT MONITOR_LINK_HOST:PORT [--kw 22] [--speedup 60] [--tick 1.0]
            [--auto-plug] [--supply-seconds N] [--state-dir DIR] [--monitor-timeout 3]
            [--no-menu]

Thin main: arguments -> settings -> wire the Engine service to Kafka, the Monitor link server, the
state file and the stdin menu, then run.  The Kafka consumer of cp-commands starts only once the
Monitor has told the Engine its CP id (SET_CP).  One codec seals what the Engine publishes and
opens what it reads, with the CP's key as the Monitor hands it over; a command sealed with a key
not held yet (Central grants it at AUTH_OK, the Monitor hands it over moments later) is held up
to `AWAIT_KEYS` seconds for it, then dropped and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from evcharging.adapters.engine_state_file import JsonSupplyStore
from evcharging.adapters.kafka.consumer import (
    EventConsumer,
    KeyedRead,
    Offsets,
    end_offsets,
)
from evcharging.adapters.kafka.publisher import EventPublisher
from evcharging.adapters.kafka.router import EventRouter
from evcharging.adapters.kafka.watch import KafkaWatch
from evcharging.adapters.sockets.engine_link import EngineLinkServer
from evcharging.apps.common import (
    Parser,
    bootstrap,
    host_port,
    path,
    positive_decimal,
    positive_seconds,
    run,
    setup_logging,
    stdin_lines,
)
from evcharging.contracts.events import (
    CpReportStatus,
    CpReset,
    CpResume,
    CpStop,
    RequestDenied,
    StopSupply,
    SupplyAuthorised,
)
from evcharging.contracts.topics import CP_COMMANDS, set_namespace
from evcharging.services.cp_keys import CpTopicCodec, KeyRing
from evcharging.services.engine import EngineConfig, EngineService

log = logging.getLogger(__name__)

AWAIT_KEYS = 10.0  # seconds a command sealed with a key not handed over yet is held for it

HELP = (
    "keys: p plug in | u unplug | k [reason] report KO | r recover | "
    "s DRIVER_ID request a supply here | i status | h help"
)


@dataclass(frozen=True)
class EngineSettings:
    kafka: str
    link: tuple[str, int]
    kw: Decimal = Decimal(22)
    speedup: Decimal = Decimal(60)
    tick: float = 1.0
    auto_plug: bool = False
    supply_seconds: float | None = None
    state_dir: Path = Path(".run/engine")
    monitor_timeout: float = 3.0
    menu: bool = True
    log_level: str = "INFO"
    kafka_namespace: str = ""  # several networks on one Kafka cluster

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            kw=self.kw,
            speedup=self.speedup,
            supply_seconds=self.supply_seconds,
            auto_plug=self.auto_plug,
            monitor_timeout=self.monitor_timeout,
        )


def build_router(service: EngineService) -> EventRouter:
    """One handler per cp-commands event; each hands the command to the service."""
    router = EventRouter("EV_CP_E")

    @router.on(SupplyAuthorised)
    async def authorised(ev: SupplyAuthorised) -> None:
        service.on_supply_authorised(ev)

    @router.on(RequestDenied)
    async def denied(ev: RequestDenied) -> None:
        service.on_request_denied(ev)

    @router.on(StopSupply)
    async def stop_supply(ev: StopSupply) -> None:
        service.on_stop_supply(ev)

    @router.on(CpStop)
    async def cp_stop(ev: CpStop) -> None:
        service.on_cp_stop(ev)

    @router.on(CpResume)
    async def cp_resume(ev: CpResume) -> None:
        service.on_cp_resume(ev)

    @router.on(CpReportStatus)
    async def report_status(ev: CpReportStatus) -> None:
        service.on_report_status(ev)

    @router.on(CpReset)
    async def reset(ev: CpReset) -> None:
        service.on_reset(ev)

    return router


class EngineMenu:
    """The CP's keys, one command a line (works with a terminal or a pipe)."""

    def __init__(self, service: EngineService) -> None:
        self.service = service

    def handle(self, line: str) -> None:
        key, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        svc = self.service
        actions: dict[str, Callable[[], object]] = {
            "p": svc.plug,
            "u": svc.unplug,
            "k": lambda: svc.report_ko(arg or "KO key pressed"),
            "r": svc.recover,
            "s": lambda: self._request(arg),
            "i": lambda: log.info("status: %s", svc.status_line()),
            "h": lambda: log.info(HELP),
            "?": lambda: log.info(HELP),
        }
        if not key:
            return
        action = actions.get(key.lower())
        if action is None:
            log.warning("unknown key %r; %s", key, HELP)
            return
        action()

    def _request(self, driver_id: str) -> None:
        if not driver_id:
            log.warning("usage: s DRIVER_ID")
            return
        self.service.request_supply(driver_id)

    async def run(self, lines: AsyncIterator[str]) -> None:
        log.info(HELP)
        async for line in lines:
            self.handle(line)
        log.info("stdin closed: menu disabled, the Engine keeps running")


class EngineApp:
    """Everything EV_CP_E runs, startable and stoppable in-process (tests use it directly)."""

    def __init__(self, settings: EngineSettings, *, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.codec = CpTopicCodec(KeyRing())  # the CP's keys, as the Monitor hands them over
        self.publisher = EventPublisher(settings.kafka, source="EV_CP_E", codec=self.codec)
        self.store = JsonSupplyStore(settings.state_dir)
        self.service = EngineService(
            self.publisher, self.store, clock, settings.engine_config(), codec=self.codec
        )
        self.link = EngineLinkServer(self.service, *settings.link)
        self.menu = EngineMenu(self.service)
        self.consumer: EventConsumer | None = None
        self.consumer_ready = asyncio.Event()
        self.commands_at_start: Offsets | None = None  # see _consume
        self.failed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, lines: AsyncIterator[str] | None = None) -> None:
        await self.link.start()
        self.publisher.start_in_background()
        self._spawn(KafkaWatch(self.settings.kafka).run(), "kafka-watch")
        self._spawn(self.service.run_outbox(), "outbox")
        self._spawn(self._ticks(), "ticks")
        self._spawn(self._consume(), "consumer")
        if lines is not None:
            self._spawn(self.menu.run(lines), "menu")

    async def run(self, lines: AsyncIterator[str] | None = None) -> int:
        await self.start(lines)
        try:
            await self.failed.wait()
            return 1
        finally:
            await self.stop()

    async def stop(self, flush_timeout: float = 2.0) -> None:
        """Stop without ending a running supply (that is what a killed Engine does)."""
        await self.link.close()
        for task in self._tasks:
            if task.get_name() != "EV_CP_E outbox":
                task.cancel()
        await self._flush(flush_timeout)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.publisher.stop()

    async def _flush(self, seconds: float) -> None:
        if not self.publisher.connected:
            return
        try:
            async with asyncio.timeout(seconds):
                await self.service.flush()
        except TimeoutError:
            log.warning(
                "cp=%s: %s events not delivered at exit; an unfinished supply stays in %s",
                self.service.cp_id,
                self.service.pending_events,
                self.settings.state_dir,
            )

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"EV_CP_E {name}")
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("%s failed", task.get_name(), exc_info=task.exception())
        self.failed.set()

    async def _ticks(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.settings.tick
            await asyncio.sleep(max(0.0, due - loop.time()))
            self.service.tick()

    async def _consume(self) -> None:
        # Taken as the Engine starts, long before Central can accept its Monitor and a driver
        # ask for this CP: on a first-ever start (no committed offset), commands sent while the
        # reader is still being positioned are read from here, not skipped.
        self.commands_at_start = await end_offsets(self.settings.kafka, CP_COMMANDS)
        await self.service.cp_known.wait()
        cp_id = self.service.cp_id
        assert cp_id is not None
        self.consumer = EventConsumer(
            self.settings.kafka,
            f"engine-{cp_id}",
            build_router(self.service),
            keyed=[KeyedRead(CP_COMMANDS, cp_id)],
            offset_reset="latest",
            start_at=self.commands_at_start,
            codec=self.codec,
            await_keys=AWAIT_KEYS,
        )
        waiter = asyncio.create_task(self._mark_ready(self.consumer))
        try:
            await self.consumer.run()
        finally:
            waiter.cancel()

    async def _mark_ready(self, consumer: EventConsumer) -> None:
        await consumer.ready.wait()
        log.info("cp=%s: listening to Central's commands", self.service.cp_id)
        self.consumer_ready.set()


# --- command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> EngineSettings:
    p = Parser(prog="EV_CP_E", description="Charging point Engine.")
    p.positional("kafka", env="EV_KAFKA", type=bootstrap, help="Kafka bootstrap HOST:PORT")
    p.positional(
        "link", env="EV_ENGINE_LINK", type=host_port, help="HOST:PORT to listen on for the Monitor"
    )
    p.option(
        "--kw",
        env="EV_ENGINE_KW",
        type=positive_decimal,
        default=Decimal(22),
        help="power in kW while supplying",
    )
    p.option(
        "--speedup",
        env="EV_ENGINE_SPEEDUP",
        type=positive_decimal,
        default=Decimal(60),
        help="simulated seconds per real second (energy only)",
    )
    p.option(
        "--tick",
        env="EV_ENGINE_TICK",
        type=positive_seconds,
        default=1.0,
        help="seconds between readings",
    )
    p.switch("--auto-plug", env="EV_ENGINE_AUTO_PLUG", help="plug in as soon as Central authorises")
    p.option(
        "--supply-seconds",
        env="EV_ENGINE_SUPPLY_SECONDS",
        type=positive_seconds,
        help="unplug on its own after N real seconds",
    )
    p.option(
        "--state-dir",
        env="EV_ENGINE_STATE_DIR",
        type=path,
        default=Path(".run/engine"),
        help="supply state files",
    )
    p.option(
        "--monitor-timeout",
        env="EV_ENGINE_MONITOR_TIMEOUT",
        type=positive_seconds,
        default=3.0,
        help="the Monitor link is alive this long after its last HEALTH",
    )
    p.switch("--no-menu", env="EV_ENGINE_NO_MENU", help="no keys from stdin (unattended runs)")
    p.kafka_namespace_option()
    p.log_level_option()
    args = p.parse_args(argv)
    return EngineSettings(
        kafka=args.kafka,
        link=args.link,
        kw=args.kw,
        speedup=args.speedup,
        tick=args.tick,
        auto_plug=args.auto_plug,
        supply_seconds=args.supply_seconds,
        state_dir=args.state_dir,
        monitor_timeout=args.monitor_timeout,
        menu=not args.no_menu,
        log_level=args.log_level,
        kafka_namespace=args.kafka_namespace,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    setup_logging("EV_CP_E", settings.log_level)
    set_namespace(settings.kafka_namespace)
    log.info(
        "Engine starting: Kafka %s, Monitor link %s:%s, %s kW, speedup x%s, state in %s",
        settings.kafka,
        *settings.link,
        settings.kw,
        settings.speedup,
        settings.state_dir,
    )
    app = EngineApp(settings)
    return run(app.run(stdin_lines() if settings.menu else None))
