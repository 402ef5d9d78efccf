"""Scripted OCPP 1.6J charge points for EV_OCPP's tests and benchmark, many in one process.

Built on the `ocpp` package (the messages, their JSON schemas, the routing of CALLs) over the
`websockets` asyncio client with subprotocol `ocpp1.6`. A `ScriptedCharger` sends what the test
says (`boot()`, `status()`, `start()`, ...) and answers the central system's CALLs, recording
each one (`calls`, `wait_for_call()`). With `auto=True` it also behaves like a real charger after
its answers: a remote start makes it send Preparing, StartTransaction and Charging, a remote stop
StopTransaction and Available, and so on (see `ScriptedCharger`).

Connection: `URL/CP_ID`; security profile 1/2 by `password=` (HTTP Basic, username = the CP id
unless `username=` says otherwise) over ws or wss; profile 3 by `ssl=client_ssl(ca, cert, key)`.
A refused handshake raises websockets' `InvalidStatus` (its `.response.status_code`) from
`connect()` / `async with`.

Rule of the `ocpp` library this kit keeps: its receive loop is sequential, so a CALL handler never
awaits an outgoing `call()` (it would wait for its own loop: a deadlock). What a charger does
after answering runs in tasks of its own (`_spawn`); `idle()` waits for them and raises the first
error one of them met.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import ssl as ssl_module
import struct
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

log = logging.getLogger(__name__)

# The `ocpp` library logs every frame at INFO: the kit's chargers log with a logger of their own
# at WARNING, and the library's logger is set to WARNING unless someone has configured it.
FRAMES = logging.getLogger("ocpp.kit")
FRAMES.setLevel(logging.WARNING)
if logging.getLogger("ocpp").level == logging.NOTSET:
    logging.getLogger("ocpp").setLevel(logging.WARNING)

SUBPROTOCOL = "ocpp1.6"
FOLLOWED = frozenset(
    {
        "RemoteStartTransaction",
        "RemoteStopTransaction",
        "ChangeAvailability",
        "TriggerMessage",
        "ExtendedTriggerMessage",
        "Reset",
    }
)
"""The CALLs whose answer an `after` hook follows (auto behaviour): `idle()` waits for it."""
ENERGY = "Energy.Active.Import.Register"

Answer = str | Callable[[dict[str, Any]], str]
"""How a charger answers one action: a status word, or a function of the CALL's payload
(snake_case keys) returning one."""


def timestamp() -> str:
    """Now in UTC, as OCPP writes times (`2025-01-31T14:03:05.123Z`)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def client_ssl(
    ca: Path, cert: Path | None = None, key: Path | None = None
) -> ssl_module.SSLContext:
    """A TLS client context trusting the network's `ca.pem`; with `cert`/`key` (a charger's
    client certificate, `certs.issue_client`) it is security profile 3."""
    context = ssl_module.create_default_context(cafile=str(ca))
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    return context


def basic_auth(username: str, password: str) -> str:
    """The `Authorization` header value of HTTP Basic auth (OCPP security profiles 1 and 2)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class ChargerDisconnected(ConnectionError):
    """The connection ended while the charger waited for an answer."""


@dataclass(frozen=True, slots=True)
class Received:
    """One CALL the central system sent: its action, payload (snake_case keys, as the `ocpp`
    library hands them to handlers) and message id."""

    action: str
    payload: dict[str, Any]
    unique_id: str


@dataclass(frozen=True, slots=True)
class Started:
    """The answer to StartTransaction: the transaction id and idTagInfo's status."""

    transaction_id: int
    status: str
    connector: int


@dataclass
class _Connector:
    status: str = "Available"
    operative: bool = True
    inoperative_pending: bool = False
    meter_wh: int = 0
    transaction_id: int | None = None
    id_tag: str | None = None


class _Link(ChargePoint):
    """The `ocpp` library's ChargePoint: routing and answering only; the behaviour is the
    owner's. Every handler records the CALL, answers by the owner's rule, and its `after` hook
    hands the rest to the owner (which spawns tasks, never awaits a call here)."""

    def __init__(self, owner: ScriptedCharger, connection: ClientConnection) -> None:
        super().__init__(
            owner.cp_id, connection, response_timeout=owner.response_timeout, logger=FRAMES
        )
        self.owner = owner

    # --- the calls EV_OCPP is expected to send ---------------------------------------------

    @on(Action.remote_start_transaction)
    def _remote_start(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("RemoteStartTransaction", kw, call_unique_id)
        return call_result.RemoteStartTransaction(status=status)

    @after(Action.remote_start_transaction)
    def _after_remote_start(self, **kw: Any) -> None:
        self.owner._after_remote_start(kw)

    @on(Action.remote_stop_transaction)
    def _remote_stop(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("RemoteStopTransaction", kw, call_unique_id)
        return call_result.RemoteStopTransaction(status=status)

    @after(Action.remote_stop_transaction)
    def _after_remote_stop(self, **kw: Any) -> None:
        self.owner._after_remote_stop(kw)

    @on(Action.change_availability)
    def _change_availability(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("ChangeAvailability", kw, call_unique_id)
        return call_result.ChangeAvailability(status=status)

    @after(Action.change_availability)
    def _after_change_availability(self, **kw: Any) -> None:
        self.owner._after_change_availability(kw)

    @on(Action.trigger_message)
    def _trigger(self, call_unique_id: str, **kw: Any) -> Any:
        return call_result.TriggerMessage(
            status=self.owner._take("TriggerMessage", kw, call_unique_id)
        )

    @after(Action.trigger_message)
    def _after_trigger(self, **kw: Any) -> None:
        self.owner._after_trigger("TriggerMessage", kw)

    @on(Action.extended_trigger_message)
    def _extended_trigger(self, call_unique_id: str, **kw: Any) -> Any:
        return call_result.ExtendedTriggerMessage(
            status=self.owner._take("ExtendedTriggerMessage", kw, call_unique_id)
        )

    @after(Action.extended_trigger_message)
    def _after_extended_trigger(self, **kw: Any) -> None:
        self.owner._after_trigger("ExtendedTriggerMessage", kw)

    @on(Action.reset)
    def _reset(self, call_unique_id: str, **kw: Any) -> Any:
        return call_result.Reset(status=self.owner._take("Reset", kw, call_unique_id))

    @after(Action.reset)
    def _after_reset(self, **kw: Any) -> None:
        self.owner._after_reset(kw)

    # --- the rest of OCPP 1.6 (and its security extension): sensible answers, recorded -----

    @on(Action.change_configuration)
    def _change_configuration(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("ChangeConfiguration", kw, call_unique_id)
        if status == "Accepted":
            self.owner.configuration[kw["key"]] = kw["value"]
        return call_result.ChangeConfiguration(status=status)

    @on(Action.get_configuration)
    def _get_configuration(self, call_unique_id: str, **kw: Any) -> Any:
        self.owner._record("GetConfiguration", kw, call_unique_id)
        config = self.owner.configuration
        wanted = kw.get("key") or list(config)
        return call_result.GetConfiguration(
            configuration_key=[
                {"key": k, "readonly": False, "value": config[k]} for k in wanted if k in config
            ],
            unknown_key=[k for k in wanted if k not in config] or None,
        )

    @on(Action.clear_cache)
    def _clear_cache(self, call_unique_id: str, **kw: Any) -> Any:
        return call_result.ClearCache(status=self.owner._take("ClearCache", kw, call_unique_id))

    @on(Action.unlock_connector)
    def _unlock(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("UnlockConnector", kw, call_unique_id, "Unlocked")
        return call_result.UnlockConnector(status=status)

    @on(Action.data_transfer)
    def _data_transfer(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("DataTransfer", kw, call_unique_id)
        return call_result.DataTransfer(status=status)

    @on(Action.get_local_list_version)
    def _local_list_version(self, call_unique_id: str, **kw: Any) -> Any:
        self.owner._record("GetLocalListVersion", kw, call_unique_id)
        return call_result.GetLocalListVersion(list_version=0)

    @on(Action.send_local_list)
    def _send_local_list(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("SendLocalList", kw, call_unique_id)
        return call_result.SendLocalList(status=status)

    @on(Action.reserve_now)
    def _reserve_now(self, call_unique_id: str, **kw: Any) -> Any:
        return call_result.ReserveNow(status=self.owner._take("ReserveNow", kw, call_unique_id))

    @on(Action.cancel_reservation)
    def _cancel_reservation(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("CancelReservation", kw, call_unique_id)
        return call_result.CancelReservation(status=status)

    @on(Action.set_charging_profile)
    def _set_profile(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("SetChargingProfile", kw, call_unique_id)
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    def _clear_profile(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("ClearChargingProfile", kw, call_unique_id)
        return call_result.ClearChargingProfile(status=status)

    @on(Action.get_composite_schedule)
    def _composite_schedule(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("GetCompositeSchedule", kw, call_unique_id, "Rejected")
        return call_result.GetCompositeSchedule(status=status)

    @on(Action.get_diagnostics)
    def _diagnostics(self, call_unique_id: str, **kw: Any) -> Any:
        self.owner._record("GetDiagnostics", kw, call_unique_id)
        return call_result.GetDiagnostics()

    @on(Action.update_firmware)
    def _update_firmware(self, call_unique_id: str, **kw: Any) -> Any:
        self.owner._record("UpdateFirmware", kw, call_unique_id)
        return call_result.UpdateFirmware()

    @on(Action.certificate_signed)
    def _certificate_signed(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("CertificateSigned", kw, call_unique_id)
        return call_result.CertificateSigned(status=status)

    @on(Action.install_certificate)
    def _install_certificate(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("InstallCertificate", kw, call_unique_id)
        return call_result.InstallCertificate(status=status)

    @on(Action.delete_certificate)
    def _delete_certificate(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("DeleteCertificate", kw, call_unique_id)
        return call_result.DeleteCertificate(status=status)

    @on(Action.get_installed_certificate_ids)
    def _installed_certificates(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("GetInstalledCertificateIds", kw, call_unique_id, "NotFound")
        return call_result.GetInstalledCertificateIds(status=status)

    @on(Action.get_log)
    def _get_log(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("GetLog", kw, call_unique_id)
        return call_result.GetLog(status=status, filename="charger.log")

    @on(Action.signed_update_firmware)
    def _signed_update_firmware(self, call_unique_id: str, **kw: Any) -> Any:
        status = self.owner._take("SignedUpdateFirmware", kw, call_unique_id)
        return call_result.SignedUpdateFirmware(status=status)


@dataclass
class ScriptedCharger:
    """One OCPP 1.6J charge point under a test's control.

    `async with ScriptedCharger(url, "CP1", password=...) as cp:` connects to `url/CP1` and runs
    its receive loop; leaving the block closes it (a close frame). Outgoing calls return the
    `ocpp` library's result dataclasses (`call_result.X`) and raise the library's `OCPPError`
    subclass for a CALLERROR, `ChargerDisconnected` if the connection ends first, TimeoutError
    after `response_timeout` seconds without an answer.

    Answers to the central system: Accepted (or the action's natural yes: Unlocked, ...) unless
    `answers[action]` says otherwise (a status word or a function of the payload).

    With `auto=True`, after its answer (only when it accepted; ChangeAvailability "Scheduled"
    included) it behaves like a charger:
    - RemoteStartTransaction: refused (Rejected) if the connector (default 1) is charging or
      inoperative; else StatusNotification Preparing, StartTransaction (meterStart = the
      connector's meter register), then Charging; if the id tag is not Accepted it stops again
      (StopTransaction reason DeAuthorized, Available).
    - RemoteStopTransaction: Rejected for an unknown transaction; else StopTransaction (reason
      Remote, meterStop = the register), then Available (Unavailable if an Inoperative change
      was scheduled).
    - ChangeAvailability Inoperative: Scheduled if a transaction runs on the connector (0 = all),
      the Unavailable status following when it ends; else Accepted and Unavailable now.
      Operative: Accepted and Available for each idle connector.
    - TriggerMessage / ExtendedTriggerMessage: StatusNotification (the current status of the
      given connector, or of every connector), Heartbeat, BootNotification, MeterValues (the
      running transactions' registers); any other request is answered NotImplemented.
    - Reset: StopTransaction (reason SoftReset/HardReset) for each running transaction, then
      BootNotification and each connector's status.
    `meter_tick(wh)` advances the register(s) and sends MeterValues for the running transaction.
    """

    url: str
    cp_id: str
    password: str | None = None
    username: str | None = None  # the Basic auth user; default the CP id
    path_id: str | None = None  # the id in the URL path; default the CP id
    ssl: ssl_module.SSLContext | None = None
    auto: bool = False
    connectors: int = 1
    meter_wh: int = 0  # every connector's meter register at the start, Wh
    response_timeout: float = 20.0
    open_timeout: float = 10.0
    vendor: str = "EVCharging"
    model: str = "ScriptedCharger"
    answers: dict[str, Answer] = field(default_factory=dict)
    configuration: dict[str, str] = field(
        default_factory=lambda: {"HeartbeatInterval": "300", "MeterValueSampleInterval": "60"}
    )

    def __post_init__(self) -> None:
        self.calls: list[Received] = []
        self.sent: list[tuple[str, Any]] = []  # (action, result) of every answered outgoing call
        self.errors: list[BaseException] = []  # what auto behaviour met (see idle())
        self.state = {n: _Connector(meter_wh=self.meter_wh) for n in range(self.connectors + 1)}
        self.ws: ClientConnection | None = None
        self._link: _Link | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        self._arrived = asyncio.Event()
        self._cursor: dict[str, int] = {}
        self._unfollowed = 0  # answers of FOLLOWED calls whose after hook has not run yet
        self._progress = asyncio.Event()
        self._answered: dict[str, str] = {}

    # --- connection ------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"{self.url.rstrip('/')}/{quote(self.path_id or self.cp_id, safe='')}"

    @property
    def subprotocol(self) -> str | None:
        return self.ws.subprotocol if self.ws else None

    async def connect(self) -> ScriptedCharger:
        headers = {}
        if self.password is not None:
            headers["Authorization"] = basic_auth(self.username or self.cp_id, self.password)
        self.ws = await connect(
            self.endpoint,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            additional_headers=headers,
            ssl=self.ssl,
            open_timeout=self.open_timeout,
            ping_interval=None,  # OCPP has its Heartbeat; keep the test's frames its own
        )
        self._closed.clear()
        self._link = _Link(self, self.ws)
        self._loop_task = asyncio.create_task(self._receive(), name=f"ocpp-kit-{self.cp_id}")
        return self

    async def __aenter__(self) -> ScriptedCharger:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _receive(self) -> None:
        assert self._link is not None
        try:
            await self._link.start()
        except ConnectionClosed as exc:
            log.debug("%s: connection closed (%s)", self.cp_id, exc)
        finally:
            self._closed.set()

    async def close(self) -> None:
        """A clean close (close frame), then the receive loop and auto tasks end."""
        if self.ws is not None and not self._closed.is_set():
            try:
                await self.ws.close()
            except ConnectionClosed as exc:  # the other side closed first, with an error code
                log.debug("%s: closed by the other side (%s)", self.cp_id, exc)
        await self._finish()

    async def drop(self, reset: bool = False) -> None:
        """Cut the TCP connection without a close frame (a charger losing its link): FIN, or
        with `reset` an RST (SO_LINGER 0)."""
        if self.ws is None:
            return
        sock = self.ws.transport.get_extra_info("socket")
        if reset and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.ws.transport.abort()
        await self._finish()

    async def _finish(self) -> None:
        if self._loop_task is not None:
            await asyncio.wait({self._loop_task})
        self._unfollowed = 0  # answers never sent have no after hook
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self._closed.is_set()

    async def wait_closed(self, timeout: float = 10.0) -> int | None:  # noqa: ASYNC109
        """Wait until the central system (or anything) ends the connection; its close code."""
        async with asyncio.timeout(timeout):
            await self._closed.wait()
        return self.ws.close_code if self.ws else None

    # --- outgoing calls ----------------------------------------------------------------------

    async def _call(self, payload: Any) -> Any:
        """One CALL; races the answer against the connection's end."""
        action = type(payload).__name__
        if self._link is None or self._closed.is_set():
            raise ChargerDisconnected(f"{self.cp_id} is not connected ({action} not sent)")
        answer = asyncio.ensure_future(self._link.call(payload, suppress=False))
        ended = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({answer, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if not answer.done():
            answer.cancel()
            await asyncio.wait({answer})
            raise ChargerDisconnected(
                f"{self.cp_id}: the connection ended before the answer to {action}"
            )
        try:
            result = answer.result()
        except ConnectionClosed as exc:
            raise ChargerDisconnected(f"{self.cp_id}: {action} not sent: {exc}") from exc
        self.sent.append((action, result))
        return result

    async def boot(self) -> Any:
        """BootNotification; the result's `status` (Accepted/Pending/Rejected) and `interval`."""
        return await self._call(
            call.BootNotification(charge_point_model=self.model, charge_point_vendor=self.vendor)
        )

    async def heartbeat(self) -> Any:
        return await self._call(call.Heartbeat())

    async def status(
        self, connector: int, status: str, error_code: str = "NoError", info: str | None = None
    ) -> Any:
        self._connector(connector).status = status
        return await self._call(
            call.StatusNotification(
                connector_id=connector,
                error_code=error_code,
                status=status,
                timestamp=timestamp(),
                info=info,
            )
        )

    async def authorize(self, id_tag: str) -> Any:
        """Authorize; the result's `id_tag_info["status"]`."""
        return await self._call(call.Authorize(id_tag=id_tag))

    async def start(self, connector: int, id_tag: str, meter_start: int | None = None) -> Started:
        """StartTransaction (meterStart defaults to the connector's register)."""
        slot = self._connector(connector)
        if meter_start is None:
            meter_start = slot.meter_wh
        slot.meter_wh = meter_start
        result = await self._call(
            call.StartTransaction(
                connector_id=connector,
                id_tag=id_tag,
                meter_start=meter_start,
                timestamp=timestamp(),
            )
        )
        started = Started(result.transaction_id, result.id_tag_info["status"], connector)
        slot.transaction_id, slot.id_tag = started.transaction_id, id_tag
        return started

    async def meter(
        self,
        connector: int,
        tx_id: int | None,
        wh: int,
        measurand: str = ENERGY,
        context: str = "Sample.Periodic",
    ) -> Any:
        """MeterValues: one sample, the register at `wh` Wh."""
        self._connector(connector).meter_wh = wh
        sample = {"value": str(wh), "measurand": measurand, "unit": "Wh", "context": context}
        return await self._call(
            call.MeterValues(
                connector_id=connector,
                transaction_id=tx_id,
                meter_value=[{"timestamp": timestamp(), "sampled_value": [sample]}],
            )
        )

    async def stop(
        self, tx_id: int, meter_stop: int | None = None, reason: str | None = None
    ) -> Any:
        """StopTransaction (meterStop defaults to the register of the transaction's connector)."""
        slot = next((s for s in self.state.values() if s.transaction_id == tx_id), None)
        if meter_stop is None:
            meter_stop = slot.meter_wh if slot else 0
        id_tag = slot.id_tag if slot else None
        result = await self._call(
            call.StopTransaction(
                meter_stop=meter_stop,
                timestamp=timestamp(),
                transaction_id=tx_id,
                reason=reason,
                id_tag=id_tag,
            )
        )
        if slot is not None:
            slot.transaction_id, slot.id_tag, slot.meter_wh = None, None, meter_stop
        return result

    async def security_event(
        self, type: str = "StartupOfTheDevice", tech_info: str | None = None
    ) -> Any:
        return await self._call(
            call.SecurityEventNotification(type=type, timestamp=timestamp(), tech_info=tech_info)
        )

    async def log_status(self, status: str = "Idle", request_id: int = 1) -> Any:
        return await self._call(call.LogStatusNotification(status=status, request_id=request_id))

    async def sign_certificate(self, csr: str = "-----BEGIN CERTIFICATE REQUEST-----") -> Any:
        return await self._call(call.SignCertificate(csr=csr))

    async def raw(
        self,
        unique_id: str,
        action: str,
        payload: dict[str, Any],
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[Any]:
        """Send `[2, unique_id, action, payload]` as it is (no schema check) and return the
        reply frame as parsed JSON: `[3, id, payload]` or `[4, id, code, description, details]`.
        For tests of duplicated message ids and malformed payloads."""
        if self._link is None:
            raise ChargerDisconnected(f"{self.cp_id} is not connected")
        link = self._link
        async with link._call_lock:  # the library's one-call-at-a-time rule
            await link._send(json.dumps([2, unique_id, action, payload]))
            reply = await link._get_specific_response(unique_id, timeout or self.response_timeout)
        frame: list[Any] = json.loads(reply.to_json())
        return frame

    async def meter_tick(self, wh: int, connector: int | None = None) -> int:
        """Advance the register of `connector` (default: every connector with a transaction)
        by `wh` Wh and send MeterValues for each running transaction there; how many sent."""
        chosen = [connector] if connector is not None else list(self.state)[1:]
        sent = 0
        for n in chosen:
            slot = self._connector(n)
            slot.meter_wh += wh
            if slot.transaction_id is not None:
                await self.meter(n, slot.transaction_id, slot.meter_wh)
                sent += 1
        return sent

    # --- what the central system sent --------------------------------------------------------

    async def wait_for_call(self, action: str, timeout: float = 10.0) -> Received:  # noqa: ASYNC109
        """The next CALL of `action` not yet returned by this method (waiting for it)."""

        async with asyncio.timeout(timeout):
            while True:
                seen = self.received(action)
                at = self._cursor.get(action, 0)
                if len(seen) > at:
                    self._cursor[action] = at + 1
                    return seen[at]
                await self._arrived.wait()

    def received(self, action: str) -> list[Received]:
        return [c for c in self.calls if c.action == action]

    async def idle(self, timeout: float = 20.0) -> None:  # noqa: ASYNC109
        """Wait until the auto behaviour's tasks are done; raise the first error one met."""
        async with asyncio.timeout(timeout):
            while self._tasks or self._unfollowed:
                if self._tasks:
                    await asyncio.wait(set(self._tasks))
                else:
                    await self._progress.wait()
        if self.errors:
            raise self.errors[0]

    # --- handlers' side (called from the receive loop: never await a call here) -------------

    def _record(self, action: str, payload: dict[str, Any], unique_id: str) -> None:
        self.calls.append(Received(action, payload, unique_id))
        self._arrived.set()  # wakes the waiters, who look again and wait on a fresh event
        self._arrived = asyncio.Event()

    def _take(
        self, action: str, payload: dict[str, Any], unique_id: str, default: str = "Accepted"
    ) -> str:
        """Record the CALL and choose its answer: the test's, else auto's, else `default`."""
        self._record(action, payload, unique_id)
        rule = self.answers.get(action)
        if rule is not None and callable(rule):
            try:
                status = rule(payload)
            except Exception:
                log.warning("%s: the test's answer to %s failed", self.cp_id, action)
                raise  # the library answers a CALLERROR (and logs it)
        elif rule is not None:
            status = rule
        elif self.auto:
            status = self._auto_answer(action, payload) or default
        else:
            status = default
        self._answered[action] = status
        if action in FOLLOWED:
            self._unfollowed += 1
        return status

    def _followed(self) -> None:
        """An after hook ran (its work, if any, is a task now)."""
        self._unfollowed = max(0, self._unfollowed - 1)
        self._progress.set()
        self._progress = asyncio.Event()

    def _auto_answer(self, action: str, kw: dict[str, Any]) -> str | None:
        if action == "RemoteStartTransaction":
            slot = self.state.get(kw.get("connector_id") or 1)
            ok = slot is not None and slot.transaction_id is None and slot.operative
            return "Accepted" if ok else "Rejected"
        if action == "RemoteStopTransaction":
            running = any(s.transaction_id == kw["transaction_id"] for s in self.state.values())
            return "Accepted" if running else "Rejected"
        if action == "ChangeAvailability":
            if kw["type"] == "Inoperative" and any(
                self.state[n].transaction_id is not None for n in self._targets(kw["connector_id"])
            ):
                return "Scheduled"
            return "Accepted"
        if action in ("TriggerMessage", "ExtendedTriggerMessage"):
            known = ("StatusNotification", "Heartbeat", "BootNotification", "MeterValues")
            return "Accepted" if kw["requested_message"] in known else "NotImplemented"
        return None

    def _spawn(self, work: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=f"{self.cp_id}-{what}")
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, what))

    def _done(self, task: asyncio.Task[None], what: str) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.errors.append(error)
            log.warning("%s: %s failed: %r", self.cp_id, what, error)

    def _accepted(self, action: str, *also: str) -> bool:
        self._followed()
        return self.auto and self._answered.get(action) in ("Accepted", *also)

    def _after_remote_start(self, kw: dict[str, Any]) -> None:
        if self._accepted("RemoteStartTransaction"):
            self._spawn(self._charge(kw.get("connector_id") or 1, kw["id_tag"]), "remote start")

    async def _charge(self, connector: int, id_tag: str) -> None:
        await self.status(connector, "Preparing")
        started = await self.start(connector, id_tag)
        if started.status == "Accepted":
            await self.status(connector, "Charging")
        else:
            await self.stop(started.transaction_id, reason="DeAuthorized")
            await self._settle_status(connector)

    def _after_remote_stop(self, kw: dict[str, Any]) -> None:
        if self._accepted("RemoteStopTransaction"):
            self._spawn(self._end(kw["transaction_id"], "Remote"), "remote stop")

    async def _end(self, tx_id: int, reason: str) -> None:
        slot = next((n for n, s in self.state.items() if s.transaction_id == tx_id), None)
        await self.stop(tx_id, reason=reason)
        if slot is not None:
            await self._settle_status(slot)

    async def _settle_status(self, connector: int) -> None:
        """After a transaction: Available, or Unavailable if an Inoperative change waited."""
        slot = self.state[connector]
        if slot.inoperative_pending:
            slot.inoperative_pending, slot.operative = False, False
        await self.status(connector, "Available" if slot.operative else "Unavailable")

    def _targets(self, connector: int) -> list[int]:
        return list(self.state)[1:] if connector == 0 else [connector]

    def _after_change_availability(self, kw: dict[str, Any]) -> None:
        if not self._accepted("ChangeAvailability", "Scheduled"):
            return
        targets = [n for n in self._targets(kw["connector_id"]) if n in self.state]
        inoperative = kw["type"] == "Inoperative"
        now: list[int] = []
        for n in targets:
            slot = self.state[n]
            if slot.transaction_id is not None:
                slot.inoperative_pending = inoperative
            else:
                slot.operative = not inoperative
                now.append(n)
        if now:
            self._spawn(self._statuses(now), "change availability")

    async def _statuses(self, connectors: Iterable[int]) -> None:
        for n in connectors:
            slot = self.state[n]
            if n and slot.transaction_id is None:
                slot.status = "Available" if slot.operative else "Unavailable"
            await self.status(n, slot.status)

    def _after_trigger(self, action: str, kw: dict[str, Any]) -> None:
        if not self._accepted(action):
            return
        what, connector = kw["requested_message"], kw.get("connector_id")
        if what == "StatusNotification":
            chosen = [connector] if connector is not None else list(self.state)[1:]
            self._spawn(self._statuses(c for c in chosen if c in self.state), "trigger")
        elif what == "Heartbeat":
            self._spawn(self._ignore(self.heartbeat()), "trigger")
        elif what == "BootNotification":
            self._spawn(self._ignore(self.boot()), "trigger")
        elif what == "MeterValues":
            self._spawn(self._trigger_meter(connector), "trigger")

    async def _trigger_meter(self, connector: int | None) -> None:
        for n, slot in list(self.state.items())[1:]:
            if connector in (None, n) and slot.transaction_id is not None:
                await self.meter(n, slot.transaction_id, slot.meter_wh, context="Trigger")

    async def _ignore(self, work: Coroutine[Any, Any, Any]) -> None:
        await work

    def _after_reset(self, kw: dict[str, Any]) -> None:
        if self._accepted("Reset"):
            self._spawn(self._reboot("SoftReset" if kw["type"] == "Soft" else "HardReset"), "reset")

    async def _reboot(self, reason: str) -> None:
        for slot in list(self.state.values())[1:]:
            if slot.transaction_id is not None:
                await self.stop(slot.transaction_id, reason=reason)
        await self.boot()
        await self._statuses(list(self.state)[1:])

    def _connector(self, n: int) -> _Connector:
        if n not in self.state:
            self.state[n] = _Connector(meter_wh=self.meter_wh)
        return self.state[n]


@asynccontextmanager
async def chargers(
    url: str, cp_ids: Iterable[str], **options: Any
) -> AsyncIterator[list[ScriptedCharger]]:
    """Many chargers connected at once (the same options for all; `passwords` may be a dict
    CP id -> password); all closed at the end."""
    passwords: dict[str, str] = options.pop("passwords", {})
    made = [
        ScriptedCharger(url, cp_id, password=passwords.get(cp_id), **options) for cp_id in cp_ids
    ]
    async with AsyncExitStack() as stack:
        outcomes = await asyncio.gather(*(c.connect() for c in made), return_exceptions=True)
        for charger, outcome in zip(made, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                stack.push_async_callback(charger.close)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            raise failed[0]
        yield made
