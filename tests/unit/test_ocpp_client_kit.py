"""The scripted OCPP 1.6J chargers of tests/support/ocpp_client.py, against a tiny central system
written here with the same `ocpp` library (in-process, loopback): what EV_OCPP's tests rely on."""

from __future__ import annotations

import base64
import logging
import ssl
from collections.abc import AsyncIterator
from http import HTTPStatus
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from evcharging.ops import certs
from tests.support.ocpp_client import (
    ENERGY,
    ChargerDisconnected,
    ScriptedCharger,
    Started,
    basic_auth,
    chargers,
    client_ssl,
)
from tests.support.waiting import eventually

SECRET = "s3cret"
# The stub's own complaints (a CALLERROR it sends is logged as an exception by the library) are
# what some tests provoke on purpose and check through the reply; they are not this test's errors.
STUB_LOG = logging.getLogger("ocpp.kit-test-stub")
STUB_LOG.setLevel(logging.CRITICAL)


class _Central(ChargePoint):
    """One charger's session at the stub: accepts everything, numbers transactions from 1."""

    def __init__(self, cp_id: str, connection: ServerConnection, ids: count[int]) -> None:
        super().__init__(cp_id, connection, logger=STUB_LOG)
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.ids = ids

    def of(self, action: str) -> list[dict[str, Any]]:
        return [p for a, p in self.got if a == action]

    def statuses(self, connector: int = 1) -> list[str]:
        return [
            p["status"] for p in self.of("StatusNotification") if p["connector_id"] == connector
        ]

    @on(Action.boot_notification)
    def _boot(self, **kw: Any) -> Any:
        self.got.append(("BootNotification", kw))
        return call_result.BootNotification(
            current_time="2025-01-01T00:00:00Z", interval=300, status="Accepted"
        )

    @on(Action.heartbeat)
    def _heartbeat(self, **kw: Any) -> Any:
        self.got.append(("Heartbeat", kw))
        return call_result.Heartbeat(current_time="2025-01-01T00:00:00Z")

    @on(Action.status_notification)
    def _status(self, **kw: Any) -> Any:
        self.got.append(("StatusNotification", kw))
        return call_result.StatusNotification()

    @on(Action.authorize)
    def _authorize(self, **kw: Any) -> Any:
        self.got.append(("Authorize", kw))
        status = "Blocked" if kw["id_tag"] == "BLOCKED" else "Accepted"
        return call_result.Authorize(id_tag_info={"status": status})

    @on(Action.start_transaction)
    def _start(self, **kw: Any) -> Any:
        self.got.append(("StartTransaction", kw))
        status = "Blocked" if kw["id_tag"] == "BLOCKED" else "Accepted"
        return call_result.StartTransaction(
            transaction_id=next(self.ids), id_tag_info={"status": status}
        )

    @on(Action.meter_values)
    def _meter(self, **kw: Any) -> Any:
        self.got.append(("MeterValues", kw))
        return call_result.MeterValues()

    @on(Action.stop_transaction)
    def _stop(self, **kw: Any) -> Any:
        self.got.append(("StopTransaction", kw))
        return call_result.StopTransaction()

    @on(Action.security_event_notification)
    def _security(self, **kw: Any) -> Any:
        self.got.append(("SecurityEventNotification", kw))
        return call_result.SecurityEventNotification()

    @on(Action.log_status_notification)
    def _log_status(self, **kw: Any) -> Any:
        self.got.append(("LogStatusNotification", kw))
        return call_result.LogStatusNotification()

    @on(Action.sign_certificate)
    def _sign(self, **kw: Any) -> Any:
        self.got.append(("SignCertificate", kw))
        return call_result.SignCertificate(status="Accepted")


class Stub:
    """The tiny central system: Basic auth (user = the id in the path, password SECRET)."""

    def __init__(self) -> None:
        self.url = ""
        self.sessions: dict[str, _Central] = {}
        self.headers: dict[str, Headers] = {}
        self.close_codes: dict[str, int | None] = {}
        self.conns: dict[str, ServerConnection] = {}
        self.ids = count(1)

    def check(self, conn: ServerConnection, request: Request) -> Response | None:
        cp_id = request.path.strip("/")
        self.headers[cp_id] = request.headers
        if request.headers.get("Authorization") != basic_auth(cp_id, SECRET):
            return conn.respond(HTTPStatus.UNAUTHORIZED, "wrong credentials\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        cp_id = ws.request.path.strip("/")
        session = _Central(cp_id, ws, self.ids)
        self.sessions[cp_id], self.conns[cp_id] = session, ws
        try:
            await session.start()
        except ConnectionClosed:
            pass  # the session ends with its connection; its code is recorded below
        finally:
            self.close_codes[cp_id] = ws.close_code

    async def session(self, cp_id: str) -> _Central:
        return await eventually(lambda: self.sessions.get(cp_id), 10, what=f"{cp_id}'s session")


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    central = Stub()
    async with serve(
        central.handler,
        "127.0.0.1",
        0,
        process_request=central.check,
        subprotocols=[Subprotocol("ocpp1.6")],
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        central.url = f"ws://127.0.0.1:{port}"
        yield central


async def test_basic_auth_and_the_ocpp16_subprotocol_and_a_refused_password(stub: Stub) -> None:
    async with ScriptedCharger(stub.url, "CP1", password=SECRET) as cp:
        assert cp.subprotocol == "ocpp1.6"
        booted = await cp.boot()
        assert booted.status == "Accepted"
        assert booted.interval == 300
    header = stub.headers["CP1"]["Authorization"]
    assert header == "Basic " + base64.b64encode(b"CP1:" + SECRET.encode()).decode()
    with pytest.raises(InvalidStatus) as refused:
        await ScriptedCharger(stub.url, "CP2", password="wrong").connect()
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        await ScriptedCharger(stub.url, "CP2", password=SECRET, username="CP3").connect()


async def test_authorize_start_meter_stop_round_trips(stub: Stub) -> None:
    async with ScriptedCharger(stub.url, "CP1", password=SECRET) as cp:
        await cp.boot()
        assert (await cp.authorize("D1")).id_tag_info["status"] == "Accepted"
        assert (await cp.authorize("BLOCKED")).id_tag_info["status"] == "Blocked"
        await cp.status(1, "Preparing")
        started = await cp.start(1, "D1", 1000)
        assert started == Started(transaction_id=1, status="Accepted", connector=1)
        await cp.meter(1, started.transaction_id, 1500)
        await cp.stop(started.transaction_id, 2000, reason="Local")
        await cp.status(1, "Faulted", error_code="GroundFailure", info="broken")
        await cp.heartbeat()
        await cp.security_event()
        await cp.log_status()
        assert (await cp.sign_certificate()).status == "Accepted"
        assert cp.state[1].transaction_id is None
    central = stub.sessions["CP1"]
    assert [a for a, _ in central.got] == [
        "BootNotification",
        "Authorize",
        "Authorize",
        "StatusNotification",
        "StartTransaction",
        "MeterValues",
        "StopTransaction",
        "StatusNotification",
        "Heartbeat",
        "SecurityEventNotification",
        "LogStatusNotification",
        "SignCertificate",
    ]
    [start] = central.of("StartTransaction")
    assert (start["connector_id"], start["id_tag"], start["meter_start"]) == (1, "D1", 1000)
    [meter] = central.of("MeterValues")
    assert meter["transaction_id"] == 1
    [sample] = meter["meter_value"][0]["sampled_value"]
    assert sample == {
        "value": "1500",
        "measurand": ENERGY,
        "unit": "Wh",
        "context": "Sample.Periodic",
    }
    [stop] = central.of("StopTransaction")
    assert (stop["transaction_id"], stop["meter_stop"], stop["reason"]) == (1, 2000, "Local")
    fault = central.of("StatusNotification")[-1]
    assert (fault["status"], fault["error_code"], fault["info"]) == (
        "Faulted",
        "GroundFailure",
        "broken",
    )
    # a clean close (1000) on leaving the block
    assert await eventually(lambda: stub.close_codes.get("CP1"), 10) == 1000


async def test_auto_a_remote_start_charges_and_a_remote_stop_ends_it(stub: Stub) -> None:
    async with ScriptedCharger(stub.url, "CP1", password=SECRET, auto=True, meter_wh=5000) as cp:
        await cp.boot()
        central = await stub.session("CP1")
        answer = await central.call(call.RemoteStartTransaction(id_tag="D7", connector_id=1))
        assert answer.status == "Accepted"
        asked = await cp.wait_for_call("RemoteStartTransaction")
        assert asked.payload == {"id_tag": "D7", "connector_id": 1}
        await cp.idle()
        assert central.statuses() == ["Preparing", "Charging"]
        [start] = central.of("StartTransaction")
        assert (start["id_tag"], start["meter_start"]) == ("D7", 5000)
        tx = cp.state[1].transaction_id
        assert tx == 1
        busy = await central.call(call.RemoteStartTransaction(id_tag="D8", connector_id=1))
        assert busy.status == "Rejected"  # the connector is charging

        assert await cp.meter_tick(250) == 1
        [meter] = central.of("MeterValues")
        assert meter["transaction_id"] == tx
        assert meter["meter_value"][0]["sampled_value"][0]["value"] == "5250"

        unknown = await central.call(call.RemoteStopTransaction(transaction_id=99))
        assert unknown.status == "Rejected"
        stopped = await central.call(call.RemoteStopTransaction(transaction_id=tx))
        assert stopped.status == "Accepted"
        await cp.idle()
        [stop] = central.of("StopTransaction")
        assert (stop["transaction_id"], stop["reason"], stop["meter_stop"]) == (tx, "Remote", 5250)
        assert central.statuses()[-1] == "Available"
        assert cp.state[1].transaction_id is None


async def test_auto_availability_is_scheduled_during_a_transaction_and_trigger_reports(
    stub: Stub,
) -> None:
    async with ScriptedCharger(stub.url, "CP1", password=SECRET, auto=True) as cp:
        central = await stub.session("CP1")
        started = await cp.start(1, "D1")
        scheduled = await central.call(call.ChangeAvailability(connector_id=0, type="Inoperative"))
        assert scheduled.status == "Scheduled"
        await central.call(call.RemoteStopTransaction(transaction_id=started.transaction_id))
        await cp.idle()
        assert central.statuses()[-1] == "Unavailable"  # the scheduled change, after the stop
        refused = await central.call(call.RemoteStartTransaction(id_tag="D2"))
        assert refused.status == "Rejected"  # inoperative

        operative = await central.call(call.ChangeAvailability(connector_id=1, type="Operative"))
        assert operative.status == "Accepted"
        await cp.idle()
        assert central.statuses()[-1] == "Available"

        before = len(central.of("StatusNotification"))
        trig = await central.call(call.TriggerMessage(requested_message="StatusNotification"))
        assert trig.status == "Accepted"
        await cp.idle()
        assert len(central.of("StatusNotification")) == before + 1
        assert central.statuses()[-1] == "Available"
        other = await central.call(
            call.TriggerMessage(requested_message="DiagnosticsStatusNotification")
        )
        assert other.status == "NotImplemented"
        assert [c.action for c in cp.calls] == [
            "ChangeAvailability",
            "RemoteStopTransaction",
            "RemoteStartTransaction",
            "ChangeAvailability",
            "TriggerMessage",
            "TriggerMessage",
        ]

        again = await cp.start(1, "D3")
        assert (await central.call(call.Reset(type="Soft"))).status == "Accepted"
        await cp.idle()
        assert central.of("StopTransaction")[-1]["transaction_id"] == again.transaction_id
        assert central.of("StopTransaction")[-1]["reason"] == "SoftReset"
        assert [a for a, _ in central.got[-2:]] == ["BootNotification", "StatusNotification"]
        assert central.statuses()[-1] == "Available"


async def test_without_auto_answers_are_configurable_and_nothing_follows(stub: Stub) -> None:
    answers: dict[str, Any] = {
        "RemoteStartTransaction": "Rejected",
        "Reset": lambda payload: "Rejected" if payload["type"] == "Hard" else "Accepted",
    }
    async with ScriptedCharger(stub.url, "CP1", password=SECRET, answers=answers) as cp:
        central = await stub.session("CP1")
        assert (await central.call(call.RemoteStartTransaction(id_tag="D1"))).status == "Rejected"
        assert (await central.call(call.Reset(type="Hard"))).status == "Rejected"
        assert (await central.call(call.Reset(type="Soft"))).status == "Accepted"
        stop = await central.call(call.RemoteStopTransaction(transaction_id=5))
        assert stop.status == "Accepted"  # the default, with nothing done after it
        config = await central.call(call.GetConfiguration(key=["HeartbeatInterval", "Nope"]))
        assert config.configuration_key[0]["value"] == "300"
        assert config.unknown_key == ["Nope"]
        first = await cp.wait_for_call("Reset", timeout=5)
        second = await cp.wait_for_call("Reset", timeout=5)
        assert (first.payload, second.payload) == ({"type": "Hard"}, {"type": "Soft"})
        with pytest.raises(TimeoutError):
            await cp.wait_for_call("Reset", timeout=0.2)
        await cp.idle()
        assert central.got == []  # no StartTransaction, no status: the test drives everything


async def test_raw_sends_a_chosen_message_id_and_returns_the_reply_frame(stub: Stub) -> None:
    async with ScriptedCharger(stub.url, "CP1", password=SECRET) as cp:
        first = await cp.raw("dup-1", "Heartbeat", {})
        again = await cp.raw("dup-1", "Heartbeat", {})
        assert first[:2] == again[:2] == [3, "dup-1"]
        assert "currentTime" in first[2]
        refused = await cp.raw("x-2", "NoSuchAction", {})
        assert refused[:3] == [4, "x-2", "NotSupported"]
        bad = await cp.raw("x-3", "StartTransaction", {"connectorId": "one"})
        assert bad[0] == 4
        assert (await cp.heartbeat()).current_time  # the usual calls still match their answers
    assert [a for a, _ in stub.sessions["CP1"].got] == ["Heartbeat", "Heartbeat", "Heartbeat"]


async def test_drop_cuts_the_connection_without_a_close_frame(stub: Stub) -> None:
    cp = await ScriptedCharger(stub.url, "CP1", password=SECRET).connect()
    await cp.boot()
    await cp.drop()
    code = await eventually(lambda: stub.close_codes.get("CP1"), 10, what="the stub to see it")
    assert code == 1006  # abnormal closure: no close frame
    assert not cp.connected
    with pytest.raises(ChargerDisconnected):
        await cp.heartbeat()
    cp2 = await ScriptedCharger(stub.url, "CP2", password=SECRET).connect()
    await cp2.drop(reset=True)
    assert await eventually(lambda: stub.close_codes.get("CP2"), 10) == 1006


async def test_the_central_system_closing_ends_a_waiting_call(stub: Stub) -> None:
    async with ScriptedCharger(stub.url, "CP1", password=SECRET) as cp:
        await stub.session("CP1")
        await stub.conns["CP1"].close(1008, "policy")
        assert await cp.wait_closed() == 1008
        with pytest.raises(ChargerDisconnected):
            await cp.boot()


async def test_many_chargers_in_one_process(stub: Stub) -> None:
    ids = [f"CP{n}" for n in range(20)]
    async with chargers(stub.url, ids, passwords=dict.fromkeys(ids, SECRET)) as fleet:
        answers = [await c.boot() for c in fleet]
        assert {a.status for a in answers} == {"Accepted"}
    assert set(stub.sessions) == set(ids)
    await eventually(lambda: len(stub.close_codes) == len(ids), 10, what="every session's end")
    assert set(stub.close_codes.values()) == {1000}
    with pytest.raises(InvalidStatus):
        async with chargers(stub.url, ["A", "B"], passwords={"A": SECRET}):
            pass


async def test_profile_2_and_3_over_tls_with_the_networks_ca(tmp_path: Path) -> None:
    """wss with Basic auth (profile 2) and wss with a client certificate (profile 3)."""
    certs.init(tmp_path)
    client = certs.issue_client(tmp_path, "CP3")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tmp_path / "ca.pem")
    tls.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    tls.verify_mode = ssl.CERT_OPTIONAL  # profile 2 has none; profile 3 shows one
    central = Stub()
    peers: dict[str, Any] = {}

    def check(conn: ServerConnection, request: Request) -> Response | None:
        peer = conn.transport.get_extra_info("peercert")
        peers[request.path] = dict(x[0] for x in peer["subject"]) if peer else None
        return None if peer else central.check(conn, request)

    async with serve(
        central.handler,
        "127.0.0.1",
        0,
        ssl=tls,
        process_request=check,
        subprotocols=[Subprotocol("ocpp1.6")],
    ) as server:
        url = f"wss://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        ca_only = client_ssl(tmp_path / "ca.pem")
        async with ScriptedCharger(url, "CP2", password=SECRET, ssl=ca_only) as cp2:
            assert (await cp2.boot()).status == "Accepted"
        with_cert = client_ssl(tmp_path / "ca.pem", client.cert, client.key)
        async with ScriptedCharger(url, "CP3", ssl=with_cert) as cp3:
            assert (await cp3.boot()).status == "Accepted"
    assert peers["/CP2"] is None
    assert peers["/CP3"]["commonName"] == "CP3"
