"""One shape for every error ampbridge itself answers: ``{"error": ..., "message": ...}``.

``refuse`` is the one way a gate turns a request away, HTTP or WebSocket alike: a WebSocket
handshake gets the same status and JSON body as an HTTP request would (through the ASGI
``websocket.http.response`` extension), or a plain close where the server lacks it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

JSON_HEADERS = [(b"content-type", b"application/json")]


def error_body(error: str, message: str | None = None) -> bytes:
    body = {"error": error} if message is None else {"error": error, "message": message}
    return json.dumps(body, separators=(",", ":")).encode()


def error_response(status: int, error: str, message: str | None = None) -> JSONResponse:
    """A JSON error; ``message`` is added only when there is something to explain."""
    body = {"error": error} if message is None else {"error": error, "message": message}
    return JSONResponse(body, status_code=status)


async def send_json(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """One whole JSON reply: a start with its length, then the body."""
    start = [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


async def refuse(
    scope: Scope, receive: Receive, send: Send, status: int, error: str, message: str | None = None
) -> None:
    """Answer ``scope`` with ``status`` and a JSON error, whatever its type (HTTP or WebSocket)."""
    body = error_body(error, message)
    if scope["type"] == "http":
        await send_json(send, status, body)
    elif scope["type"] == "websocket":
        headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1011 if status >= 500 else 1008})


class ResponseAborted(Exception):
    """Raised by a wrapped ``send`` to stop a response that must not go on (it may already have
    been answered with an error). Whoever streams the body stops and closes its source."""
