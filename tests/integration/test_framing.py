"""Framed links over real loopback TCP: ACK/NACK exchange, resync, timeouts, EOF."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from evcharging.adapters.sockets.framing import (
    FramedConnection,
    FrameRejected,
    LinkError,
    open_framed,
)
from evcharging.contracts.frames import ACK, NACK, Frame, FrameDecoder, encode

WAIT = 5.0  # upper bound for conditions that should hold almost at once
HB = encode("HB", "CP01", "OK")
BAD_LRC = HB[:-1] + bytes([HB[-1] ^ 0xFF])


class AnswerServer:
    """Answers HB with OK and anything else with ERR#unknown_opcode; reports what it handled."""

    def __init__(self, recv_timeout: float = WAIT, max_bad_frames: int = 5) -> None:
        self.recv_timeout = recv_timeout
        self.max_bad_frames = max_bad_frames
        self.events: asyncio.Queue[Frame | LinkError] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        conn = FramedConnection(reader, writer, max_bad_frames=self.max_bad_frames)

        try:
            while True:  # the answering side, as the Engine runs it
                frame = await conn.recv_frame(timeout=self.recv_timeout)
                self.events.put_nowait(frame)
                answer = ("OK",) if frame.opcode == "HB" else ("ERR", "unknown_opcode")
                await conn.send_frame(*answer, timeout=WAIT)
        except LinkError as exc:
            self.events.put_nowait(exc)
        finally:
            await conn.close()

    async def next_event(self) -> Frame | LinkError:
        return await asyncio.wait_for(self.events.get(), WAIT)


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[AnswerServer]:
    answer_server = AnswerServer(**getattr(request, "param", {}))
    tcp = await asyncio.start_server(answer_server.handle, "127.0.0.1", 0)
    answer_server.port = tcp.sockets[0].getsockname()[1]
    yield answer_server
    tcp.close()
    # every test closes its client, so handlers end by themselves; cancelling them instead
    # would make asyncio log an ERROR for the cancelled client_connected_cb task (3.11)
    if answer_server.tasks:
        _, pending = await asyncio.wait(answer_server.tasks, timeout=WAIT)
        assert not pending, "a server handler outlived its test"
    await tcp.wait_closed()


async def raw_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_bytes(reader: asyncio.StreamReader, n: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), WAIT)


async def read_answer(reader: asyncio.StreamReader) -> Frame:
    decoder = FrameDecoder()
    while True:
        results = decoder.feed(await read_bytes(reader, 1))
        if results:
            assert isinstance(results[0], Frame), results
            return results[0]


async def assert_eof(reader: asyncio.StreamReader) -> None:
    assert await asyncio.wait_for(reader.read(), WAIT) == b""


# --- the happy path ----------------------------------------------------------------------------


async def test_request_gets_its_answer(server: AnswerServer) -> None:
    conn = await open_framed("127.0.0.1", server.port, timeout=WAIT)
    try:
        assert conn.peer == f"127.0.0.1:{server.port}"
        assert await conn.request("HB", "CP01", "OK", timeout=WAIT) == Frame("OK")
        assert await conn.request("FOO", timeout=WAIT) == Frame("ERR", ("unknown_opcode",))
    finally:
        await conn.close()
    assert await server.next_event() == Frame("HB", ("CP01", "OK"))
    assert await server.next_event() == Frame("FOO")


async def test_the_answer_frame_is_acked_by_the_requester(server: AnswerServer) -> None:
    reader, writer = await raw_client(server.port)
    writer.write(HB)
    assert await read_bytes(reader, 1) == bytes([ACK])
    assert await read_answer(reader) == Frame("OK")
    writer.write(bytes([ACK]))  # lets the server's send_frame return, then it waits for more
    writer.write(encode("HB", "CP01", "KO"))
    assert await read_bytes(reader, 1) == bytes([ACK])
    writer.close()
    assert [await server.next_event(), await server.next_event()] == [
        Frame("HB", ("CP01", "OK")),
        Frame("HB", ("CP01", "KO")),
    ]


async def test_close_twice_is_harmless(server: AnswerServer) -> None:
    conn = await open_framed("127.0.0.1", server.port, timeout=WAIT)
    await conn.close()
    await conn.close()
    assert isinstance(await server.next_event(), LinkError)


# --- bad input is NACKed, logged and ignored ---------------------------------------------------


async def test_bad_lrc_is_nacked_and_not_acted_on(
    server: AnswerServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="evcharging.adapters.sockets.framing")
    reader, writer = await raw_client(server.port)
    writer.write(BAD_LRC)
    assert await read_bytes(reader, 1) == bytes([NACK])
    writer.write(HB)
    assert await read_bytes(reader, 1) == bytes([ACK])  # no answer was sent for the bad frame
    assert await read_answer(reader) == Frame("OK")
    writer.close()
    assert await server.next_event() == Frame("HB", ("CP01", "OK"))
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    client_address = "{}:{}".format(*writer.get_extra_info("sockname")[:2])
    assert "bad_lrc" in warning.getMessage()
    assert client_address in warning.getMessage()


async def test_garbage_then_a_good_frame(server: AnswerServer) -> None:
    reader, writer = await raw_client(server.port)
    writer.write(b"GET / HTTP/1.0\r\n\r\n" + HB)
    assert await read_bytes(reader, 2) == bytes([NACK, ACK])
    assert await read_answer(reader) == Frame("OK")
    writer.close()
    assert await server.next_event() == Frame("HB", ("CP01", "OK"))


async def test_oversize_frame_is_nacked_once(server: AnswerServer) -> None:
    reader, writer = await raw_client(server.port)
    writer.write(encode("X", "y" * 5000) + HB)
    assert await read_bytes(reader, 2) == bytes([NACK, ACK])
    assert await read_answer(reader) == Frame("OK")
    writer.close()
    assert await server.next_event() == Frame("HB", ("CP01", "OK"))


@pytest.mark.parametrize("server", [{"max_bad_frames": 3}], indirect=True)
async def test_too_many_bad_frames_in_a_row_drop_the_link(server: AnswerServer) -> None:
    reader, writer = await raw_client(server.port)
    writer.write(BAD_LRC * 3)
    assert await read_bytes(reader, 3) == bytes([NACK] * 3)
    await assert_eof(reader)
    writer.close()
    event = await server.next_event()
    assert isinstance(event, LinkError)
    assert "3 bad frames" in str(event)


# --- broken links end in LinkError, never a crash ----------------------------------------------


async def test_truncated_frame_then_eof(server: AnswerServer) -> None:
    reader, writer = await raw_client(server.port)
    writer.write(HB[:5])
    writer.write_eof()
    await assert_eof(reader)
    writer.close()
    event = await server.next_event()
    assert isinstance(event, LinkError)
    assert "middle of a frame" in str(event)
    # the server still serves others
    conn = await open_framed("127.0.0.1", server.port, timeout=WAIT)
    assert await conn.request("HB", "CP01", "OK", timeout=WAIT) == Frame("OK")
    await conn.close()


@pytest.mark.parametrize("server", [{"recv_timeout": 0.2}], indirect=True)
async def test_silent_client_times_out(server: AnswerServer) -> None:
    reader, writer = await raw_client(server.port)
    event = await server.next_event()
    assert isinstance(event, LinkError)
    assert "within 0.2s" in str(event)
    await assert_eof(reader)  # the server closed the link
    writer.close()


async def test_nack_makes_send_false_and_request_rejected(server: AnswerServer) -> None:
    conn = await open_framed("127.0.0.1", server.port, timeout=WAIT, max_frame_size=8192)
    try:
        assert await conn.send_frame("X", "y" * 2000, timeout=WAIT) is False
        with pytest.raises(FrameRejected):
            await conn.request("X", "y" * 2000, timeout=WAIT)
        assert await conn.request("HB", "CP01", "OK", timeout=WAIT) == Frame("OK")
    finally:
        await conn.close()


async def test_sending_more_than_max_frame_size_fails_locally(server: AnswerServer) -> None:
    conn = await open_framed("127.0.0.1", server.port, timeout=WAIT)
    try:
        with pytest.raises(ValueError, match="max 1024"):
            await conn.send_frame("X", "y" * 2000, timeout=WAIT)
    finally:
        await conn.close()


async def _mute_peer() -> tuple[asyncio.Server, int, asyncio.Queue[asyncio.StreamWriter]]:
    """A peer that accepts connections and never answers (hands us its writer to reply by hand)."""
    writers: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.put_nowait(writer)

    tcp = await asyncio.start_server(accept, "127.0.0.1", 0)
    return tcp, tcp.sockets[0].getsockname()[1], writers


async def test_request_times_out_without_ack() -> None:
    tcp, port, writers = await _mute_peer()
    async with tcp:
        conn = await open_framed("127.0.0.1", port, timeout=WAIT)
        with pytest.raises(LinkError, match=r"within 0\.2s"):
            await conn.request("HB", "CP01", "OK", timeout=0.2)
        await conn.close()
        (await writers.get()).close()


async def test_reply_that_is_not_ack_or_nack_is_a_link_error() -> None:
    tcp, port, writers = await _mute_peer()
    async with tcp:
        conn = await open_framed("127.0.0.1", port, timeout=WAIT)
        peer_writer = await writers.get()
        peer_writer.write(encode("OK"))  # a frame where the ACK byte should be
        with pytest.raises(LinkError, match="instead of ACK/NACK"):
            await conn.send_frame("HB", "CP01", "OK", timeout=WAIT)
        await conn.close()
        peer_writer.close()


async def test_peer_closing_before_the_ack_is_a_link_error() -> None:
    tcp, port, writers = await _mute_peer()
    async with tcp:
        conn = await open_framed("127.0.0.1", port, timeout=WAIT)
        (await writers.get()).close()
        with pytest.raises(LinkError, match=r"closed the connection|reset"):  # either, by timing
            await conn.send_frame("HB", "CP01", "OK", timeout=WAIT)
        await conn.close()


async def test_connection_refused_is_a_link_error() -> None:
    tcp = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    tcp.close()
    await tcp.wait_closed()
    with pytest.raises(LinkError, match="cannot connect"):
        await open_framed("127.0.0.1", port, timeout=WAIT)


async def test_two_tasks_on_one_link_is_a_bug_caught_at_once() -> None:
    tcp, port, writers = await _mute_peer()
    async with tcp:
        conn = await open_framed("127.0.0.1", port, timeout=WAIT)
        first = asyncio.create_task(conn.recv_frame(WAIT))
        peer_writer = await writers.get()
        await asyncio.sleep(0)  # a yield, not a wait: lets `first` start and block on the read
        assert not first.done()
        with pytest.raises(RuntimeError, match="two tasks"):
            await conn.recv_frame(WAIT)
        peer_writer.write(HB)
        assert await first == Frame("HB", ("CP01", "OK"))
        await conn.close()
        peer_writer.close()
