"""``AmpUpstream``: forwards requests and WebSockets to the Amp upstream at the same path."""

from __future__ import annotations

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response
from .headers import WEBSOCKET_HANDSHAKE, RawHeaders, scrub_query, scrub_request_headers
from .http_client import SharedClient
from .proxy import Exchange, upstream_accept_encoding
from .secrets import UpstreamKeyResolver
from .websocket_relay import relay_websocket

CLIENT_KEY_SCOPE = "ampbridge.client_key"  # set by ClientKeyAuth: the key that authenticated


def unreachable_upstream() -> ASGIApp:
    return error_response(502, "amp_upstream_proxy_error", "Failed to reach Amp upstream")


def key_headers(key: str | None) -> RawHeaders:
    if not key:
        return []
    encoded = key.encode("latin-1")
    return [(b"authorization", b"Bearer " + encoded), (b"x-api-key", encoded)]


class AmpUpstream:
    """The reverse proxy to the Amp control plane. Its host is fixed: only the path and query of
    a request are carried over, so nothing a client sends can point it elsewhere."""

    def __init__(
        self,
        *,
        upstream_url: str,
        client: SharedClient,
        keys: UpstreamKeyResolver,
        max_body_size: int,
        client_keys: frozenset[str] = frozenset(),
        strip_cors: bool = True,
    ) -> None:
        base = httpx.URL(upstream_url)
        self.base = base
        self.base_path = base.raw_path.rstrip(b"/").split(b"?", 1)[0]
        self.websocket_base = str(
            base.copy_with(scheme="wss" if base.scheme == "https" else "ws", raw_path=b"/")
        ).rstrip("/")
        self.shared = client
        self.keys = keys
        self.max_body_size = max_body_size
        self.client_keys = client_keys
        self.strip_cors = strip_cors

    def __repr__(self) -> str:
        return f"AmpUpstream({str(self.base)!r})"

    def _target(self, scope: Scope) -> tuple[bytes, RawHeaders]:
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        query = scrub_query(scope.get("query_string", b""), self.client_keys)
        target = self.base_path + raw_path + (b"?" + query if query else b"")
        key = self.keys.resolve(scope.get(CLIENT_KEY_SCOPE))
        return target, key_headers(key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target, auth = self._target(scope)
        if scope["type"] == "websocket":
            headers = scrub_request_headers(scope["headers"], WEBSOCKET_HANDSHAKE) + auth
            await relay_websocket(
                scope,
                receive,
                send,
                url=self.websocket_base + target.decode("latin-1"),
                headers=headers,
                max_size=self.max_body_size,
            )
            return
        headers = scrub_request_headers(scope["headers"])
        headers.append((b"accept-encoding", upstream_accept_encoding(scope)))
        headers.extend(auth)
        exchange = Exchange(
            self.shared.client,
            url=self.base.copy_with(raw_path=target),
            headers=headers,
            max_body_size=self.max_body_size,
            unreachable=unreachable_upstream,
            strip_cors=self.strip_cors,
        )
        await exchange.run(scope, receive, send)
