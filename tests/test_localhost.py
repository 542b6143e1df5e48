"""LocalhostOnly alone: the transport peer decides, never a forwarding header."""

from __future__ import annotations

import anyio
import httpx
import pytest

from ampbridge import LocalhostOnly, is_loopback_peer
from ampbridge.settings import Settings
from ampbridge.standalone import create_app

DENIED = {"error": "Access denied: management routes restricted to localhost"}


async def ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"inner"})


def get(app, peer, headers=None, path="/api/user") -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=peer)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get(path, headers=headers)

    return anyio.run(run)


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_peers_pass(peer):
    response = get(LocalhostOnly(ok_app), (peer, 5000))
    assert (response.status_code, response.text) == (200, "inner")


@pytest.mark.parametrize(
    "peer", ["192.0.2.7", "10.0.0.1", "::ffff:192.0.2.7", "2001:db8::1", "0.0.0.0", "localhost", "not-an-ip"]
)
def test_other_peers_get_403_json(peer):
    response = get(LocalhostOnly(ok_app), (peer, 5000))
    assert response.status_code == 403
    assert response.json() == DENIED


@pytest.mark.parametrize(
    "spoof",
    [
        {"X-Forwarded-For": "127.0.0.1"},
        {"Forwarded": "for=127.0.0.1"},
        {"X-Real-IP": "127.0.0.1"},
        {"X-Forwarded-For": "127.0.0.1", "Host": "localhost"},
    ],
)
def test_spoofed_forwarding_headers_are_denied(spoof):
    response = get(LocalhostOnly(ok_app), ("192.0.2.7", 5000), headers=spoof)
    assert response.status_code == 403
    assert response.json() == DENIED


def test_no_peer_is_denied_unless_allowed():
    assert not is_loopback_peer(None)
    assert is_loopback_peer(None, allow_no_peer=True)
    assert get(LocalhostOnly(ok_app), None).status_code == 403
    assert get(LocalhostOnly(ok_app, allow_no_peer=True), None).status_code == 200


def test_disabled_gate_lets_everyone_through():
    assert get(LocalhostOnly(ok_app, enabled=False), ("192.0.2.7", 5000)).status_code == 200


def test_standalone_gate_covers_management_but_not_health():
    app = create_app(settings=Settings(amp_upstream_url="http://127.0.0.1:9"), configure_logs=False)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [
                await client.get(path, headers={"X-Forwarded-For": "127.0.0.1"})
                for path in ("/api/user", "/threads/T-1", "/actors/gateway/x", "/healthz")
            ]

    user, thread, actor, health = anyio.run(run)
    assert user.status_code == thread.status_code == actor.status_code == 403
    assert user.json() == DENIED
    assert health.status_code == 200
