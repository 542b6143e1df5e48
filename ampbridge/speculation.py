"""``Speculation``: a large model-call body sent on while it arrives, along the route its first
``"model"`` names, its last bytes held back until the whole body confirms that route.

The last top-level ``"model"`` of a body decides where the call goes, so a body read whole
before any of it goes on costs the upload and the forwarding one after the other: for 10 MiB,
about a quarter of the call's time. Amp writes ``"model"`` first. So when a large body starts with
its ``"model"`` member, ``AmpFallback`` routes the call by it at once and hands the next hop
``receive``, which passes each piece on as it comes while keeping the whole body. The piece
that completes the body waits until the body is scanned and a ``check`` confirms the route (the
same last model, no fix that would change a byte). If it does not, ``receive`` raises
``Refuted``: the next hop has seen an incomplete request and its connection is dropped, and the
call is routed again with the whole body.

Nothing reaches the client before the route is confirmed. A reply the next hop sends early (an
error before the body is complete) waits at ``gate`` while the rest of the body is read and
checked, and is dropped if the route is refuted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import deque
from collections.abc import Awaitable, Callable

from starlette.types import Message, Receive, Scope, Send

from .headers import header_value
from .model_scan import MAX_MODEL_BYTES
from .proxy import body_piece, declared_length
from .request_body import BodyBuffer, RequestBody

SPECULATE_ABOVE = 1 << 20  # smaller bodies arrive too fast for an overlap to pay
LEADING_BYTES = 8 * 1024  # the first member must be complete within this much
REST_PIECE = 256 * 1024  # what is left once confirmed goes on in pieces of at most this size
_LEADING_MODEL = re.compile(rb'[ \t\n\r]*\{[ \t\n\r]*"model"[ \t\n\r]*:[ \t\n\r]*("(?:[^"\\]++|\\.)*+")')

# Whether the whole body keeps the route its first model named.
RouteCheck = Callable[[RequestBody], Awaitable[bool]]


class Refuted(Exception):
    """The whole body does not keep the route its first model named."""


class Speculation:
    """One large body, read from ``receive`` (the client's) as the next hop asks for it."""

    def __init__(self, receive: Receive, declared: int, limit: int) -> None:
        self._client_receive = receive
        self._declared = declared
        self._limit = limit
        self._buffer = BodyBuffer(declared, limit)
        self._early: deque[bytes] = deque()  # read before the route was known, not handed on yet
        self._handed = 0  # bytes handed to the next hop
        self._ended = False  # the whole body has been read
        self._whole: bytes | None = None  # the body, once confirmed, while the hop has not all of it
        self._refuted_body: RequestBody | None = None
        self._lock = asyncio.Lock()  # one reader of the client at a time
        self.check: RouteCheck | None = None
        self.confirmed: bool | None = None  # None while the body is still arriving

    @classmethod
    def of(cls, scope: Scope, receive: Receive, limit: int) -> Speculation | None:
        """A speculation for a request whose declared length is large (and allowed)."""
        declared = declared_length(scope)
        if declared is None or not SPECULATE_ABOVE < declared <= limit:
            return None
        if header_value(scope["headers"], b"transfer-encoding") is not None:
            return None  # chunked: the body's end is not where its length says
        return cls(receive, declared, limit)

    async def leading_model(self) -> str | None:
        """The body's first member's value when that member is ``"model"`` and a string, read
        from the body's first pieces. None when it is not, or those pieces are the whole body:
        then there is nothing to overlap (``whole`` reads the rest)."""
        while self._buffer.size < LEADING_BYTES and not self._ended:
            self._early.append(await self._read())
        if self._ended:
            return None
        head = self._early[0] if len(self._early) == 1 else b"".join(self._early)
        found = _LEADING_MODEL.match(head, 0, LEADING_BYTES)
        if found is None or found.end(1) - found.start(1) > MAX_MODEL_BYTES:
            return None
        try:
            model = json.loads(found.group(1))
        except ValueError:
            return None
        return model if isinstance(model, str) and model else None

    async def whole(self) -> RequestBody:
        """The whole body, when it is not sent on as it arrives, or no longer (refuted)."""
        if self._refuted_body is not None:
            body, self._refuted_body = self._refuted_body, None
            return body
        return await self._read_whole()

    async def receive(self) -> Message:
        """The next hop's ``receive``: the body piece by piece, its end once confirmed."""
        if self.confirmed is None:
            async with self._lock:
                if self._early:
                    return self._hand(self._early.popleft())
                if not self._ended:
                    chunk = await self._read()
                    if not self._ended:
                        return self._hand(chunk)
                if self.confirmed is None:
                    await self._settle()
        if not self.confirmed:
            raise Refuted
        if self._whole is not None:
            return self._hand_rest(self._whole)
        return await self._client_receive()  # after the body: the client's disconnect

    def gate(self, send: Send) -> Send:
        """``send`` for the next hop's reply: its first message waits for the route's
        confirmation; none passes once the route is refuted (``Refuted`` is raised)."""

        async def gated(message: Message) -> None:
            if self.confirmed is None:
                await self.settled()
            if not self.confirmed:
                raise Refuted
            await send(message)

        return gated

    async def settled(self) -> bool:
        """Read what is left of the body and check the route, if not done yet: confirmed?"""
        if self.confirmed is None:
            async with self._lock:
                if self.confirmed is None:
                    with contextlib.suppress(Refuted):
                        await self._settle()
        return bool(self.confirmed)

    def _hand(self, chunk: bytes) -> Message:
        self._handed += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    def _hand_rest(self, whole: bytes) -> Message:
        """The next piece of what the hop has not had, once confirmed: at most ``REST_PIECE``
        (a hop that answered early may stop reading: the rest is never copied whole)."""
        start = self._handed
        end = min(len(whole), start + REST_PIECE)
        piece = whole if start == 0 and end == len(whole) else whole[start:end]
        self._handed = end
        more = end < len(whole)
        if not more:
            self._whole = None
        return {"type": "http.request", "body": piece, "more_body": more}

    async def _read(self) -> bytes:
        chunk, more = await body_piece(self._client_receive, self._buffer.size, self._limit)
        self._buffer.add(chunk)
        if not more or self._buffer.size >= self._declared:
            self._ended = True  # a piece completing the declared length is never handed on early
        return chunk

    async def _read_whole(self) -> RequestBody:
        while not self._ended:
            await self._read()
        self._early.clear()  # in the buffer too: what the hop has not had is handed from there
        return await RequestBody.of_bytes(self._buffer.take(), lazy=True)

    async def _settle(self) -> None:
        body = await self._read_whole()
        assert self.check is not None, "the route's check is set before the next hop runs"
        if not await self.check(body):
            self.confirmed = False
            self._refuted_body = body
            raise Refuted
        self._whole = body.take_bytes()
        self.confirmed = True
