"""OpenAI Responses replies: the ``response.*`` event stream (with sequence numbers) and the
``response`` object, to and from neutral events."""

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
from ampbridge.translate.sse import sse_event


def _usage(raw: Any) -> Usage:
    raw = raw if isinstance(raw, dict) else {}
    return Usage(
        input_tokens=int(raw.get("input_tokens") or 0),
        output_tokens=int(raw.get("output_tokens") or 0),
        cached_tokens=int((raw.get("input_tokens_details") or {}).get("cached_tokens") or 0),
        reasoning_tokens=int((raw.get("output_tokens_details") or {}).get("reasoning_tokens") or 0),
    )


def _finish(response: dict[str, Any], saw_tool_call: bool) -> Finish:
    reason = "end_turn"
    if response.get("status") == "incomplete":
        cause = (response.get("incomplete_details") or {}).get("reason")
        reason = "refusal" if cause == "content_filter" else "max_tokens"
    return Finish(tool_calls_reason(reason, saw_tool_call), _usage(response.get("usage")))


class Decoder:
    def __init__(self) -> None:
        self._finished = False
        self._tools: dict[str, bool] = {}  # item id -> whether its arguments came as deltas

    def event(self, name: str, data: str) -> list[Event]:
        message = json.loads(data)
        kind = message.get("type", name)
        if kind == "response.created":
            return [Start((message.get("response") or {}).get("id", ""))]
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            return [TextDelta(message.get("delta", ""))]
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            return [ThinkingDelta(message.get("delta", ""))]
        item = message.get("item") or {}
        if kind == "response.output_item.added" and item.get("type") == "function_call":
            key = item.get("id") or str(message.get("output_index"))
            self._tools[key] = False
            events: list[Event] = [ToolStart(key, item.get("call_id", ""), item.get("name", ""))]
            if item.get("arguments"):
                self._tools[key] = True
                events.append(ToolArgs(key, item["arguments"]))
            return events
        if kind == "response.function_call_arguments.delta":
            key = message.get("item_id") or str(message.get("output_index"))
            self._tools[key] = True
            return [ToolArgs(key, message.get("delta", ""))]
        if kind == "response.output_item.done" and item.get("type") == "function_call":
            key = item.get("id") or str(message.get("output_index"))
            if not self._tools.get(key) and item.get("arguments"):
                self._tools[key] = True
                return [ToolArgs(key, item["arguments"])]
            return []
        if kind in ("response.completed", "response.incomplete"):
            self._finished = True
            return [_finish(message.get("response") or {}, bool(self._tools))]
        if kind == "response.failed":
            error = (message.get("response") or {}).get("error") or {}
            return [Failure(error.get("message", "the backend's response failed"))]
        if kind == "error":
            return [
                Failure(
                    message.get("message") or (message.get("error") or {}).get("message", "backend error")
                )
            ]
        return []

    def end(self) -> list[Event]:
        return []  # only response.completed says a response is whole

    def whole(self, body: dict[str, Any]) -> list[Event]:
        if body.get("error") and body.get("status") != "completed":
            error = body["error"]
            return [Failure(error.get("message", "backend error") if isinstance(error, dict) else str(error))]
        events: list[Event] = [Start(body.get("id", ""))]
        calls = 0
        for index, item in enumerate(body.get("output") or []):
            kind = item.get("type")
            if kind == "message":
                for part in item.get("content") or []:
                    text = part.get("text") or part.get("refusal")
                    if text:
                        events.append(TextDelta(text))
            elif kind == "reasoning":
                text = "".join(s.get("text", "") for s in item.get("summary") or [])
                if text:
                    events.append(ThinkingDelta(text))
            elif kind == "function_call":
                calls += 1
                events.append(ToolStart(str(index), item.get("call_id", ""), item.get("name", "")))
                events.append(ToolArgs(str(index), item.get("arguments") or "{}"))
        return [*events, _finish(body, calls > 0)]


def error_body(kind: str, message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _usage_out(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _item(part: Text | Thinking | ToolCall, item_id: str, done: bool) -> dict[str, Any]:
    status = "completed" if done else "in_progress"
    if isinstance(part, Text):
        content = [{"type": "output_text", "text": part.text, "annotations": []}] if done else []
        return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}
    if isinstance(part, Thinking):
        summary = [{"type": "summary_text", "text": part.text}] if done else []
        return {"id": item_id, "type": "reasoning", "summary": summary}
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": part.id,
        "name": part.name,
        "arguments": part.arguments if done else "",
    }


def _response(
    response_id: str, model: str, created: int, status: str, output: list[dict[str, Any]], usage: Usage | None
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "error": None,
        "usage": _usage_out(usage) if usage else None,
    }


class Encoder:
    def __init__(self, model: str) -> None:
        self._model = model
        self._id = new_id("resp_")
        self._created = int(time.time())
        self._sequence = 0
        self._started = False
        self._done: list[dict[str, Any]] = []  # finished output items
        self._part: Text | Thinking | ToolCall | None = None  # the item being streamed
        self._key = ""
        self._item_id = ""

    def _emit(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse_event(event, kind)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        response = _response(self._id, self._model, self._created, "in_progress", [], None)
        return self._emit("response.created", response=response) + self._emit(
            "response.in_progress", response=response
        )

    def _where(self) -> dict[str, Any]:
        return {"item_id": self._item_id, "output_index": len(self._done)}

    def _open(self, part: Text | Thinking | ToolCall, prefix: str, key: str = "") -> bytes:
        out = self._close()
        self._part, self._key, self._item_id = part, key, new_id(prefix)
        out += self._emit(
            "response.output_item.added",
            output_index=len(self._done),
            item=_item(part, self._item_id, done=False),
        )
        if isinstance(part, Text):
            out += self._emit(
                "response.content_part.added",
                **self._where(),
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            )
        elif isinstance(part, Thinking):
            out += self._emit(
                "response.reasoning_summary_part.added",
                **self._where(),
                summary_index=0,
                part={"type": "summary_text", "text": ""},
            )
        return out

    def _close(self) -> bytes:
        part = self._part
        if part is None:
            return b""
        out = b""
        if isinstance(part, Text):
            out += self._emit("response.output_text.done", **self._where(), content_index=0, text=part.text)
            out += self._emit(
                "response.content_part.done",
                **self._where(),
                content_index=0,
                part={"type": "output_text", "text": part.text, "annotations": []},
            )
        elif isinstance(part, Thinking):
            out += self._emit(
                "response.reasoning_summary_text.done", **self._where(), summary_index=0, text=part.text
            )
            out += self._emit(
                "response.reasoning_summary_part.done",
                **self._where(),
                summary_index=0,
                part={"type": "summary_text", "text": part.text},
            )
        else:
            part.arguments = part.arguments or "{}"
            out += self._emit(
                "response.function_call_arguments.done", **self._where(), arguments=part.arguments
            )
        item = _item(part, self._item_id, done=True)
        out += self._emit("response.output_item.done", output_index=len(self._done), item=item)
        self._done.append(item)
        self._part = None
        return out

    def encode(self, event: Event) -> bytes:
        out = self._start()
        if isinstance(event, TextDelta):
            if not isinstance(self._part, Text):
                out += self._open(Text(""), "msg_")
            assert isinstance(self._part, Text)
            self._part.text += event.text
            return out + self._emit(
                "response.output_text.delta", **self._where(), content_index=0, delta=event.text, logprobs=[]
            )
        if isinstance(event, ThinkingDelta):
            if not isinstance(self._part, Thinking):
                out += self._open(Thinking(""), "rs_")
            assert isinstance(self._part, Thinking)
            self._part.text += event.text
            return out + self._emit(
                "response.reasoning_summary_text.delta", **self._where(), summary_index=0, delta=event.text
            )
        if isinstance(event, ToolStart):
            return out + self._open(ToolCall(event.id, event.name, ""), "fc_", event.key)
        if isinstance(event, ToolArgs) and isinstance(self._part, ToolCall) and self._key == event.key:
            self._part.arguments += event.fragment
            return out + self._emit(
                "response.function_call_arguments.delta", **self._where(), delta=event.fragment
            )
        if isinstance(event, Finish):
            out += self._close()
            status = "incomplete" if event.reason == "max_tokens" else "completed"
            response = _response(self._id, self._model, self._created, status, self._done, event.usage)
            return out + self._emit(f"response.{status}", response=response)
        if isinstance(event, Failure):
            out += self._close()
            response = _response(self._id, self._model, self._created, "failed", self._done, None)
            response["error"] = {"code": "server_error", "message": event.message}
            return out + self._emit("response.failed", response=response)
        return out

    def end(self) -> bytes:
        return b""


def render(reply: Reply, model: str) -> dict[str, Any]:
    prefixes = {Text: "msg_", Thinking: "rs_", ToolCall: "fc_"}
    output = [_item(p, new_id(prefixes[type(p)]), done=True) for p in reply.parts]
    status = "incomplete" if reply.reason == "max_tokens" else "completed"
    return _response(new_id("resp_"), model, int(time.time()), status, output, reply.usage)
