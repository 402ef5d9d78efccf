"""EV_OCPP's transactions on disk: a folder (`<state-dir>/ocpp-gateway/`), one small JSON file per
transaction (`tx-<id>.json`) and one for the gateway (`gateway.json`: ids handed out, CPs it made
Inoperative).

Why files: a StopTransaction that arrives after the gateway restarted must still be billed, so
what a transaction was started for (session, driver, meter at the start, price) survives; and
transaction ids must never repeat. Why one file per transaction: each change writes only itself
(a start writes one file, a stop rewrites it, a delivered end deletes it), so its cost does not
grow with the transactions open. One file for all, rewritten at each change, took 29 ms
with 1,000 open and stalled the gateway when they all stopped at once (docs/bench/ocpp-notes.md).

Ids are reserved ahead in blocks (`RESERVE`): `gateway.json` is written once per block, not per
start, and a restart goes on after the block (a few ids unused, none repeated). A file that is
missing or unreadable starts the ids from the seconds since 2023-11-14 (a number that grows,
within OCPP's 32-bit transactionId), so even a lost folder does not give a charger an id it used.
Every write is a temporary file renamed over the old one (`os.replace`): a killed gateway leaves
the old or the new record, never half; an unreadable file is moved aside (`.corrupt`) and logged.
Decimals are stored as strings.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from uuid import UUID

from evcharging.contracts.end_reasons import SupplyEndReason
from evcharging.services.ports import GatewayState, TransactionRecord

log = logging.getLogger(__name__)

_FORMAT = 2
_EPOCH = 1_700_000_000  # 2023-11-14: fresh ids start at the seconds since then
RESERVE = 100  # transaction ids reserved per write of gateway.json
_READ_ERRORS = (ValueError, KeyError, TypeError, AttributeError, InvalidOperation)


def fresh_first_id() -> int:
    return max(int(time.time()) - _EPOCH, 1)


class JsonGatewayStore:
    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder) / "ocpp-gateway"
        self.meta = self.folder / "gateway.json"
        self._reserved = 0  # ids below this are on disk as handed out
        self._inoperative: frozenset[str] | None = None

    def tx_path(self, transaction_id: int) -> Path:
        return self.folder / f"tx-{transaction_id}.json"

    def load(self) -> GatewayState:
        meta = self._read(self.meta)
        try:
            reserved = int(meta["next_transaction_id"]) if meta is not None else 0
            inoperative = frozenset(str(cp) for cp in (meta or {}).get("inoperative", []))
        except _READ_ERRORS as exc:
            self._aside(self.meta, exc)
            reserved, inoperative = 0, frozenset()
        transactions: dict[int, TransactionRecord] = {}
        for path in sorted(self.folder.glob("tx-*.json")) if self.folder.is_dir() else ():
            item = self._read(path)
            if item is None:
                continue
            try:
                tx = _record(item)
            except _READ_ERRORS as exc:
                self._aside(path, exc)
                continue
            transactions[tx.transaction_id] = tx
        first = max(reserved, max(transactions, default=0) + 1)
        if reserved == 0:  # no record of the ids handed out: never reuse one
            first = max(first, fresh_first_id())
        self._reserved, self._inoperative = first, inoperative
        return GatewayState(first, tuple(transactions.values()), inoperative)

    def put(self, tx: TransactionRecord) -> None:
        self._safely(lambda: self._write(self.tx_path(tx.transaction_id), _dump(tx)))

    def drop(self, transaction_id: int) -> None:
        self._safely(lambda: self.tx_path(transaction_id).unlink(missing_ok=True))

    def gateway(self, next_transaction_id: int, inoperative: frozenset[str]) -> None:
        """Written when an id beyond the reserved block is handed out (then a block more is
        reserved), or when the Inoperative CPs change."""
        if next_transaction_id <= self._reserved and inoperative == self._inoperative:
            return
        reserved = max(self._reserved, next_transaction_id + RESERVE)
        body = {
            "format": _FORMAT,
            "next_transaction_id": reserved,
            "inoperative": sorted(inoperative),
        }

        def write() -> None:
            self._write(self.meta, body)
            self._reserved, self._inoperative = reserved, inoperative

        self._safely(write)

    def _safely(self, change: Callable[[], None]) -> None:
        try:
            change()
        except OSError as exc:  # the charger is answered anyway; the next change writes again
            log.warning("cannot write the gateway's state in %s: %s", self.folder, exc)

    def _write(self, path: Path, body: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(body), encoding="utf-8")
        os.replace(tmp, path)

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read the gateway's state %s: %s", path, exc)
            return None
        try:
            body = json.loads(raw)
        except ValueError as exc:
            self._aside(path, exc)
            return None
        if not isinstance(body, dict):
            self._aside(path, TypeError("not a JSON object"))
            return None
        return body

    def _aside(self, path: Path, exc: BaseException) -> None:
        aside = path.with_suffix(".corrupt")
        log.warning(
            "the gateway's state %s is unreadable (%s: %s); moved to %s",
            path,
            type(exc).__name__,
            exc,
            aside,
        )
        os.replace(path, aside)


def _dump(t: TransactionRecord) -> dict[str, Any]:
    return {
        "format": _FORMAT,
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
        session_id=None if session is None else str(UUID(str(session))),
        price_eur_per_kwh=None if price is None else Decimal(str(price)),
        meter_stop_wh=None if stop is None else int(stop),
        end_reason=None if reason is None else SupplyEndReason(reason),
    )
