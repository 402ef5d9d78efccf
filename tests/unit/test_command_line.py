"""The one command-line rule of every program (apps/common.py): value types, flag or EV_* variable,
one error line and exit code 2."""

from __future__ import annotations

import math
import os
import re
from decimal import Decimal
from pathlib import Path

import pytest

from evcharging.apps import central, cli, cp_engine, cp_monitor, driver
from evcharging.apps.common import (
    Parser,
    boolean,
    bootstrap,
    count,
    duration,
    host_port,
    ident,
    log_level,
    one_of,
    path,
    port,
    port_or_any,
    positive_decimal,
    positive_seconds,
    seconds,
    whole_number,
)


@pytest.fixture(autouse=True)
def _no_ev_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the shell running the tests has set does not leak into these parsers."""
    for name in [n for n in os.environ if n.startswith("EV_")]:
        monkeypatch.delenv(name)


# --- value types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        (boolean, "1", True),
        (boolean, "On", True),
        (boolean, "YES", True),
        (boolean, " true ", True),
        (boolean, "0", False),
        (boolean, "off", False),
        (boolean, "No", False),
        (boolean, "FALSE", False),
        (port, "1", 1),
        (port, "65535", 65535),
        (port_or_any, "0", 0),
        (port_or_any, "8081", 8081),
        (host_port, "kafka:9092", ("kafka", 9092)),
        (host_port, "[::1]:7001", ("::1", 7001)),
        (bootstrap, "k1:9092, k2:9093", "k1:9092,k2:9093"),
        (positive_seconds, "0.5", 0.5),
        (seconds, "0", 0.0),
        (positive_decimal, "22", Decimal(22)),
        (positive_decimal, "0.40", Decimal("0.40")),
        (count, "1", 1),
        (whole_number, "0", 0),
        (ident, "ALC01", "ALC01"),
        (ident, "d-1.x:y_z", "d-1.x:y_z"),
        (duration, "40s", 40.0),
        (duration, "5m", 300.0),
        (duration, "1h", 3600.0),
        (duration, "90", 90.0),
        (log_level, "debug", "DEBUG"),
        (one_of("auto", "plain"), "plain", "plain"),
        (path, "a/b", Path("a/b")),
    ],
)
def test_a_type_reads_good_text(kind, text: str, value: object) -> None:
    assert kind(text) == value


@pytest.mark.parametrize(
    ("kind", "text", "reason"),
    [
        (boolean, "maybe", "expected 1/true/yes/on or 0/false/no/off"),
        (boolean, "", "expected 1/true/yes/on or 0/false/no/off"),
        (port, "0", "not a TCP port (1-65535)"),
        (port, "99999", "not a TCP port (1-65535)"),
        (port, "-1", "not a TCP port (1-65535)"),
        (port, "http", "not a TCP port (1-65535)"),
        (port_or_any, "65536", "not a TCP port (1-65535, or 0 for any free port)"),
        (host_port, "nohostport", "expected HOST:PORT"),
        (host_port, ":9092", "expected HOST:PORT"),
        (host_port, "h:99999", "expected HOST:PORT with a port 1-65535"),
        (host_port, "h:", "expected HOST:PORT with a port 1-65535"),
        (bootstrap, "nohostport", "expected HOST:PORT (or several, comma-separated)"),
        (bootstrap, "k1:9092,", "expected HOST:PORT (or several, comma-separated)"),
        (positive_seconds, "abc", "not a number"),
        (positive_seconds, "nan", "not a number"),
        (positive_seconds, "inf", "not a number"),
        (positive_seconds, "0", "must be more than 0 seconds"),
        (seconds, "-1", "must be 0 seconds or more"),
        (positive_decimal, "-3", "must be more than 0"),
        (positive_decimal, "x", "not a number"),
        (positive_decimal, "Infinity", "not a number"),
        (count, "0", "expected a whole number >= 1"),
        (count, "2.5", "expected a whole number >= 1"),
        (whole_number, "-1", "expected a whole number >= 0"),
        (ident, "bad id", "not an id (1-64 of A-Z a-z 0-9 _ . : -)"),
        (ident, "a#b", "not an id (1-64 of A-Z a-z 0-9 _ . : -)"),
        (ident, "x" * 65, "not an id (1-64 of A-Z a-z 0-9 _ . : -)"),
        (duration, "soon", "expected a duration such as 40s, 5m or 1h"),
        (duration, "0s", "expected a duration such as 40s, 5m or 1h"),
        (log_level, "loud", "expected one of DEBUG, INFO, WARNING, ERROR"),
        (one_of("auto", "plain"), "fancy", "expected one of auto, plain"),
        (path, "", "expected a path"),
    ],
)
def test_a_type_refuses_bad_text_with_its_reason(kind, text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        kind(text)


# --- the parser ----------------------------------------------------------------------------


def a_parser() -> Parser:
    p = Parser(prog="PROG")
    p.positional("port", env="EV_T_PORT", type=port, help="a port")
    p.option("--wait", env="EV_T_WAIT", type=positive_seconds, default=3.0, help="seconds")
    p.option("--name", env="EV_T_NAME", default="n", help="a name")
    p.switch("--quiet", env="EV_T_QUIET", help="say less")
    return p


def error_of(capsys: pytest.CaptureFixture[str], p: Parser, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        p.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith("\n")
    assert len(err.splitlines()) == 1, err
    return err.rstrip("\n")


def test_the_command_line_wins_then_the_variable_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = a_parser().parse_args(["7000"])
    assert (args.port, args.wait, args.name, args.quiet) == (7000, 3.0, "n", False)

    monkeypatch.setenv("EV_T_WAIT", "2.5")
    monkeypatch.setenv("EV_T_QUIET", "on")
    monkeypatch.setenv("EV_T_PORT", "7001")
    args = a_parser().parse_args([])
    assert (args.port, args.wait, args.quiet) == (7001, 2.5, True)

    args = a_parser().parse_args(["7002", "--wait", "9"])
    assert (args.port, args.wait) == (7002, 9.0)


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EV_T_WAIT", "")
    monkeypatch.setenv("EV_T_QUIET", "")
    args = a_parser().parse_args(["7000"])
    assert (args.wait, args.quiet) == (3.0, False)


def test_a_switch_variable_may_say_no(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EV_T_QUIET", "off")
    assert a_parser().parse_args(["7000"]).quiet is False
    assert a_parser().parse_args(["7000", "--quiet"]).quiet is True


def test_a_bad_variable_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EV_T_WAIT", "abc")
    assert error_of(capsys, a_parser(), ["7000"]) == (
        "PROG: error: EV_T_WAIT='abc': not a number (see --help)"
    )


def test_a_bad_variable_is_an_error_even_when_the_flag_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command line wins: a variable it overrides is not read at all."""
    monkeypatch.setenv("EV_T_WAIT", "abc")
    assert a_parser().parse_args(["7000", "--wait", "1"]).wait == 1.0


def test_a_bad_flag_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_of(capsys, a_parser(), ["7000", "--wait", "-1"]) == (
        "PROG: error: --wait='-1': must be more than 0 seconds (see --help)"
    )


def test_a_bad_positional_names_the_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_of(capsys, a_parser(), ["99999"]) == (
        "PROG: error: PORT='99999': not a TCP port (1-65535) (see --help)"
    )


def test_a_bad_switch_variable_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EV_T_QUIET", "maybe")
    assert "EV_T_QUIET='maybe': expected 1/true/yes/on or 0/false/no/off" in error_of(
        capsys, a_parser(), ["7000"]
    )


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        ([], "the following arguments are required: PORT"),
        (["7000", "extra"], "unrecognized arguments: extra"),
        (["7000", "--wait"], "argument --wait: expected one argument"),
        (["7000", "--nope"], "unrecognized arguments: --nope"),
    ],
)
def test_argparse_own_errors_are_one_line_too(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert error_of(capsys, a_parser(), argv) == f"PROG: error: {said} (see --help)"


def test_help_names_each_variable_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        a_parser().parse_args(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "a port (env EV_T_PORT)" in out
    assert "seconds (env EV_T_WAIT; default 3.0)" in out
    assert "say less (env EV_T_QUIET=yes|no)" in out
    assert "1/true/yes/on or 0/false/no/off" in out


def test_subcommands_follow_the_same_rule(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EV_KAFKA_PORT", "19092")
    args = cli.build_parser().parse_args(["kafka", "status"])
    assert (args.port, args.host, args.controller_port) == (19092, "127.0.0.1", None)

    monkeypatch.setenv("EV_KAFKA_PORT", "abc")
    assert error_of(capsys, cli.build_parser(), ["kafka", "status"]) == (
        "evcharging kafka status: error: EV_KAFKA_PORT='abc': not a TCP port (1-65535) (see --help)"
    )


def test_the_demo_options_are_typed(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.build_parser().parse_args(["demo", "--cps", "2", "--for", "2m"])
    assert (args.cps, args.drivers, args.for_, args.workdir) == (2, 3, 120.0, Path(".run/demo"))
    assert "--cps='0': expected a whole number >= 1" in error_of(
        capsys, cli.build_parser(), ["demo", "--cps", "0"]
    )


# --- the programs, through the same rule ---------------------------------------------------


def test_each_program_reads_the_same_switch_words(monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue: EV_DRIVER_NO_MENU=on was ignored while EV_ENGINE_NO_MENU=on worked."""
    monkeypatch.setenv("EV_DRIVER_NO_MENU", "on")
    monkeypatch.setenv("EV_ENGINE_NO_MENU", "on")
    assert driver.parse_args(["k:9092", "D001"]).menu is False
    assert cp_engine.parse_args(["k:9092", "h:7001"]).menu is False
    monkeypatch.setenv("EV_DRIVER_NO_MENU", "off")
    monkeypatch.setenv("EV_ENGINE_NO_MENU", "off")
    assert driver.parse_args(["k:9092", "D001"]).menu is True
    assert cp_engine.parse_args(["k:9092", "h:7001"]).menu is True


@pytest.mark.parametrize(
    ("env", "argv", "said"),
    [
        ({}, ["22000", "nohostport"], "KAFKA='nohostport': expected HOST:PORT"),
        ({}, ["99999", "k:9092"], "PORT='99999': not a TCP port (1-65535)"),
        ({"EV_HEARTBEAT_TIMEOUT": "abc"}, ["7000", "k:9092"], "EV_HEARTBEAT_TIMEOUT='abc'"),
        ({"EV_HTTP_PORT": "0"}, ["7000", "k:9092"], "EV_HTTP_PORT='0': not a TCP port"),
        ({}, ["7000", "k:9092", "--cp-encryption", "no"], "--cp-encryption='no': expected one"),
        ({"EV_CP_ENCRYPTION": "yes"}, ["7000", "k:9092"], "EV_CP_ENCRYPTION='yes': expected"),
    ],
)
def test_central_refuses_bad_values(
    env: dict[str, str],
    argv: list[str],
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exc:
        central.parse_args(argv)
    assert exc.value.code == 2
    assert said in capsys.readouterr().err


def test_settings_keep_their_defaults() -> None:
    c = central.parse_args(["7000", "k:9092"])
    assert (c.http_port, c.heartbeat_timeout, c.ui, c.db, c.log_level) == (
        8000,
        3.0,
        "auto",
        ".run/central.db",
        "INFO",
    )
    assert c.token_generated
    assert (c.master_key, c.cp_encryption) == (Path(".evcharging/central-master.key"), True)
    e = cp_engine.parse_args(["k:9092", "h:7001"])
    assert e == cp_engine.EngineSettings("k:9092", ("h", 7001))
    m = cp_monitor.parse_args(["e:7001", "c:7000", "CP01"])
    assert m == cp_monitor.MonitorSettings(("e", 7001), ("c", 7000), "CP01")
    d = driver.parse_args(["k:9092", "D001"])
    assert (d.pause, d.answer_timeout, d.menu, d.web_port, d.web_host, d.web_max_drivers) == (
        4.0,
        10.0,
        True,
        None,
        "127.0.0.1",
        20,
    )


def test_central_takes_its_master_key_file_and_encryption_mode_from_flag_or_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given = central.parse_args(["7000", "k:9092", "--master-key", "/srv/m.key"])
    assert (given.master_key, given.cp_encryption) == (Path("/srv/m.key"), True)
    off = central.parse_args(["7000", "k:9092", "--cp-encryption", "off"])
    assert off.cp_encryption is False
    monkeypatch.setenv("EV_MASTER_KEY_FILE", "/etc/ev/central.key")
    monkeypatch.setenv("EV_CP_ENCRYPTION", "off")
    from_env = central.parse_args(["7000", "k:9092"])
    assert (from_env.master_key, from_env.cp_encryption) == (Path("/etc/ev/central.key"), False)
    assert central.parse_args(["7000", "k:9092", "--cp-encryption", "on"]).cp_encryption


def test_a_bad_services_file_names_where_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    services = tmp_path / "s.txt"
    services.write_text("ALC01\nbad id\n")
    monkeypatch.setenv("EV_DRIVER_FILE", str(services))
    with pytest.raises(SystemExit):
        driver.parse_args(["k:9092", "D001"])
    assert f"EV_DRIVER_FILE='{services}': line 2: 'bad id' is not a CP id" in (
        capsys.readouterr().err
    )


def test_the_log_level_comes_from_the_same_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EV_LOG_LEVEL", "debug")
    assert cp_monitor.parse_args(["e:1", "c:2", "CP01"]).log_level == "DEBUG"
    assert driver.parse_args(["k:1", "D1", "--log-level", "warning"]).log_level == "WARNING"


def test_no_type_accepts_a_non_finite_number() -> None:
    for kind in (positive_seconds, seconds, positive_decimal, duration):
        for text in ("nan", "inf", "-inf"):
            with pytest.raises(ValueError, match=r"not a number|expected a duration"):
                kind(text)
    assert math.isfinite(positive_seconds("1e3"))
