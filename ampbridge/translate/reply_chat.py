"""OpenAI Chat Completions replies: ``chat.completion.chunk`` streams (ending in ``[DONE]``) and
``chat.completion`` objects, to and from neutral events."""

from __future__ import annotations

import json
import time
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
    ToolArgs,
    ToolStart,
    Usage,
    new_id,
    tool_calls_reason,
)

_REASONS_IN = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_REASONS_OUT = {
    "end_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "stop_sequence": "stop",
    "refusal": "content_filter",
    "pause_turn": "stop",
}


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int((raw.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
        reasoning_tokens=int((raw.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0),
    )


def _failure(error: Any) -> Failure:
    message = error.get("message", "backend error") if isinstance(error, dict) else str(error)
    return Failure(message)


class Decoder:
    def __init__(self) -> None:
        self._started = False
        self._finished = False
        self._reason = ""  # set by the chunk that carries finish_reason
        self._usage = Usage()
        self._tools: set[str] = set()

    def event(self, name: str, data: str) -> list[Event]:
        if data.strip() == "[DONE]":
            return self.end()
        chunk = json.loads(data)
        if "error" in chunk:
            return [_failure(chunk["error"])]
        events: list[Event] = []
        if not self._started:
            self._started = True
            events.append(Start(chunk.get("id", "")))
        self._usage = _usage(chunk.get("usage")) or self._usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                events.append(ThinkingDelta(reasoning))
            if delta.get("content"):
                events.append(TextDelta(delta["content"]))
            for call in delta.get("tool_calls") or []:
                key = str(call.get("index", 0))
                function = call.get("function") or {}
                if key not in self._tools:
                    self._tools.add(key)
                    events.append(ToolStart(key, call.get("id") or new_id("call_"), function.get("name", "")))
                if function.get("arguments"):
                    events.append(ToolArgs(key, function["arguments"]))
            if choice.get("finish_reason"):
                self._reason = _REASONS_IN.get(choice["finish_reason"], "end_turn")
        return events

    def end(self) -> list[Event]:
        """The Finish, once the backend has said why it stopped (a cut stream gets none)."""
        if self._finished or not self._reason:
            return []
        self._finished = True
        return [Finish(tool_calls_reason(self._reason, bool(self._tools)), self._usage)]

    def whole(self, body: dict[str, Any]) -> list[Event]:
        if "error" in body:
            return [_failure(body["error"])]
        events: list[Event] = [Start(body.get("id", ""))]
        choice = (body.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if reasoning:
            events.append(ThinkingDelta(reasoning))
        if message.get("content"):
            events.append(TextDelta(message["content"]))
        calls = message.get("tool_calls") or []
        for index, call in enumerate(calls):
            function = call.get("function") or {}
            events.append(ToolStart(str(index), call.get("id") or new_id("call_"), function.get("name", "")))
            events.append(ToolArgs(str(index), function.get("arguments") or "{}"))
        reason = _REASONS_IN.get(choice.get("finish_reason") or "stop", "end_turn")
        return [*events, Finish(tool_calls_reason(reason, bool(calls)), _usage(body.get("usage")) or Usage())]


def _usage_out(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _data(chunk: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def error_body(kind: str, message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class Encoder:
    def __init__(self, model: str) -> None:
        self._model = model
        self._id = new_id("chatcmpl-")
        self._created = int(time.time())
        self._started = False
        self._tools: dict[str, int] = {}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _data(
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [choice],
            }
        )

    def encode(self, event: Event) -> bytes:
        out = b""
        if not self._started:
            self._started = True
            out = self._chunk({"role": "assistant", "content": ""})
        if isinstance(event, TextDelta):
            out += self._chunk({"content": event.text})
        elif isinstance(event, ThinkingDelta):
            out += self._chunk({"reasoning_content": event.text})
        elif isinstance(event, ToolStart):
            self._tools[event.key] = index = len(self._tools)
            call = {
                "index": index,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            out += self._chunk({"tool_calls": [call]})
        elif isinstance(event, ToolArgs) and event.key in self._tools:
            call = {"index": self._tools[event.key], "function": {"arguments": event.fragment}}
            out += self._chunk({"tool_calls": [call]})
        elif isinstance(event, Finish):
            out += self._chunk({}, _REASONS_OUT.get(event.reason, "stop"))
            out += _data(
                {
                    "id": self._id,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._model,
                    "choices": [],
                    "usage": _usage_out(event.usage),
                }
            )
            out += b"data: [DONE]\n\n"
        elif isinstance(event, Failure):
            out += _data(error_body("server_error", event.message)) + b"data: [DONE]\n\n"
        return out

    def end(self) -> bytes:
        return b""


def render(reply: Reply, model: str) -> dict[str, Any]:
    text = "".join(p.text for p in reply.parts if isinstance(p, Text))
    reasoning = "".join(p.text for p in reply.parts if isinstance(p, Thinking))
    calls = [
        {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments or "{}"}}
        for p in reply.parts
        if isinstance(p, ToolCall)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _REASONS_OUT.get(reply.reason, "stop"),
            }
        ],
        "usage": _usage_out(reply.usage),
    }
