"""Cross-format serving through the standalone app (SPEC §14): a call whose model only a backend of
another wire format serves is translated there and back, streams event by event, carries the
name Amp asked for and Amp's compatibility fixes; what cannot be translated is answered plainly."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import anyio
import httpx
import pytest

from ampbridge import request_body
from ampbridge.backend import Backend
from ampbridge.request_body import RequestBody
from ampbridge.settings import Settings

from .conftest import OPENAI_KEY, provider_settings
from .cross_format_fakes import TOOL_ARGS, conversation_backend
from .servers import RecordingServer, ServerThread, model_backend, respond

MESSAGES = "/api/provider/anthropic/v1/messages"


def sse_data(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def test_an_anthropic_call_for_a_chat_model_streams_translated_event_by_event(upstream, bridge):
    gate = threading.Event()
    chat = model_backend("chat-backend", ["qwen3-coder"], gate=gate)
    with ServerThread(chat) as chat_thread:
        provider = {
            "name": "ollama",
            "type": "openai",
            "base-url": chat_thread.url + "/v1",
            "api-key": OPENAI_KEY,
            "models": ["qwen3-coder"],
        }
        ampbridge = bridge(Settings(amp_upstream_url=upstream.url, providers=[provider]))
        body = {
            "model": "qwen3-coder",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
        events: list[str] = []
        started = time.monotonic()
        with httpx.stream("POST", ampbridge.url + MESSAGES, json=body, timeout=20) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("event: "):
                    events.append(line[7:])
                    if len(events) == 1:
                        # The backend has sent only its first chunk and waits (10 s at most) for
                        # the gate: the client already has an event, long before that wait ends.
                        assert not gate.is_set() and time.monotonic() - started < 5
                        gate.set()
                elif line.startswith("data: ") and events[-1] == "message_start":
                    assert json.loads(line[6:])["message"]["model"] == "qwen3-coder"
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_delta" in events and "message_delta" in events
    [received] = chat.requests
    assert received.path == "/v1/chat/completions"
    assert received.header("authorization") == f"Bearer {OPENAI_KEY}"
    sent = received.json()
    assert sent["model"] == "qwen3-coder" and sent["stream"] is True
    assert sent["messages"][-1] == {"role": "user", "content": "hi"}
    assert not upstream.requests


@pytest.fixture
def lowercase_chat():
    fake = conversation_backend("chat", ["qwen-local"], tool_case=str.lower)
    with ServerThread(fake) as thread:
        fake.url = thread.url  # type: ignore[attr-defined]
        yield fake


def chat_provider(fake: RecordingServer, models: list[str]) -> dict[str, Any]:
    return {"name": "local", "type": "openai", "base-url": fake.url, "api-key": "k", "models": models}  # type: ignore[attr-defined]


def test_a_mapped_translated_reply_has_amps_model_name_tool_casing_and_signatures(
    upstream, bridge, lowercase_chat
):
    ampbridge = bridge(
        Settings(
            amp_upstream_url=upstream.url,
            providers=[chat_provider(lowercase_chat, ["qwen-local"])],
            amp_model_mappings=[{"from": "claude-opus-9", "to": "qwen-local"}],
        )
    )
    tool = {
        "name": "Read",
        "description": "read a file",
        "input_schema": {"type": "object", "properties": {}},
    }
    body: dict[str, Any] = {
        "model": "claude-opus-9",
        "max_tokens": 50,
        "tools": [tool],
        "messages": [{"role": "user", "content": "read it"}],
    }
    reply = httpx.post(ampbridge.url + MESSAGES, json=body, timeout=20)
    assert reply.status_code == 200, reply.text
    message = reply.json()
    assert message["model"] == "claude-opus-9" and message["stop_reason"] == "tool_use"
    [block] = [b for b in message["content"] if b["type"] == "tool_use"]
    assert block["name"] == "Read" and block["input"] == TOOL_ARGS and block["signature"] == ""
    streamed = httpx.post(ampbridge.url + MESSAGES, json={**body, "stream": True}, timeout=20)
    events = sse_data(streamed.text)
    assert events[0]["message"]["model"] == "claude-opus-9"
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert [(b["type"], b["name"], b.get("signature")) for b in starts if b["type"] == "tool_use"] == [
        ("tool_use", "Read", "")
    ]
    assert [r.json()["model"] for r in lowercase_chat.requests] == ["qwen-local", "qwen-local"]
    assert not upstream.requests


def test_a_thinking_suffix_becomes_the_chat_backends_effort(upstream, bridge, lowercase_chat):
    ampbridge = bridge(
        Settings(amp_upstream_url=upstream.url, providers=[chat_provider(lowercase_chat, ["qwen-local"])])
    )
    body = {"model": "qwen-local(high)", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(ampbridge.url + MESSAGES, json=body, timeout=20)
    assert reply.status_code == 200 and reply.json()["model"] == "qwen-local"
    [received] = lowercase_chat.requests
    assert received.json()["model"] == "qwen-local" and received.json()["reasoning_effort"] == "high"


def test_a_backend_error_reaches_the_client_in_its_own_format(upstream, bridge):
    limited = RecordingServer("limited")

    async def too_many(scope, receive, send, rec):
        body = {"error": {"message": "slow down please", "type": "rate_limit_error", "code": "rate_limited"}}
        await respond(send, 429, json.dumps(body).encode())

    limited.route(lambda m, p: True, too_many)
    with ServerThread(limited) as thread:
        limited.url = thread.url  # type: ignore[attr-defined]
        ampbridge = bridge(
            Settings(amp_upstream_url=upstream.url, providers=[chat_provider(limited, ["qwen-local"])])
        )
        body = {"model": "qwen-local", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        reply = httpx.post(ampbridge.url + MESSAGES, json=body, timeout=20)
    assert reply.status_code == 429
    assert reply.json() == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down please"},
    }
    assert not upstream.requests


def test_a_token_count_for_a_model_of_another_format_is_estimated_locally(backends, upstream, bridge):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    body = {"model": "qwen3-coder", "messages": [{"role": "user", "content": "x" * 400}]}
    reply = httpx.post(ampbridge.url + MESSAGES + "/count_tokens", json=body, timeout=20)
    assert reply.status_code == 200
    assert 100 <= reply.json()["input_tokens"] <= 200
    assert not upstream.requests
    assert not [r for server in backends.values() for r in server.requests if r.method == "POST"]


def test_legacy_completions_for_a_model_of_another_format_get_a_clear_openai_error(
    backends, upstream, bridge
):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    reply = httpx.post(
        ampbridge.url + "/api/provider/openai/v1/completions",
        json={"model": "claude-opus-4-7", "prompt": "hi"},
    )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "unsupported_endpoint" and "claude-opus-4-7" in error["message"]
    assert not [r for r in backends["anthropic"].requests if r.method == "POST"]
    assert not upstream.requests


def test_a_plain_route_call_is_translated_too(backends, bridge):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=""))
    reply = httpx.post(
        ampbridge.url + "/v1/chat/completions",
        json={"model": "claude-opus-4-7", "messages": [{"role": "user", "content": "hi"}]},
        timeout=20,
    )
    assert reply.status_code == 200, reply.text
    completion = reply.json()
    assert completion["object"] == "chat.completion" and completion["model"] == "claude-opus-4-7"
    assert completion["choices"][0]["message"]["role"] == "assistant"
    [received] = [r for r in backends["anthropic"].requests if r.method == "POST"]
    assert received.path == "/v1/messages" and received.header("anthropic-version") == "2023-06-01"
    [message] = received.json()["messages"]
    assert message["role"] == "user" and "hi" in json.dumps(message["content"])


def test_the_backends_name_for_a_model_is_sent_and_the_asked_name_comes_back(backends, bridge, monkeypatch):
    monkeypatch.setattr(
        Backend, "served_names", lambda self, model: [model + "-q4" if model == "qwen3-coder" else model]
    )
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=""))
    same = httpx.post(
        ampbridge.url + "/v1/chat/completions",
        json={"model": "qwen3-coder", "messages": [{"role": "user", "content": "hi"}]},
        timeout=20,
    )
    translated = httpx.post(
        ampbridge.url + "/v1/messages",
        json={"model": "qwen3-coder", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        timeout=20,
    )
    assert same.status_code == translated.status_code == 200
    assert same.json()["model"] == translated.json()["model"] == "qwen3-coder"
    sent = [r.json()["model"] for r in backends["openai"].requests if r.method == "POST"]
    assert sent == ["qwen3-coder-q4", "qwen3-coder-q4"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "gpt-5.4", "n": ' + b"7" * 5000 + b"}",  # over Python's int-digit limit
        b'{"model": "gpt-5.4", "messages": [oops]}',  # not JSON at all
    ],
    ids=["huge-number", "not-json"],
)
def test_an_odd_body_for_a_local_model_is_served_locally_unchanged(backends, upstream, bridge, body):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    reply = httpx.post(
        ampbridge.url + "/api/provider/openai/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=20,
    )
    assert reply.headers.get("x-served-by") == "openai-backend"
    [received] = [r for r in backends["openai"].requests if r.method == "POST"]
    assert received.body == body
    assert not upstream.requests


def test_an_odd_body_that_would_need_translating_gets_a_vendor_error_not_credits(backends, upstream, bridge):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    body = b'{"model": "qwen3-coder", "max_tokens": 5, "messages": [oops]}'
    reply = httpx.post(ampbridge.url + MESSAGES, content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert reply.json()["type"] == "error" and "not a JSON object" in reply.json()["error"]["message"]
    assert not upstream.requests


def test_a_large_body_is_parsed_in_a_worker_thread(monkeypatch):
    threaded: list[int] = []
    original = anyio.to_thread.run_sync

    async def recording(function, *args, **kwargs):
        threaded.append(len(args[0]))
        return await original(function, *args, **kwargs)

    monkeypatch.setattr(request_body.anyio.to_thread, "run_sync", recording)
    large = json.dumps({"model": "m", "pad": "x" * (request_body.THREAD_THRESHOLD + 10)}).encode()
    small = b'{"model": "m"}'

    async def read(data: bytes) -> RequestBody:
        chunks = [{"type": "http.request", "body": data, "more_body": False}]

        async def receive():
            return chunks.pop()

        return await RequestBody.read(receive, 1 << 30)

    assert anyio.run(read, small).payload == {"model": "m"}
    assert threaded == []
    assert anyio.run(read, large).payload["model"] == "m"
    assert threaded == [len(large), len(large)]  # the bounded scan, then the parse: both off the loop
