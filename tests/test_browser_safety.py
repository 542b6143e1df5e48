"""Issue 11, attack by attack, at the HTTP level: requests with the headers a browser sends
(``Host``, ``Origin``, ``Sec-Fetch-Site``, ``Sec-Fetch-Mode``, ``Sec-Fetch-Dest``) against the real
standalone app on 127.0.0.1, with a recording fake Amp upstream and fake model backends that
show what got through (SPEC §10, §17)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import yaml

from ampbridge.logs import OWNED_LOGGERS, configure_logging, redacting_logger
from ampbridge.settings import Settings
from ampbridge.standalone import create_app

from .conftest import provider_settings
from .servers import (
    RawServer,
    RecordingServer,
    ServerThread,
    eventually,
    read_all,
    read_request_head,
    respond,
)

AMP_KEY = "sk-amp-user-key-browser-0001"
CLIENT_KEY = "client-key-browser-0002"
EVIL = "https://evil.example"
ROOT = Path(__file__).resolve().parents[1]

# What Chromium sends for each kind of request a page of another site can make.
CROSS_SITE_FETCH = {
    "Origin": EVIL,
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Dest": "empty",
}
CROSS_SITE_NO_CORS = {
    "Origin": EVIL,
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "no-cors",
    "Sec-Fetch-Dest": "empty",
    "Content-Type": "text/plain;charset=UTF-8",
}
CROSS_SITE_FORM = {
    "Origin": EVIL,
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Content-Type": "application/x-www-form-urlencoded",
}
CROSS_SITE_SOCKET = {
    "Origin": EVIL,
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "websocket",
    "Sec-Fetch-Dest": "websocket",
}
NAVIGATION = {
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-User": "?1",
}
LOGIN = "/auth/cli-login?authToken=ab12&callbackPort=45678"
ACTOR_SOCKET = "/actors/gateway/threadActor/websocket/?thread=T-1"


def amp_settings(upstream: RecordingServer, **settings: object) -> Settings:
    return Settings(amp_upstream_url=upstream.url, amp_upstream_api_key=AMP_KEY, **settings)


def nothing_arrived(upstream: RecordingServer, backends: dict[str, RecordingServer] | None = None) -> bool:
    """No request and no WebSocket reached the upstream or a backend (ampbridge's own listing of
    a backend's models, at start, aside)."""
    servers = [upstream, *(backends or {}).values()]
    return (
        all(
            not server.websockets
            and all(r.method == "GET" and r.path.endswith("/models") for r in server.requests)
            for server in servers
        )
        and not upstream.requests
    )


def handshake(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A WebSocket opening handshake written byte for byte as a browser sends it; the status of
    the answer and its head. A 101 connection is closed at once."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    fields = {
        "Host": f"{host}:{port}",
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        **(headers or {}),
    }
    lines = [f"GET {path} HTTP/1.1", *(f"{name}: {value}" for name, value in fields.items())]
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = read_request_head(connection)
    return int(head.split(b" ", 2)[1]), head


# --- DNS rebinding: a foreign Host ------------------------------------------------------------

REBOUND_REQUESTS = [
    ("GET", "/api/internal?getUserInfo"),
    ("POST", "/api/internal?getUserInfo"),
    ("GET", "/threads/T-1234"),
    ("GET", "/settings"),
    ("GET", "/healthz"),
    ("POST", "/api/provider/anthropic/v1/messages"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
]


@pytest.mark.parametrize("with_client_keys", [False, True], ids=["open", "api-keys"])
@pytest.mark.parametrize(("method", "path"), REBOUND_REQUESTS)
def test_a_rebound_host_name_gets_421_on_every_route(
    upstream, backends, bridge, method, path, with_client_keys
):
    keys = {"api_keys": [CLIENT_KEY]} if with_client_keys else {}
    ampbridge = bridge(
        provider_settings(backends, amp_upstream_url=upstream.url, amp_upstream_api_key=AMP_KEY, **keys)
    )
    origin = f"http://attacker.example:{ampbridge.port}"  # after rebinding the page is same-origin
    headers = {
        "Host": f"attacker.example:{ampbridge.port}",
        "Origin": origin,
        "Sec-Fetch-Site": "same-origin",
    }
    if with_client_keys:
        headers["Authorization"] = f"Bearer {CLIENT_KEY}"  # even a request that knew a key
    body = b'{"model":"claude-opus-4-7","messages":[]}' if method == "POST" else None
    response = httpx.request(method, ampbridge.url + path, headers=headers, content=body)
    assert response.status_code == 421
    assert response.json()["error"] == "misdirected_request"
    assert nothing_arrived(upstream, backends)


@pytest.mark.parametrize("with_client_keys", [False, True], ids=["open", "api-keys"])
def test_a_rebound_websocket_to_the_actor_gateway_gets_421(upstream, bridge, with_client_keys):
    keys = {"api_keys": [CLIENT_KEY]} if with_client_keys else {}
    ampbridge = bridge(amp_settings(upstream, **keys))
    status, head = handshake(
        ampbridge.url,
        ACTOR_SOCKET,
        {"Host": f"attacker.example:{ampbridge.port}", "Origin": f"http://attacker.example:{ampbridge.port}"},
    )
    assert status == 421, head
    assert nothing_arrived(upstream)


def test_allowed_hosts_admit_a_tunnel_name_and_a_suffix(upstream, bridge):
    ampbridge = bridge(amp_settings(upstream, allowed_hosts=["tunnel.example.com", "*.example.org"]))
    for host in ("tunnel.example.com", "tunnel.example.com:443", "a.example.org", "b.c.example.org:8080"):
        response = httpx.get(f"{ampbridge.url}/api/internal?getUserInfo", headers={"Host": host})
        assert response.status_code == 200, host
    assert len(upstream.requests) == 4
    assert all(r.header("Authorization") == f"Bearer {AMP_KEY}" for r in upstream.requests)
    upstream.reset()
    for host in ("example.org", "evilexample.org", "tunnel.example.com.evil.net", "other.example.com"):
        assert (
            httpx.get(f"{ampbridge.url}/api/internal?getUserInfo", headers={"Host": host}).status_code == 421
        )
    assert nothing_arrived(upstream)
    status, _ = handshake(ampbridge.url, ACTOR_SOCKET, {"Host": "a.example.org"})
    assert status == 101
    assert eventually(lambda: len(upstream.websockets) == 1)


def test_a_tunnels_public_origin(upstream, bridge):
    """A page served at the tunnel's public origin calling ampbridge through the tunnel. When the
    tunnel keeps the Host, ``allowed-hosts`` is enough; when it rewrites Host to the local
    address, the public origin must be listed in ``allowed-origins``."""
    origin = "https://tunnel.example.com"
    page = {"Origin": origin, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    kept = {**page, "Host": "tunnel.example.com"}
    ampbridge = bridge(amp_settings(upstream, allowed_hosts=["tunnel.example.com"]))
    rewritten = {**page, "Host": f"127.0.0.1:{ampbridge.port}"}
    url = f"{ampbridge.url}/api/internal?getUserInfo"
    assert httpx.post(url, headers=kept, content=b"{}").status_code == 200
    assert httpx.post(url, headers=rewritten, content=b"{}").status_code == 403
    listed = bridge(amp_settings(upstream, allowed_hosts=["tunnel.example.com"], allowed_origins=[origin]))
    url = f"{listed.url}/api/internal?getUserInfo"
    assert (
        httpx.post(url, headers={**page, "Host": f"127.0.0.1:{listed.port}"}, content=b"{}").status_code
        == 200
    )
    other = {**kept, "Origin": "https://elsewhere.example.com"}
    assert httpx.post(url, headers=other, content=b"{}").status_code == 403
    assert len(upstream.requests) == 2


# --- Cross-site WebSocket hijacking ---------------------------------------------------------


SOCKET_PATHS = [ACTOR_SOCKET, "/api/threads/live", "/auth/socket", "/threads/T-1234"]


@pytest.mark.parametrize(
    "browser", [{"Origin": EVIL}, CROSS_SITE_SOCKET, {"Origin": "null"}], ids=["origin", "sec-fetch", "null"]
)
@pytest.mark.parametrize("path", SOCKET_PATHS)
def test_a_cross_site_websocket_is_refused_like_http(upstream, bridge, path, browser):
    ampbridge = bridge(amp_settings(upstream))
    status, head = handshake(ampbridge.url, path, browser)
    assert status == 403, head
    http = httpx.get(ampbridge.url + path, headers={**browser, "Sec-Fetch-Mode": "cors"})
    assert http.status_code == status
    assert http.json()["error"] == "cross_site_request"
    assert nothing_arrived(upstream)


def test_a_websocket_from_another_local_port_is_refused(upstream, bridge):
    """A page of another app on this machine (a dev server on :3000) is another origin."""
    ampbridge = bridge(amp_settings(upstream))
    for origin in ("http://127.0.0.1:3000", "http://localhost:3000", "http://localhost"):
        status, _ = handshake(ampbridge.url, ACTOR_SOCKET, {"Origin": origin})
        assert status == 403, origin
    assert nothing_arrived(upstream)


def test_a_websocket_without_origin_is_relayed_with_the_amp_key(upstream, bridge):
    """Amp's CLI sends no Origin: its socket goes through, with the Amp key."""
    ampbridge = bridge(amp_settings(upstream))
    status, _ = handshake(ampbridge.url, ACTOR_SOCKET, {"User-Agent": "amp/0.0.1"})
    assert status == 101
    assert eventually(lambda: len(upstream.websockets) == 1)
    assert upstream.websockets[0].header("Authorization") == f"Bearer {AMP_KEY}"
    own = f"http://127.0.0.1:{ampbridge.port}"
    status, _ = handshake(ampbridge.url, ACTOR_SOCKET, {"Origin": own})  # ampbridge's own origin
    assert status == 101


# --- Cross-site model calls and CORS --------------------------------------------------------

MODEL_CALLS = [
    ("/api/provider/anthropic/v1/messages", "claude-opus-4-7"),  # served locally
    ("/api/provider/anthropic/v1/messages", "claude-elsewhere-1"),  # would go to the upstream
    ("/v1/chat/completions", "gpt-5.4"),
    ("/api/provider/openai/v1/chat/completions", "gpt-elsewhere"),
]


@pytest.mark.parametrize(("path", "model"), MODEL_CALLS)
@pytest.mark.parametrize("browser", [CROSS_SITE_NO_CORS, CROSS_SITE_FORM], ids=["no-cors", "form"])
def test_a_cross_site_model_call_is_refused_before_any_backend(
    upstream, backends, bridge, path, model, browser
):
    ampbridge = bridge(
        provider_settings(backends, amp_upstream_url=upstream.url, amp_upstream_api_key=AMP_KEY)
    )
    body = f'{{"model":"{model}","max_tokens":5,"messages":[{{"role":"user","content":"hi"}}]}}'
    response = httpx.post(ampbridge.url + path, headers=browser, content=body)
    assert response.status_code == 403
    assert response.json()["error"] == "cross_site_request"
    assert not any(name.lower().startswith("access-control-") for name in response.headers)
    assert nothing_arrived(upstream, backends)


def test_a_local_backends_cors_grants_never_reach_the_client(upstream, backends, bridge):
    """vLLM, LiteLLM and llama.cpp send CORS grants; a page could read the output with them."""

    async def permissive(scope, receive, send, rec):
        await respond(
            send,
            200,
            b'{"id":"c1","object":"chat.completion","created":0,"model":"gpt-5.4","choices":[]}',
            headers=[
                (b"Access-Control-Allow-Origin", b"*"),
                (b"Access-Control-Allow-Credentials", b"true"),
                (b"Access-Control-Allow-Headers", b"*"),
                (b"Access-Control-Expose-Headers", b"*"),
                (b"X-Served-By", b"permissive"),
            ],
        )

    backends["openai"].route(lambda m, p: p.endswith("/chat/completions"), permissive)
    upstream.route(lambda m, p: p == "/api/user", permissive)
    ampbridge = bridge(
        provider_settings(backends, amp_upstream_url=upstream.url, amp_upstream_api_key=AMP_KEY)
    )
    for path in ("/v1/chat/completions", "/api/provider/openai/v1/chat/completions"):
        response = httpx.post(ampbridge.url + path, json={"model": "gpt-5.4", "messages": []})
        assert response.status_code == 200
        assert response.headers["x-served-by"] == "permissive"
        assert [name for name in response.headers if name.lower().startswith("access-control-")] == []
    response = httpx.get(f"{ampbridge.url}/api/user")
    assert response.status_code == 200 and response.headers["x-served-by"] == "permissive"
    assert [name for name in response.headers if name.lower().startswith("access-control-")] == []
    # A preflight is never granted, so a page cannot make a non-simple request at all.
    preflight = httpx.options(
        ampbridge.url + "/v1/chat/completions",
        headers={
            "Origin": EVIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 403
    assert [name for name in preflight.headers if name.lower().startswith("access-control-")] == []


# --- CSRF on the control plane ----------------------------------------------------------------


@pytest.mark.parametrize(
    "browser",
    [
        CROSS_SITE_FORM,
        CROSS_SITE_NO_CORS,
        {**CROSS_SITE_FORM, "Origin": "null", "Sec-Fetch-Dest": "iframe"},  # a sandboxed frame
        {"Origin": EVIL, "Content-Type": "text/plain"},  # an older browser: Origin only
        {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors", "Content-Type": "text/plain"},
    ],
    ids=["form", "text-plain", "null-origin", "origin-only", "same-site"],
)
@pytest.mark.parametrize("path", ["/api/internal?getUserInfo", "/api/threads", "/api/user/settings"])
def test_cross_site_posts_to_the_control_plane_get_403(upstream, bridge, path, browser):
    ampbridge = bridge(amp_settings(upstream))
    response = httpx.post(ampbridge.url + path, headers=browser, content=b'{"method":"deleteThread"}')
    assert response.status_code == 403
    assert nothing_arrived(upstream)


def test_same_origin_and_cli_posts_to_the_control_plane_pass(upstream, bridge):
    ampbridge = bridge(amp_settings(upstream))
    own = {
        "Origin": f"http://127.0.0.1:{ampbridge.port}",
        "Sec-Fetch-Site": "same-origin",
        "Sec-Fetch-Mode": "cors",
    }
    for headers in (
        own,
        {"User-Agent": "amp/0.0.1"},
        {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"},
    ):
        assert (
            httpx.post(
                f"{ampbridge.url}/api/internal?getUserInfo", headers=headers, content=b"{}"
            ).status_code
            == 200
        )
    assert len(upstream.requests) == 3


# --- Browser routes -------------------------------------------------------------------------


def test_browser_routes_redirect_to_the_upstream_by_default(upstream, bridge):
    ampbridge = bridge(amp_settings(upstream))
    response = httpx.get(
        f"{ampbridge.url}/threads/T-1234?tab=1", headers={"Authorization": f"Bearer {CLIENT_KEY}"}
    )
    assert response.status_code == 302
    assert response.headers["location"] == f"{upstream.url}/threads/T-1234?tab=1"
    assert httpx.post(f"{ampbridge.url}/auth/sign-in", content=b"x").status_code == 307
    assert nothing_arrived(upstream)


@pytest.mark.parametrize("mode", ["redirect", "proxy"])
def test_the_login_pages_top_level_navigation_passes_and_a_frame_does_not(upstream, bridge, mode):
    ampbridge = bridge(amp_settings(upstream, browser_routes=mode))
    navigation = httpx.get(ampbridge.url + LOGIN, headers=NAVIGATION)
    if mode == "redirect":
        assert navigation.status_code == 302
        assert navigation.headers["location"] == upstream.url + LOGIN
        assert nothing_arrived(upstream)
    else:
        assert navigation.status_code == 200
        (received,) = upstream.requests
        assert (received.path, received.query) == ("/auth/cli-login", b"authToken=ab12&callbackPort=45678")
        assert received.header("Authorization") is None and received.header("X-Api-Key") is None
        upstream.reset()
    for refused in (
        {**NAVIGATION, "Sec-Fetch-Dest": "iframe"},
        {**NAVIGATION, "Sec-Fetch-Dest": "embed"},
        {**NAVIGATION, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "script"},
        {"Origin": EVIL, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"},
    ):
        assert httpx.get(ampbridge.url + LOGIN, headers=refused).status_code == 403, refused
    form = httpx.post(ampbridge.url + "/auth/cli-login", headers=CROSS_SITE_FORM, content=b"a=b")
    assert form.status_code == 403  # a navigation, but not by GET or HEAD
    assert nothing_arrived(upstream)


def test_proxied_browser_routes_never_carry_the_amp_key(upstream, bridge):
    ampbridge = bridge(amp_settings(upstream, browser_routes="proxy"))
    for path in ("/threads/T-1234", "/settings", LOGIN, "/_app/immutable/app.js"):
        response = httpx.get(
            ampbridge.url + path, headers={"Authorization": f"Bearer {CLIENT_KEY}", "Cookie": "session=s1"}
        )
        assert response.status_code == 200, path
    assert len(upstream.requests) == 4
    for received in upstream.requests:
        assert received.header("Authorization") is None and received.header("X-Api-Key") is None
        assert AMP_KEY not in str(received.headers) and CLIENT_KEY not in str(received.headers)
        assert received.header("Cookie") == "session=s1"  # the browser's session on the upstream


@pytest.mark.parametrize("mode", ["redirect", "proxy"])
@pytest.mark.parametrize("path", ["/threads/T-1234", "/auth/cli-login", "/settings"])
def test_browser_routes_never_upgrade_to_websocket(upstream, bridge, mode, path):
    ampbridge = bridge(amp_settings(upstream, browser_routes=mode))
    status, head = handshake(ampbridge.url, path)  # no Origin: not even the CLI gets one
    assert status == 403, head
    assert nothing_arrived(upstream)


# --- Redirects are never followed -------------------------------------------------------------


class Canary:
    """Another server on loopback: records every connection (nothing may arrive)."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []

    def handle(self, connection: socket.socket) -> None:
        self.heads.append(read_request_head(connection))
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def redirecting_to(target: str) -> tuple[list[bytes], object]:
    heads: list[bytes] = []

    def handle(connection: socket.socket) -> None:
        head = read_request_head(connection)
        heads.append(head)
        path = head.split(b" ", 2)[1].decode()
        scheme = "ws" if b"upgrade: websocket" in head.lower() else "http"
        location = f"{scheme}://{target}{path}"
        connection.sendall(
            f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )

    return heads, handle


def test_a_redirect_from_the_upstream_is_never_followed(bridge):
    canary = Canary()
    with RawServer(canary.handle) as canary_server:
        heads, handle = redirecting_to(canary_server.url.removeprefix("http://"))
        with RawServer(handle) as redirecting:
            ampbridge = bridge(Settings(amp_upstream_url=redirecting.url, amp_upstream_api_key=AMP_KEY))
            status, head = handshake(ampbridge.url, ACTOR_SOCKET, {"User-Agent": "amp/0.0.1"})
            assert status != 101, head
            response = httpx.get(f"{ampbridge.url}/api/user", headers={"User-Agent": "amp/0.0.1"})
            assert response.status_code == 302  # the client sees the redirect, ampbridge did not follow
            assert response.headers["location"].startswith(
                f"http://{canary_server.url.removeprefix('http://')}"
            )
            model = httpx.post(
                f"{ampbridge.url}/api/provider/anthropic/v1/messages", json={"model": "claude-elsewhere-1"}
            )
            assert model.status_code == 302
        assert len(heads) == 3  # the upstream was asked, with the key...
        assert all(f"Bearer {AMP_KEY}".encode() in head for head in heads)
        assert canary.heads == []  # ...and nothing went on to the redirect's target
        # The canary does answer: whoever followed the redirect would have been recorded.
        assert httpx.get(canary_server.url).status_code == 200
        assert len(canary.heads) == 1


# --- Cookies ------------------------------------------------------------------------------


def test_cookies_reach_the_upstreams_control_plane_only(upstream, backends, bridge):
    """SPEC §10: ``Cookie`` only on browser and ``/api/*`` control-plane routes; never to a local
    backend, nor with a model call the upstream serves, nor on the actor gateway."""
    ampbridge = bridge(
        provider_settings(backends, amp_upstream_url=upstream.url, amp_upstream_api_key=AMP_KEY)
    )
    cookie = {"Cookie": "jupyter-session=secret-cookie-1; other=2"}
    assert httpx.get(f"{ampbridge.url}/api/user", headers=cookie).status_code == 200
    (control,) = upstream.requests
    assert control.header("Cookie") == cookie["Cookie"]
    upstream.reset()
    calls = [
        ("/api/provider/anthropic/v1/messages", "claude-opus-4-7"),
        ("/v1/chat/completions", "gpt-5.4"),
        ("/api/provider/anthropic/v1/messages", "claude-elsewhere-1"),
    ]
    for path, model in calls:
        response = httpx.post(ampbridge.url + path, headers=cookie, json={"model": model, "messages": []})
        assert response.status_code == 200, path
    received = [*backends["anthropic"].requests, *backends["openai"].requests, *upstream.requests]
    assert len(received) == 3
    assert all(r.header("Cookie") is None for r in received)
    status, _ = handshake(ampbridge.url, ACTOR_SOCKET, cookie)
    assert status == 101
    assert eventually(lambda: len(upstream.websockets) == 1)
    assert upstream.websockets[0].header("Cookie") is None


# --- /api/provider/ paths that are not model calls ------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/provider/anthropic/v1/files", "/api/provider/openai/v1/batches", "/api/provider/x/y"]
)
def test_non_model_provider_paths_get_the_management_gates(upstream, path):
    settings = amp_settings(upstream, api_keys=[CLIENT_KEY])

    async def ask(peer: str, headers: dict[str, str]) -> tuple[int, str]:
        app = create_app(settings=settings, environ={}, configure_logs=False)
        transport = httpx.ASGITransport(app=app, client=(peer, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            response = await client.get(path, headers=headers)
            return response.status_code, response.json().get("error", "")

    key = {"Authorization": f"Bearer {CLIENT_KEY}"}
    assert anyio.run(ask, "192.0.2.7", key)[0] == 403  # the localhost gate
    assert anyio.run(ask, "127.0.0.1", {})[0] == 401  # client keys
    assert upstream.requests == []
    # With a client key from loopback it is a control-plane request: the upstream answers it
    # (the fake has no such route), with the Amp key instead of the client's.
    assert anyio.run(ask, "127.0.0.1", key) == (404, "no such model route")
    (received,) = upstream.requests
    assert received.path == path and received.header("Authorization") == f"Bearer {AMP_KEY}"


# --- Keys in logs -----------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    names = [
        *OWNED_LOGGERS,
        "uvicorn.error",
        "uvicorn.access",
        "uvicorn.asgi",
        "websockets.client",
        "websockets.server",
    ]
    saved = {name: (logging.getLogger(name), list(logging.getLogger(name).handlers)) for name in names}
    state = {name: (logger.level, logger.propagate) for name, (logger, _) in saved.items()}
    yield
    for name, (logger, handlers) in saved.items():
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in handlers:
            logger.addHandler(handler)
        logger.level, logger.propagate = state[name]


def test_no_key_in_any_log_at_debug_level(upstream, bridge, tmp_path, capfd, caplog, restore_logging):
    log_file = tmp_path / "requests.log"
    configure_logging(level=logging.DEBUG, to_file=True, log_file=log_file)
    for name in OWNED_LOGGERS:  # caplog too sees every record, after ampbridge's handlers
        logging.getLogger(name).addHandler(caplog.handler)
    caplog.handler.setLevel(logging.DEBUG)
    ampbridge = bridge(amp_settings(upstream, api_keys=[CLIENT_KEY]), log_level="debug")
    status, _ = handshake(
        ampbridge.url,
        ACTOR_SOCKET,
        {
            "Authorization": f"Bearer {CLIENT_KEY}",
            "Sec-WebSocket-Protocol": f"rivet, rivet_token.{CLIENT_KEY}",
        },
    )
    assert status == 101
    assert eventually(lambda: len(upstream.websockets) == 1)
    assert upstream.websockets[0].header("Authorization") == f"Bearer {AMP_KEY}"  # the key did travel
    response = httpx.get(f"{ampbridge.url}/api/user?key={CLIENT_KEY}", headers={"X-Api-Key": CLIENT_KEY})
    assert response.status_code == 200
    for name in OWNED_LOGGERS:
        logging.getLogger(name).removeHandler(caplog.handler)
    console = capfd.readouterr().err
    written = log_file.read_text()
    records = caplog.text
    assert "Authorization" in written or "authorization" in written  # the handshake lines were logged
    for text in (console, written, records):
        assert text, "nothing was logged"
        assert CLIENT_KEY not in text
        assert AMP_KEY not in text


def test_a_redacting_logger_masks_header_lines_before_any_handler(caplog):
    caplog.set_level(logging.DEBUG)
    logger = redacting_logger("ampbridge.test.handshake")
    assert redacting_logger("ampbridge.test.handshake") is logger and len(logger.filters) == 1
    logger.debug("> %s: %s", "Authorization", f"Bearer {AMP_KEY}")
    logger.debug("> x-api-key: %s", AMP_KEY)
    logger.debug("X-Api-Key: %s %s", AMP_KEY)  # a caller's mistake: logging would print the arguments
    assert caplog.messages == [
        "> Authorization: [redacted]",
        "> x-api-key: [redacted]",
        "X-Api-Key: [redacted]",
    ]


def test_no_key_in_debug_logs_in_library_use(upstream, bridge, caplog, restore_logging):
    """``ampbridge.app()`` in someone else's server: ampbridge configures no logging, the host
    app logs everything at debug level through the root logger."""
    caplog.set_level(logging.DEBUG)
    for name in ("websockets", "websockets.client", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.DEBUG)
        logging.getLogger(name).propagate = True
    ampbridge = bridge(amp_settings(upstream, api_keys=[CLIENT_KEY]), log_level="debug")
    status, _ = handshake(ampbridge.url, ACTOR_SOCKET, {"Authorization": f"Bearer {CLIENT_KEY}"})
    assert status == 101
    assert eventually(lambda: len(upstream.websockets) == 1)
    assert upstream.websockets[0].header("Authorization") == f"Bearer {AMP_KEY}"
    # The fake upstream runs in this process too and logs what it received: only the records
    # made in ampbridge's server thread are ampbridge's.
    ours = [record for record in caplog.records if record.thread == ampbridge.thread.ident]
    handshake_lines = "\n".join(caplog.handler.format(record) for record in ours)
    assert "> authorization: " in handshake_lines.lower()  # the relay's handshake was logged
    assert AMP_KEY not in handshake_lines
    # (The host app's own server logs its clients' headers, client keys included, at debug
    # level: that is the host app's logging to configure, not a key ampbridge sends.)


# --- Resource limits ------------------------------------------------------------------------


def peak_rss(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of a process, in bytes."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_adversarial_64_mib_body_takes_bounded_memory_and_no_event_loop(tmp_path):
    body = b"[" + b"{}," * (64 * 1024 * 1024 // 3 - 1) + b"{}]"
    port = free_port()
    # An upstream that only drains the body: one that parsed it would stall this process, and
    # the /healthz timings taken here with it. Run once, not in each header style.
    with ServerThread(draining_upstream) as upstream:
        config = {"port": port, "amp-upstream-url": upstream.url, "amp-upstream-api-key": AMP_KEY}
        _serve_and_measure(tmp_path, config, body)


async def draining_upstream(scope, receive, send):
    if scope["type"] == "http":
        await read_all(receive)
        await respond(send, 200, b'{"upstream":true}')


def _serve_and_measure(tmp_path: Path, config: dict[str, object], body: bytes) -> None:
    port = config["port"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    output = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "ampbridge.cli", "serve", "--config", str(tmp_path / "config.yaml")],
        cwd=tmp_path,
        stdout=output,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert eventually(lambda: _answers(url), timeout=20), (tmp_path / "serve.log").read_text()
        baseline, _ = peak_rss(process.pid)
        finished = threading.Event()
        outcome: dict[str, object] = {}

        def big_call() -> None:
            try:
                outcome["status"] = httpx.post(
                    f"{url}/api/provider/anthropic/v1/messages",
                    content=body,
                    headers={"Content-Type": "application/json"},
                    timeout=60,
                ).status_code
            finally:
                finished.set()

        sender = threading.Thread(target=big_call)
        sender.start()
        slowest = 0.0
        with httpx.Client(timeout=30) as client:
            while not finished.is_set():
                started = time.monotonic()
                assert client.get(f"{url}/healthz").status_code == 200
                slowest = max(slowest, time.monotonic() - started)
        sender.join()
        _, peak = peak_rss(process.pid)
    finally:
        process.terminate()
        process.wait(15)
        output.close()
    assert isinstance(outcome.get("status"), int) and outcome["status"] < 500, outcome
    grown = peak - baseline
    assert grown < 4 * len(body), f"the server grew by {grown / 2**20:.0f} MiB for a 64 MiB body"
    assert slowest < 1.0, f"/healthz took {slowest:.2f}s while the body was processed"


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
