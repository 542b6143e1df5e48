"""An httpx transport for direct HTTP/1.1 connections, cheap per request, that never sends a model
call twice.

Every model call and every forwarded request goes out through here, so its cost per request is
ampbridge's floor. httpx's default transport (httpcore and h11) parses in pure Python and goes
through anyio locks and cancel scopes on every request and every read; under load that was about
40% of ampbridge's CPU time. This transport speaks HTTP/1.1 itself: each connection is an asyncio
protocol whose replies are parsed by httptools (llhttp, the parser uvicorn uses for the requests
coming in), a read of data already received returns at once, and a wait arms one timer.

Idle connections of each origin are kept on a stack: a request takes the most recently used one,
and the oldest is retired once it has been idle ``keepalive_expiry`` seconds. A connection the
server closed while idle is known from the protocol's callbacks and never reused.

A request goes out a second time, on a new connection, only when nothing of it can have left this
machine: its connection turned out closed before the first byte was written. A connection that
dies after the request was written is a failure for the caller (the backend may have started a
paid model call), never a replay.

It is an ``httpx.AsyncBaseTransport``: callers build ``httpx.Request`` objects and get
``httpx.Response`` objects whose stream is read as any other. Proxied routes use httpx's own
transport.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterable
from typing import Any, cast

import httptools
import httpx

OriginKey = tuple[str, str, int]

# A connection stops reading from its socket while this much is received and not yet read.
READ_HIGH_WATER = 256 * 1024
READ_LOW_WATER = 64 * 1024
# A request body is written in slices of at most this size, waiting for the socket in between,
# so a large body held in memory is never copied whole into a send buffer.
WRITE_SLICE = 256 * 1024
# A body held in memory up to this size goes out in the same write as the request head.
JOINED_BODY = 16 * 1024
# A reply whose head is not complete after this many bytes is refused (llhttp sets no bound).
MAX_HEAD = 64 * 1024
_CHUNKED_END = b"0\r\n\r\n"


class StackPoolTransport(httpx.AsyncBaseTransport):
    """Direct HTTP/1.1 connections, the idle ones of each origin kept most recently used first."""

    def __init__(
        self,
        *,
        keepalive_expiry: float,
        max_idle_per_origin: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ssl_context = ssl_context or httpx.create_ssl_context(trust_env=False)
        self.keepalive_expiry = keepalive_expiry
        self.max_idle_per_origin = max_idle_per_origin
        self.idle: dict[OriginKey, collections.deque[Connection]] = {}
        self.busy: set[Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        host = url.raw_host.decode("ascii")
        key = (scheme, host, url.port or (443 if scheme == "https" else 80))
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
        head = request_head(request)
        chunked = _is_chunked(request.headers.raw)
        head_only = request.method == "HEAD"
        retried = False
        while True:
            connection = self._checkout(key) or await self._connect(key, timeouts.get("connect"))
            self.busy.add(connection)
            try:
                await connection.send_request(head, request.stream, chunked, head_only, timeouts.get("write"))
                status, headers, reason, version = await connection.read_head(timeouts.get("read"))
            except NothingSent:
                self.busy.discard(connection)
                connection.close()
                if not retried:  # nothing of it was written, not even a streamed body's first piece
                    retried = True
                    continue
                raise httpx.WriteError("the connection closed before the request was sent") from None
            except BaseException:
                self.busy.discard(connection)
                connection.close()
                raise
            stream = ResponseStream(self, connection, key, timeouts.get("read"))
            return httpx.Response(
                status_code=status,
                headers=headers,
                stream=stream,
                extensions={"http_version": version, "reason_phrase": reason},
            )

    def _checkout(self, key: OriginKey) -> Connection | None:
        """The most recently used idle connection that still works; the oldest one is retired on
        the way once it has expired."""
        stack = self.idle.get(key)
        if not stack:
            return None
        now = asyncio.get_running_loop().time()
        while len(stack) > 1 and stack[0].expires_at <= now:
            stack.popleft().close()
        while stack:
            connection = stack.pop()
            if connection.reusable() and connection.expires_at > now:
                return connection
            connection.close()
        return None

    async def _connect(self, key: OriginKey, limit: float | None) -> Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        connection = Connection(loop)
        secure = scheme == "https"
        try:
            async with asyncio.timeout(limit):
                await loop.create_connection(
                    lambda: connection,
                    host,
                    port,
                    ssl=self.ssl_context if secure else None,
                    server_hostname=host if secure else None,
                )
        except TimeoutError as error:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from error
        except (OSError, ssl.SSLError) as error:
            raise httpx.ConnectError(str(error) or type(error).__name__) from error
        return connection

    def release(self, connection: Connection, key: OriginKey) -> None:
        """Take back a connection whose response has been read to the end (or close it)."""
        self.busy.discard(connection)
        stack = self.idle.setdefault(key, collections.deque())
        if connection.reusable() and len(stack) < self.max_idle_per_origin:
            connection.expires_at = connection.loop.time() + self.keepalive_expiry
            stack.append(connection)
        else:
            connection.close()

    def discard(self, connection: Connection) -> None:
        self.busy.discard(connection)
        connection.close()

    async def aclose(self) -> None:
        connections = [c for stack in self.idle.values() for c in stack] + list(self.busy)
        self.idle.clear()
        self.busy.clear()
        for connection in connections:
            connection.close()


class NothingSent(Exception):
    """The connection was found closed before any byte of the request was written."""


def request_head(request: httpx.Request) -> bytes:
    """The request line and header block. A name or value holding a line break is refused: it
    would let a header smuggle in a second request."""
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    lines += [b"%s: %s" % pair for pair in request.headers.raw]
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    expected = len(lines) + 1
    if head.count(b"\n") != expected or head.count(b"\r") != expected or b"\0" in head:
        raise httpx.LocalProtocolError("a request header holds a line break or NUL")
    return head


def _is_chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"transfer-encoding" and b"chunked" in value.lower() for name, value in headers
    )


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: writes a request, parses its response as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.expires_at = 0.0
        self.ended = False  # EOF received, or the connection lost
        self.lost: Exception | None = None
        self.error: httpx.TransportError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.drain: asyncio.Future[None] | None = None
        self.reading_paused = False
        self._reset()

    def _reset(self) -> None:
        self.parser: httptools.HttpResponseParser | None = None
        self.status = 0
        self.version = "1.1"
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.framed = False  # the reply says where its body ends (length, chunks, or no body)
        self.interim = False  # a 1xx reply is being parsed: skipped
        self.head_only = False
        self.head_done = False
        self.head_size = 0
        self.complete = False
        self.keep_alive = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0

    # --- asyncio's callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:  # nothing was asked: a server talking out of turn cannot be trusted
            self.keep_alive = False
            self.close()
            return
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as error:
            if not self.complete:  # bytes after a whole reply cost only the connection
                self.error = httpx.RemoteProtocolError(f"malformed reply: {error or type(error).__name__}")
            self.close()
        if not self.head_done:
            self.head_size += len(data)
            if self.head_size > MAX_HEAD:
                self.error = httpx.RemoteProtocolError(f"the reply's head is over {MAX_HEAD} bytes")
                self.close()
        self._wake()

    def eof_received(self) -> bool:
        self._end(None)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)
        drain = self.drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        if self.drain is None or self.drain.done():
            self.drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)

    def _end(self, exc: Exception | None) -> None:
        self.ended = True
        if exc is not None and self.lost is None:
            self.lost = exc
        if self.head_done and not self.complete and not self.framed:  # the body ran to the close
            self.complete = True
            self.keep_alive = False
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- httptools' callbacks

    def on_status(self, reason: bytes) -> None:
        if not self.complete:
            self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:  # a second reply nobody asked for: the connection is not reused
            self.keep_alive = False
            return
        self.headers.append((name, value))
        if not self.framed and name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        if self.complete or self.parser is None:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim reply (100 Continue, 103 Early Hints): the real one follows
            self.interim = True
            self.reason, self.headers, self.framed = b"", [], False
            return
        self.status = status
        self.version = self.parser.get_http_version()
        self.head_done = True
        if status in (204, 304):
            self.framed = True
        if self.head_only:  # its length describes a body that is not sent: done, and not reused
            self.complete = True
            self.parser = None

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.chunks.append(body)
        self.size += len(body)
        if self.size > READ_HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.complete:
            self.keep_alive = False
            return
        if self.interim:
            self.interim = False
            return
        if self.parser is not None:
            self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        self.parser = None  # anything after the reply is the server talking out of turn

    # --- the caller's side

    def reusable(self) -> bool:
        transport = self.transport
        return (
            self.keep_alive
            and not self.ended
            and self.error is None
            and transport is not None
            and not transport.is_closing()
        )

    async def send_request(
        self,
        head: bytes,
        body: AsyncIterable[bytes] | Any,
        chunked: bool,
        head_only: bool,
        limit: float | None,
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.ended:
            raise NothingSent
        self._reset()
        self.head_only = head_only
        self.parser = httptools.HttpResponseParser(self)
        pending: bytes | None = head
        if isinstance(body, httpx.ByteStream):  # in memory: iterated as the sync iterable it also is
            for chunk in body:
                pending = await self._put(pending, chunk, chunked, True, limit)
        else:  # each piece goes out as it comes
            async for chunk in body:
                if (pending := await self._put(pending, chunk, chunked, False, limit)) is None:
                    return
                del chunk  # a piece written is not held while the next one arrives
        if pending is None:  # the server answered early (say, 413) and closed: read that answer
            return
        if chunked:
            pending += _CHUNKED_END
        if pending:
            await self._write(pending, limit)

    async def _put(
        self, pending: bytes | None, chunk: bytes, chunked: bool, in_memory: bool, limit: float | None
    ) -> bytes | None:
        """One piece of the body: joined with what is pending while that stays small, else
        written. What is pending then, or None when the server has answered and closed early."""
        if pending is None or not chunk:
            return pending
        if chunked:
            chunk = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        if in_memory and len(pending) + len(chunk) <= JOINED_BODY:
            return pending + chunk
        if pending:
            await self._write(pending, limit)
        view = memoryview(chunk)
        for start in range(0, len(view), WRITE_SLICE):
            await self._write(view[start : start + WRITE_SLICE], limit)
        return None if self.ended else b""

    async def _write(self, data: bytes | memoryview, limit: float | None) -> None:
        transport = self.transport
        if self.ended or transport is None or transport.is_closing():
            return  # the reply, or the error, is read next
        transport.write(data)
        drain = self.drain
        if drain is not None and not drain.done():
            await self._wait_for(drain, limit, httpx.WriteTimeout("timed out sending the request"))

    async def read_head(self, limit: float | None) -> tuple[int, list[tuple[bytes, bytes]], bytes, bytes]:
        while not self.head_done:
            self._raise_if_failed("the server closed the connection without a reply")
            await self._wait(limit)
        return self.status, self.headers, self.reason, b"HTTP/" + self.version.encode("ascii")

    async def next_piece(self, limit: float | None) -> bytes:
        """The body's bytes received since the last piece; StopAsyncIteration at its end."""
        while True:
            chunks = self.chunks
            if chunks:
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self.size = 0
                if self.reading_paused and self.transport is not None:
                    self.reading_paused = False
                    self.transport.resume_reading()
                return data
            if self.error is not None:
                raise self.error
            if self.complete:
                raise StopAsyncIteration
            self._raise_if_failed("the server closed the connection before the reply's end")
            await self._wait(limit)

    def _raise_if_failed(self, closed: str) -> None:
        if self.error is not None:
            raise self.error
        if self.ended:
            if self.lost is not None:
                raise httpx.ReadError(str(self.lost) or type(self.lost).__name__) from self.lost
            raise httpx.RemoteProtocolError(closed)

    async def _wait(self, limit: float | None) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            waiter = self.waiter = self.loop.create_future()
        await self._wait_for(waiter, limit, httpx.ReadTimeout("timed out waiting for the reply"))

    async def _wait_for(
        self, waiter: asyncio.Future[None], limit: float | None, timed_out: Exception
    ) -> None:
        if limit is None:
            await waiter
            return
        timer = self.loop.call_later(limit, _expire, waiter, timed_out)
        try:
            await waiter
        finally:
            timer.cancel()

    def close(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None], error: Exception) -> None:
    if not waiter.done():
        waiter.set_exception(error)


class ResponseStream(httpx.AsyncByteStream):
    """The response body; closing it hands a connection read to the end back to the pool."""

    def __init__(
        self, pool: StackPoolTransport, connection: Connection, key: OriginKey, limit: float | None
    ) -> None:
        self.pool = pool
        self.connection = connection
        self.key = key
        self.limit = limit
        self.released = False

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> bytes:
        return await self.connection.next_piece(self.limit)

    async def aclose(self) -> None:
        if self.released:
            return
        self.released = True
        if self.connection.complete:
            self.pool.release(self.connection, self.key)
        else:  # not read to the end: its remaining bytes would be taken for the next reply
            self.pool.discard(self.connection)
