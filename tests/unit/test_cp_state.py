"""The CP state is derived from facts: the marking-guide table, precedence, captions and colours."""

from __future__ import annotations

import itertools
from dataclasses import fields

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evcharging.domain.cp_state import CPFacts, CPState, StopReason, derive_state, stop_reasons

FACT_NAMES = tuple(f.name for f in fields(CPFacts))
all_facts = st.builds(CPFacts, **{name: st.booleans() for name in FACT_NAMES})
EVERY_COMBINATION = [
    CPFacts(**dict(zip(FACT_NAMES, values, strict=True)))
    for values in itertools.product((False, True), repeat=len(FACT_NAMES))
]

CONNECTED = CPFacts(monitor_connected=True)


def expected_state(f: CPFacts) -> CPState:
    """The rule written as a table, independently of the code under test."""
    if not f.monitor_connected:
        return CPState.DESCONECTADO
    if not f.engine_ok or f.error_simulated:
        return CPState.AVERIADO
    if f.admin_stopped or f.keys_revoked:
        return CPState.PARADO
    if f.weather_alert and not f.reserved:  # a session under way finishes first
        return CPState.PARADO
    return CPState.SUMINISTRANDO if f.supplying else CPState.ACTIVADO


# --- marking-guide table -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("monitor_ok", "engine_ok", "state"),
    [
        (True, True, CPState.ACTIVADO),
        (True, False, CPState.AVERIADO),
        (False, True, CPState.DESCONECTADO),
        (False, False, CPState.DESCONECTADO),
    ],
)
def test_marking_guide_table(monitor_ok: bool, engine_ok: bool, state: CPState) -> None:
    assert derive_state(CPFacts(monitor_connected=monitor_ok, engine_ok=engine_ok)) is state


def test_a_cp_starts_disconnected_until_its_monitor_connects() -> None:
    assert derive_state(CPFacts()) is CPState.DESCONECTADO


@pytest.mark.parametrize("facts", [f for f in EVERY_COMBINATION if not f.monitor_connected])
def test_monitor_down_is_desconectado_whatever_else_is_true(facts: CPFacts) -> None:
    assert derive_state(facts) is CPState.DESCONECTADO


# --- precedence: disconnected > faulted / simulated error > admin stopped > supplying ------------


def test_simulated_error_is_averiado_even_with_a_healthy_engine() -> None:
    assert derive_state(CONNECTED.with_(error_simulated=True)) is CPState.AVERIADO


def test_fault_beats_admin_stop() -> None:
    stopped = CONNECTED.with_(admin_stopped=True)
    assert derive_state(stopped.with_(engine_ok=False)) is CPState.AVERIADO
    assert derive_state(stopped.with_(error_simulated=True)) is CPState.AVERIADO


def test_admin_stop_beats_supplying() -> None:
    assert derive_state(CONNECTED.with_(admin_stopped=True, supplying=True)) is CPState.PARADO


def test_fault_beats_supplying() -> None:
    assert derive_state(CONNECTED.with_(supplying=True, engine_ok=False)) is CPState.AVERIADO


def test_supplying_on_a_healthy_connected_cp_is_suministrando() -> None:
    assert derive_state(CONNECTED.with_(supplying=True)) is CPState.SUMINISTRANDO


def test_a_reservation_alone_leaves_the_cp_activado() -> None:
    assert derive_state(CONNECTED.with_(reserved=True)) is CPState.ACTIVADO


def test_a_weather_alert_stops_an_idle_cp_but_lets_a_session_finish() -> None:
    alert = CONNECTED.with_(weather_alert=True)
    assert derive_state(alert) is CPState.PARADO
    assert stop_reasons(alert) == (StopReason.WEATHER_ALERT,)
    supplying = alert.with_(reserved=True, supplying=True)
    assert derive_state(supplying) is CPState.SUMINISTRANDO
    assert stop_reasons(supplying) == ()
    assert derive_state(alert.with_(reserved=True)) is CPState.ACTIVADO  # authorised: still comes


def test_every_stop_reason_is_listed_when_several_stand() -> None:
    facts = CONNECTED.with_(admin_stopped=True, keys_revoked=True, weather_alert=True)
    assert stop_reasons(facts) == (
        StopReason.STOPPED_BY_CENTRAL,
        StopReason.KEYS_REVOKED,
        StopReason.WEATHER_ALERT,
    )


def test_resume_after_stop_and_fix_after_error_give_activado_again() -> None:
    stopped = CONNECTED.with_(admin_stopped=True)
    assert derive_state(stopped.with_(admin_stopped=False)) is CPState.ACTIVADO
    faulted = CONNECTED.with_(error_simulated=True)
    assert derive_state(faulted.with_(error_simulated=False)) is CPState.ACTIVADO


@pytest.mark.parametrize("facts", EVERY_COMBINATION, ids=str)
def test_every_combination_follows_the_precedence_table(facts: CPFacts) -> None:
    assert derive_state(facts) is expected_state(facts)


# --- captions and colours ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "caption", "colour"),
    [
        (CPState.ACTIVADO, "Activado", "green"),
        (CPState.SUMINISTRANDO, "Suministrando", "green"),
        (CPState.PARADO, "Out of Order", "orange"),
        (CPState.AVERIADO, "Averiado", "red"),
        (CPState.DESCONECTADO, "Desconectado", "grey"),
    ],
)
def test_caption_and_colour(state: CPState, caption: str, colour: str) -> None:
    assert state.caption == caption
    assert state.colour == colour


def test_there_are_exactly_five_states() -> None:
    assert {s.value for s in CPState} == {
        "Activado",
        "Suministrando",
        "Parado",
        "Averiado",
        "Desconectado",
    }


# --- facts ---------------------------------------------------------------------------------------


def test_with_returns_a_changed_copy_and_leaves_the_original() -> None:
    changed = CONNECTED.with_(admin_stopped=True)
    assert changed.admin_stopped
    assert changed.monitor_connected
    assert not CONNECTED.admin_stopped


# --- properties over every combination of facts --------------------------------------------------


@given(all_facts)
def test_derive_state_is_total_and_deterministic(facts: CPFacts) -> None:
    state = derive_state(facts)
    assert isinstance(state, CPState)
    copy = CPFacts(**{name: getattr(facts, name) for name in FACT_NAMES})
    assert derive_state(copy) is state
    assert derive_state(facts) is state


@given(all_facts)
def test_activado_or_suministrando_needs_monitor_engine_no_error_no_stop(facts: CPFacts) -> None:
    healthy = (
        facts.monitor_connected
        and facts.engine_ok
        and not facts.error_simulated
        and not facts.admin_stopped
        and not facts.keys_revoked
        and not (facts.weather_alert and not facts.reserved)
    )
    assert (derive_state(facts) in (CPState.ACTIVADO, CPState.SUMINISTRANDO)) == healthy


@given(all_facts)
def test_losing_the_monitor_always_disconnects(facts: CPFacts) -> None:
    assert derive_state(facts.with_(monitor_connected=False)) is CPState.DESCONECTADO
