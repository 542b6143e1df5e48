"""A model call is never sent twice: a request goes again on a new connection only when nothing
of it was delivered; a connection that dies after the request was written is a failure (502)."""

from __future__ import annotations

import socket
import threading

import anyio
import httpx
import pytest

from ampbridge.http_client import SharedClient
from ampbridge.pool import StackPoolTransport
from ampbridge.settings import Settings

from .servers import RawServer, read_request_head

MODEL_CALL = b'{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}'


def read_request(connection: socket.socket) -> bytes | None:
    """One whole request (head and Content-Length body), or None when the client closed."""
    data = read_request_head(connection)
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return body


class Backend:
    """A raw backend that counts whole requests per connection; ``drop`` says which request
    (connection index, request number) it reads in full and then answers by closing."""

    def __init__(self, drop: tuple[int, int] | None = None, idle_close_after: int | None = None) -> None:
        self.drop = drop
        self.idle_close_after = idle_close_after  # close each connection while idle after N replies
        self.per_connection: list[int] = []
        self.closed_idle = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, connection: socket.socket) -> None:
        with self.lock:
            index = len(self.per_connection)
            self.per_connection.append(0)
        while read_request(connection) is not None:
            self.per_connection[index] += 1
            if self.drop == (index, self.per_connection[index]):
                return  # read it all, then close without a reply
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
            )
            if self.idle_close_after == self.per_connection[index]:
                connection.shutdown(socket.SHUT_RDWR)
                connection.close()
                self.closed_idle.set()
                return


def test_a_post_read_in_full_then_dropped_is_not_sent_again():
    backend = Backend(drop=(0, 1))
    with RawServer(backend) as raw:

        async def run() -> None:
            async with SharedClient() as shared:
                with pytest.raises(httpx.RemoteProtocolError):
                    await shared.client.post(raw.url, content=MODEL_CALL)

        anyio.run(run)
    assert backend.per_connection == [1]


def test_a_post_on_a_kept_connection_dropped_after_reading_is_not_sent_again():
    backend = Backend(drop=(0, 2))
    with RawServer(backend) as raw:

        async def run() -> None:
            async with SharedClient() as shared:
                assert (await shared.client.post(raw.url, content=MODEL_CALL)).status_code == 200
                with pytest.raises(httpx.RemoteProtocolError):
                    await shared.client.post(raw.url, content=MODEL_CALL)

        anyio.run(run)
    assert backend.per_connection == [2]  # the second call arrived once, and was not replayed


def test_a_model_call_whose_backend_drops_it_after_reading_is_a_502_sent_once(bridge):
    backend = Backend(drop=(0, 1))
    with RawServer(backend) as raw:
        provider = {"name": "dropper", "type": "anthropic", "base-url": raw.url, "models": ["m"]}
        ampbridge = bridge(Settings(amp_upstream_url="", providers=[provider]))
        response = httpx.post(f"{ampbridge.url}/api/provider/anthropic/v1/messages", content=MODEL_CALL)
    assert response.status_code == 502
    assert backend.per_connection == [1]


def test_a_kept_connection_the_server_closed_while_idle_is_replaced_before_sending():
    backend = Backend(idle_close_after=1)
    with RawServer(backend) as raw:

        async def run() -> list[int]:
            async with SharedClient() as shared:
                first = await shared.client.post(raw.url, content=MODEL_CALL)
                await anyio.to_thread.run_sync(backend.closed_idle.wait, 5)
                second = await shared.client.post(raw.url, content=MODEL_CALL)
                return [first.status_code, second.status_code]

        assert anyio.run(run) == [200, 200]
    assert backend.per_connection == [1, 1]  # each call arrived once; the second on a new connection


# --- a kept connection found closed when the request is about to go ------------------------------


def kept_connection(transport: StackPoolTransport):  # type: ignore[no-untyped-def]
    (stack,) = transport.idle.values()
    assert len(stack) == 1
    return stack[0]


def test_a_request_on_a_connection_found_closed_goes_once_on_a_new_connection():
    backend = Backend()
    transport = StackPoolTransport(keepalive_expiry=5.0, max_idle_per_origin=8)
    with RawServer(backend) as raw:

        async def run() -> list[int]:
            async with httpx.AsyncClient(transport=transport) as client:
                first = await client.post(raw.url, content=MODEL_CALL)
                kept_connection(transport).transport.abort()  # dead, and nobody told yet
                second = await client.post(raw.url, content=MODEL_CALL)
                return [first.status_code, second.status_code]

        assert anyio.run(run) == [200, 200]
    assert backend.per_connection == [1, 1]


def test_a_streamed_body_goes_once_even_when_its_connection_was_found_closed():
    backend = Backend()
    transport = StackPoolTransport(keepalive_expiry=5.0, max_idle_per_origin=8)
    with RawServer(backend) as raw:

        async def run() -> int:
            async def body():
                yield MODEL_CALL

            async with httpx.AsyncClient(transport=transport) as client:
                await client.post(raw.url, content=MODEL_CALL)
                kept_connection(transport).transport.abort()
                reply = await client.post(
                    raw.url, content=body(), headers={"Content-Length": str(len(MODEL_CALL))}
                )
                return reply.status_code

        assert anyio.run(run) == 200
    assert backend.per_connection == [1, 1]
