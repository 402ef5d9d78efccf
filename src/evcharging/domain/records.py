"""What the network stores about CPs and drivers (plain values, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class CPRecord:
    cp_id: str
    location: str
    price_eur_per_kwh: Decimal
    admin_stopped: bool = False
    error_simulated: bool = False
    keys_revoked: bool = False  # Central revoked its keys; out of service until it re-authenticates
    weather_alert: bool = False  # EV_W's alert for its city stands (CPFacts.weather_alert)
    weather_city: str | None = None  # the city and reading EV_W gave with the alert
    weather_temperature_c: float | None = None


@dataclass(frozen=True, slots=True)
class DriverRecord:
    driver_id: str
    name: str
    balance_eur: Decimal
