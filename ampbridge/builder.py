"""The one builder: one version of the settings in, the whole app out.

Every entry point (``ampbridge.app()``, ``ampbridge.standalone:app``, ``ampbridge serve``) gets its
app from ``build``. The app is the public parts stacked per route kind — gates around the Amp
upstream, ``ProviderAlias`` and ``AmpFallback`` around the local model server — behind a single
dispatcher that reads the one route table (``routes``). Nothing here runs in the background;
``runtime`` owns what outlives a settings version.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .actor_gate import ActorGate
from .actors import RoutingTokenSource, is_loopback_host
from .backends import LocalBackends
from .browser_routes import BrowserProxyRewrite, BrowserRedirect
from .call_watch import CallWatch
from .client_keys import ClientKeyAuth, ClientKeys
from .credentials import key_problem
from .cross_site import CrossSiteGate
from .errors import refuse
from .fallback import AmpFallback
from .gzip_unwrap import GzipUnwrap
from .headers import header_value
from .http_client import SharedClient
from .ledger import UsageLedger
from .localhost import LocalhostOnly
from .metrics import Metrics, MetricsEndpoint
from .models import LocalModelsLike
from .no_cors import RefuseCors
from .path_shapes import DriftWarner
from .provider_alias import ProviderAlias, route_path
from .proxy import ReplyBroken
from .readiness import Readiness, ReadinessEndpoint
from .routes import RouteKind, api_path, classify_api, classify_root, is_browser_path
from .safe_paths import SafePaths
from .secrets import AmpSecretsFile, UpstreamKeyResolver, amp_secrets_path, local_urls
from .settings import ConfigError, Settings
from .trusted_hosts import HostAllowlist, TrustedHosts, split_host
from .upstream import AmpUpstream
from .user_dirs import user_data_dir

logger = logging.getLogger("ampbridge")

UNAVAILABLE = "amp upstream proxy not available"
AMP_API_KEY_ENV = "AMP_API_KEY"


@dataclass(frozen=True)
class LocalServer:
    """The library's local model server: your own ASGI app and the models it serves."""

    app: ASGIApp
    models: LocalModelsLike


@dataclass(frozen=True)
class BuiltApp:
    """The apps built from one version of the settings."""

    settings: Settings
    root: ASGIApp  # every route of the standalone server
    api: ASGIApp  # the routes below /api, for mounting there
    backends: LocalBackends | None  # the configured providers (None with a library LocalServer)


def upstream_key_resolver(settings: Settings, environ: Mapping[str, str]) -> UpstreamKeyResolver:
    """Where the Amp key comes from, per SPEC §6. A key that cannot be sent is a ConfigError."""
    environment_key = environ.get(AMP_API_KEY_ENV, "").strip()
    if environment_key and (problem := key_problem(environment_key)):
        raise ConfigError(f"environment {AMP_API_KEY_ENV}: {problem}")
    per_client: dict[str, str] = {}
    for index, mapping in enumerate(settings.amp_upstream_api_keys):
        for client_key in mapping.api_keys:
            key = client_key.get_secret_value()
            if key in per_client:
                logger.warning(
                    "amp-upstream-api-keys[%d]: a client key is mapped by an earlier entry, which wins", index
                )
                continue
            per_client[key] = mapping.upstream_api_key.get_secret_value()
    url = settings.amp_upstream_url
    return UpstreamKeyResolver(
        configured_key=settings.amp_upstream_api_key.get_secret_value(),
        environment_key=environment_key,
        secrets_file=(
            AmpSecretsFile(
                amp_secrets_path(environ), url, local_urls=local_urls(settings.port, settings.allowed_hosts)
            )
            if url
            else None
        ),
        per_client=per_client,
    )


async def healthz(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        body = b'{"status":"ok"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"15")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
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


def build(
    settings: Settings,
    *,
    client: SharedClient,
    environ: Mapping[str, str],
    services: Services,
    local: LocalServer | None = None,
    previous: BuiltApp | None = None,
    standalone: bool = False,
) -> BuiltApp:
    """The app for ``settings``. Raises ConfigError for settings that validate but cannot be
    used (a key that cannot be sent in a header). ``standalone``: the app is the whole server
    (``ampbridge serve``), so the bind host is one of its names."""
    keys = upstream_key_resolver(settings, environ)
    client_keys = settings.client_keys
    max_body = settings.max_body_size

    backends: LocalBackends | None = None
    if local is None:
        backends = LocalBackends(
            settings.providers,
            client=client,
            max_body_size=max_body,
            proxy_url=settings.proxy_url,
            chatgpt_dir=user_data_dir("ampbridge", environ) / "chatgpt",
        )
        if previous is not None and previous.backends is not None:
            backends.adopt_discoveries(previous.backends)
        local_app: ASGIApp = backends
        local_models: LocalModelsLike = backends
    else:
        local_app, local_models = local.app, local.models

    def upstream(
        *, prefix: bytes, send_key: bool = True, keep_cookies: bool = False, actors: bool = False
    ) -> ASGIApp:
        proxy = AmpUpstream(
            upstream_url=settings.amp_upstream_url,
            client=client,
            keys=keys,
            max_body_size=max_body,
            client_keys=client_keys,
            path_prefix=prefix,
            send_key=send_key,
            keep_cookies=keep_cookies,
            proxy_url=settings.proxy_url,
            actors=services.routing_token if actors else None,
            drift=services.drift,
        )
        return GzipUnwrap(proxy, max_decoded_size=max_body)

    def management(app: ASGIApp) -> ASGIApp:
        """No CORS, the localhost gate (when on), in that order (SPEC §4.2)."""
        return RefuseCors(LocalhostOnly(app, enabled=settings.amp_restrict_management_to_localhost))

    has_upstream = bool(settings.amp_upstream_url)
    may_spend_credits = has_upstream and settings.amp_fallback == "allowed"
    models = ClientKeyAuth(
        ProviderAlias(
            AmpFallback(
                local_app,
                local_models=local_models,
                upstream=upstream(prefix=b"/api") if may_spend_credits else None,
                mappings=settings.amp_model_mappings,
                force_mappings=settings.amp_force_model_mappings,
                max_body_size=max_body,
                upstream_refused=has_upstream,
                watch=CallWatch(services.metrics, services.ledger),
            ),
            prefix="/provider/",
        ),
        keys=client_keys,
    )
    apps: dict[RouteKind, ASGIApp] = {
        RouteKind.MODEL: models,
        RouteKind.LOCAL: KeysBeyondLoopback(
            ClientKeyAuth(local_app, keys=client_keys), keys_configured=bool(client_keys)
        ),
        RouteKind.HEALTH: healthz,
        RouteKind.READY: ReadinessEndpoint(services.readiness),
        RouteKind.METRICS: management(ClientKeyAuth(MetricsEndpoint(services.metrics), keys=client_keys)),
    }
    if has_upstream:
        apps[RouteKind.CONTROL] = management(
            ClientKeyAuth(upstream(prefix=b"/api", keep_cookies=True), keys=client_keys)
        )
        apps[RouteKind.ACTORS] = management(
            ActorGate(upstream(prefix=b"", actors=True), keys=ClientKeys(client_keys))
        )
        # A browser sends no client key and has its own session there: never the Amp key.
        if settings.browser_routes == "redirect":
            browser: ASGIApp = BrowserRedirect(settings.amp_upstream_url)
        else:
            browser = BrowserProxyRewrite(
                upstream(prefix=b"", send_key=False, keep_cookies=True),
                upstream_url=settings.amp_upstream_url,
            )
            apps[RouteKind.OTHER] = management(HttpOnly(ReadOnly(browser)))  # the login page's assets
        apps[RouteKind.BROWSER] = management(HttpOnly(browser))
    else:
        apps[RouteKind.CONTROL] = apps[RouteKind.ACTORS] = apps[RouteKind.BROWSER] = upstream_unavailable

    hosts = HostAllowlist(
        settings.allowed_hosts,
        bind_host=settings.host if standalone else None,
        include_interface_addresses=standalone and settings.host in ALL_INTERFACES,
    )

    def gates(app: ASGIApp) -> ASGIApp:
        """Before any routing (SPEC §10): a foreign Host, then a cross-site request, is refused."""
        cross_site = CrossSiteGate(
            SafePaths(app),
            allowed_hosts=hosts,
            allowed_origins=settings.allowed_origins,
            is_browser_route=_is_browser_route,
        )
        return TrustedHosts(cross_site, allowed_hosts=hosts)

    api = gates(Dispatch(apps, api_mounted=True, services=services))
    root = gates(Dispatch(apps, api_mounted=False, services=services))
    return BuiltApp(settings=settings, root=root, api=api, backends=backends)


ALL_INTERFACES = frozenset({"", "0.0.0.0", "::"})


def _is_browser_route(path: str) -> bool:
    return is_browser_path(path, None)


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
