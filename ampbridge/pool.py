"""A connection pool whose cost per request does not grow with the number of connections.

httpx's default pool (httpcore) scans every connection on every request; with a few dozen
concurrent streams that scan dominates ampbridge's CPU time. This pool keeps the idle
connections of each origin on a stack: a request takes the most recently used one (checking
only that one), and returns it when its response is closed. When a kept connection fails before
any reply (the server closed it as idle just as the request went out), a request whose body is
held in memory is sent once more on a new connection. It plugs into httpx as the pool of
an ``httpx.AsyncHTTPTransport``, so httpx's request model, timeouts, TLS set-up and error
mapping stay as they are.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import httpcore
import httpx

OriginKey = tuple[bytes, bytes, int]


class StackPool:
    """Idle HTTP/1.1 connections per origin, most recently used first."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext, keepalive_expiry: float, max_idle_per_origin: int
    ) -> None:
        self.ssl_context = ssl_context
        self.keepalive_expiry = keepalive_expiry
        self.max_idle_per_origin = max_idle_per_origin
        self.idle: dict[OriginKey, list[httpcore.AsyncHTTPConnection]] = {}
        self.busy: set[httpcore.AsyncHTTPConnection] = set()

    async def _checkout(self, origin: OriginKey) -> httpcore.AsyncHTTPConnection | None:
        """The most recently used idle connection that still works; expired ones are closed on
        the way, and the oldest idle one is retired once it expires."""
        stack = self.idle.get(origin)
        while stack:
            if len(stack) > 1 and stack[0].has_expired():
                await stack.pop(0).aclose()
                continue
            connection = stack.pop()
            if connection.is_available() and not connection.has_expired():
                return connection
            await connection.aclose()
        return None

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        origin = request.url.origin
        key = (origin.scheme, origin.host, origin.port)
        may_retry = _replayable(request)
        while True:
            reused = await self._checkout(key)
            connection = reused or httpcore.AsyncHTTPConnection(
                origin, ssl_context=self.ssl_context, keepalive_expiry=self.keepalive_expiry
            )
            self.busy.add(connection)
            try:
                response = await connection.handle_async_request(request)
            except httpcore.ConnectionNotAvailable:
                self.busy.discard(connection)
                continue  # it closed under us: take another
            except (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError):
                self.busy.discard(connection)
                await connection.aclose()
                if reused is not None and may_retry:
                    # A kept connection failed before any reply: the server most likely closed
                    # it as idle while the request was on its way. Once, on a new connection.
                    may_retry = False
                    continue
                raise
            except BaseException:
                self.busy.discard(connection)
                await connection.aclose()
                raise
            return httpcore.Response(
                status=response.status,
                headers=response.headers,
                content=_ReleasingStream(response.stream, self, connection, key),
                extensions=response.extensions,
            )

    async def release(self, connection: httpcore.AsyncHTTPConnection, origin: OriginKey) -> None:
        self.busy.discard(connection)
        stack = self.idle.setdefault(origin, [])
        if connection.is_idle() and len(stack) < self.max_idle_per_origin:
            stack.append(connection)
        else:
            await connection.aclose()

    async def aclose(self) -> None:
        connections = [c for stack in self.idle.values() for c in stack] + list(self.busy)
        self.idle.clear()
        self.busy.clear()
        for connection in connections:
            await connection.aclose()


def _replayable(request: httpcore.Request) -> bool:
    """Only a body held in memory can be sent a second time (a streamed one is gone)."""
    return isinstance(request.stream, httpx.ByteStream)


class _ReleasingStream:
    """The response body; closing it hands the connection back to the pool."""

    def __init__(
        self, stream: object, pool: StackPool, connection: httpcore.AsyncHTTPConnection, origin: OriginKey
    ) -> None:
        self.stream = stream
        self.pool = pool
        self.connection = connection
        self.origin = origin
        self.released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:  # type: ignore[attr-defined]
            yield chunk

    async def aclose(self) -> None:
        if self.released:
            return
        self.released = True
        try:
            if hasattr(self.stream, "aclose"):
                await self.stream.aclose()
        finally:
            await self.pool.release(self.connection, self.origin)


class StackPoolTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` with a ``StackPool`` in place of httpcore's pool."""

    def __init__(self, *, keepalive_expiry: float, max_idle_per_origin: int) -> None:
        super().__init__()
        self._pool = StackPool(  # type: ignore[assignment]
            ssl_context=httpx.create_ssl_context(),
            keepalive_expiry=keepalive_expiry,
            max_idle_per_origin=max_idle_per_origin,
        )
