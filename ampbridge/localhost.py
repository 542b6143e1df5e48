"""``LocalhostOnly``: admit only clients whose transport peer is a loopback address."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import refuse

DENIED_MESSAGE = "Access denied: management routes restricted to localhost"


def is_loopback_peer(client: Sequence[object] | None, *, allow_no_peer: bool = False) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; ``None`` (e.g. a Unix socket) only
    when ``allow_no_peer``. Forwarding headers are never consulted: they are client-controlled."""
    if not client:
        return allow_no_peer
    host = str(client[0]).split("%", 1)[0]  # drop an IPv6 zone id
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class LocalhostOnly:
    """403 JSON (the same status for a WebSocket handshake) for any non-loopback peer."""

    def __init__(self, app: ASGIApp, *, enabled: bool = True, allow_no_peer: bool = False) -> None:
        self.app = app
        self.enabled = enabled
        self.allow_no_peer = allow_no_peer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self.enabled
            or scope["type"] not in ("http", "websocket")
            or is_loopback_peer(scope.get("client"), allow_no_peer=self.allow_no_peer)
        ):
            await self.app(scope, receive, send)
            return
        await refuse(scope, receive, send, 403, DENIED_MESSAGE)
