"""EV_WeatherService and EV_Front stopped every way a user stops a program (Ctrl+C, SIGTERM, a
closed terminal, SIGKILL): a clean stop exits 0 without a traceback, and either way the port is
free at once for the program started again (EV_W is covered in test_weather_office_process.py).
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.processes import Network, Proc

pytestmark = [pytest.mark.e2e]

HOWS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL]


def weather_service(net: Network, port: int, cities: Path) -> Proc:
    proc = net.start(
        f"weather-service-{len(net.procs)}",
        "EV_WeatherService",
        "--port",
        str(port),
        "--cities",
        str(cities),
    )
    proc.wait_for("EV_WeatherService on http://", timeout=30)
    return proc


def front(net: Network, port: int) -> Proc:
    proc = net.start(
        f"front-{len(net.procs)}",
        "EV_Front",
        "--central",
        "http://127.0.0.1:8000",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    )
    proc.wait_for("EV_Front on http://", timeout=30)
    return proc


def stopped_and_started_again(first: Proc, how: signal.Signals, again: Proc) -> None:
    """`first` was stopped by `how`; `again` (the same program, same port) is up."""
    if how is not signal.SIGKILL:
        assert first.popen.returncode == 0, first.output()[-2000:]
        assert "Traceback" not in first.output()
    assert again.alive


@pytest.mark.parametrize("how", HOWS, ids=lambda s: s.name)
def test_the_weather_service_stops_cleanly_and_starts_again(
    tmp_path: Path, how: signal.Signals
) -> None:
    net = Network(kafka="unused:1", workdir=tmp_path)
    cities = tmp_path / "cities.yaml"
    cities.write_text("Teruel: -3\n", encoding="utf-8")
    port = free_port()
    try:
        first = weather_service(net, port, cities)
        first.stop_by(how)
        again = weather_service(net, port, cities)
        stopped_and_started_again(first, how, again)
        url = f"http://127.0.0.1:{port}/data/2.5/weather"
        answer = httpx.get(url, params={"q": "Teruel", "appid": "k", "units": "metric"}, timeout=5)
        assert answer.json()["main"]["temp"] == -3
    finally:
        net.stop_all()


@pytest.mark.parametrize("how", HOWS, ids=lambda s: s.name)
def test_the_front_stops_cleanly_and_starts_again(tmp_path: Path, how: signal.Signals) -> None:
    net = Network(kafka="unused:1", workdir=tmp_path)
    port = free_port()
    try:
        first = front(net, port)
        first.stop_by(how)
        again = front(net, port)
        stopped_and_started_again(first, how, again)
        config = httpx.get(f"http://127.0.0.1:{port}/config.json", timeout=5).json()
        assert config == {"central": "http://127.0.0.1:8000"}
    finally:
        net.stop_all()
