"""Hostile input: nothing reaches a host but the configured upstream and backends, nothing 500s."""

from __future__ import annotations

import json
import string

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampbridge.credentials import CREDENTIAL_HEADERS, scrub_query
from ampbridge.headers import HOP_BY_HOP, connection_named, scrub_request_headers
from ampbridge.jsonutil import parse_json_object
from ampbridge.models import split_thinking_suffix
from ampbridge.provider_alias import parse_provider_call
from ampbridge.request_body import RequestBody
from ampbridge.safe_paths import is_safe_path

from .conftest import provider_settings
from .servers import RecordingServer, ServerThread, raw_request


@pytest.fixture
def canary():
    """A server nothing should ever reach: every trick below tries to point ampbridge at it."""
    server = RecordingServer("canary")
    with ServerThread(server) as thread:
        server.url = thread.url
        yield server


@pytest.fixture
def ampbridge(backends, upstream, bridge):
    return bridge(provider_settings(backends, amp_upstream_url=upstream.url, max_body_size=64 * 1024))


@pytest.mark.parametrize(
    "path", ["/api/provider/anthropic/v1/messages", "/v1/messages", "/api/internal?uploadThread"]
)
def test_bodies_over_the_cap_get_413_everywhere(ampbridge, upstream, backends, path):
    response = httpx.post(
        f"{ampbridge.url}{path}", content=b'{"model":"claude-opus-4-7","pad":"' + b"x" * 70000 + b'"}'
    )
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"
    assert upstream.requests == [] and backends["anthropic"].requests == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1,2,3]",
        b'{"model": 42}',
        b'{"model": null}',
        b"[" * 30_000 + b"]" * 30_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b"\xff\xfe\x00garbage",
        b'{"model": "x\\u0000y"}',
    ],
    ids=["text", "list", "number", "null", "deep-list", "deep-object", "binary", "nul"],
)
def test_odd_model_bodies_go_upstream_unchanged_or_get_400(ampbridge, upstream, bridge, backends, body):
    response = httpx.post(f"{ampbridge.url}/api/provider/openai/v1/chat/completions", content=body)
    assert response.status_code == 200
    assert upstream.requests[-1].body == body
    closed = bridge(provider_settings(backends, amp_upstream_url=""))
    response = httpx.post(f"{closed.url}/api/provider/openai/v1/chat/completions", content=body)
    assert response.status_code in (400, 404)
    assert response.json()["error"]["code"] in ("invalid_request", "model_not_found")  # OpenAI's shape


def test_huge_and_strange_model_names(backends, bridge, upstream):
    closed = bridge(provider_settings(backends, amp_upstream_url=""))
    huge = "m" * 60_000
    response = httpx.post(f"{closed.url}/api/provider/openai/v1/chat/completions", json={"model": huge})
    assert response.status_code == 404
    assert len(response.content) < 1000
    forged = "gpt\n2026-01-01 INFO ampbridge: LOCAL model=forged"
    response = httpx.post(f"{closed.url}/api/provider/openai/v1/chat/completions", json={"model": forged})
    assert response.status_code == 404
    assert "\\n" in response.json()["error"]["message"]
    forwarding = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    assert (
        httpx.post(
            f"{forwarding.url}/api/provider/openai/v1/chat/completions", json={"model": huge}
        ).status_code
        == 200
    )


@pytest.mark.parametrize(
    "target",
    [
        "/api/../v1/models",
        "/api/%2e%2e/v1/models",
        "/api/provider/openai/..%2f..%2finternal",
        "/api/provider/openai/%2e%2e/%2e%2e/internal",
        "/threads/%2e%2e%2fapi%2fuser",
        "/api/user%2f..%2f..%2fx",
        "/api/user%0d%0aX-Injected:%20yes",
        "/api/user%00",
        "/api/user\\..\\x",
    ],
)
def test_path_tricks_are_refused_before_routing(ampbridge, upstream, canary, target):
    status, body = raw_request(ampbridge.url, target)
    assert status in (400, 404)
    assert upstream.requests == [] and canary.requests == []


@pytest.mark.parametrize("target_template", ["//{canary}/api/user", "http://{canary}/api/user", "{canary}"])
def test_absolute_and_authority_forms_never_reach_another_host(ampbridge, upstream, canary, target_template):
    canary_host = canary.url.removeprefix("http://")
    status, _ = raw_request(ampbridge.url, target_template.format(canary=canary_host))
    assert status < 500
    assert canary.requests == []
    for received in upstream.requests:  # whatever was forwarded went to the configured upstream
        assert received.header("host") == upstream.url.removeprefix("http://")


@pytest.mark.parametrize("path", ["/api/user", "/api/provider/anthropic/v1/messages"])
def test_a_host_header_naming_another_host_changes_nothing(ampbridge, upstream, canary, path):
    canary_host = canary.url.removeprefix("http://")
    status, _ = raw_request(
        ampbridge.url,
        path,
        method="POST",
        headers={"Host": canary_host, "X-Forwarded-Host": canary_host, "Forwarded": f"host={canary_host}"},
    )
    assert status == 421  # a foreign Host is refused before any routing (DNS rebinding)
    assert canary.requests == []
    assert upstream.requests == []


def test_header_injection_attempts_are_rejected_by_the_server(ampbridge, upstream):
    status, _ = raw_request(ampbridge.url, "/api/user", headers={"X-Amp-Thread-Id": "a\rInjected: yes"})
    assert status == 400
    assert upstream.requests == []


# --- properties -------------------------------------------------------------------------------

path_text = st.text(alphabet=string.ascii_letters + string.digits + "/.:-_%()", max_size=80)


@settings(max_examples=500, deadline=None)
@given(path_text, st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
def test_provider_path_mapping_never_escapes_the_standard_paths(rest, method):
    path = "/api/provider/" + rest
    scope = {"type": "http", "method": method, "path": path, "headers": []}
    call = parse_provider_call(scope)
    if call is None:
        return
    assert call.original_path == path
    assert call.local_path.startswith(("/v1/", "/v1beta/", "/v1alpha/"))
    assert ".." not in call.local_path.split("/")
    assert call.provider == rest.split("/", 1)[0]
    if call.path_model is not None:
        assert "/" not in call.path_model and ":" not in call.path_model


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_safe_paths_never_let_a_dot_segment_through(path):
    path = "/" + path
    if is_safe_path(path, path.encode("utf-8", "surrogatepass")):
        assert ".." not in path.split("/") and "." not in path.split("/")
        assert "\\" not in path and all(ch >= " " and ch != "\x7f" for ch in path)


@settings(max_examples=500, deadline=None)
@given(
    st.binary(max_size=300)
    | st.builds(
        lambda v: json.dumps(v).encode(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.sampled_from(["model", "x", "messages"]), inner, max_size=3)
            ),
            max_leaves=20,
        ),
    )
)
def test_model_extraction_never_raises(body):
    payload = parse_json_object(body)
    assert payload is None or isinstance(payload, dict)
    if payload is not None and isinstance(payload.get("model"), str):
        base, suffix = split_thinking_suffix(payload["model"])
        assert base + suffix == payload["model"]


header_names = st.sampled_from(
    [
        b"authorization",
        b"Authorization",
        b"x-api-key",
        b"X-Goog-Api-Key",
        b"connection",
        b"keep-alive",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"x-forwarded-for",
        b"X-Forwarded-Proto",
        b"forwarded",
        b"x-real-ip",
        b"via",
        b"host",
        b"accept-encoding",
        b"content-length",
        b"x-amp-thread-id",
        b"content-type",
        b"cookie",
        b"anthropic-version",
        b"x-custom",
        b"x-hop",
    ]
)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(header_names, st.binary(min_size=1, max_size=12).filter(lambda v: b"," not in v)),
        max_size=12,
    ),
    st.booleans(),
)
def test_header_scrubbing(headers, name_x_hop_in_connection):
    if name_x_hop_in_connection:
        headers = [*headers, (b"Connection", b"x-hop")]
    kept = scrub_request_headers(headers, keep_cookies=True)
    gone = (
        CREDENTIAL_HEADERS
        | HOP_BY_HOP
        | {b"forwarded", b"x-real-ip", b"via", b"host", b"accept-encoding", b"content-length"}
    )
    for name, _ in kept:
        lower = name.lower()
        assert lower not in gone and not lower.startswith(b"x-forwarded-")
        assert not (name_x_hop_in_connection and lower == b"x-hop")
    named = connection_named(headers)
    expected = [
        (n, v)
        for n, v in headers
        if n.lower()
        in (b"x-amp-thread-id", b"content-type", b"cookie", b"anthropic-version", b"x-custom", b"x-hop")
        and n.lower() not in named
    ]
    assert kept == expected  # everything else passes, in order, untouched
    assert scrub_request_headers(headers) == [(n, v) for n, v in expected if n.lower() != b"cookie"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["key", "auth_token", "limit", "q"]),
            st.sampled_from(["secret", "other", "5", ""]),
        ),
        max_size=6,
    )
)
def test_query_scrubbing_removes_only_client_keys(pairs):
    query = "&".join(f"{k}={v}" for k, v in pairs).encode()
    scrubbed = scrub_query(query, frozenset({"secret"}))
    remaining = [p.split("=", 1) for p in scrubbed.decode().split("&") if p]
    assert ["key", "secret"] not in remaining and ["auth_token", "secret"] not in remaining
    assert [p for p in remaining] == [
        [k, v] for k, v in pairs if not (k in ("key", "auth_token") and v == "secret")
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200) | st.text(max_size=100).map(lambda t: t.encode("utf-8")),
    st.integers(min_value=1, max_value=50),
)
def test_a_body_read_for_the_model_lookup_is_replayed_byte_for_byte(body, chunk_size):
    messages = [
        {"type": "http.request", "body": body[i : i + chunk_size], "more_body": i + chunk_size < len(body)}
        for i in range(0, len(body), chunk_size)
    ] or [{"type": "http.request", "body": b""}]

    async def run() -> bytes:
        queue = list(messages)

        async def receive():
            return queue.pop(0)

        return (await RequestBody.read(receive, 10_000)).take_bytes()

    assert anyio.run(run) == body
