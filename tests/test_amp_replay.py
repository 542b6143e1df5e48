"""The captured Amp CLI sessions, replayed through ampbridge: model calls are served locally when
their model is configured, and reach the upstream unchanged when it is not."""

from __future__ import annotations

import json

import httpx
import pytest

from ampbridge.rewrite import sanitize_anthropic_request
from ampbridge.settings import Settings

from .conftest import ANTHROPIC_KEY, GOOGLE_KEY, OPENAI_KEY
from .test_control_plane import captured_requests, replay_headers

SESSIONS = ["smart-lookat", "deep"]
KEYS = {"anthropic": ANTHROPIC_KEY, "openai": OPENAI_KEY, "google": GOOGLE_KEY}
CAPTURED_MODELS = {
    "anthropic": ["claude-opus-4-7", "claude-haiku-4-5-20251001"],
    "openai": ["gpt-5.4"],
    "google": ["gemini-3-flash-preview"],
}


def replay(ampbridge, fixtures_dir, session):
    results = []
    with httpx.Client(base_url=ampbridge.url, timeout=30) as client:
        for request in captured_requests(fixtures_dir, session):
            body = (fixtures_dir / session / request["body_file"]).read_bytes()
            target = request["path"] + (f"?{request['query']}" if request["query"] else "")
            response = client.request(
                request["method"], target, headers=replay_headers(request), content=body
            )
            results.append((request, body, response))
    return results


@pytest.mark.parametrize("session", SESSIONS)
def test_configured_models_are_served_locally(fixtures_dir, session, backends, upstream, bridge):
    providers = [
        {"name": kind, "type": kind, "base-url": backends[kind].url, "api-key": KEYS[kind], "models": models}
        for kind, models in CAPTURED_MODELS.items()
    ]
    ampbridge = bridge(
        Settings(amp_upstream_url=upstream.url, amp_upstream_api_key="amp-key", providers=providers)
    )
    results = replay(ampbridge, fixtures_dir, session)
    posted = {
        kind: iter([r for r in server.requests if r.method == "POST"]) for kind, server in backends.items()
    }
    for request, body, response in results:
        assert response.status_code == 200, (request["path"], response.text)
        if not request["path"].startswith("/api/provider/"):
            continue
        kind = request["path"].split("/")[3]
        assert response.headers["x-served-by"] == f"{kind}-backend"
        received = next(posted[kind])  # each backend got its calls in the order Amp made them
        assert received.header(
            {"anthropic": "x-api-key", "openai": "authorization", "google": "x-goog-api-key"}[kind]
        ) in (KEYS[kind], f"Bearer {KEYS[kind]}")
        assert "fake-amp-key-0000" not in json.dumps(received.headers)
        payload = json.loads(body)
        if kind == "anthropic" and not sanitize_anthropic_request(payload):
            assert received.body == body  # nothing to fix: the exact bytes Amp sent
        assert received.json() == payload
        if json.loads(body).get("stream"):
            assert response.headers["content-type"].startswith("text/event-stream")
    model_paths = [r["path"] for r, _, _ in results if r["path"].startswith("/api/provider/")]
    assert model_paths, "the capture has model calls"
    assert not [r for r in upstream.requests if r.path.startswith("/api/provider/")]
    assert len(upstream.requests) == len(results) - len(model_paths)


@pytest.mark.parametrize("session", SESSIONS)
def test_unconfigured_models_reach_the_upstream_unchanged(fixtures_dir, session, upstream, bridge):
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url, amp_upstream_api_key="amp-key"))
    results = replay(ampbridge, fixtures_dir, session)
    assert len(upstream.requests) == len(results)
    for (request, body, response), received in zip(results, upstream.requests, strict=True):
        assert response.status_code == 200
        assert (received.method, received.path, received.query.decode()) == (
            request["method"],
            request["path"],
            request["query"],
        )
        assert received.body == body
        assert received.header("x-api-key") == "amp-key"
        for name, value in request["headers"].items():
            if (
                name.lower().startswith(("x-amp-", "x-stainless-", "anthropic-"))
                or name.lower() == "content-type"
            ):
                assert received.header(name) == value
