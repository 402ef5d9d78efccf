"""EV_WeatherService's HTTP answer: OpenWeather's Current Weather Data, request and JSON shape.

    GET /data/2.5/weather?q=CITY&appid=KEY[&units=standard|metric|imperial]

As OpenWeather: Kelvin by default, °C with `units=metric`, ºF with `units=imperial`; an unknown
city is 404 `{"cod": "404", "message": "city not found"}`; a wrong key 401 `{"cod": 401,
"message": "Invalid API key. ..."}`; no `q` 400 `{"cod": "400", "message": "Nothing to
geocode"}`.  Only the temperature is set from the table; the other fields are plausible
constants, so a client written for the real service reads this one unchanged.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import zlib
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from evcharging.adapters.city_temperatures import CityTable

INVALID_KEY = "Invalid API key. Please see https://openweathermap.org/faq#error401 for more info."
SLOW_FOR = 60.0  # seconds a `slow` city takes to answer (longer than any client waits)


def create_app(table: CityTable, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="EV_WeatherService", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/data/2.5/weather")
    async def weather(
        q: str | None = None, appid: str | None = None, units: str = "standard"
    ) -> Response:
        if api_key and not hmac.compare_digest((appid or "").encode(), api_key.encode()):
            return JSONResponse({"cod": 401, "message": INVALID_KEY}, status_code=401)
        if not q or not q.strip():
            return JSONResponse({"cod": "400", "message": "Nothing to geocode"}, status_code=400)
        fault = table.fault(q)
        if fault == "slow":
            await asyncio.sleep(SLOW_FOR)
        elif fault == "garbage":
            return PlainTextResponse("<html><body>502 Bad Gateway</body></html>")
        elif fault == "500":
            return JSONResponse({"cod": 500, "message": "Internal error"}, status_code=500)
        found = table.lookup(q)
        if found is None:
            return JSONResponse({"cod": "404", "message": "city not found"}, status_code=404)
        name, celsius = found
        return JSONResponse(current_weather(name, convert(celsius, units), freezing=celsius < 0))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def convert(celsius: float, units: str) -> float:
    if units == "metric":
        return round(celsius, 2)
    if units == "imperial":
        return round(celsius * 9 / 5 + 32, 2)
    return round(celsius + 273.15, 2)  # "standard", and anything OpenWeather does not know


def current_weather(name: str, temp: float, *, freezing: bool) -> dict[str, Any]:
    """OpenWeather's JSON for one city (https://openweathermap.org/current); `temp` in the
    units asked for."""
    seed = zlib.crc32(name.casefold().encode())
    sky = (
        {"id": 600, "main": "Snow", "description": "light snow", "icon": "13d"}
        if freezing
        else {"id": 800, "main": "Clear", "description": "clear sky", "icon": "01d"}
    )
    now = int(time.time())
    return {
        "coord": {
            "lon": round(seed % 36000 / 100 - 180, 4),
            "lat": round(seed % 17000 / 100 - 85, 4),
        },
        "weather": [sky],
        "base": "stations",
        "main": {
            "temp": temp,
            "feels_like": round(temp - 1.2, 2),
            "temp_min": round(temp - 0.5, 2),
            "temp_max": round(temp + 0.5, 2),
            "pressure": 1016,
            "humidity": 62,
        },
        "visibility": 10000,
        "wind": {"speed": 3.6, "deg": 250},
        "clouds": {"all": 0 if not freezing else 75},
        "dt": now,
        "sys": {
            "country": "ES",
            "sunrise": now - now % 86400 + 25200,
            "sunset": now - now % 86400 + 66600,
        },
        "timezone": 3600,
        "id": seed % 10_000_000,
        "name": name,
        "cod": 200,
    }
