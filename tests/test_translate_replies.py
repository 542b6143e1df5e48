"""Reply translation: each backend's stream or JSON reaches each client as that client's reply,
event by event, whatever the chunking; errors take the client's error shape."""

from __future__ import annotations

import json
import re
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from ampbridge.translate import Dialect, ReplyTranslator, TranslatingSend
from ampbridge.translate.sse import SSEReader
from tests.servers import RESPONSES
from tests.translate_samples import STREAMS, TIME_ARGS, WEATHER_ARGS

PAIRS = [(b, c) for b in Dialect for c in Dialect]


def _summary(client: Dialect, body: dict[str, Any]) -> dict[str, Any]:
    """What a user of ``client`` sees in a whole reply: thinking, text, calls, stop."""
    if client is Dialect.ANTHROPIC:
        content = body["content"]
        return {"thinking": "".join(b["thinking"] for b in content if b["type"] == "thinking"),
                "text": "".join(b["text"] for b in content if b["type"] == "text"),
                "calls": [(b["name"], b["input"]) for b in content if b["type"] == "tool_use"],
                "stop": body["stop_reason"], "model": body["model"]}
    if client is Dialect.CHAT:
        message = body["choices"][0]["message"]
        return {"thinking": message.get("reasoning_content", ""), "text": message["content"],
                "calls": [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls", [])],
                "stop": body["choices"][0]["finish_reason"], "model": body["model"]}
    if client is Dialect.RESPONSES:
        output = body["output"]
        return {"thinking": "".join(s["text"] for i in output if i["type"] == "reasoning" for s in i["summary"]),
                "text": "".join(c["text"] for i in output if i["type"] == "message" for c in i["content"]),
                "calls": [(i["name"], json.loads(i["arguments"])) for i in output if i["type"] == "function_call"],
                "stop": body["status"], "model": body["model"]}
    parts = body["candidates"][0]["content"]["parts"]
    return {"thinking": "".join(p["text"] for p in parts if p.get("thought")),
            "text": "".join(p.get("text", "") for p in parts if not p.get("thought")),
            "calls": [(p["functionCall"]["name"], p["functionCall"]["args"]) for p in parts if "functionCall" in p],
            "stop": body["candidates"][0]["finishReason"], "model": body["modelVersion"]}


STOP = {Dialect.ANTHROPIC: "tool_use", Dialect.CHAT: "tool_calls", Dialect.RESPONSES: "completed", Dialect.GEMINI: "STOP"}


def _expected(client: Dialect) -> dict[str, Any]:
    return {"thinking": "Let me think", "text": "Hi", "calls": [("get_weather", WEATHER_ARGS), ("get_time", TIME_ARGS)],
            "stop": STOP[client], "model": "asked-model"}


@pytest.mark.parametrize(("backend", "client"), PAIRS)
def test_stream_to_whole_reply(backend: Dialect, client: Dialect) -> None:
    translator = ReplyTranslator(backend=backend, client=client, model="asked-model", stream=False)
    out = translator.feed(STREAMS[backend]()) + translator.finish()
    assert _summary(client, json.loads(out)) == _expected(client)


@pytest.mark.parametrize(("backend", "client"), PAIRS)
def test_stream_to_stream_reads_back_as_the_same_reply(backend: Dialect, client: Dialect) -> None:
    translator = ReplyTranslator(backend=backend, client=client, model="asked-model", stream=True)
    streamed = b"".join(translator.feed(bytes([b])) for b in STREAMS[backend]()) + translator.finish()
    reader = ReplyTranslator(backend=client, client=client, model="asked-model", stream=False)
    assert _summary(client, json.loads(reader.feed(streamed) + reader.finish())) == _expected(client)


@pytest.mark.parametrize(("backend", "client"), PAIRS)
def test_whole_reply_to_whole_reply(backend: Dialect, client: Dialect) -> None:
    whole = ReplyTranslator(backend=backend, client=backend, model="asked-model", stream=False)
    backend_json = whole.feed(STREAMS[backend]()) + whole.finish()
    translator = ReplyTranslator(backend=backend, client=client, model="asked-model", stream=False)
    assert _summary(client, json.loads(translator.translate_json(backend_json))) == _expected(client)


def _events(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    reader = SSEReader()
    return [(name, json.loads(data)) for name, data in reader.feed(stream) + reader.close() if data != "[DONE]"]


def test_chat_backend_to_anthropic_stream_golden() -> None:
    translator = ReplyTranslator(backend=Dialect.CHAT, client=Dialect.ANTHROPIC, model="claude-opus-4-7", stream=True)
    events = _events(translator.feed(STREAMS[Dialect.CHAT]()) + translator.finish())
    shape = [(n, e.get("index"), (e.get("content_block") or e.get("delta") or {}).get("type")) for n, e in events]
    assert shape == [
        ("message_start", None, None),
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"), ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"), ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"), ("content_block_delta", 2, "input_json_delta"),
        ("content_block_delta", 2, "input_json_delta"), ("content_block_stop", 2, None),
        ("content_block_start", 3, "tool_use"), ("content_block_delta", 3, "input_json_delta"),
        ("content_block_stop", 3, None),
        ("message_delta", None, None), ("message_stop", None, None),
    ]
    assert events[0][1]["message"]["model"] == "claude-opus-4-7"
    assert events[8][1]["content_block"]["id"] == "call_a"
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"] == {"input_tokens": 7, "output_tokens": 20, "cache_read_input_tokens": 3,
                                      "cache_creation_input_tokens": 0}


def test_anthropic_backend_to_responses_stream_golden() -> None:
    translator = ReplyTranslator(backend=Dialect.ANTHROPIC, client=Dialect.RESPONSES, model="gpt-5.4", stream=True)
    events = _events(translator.feed(STREAMS[Dialect.ANTHROPIC]()) + translator.finish())
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    assert all(name == e["type"] for name, e in events)
    names = [n for n, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    calls = [e for n, e in events if n == "response.output_item.added" and e["item"]["type"] == "function_call"]
    assert [(c["item"]["call_id"], c["output_index"]) for c in calls] == [("call_a", 2), ("call_b", 3)]
    deltas = [e["delta"] for n, e in events if n == "response.function_call_arguments.delta"]
    assert deltas == ['{"city": ', '"Paris"}', '{"tz": "CET"}']
    done = [e["arguments"] for n, e in events if n == "response.function_call_arguments.done"]
    assert [json.loads(a) for a in done] == [WEATHER_ARGS, TIME_ARGS]
    completed = events[-1][1]["response"]
    assert completed["model"] == "gpt-5.4" and completed["usage"]["input_tokens"] == 10
    assert [i["type"] for i in completed["output"]] == ["reasoning", "message", "function_call", "function_call"]


def test_each_backend_event_is_written_as_soon_as_it_arrives() -> None:
    translator = ReplyTranslator(backend=Dialect.CHAT, client=Dialect.ANTHROPIC, model="m", stream=True)
    first = translator.feed(b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"He"}}]}\n\n')
    assert b"message_start" in first and b'"text":"He"' in first
    assert translator.feed(b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"llo"}}]}') == b""
    assert b'"text":"llo"' in translator.feed(b"\n\n")


_VOLATILE = re.compile(rb'(msg_|resp_|rs_|fc_|chatcmpl-|call_)[0-9a-f]{24}|"(created|created_at)":\d+|"responseId":"[0-9a-f]+"')


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_chunking_gives_the_same_output(data: st.DataObject) -> None:
    backend = data.draw(st.sampled_from(list(Dialect)))
    client = data.draw(st.sampled_from(list(Dialect)))
    stream = STREAMS[backend]()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    def run(chunks: list[bytes]) -> bytes:
        translator = ReplyTranslator(backend=backend, client=client, model="m", stream=True)
        return b"".join(translator.feed(c) for c in chunks) + translator.finish()

    assert _VOLATILE.sub(b"X", run(pieces)) == _VOLATILE.sub(b"X", run([stream]))


def test_backend_error_inside_a_stream_reaches_each_client() -> None:
    error = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n'
    start = b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","usage":{}}}\n\n'
    outs = {}
    for client in Dialect:
        translator = ReplyTranslator(backend=Dialect.ANTHROPIC, client=client, model="m", stream=True)
        outs[client] = translator.feed(start + error) + translator.finish()
        assert translator.failed
    assert b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}' in outs[Dialect.ANTHROPIC]
    assert b'"error":{"message":"busy"' in outs[Dialect.CHAT]
    assert b"event: response.failed" in outs[Dialect.RESPONSES] and b'"message":"busy"' in outs[Dialect.RESPONSES]
    assert b'"error":{"code":500,"message":"busy","status":"INTERNAL"}' in outs[Dialect.GEMINI]


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        (Dialect.ANTHROPIC, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
        (Dialect.CHAT, {"error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}}),
        (Dialect.RESPONSES, {"error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}}),
        (Dialect.GEMINI, {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}),
    ],
)
def test_backend_error_takes_the_clients_shape(client: Dialect, expected: dict[str, Any]) -> None:
    translator = ReplyTranslator(backend=Dialect.GEMINI, client=client, model="m", stream=True)
    gemini_error = b'{"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}'
    assert json.loads(translator.translate_error(429, gemini_error)) == expected


def test_gemini_client_without_alt_sse_gets_a_json_array_stream() -> None:
    translator = ReplyTranslator(backend=Dialect.CHAT, client=Dialect.GEMINI, model="g", stream=True, gemini_sse=False)
    assert translator.media_type == "application/json"
    chunks = json.loads(translator.feed(STREAMS[Dialect.CHAT]()) + translator.finish())
    assert [p for c in chunks for p in c["candidates"][0]["content"]["parts"] if "functionCall" in p][1]["functionCall"]["args"] == TIME_ARGS


def _backend_app(status: int, content_type: str, pieces: list[bytes]) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode()), (b"content-length", b"999")]})
        for i, piece in enumerate(pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": i < len(pieces) - 1})
    return app


def _translating(app: Any, translator: ReplyTranslator) -> Any:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        await app(scope, receive, TranslatingSend(send, translator))
    return wrapped


def _get(app: Any) -> httpx.Response:
    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.post("/", content=b"{}")
    return anyio.run(call)


def test_translating_send_streams_sse_with_fixed_headers() -> None:
    stream = STREAMS[Dialect.RESPONSES]()
    pieces = [stream[i:i + 97] for i in range(0, len(stream), 97)]
    translator = ReplyTranslator(backend=Dialect.RESPONSES, client=Dialect.ANTHROPIC, model="claude-x", stream=True)
    response = _get(_translating(_backend_app(200, "text/event-stream", pieces), translator))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream" and "content-length" not in response.headers
    assert response.text.startswith("event: message_start") and response.text.rstrip().endswith('{"type":"message_stop"}')


def test_translating_send_turns_a_json_answer_into_the_stream_asked_for() -> None:
    body = json.dumps({"id": "c", "choices": [{"message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]}).encode()
    translator = ReplyTranslator(backend=Dialect.CHAT, client=Dialect.ANTHROPIC, model="claude-x", stream=True)
    response = _get(_translating(_backend_app(200, "application/json", [body[:5], body[5:]]), translator))
    names = [n for n, _ in _events(response.content)]
    assert response.headers["content-type"] == "text/event-stream"
    assert names[0] == "message_start" and names[-1] == "message_stop" and '"text":"Hi"' in response.text


def test_translating_send_turns_sse_into_the_json_asked_for() -> None:
    translator = ReplyTranslator(backend=Dialect.GEMINI, client=Dialect.CHAT, model="gpt-x", stream=False)
    response = _get(_translating(_backend_app(200, "text/event-stream", [STREAMS[Dialect.GEMINI]()]), translator))
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    assert _summary(Dialect.CHAT, response.json()) == {**_expected(Dialect.CHAT), "model": "gpt-x"}


def test_translating_send_rewrites_error_replies() -> None:
    translator = ReplyTranslator(backend=Dialect.CHAT, client=Dialect.ANTHROPIC, model="claude-x", stream=True)
    app = _backend_app(404, "application/json", [b'{"error":{"message":"model qwen not found","type":"invalid_request_error"}}'])
    response = _get(_translating(app, translator))
    assert response.status_code == 404 and response.headers["content-type"] == "application/json"
    assert response.json() == {"type": "error", "error": {"type": "not_found_error", "message": "model qwen not found"}}


CAPTURED_REPLIES = [
    ("anthropic_messages.sse", Dialect.ANTHROPIC, ("OK", [])),
    ("anthropic_tool_lookat.sse", Dialect.ANTHROPIC, ("", [("look_at", {"path": "/home/user/project/lookat_input.txt", "objective": "What is the secret word?", "context": "test"})])),
    ("openai_responses.sse", Dialect.RESPONSES, ("OK", [])),
]


@pytest.mark.parametrize("client", list(Dialect))
@pytest.mark.parametrize(("name", "backend", "expected"), CAPTURED_REPLIES)
def test_amp_fixture_replies_reach_every_client(name: str, backend: Dialect, expected: tuple[str, list[Any]], client: Dialect) -> None:
    stream = (RESPONSES / name).read_bytes()
    translator = ReplyTranslator(backend=backend, client=client, model="asked-model", stream=False)
    summary = _summary(client, json.loads(translator.feed(stream) + translator.finish()))
    assert (summary["text"] or "", summary["calls"]) == expected
