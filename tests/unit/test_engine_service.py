"""The Engine's state machine with a fake publisher, store and clock (no sockets, no Kafka)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evcharging.adapters.engine_state_file import JsonSupplyStore
from evcharging.apps.cp_engine import EngineMenu, build_router, parse_args
from evcharging.contracts.events import (
    EVENT_TYPES,
    AuthorizationRequest,
    CpReportStatus,
    CpReset,
    CpResume,
    CpStop,
    CpTelemetry,
    Event,
    RequestDenied,
    StopSupply,
    SupplyAuthorised,
    SupplyEnded,
)
from evcharging.contracts.topics import CP_COMMANDS
from evcharging.domain.money import cost
from evcharging.services.cp_keys import CpKey, Exchange, handover_wrap, new_key
from evcharging.services.engine import (
    KEYS_REVOKED_TEXT,
    MAX_ENERGY_KWH,
    EngineConfig,
    EnginePhase,
    EngineService,
    energy_after,
)
from evcharging.services.ports import Accepted, Delivery, EngineRefusal, SupplyRecord
from tests.support.fakes import RecordingPublisher
from tests.support.waiting import eventually

CP = "CP01"
PRICE = Decimal("0.35")


FakePublisher = RecordingPublisher


class FakeStore:
    def __init__(self, records: Sequence[SupplyRecord] = ()) -> None:
        self.files: dict[str, list[SupplyRecord]] = {CP: list(records)} if records else {}
        self.writes = 0

    def load(self, cp_id: str) -> list[SupplyRecord]:
        return list(self.files.get(cp_id, []))

    def save(self, cp_id: str, records: Sequence[SupplyRecord]) -> None:
        self.writes += 1
        if records:
            self.files[cp_id] = list(records)
        else:
            self.files.pop(cp_id, None)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Rig:
    """An Engine with its fakes; `ready()` gives it a CP id, a live Monitor and Central UP."""

    def __init__(self, store: FakeStore | None = None, **config: object) -> None:
        self.publisher = FakePublisher()
        self.store = store or FakeStore()
        self.clock = FakeClock()
        self.engine = EngineService(
            self.publisher,
            self.store,
            self.clock,
            EngineConfig(**config),  # type: ignore[arg-type]
        )

    def ready(self) -> Rig:
        self.engine.set_cp_id(CP)
        self.engine.health_check()
        self.engine.set_central(True)
        return self

    def authorise(self, driver: str = "D1", session: UUID | None = None) -> SupplyAuthorised:
        ev = an_authorisation(driver, session)
        self.engine.on_supply_authorised(ev)
        return ev

    async def events(self) -> list[Event]:
        await self.engine.flush()
        return self.publisher.events


def an_authorisation(driver: str = "D1", session: UUID | None = None) -> SupplyAuthorised:
    return SupplyAuthorised(
        cp_id=CP, session_id=session or uuid4(), driver_id=driver, price_eur_per_kwh=PRICE
    )


def a_record(energy: str = "1.234", ended_reason: str | None = None) -> SupplyRecord:
    return SupplyRecord(str(uuid4()), "D9", PRICE, Decimal(energy), 5, ended_reason)


def types(events: Sequence[Event]) -> list[str]:
    return [e.event_type for e in events]


def hand_over(engine: EngineService, key: CpKey, *, tamper: bool = False) -> object:
    """What the Monitor's KEYX and KEY do (`services.cp_keys` handover), straight to the service."""
    exchange = Exchange()
    engine_public = engine.key_exchange(exchange.public)
    if isinstance(engine_public, EngineRefusal):
        return engine_public
    wrapped = handover_wrap(key, exchange, engine_public)
    if tamper:
        wrapped = ("A" if wrapped[0] != "A" else "B") + wrapped[1:]
    return engine.install_key(key.cp_id, key.version, wrapped)


# --- waiting for the CP id ------------------------------------------------------------------


async def test_engine_starts_waiting_for_its_cp_id_and_healthy() -> None:
    rig = Rig()
    assert rig.engine.phase() is EnginePhase.WAITING_CP_ID
    assert rig.engine.health_check().ok
    assert isinstance(rig.engine.request_supply("D1"), EngineRefusal)
    assert await rig.events() == []


async def test_cp_id_is_learnt_once_and_a_different_one_is_refused() -> None:
    rig = Rig()
    assert rig.engine.set_cp_id(CP) == Accepted()
    assert rig.engine.cp_known.is_set()
    assert rig.engine.phase() is EnginePhase.ACTIVADO
    assert rig.engine.set_cp_id(CP) == Accepted()
    refused = rig.engine.set_cp_id("CP02")
    assert isinstance(refused, EngineRefusal)
    assert "CP01" in refused.reason
    assert rig.engine.cp_id == CP


# --- a whole supply -------------------------------------------------------------------------


async def test_authorise_plug_tick_unplug_publishes_the_supply_in_order() -> None:
    rig = Rig().ready()
    auth = rig.authorise()
    assert rig.engine.phase() is EnginePhase.AUTHORISED
    assert rig.engine.plug() == Accepted()
    assert rig.engine.phase() is EnginePhase.SUMINISTRANDO
    for _ in range(3):
        rig.clock.advance(1.0)
        rig.engine.tick()
    assert rig.engine.unplug() == Accepted()
    events = await rig.events()
    assert types(events) == ["SUPPLY_STARTED", *["CP_TELEMETRY"] * 3, "SUPPLY_ENDED"]
    assert all(e.session_id == auth.session_id for e in events)  # type: ignore[attr-defined]
    readings = rig.publisher.of(CpTelemetry)
    assert [t.seq for t in readings] == [1, 2, 3]  # type: ignore[attr-defined]
    first = readings[0]
    assert first.energy_kwh == Decimal("0.367")  # type: ignore[attr-defined]  # 22 kW x 1 s x 60 / 3600
    assert first.amount_eur == cost(Decimal("0.367"), PRICE)  # type: ignore[attr-defined]
    ended = events[-1]
    assert isinstance(ended, SupplyEnded)
    assert ended.reason == "unplugged"
    assert ended.energy_kwh == Decimal("1.100")
    assert rig.engine.phase() is EnginePhase.ACTIVADO
    assert all(e.source == "EV_CP_E/CP01" for e in events)


def test_energy_is_kw_times_elapsed_times_speedup_to_the_watt_hour() -> None:
    assert energy_after(Decimal(22), 10, Decimal(60)) == Decimal("3.667")
    assert energy_after(Decimal(7), 3600, Decimal(1)) == Decimal("7.000")
    assert energy_after(Decimal(22), -1, Decimal(60)) == Decimal("0.000")
    assert energy_after(Decimal(1000), 10**9, Decimal(1000)) == MAX_ENERGY_KWH


async def test_auto_plug_starts_the_supply_as_soon_as_central_authorises() -> None:
    rig = Rig(auto_plug=True).ready()
    rig.authorise()
    assert rig.engine.phase() is EnginePhase.SUMINISTRANDO
    assert types(await rig.events()) == ["SUPPLY_STARTED"]


async def test_supply_seconds_unplugs_on_its_own() -> None:
    rig = Rig(auto_plug=True, supply_seconds=2.0).ready()
    rig.authorise()
    for _ in range(3):
        rig.clock.advance(1.0)
        rig.engine.tick()
    ended = [e for e in await rig.events() if isinstance(e, SupplyEnded)]
    assert [e.reason for e in ended] == ["unplugged"]
    assert rig.engine.phase() is EnginePhase.ACTIVADO


async def test_energy_ceiling_ends_the_supply_instead_of_breaking_the_contract() -> None:
    rig = Rig(auto_plug=True, kw=Decimal(1000), speedup=Decimal(1000)).ready()
    rig.authorise()
    rig.clock.advance(60)
    rig.engine.tick()
    ended = [e for e in await rig.events() if isinstance(e, SupplyEnded)]
    assert [(e.reason, e.energy_kwh) for e in ended] == [("energy_limit_reached", MAX_ENERGY_KWH)]


async def test_plug_and_unplug_without_a_session_are_refused() -> None:
    rig = Rig().ready()
    assert isinstance(rig.engine.plug(), EngineRefusal)
    assert isinstance(rig.engine.unplug(), EngineRefusal)
    rig.authorise()
    assert isinstance(rig.engine.unplug(), EngineRefusal)  # nothing plugged in yet
    assert await rig.events() == []


# --- Central's commands ---------------------------------------------------------------------


async def test_stop_supply_for_the_running_session_ends_it_with_the_commands_reason() -> None:
    rig = Rig(auto_plug=True).ready()
    auth = rig.authorise()
    rig.clock.advance(2)
    rig.engine.tick()
    rig.engine.on_stop_supply(
        StopSupply(cp_id=CP, session_id=auth.session_id, reason="stopped_by_driver")
    )
    ended = [e for e in await rig.events() if isinstance(e, SupplyEnded)]
    assert [(e.reason, e.energy_kwh) for e in ended] == [("stopped_by_driver", Decimal("0.733"))]
    assert rig.engine.phase() is EnginePhase.ACTIVADO


async def test_stop_supply_for_another_session_is_ignored() -> None:
    rig = Rig(auto_plug=True).ready()
    rig.authorise()
    rig.engine.on_stop_supply(StopSupply(cp_id=CP, session_id=uuid4(), reason="stopped_by_driver"))
    assert rig.engine.phase() is EnginePhase.SUMINISTRANDO
    assert types(await rig.events()) == ["SUPPLY_STARTED"]


async def test_stop_supply_before_plug_in_releases_the_authorisation() -> None:
    rig = Rig().ready()
    auth = rig.authorise()
    rig.engine.on_stop_supply(
        StopSupply(cp_id=CP, session_id=auth.session_id, reason="stopped_by_driver")
    )
    ended = [e for e in await rig.events() if isinstance(e, SupplyEnded)]
    assert [(e.reason, e.energy_kwh) for e in ended] == [("stopped_by_driver", Decimal(0))]
    assert rig.engine.phase() is EnginePhase.ACTIVADO


async def test_cp_stop_ends_the_supply_and_parks_the_cp_until_resume() -> None:
    rig = Rig(auto_plug=True).ready()
    rig.authorise()
    rig.clock.advance(1)
    rig.engine.on_cp_stop(CpStop(cp_id=CP))
    assert rig.engine.phase() is EnginePhase.PARADO
    assert "Out of Order" in rig.engine.status_line()
    rig.authorise()  # ignored while Parado
    assert rig.engine.phase() is EnginePhase.PARADO
    rig.engine.on_cp_resume(CpResume(cp_id=CP))
    assert rig.engine.phase() is EnginePhase.ACTIVADO
    ended = [e for e in await rig.events() if isinstance(e, SupplyEnded)]
    assert [e.reason for e in ended] == ["stopped_by_central"]


async def test_an_authorisation_while_busy_is_ignored_and_the_supply_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(auto_plug=True).ready()
    first = rig.authorise("D1")
    rig.authorise("D2")
    assert "authorisation ignored" in caplog.text
    rig.engine.unplug()
    ended = [e for e in await rig.events() if isinstance(e, SupplyEnded)]
    assert [(e.session_id, e.driver_id) for e in ended] == [(first.session_id, "D1")]


async def test_redelivered_commands_change_nothing() -> None:
    rig = Rig(auto_plug=True).ready()
    auth = rig.authorise()
    rig.engine.on_supply_authorised(auth)  # redelivered while supplying
    rig.engine.unplug()
    rig.engine.on_supply_authorised(auth)  # redelivered after the end
    stop = StopSupply(cp_id=CP, session_id=auth.session_id, reason="stopped_by_central")
    rig.engine.on_stop_supply(stop)
    assert types(await rig.events()) == ["SUPPLY_STARTED", "SUPPLY_ENDED"]
    assert rig.engine.phase() is EnginePhase.ACTIVADO


async def test_commands_for_another_cp_are_ignored() -> None:
    rig = Rig().ready()
    rig.engine.on_cp_stop(CpStop(cp_id="CP99"))
    rig.engine.on_supply_authorised(
        SupplyAuthorised(cp_id="CP99", session_id=uuid4(), driver_id="D1", price_eur_per_kwh=PRICE)
    )
    assert rig.engine.phase() is EnginePhase.ACTIVADO


# --- KO ---------------------------------------------------------------------------------------


async def test_ko_ends_a_running_supply_at_once_and_recover_brings_health_back() -> None:
    rig = Rig(auto_plug=True).ready()
    rig.authorise()
    rig.clock.advance(1)
    rig.engine.tick()  # the meter's reading at 1 s: 22 kW x 60 / 3600 = 0.367 kWh
    rig.clock.advance(0.5)  # a fault between ticks halts the meter at its last reading
    rig.engine.report_ko("KO key pressed")
    health = rig.engine.health_check()
    assert not health.ok
    assert health.ko_reason == "KO key pressed"
    assert rig.engine.phase() is EnginePhase.KO
    ended = [e for e in await rig.events() if isinstance(e, SupplyEnded)]
    assert [(e.reason, e.energy_kwh) for e in ended] == [("cp_fault", Decimal("0.367"))]
    rig.authorise()  # ignored while KO
    assert rig.engine.phase() is EnginePhase.KO
    rig.engine.recover()
    assert rig.engine.health_check().ok
    assert rig.engine.phase() is EnginePhase.ACTIVADO


async def test_ko_releases_an_authorisation_waiting_for_the_plug() -> None:
    rig = Rig().ready()
    rig.authorise()
    rig.engine.report_ko()
    ended = [e for e in await rig.events() if isinstance(e, SupplyEnded)]
    assert [(e.reason, e.energy_kwh) for e in ended] == [("cp_fault", Decimal(0))]


async def test_ko_before_the_cp_id_is_known_is_reported_to_the_monitor() -> None:
    rig = Rig()
    rig.engine.report_ko()
    assert not rig.engine.health_check().ok
    assert rig.engine.phase() is EnginePhase.KO


# --- manual request from the CP menu --------------------------------------------------------


async def test_manual_request_is_published_for_central_to_decide() -> None:
    rig = Rig().ready()
    assert rig.engine.request_supply("D7") == Accepted()
    (request,) = await rig.events()
    assert isinstance(request, AuthorizationRequest)
    assert (request.driver_id, request.cp_id, request.origin) == ("D7", CP, "cp")


async def test_a_denied_manual_request_is_said_at_the_cp(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig().ready()
    rig.engine.request_supply("NOBODY")
    (request,) = await rig.events()
    assert isinstance(request, AuthorizationRequest)
    denial = RequestDenied(
        cp_id=CP, request_id=request.request_id, driver_id="NOBODY", reason="unknown driver"
    )
    rig.engine.on_request_denied(denial)
    assert "driver=NOBODY: request DENIED by CENTRAL: unknown driver" in caplog.text
    rig.engine.on_request_denied(denial)  # redelivered: not said twice
    assert caplog.text.count("request DENIED by CENTRAL") == 1


async def test_an_unanswered_manual_request_is_given_up_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(answer_timeout=10.0).ready()
    rig.engine.request_supply("D7")
    rig.clock.advance(9)
    rig.engine.tick()
    assert "No answer from CENTRAL" not in caplog.text
    rig.clock.advance(2)
    rig.engine.tick()
    rig.clock.advance(20)
    rig.engine.tick()
    assert caplog.text.count("driver=D7: No answer from CENTRAL to the request") == 1


async def test_an_authorisation_answers_the_manual_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(answer_timeout=10.0).ready()
    rig.engine.request_supply("D7")
    rig.authorise("D7")
    rig.clock.advance(11)
    rig.engine.tick()
    assert "No answer from CENTRAL" not in caplog.text


@pytest.mark.parametrize(
    ("situation", "reason"),
    [
        ("no_cp_id", "CP id not known"),
        ("no_monitor", "no Monitor link"),
        ("monitor_silent", "no Monitor link"),
        ("central_unknown", "Central not confirmed"),
        ("central_down", "Cannot connect to CENTRAL"),
        ("ko", "not available"),
        ("parado", "not available"),
        ("busy", "not available"),
    ],
)
async def test_manual_request_is_refused_when_it_cannot_be_served(
    situation: str, reason: str
) -> None:
    rig = Rig()
    engine = rig.engine
    if situation != "no_cp_id":
        engine.set_cp_id(CP)
    if situation != "no_monitor":
        engine.health_check()
    if situation == "monitor_silent":
        rig.clock.advance(3.1)
    if situation != "central_unknown":
        engine.set_central(situation != "central_down")
    if situation == "ko":
        engine.report_ko()
    if situation == "parado":
        engine.on_cp_stop(CpStop(cp_id=CP))
    if situation == "busy":
        rig.authorise()
    outcome = engine.request_supply("D7")
    assert isinstance(outcome, EngineRefusal)
    assert reason in outcome.reason
    assert not [e for e in await rig.events() if isinstance(e, AuthorizationRequest)]


async def test_manual_request_with_an_invalid_driver_id_is_refused() -> None:
    rig = Rig().ready()
    outcome = rig.engine.request_supply("bad id#1")
    assert outcome == EngineRefusal("invalid driver id")


def test_monitor_link_is_alive_for_the_timeout_after_a_health_check() -> None:
    rig = Rig(monitor_timeout=3.0)
    assert not rig.engine.monitor_alive()
    rig.engine.health_check()
    rig.clock.advance(3.0)
    assert rig.engine.monitor_alive()
    rig.clock.advance(0.1)
    assert not rig.engine.monitor_alive()
    rig.engine.health_check()
    rig.engine.monitor_disconnected()
    assert not rig.engine.monitor_alive()


def test_central_down_shows_cannot_connect_to_central(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig().ready()
    rig.engine.set_central(False)
    assert "Cannot connect to CENTRAL" in rig.engine.status_line()
    assert "Cannot connect to CENTRAL" in caplog.text


# --- surviving a crash ----------------------------------------------------------------------


async def test_running_figures_are_saved_at_plug_in_and_every_tick() -> None:
    rig = Rig(auto_plug=True).ready()
    auth = rig.authorise()
    (saved,) = rig.store.files[CP]
    assert (saved.session_id, saved.energy_kwh, saved.ended_reason) == (
        str(auth.session_id),
        Decimal(0),
        None,
    )
    rig.clock.advance(1)
    rig.engine.tick()
    (saved,) = rig.store.files[CP]
    assert (saved.energy_kwh, saved.seq) == (Decimal("0.367"), 1)


async def test_the_record_stays_until_supply_ended_is_delivered() -> None:
    rig = Rig(auto_plug=True).ready()
    rig.authorise()
    rig.clock.advance(1)
    rig.engine.unplug()
    (saved,) = rig.store.files[CP]
    assert saved.ended_reason == "unplugged"
    await rig.engine.flush()
    assert CP not in rig.store.files


async def test_a_supply_left_over_by_a_crash_is_reported_once_with_its_energy() -> None:
    leftover = a_record("2.468")
    rig = Rig(store=FakeStore([leftover]))
    rig.engine.set_cp_id(CP)
    events = await rig.events()
    assert len(events) == 1
    ended = events[0]
    assert isinstance(ended, SupplyEnded)
    assert (str(ended.session_id), ended.driver_id, ended.energy_kwh, ended.reason) == (
        leftover.session_id,
        "D9",
        Decimal("2.468"),
        "engine_restarted",
    )
    assert CP not in rig.store.files
    rig.engine.set_cp_id(CP)  # the Monitor says it again after a reconnect
    rig.engine.on_supply_authorised(an_authorisation(session=UUID(leftover.session_id)))
    assert len(await rig.events()) == 1
    assert rig.engine.phase() is EnginePhase.ACTIVADO


async def test_an_ended_but_undelivered_supply_keeps_its_own_reason() -> None:
    rig = Rig(store=FakeStore([a_record("1.000", ended_reason="unplugged")]))
    rig.engine.set_cp_id(CP)
    (ended,) = await rig.events()
    assert isinstance(ended, SupplyEnded)
    assert ended.reason == "unplugged"


# --- the outbox -------------------------------------------------------------------------------


class BlockedPublisher(FakePublisher):
    """Kafka away: publish waits until released."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()

    async def publish(self, event: Event, **kwargs: Any) -> Delivery:
        await self.open.wait()
        return await super().publish(event, **kwargs)


async def test_transitions_never_wait_for_kafka_and_events_keep_their_order() -> None:
    publisher = BlockedPublisher()
    clock = FakeClock()
    engine = EngineService(publisher, FakeStore(), clock, EngineConfig(auto_plug=True))
    engine.set_cp_id(CP)
    outbox = asyncio.create_task(engine.run_outbox())
    engine.on_supply_authorised(an_authorisation())
    await asyncio.sleep(0)
    clock.advance(1)
    engine.tick()
    engine.report_ko()  # instant, though Kafka is away
    assert not engine.health_check().ok
    assert engine.pending_events == 3
    publisher.open.set()
    await eventually(lambda: engine.pending_events == 0, timeout=2, what="outbox drained")
    outbox.cancel()
    await asyncio.gather(outbox, return_exceptions=True)
    assert types(publisher.events) == ["SUPPLY_STARTED", "CP_TELEMETRY", "SUPPLY_ENDED"]


# --- invariants under any order of inputs ---------------------------------------------------

ACTIONS = st.lists(
    st.sampled_from(
        ["auth", "plug", "unplug", "tick", "ko", "recover", "stop", "resume", "stop_supply"]
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ACTIONS)
def test_every_session_ends_at_most_once_and_readings_never_go_back(actions: list[str]) -> None:
    rig = Rig().ready()
    engine = rig.engine
    sessions: list[UUID] = []

    def stop_last() -> None:
        if sessions:
            engine.on_stop_supply(
                StopSupply(cp_id=CP, session_id=sessions[-1], reason="stopped_by_central")
            )

    do = {
        "auth": lambda: sessions.append(rig.authorise().session_id),
        "plug": engine.plug,
        "unplug": engine.unplug,
        "tick": engine.tick,
        "ko": engine.report_ko,
        "recover": engine.recover,
        "stop": lambda: engine.on_cp_stop(CpStop(cp_id=CP)),
        "resume": lambda: engine.on_cp_resume(CpResume(cp_id=CP)),
        "stop_supply": stop_last,
    }
    for action in actions:
        rig.clock.advance(0.7)
        do[action]()
    events = asyncio.run(rig.events())
    by_session: dict[UUID, list[Event]] = {}
    for e in events:
        by_session.setdefault(e.session_id, []).append(e)  # type: ignore[attr-defined]
    for history in by_session.values():
        kinds = types(history)
        assert kinds.count("SUPPLY_ENDED") <= 1
        assert kinds.count("SUPPLY_STARTED") <= 1
        if "SUPPLY_ENDED" in kinds:
            assert kinds[-1] == "SUPPLY_ENDED"
        if "CP_TELEMETRY" in kinds:
            assert kinds[0] == "SUPPLY_STARTED"
        energies = [e.energy_kwh for e in history if hasattr(e, "energy_kwh")]  # type: ignore[attr-defined]
        assert energies == sorted(energies)
    open_sessions = [s for s, h in by_session.items() if types(h)[-1] != "SUPPLY_ENDED"]
    assert len(open_sessions) <= 1
    if rig.engine.phase() in (EnginePhase.KO, EnginePhase.PARADO, EnginePhase.ACTIVADO):
        assert not open_sessions


# --- adapters around the service ------------------------------------------------------------


def test_every_cp_command_has_a_handler() -> None:
    router = build_router(Rig().engine)
    commands = {cls for cls in EVENT_TYPES if cls.TOPIC == CP_COMMANDS}
    assert commands == {
        SupplyAuthorised,
        RequestDenied,
        StopSupply,
        CpStop,
        CpResume,
        CpReportStatus,
        CpReset,
    }
    assert router.handled | router.ignored == commands


async def test_menu_keys_drive_the_engine(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig().ready()
    menu = EngineMenu(rig.engine)
    rig.authorise()
    menu.handle("p\n")
    assert rig.engine.phase() is EnginePhase.SUMINISTRANDO
    menu.handle("u")
    menu.handle("k broken fan")
    assert rig.engine.health_check().ko_reason == "broken fan"
    menu.handle("R")
    menu.handle("s D5")
    menu.handle("i")
    menu.handle("")
    menu.handle("x")
    assert "unknown key" in caplog.text
    assert "status: Activado" in caplog.text
    assert types(await rig.events()) == [
        "SUPPLY_STARTED",
        "SUPPLY_ENDED",
        "AUTHORIZATION_REQUEST",
    ]


async def test_menu_run_stops_at_eof_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig().ready()

    async def lines():  # type: ignore[no-untyped-def]
        yield "k\n"

    await EngineMenu(rig.engine).run(lines())
    assert not rig.engine.health_check().ok
    assert "menu disabled" in caplog.text


def test_command_line_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EV_ENGINE_SPEEDUP", "120")
    monkeypatch.setenv("EV_ENGINE_AUTO_PLUG", "yes")
    s = parse_args(["kafka:9092", "0.0.0.0:7001", "--kw", "11", "--supply-seconds", "5"])
    assert (s.kafka, s.link, s.kw, s.speedup) == ("kafka:9092", ("0.0.0.0", 7001), 11, 120)
    assert (s.auto_plug, s.supply_seconds, s.menu) == (True, 5.0, True)
    monkeypatch.setenv("EV_KAFKA", "k:1")
    monkeypatch.setenv("EV_ENGINE_LINK", "h:2")
    assert parse_args(["--no-menu"]).link == ("h", 2)
    with pytest.raises(SystemExit):
        parse_args(["k:1", "h:2", "--kw", "-3"])


# --- the JSON state file --------------------------------------------------------------------


def test_state_file_round_trip_is_atomic_and_removed_when_empty(tmp_path: Path) -> None:
    store = JsonSupplyStore(tmp_path / "engine")
    record = a_record("3.210", ended_reason=None)
    store.save(CP, [record])
    assert store.load(CP) == [record]
    assert json.loads(store.path(CP).read_text())["supplies"][0]["energy_kwh"] == "3.210"
    assert [p.name for p in (tmp_path / "engine").iterdir()] == ["CP01.json"]
    store.save(CP, [])
    assert not store.path(CP).exists()
    assert store.load(CP) == []


def test_unreadable_state_file_is_moved_aside_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = JsonSupplyStore(tmp_path)
    store.path(CP).write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert store.load(CP) == []
    assert "unreadable" in caplog.text
    assert (tmp_path / "CP01.corrupt").exists()


# --- the CP's key (issue 14) ------------------------------------------------------------------


async def test_the_key_handed_over_goes_into_the_codec_the_engine_seals_with(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    rig = Rig().ready()
    assert rig.engine.key_version is None
    assert "no key yet (events wait for it)" in rig.engine.status_line()
    key = new_key(CP, 4)
    assert hand_over(rig.engine, key) == Accepted()
    assert rig.engine.codec.ring.current(CP) == key
    assert rig.engine.key_version == 4
    assert "no key" not in rig.engine.status_line()
    assert hand_over(rig.engine, key) == Accepted()  # handed again (a new link): idempotent
    assert caplog.text.count("key v4 from the Monitor") == 1
    assert key.secret.hex() not in caplog.text
    # nothing older than the first key can ever come to this Engine: refused at once, not awaited
    assert rig.engine.codec.ring.retired(CP, 3)


async def test_a_bad_handover_is_refused_and_changes_nothing() -> None:
    rig = Rig()
    key = new_key(CP, 1)
    refused = hand_over(rig.engine, key)  # before SET_CP
    assert isinstance(refused, EngineRefusal)
    assert "SET_CP first" in refused.reason
    rig.ready()

    no_keyx = rig.engine.install_key(CP, 1, "AAAA")
    assert isinstance(no_keyx, EngineRefusal)
    assert "KEYX first" in no_keyx.reason

    tampered = hand_over(rig.engine, key, tamper=True)
    assert isinstance(tampered, EngineRefusal)
    assert tampered.reason == "the handed-over key does not verify"

    other = hand_over(rig.engine, new_key("CP02", 1))
    assert isinstance(other, EngineRefusal)
    assert other.reason == "this Engine is CP CP01"

    exchange = Exchange()  # an exchange serves one KEY only
    engine_public = rig.engine.key_exchange(exchange.public)
    assert isinstance(engine_public, str)
    wrapped = handover_wrap(key, exchange, engine_public)
    assert rig.engine.install_key(CP, 1, wrapped) == Accepted()
    again = rig.engine.install_key(CP, 1, wrapped)
    assert isinstance(again, EngineRefusal)
    assert rig.engine.codec.ring.versions(CP) == [1]

    zero = hand_over(rig.engine, new_key(CP, 0))
    assert isinstance(zero, EngineRefusal)
    assert rig.engine.codec.ring.versions(CP) == [1]
    assert rig.engine.phase() is EnginePhase.ACTIVADO


async def test_key_drop_ends_the_supply_and_parks_the_cp_until_a_new_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(auto_plug=True).ready()
    assert hand_over(rig.engine, new_key(CP, 1)) == Accepted()
    rig.authorise()
    rig.clock.advance(1)
    rig.engine.tick()

    assert rig.engine.drop_keys(CP) == Accepted()
    assert rig.engine.codec.ring.current(CP) is None
    assert rig.engine.keys_revoked
    assert rig.engine.phase() is EnginePhase.PARADO
    assert rig.engine.status_line() == f"Parado - {KEYS_REVOKED_TEXT}"
    assert KEYS_REVOKED_TEXT == "keys revoked: waiting for the Monitor to authenticate again"
    assert rig.engine.drop_keys(CP) == Accepted()  # idempotent: one end, one notice
    assert caplog.text.count("(Central revoked them)") == 1
    rig.authorise()  # ignored while revoked
    assert isinstance(rig.engine.request_supply("D2"), EngineRefusal)
    old = hand_over(rig.engine, new_key(CP, 1))  # the revoked key again: refused
    assert isinstance(old, EngineRefusal)
    assert old.reason == "an old or revoked key version"

    assert hand_over(rig.engine, new_key(CP, 2)) == Accepted()
    assert not rig.engine.keys_revoked
    assert rig.engine.phase() is EnginePhase.ACTIVADO
    ended = [e for e in await rig.events() if isinstance(e, SupplyEnded)]
    assert [(e.reason, e.energy_kwh) for e in ended] == [("keys_revoked", Decimal("0.367"))]


async def test_key_drop_for_another_cp_is_refused() -> None:
    rig = Rig().ready()
    assert hand_over(rig.engine, new_key(CP, 1)) == Accepted()
    refused = rig.engine.drop_keys("CP02")
    assert isinstance(refused, EngineRefusal)
    assert rig.engine.key_version == 1
    assert not rig.engine.keys_revoked
