"""The real Amp CLI's deep-mode turn (a streamed Responses call for gpt-5.4) replayed through
ChatGPTBackend, served by uvicorn, to the fake Codex backend: the backend accepts the reshaped
request and Amp gets valid Responses SSE, relayed event by event."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx

from ampbridge.chatgpt import ChatGPTBackend
from ampbridge.chatgpt.credentials import Tokens
from ampbridge.chatgpt.store import CredentialStore

from .fake_openai import WithClient, openai_fakes
from .servers import FIXTURES, ServerThread

DEEP = FIXTURES / "deep"
NOT_FORWARDED = {"host", "connection", "content-length", "accept-encoding", "authorization"}


def deep_mode_turns() -> list[tuple[dict[str, str], bytes]]:
    turns = []
    for line in (DEEP / "requests.jsonl").read_text().splitlines():
        request = json.loads(line)
        if request["path"] == "/api/provider/openai/v1/responses":
            headers = {k: v for k, v in request["headers"].items() if k.lower() not in NOT_FORWARDED}
            turns.append((headers, (DEEP / request["body_file"]).read_bytes()))
    return turns


def test_deep_mode_turn_is_served_through_the_codex_backend_event_by_event(tmp_path: Path) -> None:
    turns = deep_mode_turns()
    assert len(turns) == 1
    headers, body = turns[0]
    original = json.loads(body)
    with openai_fakes() as fakes:
        fakes.auth.add_account("acct-a", "a@example.com", "plus")
        reply = fakes.auth.issue("acct-a")
        CredentialStore(tmp_path).save_login(
            Tokens(reply["id_token"], reply["access_token"], reply["refresh_token"])
        )
        fakes.codex.hold = threading.Event()
        app = WithClient(
            lambda client: ChatGPTBackend(
                tmp_path, client=client, base_url=fakes.codex_url, auth_url=fakes.auth_url
            )
        )
        with ServerThread(app) as bridge:
            events: list[dict[str, object]] = []
            with httpx.stream(
                "POST", f"{bridge.url}/v1/responses", content=body, headers=headers, timeout=30
            ) as r:
                assert r.status_code == 200
                assert r.headers["content-type"] == "text/event-stream"
                named = ""
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        named = line[7:]
                    elif line.startswith("data: "):
                        events.append(json.loads(line[6:]))
                        assert events[-1]["type"] == named  # each event's name matches its data
                        if named == "response.output_text.delta":
                            # Seen while the backend still holds the rest: nothing was buffered.
                            assert not fakes.codex.hold.is_set()
                            fakes.codex.hold.set()
        assert fakes.codex.hold.is_set()
    types = [e["type"] for e in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(8))
    [received] = fakes.codex_server.requests
    assert received.path == "/backend-api/codex/responses"
    assert received.header("chatgpt-account-id") == "acct-a"
    assert received.header("authorization") == f"Bearer {reply['access_token']}"
    assert received.header("session-id") == original["prompt_cache_key"]
    sent = received.json()
    assert sent["model"] == "gpt-5.4" and sent["stream"] is True and sent["store"] is False
    assert "max_output_tokens" not in sent and "stream_options" not in sent
    assert (
        sent["input"][0]["role"] == "developer"
        and sent["input"][0]["content"] == original["input"][0]["content"]
    )
    assert sent["input"][1:] == original["input"][1:]
    assert sent["tools"] == original["tools"] and sent["reasoning"] == original["reasoning"]
    assert sent["instructions"] == "" and sent["include"] == ["reasoning.encrypted_content"]
