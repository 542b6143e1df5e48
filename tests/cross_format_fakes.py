"""Fake model APIs that hold a conversation with tools, for the cross-format tests: an Anthropic
Messages API, an OpenAI Chat Completions API and a Gemini API on 127.0.0.1.

Each checks a request the way the real API does (required fields, roles, tool results paired
with earlier tool calls by id or name, JSON arguments) and answers 400 in its own error shape
when it is not valid. When the request offers tools and its last turn is not a tool result, the
reply calls the first tool with ``{"city": "Paris"}``; after a tool result it answers
``Sunny in <result>``; without tools it says ``Hello from <api>``. Streams are sent as the real
APIs send them, a few events per chunk boundary, with the canonical-case headers of a Go server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Scope, Send

from .servers import Recorded, RecordingServer, respond, stream

TOOL_ARGS = {"city": "Paris"}


@dataclass
class Turn:
    """What the fake answers: a tool call, or text."""

    tool: str | None
    text: str


def _turn(tools: list[str], tool_result: str | None, api: str) -> Turn:
    if tool_result is not None:
        return Turn(None, f"Sunny in {tool_result}")
    if tools:
        return Turn(tools[0], "")
    return Turn(None, f"Hello from {api}")


def _pieces(text: str) -> list[str]:
    middle = max(1, len(text) // 2)
    return [text[:middle], text[middle:]] if len(text) > 1 else [text]


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


# --- OpenAI Chat Completions -------------------------------------------------------------------


def chat_problem(body: dict[str, Any]) -> str | None:
    if not isinstance(body.get("model"), str):
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    if "stream_options" in body and not body.get("stream"):
        return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    call_ids: set[str] = set()
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return f"messages[{index}].role: invalid value {role!r}"
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            if call.get("type") != "function" or not call.get("id") or not function.get("name"):
                return f"messages[{index}].tool_calls: each needs id, type 'function' and a name"
            try:
                json.loads(function.get("arguments"))
            except (TypeError, ValueError):
                return f"messages[{index}].tool_calls: arguments must be a JSON string"
            call_ids.add(call["id"])
        if role == "tool" and message.get("tool_call_id") not in call_ids:
            return f"messages[{index}]: tool message does not answer an earlier tool call"
        if role in ("user", "system", "developer") and message.get("content") is None:
            return f"messages[{index}].content is required"
    for tool in body.get("tools") or []:
        function = tool.get("function") or {}
        if tool.get("type") != "function" or not function.get("name"):
            return "tools: each needs type 'function' and a function name"
        if (function.get("parameters") or {"type": "object"}).get("type") != "object":
            return "tools: parameters must be a JSON Schema object"
    return None


def chat_turn(body: dict[str, Any]) -> Turn:
    last = body["messages"][-1]
    result = last.get("content") if last.get("role") == "tool" else None
    if isinstance(result, list):
        result = "".join(part.get("text", "") for part in result)
    tools = [t["function"]["name"] for t in body.get("tools") or []]
    return _turn(tools, result, "chat")


def chat_reply(body: dict[str, Any], turn: Turn) -> tuple[dict[str, Any] | None, list[bytes]]:
    model = body["model"]
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    reason = "tool_calls" if turn.tool else "stop"
    arguments = json.dumps(TOOL_ARGS)
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
        if turn.tool:
            message["tool_calls"] = [
                {"id": "call_1", "type": "function", "function": {"name": turn.tool, "arguments": arguments}}
            ]
        whole = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": reason}],
            "usage": usage,
        }
        return whole, []

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": model}
        return b"data: " + json.dumps({**data, "choices": [choice]}).encode() + b"\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    if turn.tool:
        head = {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": turn.tool, "arguments": ""},
        }
        events.append(chunk({"tool_calls": [head]}))
        for piece in _pieces(arguments):
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    else:
        events.extend(chunk({"content": piece}) for piece in _pieces(turn.text))
    events.append(chunk({}, reason))
    if (body.get("stream_options") or {}).get("include_usage"):
        data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": model}
        events.append(b"data: " + json.dumps({**data, "choices": [], "usage": usage}).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return None, events


def chat_error(message: str) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    ).encode()


# --- Anthropic Messages --------------------------------------------------------------------------


def anthropic_problem(body: dict[str, Any], headers: Recorded) -> str | None:
    if not headers.header("anthropic-version"):
        return "anthropic-version: header is required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or messages[0].get("role") != "user":
        return "messages: the first message must use the user role"
    tool_ids: set[str] = set()
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        if index and messages[index - 1].get("role") == role:
            return "messages: roles must alternate between user and assistant"
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for block in blocks:
            kind = block.get("type")
            if kind == "tool_use":
                if not block.get("id") or not isinstance(block.get("input"), dict):
                    return f"messages.{index}: tool_use needs an id and an input object"
                tool_ids.add(block["id"])
            elif kind == "tool_result" and block.get("tool_use_id") not in tool_ids:
                return (
                    f"messages.{index}: tool_result block(s) provided when previous message has no tool_use"
                )
            elif kind == "text" and not isinstance(block.get("text"), str):
                return f"messages.{index}: text blocks need text"
    for tool in body.get("tools") or []:
        if not tool.get("name") or (tool.get("input_schema") or {}).get("type") != "object":
            return "tools: each needs a name and an input_schema of type object"
    return None


def anthropic_turn(body: dict[str, Any]) -> Turn:
    last = body["messages"][-1]
    content = last["content"] if isinstance(last["content"], list) else []
    results = [b for b in content if b.get("type") == "tool_result"]
    result = None
    if results:
        inner = results[0].get("content")
        result = inner if isinstance(inner, str) else "".join(p.get("text", "") for p in inner or [])
    return _turn([t["name"] for t in body.get("tools") or []], result, "anthropic")


def anthropic_reply(body: dict[str, Any], turn: Turn) -> tuple[dict[str, Any] | None, list[bytes]]:
    model = body["model"]
    reason = "tool_use" if turn.tool else "end_turn"
    block: dict[str, Any] = (
        {"type": "tool_use", "id": "toolu_1", "name": turn.tool, "input": TOOL_ARGS}
        if turn.tool
        else {"type": "text", "text": turn.text}
    )
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": model}
    if not body.get("stream"):
        usage = {"input_tokens": 10, "output_tokens": 5}
        return {
            **message,
            "content": [block],
            "stop_reason": reason,
            "stop_sequence": None,
            "usage": usage,
        }, []
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {"input_tokens": 10, "output_tokens": 1}
    events = [_sse({"type": "message_start", "message": start}, "message_start")]
    if turn.tool:
        opened = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(json.dumps(TOOL_ARGS))]
    else:
        opened = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(turn.text)]
    events.append(
        _sse({"type": "content_block_start", "index": 0, "content_block": opened}, "content_block_start")
    )
    events.append(_sse({"type": "ping"}, "ping"))
    events.extend(
        _sse({"type": "content_block_delta", "index": 0, "delta": d}, "content_block_delta") for d in deltas
    )
    events.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    delta = {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None}}
    events.append(_sse({**delta, "usage": {"output_tokens": 5}}, "message_delta"))
    events.append(_sse({"type": "message_stop"}, "message_stop"))
    return None, events


def anthropic_error(message: str) -> bytes:
    return json.dumps(
        {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    ).encode()


# --- Gemini ----------------------------------------------------------------------------------


def gemini_problem(body: dict[str, Any]) -> str | None:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    called: set[str] = set()
    for index, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            return f"* GenerateContentRequest.contents[{index}].role: must be user or model"
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"* GenerateContentRequest.contents[{index}].parts: must not be empty"
        for part in parts:
            if "functionCall" in part:
                if not isinstance(part["functionCall"].get("args", {}), dict):
                    return f"* contents[{index}]: functionCall.args must be an object"
                called.add(part["functionCall"]["name"])
            if "functionResponse" in part and part["functionResponse"].get("name") not in called:
                return f"* contents[{index}]: functionResponse does not answer a functionCall"
    for tool in body.get("tools") or []:
        for declaration in tool.get("functionDeclarations") or []:
            if not declaration.get("name"):
                return "* tools.functionDeclarations: name is required"
    return None


def gemini_turn(body: dict[str, Any]) -> Turn:
    parts = body["contents"][-1]["parts"]
    responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
    result = None
    if responses:
        answer = responses[0].get("response")
        result = (
            answer.get("result", answer.get("output", json.dumps(answer)))
            if isinstance(answer, dict)
            else str(answer)
        )
        result = result if isinstance(result, str) else json.dumps(result)
    names = [d["name"] for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
    return _turn(names, result, "gemini")


def gemini_reply(model: str, streamed: bool, turn: Turn) -> tuple[dict[str, Any] | None, list[bytes]]:
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}

    def chunk(parts: list[dict[str, Any]], last: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if last:
            candidate["finishReason"] = "STOP"
        data: dict[str, Any] = {"candidates": [candidate], "modelVersion": model}
        if last:
            data["usageMetadata"] = usage
        return data

    if turn.tool:
        pieces = [[{"functionCall": {"name": turn.tool, "args": TOOL_ARGS}}]]
    else:
        pieces = [[{"text": p}] for p in _pieces(turn.text)]
    if not streamed:
        return chunk([part for piece in pieces for part in piece], True), []
    return None, [
        b"data: " + json.dumps(chunk(piece, i == len(pieces) - 1)).encode() + b"\r\n\r\n"
        for i, piece in enumerate(pieces)
    ]


def gemini_error(message: str) -> bytes:
    return json.dumps({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}).encode()


# --- the servers -----------------------------------------------------------------------------


def conversation_backend(api: str, models: list[str], *, tool_case: Any = str) -> RecordingServer:
    """A fake of ``api`` (``anthropic``, ``chat`` or ``gemini``) that serves ``models``.
    ``tool_case`` spells the tool name it calls (``str.lower``: as some local models do)."""
    server = RecordingServer(f"{api}-conversations")

    async def handle(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        try:
            body = json.loads(rec.body)
        except ValueError:
            body = None
        if api == "anthropic":
            problem = anthropic_problem(body, rec) if isinstance(body, dict) else "invalid JSON"
            error = anthropic_error
        elif api == "chat":
            problem = chat_problem(body) if isinstance(body, dict) else "invalid JSON"
            error = chat_error
        else:
            problem = gemini_problem(body) if isinstance(body, dict) else "invalid JSON"
            error = gemini_error
        model = body.get("model") if isinstance(body, dict) else None
        if api == "gemini":
            model = rec.path.rsplit("/models/", 1)[-1].split(":")[0]
        if problem is None and model not in models:
            problem = f"model {model!r} not found"
        if problem is not None:
            await respond(send, 400, error(problem))
            return
        turn = {"anthropic": anthropic_turn, "chat": chat_turn, "gemini": gemini_turn}[api](body)
        turn.tool = tool_case(turn.tool) if turn.tool else None
        if api == "anthropic":
            whole, events = anthropic_reply(body, turn)
        elif api == "chat":
            whole, events = chat_reply(body, turn)
        else:
            streamed = rec.path.endswith(":streamGenerateContent")
            if streamed and rec.query != b"alt=sse":
                await respond(send, 400, error("this fake streams only as SSE (alt=sse)"))
                return
            whole, events = gemini_reply(model, streamed, turn)
        if whole is not None:
            await respond(send, 200, json.dumps(whole).encode())
        else:
            await stream(send, events)

    def is_call(method: str, path: str) -> bool:
        if method != "POST":
            return False
        if api == "anthropic":
            return path == "/v1/messages"
        if api == "chat":
            return path == "/v1/chat/completions"
        return path.startswith("/v1beta/models/") and path.endswith("Content")

    server.route(is_call, handle)
    return server.freeze()
