"""The Engine's side of the Monitor link: a TCP server speaking the framed protocol.

Why it replaces rather than refuses: one Monitor at a time, and a Monitor that connects while a
link is still open takes over (the old link is closed).  A Monitor killed abruptly can leave a
half-open connection behind that nobody would ever close; refusing the newcomer would lock the
restarted Monitor out of its own Engine.

Frames (see docs/socket-protocol.md): ``HEALTH`` -> ``OK`` | ``KO#reason``; ``SET_CP#cp_id`` ->
``OK`` | ``ERR#reason``; ``CENTRAL#UP`` / ``CENTRAL#DOWN`` -> ``OK``; the CP's key:
``KEYX#monitor_exchange`` -> ``OK#engine_exchange``, ``KEY#cp_id#version#wrapped`` -> ``OK`` |
``ERR#reason``, ``KEY_DROP#cp_id`` -> ``OK``; anything else -> ``ERR#...``.

The key is wrapped for a fresh X25519 exchange per handover (`services.cp_keys.handover_*`), so a
capture of this link gives nothing; the link itself is not authenticated and is meant for one
host (the Engine should listen on loopback or a private link to its own Monitor).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from evcharging.adapters.listening import CannotListen
from evcharging.adapters.sockets.framing import FramedConnection, LinkError
from evcharging.contracts.frames import Frame, wire_text
from evcharging.contracts.socket_ops import CentralState, EngineState, Opcode
from evcharging.services.cp_keys import valid_public
from evcharging.services.ports import EngineControls, EngineOutcome, EngineRefusal

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 2.0  # seconds for the Monitor to ACK our answer


Reply = tuple[str, ...]  # the answer frame's parts: opcode, fields


def _health(engine: EngineControls, fields: tuple[str, ...]) -> Reply | None:
    health = engine.health_check()
    return (Opcode.OK,) if health.ok else (Opcode.KO, wire_text(health.ko_reason or EngineState.KO))


def _outcome(outcome: EngineOutcome) -> Reply:
    if isinstance(outcome, EngineRefusal):
        return (Opcode.ERR, wire_text(outcome.reason))
    return (Opcode.OK,)


def _set_cp(engine: EngineControls, fields: tuple[str, ...]) -> Reply | None:
    if len(fields) != 1 or not fields[0]:
        return None
    return _outcome(engine.set_cp_id(fields[0]))


def _keyx(engine: EngineControls, fields: tuple[str, ...]) -> Reply | None:
    if len(fields) != 1:
        return None
    if not valid_public(fields[0]):
        log.warning("Monitor link: KEYX with a malformed exchange key refused")
        return (Opcode.ERR, "malformed KEYX: not an exchange key")
    answer = engine.key_exchange(fields[0])
    if isinstance(answer, EngineRefusal):
        return (Opcode.ERR, wire_text(answer.reason))
    return (Opcode.OK, answer)


def _key(engine: EngineControls, fields: tuple[str, ...]) -> Reply | None:
    if len(fields) != 3 or not fields[0]:
        return None
    cp_id, version, wrapped = fields
    if not (version.isascii() and version.isdecimal() and 0 < len(version) <= 9):
        log.warning("Monitor link: KEY with a malformed version refused")
        return (Opcode.ERR, "malformed KEY: the version is not a number")
    return _outcome(engine.install_key(cp_id, int(version), wrapped))


def _key_drop(engine: EngineControls, fields: tuple[str, ...]) -> Reply | None:
    if len(fields) != 1 or not fields[0]:
        return None
    return _outcome(engine.drop_keys(fields[0]))


def _central(engine: EngineControls, fields: tuple[str, ...]) -> Reply | None:
    if len(fields) != 1 or fields[0] not in _CENTRAL_STATES:
        return None
    engine.set_central(fields[0] == CentralState.UP)
    return (Opcode.OK,)


_CENTRAL_STATES = frozenset(CentralState)

REQUESTS: dict[str, Callable[[EngineControls, tuple[str, ...]], Reply | None]] = {
    Opcode.HEALTH.value: _health,
    Opcode.SET_CP.value: _set_cp,
    Opcode.CENTRAL.value: _central,
    Opcode.KEYX.value: _keyx,
    Opcode.KEY.value: _key,
    Opcode.KEY_DROP.value: _key_drop,
}
"""Every request a Monitor may send its Engine (`socket_ops.TO_ENGINE`); a handler returns None
for fields that do not fit its opcode."""


def answer(engine: EngineControls, frame: Frame) -> Reply:
    """One Monitor request -> the answer frame's parts (ERR#unexpected OP for anything else)."""
    handler = REQUESTS.get(frame.opcode)
    reply = None if handler is None else handler(engine, frame.fields)
    if reply is None:
        log.warning("Monitor link: unexpected frame %r", str(frame)[:80])
        return (Opcode.ERR, f"unexpected {wire_text(frame.opcode)}")
    return reply


class EngineLinkServer:
    def __init__(self, engine: EngineControls, host: str, port: int) -> None:
        self._engine = engine
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._current: asyncio.Task[None] | None = None
        self._links: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind and listen (port 0 picks a free port, then `self.port` tells which)."""
        try:
            self._server = await asyncio.start_server(self._accept, self.host, self.port)
        except OSError as exc:
            raise CannotListen.because("the Monitor", self.host, self.port, exc) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("waiting for the Monitor on %s:%s", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._current = None
        links = list(self._links)
        for task in links:
            task.cancel()
        await asyncio.gather(*links, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Each link runs in a task of ours: asyncio's own callback task must never be cancelled."""
        conn = FramedConnection(reader, writer)
        task = asyncio.create_task(self._serve(conn), name=f"EV_CP_E monitor-link {conn.peer}")
        self._links.add(task)
        task.add_done_callback(self._links.discard)
        previous, self._current = self._current, task
        if previous is not None and not previous.done():
            log.warning("Monitor connected from %s: it replaces the previous link", conn.peer)
            previous.cancel()
        else:
            log.info("Monitor connected from %s", conn.peer)

    async def _serve(self, conn: FramedConnection) -> None:
        me = asyncio.current_task()
        try:
            await self._converse(conn)
        except LinkError as exc:
            log.warning("Monitor link from %s lost: %s", conn.peer, exc)
        finally:
            await conn.close()
            if self._current is me:
                self._current = None
                self._engine.monitor_disconnected()

    async def _converse(self, conn: FramedConnection) -> None:
        while True:
            frame = await conn.recv_frame(timeout=None)
            opcode, *fields = answer(self._engine, frame)
            await conn.send_frame(opcode, *fields, timeout=ANSWER_TIMEOUT)
