"""EV_OCPP's WebSocket endpoint in-process: a real `OcppServer` on 127.0.0.1:0 with a real
`GatewayService` (Central's logins, Kafka and the state file faked), and real OCPP 1.6J clients
(`websockets` and the `ocpp` package's ChargePoint): the handshake's admissions and refusals,
every charger message answered, bad frames survived, TLS and client certificates, and the
central system's CALLs to a charger."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from ocpp.exceptions import SecurityError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from evcharging.adapters.ocpp.server import OcppServer, tls_context
from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.contracts.events import (
    AuthorizationRequest,
    CpStop,
    CpTelemetry,
    SupplyAuthorised,
    SupplyEnded,
    SupplyStarted,
)
from evcharging.contracts.ocpp import SUBPROTOCOL
from evcharging.ops import certs
from evcharging.services.audit import Audit
from evcharging.services.ocpp_gateway import GatewayConfig, GatewayService
from tests.support.clock import Clock
from tests.support.fakes import RecordingPublisher
from tests.support.ocpp_fakes import AuditRows, FakeLogins, MemoryStore
from tests.support.waiting import eventually

CP = "OCPP01"
SECRET = "s3cret-from-the-registry"
ENROLLED = {"OCPP03": "enrolled-secret"}
T0 = "2026-12-02T02:00:00Z"


@dataclass
class Gateway:
    server: OcppServer
    service: GatewayService
    logins: FakeLogins
    publisher: RecordingPublisher
    audit: AuditRows

    def url(self, path: str = CP) -> str:
        return f"{self.server.scheme}://127.0.0.1:{self.server.port}/{path}"


MakeGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway() -> AsyncIterator[MakeGateway]:
    made: list[Gateway] = []

    async def make(tls: ssl.SSLContext | None = None, response_timeout: float = 10.0) -> Gateway:
        rows = AuditRows()
        audit = Audit([rows])
        server = OcppServer(
            "127.0.0.1",
            0,
            audit=audit,
            tls=tls,
            secret_for=ENROLLED.get,
            response_timeout=response_timeout,
        )
        logins, publisher = FakeLogins(), RecordingPublisher()
        service = GatewayService(
            publisher,
            logins,
            server,
            MemoryStore(),
            Clock(),
            GatewayConfig(answer_timeout=10.0),
            audit=audit,
        )
        server.service = service
        await server.start()
        gateway = Gateway(server, service, logins, publisher, rows)
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        await gateway.server.close()
        await gateway.service.settle_calls()


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


CLIENT_LOG = logging.getLogger("tests.ocpp.charger")
CLIENT_LOG.setLevel(logging.CRITICAL)  # the test chargers' library lines are not the gateway's


class Client(ChargePoint):
    """A charger that answers the central system's CALLs with `answers` ("Accepted" unless
    said), and keeps them; a CALL named in `hold` waits for that event first (a slow charger)."""

    def __init__(self, cp_id: str, connection: ClientConnection) -> None:
        super().__init__(cp_id, connection, response_timeout=10, logger=CLIENT_LOG)
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.answers: dict[str, str] = {}
        self.hold: dict[str, asyncio.Event] = {}

    async def _answer(self, name: str, **fields: Any) -> str:
        self.received.append((name, fields))
        gate = self.hold.get(name)
        if gate is not None:
            await gate.wait()
        return self.answers.get(name, "Accepted")

    @on(Action.remote_start_transaction)
    async def on_remote_start(self, id_tag: str, **kw: Any) -> call_result.RemoteStartTransaction:
        return call_result.RemoteStartTransaction(
            status=await self._answer("RemoteStartTransaction", id_tag=id_tag, **kw)
        )

    @on(Action.remote_stop_transaction)
    async def on_remote_stop(self, transaction_id: int) -> call_result.RemoteStopTransaction:
        return call_result.RemoteStopTransaction(
            status=await self._answer("RemoteStopTransaction", transaction_id=transaction_id)
        )

    @on(Action.change_availability)
    async def on_change_availability(
        self, connector_id: int, type: str
    ) -> call_result.ChangeAvailability:
        status = await self._answer("ChangeAvailability", connector_id=connector_id, type=type)
        return call_result.ChangeAvailability(status=status)

    @on(Action.trigger_message)
    async def on_trigger(self, requested_message: str, **kw: Any) -> call_result.TriggerMessage:
        status = await self._answer("TriggerMessage", requested_message=requested_message)
        return call_result.TriggerMessage(status=status)

    @on(Action.reset)
    async def on_reset(self, type: str) -> call_result.Reset:
        return call_result.Reset(status=await self._answer("Reset", type=type))


class Mute(ChargePoint):
    """A charger that implements none of the central system's CALLs (CALLERROR NotImplemented)."""

    def __init__(self, cp_id: str, connection: ClientConnection) -> None:
        super().__init__(cp_id, connection, response_timeout=10, logger=CLIENT_LOG)


@contextlib.asynccontextmanager
async def charger(
    gw: Gateway,
    cp_id: str = CP,
    *,
    headers: dict[str, str] | None = None,
    kind: type[ChargePoint] = Client,
    boot: bool = True,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Any]:
    """A connected charger (its reader running), booted Accepted unless `boot` is False."""
    ws = await websockets.connect(
        gw.url(cp_id),
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        additional_headers=basic(cp_id, SECRET) if headers is None else headers,
        ssl=ssl_context,
    )
    cp = kind(cp_id, ws)
    reader = asyncio.create_task(cp.start())
    try:
        if boot:
            answer = await cp.call(
                call.BootNotification(charge_point_model="Model", charge_point_vendor="Vendor")
            )
            assert answer.status == "Accepted"
        yield cp
    finally:
        reader.cancel()
        await ws.close()
        with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
            await reader


async def refused(gw: Gateway, path: str = CP, **connect: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as caught:
        await websockets.connect(gw.url(path), **connect)
    return caught.value


# --- the opening handshake ---------------------------------------------------------------


async def test_basic_auth_for_the_cp_in_the_url_boots_accepted(gw: Gateway) -> None:
    async with charger(gw):
        assert gw.logins.logins == [(CP, SECRET)]
        assert gw.service.accepted(CP)
        assert gw.service.connected() == [CP]
        (boot,) = gw.audit.of(AuditAction.OCPP_BOOT)
        assert (boot.outcome, boot.ip) == (Outcome.OK, "127.0.0.1")
    await eventually(lambda: gw.logins.logouts == [CP], what="the link closed")


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "credentials required"),
        (basic("OTHER1", SECRET), "not the URL's CP"),
        ({"Authorization": "Basic !!!not-base64"}, "malformed"),
        ({"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, "malformed"),
        (basic(CP, ""), "empty password"),
        ({"Authorization": "Bearer abc"}, "not supported"),
    ],
)
async def test_a_charger_without_valid_basic_credentials_is_401(
    gw: Gateway, headers: dict[str, str], why: str
) -> None:
    refusal = await refused(gw, subprotocols=[SUBPROTOCOL], additional_headers=headers)
    assert refusal.response.status_code == 401
    assert refusal.response.headers["WWW-Authenticate"].startswith("Basic realm=")
    (row,) = gw.audit.of(AuditAction.OCPP_REFUSED)
    assert (row.ip, row.outcome, row.cp_id) == ("127.0.0.1", Outcome.DENIED, CP)
    assert why in row.detail
    assert SECRET not in repr(gw.audit.rows)
    assert gw.logins.logins == []


@pytest.mark.parametrize("path", ["bad%20id", "", "x" * 300, "ocpp/..%2F"])
async def test_a_url_without_a_valid_cp_id_is_404(gw: Gateway, path: str) -> None:
    refusal = await refused(
        gw, path, subprotocols=[SUBPROTOCOL], additional_headers=basic("bad id", SECRET)
    )
    assert refusal.response.status_code == 404
    (row,) = gw.audit.of(AuditAction.OCPP_REFUSED)
    assert (row.ip, row.outcome) == ("127.0.0.1", Outcome.DENIED)


async def test_a_client_that_does_not_speak_ocpp16_is_400(gw: Gateway) -> None:
    refusal = await refused(gw, additional_headers=basic(CP, SECRET))
    assert refusal.response.status_code == 400
    refusal = await refused(gw, subprotocols=["ocpp2.0.1"], additional_headers=basic(CP, SECRET))
    assert refusal.response.status_code == 400
    rows = gw.audit.of(AuditAction.OCPP_REFUSED)
    assert [(r.ip, r.cp_id) for r in rows] == [("127.0.0.1", CP)] * 2
    assert "ocpp1.6" in rows[0].detail


async def test_a_url_may_have_a_prefix_before_the_cp_id(gw: Gateway) -> None:
    async with websockets.connect(
        gw.url(f"ocpp/{CP}"),
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        additional_headers=basic(CP, SECRET),
    ) as ws:
        assert ws.subprotocol == SUBPROTOCOL
        await eventually(lambda: gw.service.connected() == [CP])


# --- the charger's messages ----------------------------------------------------------------


async def test_before_its_boot_is_accepted_a_charger_gets_security_error(gw: Gateway) -> None:
    async with charger(gw, boot=False) as cp:
        with pytest.raises(SecurityError):
            await cp.call(call.Authorize(id_tag="D001"), suppress=False)
        with pytest.raises(SecurityError):
            await cp.call(
                call.StatusNotification(connector_id=1, error_code="NoError", status="Available"),
                suppress=False,
            )
        assert (await cp.call(call.Heartbeat())).current_time  # Heartbeat is answered
    assert gw.publisher.sent == []


async def test_a_rejected_charger_is_told_when_to_try_again(gw: Gateway) -> None:
    from evcharging.services.ports import LoginOutcome, LoginState

    gw.logins.outcome = LoginOutcome(LoginState.DENIED, "not registered at EV_Registry")
    async with charger(gw, boot=False) as cp:
        answer = await cp.call(
            call.BootNotification(charge_point_model="m", charge_point_vendor="v")
        )
        assert (answer.status, answer.interval) == ("Rejected", 10)
        with pytest.raises(SecurityError):
            await cp.call(call.Authorize(id_tag="D001"), suppress=False)
    (row,) = gw.audit.of(AuditAction.OCPP_BOOT)
    assert row.outcome is Outcome.DENIED


async def test_every_other_message_of_a_16j_charger_is_answered(gw: Gateway) -> None:
    async with charger(gw) as cp:
        event = await cp.call(
            call.SecurityEventNotification(
                type="TamperDetectionActivated", timestamp=T0, tech_info="lid open"
            ),
            suppress=False,
        )
        assert event is not None
        (row,) = gw.audit.of(AuditAction.OCPP_SECURITY_EVENT)
        assert (row.cp_id, row.ip) == (CP, "127.0.0.1")
        assert row.detail == "TamperDetectionActivated: lid open"
        log_status = call.LogStatusNotification(status="Idle", request_id=1)
        assert await cp.call(log_status, suppress=False) is not None
        signed = await cp.call(call.SignCertificate(csr="-----BEGIN CSR-----"), suppress=False)
        assert signed.status == "Rejected"
        data = await cp.call(call.DataTransfer(vendor_id="com.example"), suppress=False)
        assert data.status == "UnknownVendorId"
        for message in (
            call.DiagnosticsStatusNotification(status="Idle"),
            call.FirmwareStatusNotification(status="Idle"),
            call.SignedFirmwareStatusNotification(status="Idle", request_id=1),
            call.Heartbeat(),
        ):
            assert await cp.call(message, suppress=False) is not None


async def test_a_transaction_over_the_wire_is_billed_from_the_meter(gw: Gateway) -> None:
    async with charger(gw) as cp:
        await cp.call(
            call.StatusNotification(connector_id=1, error_code="NoError", status="Preparing")
        )
        asking = asyncio.create_task(cp.call(call.Authorize(id_tag="D001")))

        async def asked() -> list[AuthorizationRequest]:
            await gw.service.flush()
            return gw.publisher.of(AuthorizationRequest)

        (request,) = await eventually(asked, what="the request to Central")
        assert (request.cp_id, request.origin) == (CP, "cp")
        session = uuid4()
        gw.service.on_supply_authorised(
            SupplyAuthorised(
                cp_id=CP, session_id=session, driver_id="D001", price_eur_per_kwh=Decimal("0.5")
            )
        )
        assert (await asking).id_tag_info["status"] == "Accepted"
        start = await cp.call(
            call.StartTransaction(connector_id=1, id_tag="D001", meter_start=1000, timestamp=T0)
        )
        assert start.id_tag_info["status"] == "Accepted"
        await cp.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=start.transaction_id,
                meter_value=[
                    {
                        "timestamp": T0,
                        "sampledValue": [
                            {
                                "value": "2.5",
                                "unit": "kWh",
                                "measurand": "Energy.Active.Import.Register",
                            },
                            {"value": "7400", "measurand": "Power.Active.Import", "unit": "W"},
                        ],
                    }
                ],
            )
        )
        stop = await cp.call(
            call.StopTransaction(meter_stop=3234, timestamp=T0, transaction_id=start.transaction_id)
        )
        assert stop.id_tag_info == {"status": "Accepted"}
    await gw.service.flush()
    (telemetry,) = gw.publisher.of(CpTelemetry)
    assert telemetry.energy_kwh == Decimal("1.5")
    (started,) = gw.publisher.of(SupplyStarted)
    (ended,) = gw.publisher.of(SupplyEnded)
    assert started.session_id == ended.session_id == session
    assert ended.energy_kwh == Decimal("2.234")


FRAMES = [
    "not json",
    "not json %s %d",  # a frame's text is never a format string
    "[]",
    '{"a": 1}',
    "[2]",
    '[2, "u5", "Heartbeat", {}, "extra"]',
    '[2, "u3", ["Heartbeat"], {}]',  # an action that is not a string
    '[2, "u6", "MeterValues", {"connectorId": ' + "9" * 5000 + ', "meterValue": []}]',
    "[" * 50_000 + "]" * 50_000,
    '[3, "nobody-asked", {}]',
]


async def test_bad_frames_are_survived_without_a_traceback(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    async with websockets.connect(
        gw.url(),
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        additional_headers=basic(CP, SECRET),
    ) as ws:

        async def ask(frame: str) -> list[Any]:
            await ws.send(frame)
            answer = json.loads(await ws.recv())
            assert isinstance(answer, list)
            return answer

        boot = '{"chargePointVendor": "v", "chargePointModel": "m"}'
        assert (await ask(f'[2, "b1", "BootNotification", {boot}]'))[0] == 3
        # schema-invalid payloads and unknown actions: a CALLERROR each
        for frame, code in [
            ('[2, "u1", "Heartbeat", {"bogus": 1}]', "FormatViolation"),
            ('[2, "u2", "Heartbeat", "x"]', "TypeConstraintViolation"),
            ('[2, "u4", "NoSuchAction", {}]', "NotSupported"),
            ('[2, "u7", "StatusNotification", {"connectorId": 1}]', "ProtocolError"),
        ]:
            answer = await ask(frame)
            assert answer[:3] == [4, frame.split('"')[1], code], answer
        # frames that are no CALL at all: no answer, and the session goes on
        for frame in FRAMES:
            await ws.send(frame)
            heartbeat = await ask('[2, "h1", "Heartbeat", {}]')
            assert heartbeat[:2] == [3, "h1"], (frame[:40], heartbeat)
    assert not [r for r in caplog.records if r.exc_info], "a traceback in the log"
    assert "Traceback" not in caplog.text
    longest = max(len(r.getMessage()) for r in caplog.records)
    assert longest < 2000, f"a log line of {longest} characters"


async def test_a_huge_bad_frame_is_one_short_log_line(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    async with websockets.connect(
        gw.url(),
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        additional_headers=basic(CP, SECRET),
    ) as ws:
        await ws.send("x" * 200_000)
        await ws.send('[2, "h1", "Heartbeat", {"pad": "' + "y" * 200_000 + '"}]')
        assert json.loads(await ws.recv())[:2] == [4, "h1"]
    assert max(len(r.getMessage()) for r in caplog.records) < 2000


async def test_a_second_connection_of_a_cp_replaces_the_first(gw: Gateway) -> None:
    async with charger(gw) as first:
        async with charger(gw) as second:
            await first._connection.wait_closed()
            assert first._connection.close_code == 1000
            assert gw.service.connected() == [CP]
            assert gw.service.accepted(CP)
            assert gw.logins.logouts == []  # the old connection's close is not the CP's
            assert await gw.server.reset(CP, hard=False) == "Accepted"
            assert second.received == [("Reset", {"type": "Soft"})]
            assert first.received == []
        await eventually(lambda: gw.logins.logouts == [CP])


# --- TLS: profile 2 (Basic over wss) and profile 3 (client certificate) --------------------


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    folder = tmp_path / "certs"
    certs.init(folder)
    certs.issue(folder, "ocpp", hosts=["localhost"])
    return folder


def client_certificate(ca: Path, cp_id: str) -> tuple[Path, Path]:
    """A charger's certificate (CN = its CP id, clientAuth) signed by the test CA."""
    ca_key, ca_cert = certs.load_ca(certs.CertFolder(ca))
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cp_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem, pem_key = ca / f"client-{cp_id}.pem", ca / f"client-{cp_id}.key"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pem, pem_key


@pytest.fixture
async def tls_gw(make_gateway: MakeGateway, ca: Path) -> Gateway:
    where = certs.CertFolder(ca)
    return await make_gateway(tls=tls_context(where.pem("ocpp"), where.key("ocpp"), where.ca_pem))


def client_context(ca: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs.CertFolder(ca).ca_pem)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


async def test_basic_auth_over_wss_verified_with_the_project_ca(tls_gw: Gateway, ca: Path) -> None:
    assert tls_gw.server.scheme == "wss"
    async with charger(tls_gw, ssl_context=client_context(ca)):
        assert tls_gw.logins.logins == [(CP, SECRET)]


async def test_a_client_that_does_not_trust_the_gateway_does_not_connect(tls_gw: Gateway) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await websockets.connect(
            tls_gw.url(),
            subprotocols=[SUBPROTOCOL],
            ssl=ssl.create_default_context(),  # type: ignore[list-item]
        )


async def test_a_client_certificate_of_the_cp_is_admitted_with_its_enrolled_secret(
    tls_gw: Gateway, ca: Path
) -> None:
    context = client_context(ca, client_certificate(ca, "OCPP03"))
    async with charger(tls_gw, "OCPP03", headers={}, ssl_context=context):
        assert tls_gw.logins.logins == [("OCPP03", ENROLLED["OCPP03"])]


async def test_a_client_certificate_of_another_cp_is_403(tls_gw: Gateway, ca: Path) -> None:
    context = client_context(ca, client_certificate(ca, "OCPP03"))
    refusal = await refused(tls_gw, "OCPP04", subprotocols=[SUBPROTOCOL], ssl=context)
    assert refusal.response.status_code == 403
    (row,) = tls_gw.audit.of(AuditAction.OCPP_REFUSED)
    assert (row.cp_id, row.ip) == ("OCPP04", "127.0.0.1")
    assert "OCPP03" in row.detail


async def test_a_certified_cp_with_no_enrolled_secret_is_rejected_at_boot(
    tls_gw: Gateway, ca: Path
) -> None:
    context = client_context(ca, client_certificate(ca, "OCPP05"))
    async with charger(tls_gw, "OCPP05", headers={}, ssl_context=context, boot=False) as cp:
        answer = await cp.call(
            call.BootNotification(charge_point_model="m", charge_point_vendor="v")
        )
        assert answer.status == "Rejected"
    assert tls_gw.logins.logins == []


# --- the central system's CALLs (ChargerControls) --------------------------------------------


async def test_the_controls_round_trip_to_a_charger_that_answers(gw: Gateway) -> None:
    async with charger(gw) as cp:
        cp.answers["ChangeAvailability"] = "Scheduled"
        cp.answers["Reset"] = "Rejected"
        assert await gw.server.remote_start(CP, "D001", 1) == "Accepted"
        assert await gw.server.remote_stop(CP, 1234) == "Accepted"
        assert await gw.server.change_availability(CP, operative=False) == "Scheduled"
        assert await gw.server.change_availability(CP, operative=True) == "Scheduled"
        assert await gw.server.trigger_status(CP) == "Accepted"
        assert await gw.server.reset(CP, hard=True) == "Rejected"
        assert cp.received == [
            ("RemoteStartTransaction", {"id_tag": "D001", "connector_id": 1}),
            ("RemoteStopTransaction", {"transaction_id": 1234}),
            ("ChangeAvailability", {"connector_id": 0, "type": "Inoperative"}),
            ("ChangeAvailability", {"connector_id": 0, "type": "Operative"}),
            ("TriggerMessage", {"requested_message": "StatusNotification"}),
            ("Reset", {"type": "Hard"}),
        ]


async def test_central_stopping_the_cp_reaches_the_charger(gw: Gateway) -> None:
    async with charger(gw) as cp:
        gw.service.on_cp_stop(CpStop(cp_id=CP))
        await gw.service.settle_calls()
        assert cp.received == [("ChangeAvailability", {"connector_id": 0, "type": "Inoperative"})]


async def test_a_control_of_a_charger_not_connected_fails(gw: Gateway) -> None:
    answer = await gw.server.remote_start("NOPE01", "D001", 1)
    assert answer == "failed: the charger is not connected"


async def test_a_control_a_charger_refuses_with_a_callerror_fails(gw: Gateway) -> None:
    async with charger(gw, kind=Mute):
        answer = await gw.server.reset(CP, hard=False)
        assert answer.startswith("failed: CALLERROR NotImplemented"), answer


async def test_a_control_a_charger_answers_late_fails_and_the_next_one_works(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(response_timeout=0.3)
    async with charger(gw) as cp:
        late = cp.hold["TriggerMessage"] = asyncio.Event()
        assert await gw.server.trigger_status(CP) == "failed: no answer in 0.3 s"
        late.set()  # the late answer arrives; the next CALL is not confused by it
        await eventually(lambda: len(cp.received) == 1)
        assert await gw.server.reset(CP, hard=False) == "Accepted"


async def test_a_control_of_a_charger_that_leaves_fails(gw: Gateway) -> None:
    async with charger(gw) as cp:
        cp.hold["Reset"] = asyncio.Event()
        pending = asyncio.create_task(gw.server.reset(CP, hard=False))
        await eventually(lambda: cp.received)
        await gw.server.drop(CP)
        async with asyncio.timeout(5):  # at once, not after the 10 s response timeout
            answer = await pending
        assert answer == "failed: the connection closed"


async def test_the_frames_log_stays_quiet(gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    async with charger(gw) as cp:
        await cp.call(call.Heartbeat())
    frames = [r for r in caplog.records if r.name == "evcharging.ocpp.frames"]
    assert all(r.levelno <= logging.DEBUG for r in frames)
