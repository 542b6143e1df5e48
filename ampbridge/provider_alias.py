"""``ProviderAlias``: Amp's ``/api/provider/{provider}/...`` paths onto standard API paths.

``/api/provider/anthropic/v1/messages`` becomes ``/v1/messages``,
``/api/provider/openai/chat/completions`` becomes ``/v1/chat/completions``, and Gemini's
Vertex-style ``v1beta1/publishers/google/models/{model}:{action}`` becomes
``/v1beta/models/{model}:{action}`` (the route table in ``routes`` knows them all). What the
request was before is kept in the scope as a ``ProviderCall``, so that ``AmpFallback`` can forward
it to the Amp upstream unchanged.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from . import scope_keys
from .models import WireFormat
from .routes import ApiRoute, CallKind, Endpoint, match_api_path, split_provider_path

DEFAULT_PREFIX = "/api/provider/"


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """An Amp provider request: what it asked for, and the standard path that serves it."""

    provider: str
    kind: CallKind
    wire_format: WireFormat
    endpoint: Endpoint
    local_path: str
    path_model: str | None  # the Gemini path's model, else None
    action: str | None  # the Gemini path's action, else None
    original_path: str
    original_raw_path: bytes
    original_root_path: str
    local_raw_path: bytes  # ``local_path`` as sent on: percent-escapes kept as the client sent them


def list_format(provider: str) -> WireFormat:
    """The list format Amp expects from ``/api/provider/{provider}/v1/models``."""
    if provider == "anthropic":
        return WireFormat.ANTHROPIC
    if provider == "google":
        return WireFormat.GOOGLE
    return WireFormat.OPENAI


def route_path(scope: Scope) -> str:
    """The path below the app's mount point."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def raw_route_path(scope: Scope) -> bytes:
    """The raw (still percent-encoded) path below the app's mount point."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    root = scope.get("root_path", "").encode("latin-1")
    return raw[len(root) :] if root and raw.startswith(root) else raw


def provider_call_for(scope: Scope, route: ApiRoute, prefix: str) -> ProviderCall | None:
    """The call for a matched route; None when the raw path does not match the same route (an
    escape that changes the path's shape once decoded)."""
    raw_split = split_provider_path(raw_route_path(scope).decode("latin-1"), prefix)
    if raw_split is None:
        return None
    provider, raw_rest = raw_split
    raw_route = match_api_path(raw_rest, scope["method"])
    if raw_route is None or raw_route.endpoint is not route.endpoint:
        return None
    return ProviderCall(
        provider=provider,
        kind=route.kind,
        wire_format=route.wire_format or list_format(provider),
        endpoint=route.endpoint,
        local_path=route.local_path,
        path_model=route.path_model,
        action=route.action,
        original_path=scope["path"],
        original_raw_path=scope.get("raw_path") or scope["path"].encode("utf-8"),
        original_root_path=scope.get("root_path", ""),
        local_raw_path=raw_route.local_path.encode("latin-1"),
    )


def parse_provider_call(scope: Scope, prefix: str = DEFAULT_PREFIX) -> ProviderCall | None:
    """The ``ProviderCall`` for a request under ``prefix``, or None when no model route fits."""
    path: str = scope["path"]
    raw_path: bytes | None = scope.get("raw_path")
    root_path: str = scope.get("root_path", "")
    parse = _parse_call if len(path) + len(raw_path or b"") > MAX_KEPT_KEY else _parsed_call
    return parse(path, raw_path, root_path, scope["method"], prefix)


# A client calls a handful of paths, again and again: each one's call is parsed once. A path
# longer than this (with its raw form) is parsed each time, so no client can fill the cache with
# large keys; the root path and prefix are the app's own.
MAX_KEPT_KEY = 1024


@functools.lru_cache(maxsize=1024)
def _parsed_call(
    path: str, raw_path: bytes | None, root_path: str, method: str, prefix: str
) -> ProviderCall | None:
    return _parse_call(path, raw_path, root_path, method, prefix)


def _parse_call(
    path: str, raw_path: bytes | None, root_path: str, method: str, prefix: str
) -> ProviderCall | None:
    scope = {"path": path, "raw_path": raw_path, "root_path": root_path, "method": method}
    split = split_provider_path(route_path(scope), prefix)
    if split is None:
        return None
    route = match_api_path(split[1], method)
    return provider_call_for(scope, route, prefix) if route is not None else None


def provider_call(scope: Scope, prefix: str = DEFAULT_PREFIX) -> ProviderCall | None:
    """The call recorded by ``ProviderAlias``, else parsed from the request's own path."""
    recorded: ProviderCall | None = scope.get(scope_keys.PROVIDER_CALL)
    return recorded or parse_provider_call(scope, prefix)


class ProviderAlias:
    """Serves Amp provider paths with an app that speaks the standard APIs.

    Requests that map onto a model route reach ``app`` with the standard path (and an empty
    ``root_path``: the wrapped app sees the API at its own root). Every other request reaches
    ``app`` as it came.
    """

    def __init__(self, app: ASGIApp, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.app = app
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = parse_provider_call(scope, self.prefix) if scope["type"] == "http" else None
        if call is None:
            await self.app(scope, receive, send)
            return
        scope = {
            **scope,
            "path": call.local_path,
            "raw_path": call.local_raw_path,
            "root_path": "",
            scope_keys.PROVIDER_CALL: call,
        }
        await self.app(scope, receive, send)
