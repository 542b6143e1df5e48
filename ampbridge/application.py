"""``ampbridge.app()``: the Amp API (model calls and the control plane) as one mountable app."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from .client_keys import ClientKeyAuth
from .control_plane import UpstreamUnavailable, control_plane
from .fallback import AmpFallback
from .gzip_unwrap import GzipUnwrap
from .http_client import SharedClient
from .models import LocalModels
from .provider_alias import ProviderAlias, route_path
from .safe_paths import SafePaths
from .secrets import AmpSecretsFile, UpstreamKeyResolver, amp_secrets_path
from .settings import Settings
from .upstream import AmpUpstream

logger = logging.getLogger("ampbridge")

PROVIDER_PREFIX = "/provider/"  # below the /api mount point


def upstream_key_resolver(settings: Settings, environ: Mapping[str, str]) -> UpstreamKeyResolver:
    per_client: dict[str, str] = {}
    for index, mapping in enumerate(settings.amp_upstream_api_keys):
        for client_key in mapping.api_keys:
            key = client_key.get_secret_value()
            if key in per_client:
                logger.warning(
                    "amp-upstream-api-keys[%d]: a client key is mapped by an earlier entry, which wins",
                    index,
                )
                continue
            per_client[key] = mapping.upstream_api_key.get_secret_value()
    url = settings.amp_upstream_url
    return UpstreamKeyResolver(
        configured_key=settings.amp_upstream_api_key.get_secret_value(),
        environment_key=environ.get("AMP_API_KEY", ""),
        secrets_file=AmpSecretsFile(amp_secrets_path(), url) if url else None,
        per_client=per_client,
    )


class PrefixDispatch:
    """Requests whose path (below the mount point) starts with ``prefix`` go to ``matched``."""

    def __init__(self, prefix: str, matched: ASGIApp, other: ASGIApp) -> None:
        self.prefix = prefix
        self.matched = matched
        self.other = other

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.matched if route_path(scope).startswith(self.prefix) else self.other
        await app(scope, receive, send)


def amp_upstream(settings: Settings, client: SharedClient, keys: UpstreamKeyResolver) -> AmpUpstream | None:
    """The reverse proxy to the configured Amp upstream; None when forwarding is off."""
    if not settings.amp_upstream_url:
        return None
    return AmpUpstream(
        upstream_url=settings.amp_upstream_url,
        client=client,
        keys=keys,
        max_body_size=settings.max_body_size,
        client_keys=settings.client_keys,
    )


def amp_api(
    settings: Settings,
    *,
    local_app: ASGIApp,
    local_models: LocalModels | Callable[[str], bool] | Iterable[str],
    upstream: AmpUpstream | None,
) -> ASGIApp:
    """Everything under ``/api``: provider routes (served locally or upstream) and the control plane."""
    client_keys = settings.client_keys
    upstream_route: ASGIApp | None = (
        GzipUnwrap(upstream, max_decoded_size=settings.max_body_size) if upstream else None
    )
    models = AmpFallback(
        local_app,
        local_models=local_models,
        upstream=upstream_route,
        mappings=settings.amp_model_mappings,
        force_mappings=settings.amp_force_model_mappings,
        max_body_size=settings.max_body_size,
    )
    provider = ClientKeyAuth(
        ProviderAlias(models, prefix=PROVIDER_PREFIX, unmatched=upstream_route or UpstreamUnavailable()),
        keys=client_keys,
    )
    management = control_plane(
        upstream,
        localhost_only=settings.amp_restrict_management_to_localhost,
        client_keys=client_keys,
        max_decoded_size=settings.max_body_size,
    )
    return SafePaths(PrefixDispatch(PROVIDER_PREFIX, provider, management))


def app(
    *,
    local_app: ASGIApp,
    local_models: LocalModels | Callable[[str], bool] | Iterable[str],
    settings: Settings | None = None,
    environ: Mapping[str, str] | None = None,
) -> Starlette:
    """The Amp API around your own model server, to mount at ``/api``.

    ``local_app`` serves the standard paths (``/v1/messages``, ``/v1/chat/completions``,
    ``/v1/responses``, ``/v1beta/models/{model}:{action}``...) for the models in
    ``local_models`` (names and globs, or a predicate); everything else goes to the Amp
    upstream. When mounting, run this app's lifespan from yours::

        amp = ampbridge.app(local_app=my_models, local_models=["claude-*"])
        Starlette(routes=[Mount("/api", app=amp)], lifespan=amp.router.lifespan_context)
    """
    settings = settings if settings is not None else Settings()
    client = SharedClient()
    keys = upstream_key_resolver(settings, os.environ if environ is None else environ)
    api = amp_api(
        settings,
        local_app=local_app,
        local_models=local_models,
        upstream=amp_upstream(settings, client, keys),
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with client:
            yield

    return Starlette(routes=[Mount("", app=api)], lifespan=lifespan)
