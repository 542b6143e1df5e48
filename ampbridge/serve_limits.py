"""Connection limits for ``ampbridge serve``: a deadline for each request head and a cap on
open connections.

uvicorn (checked with 0.54, httptools and h11 protocols) arms ``timeout_keep_alive`` only after
a response has been sent, and cancels it on the first byte of the next request; nothing bounds
how long a client may take to send a request head, neither the first one on a connection nor a
later one. A client that connects and sends half a head (slowloris) holds its connection, and a
file descriptor, for as long as it likes; a thousand such clients exhaust the process's
descriptors and real clients are no longer accepted. ``limit_concurrency`` does not help: it
counts those connections too, and answers the real clients' requests with 503.

Here each connection must complete its request head within ``header_timeout`` seconds of
connecting, or of the head's first byte on a kept-alive connection, else it is closed (at most
a quarter of the timeout later). Idle kept-alive connections are left to uvicorn's
``timeout_keep_alive``. At ``max_connections``, a new connection evicts the oldest one that is
still waiting for a request head (idle or half-sent): requests in progress are never cut, and an
attacker's stalled connections cannot lock real clients out. Only when every connection is busy
with a request is the new one refused.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, Protocol, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .call_log import AccessLogSkippingRoutedCalls
from .turn_writes import TurnWrites

logger = logging.getLogger("ampbridge")

DEFAULT_HEADER_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 1000


class _Connection(Protocol):
    transport: asyncio.Transport
    connections: set[Any]
    loop: asyncio.AbstractEventLoop


class ConnectionLimits:
    """Per server: which connections wait for a request head, oldest first, with their deadline
    (``None`` for an idle kept-alive connection, which keep-alive timing already bounds). One
    timer for them all closes the late ones, every quarter of the timeout while any is timed:
    a timer per request head was a noticeable part of a small request's cost."""

    def __init__(self, header_timeout: float, max_connections: int) -> None:
        if header_timeout <= 0 or max_connections < 1:
            raise ValueError("header_timeout must be positive and max_connections at least 1")
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.waiting: dict[_Connection, float | None] = {}
        # The loop a sweep is scheduled on, if any: a server started again runs on a new loop.
        self.sweeping_on: asyncio.AbstractEventLoop | None = None

    def opened(self, connection: _Connection) -> None:
        if len(connection.connections) > self.max_connections:
            oldest = next(iter(self.waiting), None)
            if oldest is None:
                logger.debug("connection refused: %d connections are busy", len(connection.connections) - 1)
                connection.transport.close()
                return
            self._close(oldest)
        self._arm(connection)

    def head_started(self, connection: _Connection) -> None:
        if self.waiting.get(connection) is None:  # not yet timed: new, or idle until now
            self.waiting.pop(connection, None)
            self._arm(connection)

    def head_complete(self, connection: _Connection) -> None:
        self.waiting.pop(connection, None)

    def idle(self, connection: _Connection) -> None:
        if not connection.transport.is_closing():
            self.waiting.pop(connection, None)
            self.waiting[connection] = None

    closed = head_complete

    def _arm(self, connection: _Connection) -> None:
        loop = connection.loop
        self.waiting[connection] = loop.time() + self.header_timeout
        if self.sweeping_on is not loop:
            self.sweeping_on = loop
            loop.call_later(self.header_timeout / 4, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        late = [c for c, deadline in self.waiting.items() if deadline is not None and deadline <= now]
        for connection in late:
            self._close(connection)
        if any(deadline is not None for deadline in self.waiting.values()):
            loop.call_later(self.header_timeout / 4, self._sweep, loop)
        else:
            self.sweeping_on = None

    def _close(self, connection: _Connection) -> None:
        self.waiting.pop(connection, None)
        if not connection.transport.is_closing():
            connection.transport.close()


class _LimitedH11(H11Protocol):
    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.access_logger = AccessLogSkippingRoutedCalls(self.access_logger)  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(TurnWrites(transport, self.loop))  # type: ignore[arg-type]
        self.limits.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.limits.closed(self)
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self.limits.head_complete(self)
        elif self.conn.trailing_data[0]:
            self.limits.head_started(self)

    def on_response_complete(self) -> None:
        cast(TurnWrites, self.transport).flush()  # a whole reply goes out now, not at the turn end
        self.limits.idle(self)  # before: the next pipelined request is handled inside
        super().on_response_complete()


def _httptools_class() -> type[asyncio.Protocol] | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is an optional speed-up of uvicorn
        return None

    class _LimitedHttpTools(HttpToolsProtocol):
        limits: ClassVar[ConnectionLimits]

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.access_logger = AccessLogSkippingRoutedCalls(self.access_logger)  # type: ignore[assignment]

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(TurnWrites(transport, self.loop))  # type: ignore[arg-type]
            self.limits.opened(self)

        def connection_lost(self, exc: Exception | None) -> None:
            self.limits.closed(self)
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.limits.head_started(self)

        def on_headers_complete(self) -> None:
            self.limits.head_complete(self)
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            cast(TurnWrites, self.transport).flush()  # a whole reply goes out now, not at the turn end
            super().on_response_complete()
            if self.timeout_keep_alive_task is not None:  # no pipelined request started
                self.limits.idle(self)

    return _LimitedHttpTools


def limited_protocol(
    header_timeout: float, max_connections: int, *, implementation: str = "auto"
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, like uvicorn's "auto", else h11) with
    the limits, writing through ``TurnWrites``, making no access line for a routed model call;
    each call makes a class with its own connection registry: one per server."""
    base = _httptools_class() if implementation in ("auto", "httptools") else None
    if base is None and implementation == "httptools":
        raise ValueError("httptools is not installed")
    limits = ConnectionLimits(header_timeout, max_connections)
    return type("LimitedHTTPProtocol", (base or _LimitedH11,), {"limits": limits})


def uvicorn_options(
    header_timeout: float = DEFAULT_HEADER_TIMEOUT, max_connections: int = DEFAULT_MAX_CONNECTIONS
) -> dict[str, Any]:
    """Keyword arguments to merge into ``uvicorn.run(...)`` / ``uvicorn.Config(...)``."""
    return {"http": limited_protocol(header_timeout, max_connections)}
