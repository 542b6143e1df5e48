"""``TurnWrites``: the small writes of one loop turn leave in one transport write, in order, and
closing never loses what was written."""

from __future__ import annotations

import asyncio
import functools

import pytest
import uvicorn
from uvicorn.server import ServerState

from ampbridge.serve_limits import limited_protocol
from ampbridge.turn_writes import DIRECT_WRITE, TurnWrites


class RecordingTransport(asyncio.Transport):
    """What a socket transport would have been asked to send, call by call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.closing_but_sending = False  # closing, the buffer not yet sent (asyncio's half-close)
        self.aborted = False
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data) -> None:  # type: ignore[no-untyped-def]
        assert not self.closed or self.closing_but_sending, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed or self.closing_but_sending

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name, default=None):  # type: ignore[no-untyped-def]
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8317)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol


def in_loop(test):
    """Runs an async test on a fresh event loop."""

    @functools.wraps(test)
    def run(*args, **kwargs):  # type: ignore[no-untyped-def]
        asyncio.run(test(*args, **kwargs))

    return run


def wrapped() -> tuple[RecordingTransport, TurnWrites]:
    """A recording transport, and the ``TurnWrites`` around it on the running loop."""
    sent = RecordingTransport()
    return sent, TurnWrites(sent, asyncio.get_running_loop())


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


@in_loop
async def test_writes_of_one_turn_leave_together_after_it():
    sent, writes = wrapped()
    writes.write(b"HTTP/1.1 200 OK\r\n\r\n")
    writes.write(bytearray(b"ok"))
    writes.write(b"")
    assert sent.writes == []
    assert writes.get_write_buffer_size() == 21
    await next_turn()
    assert sent.writes == [b"HTTP/1.1 200 OK\r\n\r\nok"]
    writes.write(b"next")
    await next_turn()
    assert sent.writes[1:] == [b"next"]


@in_loop
async def test_a_large_write_goes_at_once_after_what_is_pending():
    sent, writes = wrapped()
    large = b"x" * DIRECT_WRITE
    writes.write(b"head")
    writes.write(large)
    assert sent.writes == [b"head", large]
    writes.write(b"tail")
    await next_turn()
    assert sent.writes == [b"head", large, b"tail"]


@in_loop
async def test_close_sends_what_is_pending_first_and_abort_drops_it():
    sent, writes = wrapped()
    writes.write(b"last words")
    writes.close()
    assert sent.writes == [b"last words"] and sent.closed
    await next_turn()
    assert sent.writes == [b"last words"]

    aborted, writes = wrapped()
    writes.write(b"never sent")
    writes.abort()
    await next_turn()
    assert aborted.writes == [] and aborted.aborted


@in_loop
async def test_a_closing_transport_still_gets_everything_in_order():
    """A transport closes once the peer half-closes but sends what it holds until the connection
    is lost: small writes must reach it like large ones, or a reply would have gaps."""
    sent, writes = wrapped()
    writes.write(b"small,")
    sent.closing_but_sending = True
    large = b"L" * DIRECT_WRITE
    writes.write(large)
    writes.write(b"small again")
    await next_turn()
    assert sent.writes == [b"small,", large, b"small again"]


@in_loop
async def test_many_small_writes_in_one_turn_reach_flow_control_at_once():
    sent, writes = wrapped()
    piece = b"e" * 1000
    for _ in range(DIRECT_WRITE // len(piece) + 1):
        writes.write(piece)
    assert sent.writes and sum(map(len, sent.writes)) >= DIRECT_WRITE  # before the turn ends
    await next_turn()
    assert b"".join(sent.writes) == piece * (DIRECT_WRITE // len(piece) + 1)


@in_loop
async def test_everything_else_is_the_transports_own():
    sent, writes = wrapped()
    assert writes.get_extra_info("peername") == ("127.0.0.1", 50000)
    protocol = asyncio.Protocol()
    writes.set_protocol(protocol)
    assert sent.protocol is protocol


WRITES_SEEN_AFTER_THE_LAST_SEND: list[int] = []


async def app(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
    # what an app does after its reply (log lines, accounting) must not hold the reply back
    WRITES_SEEN_AFTER_THE_LAST_SEND.append(len(scope["state"]["sent"].writes))


@pytest.mark.parametrize("implementation", ["httptools", "h11"])
@in_loop
async def test_the_served_protocol_sends_a_small_reply_with_one_write(implementation):
    protocol_class = limited_protocol(30, 100, implementation=implementation)
    # No log config and no level: uvicorn would otherwise set up its loggers for the whole process.
    config = uvicorn.Config(app, http=protocol_class, log_config=None, lifespan="off")
    config.load()
    sent = RecordingTransport()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={"sent": sent})  # type: ignore[call-arg]
    protocol.connection_made(sent)
    WRITES_SEEN_AFTER_THE_LAST_SEND.clear()
    for _ in range(2):  # and again on the kept-alive connection
        before = len(sent.writes)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for _ in range(50):
            await asyncio.sleep(0)
            if len(sent.writes) > before:
                break
        await next_turn()
        assert len(sent.writes) == before + 1
        reply = sent.writes[-1]
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nok")
    assert WRITES_SEEN_AFTER_THE_LAST_SEND == [1, 2]
    protocol.connection_lost(None)
