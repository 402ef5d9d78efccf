"""A charger's CALLs are validated on the event loop, not in the default thread pool.

The `ocpp` package validates every message against its JSON schema, by default in the loop's
default executor. jsonschema is pure Python (it holds the GIL: no parallelism gained), two hops a
MeterValues cost more CPU than the validation itself (bench: docs/performance.md, OCPP gateway),
and the gateway's logins at Central run their scrypt in that same pool (`asyncio.to_thread`):
while chargers boot, every other charger's MeterValues would wait behind scrypts."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from evcharging.adapters.ocpp.charger import Charger

METER_VALUES = [
    2,
    "m1",
    "MeterValues",
    {
        "connectorId": 1,
        "transactionId": 7,
        "meterValue": [
            {
                "timestamp": "2026-12-02T02:00:00Z",
                "sampledValue": [
                    {"value": "1500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
                ],
            }
        ],
    },
]


class Connection:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, message: str) -> None:
        self.sent.append(json.loads(message))


class Service:
    """The part of `GatewayService` a MeterValues touches."""

    def __init__(self) -> None:
        self.readings: list[tuple[str, int | None]] = []

    def accepted(self, cp_id: str) -> bool:
        return True

    async def meter_values(
        self, cp_id: str, connector_id: int, transaction_id: int | None, wh: int | None
    ) -> None:
        self.readings.append((cp_id, wh))


async def test_meter_values_are_answered_while_every_pool_thread_is_busy() -> None:
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1)  # busy, as with scrypts of logins under way
    loop.set_default_executor(pool)
    release = threading.Event()
    busy = loop.run_in_executor(None, release.wait, 10)
    connection, service = Connection(), Service()
    charger = Charger("OCPP01", connection, service)  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(charger.route_message(json.dumps(METER_VALUES)), 2)
    finally:
        release.set()
        await busy
    assert service.readings == [("OCPP01", 1500)]
    assert connection.sent == [[3, "m1", {}]]


async def test_a_malformed_call_is_still_refused_by_its_schema() -> None:
    connection = Connection()
    charger = Charger("OCPP01", connection, Service())  # type: ignore[arg-type]
    bad = [2, "m2", "MeterValues", {"connectorId": "one", "meterValue": []}]
    await charger.route_message(json.dumps(bad))
    ((kind, unique_id, code, *_),) = connection.sent
    assert (kind, unique_id) == (4, "m2")
    assert code in ("TypeConstraintViolation", "FormationViolation", "FormatViolation")
