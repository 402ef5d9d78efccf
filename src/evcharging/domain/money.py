"""Exact money and energy.

One rounding rule for the whole network: amounts are euros rounded to the cent, half up
(ROUND_HALF_UP), computed once from the energy and the CP's price; energy is kWh kept to the
watt-hour (3 decimals).  Binary floats never hold money.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
WATT_HOUR = Decimal("0.001")


def _exact(value: Decimal | str | int) -> Decimal:
    if isinstance(value, float):
        raise TypeError("money and energy are never binary floats; pass a str or Decimal")
    return Decimal(value)


def euros(value: Decimal | str | int) -> Decimal:
    """Euros to the cent; strings and ints go through Decimal, never float."""
    return _exact(value).quantize(CENT, rounding=ROUND_HALF_UP)


def kwh(value: Decimal | str | int) -> Decimal:
    """Energy to the watt-hour."""
    return _exact(value).quantize(WATT_HOUR, rounding=ROUND_HALF_UP)


def cost(energy_kwh: Decimal, price_eur_per_kwh: Decimal) -> Decimal:
    """The one place a supply's amount is computed."""
    return euros(kwh(energy_kwh) * price_eur_per_kwh)


def to_cents(amount: Decimal) -> int:
    return int(euros(amount) * 100)


def from_cents(cents: int) -> Decimal:
    return euros(Decimal(cents) / 100)
