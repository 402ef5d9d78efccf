"""Loads CPs and drivers from a YAML or JSON file (idempotent: seeding twice adds no rows)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evcharging.contracts.fields import Id, Location, Price
from evcharging.services.ports import Repository


@dataclass(frozen=True)
class SeedResult:
    cps: int
    drivers: int


class SeedError(ValueError):
    pass


def load_seed_file(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise SeedError(f"{path}: expected a mapping with 'charging_points' and 'drivers'")
    return data


class _SeedCP(BaseModel):
    """A CP of the seed file, under the same field rules as the API and the events."""

    model_config = ConfigDict(coerce_numbers_to_str=True)
    id: Id
    location: Location
    price_eur_per_kwh: Price


class _SeedDriver(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)
    id: Id
    name: str = Field(min_length=1, max_length=200)
    balance_eur: Decimal = Field(ge=0)


def seed(repo: Repository, data: dict[str, Any]) -> SeedResult:
    """Every entry is checked before any is written: a bad file changes nothing."""
    try:
        cps = [_SeedCP.model_validate(cp) for cp in data.get("charging_points") or []]
        drivers = [_SeedDriver.model_validate(d) for d in data.get("drivers") or []]
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(map(str, first["loc"])) or "entry"
        raise SeedError(f"seed entry invalid: {where}: {first['msg']}") from None
    for cp in cps:
        repo.upsert_cp(cp.id, cp.location, cp.price_eur_per_kwh)
    for d in drivers:
        repo.upsert_driver(d.id, d.name, d.balance_eur)
    return SeedResult(len(cps), len(drivers))
