"""The compatibility fixes as pure functions, with properties over every chunk boundary."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ampbridge.models import WireFormat
from ampbridge.rewrite import ResponseFixer, SseRewriter, requested_tool_names, sanitize_anthropic_request

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
