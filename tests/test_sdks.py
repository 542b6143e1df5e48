"""The official SDKs, pointed at Amp's provider routes, complete calls through ampbridge on the
local path and on the upstream path, plain and streamed."""

from __future__ import annotations

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

from .conftest import provider_settings

LOCAL = "local"
UPSTREAM = "upstream"


@pytest.fixture
def ampbridge(backends, upstream, bridge):
    return bridge(provider_settings(backends, amp_upstream_url=upstream.url, amp_upstream_api_key="amp-key"))


def served_by(path: str, backends, upstream) -> str:
    if any(r.path.endswith(path) for r in upstream.requests):
        return UPSTREAM
    if any(r.path.endswith(path) for b in backends.values() for r in b.requests):
        return LOCAL
    return "nobody"


@pytest.mark.parametrize(("model", "expected"), [("gpt-5.4", LOCAL), ("gpt-4.1-amp-only", UPSTREAM)])
def test_openai_sdk_chat_and_responses(ampbridge, backends, upstream, model, expected):
    client = openai.OpenAI(
        base_url=f"{ampbridge.url}/api/provider/openai/v1", api_key="client-key", max_retries=0
    )
    completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "OK"
    assert completion.model == model
    chunks = list(
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "OK"
    events = list(client.responses.create(model=model, input="hi", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.model == model
    assert events[-1].response.output_text == "OK"
    assert served_by("/chat/completions", backends, upstream) == expected
    assert served_by("/responses", backends, upstream) == expected


@pytest.mark.parametrize(("model", "expected"), [("claude-opus-4-7", LOCAL), ("claude-amp-only", UPSTREAM)])
def test_anthropic_sdk_messages(ampbridge, backends, upstream, model, expected):
    client = anthropic.Anthropic(
        base_url=f"{ampbridge.url}/api/provider/anthropic", api_key="client-key", max_retries=0
    )
    message = client.messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert message.model == model
    assert message.content[0].type == "tool_use"
    with client.messages.stream(
        model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "OK"
    assert final.stop_reason == "end_turn"
    assert final.model == model
    assert served_by("/v1/messages", backends, upstream) == expected


@pytest.mark.parametrize(("model", "expected"), [("gemini-2.5-pro", LOCAL), ("gemini-amp-only", UPSTREAM)])
def test_google_genai_sdk_generate(ampbridge, backends, upstream, model, expected):
    client = genai.Client(
        api_key="client-key", http_options=types.HttpOptions(base_url=f"{ampbridge.url}/api/provider/google")
    )
    reply = client.models.generate_content(model=model, contents="What is the secret word?")
    assert reply.text == "The secret word is OK."
    pieces = list(client.models.generate_content_stream(model=model, contents="What is the secret word?"))
    assert "".join(p.text or "" for p in pieces) == "The secret The secret word is OK."
    assert served_by(f"{model}:generateContent", backends, upstream) == expected
    assert served_by(f"{model}:streamGenerateContent", backends, upstream) == expected
