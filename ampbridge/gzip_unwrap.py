"""``GzipUnwrap``: decode gzip response bodies that arrive without ``Content-Encoding``.

The Amp upstream sometimes answers with a gzip body but no ``Content-Encoding`` header, which
clients then fail to parse. This middleware looks at the first bytes of each response body and,
when they are the gzip magic, decodes the body as a stream. Small bodies (up to ``buffer_size``
decoded) get an exact ``Content-Length``; larger ones are sent chunked. The decoded size is capped,
so a gzip bomb cannot exhaust memory: over the cap the client gets a 502 (or, when headers are
already out, the response is left incomplete, which makes the server cut the connection). The
wrapped app is stopped by a ``ResponseAborted`` raised from its ``send``.
"""

from __future__ import annotations

import logging
import zlib

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ResponseAborted, error_response

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
        self.app = app
        self.max_decoded_size = max_decoded_size
        self.buffer_size = buffer_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        responder = _UnwrappingSend(scope, receive, send, self.max_decoded_size, self.buffer_size)
        try:
            await self.app(scope, receive, responder)
        except ResponseAborted:
            if not responder.cut:
                raise  # someone else's abort


class _UnwrappingSend:
    """The wrapped ``send`` of one response."""

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, max_decoded: int, buffer_size: int
    ) -> None:
        self.scope, self.receive, self.send = scope, receive, send
        self.max_decoded = max_decoded
        self.buffer_size = buffer_size
        self.start: Message | None = None  # held until the first bytes decide
        self.sniffed = b""
        self.passthrough = False
        self.decoder: zlib._Decompress | None = None
        self.decoded_total = 0
        self.pending: list[bytes] = []  # decoded bytes not yet sent (start still held)
        self.cut = False

    async def __call__(self, message: Message) -> None:
        if self.passthrough:
            await self.send(message)
            return
        if self.cut:
            return
        if message["type"] == "http.response.start":
            headers = MutableHeaders(raw=message["headers"])
            encoded = "content-encoding" in headers
            sse = headers.get("content-type", "").startswith("text/event-stream")
            if encoded or sse:
                self.passthrough = True
                await self.send(message)
            else:
                self.start = message
            return
        if message["type"] != "http.response.body":
            await self.send(message)
            return
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        if self.decoder is None:
            self.sniffed += body
            if len(self.sniffed) < len(GZIP_MAGIC) and more:
                return
            if not self.sniffed.startswith(GZIP_MAGIC):
                self.passthrough = True
                await self._send_start()
                await self.send({"type": "http.response.body", "body": self.sniffed, "more_body": more})
                return
            self.decoder = zlib.decompressobj(wbits=31)
            body, self.sniffed = self.sniffed, b""
        await self._decode(body, more)

    async def _decode(self, data: bytes, more: bool) -> None:
        assert self.decoder is not None
        chunks: list[bytes] = []
        try:
            while data:
                chunk = self.decoder.decompress(data, DECODE_STEP)
                data = self.decoder.unconsumed_tail
                if not self._count(len(chunk)):
                    await self._overflow()
                    return
                chunks.append(chunk)
            if not more:
                chunks.append(self.decoder.flush())
        except zlib.error:
            logger.warning("upstream body looked like gzip but did not decode; passing it on")
            await self._overflow(reason="Upstream sent a corrupt gzip body")
            return
        decoded = b"".join(chunks)
        if self.start is not None:
            self.pending.append(decoded)
            buffered = sum(map(len, self.pending))
            if more and buffered <= self.buffer_size:
                return
            await self._send_start(length=None if more else buffered)
            decoded = b"".join(self.pending)
            self.pending = []
        if decoded or not more:
            await self.send({"type": "http.response.body", "body": decoded, "more_body": more})

    def _count(self, size: int) -> bool:
        self.decoded_total += size
        return self.decoded_total <= self.max_decoded

    async def _overflow(self, reason: str = "Upstream response exceeds the decoded size limit") -> None:
        self.cut = True
        self.pending = []
        if self.start is not None:
            self.start = None
            response = error_response(502, "amp_upstream_proxy_error", reason)
            await response(self.scope, self.receive, self.send)
            raise ResponseAborted(reason)
        logger.warning("response cut off: %s", reason)
        raise ResponseAborted(reason)

    async def _send_start(self, length: int | None = None) -> None:
        if self.start is None:
            return
        start, self.start = self.start, None
        if self.decoder is not None:
            headers = MutableHeaders(raw=start["headers"])
            if length is None:
                del headers["content-length"]
            else:
                headers["content-length"] = str(length)
        await self.send(start)
