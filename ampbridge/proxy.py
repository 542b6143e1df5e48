"""Streams one HTTP exchange to a fixed target with httpx, both directions, without buffering.

Used for the Amp upstream and for the standalone app's local backends. The request body is
streamed from ``receive`` (or replayed from bytes already read); the response body is relayed
raw, so its bytes reach the client unchanged. A client that goes away cancels the exchange at
once: a watcher task waits for the disconnect and cancels the relaying task (plain asyncio, which
costs a fraction of a task group per request).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ClassVar

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ResponseAborted, error_response
from .headers import RawHeaders, header_value, response_headers
from .http_client import Route

logger = logging.getLogger("ampbridge.proxy")


# Answers a request whose exchange failed before any reply: 502 (unreachable) or 504 (timed out).
FailureResponder = Callable[[Scope, Receive, Send, int], Awaitable[None]]


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


class ReplyBroken(Exception):
    """The next hop's reply broke off after its head was passed on. A part that held the head
    back (to fix or decode the body) has sent nothing yet: the app's dispatcher then answers with
    ``fail``; otherwise the response stays incomplete and the server cuts the connection, so the
    client sees the truncation."""

    def __init__(self, status: int, fail: FailureResponder) -> None:
        super().__init__(status)
        self.status = status
        self.fail = fail


class BodyTooLarge(Exception):
    """The request body is over the configured cap."""


def failure_status(error: httpx.TransportError) -> int:
    """504 when the next hop took too long to answer, 502 when it could not be reached."""
    if isinstance(error, httpx.TimeoutException) and not isinstance(error, httpx.ConnectTimeout):
        return 504
    return 502


def body_too_large(limit: int) -> ASGIApp:
    return error_response(413, "request_too_large", f"Request body exceeds {limit} bytes")


def declared_length(scope: Scope) -> int | None:
    value = header_value(scope["headers"], b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def has_body(scope: Scope, length: int | None) -> bool:
    """Whether a body follows: chunked, or a non-zero ``length`` (the declared Content-Length)."""
    if header_value(scope["headers"], b"transfer-encoding") is not None:
        return True
    return bool(length)


def upstream_accept_encoding(scope: Scope) -> bytes:
    """Ask the next hop for gzip only when the client can read it: bodies pass through raw."""
    accepted = header_value(scope["headers"], b"accept-encoding") or b""
    return b"gzip" if b"gzip" in accepted.lower() else b"identity"


async def body_piece(receive: Receive, received: int, limit: int) -> tuple[bytes, bool]:
    """The request body's next piece, after ``received`` bytes, and whether more follows;
    BodyTooLarge past ``limit`` bytes in all, ClientDisconnected if the client has gone away."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    chunk: bytes = message.get("body", b"")
    if received + len(chunk) > limit:
        raise BodyTooLarge
    return chunk, message.get("more_body", False)


async def stream_body(
    receive: Receive, limit: int, done: asyncio.Event | None = None, first: bytes = b""
) -> AsyncIterator[bytes]:
    """The request body as it arrives (after ``first``, already received), at most ``limit``
    bytes; ``done``, if given, is set when it ends."""
    total = len(first)
    try:
        if first:
            yield first
            del first  # a piece handed on is not held while the next one arrives
        more = True
        while more:
            chunk, more = await body_piece(receive, total, limit)
            total += len(chunk)
            if chunk:
                yield chunk
            del chunk
    finally:
        if done is not None:
            done.set()


class Exchange:
    """One proxied request: build it with the target's URL and headers, then ``run`` it."""

    def __init__(
        self,
        route: Route,
        *,
        url: httpx.URL,
        headers: RawHeaders,
        max_body_size: int,
        fail: FailureResponder,
    ) -> None:
        self.route = route
        self.url = url
        self.headers = headers
        self.max_body_size = max_body_size
        self.fail = fail

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = declared_length(scope)
        if length is not None and length > self.max_body_size:
            await body_too_large(self.max_body_size)(scope, receive, send)
            return
        body_done = asyncio.Event()
        content: bytes | AsyncIterator[bytes] | None = None
        if has_body(scope, length):
            first = await receive()
            if first["type"] == "http.disconnect":
                return
            chunk = first.get("body", b"")
            if len(chunk) > self.max_body_size:
                await body_too_large(self.max_body_size)(scope, receive, send)
                return
            if first.get("more_body", False):
                content = stream_body(receive, self.max_body_size, body_done, chunk)
            else:  # the whole body at once (small bodies, replayed ones): it can be sent again
                content = chunk
            del first, chunk  # a streamed body's first piece is not held to the exchange's end
        if not isinstance(content, AsyncIterator):
            body_done.set()
        request = self.route.build(scope["method"], self.url, self.headers, content, length)

        outcome = _Outcome()
        watch = _DisconnectWatch(receive, body_done, outcome)
        try:
            await self._relay(request, scope, receive, send, outcome)
        except asyncio.CancelledError:
            if not outcome.client_gone or watch.relaying.uncancel() > 0:
                raise  # cancelled from outside as well
        finally:
            watch.stop()
        if outcome.client_gone:
            logger.debug(
                "%s %s: client went away; request to %s cancelled",
                scope["method"],
                self.url.path,
                self.url.host,
            )
        elif outcome.broken is not None:
            raise ReplyBroken(outcome.broken, self.fail)

    async def _relay(
        self, request: httpx.Request, scope: Scope, receive: Receive, send: Send, outcome: _Outcome
    ) -> None:
        try:
            response = await self.route.send(request)
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": response_headers(response.headers.raw),
                    }
                )
                outcome.started = True
                body = response.stream
                assert isinstance(body, httpx.AsyncByteStream)
                async for chunk in body:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                await response.aclose()
        except ClientDisconnected:
            outcome.client_gone = True
        except BodyTooLarge:
            if not outcome.started:
                await body_too_large(self.max_body_size)(scope, receive, send)
        except ResponseAborted:
            pass
        except httpx.TransportError as error:
            reason = type(error).__name__
            if outcome.started:
                logger.warning(
                    "%s %s: stream from %s broke off (%s)",
                    scope["method"],
                    self.url.path,
                    self.url.host,
                    reason,
                )
                outcome.broken = failure_status(error)
            else:
                logger.warning(
                    "%s %s: cannot reach %s (%s)",
                    scope["method"],
                    self.url.path,
                    self.url.host,
                    reason,
                )
                await self.fail(scope, receive, send, failure_status(error))


# A disconnect watcher starts 1-2x this long after the request: most exchanges are over by then,
# and a watcher task costs as much as several percent of a small request's CPU time.
WATCH_AFTER = 0.05


class _DisconnectWatch:
    """Cancels the relaying task when the client disconnects (once its body has been read). The
    server's ``send`` drops messages to a client that is gone, so without it a stream would be
    read from the next hop to its end for nobody."""

    def __init__(self, receive: Receive, body_done: asyncio.Event, outcome: _Outcome) -> None:
        relaying = asyncio.current_task()
        assert relaying is not None
        self.relaying = relaying
        self.receive = receive
        self.body_done = body_done
        self.outcome = outcome
        self.task: asyncio.Task[None] | None = None
        loop = relaying.get_loop()
        self.watches = _Watches.of(loop)
        self.watches.add(self, loop)

    def start(self) -> None:
        self.task = self.relaying.get_loop().create_task(self._watch())

    async def _watch(self) -> None:
        await self.body_done.wait()
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.outcome.client_gone = True
        self.relaying.cancel()

    def stop(self) -> None:
        self.watches.discard(self)
        if self.task is not None:
            self.task.cancel()


class _Watches:
    """The exchanges of one event loop still waiting for their watcher, in two generations: a
    single timer for them all (a timer per exchange cost more than the rest of this module)
    starts the older generation's watchers every ``WATCH_AFTER`` seconds. (It keeps no reference
    to its loop: the registry would then keep every loop alive.)"""

    _of_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watches]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        self.young: dict[_DisconnectWatch, None] = {}
        self.old: dict[_DisconnectWatch, None] = {}
        self.ticking = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Watches:
        watches = cls._of_loop.get(loop)
        if watches is None:
            watches = cls._of_loop[loop] = cls()
        return watches

    def add(self, watch: _DisconnectWatch, loop: asyncio.AbstractEventLoop) -> None:
        self.young[watch] = None
        if not self.ticking:
            self.ticking = True
            loop.call_later(WATCH_AFTER, self._tick, loop)

    def discard(self, watch: _DisconnectWatch) -> None:
        if watch in self.young:
            del self.young[watch]
        else:
            self.old.pop(watch, None)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        due, self.old, self.young = self.old, self.young, {}
        for watch in due:
            watch.start()
        self.ticking = bool(self.old)
        if self.ticking:
            loop.call_later(WATCH_AFTER, self._tick, loop)


class _Outcome:
    __slots__ = ("broken", "client_gone", "started")

    def __init__(self) -> None:
        self.broken: int | None = None  # the failure status of a reply that broke off
        self.client_gone = False
        self.started = False
