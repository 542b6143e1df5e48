"""Backend replies of each dialect, as the real APIs send them, for the translation tests: some
reasoning, a text, then two parallel tool calls (arguments streamed in pieces), stop for tool use."""

from __future__ import annotations

import json
from typing import Any

from ampbridge.translate import Dialect

WEATHER_ARGS = {"city": "Paris"}
TIME_ARGS = {"tz": "CET"}


def _sse(events: list[tuple[str | None, Any]]) -> bytes:
    out = b""
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        body = data if isinstance(data, str) else json.dumps(data)
        out += f"{head}data: {body}\n\n".encode()
    return out


def anthropic_stream() -> bytes:
    def delta(index: int, d: dict[str, Any]) -> tuple[str, Any]:
        return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}

    def start(index: int, block: dict[str, Any]) -> tuple[str, Any]:
        return "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}

    def stop(index: int) -> tuple[str, Any]:
        return "content_block_stop", {"type": "content_block_stop", "index": index}

    return _sse([
        ("message_start", {"type": "message_start", "message": {"id": "msg_b1", "type": "message", "role": "assistant", "model": "claude-x", "content": [], "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 1}}}),
        ("ping", {"type": "ping"}),
        start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, {"type": "thinking_delta", "thinking": "Let me "}),
        delta(0, {"type": "thinking_delta", "thinking": "think"}),
        delta(0, {"type": "signature_delta", "signature": "sig=="}),
        stop(0),
        start(1, {"type": "text", "text": ""}),
        delta(1, {"type": "text_delta", "text": "Hi"}),
        stop(1),
        start(2, {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}),
        delta(2, {"type": "input_json_delta", "partial_json": '{"city": '}),
        delta(2, {"type": "input_json_delta", "partial_json": '"Paris"}'}),
        stop(2),
        start(3, {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}}),
        delta(3, {"type": "input_json_delta", "partial_json": '{"tz": "CET"}'}),
        stop(3),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 20}}),
        ("message_stop", {"type": "message_stop"}),
    ])


def chat_stream() -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> tuple[None, Any]:
        return None, {"id": "chatcmpl-b1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

    return _sse([
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Let me "}),
        chunk({"reasoning_content": "think"}),
        chunk({"content": "Hi"}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}}]}),
        chunk({}, "tool_calls"),
        (None, {"id": "chatcmpl-b1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30, "prompt_tokens_details": {"cached_tokens": 3}}}),
        (None, "[DONE]"),
    ])


def responses_stream() -> bytes:
    seq = iter(range(100))

    def ev(kind: str, **fields: Any) -> tuple[str, Any]:
        return kind, {"type": kind, "sequence_number": next(seq), **fields}

    response = {"id": "resp_b1", "object": "response", "status": "in_progress", "model": "m", "output": []}
    done = {**response, "status": "completed", "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 3}, "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 5}, "total_tokens": 30}}
    return _sse([
        ev("response.created", response=response),
        ev("response.in_progress", response=response),
        ev("response.output_item.added", output_index=0, item={"id": "rs_1", "type": "reasoning", "summary": []}),
        ev("response.reasoning_summary_text.delta", item_id="rs_1", output_index=0, summary_index=0, delta="Let me "),
        ev("response.reasoning_summary_text.delta", item_id="rs_1", output_index=0, summary_index=0, delta="think"),
        ev("response.output_item.done", output_index=0, item={"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Let me think"}], "encrypted_content": "enc"}),
        ev("response.output_item.added", output_index=1, item={"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}),
        ev("response.output_text.delta", item_id="msg_1", output_index=1, content_index=0, delta="Hi"),
        ev("response.output_item.done", output_index=1, item={"id": "msg_1", "type": "message", "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": "Hi"}]}),
        ev("response.output_item.added", output_index=2, item={"id": "fc_1", "type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": ""}),
        ev("response.function_call_arguments.delta", item_id="fc_1", output_index=2, delta='{"city": '),
        ev("response.function_call_arguments.delta", item_id="fc_1", output_index=2, delta='"Paris"}'),
        ev("response.output_item.done", output_index=2, item={"id": "fc_1", "type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": '{"city": "Paris"}'}),
        ev("response.output_item.added", output_index=3, item={"id": "fc_2", "type": "function_call", "call_id": "call_b", "name": "get_time", "arguments": ""}),
        ev("response.output_item.done", output_index=3, item={"id": "fc_2", "type": "function_call", "call_id": "call_b", "name": "get_time", "arguments": '{"tz": "CET"}'}),
        ev("response.completed", response=done),
    ])


def gemini_stream() -> bytes:
    def chunk(parts: list[dict[str, Any]], **extra: Any) -> tuple[None, Any]:
        return None, {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0, **extra}], "modelVersion": "g", "responseId": "g1"}

    last = chunk([{"functionCall": {"name": "get_time", "args": TIME_ARGS}}], finishReason="STOP")
    last[1]["usageMetadata"] = {"promptTokenCount": 10, "candidatesTokenCount": 15, "thoughtsTokenCount": 5, "cachedContentTokenCount": 3, "totalTokenCount": 30}
    return _sse([
        chunk([{"text": "Let me ", "thought": True}]),
        chunk([{"text": "think", "thought": True}]),
        chunk([{"text": "Hi"}]),
        chunk([{"functionCall": {"name": "get_weather", "args": WEATHER_ARGS}, "thoughtSignature": "abc"}]),
        last,
    ])


STREAMS = {
    Dialect.ANTHROPIC: anthropic_stream,
    Dialect.CHAT: chat_stream,
    Dialect.RESPONSES: responses_stream,
    Dialect.GEMINI: gemini_stream,
}
