"""Request translation: every captured Amp request becomes a valid request of every other dialect;
tools, tool results (with errors and parallel calls), images and effort settings carry over."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from ampbridge.translate import Dialect, translate_request
from tests.servers import FIXTURES

CAPTURED = [
    ("smart-lookat/07.body", Dialect.ANTHROPIC),  # title call, forced tool
    ("smart-lookat/08.body", Dialect.ANTHROPIC),  # main turn: tools, adaptive thinking
    ("smart-lookat/10.body", Dialect.ANTHROPIC),  # tool result turn
    ("smart-lookat/09.body", Dialect.GEMINI),  # look-at
    ("deep/08.body", Dialect.RESPONSES),  # deep mode: tools, reasoning
]


def _valid_anthropic(body: dict[str, Any]) -> None:
    assert isinstance(body["model"], str) and isinstance(body["max_tokens"], int)
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] == "user" and all(a != b for a, b in itertools.pairwise(roles))
    calls: set[str] = set()
    for message in body["messages"]:
        assert message["content"], "Anthropic refuses empty content"
        for block in [] if isinstance(message["content"], str) else message["content"]:
            assert block["type"] in {"text", "image", "tool_use", "tool_result", "thinking"}
            if block["type"] == "tool_use":
                calls.add(block["id"])
            if block["type"] == "tool_result":
                assert block["tool_use_id"] in calls
    for tool in body.get("tools", []):
        assert tool["input_schema"]["type"] == "object" and tool["name"]
    if body.get("thinking", {}).get("type") == "enabled":
        assert 1024 <= body["thinking"]["budget_tokens"] < body["max_tokens"]
        assert "temperature" not in body


def _valid_chat(body: dict[str, Any]) -> None:
    assert isinstance(body["model"], str)
    open_calls: list[str] = []
    for message in body["messages"]:
        assert message["role"] in {"system", "user", "assistant", "tool"}
        if message["role"] == "tool":
            assert open_calls.pop(0) == message["tool_call_id"], "tool messages follow their calls in order"
        else:
            assert not open_calls, "every tool call is answered before the next message"
        for call in message.get("tool_calls", []):
            json.loads(call["function"]["arguments"])
            open_calls.append(call["id"])
    for tool in body.get("tools", []):
        assert tool["type"] == "function" and tool["function"]["parameters"]["type"] == "object"


def _valid_responses(body: dict[str, Any]) -> None:
    assert isinstance(body["model"], str) and isinstance(body["input"], list)
    calls: set[str] = set()
    for item in body["input"]:
        kind = item.get("type", "message")
        assert kind in {"message", "function_call", "function_call_output"}
        if kind == "function_call":
            calls.add(item["call_id"])
        elif kind == "function_call_output":
            assert item["call_id"] in calls and isinstance(item["output"], str)
        else:
            assert item["role"] in {"user", "assistant", "system", "developer"}
    for tool in body.get("tools", []):
        assert tool["type"] == "function" and tool["parameters"]["type"] == "object"


_GEMINI_SCHEMA_KEYS = {"type", "format", "description", "nullable", "enum", "properties", "required", "items",
                       "minItems", "maxItems", "minimum", "maximum", "minLength", "maxLength", "pattern", "anyOf",
                       "title", "propertyOrdering"}


def _gemini_schema(schema: dict[str, Any]) -> None:
    assert set(schema) <= _GEMINI_SCHEMA_KEYS, set(schema) - _GEMINI_SCHEMA_KEYS
    for sub in schema.get("properties", {}).values():
        _gemini_schema(sub)
    if "items" in schema:
        _gemini_schema(schema["items"])


def _valid_gemini(body: dict[str, Any]) -> None:
    assert "model" not in body
    for content in body["contents"]:
        assert content["role"] in {"user", "model"} and content["parts"]
    for tool in body.get("tools", []):
        for declaration in tool["functionDeclarations"]:
            _gemini_schema(declaration["parameters"])


VALID = {Dialect.ANTHROPIC: _valid_anthropic, Dialect.CHAT: _valid_chat, Dialect.RESPONSES: _valid_responses,
         Dialect.GEMINI: _valid_gemini}


@pytest.mark.parametrize("target", list(Dialect))
@pytest.mark.parametrize(("name", "source"), CAPTURED)
def test_captured_amp_request_becomes_a_valid_request_of_each_dialect(name: str, source: Dialect, target: Dialect) -> None:
    body = json.loads((FIXTURES / name).read_text())
    translated = translate_request(body, source=source, target=target, model="local-model", stream=True)
    VALID[target](translated.body)
    text = json.dumps(translated.body)
    assert "say OK" in text or "secret word" in text  # the user's words arrive
    if target is Dialect.GEMINI:
        assert translated.path == "/v1beta/models/local-model:streamGenerateContent?alt=sse"
    else:
        assert translated.body["model"] == "local-model" and translated.body["stream"] is True


@pytest.mark.parametrize("target", [Dialect.CHAT, Dialect.RESPONSES, Dialect.GEMINI])
def test_amp_tools_keep_their_names_and_schemas(target: Dialect) -> None:
    body = json.loads((FIXTURES / "smart-lookat/08.body").read_text())
    out = translate_request(body, source=Dialect.ANTHROPIC, target=target, model="m", stream=True).body
    if target is Dialect.CHAT:
        tools = {t["function"]["name"]: t["function"]["parameters"] for t in out["tools"]}
    elif target is Dialect.RESPONSES:
        tools = {t["name"]: t["parameters"] for t in out["tools"]}
    else:
        tools = {t["name"]: t["parameters"] for t in out["tools"][0]["functionDeclarations"]}
    assert set(tools) == {t["name"] for t in body["tools"]}
    assert tools["edit_file"]["required"] == ["path", "old_str", "new_str"]
    if target is Dialect.GEMINI:
        assert "$schema" not in tools["edit_file"] and "additionalProperties" not in tools["edit_file"]
        assert "default" not in tools["edit_file"]["properties"]["replace_all"]
    else:
        assert tools["edit_file"]["additionalProperties"] is False  # JSON Schema kept whole


def _tool_turn() -> dict[str, Any]:
    """An Anthropic conversation with two parallel calls, one of whose results is an error."""
    return {
        "model": "claude-x", "max_tokens": 1000, "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "weather and time?"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {"tz": "CET"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "clock offline"}], "is_error": True},
            ]},
        ],
        "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                  {"name": "get_time", "description": "t", "input_schema": {"type": "object", "properties": {"tz": {"type": ["string", "null"]}}}}],
    }


def test_parallel_calls_and_an_error_result_to_chat() -> None:
    out = translate_request(_tool_turn(), source=Dialect.ANTHROPIC, target=Dialect.CHAT, model="m", stream=False).body
    _valid_chat(out)
    assert out["messages"][0] == {"role": "system", "content": "Be brief."}
    assert out["messages"][1]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}
    assistant = out["messages"][2]
    assert [c["id"] for c in assistant["tool_calls"]] == ["toolu_1", "toolu_2"]
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert out["messages"][3:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: clock offline"},
    ]
    assert "stream" not in out


def test_parallel_calls_and_an_error_result_to_responses() -> None:
    out = translate_request(_tool_turn(), source=Dialect.ANTHROPIC, target=Dialect.RESPONSES, model="m", stream=True).body
    _valid_responses(out)
    assert out["instructions"] == "Be brief."
    kinds = [(i["type"], i.get("call_id")) for i in out["input"]]
    assert kinds == [("message", None), ("message", None), ("function_call", "toolu_1"), ("function_call", "toolu_2"),
                     ("function_call_output", "toolu_1"), ("function_call_output", "toolu_2")]
    assert out["input"][5]["output"] == "Error: clock offline"
    assert out["input"][0]["content"][1] == {"type": "input_image", "image_url": "data:image/png;base64,iVBO"}


def test_parallel_calls_and_an_error_result_to_gemini() -> None:
    out = translate_request(_tool_turn(), source=Dialect.ANTHROPIC, target=Dialect.GEMINI, model="gemini-3-pro", stream=False)
    assert out.path == "/v1beta/models/gemini-3-pro:generateContent"
    contents = out.body["contents"]
    assert contents[0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}
    calls = [p["functionCall"] for p in contents[1]["parts"] if "functionCall" in p]
    assert calls == [{"name": "get_weather", "args": {"city": "Paris"}}, {"name": "get_time", "args": {"tz": "CET"}}]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"output": "18C sunny"}}},
        {"functionResponse": {"name": "get_time", "response": {"error": "clock offline"}}},
    ]
    tz = out.body["tools"][0]["functionDeclarations"][1]["parameters"]["properties"]["tz"]
    assert tz == {"nullable": True, "type": "string"}


def test_gemini_calls_without_ids_pair_with_their_responses_in_order() -> None:
    body = {"contents": [
        {"role": "user", "parts": [{"text": "two lookups"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "look", "args": {"q": 1}}},
                                    {"functionCall": {"name": "look", "args": {"q": 2}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "look", "response": {"output": "one"}}},
                                   {"functionResponse": {"name": "look", "response": {"error": "two failed"}}}]},
    ], "tools": [{"functionDeclarations": [{"name": "look", "parameters": {"type": "OBJECT", "properties": {"q": {"type": "INTEGER"}}}}]}]}
    out = translate_request(body, source=Dialect.GEMINI, target=Dialect.ANTHROPIC, model="claude-x", stream=False).body
    _valid_anthropic(out)
    ids = [b["id"] for b in out["messages"][1]["content"]]
    results = out["messages"][2]["content"]
    assert [r["tool_use_id"] for r in results] == ids and len(set(ids)) == 2
    assert results[1]["is_error"] is True and results[1]["content"] == [{"type": "text", "text": "two failed"}]
    assert out["tools"][0]["input_schema"] == {"type": "object", "properties": {"q": {"type": "integer"}}}


@pytest.mark.parametrize(
    ("suffix", "anthropic_budget", "openai_effort", "gemini_config"),
    [
        ("(high)", 24576, "high", {"thinkingLevel": "high", "includeThoughts": True}),
        ("(low)", 1024, "low", {"thinkingLevel": "low", "includeThoughts": True}),
        ("(8192)", 8192, "medium", {"thinkingLevel": "medium", "includeThoughts": True}),
    ],
)
def test_thinking_suffix_becomes_each_targets_setting(
    suffix: str, anthropic_budget: int, openai_effort: str, gemini_config: dict[str, Any]
) -> None:
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000}
    kwargs: dict[str, Any] = {"body": body, "source": Dialect.CHAT, "stream": False}
    anthropic = translate_request(**kwargs, target=Dialect.ANTHROPIC, model=f"claude-x{suffix}").body
    assert anthropic["model"] == "claude-x"
    assert anthropic["thinking"] == {"type": "enabled", "budget_tokens": anthropic_budget}
    assert anthropic["max_tokens"] > anthropic_budget
    chat = translate_request(**kwargs, target=Dialect.CHAT, model=f"qwen3{suffix}").body
    assert (chat["model"], chat["reasoning_effort"]) == ("qwen3", openai_effort)
    responses = translate_request(**kwargs, target=Dialect.RESPONSES, model=f"gpt-5{suffix}").body
    assert responses["reasoning"]["effort"] == openai_effort
    gemini = translate_request(**kwargs, target=Dialect.GEMINI, model=f"gemini-3-pro{suffix}")
    assert gemini.path == "/v1beta/models/gemini-3-pro:generateContent"
    assert gemini.body["generationConfig"]["thinkingConfig"] == gemini_config
    old_gemini = translate_request(**kwargs, target=Dialect.GEMINI, model=f"gemini-2.5-flash{suffix}").body
    assert old_gemini["generationConfig"]["thinkingConfig"]["thinkingBudget"] == anthropic_budget


def test_effort_settings_carry_over_without_a_suffix() -> None:
    deep = json.loads((FIXTURES / "deep/08.body").read_text())  # reasoning.effort = high
    out = translate_request(deep, source=Dialect.RESPONSES, target=Dialect.CHAT, model="m", stream=True).body
    assert out["reasoning_effort"] == "high"
    smart = json.loads((FIXTURES / "smart-lookat/08.body").read_text())  # adaptive, effort high
    out = translate_request(smart, source=Dialect.ANTHROPIC, target=Dialect.RESPONSES, model="m", stream=True).body
    assert out["reasoning"] == {"effort": "high", "summary": "auto"}


def test_same_dialect_changes_only_model_and_effort() -> None:
    smart = json.loads((FIXTURES / "smart-lookat/08.body").read_text())
    out = translate_request(smart, source=Dialect.ANTHROPIC, target=Dialect.ANTHROPIC, model="claude-y(4096)", stream=True).body
    assert out["model"] == "claude-y" and out["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert "output_config" not in out
    assert {k: v for k, v in out.items() if k not in ("model", "thinking")} == {
        k: v for k, v in smart.items() if k not in ("model", "thinking", "output_config")}


def test_forced_tool_turns_thinking_off_for_anthropic() -> None:
    title = json.loads((FIXTURES / "smart-lookat/07.body").read_text())
    out = translate_request(title, source=Dialect.ANTHROPIC, target=Dialect.ANTHROPIC, model="claude-x(high)", stream=False).body
    assert "thinking" not in out and out["temperature"] == 0.7
    chat = translate_request(title, source=Dialect.ANTHROPIC, target=Dialect.CHAT, model="m", stream=False).body
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "set_title"}}
    assert chat["parallel_tool_calls"] is False
