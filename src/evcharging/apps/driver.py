"""EV_Driver: the driver's terminal app.

Thin adapter: arguments -> settings -> Kafka consumers and publisher -> `DriverService`.  Every
change the service reports becomes one log line carrying the markers operators and tests follow
(REQUEST sent, AUTHORISED, PROGRESS, TICKET, ERROR EN CP, ...).  A menu on stdin (`r CP_ID`, `s`,
`l`, `q`, `h`) works from a terminal or a pipe; end of input only disables the menu.

With `--web-port` the same process also serves the driver dashboard (FastAPI + uvicorn in the same
loop, `adapters/web/driver_web.py` and the modules beside it); a page may follow any driver id,
and the first time an id is followed its own Kafka reader starts (keyed reads of central-events,
group `driver-<id>`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evcharging.adapters.kafka.consumer import EventConsumer, KeyedRead
from evcharging.adapters.kafka.publisher import EventPublisher
from evcharging.adapters.kafka.router import EventRouter
from evcharging.adapters.kafka.watch import KafkaWatch
from evcharging.adapters.listening import bind
from evcharging.apps.common import (
    Parser,
    bootstrap,
    count,
    ident,
    port_or_any,
    positive_seconds,
    run,
    seconds,
    setup_logging,
    stdin_lines,
)
from evcharging.contracts.events import CpStatus
from evcharging.contracts.topics import CENTRAL_EVENTS, CP_STATUS, set_namespace
from evcharging.services.driver import (
    DriverService,
    Kind,
    Update,
    describe,
    parse_services,
    state_text,
)
from evcharging.services.ports import DriverRefusal

log = logging.getLogger(__name__)

PROGRAM = "EV_Driver"
HELP = "menu: r CP_ID = request a supply | s = stop my supply | l = list available CPs | q = quit | h = help"

_WARN = {Kind.DENIED, Kind.NO_ANSWER, Kind.CP_ERROR, Kind.SERVICE_FAILED, Kind.REFUSED}


@dataclass(frozen=True)
class DriverSettings:
    bootstrap: str
    driver_id: str
    services: tuple[str, ...]
    pause: float
    answer_timeout: float
    menu: bool
    web_port: int | None = None
    web_host: str = "127.0.0.1"
    web_max_drivers: int = 20
    log_level: str = "INFO"
    kafka_namespace: str = ""  # several networks on one Kafka cluster


# --- settings ------------------------------------------------------------------------------


def _services_file(value: str) -> list[str]:
    """A services file's CP ids, read as the arguments are (a bad file stops the program)."""
    try:
        return parse_services(Path(value).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None


def build_parser() -> Parser:
    parser = Parser(
        prog=PROGRAM, description="The driver's app: asks CENTRAL for supplies and follows them."
    )
    parser.positional("kafka", env="EV_KAFKA", type=bootstrap, help="Kafka bootstrap HOST:PORT")
    parser.positional("driver_id", env="EV_DRIVER_ID", type=ident, help="this driver's id")
    parser.option(
        "--file",
        env="EV_DRIVER_FILE",
        type=_services_file,
        help="services file: one CP id per line",
    )
    parser.option("--cp", env="EV_DRIVER_CP", type=ident, help="request one supply at this CP")
    parser.option(
        "--pause", env="EV_DRIVER_PAUSE", type=seconds, default=4.0, help="seconds between services"
    )
    parser.option(
        "--answer-timeout",
        env="EV_DRIVER_ANSWER_TIMEOUT",
        type=positive_seconds,
        default=10.0,
        help="seconds to wait for CENTRAL's answer",
    )
    parser.switch("--no-menu", env="EV_DRIVER_NO_MENU", help="do not read commands from stdin")
    web = parser.add_argument_group("web dashboard (off unless --web-port is given)")
    parser.option(
        "--web-port",
        env="EV_DRIVER_WEB_PORT",
        type=port_or_any,
        help="serve the driver dashboard on this port (0 = any free port)",
        group=web,
    )
    parser.option(
        "--web-host",
        env="EV_DRIVER_WEB_HOST",
        default="127.0.0.1",
        help="address the dashboard listens on (0.0.0.0 for every interface: the page has no "
        "login, anyone who reaches it acts as any driver)",
        group=web,
    )
    parser.option(
        "--web-max-drivers",
        env="EV_DRIVER_WEB_MAX_DRIVERS",
        type=count,
        default=20,
        help="driver ids this process serves at most, one Kafka reader each",
        group=web,
    )
    parser.kafka_namespace_option()
    parser.log_level_option()
    return parser


def parse_args(argv: Sequence[str] | None = None) -> DriverSettings:
    """Command line > environment > defaults; bad input exits with a message naming it."""
    args = build_parser().parse_args(argv)
    services = ([] if args.cp is None else [args.cp]) + (args.file or [])
    return DriverSettings(
        args.kafka,
        args.driver_id,
        tuple(services),
        args.pause,
        args.answer_timeout,
        not args.no_menu,
        args.web_port,
        args.web_host,
        args.web_max_drivers,
        args.log_level,
        args.kafka_namespace,
    )


# --- Kafka wiring (also for a process serving several drivers, e.g. a web dashboard) --------


def driver_router(service: DriverService) -> EventRouter:
    """central-events -> the service; what it does not act on is declared ignored."""
    router = EventRouter(f"{PROGRAM}-central-events")
    for cls in service.handled_events:
        if cls.TOPIC == CENTRAL_EVENTS:
            router.add(cls, service.handle)
    return router


def board_router(service: DriverService) -> EventRouter:
    router = EventRouter(f"{PROGRAM}-cp-status")
    router.add(CpStatus, service.handle)
    return router


def own_consumer(
    bootstrap: str,
    service: DriverService,
    driver_ids: Sequence[str],
    group_id: str | None = None,
) -> EventConsumer:
    """The drivers' own messages: keyed reads of central-events, offsets kept by the group.

    One driver: group `driver-<id>`, so a restarted driver resumes where it stopped and sees the
    ticket of a supply that ended while it was down.  Several drivers need an explicit group id.
    """
    if group_id is None:
        if len(driver_ids) != 1:
            raise ValueError("several driver ids need an explicit group id")
        group_id = f"driver-{driver_ids[0]}"
    return EventConsumer(
        bootstrap,
        group_id,
        driver_router(service),
        keyed=[KeyedRead(CENTRAL_EVENTS, d) for d in driver_ids],
        offset_reset="latest",
    )


def board_consumer(bootstrap: str, service: DriverService) -> EventConsumer:
    """The public board (cp-status, compacted), read whole from the start, no group."""
    return EventConsumer(
        bootstrap, None, board_router(service), topics=[CP_STATUS], offset_reset="earliest"
    )


def driver_consumers(
    bootstrap: str,
    service: DriverService,
    driver_ids: Sequence[str],
    group_id: str | None = None,
) -> tuple[EventConsumer, EventConsumer]:
    """The drivers' own messages and the CP board."""
    return own_consumer(bootstrap, service, driver_ids, group_id), board_consumer(
        bootstrap, service
    )


class KafkaDriverFeeds:
    """The Kafka readers of one process: the board, and one reader per driver id it serves.

    A driver id's reader (group `driver-<id>`) starts the first time the id is followed (the
    command line's id at start, others when a web page selects them), at most `max_drivers`.
    `broken` is set when a reader stops by itself (it only should when cancelled).
    """

    def __init__(self, bootstrap: str, service: DriverService, max_drivers: int = 20) -> None:
        self.bootstrap = bootstrap
        self.service = service
        self.max_drivers = max_drivers
        self._own: dict[str, EventConsumer] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.failures: list[BaseException] = []
        self.broken = asyncio.Event()

    def start(self) -> None:
        self._run(board_consumer(self.bootstrap, self.service), "kafka-board")

    def follow(self, driver_id: str) -> DriverRefusal | None:
        if driver_id in self._own:
            return None
        if len(self._own) >= self.max_drivers:
            reason = f"this Driver process serves at most {self.max_drivers} driver ids"
            return DriverRefusal(reason)
        self.service.add_driver(driver_id)
        self._own[driver_id] = own_consumer(self.bootstrap, self.service, [driver_id])
        self._run(self._own[driver_id], f"kafka-driver-{driver_id}")
        log.info("driver=%s: reading its messages (group driver-%s)", driver_id, driver_id)
        # Then what Central knows of it: unknown, or a supply left open (e.g. before a crash).
        self.service.sync_soon(driver_id, lambda: self.ready(driver_id))
        return None

    def ready_event(self, driver_id: str) -> asyncio.Event:
        return self._own[driver_id].ready

    def is_ready(self, driver_id: str) -> bool:
        return driver_id in self._own and self._own[driver_id].ready.is_set()

    async def ready(self, driver_id: str) -> None:
        await self.ready_event(driver_id).wait()

    def _run(self, consumer: EventConsumer, name: str) -> None:
        task = asyncio.create_task(consumer.run(), name=name)
        task.add_done_callback(self._ended)
        self._tasks.append(task)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        self.failures.append(task.exception() or RuntimeError(f"{task.get_name()} ended"))
        self.broken.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# --- terminal ------------------------------------------------------------------------------


def show(update: Update) -> None:
    """One log line per update; the board's churn only at DEBUG."""
    if update.kind is Kind.BOARD:
        log.debug("%s", describe(update))
        return
    level = logging.WARNING if update.kind in _WARN or update.level != "info" else logging.INFO
    log.log(level, "%s", describe(update))


def list_available(service: DriverService) -> None:
    if not service.board:
        log.info("AVAILABLE n=0: no CP known yet (nothing on cp-status: is CENTRAL running?)")
        return
    cps = service.available_cps()
    log.info("AVAILABLE n=%d of %d CPs", len(cps), len(service.board))
    for cp in cps:
        log.info("  %s %s €/kWh %s", cp.cp_id, cp.price_eur_per_kwh, cp.location)
    others = sorted((s for s in service.board.values() if not s.available), key=lambda s: s.cp_id)
    if others:  # and why the rest cannot be asked for, e.g. "CP02 Parado (weather alert)"
        log.info("NOT AVAILABLE n=%d", len(others))
        for cp in others:
            log.info("  %s %s", cp.cp_id, state_text(cp))


class Menu:
    """The stdin commands of one driver."""

    def __init__(
        self, service: DriverService, driver_id: str, ready: asyncio.Event, quit_: asyncio.Event
    ) -> None:
        self.service = service
        self.driver_id = driver_id
        self.ready = ready
        self.quit = quit_
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, lines: AsyncIterator[str]) -> None:
        log.info("%s", HELP)
        try:
            async for line in lines:
                self.command(line.split())
            log.info("stdin closed: menu off; notifications go on (Ctrl+C to quit)")
        finally:
            for task in self._tasks:
                task.cancel()

    def command(self, words: list[str]) -> None:
        if not words:
            return
        cmd, args = words[0].lower(), words[1:]
        if cmd == "r" and len(args) == 1:
            self._spawn(self._request(args[0]))
        elif cmd == "s":
            self._spawn(self._stop())
        elif cmd == "l":
            list_available(self.service)
        elif cmd == "q":
            log.info("quit requested")
            self.quit.set()
        elif cmd == "h":
            log.info("%s", HELP)
        else:
            log.warning("unknown command %r (h for help)", " ".join(words))

    async def _request(self, cp_id: str) -> None:
        await wait_ready(self.ready, self.driver_id)
        await self.service.request(self.driver_id, cp_id)

    async def _stop(self) -> None:
        await self.service.stop(self.driver_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def wait_ready(ready: asyncio.Event, driver_id: str) -> None:
    """Requests go out only once our partition is read, so no answer slips past us."""
    if not ready.is_set():
        log.info("driver=%s: waiting for Kafka before sending requests", driver_id)
        await ready.wait()


async def _run_file(service: DriverService, s: DriverSettings, ready: asyncio.Event) -> None:
    await wait_ready(ready, s.driver_id)
    log.info("driver=%s: %d service(s) to run", s.driver_id, len(s.services))
    await service.run_services(s.driver_id, s.services, s.pause)


async def _announce_ready(ready: asyncio.Event, s: DriverSettings) -> None:
    await ready.wait()
    log.info("driver=%s: listening to its messages on %s", s.driver_id, CENTRAL_EVENTS.name)


class DriverWeb:
    """The dashboard of a process started with --web-port: its hub and its HTTP server."""

    def __init__(self, service: DriverService, feeds: KafkaDriverFeeds, s: DriverSettings) -> None:
        from evcharging.adapters.web.driver_hub import DriverHub
        from evcharging.adapters.web.driver_runs import ServiceRuns
        from evcharging.adapters.web.driver_web import web_server

        assert s.web_port is not None
        self.socket = bind("the dashboard", s.web_host, s.web_port)
        runs = ServiceRuns(service, s.pause, feeds.ready)
        self.hub = DriverHub(service, feeds, runs, default_driver_id=s.driver_id)
        self.server = web_server(self.hub)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        host, port = self.socket.getsockname()[:2]
        log.info("driver dashboard on http://%s:%s/", host, port)
        self.task = asyncio.create_task(self.server.serve([self.socket]), name="web")
        return self.task

    def run_file(self, s: DriverSettings) -> None:
        """The command line's services file, run like one from a page (so pages show it)."""
        self.hub.runs.start(s.driver_id, list(s.services))

    async def close(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), 5.0)
            except TimeoutError:
                self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.hub.close()
        self.socket.close()


class DriverApp:
    """Everything EV_Driver runs, startable and stoppable in-process, like Monitor and Engine.

    It runs until `q` on the menu, a Kafka reader that stops by itself, or (with --web-port) the
    dashboard's server stopping; a signal cancels it (see `common.run`)."""

    def __init__(self, settings: DriverSettings) -> None:
        s = self.settings = settings
        self.publisher = EventPublisher(s.bootstrap, source=f"{PROGRAM}:{s.driver_id}")
        self.service = DriverService(self.publisher, answer_timeout=s.answer_timeout)
        self.service.observe(show)
        self.feeds = KafkaDriverFeeds(s.bootstrap, self.service, max(s.web_max_drivers, 1))
        self.web: DriverWeb | None = None
        self.quit = asyncio.Event()
        self._watched: list[asyncio.Task[Any]] = []  # the first of these to end stops the app
        self._helpers: list[asyncio.Task[Any]] = []

    def start(self, lines: AsyncIterator[str] | None = None) -> None:
        s = self.settings
        if s.web_port is not None:
            self.web = DriverWeb(self.service, self.feeds, s)  # CannotListen: exit 2
        self.publisher.start_in_background()
        watch = KafkaWatch(s.bootstrap)
        if self.web is not None:
            watch.subscribe(self.web.hub.set_kafka)
        log.info("driver=%s starting, Kafka at %s", s.driver_id, s.bootstrap)
        self.feeds.start()
        self.feeds.follow(s.driver_id)
        ready = self.feeds.ready_event(s.driver_id)
        self._helpers = [asyncio.create_task(_announce_ready(ready, s))]
        if s.services and self.web is not None:
            self.web.run_file(s)
        elif s.services:
            self._helpers.append(asyncio.create_task(_run_file(self.service, s, ready)))
        if lines is not None:
            menu = Menu(self.service, s.driver_id, ready, self.quit)
            self._helpers.append(asyncio.create_task(menu.run(lines)))
        self._helpers.append(asyncio.create_task(watch.run(), name="kafka-watch"))
        self._watched = [
            asyncio.create_task(self.quit.wait()),
            asyncio.create_task(self.feeds.broken.wait()),
        ]
        if self.web is not None:
            self._watched.append(self.web.start())

    async def run(self, lines: AsyncIterator[str] | None = None) -> int:
        """0 after `q`; 1 when a Kafka reader or the dashboard stopped by itself."""
        self.start(lines)  # a dashboard port that cannot be bound stops it here, nothing started
        try:
            await asyncio.wait(self._watched, return_when=asyncio.FIRST_COMPLETED)
            for failure in self.feeds.failures:
                log.error("Kafka reader stopped: %s", failure)
            if self.web is not None and self.web.task is not None and self.web.task.done():
                log.error("the dashboard's web server stopped")
                return 1
            return 1 if self.feeds.failures else 0
        finally:
            await self.stop()

    async def stop(self) -> None:
        web_task = self.web.task if self.web is not None else None
        everything = [t for t in (*self._watched, *self._helpers) if t is not web_task]
        for task in everything:
            task.cancel()
        await asyncio.gather(*everything, return_exceptions=True)
        if self.web is not None:
            await self.web.close()
        await self.feeds.close()
        await self.service.close()
        await self.publisher.stop()
        log.info("driver=%s stopped", self.settings.driver_id)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    setup_logging(PROGRAM, settings.log_level)
    set_namespace(settings.kafka_namespace)
    return run(DriverApp(settings).run(stdin_lines() if settings.menu else None))


if __name__ == "__main__":
    sys.exit(main())
