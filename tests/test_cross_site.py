"""CrossSiteGate alone: what a browser marks as coming from another site is refused; requests
without browser headers (Amp's CLI, IDE extensions, SDKs) and top-level navigations to browser
routes pass."""

from __future__ import annotations

import anyio
import httpx
import pytest

from ampbridge.cross_site import CrossSiteGate
from ampbridge.trusted_hosts import HostAllowlist


async def ok_app(scope, receive, send):
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"inner"})


def is_browser_route(path: str) -> bool:
    return path == "/auth" or path.startswith(("/auth/", "/threads", "/settings"))


def gate(**options) -> CrossSiteGate:
    return CrossSiteGate(ok_app, is_browser_route=is_browser_route, **options)


def call(app, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8317") as client:
            return await client.request(
                method, path, headers=headers, content=b"{}" if method == "POST" else None
            )

    return anyio.run(run)


def websocket(app, path: str, headers: dict[str, str]) -> list[dict]:
    sent: list[dict] = []

    async def run() -> None:
        raw = [(b"host", b"127.0.0.1:8317")] + [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        scope = {
            "type": "websocket",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": raw,
            "client": ("127.0.0.1", 5000),
            "subprotocols": [],
            "extensions": {"websocket.http.response": {}},
        }

        async def receive():
            return {"type": "websocket.connect"}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)

    anyio.run(run)
    return sent


CLI_LIKE = [
    {},
    {"Authorization": "Bearer sk-amp", "User-Agent": "amp-cli", "Content-Type": "application/json"},
]


@pytest.mark.parametrize("headers", CLI_LIKE)
@pytest.mark.parametrize(
    "path", ["/api/internal?getUserInfo", "/api/provider/anthropic/v1/messages", "/threads/T-1"]
)
def test_requests_without_browser_headers_pass(headers, path):
    for method in ("GET", "POST"):
        response = call(gate(), method, path, headers)
        assert (response.status_code, response.text) == (200, "inner")


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:8317"},
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost:8317"},
        {"Sec-Fetch-Site": "none"},
        {"Origin": "http://[::1]:8317"},
        {"Origin": "https://LOCALHOST:8317/"},
    ],
)
def test_same_origin_and_user_initiated_requests_pass(headers):
    response = call(gate(), "POST", "/api/internal?getUserInfo", headers)
    assert (response.status_code, response.text) == (200, "inner")


CROSS_SITE = [
    {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors", "Origin": "http://evil.test"},
    {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},  # a no-cors GET carries no Origin
    {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors", "Origin": "http://localhost:3000"},
    {"Origin": "http://evil.test"},  # an older browser: no Sec-Fetch-* headers
    {"Origin": "null"},  # sandboxed frames, data: URLs, some redirects
    {"Origin": "http://127.0.0.1.evil.test:8317"},
    {"Origin": "ftp://localhost:8317"},
    {"Origin": "garbage"},
    {"Origin": "http://localhost:8317", "Sec-Fetch-Site": "cross-site"},  # a forged Origin loses anyway
]


@pytest.mark.parametrize("headers", CROSS_SITE)
@pytest.mark.parametrize("method", ["GET", "POST", "OPTIONS"])
@pytest.mark.parametrize(
    "path",
    [
        "/api/internal?getUserInfo",
        "/api/provider/anthropic/v1/messages",
        "/v1/chat/completions",
        "/healthz",
        "/auth/cli-login",
        "/threads/T-1",
    ],
)
def test_cross_site_requests_get_403_json(headers, method, path):
    response = call(gate(), method, path, headers)
    assert response.status_code == 403
    assert response.json()["error"] == "cross_site_request"


NAVIGATION = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


@pytest.mark.parametrize(
    "path", ["/auth/cli-login?authToken=ab12&callbackPort=4567", "/threads/T-1", "/settings"]
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_top_level_navigation_to_a_browser_route_passes(path, method):
    response = call(gate(), method, path, NAVIGATION)
    assert response.status_code == 200


def test_navigation_exception_is_narrow():
    # not a browser route
    assert call(gate(), "GET", "/api/internal?getUserInfo", NAVIGATION).status_code == 403
    # a form POST navigation
    assert (
        call(gate(), "POST", "/auth/cli-login", {**NAVIGATION, "Origin": "http://evil.test"}).status_code
        == 403
    )
    # a navigation inside a frame of the attacker's page
    assert (
        call(gate(), "GET", "/auth/cli-login", {**NAVIGATION, "Sec-Fetch-Dest": "iframe"}).status_code == 403
    )
    # a fetch, not a navigation
    assert call(gate(), "GET", "/auth/cli-login", {**NAVIGATION, "Sec-Fetch-Mode": "cors"}).status_code == 403


def test_configured_hosts_and_origins_are_allowed_origins():
    app = gate(allowed_hosts=["*.ts.net"], allowed_origins=["https://ide.example.com:8443"])
    for origin in [
        "http://box.tail.ts.net:8317",
        "https://ide.example.com:8443",
        "HTTPS://IDE.example.com:8443/",
    ]:
        assert call(app, "POST", "/api/user", {"Origin": origin}).status_code == 200, origin
    for origin in [
        "https://ide.example.com",
        "http://ide.example.com:8443",
        "https://ts.net",
        "https://box.tail.ts.net",
    ]:
        assert call(app, "POST", "/api/user", {"Origin": origin}).status_code == 403, origin


def test_a_shared_host_allowlist_includes_the_bind_host():
    hosts = HostAllowlist(["amp.lan"], bind_host="192.168.7.7")
    app = gate(allowed_hosts=hosts)
    assert call(app, "POST", "/api/user", {"Origin": "http://192.168.7.7:8317"}).status_code == 200
    assert call(app, "POST", "/api/user", {"Origin": "http://amp.lan:8317"}).status_code == 200
    assert call(app, "POST", "/api/user", {"Origin": "http://192.168.7.8:8317"}).status_code == 403


@pytest.mark.parametrize(
    "path", ["/actors/gateway/threadActor/websocket/", "/api/threads/live", "/auth/socket", "/threads/T-1"]
)
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.test"},
        {"Origin": "null"},
        {"Origin": "http://localhost:8317", "Sec-Fetch-Site": "cross-site"},
        {**NAVIGATION, "Origin": "http://evil.test"},
    ],
)
def test_cross_site_websocket_handshake_gets_403(path, headers):
    sent = websocket(gate(), path, headers)
    assert sent[0] == {"type": "websocket.http.response.start", "status": 403, "headers": sent[0]["headers"]}
    assert b'"cross_site_request"' in sent[1]["body"]


def test_websocket_without_origin_or_from_our_origin_passes():
    assert websocket(gate(), "/actors/gateway/x", {}) == [{"type": "websocket.accept"}]
    assert websocket(gate(), "/actors/gateway/x", {"Origin": "http://127.0.0.1:8317"}) == [
        {"type": "websocket.accept"}
    ]


@pytest.mark.parametrize("origin", ["evil.test", "https://", "https://a b", "https://x.com/path?q", "*"])
def test_bad_allowed_origin_fails_at_construction(origin):
    with pytest.raises(ValueError, match="allowed-origins entry"):
        gate(allowed_origins=[origin])


@pytest.mark.parametrize(
    "origin", ["http://localhost:3000", "http://127.0.0.1:8888", "http://[::1]:9000", "http://localhost"]
)
def test_a_page_on_another_local_port_is_cross_site(origin):
    """Another local app's page is another origin; browsers send no Sec-Fetch-Site on WebSocket
    handshakes, so the port of the Origin is what gives it away."""
    assert call(gate(), "POST", "/api/user", {"Origin": origin}).status_code == 403
    sent = websocket(gate(), "/actors/gateway/x", {"Origin": origin})
    assert sent[0]["status"] == 403


def test_an_origin_without_port_matches_a_host_without_port():
    app = gate(allowed_hosts=["amp.example.com"])
    headers = {"Host": "amp.example.com", "Origin": "https://amp.example.com"}
    assert call(app, "POST", "/api/user", headers).status_code == 200
    headers = {"Host": "amp.example.com", "Origin": "https://amp.example.com:8443"}
    assert call(app, "POST", "/api/user", headers).status_code == 403
    headers = {"Host": "amp.example.com:443", "Origin": "https://amp.example.com"}  # default port dropped
    assert call(app, "POST", "/api/user", headers).status_code == 403
