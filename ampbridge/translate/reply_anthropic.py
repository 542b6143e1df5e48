"""Anthropic Messages replies: the backend's events read into neutral events, and neutral events
written as the message_start / content_block_* / message_delta / message_stop stream (or one JSON
message)."""

from __future__ import annotations

import json
from typing import Any

from ampbridge.translate.conversation import Text, Thinking, ToolCall
from ampbridge.translate.events import (
    Event,
    Failure,
    Finish,
    Reply,
    Start,
    TextDelta,
    ThinkingDelta,
    ThinkingSignature,
    ToolArgs,
    ToolStart,
    Usage,
    new_id,
)
from ampbridge.translate.sse import sse_event


def _usage(raw: dict[str, Any], usage: Usage) -> None:
    cached = int(raw.get("cache_read_input_tokens") or 0)
    created = int(raw.get("cache_creation_input_tokens") or 0)
    if "input_tokens" in raw:
        usage.input_tokens = int(raw["input_tokens"] or 0) + cached + created
        usage.cached_tokens = cached
    if "output_tokens" in raw:
        usage.output_tokens = int(raw["output_tokens"] or 0)


class Decoder:
    def __init__(self) -> None:
        self._usage = Usage()
        self._reason = ""  # set by message_delta
        self._finished = False

    def event(self, name: str, data: str) -> list[Event]:
        message = json.loads(data)
        kind = message.get("type", name)
        if kind == "message_start":
            _usage(message["message"].get("usage") or {}, self._usage)
            return [Start(message["message"].get("id", ""))]
        if kind == "content_block_start":
            block = message.get("content_block") or {}
            if block.get("type") == "tool_use":
                return [ToolStart(str(message.get("index")), block.get("id", ""), block.get("name", ""))]
            if block.get("type") == "text" and block.get("text"):
                return [TextDelta(block["text"])]
            if block.get("type") == "thinking" and block.get("thinking"):
                return [ThinkingDelta(block["thinking"])]
            return []
        if kind == "content_block_delta":
            delta = message.get("delta") or {}
            return self._delta(delta, str(message.get("index")))
        if kind == "message_delta":
            self._reason = (message.get("delta") or {}).get("stop_reason") or "end_turn"
            _usage(message.get("usage") or {}, self._usage)
            return []
        if kind == "message_stop":
            return self.end()
        if kind == "error":
            error = message.get("error") or {}
            return [Failure(error.get("message", "backend error"), error.get("type", "api_error"))]
        return []

    @staticmethod
    def _delta(delta: dict[str, Any], key: str) -> list[Event]:
        kind = delta.get("type")
        if kind == "text_delta":
            return [TextDelta(delta.get("text", ""))]
        if kind == "thinking_delta":
            return [ThinkingDelta(delta.get("thinking", ""))]
        if kind == "signature_delta":
            return [ThinkingSignature(delta.get("signature", ""))]
        if kind == "input_json_delta":
            return [ToolArgs(key, delta.get("partial_json", ""))]
        return []

    def end(self) -> list[Event]:
        """The Finish, once the backend has said why it stopped (a cut stream gets none)."""
        if self._finished or not self._reason:
            return []
        self._finished = True
        return [Finish(self._reason, self._usage)]

    def whole(self, body: dict[str, Any]) -> list[Event]:
        events: list[Event] = [Start(body.get("id", ""))]
        for index, block in enumerate(body.get("content") or []):
            kind = block.get("type")
            if kind == "text":
                events.append(TextDelta(block.get("text", "")))
            elif kind == "thinking":
                events.append(ThinkingDelta(block.get("thinking", "")))
                if block.get("signature"):
                    events.append(ThinkingSignature(block["signature"]))
            elif kind == "tool_use":
                events.append(ToolStart(str(index), block.get("id", ""), block.get("name", "")))
                events.append(ToolArgs(str(index), json.dumps(block.get("input") or {})))
        usage = Usage()
        _usage(body.get("usage") or {}, usage)
        return [*events, Finish(body.get("stop_reason") or "end_turn", usage)]


def _usage_out(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens - usage.cached_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


class Encoder:
    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._index = -1
        self._open = ""  # "text", "thinking", or "tool:<key>"

    def _start(self, message_id: str = "") -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": message_id if message_id.startswith("msg_") else new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage_out(Usage()),
        }
        return sse_event({"type": "message_start", "message": message}, "message_start")

    def _close(self) -> bytes:
        if not self._open:
            return b""
        self._open = ""
        return sse_event({"type": "content_block_stop", "index": self._index}, "content_block_stop")

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        if self._open == kind:
            return b""
        out = self._close()
        self._index += 1
        self._open = kind
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return out + sse_event(start, "content_block_start")

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse_event(
            {"type": "content_block_delta", "index": self._index, "delta": delta}, "content_block_delta"
        )

    def encode(self, event: Event) -> bytes:
        if isinstance(event, Start):
            return self._start(event.id)
        out = self._start()
        if isinstance(event, TextDelta):
            out += self._open_block("text", {"type": "text", "text": ""})
            return out + self._delta({"type": "text_delta", "text": event.text})
        if isinstance(event, ThinkingDelta):
            out += self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            return out + self._delta({"type": "thinking_delta", "thinking": event.text})
        if isinstance(event, ThinkingSignature):
            return (
                out + self._delta({"type": "signature_delta", "signature": event.signature})
                if (self._open == "thinking")
                else out
            )
        if isinstance(event, ToolStart):
            block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
            return out + self._open_block(f"tool:{event.key}", block)
        if isinstance(event, ToolArgs):
            if self._open != f"tool:{event.key}":
                return out  # a late fragment of an earlier call; Anthropic blocks cannot reopen
            return out + self._delta({"type": "input_json_delta", "partial_json": event.fragment})
        if isinstance(event, Finish):
            delta = {
                "type": "message_delta",
                "delta": {"stop_reason": event.reason, "stop_sequence": None},
                "usage": _usage_out(event.usage),
            }
            return (
                out
                + self._close()
                + sse_event(delta, "message_delta")
                + sse_event({"type": "message_stop"}, "message_stop")
            )
        return out + sse_event(error_body(event.kind, event.message), "error")

    def end(self) -> bytes:
        return b""


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def render(reply: Reply, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for part in reply.parts:
        if isinstance(part, Text):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, Thinking):
            content.append({"type": "thinking", "thinking": part.text, "signature": part.signature})
        elif isinstance(part, ToolCall):
            try:
                arguments = json.loads(part.arguments or "{}")
            except ValueError:
                arguments = {}
            content.append({"type": "tool_use", "id": part.id, "name": part.name, "input": arguments})
    return {
        "id": reply.id if reply.id.startswith("msg_") else new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reply.reason,
        "stop_sequence": None,
        "usage": _usage_out(reply.usage),
    }
