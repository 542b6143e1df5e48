"""A pool's call fails over to its next name when a name's reply fails before any output (as
CLIProxyAPI's pools do), over real HTTP: the client sees one reply, the backend every attempt."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from ampbridge.settings import Settings

from .conftest import OPENAI_KEY
from .servers import Recorded, RecordingServer, ServerThread, model_backend, model_handler, respond

CHAT = "/api/provider/openai/v1/chat/completions"
POOL = ["gpt-pool-a", "gpt-pool-b", "gpt-pool-c"]


@pytest.fixture
def backend() -> Iterator[RecordingServer]:
    """An OpenAI-style backend: a name listed in ``backend.failing`` answers that status (a JSON
    error, as Go servers write it); the others answer as the fake model backend does."""
    server = model_backend("openai-backend", POOL)
    server.failing = {}  # type: ignore[attr-defined]
    answer = model_handler("openai-backend")

    async def chat(scope: Scope, receive: Receive, send: Send, recorded: Recorded) -> None:
        status = server.failing.get(recorded.json()["model"])  # type: ignore[attr-defined]
        if status is None:
            await answer(scope, receive, send, recorded)
        else:
            await respond(
                send, status, json.dumps({"error": {"message": f"{status} from upstream"}}).encode()
            )

    server.route(lambda method, path: path.endswith("/chat/completions"), chat)
    with ServerThread(server) as thread:
        server.url = thread.url  # type: ignore[attr-defined]
        yield server


def pooled(backend: RecordingServer) -> Settings:
    return Settings(
        providers=[
            {
                "name": "pooled",
                "type": "openai",
                "base-url": backend.url + "/v1",  # type: ignore[attr-defined]
                "api-key": OPENAI_KEY,
                "models": [{"name": name, "alias": "pooled-coder"} for name in POOL],
            }
        ]
    )


def call(url: str, *, stream: bool = False) -> httpx.Response:
    return httpx.post(
        url + CHAT,
        json={"model": "pooled-coder", "stream": stream, "messages": [{"role": "user", "content": "hi"}]},
        timeout=20,
    )


def sent(backend: RecordingServer) -> list[str]:
    return [r.json()["model"] for r in backend.requests if r.path.endswith("/chat/completions")]


@pytest.mark.parametrize("status", [429, 500, 503, 529])
@pytest.mark.parametrize("streamed", [False, True])
def test_a_failed_name_is_dropped_and_the_next_one_answers(backend, bridge, caplog, status, streamed):
    ampbridge = bridge(pooled(backend))
    first = call(ampbridge.url)  # learn whose turn it is: the next call takes the following name
    assert first.status_code == 200
    turn = POOL.index(sent(backend)[0])
    failing, next_name = POOL[(turn + 1) % 3], POOL[(turn + 2) % 3]
    backend.failing[failing] = status
    caplog.set_level(logging.WARNING, logger="ampbridge.backends")
    response = call(ampbridge.url, stream=streamed)
    assert response.status_code == 200
    assert "pooled-coder" in response.text and "gpt-pool" not in response.text  # the alias comes back
    assert "from upstream" not in response.text  # nothing of the failed reply
    assert sent(backend)[1:] == [failing, next_name]
    assert [r.getMessage() for r in caplog.records if r.name == "ampbridge.backends"] == [
        f"backend pooled: {failing} answered {status}; sending the call as {next_name}"
    ]


def test_when_every_name_fails_the_client_gets_the_last_reply(backend, bridge):
    ampbridge = bridge(pooled(backend))
    backend.failing.update({POOL[0]: 503, POOL[1]: 500, POOL[2]: 502})
    response = call(ampbridge.url)
    assert response.status_code in (500, 502, 503)
    assert sorted(sent(backend)) == sorted(POOL)  # each name once, the turn's first
    last = sent(backend)[-1]
    assert response.json() == {"error": {"message": f"{backend.failing[last]} from upstream"}}


@pytest.mark.parametrize("status", [400, 401, 404])
def test_a_reply_about_the_request_itself_is_not_sent_again(backend, bridge, status):
    ampbridge = bridge(pooled(backend))
    for name in POOL:
        backend.failing[name] = status
    response = call(ampbridge.url)
    assert response.status_code == status
    assert len(sent(backend)) == 1


def test_ampbridges_own_502_for_an_unreachable_backend_is_not_sent_again(bridge, caplog, free_tcp_port):
    """The request may have reached the backend before the connection died (a second call would
    be a second bill), and a pool's names share the backend: the client gets the 502 at once."""
    settings = Settings(
        providers=[
            {
                "name": "pooled",
                "type": "openai",
                "base-url": f"http://127.0.0.1:{free_tcp_port}/v1",
                "api-key": OPENAI_KEY,
                "models": [{"name": name, "alias": "pooled-coder"} for name in POOL],
            }
        ]
    )
    caplog.set_level(logging.INFO, logger="ampbridge")
    response = call(bridge(settings).url)
    assert response.status_code == 502
    assert "cannot be reached" in response.text
    assert [r for r in caplog.records if "sending the call as" in r.getMessage()] == []
    assert (
        len([r for r in caplog.records if r.name == "ampbridge.proxy" and "cannot reach" in r.getMessage()])
        == 1
    )


@pytest.mark.parametrize("streamed", [False, True])
def test_a_translated_call_fails_over_with_the_same_request_under_the_next_name(backend, bridge, streamed):
    """An Anthropic call for a pool on a Chat Completions backend: the translated request goes
    again, identical but for the model, and the client gets its own format back."""
    ampbridge = bridge(pooled(backend))
    assert call(ampbridge.url).status_code == 200  # learn whose turn it is
    turn = POOL.index(sent(backend)[0])
    failing, next_name = POOL[(turn + 1) % 3], POOL[(turn + 2) % 3]
    backend.failing[failing] = 503
    response = httpx.post(
        ampbridge.url + "/api/provider/anthropic/v1/messages",
        json={
            "model": "pooled-coder",
            "max_tokens": 16,
            "stream": streamed,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"anthropic-version": "2023-06-01"},
        timeout=20,
    )
    assert response.status_code == 200
    if streamed:
        assert response.text.startswith("event: message_start")
    else:
        assert response.json()["type"] == "message" and response.json()["model"] == "pooled-coder"
    first, second = [r.json() for r in backend.requests if r.path.endswith("/chat/completions")][1:]
    assert (first.pop("model"), second.pop("model")) == (failing, next_name)
    assert first == second
