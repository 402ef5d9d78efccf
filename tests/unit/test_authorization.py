"""Whether a driver may start a supply at a CP: an answer with a reason, never an exception."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evcharging.domain.authorization import Authorised, Denied, authorise
from evcharging.domain.cp_state import CPFacts, CPState, derive_state

AVAILABLE = CPFacts(monitor_connected=True)
BALANCE = Decimal("25.00")


def test_happy_path_is_authorised() -> None:
    assert authorise(AVAILABLE, BALANCE, driver_busy=False) == Authorised()


def test_a_cent_of_balance_is_enough() -> None:
    assert authorise(AVAILABLE, Decimal("0.01"), driver_busy=False) == Authorised()


def test_unknown_cp_is_denied() -> None:
    assert authorise(None, BALANCE, driver_busy=False) == Denied("unknown CP")


def test_unknown_cp_is_reported_before_an_unknown_driver() -> None:
    assert authorise(None, None, driver_busy=False) == Denied("unknown CP")


def test_unknown_driver_is_denied() -> None:
    assert authorise(AVAILABLE, None, driver_busy=False) == Denied("unknown driver")


@pytest.mark.parametrize(
    ("facts", "state", "words"),
    [
        (CPFacts(monitor_connected=False), CPState.DESCONECTADO, ("disconnected", "Desconectado")),
        (
            AVAILABLE.with_(supplying=True),
            CPState.SUMINISTRANDO,
            ("busy", "Suministrando"),
        ),
        (
            AVAILABLE.with_(admin_stopped=True),
            CPState.PARADO,
            ("stopped", "Parado", "Out of Order"),
        ),
        (AVAILABLE.with_(engine_ok=False), CPState.AVERIADO, ("faulted", "Averiado")),
        (AVAILABLE.with_(error_simulated=True), CPState.AVERIADO, ("faulted", "Averiado")),
    ],
    ids=["desconectado", "suministrando", "parado", "averiado-engine-ko", "averiado-simulated"],
)
def test_each_non_activado_state_is_denied_with_its_reason(
    facts: CPFacts, state: CPState, words: tuple[str, ...]
) -> None:
    assert derive_state(facts) is state
    decision = authorise(facts, BALANCE, driver_busy=False)
    assert isinstance(decision, Denied)
    for word in words:
        assert word in decision.reason


def test_reserved_cp_is_busy() -> None:
    decision = authorise(AVAILABLE.with_(reserved=True), BALANCE, driver_busy=False)
    assert isinstance(decision, Denied)
    assert decision.reason.startswith("CP busy")


def test_cp_state_is_checked_before_the_reservation() -> None:
    decision = authorise(AVAILABLE.with_(reserved=True, engine_ok=False), BALANCE, False)
    assert decision == authorise(AVAILABLE.with_(engine_ok=False), BALANCE, False)


@pytest.mark.parametrize("balance", ["0", "0.00", "-0.01", "-50"])
def test_zero_or_negative_balance_is_denied(balance: str) -> None:
    assert authorise(AVAILABLE, Decimal(balance), driver_busy=False) == Denied(
        "insufficient balance"
    )


def test_driver_already_charging_is_denied() -> None:
    decision = authorise(AVAILABLE, BALANCE, driver_busy=True)
    assert isinstance(decision, Denied)
    assert "already" in decision.reason


facts = st.builds(
    CPFacts,
    monitor_connected=st.booleans(),
    engine_ok=st.booleans(),
    admin_stopped=st.booleans(),
    error_simulated=st.booleans(),
    reserved=st.booleans(),
    supplying=st.booleans(),
)
balances = st.none() | st.decimals(
    min_value=Decimal("-100"), max_value=Decimal("1000"), places=2, allow_nan=False
)


@given(st.none() | facts, balances, st.booleans())
def test_authorised_exactly_when_every_condition_holds(
    cp: CPFacts | None, balance: Decimal | None, busy: bool
) -> None:
    decision = authorise(cp, balance, busy)
    every_condition = (
        cp is not None
        and derive_state(cp) is CPState.ACTIVADO
        and not cp.reserved
        and balance is not None
        and balance > 0
        and not busy
    )
    assert isinstance(decision, Authorised | Denied)
    assert isinstance(decision, Authorised) == every_condition
    if isinstance(decision, Denied):
        assert decision.reason


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (
            AVAILABLE.with_(weather_alert=True),
            "CP out of service: weather alert (Parado, Out of Order)",
        ),
        (
            AVAILABLE.with_(keys_revoked=True),
            "CP out of service: keys revoked (Parado, Out of Order)",
        ),
        (
            AVAILABLE.with_(admin_stopped=True, weather_alert=True),
            "CP out of service: stopped by Central; weather alert (Parado, Out of Order)",
        ),
    ],
    ids=["weather", "keys-revoked", "admin-and-weather"],
)
def test_a_parado_cp_is_denied_with_why_it_is_out_of_service(facts: CPFacts, reason: str) -> None:
    assert authorise(facts, BALANCE, driver_busy=False) == Denied(reason)


def test_a_cp_under_a_weather_alert_with_a_session_is_busy_not_stopped() -> None:
    decision = authorise(AVAILABLE.with_(weather_alert=True, reserved=True), BALANCE, False)
    assert isinstance(decision, Denied)
    assert decision.reason.startswith("CP busy")
