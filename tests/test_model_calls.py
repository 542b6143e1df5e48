"""Model calls over real HTTP: served by local backends when possible, by the Amp upstream otherwise."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from ampbridge.settings import Settings

from .conftest import ANTHROPIC_KEY, GOOGLE_KEY, OPENAI_KEY, provider_settings
from .servers import Recorded, model_backend, stream

CLIENT_KEY = "fake-amp-key-0000"


def sse_data(text: str) -> list[dict]:
    return [
        json.loads(line[5:])
        for line in text.splitlines()
        if line.startswith("data:") and line[5:].strip() != "[DONE]"
    ]


# --- each wire format, served locally ---------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
def test_anthropic_messages_are_served_by_the_anthropic_backend(backends, upstream, bridge, streamed):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    body = {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 10,
        "stream": streamed,
        "messages": [{"role": "user", "content": "hi"}],
    }
    response = httpx.post(
        f"{ampbridge.url}/api/provider/anthropic/v1/messages",
        json=body,
        headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 200
    assert response.headers["x-served-by"] == "anthropic-backend"
    if streamed:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_data(response.text)
        assert [e["type"] for e in events][:2] == ["message_start", "content_block_start"]
        assert events[0]["message"]["model"] == "claude-sonnet-4-5-20250929"
    else:
        assert response.json()["model"] == "claude-sonnet-4-5-20250929"
    (received,) = backends["anthropic"].requests
    assert received.path == "/v1/messages"
    assert received.header("x-api-key") == ANTHROPIC_KEY
    assert received.header("anthropic-version") == "2023-06-01"
    assert CLIENT_KEY not in json.dumps(received.headers)
    assert received.json() == body
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("path", "backend_path"),
    [
        ("/api/provider/openai/v1/chat/completions", "/v1/chat/completions"),
        ("/api/provider/groq/chat/completions", "/v1/chat/completions"),
        ("/api/provider/openai/v1/completions", "/v1/completions"),
        ("/api/provider/xai/completions", "/v1/completions"),
        ("/api/provider/openai/v1/responses", "/v1/responses"),
        ("/api/provider/openai/responses", "/v1/responses"),
    ],
)
def test_openai_routes_reach_the_openai_backend_without_doubling_v1(
    backends, upstream, bridge, path, backend_path
):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    response = httpx.post(
        f"{ampbridge.url}{path}",
        json={"model": "gpt-5.4", "input": "hi", "messages": []},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert response.status_code == 200
    assert response.json()["model"] == "gpt-5.4"
    (received,) = backends["openai"].requests
    assert received.path == backend_path
    assert received.header("authorization") == f"Bearer {OPENAI_KEY}"
    assert CLIENT_KEY not in json.dumps(received.headers)


def test_openai_chat_stream_is_served_locally(backends, bridge):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=""))
    response = httpx.post(
        f"{ampbridge.url}/api/provider/openai/v1/chat/completions",
        json={"model": "qwen3-coder", "stream": True, "messages": []},
    )
    assert response.status_code == 200
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in sse_data(response.text)) == "OK"
    assert response.text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize(
    ("path", "backend_path", "streamed"),
    [
        (
            "/api/provider/google/v1beta/models/gemini-2.5-pro:generateContent",
            "/v1beta/models/gemini-2.5-pro:generateContent",
            False,
        ),
        (
            "/api/provider/google/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse&key="
            + CLIENT_KEY,
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            True,
        ),
        (
            "/api/provider/google/v1beta1/publishers/google/models/gemini-3-flash-preview:generateContent",
            "/v1beta/models/gemini-3-flash-preview:generateContent",
            False,
        ),
    ],
)
def test_gemini_calls_are_served_by_the_discovered_google_backend(
    backends, upstream, bridge, path, backend_path, streamed
):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    response = httpx.post(
        f"{ampbridge.url}{path}",
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        headers={"x-goog-api-key": "placeholder", "Authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert response.status_code == 200
    replies = sse_data(response.text) if streamed else [response.json()]
    assert replies[-1]["candidates"][0]["content"]["parts"][0]["text"] == "The secret word is OK."
    received = backends["google"].requests[-1]
    assert received.path == backend_path
    assert received.header("x-goog-api-key") == GOOGLE_KEY
    assert received.header("authorization") is None
    assert received.query == (b"alt=sse" if streamed else b"")
    assert upstream.requests == []


def test_count_tokens_routes(backends, bridge):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=""))
    anthropic = httpx.post(
        f"{ampbridge.url}/api/provider/anthropic/v1/messages/count_tokens",
        json={"model": "claude-opus-4-7", "messages": []},
    )
    gemini = httpx.post(
        f"{ampbridge.url}/api/provider/google/v1beta/models/gemini-2.5-pro:countTokens", json={}
    )
    assert anthropic.json() == {"input_tokens": 42}
    assert gemini.json() == {"totalTokens": 42}


# --- what is not local -------------------------------------------------------------------------


def test_unknown_models_reach_the_upstream_byte_for_byte(backends, upstream, bridge):
    ampbridge = bridge(
        provider_settings(backends, amp_upstream_url=upstream.url, amp_upstream_api_key="amp-key")
    )
    body = b'{ "stream" : false,\n  "model":"claude-mystery-9",  "messages": [{"role":"user","content":"h\\u00e9"}] }'
    response = httpx.post(
        f"{ampbridge.url}/api/provider/anthropic/v1/messages?beta=true",
        content=body,
        headers={
            "x-api-key": CLIENT_KEY,
            "content-type": "application/json",
            "anthropic-beta": "context-1m-2025-08-07,other-beta",
        },
    )
    assert response.status_code == 200
    assert response.headers["x-served-by"] == "amp-upstream"
    (received,) = upstream.requests
    assert (received.method, received.path, received.query, received.body) == (
        "POST",
        "/api/provider/anthropic/v1/messages",
        b"beta=true",
        body,
    )
    assert received.header("x-api-key") == "amp-key"
    assert received.header("anthropic-beta") == "context-1m-2025-08-07,other-beta"  # untouched upstream
    assert all(not b.requests for b in backends.values() if b is not backends["google"])


def test_unreadable_model_goes_upstream_or_gets_400_without_one(backends, upstream, bridge):
    forwarding = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    assert (
        httpx.post(f"{forwarding.url}/api/provider/openai/v1/responses", content=b"not json").status_code
        == 200
    )
    assert upstream.requests[-1].body == b"not json"
    closed = bridge(provider_settings(backends, amp_upstream_url=""))
    response = httpx.post(f"{closed.url}/api/provider/openai/v1/responses", content=b"not json")
    assert response.status_code == 400
    assert "model" in response.json()["error"]["message"]


def test_no_upstream_gives_404_naming_the_model(backends, bridge):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=""))
    response = httpx.post(
        f"{ampbridge.url}/api/provider/openai/v1/chat/completions", json={"model": "gpt-9-ultra"}
    )
    assert response.status_code == 404
    error = response.json()["error"]  # OpenAI's error shape, so SDKs show the message
    assert (error["type"], error["code"]) == ("invalid_request_error", "model_not_found")
    assert "'gpt-9-ultra'" in error["message"]
    assert "amp-model-mappings" in error["message"]


def test_a_model_of_another_wire_format_is_served_locally_translated(backends, upstream, bridge):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    response = httpx.post(
        f"{ampbridge.url}/api/provider/openai/v1/chat/completions",
        json={"model": "claude-opus-4-7", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"  # the format the client asked for
    assert response.json()["model"] == "claude-opus-4-7"
    assert [r.path for r in backends["anthropic"].requests] == ["/v1/messages"]
    assert upstream.requests == []


def test_other_provider_subpaths_and_methods_go_upstream_unchanged(backends, upstream, bridge):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    httpx.get(f"{ampbridge.url}/api/provider/openai/v1/files/abc?x=1")
    httpx.delete(f"{ampbridge.url}/api/provider/anthropic/v1/messages")
    assert [(r.method, r.path, r.query) for r in upstream.requests] == [
        ("GET", "/api/provider/openai/v1/files/abc", b"x=1"),
        ("DELETE", "/api/provider/anthropic/v1/messages", b""),
    ]


# --- mappings ------------------------------------------------------------------------------


def mapped_settings(backends, upstream, mappings, **extra) -> Settings:
    return provider_settings(backends, amp_upstream_url=upstream.url, amp_model_mappings=mappings, **extra)


def test_mapped_call_is_rewritten_and_the_reply_carries_the_requested_name(backends, upstream, bridge):
    ampbridge = bridge(
        mapped_settings(backends, upstream, [{"from": "Claude-Opus-4-1", "to": "claude-haiku-4-5-20251001"}])
    )
    body = {"model": "claude-opus-4-1", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{ampbridge.url}/api/provider/anthropic/v1/messages", json=body)
    assert response.json()["model"] == "claude-opus-4-1"
    assert int(response.headers["content-length"]) == len(response.content)
    assert backends["anthropic"].requests[-1].json()["model"] == "claude-haiku-4-5-20251001"
    streamed = httpx.post(
        f"{ampbridge.url}/api/provider/anthropic/v1/messages", json={**body, "stream": True}
    )
    assert sse_data(streamed.text)[0]["message"]["model"] == "claude-opus-4-1"
    assert upstream.requests == []


def test_mapped_openai_responses_stream_carries_the_requested_name(backends, upstream, bridge):
    ampbridge = bridge(
        mapped_settings(backends, upstream, [{"from": "^gpt-5\\.5.*$", "to": "gpt-5.4", "regex": True}])
    )
    response = httpx.post(
        f"{ampbridge.url}/api/provider/openai/v1/responses", json={"model": "gpt-5.5-codex", "stream": True}
    )
    events = sse_data(response.text)
    assert {e["response"]["model"] for e in events if "response" in e} == {"gpt-5.5-codex"}
    assert backends["openai"].requests[-1].json()["model"] == "gpt-5.4"


def test_mapped_gemini_path_model_is_rewritten_and_restored(backends, upstream, bridge):
    ampbridge = bridge(
        mapped_settings(backends, upstream, [{"from": "gemini-3-pro-preview", "to": "gemini-2.5-pro"}])
    )
    plain = httpx.post(
        f"{ampbridge.url}/api/provider/google/v1beta/models/gemini-3-pro-preview:generateContent", json={}
    )
    streamed = httpx.post(
        f"{ampbridge.url}/api/provider/google/v1beta/models/gemini-3-pro-preview:streamGenerateContent?alt=sse",
        json={},
    )
    assert plain.json()["modelVersion"] == "gemini-3-pro-preview"
    assert {e["modelVersion"] for e in sse_data(streamed.text)} == {"gemini-3-pro-preview"}
    assert [r.path for r in backends["google"].requests if r.method == "POST"] == [
        "/v1beta/models/gemini-2.5-pro:generateContent",
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
    ]


def test_thinking_suffix_is_ignored_for_lookup_and_kept(backends, upstream, bridge):
    ampbridge = bridge(
        mapped_settings(
            backends,
            upstream,
            [{"from": "gpt-5", "to": "gpt-5-mini"}, {"from": "gpt-5-pro", "to": "qwen3-coder(low)"}],
        )
    )
    for requested, served in [
        ("gpt-5.4(high)", "gpt-5.4(high)"),
        ("gpt-5(medium)", "gpt-5-mini(medium)"),
        ("gpt-5-pro(high)", "qwen3-coder(low)"),
    ]:
        response = httpx.post(
            f"{ampbridge.url}/api/provider/openai/v1/chat/completions", json={"model": requested}
        )
        assert response.status_code == 200
        assert backends["openai"].requests[-1].json()["model"] == served
        assert response.json()["model"] == (requested if requested != served else served)


def test_mapping_to_a_model_nobody_serves_is_skipped(backends, upstream, bridge):
    ampbridge = bridge(
        mapped_settings(
            backends,
            upstream,
            [
                {"from": "claude-opus-9", "to": "not-served-anywhere"},
                {"from": "claude-opus-9", "to": "claude-opus-4-7"},
            ],
        )
    )
    httpx.post(f"{ampbridge.url}/api/provider/anthropic/v1/messages", json={"model": "claude-opus-9"})
    assert backends["anthropic"].requests[-1].json()["model"] == "claude-opus-4-7"
    only_unserved = bridge(mapped_settings(backends, upstream, [{"from": "claude-opus-9", "to": "nope"}]))
    httpx.post(f"{only_unserved.url}/api/provider/anthropic/v1/messages", json={"model": "claude-opus-9"})
    assert upstream.requests[-1].json()["model"] == "claude-opus-9"


def test_force_model_mappings_take_precedence_over_local_models(backends, upstream, bridge):
    mappings = [{"from": "claude-opus-4-7", "to": "claude-haiku-4-5-20251001"}]
    plain = bridge(mapped_settings(backends, upstream, mappings))
    httpx.post(f"{plain.url}/api/provider/anthropic/v1/messages", json={"model": "claude-opus-4-7"})
    assert backends["anthropic"].requests[-1].json()["model"] == "claude-opus-4-7"
    forced = bridge(mapped_settings(backends, upstream, mappings, amp_force_model_mappings=True))
    httpx.post(f"{forced.url}/api/provider/anthropic/v1/messages", json={"model": "claude-opus-4-7"})
    assert backends["anthropic"].requests[-1].json()["model"] == "claude-haiku-4-5-20251001"


# --- compatibility fixes ---------------------------------------------------------------------


def test_tool_names_signatures_and_request_sanitizing(backends, upstream, bridge):
    async def lower_case_tools(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        start = {
            "type": "message_start",
            "message": {
                "id": "m",
                "type": "message",
                "role": "assistant",
                "model": "claude-opus-4-7",
                "content": [],
            },
        }
        tool = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t1", "name": "read", "input": {}},
        }
        thinking = {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "thinking", "thinking": ""},
        }
        text = {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "text_delta", "text": "tool_use"},
        }
        events = [
            f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in (start, tool, thinking, text)
        ]
        await stream(send, [b"".join(events)[:50], b"".join(events)[50:]])  # an event split across chunks

    backends["anthropic"].route(lambda m, p: p == "/v1/messages", lower_case_tools)
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    body = {
        "model": "claude-opus-4-7",
        "stream": True,
        "tools": [{"name": "Read", "input_schema": {}}, {"name": "Bash", "input_schema": {}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "unsigned"},
                    {"type": "thinking", "thinking": "signed", "signature": "sig-1"},
                    {"type": "thinking", "thinking": "empty", "signature": ""},
                    {"type": "tool_use", "id": "t0", "name": "Read", "input": {}, "signature": "x"},
                ],
            },
        ],
    }
    response = httpx.post(
        f"{ampbridge.url}/api/provider/anthropic/v1/messages",
        json=body,
        headers={"anthropic-beta": "context-1m-2025-08-07, fine-grained-tool-streaming-2025-05-14"},
    )
    events = sse_data(response.text)
    tool_block = events[1]["content_block"]
    assert (tool_block["name"], tool_block["signature"]) == ("Read", "")
    assert events[2]["content_block"]["signature"] == ""
    assert events[3]["delta"]["text"] == "tool_use"
    received = backends["anthropic"].requests[-1]
    assert received.json()["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "signed", "signature": "sig-1"},
        {"type": "tool_use", "id": "t0", "name": "Read", "input": {}},
    ]
    assert received.header("anthropic-beta") == "fine-grained-tool-streaming-2025-05-14"
    assert int(received.header("content-length")) == len(received.body)


def test_unchanged_events_keep_their_exact_bytes(backends, upstream, bridge):
    raw = b'event: ping\ndata: {"type": "ping",  "odd":   "spacing"}\n\n'

    async def odd(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        await stream(send, [raw])

    backends["anthropic"].route(lambda m, p: p == "/v1/messages", odd)
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    response = httpx.post(
        f"{ampbridge.url}/api/provider/anthropic/v1/messages", json={"model": "claude-opus-4-7"}
    )
    assert response.content == raw


def test_first_local_sse_event_arrives_before_the_backend_finishes(upstream, bridge):
    gate = threading.Event()
    backend = model_backend("gated", ["claude-opus-4-7"], gate=gate)
    from .servers import ServerThread

    with ServerThread(backend) as thread:
        ampbridge = bridge(
            Settings(
                amp_upstream_url=upstream.url,
                providers=[
                    {
                        "name": "gated",
                        "type": "anthropic",
                        "base-url": thread.url,
                        "models": ["claude-opus-4-7"],
                    }
                ],
            )
        )
        with httpx.stream(
            "POST",
            f"{ampbridge.url}/api/provider/anthropic/v1/messages",
            json={"model": "claude-opus-4-7", "stream": True},
        ) as response:
            lines = response.iter_lines()
            assert next(lines) == "event: message_start"
            assert json.loads(next(lines)[5:])["type"] == "message_start"  # backend still holds the rest
            gate.set()
            rest = [line for line in lines if line.startswith("event:")]
    assert rest[-1] == "event: message_stop"


def test_backend_unreachable_gives_502_naming_the_backend_not_the_key(upstream, bridge):
    ampbridge = bridge(
        Settings(
            amp_upstream_url=upstream.url,
            providers=[
                {
                    "name": "gone",
                    "type": "openai",
                    "base-url": "http://127.0.0.1:9",
                    "api-key": "sk-secret-gone",
                    "models": ["m"],
                }
            ],
        )
    )
    response = httpx.post(f"{ampbridge.url}/api/provider/openai/v1/chat/completions", json={"model": "m"})
    assert response.status_code == 502
    assert "'gone'" in response.json()["error"]["message"]
    assert "sk-secret-gone" not in response.text


# --- model lists and plain routes ------------------------------------------------------------


def test_model_lists_in_each_providers_format(backends, bridge):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=""))
    openai = httpx.get(f"{ampbridge.url}/api/provider/openai/v1/models").json()
    anthropic = httpx.get(f"{ampbridge.url}/api/provider/anthropic/v1/models").json()
    google = httpx.get(f"{ampbridge.url}/api/provider/google/v1beta/models").json()
    everything = httpx.get(f"{ampbridge.url}/v1/models").json()
    assert [m["id"] for m in openai["data"]] == ["gpt-5.4", "gpt-5-mini", "qwen3-coder"]
    assert openai["object"] == "list"
    assert [m["id"] for m in anthropic["data"]] == [
        "claude-haiku-4-5-20251001",
        "claude-opus-4-7",
    ]  # globs not listed
    assert anthropic["has_more"] is False
    assert [m["name"] for m in google["models"]] == ["models/gemini-3-flash-preview", "models/gemini-2.5-pro"]
    assert {m["id"] for m in everything["data"]} == {
        "claude-haiku-4-5-20251001",
        "claude-opus-4-7",
        "gpt-5.4",
        "gpt-5-mini",
        "qwen3-coder",
        "gemini-3-flash-preview",
        "gemini-2.5-pro",
    }


def test_plain_routes_serve_non_amp_clients_locally_and_never_spend_credits(backends, upstream, bridge):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    local = httpx.post(f"{ampbridge.url}/v1/messages", json={"model": "claude-opus-4-7"})
    unknown = httpx.post(f"{ampbridge.url}/v1/chat/completions", json={"model": "gpt-unknown"})
    gemini = httpx.post(f"{ampbridge.url}/v1beta/models/gemini-2.5-pro:generateContent", json={})
    assert local.headers["x-served-by"] == "anthropic-backend"
    assert gemini.headers["x-served-by"] == "google-backend"
    assert unknown.status_code == 404
    assert upstream.requests == []


def test_an_encoded_question_mark_in_a_gemini_model_stays_in_the_path(backends, bridge):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=""))
    response = httpx.post(
        f"{ampbridge.url}/v1beta/models/gemini-2.5-pro%3Fkey=stolen:generateContent", json={"contents": []}
    )
    assert response.status_code == 404  # no such model: nothing sent anywhere with a forged query
    assert [r for r in backends["google"].requests if r.method == "POST"] == []
    served = httpx.post(f"{ampbridge.url}/v1beta/models/gemini-2.5-pro:generateContent?alt=sse", json={})
    assert served.status_code == 200
    (received,) = [r for r in backends["google"].requests if r.method == "POST"]
    assert received.raw_path == b"/v1beta/models/gemini-2.5-pro:generateContent"


@pytest.mark.parametrize("target", ["/v1/chat/completions%zz", "/api/provider/openai/v1/chat/compl%C3etions"])
def test_malformed_targets_get_400_never_500(backends, bridge, target):
    from .servers import raw_request

    ampbridge = bridge(provider_settings(backends, amp_upstream_url=""))
    status, _ = raw_request(ampbridge.url, target, method="POST")
    assert status == 400


# --- an alias served by several upstream names ------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
def test_a_pool_of_three_names_takes_each_in_turn(backends, bridge, streamed):
    """Each call takes the pool's next name, once: three calls, three names, any pool size."""
    names = ["gpt-pool-a", "gpt-pool-b", "gpt-pool-c"]
    provider = {
        "name": "pooled",
        "type": "openai",
        "base-url": backends["openai"].url + "/v1",
        "api-key": OPENAI_KEY,
        "models": [{"name": name, "alias": "pooled-coder"} for name in names],
    }
    ampbridge = bridge(Settings(providers=[provider]))
    for _ in range(6):
        response = httpx.post(
            f"{ampbridge.url}/api/provider/openai/v1/chat/completions",
            json={"model": "pooled-coder", "stream": streamed, "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
        assert response.status_code == 200
        assert "pooled-coder" in response.text and "gpt-pool" not in response.text  # the alias comes back
    sent = [request.json()["model"] for request in backends["openai"].requests]
    assert sorted(sent[:3]) == names and sent[3:] == sent[:3]
