"""uvicorn's WebSocket protocol, with a refused handshake counted as a finished one.

ampbridge refuses a WebSocket upgrade with a real HTTP status (the ASGI ``websocket.http.response``
extension), so a refused upgrade and a refused HTTP call look the same to a client. uvicorn's
``websockets-sansio`` protocol sends that response correctly but then, because it does not mark
the handshake as done, logs "ASGI callable returned without completing handshake" as an error
for every refusal. This subclass marks it done once the refusal's body is out.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class RefusalAwareWebSocketProtocol(WebSocketsSansIOProtocol):
    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True
