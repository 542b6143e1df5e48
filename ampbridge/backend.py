"""One configured local backend: where it is, how it authenticates, which models it serves.

A backend speaks one wire format. Its models are configured (names and globs) or discovered from
its own model list, which ``LocalBackends`` refreshes. ``served_name`` is the name a model is
sent to the backend under; ``speaks`` says which endpoints of its wire format it serves.
"""

from __future__ import annotations

import httpx

from .credentials import scrub_query
from .headers import RawHeaders
from .models import ModelPatterns, WireFormat
from .routes import Endpoint
from .settings import ProviderConfig

DISCOVERY_TIMEOUT = 10.0


class Backend:
    """One configured backend: where it is, how it authenticates, which models it serves."""

    def __init__(self, config: ProviderConfig, *, default_proxy_url: str = "") -> None:
        self.config = config
        self.proxy_url = config.proxy_url or default_proxy_url
        self.name = config.name
        self.wire_format = WireFormat(config.type)
        base = httpx.URL(config.base_url)
        base_path = base.raw_path.rstrip(b"/")
        # An OpenAI base URL may already end in /v1 (as SDKs expect): never double it.
        self.strip_v1 = self.wire_format is WireFormat.OPENAI and base_path.endswith(b"/v1")
        self.base = base
        self.base_path = base_path
        self.configured = ModelPatterns(config.models) if config.models is not None else None
        self.listed: list[str] = [m for m in (config.models or []) if not any(c in m for c in "*?[")]
        self.discovered: ModelPatterns | None = None
        self.auth = self._auth_headers(config)

    def __repr__(self) -> str:
        return (
            f"Backend(name={self.name!r}, type={self.wire_format.value!r}, base_url={self.config.base_url!r})"
        )

    @staticmethod
    def _auth_headers(config: ProviderConfig) -> RawHeaders:
        headers: RawHeaders = []
        key = config.api_key.get_secret_value()
        if key:
            if config.type == "anthropic":
                headers.append((b"x-api-key", key.encode("latin-1")))
            elif config.type == "openai":
                headers.append((b"authorization", b"Bearer " + key.encode("latin-1")))
            else:
                headers.append((b"x-goog-api-key", key.encode("latin-1")))
        for name, value in config.headers.items():
            headers.append((name.lower().encode("latin-1"), value.get_secret_value().encode("latin-1")))
        return headers

    @property
    def needs_discovery(self) -> bool:
        return self.configured is None

    def serves(self, model: str) -> bool:
        patterns = self.configured or self.discovered
        return patterns is not None and patterns.matches(model)

    def model_names(self) -> list[str]:
        return self.listed

    def served_name(self, model: str) -> str:
        """The name ``model`` (as a client asked for it, without a thinking suffix) is sent
        to this backend under."""
        return model

    def speaks(self, endpoint: Endpoint) -> bool:
        """Whether this backend serves ``endpoint`` of its wire format."""
        return True

    def url(self, raw_path: bytes, query: bytes) -> httpx.URL:
        """The backend URL for a standard path (as raw bytes: an encoded ``%3F`` stays encoded),
        without the client's credential query parameters."""
        tail = raw_path
        if self.strip_v1 and tail.startswith(b"/v1/"):
            tail = tail[3:]
        query = scrub_query(query)
        return self.base.copy_with(raw_path=self.base_path + tail + (b"?" + query if query else b""))

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
        self.listed = [name for name in names if name]
        self.discovered = ModelPatterns(self.listed)
