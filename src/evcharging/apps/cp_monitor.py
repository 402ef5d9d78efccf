"""EV_CP_M: the charging point's Monitor (authenticates the CP, health-checks its Engine).

    EV_CP_M ENGINE_HOST:PORT CENTRAL_HOST:PORT CP_ID [--location TEXT] [--price P]
            [--interval 1.0] [--timeout 1.0] [--max-backoff 5.0] [--denied-retry 10.0]
            [--summary-every 30]

Thin main: arguments -> settings -> the Monitor service and its two link loops (Central, Engine),
each owning its own connection, run side by side until the program is stopped.  `--location` and
`--price` are sent to Central with AUTH but not used yet: the Registry of Release 2 will own them.  The terminal gets
a status line on every change (from the service) and a summary every `--summary-every` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from evcharging.adapters.credentials_file import default_path, load
from evcharging.adapters.sockets.monitor_links import CentralLinkLoop, EngineLinkLoop, Timing
from evcharging.apps.common import (
    Parser,
    host_port,
    ident,
    positive_decimal,
    positive_seconds,
    run,
    seconds,
    setup_logging,
)
from evcharging.contracts.fields import MAX_LOCATION, MAX_PRICE, Location, Price
from evcharging.contracts.frames import reserved_char
from evcharging.services.cp_auth import Prover
from evcharging.services.monitor import MonitorService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorSettings:
    engine: tuple[str, int]
    central: tuple[str, int]
    cp_id: str
    location: str = ""  # sent with AUTH, not used by Central yet (Release 2's Registry will)
    price: str = ""  # likewise; Central's database knows the price
    timing: Timing = field(default_factory=Timing)
    log_level: str = "INFO"
    summary_every: float = 30.0  # seconds between summaries; 0 = none


class _CredentialsFile:
    """Bridge (socket-auth) until monitor-app's --credentials: the default file, read at each
    attempt; one Prover per secret, so scrypt runs once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._known: tuple[str, str, Prover] | None = None

    def prover(self) -> Prover | None:
        stored = load(self.path)
        if stored is None:
            return None
        if self._known is None or self._known[:2] != (stored.cp_id, stored.secret):
            self._known = (stored.cp_id, stored.secret, Prover(stored.cp_id, stored.secret))
        return self._known[2]


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
            credentials=_CredentialsFile(default_path(settings.cp_id)),
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


_PRICE: TypeAdapter[Decimal] = TypeAdapter(Price)
_LOCATION: TypeAdapter[str] = TypeAdapter(Location)


def _price(value: str) -> str:
    """€/kWh by the contracts' `Price` rule; empty: not announced."""
    if not value:
        return ""
    try:
        return str(_PRICE.validate_python(positive_decimal(value)))
    except ValidationError:
        raise ValueError(f"must be at most {MAX_PRICE} €/kWh") from None  # > 0: checked above


def _location(value: str) -> str:
    """Where the CP stands, by the contracts' `Location` rule; empty: not announced.  It travels
    in a socket frame, so it may not hold '#' (the field separator) either."""
    if not value:
        return ""
    try:
        _LOCATION.validate_python(value)
    except ValidationError:
        raise ValueError(f"at most {MAX_LOCATION} characters") from None
    bad = reserved_char(value)
    if bad:
        raise ValueError(f"{bad!r} is not allowed here")
    return value


_NOT_USED_YET = "sent to Central but not used yet: the Registry of Release 2 will own it"


_TIMINGS = (  # flag, variable, default seconds, help
    ("--interval", "EV_MONITOR_INTERVAL", 1.0, "seconds between health checks and heartbeats"),
    ("--timeout", "EV_MONITOR_TIMEOUT", 1.0, "seconds to connect, and to wait for each answer"),
    ("--max-backoff", "EV_MONITOR_MAX_BACKOFF", 5.0, "longest wait between reconnections"),
    ("--denied-retry", "EV_MONITOR_DENIED_RETRY", 10.0, "seconds before retrying a refused AUTH"),
)


def parse_args(argv: list[str] | None = None) -> MonitorSettings:
    p = Parser(prog="EV_CP_M", description="Charging point Monitor.")
    p.positional("engine", env="EV_ENGINE", type=host_port, help="the Engine's HOST:PORT")
    p.positional("central", env="EV_CENTRAL", type=host_port, help="EV_Central's HOST:PORT")
    p.positional("cp_id", env="EV_CP_ID", type=ident, help="this CP's id")
    p.option(
        "--location",
        env="EV_CP_LOCATION",
        type=_location,
        default="",
        help=f"where the CP stands ({_NOT_USED_YET})",
    )
    p.option(
        "--price",
        env="EV_CP_PRICE",
        type=_price,
        default="",
        help=f"€/kWh ({_NOT_USED_YET}; until then Central's database sets the price)",
    )
    for flag, env, default, text in _TIMINGS:
        p.option(flag, env=env, type=positive_seconds, default=default, help=text)
    p.option(
        "--summary-every",
        env="EV_MONITOR_SUMMARY_EVERY",
        type=seconds,
        default=30.0,
        help="seconds between summaries of heartbeats and health checks (0: none)",
    )
    p.log_level_option()
    args = p.parse_args(argv)
    return MonitorSettings(
        engine=args.engine,
        central=args.central,
        cp_id=args.cp_id,
        location=args.location,
        price=args.price,
        timing=Timing(args.interval, args.timeout, args.max_backoff, args.denied_retry),
        log_level=args.log_level,
        summary_every=args.summary_every,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    setup_logging("EV_CP_M", settings.log_level)
    log.info(
        "Monitor starting: cp=%s, Engine %s:%s, Central %s:%s, every %ss",
        settings.cp_id,
        *settings.engine,
        *settings.central,
        settings.timing.interval,
    )
    return run(MonitorApp(settings).run())
