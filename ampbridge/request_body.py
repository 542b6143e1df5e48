"""``RequestBody``: a model call's body, read whole for the model lookup and held only once.

While its JSON is in use the body is kept as text (``json`` parses text without another copy);
when it is sent on, the text is encoded back, which yields exactly the bytes received (UTF-8
decoding and encoding are inverse). A body that is not UTF-8 stays as bytes. So a large body
costs about twice its size at the peak, not four times (bytes, decoded text, parsed values,
send buffer).

A body over ``THREAD_THRESHOLD`` is parsed in a worker thread, so the event loop keeps serving
other requests meanwhile. A body that is not a JSON object (or holds a number too long for
Python's integers) has no ``payload``; ``scan`` still finds its top-level ``"model"``.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from starlette.types import Receive, Scope, Send

from .jsonutil import dump_json, parse_json_object
from .model_scan import ModelScan, scan_model_async
from .proxy import BodyTooLarge, ClientDisconnected, body_too_large, declared_length, stream_body

THREAD_THRESHOLD = 1 << 20  # bodies larger than this are parsed in a worker thread


class RequestBody:
    __slots__ = ("_raw", "_scanned", "_text", "payload")

    def __init__(
        self,
        raw: bytes | None,
        text: str | None,
        payload: dict[str, Any] | None,
        scanned: ModelScan | None = None,
    ) -> None:
        self._raw = raw
        self._text = text
        self.payload = payload  # the JSON object, when the body is one
        self._scanned = scanned  # the scan already made of a large body

    @classmethod
    async def read(cls, receive: Receive, limit: int) -> RequestBody:
        """Read the whole body (raises ``BodyTooLarge`` / ``ClientDisconnected``)."""
        chunks = [chunk async for chunk in stream_body(receive, limit)]
        raw = b"".join(chunks)
        chunks.clear()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return cls(raw, None, None)
        if len(text) <= THREAD_THRESHOLD:
            del raw
            return cls(None, text, parse_json_object(text))
        # A large body is parsed off the event loop, and only when a scan (bounded memory) shows
        # it is a JSON object: a huge array of small values would take many times its size.
        scanned = await scan_model_async(raw, thread_threshold=THREAD_THRESHOLD)
        del raw
        payload = await anyio.to_thread.run_sync(parse_json_object, text) if scanned.is_object else None
        return cls(None, text, payload, scanned)

    async def scan(self) -> ModelScan:
        """The top-level ``"model"`` found by a streaming scan: for a body ``json`` could not
        read (not JSON, or a number over Python's digit limit). The body is kept."""
        if self._scanned is not None:
            return self._scanned
        raw = self._raw if self._raw is not None else (self._text or "").encode("utf-8")
        return await scan_model_async(raw, thread_threshold=THREAD_THRESHOLD)

    def take_bytes(self) -> bytes:
        """The exact bytes received; the body is released."""
        self.payload = None
        raw, text = self._raw, self._text
        self._raw = self._text = None
        return raw if raw is not None else (text or "").encode("utf-8")

    def take_rewritten(self) -> bytes:
        """``payload`` serialised, after a change to it; the body is released."""
        self._raw = self._text = None
        payload, self.payload = self.payload, None
        return dump_json(payload)


async def read_request_body(scope: Scope, receive: Receive, send: Send, limit: int) -> RequestBody | None:
    """The whole body, or None when the client has been answered (413) or has gone away."""
    length = declared_length(scope)
    try:
        if length is not None and length > limit:
            raise BodyTooLarge
        return await RequestBody.read(receive, limit)
    except BodyTooLarge:
        await body_too_large(limit)(scope, receive, send)
    except ClientDisconnected:
        pass
    return None
