"""Every program has the same shape: settings from `parse_args(argv)`, an app object whose
`run()` returns the exit code, and one shared reader of menu lines from stdin."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest

from evcharging.apps import cp_engine, cp_monitor, driver
from evcharging.apps.common import stdin_lines
from tests.support.ports import free_port


@pytest.mark.parametrize(
    ("module", "app", "settings"),
    [
        (cp_monitor, "MonitorApp", "MonitorSettings"),
        (cp_engine, "EngineApp", "EngineSettings"),
        (driver, "DriverApp", "DriverSettings"),
    ],
)
def test_programs_share_one_shape(module: object, app: str, settings: str) -> None:
    for name in ("parse_args", "main", app, settings):
        assert hasattr(module, name), f"{module.__name__} has no {name}"  # type: ignore[attr-defined]
    assert callable(getattr(module, app).run)


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
