"""EV_OCPP's transactions as one small JSON file (`<state-dir>/ocpp-gateway.json`).

Why a file: a StopTransaction that arrives after the gateway restarted must still be billed, so
what a transaction was started for (session, driver, meter at the start, price) survives; and
transaction ids must never repeat, so the next id does too. Written only when a transaction
starts or stops (never per meter value), atomically (temporary file, fsync, `os.replace`), with
decimals as strings. A file that is missing or unreadable (moved aside, logged) starts the ids
from the seconds since 2023-11-14 (a number that grows, within OCPP's 32-bit transactionId), so
even a lost file does not give a charger an id it already used.
"""

from __future__ import annotations

import json
import logging
import os
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from uuid import UUID

from evcharging.contracts.end_reasons import SupplyEndReason
from evcharging.services.ports import GatewayState, TransactionRecord

log = logging.getLogger(__name__)

_FORMAT = 1
_EPOCH = 1_700_000_000  # 2023-11-14: fresh ids start at the seconds since then


def fresh_first_id() -> int:
    return max(int(time.time()) - _EPOCH, 1)


class JsonGatewayStore:
    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "ocpp-gateway.json"

    def load(self) -> GatewayState:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return GatewayState(next_transaction_id=fresh_first_id())
        except OSError as exc:
            log.warning("cannot read the gateway's state %s: %s", self.path, exc)
            return GatewayState(next_transaction_id=fresh_first_id())
        try:
            body = json.loads(raw)
            return GatewayState(
                next_transaction_id=int(body["next_transaction_id"]),
                transactions=tuple(_record(item) for item in body["transactions"]),
                inoperative=frozenset(str(cp) for cp in body.get("inoperative", [])),
            )
        except (ValueError, KeyError, TypeError, AttributeError, InvalidOperation) as exc:
            aside = self.path.with_suffix(".corrupt")
            log.warning(
                "the gateway's state %s is unreadable (%s: %s); moved to %s",
                self.path,
                type(exc).__name__,
                exc,
                aside,
            )
            os.replace(self.path, aside)
            return GatewayState(next_transaction_id=fresh_first_id())

    def save(self, state: GatewayState) -> None:
        body = {
            "format": _FORMAT,
            "next_transaction_id": state.next_transaction_id,
            "transactions": [_dump(t) for t in state.transactions],
            "inoperative": sorted(state.inoperative),
        }
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".json.tmp")
            with tmp.open("w", encoding="utf-8") as out:
                json.dump(body, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:  # the charger is answered anyway; the next change writes again
            log.warning("cannot write the gateway's state %s: %s", self.path, exc)


def _dump(t: TransactionRecord) -> dict[str, Any]:
    return {
        "transaction_id": t.transaction_id,
        "cp_id": t.cp_id,
        "connector_id": t.connector_id,
        "id_tag": t.id_tag,
        "meter_start_wh": t.meter_start_wh,
        "started_at": t.started_at,
        "session_id": t.session_id,
        "price_eur_per_kwh": None if t.price_eur_per_kwh is None else str(t.price_eur_per_kwh),
        "meter_stop_wh": t.meter_stop_wh,
        "end_reason": t.end_reason,
    }


def _record(item: dict[str, Any]) -> TransactionRecord:
    price = item.get("price_eur_per_kwh")
    session = item.get("session_id")
    stop = item.get("meter_stop_wh")
    reason = item.get("end_reason")
    return TransactionRecord(
        transaction_id=int(item["transaction_id"]),
        cp_id=str(item["cp_id"]),
        connector_id=int(item["connector_id"]),
        id_tag=str(item["id_tag"]),
        meter_start_wh=int(item["meter_start_wh"]),
        started_at=str(item["started_at"]),
        session_id=None if session is None else str(UUID(session)),
        price_eur_per_kwh=None if price is None else Decimal(price),
        meter_stop_wh=None if stop is None else int(stop),
        end_reason=None if reason is None else SupplyEndReason(reason),
    )
