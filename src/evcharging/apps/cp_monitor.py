"""EV_CP_M: the charging point's Monitor (authenticates the CP, health-checks its Engine).

    EV_CP_M ENGINE_HOST:PORT CENTRAL_HOST:PORT CP_ID [--registry https://HOST:PORT]
            [--ca-file CA.pem] [--credentials FILE] [--location TEXT] [--price P]
            [--register | --deregister] [--interval 1.0] [--timeout 1.0] [--max-backoff 5.0]
            [--denied-retry 10.0] [--summary-every 30] [--auto-reauth SECONDS]

Thin main: arguments -> settings -> the Monitor service, its two link loops (Central, Engine) and
its menu.  The CP registers (alta) and deregisters (baja) at EV_Registry over HTTPS
(`adapters.registry_client`), with `--location` and `--price`; the secret it gets is kept in a
0600 file (`adapters.credentials_file`), which the Central link reads at every AUTH: a registered
CP authenticates by itself, an unregistered one waits for `R` (or starts with `--register`).
`--deregister` is a one-shot: baja, delete the file, exit.  The terminal gets a status line on
every change (from the service) and a summary every `--summary-every` seconds.  When Central
revokes the CP's keys, `A` authenticates again for a new one; `--auto-reauth SECONDS` does it
unattended that long after the revocation.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from evcharging.adapters import credentials_file
from evcharging.adapters.credentials_file import CredentialsFileError, StoredCredentials
from evcharging.adapters.registry_client import RegistryClient, RegistryError, registry_url
from evcharging.adapters.sockets.monitor_links import CentralLinkLoop, EngineLinkLoop, Timing
from evcharging.apps.common import (
    Parser,
    host_port,
    ident,
    path,
    positive_decimal,
    positive_seconds,
    run,
    seconds,
    setup_logging,
    stdin_lines,
)
from evcharging.contracts.fields import MAX_LOCATION, MAX_PRICE, Location, Price
from evcharging.contracts.frames import reserved_char
from evcharging.services.cp_auth import Prover
from evcharging.services.monitor import MonitorService

log = logging.getLogger(__name__)

HELP = "keys: R register | D deregister | A authenticate again | S status | H help"
NOT_REGISTERED = "not registered: press R to register with the Registry (or start with --register)"


@dataclass(frozen=True)
class MonitorSettings:
    engine: tuple[str, int]
    central: tuple[str, int]
    cp_id: str
    location: str = ""  # sent to the Registry at registration
    price: str = ""  # €/kWh, likewise
    registry: str = ""  # https://HOST:PORT; empty: none given (R says so)
    ca_file: Path | None = None  # the CA the Registry's certificate must chain to; None: system's
    credentials: Path | None = None  # None: credentials_file.default_path(cp_id)
    register: bool = False  # register at start when there are no credentials yet
    deregister: bool = False  # one-shot: deregister, delete the credentials, exit
    timing: Timing = field(default_factory=Timing)
    log_level: str = "INFO"
    summary_every: float = 30.0  # seconds between summaries; 0 = none
    auto_reauth: float | None = None  # seconds after a revocation to authenticate again; None: A

    @property
    def credentials_path(self) -> Path:
        return self.credentials or credentials_file.default_path(self.cp_id)


class FileCredentials:
    """This CP's credentials as the Central link sees them: the file, read again at every AUTH,
    so an alta or a baja from the menu counts at the next AUTH without a restart."""

    def __init__(self, path: Path, cp_id: str) -> None:
        self.path = path
        self.cp_id = cp_id
        self._prover: tuple[str, Prover] | None = None  # (its secret, the Prover: keys cached)
        self._said = ""  # the last file problem logged (said once, not at every AUTH)

    def stored(self) -> StoredCredentials | None:
        """The file's credentials, None without a file; `CredentialsFileError` if unusable."""
        creds = credentials_file.load(self.path)
        if creds is not None and creds.cp_id != self.cp_id:
            raise CredentialsFileError(
                f"{self.path} holds the credentials of CP {creds.cp_id}, not {self.cp_id}"
            )
        return creds

    def prover(self) -> Prover | None:
        """What answers Central's CHALLENGE; None while the CP is not (usably) registered."""
        try:
            creds = self.stored()
        except CredentialsFileError as exc:
            if str(exc) != self._said:
                log.error("cp=%s: %s", self.cp_id, exc)
                self._said = str(exc)
            return None
        self._said = ""
        if creds is None:
            self._prover = None
            return None
        if self._prover is None or self._prover[0] != creds.secret:
            self._prover = (creds.secret, Prover(self.cp_id, creds.secret))
        return self._prover[1]


class CannotEnrol(Exception):
    """An alta or baja that cannot even be asked for (nothing to send, or nowhere to send it)."""


class Enrolment:
    """Alta and baja at the Registry, and the credentials file that follows them."""

    def __init__(
        self, settings: MonitorSettings, credentials: FileCredentials, client: RegistryClient | None
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self.client = client

    def _registry(self) -> RegistryClient:
        if self.client is None:
            raise CannotEnrol(
                "no Registry given: start with --registry https://HOST:PORT (env EV_REGISTRY)"
            )
        return self.client

    async def register(self) -> str:
        """Alta (or, when already registered, a new secret and the current location/price)."""
        s = self.settings
        missing = [
            flag for flag, value in (("--location", s.location), ("--price", s.price)) if not value
        ]
        if missing:
            raise CannotEnrol(f"cannot register: {' and '.join(missing)} not given")
        client = self._registry()
        current = self.credentials.stored()
        answer = await client.register(
            s.cp_id, s.location, s.price, proof=current.secret if current else None
        )
        new = StoredCredentials(s.cp_id, answer.secret, client.url, answer.registered_at or "")
        try:
            credentials_file.save(self.credentials.path, new)
        except OSError as exc:
            raise CannotEnrol(
                f"registered, but the secret could not be saved to {self.credentials.path} "
                f"({exc.strerror}): an admin must deregister {s.cp_id}"
            ) from None
        what = "registered again (new secret)" if current else "registered"
        return (
            f"{what} at the Registry: {answer.location}, {answer.price_eur_per_kwh} €/kWh; "
            f"credentials in {self.credentials.path}"
        )

    async def deregister(self) -> str:
        """Baja: the Registry forgets the secret, then the file goes (the secret is worthless)."""
        current = self.credentials.stored()
        if current is None:
            raise CannotEnrol(f"not registered: no credentials in {self.credentials.path}")
        client = self._registry()
        try:
            await client.deregister(self.settings.cp_id, current.secret)
        except RegistryError as exc:
            if exc.status != 404:
                raise
            credentials_file.remove(self.credentials.path)
            return f"{exc}; its stale credentials file was deleted"
        credentials_file.remove(self.credentials.path)
        return f"deregistered from the Registry; {self.credentials.path} deleted"


def _utc(iso: str) -> str:
    """An ISO 8601 time as people read times here: '2025-01-02 14:03:05 UTC'."""
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class MonitorApp:
    """Everything EV_CP_M runs, startable and stoppable in-process (tests use it directly)."""

    def __init__(self, settings: MonitorSettings, *, registry: RegistryClient | None = None):
        self.settings = settings
        self._central_wake = asyncio.Event()
        self._engine_wake = asyncio.Event()
        self.service = MonitorService(
            settings.cp_id, on_change=self._wake_all, auto_reauth=settings.auto_reauth
        )
        self.credentials = FileCredentials(settings.credentials_path, settings.cp_id)
        if registry is None and settings.registry:
            registry = RegistryClient(settings.registry, settings.ca_file)
        self.enrolment = Enrolment(settings, self.credentials, registry)
        self.central_link = CentralLinkLoop(
            self.service,
            settings.central,
            credentials=self.credentials,
            timing=settings.timing,
            wake=self._central_wake,
        )
        self.engine_link = EngineLinkLoop(
            self.service, settings.engine, timing=settings.timing, wake=self._engine_wake
        )
        self.menu = MonitorMenu(self)
        self._tasks: list[asyncio.Task[None]] = []

    def _wake_all(self) -> None:
        self._central_wake.set()
        self._engine_wake.set()

    def start(self, lines: AsyncIterator[str] | None = None) -> None:
        self._tasks = [
            asyncio.create_task(self.engine_link.run(), name="EV_CP_M engine-link"),
            asyncio.create_task(self.central_link.run(), name="EV_CP_M central-link"),
        ]
        if self.settings.summary_every > 0:
            self._tasks.append(asyncio.create_task(self._summaries(), name="EV_CP_M summaries"))
        if lines is not None:
            self._tasks.append(asyncio.create_task(self.menu.run(lines), name="EV_CP_M menu"))

    def credentials_changed(self) -> None:
        """After an alta or baja: the Central link drops what it had and AUTHs again (or, not
        registered any more, stops and waits)."""
        self.central_link.reauthenticate()
        self._central_wake.set()

    def registration_line(self) -> str:
        try:
            creds = self.credentials.stored()
        except CredentialsFileError as exc:
            return str(exc)
        if creds is None:
            return NOT_REGISTERED
        since = f" since {_utc(creds.issued_at)}" if creds.issued_at else ""
        return f"registered{since} at {creds.registry or 'the Registry'}"

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

    async def run(self, lines: AsyncIterator[str] | None = None) -> int:
        """Register first if asked (`--register`) and not registered yet, then run until stopped;
        1 if the registration or a link fails."""
        if self.settings.register and not await self._register_at_start():
            return 1
        if self.credentials.prover() is None:
            log.warning("cp=%s: %s", self.settings.cp_id, NOT_REGISTERED)
        self.start(lines)
        try:
            links = [t for t in self._tasks if t.get_name() != "EV_CP_M menu"]
            done, _ = await asyncio.wait(links, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("%s failed", task.get_name(), exc_info=task.exception())
            return 1
        finally:
            await self.stop()

    async def _register_at_start(self) -> bool:
        try:
            if self.credentials.stored() is not None:
                return True
            log.info("cp=%s: %s", self.settings.cp_id, await self.enrolment.register())
        except (RegistryError, CannotEnrol, CredentialsFileError) as exc:
            log.error("cp=%s: cannot register: %s", self.settings.cp_id, exc)
            return False
        return True


async def deregister_once(settings: MonitorSettings) -> int:
    """`--deregister`: 0 when the CP is no longer registered, 1 (one line) otherwise.  No link
    starts: a one-shot touches only the Registry and the credentials file."""
    credentials = FileCredentials(settings.credentials_path, settings.cp_id)
    client = RegistryClient(settings.registry, settings.ca_file) if settings.registry else None
    try:
        said = await Enrolment(settings, credentials, client).deregister()
    except (RegistryError, CannotEnrol, CredentialsFileError) as exc:
        log.error("cp=%s: cannot deregister: %s", settings.cp_id, exc)
        return 1
    log.info("cp=%s: %s", settings.cp_id, said)
    return 0


class MonitorMenu:
    """The Monitor's keys, one command a line (a terminal or a pipe); a closed stdin ends the
    menu, never the Monitor."""

    def __init__(self, app: MonitorApp) -> None:
        self.app = app

    async def handle(self, line: str) -> None:
        key = line.strip()[:1].upper()
        actions: dict[str, Callable[[], Awaitable[str]]] = {
            "R": self._register,
            "D": self._deregister,
            "A": self._authenticate,
            "S": self._status,
            "H": self._help,
            "?": self._help,
        }
        if not key:
            return
        action = actions.get(key)
        if action is None:
            log.warning("unknown key %r; %s", line.strip()[:20], HELP)
            return
        try:
            log.info("%s", await action())
        except (RegistryError, CannotEnrol, CredentialsFileError) as exc:
            log.warning("%s", exc)  # refused, said; the Monitor goes on

    async def _register(self) -> str:
        said = await self.app.enrolment.register()
        self.app.credentials_changed()
        return said

    async def _deregister(self) -> str:
        said = await self.app.enrolment.deregister()
        self.app.credentials_changed()
        return said

    async def _authenticate(self) -> str:
        if self.app.credentials.prover() is None:
            return self.app.registration_line()
        self.app.central_link.reauthenticate()
        return "authenticating at Central again"

    async def _status(self) -> str:
        return f"{self.app.service.status_line()}\n  {self.app.registration_line()}"

    async def _help(self) -> str:
        return HELP

    async def run(self, lines: AsyncIterator[str]) -> None:
        log.info(HELP)
        async for line in lines:
            await self.handle(line)
        log.info("stdin closed: menu disabled, the Monitor keeps running")


# --- command line -------------------------------------------------------------------------


_PRICE: TypeAdapter[Decimal] = TypeAdapter(Price)
_LOCATION: TypeAdapter[str] = TypeAdapter(Location)


def _price(value: str) -> str:
    """€/kWh by the contracts' `Price` rule; empty: not given."""
    if not value:
        return ""
    try:
        return str(_PRICE.validate_python(positive_decimal(value)))
    except ValidationError:
        raise ValueError(f"must be at most {MAX_PRICE} €/kWh") from None  # > 0: checked above


def _location(value: str) -> str:
    """Where the CP stands, by the contracts' `Location` rule; empty: not given.  No '#' either
    (the socket frames' field separator), as everywhere a location is shown in the network."""
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


def _ca_file(value: str) -> Path:
    """A PEM file of CA certificates that TLS can load (checked now, not at the first alta)."""
    try:
        ssl.create_default_context(cafile=value)
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except ssl.SSLError:  # an OSError too: first
        raise ValueError("not a PEM file of CA certificates") from None
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None
    return path(value)


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
    reg = p.add_argument_group("registration at EV_Registry (HTTPS)")
    p.option(
        "--registry",
        env="EV_REGISTRY",
        type=registry_url,
        default="",
        metavar="URL",
        help="EV_Registry's https://HOST:PORT (http:// is refused)",
        group=reg,
    )
    p.option(
        "--ca-file",
        env="EV_CA_FILE",
        type=_ca_file,
        metavar="PEM",
        help="the CA that signed the Registry's certificate (default: the system's CAs)",
        group=reg,
    )
    p.option(
        "--credentials",
        env="EV_CP_CREDENTIALS",
        type=path,
        metavar="FILE",
        help="this CP's credentials, kept mode 0600 (default .evcharging/cp-CP_ID.json)",
        group=reg,
    )
    p.option(
        "--location",
        env="EV_CP_LOCATION",
        type=_location,
        default="",
        help="where the CP stands (sent to the Registry at registration)",
        group=reg,
    )
    p.option(
        "--price",
        env="EV_CP_PRICE",
        type=_price,
        default="",
        help="€/kWh (sent to the Registry at registration)",
        group=reg,
    )
    p.switch(
        "--register",
        env="EV_CP_REGISTER",
        help="register at start when there are no credentials yet, then run",
        group=reg,
    )
    p.switch(
        "--deregister",
        help="deregister, delete the credentials file and exit (0: done, 1: failed)",
        group=reg,
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
    p.option(
        "--auto-reauth",
        env="EV_MONITOR_AUTO_REAUTH",
        type=seconds,
        metavar="SECONDS",
        help="when Central revokes the CP's keys, authenticate again by itself this long after "
        "(default: only when A is pressed)",
    )
    p.log_level_option()
    args = p.parse_args(argv)
    settings = MonitorSettings(
        engine=args.engine,
        central=args.central,
        cp_id=args.cp_id,
        location=args.location,
        price=args.price,
        registry=args.registry,
        ca_file=args.ca_file,
        credentials=args.credentials,
        register=args.register,
        deregister=args.deregister,
        timing=Timing(args.interval, args.timeout, args.max_backoff, args.denied_retry),
        log_level=args.log_level,
        summary_every=args.summary_every,
        auto_reauth=args.auto_reauth,
    )
    _check(p, settings)
    return settings


def _check(p: Parser, s: MonitorSettings) -> None:
    """What only the arguments together say is wrong, and an unusable credentials file."""
    if s.register and s.deregister:
        p.error("--register and --deregister exclude each other")
    for wanted, flag in ((s.register, "--register"), (s.deregister, "--deregister")):
        if wanted and not s.registry:
            p.error(f"{flag} needs --registry https://HOST:PORT (or EV_REGISTRY)")
    if s.register and not (s.location and s.price):
        p.error("--register needs --location and --price (they go to the Registry)")
    try:
        FileCredentials(s.credentials_path, s.cp_id).stored()
    except CredentialsFileError as exc:
        p.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    setup_logging("EV_CP_M", settings.log_level)
    if settings.log_level != "DEBUG":  # httpx logs every request; the Monitor says what it did
        logging.getLogger("httpx").setLevel(logging.WARNING)
    if settings.deregister:
        return run(deregister_once(settings))
    log.info(
        "Monitor starting: cp=%s, Engine %s:%s, Central %s:%s, Registry %s, every %ss",
        settings.cp_id,
        *settings.engine,
        *settings.central,
        settings.registry or "not given",
        settings.timing.interval,
    )
    return run(MonitorApp(settings).run(stdin_lines()))
