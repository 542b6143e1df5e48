"""``ClientKeyAuth``: when client keys are configured, a request must carry one."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from . import scope_keys
from .credentials import presented_keys
from .errors import refuse


class ClientKeys:
    """The configured client keys, compared in constant time."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.texts = frozenset(k for k in keys if k)
        self.keys = tuple(k.encode("utf-8") for k in self.texts)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __repr__(self) -> str:
        return f"ClientKeys({len(self.keys)} keys)"

    def match(self, candidates: Iterable[str]) -> str | None:
        """The first candidate that is a client key."""
        for candidate in candidates:
            encoded = candidate.encode("utf-8")
            if any(hmac.compare_digest(encoded, key) for key in self.keys):
                return candidate
        return None


class ClientKeyAuth:
    """401 JSON (the same status for a WebSocket handshake) unless the request presents one of
    ``keys``. The key that matched is recorded in the scope (it picks the per-client Amp key); it
    is never forwarded: the proxies strip every credential header and matching query value."""

    def __init__(self, app: ASGIApp, *, keys: Iterable[str]) -> None:
        self.app = app
        self.keys = ClientKeys(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.keys or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        key = self.keys.match(presented_keys(scope))
        if key is None:
            await refuse(scope, receive, send, 401, "unauthorized", "Missing or invalid API key")
            return
        await self.app({**scope, scope_keys.CLIENT_KEY: key}, receive, send)
