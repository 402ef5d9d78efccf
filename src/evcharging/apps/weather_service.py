"""EV_WeatherService: a local stand-in for OpenWeather's Current Weather Data.

    EV_WeatherService [--port 8081] [--host 127.0.0.1] [--cities FILE] [--api-key KEY]
                      [--cycle CITY:LOW:HIGH:SECONDS[,...]]

Answers `GET /data/2.5/weather?q=CITY&appid=KEY[&units=metric]` as OpenWeather does (see
`adapters.web.weather_service_api`), so EV_W, the demo and the tests run offline and the real
OpenWeather is one flag away (EV_W's `--provider`).  Temperatures come from `--cities` (YAML
`Madrid: 12.5`, re-read when it changes), from the menu on stdin (`set CITY TEMP`), and from
`--cycle` (a city that freezes and thaws on a timer: the demo's).  Without `--api-key` (or
`OPENWEATHER_API_KEY`) any key is accepted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from evcharging.adapters.city_temperatures import FAULTS, CityTable, Cycle
from evcharging.adapters.listening import bind
from evcharging.adapters.locations_file import LocationsFileError, city_problem
from evcharging.adapters.web.embedded import EmbeddedServer
from evcharging.adapters.web.weather_service_api import create_app
from evcharging.apps.common import (
    Parser,
    answer_menu,
    path,
    port,
    run,
    setup_logging,
    stdin_lines,
)

log = logging.getLogger("evcharging.weather_service")

HELP = "commands: set CITY TEMP | list | fault CITY garbage|slow|500|none | help"


def cycles(value: str) -> tuple[Cycle, ...]:
    """One or more `CITY:LOW:HIGH:SECONDS`, comma-separated."""
    return tuple(Cycle.parse(item) for item in value.split(",") if item.strip())


@dataclass(frozen=True)
class WeatherServiceSettings:
    host: str = "127.0.0.1"
    port: int = 8081
    cities: Path | None = None
    api_key: str | None = None
    cycles: tuple[Cycle, ...] = ()
    log_level: str = "INFO"

    def __repr__(self) -> str:  # never the key
        return (
            f"WeatherServiceSettings(host={self.host!r}, port={self.port}, cities={self.cities}, "
            f"api_key={'<set>' if self.api_key else None}, cycles={self.cycles})"
        )


class WeatherServiceApp:
    def __init__(self, settings: WeatherServiceSettings) -> None:
        self.settings = settings
        self.table = CityTable(settings.cities, settings.cycles)

    async def run(self, lines: AsyncIterator[str] | None = None) -> int:
        cfg = self.settings
        try:
            self.table.load()
        except LocationsFileError as exc:
            log.error("%s", exc)
            return 2
        listener = bind("EV_WeatherService", cfg.host, cfg.port)
        http = EmbeddedServer(
            uvicorn.Config(
                create_app(self.table, cfg.api_key),
                host=cfg.host,
                port=cfg.port,
                log_level="warning",
                access_log=False,  # the URL holds the client's API key
                lifespan="off",
                server_header=False,
            )
        )
        log.info(
            "EV_WeatherService on http://%s:%s/data/2.5/weather (%s; %s)",
            cfg.host,
            listener.getsockname()[1],
            f"cities from {cfg.cities}" if cfg.cities else "no cities file",
            "API key required" if cfg.api_key else "any API key accepted",
        )
        for line in self.table.listing():
            log.info("  %s", line)
        menu = (
            asyncio.create_task(answer_menu(lines, self.handle, HELP, "the service", log))
            if lines is not None
            else None
        )
        try:
            await http.serve([listener])
        finally:
            http.should_exit = True
            listener.close()
            if menu is not None:
                menu.cancel()
        return 0

    def handle(self, line: str) -> list[str]:
        words = line.split()
        if not words:
            return []
        command = words[0].lower()
        if command in ("help", "h", "?"):
            return [HELP]
        if command == "list":
            return self.table.listing()
        if command == "set" and len(words) >= 3:
            city = " ".join(words[1:-1])
            try:
                temp = float(words[-1])
            except ValueError:
                return [f"not a temperature: {words[-1]!r}; {HELP}"]
            problem = city_problem(city) or (None if math.isfinite(temp) else "not a number")
            return [problem] if problem else [self.table.set(city, temp)]
        if command == "fault" and len(words) >= 3 and words[-1] in (*FAULTS, "none"):
            return [self.table.set_fault(" ".join(words[1:-1]), words[-1])]
        return [f"not understood: {line.strip()[:40]!r}; {HELP}"]


def parse_args(argv: list[str] | None = None) -> WeatherServiceSettings:
    p = Parser(
        prog="EV_WeatherService",
        description="A local stand-in for OpenWeather's Current Weather Data (offline runs).",
    )
    p.option("--host", env="EV_WEATHER_SERVICE_HOST", default="127.0.0.1", help="bind address")
    p.option("--port", env="EV_WEATHER_SERVICE_PORT", type=port, default=8081, help="HTTP port")
    p.option(
        "--cities",
        env="EV_WEATHER_CITIES",
        type=path,
        metavar="FILE",
        help="YAML `Madrid: 12.5` (°C), re-read when it changes; `set` writes to it",
    )
    p.option(
        "--api-key",
        env="OPENWEATHER_API_KEY",
        metavar="KEY",
        help="the only appid accepted (none: any key is accepted)",
    )
    p.option(
        "--cycle",
        env="EV_WEATHER_CYCLE",
        type=cycles,
        default=(),
        metavar="CITY:LOW:HIGH:SECONDS",
        help="a city at LOW for half of SECONDS, then HIGH, and so on (comma-separated for more)",
    )
    p.log_level_option()
    a = p.parse_args(argv)
    return WeatherServiceSettings(
        host=a.host,
        port=a.port,
        cities=a.cities,
        api_key=a.api_key or None,
        cycles=a.cycle,
        log_level=a.log_level,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    setup_logging("EV_WeatherService", cfg.log_level)
    return run(WeatherServiceApp(cfg).run(stdin_lines()))


if __name__ == "__main__":
    sys.exit(main())
