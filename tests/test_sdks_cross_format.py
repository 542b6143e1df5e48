"""The official SDKs talk through ampbridge to a backend of another wire format (SPEC §14): the
request reaches the backend translated (the fakes refuse what the real APIs refuse), and the SDK
reads the translated reply — plain, streamed, and one tool round trip."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from ampbridge.settings import Settings

from .conftest import running_bridge
from .cross_format_fakes import TOOL_ARGS, conversation_backend
from .servers import RecordingServer, ServerThread

MODELS = {"anthropic": "claude-local", "chat": "qwen-local", "gemini": "gemini-local"}
PROVIDER_TYPES = {"anthropic": "anthropic", "chat": "openai", "gemini": "google"}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


class Stack:
    def __init__(self, url: str, fakes: dict[str, RecordingServer]) -> None:
        self.url = url
        self.fakes = fakes

    def reset(self) -> None:
        for fake in self.fakes.values():
            fake.reset()

    def received(self, api: str) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.fakes[api].requests]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    fakes = {api: conversation_backend(api, [model]) for api, model in MODELS.items()}
    threads = {api: ServerThread(fake) for api, fake in fakes.items()}
    for thread in threads.values():
        thread.__enter__()
    providers = [
        {
            "name": f"{api}-backend",
            "type": PROVIDER_TYPES[api],
            "base-url": threads[api].url + ("/v1" if api == "chat" else ""),
            "api-key": f"{api}-key",
            "models": [MODELS[api]],
        }
        for api in MODELS
    ]
    settings = Settings(providers=providers, amp_upstream_url="")
    try:
        with running_bridge(settings) as bridge:
            yield Stack(bridge.url, fakes)
    finally:
        for thread in threads.values():
            thread.__exit__(None, None, None)


@pytest.fixture
def bridge_stack(stack: Stack) -> Stack:
    stack.reset()
    return stack


def other_than(*own: str) -> list[str]:
    return [api for api in MODELS if api not in own]


# --- Anthropic SDK ------------------------------------------------------------------------------


def anthropic_client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="client-key", max_retries=0)


@pytest.mark.parametrize("backend", other_than("anthropic"))
def test_anthropic_sdk_plain_and_streamed(bridge_stack: Stack, backend: str) -> None:
    client = anthropic_client(bridge_stack)
    model = MODELS[backend]
    messages: Any = [{"role": "user", "content": "hi"}]
    plain = client.messages.create(model=model, max_tokens=100, messages=messages)
    assert plain.model == model and plain.stop_reason == "end_turn"
    assert [b.text for b in plain.content if b.type == "text"] == [f"Hello from {backend}"]
    with client.messages.stream(model=model, max_tokens=100, messages=messages) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == f"Hello from {backend}" and final.model == model
    received = bridge_stack.fakes[backend].requests
    assert len(received) == 2  # translated: the other API's path, the backend's own key
    key = received[0].header("authorization") or received[0].header("x-goog-api-key")
    assert key in (f"Bearer {backend}-key", f"{backend}-key")
    assert received[0].header("x-api-key") is None and received[0].header("anthropic-version") is None


@pytest.mark.parametrize("backend", other_than("anthropic"))
def test_anthropic_sdk_tool_round_trip(bridge_stack: Stack, backend: str) -> None:
    client = anthropic_client(bridge_stack)
    model = MODELS[backend]
    tool: Any = {
        "name": WEATHER_TOOL["name"],
        "description": WEATHER_TOOL["description"],
        "input_schema": WEATHER_TOOL["parameters"],
    }
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    with client.messages.stream(model=model, max_tokens=100, messages=messages, tools=[tool]) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert (call.name, call.input) == ("get_weather", TOOL_ARGS)
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Paris"}]},
    ]
    second = client.messages.create(model=model, max_tokens=100, messages=messages, tools=[tool])
    assert [b.text for b in second.content if b.type == "text"] == ["Sunny in Paris"]
    assert second.model == model


# --- OpenAI SDK: Chat Completions and Responses ----------------------------------------------


def openai_client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="client-key", max_retries=0)


@pytest.mark.parametrize("backend", other_than("chat"))
def test_openai_chat_sdk_plain_and_streamed(bridge_stack: Stack, backend: str) -> None:
    client = openai_client(bridge_stack)
    model = MODELS[backend]
    plain = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert plain.model == model and plain.choices[0].message.content == f"Hello from {backend}"
    assert plain.choices[0].finish_reason == "stop" and plain.usage is not None
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Hello from {backend}" and {c.model for c in chunks} == {model}
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 10


@pytest.mark.parametrize("backend", other_than("chat"))
def test_openai_chat_sdk_tool_round_trip(bridge_stack: Stack, backend: str) -> None:
    client = openai_client(bridge_stack)
    model = MODELS[backend]
    tools: Any = [{"type": "function", "function": WEATHER_TOOL}]
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    with client.chat.completions.stream(model=model, messages=messages, tools=tools) as stream:
        first = stream.get_final_completion()
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == TOOL_ARGS
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Paris"},
    ]
    second = client.chat.completions.create(model=model, messages=messages, tools=tools)
    assert second.choices[0].message.content == "Sunny in Paris"


@pytest.mark.parametrize("backend", other_than("chat"))
def test_openai_responses_sdk_plain_and_streamed(bridge_stack: Stack, backend: str) -> None:
    client = openai_client(bridge_stack)
    model = MODELS[backend]
    plain = client.responses.create(model=model, input="hi")
    assert plain.output_text == f"Hello from {backend}" and plain.model == model
    with client.responses.stream(model=model, input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == f"Hello from {backend}" and final.status == "completed"


@pytest.mark.parametrize("backend", other_than("chat"))
def test_openai_responses_sdk_tool_round_trip(bridge_stack: Stack, backend: str) -> None:
    client = openai_client(bridge_stack)
    model = MODELS[backend]
    tools: Any = [{"type": "function", **WEATHER_TOOL}]
    first = client.responses.create(model=model, input="weather in Paris?", tools=tools)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == TOOL_ARGS
    follow_up: Any = [
        {"role": "user", "content": "weather in Paris?"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "Paris"},
    ]
    with client.responses.stream(model=model, input=follow_up, tools=tools) as stream:
        second = stream.get_final_response()
    assert second.output_text == "Sunny in Paris"


# --- google-genai SDK ---------------------------------------------------------------------------


def genai_client(stack: Stack) -> genai.Client:
    return genai.Client(api_key="client-key", http_options=genai_types.HttpOptions(base_url=stack.url))


@pytest.mark.parametrize("backend", other_than("gemini"))
def test_google_genai_sdk_plain_and_streamed(bridge_stack: Stack, backend: str) -> None:
    client = genai_client(bridge_stack)
    model = MODELS[backend]
    plain = client.models.generate_content(model=model, contents="hi")
    assert plain.text == f"Hello from {backend}" and plain.model_version == model
    chunks = list(client.models.generate_content_stream(model=model, contents="hi"))
    assert "".join(c.text or "" for c in chunks) == f"Hello from {backend}"
    assert chunks[-1].candidates and chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP


@pytest.mark.parametrize("backend", other_than("gemini"))
def test_google_genai_sdk_tool_round_trip(bridge_stack: Stack, backend: str) -> None:
    client = genai_client(bridge_stack)
    model = MODELS[backend]
    declaration = genai_types.FunctionDeclaration(
        name=WEATHER_TOOL["name"],
        description=WEATHER_TOOL["description"],
        parameters_json_schema=WEATHER_TOOL["parameters"],
    )
    config = genai_types.GenerateContentConfig(
        tools=[genai_types.Tool(function_declarations=[declaration])],
        automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True),
    )
    question = genai_types.Content(role="user", parts=[genai_types.Part.from_text(text="weather in Paris?")])
    chunks = list(client.models.generate_content_stream(model=model, contents=[question], config=config))
    [call] = [c for chunk in chunks for c in chunk.function_calls or []]
    assert (call.name, call.args) == ("get_weather", TOOL_ARGS)
    answer = genai_types.Part.from_function_response(name="get_weather", response={"result": "Paris"})
    contents = [
        question,
        genai_types.Content(role="model", parts=[genai_types.Part(function_call=call)]),
        genai_types.Content(role="user", parts=[answer]),
    ]
    second = client.models.generate_content(model=model, contents=contents, config=config)
    # The function's response object reaches the backend as the tool result's text.
    assert second.text is not None and second.text.startswith("Sunny in ")
    assert json.loads(second.text.removeprefix("Sunny in ")) == {"result": "Paris"}
