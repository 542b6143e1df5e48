"""Local backends of the standalone app (SPEC §5): servers that speak a wire format.

``LocalBackends`` is an ASGI app serving the standard paths (``/v1/messages``,
``/v1/chat/completions``, ``/v1beta/models/{model}:{action}``, the model lists...). Each model
call goes to the first backend of the path's wire format that serves the model, at the same path
under its ``base-url``, with the client's credentials replaced by the backend's own. Backends
configured without ``models`` are asked for their model list, which is cached and refreshed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from . import scope_keys
from .backend import Backend
from .errors import refuse
from .fallback import replay
from .headers import header_value, scrub_request_headers
from .http_client import SharedClient
from .models import WireFormat, describe_model, split_thinking_suffix
from .provider_alias import ProviderCall, route_path
from .proxy import Exchange
from .request_body import read_request_body
from .routes import ApiRoute, CallKind, match_plain_path
from .settings import ProviderConfig
from .vendor_errors import send_vendor_error

logger = logging.getLogger("ampbridge.backends")




class LocalBackends:
    """The standalone app's local model server, built from the configured providers."""

    def __init__(
        self,
        providers: Sequence[ProviderConfig],
        *,
        client: SharedClient,
        max_body_size: int,
        proxy_url: str = "",
    ) -> None:
        self.backends = [Backend(config, default_proxy_url=proxy_url) for config in providers]
        self.shared = client
        self.max_body_size = max_body_size

    def serves(self, model: str, wire_format: WireFormat) -> bool:
        return self.backend_for(model, wire_format) is not None

    def backend_for(self, model: str, wire_format: WireFormat) -> Backend | None:
        base, _ = split_thinking_suffix(model)
        for backend in self.backends:
            if backend.wire_format is wire_format and backend.serves(base):
                return backend
        return None

    def model_names(self, wire_format: WireFormat | None = None) -> list[tuple[str, Backend]]:
        seen: dict[str, Backend] = {}
        for backend in self.backends:
            if wire_format is None or backend.wire_format is wire_format:
                for name in backend.model_names():
                    seen.setdefault(name, backend)
        return list(seen.items())

    # --- discovery -----------------------------------------------------------------------

    @property
    def needs_discovery(self) -> bool:
        return any(backend.needs_discovery for backend in self.backends)

    def adopt_discoveries(self, previous: LocalBackends) -> None:
        """Keep the model lists already discovered for backends whose config did not change."""
        for backend in self.backends:
            for old in previous.backends:
                if old.config == backend.config and old.discovered is not None:
                    backend.listed, backend.discovered = old.listed, old.discovered
                    break

    async def discover_all(self, *, only_undiscovered: bool = False) -> bool:
        """Ask every backend configured without ``models`` for its list; True when all answered."""
        pending = [
            b
            for b in self.backends
            if b.needs_discovery and not (only_undiscovered and b.discovered is not None)
        ]
        results: list[bool] = []

        async def discover(backend: Backend) -> None:
            results.append(await self._discover(backend))

        async with anyio.create_task_group() as tasks:
            for backend in pending:
                tasks.start_soon(discover, backend)
        return all(results)

    async def _discover(self, backend: Backend) -> bool:
        try:
            await backend.discover(self.shared.client_for(backend.proxy_url))
        except Exception as error:  # a backend answering garbage must not stop the others
            logger.warning(
                "backend %s: cannot list its models (%s); will retry", backend.name, type(error).__name__
            )
            return False
        logger.info("backend %s serves %d models", backend.name, len(backend.listed))
        return True

    # --- serving -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = route_path(scope)
        method = scope["method"]
        route = match_plain_path(path, method)
        if route is None:
            await refuse(scope, receive, send, 404, "not_found", f"No local route for {method} {path}")
            return
        if route.kind is CallKind.LIST:
            await self._list(route, scope, receive, send)
            return
        assert route.wire_format is not None
        await self._serve(route.wire_format, route.path_model, scope, receive, send)

    async def _list(self, route: ApiRoute, scope: Scope, receive: Receive, send: Send) -> None:
        call: ProviderCall | None = scope.get(scope_keys.PROVIDER_CALL)
        if call is not None:  # a provider's list: its own format, its own backends
            list_format, only = call.wire_format, call.wire_format
        elif route.wire_format is not None:
            list_format, only = route.wire_format, route.wire_format
        else:  # every local model; Anthropic SDKs (they send anthropic-version) get their format
            anthropic = header_value(scope["headers"], b"anthropic-version") is not None
            list_format, only = (WireFormat.ANTHROPIC if anthropic else WireFormat.OPENAI), None
        await JSONResponse(model_list(list_format, self.model_names(only)))(scope, receive, send)

    async def _serve(
        self, wire_format: WireFormat, path_model: str | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        model = scope.get(scope_keys.MODEL)
        if model is None and path_model is None:
            body = await read_request_body(scope, receive, send, self.max_body_size)
            if body is None:
                return
            model = body.payload.get("model") if body.payload else None
            receive = replay(body.take_bytes(), receive)
            del body
        model = model or path_model
        if not isinstance(model, str):
            await send_vendor_error(send, wire_format, 400, "invalid_request", "The request names no model")
            return
        backend = self.backend_for(model, wire_format)
        if backend is None:
            message = f"No local backend of type {wire_format.value} serves model '{describe_model(model)}'"
            await send_vendor_error(send, wire_format, 404, "model_not_found", message)
            return
        headers = scrub_request_headers(scope["headers"])
        headers.append((b"accept-encoding", b"identity"))
        headers.extend(backend.auth)

        async def failed(scope: Scope, receive: Receive, send: Send, status: int) -> None:
            verb = "timed out" if status == 504 else "cannot be reached"
            message = f"Local backend {backend.name!r} {verb}"
            await send_vendor_error(send, wire_format, status, "backend_unreachable", message)

        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        exchange = Exchange(
            self.shared.client_for(backend.proxy_url),
            url=backend.url(raw_path, scope.get("query_string", b"")),
            headers=headers,
            max_body_size=self.max_body_size,
            fail=failed,
        )
        await exchange.run(scope, receive, send)


def model_list(wire_format: WireFormat, models: list[tuple[str, Backend]]) -> dict:
    if wire_format is WireFormat.ANTHROPIC:
        data = [
            {
                "type": "model",
                "id": name,
                "display_name": name,
                "created_at": "1970-01-01T00:00:00Z",
            }
            for name, _ in models
        ]
        return {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    if wire_format is WireFormat.GOOGLE:
        return {
            "models": [
                {
                    "name": f"models/{name}",
                    "displayName": name,
                    "supportedGenerationMethods": [
                        "generateContent",
                        "streamGenerateContent",
                        "countTokens",
                    ],
                }
                for name, _ in models
            ]
        }
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": backend.name}
            for name, backend in models
        ],
    }
