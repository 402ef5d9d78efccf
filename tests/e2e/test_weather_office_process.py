"""EV_W as a real process, with the real EV_WeatherService and a recording stand-in for
API_Central's weather endpoints: a freezing city is alerted within a cycle, the menu moves and
removes CPs live, signals say goodbye to Central, outages back off and resume, secrets stay out
of every output."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.processes import Network, Proc
from tests.support.waiting import eventually_sync
from tests.support.weather import API_KEY, TOKEN, procs, secret_file, weather_service
from tests.support.weather_central import RecordingCentral

pytestmark = [pytest.mark.e2e]

INTERVAL = 1.0
ONE_CYCLE = 2 * INTERVAL + 3.0  # the change may land just after a cycle began; slack for load
ALERTS = "/api/v1/weather/alerts"


@dataclass
class Office:
    net: Network
    central: RecordingCentral
    service: Proc
    service_port: int
    cities: Path
    locations: Path
    workdir: Path

    def start_ev_w(self, *extra: str, env: dict[str, str] | None = None) -> Proc:
        proc = self.net.start(
            f"ev_w-{len(self.net.procs)}",
            "EV_W",
            "--central",
            self.central.url,
            "--token-file",
            str(secret_file(self.workdir, "token", TOKEN)),
            "--locations",
            str(self.locations),
            "--provider",
            f"http://127.0.0.1:{self.service_port}",
            "--api-key-file",
            str(secret_file(self.workdir, "key", API_KEY)),
            "--interval",
            str(INTERVAL),
            *extra,
            env=env,
        )
        self.central.wait_for("PUT", "/api/v1/weather/report", timeout=30)
        return proc

    def set_city(self, **temps: float) -> None:
        """Edit the service's file by hand, as the marker would."""
        table = yaml.safe_load(self.cities.read_text(encoding="utf-8")) or {}
        table.update(temps)
        self.cities.write_text(yaml.safe_dump(table), encoding="utf-8")

    def outputs(self) -> str:
        return "".join(p.output() for p in self.net.procs)


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    cities = tmp_path / "cities.yaml"
    cities.write_text("Madrid: 10\nTeruel: 5\nSoria: -2\n", encoding="utf-8")
    locations = tmp_path / "locations.yaml"
    locations.write_text("CP01: Madrid\nCP02: Teruel\n", encoding="utf-8")
    net = procs(tmp_path)
    central = RecordingCentral(token=TOKEN)
    central.start()
    try:
        service, port = weather_service(net, cities)
        yield Office(net, central, service, port, cities, locations, tmp_path)
    finally:
        net.stop_all()
        central.stop()
        every = "".join(p.output() for p in net.procs)
        assert API_KEY not in every
        assert TOKEN not in every


def test_a_freezing_city_is_alerted_within_a_cycle_and_the_menu_moves_cps_live(
    office: Office,
) -> None:
    ev_w = office.start_ev_w()
    central = office.central
    report = central.reports()[-1]
    assert report.authorization == f"Bearer {TOKEN}"
    assert report.body["cps"] == {"CP01": "Madrid", "CP02": "Teruel"}
    assert report.body["interval_s"] == INTERVAL
    assert central.writes() == []

    office.set_city(Teruel=-3.5)
    put = central.wait_for("PUT", f"{ALERTS}/CP02", timeout=ONE_CYCLE)
    assert put.body == {"city": "Teruel", "temperature_c": -3.5}
    ev_w.wait_for("CP02 (Teruel, -3.5 °C): weather alert sent to Central")

    ev_w.send("move CP01 Soria")
    moved = central.wait_for("PUT", f"{ALERTS}/CP01", timeout=ONE_CYCLE)
    assert moved.body == {"city": "Soria", "temperature_c": -2.0}
    assert yaml.safe_load(office.locations.read_text()) == {"CP01": "Soria", "CP02": "Teruel"}

    ev_w.send("remove CP02")
    central.wait_for("DELETE", f"{ALERTS}/CP02", timeout=ONE_CYCLE)
    assert yaml.safe_load(office.locations.read_text()) == {"CP01": "Soria"}

    office.set_city(Soria=4)
    central.wait_for("DELETE", f"{ALERTS}/CP01", timeout=ONE_CYCLE)
    assert central.alerts == {}
    ev_w.send("list")
    ev_w.wait_for("CP01     Soria")
    # one line per change, not one line per city per cycle
    assert ev_w.count("weather alert sent to Central") == 2
    assert len(ev_w.output().splitlines()) < 15, ev_w.output()


def test_at_start_ev_w_reconciles_with_the_alerts_central_already_has(office: Office) -> None:
    office.central.alerts = {
        "CP01": {"cp_id": "CP01", "city": "Madrid", "temperature_c": -1.0},  # now 10 °C
        "CP77": {"cp_id": "CP77", "city": "Lugo", "temperature_c": -1.0},  # not watched
    }
    office.start_ev_w()
    office.central.wait_for("DELETE", f"{ALERTS}/CP01", timeout=ONE_CYCLE)
    office.central.wait_for("DELETE", f"{ALERTS}/CP77", timeout=ONE_CYCLE)
    assert office.central.seen("GET", ALERTS)


@pytest.mark.parametrize(
    "how", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name
)
def test_a_stop_tells_central_and_exits_0_but_sigkill_cannot(
    office: Office, how: signal.Signals
) -> None:
    ev_w = office.start_ev_w()
    ev_w.stop_by(how)
    goodbye = office.central.seen("DELETE", "/api/v1/weather/report")
    if how is signal.SIGKILL:
        assert goodbye == []
        return
    assert ev_w.popen.returncode == 0, ev_w.output()[-2000:]
    assert len(goodbye) == 1
    assert goodbye[0].authorization == f"Bearer {TOKEN}"
    assert "Traceback" not in ev_w.output()


def test_provider_down_changes_no_alert_the_report_says_so_and_it_recovers(
    office: Office,
) -> None:
    office.set_city(Teruel=-3.0)
    ev_w = office.start_ev_w()
    central = office.central
    central.wait_for("PUT", f"{ALERTS}/CP02", timeout=ONE_CYCLE)
    office.service.terminate()
    at = ev_w.wait_for("connection refused; retrying after 1, 2, 4, then every 8 s", timeout=15)
    seen = len(central.reports())
    central.wait_for("PUT", "/api/v1/weather/report", after=seen + 2, timeout=15)
    down = central.reports()[-1].body["locations"]
    assert {loc["city"] for loc in down} == {"Madrid", "Teruel"}
    assert all(loc["temperature_c"] is None and loc["error"] for loc in down)
    assert central.writes() == [("PUT", f"{ALERTS}/CP02")]  # nothing changed without data

    office.set_city(Teruel=8.0)
    office.service, _ = weather_service(office.net, office.cities, port=office.service_port)
    ev_w.wait_for("weather provider at", after=at)
    ev_w.wait_for("answers again", after=at, timeout=15)
    central.wait_for("DELETE", f"{ALERTS}/CP02", timeout=ONE_CYCLE)
    assert ev_w.count("retrying after 1, 2, 4") == 1  # said once per outage


def test_central_down_backs_off_then_resumes_at_once(office: Office) -> None:
    ev_w = office.start_ev_w()
    central = office.central
    central.stop()
    at = ev_w.wait_for("Central at", timeout=15)
    ev_w.wait_for("connection refused; retrying after 1, 2, 4, then every 8 s", after=at - 200)
    office.set_city(Madrid=-6.0)  # decided while Central is away, written when it is back

    def decided() -> bool:
        ev_w.send("list")
        return "ALERT" in ev_w.output()

    eventually_sync(decided, 15, interval=0.5, what="EV_W to decide while Central is away")
    before = len(central.requests)
    central.start()
    put = central.wait_for("PUT", f"{ALERTS}/CP01", timeout=8 + ONE_CYCLE)
    assert put.body == {"city": "Madrid", "temperature_c": -6.0}
    after_restart = central.requests[before:]
    assert after_restart[0].method == "GET"  # Central's alerts read again first
    ev_w.wait_for("answers again", after=at)
    assert ev_w.count("retrying after 1, 2, 4") == 1


def test_no_secret_in_any_output_even_at_debug_with_a_wrong_key(
    office: Office, tmp_path: Path
) -> None:
    """The service wants another key: every reading is a 401 whose text is shown, never a key."""
    office.service.terminate()
    office.service, _ = weather_service(
        office.net, office.cities, port=office.service_port, api_key="the-other-key"
    )
    ev_w = office.start_ev_w("--log-level", "DEBUG")
    ev_w.wait_for("no reading (HTTP 401: Invalid API key")
    ev_w.send("list")
    ev_w.wait_for("CP02     Teruel")
    ev_w.stop_by(signal.SIGTERM)
    out = ev_w.output()
    assert API_KEY not in out
    assert TOKEN not in out
    assert "appid=" not in out or "appid=***" in out


def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path) -> None:
    from tests.support.processes import run_to_end

    locations = tmp_path / "l.yaml"
    locations.write_text("CP01: Madrid\n")
    no_token = run_to_end(
        tmp_path,
        "EV_W",
        "--central",
        "http://127.0.0.1:1",
        "--locations",
        str(locations),
        env={"PATH": "/usr/bin"},
    )
    assert no_token.returncode == 2
    assert "no weather token" in no_token.stderr
    assert len(no_token.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    wrong_file = run_to_end(
        tmp_path,
        "EV_W",
        "--central",
        "http://127.0.0.1:1",
        "--locations",
        str(bad),
        env={"PATH": "/usr/bin", "EV_WEATHER_TOKEN": TOKEN, "EV_W_PROVIDER": "http://127.0.0.1:1"},
    )
    assert wrong_file.returncode == 2
    assert "must be a YAML mapping" in wrong_file.stderr
    assert "Traceback" not in wrong_file.stderr
    assert TOKEN not in wrong_file.stderr + wrong_file.stdout


def test_central_failing_is_retried_after_1_2_4_seconds(office: Office) -> None:
    office.start_ev_w()
    central = office.central
    central.failing = True
    seen = len(central.seen("GET", ALERTS))
    central.wait_for("GET", ALERTS, after=seen + 3, timeout=30)  # the view is read again first
    times = [r.at for r in central.seen("GET", ALERTS)[seen:]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 1, 2, 4, 8 s between tries (the first failed try may have been the report: 2, 4, 8)
    assert [g >= least for g, least in zip(gaps, (0.9, 1.9, 3.9), strict=False)] == [True] * 3, gaps
    assert all(g <= 8 + 3 for g in gaps), gaps
    central.failing = False
    before = len(central.reports())
    central.wait_for("PUT", "/api/v1/weather/report", after=before, timeout=8 + ONE_CYCLE)
