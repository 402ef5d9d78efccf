"""One charger's OCPP 1.6J session: its CALLs read into `GatewayService` calls, and the central
system's CALLs to it (`ChargerControls`).

The `ocpp` package validates every message against the OCPP 1.6 JSON schemas both ways (a
malformed CALL is answered with its CALLERROR) and routes each action to the handler below. Its
receive loop is sequential, so a handler never awaits a CALL to the charger (the answer could not
be read): the service spawns those. Every action a 1.6J charger (with the Security extension) may
send has an answer here, so a charger that gives up on any CALLERROR (ocpp-go's example) never
meets one it did not deserve. Before its Boot is accepted, a charger is answered only Boot and
Heartbeat; anything else is a CALLERROR SecurityError (OCPP: a charger not accepted sends
nothing else).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import ocpp.messages
from ocpp.exceptions import OCPPError, SecurityError
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.exceptions import ConnectionClosed

from evcharging.contracts.ocpp import BadMeterValue, ChargerStatus, register_wh
from evcharging.services.ocpp_gateway import GatewayService

log = logging.getLogger(__name__)

# Schema validation on the loop, not in its default thread pool (the package's default): it is
# pure Python (the GIL: no parallelism), the two hops of a MeterValues cost more CPU than the
# validation, and the logins' scrypt (`asyncio.to_thread`) fill that pool while chargers boot,
# stalling every other charger's messages behind them. docs/performance.md, OCPP gateway.
ocpp.messages.ASYNC_VALIDATION = False


class FrameLog(logging.LoggerAdapter[logging.Logger]):
    """The `ocpp` package's logger, tamed: its per-frame lines (INFO) are DEBUG here; its
    `exception` calls (a malformed frame, a handler's error) and `error` calls (a charger's late
    answer) are one warning line, never a traceback or an ERROR a charger's bad input could flood
    a terminal with; a line is cut at `MAX_LINE` characters (a frame may be 256 KB)."""

    MAX_LINE = 500

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return f"cp={self.extra['cp'] if self.extra else '-'}: {msg}", kwargs

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        level = min(level, logging.WARNING)
        if not self.isEnabledFor(level):
            return
        text = str(msg) % args if args else str(msg)  # the frame's text is never a format
        if len(text) > self.MAX_LINE:
            text = f"{text[: self.MAX_LINE]}... ({len(text)} characters)"
        super().log(level, "%s", text, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        problem = sys.exc_info()[1]
        text = str(msg) % args if args else str(msg)
        self.warning("%s (%s: %s)", text, type(problem).__name__, problem, **kwargs)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Charger(ChargePoint):
    """The central system's side of one charger's WebSocket."""

    def __init__(
        self,
        cp_id: str,
        connection: Any,
        service: GatewayService,
        *,
        response_timeout: float = 10.0,
    ) -> None:
        logger = FrameLog(logging.getLogger("evcharging.ocpp.frames"), {"cp": cp_id})
        super().__init__(cp_id, connection, response_timeout=response_timeout, logger=logger)
        self.service = service
        self._bad_meter_said = False

    async def route_message(self, raw_msg: str | bytes) -> None:
        """The `ocpp` package's routing, and a frame it cannot read even as a CALL (an action
        that is not a string, a number past Python's integer limit, nesting past its recursion
        limit) is one warning, as an unparseable frame is there: the session goes on (it ended
        with a traceback)."""
        try:
            await super().route_message(raw_msg)
        except (TypeError, ValueError, RecursionError) as exc:
            log.warning("cp=%s: frame not read (%s: %s)", self.id, type(exc).__name__, exc)

    def _accepted(self) -> None:
        if not self.service.accepted(self.id):
            raise SecurityError(description="BootNotification not accepted yet")

    # --- the Core profile -------------------------------------------------------------

    @on(Action.boot_notification)
    async def on_boot(
        self, charge_point_vendor: str, charge_point_model: str, **_: Any
    ) -> call_result.BootNotification:
        answer = await self.service.boot(self.id, charge_point_vendor, charge_point_model)
        return call_result.BootNotification(
            current_time=utc_now(), interval=answer.interval, status=answer.status.value
        )

    @after(Action.boot_notification)
    def after_boot(self, **_: Any) -> None:
        self.service.boot_answered(self.id)

    @on(Action.heartbeat)
    def on_heartbeat(self) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=utc_now())

    @on(Action.status_notification)
    def on_status(
        self,
        connector_id: int,
        error_code: str,
        status: str,
        info: str | None = None,
        **_: Any,
    ) -> call_result.StatusNotification:
        self._accepted()
        self.service.status(self.id, connector_id, ChargerStatus(status), error_code, info or "")
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str) -> call_result.Authorize:
        self._accepted()
        status = await self.service.authorize(self.id, id_tag)
        return call_result.Authorize(id_tag_info={"status": status.value})

    @on(Action.start_transaction)
    async def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any
    ) -> call_result.StartTransaction:
        self._accepted()
        answer = await self.service.start_transaction(
            self.id, connector_id, id_tag, meter_start, timestamp
        )
        return call_result.StartTransaction(
            transaction_id=answer.transaction_id, id_tag_info={"status": answer.status.value}
        )

    @on(Action.meter_values)
    async def on_meter_values(
        self,
        connector_id: int,
        meter_value: list[dict[str, Any]],
        transaction_id: int | None = None,
    ) -> call_result.MeterValues:
        self._accepted()
        try:
            wh = register_wh(meter_value)
        except BadMeterValue as exc:
            if not self._bad_meter_said:  # said once per connection, not once a second
                log.warning("cp=%s: meter values not read: %s", self.id, exc)
                self._bad_meter_said = True
            wh = None
        await self.service.meter_values(self.id, connector_id, transaction_id, wh)
        return call_result.MeterValues()

    @on(Action.stop_transaction)
    def on_stop_transaction(
        self,
        meter_stop: int,
        timestamp: str,
        transaction_id: int,
        reason: str | None = None,
        **_: Any,
    ) -> call_result.StopTransaction:
        self._accepted()
        status = self.service.stop_transaction(self.id, transaction_id, meter_stop, reason)
        info = None if status is None else {"status": status.value}
        return call_result.StopTransaction(id_tag_info=info)

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> call_result.DataTransfer:
        self._accepted()
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status(self, status: str) -> call_result.DiagnosticsStatusNotification:
        self._accepted()
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def on_firmware_status(self, status: str) -> call_result.FirmwareStatusNotification:
        self._accepted()
        return call_result.FirmwareStatusNotification()

    # --- the Security extension (OCPP 1.6J "Improved security") ------------------------

    @on(Action.security_event_notification)
    def on_security_event(
        self, type: str, timestamp: str, tech_info: str | None = None
    ) -> call_result.SecurityEventNotification:
        self._accepted()
        self.service.security_event(self.id, type, tech_info or "")
        return call_result.SecurityEventNotification()

    @on(Action.log_status_notification)
    def on_log_status(self, status: str, **_: Any) -> call_result.LogStatusNotification:
        self._accepted()
        return call_result.LogStatusNotification()

    @on(Action.sign_certificate)
    def on_sign_certificate(self, csr: str) -> call_result.SignCertificate:
        """Certificates for chargers come from the project's CA (`evcharging certs client`), not
        over OCPP: a CSR is refused, properly."""
        self._accepted()
        log.info("cp=%s: SignCertificate refused: charger certificates are issued offline", self.id)
        return call_result.SignCertificate(status="Rejected")

    @on(Action.signed_firmware_status_notification)
    def on_signed_firmware_status(
        self, status: str, **_: Any
    ) -> call_result.SignedFirmwareStatusNotification:
        self._accepted()
        return call_result.SignedFirmwareStatusNotification()

    # --- the central system's CALLs --------------------------------------------------------

    async def ask(self, payload: Any) -> str:
        """One CALL; the answer's status, or why there is none ("failed: ..."). A charger that
        goes away meanwhile fails it at once (the `ocpp` package waits its whole response
        timeout, and the charger's next CALLs queue behind it)."""
        asking = asyncio.ensure_future(self.call(payload, suppress=False))
        closing = asyncio.ensure_future(self._connection.wait_closed())
        try:
            done, _ = await asyncio.wait((asking, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            asking.cancel()  # both: no-ops once done
            closing.cancel()
        if asking not in done:
            return "failed: the connection closed"
        try:
            result = asking.result()
        except OCPPError as exc:
            return f"failed: CALLERROR {exc.code}: {exc.description}"
        except TimeoutError:
            return f"failed: no answer in {self._response_timeout:g} s"
        except ConnectionClosed:
            return "failed: the connection closed"
        return str(getattr(result, "status", "Accepted"))


def remote_start(id_tag: str, connector_id: int) -> call.RemoteStartTransaction:
    return call.RemoteStartTransaction(id_tag=id_tag, connector_id=connector_id)


def remote_stop(transaction_id: int) -> call.RemoteStopTransaction:
    return call.RemoteStopTransaction(transaction_id=transaction_id)


def change_availability(operative: bool) -> call.ChangeAvailability:
    return call.ChangeAvailability(connector_id=0, type="Operative" if operative else "Inoperative")


def trigger_status() -> call.TriggerMessage:
    return call.TriggerMessage(requested_message="StatusNotification")


def reset(hard: bool) -> call.Reset:
    return call.Reset(type="Hard" if hard else "Soft")
