"""EV_WeatherService and EV_W as real processes, for the weather tests."""

from __future__ import annotations

from pathlib import Path

from tests.support.ports import free_port
from tests.support.processes import Network, Proc

API_KEY = "k3y-0f-the-w3ather-test-5ecret"
TOKEN = "t0ken-0f-the-weather-0ffice-5ecret"


def procs(workdir: Path) -> Network:
    """A `Network` used only to start programs (no Kafka here): logs, menus, clean stops."""
    return Network(kafka="unused:1", workdir=workdir)


def weather_service(
    net: Network, cities: Path, *extra: str, port: int | None = None, api_key: str | None = API_KEY
) -> tuple[Proc, int]:
    port = port or free_port()
    key = ["--api-key", api_key] if api_key else []
    proc = net.start(
        f"weather-service-{port}-{len(net.procs)}",
        "EV_WeatherService",
        "--port",
        str(port),
        "--cities",
        str(cities),
        *key,
        *extra,
    )
    proc.wait_for("EV_WeatherService on http://", timeout=30)
    return proc, port


def secret_file(workdir: Path, name: str, text: str) -> Path:
    file = workdir / name
    file.write_text(text + "\n", encoding="utf-8")
    file.chmod(0o600)
    return file
