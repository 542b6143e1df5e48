"""``RequestBody``: a model call's body, read whole for the model lookup and held only once.

A body is read into one buffer that becomes the ``bytes`` sent on (``io.BytesIO`` hands over
its buffer without copying it), so the chunks it arrived in and the joined body never coexist.

A small body is parsed at once: while its JSON is in use it is kept as text (``json`` parses
text without another copy); when it is sent on, the text is encoded back, which yields exactly
the bytes received (UTF-8 decoding and encoding are inverse). A body that is not UTF-8 stays as
bytes.

A large body (over ``THREAD_THRESHOLD``) is scanned in a worker thread for its top-level
members (``model_scan``), not parsed, when it is read ``lazy``: a forwarded call sends the bytes
received and never decodes them, and a local call reads the few members its fixes need from
their spans, renames the model in place, and parses the whole body (``parse``, in a worker
thread) only when a fix may change something else. Read eagerly, a large body is parsed in a
worker thread, and only when the scan shows it is a JSON object: a huge array of small values
would take many times its size. A body that is not a JSON object (or holds a number too long for
Python's integers) has no ``payload``; ``scan`` still finds its top-level ``"model"``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio.to_thread
from starlette.types import Receive, Scope, Send

from .jsonutil import dump_json, parse_json_object
from .model_scan import ModelScan, scan_model, scan_model_async
from .proxy import BodyTooLarge, ClientDisconnected, body_piece, body_too_large, declared_length

THREAD_THRESHOLD = 1 << 20  # bodies larger than this are parsed in a worker thread
T = TypeVar("T")


class RequestBody:
    __slots__ = ("_raw", "_scanned", "_text", "_unparsed", "payload")

    def __init__(
        self,
        raw: bytes | None,
        text: str | None,
        payload: dict[str, Any] | None,
        scanned: ModelScan | None = None,
    ) -> None:
        self._raw = raw
        self._text = text
        self.payload = payload  # the JSON object, when the body is one (and has been parsed)
        self._scanned = scanned  # the scan already made of a large body
        self._unparsed = scanned is not None and scanned.is_object and raw is not None

    @classmethod
    async def read(
        cls, receive: Receive, limit: int, *, lazy: bool = False, declared: int | None = None
    ) -> RequestBody:
        """Read the whole body (raises ``BodyTooLarge`` / ``ClientDisconnected``); a large one
        is parsed only when not ``lazy``. ``declared``: its Content-Length, when known."""
        buffer = BodyBuffer(declared, limit)
        more = True
        while more:
            chunk, more = await body_piece(receive, buffer.size, limit)
            buffer.add(chunk)
        return await cls.of_bytes(buffer.take(), lazy=lazy)

    @classmethod
    async def of_bytes(cls, raw: bytes, *, lazy: bool) -> RequestBody:
        """The body ``raw``, already read whole (see ``read``)."""
        if len(raw) <= THREAD_THRESHOLD:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                return cls(raw, None, None)
            del raw
            return cls(None, text, parse_json_object(text))
        if not lazy:
            scanned = await scan_model_async(raw, thread_threshold=THREAD_THRESHOLD)
            body = cls(raw, None, None, scanned)
            del raw
            await body.parse()
            return body
        return cls(raw, None, None, await _in_worker_thread(scan_model, raw))

    @property
    def unparsed(self) -> bool:
        """A large JSON object read ``lazy`` and not parsed yet: ``payload`` is None for now."""
        return self._unparsed

    async def parse(self) -> None:
        """Parse an ``unparsed`` body into ``payload``, in a worker thread."""
        if not self._unparsed:
            return
        self._unparsed = False
        assert self._raw is not None
        try:
            text = self._raw.decode("utf-8")
        except UnicodeDecodeError:
            return
        self._raw = None
        self._text = text
        self.payload = await anyio.to_thread.run_sync(parse_json_object, text)

    async def scan(self) -> ModelScan:
        """The top-level ``"model"`` found by a streaming scan: for a body ``json`` could not
        read (not JSON, or a number over Python's digit limit), or one not parsed. The body is
        kept."""
        if self._scanned is not None:
            return self._scanned
        raw = self._raw if self._raw is not None else (self._text or "").encode("utf-8")
        return await scan_model_async(raw, thread_threshold=THREAD_THRESHOLD)

    def raw_member(self, key: str) -> tuple[bytes, int, int] | None:
        """An ``unparsed`` body's bytes and the span of its last top-level ``key``'s value."""
        if not self._unparsed:
            return None
        assert self._raw is not None and self._scanned is not None
        span = self._scanned.span(key)
        return None if span is None else (self._raw, *span)

    def member_count(self, key: str) -> int:
        """How many times an ``unparsed`` body has the top-level member ``key``."""
        return self._scanned.count(key) if self._unparsed and self._scanned is not None else 0

    async def member(self, key: str) -> Any:
        """The value of an ``unparsed`` body's top-level ``key`` (None when absent or not
        JSON); parsed in a worker thread when large."""
        found = self.raw_member(key)
        if found is None:
            return None
        raw, start, end = found
        del found
        if end - start <= THREAD_THRESHOLD:
            return _load_value(raw, start, end)
        return await _in_worker_thread(_load_value, raw, start, end)

    def take_bytes(self) -> bytes:
        """The exact bytes received; the body is released."""
        self.payload = self._scanned = None
        self._unparsed = False
        raw, text = self._raw, self._text
        self._raw = self._text = None
        return raw if raw is not None else (text or "").encode("utf-8")

    def take_with_member(self, key: str, value: Any) -> bytes:
        """An ``unparsed`` body with the value of its (only) top-level ``key`` replaced by
        ``value`` as JSON, changed in place where it lies; the body is released."""
        span = self._scanned.span(key) if self._unparsed and self._scanned is not None else None
        if span is None or self.member_count(key) != 1 or self._raw is None:
            raise ValueError(f"no single top-level {key!r} to replace")
        size, (start, end) = len(self._raw), span
        # The buffer takes over the bytes: once no other reference is left it edits them in place.
        buffer = io.BytesIO(self._raw)
        self._raw = self._scanned = None
        self._unparsed = False
        return _splice(buffer, size, start, end, dump_json(value))

    def take_rewritten(self) -> bytes:
        """``payload`` serialised, after a change to it; the body is released."""
        self._raw = self._text = self._scanned = None
        self._unparsed = False
        payload, self.payload = self.payload, None
        return dump_json(payload)


class BodyBuffer:
    """A body's pieces joined as they arrive into one ``bytes``, never held twice: a body that
    comes in one piece is that piece, a longer one is written into a buffer. Once a second piece
    shows the body is long, the buffer takes the declared length at once (zeroed memory the
    system maps only as it is written), so it is never copied to grow."""

    __slots__ = ("_buffer", "_declared", "_first", "size")

    def __init__(self, declared: int | None, limit: int) -> None:
        self._declared = declared if declared and declared <= limit else None
        self._first = b""
        self._buffer: io.BytesIO | None = None
        self.size = 0

    def add(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self._buffer is not None:
            self._buffer.write(chunk)
        elif not self._first:
            self._first = chunk
        else:
            declared = self._declared
            self._buffer = io.BytesIO(bytes(declared)) if declared else io.BytesIO()
            self._buffer.write(self._first)
            self._buffer.write(chunk)
            self._first = b""

    def take(self) -> bytes:
        """The body so far; the buffer is left empty."""
        buffer, first = self._buffer, self._first
        self._buffer, self._first, self.size = None, b"", 0
        if buffer is None:
            return first
        buffer.truncate()  # what a declared length promised but the stream did not bring
        return buffer.getvalue()


async def _in_worker_thread(function: Callable[..., T], raw: bytes, *args: Any) -> T:
    """``function(raw, *args)`` in a worker thread that holds ``raw`` no longer than the call:
    anyio's worker keeps its arguments a moment after reporting the result, and a second
    reference then would make ``take_with_member`` copy the body instead of editing it."""
    return await anyio.to_thread.run_sync(_call_with_held, function, [raw], *args)


def _call_with_held(function: Callable[..., T], held: list[bytes], *args: Any) -> T:
    return function(held.pop(), *args)


def _splice(buffer: io.BytesIO, size: int, start: int, end: int, value: bytes) -> bytes:
    """The buffer's ``size`` bytes with ``[start:end]`` replaced by ``value``: the tail is moved
    within the buffer, which is grown or shrunk in place (no second copy of the body)."""
    growth = len(value) - (end - start)
    if growth > 0:
        buffer.seek(0, io.SEEK_END)
        buffer.write(bytes(growth))
    with buffer.getbuffer() as view:
        view[start + len(value) : size + growth] = view[end:size]
        view[start : start + len(value)] = value
    if growth < 0:
        buffer.truncate(size + growth)
    return buffer.getvalue()


def _load_value(raw: bytes, start: int, end: int) -> Any:
    try:
        return json.loads(raw[start:end])
    except (ValueError, RecursionError):
        return None


async def read_request_body(
    scope: Scope, receive: Receive, send: Send, limit: int, *, lazy: bool = False
) -> RequestBody | None:
    """The whole body, or None when the client has been answered (413) or has gone away.
    ``lazy``: a large body is scanned, not parsed (see ``RequestBody``)."""
    length = declared_length(scope)
    if length is not None and length > limit:
        await body_too_large(limit)(scope, receive, send)
        return None
    return await answered_if_unread(
        scope, receive, send, limit, RequestBody.read(receive, limit, lazy=lazy, declared=length)
    )


async def answered_if_unread(
    scope: Scope, receive: Receive, send: Send, limit: int, reading: Awaitable[T]
) -> T | None:
    """What ``reading`` (a body's read) gives; None when it failed because the body is over
    ``limit`` (the client is answered 413) or the client went away."""
    try:
        return await reading
    except BodyTooLarge:
        await body_too_large(limit)(scope, receive, send)
    except ClientDisconnected:
        pass
    return None
