"""Module health: one audit row per change of state, never per probe; subscribers told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from evcharging.contracts.audit import AuditAction
from evcharging.services.audit import Audit, AuditEntry
from evcharging.services.module_health import Health, HealthJson, Module, ModuleHealth


class Sink:
    def __init__(self) -> None:
        self.rows: list[AuditEntry] = []

    def append_audit(self, entry: AuditEntry) -> None:
        self.rows.append(entry)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_first_picture() -> None:
    health = ModuleHealth(Audit([Sink()]))
    assert [(m["name"], m["state"]) for m in health.json["modules"]] == [
        ("central", "up"),
        ("kafka", "unknown"),
        ("registry", "unknown"),
        ("ev_w", "unknown"),
        ("weather_provider", "unknown"),
    ]
    assert health.get(Module.REGISTRY).detail == "not watched"


def test_a_change_of_state_is_audited_once_and_pushed() -> None:
    sink, clock = Sink(), Clock()
    health = ModuleHealth(Audit([sink]), clock)
    told: list[HealthJson] = []
    health.subscribe(told.append)
    assert health.set(Module.REGISTRY, Health.DOWN, "unreachable", ip="10.0.0.3")
    clock.now += timedelta(seconds=5)
    assert not health.set(Module.REGISTRY, Health.DOWN, "unreachable")  # the same: nothing
    assert health.set(Module.REGISTRY, Health.DOWN, "answered 503")  # a new detail: pushed only
    assert health.get(Module.REGISTRY).since == datetime(2026, 11, 27, 12, tzinfo=UTC)
    assert health.set(Module.REGISTRY, Health.UP, "answering")
    assert [(r.action, r.params["module"]) for r in sink.rows] == [
        (AuditAction.MODULE_DOWN, "registry"),
        (AuditAction.MODULE_UP, "registry"),
    ]
    assert sink.rows[0].ip == "10.0.0.3"
    assert sink.rows[0].detail == "EV_Registry down: unreachable"
    assert len(told) == 3
    assert health.get(Module.REGISTRY).since == clock.now


def test_unknown_and_assumed_states_are_not_audited() -> None:
    sink = Sink()
    health = ModuleHealth(Audit([sink]))
    health.set(Module.KAFKA, Health.UP, "reachable", audited=False)
    health.set(Module.WEATHER_PROVIDER, Health.UNKNOWN, "EV_W is down")
    assert sink.rows == []
    assert health.get(Module.WEATHER_PROVIDER).since is None


def test_a_change_is_told_where_the_owner_says_once_and_a_new_detail_is_not() -> None:
    said: list[tuple[str, str]] = []
    health = ModuleHealth(Audit([Sink()]), say=lambda text, level: said.append((text, level)))
    health.set(Module.EV_W, Health.UP, "reporting every 4 s")
    health.set(Module.EV_W, Health.DOWN, "no report for 12 s")
    health.set(Module.EV_W, Health.DOWN, "no report for 16 s")  # the same state: not told again
    health.set(Module.KAFKA, Health.DOWN, "unreachable", said=True)  # its watch logged it
    assert said == [
        ("EV_W (weather office) up: reporting every 4 s", "info"),
        ("EV_W (weather office) down: no report for 12 s", "warning"),
    ]
