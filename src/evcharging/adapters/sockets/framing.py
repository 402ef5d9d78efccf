"""Framed request/answer links over asyncio streams: the Monitor's side of both its links, and
the Engine's side (Central answers Monitors with `adapters.sockets.central_server`).

The codec lives in ``evcharging.contracts.frames``; this module only moves bytes and applies the
exchange rule: every frame is answered by one ACK (0x06) or NACK (0x15) byte, and a request frame
is then followed by an answer frame that the requester ACKs/NACKs in turn.

Concurrency: a ``FramedConnection`` is used by one task at a time (the exchange is strictly
alternating, so two tasks would steal each other's ACK bytes and answers).  Starting a second
operation while one is running is a bug and raises ``RuntimeError``.

Frames are read in chunks and decoded incrementally; ACK/NACK bytes are read one by one where the
exchange expects them. The exchange alternates, so a chunk never holds bytes past the frame being
waited for; anything a misbehaving peer pipelines is decoded and kept for the next read.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from evcharging.contracts.frames import (
    ACK,
    MAX_FRAME_SIZE,
    NACK,
    Frame,
    FrameDecoder,
    FrameError,
    encode,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_BAD_FRAMES = 5


class LinkError(Exception):
    """The link is unusable (timeout, EOF, reset, protocol breach): close it and reconnect."""


class FrameRejected(LinkError):
    """The peer NACKed a request, so no answer will come."""


class FramedConnection:
    """One framed link over a reader/writer pair; see the module docstring for the rules."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_frame_size: int = MAX_FRAME_SIZE,
        max_bad_frames: int = DEFAULT_MAX_BAD_FRAMES,
    ) -> None:
        if max_bad_frames < 1:
            raise ValueError(f"max_bad_frames must be >= 1, got {max_bad_frames}")
        self._reader = reader
        self._writer = writer
        self._max_frame_size = max_frame_size
        self._max_bad_frames = max_bad_frames
        self._decoder = FrameDecoder(max_frame_size)
        self._pending: deque[Frame | FrameError] = deque()
        self._peer = _format_peer(writer.get_extra_info("peername"))
        self._busy = False
        self._closed = False

    @property
    def peer(self) -> str:
        """``host:port`` of the other end, for log lines (fixed at construction)."""
        return self._peer

    async def send_frame(
        self,
        opcode: str,
        *fields: str,
        timeout: float | None,  # noqa: ASYNC109 (see _operation)
    ) -> bool:
        """Send one frame; True if the peer ACKs it, False if it NACKs it."""
        async with self._operation("send", timeout):
            return await self._send(opcode, fields)

    async def recv_frame(self, timeout: float | None) -> Frame:  # noqa: ASYNC109 (see _operation)
        """Wait for the next well-formed frame (ACKed); bad ones are NACKed, logged and skipped."""
        async with self._operation("recv", timeout):
            return await self._recv()

    async def request(
        self,
        opcode: str,
        *fields: str,
        timeout: float | None,  # noqa: ASYNC109 (see _operation)
    ) -> Frame:
        """Send a request and return the peer's answer; ``timeout`` covers the whole exchange."""
        async with self._operation(f"request {opcode}", timeout):
            if not await self._send(opcode, fields):
                raise FrameRejected(f"{self.peer} NACKed {opcode}")
            return await self._recv()

    async def close(self) -> None:
        """Close the link; safe to call twice and after the peer has gone."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError as exc:  # the peer may already have reset the link; closing is best-effort
            log.debug("closing link to %s: %s", self.peer, exc)

    async def _send(self, opcode: str, fields: tuple[str, ...]) -> bool:
        raw = encode(opcode, *fields)
        if len(raw) > self._max_frame_size:
            raise ValueError(f"{opcode} frame is {len(raw)} bytes, max {self._max_frame_size}")
        self._writer.write(raw)
        await self._writer.drain()
        reply = (await self._reader.readexactly(1))[0]
        if reply == ACK:
            log.debug("sent %s to %s: ACK", opcode, self.peer)
            return True
        if reply == NACK:
            log.warning("peer %s NACKed our %s frame", self.peer, opcode)
            return False
        raise LinkError(f"{self.peer} answered 0x{reply:02x} instead of ACK/NACK")

    async def _recv(self) -> Frame:
        bad_in_a_row = 0
        while True:
            result = await self._next_result()
            if isinstance(result, Frame):
                await self._reply(ACK)
                log.debug("received %s from %s", result, self.peer)
                return result
            bad_in_a_row += 1
            await self._reply(NACK)
            log.warning("bad frame from %s: %s (NACK sent)", self.peer, result)
            if bad_in_a_row >= self._max_bad_frames:
                raise LinkError(f"{bad_in_a_row} bad frames in a row from {self.peer}")

    async def _next_result(self) -> Frame | FrameError:
        """Reads whatever has arrived: the protocol alternates, so a peer never sends bytes past the
        frame we wait for before we answer it (anything a misbehaving peer pipelines is kept)."""
        while not self._pending:
            chunk = await self._reader.read(4096)
            if not chunk:
                where = "in the middle of a frame" if self._decoder.in_frame else ""
                raise LinkError(f"{self.peer} closed the connection {where}".strip())
            self._pending.extend(self._decoder.feed(chunk))
        return self._pending.popleft()

    async def _reply(self, byte: int) -> None:
        self._writer.write(bytes((byte,)))
        await self._writer.drain()

    @asynccontextmanager
    async def _operation(
        self,
        what: str,
        timeout: float | None,  # noqa: ASYNC109
    ) -> AsyncIterator[None]:
        """Run one operation exclusively, turning timeouts and I/O failures into ``LinkError``.

        Each public call takes its ``timeout`` (rather than leaving ``asyncio.timeout`` to the
        caller, as ASYNC109 suggests) so that no link operation can be written without a
        deadline and every expiry surfaces as a ``LinkError`` naming the peer.
        """
        if self._busy:
            raise RuntimeError(f"link to {self.peer} is used by two tasks at once ({what})")
        self._busy = True
        try:
            async with asyncio.timeout(timeout):
                yield
        except TimeoutError as exc:
            raise LinkError(f"{what}: nothing from {self.peer} within {timeout}s") from exc
        except asyncio.IncompleteReadError as exc:
            raise LinkError(f"{what}: {self.peer} closed the connection") from exc
        except OSError as exc:
            raise LinkError(f"{what}: link to {self.peer} failed: {exc}") from exc
        finally:
            self._busy = False


def _format_peer(peername: object) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peername) if peername else "?"


async def open_framed(
    host: str,
    port: int,
    timeout: float | None,  # noqa: ASYNC109 (a deadline is part of every link call)
    *,
    max_frame_size: int = MAX_FRAME_SIZE,
    max_bad_frames: int = DEFAULT_MAX_BAD_FRAMES,
) -> FramedConnection:
    """Connect to ``host:port``; ``LinkError`` (e.g. "cannot connect") if it fails in time."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError as exc:
        raise LinkError(f"cannot connect to {host}:{port} within {timeout}s") from exc
    except OSError as exc:
        raise LinkError(f"cannot connect to {host}:{port}: {exc}") from exc
    return FramedConnection(
        reader, writer, max_frame_size=max_frame_size, max_bad_frames=max_bad_frames
    )
