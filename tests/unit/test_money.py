"""Money and energy: one rounding rule (half up, to the cent; kWh to the watt-hour), one cost().

Every value here is a Decimal built from a string or an int: no float enters these tests.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evcharging.domain.money import CENT, WATT_HOUR, cost, euros, from_cents, kwh, to_cents

energies = st.decimals(
    min_value=Decimal("0"),
    max_value=Decimal("100000"),
    places=6,
    allow_nan=False,
    allow_infinity=False,
)
prices = st.decimals(
    min_value=Decimal("0"), max_value=Decimal("10"), places=4, allow_nan=False, allow_infinity=False
)
amounts = st.decimals(
    min_value=Decimal("-1000000"),
    max_value=Decimal("1000000"),
    places=5,
    allow_nan=False,
    allow_infinity=False,
)


def exponent(value: Decimal) -> int:
    exp = value.as_tuple().exponent
    assert isinstance(exp, int)
    return exp


# --- rounding rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "rounded"),
    [
        ("0.005", "0.01"),  # half goes up, not to even
        ("0.015", "0.02"),
        ("0.025", "0.03"),  # banker's rounding would give 0.02
        ("0.004", "0.00"),
        ("2.675", "2.68"),
        ("45.5", "45.50"),
        ("10", "10.00"),
        ("-0.005", "-0.01"),  # half away from zero
        ("0.0049999", "0.00"),
    ],
)
def test_euros_round_half_up_to_the_cent(raw: str, rounded: str) -> None:
    assert str(euros(raw)) == rounded


@pytest.mark.parametrize(
    ("raw", "rounded"),
    [
        ("1.0005", "1.001"),
        ("1.0015", "1.002"),
        ("1.0004", "1.000"),
        ("0.0025", "0.003"),
        ("7", "7.000"),
        ("12.3456789", "12.346"),
    ],
)
def test_kwh_rounds_half_up_to_the_watt_hour(raw: str, rounded: str) -> None:
    assert str(kwh(raw)) == rounded


def test_euros_and_kwh_accept_decimal_str_and_int_alike() -> None:
    assert euros(Decimal("3")) == euros("3") == euros(3) == Decimal("3.00")
    assert kwh(Decimal("3")) == kwh("3") == kwh(3) == Decimal("3.000")


def test_the_units_are_a_cent_and_a_watt_hour() -> None:
    assert Decimal("0.01") == CENT
    assert Decimal("0.001") == WATT_HOUR


# --- cost ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("energy", "price", "amount"),
    [
        ("10", "0.35", "3.50"),
        ("12.345", "0.40", "4.94"),  # 4.938 -> 4.94
        ("1", "0.125", "0.13"),  # 0.125 -> half up
        ("0.0004", "0.50", "0.00"),  # below a watt-hour: nothing supplied
        ("0.0005", "10", "0.01"),  # rounds up to 1 Wh first, then 0.010 EUR
        ("1.2345", "1", "1.24"),  # 1.2345 kWh is billed as 1.235 kWh, then 1.235 EUR -> 1.24
        ("0", "0.49", "0.00"),
        ("33.333", "0.30", "10.00"),  # 9.9999 -> 10.00
    ],
)
def test_cost_examples(energy: str, price: str, amount: str) -> None:
    assert str(cost(Decimal(energy), Decimal(price))) == amount


def test_cost_rounds_the_energy_before_pricing_it() -> None:
    # 1.2345 kWh is billed as 1.235 kWh (half up), so at 1 EUR/kWh the amount is 1.24 EUR
    # (1.235 half up), not 1.23 EUR as pricing the raw reading would give.
    assert cost(Decimal("1.2345"), Decimal("1")) == Decimal("1.24")


def test_cost_is_a_two_place_decimal() -> None:
    result = cost(Decimal("12.345"), Decimal("0.40"))
    assert isinstance(result, Decimal)
    assert str(result) == "4.94"
    assert exponent(result) == -2


# --- cents ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "cents"),
    [
        ("45.50", 4550),
        ("0.35", 35),
        ("0.005", 1),
        ("0", 0),
        ("-1.234", -123),
        ("1000000", 100000000),
    ],
)
def test_to_cents(amount: str, cents: int) -> None:
    assert to_cents(Decimal(amount)) == cents


@pytest.mark.parametrize(
    ("cents", "amount"), [(4550, "45.50"), (1, "0.01"), (0, "0.00"), (-123, "-1.23")]
)
def test_from_cents(cents: int, amount: str) -> None:
    assert str(from_cents(cents)) == amount


# --- properties ----------------------------------------------------------------------------------


@given(energies, prices)
def test_cost_is_never_negative(energy: Decimal, price: Decimal) -> None:
    assert cost(energy, price) >= 0


@given(energies, energies, prices)
def test_cost_is_monotonic_in_energy_for_a_fixed_price(
    a: Decimal, b: Decimal, price: Decimal
) -> None:
    low, high = sorted((a, b))
    assert cost(low, price) <= cost(high, price)


@given(energies, prices)
def test_cost_equals_euros_of_rounded_energy_times_price(energy: Decimal, price: Decimal) -> None:
    result = cost(energy, price)
    assert result == euros(kwh(energy) * price)
    assert isinstance(result, Decimal)
    assert exponent(result) == -2


@given(amounts)
def test_cents_round_trip(amount: Decimal) -> None:
    back = from_cents(to_cents(amount))
    assert back == euros(amount)
    assert exponent(back) == -2


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_cents_are_exact_in_both_directions(cents: int) -> None:
    assert to_cents(from_cents(cents)) == cents


@given(amounts)
def test_euros_is_idempotent_and_within_half_a_cent(amount: Decimal) -> None:
    rounded = euros(amount)
    assert euros(rounded) == rounded
    assert abs(rounded - amount) <= Decimal("0.005")


@given(energies)
def test_kwh_is_idempotent_and_within_half_a_watt_hour(energy: Decimal) -> None:
    rounded = kwh(energy)
    assert kwh(rounded) == rounded
    assert exponent(rounded) == -3
    assert abs(rounded - energy) <= Decimal("0.0005")
