"""Outbound proxies: the environment's HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY are honoured
as httpx honours them, and a proxy-url setting overrides them (``direct``/``none``: no proxy)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import anyio
import httpx
import pytest
import trustme

from ampbridge.http_client import SharedClient, check_proxy_url, environment_routes

from .conftest import provider_settings
from .loopback_proxy import LoopbackProxy
from .servers import RecordingServer, ServerThread, amp_upstream


@pytest.fixture
def proxy() -> Iterator[LoopbackProxy]:
    with LoopbackProxy() as running:
        yield running


def get(shared: SharedClient, url: str, proxy_url: str | None = None) -> int:
    async def run() -> int:
        async with shared:
            return (await shared.client_for(proxy_url).get(url)).status_code

    return anyio.run(run)


# --- reading the environment ------------------------------------------------------------------


def test_environment_routes_read_like_httpx():
    routes = environment_routes(
        {
            "HTTP_PROXY": "http://upper:1",
            "http_proxy": "http://lower:2",
            "HTTPS_PROXY": "proxy.corp:3128",
            "ALL_PROXY": "socks5://all:1080",
            "NO_PROXY": "localhost, 10.1.2.3,::1,.internal.example,api.example.com",
            "PATH": "/usr/bin",
        }
    )
    assert routes == {
        "http://": "http://lower:2",  # the lowercase variable wins
        "https://": "http://proxy.corp:3128",  # a bare host:port is an http proxy
        "all://": "socks5://all:1080",
        "all://localhost": None,
        "all://10.1.2.3": None,
        "all://[::1]": None,
        "all://*.internal.example": None,
        "all://*api.example.com": None,
    }


def test_no_proxy_star_turns_every_proxy_off():
    assert environment_routes({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}) == {}


def test_http_proxy_is_ignored_in_a_cgi_environment():
    assert environment_routes({"HTTP_PROXY": "http://p:1", "REQUEST_METHOD": "GET"}) == {}


@pytest.mark.parametrize(
    ("value", "route"),
    [("", ""), ("direct", "direct"), (" None ", "direct"), ("socks5://u:p@h:1080", "socks5://u:p@h:1080")],
)
def test_proxy_url_values(value, route):
    assert check_proxy_url(value) == route


@pytest.mark.parametrize("value", ["ftp://user:hunter2@proxy:21", "proxy.corp:3128", "http://"])
def test_a_bad_proxy_url_is_refused_without_showing_it(value):
    with pytest.raises(ValueError, match="proxy-url must be") as raised:
        SharedClient(proxy_url=value)
    assert "hunter2" not in str(raised.value)


def test_a_socks_proxy_url_has_what_it_needs():
    async def run() -> None:
        async with SharedClient(proxy_url="socks5://user:pass@127.0.0.1:1080") as shared:
            assert isinstance(shared.client, httpx.AsyncClient)  # socksio is installed with httpx[socks]

    anyio.run(run)


# --- where traffic goes ---------------------------------------------------------------------------


def test_http_proxy_from_the_environment_carries_http_traffic(upstream, proxy):
    shared = SharedClient(environ={"HTTP_PROXY": proxy.url})
    assert get(shared, f"{upstream.url}/api/user") == 200
    assert proxy.targets() == [f"{upstream.url}/api/user"]
    assert [r.path for r in upstream.requests] == ["/api/user"]


def test_no_proxy_matching_the_target_goes_direct(upstream, proxy):
    shared = SharedClient(environ={"HTTP_PROXY": proxy.url, "no_proxy": "example.org,127.0.0.1"})
    assert get(shared, f"{upstream.url}/api/user") == 200
    assert proxy.targets() == []
    assert len(upstream.requests) == 1


def test_no_proxy_that_does_not_match_leaves_the_proxy_in_place(upstream, proxy):
    shared = SharedClient(environ={"ALL_PROXY": proxy.url, "NO_PROXY": "localhost,example.org"})
    assert get(shared, f"{upstream.url}/api/user") == 200
    assert proxy.targets() == [f"{upstream.url}/api/user"]


def test_https_proxy_does_not_carry_plain_http(upstream, proxy):
    shared = SharedClient(environ={"HTTPS_PROXY": proxy.url})
    assert get(shared, f"{upstream.url}/api/user") == 200
    assert proxy.targets() == []


def test_direct_ignores_the_environment(upstream, proxy):
    shared = SharedClient(environ={"HTTP_PROXY": proxy.url, "ALL_PROXY": proxy.url}, proxy_url="direct")
    assert get(shared, f"{upstream.url}/api/user") == 200
    assert proxy.targets() == []


def test_a_global_proxy_url_overrides_the_environment(upstream, proxy):
    with LoopbackProxy() as other:
        shared = SharedClient(environ={"HTTP_PROXY": other.url}, proxy_url=proxy.url)
        assert get(shared, f"{upstream.url}/api/user") == 200
        assert proxy.targets() == [f"{upstream.url}/api/user"]
        assert other.targets() == []


def test_a_provider_proxy_url_overrides_the_global_one(upstream, proxy):
    with LoopbackProxy() as provider_proxy:
        user = provider_proxy.url.replace("http://", "http://alice:s3cret@")
        shared = SharedClient(proxy_url=proxy.url)

        async def run() -> None:
            async with shared:
                await shared.client_for(user).get(f"{upstream.url}/provider")
                await shared.client_for("none").get(f"{upstream.url}/direct")
                await shared.client_for("").get(f"{upstream.url}/default")
                assert shared.client_for(user) is shared.client_for(user)  # one client per proxy

        anyio.run(run)
        assert provider_proxy.targets() == [f"{upstream.url}/provider"]
        assert provider_proxy.passed[0].proxy_authorization == "Basic YWxpY2U6czNjcmV0"  # alice:s3cret
        assert proxy.targets() == [f"{upstream.url}/default"]
        assert [r.path for r in upstream.requests] == ["/provider", "/direct", "/default"]


def test_clients_close_and_open_again(upstream, proxy):
    shared = SharedClient(environ={"HTTP_PROXY": proxy.url})

    async def run() -> None:
        first = shared.client
        await shared.aclose()
        assert first.is_closed
        assert (await shared.client.get(f"{upstream.url}/again")).status_code == 200
        await shared.aclose()

    anyio.run(run)
    assert proxy.targets() == [f"{upstream.url}/again"]


# --- HTTPS through a CONNECT tunnel --------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory) -> Iterator[tuple[RecordingServer, str, ssl.SSLContext]]:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    folder = tmp_path_factory.mktemp("tls")
    certificate.private_key_pem.write_to_path(folder / "key.pem")
    certificate.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    server = amp_upstream()
    with ServerThread(
        server, ssl_keyfile=str(folder / "key.pem"), ssl_certfile=str(folder / "cert.pem")
    ) as thread:
        yield server, thread.url.replace("http://", "https://"), trusting


def test_https_proxy_tunnels_https_traffic(tls_upstream, proxy):
    server, url, trusting = tls_upstream
    server.reset()
    shared = SharedClient(environ={"https_proxy": proxy.url}, ssl_context=trusting)
    assert get(shared, f"{url}/api/user") == 200
    assert proxy.targets() == [url.removeprefix("https://")]
    assert [p.method for p in proxy.passed] == ["CONNECT"]
    assert [r.path for r in server.requests] == ["/api/user"]


# --- through ampbridge ---------------------------------------------------------------------------


def model_call(ampbridge) -> httpx.Response:
    return httpx.post(
        f"{ampbridge.url}/api/provider/anthropic/v1/messages",
        json={"model": "claude-opus-4-7", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={"anthropic-version": "2023-06-01"},
    )


def test_upstream_and_backend_traffic_go_through_the_environment_proxy(backends, upstream, bridge, proxy):
    settings = provider_settings(backends, amp_upstream_url=upstream.url)
    ampbridge = bridge(settings, client=SharedClient(environ={"HTTP_PROXY": proxy.url}))
    assert httpx.get(f"{ampbridge.url}/api/user").status_code == 200
    assert model_call(ampbridge).status_code == 200
    targets = proxy.targets()
    assert f"{upstream.url}/api/user" in targets
    assert f"{backends['anthropic'].url}/v1/messages" in targets
    assert len(backends["anthropic"].requests) == 1


def test_no_proxy_keeps_ampbridge_traffic_off_the_proxy(backends, upstream, bridge, proxy):
    settings = provider_settings(backends, amp_upstream_url=upstream.url)
    environ = {"HTTP_PROXY": proxy.url, "NO_PROXY": "127.0.0.1"}
    ampbridge = bridge(settings, client=SharedClient(environ=environ))
    assert httpx.get(f"{ampbridge.url}/api/user").status_code == 200
    assert model_call(ampbridge).status_code == 200
    assert proxy.targets() == []
    assert len(backends["anthropic"].requests) == 1
    assert [r.path for r in upstream.requests] == ["/api/user"]
