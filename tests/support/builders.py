"""Builders for test data: a_cp(), a_driver(), unique ids."""

from __future__ import annotations

import uuid
from decimal import Decimal

from evcharging.adapters.db.sqlite_repository import SqliteRepository


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def a_repo() -> SqliteRepository:
    return SqliteRepository(":memory:")


def a_cp(
    repo: SqliteRepository, cp_id: str = "CP01", price: str = "0.40", location: str = "Alicante"
) -> str:
    repo.register_cp(cp_id, location, Decimal(price))
    return cp_id


def a_driver(repo: SqliteRepository, driver_id: str = "D001", balance: str = "100.00") -> str:
    repo.upsert_driver(driver_id, f"Driver {driver_id}", Decimal(balance))
    return driver_id
