"""The one credential module: where keys are presented, how they are removed, how logs mask them."""

from __future__ import annotations

import anyio
import httpx
import pytest

from ampbridge import scope_keys
from ampbridge.client_keys import ClientKeyAuth
from ampbridge.credentials import key_problem, presented_keys, query_keys, redact, scrub_query


@pytest.mark.parametrize("name", ["key", "k%65y", "%6B%65%79", "auth_token", "auth%5Ftoken"])
def test_a_credential_parameter_counts_under_any_percent_encoding_of_its_name(name):
    query = f"alt=sse&{name}=SECRET&x=%20y".encode()
    assert query_keys(query) == ["SECRET"]
    assert scrub_query(query, frozenset({"SECRET"})) == b"alt=sse&x=%20y"
    assert redact(f"POST /v1beta/models/m:generateContent?{name}=SECRET HTTP/1.1") == (
        f"POST /v1beta/models/m:generateContent?{name}=[redacted] HTTP/1.1"
    )


def test_scrubbing_touches_only_the_removed_pair():
    query = b"b=%2F%2f&key=client&a=1+2&empty=&key=other"
    assert scrub_query(query, frozenset({"client"})) == b"b=%2F%2f&a=1+2&empty=&key=other"
    assert scrub_query(query) == b"b=%2F%2f&a=1+2&empty="  # toward a backend: every credential goes
    assert scrub_query(query, frozenset()) == query


def test_header_keys_are_found_in_every_place_a_client_puts_them():
    scope = {
        "headers": [
            (b"Authorization", b"Bearer  one "),
            (b"x-api-key", b"two"),
            (b"X-Goog-Api-Key", b"three"),
            (b"authorization", b"Basic not-a-key"),
        ],
        "query_string": b"key=four",
    }
    assert presented_keys(scope) == ["one", "two", "three", "four"]


@pytest.mark.parametrize(
    ("key", "problem"),
    [("sk-abc", None), ("sk-\u2019abc", "typographic"), ("sk abc", "spaces"), ("sk-\x00", "control")],
)
def test_keys_that_cannot_go_in_a_header_are_named_problems(key, problem):
    found = key_problem(key)
    assert (found is None) if problem is None else (problem in found)


async def _seen_key(scope, receive, send):
    body = (scope.get(scope_keys.CLIENT_KEY) or "-").encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def call(app, target: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get(target, headers=headers)

    return anyio.run(run)


def test_client_key_gate_alone_accepts_each_presentation_and_records_the_key():
    gate = ClientKeyAuth(_seen_key, keys=["client-key"])
    assert call(gate, "/x?k%65y=client-key").text == "client-key"
    assert call(gate, "/x", {"Authorization": "Bearer client-key"}).text == "client-key"
    assert call(gate, "/x", {"X-Goog-Api-Key": "client-key"}).text == "client-key"
    refused = call(gate, "/x?key=wrong", {"Authorization": "Bearer wrong"})
    assert refused.status_code == 401
    assert refused.json() == {"error": "unauthorized", "message": "Missing or invalid API key"}


def test_client_key_gate_without_keys_lets_everything_through():
    assert call(ClientKeyAuth(_seen_key, keys=[]), "/x").text == "-"


def test_plain_routes_through_a_tunnel_name_need_client_keys(backends, bridge):
    from .conftest import provider_settings

    open_bridge = bridge(provider_settings(backends, allowed_hosts=["tunnel.example.com"]))
    body = {"model": "gpt-5.4", "messages": []}
    local = httpx.post(f"{open_bridge.url}/v1/chat/completions", json=body)
    tunnel = httpx.post(
        f"{open_bridge.url}/v1/chat/completions", json=body, headers={"Host": "tunnel.example.com"}
    )
    assert local.status_code == 200
    assert tunnel.status_code == 401
    assert "api-keys" in tunnel.json()["message"]
    keyed = bridge(provider_settings(backends, allowed_hosts=["tunnel.example.com"], api_keys=["k1"]))
    through = httpx.post(
        f"{keyed.url}/v1/chat/completions",
        json=body,
        headers={"Host": "tunnel.example.com", "Authorization": "Bearer k1"},
    )
    assert through.status_code == 200
