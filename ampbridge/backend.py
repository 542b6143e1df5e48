"""One configured local backend: where it is, how it authenticates, which models it serves.

A backend speaks one wire format. Its models are configured (names, globs, and name/alias pairs)
or discovered from its own model list, which ``LocalBackends`` refreshes. Clients ask for a model
by its alias (optionally ``prefix/alias``); ``served_names`` are the names it is sent upstream
under (a pool's names in turn, the next one first). ``speaks`` says which endpoints of its wire
format it serves. Several keys are used in turn: each ``auth_for_call()`` (and each read of
``auth``) gives the next one.
"""

from __future__ import annotations

import itertools
import re

import httpx

from .credentials import scrub_query
from .headers import RawHeaders
from .http_client import TargetUrls
from .models import ModelPatterns, WireFormat
from .routes import Endpoint
from .settings import ModelAlias, ProviderConfig

DISCOVERY_TIMEOUT = 10.0

_ENDPOINTS = {
    "anthropic": frozenset({Endpoint.MESSAGES, Endpoint.COUNT_TOKENS, Endpoint.LIST}),
    "google": frozenset({Endpoint.GEMINI, Endpoint.LIST}),
    "chat-completions": frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.LIST}),
    "responses": frozenset({Endpoint.RESPONSES, Endpoint.LIST}),
    "both": frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES, Endpoint.LIST}),
    "chatgpt": frozenset({Endpoint.RESPONSES, Endpoint.LIST}),
}
_DEFAULT_AUTH_HEADER = {"anthropic": "x-api-key", "openai": "bearer", "google": "x-goog-api-key"}
# A Gemini path as a local route has it, and its Vertex-style form.
_GEMINI_PATH = re.compile(rb"^/(?:v1|v1beta|v1alpha)/models(?=/|$)")
_VERTEX_MODELS = b"/v1/publishers/google/models"


class Backend:
    """One configured backend: where it is, how it authenticates, which models it serves."""

    def __init__(self, config: ProviderConfig, *, default_proxy_url: str = "") -> None:
        self.config = config
        self.proxy_url = config.proxy_url or default_proxy_url
        self.name = config.name
        self.wire_format = WireFormat.OPENAI if config.type == "chatgpt" else WireFormat(config.type)
        base = httpx.URL(config.base_url)
        base_path = base.raw_path.rstrip(b"/")
        # A base URL may already end in the API version (an OpenAI one in /v1, as SDKs expect):
        # the /v1 of the local path is then not doubled.
        includes_version = config.base_url_includes_version
        if includes_version is None:
            includes_version = config.type == "chatgpt" or (
                config.type == "openai" and base_path.endswith(b"/v1")
            )
        self.strip_v1 = includes_version
        self.vertex = config.type == "google" and config.path_style == "vertex"
        self.base = base
        self.base_path = base_path
        self.urls = TargetUrls(base)
        self.prefix = config.prefix.lower() + "/" if config.prefix else ""
        self.excluded = ModelPatterns(config.excluded_models)
        self.pools: dict[str, list[str]] = {}  # lowercased client name -> upstream names
        self.client_names: list[str] = []  # configured exact names, as clients ask for them
        patterns: list[str] = []
        for entry in config.models or []:
            if isinstance(entry, ModelAlias):
                self._add_alias(entry.client_name, entry.name)
            else:
                patterns.append(entry)
                if not any(c in entry for c in "*?["):
                    self._add_alias(entry, entry)
        self.turns = {alias: itertools.count() for alias in self.pools}
        self.configured = ModelPatterns(patterns) if config.models is not None else None
        self.listed: list[str] = [name for name in self.client_names if not self._excluded(name)]
        self.discovered: ModelPatterns | None = None
        self.keys = config.keys
        self.key_turn = itertools.count()
        self.auth_style = config.auth_header or _DEFAULT_AUTH_HEADER.get(config.type)
        self.extra_headers: RawHeaders = [
            (name.lower().encode("latin-1"), value.get_secret_value().encode("latin-1"))
            for name, value in config.headers.items()
        ]

    def __repr__(self) -> str:
        return f"Backend(name={self.name!r}, type={self.config.type!r}, base_url={self.config.base_url!r})"

    def _add_alias(self, client_name: str, upstream_name: str) -> None:
        pool = self.pools.setdefault(client_name.lower(), [])
        if not pool:
            self.client_names.append(client_name)
        if upstream_name not in pool:
            pool.append(upstream_name)

    # --- credentials ---------------------------------------------------------------------

    def auth_for_call(self) -> RawHeaders:
        """The headers that authenticate one call: the next key in turn, sent the configured
        way, and the configured extra headers."""
        headers: RawHeaders = []
        if self.keys and self.auth_style is not None:
            key = self.keys[next(self.key_turn) % len(self.keys)].encode("latin-1")
            if self.auth_style == "bearer":
                headers.append((b"authorization", b"Bearer " + key))
            else:
                headers.append((self.auth_style.encode("ascii"), key))
        return headers + self.extra_headers

    @property
    def auth(self) -> RawHeaders:
        """``auth_for_call()``: each read takes the next key."""
        return self.auth_for_call()

    # --- models --------------------------------------------------------------------------

    @property
    def needs_discovery(self) -> bool:
        return self.configured is None

    def _unprefixed(self, model: str) -> str:
        if self.prefix and model.lower().startswith(self.prefix):
            return model[len(self.prefix) :]
        return model

    def _excluded(self, name: str) -> bool:
        return self.excluded.matches(name)

    def serves(self, model: str) -> bool:
        """Whether a client may ask for ``model`` (an alias or name, without a thinking suffix,
        ``prefix/`` optional) here; excluded models never are."""
        model = self._unprefixed(model)
        if self._excluded(model):
            return False
        pool = self.pools.get(model.lower())
        if pool is not None:
            return not all(self._excluded(name) for name in pool)
        patterns = self.configured or self.discovered
        return patterns is not None and patterns.matches(model)

    def served_names(self, model: str) -> list[str]:
        """The names ``model`` (as a client asked for it, without a thinking suffix) may be sent
        upstream under: its alias resolved (case-insensitively), or a pool's names, the one whose
        turn it is first (the rest to fail over to). Each call takes the next turn."""
        model = self._unprefixed(model)
        pool = self._pool(model)
        if len(pool) <= 1:
            return pool
        start = next(self.turns[model.lower()]) % len(pool)
        return pool[start:] + pool[:start]

    def keeps_name(self, model: str) -> bool:
        """Whether ``model`` is sent upstream as asked: no prefix dropped, no alias, no pool (its
        turn is not taken)."""
        return self._pool(self._unprefixed(model)) == [model]

    def _pool(self, model: str) -> list[str]:
        pool = [name for name in self.pools.get(model.lower(), [model]) if not self._excluded(name)]
        return pool or [model]

    def model_names(self) -> list[str]:
        """The names clients may ask for (aliases, or names), without excluded ones; with a
        prefix, each also as ``prefix/name``."""
        names = self.listed
        if self.prefix:
            names = names + [self.config.prefix + "/" + name for name in names]
        return names

    def speaks(self, endpoint: Endpoint) -> bool:
        """Whether this backend serves ``endpoint`` itself (``api-format`` for openai)."""
        kind = self.config.api_format if self.config.type == "openai" else self.config.type
        return endpoint in _ENDPOINTS[kind]

    # --- where -------------------------------------------------------------------------------

    def url(self, raw_path: bytes, query: bytes) -> httpx.URL:
        """The backend URL for a standard path (as raw bytes: an encoded ``%3F`` stays encoded),
        without the client's credential query parameters. Vertex-style backends get
        ``/v1/publishers/google/models/{model}:{action}`` for ``/v1beta/models/{model}:{action}``."""
        tail = raw_path
        if self.vertex:
            tail = _GEMINI_PATH.sub(_VERTEX_MODELS, tail, count=1)
        elif self.strip_v1 and tail.startswith(b"/v1/"):
            tail = tail[3:]
        query = scrub_query(query)
        return self.urls(self.base_path + tail + (b"?" + query if query else b""))

    async def discover(self, client: httpx.AsyncClient) -> None:
        """Ask the backend for its models (``/v1/models``; Gemini: ``/v1beta/models``)."""
        if self.wire_format is WireFormat.GOOGLE:
            url = self.url(b"/v1beta/models", b"pageSize=1000")
        else:
            url = self.url(b"/v1/models", b"limit=1000" if self.wire_format is WireFormat.ANTHROPIC else b"")
        headers = [*self.auth, (b"accept", b"application/json")]
        if self.wire_format is WireFormat.ANTHROPIC:
            headers.append((b"anthropic-version", b"2023-06-01"))
        response = await client.get(url, headers=headers, timeout=DISCOVERY_TIMEOUT)
        response.raise_for_status()
        data = response.json()
        if self.wire_format is WireFormat.GOOGLE:
            names = [str(m.get("name", "")).removeprefix("models/") for m in data.get("models", [])]
        else:
            names = [str(m.get("id", "")) for m in data.get("data", [])]
        names = [name for name in names if name]
        self.listed = [
            *self.client_names,
            *(n for n in names if n not in self.client_names and not self._excluded(n)),
        ]
        self.discovered = ModelPatterns(names)
