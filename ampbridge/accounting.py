"""Token usage read from model replies while they pass, without changing or delaying a byte.

Every reply shape a model call can have is read: a JSON body, an SSE stream, and Gemini's
JSON-array stream (``streamGenerateContent`` without ``alt=sse``), in the four wire dialects.
:class:`UsageWatchingSend` wraps an ASGI ``send``: each message goes on untouched first, and is
looked at after; when the reply ends it reports status, tokens, time to first byte and duration.

Counts are normalised so rows from different providers add up: ``input_tokens`` is every prompt
token including cached ones (Anthropic reports cache reads and writes apart from
``input_tokens``; OpenAI and Gemini count them inside), ``cache_read_tokens`` and
``cache_creation_tokens`` say how many of those came from or went into a prompt cache, and
``output_tokens`` includes reasoning/thinking tokens. Anthropic's stream reports input usage in
``message_start`` and cumulative usage in each ``message_delta``: a later figure replaces an
earlier one, it is never added to it.
"""

from __future__ import annotations

import json
import logging
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from .translate.dialect import Dialect

logger = logging.getLogger("ampbridge.accounting")

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

# Past this many bytes of one JSON body or one SSE event, the reply is passed on unread.
MAX_READ_BYTES = 16 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0


def _count(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _dict(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, dict) else None


class _AnthropicUsage:
    """Fields from later events replace earlier ones: ``message_delta`` usage is cumulative."""

    def __init__(self) -> None:
        self.fields: dict[str, int] = {}

    def feed(self, event: Mapping[str, Any]) -> None:
        message = _dict(event.get("message"))
        usage = _dict(event.get("usage")) or (_dict(message.get("usage")) if message else None)
        if usage is None:
            return
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ):
            if isinstance(usage.get(key), int):
                self.fields[key] = _count(usage, key)

    def total(self) -> TokenUsage | None:
        if not self.fields:
            return None
        cache_read = self.fields.get("cache_read_input_tokens", 0)
        cache_creation = self.fields.get("cache_creation_input_tokens", 0)
        return TokenUsage(
            input_tokens=self.fields.get("input_tokens", 0) + cache_read + cache_creation,
            output_tokens=self.fields.get("output_tokens", 0),
            cache_read_tokens=cache_read,
            cache_creation_tokens=cache_creation,
        )


class _LastUsage:
    """OpenAI and Gemini report running totals: the last report is the answer."""

    def __init__(self, pick: Callable[[Mapping[str, Any]], TokenUsage | None]) -> None:
        self.pick = pick
        self.last: TokenUsage | None = None

    def feed(self, event: Mapping[str, Any]) -> None:
        usage = self.pick(event)
        if usage is not None:
            self.last = usage

    def total(self) -> TokenUsage | None:
        return self.last


def _openai_chat(event: Mapping[str, Any]) -> TokenUsage | None:
    usage = _dict(event.get("usage"))
    if usage is None:
        return None
    details = _dict(usage.get("prompt_tokens_details")) or {}
    return TokenUsage(
        input_tokens=_count(usage, "prompt_tokens"),
        output_tokens=_count(usage, "completion_tokens"),
        cache_read_tokens=_count(details, "cached_tokens"),
    )


def _openai_responses(event: Mapping[str, Any]) -> TokenUsage | None:
    response = _dict(event.get("response"))  # stream events wrap the response object
    usage = _dict((response or event).get("usage"))
    if usage is None:
        return None
    details = _dict(usage.get("input_tokens_details")) or {}
    return TokenUsage(
        input_tokens=_count(usage, "input_tokens"),
        output_tokens=_count(usage, "output_tokens"),
        cache_read_tokens=_count(details, "cached_tokens"),
    )


def _gemini(event: Mapping[str, Any]) -> TokenUsage | None:
    usage = _dict(event.get("usageMetadata"))
    if usage is None:
        return None
    return TokenUsage(
        input_tokens=_count(usage, "promptTokenCount"),
        output_tokens=_count(usage, "candidatesTokenCount") + _count(usage, "thoughtsTokenCount"),
        cache_read_tokens=_count(usage, "cachedContentTokenCount"),
    )


class UsageTally:
    """The usage of one reply, fed the reply's JSON objects (the body, or each stream event)."""

    def __init__(self, dialect: str | None) -> None:
        """``dialect`` None: a reply that carries no token usage (a token count, say)."""
        self.reader: _AnthropicUsage | _LastUsage | None = _READERS[str(dialect)]() if dialect else None

    def feed(self, event: Any) -> None:
        if self.reader is not None and isinstance(event, dict):
            self.reader.feed(event)

    def total(self) -> TokenUsage | None:
        return self.reader.total() if self.reader is not None else None


_READERS: dict[str, Callable[[], _AnthropicUsage | _LastUsage]] = {
    Dialect.ANTHROPIC: _AnthropicUsage,
    Dialect.CHAT: lambda: _LastUsage(_openai_chat),
    Dialect.RESPONSES: lambda: _LastUsage(_openai_responses),
    Dialect.GEMINI: lambda: _LastUsage(_gemini),
}


# Every usage field is named "usage" (Anthropic, OpenAI) or "usageMetadata" (Gemini): a body or an
# event without these bytes carries none, and is not parsed.
_USAGE = b"usage"
# A chunk ending so ends with a blank line: it holds whole events only.
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n")


def _parse(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


class _JsonBody:
    """A whole JSON body, read when it ends."""

    def __init__(self, tally: UsageTally) -> None:
        self.tally = tally
        self.chunks: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        if self.size <= MAX_READ_BYTES:
            self.chunks.append(data)

    def end(self) -> None:
        if self.size <= MAX_READ_BYTES:
            body = b"".join(self.chunks)
            if _USAGE in body:
                self.tally.feed(_parse(body))
        self.chunks = []


class _SseStream:
    """SSE events, split at any byte; only events that mention usage are parsed."""

    def __init__(self, tally: UsageTally) -> None:
        self.tally = tally
        self.partial: list[bytes] = []  # an unfinished line, in pieces
        self.partial_size = 0
        self.data: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> None:
        if not self.partial and not self.data and data.endswith(_EVENT_ENDS) and _USAGE not in data:
            # Whole events, none of which mentions usage, and nothing held from earlier ones.
            self.size = 0
            return
        if b"\n" not in data and b"\r" not in data:
            self.partial.append(data)
            self.partial_size += len(data)
            if self.partial_size > MAX_READ_BYTES:  # a line too long to read: skip its event
                self.partial, self.partial_size, self.size = [], 0, MAX_READ_BYTES + 1
            return
        lines = (b"".join(self.partial) + data).splitlines(keepends=True)
        tail = lines.pop() if not lines[-1].endswith((b"\n", b"\r")) else None
        if tail is None and lines[-1].endswith(b"\r"):
            tail = lines.pop()  # a CR at a chunk's end may be the first half of a CRLF
        self.partial = [tail] if tail else []
        self.partial_size = len(tail) if tail else 0
        for line in lines:
            self._line(line.rstrip(b"\r\n"))

    def _line(self, line: bytes) -> None:
        if not line:
            self._dispatch()
        elif line.startswith(b"data:"):
            value = line[5:]
            value = value[1:] if value.startswith(b" ") else value
            self.size += len(value)
            if self.size <= MAX_READ_BYTES:
                self.data.append(value)

    def _dispatch(self) -> None:
        if self.data and self.size <= MAX_READ_BYTES:
            data = b"\n".join(self.data)
            if _USAGE in data:
                self.tally.feed(_parse(data))
        self.data, self.size = [], 0

    def end(self) -> None:
        last = b"".join(self.partial).rstrip(b"\r\n")
        if last:
            self._line(last)
        self.partial, self.partial_size = [], 0
        self._dispatch()


_JSON_STRUCTURE = re.compile(rb'[{}\[\]"\\]')


class _JsonArrayStream:
    """Gemini's stream without ``alt=sse``: ``[{...},\\n{...}]``, each element read when it closes.
    Only the bytes that shape JSON (brackets, quotes, backslashes) are looked at one by one."""

    def __init__(self, tally: UsageTally) -> None:
        self.tally = tally
        self.depth = 0
        self.in_string = False
        self.escaped_at: int | None = None  # where the byte after a backslash is, in this chunk
        self.element: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> None:
        start = 0 if self.depth > 1 else None
        for match in _JSON_STRUCTURE.finditer(data):
            char, index = match.group(), match.start()
            escaped, self.escaped_at = self.escaped_at == index, None
            if self.in_string:
                if char == b"\\" and not escaped:
                    self.escaped_at = index + 1
                elif char == b'"' and not escaped:
                    self.in_string = False
            elif char == b'"':
                self.in_string = True
            elif char in (b"{", b"["):
                self.depth += 1
                if self.depth == 2:
                    start = index
            elif char in (b"}", b"]"):
                self.depth -= 1
                if self.depth == 1 and start is not None:
                    self._keep(data[start : index + 1])
                    self._element_done()
                    start = None
        self.escaped_at = 0 if self.escaped_at == len(data) else None
        if start is not None and self.depth > 1:
            self._keep(data[start:])

    def _keep(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.size <= MAX_READ_BYTES:
            self.element.append(piece)

    def _element_done(self) -> None:
        if self.size <= MAX_READ_BYTES:
            element = b"".join(self.element)
            if _USAGE in element:
                self.tally.feed(_parse(element))
        self.element, self.size = [], 0

    def end(self) -> None:
        self.element = []


_FIRST_NON_SPACE = re.compile(rb"[^ \t\r\n\f\v]")


class _Sniffed:
    """A JSON reply: an array stream when its first byte is ``[``, else one JSON body."""

    def __init__(self, tally: UsageTally) -> None:
        self.tally = tally
        self.reader: _JsonBody | _JsonArrayStream | None = None

    def feed(self, data: bytes) -> None:
        if self.reader is None:
            first = _FIRST_NON_SPACE.search(data)
            if first is None:
                return
            self.reader = _JsonArrayStream(self.tally) if first.group() == b"[" else _JsonBody(self.tally)
        self.reader.feed(data)

    def end(self) -> None:
        if self.reader is not None:
            self.reader.end()


class _Decompressing:
    """Reads a gzip or deflate body (labelled, or gzip sent without a label) through to ``inner``."""

    def __init__(self, inner: _SseStream | _Sniffed, *, labelled: bool) -> None:
        self.inner = inner
        self.decoder: Any = zlib.decompressobj(wbits=47) if labelled else None  # 47: gzip or zlib
        self.sniffed = labelled
        self.broken = False

    def feed(self, data: bytes) -> None:
        if self.broken or not data:
            return
        if not self.sniffed:
            self.sniffed = True
            if data.startswith(_GZIP_MAGIC):
                self.decoder = zlib.decompressobj(wbits=47)
        if self.decoder is None:
            self.inner.feed(data)
            return
        try:
            self.inner.feed(self.decoder.decompress(data, MAX_READ_BYTES))
        except zlib.error:
            self.broken = True
        if self.decoder.unconsumed_tail:  # expands past what we read: leave it unread
            self.broken = True

    def end(self) -> None:
        if not self.broken:
            self.inner.end()


def reply_reader(tally: UsageTally, *, content_type: str, content_encoding: str) -> _Decompressing | None:
    """How to read a reply's body for usage, or ``None`` when it cannot carry any we can read."""
    encoding = content_encoding.strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
        return None  # br, zstd: not decoded here; the call is recorded without tokens
    media = content_type.split(";", 1)[0].strip().lower()
    inner: _SseStream | _Sniffed
    if media == "text/event-stream":
        inner = _SseStream(tally)
    elif media.endswith("json") or media == "":
        inner = _Sniffed(tally)
    else:
        return None
    return _Decompressing(inner, labelled=encoding not in ("", "identity"))


def _reply_kind(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str]:
    """A reply's ``Content-Type`` and ``Content-Encoding`` (the last of each, any name case)."""
    content_type = content_encoding = b""
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-type":
            content_type = value
        elif lower == b"content-encoding":
            content_encoding = value
    return content_type.decode("latin-1"), content_encoding.decode("latin-1")


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    """How one reply went, as seen on its way to the client."""

    status: int  # 0 when no response was started
    usage: TokenUsage | None  # None when the reply carried no usage we could read
    ttfb: float | None  # seconds from the call's start to its first body bytes
    duration: float  # seconds from the call's start to its end
    completed: bool  # the whole body went to the client


class UsageWatchingSend:
    """An ASGI ``send`` that passes every message on untouched and at once, reads token usage
    after each one has gone, and calls ``on_finish`` once when the reply ends (or when
    :meth:`finish` is called for a reply that stopped early: a gone client, a failed app)."""

    def __init__(
        self,
        send: Send,
        *,
        dialect: str | None,
        on_finish: Callable[[ReplyOutcome], None],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.send = send
        self.tally = UsageTally(dialect)
        self.on_finish = on_finish
        self.clock = clock
        self.started = clock()
        self.status = 0
        self.ttfb: float | None = None
        self.reader: _Decompressing | None = None
        self.finished = False

    async def __call__(self, message: Message) -> None:
        await self.send(message)
        kind = message["type"]
        if kind == "http.response.start":
            self.status = int(message["status"])
            if self.tally.reader is not None:
                content_type, content_encoding = _reply_kind(message.get("headers", ()))
                self.reader = reply_reader(
                    self.tally, content_type=content_type, content_encoding=content_encoding
                )
        elif kind == "http.response.body":
            body = message.get("body", b"")
            if self.ttfb is None and (body or not message.get("more_body", False)):
                self.ttfb = self.clock() - self.started
            if self.reader is not None and body:
                self.reader.feed(bytes(body))
            if not message.get("more_body", False):
                self._finish(completed=True)
        elif kind == "http.response.pathsend":
            self._finish(completed=True)

    def finish(self) -> None:
        """Report now if the reply has not ended; call it in a ``finally`` after the app returns."""
        self._finish(completed=False)

    def _finish(self, *, completed: bool) -> None:
        if self.finished:
            return
        self.finished = True
        if completed and self.reader is not None:
            self.reader.end()
        now = self.clock()
        outcome = ReplyOutcome(
            status=self.status,
            usage=self.tally.total(),
            ttfb=self.ttfb,
            duration=now - self.started,
            completed=completed,
        )
        try:
            self.on_finish(outcome)
        except Exception:  # a broken observer must never break a reply
            logger.exception("usage observer failed")
