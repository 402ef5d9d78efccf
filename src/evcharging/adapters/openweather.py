"""EV_W's client of OpenWeather's Current Weather Data (or the local EV_WeatherService, which
answers the same request with the same JSON).

    GET {provider}/data/2.5/weather?q=CITY&appid=KEY&units=metric   -> main.temp in °C

Why the rules here: a temperature decides whether CPs stop, so anything that is not a number in
`main.temp` of a 200 answer (an HTTP error, a timeout, a refused connection, a body that is not
JSON or has no number) is an error for that city, never a temperature.  The API key travels in
the query string, so it is never shown: httpx's request logs are kept at WARNING, no exception
of httpx (which carries the URL) leaves this module, and any text taken from an answer is
redacted before it is shown.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from typing import Any

import httpx

from evcharging.adapters.outbound_http import base_url, quiet_http_logs, root_cause
from evcharging.services.weather_office import Reading

log = logging.getLogger(__name__)

DEFAULT_PROVIDER = "https://api.openweathermap.org"
WEATHER_PATH = "/data/2.5/weather"
REDACTED = "***"
_APPID = re.compile(r"(appid=)[^&\s\"']*", re.IGNORECASE)


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every `appid=...` value and every given secret replaced by ***."""
    text = _APPID.sub(rf"\g<1>{REDACTED}", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


class OpenWeatherClient:
    """One provider, one connection pool; `reading(city)` never raises for the provider's
    faults (each becomes a `Reading` with an error)."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout: float = 3.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        quiet_http_logs()
        self.url = base_url(url)
        self.timeout = timeout
        self._key = api_key or None
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=timeout, transport=transport, follow_redirects=False
        )

    def __repr__(self) -> str:  # never the key
        return f"OpenWeatherClient(url={self.url!r}, api_key={'<set>' if self._key else None})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def readings(self, cities: list[str]) -> dict[str, Reading]:
        """Every city at once (one request each)."""
        answers = await asyncio.gather(*(self.reading(city) for city in cities))
        return {reading.city: reading for reading in answers}

    async def reading(self, city: str) -> Reading:
        params = {"q": city, "units": "metric"}
        if self._key:
            params["appid"] = self._key
        try:
            response = await self._http.get(WEATHER_PATH, params=params)
        except httpx.TimeoutException:
            return Reading(city, error=f"no answer within {self.timeout:g} s", unreachable=True)
        except httpx.TransportError as exc:
            return Reading(city, error=self._unreachable(exc), unreachable=True)
        except httpx.HTTPError as exc:  # e.g. a bad URL built from the city: never raised on
            return Reading(city, error=self._shown(f"request failed: {type(exc).__name__}"))
        if response.status_code != 200:
            message = _message(response)
            said = f"HTTP {response.status_code}" + (f": {message}" if message else "")
            return Reading(city, error=self._shown(said))
        temperature = _temperature(response)
        if temperature is None:
            return Reading(city, error="the answer has no temperature (main.temp)")
        return Reading(city, temperature_c=temperature)

    def _unreachable(self, exc: httpx.TransportError) -> str:
        cause = root_cause(exc)
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        return self._shown(
            f"cannot reach it: {' '.join(str(cause).split()) or type(cause).__name__}"
        )

    def _shown(self, text: str) -> str:
        return redact(text, self._key)[:200]


def _temperature(response: httpx.Response) -> float | None:
    """`main.temp` when it is a finite number (not a bool, not a text), else None."""
    try:
        body: Any = response.json()
    except ValueError:
        return None
    main = body.get("main") if isinstance(body, dict) else None
    temp = main.get("temp") if isinstance(main, dict) else None
    if isinstance(temp, bool) or not isinstance(temp, int | float):
        return None
    value = float(temp)
    return value if math.isfinite(value) else None


def _message(response: httpx.Response) -> str:
    """OpenWeather's `message` on an error (`{"cod": "404", "message": "city not found"}`)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return " ".join(message.split())[:120] if isinstance(message, str) else ""
