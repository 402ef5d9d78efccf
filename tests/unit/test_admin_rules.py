"""The rule of which admin actions make sense for a CP (issue point 15), checked on every facts."""

from __future__ import annotations

import itertools

import pytest

from evcharging.domain.admin_rules import ASKS, AdminAction, allowed_actions, refusal
from evcharging.domain.cp_state import CPFacts, CPState, derive_state

CONNECTED = CPFacts(monitor_connected=True)
ASK = ("report_status", "reset_cp")
ALL_FACTS = [  # every combination of the seven facts: 128
    CPFacts(*flags)
    for flags in itertools.product([False, True], repeat=len(CPFacts.__dataclass_fields__))
]

# What each action changes: "makes sense" means it changes it (the asks change nothing here).
EFFECT = {
    AdminAction.STOP: {"admin_stopped": True},
    AdminAction.RESUME: {"admin_stopped": False},
    AdminAction.SIMULATE_ERROR: {"error_simulated": True},
    AdminAction.FIX_ERROR: {"error_simulated": False},
    AdminAction.REVOKE_KEYS: {"keys_revoked": True},
}


@pytest.mark.parametrize(
    ("action", "facts", "reason"),
    [
        # the three cases
        (AdminAction.SIMULATE_ERROR, CPFacts(), "CP X is Desconectado: an error can only be"),
        (AdminAction.FIX_ERROR, CONNECTED, "CP X has no simulated error to fix (Activado)"),
        (AdminAction.RESUME, CONNECTED, "CP X is not stopped (Activado): nothing to resume"),
        # and their mirrors
        (AdminAction.STOP, CONNECTED.with_(admin_stopped=True), "CP X is already stopped"),
        (
            AdminAction.SIMULATE_ERROR,
            CONNECTED.with_(error_simulated=True),
            "CP X already has a simulated error: fix it first",
        ),
        (
            AdminAction.FIX_ERROR,
            CONNECTED.with_(engine_ok=False),
            "CP X has no simulated error to fix: its Engine's fault clears when the Engine",
        ),
        (AdminAction.RESUME, CONNECTED.with_(supplying=True), "is not stopped (Suministrando)"),
        (
            AdminAction.REVOKE_KEYS,
            CONNECTED.with_(keys_revoked=True),
            "CP X already has its keys revoked: its Monitor must authenticate again",
        ),
        # the asks: nobody would hear them
        (
            AdminAction.REPORT_STATUS,
            CPFacts(),
            "CP X is Desconectado: no Monitor link, so nobody would hear the request",
        ),
        (AdminAction.RESET, CPFacts(admin_stopped=True), "CP X is Desconectado: no Monitor link"),
        (
            AdminAction.RESET,
            CONNECTED.with_(keys_revoked=True),
            "CP X has its keys revoked: nothing Central sends can reach it until its Monitor",
        ),
    ],
)
def test_a_senseless_action_is_refused_with_its_reason(
    action: AdminAction, facts: CPFacts, reason: str
) -> None:
    answer = refusal(action, "X", facts)
    assert answer is not None
    assert reason in answer


@pytest.mark.parametrize(
    ("facts", "allowed"),
    [
        # Desconectado: it can be kept stopped for when it connects, its keys revoked at once
        (CPFacts(), ("stop_cp", "revoke_keys")),
        # connected: it can also be asked to report its status or to reset
        (CONNECTED, ("stop_cp", "simulate_error", "revoke_keys", *ASK)),
        (
            CONNECTED.with_(supplying=True, reserved=True),
            ("stop_cp", "simulate_error", "revoke_keys", *ASK),
        ),
        (CONNECTED.with_(admin_stopped=True), ("resume_cp", "simulate_error", "revoke_keys", *ASK)),
        (CONNECTED.with_(error_simulated=True), ("stop_cp", "fix_error", "revoke_keys", *ASK)),
        (CPFacts(error_simulated=True), ("stop_cp", "fix_error", "revoke_keys")),  # kept in DB
        (CONNECTED.with_(engine_ok=False), ("stop_cp", "simulate_error", "revoke_keys", *ASK)),
        # keys revoked: Parado until its Monitor authenticates again (which is no admin action)
        (CONNECTED.with_(keys_revoked=True), ("stop_cp", "simulate_error")),
    ],
)
def test_allowed_actions_per_state(facts: CPFacts, allowed: tuple[str, ...]) -> None:
    assert allowed_actions(facts) == allowed


def test_allowed_is_exactly_not_refused() -> None:
    for facts, action in itertools.product(ALL_FACTS, AdminAction):
        assert (action.value in allowed_actions(facts)) == (refusal(action, "X", facts) is None)


def test_an_allowed_action_always_changes_the_cp() -> None:
    for facts, action in itertools.product(ALL_FACTS, set(AdminAction) - ASKS):
        if refusal(action, "X", facts) is None:
            assert facts.with_(**EFFECT[action]) != facts, (facts, action)


def test_stop_resume_and_fix_are_refused_exactly_when_they_would_change_nothing() -> None:
    for facts, action in itertools.product(
        ALL_FACTS, (AdminAction.STOP, AdminAction.RESUME, AdminAction.FIX_ERROR)
    ):
        changes = facts.with_(**EFFECT[action]) != facts
        assert changes == (refusal(action, "X", facts) is None), (facts, action)


def test_a_simulated_error_that_is_allowed_shows_averiado() -> None:
    """The bug: "-> Averiado" was logged for a Desconectado CP whose state did not change."""
    for facts in ALL_FACTS:
        if refusal(AdminAction.SIMULATE_ERROR, "X", facts) is None:
            assert derive_state(facts.with_(error_simulated=True)) is CPState.AVERIADO, facts


def test_an_ask_is_allowed_exactly_when_a_monitor_is_linked_and_its_keys_stand() -> None:
    """Report status and reset change nothing at Central: they only make sense when the CP
    can hear them, whatever its state (Averiado and Parado included: a reset may be the cure)."""
    for facts, action in itertools.product(ALL_FACTS, ASKS):
        heard = facts.monitor_connected and not facts.keys_revoked
        assert (refusal(action, "X", facts) is None) == heard, (facts, action)
