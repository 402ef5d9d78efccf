"""EV_Central's concurrent TCP server for Monitors: frames in, CentralService calls, answers out.

One task per connection.  A connection authenticates one CP with AUTH; until then every other
frame is answered `ERR#not_authenticated` and not acted on.  Silence longer than the heartbeat
timeout, EOF or a broken link makes that CP Desconectado.
"""

from __future__ import annotations

import asyncio
import logging

from evcharging.adapters.sockets.framing import FramedConnection, LinkError
from evcharging.contracts.frames import Frame
from evcharging.services.central import Answer, CentralService

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 2.0


class MonitorServer:
    def __init__(self, service: CentralService, host: str, port: int) -> None:
        self.service = service
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        log.info("listening for Monitors on %s:%s", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Each link runs in a task of ours: asyncio's own callback task must never be cancelled."""
        link = MonitorLink(self.service, FramedConnection(reader, writer))
        task = asyncio.create_task(link.run(), name=f"monitor-link {link.conn.peer}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class MonitorLink:
    """The conversation with one Monitor."""

    def __init__(self, service: CentralService, conn: FramedConnection) -> None:
        self.service = service
        self.conn = conn
        self.token = object()
        self.cp_id: str | None = None

    async def run(self) -> None:
        why = "connection closed"
        try:
            while True:
                await self.conn.answer_next(
                    self._dispatch,
                    timeout=self.service.heartbeat_timeout,
                    answer_timeout=ANSWER_TIMEOUT,
                )
        except LinkError as exc:
            why = str(exc)
            log.info("monitor link %s (cp=%s) ended: %s", self.conn.peer, self.cp_id, why)
        finally:
            if self.cp_id is not None:
                await self.service.monitor_lost(
                    self.cp_id, self.token, f"Monitor link lost ({why})"
                )
            await self.conn.close()

    async def _dispatch(self, frame: Frame) -> tuple[str, ...]:
        return tuple(await self._answer(frame))

    async def _answer(self, frame: Frame) -> list[str]:
        op, fields = frame.opcode, list(frame.fields)
        if op == "AUTH" and len(fields) >= 1:
            return await self._auth(fields[0])
        if op not in ("HB", "FAULT", "RECOVER"):
            log.warning("monitor %s: unknown opcode %r", self.conn.peer, op)
            return ["ERR", "unknown_opcode"]
        if not fields or self.cp_id is None or fields[0] != self.cp_id:
            log.warning(
                "monitor %s: %s before authentication or for another CP", self.conn.peer, op
            )
            return ["ERR", "not_authenticated"]
        if op == "HB":
            engine_ok = len(fields) < 2 or fields[1] == "OK"
            answer = await self.service.heartbeat(self.cp_id, self.token, engine_ok)
        elif op == "FAULT":
            reason = fields[1] if len(fields) > 1 and fields[1] else "Engine KO"
            answer = await self.service.monitor_fault(self.cp_id, self.token, reason)
        else:
            answer = await self.service.monitor_recovered(self.cp_id, self.token)
        return _reply(answer)

    async def _auth(self, cp_id: str) -> list[str]:
        if self.cp_id is not None and self.cp_id != cp_id:
            return ["AUTH_DENIED", "this connection is already authenticated as another CP"]
        answer = await self.service.monitor_auth(cp_id, self.token)
        if not answer.ok:
            log.warning(
                "monitor %s: AUTH for cp=%s refused: %s", self.conn.peer, cp_id, answer.reason
            )
            return ["AUTH_DENIED", answer.reason]
        self.cp_id = cp_id
        return ["AUTH_OK", cp_id]


def _reply(answer: Answer) -> list[str]:
    return ["OK"] if answer.ok else ["ERR", answer.reason]
