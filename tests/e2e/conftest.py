"""End-to-end fixtures: a fresh broker per test and a Network of real processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import running_broker
from tests.support.processes import Network


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    with running_broker(tmp_path / "kafka") as cfg:
        net = Network(kafka=cfg.bootstrap, workdir=tmp_path)
        try:
            yield net
        finally:
            net.stop_all()
            artifacts = Path("test-artifacts") / tmp_path.name
            artifacts.mkdir(parents=True, exist_ok=True)
            for proc in net.procs:
                (artifacts / proc.log.name).write_text(proc.output(), encoding="utf-8")
