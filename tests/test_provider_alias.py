"""ProviderAlias alone, around a trivial app that reports the path it was given."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from ampbridge import ProviderAlias
from ampbridge.routes import CallKind
from ampbridge.scope_keys import PROVIDER_CALL as PROVIDER_CALL_SCOPE


async def echo_path(scope, receive, send):
    call = scope.get(PROVIDER_CALL_SCOPE)
    body = {
        "path": scope["path"],
        "root_path": scope.get("root_path", ""),
        "provider": call.provider if call else None,
        "wire": call.wire_format.value if call else None,
        "kind": call.kind.value if call else None,
        "original": call.original_path if call else None,
    }
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


async def upstream_marker(scope, receive, send):
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


def call(app, method, path) -> httpx.Response:
    async def run():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path)

    return anyio.run(run)


@pytest.mark.parametrize(
    ("method", "path", "local", "provider", "wire", "kind"),
    [
        ("POST", "/api/provider/anthropic/v1/messages", "/v1/messages", "anthropic", "anthropic", "model"),
        (
            "POST",
            "/api/provider/anthropic/v1/messages/count_tokens",
            "/v1/messages/count_tokens",
            "anthropic",
            "anthropic",
            "model",
        ),
        (
            "POST",
            "/api/provider/openai/v1/chat/completions",
            "/v1/chat/completions",
            "openai",
            "openai",
            "model",
        ),
        (
            "POST",
            "/api/provider/cerebras/chat/completions",
            "/v1/chat/completions",
            "cerebras",
            "openai",
            "model",
        ),
        ("POST", "/api/provider/fireworks/v1/completions", "/v1/completions", "fireworks", "openai", "model"),
        ("POST", "/api/provider/kimi/completions", "/v1/completions", "kimi", "openai", "model"),
        ("POST", "/api/provider/openai/v1/responses", "/v1/responses", "openai", "openai", "model"),
        ("POST", "/api/provider/baseten/responses", "/v1/responses", "baseten", "openai", "model"),
        (
            "POST",
            "/api/provider/google/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            "google",
            "google",
            "model",
        ),
        (
            "GET",
            "/api/provider/google/v1beta/models/gemini-2.5-pro:countTokens",
            "/v1beta/models/gemini-2.5-pro:countTokens",
            "google",
            "google",
            "model",
        ),
        (
            "POST",
            "/api/provider/google/v1/models/gemini-2.5-pro:generateContent",
            "/v1/models/gemini-2.5-pro:generateContent",
            "google",
            "google",
            "model",
        ),
        (
            "POST",
            "/api/provider/google/v1beta1/publishers/google/models/gemini-3-flash-preview:generateContent",
            "/v1beta/models/gemini-3-flash-preview:generateContent",
            "google",
            "google",
            "model",
        ),
        ("GET", "/api/provider/openai/v1/models", "/v1/models", "openai", "openai", "list"),
        ("GET", "/api/provider/groq/models", "/v1/models", "groq", "openai", "list"),
        ("GET", "/api/provider/anthropic/v1/models", "/v1/models", "anthropic", "anthropic", "list"),
        ("GET", "/api/provider/google/v1beta/models", "/v1beta/models", "google", "google", "list"),
    ],
)
def test_amp_paths_map_onto_standard_paths(method, path, local, provider, wire, kind):
    response = call(ProviderAlias(echo_path), method, path)
    assert response.json() == {
        "path": local,
        "root_path": "",
        "provider": provider,
        "wire": wire,
        "kind": kind,
        "original": path,
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/provider/openai/v1/chat/completions"),
        ("POST", "/api/provider/openai/v1/files"),
        ("DELETE", "/api/provider/anthropic/v1/messages"),
        ("POST", "/api/provider/Anthropic/v1/messages"),
        ("POST", "/api/provider/anthropic"),
        ("POST", "/api/provider/google/v1beta/models/x:y/z"),
    ],
)
def test_other_provider_paths_reach_the_app_unchanged(method, path):
    response = call(ProviderAlias(echo_path), method, path)
    assert response.json()["path"] == path
    assert response.json()["provider"] is None


def test_paths_outside_the_prefix_reach_the_app_unchanged():
    response = call(ProviderAlias(echo_path), "POST", "/v1/messages")
    assert response.json()["path"] == "/v1/messages"


def test_custom_prefix_and_mount_point():
    app = ProviderAlias(echo_path, prefix="/provider")

    async def mounted(scope, receive, send):
        await app({**scope, "root_path": "/api"}, receive, send)

    response = call(mounted, "POST", "/api/provider/anthropic/v1/messages")
    assert response.json()["path"] == "/v1/messages"
    assert response.json()["kind"] == CallKind.MODEL.value
