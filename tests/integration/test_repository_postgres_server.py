"""`evcharging postgres start|status|stop` as real processes: our own server, then none left."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from evcharging.adapters.db import open_repository
from tests.support import postgres as pg
from tests.support.ports import free_port

pytestmark = pytest.mark.skipif(
    pg.binaries_missing() is not None,
    reason=f"PostgreSQL binaries missing: {pg.binaries_missing()}",
)


def evcharging(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evcharging.apps.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def data_dir() -> Iterator[Path]:
    folder = pg.scratch_dir("evcharging-pg-cli-")
    yield folder
    evcharging("postgres", "stop", "--data-dir", str(folder))  # whatever the test left running
    shutil.rmtree(folder, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "postgres" in Path(f"/proc/{pid}/cmdline").read_text()


def test_start_prints_a_working_url_and_stop_leaves_no_server(data_dir: Path) -> None:
    where = ["--data-dir", str(data_dir), "--port", str(free_port())]

    started = evcharging("postgres", "start", *where)
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    assert url.startswith("postgresql://")
    assert url.endswith("/evcharging")

    repo = open_repository(url)
    try:
        repo.upsert_driver("D001", "Ana", Decimal("12.50"))
        assert repo.get_driver("D001") is not None
    finally:
        repo.close()

    again = evcharging("postgres", "start", *where)  # idempotent: the same server, same URL
    assert (again.returncode, again.stdout.strip()) == (0, url)

    status = evcharging("postgres", "status", *where)
    assert status.returncode == 0
    pid = int(status.stdout.split()[2])  # "running pid N on port P"
    assert alive(pid)

    stopped = evcharging("postgres", "stop", *where)
    assert (stopped.returncode, stopped.stdout.strip()) == (0, "stopped")
    assert not alive(pid)
    after = evcharging("postgres", "status", *where)
    assert (after.returncode, after.stdout.strip()) == (3, "not running")
    assert evcharging("postgres", "stop", *where).stdout.strip() == "not running"


def test_start_restarts_an_existing_cluster_and_keeps_its_data(data_dir: Path) -> None:
    where = ["--data-dir", str(data_dir), "--port", str(free_port())]
    url = evcharging("postgres", "start", *where).stdout.strip()
    repo = open_repository(url)
    repo.add_cp("CP01", "Alicante", Decimal("0.35"))
    repo.close()
    assert evcharging("postgres", "stop", *where).returncode == 0

    moved = ["--data-dir", str(data_dir), "--port", str(free_port())]
    restarted = evcharging("postgres", "start", *moved)
    assert restarted.returncode == 0, restarted.stderr
    repo = open_repository(restarted.stdout.strip())
    try:
        assert [cp.cp_id for cp in repo.list_cps()] == ["CP01"]
    finally:
        repo.close()


def test_a_port_in_use_is_one_clear_line_and_exit_code_1(data_dir: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = evcharging("postgres", "start", "--data-dir", str(data_dir), "--port", str(port))
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1
    assert f"port 127.0.0.1:{port} is used by another process" in errors[0]
    assert "Traceback" not in done.stderr
