"""Relays one WebSocket between an ASGI client and an upstream server.

httpx speaks no WebSocket, so the upstream side uses the ``websockets`` library, which uvicorn
also uses for the server side: one maintained dependency for both ends. The upstream handshake
happens first; only when it succeeds is the client accepted, with the subprotocol the upstream
chose. Frames flow both ways until either side closes; the close code and reason are passed on.
A redirect from the upstream is never followed (the key must not travel to another host): the
client gets the refusal instead.
"""

from __future__ import annotations

import contextlib
import logging

import anyio
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .headers import RawHeaders, header_value
from .logs import redacting_logger

logger = logging.getLogger("ampbridge.websocket")

UNSENDABLE_CLOSE_CODES = {1005: 1000, 1006: 1011, 1015: 1011}
UNREACHABLE_BODY = b'{"error":"amp_upstream_proxy_error","message":"Failed to reach Amp upstream"}'


class _connect_without_redirects(connect):
    """``websockets``' ``connect`` that treats every redirect as a refusal."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


async def relay_websocket(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    url: str,
    headers: RawHeaders,
    max_size: int,
    offered: list[str] | None = None,
) -> None:
    """``offered``: the subprotocols as the client sent them, when ``scope["subprotocols"]`` (what
    goes upstream) was rewritten; the client is accepted with its own spelling of the chosen one."""
    if (await receive())["type"] != "websocket.connect":
        return
    user_agent = header_value(headers, b"user-agent")
    extra = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k.lower() != b"user-agent"]
    try:
        upstream = await _connect_without_redirects(
            url,
            additional_headers=extra,
            subprotocols=scope.get("subprotocols") or None,
            user_agent_header=user_agent.decode("latin-1") if user_agent else None,
            max_size=max_size,
            open_timeout=10,
            logger=redacting_logger("ampbridge.websocket.upstream"),
        )
    except InvalidStatus as refused:
        status = refused.response.status_code
        logger.info("WebSocket %s refused by the upstream with %s", scope["path"], status)
        content_type = refused.response.headers.get("Content-Type", "text/plain")
        await _deny(scope, send, status, bytes(refused.response.body or b""), content_type)
        return
    except (OSError, TimeoutError, InvalidHandshake) as error:
        logger.warning("WebSocket %s: cannot reach the upstream (%s)", scope["path"], type(error).__name__)
        await _deny(scope, send, 502, UNREACHABLE_BODY, "application/json")
        return
    chosen: str | None = upstream.subprotocol
    sent = list(scope.get("subprotocols") or [])
    if chosen is not None and offered and chosen in sent and len(offered) == len(sent):
        chosen = offered[sent.index(chosen)]
    await send({"type": "websocket.accept", "subprotocol": chosen})
    async with upstream, anyio.create_task_group() as tasks:
        tasks.start_soon(_client_to_upstream, receive, upstream, tasks.cancel_scope)
        await _upstream_to_client(upstream, send)
        tasks.cancel_scope.cancel()


async def _client_to_upstream(
    receive: Receive, upstream: ClientConnection, cancel: anyio.CancelScope
) -> None:
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                await upstream.send(text if text is not None else message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                code: int = message.get("code") or 1000
                await upstream.close(UNSENDABLE_CLOSE_CODES.get(code, code), message.get("reason") or "")
                return
    except ConnectionClosed:
        return


async def _upstream_to_client(upstream: ClientConnection, send: Send) -> None:
    try:
        async for frame in upstream:
            if isinstance(frame, str):
                await send({"type": "websocket.send", "text": frame})
            else:
                await send({"type": "websocket.send", "bytes": frame})
    except ConnectionClosed:
        pass
    code = upstream.close_code if upstream.close_code is not None else 1006
    with contextlib.suppress(OSError, RuntimeError):  # the client may already be gone
        await send(
            {
                "type": "websocket.close",
                "code": UNSENDABLE_CLOSE_CODES.get(code, code),
                "reason": upstream.close_reason or "",
            }
        )


async def _deny(scope: Scope, send: Send, status: int, body: bytes, content_type: str) -> None:
    """Refuse the handshake with the upstream's status where the server can send one."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode("latin-1")),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1011 if status >= 500 else 1008})
