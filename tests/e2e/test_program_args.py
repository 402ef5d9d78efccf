"""A user's mistake on a program's command line or in its EV_* variables: the real console script
says so in one line on stderr, naming the flag or the variable, and exits with code 2 (no usage
dump, no traceback). Nothing here needs Kafka: each program stops before it starts anything."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.processes import Proc, run_to_end

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
KAFKA = "127.0.0.1:1"  # never reached
CP = ["e:1", "c:2", "CP01"]  # a Monitor's positionals
REGISTRY = ["--registry", "https://127.0.0.1:1"]  # never reached


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without its EV_* variables, plus the case's own."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("EV_")}, **extra}


def run(tmp_path: Path, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_to_end(tmp_path, *argv, env=clean_env(**env))


CASES = [
    # the issue's own cases
    ("EV_Central", ["22000", "nohostport"], {}, "KAFKA='nohostport': expected HOST:PORT"),
    ("EV_Central", ["99999", KAFKA], {}, "PORT='99999': not a TCP port (1-65535)"),
    (
        "EV_Central",
        ["22000", KAFKA],
        {"EV_HEARTBEAT_TIMEOUT": "abc"},
        "EV_HEARTBEAT_TIMEOUT='abc': not a number",
    ),
    (
        "EV_Driver",
        [KAFKA, "D001"],
        {"EV_DRIVER_NO_MENU": "maybe"},
        "EV_DRIVER_NO_MENU='maybe': expected 1/true/yes/on or 0/false/no/off",
    ),
    # EV_Central
    ("EV_Central", [], {}, "the following arguments are required: PORT, KAFKA"),
    ("EV_Central", ["7000", KAFKA, "--http-port", "99999"], {}, "--http-port='99999'"),
    ("EV_Central", ["7000", KAFKA], {"EV_HTTP_PORT": "http"}, "EV_HTTP_PORT='http'"),
    (
        "EV_Central",
        [],
        {"EV_CENTRAL_PORT": "70000", "EV_KAFKA": KAFKA},
        "EV_CENTRAL_PORT='70000': not a TCP port",
    ),
    ("EV_Central", [], {"EV_CENTRAL_PORT": "7000", "EV_KAFKA": "kafka"}, "EV_KAFKA='kafka'"),
    ("EV_Central", ["7000", KAFKA, "--heartbeat-timeout", "0"], {}, "--heartbeat-timeout='0'"),
    ("EV_Central", ["7000", KAFKA, "--ui", "fancy"], {}, "--ui='fancy': expected one of auto"),
    ("EV_Central", ["7000", KAFKA], {"EV_UI": "fancy"}, "EV_UI='fancy': expected one of auto"),
    # EV_CP_E
    ("EV_CP_E", [KAFKA, "nolink"], {}, "LINK='nolink': expected HOST:PORT"),
    ("EV_CP_E", ["kafka", "127.0.0.1:7101"], {}, "KAFKA='kafka': expected HOST:PORT"),
    ("EV_CP_E", [], {"EV_KAFKA": KAFKA, "EV_ENGINE_LINK": "h:0"}, "EV_ENGINE_LINK='h:0'"),
    ("EV_CP_E", [KAFKA, "h:7101", "--kw", "-3"], {}, "--kw='-3': must be more than 0"),
    ("EV_CP_E", [KAFKA, "h:7101"], {"EV_ENGINE_KW": "lots"}, "EV_ENGINE_KW='lots'"),
    ("EV_CP_E", [KAFKA, "h:7101"], {"EV_ENGINE_SPEEDUP": "0"}, "EV_ENGINE_SPEEDUP='0'"),
    ("EV_CP_E", [KAFKA, "h:7101", "--tick", "x"], {}, "--tick='x': not a number"),
    ("EV_CP_E", [KAFKA, "h:7101"], {"EV_ENGINE_SUPPLY_SECONDS": "-5"}, "SUPPLY_SECONDS='-5'"),
    ("EV_CP_E", [KAFKA, "h:7101"], {"EV_ENGINE_MONITOR_TIMEOUT": "0"}, "MONITOR_TIMEOUT='0'"),
    ("EV_CP_E", [KAFKA, "h:7101"], {"EV_ENGINE_NO_MENU": "2"}, "EV_ENGINE_NO_MENU='2'"),
    ("EV_CP_E", [KAFKA, "h:7101"], {"EV_ENGINE_AUTO_PLUG": "y"}, "EV_ENGINE_AUTO_PLUG='y'"),
    # EV_CP_M
    ("EV_CP_M", ["e:7101", "c:7000", "bad id"], {}, "CP_ID='bad id': not an id"),
    ("EV_CP_M", ["e", "c:7000", "CP01"], {}, "ENGINE='e': expected HOST:PORT"),
    (
        "EV_CP_M",
        ["e:7101"],
        {"EV_CENTRAL": "c:99999", "EV_CP_ID": "CP01"},
        "EV_CENTRAL='c:99999': expected HOST:PORT with a port 1-65535",
    ),
    ("EV_CP_M", [], {"EV_ENGINE": "e:1", "EV_CENTRAL": "c:2", "EV_CP_ID": "a b"}, "EV_CP_ID="),
    ("EV_CP_M", ["e:1", "c:2", "CP01", "--price", "500"], {}, "--price='500': must be at most"),
    ("EV_CP_M", ["e:1", "c:2", "CP01"], {"EV_CP_PRICE": "free"}, "EV_CP_PRICE='free'"),
    ("EV_CP_M", ["e:1", "c:2", "CP01", "--location", "a#b"], {}, "--location='a#b'"),
    ("EV_CP_M", ["e:1", "c:2", "CP01"], {"EV_MONITOR_INTERVAL": "abc"}, "INTERVAL='abc'"),
    ("EV_CP_M", ["e:1", "c:2", "CP01", "--timeout", "0"], {}, "--timeout='0'"),
    ("EV_CP_M", ["e:1", "c:2", "CP01"], {"EV_LOG_LEVEL": "loud"}, "EV_LOG_LEVEL='loud'"),
    ("EV_CP_M", [*CP, "--registry", "registry:8443"], {}, "'registry:8443': expected https://"),
    ("EV_CP_M", [*CP, "--registry", "https://r:8443/api"], {}, "(no path, query or user)"),
    (
        "EV_CP_M",
        [*CP, "--registry", "http://registry:8443"],
        {},
        "--registry='http://registry:8443': the Registry is reached over HTTPS only",
    ),
    ("EV_CP_M", CP, {"EV_REGISTRY": "http://r:8443"}, "EV_REGISTRY='http://r:8443': the Regi"),
    ("EV_CP_M", [*CP, "--ca-file", "/nonexistent/ca.pem"], {}, "ca.pem': no such file"),
    ("EV_CP_M", CP, {"EV_CA_FILE": __file__}, "not a PEM file of CA certificates"),
    ("EV_CP_M", [*CP, "--register"], {}, "--register needs --registry https://HOST:PORT"),
    ("EV_CP_M", [*CP, "--deregister"], {}, "--deregister needs --registry"),
    ("EV_CP_M", [*CP, "--register", *REGISTRY], {}, "--register needs --location and --price"),
    ("EV_CP_M", [*CP, "--register", "--deregister"], {}, "exclude each other"),
    ("EV_CP_M", CP, {"EV_CP_REGISTER": "sure"}, "EV_CP_REGISTER='sure'"),
    ("EV_CP_M", [*CP, "--auto-reauth", "-5"], {}, "--auto-reauth='-5': must be 0 seconds or more"),
    ("EV_CP_M", CP, {"EV_MONITOR_AUTO_REAUTH": "later"}, "EV_MONITOR_AUTO_REAUTH='later'"),
    # EV_Driver
    ("EV_Driver", ["nohostport", "D001"], {}, "KAFKA='nohostport': expected HOST:PORT"),
    ("EV_Driver", [KAFKA, "bad id"], {}, "DRIVER_ID='bad id': not an id"),
    ("EV_Driver", [KAFKA, "D001", "--web-port", "99999"], {}, "--web-port='99999'"),
    ("EV_Driver", [KAFKA, "D001"], {"EV_DRIVER_WEB_PORT": "x"}, "EV_DRIVER_WEB_PORT='x'"),
    ("EV_Driver", [KAFKA, "D001"], {"EV_DRIVER_PAUSE": "-1"}, "EV_DRIVER_PAUSE='-1'"),
    ("EV_Driver", [KAFKA, "D001", "--answer-timeout", "0"], {}, "--answer-timeout='0'"),
    ("EV_Driver", [KAFKA, "D001", "--cp", "a#b"], {}, "--cp='a#b': not an id"),
    ("EV_Driver", [KAFKA, "D001"], {"EV_DRIVER_WEB_MAX_DRIVERS": "0"}, "MAX_DRIVERS='0'"),
    (
        "EV_Driver",
        [KAFKA, "D001", "--file", "/nonexistent"],
        {},
        "--file='/nonexistent': cannot read it",
    ),
    # evcharging (the ops CLI)
    ("evcharging", ["kafka", "status", "--port", "99999"], {}, "--port='99999'"),
    ("evcharging", ["kafka", "status"], {"EV_KAFKA_PORT": "abc"}, "EV_KAFKA_PORT='abc'"),
    ("evcharging", ["kafka", "start", "--timeout", "-1"], {}, "--timeout='-1'"),
    ("evcharging", ["demo", "--cps", "0"], {}, "--cps='0': expected a whole number >= 1"),
    ("evcharging", ["demo", "--for", "soon"], {}, "--for='soon': expected a duration"),
    ("evcharging", ["demo", "--http-port", "99999"], {}, "--http-port='99999'"),
    ("evcharging", [], {}, "the following arguments are required: command"),
    # EV_OCPP
    ("EV_OCPP", [KAFKA, "nohostport"], {}, "CENTRAL='nohostport': expected HOST:PORT"),
    ("EV_OCPP", [KAFKA, "127.0.0.1:7000", "--listen", "9000"], {}, "--listen='9000'"),
    ("EV_OCPP", [KAFKA, "127.0.0.1:7000"], {"EV_OCPP_LISTEN": "x:y"}, "EV_OCPP_LISTEN='x:y'"),
    ("EV_OCPP", [KAFKA, "127.0.0.1:7000", "--tls-cert", "c.pem"], {}, "--tls-cert and --tls-key"),
    (
        "EV_OCPP",
        [KAFKA, "127.0.0.1:7000", "--tls-cert", "/nope.pem", "--tls-key", "/nope.key"],
        {},
        "--tls-cert='/nope.pem': no such file",
    ),
    (
        "EV_OCPP",
        [KAFKA, "127.0.0.1:7000", "--tls-cert", "/etc/hostname", "--tls-key", "/etc/hostname"],
        {},
        "--tls-cert/--tls-key/--client-ca: not a certificate and its key",
    ),
    (
        "EV_OCPP",
        [KAFKA, "127.0.0.1:7000", "--client-ca", "ca.pem"],
        {},
        "--client-ca needs --tls-cert/--tls-key",
    ),
]


@pytest.mark.parametrize(
    ("program", "argv", "env", "said"),
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_a_bad_argument_is_one_line_and_exit_code_2(
    tmp_path: Path, program: str, argv: list[str], env: dict[str, str], said: str
) -> None:
    done = run(tmp_path, [program, *argv], env)

    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(program), lines[0]
    assert ": error: " in lines[0]
    assert said in lines[0]
    assert lines[0].endswith("(see --help)")
    assert done.stdout == ""


def start_driver(tmp_path: Path, no_menu: str) -> Proc:
    """A Driver whose Kafka is unreachable: it keeps running (and retrying) until stopped."""
    log = tmp_path / "driver.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [str(BIN / "EV_Driver"), KAFKA, "D001"],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=clean_env(EV_DRIVER_NO_MENU=no_menu, PYTHONUNBUFFERED="1"),
        )
    return Proc("driver", popen, log)


@pytest.mark.parametrize("word", ["on", "TRUE"])
def test_the_driver_takes_its_menu_switch_from_the_environment(tmp_path: Path, word: str) -> None:
    """The issue: EV_DRIVER_NO_MENU=on was ignored (only 1/true/yes counted)."""
    driver = start_driver(tmp_path, word)
    try:
        # The menu's help is its first line, logged before any Kafka client gets to retry.
        driver.wait_for("Kafka unreachable at 127.0.0.1:1", timeout=30)
        assert "menu: r CP_ID" not in driver.output()
    finally:
        driver.terminate()


def test_the_driver_menu_is_on_when_the_switch_says_off(tmp_path: Path) -> None:
    driver = start_driver(tmp_path, "off")
    try:
        driver.wait_for("menu: r CP_ID", timeout=30)
    finally:
        driver.terminate()


def test_a_monitor_credentials_file_others_can_read_is_refused(tmp_path: Path) -> None:
    creds = tmp_path / ".evcharging" / "cp-CP01.json"  # the default path, from the working folder
    creds.parent.mkdir()
    creds.write_text('{"cp_id": "CP01", "secret": "s"}')
    creds.chmod(0o644)

    done = run(tmp_path, ["EV_CP_M", *CP], {})

    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "EV_CP_M: error: .evcharging/cp-CP01.json is readable by other users (mode 644); "
        "chmod 600 it or register again (see --help)"
    ]


def test_a_monitor_deregistering_without_credentials_fails_in_one_line(tmp_path: Path) -> None:
    done = run(tmp_path, ["EV_CP_M", *CP, "--deregister", *REGISTRY], {})

    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].endswith(
        "cp=CP01: cannot deregister: not registered: no credentials in .evcharging/cp-CP01.json"
    )


def test_a_central_master_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    key = tmp_path / ".evcharging" / "central-master.key"  # the default path, from the folder
    key.parent.mkdir()
    key.write_text(base64.b64encode(bytes(range(32))).decode() + "\n")
    key.chmod(0o640)

    done = run(tmp_path, ["EV_Central", "7000", KAFKA], {})

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.endswith(
        "EV_Central ERROR evcharging.central: .evcharging/central-master.key is readable by "
        "other users (mode 640); chmod 600 it"
    )
    assert base64.b64encode(bytes(range(32))).decode() not in done.stderr + done.stdout


def test_central_makes_its_master_key_once_and_warns_when_cp_messages_go_unencrypted(
    tmp_path: Path,
) -> None:
    """First start: the master key is made, mode 0600, where --master-key says, and never
    shown; with --cp-encryption off the comparison mode is said once, as a warning."""
    key = tmp_path / "state" / "master.key"
    log = tmp_path / "central.log"
    argv = [str(free_port()), KAFKA, "--http-port", str(free_port()), "--ui", "plain"]
    argv += ["--master-key", str(key), "--cp-encryption", "off", "--http-host", "127.0.0.1"]
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [str(BIN / "EV_Central"), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=clean_env(PYTHONUNBUFFERED="1"),
        )
    central = Proc("central", popen, log)
    try:
        central.wait_for("CP keys: 0 loaded", timeout=30)
    finally:
        central.terminate()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    output = central.output()
    warnings = [line for line in output.splitlines() if "unencrypted" in line]
    assert len(warnings) == 1, output
    assert "WARNING" in warnings[0]
    assert warnings[0].endswith("CP messages travel unencrypted: benchmark comparison only")
    assert key.read_text().strip() not in output
