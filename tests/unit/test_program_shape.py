"""Every program has the same shape: settings from `parse_args(argv)`, an app object whose
`run()` returns the exit code, and one shared reader of menu lines from stdin."""

from __future__ import annotations

import inspect
import io
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest

from evcharging.apps import (
    central,
    cp_engine,
    cp_monitor,
    driver,
    front,
    registry,
    weather_office,
    weather_service,
)
from evcharging.apps.common import stdin_lines
from tests.support.ports import free_port

PROGRAMS = [
    (central, "CentralApp", "CentralSettings"),
    (cp_engine, "EngineApp", "EngineSettings"),
    (cp_monitor, "MonitorApp", "MonitorSettings"),
    (driver, "DriverApp", "DriverSettings"),
    (registry, "RegistryApp", "RegistrySettings"),
    (weather_office, "WeatherOfficeApp", "WeatherOfficeSettings"),
    (weather_service, "WeatherServiceApp", "WeatherServiceSettings"),
    (front, "FrontApp", "FrontSettings"),
]


@pytest.mark.parametrize(
    ("module", "app", "settings"), PROGRAMS, ids=lambda v: getattr(v, "__name__", v)
)
def test_programs_share_one_shape(module: ModuleType, app: str, settings: str) -> None:
    """`parse_args(argv) -> XSettings`, `XApp(settings)`, `async XApp.run(...) -> int` (the exit
    code), `main(argv) -> int`."""
    for name in ("parse_args", "main", app, settings):
        assert hasattr(module, name), f"{module.__name__} has no {name}"
    parse_args = inspect.signature(module.parse_args)
    assert list(parse_args.parameters) == ["argv"]
    assert parse_args.return_annotation == settings
    main = inspect.signature(module.main)
    assert list(main.parameters) == ["argv"]
    assert main.return_annotation == "int"
    app_class = getattr(module, app)
    assert next(iter(inspect.signature(app_class).parameters)) == "settings"
    assert inspect.iscoroutinefunction(app_class.run)
    assert inspect.signature(app_class.run).return_annotation == "int"


def test_ev_registry_settings_come_from_its_arguments() -> None:
    settings = registry.parse_args(["--cert", "s.pem", "--key", "s.key", "--port", "9443"])
    assert isinstance(settings, registry.RegistrySettings)
    assert (settings.cert, settings.key, settings.port) == (Path("s.pem"), Path("s.key"), 9443)


async def test_stdin_lines_yields_each_line_then_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("r ALC01\ns\n"))
    assert [line async for line in stdin_lines()] == ["r ALC01\n", "s\n"]


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_the_driver_app_quits_on_q_with_exit_code_0() -> None:
    """Runs in-process like the Engine and Monitor apps (no broker: it quits before needing one)."""
    settings = driver.parse_args([f"127.0.0.1:{free_port()}", "D1"])
    app = driver.DriverApp(settings)
    assert await app.run(_lines("h\n", "q\n")) == 0
