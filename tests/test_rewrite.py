"""The compatibility fixes as pure functions, with properties over every chunk boundary, and the
response side (``RewritingSend``) fed start messages in the canonical header case real servers use."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampbridge.models import WireFormat
from ampbridge.rewrite import (
    ResponseFixer,
    SseRewriter,
    call_with_fixes,
    requested_tool_names,
    sanitize_anthropic_request,
)

EVENTS = [
    b'event: message_start\ndata: {"type":"message_start","message":{"model":"served-model","content":[]}}\n\n',
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"tool_use","id":"t","name":"read","input":{}}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"text":"caf\xc3\xa9"}}\n\n',
    b": a comment line\r\n\r\n",
    b"data: [DONE]\n\n",
]
STREAM = b"".join(EVENTS)


def fixer(model: str | None = "asked-model", wire=WireFormat.ANTHROPIC) -> ResponseFixer:
    return ResponseFixer(wire_format=wire, requested_model=model, tool_names={"read": "Read"})


def rewrite_in_chunks(data: bytes, cuts: list[int], fix: ResponseFixer) -> bytes:
    rewriter = SseRewriter(fix)
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, start = [], 0
    for point in [*points, len(data)]:
        out.append(rewriter.feed(data[start:point]))
        start = point
    out.append(rewriter.flush())
    return b"".join(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_sse_rewriting_does_not_depend_on_chunk_boundaries(cuts):
    assert rewrite_in_chunks(STREAM, cuts, fixer()) == rewrite_in_chunks(STREAM, [], fixer())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_events_that_need_nothing_keep_their_bytes(cuts):
    passive = ResponseFixer(wire_format=WireFormat.OPENAI, requested_model=None, tool_names={})
    assert rewrite_in_chunks(STREAM, cuts, passive) == STREAM


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_arbitrary_bytes_without_markers_pass_unchanged(data, cuts):
    data = data.replace(b'"', b"'")  # no JSON string can be a marker
    assert rewrite_in_chunks(data, cuts, fixer()) == data


def test_what_the_rewrite_changes():
    out = rewrite_in_chunks(STREAM, [], fixer())
    events = out.split(b"\n\n")
    start = json.loads(events[0].split(b"data: ", 1)[1])
    tool = json.loads(events[1].split(b"data: ", 1)[1])
    assert start["message"]["model"] == "asked-model"
    assert tool["content_block"] == {
        "type": "tool_use",
        "id": "t",
        "name": "Read",
        "input": {},
        "signature": "",
    }
    assert EVENTS[2] in out and EVENTS[3] in out and EVENTS[4] in out
    assert events[0].startswith(b"event: message_start\ndata: ")


def test_json_bodies_in_each_format():
    fix = fixer(wire=WireFormat.OPENAI)
    chat = {"model": "served", "choices": [{"message": {"tool_calls": [{"function": {"name": "READ"}}]}}]}
    assert fix.fix(chat)
    assert chat["model"] == "asked-model"
    assert chat["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "Read"
    responses = {"response": {"model": "served", "output": [{"type": "function_call", "name": "read"}]}}
    fix.fix(responses)
    assert responses["response"] == {
        "model": "asked-model",
        "output": [{"type": "function_call", "name": "Read"}],
    }
    gemini = [
        {
            "modelVersion": "served",
            "candidates": [{"content": {"parts": [{"functionCall": {"name": "rEAD"}}]}}],
        }
    ]
    fix.fix(gemini)
    assert gemini[0]["modelVersion"] == "asked-model"
    assert gemini[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "Read"
    unknown_tool = {"content": [{"type": "tool_use", "name": "Other"}]}
    assert not fixer(model=None, wire=WireFormat.OPENAI).fix(unknown_tool)


def test_tool_names_from_every_request_format():
    payload = {
        "tools": [
            {"name": "Read"},
            {"type": "function", "function": {"name": "Bash"}},
            {"functionDeclarations": [{"name": "Glob"}]},
            "junk",
            {"name": 3},
        ]
    }
    assert requested_tool_names(payload) == {"read": "Read", "bash": "Bash", "glob": "Glob"}
    assert requested_tool_names({"tools": "nope"}) == {}


def test_request_sanitizer_leaves_valid_history_alone():
    payload = {
        "messages": [
            {"role": "user", "content": [{"type": "thinking", "thinking": "users are not touched"}]},
            {"role": "assistant", "content": "plain text"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "ok", "signature": "s"},
                    {"type": "tool_use", "id": "1", "name": "x", "input": {}},
                ],
            },
        ]
    }
    before = json.dumps(payload)
    assert not sanitize_anthropic_request(payload)
    assert json.dumps(payload) == before
    assert not sanitize_anthropic_request({"messages": "not a list"})


@pytest.mark.parametrize("signature", ["", " ", "  \n\t", None, 7])
def test_thinking_without_a_real_signature_is_dropped(signature):
    thinking: dict[str, Any] = {"type": "thinking", "thinking": "hmm"}
    if signature is not None:
        thinking["signature"] = signature
    text = {"type": "text", "text": "answer"}
    payload = {"messages": [{"role": "assistant", "content": [thinking, text]}]}
    assert sanitize_anthropic_request(payload)
    assert payload["messages"][0]["content"] == [text]


# --- RewritingSend against canonical-case headers ------------------------------------------------

Headers = list[tuple[bytes, bytes]]
MAPPED_JSON = json.dumps(
    {
        "model": "served-model",
        "content": [
            {"type": "thinking", "thinking": "hmm"},
            {"type": "tool_use", "id": "t", "name": "READ", "input": {}},
        ],
    }
).encode()


def replying(body: bytes, headers: Headers, chunk: int = 10):
    """A backend reply as a Go server frames it: canonical names, the body in pieces."""

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        for i in range(0, len(body), chunk):
            await send({"type": "http.response.body", "body": body[i : i + chunk], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def fixed(app):
    async def wrapped(scope, receive, send):
        await call_with_fixes(app, scope, receive, send, fixer(), max_json_size=1 << 20)

    return wrapped


def record(app) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def collect(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    anyio.run(app, {"type": "http", "method": "POST", "path": "/", "headers": []}, receive, collect)
    return sent


def fetch(app) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://backend") as client:
            return await client.post("/v1/messages", content=b"{}")

    return anyio.run(run)


def lengths(start: dict[str, Any]) -> list[bytes]:
    return [value for name, value in start["headers"] if name.lower() == b"content-length"]


def body_of(messages: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


JSON_CANONICAL: Headers = [
    (b"Content-Type", b"application/json; charset=utf-8"),
    (b"Content-Length", str(len(MAPPED_JSON)).encode()),
    (b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
]


def test_canonical_case_json_reply_is_fixed():
    sent = record(fixed(replying(MAPPED_JSON, JSON_CANONICAL)))
    reply = json.loads(body_of(sent))
    assert reply["model"] == "asked-model"
    assert reply["content"][1]["name"] == "Read"
    assert [block["signature"] for block in reply["content"]] == ["", ""]


def test_canonical_case_json_reply_carries_exactly_one_correct_length():
    sent = record(fixed(replying(MAPPED_JSON, JSON_CANONICAL)))
    assert lengths(sent[0]) == [str(len(body_of(sent))).encode()]
    assert (b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT") in sent[0]["headers"]


def test_canonical_case_json_reply_reaches_a_client_with_one_length():
    response = fetch(fixed(replying(MAPPED_JSON, JSON_CANONICAL)))
    assert response.headers.get_list("content-length") == [str(len(response.content))]
    assert response.json()["model"] == "asked-model"


def test_upper_case_json_media_type_is_recognised():
    headers = [(b"CONTENT-TYPE", b"Application/JSON"), (b"CONTENT-LENGTH", str(len(MAPPED_JSON)).encode())]
    sent = record(fixed(replying(MAPPED_JSON, headers)))
    assert json.loads(body_of(sent))["model"] == "asked-model"
    assert lengths(sent[0]) == [str(len(body_of(sent))).encode()]


def test_canonical_case_sse_reply_is_fixed_and_loses_its_length():
    headers = [(b"Content-Type", b"text/event-stream"), (b"Content-Length", str(len(STREAM)).encode())]
    sent = record(fixed(replying(STREAM, headers, chunk=7)))
    assert lengths(sent[0]) == []
    out = body_of(sent)
    events = out.split(b"\n\n")
    assert json.loads(events[0].split(b"data: ", 1)[1])["message"]["model"] == "asked-model"
    tool = json.loads(events[1].split(b"data: ", 1)[1])["content_block"]
    assert (tool["name"], tool["signature"]) == ("Read", "")


def test_canonical_case_sse_reply_reaches_a_client_whole():
    headers = [(b"Content-Type", b"text/event-stream"), (b"Cache-Control", b"no-cache")]
    response = fetch(fixed(replying(STREAM, headers, chunk=7)))
    assert response.content == rewrite_in_chunks(STREAM, [], fixer())
    assert "content-length" not in response.headers


def test_canonical_case_content_encoding_is_left_untouched():
    headers = [(b"Content-Type", b"application/json"), (b"Content-Encoding", b"br")]
    app = replying(MAPPED_JSON, headers)
    assert record(fixed(app)) == record(app)


def test_error_replies_pass_untouched():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 500, "headers": list(JSON_CANONICAL)})
        await send({"type": "http.response.body", "body": MAPPED_JSON})

    assert record(fixed(app)) == record(app)


def test_a_json_reply_that_breaks_off_is_passed_as_far_as_it_came_and_left_open():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": list(JSON_CANONICAL)})
        await send({"type": "http.response.body", "body": MAPPED_JSON[:30], "more_body": True})

    assert record(fixed(app)) == [
        {"type": "http.response.start", "status": 200, "headers": JSON_CANONICAL},
        {"type": "http.response.body", "body": MAPPED_JSON[:30], "more_body": True},
    ]


def test_a_json_reply_too_large_to_fix_passes_unchanged():
    async def app(scope, receive, send):
        await call_with_fixes(
            replying(MAPPED_JSON, JSON_CANONICAL), scope, receive, send, fixer(), max_json_size=50
        )

    sent = record(app)
    assert sent[0]["headers"] == JSON_CANONICAL
    assert body_of(sent) == MAPPED_JSON
