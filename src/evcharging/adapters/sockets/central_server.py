"""EV_Central's TCP server for Monitors: frames in, CentralService calls, answers out.

A connection authenticates one CP with the SCRAM exchange of `services.cp_auth` (AUTH ->
CHALLENGE, PROOF -> AUTH_OK; the decisions, throttle and audit rows are `services.cp_login`'s);
until then every other frame is answered `ERR#not_authenticated` and not acted on.  AUTH carries
the Monitor's ephemeral X25519 key and AUTH_OK the CP's fresh symmetric key, wrapped for it
(`services.cp_keys.grant_key`; the key itself is never logged); with Central in the benchmark's
comparison mode (`--cp-encryption off`) the exchange key is optional and AUTH_OK is issue 13's
`AUTH_OK#cp_id#signature`.  A heartbeat may be answered `ERR#keys_revoked` or `ERR#rekey` (the
service's key notices); like every ERR answer, that ends nothing on Central's side.  Silence
longer than the heartbeat timeout, a Monitor that does not ACK an answer within
`answer_timeout`, EOF, five bad frames in a row or a broken link ends the connection and makes
that CP Desconectado.  Bad frames and unknown opcodes are audited (message.rejected), once per
kind per link.

Each link is an `asyncio.Protocol` driven by `data_received`, not a task reading a stream: with
thousands of Monitors heartbeating every second, a heartbeat is a decode, a dictionary update and
one write, with no task, coroutine or timer of its own (one sweeper checks every link's deadline
twice a second).  AUTH, and a wrong PROOF, are answered at once (a database read and a few
HMACs: no slow hashing at Central).  Frames that change a CP's state (a right PROOF, FAULT,
RECOVER, a heartbeat whose Engine health changed) are answered from a task, because the service
awaits Kafka for them. The exchange rules are those of `adapters.sockets.framing`
(docs/socket-protocol.md); which handler answers which opcode is one table, `REQUESTS` (the
opcodes are `contracts.socket_ops.Opcode`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from evcharging.adapters.listening import CannotListen
from evcharging.contracts.frames import (
    ACK,
    NACK,
    Frame,
    FrameDecoder,
    FrameError,
    encode,
    wire_text,
)
from evcharging.contracts.socket_ops import EngineState, ErrReason, Opcode
from evcharging.services.central import Answer, CentralService
from evcharging.services.cp_auth import Challenge, b64
from evcharging.services.cp_keys import grant_key
from evcharging.services.cp_login import CPLogin, Denied

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 2.0
MAX_BAD_FRAMES = 5
SWEEP_EVERY = 0.5
BACKLOG = 4096  # after a Central restart every Monitor reconnects at once (kernel caps it)

_NACK = bytes((NACK,))


class MonitorServer:
    def __init__(
        self,
        service: CentralService,
        host: str,
        port: int,
        *,
        login: CPLogin,
        answer_timeout: float = ANSWER_TIMEOUT,
    ) -> None:
        self.service = service
        self.login = login
        self.host = host
        self.port = port
        self.answer_timeout = answer_timeout
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._links: set[MonitorLink] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False  # Central is going down: links drop, CPs keep their supplies

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: MonitorLink(self), self.host, self.port, backlog=BACKLOG
            )
        except OSError as exc:
            raise CannotListen.because("Monitors", self.host, self.port, exc) from exc
        self._sweeper = asyncio.create_task(self._sweep(), name="monitor-deadlines")
        log.info("listening for Monitors on %s:%s", self.host, self.port)

    @property
    def grants_keys(self) -> bool:
        """AUTH must carry an exchange key and AUTH_OK carries the CP key; False only for a
        Central without keys, or in the benchmark's comparison mode (`--cp-encryption off`)."""
        keys = self.service.keys
        return keys is not None and keys.encrypt

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Drop every link without ending anything: a stopping Central is a Central that dies
        (the marking guide's "CPs finish their current service"), not Monitors that are lost."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for link in list(self._links):
            link.end("Central stopping")
        await asyncio.sleep(0)  # connection_lost callbacks run and start their last tasks
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def joined(self, link: MonitorLink) -> None:
        self._links.add(link)

    def left(self, link: MonitorLink) -> None:
        self._links.discard(link)

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            now = time.monotonic()
            for link in list(self._links):
                link.check_deadline(now)


class _Wait(enum.Enum):
    REQUEST = "request"  # for the Monitor's next frame
    ANSWER = "answer"  # for the service to compute an answer (a task is running)
    ACK = "ack"  # for the Monitor's ACK/NACK of our answer


class MonitorLink(asyncio.Protocol):
    """The conversation with one Monitor, as a state machine fed by `data_received`."""

    def __init__(self, server: MonitorServer) -> None:
        self.server = server
        self.service = server.service
        self.token = object()
        self.cp_id: str | None = None
        self.peer = "?"
        self._transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder()
        self._frames: deque[Frame | FrameError] = deque()
        self._held = bytearray()  # bytes that arrived while an answer was being computed
        self._wait = _Wait.REQUEST
        self._since = time.monotonic()
        self._bad_in_a_row = 0
        self._why: str | None = None
        self._challenge: _Pending | None = None  # sent CHALLENGE, waiting for its PROOF
        self._proved: _Proved | None = None  # PROOF right, CentralService next
        self._rejected: set[str] = set()  # kinds of dropped frames already audited on this link

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._since = time.monotonic()
        self.server.joined(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.left(self)
        why = self._why or (f"link failed: {exc}" if exc else "connection closed")
        log.info("monitor link %s (cp=%s) ended: %s", self.peer, self.cp_id, why)
        self._transport = None
        if self.cp_id is not None and not self.server.stopping:
            self.server.spawn(
                self.service.monitor_lost(self.cp_id, self.token, f"Monitor link lost ({why})"),
                f"monitor-lost {self.cp_id}",
            )

    def data_received(self, data: bytes) -> None:
        if self._wait is _Wait.ANSWER:
            self._held += data
            return
        if self._wait is _Wait.ACK:
            reply, data = data[0], data[1:]
            if reply == NACK:
                log.warning("peer %s NACKed our answer", self.peer)
            elif reply != ACK:
                self.end(f"{self.peer} answered 0x{reply:02x} instead of ACK/NACK")
                return
            self._ready()
        if data:
            self._frames.extend(self._decoder.feed(data))
        self._pump()

    # --- the exchange ---------------------------------------------------------------------

    def _ready(self) -> None:
        self._wait = _Wait.REQUEST
        self._since = time.monotonic()

    def _pump(self) -> None:
        """Answer what has arrived, one exchange at a time (a well-behaved Monitor sends one)."""
        while self._wait is _Wait.REQUEST and self._frames and self._transport is not None:
            result = self._frames.popleft()
            if isinstance(result, FrameError):
                self._bad_frame(result)
                continue
            self._bad_in_a_row = 0
            answer = self._answer_now(result)
            if answer is None:
                self._wait = _Wait.ANSWER
                self.server.spawn(self._answer_later(result), f"monitor-answer {self.peer}")
                return
            self._send(answer)

    def _bad_frame(self, error: FrameError) -> None:
        self._bad_in_a_row += 1
        self._write(_NACK)
        log.warning("bad frame from %s: %s (NACK sent)", self.peer, error)
        self._audit_rejected(error.reason, f"bad frame: {error}")
        if self._bad_in_a_row >= MAX_BAD_FRAMES:
            self.end(f"{self._bad_in_a_row} bad frames in a row from {self.peer}")

    def _audit_rejected(self, kind: str, detail: str) -> None:
        """message.rejected, once per kind per link: a babbling peer cannot flood the log."""
        if kind in self._rejected:
            return
        self._rejected.add(kind)
        self.server.login.rejected(self.cp_id, kind, detail, self.peer)

    def _send(self, answer: bytes) -> None:
        """Our ACK of the request and the answer frame in one write; then wait for its ACK."""
        self._write(answer)
        self._wait = _Wait.ACK
        self._since = time.monotonic()
        if self._held:
            held, self._held = bytes(self._held), bytearray()
            self.data_received(held)

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def check_deadline(self, now: float) -> None:
        """Called by the server's sweeper: silence and unacknowledged answers end the link."""
        if self._wait is _Wait.REQUEST:
            limit = self.service.heartbeat_timeout
            if now - self._since > limit:
                self.end(f"recv: nothing from {self.peer} within {limit:g}s")
        elif self._wait is _Wait.ACK and now - self._since > self.server.answer_timeout:
            self.end(f"answer: no ACK from {self.peer} within {self.server.answer_timeout:g}s")

    def end(self, why: str) -> None:
        """Close (after what is already written, such as a last NACK); `why` is logged once."""
        if self._transport is None or self._why is not None:
            return
        self._why = why
        self._transport.close()

    # --- answers (each request opcode is routed through REQUESTS, below the class) ---------

    def _answer_now(self, frame: Frame) -> bytes | None:
        """The answer when it needs no waiting (a routine heartbeat, a refusal); else None."""
        route = REQUESTS.get(frame.opcode)
        fields = frame.fields
        if route is None:
            log.warning("monitor %s: unknown opcode %r", self.peer, frame.opcode)
            self._audit_rejected(ErrReason.UNKNOWN_OPCODE, f"unknown opcode {frame.opcode[:40]!r}")
            return _UNKNOWN_OPCODE
        if route.own_cp and (not fields or fields[0] != self.cp_id):  # cp_id None: never equal
            log.warning(
                "monitor %s: %s before authentication or for another CP", self.peer, frame.opcode
            )
            return _NOT_AUTHENTICATED
        now = route.now
        return None if now is None else now(self, fields)

    async def _answer_later(self, frame: Frame) -> None:
        later = REQUESTS[frame.opcode].later
        assert later is not None, f"{frame.opcode} is always answered at once"
        try:
            answer = await later(self, frame.fields)
        except Exception:  # a bug: keep the details, drop this link, keep serving the others
            log.exception("monitor %s: answering %s failed", self.peer, frame.opcode)
            self.end("internal error")
            return
        if self._transport is None:  # the link went while we worked; a PROOF may just have won
            if self.cp_id is not None and frame.opcode == _PROOF and not self.server.stopping:
                await self.service.monitor_lost(self.cp_id, self.token, "Monitor link lost")
            return
        self._send(answer)
        self._pump()

    def _auth(self, fields: tuple[str, ...]) -> bytes:
        """AUTH#cp#engine_state#reason#client_nonce#exchange -> CHALLENGE#salt#n#r#p#nonce, or
        AUTH_DENIED#reason (`CPLogin.begin`: throttle, registration, a malformed field).  The
        Engine's health is kept for the PROOF: a health other than OK (or none given) keeps the
        CP Averiado until a heartbeat says OK."""
        self._challenge = None  # a new AUTH abandons any exchange in progress on this link
        login = self.server.login
        required = self.server.grants_keys
        if len(fields) < 4 or (required and (len(fields) < 5 or not fields[4])):
            cp_id = fields[0] if fields else None
            malformed = _MALFORMED_AUTH if required else _MALFORMED_AUTH_PLAIN
            return _denied(login.refused(cp_id, malformed, self.peer))
        cp_id, state, reason, client_nonce = fields[:4]
        exchange = fields[4] if len(fields) > 4 else ""
        if self.cp_id is not None and self.cp_id != cp_id:
            return _denied(login.refused(cp_id, _OTHER_CP, self.peer))
        started = login.begin(cp_id, client_nonce, self.peer, exchange)
        if isinstance(started, Denied):
            log.warning("monitor %s: AUTH for cp=%s refused: %s", self.peer, cp_id, started.reason)
            return _denied(started)
        engine_ok = state == _ENGINE_OK
        fault = None if engine_ok else (reason or _NO_HEALTH.get(state, _HEALTH_UNKNOWN))
        self._challenge = _Pending(started, engine_ok, fault)
        kdf = started.verifier.kdf
        return _frame(
            Opcode.CHALLENGE, b64(kdf.salt), str(kdf.n), str(kdf.r), str(kdf.p), started.nonce
        )

    def _proof_now(self, fields: tuple[str, ...]) -> bytes | None:
        """PROOF#cp#client_proof, only as the answer to this link's CHALLENGE for that CP (once:
        the challenge is spent whatever the outcome).  Wrong: AUTH_DENIED at once; right: None,
        and `_proof` lets CentralService take the CP."""
        pending, self._challenge = self._challenge, None
        cp_id = fields[0] if fields else None
        login = self.server.login
        if pending is None or len(fields) < 2 or cp_id != pending.challenge.cp_id:
            log.warning("monitor %s: PROOF for cp=%s without its CHALLENGE", self.peer, cp_id)
            return _denied(login.refused(cp_id, _PROOF_WITHOUT_AUTH, self.peer))
        result = login.finish(pending.challenge, fields[1], self.peer)
        if isinstance(result, Denied):
            log.warning("monitor %s: PROOF for cp=%s refused: %s", self.peer, cp_id, result.reason)
            return _denied(result)
        self._proved = _Proved(pending, result, fields[1])
        return None

    async def _proof(self, fields: tuple[str, ...]) -> bytes:
        """The proof was right: CentralService takes the CP (it may still refuse: another
        Monitor holds it) and issues its key; AUTH_OK carries Central's signature (its own proof
        to the Monitor) and the key wrapped for this exchange (`KeyGrant.fields()`)."""
        proved, self._proved = self._proved, None
        assert proved is not None, "PROOF answered later only after _proof_now accepted it"
        challenge = proved.pending.challenge
        cp_id = challenge.cp_id
        answer = await self.service.monitor_auth(
            cp_id,
            self.token,
            engine_ok=proved.pending.engine_ok,
            fault_reason=proved.pending.fault_reason,
            peer=self.peer,
        )
        if not answer.ok:
            log.warning("monitor %s: cp=%s refused: %s", self.peer, cp_id, answer.reason)
            return _denied(self.server.login.refused(cp_id, answer.reason, self.peer))
        self.cp_id = cp_id  # from here a lost link makes the CP Desconectado
        if not self.server.grants_keys:
            return _frame(Opcode.AUTH_OK, cp_id, b64(proved.signature))
        key = await self.service.issue_key(cp_id, self.peer)
        client_key = challenge.client_key(proved.proof_text)
        assert client_key is not None, "the proof was checked right by CPLogin.finish"
        grant = grant_key(
            key,
            auth_message=challenge.message,
            client_key=client_key,
            server_key=challenge.verifier.server_key,
            monitor_public=challenge.exchange,
        )
        log.info("monitor %s: cp=%s given key v%d", self.peer, cp_id, key.version)
        return _frame(Opcode.AUTH_OK, cp_id, *grant.fields())

    def _heartbeat_now(self, fields: tuple[str, ...]) -> bytes | None:
        """HB#cp#OK|KO that changes nothing but the CP's liveness: answered at once (the hot path)."""
        engine_ok = len(fields) < 2 or fields[1] == _ENGINE_OK  # inline: once per heartbeat
        answer = self.service.heartbeat_now(fields[0], self.token, engine_ok)
        if answer is None:
            return None
        return _ACK_OK if answer.ok else _reply(answer)

    async def _heartbeat(self, fields: tuple[str, ...]) -> bytes:
        """HB whose Engine health changed: the service awaits Kafka."""
        return _reply(await self.service.heartbeat(fields[0], self.token, _engine_ok(fields)))

    async def _fault(self, fields: tuple[str, ...]) -> bytes:
        """FAULT#cp#reason."""
        reason = fields[1] if len(fields) > 1 and fields[1] else "Engine KO"
        return _reply(await self.service.monitor_fault(fields[0], self.token, reason))

    async def _recover(self, fields: tuple[str, ...]) -> bytes:
        """RECOVER#cp."""
        return _reply(await self.service.monitor_recovered(fields[0], self.token))


@dataclass(frozen=True, slots=True)
class _Pending:
    """A CHALLENGE sent on a link, and the Engine health its AUTH told."""

    challenge: Challenge
    engine_ok: bool
    fault_reason: str | None


@dataclass(frozen=True, slots=True)
class _Proved:
    """A right PROOF, kept for the answer computed later: Central's signature (issue 13's
    AUTH_OK) and the proof itself (the client key the CP key is wrapped with)."""

    pending: _Pending
    signature: bytes
    proof_text: str


@dataclass(frozen=True, slots=True)
class Route:
    """How Central answers one request opcode."""

    own_cp: bool  # fields[0] must be the CP this link authenticated (all but AUTH and PROOF)
    now: Callable[[MonitorLink, tuple[str, ...]], bytes | None] | None  # None: answer `later`
    later: Callable[[MonitorLink, tuple[str, ...]], Awaitable[bytes]] | None  # None: never


REQUESTS: dict[str, Route] = {
    Opcode.AUTH.value: Route(own_cp=False, now=MonitorLink._auth, later=None),
    Opcode.PROOF.value: Route(own_cp=False, now=MonitorLink._proof_now, later=MonitorLink._proof),
    Opcode.HB.value: Route(
        own_cp=True, now=MonitorLink._heartbeat_now, later=MonitorLink._heartbeat
    ),
    Opcode.FAULT.value: Route(own_cp=True, now=None, later=MonitorLink._fault),
    Opcode.RECOVER.value: Route(own_cp=True, now=None, later=MonitorLink._recover),
}
"""Every request a Monitor may send Central (`socket_ops.TO_CENTRAL`), and its handlers; a frame
whose opcode is not here is answered ERR#unknown_opcode."""

# Plain str constants for the hot path (an enum attribute costs a lookup per heartbeat).
_PROOF = Opcode.PROOF.value
_ENGINE_OK = EngineState.OK.value
_NO_HEALTH = {EngineState.KO.value: "Engine KO"}  # the fault reason when AUTH gave none
_HEALTH_UNKNOWN = "Engine health not reported yet"  # AUTH's engine_state neither OK nor KO
_MALFORMED_AUTH = "malformed AUTH: expected cp_id, engine_state, reason, client_nonce, exchange"
_MALFORMED_AUTH_PLAIN = "malformed AUTH: expected cp_id, engine_state, reason, client_nonce"
_OTHER_CP = "this connection is already authenticated as another CP"
_PROOF_WITHOUT_AUTH = "PROOF without a CHALLENGE for this CP on this link"


def _engine_ok(fields: tuple[str, ...]) -> bool:
    return len(fields) < 2 or fields[1] == _ENGINE_OK


def _frame(opcode: Opcode, *fields: str) -> bytes:
    return bytes((ACK,)) + encode(opcode, *fields)


_ACK_OK = _frame(Opcode.OK)  # the answer to nearly every heartbeat, encoded once
_NOT_AUTHENTICATED = _frame(Opcode.ERR, ErrReason.NOT_AUTHENTICATED)
_UNKNOWN_OPCODE = _frame(Opcode.ERR, ErrReason.UNKNOWN_OPCODE)


def _denied(denied: Denied) -> bytes:
    return _frame(Opcode.AUTH_DENIED, wire_text(denied.reason))


def _reply(answer: Answer) -> bytes:
    return _ACK_OK if answer.ok else _frame(Opcode.ERR, wire_text(answer.reason))
