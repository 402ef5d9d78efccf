"""Builders for test data: a_cp(), a_driver(), unique ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.contracts.events import ChargingTicket


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def a_repo() -> SqliteRepository:
    return SqliteRepository(":memory:")


def a_cp(
    repo: SqliteRepository, cp_id: str = "CP01", price: str = "0.40", location: str = "Alicante"
) -> str:
    repo.upsert_cp(cp_id, location, Decimal(price))
    return cp_id


def a_driver(repo: SqliteRepository, driver_id: str = "D001", balance: str = "100.00") -> str:
    repo.upsert_driver(driver_id, f"Driver {driver_id}", Decimal(balance))
    return driver_id


def a_ticket(
    driver_id: str,
    cp_id: str,
    session_id: UUID,
    *,
    reason: str = "unplugged",
    balance: str = "149.30",
) -> ChargingTicket:
    """A ticket for 2 kWh at 0.35 EUR/kWh (0.70 EUR)."""
    now = datetime.now(UTC)
    return ChargingTicket(
        driver_id=driver_id,
        cp_id=cp_id,
        session_id=session_id,
        energy_kwh=Decimal("2.000"),
        price_eur_per_kwh=Decimal("0.35"),
        amount_eur=Decimal("0.70"),
        end_reason=reason,
        started_at=now,
        ended_at=now,
        balance_eur=Decimal(balance),
    )
