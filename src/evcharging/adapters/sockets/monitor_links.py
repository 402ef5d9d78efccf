"""The Monitor's two client links, one task each (a FramedConnection is never shared).

`CentralLinkLoop`: connect with backoff, prove the CP's credentials (AUTH, CHALLENGE, PROOF,
AUTH_OK with Central's own proof; docs/socket-protocol.md §3; nothing at all while the CP has
none), then every interval (or at once when the Engine's health changes) FAULT/RECOVER if due
and HB.  `EngineLinkLoop`: connect with backoff, HEALTH every
interval, SET_CP once Central accepted the CP (again after every reconnect), CENTRAL#UP/DOWN on
changes.  What to send is decided by `services.monitor.MonitorService`; these loops move frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol

from evcharging.adapters.sockets.framing import FramedConnection, LinkError, open_framed
from evcharging.contracts.frames import Frame, wire_text
from evcharging.contracts.socket_ops import CentralState, Opcode
from evcharging.services.cp_auth import (
    ChallengeError,
    Prover,
    new_nonce,
    signature_matches,
    unb64,
)
from evcharging.services.monitor import Backoff, Fault, MonitorService, Report

log = logging.getLogger(__name__)


class Refusal(Exception):
    """The peer answered, but not OK (ERR#..., or an opcode we did not expect)."""


@dataclass(frozen=True, slots=True)
class Timing:
    interval: float = 1.0  # between heartbeats / health checks
    timeout: float = 1.0  # for connecting and for each request/answer exchange
    max_backoff: float = 5.0  # longest wait between reconnection attempts to Central
    denied_retry: float = 10.0  # wait after AUTH_DENIED before trying again


async def pause(wake: asyncio.Event, seconds: float) -> None:
    """Sleep up to `seconds`, or less if something changed that a loop must act on."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wake.wait()
    wake.clear()


async def expect_ok(conn: FramedConnection, seconds: float, opcode: Opcode, *fields: str) -> None:
    """One request that must be answered OK within `seconds`; `Refusal` otherwise."""
    reply = await conn.request(opcode, *fields, timeout=seconds)
    if reply.opcode != Opcode.OK:
        raise Refusal(f"{opcode} answered {_short(reply)}")


def _short(frame: Frame) -> str:
    return str(frame)[:120]


class Credentials(Protocol):
    """Where the Monitor's secret comes from (its credentials file; a test's object)."""

    def prover(self) -> Prover | None:
        """The CP's prover, or None while it is not registered.  Return the same `Prover` while
        the secret is unchanged: it caches the slow scrypt result per salt and cost."""
        ...


class CentralLinkLoop:
    """Connect, prove the CP's credentials (SCRAM; the secret never travels), then heartbeat."""

    def __init__(
        self,
        service: MonitorService,
        address: tuple[str, int],
        *,
        credentials: Credentials,
        timing: Timing | None = None,
        wake: asyncio.Event | None = None,
    ) -> None:
        self.svc = service
        self.host, self.port = address
        self.credentials = credentials
        self.timing = timing or Timing()
        self.wake = wake or asyncio.Event()
        self.backoff = Backoff(min(0.5, self.timing.max_backoff), self.timing.max_backoff)
        self._again = asyncio.Event()  # reauthenticate(): end the link, AUTH at once

    def reauthenticate(self) -> None:
        """Authenticate again at once, with the credentials as they are now (after a
        re-registration, or when the operator asks: the Monitor's menu).  On a live link the
        exchange is run again on that link: Central never sees the Monitor lost, so a supply in
        progress goes on; between links the wait for the next attempt is cut short."""
        self._again.set()
        self.wake.set()

    async def run(self) -> None:
        await self._first_engine_verdict()
        while True:
            prover = self._prover()
            if prover is None:
                self.svc.central_not_registered()
                # woken by reauthenticate() or any change; a file written meanwhile is seen too
                await pause(self.wake, self.timing.denied_retry)
                continue
            delay = await self._attempt(prover)
            await pause(self._again, delay)

    def _prover(self) -> Prover | None:
        prover = self.credentials.prover()
        if prover is not None and prover.cp_id != self.svc.cp_id:
            log.error(
                "cp=%s: the credentials are CP %s's; not authenticating with them",
                self.svc.cp_id,
                prover.cp_id,
            )
            return None
        return prover

    async def _first_engine_verdict(self) -> None:
        """Authenticate with the Engine's health known, so the first HB tells the truth."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timing.timeout + self.timing.interval
        while not self.svc.has_verdict and loop.time() < deadline:
            await pause(self.wake, deadline - loop.time())

    async def _attempt(self, prover: Prover) -> float:
        """One connection's life; returns how long to wait before the next one."""
        self._again.clear()
        try:
            conn = await open_framed(self.host, self.port, self.timing.timeout)
        except LinkError as exc:
            return self._unreachable(exc)
        try:
            return await self._converse(conn, prover)
        except LinkError as exc:
            return self._unreachable(exc)
        except Refusal as exc:
            self.svc.central_lost()
            delay = self.backoff.next()
            log.warning(
                "cp=%s: Central %s; authenticating again in %.1fs", self.svc.cp_id, exc, delay
            )
            return delay
        finally:
            await conn.close()

    def _unreachable(self, exc: Exception) -> float:
        self.svc.central_lost()
        delay = self.backoff.next()
        log.warning(
            "Cannot connect to CENTRAL at %s:%s (%s); cp=%s retrying in %.1fs",
            self.host,
            self.port,
            exc,
            self.svc.cp_id,
            delay,
        )
        return delay

    async def _converse(self, conn: FramedConnection, prover: Prover | None) -> float:
        cp_id = self.svc.cp_id
        log.info("cp=%s: connected to CENTRAL at %s, authenticating", cp_id, conn.peer)
        while prover is not None:
            denied = await self._authenticate(conn, prover)
            if denied is not None:
                self.svc.central_denied(denied)
                log.info("cp=%s: asking Central again in %.1fs", cp_id, self.timing.denied_retry)
                return self.timing.denied_retry
            self.svc.central_accepted()
            self.backoff.reset()
            await self._heartbeats(conn)  # until reauthenticate()
            log.info("cp=%s: authenticating again, as asked", cp_id)
            prover = self._prover()
        return 0.0  # no credentials any more: the link ends, and run() says so

    async def _heartbeats(self, conn: FramedConnection) -> None:
        cp_id, timeout = self.svc.cp_id, self.timing.timeout
        while not self._again.is_set():
            report = self.svc.pending_report()
            if report is not None:
                await self._tell(conn, report)
            self.svc.heartbeat_sent()
            await expect_ok(conn, timeout, Opcode.HB, cp_id, self.svc.heartbeat_status)
            self.svc.heartbeat_answered()
            await pause(self.wake, self.timing.interval)
        self._again.clear()

    async def _authenticate(self, conn: FramedConnection, prover: Prover) -> str | None:
        """The SCRAM exchange; None when Central accepted the CP (and proved it knows it), the
        reason when it refused (AUTH_DENIED).  `Refusal` for anything else."""
        cp_id, timeout = self.svc.cp_id, self.timing.timeout
        # The Engine's health travels with AUTH: Central never offers a CP it does not know healthy.
        health, reason = self.svc.heartbeat_status, wire_text(self.svc.health_reason)
        client_nonce = new_nonce()
        reply = await conn.request(
            Opcode.AUTH, cp_id, health, reason, client_nonce, timeout=timeout
        )
        if reply.opcode == Opcode.AUTH_DENIED:
            return _reason(reply)
        if reply.opcode != Opcode.CHALLENGE or len(reply.fields) != 5:
            raise Refusal(f"AUTH answered {_short(reply)}")
        try:  # scrypt, once per salt and cost: in a thread, so the Engine link keeps its pace
            proof, message, keys = await asyncio.to_thread(
                prover.answer, client_nonce, *reply.fields
            )
        except ChallengeError as exc:
            raise Refusal(f"sent a challenge we will not answer ({exc})") from None
        reply = await conn.request(Opcode.PROOF, cp_id, proof, timeout=timeout)
        if reply.opcode == Opcode.AUTH_DENIED:
            return _reason(reply)
        if reply.opcode != Opcode.AUTH_OK or len(reply.fields) != 2 or reply.fields[0] != cp_id:
            raise Refusal(f"PROOF answered {_short(reply)}")
        try:
            signature = unb64(reply.fields[1])
        except ValueError:
            signature = b""
        if not signature_matches(keys, message, signature):
            raise Refusal("could not prove it knows this CP (wrong server signature)")
        return None

    async def _tell(self, conn: FramedConnection, report: Report) -> None:
        cp_id, timeout = self.svc.cp_id, self.timing.timeout
        if isinstance(report, Fault):
            await expect_ok(conn, timeout, Opcode.FAULT, cp_id, wire_text(report.reason))
        else:
            await expect_ok(conn, timeout, Opcode.RECOVER, cp_id)
        self.svc.reported(report)


def _reason(reply: Frame) -> str:
    return reply.fields[0] if reply.fields and reply.fields[0] else "no reason given"


class EngineLinkLoop:
    def __init__(
        self,
        service: MonitorService,
        address: tuple[str, int],
        *,
        timing: Timing | None = None,
        wake: asyncio.Event | None = None,
    ) -> None:
        self.svc = service
        self.host, self.port = address
        self.timing = timing or Timing()
        self.wake = wake or asyncio.Event()
        self.backoff = Backoff(min(0.5, self.timing.interval), self.timing.interval)

    async def run(self) -> None:
        while True:
            try:
                conn = await open_framed(self.host, self.port, self.timing.timeout)
            except LinkError as exc:
                self.svc.engine_unreachable(str(exc))
            else:
                await self._connected(conn)
            await asyncio.sleep(self.backoff.next())

    async def _connected(self, conn: FramedConnection) -> None:
        log.info("cp=%s: connected to the Engine at %s", self.svc.cp_id, conn.peer)
        try:
            await self._converse(conn)
        except (LinkError, Refusal) as exc:
            self.svc.engine_unreachable(str(exc))
        finally:
            await conn.close()

    async def _converse(self, conn: FramedConnection) -> None:
        told_cp, told_central = False, None
        while True:
            await self._check_health(conn)
            self.backoff.reset()
            if self.svc.cp_accepted and not told_cp:
                await self._set_cp(conn)
                told_cp = True
            central = self.svc.central_to_tell_engine()
            if central is not None and central != told_central:
                state = CentralState.UP if central else CentralState.DOWN
                await expect_ok(conn, self.timing.timeout, Opcode.CENTRAL, state)
                told_central = central
            await pause(self.wake, self.timing.interval)

    async def _check_health(self, conn: FramedConnection) -> None:
        reply = await conn.request(Opcode.HEALTH, timeout=self.timing.timeout)
        if reply.opcode == Opcode.OK:
            self.svc.engine_ok()
        elif reply.opcode == Opcode.KO:
            self.svc.engine_ko(reply.fields[0] if reply.fields else "")
        else:
            raise Refusal(f"HEALTH answered {_short(reply)}")

    async def _set_cp(self, conn: FramedConnection) -> None:
        cp_id = self.svc.cp_id
        try:
            await expect_ok(conn, self.timing.timeout, Opcode.SET_CP, cp_id)
        except Refusal as exc:
            log.warning("cp=%s: the Engine did not take its CP id: %s", cp_id, exc)
            return
        log.info("cp=%s: Engine told its CP id", cp_id)
