"""The official SDKs read translated replies: a real server on 127.0.0.1 answers every call with a
backend stream of another dialect, passed through TranslatingSend in small pieces."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as genai_types
from starlette.types import Receive, Scope, Send

from ampbridge.translate import Dialect, ReplyTranslator, TranslatingSend
from tests.servers import ServerThread
from tests.translate_samples import STREAMS, TIME_ARGS, WEATHER_ARGS


def _app(backend: Dialect, client: Dialect) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        stream = json.loads(body or b"{}").get("stream", False) or "stream" in scope["path"]
        translator = ReplyTranslator(backend=backend, client=client, model="asked-model", stream=bool(stream))
        out = TranslatingSend(send, translator)
        await out({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        data = STREAMS[backend]()
        for i in range(0, len(data), 50):
            await out({"type": "http.response.body", "body": data[i:i + 50], "more_body": i + 50 < len(data)})
    return app


@pytest.fixture(params=[d for d in Dialect], ids=str)
def backend(request: pytest.FixtureRequest) -> Dialect:
    return Dialect(request.param)


@contextmanager
def _server(backend: Dialect, client: Dialect) -> Iterator[str]:
    with ServerThread(_app(backend, client)) as server:
        yield server.url


def test_anthropic_sdk_streams_a_tool_turn(backend: Dialect) -> None:
    with _server(backend, Dialect.ANTHROPIC) as url:
        client = anthropic.Anthropic(base_url=url, api_key="test-key", max_retries=0)
        with client.messages.stream(model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as stream:
            final = stream.get_final_message()
        assert [b.type for b in final.content] == ["thinking", "text", "tool_use", "tool_use"]
        assert [b.input for b in final.content if b.type == "tool_use"] == [WEATHER_ARGS, TIME_ARGS]
        assert final.stop_reason == "tool_use" and final.model == "asked-model"
        plain = client.messages.create(model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "hi"}])
        assert plain.content[1].type == "text" and plain.content[1].text == "Hi"


def test_openai_chat_sdk_streams_a_tool_turn(backend: Dialect) -> None:
    with _server(backend, Dialect.CHAT) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="test-key", max_retries=0)
        with client.chat.completions.stream(model="gpt-x", messages=[{"role": "user", "content": "hi"}]) as stream:
            final = stream.get_final_completion()
        message = final.choices[0].message
        assert message.content == "Hi" and final.choices[0].finish_reason == "tool_calls"
        assert [json.loads(c.function.arguments) for c in message.tool_calls or []] == [WEATHER_ARGS, TIME_ARGS]
        plain = client.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}])
        assert plain.model == "asked-model" and plain.usage is not None and plain.usage.prompt_tokens == 10


def test_openai_responses_sdk_streams_a_tool_turn(backend: Dialect) -> None:
    with _server(backend, Dialect.RESPONSES) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="test-key", max_retries=0)
        with client.responses.stream(model="gpt-x", input="hi") as stream:
            final = stream.get_final_response()
        assert final.output_text == "Hi" and final.model == "asked-model"
        calls = [i for i in final.output if i.type == "function_call"]
        assert [json.loads(c.arguments) for c in calls] == [WEATHER_ARGS, TIME_ARGS]
        plain = client.responses.create(model="gpt-x", input="hi")
        assert plain.output_text == "Hi"


def test_google_genai_sdk_streams_a_tool_turn(backend: Dialect) -> None:
    with _server(backend, Dialect.GEMINI) as url:
        client = genai.Client(api_key="test-key", http_options=genai_types.HttpOptions(base_url=url))
        chunks = list(client.models.generate_content_stream(model="gemini-x", contents="hi"))
        calls = [c for chunk in chunks for c in chunk.function_calls or []]
        assert [(c.name, c.args) for c in calls] == [("get_weather", WEATHER_ARGS), ("get_time", TIME_ARGS)]
        assert "".join(chunk.text or "" for chunk in chunks if not chunk.function_calls) == "Hi"
        assert chunks[-1].candidates and chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP
        plain = client.models.generate_content(model="gemini-x", contents="hi")
        assert plain.text == "Hi" and plain.usage_metadata and plain.usage_metadata.prompt_token_count == 10
