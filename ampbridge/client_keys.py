"""``ClientKeyAuth``: when client keys are configured, a request must carry one."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response
from .headers import CREDENTIAL_QUERY_PARAMS
from .upstream import CLIENT_KEY_SCOPE


def presented_keys(scope: Scope) -> list[str]:
    """Every key the request offers: ``Authorization: Bearer``, ``X-Api-Key``, ``X-Goog-Api-Key``,
    ``?key=`` / ``?auth_token=``."""
    found: list[str] = []
    for name, value in scope["headers"]:
        lower = name.lower()
        if lower == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                found.append(token.strip())
        elif lower in (b"x-api-key", b"x-goog-api-key"):
            found.append(value.decode("latin-1").strip())
    query = scope.get("query_string", b"")
    if query:
        for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=False):
            if key in CREDENTIAL_QUERY_PARAMS:
                found.append(value)
    return found


class ClientKeyAuth:
    """401 JSON (or a refused WebSocket) unless the request presents one of ``keys``. The key
    that matched is recorded in the scope (it picks the per-client Amp key); it is never
    forwarded: the proxies strip every credential header and matching query value."""

    def __init__(self, app: ASGIApp, *, keys: Iterable[str]) -> None:
        self.app = app
        self.keys = tuple(k.encode("utf-8") for k in keys if k)

    def matching_key(self, scope: Scope) -> str | None:
        for candidate in presented_keys(scope):
            encoded = candidate.encode("utf-8")
            if any(hmac.compare_digest(encoded, key) for key in self.keys):
                return candidate
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.keys or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        key = self.matching_key(scope)
        if key is not None:
            await self.app({**scope, CLIENT_KEY_SCOPE: key}, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "missing or invalid API key"})
        else:
            await error_response(401, "unauthorized", "Missing or invalid API key")(scope, receive, send)
