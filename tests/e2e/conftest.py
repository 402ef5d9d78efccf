"""End-to-end fixtures: a fresh broker per test and a Network of real processes on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.support.broker import running_broker
from tests.support.processes import Network


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    with running_broker(tmp_path / "kafka") as cfg:
        net = Network(kafka=cfg.bootstrap, workdir=tmp_path, broker=cfg)
        try:
            yield net
        finally:
            net.stop_all()
            artifacts = Path("test-artifacts") / f"{tmp_path.name}-{int(time.time())}"
            artifacts.mkdir(parents=True, exist_ok=True)
            for proc in net.procs:
                (artifacts / proc.log.name).write_text(proc.output(), encoding="utf-8")


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def browser(network: Network) -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright (never a downloaded browser), one per test.

    It depends on `network` so it starts after the broker and stops before it: while Playwright's
    sync API is alive its asyncio loop counts as running in this thread, and the broker's start and
    stop use asyncio.run().
    """
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: .ci/run installs it (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-gpu",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    """Where a test saves its screenshots (test artifacts, git-ignored)."""
    folder = Path("test-artifacts") / "screenshots" / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
