"""The weather office's cycle: decisions by the rule, the last decision kept without a reading,
reconciliation with Central (only the differences written), moves and removals, outages."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from evcharging.services.weather_office import (
    BACKOFF,
    CentralAlert,
    CentralRefused,
    CentralUnavailable,
    Reading,
    WeatherOffice,
)
from tests.support.clock import Clock


class FakeProvider:
    def __init__(self, **temps: float | str | None) -> None:
        self.temps: dict[str, float | str | None] = dict(temps)  # str: an error; None: down
        self.asked: list[list[str]] = []

    async def readings(self, cities: list[str]) -> dict[str, Reading]:
        self.asked.append(list(cities))
        out = {}
        for city in cities:
            value = self.temps.get(city, "HTTP 404: city not found")
            if value is None:
                out[city] = Reading(city, error="connection refused", unreachable=True)
            elif isinstance(value, str):
                out[city] = Reading(city, error=value)
            else:
                out[city] = Reading(city, temperature_c=value)
        return out


class FakeCentral:
    def __init__(self, alerts: dict[str, str] | None = None, known: set[str] | None = None) -> None:
        self.alerts_now = {cp: CentralAlert(cp, city, -1.0) for cp, city in (alerts or {}).items()}
        self.known = known
        self.down = False
        self.calls: list[tuple[Any, ...]] = []
        self.reports: list[dict[str, Any]] = []

    def _check(self) -> None:
        if self.down:
            raise CentralUnavailable("connection refused")

    async def alerts(self) -> dict[str, CentralAlert]:
        self._check()
        self.calls.append(("GET",))
        return dict(self.alerts_now)

    async def put_alert(self, cp_id: str, city: str, temperature_c: float) -> None:
        self._check()
        self.calls.append(("PUT", cp_id, city, temperature_c))
        if self.known is not None and cp_id not in self.known:
            raise CentralRefused("HTTP 404 (unknown CP)", 404)
        self.alerts_now[cp_id] = CentralAlert(cp_id, city, temperature_c)

    async def delete_alert(self, cp_id: str) -> bool:
        self._check()
        self.calls.append(("DELETE", cp_id))
        return self.alerts_now.pop(cp_id, None) is not None

    async def put_report(
        self, locations: list[dict[str, Any]], cps: dict[str, str], interval_s: float
    ) -> None:
        self._check()
        self.reports.append({"locations": locations, "cps": cps, "interval_s": interval_s})

    async def delete_report(self) -> None:
        self._check()
        self.calls.append(("DELETE report",))

    def writes(self) -> list[tuple[Any, ...]]:
        done = [c for c in self.calls if c[0] in ("PUT", "DELETE")]
        self.calls.clear()
        return done


def office(
    provider: FakeProvider, central: FakeCentral, **locations: str
) -> tuple[WeatherOffice, Clock]:
    clock = Clock()
    return (
        WeatherOffice(provider, central, interval=4.0, clock=clock, locations=dict(locations)),
        clock,
    )


async def test_below_zero_sends_an_alert_above_zero_cancels_it_only_once_each() -> None:
    provider, central = FakeProvider(Madrid=5.0), FakeCentral()
    wo, _ = office(provider, central, CP01="Madrid")
    await wo.cycle()
    assert central.writes() == []
    provider.temps["Madrid"] = -2.0
    await wo.cycle()
    assert central.writes() == [("PUT", "CP01", "Madrid", -2.0)]
    provider.temps["Madrid"] = -3.5
    await wo.cycle()
    assert central.writes() == []  # Central has it: nothing again
    provider.temps["Madrid"] = 1.0
    await wo.cycle()
    assert central.writes() == [("DELETE", "CP01")]
    await wo.cycle()
    assert central.writes() == []


async def test_exactly_zero_keeps_the_last_decision_both_ways() -> None:
    provider, central = FakeProvider(Madrid=-1.0), FakeCentral()
    wo, _ = office(provider, central, CP01="Madrid")
    await wo.cycle()
    provider.temps["Madrid"] = 0.0
    await wo.cycle()
    assert wo.decisions["CP01"] is True
    assert "CP01" in central.alerts_now
    provider.temps["Madrid"] = 2.0
    await wo.cycle()
    provider.temps["Madrid"] = 0.0
    await wo.cycle()
    assert wo.decisions["CP01"] is False
    assert "CP01" not in central.alerts_now


async def test_exactly_zero_at_start_keeps_the_alert_central_has() -> None:
    """Central's alerts are the last decision of a CP EV_W has not decided yet."""
    provider, central = FakeProvider(Madrid=0.0), FakeCentral(alerts={"CP01": "Madrid"})
    wo, _ = office(provider, central, CP01="Madrid")
    await wo.cycle()
    assert central.writes() == []
    assert wo.decisions["CP01"] is True


@pytest.mark.parametrize("error", ["HTTP 404: city not found", None], ids=["city-error", "down"])
async def test_no_reading_keeps_the_last_decision_and_is_never_a_temperature(
    error: str | None,
) -> None:
    provider, central = FakeProvider(Madrid=-5.0), FakeCentral()
    wo, clock = office(provider, central, CP01="Madrid")
    await wo.cycle()
    assert central.writes() == [("PUT", "CP01", "Madrid", -5.0)]
    provider.temps["Madrid"] = error
    for _ in range(3):
        clock.now += 10
        await wo.cycle()
    assert central.writes() == []
    assert wo.decisions["CP01"] is True
    report = central.reports[-1]["locations"]
    assert report[0]["city"] == "Madrid"
    assert report[0]["temperature_c"] is None
    assert report[0]["error"]


async def test_a_cp_never_read_gets_no_decision_and_no_write() -> None:
    provider, central = FakeProvider(), FakeCentral()
    wo, _ = office(provider, central, CP01="Atlantis")
    await wo.cycle()
    assert central.writes() == []
    assert "CP01" not in wo.decisions


async def test_reconciliation_at_start_writes_only_the_differences() -> None:
    central = FakeCentral(alerts={"CP01": "Teruel", "CP02": "Madrid", "CP09": "Soria"})
    provider = FakeProvider(Teruel=-4.0, Madrid=10.0)
    wo, _ = office(provider, central, CP01="Teruel", CP02="Madrid", CP03="Teruel")
    await wo.cycle()
    writes = central.writes()
    assert ("GET",) not in writes
    assert sorted(writes) == sorted(
        [("DELETE", "CP02"), ("PUT", "CP03", "Teruel", -4.0), ("DELETE", "CP09")]
    )


async def test_a_moved_cp_follows_its_new_city_in_the_next_cycle() -> None:
    provider, central = FakeProvider(Madrid=10.0, Teruel=-4.0), FakeCentral()
    wo, _ = office(provider, central, CP01="Madrid")
    await wo.cycle()
    assert central.writes() == []
    wo.set_city("CP01", "Teruel")
    await wo.cycle()
    assert central.writes() == [("PUT", "CP01", "Teruel", -4.0)]
    provider.temps["Soria"] = -1.0
    wo.set_city("CP01", "Soria")  # freezing to freezing: Central's alert names the new city
    await wo.cycle()
    assert central.writes() == [("PUT", "CP01", "Soria", -1.0)]
    wo.set_city("CP01", "Madrid")
    await wo.cycle()
    assert central.writes() == [("DELETE", "CP01")]


async def test_a_removed_cp_gets_its_alert_cancelled() -> None:
    provider, central = FakeProvider(Teruel=-4.0), FakeCentral()
    wo, _ = office(provider, central, CP01="Teruel", CP02="Teruel")
    await wo.cycle()
    central.writes()
    wo.remove("CP01")
    await wo.cycle()
    assert central.writes() == [("DELETE", "CP01")]
    assert central.reports[-1]["cps"] == {"CP02": "Teruel"}


async def test_central_down_backs_off_then_reads_its_alerts_again_and_resumes() -> None:
    provider, central = FakeProvider(Madrid=5.0), FakeCentral()
    wo, clock = office(provider, central, CP01="Madrid")
    await wo.cycle()
    central.down = True
    provider.temps["Madrid"] = -3.0
    delays = []
    for _ in range(6):
        delays.append(await wo.cycle())
        clock.now += delays[-1]
    assert delays == [*BACKOFF, BACKOFF[-1], BACKOFF[-1]]
    assert wo.decisions["CP01"] is True  # decided meanwhile
    central.down = False
    central.calls.clear()
    assert await wo.cycle() == 4.0
    assert central.calls[0] == ("GET",)  # Central's view read again first
    assert central.writes() == [("PUT", "CP01", "Madrid", -3.0)]


async def test_each_outage_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    provider, central = FakeProvider(Madrid=5.0), FakeCentral()
    wo, clock = office(provider, central, CP01="Madrid")
    central.down = True
    for _ in range(5):
        clock.now += await wo.cycle()
    central.down = False
    await wo.cycle()
    said = [r.getMessage() for r in caplog.records if "Central:" in r.getMessage()]
    assert len(said) == 2, said
    assert "connection refused" in said[0]
    assert "answers again" in said[1]


async def test_provider_down_is_asked_with_backoff_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider, central = FakeProvider(Madrid=None), FakeCentral()
    wo, clock = office(provider, central, CP01="Madrid")
    for _ in range(4):
        await wo.cycle()
        clock.now += 0.2
    assert len(provider.asked) == 1  # the next try waits for the backoff (1 s)
    assert len(central.reports) == 4  # the report goes on: Central shows the provider down
    assert all(r["locations"][0]["error"] for r in central.reports)
    provider.temps["Madrid"] = 7.0
    clock.now += 10
    await wo.cycle()
    assert central.reports[-1]["locations"] == [
        {"city": "Madrid", "temperature_c": 7.0, "error": None}
    ]
    said = [r.getMessage() for r in caplog.records if "weather provider" in r.getMessage()]
    assert len(said) == 2, said


async def test_a_refused_write_is_said_once_and_not_repeated_every_cycle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider, central = FakeProvider(Madrid=-2.0), FakeCentral(known={"CP02"})
    wo, clock = office(provider, central, CP01="Madrid", CP02="Madrid")
    for _ in range(3):
        await wo.cycle()
        clock.now += 4
    puts = [c for c in central.calls if c[0] == "PUT"]
    assert [c[1] for c in puts] == ["CP01", "CP02"]
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1
    assert refused[0].levelno == logging.WARNING


async def test_the_report_lists_each_city_once_and_every_cp() -> None:
    provider, central = FakeProvider(Madrid=3.0), FakeCentral()
    wo, _ = office(provider, central, CP01="Madrid", CP02="Madrid", CP03="Lugo")
    await wo.cycle()
    assert provider.asked == [["Lugo", "Madrid"]]
    report = central.reports[-1]
    assert report["cps"] == {"CP01": "Madrid", "CP02": "Madrid", "CP03": "Lugo"}
    assert report["interval_s"] == 4.0
    assert report["locations"] == [
        {"city": "Lugo", "temperature_c": None, "error": "HTTP 404: city not found"},
        {"city": "Madrid", "temperature_c": 3.0, "error": None},
    ]


async def test_a_summary_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    provider, central = FakeProvider(Madrid=3.0), FakeCentral()
    wo, clock = office(provider, central, CP01="Madrid")
    for _ in range(20):
        await wo.cycle()
        clock.now += 4
    summaries = [r for r in caplog.records if "CP in 1 city" in r.getMessage()]
    assert len(summaries) == 2  # at 0 s and at 60 s of 76 s


async def test_goodbye_deletes_the_report_and_never_raises() -> None:
    central = FakeCentral()
    wo, _ = office(FakeProvider(), central)
    await wo.goodbye()
    assert central.calls == [("DELETE report",)]
    central.down = True
    await wo.goodbye()


def test_the_two_programs_share_the_programs_shape() -> None:
    """As tests/unit/test_program_shape.py: parse_args -> XSettings, XApp(settings).run -> int."""
    import inspect

    from evcharging.apps import weather_office, weather_service

    for module, app, settings in (
        (weather_office, "WeatherOfficeApp", "WeatherOfficeSettings"),
        (weather_service, "WeatherServiceApp", "WeatherServiceSettings"),
    ):
        assert inspect.signature(module.parse_args).return_annotation == settings
        assert inspect.signature(module.main).return_annotation == "int"
        assert inspect.iscoroutinefunction(getattr(module, app).run)


def test_the_settings_never_show_the_token_or_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from evcharging.apps import weather_office

    monkeypatch.setenv("EV_WEATHER_TOKEN", "tok-secret")
    monkeypatch.setenv("OPENWEATHER_API_KEY", "key-secret")
    cfg = weather_office.parse_args(["--central", "http://127.0.0.1:8000", "--locations", "l.yaml"])
    assert (cfg.token, cfg.api_key, cfg.interval) == ("tok-secret", "key-secret", 4.0)
    assert "secret" not in repr(cfg)


def test_the_menu_parses_add_move_remove_list(tmp_path: Any) -> None:
    from evcharging.apps import weather_office

    cfg = weather_office.WeatherOfficeSettings(
        central="http://127.0.0.1:1", locations=tmp_path / "l.yaml", token="t"
    )
    app = weather_office.WeatherOfficeApp(cfg)
    app.office = WeatherOffice(FakeProvider(), FakeCentral())
    assert app.handle("add CP01 Santa Cruz de Tenerife") == [
        "CP01 added in Santa Cruz de Tenerife: watched from the next cycle"
    ]
    assert "already in" in app.handle("add CP01 Madrid")[0]
    assert app.handle("move CP01 Teruel")[0].startswith("CP01 moved from Santa Cruz")
    assert "not a CP id" in app.handle("add CP#1 Madrid")[0]
    assert app.handle("remove CP09") == ["CP09 is not watched"]
    assert app.handle("list")[0].startswith("CP01     Teruel")
    assert (tmp_path / "l.yaml").read_text().endswith("CP01: Teruel\n")
    assert app.handle("remove CP01")[0].startswith("CP01 removed")
    assert app.handle("frobnicate")[0].startswith("not understood")
