"""The examples in examples/ work as their docstrings say."""

from __future__ import annotations

import importlib
import json

import anyio
import httpx

from .servers import ServerThread


def test_mounted_app_serves_local_models_and_forwards_the_rest(upstream, monkeypatch):
    monkeypatch.setenv("AMPBRIDGE_AMP_UPSTREAM_URL", upstream.url)  # Settings() reads the environment
    from examples import mount_in_starlette as example

    example = importlib.reload(example)
    with ServerThread(example.app) as server:
        local = httpx.post(
            f"{server.url}/api/provider/openai/v1/chat/completions",
            json={"model": "my-model-7b", "messages": []},
        )
        remote = httpx.post(
            f"{server.url}/api/provider/openai/v1/chat/completions", json={"model": "gpt-5", "messages": []}
        )
        user = httpx.get(f"{server.url}/api/user")
        plain = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "my-model-7b", "messages": []})
    assert local.json()["choices"][0]["message"]["content"] == "served locally"
    assert local.json()["model"] == "my-model-7b"
    assert remote.headers["x-served-by"] == "amp-upstream"
    assert user.json() == {"upstream": True, "path": "/api/user"}
    assert plain.json()["choices"][0]["message"]["content"] == "served locally"
    assert [r.path for r in upstream.requests] == ["/api/provider/openai/v1/chat/completions", "/api/user"]
    assert json.loads(upstream.requests[0].body)["model"] == "gpt-5"


def test_stacked_middlewares_example():
    from examples import stack_middlewares as example

    async def run(peer):
        transport = httpx.ASGITransport(app=example.app, client=peer)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get("/report")

    local = anyio.run(run, ("127.0.0.1", 1))
    remote = anyio.run(run, ("192.0.2.1", 1))
    assert local.json() == {"status": "fine"}
    assert remote.status_code == 403
