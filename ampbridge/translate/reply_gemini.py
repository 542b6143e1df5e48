"""Gemini replies: ``GenerateContentResponse`` chunks (an SSE stream with ``alt=sse``, a JSON array
without it) and the single JSON response, to and from neutral events.

Gemini sends a function call whole, so a call read from another dialect's stream is written out
once its arguments are complete (at the next event of another kind).
"""

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
    ToolArgs,
    ToolStart,
    Usage,
    new_id,
    tool_calls_reason,
)

_REASONS_IN = {
    "STOP": "end_turn",
    "MAX_TOKENS": "max_tokens",
    "SAFETY": "refusal",
    "RECITATION": "refusal",
    "PROHIBITED_CONTENT": "refusal",
    "BLOCKLIST": "refusal",
    "SPII": "refusal",
}
_REASONS_OUT = {
    "end_turn": "STOP",
    "tool_use": "STOP",
    "stop_sequence": "STOP",
    "max_tokens": "MAX_TOKENS",
    "refusal": "SAFETY",
}


def _usage(raw: Any) -> Usage:
    raw = raw if isinstance(raw, dict) else {}
    thoughts = int(raw.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(raw.get("promptTokenCount") or 0),
        output_tokens=int(raw.get("candidatesTokenCount") or 0) + thoughts,
        cached_tokens=int(raw.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


class Decoder:
    def __init__(self) -> None:
        self._started = False
        self._finished = False
        self._calls = 0

    def event(self, name: str, data: str) -> list[Event]:
        return self._chunk(json.loads(data))

    def _chunk(self, chunk: dict[str, Any]) -> list[Event]:
        if "error" in chunk:
            error = chunk["error"]
            return [Failure(error.get("message", "backend error") if isinstance(error, dict) else str(error))]
        events: list[Event] = []
        if not self._started:
            self._started = True
            events.append(Start(chunk.get("responseId", "")))
        candidate = (chunk.get("candidates") or [{}])[0]
        for part in (candidate.get("content") or {}).get("parts") or []:
            if "functionCall" in part:
                call = part["functionCall"]
                self._calls += 1
                key = str(self._calls)
                events.append(ToolStart(key, call.get("id") or new_id("call_"), call.get("name", "")))
                events.append(ToolArgs(key, json.dumps(call.get("args") or {})))
            elif part.get("text"):
                events.append(ThinkingDelta(part["text"]) if part.get("thought") else TextDelta(part["text"]))
        reason = candidate.get("finishReason")
        if reason and not self._finished:
            self._finished = True
            finish = tool_calls_reason(_REASONS_IN.get(reason, "end_turn"), self._calls > 0)
            events.append(Finish(finish, _usage(chunk.get("usageMetadata"))))
        return events

    def end(self) -> list[Event]:
        return []

    def whole(self, body: Any) -> list[Event]:
        events: list[Event] = []
        for chunk in body if isinstance(body, list) else [body]:  # a streamed call answered as an array
            events.extend(self._chunk(chunk))
        if not self._finished and not any(isinstance(e, Failure) for e in events):
            events.append(Finish(tool_calls_reason("end_turn", self._calls > 0), Usage()))
        return events


def _usage_out(usage: Usage) -> dict[str, int]:
    return {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": usage.output_tokens - usage.reasoning_tokens,
        "thoughtsTokenCount": usage.reasoning_tokens,
        "cachedContentTokenCount": usage.cached_tokens,
        "totalTokenCount": usage.input_tokens + usage.output_tokens,
    }


def _call_part(call: ToolCall) -> dict[str, Any]:
    try:
        args = json.loads(call.arguments or "{}")
    except ValueError:
        args = {}
    return {"functionCall": {"id": call.id, "name": call.name, "args": args}}


def error_body(code: int, message: str, status: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


class Encoder:
    def __init__(self, model: str, *, sse: bool) -> None:
        self._model = model
        self._sse = sse
        self._id = new_id("")
        self._chunks = 0
        self._call: ToolCall | None = None  # a call whose arguments are still arriving
        self._calls: dict[str, ToolCall] = {}

    def _write(self, chunk: dict[str, Any]) -> bytes:
        body = json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)
        self._chunks += 1
        if self._sse:
            return f"data: {body}\r\n\r\n".encode()
        return ("[" if self._chunks == 1 else ",\r\n").encode() + body.encode()

    def _parts(self, parts: list[dict[str, Any]], **candidate: Any) -> dict[str, Any]:
        return {
            "candidates": [{"content": {"role": "model", "parts": parts}, "index": 0, **candidate}],
            "modelVersion": self._model,
            "responseId": self._id,
        }

    def _flush_call(self) -> bytes:
        call, self._call = self._call, None
        return self._write(self._parts([_call_part(call)])) if call else b""

    def encode(self, event: Event) -> bytes:
        if isinstance(event, ToolArgs):
            if event.key in self._calls:
                self._calls[event.key].arguments += event.fragment
            return b""
        out = b"" if isinstance(event, Start) else self._flush_call()
        if isinstance(event, TextDelta):
            out += self._write(self._parts([{"text": event.text}]))
        elif isinstance(event, ThinkingDelta):
            out += self._write(self._parts([{"text": event.text, "thought": True}]))
        elif isinstance(event, ToolStart):
            self._call = self._calls[event.key] = ToolCall(event.id, event.name, "")
        elif isinstance(event, Finish):
            chunk = self._parts([{"text": ""}], finishReason=_REASONS_OUT.get(event.reason, "STOP"))
            out += self._write({**chunk, "usageMetadata": _usage_out(event.usage)})
        elif isinstance(event, Failure):
            out += self._write(error_body(500, event.message, "INTERNAL"))
        return out

    def end(self) -> bytes:
        out = self._flush_call()
        if not self._sse:
            out += b"]" if self._chunks else b"[]"
        return out


def render(reply: Reply, model: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for part in reply.parts:
        if isinstance(part, Text):
            parts.append({"text": part.text})
        elif isinstance(part, Thinking):
            parts.append({"text": part.text, "thought": True})
        elif isinstance(part, ToolCall):
            parts.append(_call_part(part))
    candidate = {
        "content": {"role": "model", "parts": parts},
        "index": 0,
        "finishReason": _REASONS_OUT.get(reply.reason, "STOP"),
    }
    return {
        "candidates": [candidate],
        "usageMetadata": _usage_out(reply.usage),
        "modelVersion": model,
        "responseId": reply.id or new_id(""),
    }
