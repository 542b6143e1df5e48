"""The shared HTTP client: its stack pool reuses and retires connections, and it never carries a
cookie from one client's response into another client's request."""

from __future__ import annotations

import anyio
import httpx
from starlette.types import Receive, Scope, Send

from ampbridge.http_client import SharedClient
from ampbridge.settings import Settings

from .servers import Recorded, respond


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
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url, browser_routes="proxy"))
    alice = httpx.get(f"{ampbridge.url}/auth/sign-in")
    assert alice.headers["set-cookie"] == "session=alice-secret; Path=/"  # passed on to its client
    httpx.get(f"{ampbridge.url}/api/user")  # another client, no cookies
    httpx.get(f"{ampbridge.url}/api/user", headers={"Cookie": "mine=1"})
    assert upstream.requests[-2].header("cookie") is None
    assert upstream.requests[-1].header("cookie") == "mine=1"
