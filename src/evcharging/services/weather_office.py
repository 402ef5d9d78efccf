"""The Weather Control Office (EV_W): every few seconds, each watched city's temperature, a
decision per CP, and Central brought in line with those decisions.

One cycle:
1. one reading per distinct city from the provider (an error is an error, never a temperature);
2. a decision per CP with `domain.weather.alert_after` (THE rule); a CP whose city has no
   reading this cycle keeps its last decision;
3. Central's alerts read once at start and after Central was away; then only the differences
   are written: an alert where EV_W decides one and Central has none (or has it for another
   city), a cancellation where Central has one EV_W does not decide (or for a CP EV_W no longer
   watches);
4. the report (EV_W's liveness and what the front shows).

Central unreachable: the next try after 1, 2, 4, then every 8 s, said once per outage, and the
cycle runs in full as soon as it answers.  The provider down (no city answers): asked again
after the same backoff, said once per outage; the report says each city's error meanwhile.
The terminal gets one line per change (a write to Central, a city's error, an outage) and a
summary at most once a minute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from evcharging.domain.weather import alert_after

log = logging.getLogger(__name__)

BACKOFF = (1.0, 2.0, 4.0, 8.0)  # seconds between tries while Central or the provider is down
SUMMARY_EVERY = 60.0  # seconds
STOP_TIMEOUT = 2.0  # seconds for the goodbye (DELETE report) when stopping
REFUSED_RETRY = 60.0  # seconds before a write Central refused is tried again


# --- the ports --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """One city's answer: a temperature in °C, or the reason there is none."""

    city: str
    temperature_c: float | None = None
    error: str | None = None
    unreachable: bool = False  # no HTTP answer at all (refused, timed out)

    @property
    def ok(self) -> bool:
        return self.temperature_c is not None


class WeatherProvider(Protocol):
    async def readings(self, cities: list[str]) -> dict[str, Reading]: ...


class CentralUnavailable(Exception):
    """Central cannot be talked to now (no answer, failing, or refusing the token)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


class CentralRefused(Exception):
    """Central answered no to one call (an unknown CP, a bad field)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class CentralAlert:
    cp_id: str
    city: str
    temperature_c: float | None


class CentralWeather(Protocol):
    async def alerts(self) -> dict[str, CentralAlert]: ...
    async def put_alert(self, cp_id: str, city: str, temperature_c: float) -> None: ...
    async def delete_alert(self, cp_id: str) -> bool: ...
    async def put_report(
        self, locations: list[dict[str, Any]], cps: dict[str, str], interval_s: float
    ) -> None: ...
    async def delete_report(self) -> None: ...


# --- the office ---------------------------------------------------------------------------------


@dataclass
class _Outage:
    """One dependency's outage: said once when it starts and once when it ends."""

    what: str
    started: float | None = None
    tries: int = 0
    retry_at: float = 0.0
    reason: str = ""

    @property
    def on(self) -> bool:
        return self.started is not None

    def failed(self, now: float, reason: str) -> float:
        """Counts a failure; the seconds to wait before the next try."""
        delay = BACKOFF[min(self.tries, len(BACKOFF) - 1)]
        if self.started is None:
            self.started = now
            log.warning(
                "%s: %s; retrying after 1, 2, 4, then every %g s", self.what, reason, BACKOFF[-1]
            )
        self.tries += 1
        self.reason = reason
        self.retry_at = now + delay
        return delay

    def ended(self, now: float) -> None:
        if self.started is not None:
            log.info("%s: answers again (away %.0f s)", self.what, now - self.started)
        self.started = None
        self.tries = 0
        self.retry_at = 0.0
        self.reason = ""


@dataclass
class _Refusal:
    key: tuple[bool, str]  # (the decision, the city) Central refused
    at: float


@dataclass
class WeatherOffice:
    """The cycle's state and logic; the program supplies the provider, Central and a clock."""

    provider: WeatherProvider
    central: CentralWeather
    interval: float = 4.0
    provider_name: str = ""  # its URL, for the log
    central_name: str = ""  # likewise
    clock: Callable[[], float] = field(default=lambda: asyncio.get_running_loop().time())
    locations: dict[str, str] = field(default_factory=dict)  # CP id -> city

    def __post_init__(self) -> None:
        self.decisions: dict[str, bool] = {}  # CP id -> under a weather alert, as EV_W decides
        self.readings: dict[str, Reading] = {}  # city -> this cycle's reading
        self.last_good: dict[str, float] = {}  # city -> its last temperature
        self.central_view: dict[str, CentralAlert] | None = None  # None: to be read again
        self.central_outage = _Outage(_at("Central", self.central_name))
        self.provider_outage = _Outage(_at("weather provider", self.provider_name))
        self._city_errors: dict[str, str] = {}  # city -> its error, said once
        self._refused: dict[str, _Refusal] = {}
        self._last_summary: float | None = None
        self.cycles = 0

    # --- where the CPs are (the menu and the file) -------------------------------------------

    def set_city(self, cp_id: str, city: str) -> str:
        """Puts `cp_id` in `city` (added or moved); the reply for the menu."""
        before = self.locations.get(cp_id)
        self.locations[cp_id] = city
        self._refused.pop(cp_id, None)
        if before is None:
            return f"{cp_id} added in {city}: watched from the next cycle"
        if before == city:
            return f"{cp_id} is already in {city}"
        return f"{cp_id} moved from {before} to {city}: follows {city} from the next cycle"

    def remove(self, cp_id: str) -> str:
        city = self.locations.pop(cp_id, None)
        if city is None:
            return f"{cp_id} is not watched"
        self.decisions.pop(cp_id, None)
        self._refused.pop(cp_id, None)
        return f"{cp_id} removed (was in {city}); an alert it has at Central is cancelled"

    def replace_locations(self, locations: Mapping[str, str]) -> None:
        """The whole mapping at once (the file changed by hand)."""
        for cp_id in set(self.locations) - set(locations):
            self.decisions.pop(cp_id, None)
        self.locations = dict(locations)

    def listing(self) -> list[str]:
        """One line per CP: city, last temperature, decision."""
        if not self.locations:
            return ["no CPs watched: add CP01 Madrid"]
        lines = []
        for cp_id, city in sorted(self.locations.items()):
            reading = self.readings.get(city)
            if reading is not None and reading.ok:
                weather = f"{reading.temperature_c:.1f} °C"
            elif reading is not None:
                weather = f"no reading ({reading.error})"
            else:
                weather = "not read yet"
            decision = {True: "ALERT", False: "ok", None: "no decision yet"}[
                self.decisions.get(cp_id)
            ]
            lines.append(f"{cp_id:<8} {city:<20} {weather:<24} {decision}"[:79])
        return lines

    # --- the cycle -----------------------------------------------------------------------------

    async def cycle(self) -> float:
        """One cycle; the seconds to wait before the next one."""
        self.cycles += 1
        cities = sorted(set(self.locations.values()))
        await self._read(cities)
        delay = await self._sync(cities)
        self._summary()
        return delay

    async def _read(self, cities: list[str]) -> None:
        now = self.clock()
        outage = self.provider_outage
        if outage.on and now < outage.retry_at:
            waiting = f"provider down: {outage.reason}"
            self.readings = {c: Reading(c, error=waiting, unreachable=True) for c in cities}
            return
        readings = await self.provider.readings(cities) if cities else {}
        self.readings = {c: readings.get(c) or Reading(c, error="no answer") for c in cities}
        down = bool(cities) and all(r.unreachable for r in self.readings.values())
        if down:
            outage.failed(self.clock(), next(iter(self.readings.values())).error or "no answer")
            return
        outage.ended(self.clock())
        for city, reading in self.readings.items():
            if reading.ok:
                assert reading.temperature_c is not None
                self.last_good[city] = reading.temperature_c
                if self._city_errors.pop(city, None) is not None:
                    log.info("%s: reading again (%.1f °C)", city, reading.temperature_c)
            elif self._city_errors.get(city) != reading.error:
                self._city_errors[city] = reading.error or "no reading"
                log.warning(
                    "%s: no reading (%s); its CPs keep their last decision", city, reading.error
                )
        for city in set(self._city_errors) - set(cities):
            del self._city_errors[city]

    def _decide(self) -> None:
        known = self.central_view or {}
        for cp_id, city in self.locations.items():
            reading = self.readings.get(city)
            if reading is None or reading.temperature_c is None:
                continue  # no reading: the last decision stands
            alerted = self.decisions.get(cp_id, cp_id in known)
            self.decisions[cp_id] = alert_after(reading.temperature_c, alerted)

    async def _sync(self, cities: list[str]) -> float:
        """Central's alerts first when not known (they are the last decision of a CP EV_W has
        not decided yet), then the decisions, the differences written, the report."""
        outage = self.central_outage
        try:
            if self.central_view is None:
                self.central_view = await self.central.alerts()
            self._decide()
            await self._reconcile()
            await self.central.put_report(self._report(cities), dict(self.locations), self.interval)
        except CentralUnavailable as exc:
            self._decide()  # EV_W keeps deciding; Central hears it when it answers
            self.central_view = None  # read again when it answers: it may have changed meanwhile
            return outage.failed(self.clock(), str(exc))
        outage.ended(self.clock())
        return self.interval

    async def _reconcile(self) -> None:
        assert self.central_view is not None
        view = self.central_view
        for cp_id, city in sorted(self.locations.items()):
            decided = self.decisions.get(cp_id)
            has = view.get(cp_id)
            if decided is None:
                continue
            if decided and (has is None or has.city != city):
                reading = self.readings.get(city)
                if reading is None or reading.temperature_c is None:
                    continue  # moved to a city not read yet: written once it is
                await self._write(
                    cp_id, (True, city), self._alert(cp_id, city, reading.temperature_c)
                )
            elif not decided and has is not None:
                reading = self.readings.get(city)
                temp = f", {reading.temperature_c:.1f} °C" if reading and reading.ok else ""
                await self._write(cp_id, (False, city), self._cancel(cp_id, f"{city}{temp}"))
        for cp_id in sorted(set(view) - set(self.locations)):
            await self._write(cp_id, (False, ""), self._cancel(cp_id, "no longer watched"))

    def _alert(self, cp_id: str, city: str, temperature_c: float) -> Callable[[], Any]:
        async def send() -> None:
            await self.central.put_alert(cp_id, city, temperature_c)
            assert self.central_view is not None
            self.central_view[cp_id] = CentralAlert(cp_id, city, temperature_c)
            log.info("%s (%s, %.1f °C): weather alert sent to Central", cp_id, city, temperature_c)

        return send

    def _cancel(self, cp_id: str, why: str) -> Callable[[], Any]:
        async def send() -> None:
            cancelled = await self.central.delete_alert(cp_id)
            assert self.central_view is not None
            self.central_view.pop(cp_id, None)
            said = "alert cancelled at Central" if cancelled else "alert already cancelled"
            log.info("%s (%s): %s", cp_id, why, said)

        return send

    async def _write(self, cp_id: str, key: tuple[bool, str], send: Callable[[], Any]) -> None:
        """One write; a refusal is said once and not repeated for a minute (each is audited)."""
        refused = self._refused.get(cp_id)
        now = self.clock()
        if refused is not None and refused.key == key and now - refused.at < REFUSED_RETRY:
            return
        try:
            await send()
        except CentralRefused as exc:
            if refused is None or refused.key != key:
                log.warning("%s: Central refused: %s", cp_id, exc)
            self._refused[cp_id] = _Refusal(key, now)
            return
        self._refused.pop(cp_id, None)

    def _report(self, cities: list[str]) -> list[dict[str, Any]]:
        out = []
        for city in cities:
            reading = self.readings.get(city) or Reading(city, error="not read yet")
            out.append(
                {"city": city, "temperature_c": reading.temperature_c, "error": reading.error}
            )
        return out

    def _summary(self) -> None:
        now = self.clock()
        if self._last_summary is not None and now - self._last_summary < SUMMARY_EVERY:
            return
        self._last_summary = now
        log.info("%s", self.summary_line())

    def summary_line(self) -> str:
        cities = sorted(set(self.locations.values()))
        alerts = sorted(cp for cp, on in self.decisions.items() if on and cp in self.locations)
        read = [r for r in self.readings.values() if r.ok]
        parts = [f"{_n(len(self.locations), 'CP')} in {_n(len(cities), 'city', 'cities')}"]
        parts.append(f"{len(alerts)} under alert" + (f" ({_few(alerts)})" if alerts else ""))
        if len(read) < len(cities):
            parts.append(f"{_n(len(cities) - len(read), 'city', 'cities')} without a reading")
        if read:
            coldest = min(read, key=lambda r: r.temperature_c or 0.0)
            parts.append(f"coldest {coldest.city} {coldest.temperature_c:.1f} °C")
        if self.central_outage.on:
            parts.append("Central unreachable")
        return "; ".join(parts)

    # --- stopping ------------------------------------------------------------------------------

    async def goodbye(self) -> None:
        """Tells Central EV_W stops (best effort, a short wait): the front shows it at once."""
        try:
            await asyncio.wait_for(self.central.delete_report(), STOP_TIMEOUT)
        except (CentralUnavailable, CentralRefused, TimeoutError) as exc:
            log.info("stopping: Central not told (%s)", exc or "no answer")
            return
        log.info("stopping: Central told EV_W stops")


def _few(ids: list[str], most: int = 4) -> str:
    shown = ", ".join(ids[:most])
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "")


def _at(what: str, url: str) -> str:
    return f"{what} at {url}" if url else what


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"
