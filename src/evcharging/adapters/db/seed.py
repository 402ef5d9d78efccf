"""Loads CPs and drivers from a YAML or JSON file (idempotent: seeding twice adds no rows)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

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


def seed(repo: Repository, data: dict[str, Any]) -> SeedResult:
    cps = data.get("charging_points") or []
    drivers = data.get("drivers") or []
    try:
        for cp in cps:
            repo.upsert_cp(
                str(cp["id"]), str(cp["location"]), Decimal(str(cp["price_eur_per_kwh"]))
            )
        for d in drivers:
            repo.upsert_driver(str(d["id"]), str(d["name"]), Decimal(str(d["balance_eur"])))
    except KeyError as exc:
        raise SeedError(f"seed entry misses the field {exc}") from None
    return SeedResult(len(cps), len(drivers))
