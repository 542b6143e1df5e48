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
from dataclasses import dataclass

from starlette.types import ASGIApp

from .actor_gate import ActorGate
from .backends import LocalBackends
from .browser_routes import BrowserProxyRewrite, BrowserRedirect
from .call_watch import CallWatch
from .client_keys import ClientKeyAuth, ClientKeys
from .credentials import key_problem
from .cross_site import CrossSiteGate
from .dispatch import (
    Dispatch,
    HttpOnly,
    KeysBeyondLoopback,
    ReadOnly,
    Services,
    healthz,
    upstream_unavailable,
)
from .fallback import AmpFallback
from .gzip_unwrap import GzipUnwrap
from .http_client import SharedClient
from .localhost import LocalhostOnly
from .metrics import MetricsEndpoint
from .models import LocalModelsLike
from .no_cors import RefuseCors
from .provider_alias import ProviderAlias
from .readiness import ReadinessEndpoint
from .routes import RouteKind, is_browser_path
from .safe_paths import SafePaths
from .secrets import AmpSecretsFile, UpstreamKeyResolver, amp_secrets_path, local_urls
from .settings import ConfigError, Settings
from .trusted_hosts import HostAllowlist, TrustedHosts
from .upstream import AmpUpstream
from .user_dirs import user_data_dir

logger = logging.getLogger("ampbridge")

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
