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

Its connections read and write through ``LoopNetworkBackend``, an httpcore network backend on
asyncio's protocol API. httpcore's default backend goes through anyio and arms a cancel scope
(``fail_after``) around every socket read and write; under a few dozen concurrent streams that was
a fifth of ampbridge's CPU time. Here a read of data already received returns at once, a read
that has to wait arms one timer on the event loop, and an idle connection that the server closed
is known from the protocol's callbacks, without a ``select`` call.

It is built on public APIs only: ``httpx.AsyncBaseTransport`` outside, httpcore's
``AsyncHTTPConnection``, its ``trace`` extension and ``AsyncNetworkBackend``/``AsyncNetworkStream``
inside, so an httpx upgrade cannot silently swap it out. It makes direct connections; proxied
routes use httpx's own transport.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

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
        self.network_backend = network_backend or LoopNetworkBackend()
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


# A connection stops reading from its socket while this much is received and not yet read.
READ_HIGH_WATER = 256 * 1024
READ_LOW_WATER = 64 * 1024


class LoopNetworkBackend(httpcore.AsyncNetworkBackend):
    """TCP connections (and TLS on them) as asyncio protocols, for httpcore's connections."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        protocol = _ReadBuffer(loop)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: protocol, host, port, local_addr=(local_address, 0) if local_address else None
                )
        except TimeoutError as error:
            raise httpcore.ConnectTimeout(str(error)) from error
        except OSError as error:
            raise httpcore.ConnectError(str(error)) from error
        stream = LoopStream(protocol)
        sock = stream.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return stream

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("unix sockets are not used by ampbridge")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _ReadBuffer(asyncio.Protocol):
    """What a connection has received and not yet read, and whether its socket can take more."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.ended = False  # EOF received or connection lost
        self.lost: Exception | None = None
        self.reading_paused = False
        self.data_waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size > READ_HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake_reader()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.lost = exc
        self._wake_reader()
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    def pause_writing(self) -> None:
        if self.drain_waiter is None or self.drain_waiter.done():
            self.drain_waiter = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    def _wake_reader(self) -> None:
        if self.data_waiter is not None and not self.data_waiter.done():
            self.data_waiter.set_result(None)

    def take(self, max_bytes: int) -> bytes:
        chunk = self.chunks.popleft()
        if len(chunk) > max_bytes:
            self.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self.size -= len(chunk)
        if self.reading_paused and self.size <= READ_LOW_WATER and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return chunk


def _expire(waiter: asyncio.Future[None], error: Exception) -> None:
    if not waiter.done():
        waiter.set_exception(error)


class LoopStream(httpcore.AsyncNetworkStream):
    """One connection, as httpcore reads and writes it."""

    def __init__(self, protocol: _ReadBuffer) -> None:
        self.protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        protocol = self.protocol
        if not protocol.chunks and not protocol.ended:
            await self._wait("data_waiter", timeout, httpcore.ReadTimeout("timed out reading"))
        if protocol.chunks:
            return protocol.take(max_bytes)
        if protocol.lost is not None:
            raise httpcore.ReadError(str(protocol.lost)) from protocol.lost
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        transport = self.protocol.transport
        if not buffer:
            return
        if transport is None or transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        transport.write(buffer)
        waiter = self.protocol.drain_waiter
        if waiter is not None and not waiter.done():
            await self._wait("drain_waiter", timeout, httpcore.WriteTimeout("timed out writing"))
        if self.protocol.lost is not None:
            raise httpcore.WriteError(str(self.protocol.lost)) from self.protocol.lost

    async def _wait(self, which: str, limit: float | None, timed_out: Exception) -> None:
        """Wait for the protocol's ``data_waiter`` or ``drain_waiter``; one timer when bounded."""
        protocol = self.protocol
        waiter: asyncio.Future[None] | None = getattr(protocol, which)
        if waiter is None or waiter.done():
            waiter = protocol.loop.create_future()
            setattr(protocol, which, waiter)
        timer = protocol.loop.call_later(limit, _expire, waiter, timed_out) if limit is not None else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()

    async def aclose(self) -> None:
        if self.protocol.transport is not None:
            self.protocol.transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        protocol = self.protocol
        assert protocol.transport is not None
        try:
            async with asyncio.timeout(timeout):
                transport = await protocol.loop.start_tls(
                    protocol.transport, protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as error:
            protocol.transport.close()
            raise httpcore.ConnectTimeout(str(error)) from error
        except (OSError, ssl.SSLError) as error:
            protocol.transport.close()
            raise httpcore.ConnectError(str(error)) from error
        protocol.transport = cast(asyncio.Transport, transport)
        return self

    def get_extra_info(self, info: str) -> Any:
        transport = self.protocol.transport
        if info == "is_readable":  # an idle connection with something to read: the server closed it
            return bool(self.protocol.chunks) or self.protocol.ended
        if transport is None:
            return None
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        return None
