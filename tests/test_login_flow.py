"""``amp login`` through ampbridge (SPEC §17), with the test playing the CLI's part: it opens the
login URL the way a browser navigates, serves the loopback callback, and writes Amp's secrets file
the way the CLI does (``apiKey@<AMP_URL exactly as given>``, here ampbridge's own URL). The fake
upstream's login site behaves like a real one: its page loads an asset from another root path, and
its form refuses a POST whose ``Origin`` is not its own."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from ampbridge.cli import server_options
from ampbridge.secrets import amp_secrets_path
from ampbridge.settings import Settings
from ampbridge.standalone import create_app

from .conftest import ANTHROPIC_KEY, provider_settings
from .servers import Recorded, RecordingServer, ServerThread, respond
from .test_actor_routing_token import serve_on

ASSET_PATH = "/_app/immutable/x.js"
ASSET = b"console.log('amp login page');\n"
NAVIGATE = {"sec-fetch-mode": "navigate", "sec-fetch-dest": "document", "user-agent": "Mozilla/5.0 (X11)"}
CREDENTIALS = ("authorization", "x-api-key")


class LoginSite(RecordingServer):
    """The upstream's login pages and one control-plane RPC that needs a key it issued."""

    def __init__(self) -> None:
        super().__init__("fake-amp-login")
        self.issued: list[str] = []
        self.origin = ""
        self.route(lambda m, p: True, self._anything)
        self.route(lambda m, p: m == "GET" and p == "/auth/cli-login", self._page)
        self.route(lambda m, p: m == "GET" and p == ASSET_PATH, self._asset)
        self.route(lambda m, p: m == "POST" and p == "/auth/cli-login/submit", self._submit)
        self.route(lambda m, p: p == "/api/internal", self._user_info)
        self.freeze()

    def reset(self) -> None:
        super().reset()
        self.issued.clear()

    async def _anything(self, scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        await respond(send, 200, json.dumps({"upstream": True, "path": rec.path}).encode())

    async def _page(self, scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        query = parse_qs(rec.query.decode())
        page = (
            f'<!doctype html><html><head><script type="module" src="{ASSET_PATH}"></script></head><body>'
            f'<form method="post" action="/auth/cli-login/submit">'
            f'<input type="hidden" name="authToken" value="{query["authToken"][0]}">'
            f'<input type="hidden" name="callbackPort" value="{query["callbackPort"][0]}">'
            f"<button>Log in</button></form></body></html>"
        ).encode()
        host = urlsplit(self.origin).hostname or ""
        cookie = f"amp_session=s1; Path=/; Domain={host}; HttpOnly".encode()
        await respond(send, 200, page, "text/html; charset=utf-8", headers=[(b"set-cookie", cookie)])

    async def _asset(self, scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        await respond(send, 200, ASSET, "text/javascript")

    async def _submit(self, scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        if rec.header("origin") != self.origin:  # the site's CSRF check
            await respond(send, 403, b'{"error":"cross-origin form post"}')
            return
        form = parse_qs(rec.body.decode())
        key = "sgamp_user_" + secrets.token_hex(12)
        self.issued.append(key)
        callback = (
            f"http://127.0.0.1:{form['callbackPort'][0]}/auth/callback"
            f"?authToken={form['authToken'][0]}&accessToken={key}"
        )
        await respond(send, 302, b"", "text/plain", headers=[(b"location", callback.encode())])

    async def _user_info(self, scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        bearer = (rec.header("authorization") or "").removeprefix("Bearer ")
        if bearer not in self.issued:
            await respond(send, 401, b'{"error":"unauthorized"}')
            return
        await respond(send, 200, json.dumps({"ok": True, "result": {"user": "u1"}}).encode())


class CliCallback:
    """The CLI's loopback listener for ``GET /auth/callback``."""

    def __init__(self) -> None:
        self.received: list[dict[str, list[str]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/auth/callback":
            self.received.append(parse_qs(scope["query_string"].decode()))
            await respond(send, 200, b"<p>You are logged in. Return to your terminal.</p>", "text/html")
        else:
            await respond(send, 404, b"not found", "text/plain")


@pytest.fixture(scope="module")
def site_server() -> Iterator[LoginSite]:
    site = LoginSite()
    with ServerThread(site) as thread:
        site.url = thread.url  # type: ignore[attr-defined]
        site.origin = thread.url
        yield site


@pytest.fixture
def site(site_server: LoginSite) -> LoginSite:
    site_server.reset()
    return site_server


@pytest.fixture
def callback() -> Iterator[tuple[CliCallback, int]]:
    listener = CliCallback()
    with ServerThread(listener) as thread:
        yield listener, thread.port


@contextmanager
def ampbridge_at_its_port(**settings: Any) -> Iterator[str]:
    """ampbridge serving on the port its settings name, as ``ampbridge serve`` does (the URLs
    it is reached at are derived from that port). Yields the ``AMP_URL`` a user would set."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    chosen = Settings(port=sock.getsockname()[1], **settings)
    app = create_app(settings=chosen, environ={}, configure_logs=False)
    with serve_on(app, sock, **server_options(chosen)):
        yield f"http://localhost:{chosen.port}"


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def browser_login(amp_url: str, callback_port: int, auth_token: str) -> dict[str, Any]:
    """What a browser does with the URL the CLI opens: navigate, load the page's script, submit
    the form, follow the redirects to the CLI's callback."""
    seen: dict[str, Any] = {}
    with httpx.Client(follow_redirects=True) as browser:
        page = browser.get(
            f"{amp_url}/auth/cli-login",
            params={"authToken": auth_token, "callbackPort": str(callback_port)},
            headers={**NAVIGATE, "sec-fetch-site": "none"},
        )
        seen["page"] = page
        script = re.search(r'<script[^>]* src="([^"]+)"', page.text)
        form = re.search(r'<form method="post" action="([^"]+)"', page.text)
        assert script and form, page.text
        page_url = str(page.url)
        seen["asset"] = browser.get(
            urljoin(page_url, script.group(1)),
            headers={
                "sec-fetch-mode": "cors",
                "sec-fetch-dest": "script",
                "sec-fetch-site": "same-origin",
                "referer": page_url,
                "origin": origin(page_url),
            },
        )
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
        seen["done"] = browser.post(
            urljoin(page_url, form.group(1)),
            data=fields,
            headers={
                **NAVIGATE,
                "sec-fetch-site": "same-origin",
                "origin": origin(page_url),
                "referer": page_url,
            },
        )
    return seen


def cli_stores_key(amp_url: str, callback: CliCallback, auth_token: str) -> str:
    """The CLI checks the callback's authToken and files the key under AMP_URL exactly as given."""
    (query,) = callback.received
    assert query["authToken"] == [auth_token]
    key = query["accessToken"][0]
    path = amp_secrets_path(os.environ)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({f"apiKey@{amp_url}": key}, indent=2))
    return key


def user_info(amp_url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{amp_url}/api/internal?getUserInfo", json={"method": "getUserInfo"}, headers=headers)


def test_default_mode_redirects_the_browser_and_the_login_completes_on_the_upstream(site, callback):
    listener, port = callback
    token = secrets.token_hex(16)
    with ampbridge_at_its_port(amp_upstream_url=site.url) as amp_url:
        before = user_info(amp_url)  # like the native CLI's oauth-config check: no key yet
        seen = browser_login(amp_url, port, token)
        key = cli_stores_key(amp_url, listener, token)
        after = user_info(amp_url)
    # ampbridge only sent the browser on to the upstream's own site, same path and query.
    (hop, *rest) = seen["page"].history
    assert rest == [] and hop.status_code == 302
    assert hop.headers["location"] == f"{site.url}/auth/cli-login?authToken={token}&callbackPort={port}"
    assert str(hop.request.url).startswith(amp_url)
    assert origin(str(seen["page"].url)) == site.url and seen["page"].status_code == 200
    assert (seen["asset"].status_code, seen["asset"].content) == (200, ASSET)
    assert seen["done"].status_code == 200 and str(seen["done"].url).startswith(f"http://127.0.0.1:{port}/")
    assert site.issued == [key]
    # Nothing of the browser's passed through ampbridge: the upstream saw only the browser.
    browser_paths = [r.path for r in site.requests if not r.path.startswith("/api/")]
    assert browser_paths == ["/auth/cli-login", ASSET_PATH, "/auth/cli-login/submit"]
    # The key from that login is used by the very next request, no key configured, no restart.
    assert (before.status_code, after.status_code) == (401, 200)
    first, last = [r for r in site.requests if r.path == "/api/internal"]
    assert first.header("authorization") is None
    assert (last.header("authorization"), last.header("x-api-key")) == (f"Bearer {key}", key)


def test_proxy_mode_completes_through_ampbridge_with_assets_origin_rewritten_and_no_amp_key(site, callback):
    listener, port = callback
    token = secrets.token_hex(16)
    with ampbridge_at_its_port(amp_upstream_url=site.url, browser_routes="proxy") as amp_url:
        seen = browser_login(amp_url, port, token)
        key = cli_stores_key(amp_url, listener, token)
        after = user_info(amp_url)
        # Now ampbridge has an Amp key (from the secrets file); browser routes still never get it.
        again = httpx.get(f"{amp_url}{ASSET_PATH}", headers={"sec-fetch-site": "same-origin"})
        settings_page = httpx.get(f"{amp_url}/settings", headers={**NAVIGATE, "sec-fetch-site": "none"})
    page = seen["page"]
    assert page.history == [] and page.status_code == 200 and str(page.url).startswith(amp_url)
    assert "domain=" not in page.headers["set-cookie"].lower()  # the cookie now belongs to ampbridge
    assert (seen["asset"].status_code, seen["asset"].content) == (200, ASSET)
    assert str(seen["asset"].url) == amp_url + ASSET_PATH
    (hop,) = seen["done"].history  # the upstream's redirect to the CLI's callback, untouched
    assert str(hop.url) == amp_url + "/auth/cli-login/submit"
    assert hop.headers["location"].startswith(f"http://127.0.0.1:{port}/auth/callback?")
    assert seen["done"].status_code == 200
    (submitted,) = [r for r in site.requests if r.path == "/auth/cli-login/submit"]
    assert submitted.header("origin") == site.url  # ampbridge's origin rewritten to the upstream's
    assert submitted.header("referer") == f"{site.url}/auth/cli-login?authToken={token}&callbackPort={port}"
    browser_requests = [r for r in site.requests if not r.path.startswith("/api/")]
    assert [r.path for r in browser_requests] == [
        "/auth/cli-login",
        ASSET_PATH,
        "/auth/cli-login/submit",
        ASSET_PATH,
        "/settings",
    ]
    for request in browser_requests:
        assert not [name for name in CREDENTIALS if request.header(name) is not None], request.path
    assert (again.status_code, settings_page.status_code) == (200, 200)
    assert after.status_code == 200
    (used,) = [r for r in site.requests if r.path == "/api/internal"]
    assert used.header("authorization") == f"Bearer {key}"


def test_with_only_the_clis_own_key_it_goes_upstream_but_never_to_a_local_backend(upstream, backends, bridge):
    cli_key = "sgamp_user_cli_own_key_0123"
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    own = {"Authorization": f"Bearer {cli_key}"}
    control = httpx.post(ampbridge.url + "/api/internal?getUserInfo", json={}, headers=own)
    actors = httpx.post(ampbridge.url + "/actors/gateway/threadActor/request/import", json={}, headers=own)
    model = httpx.post(
        ampbridge.url + "/api/provider/anthropic/v1/messages",
        json={
            "model": "claude-haiku-4-5-20251001",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={**own, "anthropic-version": "2023-06-01"},
    )
    assert (control.status_code, actors.status_code, model.status_code) == (200, 200, 200)
    assert [(r.path, r.header("authorization")) for r in upstream.requests] == [
        ("/api/internal", f"Bearer {cli_key}"),
        ("/actors/gateway/threadActor/request/import", f"Bearer {cli_key}"),
    ]
    (served,) = backends["anthropic"].requests
    assert served.header("x-api-key") == ANTHROPIC_KEY
    assert cli_key not in str(served.headers)
