"""The one route table: which paths are model calls, model lists, Amp's control plane, its
thread-actor gateway, its browser pages, or plain API routes for other clients.

``ProviderAlias``, the local backends and the app's dispatcher all read it, so a path can never
be a model call for one part and something else for another. Plain data and regexes only.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from urllib.parse import quote

from .models import WireFormat
from .translate.dialect import Dialect


class CallKind(enum.Enum):
    MODEL = "model"  # names a model; served locally or by the Amp upstream
    LIST = "list"  # the local model list


class Endpoint(enum.StrEnum):
    """What a model call asks for; with the wire format it fixes the request's dialect."""

    CHAT = "chat/completions"
    COMPLETIONS = "completions"
    RESPONSES = "responses"
    MESSAGES = "messages"
    COUNT_TOKENS = "messages/count_tokens"
    GEMINI = "gemini"  # generateContent, streamGenerateContent, countTokens, ...
    LIST = "models"


@dataclass(frozen=True, slots=True)
class ApiRoute:
    """A standard API path below a provider prefix or at the root: ``/v1/messages`` etc."""

    kind: CallKind
    wire_format: WireFormat | None  # None: the list format of whoever asks
    endpoint: Endpoint
    local_path: str  # the standard path that serves it
    path_model: str | None = None  # a Gemini path's model
    action: str | None = None  # a Gemini path's action


_GEMINI_MODEL = r"(?P<model>[^/:]+):(?P<action>[A-Za-z]+)"
# google-genai uses v1; Amp uses v1beta and Vertex's v1beta1/publishers/google form.
_GEMINI_VERSION = r"(?P<version>v1|v1beta|v1alpha)"
_GEMINI_LOCAL = "/{version}/models/{model}:{action}"
_TABLE: tuple[tuple[re.Pattern[str], frozenset[str], str, WireFormat | None, CallKind, Endpoint], ...] = (
    (re.compile(r"(?:v1/)?chat/completions"), frozenset({"POST"}), "/v1/chat/completions",
     WireFormat.OPENAI, CallKind.MODEL, Endpoint.CHAT),
    (re.compile(r"(?:v1/)?completions"), frozenset({"POST"}), "/v1/completions",
     WireFormat.OPENAI, CallKind.MODEL, Endpoint.COMPLETIONS),
    (re.compile(r"(?:v1/)?responses"), frozenset({"POST"}), "/v1/responses",
     WireFormat.OPENAI, CallKind.MODEL, Endpoint.RESPONSES),
    (re.compile(r"v1/messages"), frozenset({"POST"}), "/v1/messages",
     WireFormat.ANTHROPIC, CallKind.MODEL, Endpoint.MESSAGES),
    (re.compile(r"v1/messages/count_tokens"), frozenset({"POST"}), "/v1/messages/count_tokens",
     WireFormat.ANTHROPIC, CallKind.MODEL, Endpoint.COUNT_TOKENS),
    (re.compile(_GEMINI_VERSION + r"/models/" + _GEMINI_MODEL), frozenset({"POST", "GET"}), _GEMINI_LOCAL,
     WireFormat.GOOGLE, CallKind.MODEL, Endpoint.GEMINI),
    (re.compile(r"v1beta1/publishers/google/models/" + _GEMINI_MODEL), frozenset({"POST"}),
     "/v1beta/models/{model}:{action}", WireFormat.GOOGLE, CallKind.MODEL, Endpoint.GEMINI),
    (re.compile(r"(?:v1/)?models"), frozenset({"GET"}), "/v1/models", None, CallKind.LIST, Endpoint.LIST),
    (re.compile(r"v1beta/models"), frozenset({"GET"}), "/v1beta/models",
     WireFormat.GOOGLE, CallKind.LIST, Endpoint.LIST),
)  # fmt: skip


_PATH_MODEL = re.compile(r"(/models/)[^/:]+(:)")


def with_path_model(path: str, raw_path: bytes, model: str) -> tuple[str, bytes]:
    """A Gemini path (decoded and raw) with its model replaced by ``model``."""
    encoded = quote(model, safe="")
    new_path = _PATH_MODEL.sub(lambda m: m[1] + model + m[2], path, count=1)
    new_raw = _PATH_MODEL.sub(lambda m: m[1] + encoded + m[2], raw_path.decode("latin-1"), count=1)
    return new_path, new_raw.encode("latin-1")


def dialect_of(wire_format: WireFormat, endpoint: Endpoint) -> Dialect | None:
    """The request/reply dialect of a model call; None for calls that are not conversations
    (token counts, legacy completions)."""
    if endpoint is Endpoint.COUNT_TOKENS or endpoint is Endpoint.COMPLETIONS or endpoint is Endpoint.LIST:
        return None
    if wire_format is WireFormat.ANTHROPIC:
        return Dialect.ANTHROPIC
    if wire_format is WireFormat.GOOGLE:
        return Dialect.GEMINI
    return Dialect.RESPONSES if endpoint is Endpoint.RESPONSES else Dialect.CHAT


# A request's path is matched by several layers in turn, so matches are kept; a path longer than
# this is matched each time, so no client can fill the cache with large keys.
MAX_KEPT_PATH = 512


def match_api_path(rest: str, method: str) -> ApiRoute | None:
    """The route of ``rest`` (a path without its leading slash, below any provider prefix)."""
    if len(rest) > MAX_KEPT_PATH:
        return _matched(rest, method)
    return _kept_match(rest, method)


@functools.lru_cache(maxsize=1024)
def _kept_match(rest: str, method: str) -> ApiRoute | None:
    return _matched(rest, method)


def _matched(rest: str, method: str) -> ApiRoute | None:
    for pattern, methods, template, wire_format, kind, endpoint in _TABLE:
        found = pattern.fullmatch(rest)
        if found is None or method not in methods:
            continue
        groups = found.groupdict()
        return ApiRoute(
            kind=kind,
            wire_format=wire_format,
            endpoint=endpoint,
            local_path=template.format(**groups),
            path_model=groups.get("model"),
            action=groups.get("action"),
        )
    return None


PROVIDER_PREFIX = "/provider/"  # below the /api mount point
_PROVIDER_REST = re.compile(r"(?P<provider>[a-z0-9][a-z0-9._-]*)/(?P<rest>.+)")


def split_provider_path(path: str, prefix: str = PROVIDER_PREFIX) -> tuple[str, str] | None:
    """``(provider, rest)`` for ``{prefix}{provider}/{rest}``, else None."""
    if not path.startswith(prefix):
        return None
    found = _PROVIDER_REST.fullmatch(path, len(prefix))
    return (found["provider"], found["rest"]) if found else None


def match_provider_path(api_path: str, method: str) -> tuple[str, ApiRoute] | None:
    """``(provider, route)`` for a path below ``/api`` such as ``/provider/anthropic/v1/messages``."""
    split = split_provider_path(api_path)
    route = match_api_path(split[1], method) if split else None
    return (split[0], route) if split and route else None


def match_plain_path(path: str, method: str) -> ApiRoute | None:
    """A root path other clients use (``/v1/messages``, ``/v1beta/models/...``)."""
    if not path.startswith(("/v1/", "/v1beta/", "/v1alpha/")):
        return None
    return match_api_path(path[1:], method)


class RouteKind(enum.Enum):
    MODEL = "model"  # an Amp provider route that names a model (or lists models)
    CONTROL = "control"  # everything else below /api: the Amp control plane
    ACTORS = "actors"  # Amp's thread-actor gateway (HTTP and WebSocket)
    BROWSER = "browser"  # pages a browser opens: login, threads, settings, docs, feeds
    LOCAL = "local"  # plain API routes for other clients, served by local backends only
    HEALTH = "health"
    READY = "ready"
    METRICS = "metrics"
    OTHER = "other"  # none of the above


_BROWSER_ANY_METHOD = re.compile(r"/auth(?:/.*)?")
_BROWSER_READ_ONLY = re.compile(r"/(?:threads(?:/.*)?|threads\.rss|news\.rss|docs(?:/.*)?|settings(?:/.*)?)")
_READ = frozenset({"GET", "HEAD"})


def is_browser_path(path: str, method: str | None) -> bool:
    """One of the root pages Amp's login and web links open in a browser."""
    if _BROWSER_ANY_METHOD.fullmatch(path):
        return True
    return (method is None or method in _READ) and _BROWSER_READ_ONLY.fullmatch(path) is not None


def api_path(path: str) -> str | None:
    """The part of a root path below ``/api`` (``""`` for ``/api`` itself), else None."""
    if path == "/api":
        return ""
    return path[4:] if path.startswith("/api/") else None


def classify_api(api_path: str, method: str | None) -> RouteKind:
    """A path below the ``/api`` mount point: a model route or the control plane."""
    if method is not None and api_path.startswith(PROVIDER_PREFIX) and match_provider_path(api_path, method):
        return RouteKind.MODEL
    return RouteKind.CONTROL


def classify_root(path: str, method: str | None) -> RouteKind:
    """A path at the server's root. ``method`` is None for WebSocket handshakes."""
    below_api = api_path(path)
    if below_api is not None:
        return classify_api(below_api, method)
    if path == "/healthz":
        return RouteKind.HEALTH
    if path == "/readyz":
        return RouteKind.READY
    if path == "/metrics":
        return RouteKind.METRICS
    if path.startswith("/actors/"):
        return RouteKind.ACTORS
    if is_browser_path(path, method):
        return RouteKind.BROWSER
    if method is not None and match_plain_path(path, method):
        return RouteKind.LOCAL
    return RouteKind.OTHER
