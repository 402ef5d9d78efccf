"""The independent charge point of EV_OCPP's tests (ocpp-go's example CP): it builds, it fails
clearly with no central system, and it speaks OCPP 1.6J with security profile 3 over the
network's own CA (a client certificate from `certs.issue_client`)."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from evcharging.ops import certs
from tests.support.ocpp_go import GO_CP_STAMP, GO_CP_VERSION, go_cp, go_cp_binary, go_cp_env
from tests.support.ports import free_port
from tests.support.waiting import eventually

QUIET = logging.getLogger("ocpp.go-test-central")
QUIET.setLevel(logging.WARNING)


def test_the_go_charge_point_is_built_at_the_pinned_version() -> None:
    binary = go_cp_binary()
    assert binary.is_file()
    assert GO_CP_STAMP.read_text().strip() == GO_CP_VERSION


def test_the_environment_drops_a_trailing_slash_and_turns_tls_on_for_wss(tmp_path: Path) -> None:
    plain = go_cp_env("CP1", "ws://127.0.0.1:9000/")
    assert plain == {"CLIENT_ID": "CP1", "CENTRAL_SYSTEM_URL": "ws://127.0.0.1:9000"}
    secure = go_cp_env(
        "CP1", "wss://h:1/", ca=tmp_path / "ca.pem", cert=tmp_path / "c.pem", key=tmp_path / "c.k"
    )
    assert secure["TLS_ENABLED"] == "true"
    assert secure["CLIENT_CERTIFICATE_PATH"] == str(tmp_path / "c.pem")


def test_with_no_central_system_it_logs_one_error_and_exits(tmp_path: Path) -> None:
    """ocpp-go's example logs a failed connection and returns from main: exit code 0, so a
    test that needs to know the CP could not connect reads its `level=error` line."""
    with go_cp(tmp_path, "CP-NOWHERE", f"ws://127.0.0.1:{free_port()}/") as proc:
        code = proc.popen.wait(timeout=60)
        out = proc.output()
    assert code == 0
    assert "level=error" in out
    assert "connection refused" in out


class _Central(ChargePoint):
    """Just enough of a central system for the Go CP's first messages."""

    def __init__(self, cp_id: str, connection: ServerConnection) -> None:
        super().__init__(cp_id, connection, logger=QUIET)
        self.actions: list[str] = []

    @on(Action.boot_notification)
    def _boot(self, **kw: Any) -> Any:
        self.actions.append("BootNotification")
        return call_result.BootNotification(
            current_time="2025-01-01T00:00:00Z", interval=300, status="Accepted"
        )

    @on(Action.status_notification)
    def _status(self, **kw: Any) -> Any:
        self.actions.append("StatusNotification")
        return call_result.StatusNotification()

    @on(Action.security_event_notification)
    def _security(self, **kw: Any) -> Any:
        self.actions.append("SecurityEventNotification")
        return call_result.SecurityEventNotification()

    @on(Action.log_status_notification)
    def _log_status(self, **kw: Any) -> Any:
        self.actions.append("LogStatusNotification")
        return call_result.LogStatusNotification()

    @on(Action.sign_certificate)
    def _sign(self, **kw: Any) -> Any:
        self.actions.append("SignCertificate")
        return call_result.SignCertificate(status="Accepted")


async def test_profile_3_the_go_cp_connects_with_its_client_certificate(tmp_path: Path) -> None:
    certs.init(tmp_path)
    client = certs.issue_client(tmp_path, "CP-GO")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tmp_path / "ca.pem")
    tls.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    tls.verify_mode = ssl.CERT_REQUIRED
    seen: dict[str, Any] = {}

    async def handler(ws: ServerConnection) -> None:
        peer = ws.transport.get_extra_info("peercert")
        seen["cn"] = dict(x[0] for x in peer["subject"])["commonName"]
        seen["path"], seen["subprotocol"] = ws.request.path if ws.request else "", ws.subprotocol
        central = _Central(seen["cn"], ws)
        seen["central"] = central
        try:
            await central.start()
        except ConnectionClosed:
            return

    port = free_port()
    async with serve(handler, "127.0.0.1", port, ssl=tls, subprotocols=[Subprotocol("ocpp1.6")]):
        with go_cp(
            tmp_path,
            "CP-GO",
            f"wss://127.0.0.1:{port}/",
            ca=tmp_path / "ca.pem",
            cert=client.cert,
            key=client.key,
        ) as proc:

            def booted_and_said_status() -> bool:
                central = seen.get("central")
                return central is not None and {
                    "BootNotification",
                    "StatusNotification",
                } <= set(central.actions)

            await eventually(
                booted_and_said_status, 30, what=f"the Go CP's boot\n{proc.output()[-2000:]}"
            )
            assert proc.alive, proc.output()
    assert seen["cn"] == "CP-GO"
    assert seen["path"] == "/CP-GO"
    assert seen["subprotocol"] == "ocpp1.6"
    assert seen["central"].actions[0] == "BootNotification"
