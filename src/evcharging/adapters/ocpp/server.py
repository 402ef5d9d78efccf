"""EV_OCPP's WebSocket endpoint: `ws[s]://host:port/{charge_point_id}`, subprotocol `ocpp1.6`.

The opening handshake admits a charger only with credentials for the CP its URL names:

* OCPP security profile 1 (ws) or 2 (wss): HTTP Basic, user = the CP id, password = the CP's
  secret from EV_Registry. The secret is not judged here: Central judges it at Boot (SCRAM, the
  same as for a Monitor), so a gateway keeps no copy of anybody's secret.
* Profile 3 (wss with a client certificate from the project's CA): the certificate's common name
  is the CP id, and the secret the gateway logs the CP in with is the one enrolled for it in the
  gateway's credentials folder (`cp-<ID>.json`, as a Monitor keeps it).

Anything else is refused before the WebSocket opens (401/403/400/404, audited with the charger's
address): no credentials, a user that is not the CP in the URL, a certificate for another CP, a
client that does not speak `ocpp1.6`, an id the network's rules refuse. A second connection for
a CP replaces the first (a charger that reconnects before the gateway noticed it left).
"""

from __future__ import annotations

import binascii
import contextlib
import logging
import socket
import ssl
from base64 import b64decode
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from weakref import WeakKeyDictionary

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from evcharging.adapters.ocpp.charger import (
    Charger,
    change_availability,
    remote_start,
    remote_stop,
    reset,
    trigger_status,
)
from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.contracts.fields import is_valid_id
from evcharging.contracts.ocpp import SUBPROTOCOL
from evcharging.services.audit import Audit, ip_of
from evcharging.services.ocpp_gateway import GatewayService

log = logging.getLogger(__name__)

MAX_MESSAGE = 256 * 1024  # bytes: an OCPP 1.6 frame is a few hundred; a flood is cut here

SecretFor = Callable[[str], str | None]
"""The secret enrolled for a CP in the gateway's credentials folder (profile 3), or None."""


@dataclass(frozen=True, slots=True)
class Admitted:
    cp_id: str
    secret: str | None
    how: str  # "basic" or "certificate", for the log


class Refused(Exception):
    def __init__(self, status: HTTPStatus, reason: str, cp_id: str | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.cp_id = status, reason, cp_id


class HidesCredentials(logging.Filter):
    """websockets logs every request header at DEBUG: a charger's Basic credential (its secret)
    is replaced before any handler sees the line."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() == "authorization":
            record.args = (args[0], "[hidden]")
        return True


WEBSOCKET_LOG = logging.getLogger("evcharging.ocpp.websocket")
WEBSOCKET_LOG.addFilter(HidesCredentials())


def tls_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """wss: the gateway's certificate, and (with `client_ca`) client certificates from that CA
    verified when a charger presents one (profile 3); a charger without one uses Basic auth."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def cp_of(path: str) -> str:
    """The CP id: the URL's last path segment (a charger's URL may have a prefix before it)."""
    segment = unquote(path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1])
    if not segment:
        raise Refused(HTTPStatus.NOT_FOUND, "no charge point id in the URL (ws://host:port/CP_ID)")
    if not is_valid_id(segment):
        raise Refused(HTTPStatus.NOT_FOUND, "the URL's charge point id breaks the id rule")
    return segment


def basic_credentials(headers: Headers) -> tuple[str, str] | None:
    value = headers.get("Authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        raise Refused(HTTPStatus.UNAUTHORIZED, f"{scheme} authorization is not supported (Basic)")
    try:
        user, sep, password = b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Refused(HTTPStatus.UNAUTHORIZED, "malformed Basic credentials") from None
    if not sep:
        raise Refused(HTTPStatus.UNAUTHORIZED, "malformed Basic credentials")
    return user, password


def certificate_cp(connection: ServerConnection) -> str | None:
    """The common name of a client certificate the TLS layer verified, if one was presented."""
    ssl_object = connection.transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    peer = ssl_object.getpeercert()
    if not peer:
        return None
    for rdn in peer.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


class OcppServer:
    """Serves chargers; is the service's `ChargerControls` (CALLs to a connected charger)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        audit: Audit,
        tls: ssl.SSLContext | None = None,
        secret_for: SecretFor = lambda cp_id: None,
        response_timeout: float = 10.0,
        ping_interval: float = 10.0,
    ) -> None:
        """The service is attached once built (`service`): it needs this server as its
        `ChargerControls`."""
        self.service: GatewayService | None = None
        self.host, self.port = host, port
        self.tls = tls
        self.secret_for = secret_for
        self.audit = audit
        self.response_timeout = response_timeout
        self.ping_interval = ping_interval
        self.chargers: dict[str, Charger] = {}
        self._admitted: WeakKeyDictionary[ServerConnection, Admitted] = WeakKeyDictionary()
        self._server: Server | None = None

    @property
    def scheme(self) -> str:
        return "wss" if self.tls is not None else "ws"

    async def start(self, listener: socket.socket | None = None) -> None:
        """Serve on `listener` (bound by the program, so a taken port is said first) or bind."""
        address = (
            {"sock": listener} if listener is not None else {"host": self.host, "port": self.port}
        )
        self._server = await serve(
            self._session,
            **address,  # type: ignore[arg-type]
            ssl=self.tls,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            process_request=self._handshake,
            max_size=MAX_MESSAGE,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
            logger=WEBSOCKET_LOG,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        log.info(
            "OCPP 1.6J central system at %s://%s:%s/{cp_id}", self.scheme, self.host, self.port
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # --- the opening handshake ------------------------------------------------------------

    def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        ip = ip_of(_peer(connection))
        try:
            admitted = self._admit(connection, request)
        except Refused as exc:
            log.warning("charger from %s refused (%s): %s", ip, int(exc.status), exc.reason)
            self.audit.record(
                AuditAction.OCPP_REFUSED,
                actor=f"cp:{exc.cp_id}" if exc.cp_id else "charger",
                ip=ip,
                outcome=Outcome.DENIED,
                cp_id=exc.cp_id,
                detail=exc.reason,
            )
            response = connection.respond(exc.status, exc.reason + "\n")
            if exc.status is HTTPStatus.UNAUTHORIZED:
                response.headers["WWW-Authenticate"] = 'Basic realm="EV_OCPP", charset="UTF-8"'
            return response
        self._admitted[connection] = admitted
        return None

    def _admit(self, connection: ServerConnection, request: Request) -> Admitted:
        cp_id = cp_of(request.path)
        offered = [
            p.strip()
            for value in request.headers.get_all("Sec-WebSocket-Protocol")
            for p in value.split(",")
        ]
        if SUBPROTOCOL not in offered:
            raise Refused(HTTPStatus.BAD_REQUEST, f"subprotocol {SUBPROTOCOL} required", cp_id)
        certified = certificate_cp(connection)
        try:
            basic = basic_credentials(request.headers)
        except Refused as exc:  # audited under the CP it tried, as every other refusal
            raise Refused(exc.status, exc.reason, cp_id) from None
        if basic is not None:
            user, password = basic
            if user != cp_id:
                raise Refused(HTTPStatus.UNAUTHORIZED, "the Basic user is not the URL's CP", cp_id)
            if not password:
                raise Refused(HTTPStatus.UNAUTHORIZED, "empty password", cp_id)
            return Admitted(cp_id, password, "basic")
        if certified is not None:
            if certified != cp_id:
                raise Refused(
                    HTTPStatus.FORBIDDEN,
                    f"client certificate of {certified[:64]}, not this CP",
                    cp_id,
                )
            return Admitted(cp_id, self.secret_for(cp_id), "certificate")
        raise Refused(
            HTTPStatus.UNAUTHORIZED, "credentials required (HTTP Basic or certificate)", cp_id
        )

    # --- a charger's session ----------------------------------------------------------------

    async def _session(self, connection: ServerConnection) -> None:
        admitted = self._admitted.pop(connection, None)
        service = self.service
        if admitted is None or service is None:  # never happens: but never served unchecked
            await connection.close(1008, "not admitted")
            return
        cp_id = admitted.cp_id
        charger = Charger(cp_id, connection, service, response_timeout=self.response_timeout)
        earlier = self.chargers.get(cp_id)
        self.chargers[cp_id] = charger
        ip = ip_of(_peer(connection))
        log.info("cp=%s: connected from %s (%s)", cp_id, ip, admitted.how)
        service.opened(cp_id, connection, ip, admitted.secret)
        if earlier is not None:
            log.info("cp=%s: the new connection replaces the earlier one", cp_id)
            await earlier._connection.close(1000, "replaced by a new connection")
        try:
            await charger.start()
        except ConnectionClosed as exc:
            log.info(
                "cp=%s: connection closed (%s)",
                cp_id,
                exc.rcvd.code if exc.rcvd else "no close frame",
            )
        finally:
            if self.chargers.get(cp_id) is charger:
                del self.chargers[cp_id]
            await service.closed(cp_id, connection)

    # --- ChargerControls -------------------------------------------------------------------

    async def _ask(self, cp_id: str, payload: Any) -> str:
        charger = self.chargers.get(cp_id)
        if charger is None:
            return "failed: the charger is not connected"
        return await charger.ask(payload)

    async def remote_start(self, cp_id: str, id_tag: str, connector_id: int) -> str:
        return await self._ask(cp_id, remote_start(id_tag, connector_id))

    async def remote_stop(self, cp_id: str, transaction_id: int) -> str:
        return await self._ask(cp_id, remote_stop(transaction_id))

    async def change_availability(self, cp_id: str, operative: bool) -> str:
        return await self._ask(cp_id, change_availability(operative))

    async def trigger_status(self, cp_id: str) -> str:
        return await self._ask(cp_id, trigger_status())

    async def reset(self, cp_id: str, hard: bool) -> str:
        return await self._ask(cp_id, reset(hard))

    async def drop(self, cp_id: str) -> None:
        """Close a charger's connection (tests; shutdown)."""
        charger = self.chargers.get(cp_id)
        if charger is not None:
            with contextlib.suppress(ConnectionClosed):
                await charger._connection.close(1001, "going away")


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    return f"{address[0]}:{address[1]}" if address else "-"
