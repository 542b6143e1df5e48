"""The one dispatcher and the small apps it routes to.

``Dispatch`` reads the route table (``routes``) and hands each request to the app built for its
kind; ``Services`` is what every built app reports to (metrics, readiness, the usage ledger, the
drift warner, the routing token) and outlives a settings version. The small apps here answer
requests themselves: liveness, not found, no upstream, and the route-kind guards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .actors import RoutingTokenSource, is_loopback_host
from .errors import refuse, send_json
from .headers import header_value
from .ledger import UsageLedger
from .metrics import Metrics
from .path_shapes import DriftWarner
from .provider_alias import route_path
from .proxy import ReplyBroken
from .readiness import Readiness
from .routes import RouteKind, api_path, classify_api, classify_root
from .trusted_hosts import split_host

UNAVAILABLE = "amp upstream proxy not available"


async def healthz(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await send_json(send, 200, b'{"status":"ok"}')
    else:
        await refuse(scope, receive, send, 404, "not_found", "No WebSocket here")


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    method = scope.get("method", "WebSocket")
    await refuse(scope, receive, send, 404, "not_found", f"No route for {method} {scope['path']}")


async def upstream_unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    await refuse(scope, receive, send, 503, UNAVAILABLE)


class HttpOnly:
    """Routes a browser opens never upgrade to a WebSocket."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await refuse(scope, receive, send, 403, "forbidden", "No WebSocket on this route")
            return
        await self.app(scope, receive, send)


class Dispatch:
    """The one dispatcher: classifies a request with the route table and hands it to the app
    built for its kind. ``api_mounted``: the app lives below ``/api`` (``ampbridge.app()``).
    It also answers for a reply that broke off while a part held its head back, and reports
    each request's outcome to the metrics and the upstream's readiness."""

    def __init__(self, apps: Mapping[RouteKind, ASGIApp], *, api_mounted: bool, services: Services) -> None:
        self.apps = dict(apps)
        self.api_mounted = api_mounted
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        method: str | None = scope.get("method") if scope["type"] == "http" else None
        path = route_path(scope)
        if self.api_mounted:
            kind = classify_api(path, method)
        else:
            kind = classify_root(path, method)
            if api_path(path) is not None:  # the API part sees itself mounted at /api
                scope = {**scope, "root_path": scope.get("root_path", "") + "/api"}
        status = 0

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start" or message["type"] == "websocket.http.response.start":
                status = message["status"]
            elif message["type"] == "websocket.accept":
                status = 101
            await send(message)

        try:
            await self.apps.get(kind, not_found)(scope, receive, watched_send)
        except ReplyBroken as broken:
            if not status:
                status = broken.status
                await broken.fail(scope, receive, send, broken.status)
        finally:
            self.services.observe(kind, status)


@dataclass
class Services:
    """What outlives a settings version and every built app reports to."""

    metrics: Metrics = field(default_factory=Metrics)
    readiness: Readiness = field(default_factory=Readiness)
    ledger: UsageLedger | None = None
    drift: DriftWarner = field(default_factory=DriftWarner)
    routing_token: RoutingTokenSource | None = None

    def observe(self, kind: RouteKind, status: int) -> None:
        self.metrics.observe_request(kind.value, status)
        if kind in _UPSTREAM_KINDS and status:
            answered = status not in (502, 504)
            self.readiness.upstream(answered, "" if answered else f"status {status}")
            if not answered:
                self.metrics.upstream_error(f"status_{status}")


_UPSTREAM_KINDS = frozenset({RouteKind.CONTROL, RouteKind.ACTORS})


class KeysBeyondLoopback:
    """The plain ``/v1`` routes reached through a name other than a loopback one (a tunnel, such
    as one serving Amp's custom-URL model router) answer only when client keys are configured:
    without them, anyone who finds the tunnel would spend the provider keys."""

    def __init__(self, app: ASGIApp, *, keys_configured: bool) -> None:
        self.app = app
        self.keys_configured = keys_configured

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.keys_configured:
            host = header_value(scope["headers"], b"host")
            name = split_host(host.decode("latin-1")) if host else None
            if name is not None and not is_loopback_host(name):
                message = f"set api-keys to serve these routes through {name}; clients then send a key"
                await refuse(scope, receive, send, 401, "unauthorized", message)
                return
        await self.app(scope, receive, send)


class ReadOnly:
    """GET and HEAD only; anything else is not found."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") in ("GET", "HEAD"):
            await self.app(scope, receive, send)
        else:
            await not_found(scope, receive, send)
