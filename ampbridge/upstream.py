"""``AmpUpstream``: forwards requests and WebSockets to the Amp upstream at the same path.

The Amp key goes only to the configured upstream origin (redirects are never followed). When
ampbridge has no Amp key of its own and no client keys are configured, the client's own Amp key
passes through unchanged (SPEC §17): ampbridge is then a transparent proxy.
"""

from __future__ import annotations

import httpx
from starlette.types import Receive, Scope, Send

from . import scope_keys
from .actors import RoutingTokenSource, is_loopback_host, rewrite_conn_params, with_routing_token
from .credentials import CREDENTIAL_HEADERS, scrub_query
from .errors import refuse
from .headers import WEBSOCKET_HANDSHAKE, RawHeaders, scrub_request_headers
from .http_client import SharedClient, TargetUrls
from .path_shapes import DriftWarner
from .provider_alias import raw_route_path
from .proxy import Exchange, upstream_accept_encoding
from .secrets import UpstreamKeyResolver
from .websocket_relay import relay_websocket

UPSTREAM_ERROR = "amp_upstream_proxy_error"


async def upstream_failed(scope: Scope, receive: Receive, send: Send, status: int) -> None:
    message = "Amp upstream timed out" if status == 504 else "Failed to reach Amp upstream"
    await refuse(scope, receive, send, status, UPSTREAM_ERROR, message)


def key_headers(key: str | None) -> RawHeaders:
    if not key:
        return []
    encoded = key.encode("latin-1")
    return [(b"authorization", b"Bearer " + encoded), (b"x-api-key", encoded)]


class AmpUpstream:
    """The reverse proxy to the Amp control plane. Its host is fixed: only the path and query of
    a request are carried over, so nothing a client sends can point it elsewhere.

    ``send_key=False`` (browser routes) sends no Amp key at all; ``keep_cookies`` passes the
    client's ``Cookie`` header (browser and control-plane routes only). ``actors``: this proxy
    serves Amp's thread-actor gateway: conn params carrying a client key get the upstream key
    instead, and the routing token is added toward a non-loopback upstream. ``drift``: warn once
    per unknown path shape (a new Amp release shows up in the log)."""

    def __init__(
        self,
        *,
        upstream_url: str,
        client: SharedClient,
        keys: UpstreamKeyResolver,
        max_body_size: int,
        client_keys: frozenset[str] = frozenset(),
        path_prefix: bytes = b"",
        send_key: bool = True,
        keep_cookies: bool = False,
        proxy_url: str = "",
        actors: RoutingTokenSource | None = None,
        drift: DriftWarner | None = None,
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
        self.path_prefix = path_prefix
        self.send_key = send_key
        self.keep_cookies = keep_cookies
        self.proxy_url = proxy_url
        self.actors = actors
        # Amp's cloud gateway wants its routing token; a loopback upstream (a test, a local
        # relay) does not, and is never sent it.
        self.routing_token = actors if actors is not None and not is_loopback_host(self.base.host) else None
        self.drift = drift
        self.urls = TargetUrls(base)

    def __repr__(self) -> str:
        return f"AmpUpstream({str(self.base)!r})"

    def _target(self, scope: Scope) -> bytes:
        """The upstream path: ``path_prefix`` + the raw path below the mount point (so a host app
        may mount ampbridge anywhere) + the query without client keys (and, toward Amp's cloud
        actor gateway, with its routing token)."""
        query = scrub_query(scope.get("query_string", b""), self.client_keys)
        if self.routing_token is not None:
            query = with_routing_token(
                scope["path"], query, upstream_host=self.base.host, token=self.routing_token.token()
            )
        return self.base_path + self.path_prefix + raw_route_path(scope) + (b"?" + query if query else b"")

    def _auth(self, scope: Scope) -> RawHeaders:
        """The Amp key for this request, or the client's own when ampbridge has none (§17)."""
        if not self.send_key or scope.get(scope_keys.ACTOR_TOKEN_ONLY):
            return []
        key = self.keys.resolve(scope.get(scope_keys.CLIENT_KEY))
        if key:
            return key_headers(key)
        if self.client_keys:
            return []
        return [(name, value) for name, value in scope["headers"] if name.lower() in CREDENTIAL_HEADERS]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        offered: list[str] = list(scope.get("subprotocols") or [])
        if self.actors is not None:
            scope = rewrite_conn_params(
                scope, client_keys=self.client_keys, upstream_key_for=self.keys.resolve
            )
        target = self._target(scope)
        auth = self._auth(scope)
        if self.drift is not None:
            self.drift.observe(scope.get("method", "GET"), scope["path"])
        if scope["type"] == "websocket":
            headers = scrub_request_headers(
                scope["headers"], WEBSOCKET_HANDSHAKE, keep_cookies=self.keep_cookies
            )
            headers += auth
            await relay_websocket(
                scope,
                receive,
                send,
                url=self.websocket_base + target.decode("latin-1"),
                headers=headers,
                max_size=self.max_body_size,
                offered=offered,
            )
            return
        headers = scrub_request_headers(scope["headers"], keep_cookies=self.keep_cookies)
        headers.append((b"accept-encoding", upstream_accept_encoding(scope)))
        headers.extend(auth)
        exchange = Exchange(
            self.shared.route_for(self.proxy_url),
            url=self.urls(target),
            headers=headers,
            max_body_size=self.max_body_size,
            fail=upstream_failed,
        )
        await exchange.run(scope, receive, send)
