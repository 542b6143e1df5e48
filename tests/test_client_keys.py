"""Client keys over real HTTP: every form is accepted, nothing without one gets in (except the
browser pages and /healthz), and a client key never travels further."""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import provider_settings
from .servers import raw_request

KEY = "client-key-abc123"
OTHER = "client-key-other"


@pytest.fixture
def ampbridge(backends, upstream, bridge):
    settings = provider_settings(
        backends,
        amp_upstream_url=upstream.url,
        api_keys=[KEY, OTHER],
        amp_upstream_api_key="shared-amp-key",
        amp_upstream_api_keys=[
            {"upstream-api-key": "amp-key-for-other", "api-keys": [OTHER]},
            {"upstream-api-key": "ignored-duplicate", "api-keys": [OTHER]},
        ],
    )
    return bridge(settings)


def everything_received(backends, upstream) -> str:
    records = [r for server in [upstream, *backends.values()] for r in server.requests]
    return json.dumps([(r.headers, r.query.decode(), r.path) for r in records])


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"Authorization": f"Bearer {KEY}"}, ""),
        ({"X-Api-Key": KEY}, ""),
        ({"X-Goog-Api-Key": KEY}, ""),
        ({}, f"?key={KEY}"),
        ({}, f"?auth_token={KEY}"),
    ],
)
def test_each_key_form_opens_model_and_management_routes(ampbridge, backends, upstream, headers, query):
    model = httpx.post(
        f"{ampbridge.url}/api/provider/anthropic/v1/messages{query}",
        headers=headers,
        json={"model": "claude-opus-4-7"},
    )
    management = httpx.post(
        f"{ampbridge.url}/api/internal{query or '?'}&getUserInfo", headers=headers, content=b"{}"
    )
    plain = httpx.get(f"{ampbridge.url}/v1/models{query}", headers=headers)
    assert (model.status_code, management.status_code, plain.status_code) == (200, 200, 200)
    assert KEY not in everything_received(backends, upstream)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/provider/anthropic/v1/messages"),
        ("POST", "/api/provider/openai/v1/files"),
        ("GET", "/api/user"),
        ("POST", "/api/internal?getUserInfo"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/api/provider/openai/v1/models"),
        ("GET", "/actors/gateway/x"),
    ],
)
@pytest.mark.parametrize(
    "credentials", [{}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": ""}, {"Authorization": KEY}]
)
def test_without_a_valid_key_everything_but_the_exempt_routes_is_401(
    ampbridge, backends, upstream, method, path, credentials
):
    response = httpx.request(
        method, f"{ampbridge.url}{path}", headers=credentials, json={"model": "claude-opus-4-7"}
    )
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized", "message": "Missing or invalid API key"}
    assert upstream.requests == []
    assert [r for r in backends["anthropic"].requests + backends["openai"].requests] == []


@pytest.mark.parametrize(
    "path",
    ["/healthz", "/auth/sign-in", "/threads/T-1", "/threads.rss", "/news.rss", "/docs/guide", "/settings"],
)
def test_browser_pages_and_health_need_no_key(ampbridge, upstream, path):
    assert httpx.get(f"{ampbridge.url}{path}").status_code == (200 if path == "/healthz" else 302)


@pytest.mark.parametrize(
    "path",
    [
        "/auth/../api/user",
        "/auth/%2e%2e/api/user",
        "/threads/..%2fapi%2fuser",
        "/docs/%2e%2e%2f%2e%2e%2fapi/user",
        "/settings/..\\api",
    ],
)
def test_browser_pages_cannot_be_turned_into_anything_else(ampbridge, upstream, path):
    status, _ = raw_request(ampbridge.url, path)
    assert status in (400, 404)
    assert upstream.requests == []


def test_per_client_upstream_key(ampbridge, upstream):
    httpx.post(
        f"{ampbridge.url}/api/internal?getUserInfo",
        headers={"Authorization": f"Bearer {OTHER}"},
        content=b"{}",
    )
    httpx.post(
        f"{ampbridge.url}/api/internal?getUserInfo", headers={"Authorization": f"Bearer {KEY}"}, content=b"{}"
    )
    httpx.post(
        f"{ampbridge.url}/api/provider/anthropic/v1/messages",
        headers={"X-Api-Key": OTHER},
        json={"model": "not-local"},
    )
    assert [r.header("x-api-key") for r in upstream.requests] == [
        "amp-key-for-other",
        "shared-amp-key",
        "amp-key-for-other",
    ]
    assert [r.header("authorization") for r in upstream.requests] == [
        "Bearer amp-key-for-other",
        "Bearer shared-amp-key",
        "Bearer amp-key-for-other",
    ]


def test_other_query_values_are_kept(ampbridge, upstream):
    httpx.get(f"{ampbridge.url}/api/threads?key={KEY}&limit=5&key=not-a-client-key")
    assert upstream.requests[-1].query == b"limit=5&key=not-a-client-key"
