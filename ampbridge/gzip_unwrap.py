"""``GzipUnwrap``: decode gzip response bodies that arrive without ``Content-Encoding``.

The Amp upstream sometimes answers with a gzip body but no ``Content-Encoding`` header, which
clients then fail to parse. This middleware looks at the first bytes of each response body and,
when they are the gzip magic, decodes the body as a stream. Small bodies (up to ``buffer_size``
decoded) get an exact ``Content-Length``; larger ones are sent chunked.

What is never touched: a reply that declares ``Content-Encoding`` (the client decodes it), an SSE
stream (``text/event-stream``; events are passed as they come), a file reply
(``http.response.pathsend``), and a body that does not start with the gzip magic. A body that
starts like gzip but does not decode (corrupt or cut short) is passed on exactly as it came when
nothing has been sent yet; once decoded bytes are out, the response is cut instead. Either way the
log gets one warning line, never a traceback. When the wrapped app returns before its body is
complete (its source broke off), what was held goes out as it came and the response is left open,
so the server cuts the connection as it would have without this middleware.

The decoded size is capped, so a gzip bomb cannot exhaust memory: over the cap the client gets a
502 (or, when headers are already out, the response is left incomplete, which makes the server cut
the connection). The wrapped app is stopped by a ``ResponseAborted`` raised from its ``send``.
Header names are matched in any case (Go servers send ``Content-Length``).
"""

from __future__ import annotations

import enum
import logging
import zlib
from typing import NoReturn

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ResponseAborted, error_response
from .headers import header_value, with_content_length

logger = logging.getLogger("ampbridge.gzip")

GZIP_MAGIC = b"\x1f\x8b"
DECODE_STEP = 64 * 1024


class GzipUnwrap:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_decoded_size: int = 64 * 1024 * 1024,
        buffer_size: int = 64 * 1024,
    ) -> None:
        if max_decoded_size <= 0 or buffer_size <= 0:
            raise ValueError("GzipUnwrap: max_decoded_size and buffer_size must be positive")
        self.app = app
        self.max_decoded_size = max_decoded_size
        self.buffer_size = buffer_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        responder = UnwrapResponder(self.app, self.max_decoded_size, self.buffer_size)
        await responder(scope, receive, send)


class _Mode(enum.Enum):
    SNIFFING = "sniffing"  # start held until the first bytes of the body decide
    PASSING = "passing"  # everything goes on untouched
    DECODING = "decoding"  # the body is gzip: decode it
    CUT = "cut"  # the response was stopped; nothing more goes out


class UnwrapResponder:
    """The state of one response: wraps its ``send``."""

    def __init__(self, app: ASGIApp, max_decoded_size: int, buffer_size: int) -> None:
        self.app = app
        self.max_decoded_size = max_decoded_size
        self.buffer_size = buffer_size
        self.mode = _Mode.SNIFFING
        self.start: Message | None = None  # held while nothing has been sent
        self.raw_held: list[bytes] = []  # the body as it came, while the start is held
        self.raw_held_size = 0
        self.decoded_held: list[bytes] = []  # decoded bytes not yet sent (start still held)
        self.decoded_held_size = 0
        self.decoded_total = 0
        self.decoder: zlib._Decompress | None = None
        self.aborted = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope, self.receive, self.send = scope, receive, send
        try:
            await self.app(scope, receive, self.send_unwrapped)
        except ResponseAborted:
            if not self.aborted:
                raise  # someone else's abort
            return
        if self.start is not None:  # the app stopped before its body was complete (source broke off)
            await self._pass_from_now_on(more=True)  # as far as it came: the server cuts the rest

    async def send_unwrapped(self, message: Message) -> None:
        kind = message["type"]
        if self.mode is _Mode.CUT:
            return
        if kind == "http.response.start":
            await self._on_start(message)
        elif kind == "http.response.body" and self.mode is not _Mode.PASSING:
            await self._on_body(message.get("body", b""), message.get("more_body", False))
        elif kind == "http.response.pathsend":  # a file: never sniffed, never decoded
            await self._pass_from_now_on()
            await self.send(message)
        else:  # bodies in pass mode, trailers, early hints, anything newer
            await self.send(message)

    async def _on_start(self, message: Message) -> None:
        headers = message.get("headers", [])
        content_type = (header_value(headers, b"content-type") or b"").lower()
        encoded = header_value(headers, b"content-encoding") is not None
        if encoded or content_type.startswith(b"text/event-stream"):
            self.mode = _Mode.PASSING
            await self.send(message)
        else:
            self.start = message

    async def _on_body(self, body: bytes, more: bool) -> None:
        if self.mode is _Mode.SNIFFING:
            self._hold_raw(body)
            sniffed = b"".join(self.raw_held)
            if len(sniffed) < len(GZIP_MAGIC) and more:
                return
            if not sniffed.startswith(GZIP_MAGIC):
                await self._pass_from_now_on(more)
                return
            self.mode, self.decoder = _Mode.DECODING, zlib.decompressobj(wbits=31)
            body = sniffed
        elif self.start is not None:
            self._hold_raw(body)
        await self._decode(body, more)

    def _hold_raw(self, body: bytes) -> None:
        if body:
            self.raw_held.append(body)
            self.raw_held_size += len(body)

    async def _decode(self, data: bytes, more: bool) -> None:
        try:
            decoded = self._decompress(data)
            if not more:
                decoded.append(self._finish())
        except zlib.error as exc:
            await self._undecodable(str(exc), more)
            return
        except _OverCap:
            await self._over_cap()
            return
        for chunk in decoded:
            self.decoded_held.append(chunk)
            self.decoded_held_size += len(chunk)
        if self.start is not None:
            held = max(self.decoded_held_size, self.raw_held_size)
            if more and held <= self.buffer_size:
                return
            await self._send_decoded_start(length=None if more else self.decoded_held_size)
        body = b"".join(self.decoded_held)
        self.decoded_held, self.decoded_held_size = [], 0
        if body or not more:
            await self.send({"type": "http.response.body", "body": body, "more_body": more})

    def _decompress(self, data: bytes) -> list[bytes]:
        """Decode ``data``; a stream of several gzip members (concatenated files) is decoded whole."""
        assert self.decoder is not None
        chunks: list[bytes] = []
        while data:
            if self.decoder.eof:  # the next member begins
                self.decoder = zlib.decompressobj(wbits=31)
            chunk = self.decoder.decompress(data, DECODE_STEP)
            self.decoded_total += len(chunk)
            if self.decoded_total > self.max_decoded_size:
                raise _OverCap
            chunks.append(chunk)
            data = self.decoder.unconsumed_tail or self.decoder.unused_data
        return chunks

    def _finish(self) -> bytes:
        assert self.decoder is not None
        rest = self.decoder.flush()  # output zlib still holds (the input is all in)
        self.decoded_total += len(rest)
        if self.decoded_total > self.max_decoded_size:
            raise _OverCap
        if not self.decoder.eof:
            raise zlib.error("the stream ends before its gzip trailer")
        return rest

    async def _undecodable(self, reason: str, more: bool) -> None:
        if self.start is not None:
            logger.warning("body starts like gzip but does not decode (%s); passed on unchanged", reason)
            self.decoder, self.decoded_held, self.decoded_held_size = None, [], 0
            await self._pass_from_now_on(more)
            return
        logger.warning("gzip body stopped decoding after it was partly sent (%s); response cut", reason)
        self._cut()

    async def _over_cap(self) -> None:
        reason = "Upstream response exceeds the decoded size limit"
        if self.start is not None:
            self.start = None
            self.mode, self.aborted = _Mode.CUT, True
            response = error_response(502, "amp_upstream_proxy_error", reason)
            await response(self.scope, self.receive, self.send)
            raise ResponseAborted(reason)
        logger.warning("response cut off: %s", reason)
        self._cut()

    def _cut(self) -> NoReturn:
        self.mode, self.aborted = _Mode.CUT, True
        self.decoded_held, self.raw_held = [], []
        raise ResponseAborted("gzip body could not be passed on")

    async def _pass_from_now_on(self, more: bool | None = None) -> None:
        """Send the start and any held body exactly as they came; everything after passes."""
        self.mode = _Mode.PASSING
        if self.start is not None:
            start, self.start = self.start, None
            await self.send(start)
        if more is not None:
            body = b"".join(self.raw_held)
            await self.send({"type": "http.response.body", "body": body, "more_body": more})
        self.raw_held, self.raw_held_size = [], 0

    async def _send_decoded_start(self, length: int | None) -> None:
        assert self.start is not None
        start, self.start = self.start, None
        self.raw_held, self.raw_held_size = [], 0
        if start.get("trailers", False):
            length = None  # a reply with trailers goes chunked
        headers = with_content_length(start.get("headers", []), length)
        await self.send({**start, "headers": headers})


class _OverCap(Exception):
    """The decoded size passed the cap."""
