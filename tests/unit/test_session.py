"""One supply session: authorised -> supplying -> ended, and the single rule that ends it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evcharging.domain.money import cost, kwh
from evcharging.domain.session import (
    EndReason,
    Session,
    SessionStatus,
    end_session,
    open_session,
    record_reading,
    start_supply,
)

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=30)
T2 = T0 + timedelta(hours=1)
PRICE = Decimal("0.40")


def a_session(price: Decimal = PRICE) -> Session:
    return open_session("S1", "D001", "CP01", price, now=T0)


def supplying(energy: str = "0") -> Session:
    return record_reading(start_supply(a_session()), Decimal(energy))


# --- lifecycle -----------------------------------------------------------------------------------


def test_open_session_is_authorised_empty_and_stamped_with_the_injected_now() -> None:
    s = a_session()
    assert s.status is SessionStatus.AUTHORISED
    assert (s.session_id, s.driver_id, s.cp_id) == ("S1", "D001", "CP01")
    assert s.price_eur_per_kwh == PRICE
    assert s.started_at == T0
    assert s.energy_kwh == Decimal("0")
    assert s.amount_eur == Decimal("0")
    assert s.ended_at is None
    assert s.end_reason is None
    assert s.is_open


def test_plug_in_starts_the_supply() -> None:
    assert start_supply(a_session()).status is SessionStatus.SUPPLYING


def test_plug_in_twice_is_harmless() -> None:
    once = start_supply(a_session())
    assert start_supply(once) == once


def test_full_lifecycle_authorised_supplying_ended() -> None:
    s = a_session()
    s = start_supply(s)
    s = record_reading(s, Decimal("1.500"))
    s = record_reading(s, Decimal("3.250"))
    ended = end_session(s, EndReason.UNPLUGGED, now=T2)

    assert ended is not None
    assert ended.status is SessionStatus.ENDED
    assert not ended.is_open
    assert ended.energy_kwh == Decimal("3.250")
    assert ended.amount_eur == Decimal("1.30")
    assert ended.started_at == T0
    assert ended.ended_at == T2
    assert ended.end_reason is EndReason.UNPLUGGED


def test_plug_in_never_reopens_an_ended_session() -> None:
    ended = end_session(supplying("1"), EndReason.UNPLUGGED, now=T1)
    assert ended is not None
    assert start_supply(ended) is ended


def test_a_reading_implies_the_supply_has_started() -> None:
    assert record_reading(a_session(), Decimal("0.2")).status is SessionStatus.SUPPLYING


def test_functions_do_not_mutate_their_input() -> None:
    s = a_session()
    record_reading(start_supply(s), Decimal("5"))
    end_session(s, EndReason.STOPPED_BY_DRIVER, now=T1)
    assert s == a_session()


# --- readings ------------------------------------------------------------------------------------


def test_reading_sets_energy_and_amount_through_cost() -> None:
    s = supplying("12.345")
    assert s.energy_kwh == Decimal("12.345")
    assert s.amount_eur == cost(Decimal("12.345"), PRICE) == Decimal("4.94")


def test_reading_is_rounded_to_the_watt_hour() -> None:
    assert supplying("2.0005").energy_kwh == Decimal("2.001")


def test_stale_reading_keeps_the_maximum() -> None:
    s = record_reading(supplying("5.000"), Decimal("3.000"))
    assert s.energy_kwh == Decimal("5.000")
    assert s.amount_eur == Decimal("2.00")


def test_repeated_reading_changes_nothing() -> None:
    s = supplying("4.2")
    assert record_reading(s, Decimal("4.2")) == s


def test_reading_after_the_end_is_ignored() -> None:
    ended = end_session(supplying("1"), EndReason.UNPLUGGED, now=T1)
    assert ended is not None
    assert record_reading(ended, Decimal("99")) is ended


# --- ending --------------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", [r for r in EndReason if r is not EndReason.NEVER_PLUGGED])
def test_every_end_reason_ends_a_supplying_session_with_its_figures(reason: EndReason) -> None:
    ended = end_session(supplying("10"), reason, now=T1)
    assert ended is not None
    assert ended.status is SessionStatus.ENDED
    assert ended.end_reason is reason
    assert ended.ended_at == T1
    assert ended.energy_kwh == Decimal("10.000")
    assert ended.amount_eur == Decimal("4.00")


@pytest.mark.parametrize("reason", list(EndReason))
def test_ending_an_ended_session_returns_none(reason: EndReason) -> None:
    ended = end_session(supplying("1"), EndReason.CP_FAULT, now=T1)
    assert ended is not None
    assert end_session(ended, reason, now=T2) is None
    assert end_session(ended, reason, now=T2, final_kwh=Decimal("50")) is None


def test_final_reading_at_the_end_counts() -> None:
    ended = end_session(supplying("2"), EndReason.UNPLUGGED, now=T1, final_kwh=Decimal("2.5"))
    assert ended is not None
    assert ended.energy_kwh == Decimal("2.500")
    assert ended.amount_eur == Decimal("1.00")


def test_a_stale_final_reading_does_not_lower_the_energy() -> None:
    ended = end_session(supplying("2"), EndReason.CP_FAULT, now=T1, final_kwh=Decimal("1"))
    assert ended is not None
    assert ended.energy_kwh == Decimal("2.000")
    assert ended.amount_eur == Decimal("0.80")


def test_unplug_before_any_energy_is_never_plugged() -> None:
    ended = end_session(a_session(), EndReason.UNPLUGGED, now=T1)
    assert ended is not None
    assert ended.end_reason is EndReason.NEVER_PLUGGED
    assert ended.energy_kwh == 0
    assert ended.amount_eur == 0


def test_unplug_of_an_authorised_session_with_a_final_reading_is_an_unplug() -> None:
    ended = end_session(a_session(), EndReason.UNPLUGGED, now=T1, final_kwh=Decimal("0.5"))
    assert ended is not None
    assert ended.end_reason is EndReason.UNPLUGGED
    assert ended.amount_eur == Decimal("0.20")


@pytest.mark.parametrize(
    "reason",
    [
        EndReason.STOPPED_BY_DRIVER,
        EndReason.CP_FAULT,
        EndReason.MONITOR_LOST,
        EndReason.STOPPED_BY_CENTRAL,
    ],
)
def test_other_reasons_before_any_energy_keep_their_reason(reason: EndReason) -> None:
    ended = end_session(a_session(), reason, now=T1)
    assert ended is not None
    assert ended.end_reason is reason
    assert ended.amount_eur == 0


# --- properties ----------------------------------------------------------------------------------

readings = st.decimals(
    min_value=Decimal("0"),
    max_value=Decimal("500"),
    places=4,
    allow_nan=False,
    allow_infinity=False,
)
prices = st.decimals(
    min_value=Decimal("0"), max_value=Decimal("2"), places=3, allow_nan=False, allow_infinity=False
)


@dataclass(frozen=True)
class Reading:
    energy: Decimal


@dataclass(frozen=True)
class PlugIn:
    pass


@dataclass(frozen=True)
class End:
    reason: EndReason
    final_kwh: Decimal | None


steps = st.lists(
    st.one_of(
        st.builds(Reading, readings),
        st.just(PlugIn()),
        st.builds(End, st.sampled_from(EndReason), st.none() | readings),
    ),
    max_size=30,
)


@given(steps, prices)
def test_any_sequence_ends_at_most_once_and_bills_the_max_energy(
    ops: list[Reading | PlugIn | End], price: Decimal
) -> None:
    session = a_session(price)
    successful_ends: list[Session] = []
    max_energy = Decimal("0")
    plugged = False  # a plug-in or a reading means the vehicle was plugged
    expected_reason: EndReason | None = None
    for op in ops:
        if isinstance(op, Reading):
            if session.is_open:
                max_energy = max(max_energy, op.energy)
                plugged = True
            session = record_reading(session, op.energy)
        elif isinstance(op, PlugIn):
            plugged = plugged or session.is_open
            session = start_supply(session)
        else:
            if session.is_open:
                if op.final_kwh is not None:
                    max_energy = max(max_energy, op.final_kwh)
                never = not plugged and kwh(max_energy) == 0 and op.reason is EndReason.UNPLUGGED
                expected_reason = EndReason.NEVER_PLUGGED if never else op.reason
            ended = end_session(session, op.reason, now=T1, final_kwh=op.final_kwh)
            if ended is not None:
                successful_ends.append(ended)
                session = ended

    assert len(successful_ends) <= 1
    assert session.energy_kwh == kwh(max_energy)
    assert session.amount_eur == cost(max_energy, price)
    if successful_ends:
        assert session is successful_ends[0]
        assert session.status is SessionStatus.ENDED
        assert session.ended_at == T1
        assert session.end_reason is expected_reason
    else:
        assert session.is_open


@given(st.lists(readings, min_size=1, max_size=20), prices)
def test_amount_always_matches_the_energy_held(energies: list[Decimal], price: Decimal) -> None:
    session = a_session(price)
    for energy in energies:
        before = session.energy_kwh
        session = record_reading(session, energy)
        assert session.energy_kwh >= before
        assert session.amount_eur == cost(session.energy_kwh, price)
    assert session.energy_kwh == kwh(max(energies))
