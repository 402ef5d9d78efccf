"""EV_W: the Weather Control Office (stops the CPs of freezing cities through API_Central).

    EV_W --central URL [--ca-file FILE] [--token-file FILE | env EV_WEATHER_TOKEN]
         --locations FILE [--provider URL] [--api-key-file FILE | env OPENWEATHER_API_KEY]
         [--interval 4]

Thin main: arguments -> settings -> `services.weather_office.WeatherOffice` with its provider
(`adapters.openweather`) and Central (`adapters.api_central_client`), the locations file
(`adapters.locations_file`, re-read when edited by hand, rewritten after a menu change) and the
menu on stdin (`add CP01 Madrid`, `move CP01 Teruel`, `remove CP01`, `list`, `help`).  A change
takes effect in the next cycle, without a restart.  SIGINT/SIGTERM/SIGHUP: Central is told EV_W
stops (best effort), exit 0.  The API key and the token are never shown: a log filter blanks them
(and any `appid=`) in every line, besides the adapters' own care.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from evcharging.adapters import locations_file
from evcharging.adapters.api_central_client import CentralClient
from evcharging.adapters.locations_file import LocationsFileError, Stamp, city_problem
from evcharging.adapters.openweather import (
    DEFAULT_PROVIDER,
    OpenWeatherClient,
    redact,
)
from evcharging.adapters.outbound_http import base_url, tls_context
from evcharging.apps.common import (
    Parser,
    answer_menu,
    env,
    path,
    positive_seconds,
    run,
    setup_logging,
    stdin_lines,
)
from evcharging.contracts.fields import ID_RULE, is_valid_id
from evcharging.services.weather_office import WeatherOffice

log = logging.getLogger("evcharging.weather_office")

HELP = "commands: add CP CITY | move CP CITY | remove CP | list | help"
OPENWEATHER_HOST = "api.openweathermap.org"


@dataclass(frozen=True)
class WeatherOfficeSettings:
    central: str
    locations: Path
    token: str
    provider: str = DEFAULT_PROVIDER
    api_key: str | None = None
    ca_file: Path | None = None
    interval: float = 4.0
    log_level: str = "INFO"

    def __repr__(self) -> str:  # never the token or the key
        return (
            f"WeatherOfficeSettings(central={self.central!r}, provider={self.provider!r}, "
            f"locations={str(self.locations)!r}, interval={self.interval}, token=<set>, "
            f"api_key={'<set>' if self.api_key else None})"
        )


class SecretFilter(logging.Filter):
    """Blanks the token, the key and any `appid=` value in every record a handler writes."""

    def __init__(self, *secrets: str | None) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = redact(text, *self.secrets)
        if clean != text:
            record.msg, record.args = clean, None
        if record.exc_info:  # a traceback's text could carry one too: keep only its line
            record.msg = redact(f"{record.msg} ({record.exc_info[1]!r})", *self.secrets)
            record.exc_info = record.exc_text = None
        return True


class WeatherOfficeApp:
    """Everything EV_W runs: the cycle, the locations file and the menu."""

    def __init__(self, settings: WeatherOfficeSettings) -> None:
        self.settings = settings
        self._stamp: Stamp | None = None
        self._file_said = ""

    async def run(self, lines: AsyncIterator[str] | None = None) -> int:
        cfg = self.settings
        try:
            locations = locations_file.load(cfg.locations)
        except LocationsFileError as exc:
            log.error("%s", exc)
            return 2
        self._stamp = locations_file.stamp(cfg.locations)
        provider = OpenWeatherClient(cfg.provider, cfg.api_key, timeout=min(3.0, cfg.interval))
        central = CentralClient(cfg.central, cfg.token, ca_file=cfg.ca_file)
        self.office = WeatherOffice(
            provider,
            central,
            interval=cfg.interval,
            provider_name=cfg.provider,
            central_name=cfg.central,
            locations=dict(locations or {}),
        )
        log.info(
            "EV_W: %d CPs from %s; weather from %s every %g s; Central at %s",
            len(self.office.locations),
            cfg.locations,
            cfg.provider,
            cfg.interval,
            cfg.central,
        )
        if locations is None:
            log.info(
                "%s does not exist yet: add CPs from the menu (add CP01 Madrid)", cfg.locations
            )
        menu = (
            asyncio.create_task(
                answer_menu(lines, self.handle, HELP, "EV_W", log), name="EV_W menu"
            )
            if lines
            else None
        )
        try:
            await self._cycles()
        except asyncio.CancelledError:
            await self.office.goodbye()
            raise
        finally:
            if menu is not None:
                menu.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await menu
            await provider.aclose()
            await central.aclose()
        return 0

    async def _cycles(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            self._reread_file()
            delay = await self.office.cycle()
            await asyncio.sleep(max(0.0, started + delay - loop.time()))

    # --- the locations file -------------------------------------------------------------------

    def _reread_file(self) -> None:
        """An edit by hand counts from the next cycle too; a bad edit is said once, ignored."""
        now = locations_file.stamp(self.settings.locations)
        if now == self._stamp:
            return
        try:
            locations = locations_file.load(self.settings.locations) or {}
        except LocationsFileError as exc:
            if str(exc) != self._file_said:
                log.error("%s (the locations stay as they were)", exc)
                self._file_said = str(exc)
            return
        self._stamp, self._file_said = now, ""
        if locations != self.office.locations:
            self.office.replace_locations(locations)
            log.info("%s changed: %d CPs", self.settings.locations, len(locations))

    def _save(self) -> str:
        try:
            locations_file.save(self.settings.locations, self.office.locations)
        except LocationsFileError as exc:
            return f" (not saved: {exc})"
        self._stamp = locations_file.stamp(self.settings.locations)
        return ""

    # --- the menu -----------------------------------------------------------------------------

    def handle(self, line: str) -> list[str]:
        """One menu line -> what to show."""
        words = line.split()
        if not words:
            return []
        command, args = words[0].lower(), words[1:]
        if command in ("help", "h", "?"):
            return [HELP]
        if command == "list":
            return self.office.listing()
        if command in ("add", "move", "set") and len(args) >= 2:
            cp_id, city = args[0], " ".join(args[1:])
            problem = _cp_problem(cp_id) or city_problem(city)
            if problem:
                return [problem]
            before = self.office.locations.get(cp_id)
            if command == "add" and before is not None:
                return [f"{cp_id} is already in {before}: move {cp_id} CITY changes it"]
            said = self.office.set_city(cp_id, city)
            return [said + (self._save() if before != city else "")]
        if command == "remove" and len(args) == 1:
            if args[0] not in self.office.locations:
                return [f"{args[0]} is not watched"]
            said = self.office.remove(args[0])
            return [said + self._save()]
        return [f"not understood: {line.strip()[:40]!r}; {HELP}"]


def _cp_problem(cp_id: str) -> str | None:
    return None if is_valid_id(cp_id) else f"{cp_id[:20]!r} is not a CP id ({ID_RULE})"


# --- command line -------------------------------------------------------------------------


def _central(value: str) -> str:
    return base_url(value)


def _provider(value: str) -> str:
    return base_url(value)


def _ca_file(value: str) -> Path:
    try:
        tls_context(Path(value))
    except ValueError:
        raise ValueError("not a readable PEM file of CA certificates") from None
    return path(value)


def _secret_file(value: str) -> Path:
    return path(value)


def _read_secret(parser: Parser, file: Path | None, variable: str, what: str) -> str | None:
    """A secret from its file (first line, stripped), else its variable; never echoed."""
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(
                f"cannot read the {what} file {file}: {getattr(exc, 'strerror', None) or 'not text'}"
            )
        if not text:
            parser.error(f"the {what} file {file} is empty")
        return text.splitlines()[0].strip()
    return (env(variable) or "").strip() or None


def parse_args(argv: list[str] | None = None) -> WeatherOfficeSettings:
    p = Parser(
        prog="EV_W",
        description="Weather Control Office: stops the CPs of freezing cities through Central.",
    )
    p.option(
        "--central",
        env="EV_W_CENTRAL",
        type=_central,
        metavar="URL",
        help="API_Central, http(s)://HOST:PORT (required)",
    )
    p.option(
        "--ca-file",
        env="EV_W_CA_FILE",
        type=_ca_file,
        metavar="FILE",
        help="the CA Central's https certificate must chain to (default: the system's CAs)",
    )
    p.option(
        "--token-file",
        env="EV_WEATHER_TOKEN_FILE",
        type=_secret_file,
        metavar="FILE",
        help="the weather token Central was given (--weather-token); or env EV_WEATHER_TOKEN",
    )
    p.option(
        "--locations",
        env="EV_W_LOCATIONS",
        type=path,
        metavar="FILE",
        help="YAML `CP01: Madrid`, the city of each CP (required; the menu rewrites it)",
    )
    p.option(
        "--provider",
        env="EV_W_PROVIDER",
        type=_provider,
        default=DEFAULT_PROVIDER,
        metavar="URL",
        help="OpenWeather, or EV_WeatherService (e.g. http://127.0.0.1:8081)",
    )
    p.option(
        "--api-key-file",
        env="OPENWEATHER_API_KEY_FILE",
        type=_secret_file,
        metavar="FILE",
        help="the OpenWeather API key; or env OPENWEATHER_API_KEY",
    )
    p.option(
        "--interval",
        env="EV_W_INTERVAL",
        type=positive_seconds,
        default=4.0,
        metavar="SECONDS",
        help="seconds between two cycles",
    )
    p.log_level_option()
    a = p.parse_args(argv)
    if a.central is None:
        p.error("--central URL is required (API_Central, e.g. http://127.0.0.1:8000)")
    if a.locations is None:
        p.error("--locations FILE is required (YAML `CP01: Madrid`; made by the menu if missing)")
    token = _read_secret(p, a.token_file, "EV_WEATHER_TOKEN", "token")
    if token is None:
        p.error(
            "no weather token: --token-file FILE or EV_WEATHER_TOKEN (Central's --weather-token)"
        )
    api_key = _read_secret(p, a.api_key_file, "OPENWEATHER_API_KEY", "API key")
    if api_key is None and urlsplit(a.provider).hostname == OPENWEATHER_HOST:
        p.error("no OpenWeather API key: --api-key-file FILE or OPENWEATHER_API_KEY")
    return WeatherOfficeSettings(
        central=a.central,
        locations=a.locations,
        token=token,
        provider=a.provider,
        api_key=api_key,
        ca_file=a.ca_file,
        interval=a.interval,
        log_level=a.log_level,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    setup_logging("EV_W", cfg.log_level)
    secrets = SecretFilter(cfg.token, cfg.api_key)
    for handler in logging.getLogger().handlers:
        handler.addFilter(secrets)
    if cfg.central.startswith("http://") and urlsplit(cfg.central).hostname not in (
        "127.0.0.1",
        "localhost",
        "::1",
    ):
        log.warning("Central over plain http: the weather token travels in clear (use https)")
    return run(WeatherOfficeApp(cfg).run(stdin_lines()))


if __name__ == "__main__":
    sys.exit(main())
