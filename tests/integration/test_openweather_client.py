"""EV_W's provider client against the real EV_WeatherService process: OpenWeather's request and
shape, units, and every failure an error for that city (never a temperature, never the key)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from evcharging.adapters.openweather import OpenWeatherClient, redact
from tests.support.processes import Network, Proc
from tests.support.weather import API_KEY, procs, weather_service

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Proc, str]]:
    cities = tmp_path / "cities.yaml"
    cities.write_text("Madrid: 12.5\nTeruel: -4\nLugo: 7\n", encoding="utf-8")
    net: Network = procs(tmp_path)
    try:
        proc, port = weather_service(net, cities)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        net.stop_all()
        assert API_KEY not in "".join(p.output() for p in net.procs)


async def test_the_temperature_in_celsius_with_units_metric(service: tuple[Proc, str]) -> None:
    _, url = service
    client = OpenWeatherClient(url, API_KEY)
    try:
        readings = await client.readings(["Madrid", "teruel"])
    finally:
        await client.aclose()
    assert readings["Madrid"].temperature_c == 12.5
    assert readings["teruel"].temperature_c == -4.0


def test_the_service_answers_in_openweathers_shape_kelvin_by_default(
    service: tuple[Proc, str],
) -> None:
    _, url = service
    kelvin = httpx.get(f"{url}/data/2.5/weather", params={"q": "Madrid", "appid": API_KEY}).json()
    assert kelvin["main"]["temp"] == 285.65
    assert kelvin["cod"] == 200
    assert kelvin["name"] == "Madrid"
    assert {"coord", "weather", "main", "name", "cod"} <= set(kelvin)
    assert {"temp", "feels_like", "temp_min", "temp_max", "pressure", "humidity"} <= set(
        kelvin["main"]
    )
    f = httpx.get(
        f"{url}/data/2.5/weather", params={"q": "Madrid,ES", "appid": API_KEY, "units": "imperial"}
    ).json()
    assert f["main"]["temp"] == 54.5
    missing = httpx.get(f"{url}/data/2.5/weather", params={"q": "Atlantis", "appid": API_KEY})
    assert (missing.status_code, missing.json()) == (
        404,
        {"cod": "404", "message": "city not found"},
    )
    wrong = httpx.get(f"{url}/data/2.5/weather", params={"q": "Madrid", "appid": "nope"})
    assert wrong.status_code == 401
    assert wrong.json()["cod"] == 401
    assert wrong.json()["message"].startswith("Invalid API key.")


async def test_a_wrong_key_and_an_unknown_city_are_errors_without_the_key(
    service: tuple[Proc, str],
) -> None:
    _, url = service
    wrong = OpenWeatherClient(url, "wrong-" + API_KEY)
    right = OpenWeatherClient(url, API_KEY)
    try:
        refused = await wrong.reading("Madrid")
        unknown = await right.reading("Atlantis")
    finally:
        await wrong.aclose()
        await right.aclose()
    assert refused.temperature_c is None
    assert refused.error is not None
    assert refused.error.startswith("HTTP 401: Invalid API key")
    assert API_KEY not in refused.error
    assert (unknown.temperature_c, unknown.error) == (None, "HTTP 404: city not found")
    assert not refused.unreachable
    assert not unknown.unreachable


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("garbage", "the answer has no temperature (main.temp)"),
        ("500", "HTTP 500: Internal error"),
        ("slow", "no answer within 0.5 s"),
    ],
)
async def test_a_bad_answer_or_none_in_time_is_an_error_never_a_temperature(
    service: tuple[Proc, str], fault: str, error: str
) -> None:
    proc, url = service
    proc.send(f"fault Lugo {fault}")
    proc.wait_for(f"Lugo: answers with a fault ({fault})")
    client = OpenWeatherClient(url, API_KEY, timeout=0.5)
    try:
        readings = await client.readings(["Lugo", "Madrid"])
    finally:
        await client.aclose()
    assert readings["Lugo"].temperature_c is None
    assert readings["Lugo"].error == error
    assert readings["Lugo"].unreachable is (fault == "slow")
    assert readings["Madrid"].temperature_c == 12.5  # one city's fault is that city's only


async def test_a_provider_that_is_not_there_is_unreachable(tmp_path: Path) -> None:
    from tests.support.ports import free_port

    client = OpenWeatherClient(f"http://127.0.0.1:{free_port()}", API_KEY)
    try:
        reading = await client.reading("Madrid")
    finally:
        await client.aclose()
    assert (reading.temperature_c, reading.error, reading.unreachable) == (
        None,
        "connection refused",
        True,
    )


def test_redact_blanks_the_key_and_any_appid() -> None:
    text = f"GET /data/2.5/weather?q=Madrid&appid={API_KEY}&units=metric and {API_KEY}"
    assert redact(text, API_KEY) == "GET /data/2.5/weather?q=Madrid&appid=***&units=metric and ***"
    assert redact("appid=other&x=1") == "appid=***&x=1"
