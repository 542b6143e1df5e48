"""TrustedHosts alone: only the names ampbridge is reached at pass, before anything else runs."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from ampbridge.trusted_hosts import HostAllowlist, TrustedHosts, interface_addresses

MISDIRECTED = "misdirected_request"


async def ok_app(scope, receive, send):
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"inner"})


def request(app, headers: list[tuple[bytes, bytes]], peer=("127.0.0.1", 5000)) -> tuple[int, bytes]:
    """One HTTP request with exactly these raw headers (httpx would add its own Host)."""
    sent: list[dict] = []

    async def run() -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/api/user",
            "raw_path": b"/api/user",
            "query_string": b"",
            "headers": headers,
            "client": peer,
        }

        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)

    anyio.run(run)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def get(app, host: str, peer=("127.0.0.1", 5000)) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=peer)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get("/healthz", headers={"Host": host})

    return anyio.run(run)


def websocket(app, host: str) -> list[dict]:
    """A WebSocket handshake on a server that offers the HTTP-response extension."""
    sent: list[dict] = []

    async def run() -> None:
        scope = {
            "type": "websocket",
            "path": "/actors/gateway",
            "raw_path": b"/actors/gateway",
            "query_string": b"",
            "headers": [(b"host", host.encode())],
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


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8317",
        "LocalHost:8317",
        "localhost.:8317",
        "127.0.0.1",
        "127.0.0.1:8317",
        "127.45.6.7:80",
        "[::1]",
        "[::1]:8317",
        "[::ffff:127.0.0.1]:8317",
    ],
)
def test_loopback_names_pass(host):
    response = get(TrustedHosts(ok_app), host)
    assert (response.status_code, response.text) == (200, "inner")


@pytest.mark.parametrize(
    "host",
    [
        "attacker.test",
        "attacker.test:8317",
        "localhost.attacker.test",
        "127.0.0.1.nip.io:8317",
        "192.168.1.20:8317",
        "2130706433:8317",
        "::1",
        "[::1",
        "localhost:99999",
        "localhost:80:80",
        "localhost:abc",
        "",
        "evil.test@localhost",
    ],
)
def test_foreign_or_malformed_host_gets_421_json(host):
    response = get(TrustedHosts(ok_app), host)
    assert response.status_code == 421
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == MISDIRECTED
    assert "allowed-hosts" in response.json()["message"] or host == ""


def test_configured_names_and_suffixes_pass_with_any_port():
    app = TrustedHosts(ok_app, allowed_hosts=["amp.example.com", "*.ts.net", "[fd00::5]", "10.0.0.7"])
    for host in [
        "amp.example.com",
        "AMP.example.com:443",
        "box.tail1.ts.net:8317",
        "[fd00::5]:8317",
        "10.0.0.7:8317",
    ]:
        assert get(app, host).status_code == 200, host
    for host in ["ts.net", "evilts.net", "example.com", "x.amp.example.com", "10.0.0.8"]:
        assert get(app, host).status_code == 421, host


def test_bind_host_is_allowed():
    app = TrustedHosts(ok_app, bind_host="192.168.7.7")
    assert get(app, "192.168.7.7:8317").status_code == 200
    assert get(app, "192.168.7.8:8317").status_code == 421


def test_all_interfaces_allows_the_machines_own_addresses_only_when_asked():
    own = sorted(address for address in interface_addresses() if ":" not in address)
    assert own, "the machine has at least one IPv4 address"
    with_interfaces = TrustedHosts(ok_app, bind_host="0.0.0.0", include_interface_addresses=True)
    without = TrustedHosts(ok_app, bind_host="0.0.0.0")
    for address in own:
        assert get(with_interfaces, f"{address}:8317").status_code == 200
        expected = 200 if address.startswith("127.") else 421
        assert get(without, f"{address}:8317").status_code == expected
    assert get(with_interfaces, "0.0.0.0:8317").status_code == 421
    assert get(with_interfaces, "attacker.test:8317").status_code == 421


def test_interface_addresses_include_ipv6_loopback_when_the_kernel_has_ipv6():
    addresses = interface_addresses()
    assert "127.0.0.1" in addresses
    if Path("/proc/net/if_inet6").read_text().strip():
        assert "::1" in addresses


def test_no_host_header_passes_only_from_a_loopback_peer():
    assert request(TrustedHosts(ok_app), [], peer=("127.0.0.1", 5000)) == (200, b"inner")
    status, body = request(TrustedHosts(ok_app), [], peer=("192.0.2.7", 5000))
    assert status == 421 and b'"misdirected_request"' in body
    status, _ = request(TrustedHosts(ok_app), [], peer=None)
    assert status == 421


def test_two_host_headers_are_refused_even_when_one_is_ours():
    headers = [(b"host", b"localhost:8317"), (b"host", b"attacker.test")]
    status, body = request(TrustedHosts(ok_app), headers)
    assert status == 421 and b"exactly one Host" in body


def test_websocket_handshake_with_foreign_host_gets_421_response():
    sent = websocket(TrustedHosts(ok_app), "attacker.test:8317")
    assert [m["type"] for m in sent] == ["websocket.http.response.start", "websocket.http.response.body"]
    assert sent[0]["status"] == 421
    assert b'"misdirected_request"' in sent[1]["body"]
    assert websocket(TrustedHosts(ok_app), "localhost:8317") == [{"type": "websocket.accept"}]


def test_lifespan_passes_through():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    anyio.run(TrustedHosts(app), {"type": "lifespan"}, None, None)
    assert seen == ["lifespan"]


@pytest.mark.parametrize(
    "entry",
    [
        "*",
        "*.",
        "https://amp.example.com",
        "amp.example.com:8317",
        "amp.example.com/x",
        "",
        "a..b",
        "exa mple.com",
        "*.*.com",
    ],
)
def test_bad_allowed_hosts_entry_fails_at_construction_naming_it(entry):
    with pytest.raises(ValueError, match="allowed-hosts entry") as error:
        HostAllowlist([entry])
    assert repr(entry) in str(error.value)
