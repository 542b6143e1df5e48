"""``ProviderAlias``: Amp's ``/api/provider/{provider}/...`` paths onto standard API paths.

``/api/provider/anthropic/v1/messages`` becomes ``/v1/messages``,
``/api/provider/openai/chat/completions`` becomes ``/v1/chat/completions``, and Gemini's
Vertex-style ``v1beta1/publishers/google/models/{model}:{action}`` becomes
``/v1beta/models/{model}:{action}``. What the request was before is kept in the scope as a
``ProviderCall``, so that ``AmpFallback`` can forward it to the Amp upstream unchanged.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from .models import WireFormat

PROVIDER_CALL_SCOPE = "ampbridge.provider_call"
DEFAULT_PREFIX = "/api/provider/"


class CallKind(enum.Enum):
    MODEL = "model"  # a model call: it names a model and is served locally or upstream
    LIST = "list"  # the local model list


_PROVIDER = r"(?P<provider>[a-z0-9][a-z0-9._-]*)"
_GEMINI_MODEL = r"(?P<model>[^/:]+):(?P<action>[A-Za-z]+)"
_GEMINI_VERSION = r"(?P<version>v1|v1beta|v1alpha)"  # google-genai uses v1; Amp, v1beta and Vertex's v1beta1
# (pattern on the rest of the path, methods, local path template, wire format, kind)
_ROUTES: tuple[tuple[re.Pattern[str], frozenset[str], str, WireFormat | None, CallKind], ...] = (
    (
        re.compile(r"(?:v1/)?chat/completions"),
        frozenset({"POST"}),
        "/v1/chat/completions",
        WireFormat.OPENAI,
        CallKind.MODEL,
    ),
    (
        re.compile(r"(?:v1/)?completions"),
        frozenset({"POST"}),
        "/v1/completions",
        WireFormat.OPENAI,
        CallKind.MODEL,
    ),
    (
        re.compile(r"(?:v1/)?responses"),
        frozenset({"POST"}),
        "/v1/responses",
        WireFormat.OPENAI,
        CallKind.MODEL,
    ),
    (
        re.compile(r"v1/messages"),
        frozenset({"POST"}),
        "/v1/messages",
        WireFormat.ANTHROPIC,
        CallKind.MODEL,
    ),
    (
        re.compile(r"v1/messages/count_tokens"),
        frozenset({"POST"}),
        "/v1/messages/count_tokens",
        WireFormat.ANTHROPIC,
        CallKind.MODEL,
    ),
    (
        re.compile(_GEMINI_VERSION + r"/models/" + _GEMINI_MODEL),
        frozenset({"POST", "GET"}),
        "/{version}/models/{model}:{action}",
        WireFormat.GOOGLE,
        CallKind.MODEL,
    ),
    (
        re.compile(r"v1beta1/publishers/google/models/" + _GEMINI_MODEL),
        frozenset({"POST"}),
        "/v1beta/models/{model}:{action}",
        WireFormat.GOOGLE,
        CallKind.MODEL,
    ),
    (re.compile(r"(?:v1/)?models"), frozenset({"GET"}), "/v1/models", None, CallKind.LIST),
    (
        re.compile(r"v1beta/models"),
        frozenset({"GET"}),
        "/v1beta/models",
        WireFormat.GOOGLE,
        CallKind.LIST,
    ),
)
_PROVIDER_PATH = re.compile(_PROVIDER + r"/(?P<rest>.+)")


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """An Amp provider request: what it asked for, and the standard path that serves it."""

    provider: str
    kind: CallKind
    wire_format: WireFormat
    local_path: str
    path_model: str | None  # the Gemini path's model, else None
    original_path: str
    original_raw_path: bytes
    original_root_path: str


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
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def parse_provider_call(scope: Scope, prefix: str = DEFAULT_PREFIX) -> ProviderCall | None:
    """The ``ProviderCall`` for a request under ``prefix``, or None when no local route fits."""
    relative = route_path(scope)
    if not relative.startswith(prefix):
        return None
    match = _PROVIDER_PATH.fullmatch(relative, len(prefix))
    if match is None:
        return None
    provider, rest = match["provider"], match["rest"]
    method = scope["method"]
    for pattern, methods, template, wire, kind in _ROUTES:
        route = pattern.fullmatch(rest)
        if route is None or method not in methods:
            continue
        groups = route.groupdict()
        return ProviderCall(
            provider=provider,
            kind=kind,
            wire_format=wire or list_format(provider),
            local_path=template.format(**groups),
            path_model=groups.get("model"),
            original_path=scope["path"],
            original_raw_path=scope.get("raw_path") or scope["path"].encode("utf-8"),
            original_root_path=scope.get("root_path", ""),
        )
    return None


def provider_call(scope: Scope, prefix: str = DEFAULT_PREFIX) -> ProviderCall | None:
    """The call recorded by ``ProviderAlias``, else parsed from the request's own path."""
    return scope.get(PROVIDER_CALL_SCOPE) or parse_provider_call(scope, prefix)


class ProviderAlias:
    """Serves Amp provider paths with an app that speaks the standard APIs.

    Requests that map onto a local route reach ``app`` with the standard path (and an empty
    ``root_path``: the wrapped app sees the API at its own root). Other requests under the prefix
    go to ``unmatched`` (the Amp upstream, in ``ampbridge.app``) or, without it, to ``app`` as
    they are. Requests outside the prefix always go to ``app`` unchanged.
    """

    def __init__(
        self, app: ASGIApp, *, prefix: str = DEFAULT_PREFIX, unmatched: ASGIApp | None = None
    ) -> None:
        self.app = app
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.unmatched = unmatched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = parse_provider_call(scope, self.prefix) if scope["type"] == "http" else None
        if call is None:
            inside = scope["type"] in ("http", "websocket") and route_path(scope).startswith(self.prefix)
            await (self.unmatched if inside and self.unmatched else self.app)(scope, receive, send)
            return
        local_path = call.local_path
        scope = {
            **scope,
            "path": local_path,
            "raw_path": local_path.encode("utf-8"),
            "root_path": "",
            PROVIDER_CALL_SCOPE: call,
        }
        await self.app(scope, receive, send)
