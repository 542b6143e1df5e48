"""Amp compatibility fixes for local and mapped model calls (SPEC §9).

Requests: assistant ``thinking`` blocks without a valid signature (a string with something in it
besides whitespace) are dropped and ``signature`` is removed from ``tool_use`` blocks, since local
backends reject both. A byte check tells a large body that cannot need this from one that must be
parsed to know.

Responses (JSON bodies and SSE streams, event by event): a mapped call's model name is put back
to what Amp asked for; tool names get the casing of the request's ``tools`` (Amp's tool whitelist
is case-sensitive); Anthropic ``tool_use`` and ``thinking`` blocks get a ``signature`` when they
lack one. An event that needs no change is passed on byte for byte, and a cheap byte check skips
JSON parsing for the many events that cannot need one. Response header names are matched in any
case (Go servers and nginx send ``Content-Type``), and a changed body carries exactly one length.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .headers import header_value, with_content_length
from .jsonutil import dump_json
from .models import WireFormat

# --- requests ------------------------------------------------------------------------------


def sanitize_anthropic_request(payload: dict[str, Any]) -> bool:
    """Fix assistant blocks in place; True when something changed."""
    changed = False
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return False
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        if not isinstance(content, list):
            continue
        kept: list[Any] = []
        touched = False
        for block in content:
            if isinstance(block, dict):
                kind = block.get("type")
                if kind == "thinking" and not _valid_signature(block.get("signature")):
                    touched = True
                    continue
                if kind == "tool_use" and "signature" in block:
                    block = {key: value for key, value in block.items() if key != "signature"}
                    touched = True
            kept.append(block)
        if touched:
            message["content"] = kept
            changed = True
    return changed


# Any ``\u`` escape of a lower-case ASCII letter: it could spell "thinking" or "signature".
_ESCAPED_LOWER_CASE = re.compile(rb"\\u00[67][0-9a-fA-F]")


def anthropic_request_may_change(body: bytes, start: int, end: int) -> bool:
    """Whether ``sanitize_anthropic_request`` could change a request whose ``messages`` value is
    ``body[start:end]``, judged from the bytes alone (no copy, no parsing): a block it drops or
    edits has a ``"thinking"`` type or a ``"signature"`` key, which JSON can only write literally
    or with escaped letters. False proves that nothing changes."""
    return (
        body.find(b'"thinking"', start, end) >= 0
        or body.find(b'"signature"', start, end) >= 0
        or _ESCAPED_LOWER_CASE.search(body, start, end) is not None
    )


def _valid_signature(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def requested_tool_names(payload: dict[str, Any]) -> dict[str, str]:
    """``lower-case name -> name as the request spelled it`` for every declared tool."""
    names: dict[str, str] = {}
    tools = payload.get("tools")
    if not isinstance(tools, list):
        return names
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        candidates = [tool.get("name")]
        function = tool.get("function")
        if isinstance(function, dict):
            candidates.append(function.get("name"))
        for key in ("functionDeclarations", "function_declarations"):
            declarations = tool.get(key)
            if isinstance(declarations, list):
                candidates.extend(d.get("name") for d in declarations if isinstance(d, dict))
        for name in candidates:
            if isinstance(name, str):
                names[name.lower()] = name
    return names


# --- responses -----------------------------------------------------------------------------

_MODEL_MARKER = b'"model'
_TOOL_MARKERS = (b'"tool_use"', b'"function_call"', b'"tool_calls"', b'"functionCall"')
_SIGNATURE_MARKERS = (b'"tool_use"', b'"thinking"')


@functools.cache  # eight combinations at most, each made once
def _markers(
    model: bool, tools: bool, signatures: bool
) -> tuple[tuple[bytes, ...], re.Pattern[bytes] | None]:
    """The markers of the fixes that apply, and one pattern that finds any of them in one scan
    (an ``in`` per marker would scan once per marker)."""
    markers: list[bytes] = []
    if model:
        markers.append(_MODEL_MARKER)
    if tools:
        markers.extend(_TOOL_MARKERS)
    if signatures:
        markers.extend(_SIGNATURE_MARKERS)
    unique = tuple(dict.fromkeys(markers))
    return unique, re.compile(b"|".join(map(re.escape, unique))) if unique else None


class ResponseFixer:
    """Applies the response fixes to one parsed JSON value (a body or an SSE event's data)."""

    def __init__(
        self, *, wire_format: WireFormat, requested_model: str | None, tool_names: dict[str, str]
    ) -> None:
        self.model = requested_model
        self.tool_names = tool_names
        self.signatures = wire_format is WireFormat.ANTHROPIC
        self._find_markers()

    def add_tool_names(self, names: dict[str, str]) -> None:
        """Learn the request's tool names after the fixer was made (before its reply starts):
        a body forwarded while it arrives shows its ``tools`` only at its end."""
        self.tool_names.update(names)
        self._find_markers()

    def _find_markers(self) -> None:
        self.markers, self._marker_pattern = _markers(
            bool(self.model), bool(self.tool_names), self.signatures
        )

    @property
    def active(self) -> bool:
        return bool(self.markers)

    def may_change(self, raw: bytes) -> bool:
        """False when ``raw`` (a body, an event or several) has no marker: no fix can apply."""
        return self._marker_pattern is not None and self._marker_pattern.search(raw) is not None

    def fix(self, value: Any) -> bool:
        if isinstance(value, list):
            return any([self.fix(item) for item in value])
        if not isinstance(value, dict):
            return False
        changed = False
        if self.model:
            changed |= self._restore_model(value)
            for key in ("message", "response"):
                if isinstance(inner := value.get(key), dict):
                    changed |= self._restore_model(inner)
        for block in _content_blocks(value):
            changed |= self._fix_block(block)
        for function in _function_calls(value):
            changed |= self._fix_name(function)
        return changed

    def _restore_model(self, value: dict[str, Any]) -> bool:
        changed = False
        for key in ("model", "modelVersion"):
            if isinstance(value.get(key), str) and value[key] != self.model:
                value[key] = self.model
                changed = True
        return changed

    def _fix_block(self, block: dict[str, Any]) -> bool:
        kind = block.get("type")
        changed = False
        if kind in ("tool_use", "function_call"):
            changed |= self._fix_name(block)
        if self.signatures and kind in ("tool_use", "thinking") and "signature" not in block:
            block["signature"] = ""
            changed = True
        return changed

    def _fix_name(self, holder: dict[str, Any]) -> bool:
        name = holder.get("name")
        if not isinstance(name, str):
            return False
        wanted = self.tool_names.get(name.lower())
        if wanted is None or wanted == name:
            return False
        holder["name"] = wanted
        return True


def _content_blocks(value: dict[str, Any]) -> list[dict[str, Any]]:
    """Anthropic content blocks and OpenAI Responses output items found in one value."""
    found: list[Any] = []
    for holder in (value, value.get("message"), value.get("response")):
        if isinstance(holder, dict):
            for key in ("content", "output"):
                if isinstance(items := holder.get(key), list):
                    found.extend(items)
    for key in ("content_block", "item"):
        found.append(value.get(key))
    return [block for block in found if isinstance(block, dict)]


def _function_calls(value: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAI chat ``tool_calls[].function`` and Gemini ``functionCall`` objects."""
    found: list[Any] = []
    for choice in _dicts(value.get("choices")):
        for part in (choice.get("message"), choice.get("delta")):
            if isinstance(part, dict):
                found.extend(call.get("function") for call in _dicts(part.get("tool_calls")))
    for candidate in _dicts(value.get("candidates")):
        content = candidate.get("content")
        if isinstance(content, dict):
            found.extend(part.get("functionCall") for part in _dicts(content.get("parts")))
    return [function for function in found if isinstance(function, dict)]


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


# --- SSE ------------------------------------------------------------------------------------

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_WHOLE_EVENTS = (b"\n\n", b"\r\n\r\n")  # a chunk that ends so holds whole events only
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n|$)")


class SseRewriter:
    """Rewrites an SSE byte stream event by event, whatever the chunk boundaries. Bytes of an
    event that is not complete yet are held until its blank line arrives."""

    def __init__(self, fixer: ResponseFixer) -> None:
        self.fixer = fixer
        self.pending = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self.pending and chunk.endswith(_WHOLE_EVENTS) and not self.fixer.may_change(chunk):
            return chunk  # whole events (the usual chunk), none of which a fix applies to
        data = self.pending + chunk if self.pending else chunk
        scan_from = max(0, len(self.pending) - 3)
        out: list[bytes] = []
        start = 0
        for end in _EVENT_END.finditer(data, scan_from):
            out.append(self.rewrite_event(data[start : end.end()]))
            start = end.end()
        self.pending = data[start:]
        return b"".join(out) if len(out) != 1 else out[0]

    def flush(self) -> bytes:
        rest, self.pending = self.pending, b""
        return self.rewrite_event(rest) if rest else b""

    def rewrite_event(self, event: bytes) -> bytes:
        if not self.fixer.may_change(event):
            return event
        lines = _LINE.findall(event)
        data_lines = [i for i, line in enumerate(lines) if line.startswith(b"data:")]
        if len(data_lines) != 1:
            return event  # multi-line data is passed on as it is
        index = data_lines[0]
        line = lines[index]
        body = line[5:].rstrip(b"\r\n")
        ending = line[5 + len(body) :]
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            return event
        if not self.fixer.fix(value):
            return event
        lines[index] = b"data: " + dump_json(value) + ending
        return b"".join(lines)


# --- the ASGI side -----------------------------------------------------------------------------


async def call_with_fixes(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, fixer: ResponseFixer, *, max_json_size: int
) -> None:
    """Run ``app`` with its response fixed by a ``RewritingSend`` (finished when the app returns)."""
    rewriting = RewritingSend(send, fixer, max_json_size=max_json_size)
    await app(scope, receive, rewriting)
    await rewriting.finish()


class RewritingSend:
    """Wraps ``send`` for one local response: SSE is rewritten as it streams; a JSON body is
    collected (up to ``max_json_size``), fixed and sent with a corrected length. Errors,
    encoded bodies and other types pass through untouched."""

    def __init__(self, send: Send, fixer: ResponseFixer, *, max_json_size: int) -> None:
        self.send = send
        self.fixer = fixer
        self.max_json_size = max_json_size
        self.mode = "pass"
        self.start: Message | None = None
        self.collected: list[bytes] = []
        self.collected_size = 0
        self.sse: SseRewriter | None = None

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._start(message)
        elif kind == "http.response.body" and self.mode == "sse":
            await self._sse_body(message)
        elif kind == "http.response.body" and self.mode == "json":
            await self._json_body(message)
        else:
            await self.send(message)

    async def _start(self, message: Message) -> None:
        headers = message.get("headers", [])
        content_type = (header_value(headers, b"content-type") or b"").lower()
        encoding = (header_value(headers, b"content-encoding") or b"identity").strip().lower()
        if message["status"] >= 400 or encoding != b"identity" or not self.fixer.active:
            await self.send(message)
        elif content_type.startswith(b"text/event-stream"):
            self.mode, self.sse = "sse", SseRewriter(self.fixer)
            await self.send({**message, "headers": with_content_length(headers, None)})
        elif b"json" in content_type:
            self.mode, self.start = "json", message
        else:
            await self.send(message)

    async def _sse_body(self, message: Message) -> None:
        assert self.sse is not None
        more = message.get("more_body", False)
        body = message.get("body", b"")
        data = self.sse.feed(body)
        if not more and (rest := self.sse.flush()):
            data += rest
        if data is body and body:
            await self.send(message)  # passed on as it came
        elif data or not more:
            await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def _json_body(self, message: Message) -> None:
        body = message.get("body", b"")
        self.collected.append(body)
        self.collected_size += len(body)
        more = message.get("more_body", False)
        if self.collected_size > self.max_json_size:
            await self._give_up(more)
        elif not more:
            await self._send_fixed()

    async def _give_up(self, more: bool) -> None:
        """Too large to rewrite: send what was held as it was and pass the rest through."""
        assert self.start is not None
        start, self.start = self.start, None
        self.mode = "pass"
        await self.send(start)
        await self.send({"type": "http.response.body", "body": b"".join(self.collected), "more_body": more})
        self.collected = []

    async def finish(self) -> None:
        """Call once the app has returned. A JSON reply it never completed (its source broke off)
        is passed on as far as it came and left open, so the server cuts the connection just as
        without the rewrite, rather than answering 500 for a reply whose start it never saw."""
        if self.mode == "json" and self.start is not None:
            await self._give_up(more=True)

    async def _send_fixed(self) -> None:
        assert self.start is not None
        body = b"".join(self.collected)
        self.collected = []
        if self.fixer.may_change(body):
            try:
                value = json.loads(body)
            except (ValueError, RecursionError):
                value = None
            if value is not None and self.fixer.fix(value):
                body = dump_json(value)
                headers = with_content_length(self.start.get("headers", []), len(body))
                self.start = {**self.start, "headers": headers}
        start, self.start = self.start, None
        await self.send(start)
        await self.send({"type": "http.response.body", "body": body, "more_body": False})
