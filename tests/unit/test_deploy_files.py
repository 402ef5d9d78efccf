"""The container files cannot run here (no Docker engine): check that they parse and that every
service's program and EV_* variables are ones the programs really take."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import cast

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
COMPOSE = sorted(DEPLOY.glob("compose.*.yml"))
OUR_IMAGE = "evcharging"
# The only services on other images: the broker, and PostgreSQL in containers (outside them the
# project runs Debian's PostgreSQL 15 through `evcharging postgres start`).
OTHER_IMAGES = {"kafka": "apache/kafka:3.9.1", "postgres": "postgres:15"}
ROLES = {"compose.central.yml": "PC1", "compose.cps.yml": "PC2", "compose.drivers.yml": "PC3"}
SECRETS = (
    "EV_ADMIN_TOKEN",
    "EV_WEATHER_TOKEN",
    "OPENWEATHER_API_KEY",
    "PGPASSWORD",
    "POSTGRES_PASSWORD",
)
# A secret is `${NAME:?why}` (required) or `${NAME:-}` (optional, and then empty by default).
FROM_ENV = re.compile(r"\$\{[A-Z0-9_]+(:\?[^}]+|:-)\}")
# The programs' own variables: EV_*, and OpenWeather's key (EV_W's OPENWEATHER_API_KEY[_FILE]).
OUR_VARIABLE = re.compile(r"\b(?:EV|OPENWEATHER)_[A-Z][A-Z_]*[A-Z]\b")
# The statement's physical layout of Release 2: which programs each host runs.
PROGRAMS = {
    "compose.central.yml": {"EV_Central", "EV_Front", "evcharging"},
    "compose.cps.yml": {"EV_CP_E", "EV_CP_M", "EV_W", "EV_WeatherService"},
    "compose.drivers.yml": {"EV_Registry", "EV_Driver"},
}
BETWEEN_HOSTS = ("EV_CP_E", "EV_CP_M", "EV_Driver", "EV_Central", "EV_W", "EV_Front")


@cache
def help_of(program: str, *sub: str) -> str:
    return subprocess.run(
        [str(BIN / program), *sub, "--help"], capture_output=True, text=True, check=True
    ).stdout


def env_vars_of(program: str, *sub: str) -> frozenset[str]:
    """The variables a program's --help names: the programs document every one they read."""
    return frozenset(OUR_VARIABLE.findall(help_of(program, *sub)))


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
            assert OTHER_IMAGES.get(name) == service.get("image"), (
                f"{name}: only {sorted(OTHER_IMAGES)} may use another image (theirs)"
            )
            continue
        command = service["command"]
        program, sub = command[0], tuple(a for a in command[1:3] if not a.startswith("-"))
        assert (BIN / program).exists(), f"{name}: no program {program}"
        known = env_vars_of(program, *sub)
        used = {k for k in service.get("environment", {}) if OUR_VARIABLE.fullmatch(k)}
        assert used <= known | {"EV_UI"}, f"{name}: {sorted(used - known)} not read by {program}"
        if program in BETWEEN_HOSTS:
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
    driving = [s for s in drivers["services"].values() if s["command"] == ["EV_Driver"]]
    assert driving
    for service in driving:
        assert service["environment"]["EV_DRIVER_FILE"]
        assert service["environment"]["EV_DRIVER_NO_MENU"] == "1"


def services_of(file: str) -> dict[str, dict[str, object]]:
    doc = yaml.safe_load((DEPLOY / file).read_text(encoding="utf-8"))
    return doc["services"]  # type: ignore[no-any-return]


def env_of(service: dict[str, object]) -> dict[str, str]:
    return {str(k): str(v) for k, v in service.get("environment", {}).items()}  # type: ignore[attr-defined]


def mounts_of(service: dict[str, object]) -> dict[str, str]:
    """Container path -> source (a named volume, or a host path for a bind mount)."""
    found = {}
    for spec in service.get("volumes", []):  # type: ignore[attr-defined]
        source, target = str(spec).split(":")[:2]
        found[target] = source
    return found


def under_named_volume(service: dict[str, object], path: str) -> bool:
    return any(
        (path == target or path.startswith(target.rstrip("/") + "/"))
        and not source.startswith((".", "/"))
        for target, source in mounts_of(service).items()
    )


@pytest.mark.parametrize("path", COMPOSE, ids=lambda p: p.name)
def test_each_file_says_its_host_role_of_release_2(path: Path) -> None:
    head = path.read_text(encoding="utf-8").split("services:")[0]
    assert f"# {ROLES[path.name]} (Release 2)" in head


@pytest.mark.parametrize("path", COMPOSE, ids=lambda p: p.name)
def test_secrets_come_from_the_environment_never_from_the_files(path: Path) -> None:
    for name, service in yaml.safe_load(path.read_text(encoding="utf-8"))["services"].items():
        env = env_of(service)
        for key in SECRETS:
            if key in env:
                assert FROM_ENV.fullmatch(env[key]), f"{name}: {key} written in the file"
        for key, value in env.items():
            assert not re.search(r"postgresql://[^@/]*:[^@/]*@", value), (
                f"{name}: {key} has a password in its URL"
            )


def test_pc1_runs_postgres_and_central_uses_it() -> None:
    services = services_of("compose.central.yml")
    pg = services["postgres"]
    assert "5433:5432" in pg["ports"]  # type: ignore[operator]
    assert env_of(pg)["POSTGRES_USER"] == "evcharging"
    central = env_of(services["central"])
    assert central["EV_DB"] == "postgresql://evcharging@postgres:5432/evcharging"
    assert "PGPASSWORD" in central
    assert "postgres" in services["central"]["depends_on"]  # type: ignore[operator]
    assert under_named_volume(services["central"], central["EV_AUDIT_FILE"])


def test_pc3_runs_the_registry_over_https_on_pc1s_database() -> None:
    registry = services_of("compose.drivers.yml")["registry"]
    assert registry["command"] == ["EV_Registry"]
    env = env_of(registry)
    assert env["EV_DB"].startswith("postgresql://evcharging@${PC1_HOST")
    assert env["EV_DB"].endswith(":5433/evcharging")
    assert "PGPASSWORD" in env
    assert "EV_ADMIN_TOKEN" in env
    mounts = mounts_of(registry)
    for key in ("EV_REGISTRY_CERT", "EV_REGISTRY_KEY"):
        assert env[key] in mounts, f"{key} is not mounted"
        assert str(registry["volumes"]).count(f"{env[key]}:ro") == 1  # read-only
    assert under_named_volume(registry, env["EV_REGISTRY_AUDIT_FILE"])


def test_pc2_monitors_register_over_https_and_keep_their_credentials() -> None:
    services = services_of("compose.cps.yml")
    monitors = {name: s for name, s in services.items() if name.startswith("monitor")}
    assert monitors
    for name, monitor in monitors.items():
        env = env_of(monitor)
        assert env["EV_REGISTRY"].startswith("https://${PC3_HOST"), name
        assert env["EV_CA_FILE"] in mounts_of(monitor), f"{name}: the CA file is not mounted"
        assert env["EV_CP_LOCATION"], name
        assert env["EV_CP_PRICE"], name
        assert env["EV_CP_REGISTER"] == "1", name
        assert under_named_volume(monitor, env["EV_CP_CREDENTIALS"]), (
            f"{name}: credentials not on a volume of their own"
        )
    credentials = [env_of(m)["EV_CP_CREDENTIALS"] for m in monitors.values()]
    assert len(set(credentials)) == len(credentials)


def test_what_the_programs_write_lands_on_volumes() -> None:
    """The image's user owns only its volume folders: every file a program writes lies there."""
    for engine in (s for n, s in services_of("compose.cps.yml").items() if n.startswith("engine")):
        assert under_named_volume(engine, env_of(engine)["EV_ENGINE_STATE_DIR"])
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert "chown ev:ev /data /state /creds" in dockerfile


def read_only(service: dict[str, object], target: str) -> bool:
    return any(
        str(spec).split(":")[1:3] == [target, "ro"]
        for spec in service.get("volumes", [])  # type: ignore[attr-defined]
    )


def mounted_read_only(service: dict[str, object], path: str) -> bool:
    """`path` is a file bind-mounted read-only from the repository's certs/ folder."""
    return mounts_of(service).get(path, "").startswith("../certs/") and read_only(service, path)


def in_writable_folder(service: dict[str, object], path: str) -> bool:
    """`path`'s folder itself is mounted read-write: a program that rewrites `path` atomically (a
    temporary file, then a rename) cannot rename over a file that is a mount of its own."""
    folder = str(Path(path).parent)
    return folder in mounts_of(service) and not read_only(service, folder)


@pytest.mark.parametrize("path", COMPOSE, ids=lambda p: p.name)
def test_each_host_runs_its_programs_of_the_statements_layout(path: Path) -> None:
    """PC1 Kafka, Central and the front; PC2 the CPs and EV_W; PC3 the drivers and the Registry."""
    services = services_of(path.name).values()
    programs = {s["command"][0] for s in services if s.get("image") == OUR_IMAGE}  # type: ignore[index]
    assert programs == PROGRAMS[path.name]


def test_pc1_central_speaks_https_and_knows_the_weather_office_and_the_registry() -> None:
    central = services_of("compose.central.yml")["central"]
    env = env_of(central)
    assert FROM_ENV.fullmatch(env["EV_WEATHER_TOKEN"]), "the weather token is not from the env"
    assert ":?" in env["EV_WEATHER_TOKEN"], "Central without a weather token refuses EV_W"
    for key in ("EV_HTTPS_CERT", "EV_HTTPS_KEY", "EV_REGISTRY_CA_FILE"):
        assert mounted_read_only(central, env[key]), f"{key} is not mounted read-only"
    assert env["EV_REGISTRY_URL"].startswith("https://${PC3_HOST")
    assert env["EV_REGISTRY_URL"].endswith(":8443")


def test_pc1_front_points_the_browser_at_centrals_https_address() -> None:
    services = services_of("compose.central.yml")
    front, central = env_of(services["front"]), env_of(services["central"])
    assert services["front"]["command"] == ["EV_Front"]
    assert front["EV_FRONT_CENTRAL"].startswith("https://${PC1_HOST")
    assert front["EV_FRONT_CENTRAL"].endswith(f":{central['EV_HTTP_PORT']}")
    assert front["EV_FRONT_HOST"] == "0.0.0.0"
    assert f"{front['EV_FRONT_PORT']}:{front['EV_FRONT_PORT']}" in services["front"]["ports"]  # type: ignore[operator]


def test_pc2_ev_w_reaches_central_over_https_with_its_token_from_a_file() -> None:
    doc = yaml.safe_load((DEPLOY / "compose.cps.yml").read_text(encoding="utf-8"))
    ev_w = doc["services"]["ev-w"]
    env = env_of(ev_w)
    assert ev_w["command"] == ["EV_W"]
    assert env["EV_W_CENTRAL"].startswith("https://${PC1_HOST")
    assert mounted_read_only(ev_w, env["EV_W_CA_FILE"])
    assert "EV_WEATHER_TOKEN" not in env, "the token in a file, not in the container's env"
    (secret,) = ev_w["secrets"]
    assert env["EV_WEATHER_TOKEN_FILE"] == f"/run/secrets/{secret}"
    token_file = (DEPLOY / doc["secrets"][secret]["file"]).resolve().relative_to(ROOT)
    assert token_file.parts[0] == ".evcharging"
    assert ".evcharging/" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert in_writable_folder(ev_w, env["EV_W_LOCATIONS"]), "the menu cannot rewrite locations"
    assert ev_w["stdin_open"], "EV_W's menu (move CP01 Teruel) needs a terminal"
    assert ev_w["tty"]


def test_pc2_provider_is_openweather_or_the_local_service_of_the_same_file() -> None:
    path = DEPLOY / "compose.cps.yml"
    services = services_of(path.name)
    env = env_of(services["ev-w"])
    assert env["EV_W_PROVIDER"] == "${EV_W_PROVIDER:-https://api.openweathermap.org}"
    assert env["OPENWEATHER_API_KEY"] == "${OPENWEATHER_API_KEY:-}"
    service = services["weather-service"]
    local = env_of(service)
    assert service["command"] == ["EV_WeatherService"]
    assert service["profiles"], "the local weather service runs only when asked for"
    assert local["EV_WEATHER_SERVICE_HOST"] == "0.0.0.0"
    assert in_writable_folder(service, local["EV_WEATHER_CITIES"]), "`set` cannot write cities"
    assert service["stdin_open"], "its menu (set Teruel -5) needs a terminal"
    assert service["tty"]
    # The command the file's header gives for the offline lab names this very service and port.
    (profile,) = cast("list[str]", service["profiles"])
    head = path.read_text(encoding="utf-8").split("services:")[0]
    url = f"EV_W_PROVIDER=http://weather-service:{local['EV_WEATHER_SERVICE_PORT']}"
    assert url in head
    assert f"--profile {profile}" in head


def shown_commands(doc: Path) -> list[list[str]]:
    """Every program run in `doc`'s bash blocks, as words (continuation lines joined)."""
    text = doc.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split(" #")[0], comments=True)
            while words and "=" in words[0] and not words[0].startswith("-"):
                words = words[1:]  # VAR=value before the program
            if words and re.fullmatch(r"(\.venv/bin/|\$B/)[A-Za-z_]+", words[0]):
                commands.append([words[0].split("/")[-1], *words[1:]])
    return commands


@pytest.mark.parametrize("doc", ["docs/deployment.md", "README.md"])
def test_the_docs_commands_use_only_flags_the_programs_take(doc: str) -> None:
    commands = shown_commands(ROOT / doc)
    assert commands
    for program, *args in commands:
        sub: list[str] = []
        if program == "evcharging":
            sub = list(itertools.takewhile(lambda a: not a.startswith("-"), args))[:2]
        out = help_of(program, *sub)
        for arg in args:
            if arg.startswith("--"):
                flag = arg.split("=")[0]
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", out), (
                    f"{doc}: {program} has no {flag}"
                )
