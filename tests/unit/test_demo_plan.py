"""What `evcharging demo` starts and how its output reads (the pure part of the demo)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from evcharging.apps.cli import build_parser
from evcharging.ops.demo_plan import (
    DEMO_BALANCE,
    FREEZING_CITY,
    FREEZING_LOCATION,
    OCPP_CP_ROW,
    OCPP_ID_TAG,
    PAUSE_SECONDS,
    RESTART_SECONDS,
    SERVICES_PER_DRIVER,
    SUPPLY_SECONDS,
    charger_env,
    compact,
    deal,
    plan_network,
    plan_weather,
    render,
    restart_delay,
    with_freezing_city,
    with_ocpp_charger,
)
from evcharging.services.driver import parse_services
from evcharging.services.engine import EngineConfig, energy_after
from tests.support.ocpp_go import go_cp_env


def ids(rows: list[dict[str, str]]) -> list[str]:
    return [row["id"] for row in rows]


def test_only_what_the_demo_starts_is_seeded_and_cps_register_themselves() -> None:
    plan = plan_network(5, 3)
    assert "charging_points" not in plan.seed  # CPs register at the Registry, with credentials
    assert ids(list(plan.cp_rows)) == ["ALC01", "ALC02", "ALC03", "VLC01", "VLC02"]
    assert list(plan.cps) == ids(list(plan.cp_rows))
    assert ids(plan.seed["drivers"]) == ["D001", "D002", "D003"]
    assert [d.driver_id for d in plan.drivers] == ["D001", "D002", "D003"]
    assert set(plan.supply_seconds) == set(plan.cps)


def test_bigger_networks_are_generated_beyond_the_sample() -> None:
    plan = plan_network(14, 8)
    assert ids(list(plan.cp_rows))[-2:] == ["CP013", "CP014"]
    assert ids(plan.seed["drivers"])[-2:] == ["D007", "D008"]
    assert len(set(plan.cps)) == 14


def test_each_driver_has_its_own_cps_and_together_they_use_every_cp() -> None:
    for cps, drivers in ((5, 3), (2, 2), (12, 5), (3, 1), (7, 7)):
        plan = plan_network(cps, drivers, services_per_driver=20)
        assert not plan.shared
        used = [cp for d in plan.drivers for cp in d.cps]
        assert sorted(used) == sorted(plan.cps), (cps, drivers)  # each CP exactly once
        for d in plan.drivers:
            assert set(d.services) == set(d.cps)  # a driver never asks for another's CP
    assert [d.cps for d in plan_network(5, 3).drivers] == [
        ("ALC01", "VLC01"),
        ("ALC02", "VLC02"),
        ("ALC03",),
    ]


def test_more_drivers_than_cps_share_them_round() -> None:
    assert deal(["A", "B"], 3) == [("A",), ("B",), ("A",)]
    assert plan_network(2, 3).shared
    assert plan_network(5, 0).drivers == ()


def test_drivers_have_services_for_hours_and_a_balance_that_pays_for_them() -> None:
    plan = plan_network(5, 3)
    fastest = SUPPLY_SECONDS[0] + PAUSE_SECONDS
    for d in plan.drivers:
        assert len(d.services) == SERVICES_PER_DRIVER
        assert len(d.services) * fastest >= 10 * 3600
    engine = EngineConfig()
    dearest = max(Decimal(row["price_eur_per_kwh"]) for row in plan.cp_rows)
    worst = energy_after(engine.kw, SUPPLY_SECONDS[1], engine.speedup) * dearest
    assert worst * SERVICES_PER_DRIVER <= DEMO_BALANCE
    assert {row["balance_eur"] for row in plan.seed["drivers"]} == {str(DEMO_BALANCE)}


def test_a_services_file_reads_back_as_the_plan() -> None:
    driver = plan_network(5, 3, services_per_driver=7).drivers[0]
    text = driver.services_text()
    assert text.startswith("# Services of driver D001")
    assert parse_services(text) == list(driver.services)
    assert driver.services == ("ALC01", "VLC01") * 3 + ("ALC01",)


LOG = "2026-12-01 14:28:22,205 UTC EV_CP_E {level} evcharging.{logger}: {message}"


def line(message: str, level: str = "INFO", logger: str = "services.engine") -> str:
    return LOG.format(level=level, logger=logger, message=message)


def test_compact_keeps_the_message_and_drops_what_the_label_says() -> None:
    assert compact(line("cp=ALC02: state: Activado (idle)"), "ALC02") == "state: Activado (idle)"
    assert compact(line("cp=ALC02 driver=D001: x"), "ALC02") == "driver=D001: x"
    assert compact(line("cp=ALC02: x"), None) == "cp=ALC02: x"
    assert (
        compact(
            line("AUTHORISED driver=D001 cp=ALC01 session=9d2e23c2-8561-44ba-89d5-a50fef1a79bb")
        )
        == "AUTHORISED driver=D001 cp=ALC01 session=9d2e23c2"
    )
    assert (
        compact(line("DENIED driver=D1 cp=A reason=x", "WARNING", "apps.driver"))
        == "warning: DENIED driver=D1 cp=A reason=x"
    )
    assert compact("Traceback (most recent call last):") == "Traceback (most recent call last):"


def test_compact_leaves_out_the_engines_per_second_readings() -> None:
    reading = (
        "cp=ALC02 driver=D001 session=9d2e23c2-8561-44ba-89d5-a50fef1a79bb: Suministrando 22 kW"
    )
    assert compact(line(reading), "ALC02") is None
    assert compact(line(reading, logger="apps.driver"), "ALC02") is not None


def test_render_wraps_under_the_message_only_when_given_a_width() -> None:
    message = "TICKET driver=D001 cp=ALC01 kwh=2.932 eur=1.14 reason=unplugged balance=9998.86"
    assert render("driver D001", message, 13) == [f"driver D001   | {message}"]
    rows = render("driver D001", message, 13, 80)
    assert all(len(row) <= 80 for row in rows)
    assert rows[0].startswith("driver D001   | TICKET driver=D001 cp=ALC01")
    assert rows[1].startswith("              |   ")
    assert " ".join(r.split("|", 1)[1].strip() for r in rows) == message


@pytest.mark.parametrize(
    "argv",
    [["--cps", "0"], ["--drivers", "-1"], ["--for", "soon"], ["--for", "0s"]],
)
def test_bad_demo_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["demo", *argv])
    assert exited.value.code == 2


def test_the_demo_weather_has_one_freezing_city_with_the_last_cp_and_mild_others() -> None:
    plan = with_freezing_city(plan_network(5, 3))
    assert plan.cp_rows[-1]["location"] == FREEZING_LOCATION
    assert [row["location"] for row in plan.cp_rows[:-1]] == [
        row["location"] for row in plan_network(5, 3).cp_rows[:-1]
    ]
    weather = plan_weather(plan)
    assert weather.locations[plan.cps[-1]] == FREEZING_CITY
    assert weather.locations[plan.cps[0]] == "Alicante"
    assert FREEZING_CITY not in weather.cities
    assert all(t > 0 for t in weather.cities.values())
    assert weather.cycle == f"{FREEZING_CITY}:-4:6:40"
    assert yaml.safe_load(weather.locations_text()) == weather.locations


# --- the real OCPP charger --------------------------------------------------------------------


def test_the_ocpp_charger_gets_a_cp_of_its_own_and_its_idtag_is_a_driver_with_a_balance() -> None:
    plain = with_freezing_city(plan_network(5, 3))
    plan = with_ocpp_charger(plain)
    assert plan.ocpp is not None
    assert plan.ocpp.cp_id == "OCPP01"
    assert plan.ocpp.cp_row == OCPP_CP_ROW
    assert plan.ocpp.id_tag == OCPP_ID_TAG == "12345"  # ocpp-go's example CP's only idTag
    # Its driver is seeded (it has no app: the charger asks for it) with the demo's balance...
    assert ids(plan.seed["drivers"]) == ["D001", "D002", "D003", "12345"]
    assert plan.seed["drivers"][-1]["balance_eur"] == str(DEMO_BALANCE)
    assert [d.driver_id for d in plan.drivers] == ["D001", "D002", "D003"]
    # ... its CP is not one with a Monitor and an Engine, and no driver's services use it.
    assert plan.cps == plain.cps
    assert plan.cp_rows == plain.cp_rows
    assert all("OCPP01" not in d.services for d in plan.drivers)
    assert plain.ocpp is None
    assert ids(plain.seed["drivers"]) == ["D001", "D002", "D003"]
    # EV_W follows its city too, a mild one.
    weather = plan_weather(plan)
    assert weather.locations["OCPP01"] == "Valencia"
    assert weather.cities["Valencia"] > 0
    assert "OCPP01" not in plan_weather(plain).locations


def test_the_charger_env_is_what_the_go_charge_point_reads_and_nothing_inherited() -> None:
    ca, cert, key = Path("/c/ca.pem"), Path("/c/cp-OCPP01.pem"), Path("/c/cp-OCPP01.key")
    inherited = {"PATH": "/bin", "CLIENT_ID": "X", "TLS_ENABLED": "false", "CA_CERTIFICATE_X": "y"}
    env = charger_env(inherited, "OCPP01", "wss://127.0.0.1:9000/", ca=ca, cert=cert, key=key)
    ours = {k: v for k, v in env.items() if k != "PATH"}
    # The same variables as the test support that runs the Go CP against EV_OCPP (its e2e test).
    assert ours == go_cp_env("OCPP01", "wss://127.0.0.1:9000", ca=ca, cert=cert, key=key)
    assert env["CENTRAL_SYSTEM_URL"] == "wss://127.0.0.1:9000"  # it adds "/" + CLIENT_ID
    assert env["PATH"] == "/bin"
    assert "CA_CERTIFICATE_X" not in env


def test_the_charger_is_started_again_at_once_after_a_whole_run_and_later_after_quick_exits() -> (
    None
):
    first, longest = RESTART_SECONDS
    assert restart_delay(330.0, None) == first  # its session, 5 minutes idle, gone
    assert restart_delay(330.0, 16.0) == first
    assert restart_delay(0.2, None) == first  # it could not connect: try again
    waits, delay = [], None
    for _ in range(8):
        delay = restart_delay(0.2, delay)
        waits.append(delay)
    assert waits == sorted(waits)
    assert waits[1] == 2 * first
    assert waits[-1] == longest


GO_LINE = 'time="2025-12-02T02:02:02Z" level={level} msg={message}{fields}'


def test_compact_reads_the_go_chargers_logrus_lines() -> None:
    line = GO_LINE.format(
        level="error", message='"dial tcp 127.0.0.1:9000: connect: refused"', fields=""
    )
    assert compact(line, "OCPP01") == "error: dial tcp 127.0.0.1:9000: connect: refused"
    fatal = GO_LINE.format(
        level="fatal", message='"got \\"x\\" back"', fields=" logger=ocppj message=boot"
    )
    assert compact(fatal) == 'error: got "x" back (logger=ocppj message=boot)'
    assert compact(GO_LINE.format(level="info", message="connected", fields="")) == "connected"
    assert compact("panic: runtime error") == "panic: runtime error"
