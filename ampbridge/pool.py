"""An httpx transport whose cost per request does not grow with the number of connections, and
which never sends a model call twice.

httpx's default pool (httpcore's) scans every connection on every request; with a few dozen
concurrent streams that scan dominates ampbridge's CPU time. This transport keeps the idle
connections of each origin on a stack: a request takes the most recently used one (checking only
that one), and returns it when its response is closed.

A request goes out a second time, on a new connection, only when it is certain the first attempt
delivered nothing: the kept connection was found closed before anything was written, or the very
first write of the request failed. A request whose connection dies after it was written is a
failure for the caller (the backend may have started a paid model call), never a replay.

It is built on public APIs only: ``httpx.AsyncBaseTransport`` outside, httpcore's
``AsyncHTTPConnection`` and its ``trace`` extension inside, so an httpx upgrade cannot silently
swap it out. It makes direct connections; proxied routes use httpx's own transport.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

OriginKey = tuple[bytes, bytes, int]
Trace = Callable[[str, dict[str, Any]], Awaitable[None]]

# httpcore's errors and the httpx errors callers catch, most specific first.
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextmanager
def httpx_errors() -> Iterator[None]:
    """Raise httpcore's errors as the httpx errors the rest of ampbridge catches."""
    try:
        yield
    except Exception as error:
        for theirs, ours in _ERRORS:
            if isinstance(error, theirs):
                raise ours(str(error)) from error
        raise


class StackPoolTransport(httpx.AsyncBaseTransport):
    """Direct HTTP/1.1 connections, the idle ones of each origin kept most recently used first."""

    def __init__(
        self,
        *,
        keepalive_expiry: float,
        max_idle_per_origin: int,
        ssl_context: ssl.SSLContext | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.ssl_context = ssl_context or httpx.create_ssl_context(trust_env=False)
        self.keepalive_expiry = keepalive_expiry
        self.max_idle_per_origin = max_idle_per_origin
        self.network_backend = network_backend
        self.idle: dict[OriginKey, list[httpcore.AsyncHTTPConnection]] = {}
        self.busy: set[httpcore.AsyncHTTPConnection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with httpx_errors():
            response, connection, origin = await self._send(core_request, _replayable(request))
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ReleasingStream(response.stream, self, connection, origin),
            extensions=response.extensions,
        )

    async def _send(
        self, request: httpcore.Request, may_retry: bool
    ) -> tuple[httpcore.Response, httpcore.AsyncHTTPConnection, OriginKey]:
        origin = request.url.origin
        key = (origin.scheme, origin.host, origin.port)
        caller_trace: Trace | None = request.extensions.get("trace")
        while True:
            connection = await self._checkout(key) or self._new_connection(origin)
            attempt = _FirstWrite(caller_trace)
            if may_retry:  # only a request that may go again needs watching
                request.extensions = {**request.extensions, "trace": attempt}
            self.busy.add(connection)
            try:
                return await connection.handle_async_request(request), connection, key
            except httpcore.ConnectionNotAvailable:
                self.busy.discard(connection)
                continue  # it closed before anything was written: take another
            except (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError):
                self.busy.discard(connection)
                await connection.aclose()
                if attempt.failed and may_retry:
                    may_retry = False  # nothing of it left this machine: once, on a new connection
                    continue
                raise
            except BaseException:
                self.busy.discard(connection)
                await connection.aclose()
                raise

    def _new_connection(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        return httpcore.AsyncHTTPConnection(
            origin,
            ssl_context=self.ssl_context,
            keepalive_expiry=self.keepalive_expiry,
            network_backend=self.network_backend,
        )

    async def _checkout(self, origin: OriginKey) -> httpcore.AsyncHTTPConnection | None:
        """The most recently used idle connection that still works. A connection the server has
        closed reads as ready while idle, so ``has_expired`` retires it before it is written to;
        the oldest idle one is retired on the way once it expires."""
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


def _replayable(request: httpx.Request) -> bool:
    """Only a body held in memory can be sent a second time (a streamed one is gone)."""
    return isinstance(request.stream, httpx.ByteStream)


class _FirstWrite:
    """httpcore's ``trace`` hook for one attempt: notes whether the first write of the request
    (its header block) raised, which means no byte of the request went out. httpcore goes on to
    read after a failed write, so the error the caller sees comes later and cannot tell this."""

    def __init__(self, caller_trace: Trace | None) -> None:
        self.caller_trace = caller_trace
        self.failed = False

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith(".send_request_headers.failed"):
            self.failed = True
        if self.caller_trace is not None:
            await self.caller_trace(event, info)


class _ReleasingStream(httpx.AsyncByteStream):
    """The response body; closing it hands the connection back to the pool."""

    def __init__(
        self,
        stream: Any,
        pool: StackPoolTransport,
        connection: httpcore.AsyncHTTPConnection,
        origin: OriginKey,
    ) -> None:
        self.stream = stream
        self.pool = pool
        self.connection = connection
        self.origin = origin
        self.released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with httpx_errors():
            async for chunk in self.stream:
                yield chunk

    async def aclose(self) -> None:
        if self.released:
            return
        self.released = True
        try:
            if hasattr(self.stream, "aclose"):
                with httpx_errors():
                    await self.stream.aclose()
        finally:
            await self.pool.release(self.connection, self.origin)
