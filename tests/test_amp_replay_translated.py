"""The captured Amp CLI sessions replayed with every model served by one OpenAI Chat Completions
backend (SPEC §14): each model call reaches it as a valid Chat Completions request, and each reply
Amp gets back is a valid reply of the format it asked for (Anthropic Messages, OpenAI Responses,
Gemini), streamed as a valid event sequence, under the model name Amp asked for."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from ampbridge.backend import Backend
from ampbridge.routes import Endpoint
from ampbridge.settings import Settings

from .cross_format_fakes import conversation_backend
from .servers import ServerThread
from .test_amp_replay import SESSIONS
from .test_control_plane import captured_requests, replay_headers

MODELS = ["claude-opus-4-7", "claude-haiku-4-5-20251001", "gpt-5.4", "gemini-3-flash-preview"]


def sse_events(text: str) -> list[tuple[str | None, dict[str, Any]]]:
    """``(event name, data)`` per SSE event of a reply."""
    events = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


def check_anthropic_stream(events: list[tuple[str | None, dict[str, Any]]], model: str) -> None:
    assert all(name == data["type"] for name, data in events), "each event's name is its data's type"
    kinds = [data["type"] for _, data in events if data["type"] != "ping"]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert events[0][1]["message"]["model"] == model
    open_index: int | None = None
    seen: list[int] = []
    for _, data in events[1:-2]:
        if data["type"] == "content_block_start":
            assert open_index is None and data["index"] == len(seen)
            open_index = data["index"]
            seen.append(open_index)
        elif data["type"] == "content_block_delta":
            assert data["index"] == open_index
        elif data["type"] == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None and seen, "blocks open and close in order"
    delta = next(data for _, data in events if data["type"] == "message_delta")
    assert delta["delta"]["stop_reason"] in ("end_turn", "tool_use", "max_tokens", "stop_sequence")


def check_responses_stream(
    events: list[tuple[str | None, dict[str, Any]]], model: str, *, completed_lists_output: bool = True
) -> None:
    assert all(name == data["type"] for name, data in events)
    kinds = [data["type"] for _, data in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    numbers = [data["sequence_number"] for _, data in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    added = [data["item"]["id"] for _, data in events if data["type"] == "response.output_item.added"]
    done = [data["item"]["id"] for _, data in events if data["type"] == "response.output_item.done"]
    assert added == done and added
    completed = events[-1][1]["response"]
    assert completed["model"] == model and completed["status"] == "completed"
    if completed_lists_output:
        assert [item["id"] for item in completed["output"]] == done


def check_anthropic_message(message: dict[str, Any], model: str) -> None:
    assert (message["type"], message["role"], message["model"]) == ("message", "assistant", model)
    assert message["content"] and message["stop_reason"] in ("end_turn", "tool_use")
    assert {"input_tokens", "output_tokens"} <= set(message["usage"])


def check_gemini_reply(reply: dict[str, Any], model: str) -> None:
    [candidate] = reply["candidates"]
    assert candidate["content"]["role"] == "model" and candidate["content"]["parts"]
    assert candidate["finishReason"] == "STOP" and reply["modelVersion"] == model
    assert reply["usageMetadata"]["promptTokenCount"] >= 0


@pytest.mark.parametrize("session", SESSIONS)
def test_every_model_served_by_one_chat_completions_backend(
    fixtures_dir, session, upstream, bridge, monkeypatch
):
    # A backend that speaks only Chat Completions (Ollama, llama.cpp): what a provider's
    # `api-format: chat` setting will say; until then, every openai backend is told so here.
    monkeypatch.setattr(Backend, "speaks", lambda self, endpoint: endpoint is not Endpoint.RESPONSES)
    chat = conversation_backend("chat", MODELS)
    with ServerThread(chat) as chat_thread:
        provider = {
            "name": "one-chat",
            "type": "openai",
            "base-url": chat_thread.url,
            "api-key": "k",
            "models": MODELS,
        }
        ampbridge = bridge(
            Settings(amp_upstream_url=upstream.url, amp_upstream_api_key="amp-key", providers=[provider])
        )
        model_calls = 0
        with httpx.Client(base_url=ampbridge.url, timeout=30) as client:
            for request in captured_requests(fixtures_dir, session):
                body = (fixtures_dir / session / request["body_file"]).read_bytes()
                target = request["path"] + (f"?{request['query']}" if request["query"] else "")
                response = client.request(
                    request["method"], target, headers=replay_headers(request), content=body
                )
                assert response.status_code == 200, (request["path"], response.text)
                if not request["path"].startswith("/api/provider/"):
                    continue
                model_calls += 1
                asked = json.loads(body)
                model = asked.get("model") or request["path"].rsplit("/models/", 1)[1].split(":")[0]
                content_type = response.headers["content-type"]
                if request["path"].endswith("/v1/messages"):
                    if asked.get("stream"):
                        assert content_type.startswith("text/event-stream")
                        check_anthropic_stream(sse_events(response.text), model)
                    else:
                        check_anthropic_message(response.json(), model)
                elif request["path"].endswith("/responses"):
                    assert asked.get("stream") and content_type.startswith("text/event-stream")
                    check_responses_stream(sse_events(response.text), model)
                else:
                    assert ":generateContent" in request["path"]
                    check_gemini_reply(response.json(), model)
                # The backend got this call as a Chat Completions request it accepted.
                received = chat.requests[-1]
                assert (
                    received.path == "/v1/chat/completions" and received.header("authorization") == "Bearer k"
                )
                sent = received.json()
                assert sent["model"] == model and sent["messages"]
                assert bool(sent.get("stream")) == bool(asked.get("stream"))
                if asked.get("tools"):
                    assert len(sent["tools"]) == len(asked["tools"])
    assert model_calls and len(chat.requests) == model_calls
    assert not [r for r in upstream.requests if r.path.startswith("/api/provider/")]
