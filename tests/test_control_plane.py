"""The control-plane proxy over real HTTP: everything Amp sends outside /api/provider/ reaches
the Amp upstream intact, behind the gates, with the client's credentials replaced."""

from __future__ import annotations

import gzip
import json
import resource
import socket
import threading

import anyio
import httpx
import pytest
from starlette.types import Receive, Scope, Send

from ampbridge.settings import Settings

from .servers import Recorded, RecordingServer, respond, stream_until_disconnect

UPSTREAM_KEY = "upstream-key-1111"
CLIENT_KEY = "fake-amp-key-0000"  # what the captured Amp CLI sent


def captured_requests(fixtures_dir, session: str) -> list[dict]:
    lines = (fixtures_dir / session / "requests.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def replay_headers(request: dict) -> dict[str, str]:
    return {
        k: v
        for k, v in request["headers"].items()
        if k.lower() not in ("host", "content-length", "connection")
    }


@pytest.mark.parametrize("session", ["smart-lookat", "deep"])
def test_captured_control_plane_requests_reach_upstream_intact(fixtures_dir, session, upstream, bridge):
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url, amp_upstream_api_key=UPSTREAM_KEY))
    requests = [
        r for r in captured_requests(fixtures_dir, session) if not r["path"].startswith("/api/provider/")
    ]
    assert requests, "the capture has control-plane calls"
    with httpx.Client(base_url=ampbridge.url) as client:
        for request in requests:
            body = (fixtures_dir / session / request["body_file"]).read_bytes()
            target = request["path"] + (f"?{request['query']}" if request["query"] else "")
            response = client.request(
                request["method"], target, headers=replay_headers(request), content=body
            )
            assert response.status_code == 200
            rpc = request["query"].split("&")[0]
            expected = (fixtures_dir / "responses" / "internal" / f"{rpc}.json").read_bytes()
            assert response.content == expected
    assert len(upstream.requests) == len(requests)
    for sent, received in zip(requests, upstream.requests, strict=True):
        assert (received.method, received.path, received.query.decode()) == (
            sent["method"],
            sent["path"],
            sent["query"],
        )
        assert received.body == (fixtures_dir / session / sent["body_file"]).read_bytes()
        assert received.header("authorization") == f"Bearer {UPSTREAM_KEY}"
        assert received.header("x-api-key") == UPSTREAM_KEY
        assert received.header("x-amp-client-application") == sent["headers"]["X-Amp-Client-Application"]
        assert CLIENT_KEY not in json.dumps(received.headers)


def test_healthz_answers_without_touching_the_upstream(upstream, bridge):
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url))
    response = httpx.get(f"{ampbridge.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert upstream.requests == []


def test_no_upstream_gives_503(bridge):
    ampbridge = bridge(Settings(amp_upstream_url=""))
    for method, path in [
        ("POST", "/api/internal?getUserInfo"),
        ("GET", "/api/user"),
        ("GET", "/threads/T-1"),
    ]:
        response = httpx.request(method, f"{ampbridge.url}{path}")
        assert response.status_code == 503
        assert response.json() == {"error": "amp upstream proxy not available"}


def test_options_is_refused_without_cors_headers(upstream, bridge):
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url))
    response = httpx.options(
        f"{ampbridge.url}/api/user",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 403
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    assert upstream.requests == []


def test_cors_grants_from_the_upstream_are_stripped(upstream, bridge):
    async def grants(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        await respond(
            send,
            200,
            b"{}",
            headers=[
                (b"access-control-allow-origin", b"*"),
                (b"access-control-allow-credentials", b"true"),
                (b"x-kept", b"1"),
            ],
        )

    upstream.route(lambda m, p: p == "/api/meta", grants)
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url))
    response = httpx.get(f"{ampbridge.url}/api/meta", headers={"Origin": ampbridge.url})  # same-origin
    assert response.status_code == 200
    assert response.headers["x-kept"] == "1"
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]


def test_headers_are_scrubbed_and_host_is_the_upstreams(upstream, bridge):
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url, amp_upstream_api_key=UPSTREAM_KEY))
    httpx.post(
        f"{ampbridge.url}/api/threads/T-1?x=1",
        headers={
            "Authorization": "Bearer client-secret",
            "X-Api-Key": "client-secret",
            "X-Goog-Api-Key": "client-secret",
            "X-Forwarded-For": "10.0.0.1",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=10.0.0.1",
            "X-Real-IP": "10.0.0.1",
            "Via": "1.1 somewhere",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "drop me",
            "Keep-Alive": "timeout=5",
            "Accept-Encoding": "br",
            "Cookie": "session=abc",
            "X-Amp-Thread-Id": "T-1",
            "Proxy-Authorization": "Basic abc",
        },
        content=b"{}",
    )
    (received,) = upstream.requests
    names = {k.lower() for k, _ in received.headers}
    for gone in (
        "x-forwarded-for",
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
        "via",
        "x-hop",
        "keep-alive",
        "x-goog-api-key",
        "proxy-authorization",
    ):
        assert gone not in names
    assert received.header("authorization") == f"Bearer {UPSTREAM_KEY}"
    assert received.header("x-api-key") == UPSTREAM_KEY
    assert received.header("host") == upstream.url.removeprefix("http://")
    assert received.header("accept-encoding") == "identity"  # the client cannot read gzip
    assert received.header("cookie") == "session=abc"
    assert received.header("x-amp-thread-id") == "T-1"
    assert received.query == b"x=1"
    assert "client-secret" not in json.dumps(received.headers)


def test_redirects_and_cookies_pass_through_untouched(upstream, bridge):
    async def redirect(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        await respond(
            send,
            302,
            b"",
            headers=[
                (b"location", b"https://ampcode.com/auth/done?x=1"),
                (b"set-cookie", b"a=1; Path=/; HttpOnly"),
                (b"set-cookie", b"b=2"),
            ],
        )

    upstream.route(lambda m, p: p == "/auth/sign-in", redirect)
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url, browser_routes="proxy"))
    response = httpx.get(f"{ampbridge.url}/auth/sign-in", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == "https://ampcode.com/auth/done?x=1"
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/; HttpOnly", "b=2"]


BROWSER_ROUTES = [
    ("GET", "/auth"),
    ("POST", "/auth/callback"),
    ("GET", "/threads"),
    ("GET", "/threads/T-123"),
    ("GET", "/threads.rss"),
    ("GET", "/news.rss"),
    ("GET", "/docs"),
    ("GET", "/docs/guide"),
    ("GET", "/settings"),
    ("GET", "/settings/keys"),
]


@pytest.mark.parametrize(
    ("method", "path", "forwarded"),
    [
        ("POST", "/actors/gateway/x", True),
        ("DELETE", "/api/threads/T-1", True),
        ("PUT", "/api/durable-thread-workers/1", True),
        ("POST", "/threads", False),
        ("GET", "/elsewhere", False),
    ],
)
def test_api_and_actor_routes_are_forwarded(upstream, bridge, method, path, forwarded):
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url))
    response = httpx.request(method, f"{ampbridge.url}{path}")
    if forwarded:
        assert response.status_code == 200
        assert response.json() == {"upstream": True, "path": path}
        assert [r.path for r in upstream.requests] == [path]
    else:
        assert response.status_code == 404
        assert upstream.requests == []


@pytest.mark.parametrize(("method", "path"), BROWSER_ROUTES)
def test_browser_routes_redirect_to_the_upstreams_own_site(upstream, bridge, method, path):
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url, amp_upstream_api_key=UPSTREAM_KEY))
    response = httpx.request(method, f"{ampbridge.url}{path}?authToken=abc&callbackPort=1234")
    assert response.status_code == (302 if method == "GET" else 307)
    assert response.headers["location"] == f"{upstream.url}{path}?authToken=abc&callbackPort=1234"
    assert upstream.requests == []  # nothing of the browser's passes through ampbridge


@pytest.mark.parametrize(("method", "path"), BROWSER_ROUTES)
def test_browser_routes_in_proxy_mode_are_forwarded_without_the_amp_key(upstream, bridge, method, path):
    settings = Settings(
        amp_upstream_url=upstream.url, amp_upstream_api_key=UPSTREAM_KEY, browser_routes="proxy"
    )
    ampbridge = bridge(settings)
    response = httpx.request(method, f"{ampbridge.url}{path}", headers={"Cookie": "session=1"})
    assert response.status_code == 200
    assert response.json() == {"upstream": True, "path": path}
    (received,) = upstream.requests
    assert received.header("authorization") is None and received.header("x-api-key") is None
    assert received.header("cookie") == "session=1"


def test_large_request_bodies_stream_through_intact(upstream, bridge):
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url))
    body = bytes(range(256)) * (20 * 1024)  # 5 MiB

    def chunks():
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    response = httpx.post(f"{ampbridge.url}/api/internal?uploadThread", content=chunks(), timeout=30)
    assert response.status_code == 200
    assert upstream.requests[0].body == body


def test_oversized_bodies_get_413_and_never_reach_the_upstream(upstream, bridge):
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url, max_body_size=1024))
    declared = httpx.post(f"{ampbridge.url}/api/internal?uploadThread", content=b"x" * 2048)
    assert declared.status_code == 413
    assert declared.json()["error"] == "request_too_large"
    streamed = httpx.post(
        f"{ampbridge.url}/api/internal?uploadThread", content=iter([b"x" * 800, b"x" * 800])
    )
    assert streamed.status_code == 413
    assert all(len(r.body) <= 1024 for r in upstream.requests)


def test_gzip_body_without_content_encoding_arrives_decoded_with_its_length(upstream, bridge):
    document = json.dumps({"ok": True, "result": {"items": list(range(500))}}).encode()

    async def sneaky_gzip(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        await respond(send, 200, gzip.compress(document))

    upstream.route(lambda m, p: p == "/api/internal", sneaky_gzip)
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url))
    response = httpx.post(f"{ampbridge.url}/api/internal?getThread", content=b"{}")
    assert response.status_code == 200
    assert response.content == document
    assert response.headers["content-length"] == str(len(document))
    assert "content-encoding" not in response.headers


def test_a_gzip_bomb_is_cut_off_with_bounded_memory(upstream, bridge):
    bomb = gzip.compress(b"\0" * (128 * 1024 * 1024), compresslevel=9)  # 128 MiB decoded, ~130 KiB sent

    async def send_bomb(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        await respond(send, 200, bomb)

    upstream.route(lambda m, p: p == "/api/internal", send_bomb)
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url, max_body_size=1024 * 1024))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    response = httpx.post(f"{ampbridge.url}/api/internal?getThread", content=b"{}")
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert response.status_code == 502
    assert response.json() == {
        "error": "amp_upstream_proxy_error",
        "message": "Upstream response exceeds the decoded size limit",
    }
    assert grown < 32 * 1024 * 1024  # nowhere near the 128 MiB the bomb decodes to
    assert httpx.get(f"{ampbridge.url}/healthz").status_code == 200


def test_sse_from_the_upstream_reaches_the_client_event_by_event(upstream, bridge):
    gate = threading.Event()

    async def events(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
        await anyio.to_thread.run_sync(gate.wait, 10)
        await send({"type": "http.response.body", "body": b"data: second\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    upstream.route(lambda m, p: p == "/api/events", events)
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url))
    with httpx.stream("GET", f"{ampbridge.url}/api/events", headers={"Accept-Encoding": "gzip"}) as response:
        lines = response.iter_lines()
        assert next(lines) == "data: first"  # arrives while the upstream still holds the rest
        gate.set()
        assert [line for line in lines if line] == ["data: second"]
    assert response.headers["content-type"] == "text/event-stream"


def test_unreachable_upstream_gives_the_spec_502(bridge):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    ampbridge = bridge(Settings(amp_upstream_url=f"http://127.0.0.1:{port}"))
    response = httpx.post(f"{ampbridge.url}/api/internal?getUserInfo", content=b"{}")
    assert response.status_code == 502
    assert response.json() == {"error": "amp_upstream_proxy_error", "message": "Failed to reach Amp upstream"}


def test_client_disconnect_closes_the_upstream_request(upstream, bridge):
    upstream_saw_disconnect = threading.Event()

    upstream.route(
        lambda m, p: p == "/api/endless", stream_until_disconnect(b"data: tick\n\n", upstream_saw_disconnect)
    )
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url))
    with httpx.stream("GET", f"{ampbridge.url}/api/endless") as response:
        assert next(response.iter_lines()) == "data: tick"
    assert upstream_saw_disconnect.wait(5), "the upstream request stayed open after the client left"
    assert httpx.get(f"{ampbridge.url}/healthz").status_code == 200


class TestUpstreamKey:
    """Config > AMP_API_KEY > Amp's secrets file; the ampcode.com entry never goes elsewhere."""

    def sent_key(
        self, upstream: RecordingServer, bridge, settings: Settings, environ: dict[str, str] | None = None
    ) -> str | None:
        ampbridge = bridge(settings, environ)
        assert httpx.post(f"{ampbridge.url}/api/internal?getUserInfo", content=b"{}").status_code == 200
        received = upstream.requests[-1]
        if received.header("authorization") is not None:
            assert received.header("x-api-key") == received.header("authorization").removeprefix("Bearer ")
        return received.header("x-api-key")

    def write_secrets(self, monkeypatch, tmp_path, content: str) -> None:
        (tmp_path / "data" / "amp").mkdir(parents=True)
        (tmp_path / "data" / "amp" / "secrets.json").write_text(content)
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))

    def test_configured_key_wins(self, upstream, bridge, monkeypatch, tmp_path):
        self.write_secrets(monkeypatch, tmp_path, json.dumps({f"apiKey@{upstream.url}/": "from-file"}))
        settings = Settings(amp_upstream_url=upstream.url, amp_upstream_api_key="from-config")
        assert self.sent_key(upstream, bridge, settings, {"AMP_API_KEY": "from-env"}) == "from-config"

    def test_a_blank_environment_key_falls_through_to_the_secrets_file(
        self, upstream, bridge, monkeypatch, tmp_path
    ):
        self.write_secrets(monkeypatch, tmp_path, json.dumps({f"apiKey@{upstream.url}/": "from-file"}))
        settings = Settings(amp_upstream_url=upstream.url)
        assert self.sent_key(upstream, bridge, settings, {"AMP_API_KEY": "   "}) == "from-file"

    def test_keys_are_trimmed_and_empty_entries_ignored(self, upstream, bridge):
        settings = Settings(
            amp_upstream_url=upstream.url, amp_upstream_api_key="  from-config  ", api_keys=["", " k1 "]
        )
        ampbridge = bridge(settings)
        response = httpx.post(
            f"{ampbridge.url}/api/internal?getUserInfo", content=b"{}", headers={"Authorization": "Bearer k1"}
        )
        assert response.status_code == 200
        assert upstream.requests[-1].header("x-api-key") == "from-config"

    def test_environment_comes_next(self, upstream, bridge, monkeypatch, tmp_path):
        self.write_secrets(monkeypatch, tmp_path, json.dumps({f"apiKey@{upstream.url}/": "from-file"}))
        settings = Settings(amp_upstream_url=upstream.url)
        assert self.sent_key(upstream, bridge, settings, {"AMP_API_KEY": "from-env"}) == "from-env"

    def test_secrets_file_entry_for_this_upstream_comes_last(self, upstream, bridge, monkeypatch, tmp_path):
        self.write_secrets(
            monkeypatch,
            tmp_path,
            json.dumps(
                {
                    "apiKey@https://ampcode.com/": "ampcode-key",
                    f"apiKey@{upstream.url}/": "from-file",
                }
            ),
        )
        settings = Settings(amp_upstream_url=upstream.url + "/")
        assert self.sent_key(upstream, bridge, settings) == "from-file"

    def test_ampcode_entry_is_never_sent_to_another_host(self, upstream, bridge, monkeypatch, tmp_path):
        self.write_secrets(monkeypatch, tmp_path, json.dumps({"apiKey@https://ampcode.com/": "ampcode-key"}))
        assert self.sent_key(upstream, bridge, Settings(amp_upstream_url=upstream.url)) is None
        assert "ampcode-key" not in json.dumps(upstream.requests[-1].headers)

    def test_malformed_secrets_file_is_not_fatal(self, upstream, bridge, monkeypatch, tmp_path):
        self.write_secrets(monkeypatch, tmp_path, "{not json")
        assert self.sent_key(upstream, bridge, Settings(amp_upstream_url=upstream.url)) is None

    def test_without_any_amp_key_the_clients_own_key_passes_through(self, upstream, bridge):
        ampbridge = bridge(Settings(amp_upstream_url=upstream.url))
        httpx.post(
            f"{ampbridge.url}/api/internal?getUserInfo",
            headers={"Authorization": "Bearer amp-key-of-the-cli", "X-Api-Key": "amp-key-of-the-cli"},
            content=b"{}",
        )
        assert upstream.requests[-1].header("authorization") == "Bearer amp-key-of-the-cli"
        assert upstream.requests[-1].header("x-api-key") == "amp-key-of-the-cli"

    def test_with_client_keys_and_no_amp_key_nothing_is_forwarded_as_a_key(self, upstream, bridge):
        ampbridge = bridge(Settings(amp_upstream_url=upstream.url, api_keys=["client"]))
        httpx.post(
            f"{ampbridge.url}/api/internal?getUserInfo",
            headers={"Authorization": "Bearer client"},
            content=b"{}",
        )
        assert upstream.requests[-1].header("authorization") is None
        assert upstream.requests[-1].header("x-api-key") is None
