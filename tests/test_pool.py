"""The shared HTTP client: its stack pool reuses and retires connections, and it never carries a
cookie from one client's response into another client's request."""

from __future__ import annotations

import anyio
import httpx
import pytest
from starlette.types import Receive, Scope, Send

from ampbridge.http_client import SharedClient
from ampbridge.settings import Settings

from .servers import RawServer, Recorded, read_request_head, respond


async def fetch_sequentially(url: str, count: int) -> list[int]:
    async with SharedClient() as shared:
        return [(await shared.client.get(url)).status_code for _ in range(count)]


def ports(upstream) -> set[int]:
    return {r.client[1] for r in upstream.requests}


def test_sequential_requests_reuse_one_connection(upstream):
    statuses = anyio.run(fetch_sequentially, f"{upstream.url}/api/x", 20)
    assert statuses == [200] * 20
    assert len(ports(upstream)) == 1


def test_concurrent_requests_open_connections_and_keep_them(upstream):
    async def run() -> tuple[set[int], set[int]]:
        async with SharedClient() as shared:

            async def burst() -> None:
                async with anyio.create_task_group() as tasks:
                    for _ in range(30):
                        tasks.start_soon(shared.client.get, f"{upstream.url}/api/x")

            await burst()
            first = ports(upstream)
            upstream.requests.clear()
            await burst()
            return first, ports(upstream)

    first, second = anyio.run(run)
    assert len(first) > 1
    assert second <= first  # the second burst reused connections from the first


def test_idle_connections_expire(upstream):
    async def run() -> int:
        async with SharedClient(
            limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=0.05)
        ) as shared:
            await shared.client.get(f"{upstream.url}/api/x")
            await anyio.sleep(0.2)
            await shared.client.get(f"{upstream.url}/api/x")
            return len(ports(upstream))

    assert anyio.run(run) == 2


def test_a_connection_the_server_closed_is_not_reused(upstream):
    async def closing(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        await respond(send, 200, b"{}", headers=[(b"connection", b"close")])

    upstream.route(lambda m, p: p == "/api/close", closing)

    async def run() -> list[int]:
        async with SharedClient() as shared:
            return [(await shared.client.get(f"{upstream.url}/api/close")).status_code for _ in range(5)]

    assert anyio.run(run) == [200] * 5
    assert len(ports(upstream)) == 5


def test_upstream_cookies_never_reach_another_clients_request(upstream, bridge):
    async def set_cookie(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        await respond(send, 200, b"{}", headers=[(b"set-cookie", b"session=alice-secret; Path=/")])

    upstream.route(lambda m, p: p == "/auth/sign-in", set_cookie)
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url))
    alice = httpx.get(f"{ampbridge.url}/auth/sign-in")
    assert alice.headers["set-cookie"] == "session=alice-secret; Path=/"  # passed on to its client
    httpx.get(f"{ampbridge.url}/api/user")  # another client, no cookies
    httpx.get(f"{ampbridge.url}/api/user", headers={"Cookie": "mine=1"})
    assert upstream.requests[-2].header("cookie") is None
    assert upstream.requests[-1].header("cookie") == "mine=1"


def serve_then_drop_the_second_request(raw_connections: list[int]):
    """A server whose first connection answers one request and then closes as the next one
    arrives: the race between a server's idle timeout and a client reusing the connection."""

    def handle(connection) -> None:
        index = len(raw_connections)
        raw_connections.append(0)
        while True:
            head = read_request_head(connection)
            if not head:
                return
            length = int(
                next(
                    (
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    b"0",
                )
            )
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += connection.recv(65536)
            raw_connections[index] += 1
            if index == 0 and raw_connections[index] == 2:
                return  # closes without a reply
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    return handle


def test_a_request_on_a_connection_the_server_dropped_is_sent_again():
    seen: list[int] = []
    with RawServer(serve_then_drop_the_second_request(seen)) as raw:

        async def run() -> list[bytes]:
            async with SharedClient() as shared:
                return [
                    (await shared.client.post(raw.url, content=b'{"n": %d}' % n)).content for n in range(2)
                ]

        assert anyio.run(run) == [b"ok", b"ok"]
    assert seen == [2, 1]  # the dropped request went again, on a new connection


def test_a_streamed_body_is_not_sent_twice():
    seen: list[int] = []
    with RawServer(serve_then_drop_the_second_request(seen)) as raw:

        async def run() -> None:
            async def body():
                yield b"streamed"

            async with SharedClient() as shared:
                await shared.client.post(raw.url, content=b"first")
                with pytest.raises(httpx.RemoteProtocolError):
                    await shared.client.post(raw.url, content=body(), headers={"content-length": "8"})

        anyio.run(run)
    assert seen == [2]
