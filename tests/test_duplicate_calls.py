"""A model call is never sent twice: a request goes again on a new connection only when nothing
of it was delivered; a connection that dies after the request was written is a failure (502)."""

from __future__ import annotations

import socket
import threading

import anyio
import httpcore
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


# --- a write that fails before any byte leaves ----------------------------------------------------


class BreakableStream(httpcore.AsyncNetworkStream):
    """A real connection whose next write can be made to fail as a dead socket's does."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self.inner = inner
        self.broken = False
        self.break_next_write = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109  (httpcore's interface)
        if self.broken:
            raise httpcore.ReadError("connection reset by peer")
        return await self.inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if self.break_next_write:
            self.broken = True
            raise httpcore.WriteError("broken pipe")
        await self.inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def get_extra_info(self, info: str) -> object:
        return self.inner.get_extra_info(info)


class BreakableBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.streams: list[BreakableStream] = []

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):  # type: ignore[no-untyped-def]  # noqa: ASYNC109
        stream = BreakableStream(
            await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )
        self.streams.append(stream)
        return stream

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def client_over(network: BreakableBackend) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=StackPoolTransport(keepalive_expiry=5.0, max_idle_per_origin=8, network_backend=network)
    )


def test_a_request_whose_first_write_failed_goes_once_on_a_new_connection():
    backend = Backend()
    network = BreakableBackend()
    with RawServer(backend) as raw:

        async def run() -> list[int]:
            async with client_over(network) as client:
                first = await client.post(raw.url, content=MODEL_CALL)
                network.streams[0].break_next_write = True
                second = await client.post(raw.url, content=MODEL_CALL)
                return [first.status_code, second.status_code]

        assert anyio.run(run) == [200, 200]
    assert len(network.streams) == 2
    assert backend.per_connection == [1, 1]


def test_a_streamed_body_is_not_sent_again_even_when_nothing_was_written():
    backend = Backend()
    network = BreakableBackend()
    with RawServer(backend) as raw:

        async def run() -> None:
            async def body():
                yield MODEL_CALL

            async with client_over(network) as client:
                await client.post(raw.url, content=MODEL_CALL)
                network.streams[0].break_next_write = True
                with pytest.raises(httpx.ReadError):
                    await client.post(
                        raw.url, content=body(), headers={"Content-Length": str(len(MODEL_CALL))}
                    )

        anyio.run(run)
    assert backend.per_connection == [1]
