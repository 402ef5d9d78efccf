"""Release 2, part 3, end to end: the weather office stops the CPs of freezing cities.

Real processes and broker: EV_Central (with its weather token), charging points, a driver, the
local weather service (OpenWeather's request and JSON) and EV_W, which asks it every cycle and
tells Central through API_Central v1. Temperatures are set in the weather service's cities file,
as an operator would, and CPs are moved between cities from EV_W's menu, live.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import pytest
import yaml

from tests.support.ports import free_port
from tests.support.processes import Network, Proc, wait_until
from tests.support.weather import API_KEY, secret_file

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

WEATHER_TOKEN = "weather-office-token-for-the-flow-test"
INTERVAL = 4.0  # the statement's cycle
FAST = 1.0  # where the cycle's length is not what a test shows (outages and recoveries)


class Weather:
    """The local weather service and EV_W of one test."""

    def __init__(self, net: Network, cities: dict[str, float], locations: dict[str, str]) -> None:
        self.net = net
        self.cities_file = net.workdir / "cities.yaml"
        self.locations_file = net.workdir / "locations.yaml"
        self.set(**cities)
        self.locations_file.write_text(yaml.safe_dump(locations), encoding="utf-8")
        self.port = free_port()
        self.token_file = secret_file(net.workdir, "weather.token", WEATHER_TOKEN)
        self.key_file = secret_file(net.workdir, "openweather.key", API_KEY)
        self.service: Proc | None = None
        self.office: Proc | None = None

    def set(self, **cities: float) -> None:
        """Temperatures as the operator writes them in the service's file (re-read on change)."""
        known: dict[str, float] = {}
        if self.cities_file.exists():
            known = dict(yaml.safe_load(self.cities_file.read_text(encoding="utf-8")) or {})
        known.update(cities)
        tmp = self.cities_file.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(known), encoding="utf-8")
        tmp.replace(self.cities_file)

    def start_service(self) -> Proc:
        self.service = self.net.start(
            f"weather-service-{len(self.net.procs)}",
            "EV_WeatherService",
            "--port",
            str(self.port),
            "--cities",
            str(self.cities_file),
            "--api-key",
            API_KEY,
        )
        self.service.wait_for("EV_WeatherService on http://", timeout=30)
        return self.service

    def start_office(self, interval: float = INTERVAL) -> Proc:
        self.office = self.net.start(
            f"ev-w-{len(self.net.procs)}",
            "EV_W",
            "--central",
            self.net.api,
            "--token-file",
            str(self.token_file),
            "--locations",
            str(self.locations_file),
            "--provider",
            f"http://127.0.0.1:{self.port}",
            "--api-key-file",
            str(self.key_file),
            "--interval",
            str(interval),
        )
        return self.office


def v1(net: Network, path: str) -> Any:
    response = httpx.get(f"{net.api}/api/v1{path}", timeout=5)
    response.raise_for_status()
    return response.json()


def module(net: Network, name: str) -> dict[str, Any]:
    modules = v1(net, "/health")["modules"]
    return next(m for m in modules if m["name"] == name)


def wait_module(net: Network, name: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
    return dict(
        wait_until(
            lambda: (m := module(net, name))["state"] == state and m,
            timeout,
            what=f"{name} {state}\n{net.tails()}",
        )
    )


def states(net: Network, *cp_ids: str) -> dict[str, tuple[str, str | None]]:
    return {cp: (v["state"], v["stop_reason"]) for cp in cp_ids for v in [net.cp(cp)]}


def reports(net: Network) -> str | None:
    """The time of EV_W's last report as Central holds it (changes at every cycle)."""
    return v1(net, "/weather")["office"]["last_report_at"]  # type: ignore[no-any-return]


def wait_reports(net: Network, count: int) -> None:
    """`count` further EV_W reports reached Central (cycles went by)."""
    for _ in range(count):
        before = reports(net)
        wait_until(lambda before=before: reports(net) not in (None, before), 30)


def test_a_freezing_city_ends_the_supply_normally_then_stops_the_cp_and_thaw_restores_it(
    network: Network,
) -> None:
    net = network
    net.central("--weather-token", WEATHER_TOKEN)
    engine, _ = net.charging_point("ALC01", "--auto-plug", "--supply-seconds", "14")
    net.charging_point("VLC01")
    net.charging_point("MAD01")
    weather = Weather(
        net,
        {"Alicante": 15.0, "Valencia": 16.0, "Madrid": 12.0, "Teruel": -5.0},
        {"ALC01": "Alicante", "VLC01": "Valencia", "MAD01": "Madrid"},
    )
    weather.start_service()
    office = weather.start_office()
    wait_module(net, "ev_w", "up")
    assert states(net, "ALC01", "VLC01", "MAD01") == {
        "ALC01": ("Activado", None),
        "VLC01": ("Activado", None),
        "MAD01": ("Activado", None),
    }

    # Mid-supply, Alicante freezes: the supply finishes normally, with its ticket, then Parado.
    driver = net.driver("D001", "--cp", "ALC01")
    driver.wait_for("PROGRESS driver=D001 cp=ALC01", timeout=40)
    weather.set(Alicante=-3.0)
    during = wait_until(lambda: (v := net.cp("ALC01"))["weather_alert"] and v, 3 * INTERVAL)
    assert during["state"] == "Suministrando", "a running supply is not cut by the weather"
    assert during["weather"] == {"city": "Alicante", "temperature_c": -3.0}
    driver.wait_for("TICKET driver=D001 cp=ALC01", timeout=40)
    (session,) = net.sessions(driver_id="D001")
    assert session["end_reason"] == "unplugged", "the supply ended normally"
    assert float(session["energy_kwh"]) > 0
    stopped = net.wait_state("ALC01", "Parado")
    assert stopped["stop_reason"] == "weather alert"
    engine.wait_for("weather alert", timeout=20)
    assert net.audit(action="weather.alert", cp="ALC01")[0]["ip"] == "127.0.0.1"

    # An admin-stopped CP is not resumed by the weather.
    assert net.admin("/api/cps/VLC01/stop").status_code == 200
    weather.set(Valencia=-2.0)
    wait_until(lambda: net.cp("VLC01")["weather_alert"], 3 * INTERVAL, what=net.tails())
    assert net.cp("VLC01")["stop_reason"] == "stopped by Central; weather alert"

    # Thaw: back above 0 °C, ALC01 is Activado again; VLC01 stays stopped by Central.
    weather.set(Alicante=4.0, Valencia=5.0)
    net.wait_state("ALC01", "Activado", timeout=3 * INTERVAL)
    wait_until(lambda: not net.cp("VLC01")["weather_alert"], 3 * INTERVAL)
    assert states(net, "VLC01")["VLC01"] == ("Parado", "stopped by Central")
    assert net.audit(action="weather.cleared", cp="ALC01")

    # A CP moved to a freezing city from EV_W's menu follows it within one cycle, no restart.
    moved_at = time.monotonic()
    office.send("move MAD01 Teruel")
    net.wait_state("MAD01", "Parado", timeout=INTERVAL + 6)
    followed = time.monotonic() - moved_at
    assert net.cp("MAD01")["weather"] == {"city": "Teruel", "temperature_c": -5.0}
    assert yaml.safe_load(weather.locations_file.read_text())["MAD01"] == "Teruel"
    office.send("move MAD01 Madrid")
    net.wait_state("MAD01", "Activado", timeout=INTERVAL + 6)
    assert followed < INTERVAL + 6, f"the moved CP followed its city in {followed:.1f} s"
    assert office.alive


def test_ev_w_or_its_provider_down_is_shown_and_changes_no_cp_and_both_resume(
    network: Network,
) -> None:
    net = network
    net.central("--weather-token", WEATHER_TOKEN)
    net.charging_point("ALC01")
    net.charging_point("VLC01")
    weather = Weather(
        net, {"Alicante": -3.0, "Valencia": 16.0}, {"ALC01": "Alicante", "VLC01": "Valencia"}
    )
    service = weather.start_service()
    office = weather.start_office(FAST)
    net.wait_state("ALC01", "Parado", timeout=30)
    wait_module(net, "weather_provider", "up")
    before = states(net, "ALC01", "VLC01")

    # The weather service dies: Central says so; no CP changes for missing data.
    service.kill()
    wait_module(net, "weather_provider", "down")
    weather.set(Alicante=8.0)  # nobody can read it while the service is down
    wait_reports(net, 2)
    assert states(net, "ALC01", "VLC01") == before
    assert module(net, "ev_w")["state"] == "up"
    locations = {loc["city"]: loc for loc in v1(net, "/weather")["locations"]}
    assert locations["Alicante"]["temperature_c"] is None
    assert locations["Alicante"]["error"]

    # Back: EV_W resumes, reads 8 °C, and the CP comes back.
    weather.start_service()
    wait_module(net, "weather_provider", "up", timeout=30)
    net.wait_state("ALC01", "Activado", timeout=30)

    # EV_W killed outright: Central notices when its reports stop; no CP changes meanwhile.
    office.kill()
    down = wait_module(net, "ev_w", "down", timeout=30)
    assert down["detail"]
    said = [m["text"] for m in v1(net, "/messages") if m["level"] == "warning"]
    assert any(text.startswith("EV_W (weather office) down") for text in said), said
    weather.set(Valencia=-4.0)
    wait_until(
        lambda: any(row["action"] == "module.down" for row in net.audit(action="module.down"))
    )
    assert states(net, "ALC01", "VLC01") == {
        "ALC01": ("Activado", None),
        "VLC01": ("Activado", None),
    }

    # EV_W back: it resumes and Valencia's frost stops VLC01.
    office = weather.start_office(FAST)
    wait_module(net, "ev_w", "up", timeout=30)
    net.wait_state("VLC01", "Parado", timeout=30)

    # A clean stop (SIGTERM) tells Central at once.
    office.stop_by(signal.SIGTERM)
    assert office.popen.wait(timeout=20) == 0
    assert module(net, "ev_w")["state"] == "down"
    assert net.cp("VLC01")["state"] == "Parado", "EV_W gone: the last decision stands"
