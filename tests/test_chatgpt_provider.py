"""A ``type: chatgpt`` provider inside the standalone app (SPEC §15), against loopback fakes of
OpenAI's OAuth server and the Codex backend: Amp's deep-mode turn served by a ChatGPT plan, Chat
Completions and Anthropic calls reaching it through the translator, and ``amp-fallback: never``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from ampbridge.chatgpt.credentials import Tokens
from ampbridge.chatgpt.store import CredentialStore
from ampbridge.settings import ProviderConfig, Settings

from .fake_openai import Fakes, openai_fakes
from .test_amp_replay_translated import check_responses_stream, sse_events
from .test_chatgpt_replay import DEEP
from .test_control_plane import captured_requests, replay_headers


class ChatGPTEntry(ProviderConfig):
    """A ``type: chatgpt`` provider entry, with the fields settings.py is gaining for it."""

    type: Literal["chatgpt"]  # type: ignore[assignment]
    auth_url: str = ""
    accounts: list[str] | None = None


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fakes]:
    """The fakes, one logged-in Plus account, and the app's data folder pointed at it."""
    with openai_fakes() as running:
        running.auth.add_account("acct-a", "a@example.com", "plus")
        reply = running.auth.issue("acct-a")
        # Where `ampbridge login chatgpt` keeps logins: the chatgpt folder of ampbridge's data dir.
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
        CredentialStore(tmp_path / "ampbridge" / "chatgpt").save_login(
            Tokens(reply["id_token"], reply["access_token"], reply["refresh_token"])
        )
        yield running


def chatgpt_settings(fakes: Fakes, **settings: Any) -> Settings:
    entry = ChatGPTEntry(name="my-chatgpt", type="chatgpt", base_url=fakes.codex_url, auth_url=fakes.auth_url)
    return Settings(providers=[entry], **settings)


def test_amps_deep_mode_session_is_served_by_the_chatgpt_plan_event_by_event(
    fixtures_dir, fakes, upstream, bridge
):
    ampbridge = bridge(chatgpt_settings(fakes, amp_upstream_url=upstream.url, amp_upstream_api_key="amp-key"))
    fakes.codex.hold = threading.Event()
    deep_calls = 0
    with httpx.Client(base_url=ampbridge.url, timeout=30) as client:
        for request in captured_requests(fixtures_dir, "deep"):
            body = (DEEP / request["body_file"]).read_bytes()
            target = request["path"] + (f"?{request['query']}" if request["query"] else "")
            headers = replay_headers(request)
            if request["path"] != "/api/provider/openai/v1/responses":
                response = client.request(request["method"], target, headers=headers, content=body)
                assert response.status_code == 200
                continue
            deep_calls += 1
            text = ""
            started = time.monotonic()
            with client.stream("POST", target, headers=headers, content=body) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                for chunk in response.iter_text():
                    text += chunk
                    if "response.output_text.delta" in text and not fakes.codex.hold.is_set():
                        # The backend holds the rest (10 s at most) until this is set.
                        assert time.monotonic() - started < 5
                        fakes.codex.hold.set()
            # The Codex backend's own response.completed lists no output; it is relayed as sent.
            check_responses_stream(sse_events(text), "gpt-5.4", completed_lists_output=False)
    assert deep_calls == 1 and fakes.codex.served == ["acct-a"]
    [received] = fakes.codex_server.requests
    sent = received.json()
    assert sent["model"] == "gpt-5.4" and sent["stream"] is True and sent["store"] is False
    # Only the deep-mode call was served by the plan; the rest went upstream as before.
    assert not [r for r in upstream.requests if r.path == "/api/provider/openai/v1/responses"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_completions_call_reaches_the_plan_through_the_translator(fakes, bridge, stream):
    ampbridge = bridge(chatgpt_settings(fakes, amp_upstream_url=""))
    body = {"model": "gpt-5.4", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    reply = httpx.post(ampbridge.url + "/api/provider/openai/v1/chat/completions", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    if stream:
        chunks = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: {")]
        assert (
            "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
            == "OK from acct-a"
        )
        assert reply.text.rstrip().endswith("data: [DONE]")
    else:
        completion = reply.json()
        assert completion["model"] == "gpt-5.4"
        assert completion["choices"][0]["message"]["content"] == "OK from acct-a"
    [received] = fakes.codex_server.requests
    assert received.path == "/backend-api/codex/responses" and received.json()["model"] == "gpt-5.4"


def test_an_anthropic_call_mapped_to_a_plan_model_is_translated(fakes, upstream, bridge):
    ampbridge = bridge(
        chatgpt_settings(
            fakes,
            amp_upstream_url=upstream.url,
            amp_model_mappings=[{"from": "claude-opus-4-7", "to": "gpt-5.4"}],
        )
    )
    body = {"model": "claude-opus-4-7", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(ampbridge.url + "/api/provider/anthropic/v1/messages", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    message = reply.json()
    assert message["model"] == "claude-opus-4-7" and message["type"] == "message"
    assert [b["text"] for b in message["content"] if b["type"] == "text"] == ["OK from acct-a"]
    assert fakes.codex.served == ["acct-a"] and not upstream.requests


def test_amp_fallback_never_answers_an_unserved_model_and_spends_no_credits(fakes, upstream, bridge):
    ampbridge = bridge(chatgpt_settings(fakes, amp_upstream_url=upstream.url, amp_fallback="never"))
    body = {"model": "claude-opus-4-7", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(ampbridge.url + "/api/provider/anthropic/v1/messages", json=body, timeout=30)
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["type"] == "not_found_error" and "amp-fallback is 'never'" in error["message"]
    served = httpx.post(
        ampbridge.url + "/api/provider/openai/v1/responses",
        json={"model": "gpt-5.4", "input": "hi", "stream": False},
        timeout=30,
    )
    assert served.status_code == 200 and served.json()["output"][0]["content"][0]["text"] == "OK from acct-a"
    assert not upstream.requests
