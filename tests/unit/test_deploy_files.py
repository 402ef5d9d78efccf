"""The container files cannot run here (no Docker engine): check that they parse and that every
service's program and EV_* variables are ones the programs really take."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
COMPOSE = sorted(DEPLOY.glob("compose.*.yml"))
OUR_IMAGE = "evcharging"


@cache
def env_vars_of(program: str, *sub: str) -> frozenset[str]:
    """The EV_* variables a program's --help names: the programs document every one they read."""
    out = subprocess.run(
        [str(BIN / program), *sub, "--help"], capture_output=True, text=True, check=True
    ).stdout
    return frozenset(re.findall(r"\bEV_[A-Z][A-Z_]*[A-Z]\b", out))


def test_there_is_one_compose_file_per_host_role() -> None:
    assert [p.name for p in COMPOSE] == [
        "compose.central.yml",
        "compose.cps.yml",
        "compose.drivers.yml",
    ]


def test_the_dockerfile_installs_the_package() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert text.startswith("#")
    assert "FROM python:3.11" in text
    assert "pip install" in text
    assert "COPY src" in text


@pytest.mark.parametrize("path", COMPOSE, ids=lambda p: p.name)
def test_every_service_runs_a_real_program_with_variables_it_reads(path: Path) -> None:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    services = doc["services"]
    assert services
    for name, service in services.items():
        if service.get("image") != OUR_IMAGE:
            assert name == "kafka", f"{name}: only Kafka may use another image"
            continue
        command = service["command"]
        program, sub = command[0], tuple(a for a in command[1:3] if not a.startswith("-"))
        assert (BIN / program).exists(), f"{name}: no program {program}"
        known = env_vars_of(program, *sub)
        used = {k for k in service.get("environment", {}) if k.startswith("EV_")}
        assert used <= known | {"EV_UI"}, f"{name}: {sorted(used - known)} not read by {program}"
        if program in ("EV_CP_E", "EV_CP_M", "EV_Driver", "EV_Central"):
            assert "127.0.0.1" not in str(service.get("environment")), (
                f"{name}: localhost between hosts"
            )


def test_engines_and_monitors_pair_up_by_address() -> None:
    services = yaml.safe_load((DEPLOY / "compose.cps.yml").read_text(encoding="utf-8"))["services"]
    links = {
        name: s["environment"]["EV_ENGINE_LINK"].split(":")[1]
        for name, s in services.items()
        if name.startswith("engine")
    }
    for name, s in services.items():
        if name.startswith("monitor"):
            host, port = s["environment"]["EV_ENGINE"].split(":")
            assert links[host] == port, f"{name} points at {host}:{port}"


def test_cps_and_drivers_run_unattended_in_containers() -> None:
    """Nobody sits at a container's keys: an Engine waiting for `p` would stall every supply."""
    cps = yaml.safe_load((DEPLOY / "compose.cps.yml").read_text(encoding="utf-8"))["services"]
    engines = [s["environment"] for name, s in cps.items() if name.startswith("engine")]
    assert engines
    for env in engines:
        assert env["EV_ENGINE_AUTO_PLUG"] == "1"
        assert float(env["EV_ENGINE_SUPPLY_SECONDS"]) > 0
        assert env["EV_ENGINE_NO_MENU"] == "1"
    drivers = yaml.safe_load((DEPLOY / "compose.drivers.yml").read_text(encoding="utf-8"))
    for service in drivers["services"].values():
        assert service["environment"]["EV_DRIVER_FILE"]
        assert service["environment"]["EV_DRIVER_NO_MENU"] == "1"
