"""The Monitor's two client links, one task each (a FramedConnection is never shared).

`CentralLinkLoop`: connect with backoff, prove the CP's credentials (AUTH, CHALLENGE, PROOF,
AUTH_OK with Central's own proof and the CP's key, wrapped for this exchange;
docs/socket-protocol.md §3; nothing at all while the CP has none), then every interval (or at
once when the Engine's health changes) FAULT/RECOVER if due and HB.  A heartbeat answered
`ERR#keys_revoked` is still a heartbeat Central heard (the key is dropped, the loop goes on);
`ERR#rekey` authenticates again on the same link for a new key.

`EngineLinkLoop`: connect with backoff, HEALTH every interval, SET_CP once Central accepted the
CP (again after every reconnect), CENTRAL#UP/DOWN on changes, and the CP's key: KEYX (a fresh
X25519 exchange) then KEY with the key wrapped for it, after SET_CP, after every reconnect and
after every new key; KEY_DROP once Central revoked the keys.  The key never crosses either
link in clear (a capture of the Monitor-Engine link gives nothing: the X25519 private keys die
with the exchange), but this link is meant for one host: anyone who can talk to the Engine's
port can hand it a key of their own.

What to send is decided by `services.monitor.MonitorService`; these loops move frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol

from evcharging.adapters.sockets.framing import FramedConnection, LinkError, open_framed
from evcharging.contracts.frames import Frame, wire_text
from evcharging.contracts.socket_ops import CentralState, ErrReason, Opcode
from evcharging.services.cp_auth import ChallengeError, Prover, new_nonce
from evcharging.services.cp_keys import (
    CpKey,
    Exchange,
    GrantError,
    KeyGrant,
    handover_wrap,
    open_grant,
    valid_public,
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
            granted = await self._authenticate(conn, prover)
            if isinstance(granted, str):
                self.svc.central_denied(granted)
                log.info("cp=%s: asking Central again in %.1fs", cp_id, self.timing.denied_retry)
                return self.timing.denied_retry
            self.svc.central_accepted(granted)
            self.backoff.reset()
            await self._heartbeats(conn)  # until reauthenticate()
            log.info("cp=%s: authenticating again, as asked", cp_id)
            prover = self._prover()
        return 0.0  # no credentials any more: the link ends, and run() says so

    async def _heartbeats(self, conn: FramedConnection) -> None:
        cp_id, timeout = self.svc.cp_id, self.timing.timeout
        loop = asyncio.get_running_loop()
        while not self._again.is_set():
            report = self.svc.pending_report()
            if report is not None:
                await self._tell(conn, report)
            self.svc.heartbeat_sent()
            reply = await conn.request(Opcode.HB, cp_id, self.svc.heartbeat_status, timeout=timeout)
            self._heartbeat_answered(reply, loop.time())
            due = self.svc.reauth_in(loop.time())
            if due is not None and due <= 0:
                log.info("cp=%s: authenticating again after the revocation (--auto-reauth)", cp_id)
                break
            wait = self.timing.interval if due is None else min(self.timing.interval, due)
            await pause(self.wake, wait)
        self._again.clear()

    def _heartbeat_answered(self, reply: Frame, now: float) -> None:
        """OK; or one of Central's key notices (the heartbeat was heard all the same);
        `Refusal` for anything else (`ERR#not_authenticated`: the link is dropped, and the
        next one authenticates)."""
        notice = reply.fields[0] if reply.opcode == Opcode.ERR and reply.fields else None
        if reply.opcode != Opcode.OK and notice not in (ErrReason.KEYS_REVOKED, ErrReason.REKEY):
            raise Refusal(f"{Opcode.HB} answered {_short(reply)}")
        self.svc.heartbeat_answered()
        if notice == ErrReason.KEYS_REVOKED:
            self.svc.central_revoked_keys(now)
        elif notice == ErrReason.REKEY:
            log.info("cp=%s: Central rotates the keys: authenticating again", self.svc.cp_id)
            self._again.set()

    async def _authenticate(self, conn: FramedConnection, prover: Prover) -> CpKey | str:
        """The SCRAM exchange; the CP's key when Central accepted the CP (and proved it knows
        it), the reason when it refused (AUTH_DENIED).  `Refusal` for anything else, a key
        grant that does not verify or an AUTH_OK without one included."""
        cp_id, timeout = self.svc.cp_id, self.timing.timeout
        # The Engine's health travels with AUTH: Central never offers a CP it does not know healthy.
        health, reason = self.svc.heartbeat_status, wire_text(self.svc.health_reason)
        client_nonce, exchange = new_nonce(), Exchange()  # the exchange: for this AUTH only
        reply = await conn.request(
            Opcode.AUTH, cp_id, health, reason, client_nonce, exchange.public, timeout=timeout
        )
        if reply.opcode == Opcode.AUTH_DENIED:
            return _reason(reply)
        if reply.opcode != Opcode.CHALLENGE or len(reply.fields) != 5:
            raise Refusal(f"AUTH answered {_short(reply)}")
        try:  # scrypt, once per salt and cost: in a thread, so the Engine link keeps its pace
            proof, message, keys = await asyncio.to_thread(
                prover.answer, client_nonce, *reply.fields, exchange=exchange.public
            )
        except ChallengeError as exc:
            raise Refusal(f"sent a challenge we will not answer ({exc})") from None
        reply = await conn.request(Opcode.PROOF, cp_id, proof, timeout=timeout)
        if reply.opcode == Opcode.AUTH_DENIED:
            return _reason(reply)
        if reply.opcode != Opcode.AUTH_OK or not reply.fields or reply.fields[0] != cp_id:
            raise Refusal(f"PROOF answered {_short(reply)}")
        if len(reply.fields) == 2:  # issue 13's AUTH_OK (a Central with --cp-encryption off)
            raise Refusal("sent no key (an AUTH_OK without a key grant)")
        if len(reply.fields) != 5:
            raise Refusal(f"PROOF answered {_short(reply)}")
        grant = KeyGrant(*reply.fields[1:])
        try:
            return open_grant(
                cp_id,
                grant,
                exchange=exchange,
                auth_message=message,
                keys=keys,
            )
        except GrantError as exc:
            raise Refusal(f"sent a key that does not verify: {exc}") from None

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
        told_cp: bool | None = None  # SET_CP: not yet sent / refused (another CP) / taken
        told_central: bool | None = None
        handed: int | None = None  # the key version this link handed the Engine
        dropped = self.svc.drops_told_at_link_start()
        while True:
            await self._check_health(conn)
            self.backoff.reset()
            if self.svc.cp_accepted and told_cp is None:
                told_cp = await self._set_cp(conn)
            if told_cp:  # the CP's key, only to an Engine that is this CP
                if self.svc.drop_due(dropped):
                    dropped = self.svc.revocations
                    await self._drop_keys(conn)
                key = self.svc.key_to_hand(handed)
                if key is not None:
                    handed = key.version  # tried once per link and version, not every second
                    await self._hand_key(conn, key)
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

    async def _set_cp(self, conn: FramedConnection) -> bool:
        """True when the Engine took the CP id (only such an Engine is handed the CP's key)."""
        cp_id = self.svc.cp_id
        try:
            await expect_ok(conn, self.timing.timeout, Opcode.SET_CP, cp_id)
        except Refusal as exc:
            log.warning("cp=%s: the Engine did not take its CP id: %s", cp_id, exc)
            return False
        log.info("cp=%s: Engine told its CP id", cp_id)
        return True

    async def _hand_key(self, conn: FramedConnection, key: CpKey) -> None:
        """KEYX with a fresh exchange, then KEY with the key wrapped for it (never in clear)."""
        cp_id, timeout = self.svc.cp_id, self.timing.timeout
        exchange = Exchange()
        try:
            reply = await conn.request(Opcode.KEYX, exchange.public, timeout=timeout)
            if reply.opcode != Opcode.OK or len(reply.fields) != 1:
                raise Refusal(f"{Opcode.KEYX} answered {_short(reply)}")
            if not valid_public(reply.fields[0]):
                raise Refusal(f"{Opcode.KEYX} answered a malformed exchange key")
            wrapped = handover_wrap(key, exchange, reply.fields[0])
            await expect_ok(conn, timeout, Opcode.KEY, cp_id, str(key.version), wrapped)
        except (Refusal, GrantError) as exc:
            log.warning("cp=%s: the Engine did not take key v%s: %s", cp_id, key.version, exc)
            return
        log.info("cp=%s: key v%s handed to the Engine", cp_id, key.version)

    async def _drop_keys(self, conn: FramedConnection) -> None:
        cp_id = self.svc.cp_id
        try:
            await expect_ok(conn, self.timing.timeout, Opcode.KEY_DROP, cp_id)
        except Refusal as exc:
            log.warning("cp=%s: the Engine did not drop its keys: %s", cp_id, exc)
            return
        log.info("cp=%s: Engine told to drop its keys (revoked by Central)", cp_id)
