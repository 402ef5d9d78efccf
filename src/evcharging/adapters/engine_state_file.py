"""The Engine's supply records as one small JSON file per CP (`<state-dir>/<cp_id>.json`).

Why a file: a crashed Engine must still report what it supplied when it comes back (marking
guide, "Engine dies").  Each write goes to a temporary file, is flushed to disk and then renamed
over the old one (`os.replace`), so a crash leaves either the old or the new figures, never half.
Decimals are stored as strings so no float ever touches money or energy.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from uuid import UUID

from evcharging.contracts.end_reasons import SupplyEndReason
from evcharging.domain.money import kwh
from evcharging.services.engine import MAX_ENERGY_KWH
from evcharging.services.ports import SupplyRecord

log = logging.getLogger(__name__)

_FORMAT = 1


class JsonSupplyStore:
    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)

    def path(self, cp_id: str) -> Path:
        return self.folder / f"{cp_id}.json"

    def load(self, cp_id: str) -> list[SupplyRecord]:
        path = self.path(cp_id)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("cp=%s: cannot read supply state %s: %s", cp_id, path, exc)
            return []
        try:
            return [_record(item) for item in json.loads(raw)["supplies"]]
        except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
            aside = path.with_suffix(".corrupt")
            log.warning(
                "cp=%s: supply state %s unreadable (%s: %s); moved to %s",
                cp_id,
                path,
                type(exc).__name__,
                exc,
                aside,
            )
            os.replace(path, aside)
            return []

    def save(self, cp_id: str, records: Sequence[SupplyRecord]) -> None:
        """Replace the CP's file atomically; no records -> no file."""
        path = self.path(cp_id)
        try:
            if not records:
                path.unlink(missing_ok=True)
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            body = {"format": _FORMAT, "cp_id": cp_id, "supplies": [_dump(r) for r in records]}
            tmp = path.with_suffix(".json.tmp")
            with tmp.open("w", encoding="utf-8") as out:
                json.dump(body, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except OSError as exc:  # the supply goes on; the next tick tries again
            log.warning("cp=%s: cannot write supply state %s: %s", cp_id, path, exc)


def _dump(record: SupplyRecord) -> dict[str, Any]:
    return {
        "session_id": record.session_id,
        "driver_id": record.driver_id,
        "price_eur_per_kwh": str(record.price_eur_per_kwh),
        "energy_kwh": str(record.energy_kwh),
        "seq": record.seq,
        "ended_reason": record.ended_reason,
    }


def _reason(value: object) -> SupplyEndReason | None:
    """A reason this Engine wrote; anything else makes the record unreadable (logged, skipped)."""
    return None if value is None else SupplyEndReason(str(value))


def _record(item: dict[str, Any]) -> SupplyRecord:
    energy = kwh(item["energy_kwh"])
    if not 0 <= energy <= MAX_ENERGY_KWH:
        raise ValueError(f"energy {energy} kWh out of range")
    return SupplyRecord(
        session_id=str(UUID(item["session_id"])),
        driver_id=str(item["driver_id"]),
        price_eur_per_kwh=Decimal(item["price_eur_per_kwh"]),
        energy_kwh=energy,
        seq=int(item["seq"]),
        ended_reason=_reason(item.get("ended_reason")),
    )
