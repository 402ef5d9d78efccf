"""End-to-end fixtures: a Network of real processes on loopback, on the session's broker in a
Kafka namespace of its own (fresh topics and consumer groups per test), or on a broker of its own
for the tests that stop the broker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from evcharging.ops.kafka_broker import BrokerConfig
from tests.support.broker import in_namespace, running_broker
from tests.support.processes import Network


@contextmanager
def _network(tmp_path: Path, cfg: BrokerConfig, namespace: str) -> Iterator[Network]:
    with in_namespace(cfg.bootstrap, namespace):
        net = Network(kafka=cfg.bootstrap, workdir=tmp_path, broker=cfg, namespace=namespace)
        try:
            yield net
        finally:
            net.stop_all()
            artifacts = Path("test-artifacts") / f"{tmp_path.name}-{int(time.time())}"
            artifacts.mkdir(parents=True, exist_ok=True)
            for proc in net.procs:
                (artifacts / proc.log.name).write_text(proc.output(), encoding="utf-8")


@pytest.fixture
def network(tmp_path: Path, kafka_broker_cfg: BrokerConfig) -> Iterator[Network]:
    """The session's broker, shared: this test's topics and groups are its own (a namespace)."""
    with _network(tmp_path, kafka_broker_cfg, tmp_path.name.replace(".", "-")[:40]) as net:
        yield net


@pytest.fixture
def network_own_broker(tmp_path: Path) -> Iterator[Network]:
    """A broker of the test's own, for tests that stop and restart it."""
    with running_broker(tmp_path / "kafka") as cfg, _network(tmp_path, cfg, "") as net:
        yield net


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright (never a downloaded browser), one per test.

    It starts after the test's network and stops before it: while Playwright's sync API is alive
    its asyncio loop counts as running in this thread, and the network's set-up and tear-down use
    asyncio.run() (topics, the broker's start and stop).
    """
    own = "network_own_broker" in request.fixturenames
    request.getfixturevalue("network_own_broker" if own else "network")
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
