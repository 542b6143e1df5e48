"""WebSocket pass-through: current Amp CLIs open /actors/gateway/... on their base URL."""

from __future__ import annotations

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ampbridge.settings import Settings

from .servers import eventually

UPSTREAM_KEY = "upstream-key-ws"


def ws_url(http_url: str, path: str) -> str:
    return http_url.replace("http://", "ws://") + path


def test_frames_subprotocol_and_key_cross_and_upstream_close_reaches_the_client(upstream, bridge):
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url, amp_upstream_api_key=UPSTREAM_KEY))

    async def session() -> tuple[str | None, list, int | None, str]:
        async with connect(
            ws_url(ampbridge.url, "/actors/gateway/actor-1?thread=T-1"),
            subprotocols=["amp.actor.v1", "other"],
            additional_headers={"Authorization": "Bearer client-key", "X-Amp-Thread-Id": "T-1"},
        ) as websocket:
            await websocket.send("hello")
            text = await websocket.recv()
            await websocket.send(b"\x00\x01binary")
            binary = await websocket.recv()
            await websocket.send("close-me")
            with pytest.raises(ConnectionClosed):
                await websocket.recv()
            return websocket.subprotocol, [text, binary], websocket.close_code, websocket.close_reason or ""

    subprotocol, frames, code, reason = anyio.run(session)
    assert subprotocol == "amp.actor.v1"
    assert frames == ["echo:hello", b"echo:\x00\x01binary"]
    assert (code, reason) == (4001, "bye")
    (received,) = upstream.websockets
    assert received.path == "/actors/gateway/actor-1"
    assert received.query == b"thread=T-1"
    assert received.header("authorization") == f"Bearer {UPSTREAM_KEY}"
    assert received.header("x-api-key") == UPSTREAM_KEY
    assert received.header("x-amp-thread-id") == "T-1"
    assert "client-key" not in str(received.headers)


def test_client_close_reaches_the_upstream(upstream, bridge):
    ampbridge = bridge(Settings(amp_upstream_url=upstream.url))

    async def session() -> None:
        async with connect(ws_url(ampbridge.url, "/actors/gateway/actor-2")) as websocket:
            await websocket.send("ping")
            assert await websocket.recv() == "echo:ping"
            await websocket.close(code=1000, reason="done")

    anyio.run(session)
    assert eventually(lambda: upstream.websockets and upstream.websockets[0].events)
    assert upstream.websockets[0].events == ["disconnect:1000"]


def test_websocket_from_a_forbidden_path_or_without_upstream_is_refused(bridge):
    ampbridge = bridge(Settings(amp_upstream_url=""))

    async def attempt() -> None:
        async with connect(ws_url(ampbridge.url, "/actors/gateway/x")):
            pass

    with pytest.raises(InvalidStatus):
        anyio.run(attempt)
