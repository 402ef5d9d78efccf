"""EV_OCPP end to end, the shortest path: a charger with Basic auth boots, authorises a driver at
the charger, supplies with meter values and stops; the driver is billed from its meter."""

from __future__ import annotations

import asyncio
import base64
from decimal import Decimal

import pytest
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action

from tests.support.credentials import provision
from tests.support.processes import Network, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


class Plain(ChargePoint):
    @on(Action.change_availability)
    def on_change_availability(
        self, connector_id: int, type: str
    ) -> call_result.ChangeAvailability:
        return call_result.ChangeAvailability(status="Accepted")


async def session(url: str, cp_id: str, secret: str) -> tuple[str, int, str]:
    token = base64.b64encode(f"{cp_id}:{secret}".encode()).decode()
    async with websockets.connect(
        f"{url}/{cp_id}",
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Basic {token}"},
    ) as ws:
        cp = Plain(cp_id, ws)
        reader = asyncio.create_task(cp.start())
        boot = await cp.call(call.BootNotification(charge_point_model="m", charge_point_vendor="v"))
        await cp.call(
            call.StatusNotification(connector_id=1, error_code="NoError", status="Available")
        )
        auth = await cp.call(call.Authorize(id_tag="D001"))
        start = await cp.call(
            call.StartTransaction(
                connector_id=1, id_tag="D001", meter_start=1000, timestamp="2026-12-02T02:00:00Z"
            )
        )
        for wh in (1500, 2000, 2500):
            await cp.call(
                call.MeterValues(
                    connector_id=1,
                    transaction_id=start.transaction_id,
                    meter_value=[
                        {"timestamp": "2026-12-02T02:00:05Z", "sampledValue": [{"value": str(wh)}]}
                    ],
                )
            )
        await cp.call(
            call.StopTransaction(
                meter_stop=3234,
                timestamp="2026-12-02T02:01:00Z",
                transaction_id=start.transaction_id,
            )
        )
        reader.cancel()
        return boot.status, start.transaction_id, auth.id_tag_info["status"]


def test_a_charger_with_basic_auth_is_billed_from_its_meter(network: Network) -> None:
    net = network
    net.central()
    secret = provision(net.db_path, net.workdir, "OCPP01").secret  # type: ignore[arg-type]
    gateway = net.ocpp_gateway()
    before = Decimal(net.balance("D001"))
    status, _tx, auth = asyncio.run(session(f"ws://127.0.0.1:{net.ocpp_port}", "OCPP01", secret))
    assert (status, auth) == ("Accepted", "Accepted")

    def billed() -> list[dict[str, object]]:  # the final figure (a hang-up races the stop)
        rows = [s for s in net.sessions(cp_id="OCPP01") if s.get("ended_at")]
        return rows if rows and Decimal(str(rows[0]["energy_kwh"])) == Decimal("2.234") else []

    rows = wait_until(billed, 30, "billed from meterStop - meterStart")
    assert len(rows) == 1
    assert Decimal(net.balance("D001")) == before - Decimal(str(rows[0]["amount_eur"]))
    assert " ERROR " not in gateway.output(), gateway.output()[-3000:]
