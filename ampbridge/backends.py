"""Local backends of the standalone app (SPEC §5, §14, §15): servers that speak a wire format.

``LocalBackends`` is an ASGI app serving the standard paths (``/v1/messages``,
``/v1/chat/completions``, ``/v1beta/models/{model}:{action}``, the model lists...). A model call
goes to the first backend that serves the model and speaks the call's own endpoint, with the
bytes unchanged; else to the first that serves it in another dialect, through the translator
(``translating_exchange``). HTTP backends get the standard path under their ``base-url``, with
the client's credentials replaced by the backend's own; a ``type: chatgpt`` provider is served by
its ``ChatGPTBackend``. Backends configured without ``models`` are asked for their model list,
which is cached and refreshed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from . import scope_keys
from .backend import Backend
from .chatgpt_provider import ChatGPTProvider, is_chatgpt
from .errors import refuse
from .fallback import replay
from .headers import header_value, scrub_request_headers, with_content_length
from .http_client import SharedClient
from .models import WireFormat, describe_model, split_thinking_suffix
from .provider_alias import ProviderCall, route_path
from .proxy import Exchange, ReplyBroken
from .request_body import RequestBody, read_request_body
from .rewrite import ResponseFixer, call_with_fixes
from .routes import ApiRoute, CallKind, Endpoint, dialect_of, match_plain_path, with_path_model
from .settings import ConfigError, ProviderConfig
from .translate import Dialect
from .translating_exchange import (
    DIALECT_ENDPOINT,
    GEMINI_CONVERSATION_ACTIONS,
    Relay,
    TranslatedCall,
    client_streams,
    gemini_wants_sse,
)
from .translating_exchange import run as run_translated
from .vendor_errors import send_vendor_error

logger = logging.getLogger("ampbridge.backends")

AnyBackend = Backend | ChatGPTProvider
# The dialects a backend of each wire format may be called in, the first preferred when the
# call must be translated anyway (local model servers speak Chat Completions far more often).
_FORMAT_DIALECTS = {
    WireFormat.ANTHROPIC: (Dialect.ANTHROPIC,),
    WireFormat.GOOGLE: (Dialect.GEMINI,),
    WireFormat.OPENAI: (Dialect.CHAT, Dialect.RESPONSES),
}
TOKEN_COUNT_ACTIONS = frozenset({"countTokens"})
BYTES_PER_TOKEN = 4  # the usual rough ratio for English text and JSON


@dataclass(frozen=True, slots=True)
class ServePlan:
    """Who serves a call, and in which dialect: ``target`` None means the call's own, bytes
    unchanged; otherwise the call is translated to ``target`` and its reply back."""

    backend: AnyBackend
    target: Dialect | None

    @property
    def translated(self) -> bool:
        return self.target is not None


def spoken_dialects(backend: AnyBackend) -> list[Dialect]:
    """The conversation dialects ``backend`` can be called in, preferred first."""
    return [d for d in _FORMAT_DIALECTS[backend.wire_format] if backend.speaks(DIALECT_ENDPOINT[d])]


class LocalBackends:
    """The standalone app's local model server, built from the configured providers.

    ``chatgpt_dir`` is where ``ampbridge login chatgpt`` keeps logins; it is needed only when a
    ``type: chatgpt`` provider is configured.
    """

    def __init__(
        self,
        providers: Sequence[ProviderConfig],
        *,
        client: SharedClient,
        max_body_size: int,
        proxy_url: str = "",
        chatgpt_dir: Path | None = None,
    ) -> None:
        self.backends: list[AnyBackend] = []
        self.discovery_failures: dict[str, str] = {}  # backend name -> the failure last logged
        for config in providers:
            if is_chatgpt(config):
                if chatgpt_dir is None:
                    raise ConfigError(f"provider {config.name!r}: type chatgpt needs its logins folder")
                provider = ChatGPTProvider(
                    config,
                    client=client,
                    data_dir=chatgpt_dir,
                    max_body_size=max_body_size,
                    default_proxy_url=proxy_url,
                )
                self.backends.append(provider)
            else:
                self.backends.append(Backend(config, default_proxy_url=proxy_url))
        self.shared = client
        self.max_body_size = max_body_size

    # --- which backend serves a call -----------------------------------------------------

    def serves(self, model: str, wire_format: WireFormat) -> bool:
        """Whether some backend serves ``model``: in ``wire_format`` itself or through the
        translator (so any backend that serves it in a dialect it speaks)."""
        base, _ = split_thinking_suffix(model)
        return any(backend.serves(base) and spoken_dialects(backend) for backend in self.backends)

    def plan(
        self, model: str, wire_format: WireFormat, endpoint: Endpoint, action: str | None = None
    ) -> ServePlan | None:
        """Which backend serves ``model`` for a call of ``wire_format`` / ``endpoint``: one that
        speaks the call's own endpoint (bytes unchanged), else one reached by translation
        (backends of the call's wire format first). None when no backend can serve it so."""
        base, _ = split_thinking_suffix(model)
        serving = sorted(
            (b for b in self.backends if b.serves(base)), key=lambda b: b.wire_format is not wire_format
        )
        for backend in serving:
            if backend.wire_format is wire_format and backend.speaks(endpoint):
                return ServePlan(backend, None)
        source = dialect_of(wire_format, endpoint)
        if source is None or (source is Dialect.GEMINI and action not in GEMINI_CONVERSATION_ACTIONS):
            return None  # token counts, legacy completions, embeddings: nothing to translate to
        for backend in serving:
            dialects = spoken_dialects(backend)
            if dialects:
                return ServePlan(backend, source if source in dialects else dialects[0])
        return None

    def streams_body(self, model: str, wire_format: WireFormat, endpoint: Endpoint) -> bool:
        """Whether a call for ``model`` goes to its backend with its bytes as they arrive: in its
        own dialect, under the name asked for, to an HTTP backend. (Translated and renamed calls,
        and a ChatGPT provider's, read the body whole first.)"""
        base, _ = split_thinking_suffix(model)
        plan = self.plan(model, wire_format, endpoint)
        return (
            plan is not None
            and not plan.translated
            and isinstance(plan.backend, Backend)
            and plan.backend.keeps_name(base)
        )

    def model_names(self, wire_format: WireFormat | None = None) -> list[tuple[str, AnyBackend]]:
        seen: dict[str, AnyBackend] = {}
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
        """Keep the model lists already discovered for backends whose config did not change,
        and a ChatGPT provider's account pool (its cooldowns and turn)."""
        for index, backend in enumerate(self.backends):
            for old in previous.backends:
                if old.config != backend.config:
                    continue
                if isinstance(old, ChatGPTProvider) and isinstance(backend, ChatGPTProvider):
                    self.backends[index] = old
                    break
                if isinstance(old, Backend) and isinstance(backend, Backend) and old.discovered is not None:
                    backend.listed, backend.discovered = old.listed, old.discovered
                    break

    async def discover_all(self, *, only_undiscovered: bool = False) -> bool:
        """Ask every backend configured without ``models`` for its list; True when all answered."""
        pending = [
            b
            for b in self.backends
            if isinstance(b, Backend)
            and b.needs_discovery
            and not (only_undiscovered and b.discovered is not None)
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
            failure = type(error).__name__
            if self.discovery_failures.get(backend.name) != failure:  # logged once, until it changes
                self.discovery_failures[backend.name] = failure
                logger.warning("backend %s: cannot list its models (%s); will retry", backend.name, failure)
            return False
        self.discovery_failures.pop(backend.name, None)
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
        await self._serve(route, scope, receive, send)

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

    async def _serve(self, route: ApiRoute, scope: Scope, receive: Receive, send: Send) -> None:
        assert route.wire_format is not None
        wire_format = route.wire_format
        model: Any = scope.get(scope_keys.MODEL)
        body: RequestBody | None = None
        if model is None and route.path_model is None:
            body = await read_request_body(scope, receive, send, self.max_body_size)
            if body is None:
                return
            model = body.payload.get("model") if body.payload else None
            if not isinstance(model, str):
                model = (await body.scan()).model
        model = model or route.path_model
        if not isinstance(model, str):
            await send_vendor_error(send, wire_format, 400, "invalid_request", "The request names no model")
            return
        plan = self.plan(model, wire_format, route.endpoint, route.action)
        if plan is None:
            await self._not_served(route, model, body, scope, receive, send)
            return
        base, suffix = split_thinking_suffix(model)
        # A pool's names, its next one first (the turn is taken once per call), the rest to fail
        # over to; another backend's alias resolved; else the name as asked.
        names = plan.backend.served_names(base)
        served = names[0]
        renamed = served != base
        if body is None and (plan.translated or renamed):
            body = await read_request_body(scope, receive, send, self.max_body_size)
            if body is None:
                return
        if plan.target is None:
            sent = [name + suffix for name in names] if renamed else []
            await self._pass_through(plan.backend, route, model, sent, body, scope, receive, send)
            return
        assert body is not None
        payload, body.payload = body.payload, None
        del body
        if payload is None:
            message = "The request body is not a JSON object: it cannot be translated for this backend"
            await send_vendor_error(send, wire_format, 400, "invalid_request", message)
            return
        source = dialect_of(wire_format, route.endpoint)
        assert source is not None
        stream = client_streams(source, payload, route.action)
        gemini_sse = gemini_wants_sse(scope.get("query_string", b""))
        logger.debug(
            "%s: %s call translated to %s for %s",
            describe_model(model),
            source,
            plan.target,
            plan.backend.name,
        )

        async def translated(name: str, relay: Relay, reply: Send) -> None:
            assert payload is not None and plan.target is not None  # (for the type checker)
            call = TranslatedCall(
                source=source,
                target=plan.target,
                requested_model=base,
                sent_model=name + suffix,
                stream=stream,
                gemini_sse=gemini_sse,
            )
            await run_translated(call, payload, scope, receive, reply, relay)  # payload is only read

        await self._in_turn(plan.backend, wire_format, names, send, translated)

    async def _pass_through(
        self,
        backend: AnyBackend,
        route: ApiRoute,
        model: str,
        names: list[str],
        body: RequestBody | None,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """The call in its own dialect: bytes unchanged, unless the backend knows the model
        under other ``names`` (an alias, or a pool's names in turn, see ``_in_turn``). Then the
        model is renamed in the body (and a Gemini path), and the reply carries the asked-for
        one."""
        if not names:
            relay = self._relay(backend, route.wire_format)
            if body is not None:
                receive = replay(body.take_bytes(), receive)
            await relay(scope, receive, send)
            return
        assert body is not None and route.wire_format is not None
        fixer = ResponseFixer(wire_format=route.wire_format, requested_model=model, tool_names={})
        unsent: RequestBody | None = body  # the call as asked, until its first attempt takes it
        del body
        sent_before: bytes | None = None  # what the previous attempt sent, when a name may follow

        async def renamed(name: str, relay: Relay, reply: Send) -> None:
            nonlocal unsent, sent_before
            # A retry sends the previous attempt's bytes again, under the next name.
            if unsent is None:
                assert sent_before is not None
                unsent = await RequestBody.of_bytes(sent_before, lazy=False)
            renamed_scope, data = self._renamed(route, unsent, name, scope)
            unsent = None
            sent_before = data if name != names[-1] else None
            replayed = replay(data, receive)
            del data  # the replay (and a retry) hold it, and let go once it is read
            await call_with_fixes(
                relay, renamed_scope, replayed, reply, fixer, max_json_size=self.max_body_size
            )

        await self._in_turn(backend, route.wire_format, names, send, renamed)

    async def _in_turn(
        self,
        backend: AnyBackend,
        wire_format: WireFormat | None,
        names: list[str],
        send: Send,
        attempt: Callable[[str, Relay, Send], Awaitable[None]],
    ) -> None:
        """``attempt(name, relay, reply)`` under each of ``names`` in turn, until the backend's
        reply to one does not fail before any output (``fails_over``): a failed reply is dropped
        and the call sent again under the next name, as CLIProxyAPI's pools do. The last name's
        reply is the client's, whatever it is. ampbridge's own 502/504 ends the turn: the
        request may have reached the backend (a second call would be a second bill), and a
        pool's names share it."""
        for name, next_name in zip(names, [*names[1:], None], strict=True):
            guard = _FailingOver(send) if next_name is not None else None
            relay = self._relay(backend, wire_format, own_failure=guard.keep if guard else None)
            try:
                await attempt(name, relay, guard or send)
            except ReplyBroken:
                if guard is None or guard.failed is None:
                    raise  # the client has part of this reply
            if guard is None or guard.failed is None:
                return
            logger.warning(
                "backend %s: %s answered %s; sending the call as %s",
                backend.name,
                describe_model(name),
                guard.failed,
                describe_model(next_name),
            )

    @staticmethod
    def _renamed(route: ApiRoute, body: RequestBody, name: str, scope: Scope) -> tuple[Scope, bytes]:
        """The scope and body bytes of the call sent under ``name``; the body is released."""
        renamed_scope = dict(scope)
        if body.payload is not None and "model" in body.payload:
            body.payload["model"] = name
            data = body.take_rewritten()
            renamed_scope["headers"] = with_content_length(scope["headers"], len(data))
        else:
            data = body.take_bytes()
        if route.path_model is not None:
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
            renamed_scope["path"], renamed_scope["raw_path"] = with_path_model(scope["path"], raw_path, name)
        return renamed_scope, data

    async def _not_served(
        self,
        route: ApiRoute,
        model: str,
        body: RequestBody | None,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """No backend serves this call as asked: a token count for a model served in another
        dialect is estimated here; other calls get a vendor-shaped error."""
        assert route.wire_format is not None
        wire_format = route.wire_format
        if not self.serves(model, wire_format):
            message = f"No local backend serves model '{describe_model(model)}'"
            await send_vendor_error(send, wire_format, 404, "model_not_found", message)
            return
        counting = route.endpoint is Endpoint.COUNT_TOKENS or route.action in TOKEN_COUNT_ACTIONS
        if not counting:
            what = f":{route.action}" if route.action else f"/{route.endpoint.value}"
            message = (
                f"Model '{describe_model(model)}' is served by a backend of another format, and "
                f"{what} calls are not translated; use the conversation endpoint of this API"
            )
            await send_vendor_error(send, wire_format, 400, "unsupported_endpoint", message)
            return
        if body is None:
            body = await read_request_body(scope, receive, send, self.max_body_size)
            if body is None:
                return
        tokens = estimate_tokens(body.take_bytes())
        answer = {"input_tokens": tokens} if wire_format is WireFormat.ANTHROPIC else {"totalTokens": tokens}
        await JSONResponse(answer)(scope, receive, send)

    def _relay(
        self,
        backend: AnyBackend,
        wire_format: WireFormat | None,
        *,
        own_failure: Callable[[], None] | None = None,
    ) -> Relay:
        """What sends a request on a standard path to ``backend`` and relays its reply.
        ``own_failure`` is called before ampbridge answers 502/504 itself (the backend cannot be
        reached, timed out, or broke off)."""
        if isinstance(backend, ChatGPTProvider):

            async def to_chatgpt(scope: Scope, receive: Receive, send: Send) -> None:
                headers = scrub_request_headers(scope["headers"])
                length = header_value(scope["headers"], b"content-length")
                if length is not None:
                    headers.append((b"content-length", length))
                await backend({**scope, "headers": headers}, receive, send)

            return to_chatgpt

        async def failed(scope: Scope, receive: Receive, send: Send, status: int) -> None:
            if own_failure is not None:
                own_failure()
            verb = "timed out" if status == 504 else "cannot be reached"
            message = f"Local backend {backend.name!r} {verb}"
            await send_vendor_error(send, wire_format, status, "backend_unreachable", message)

        async def to_backend(scope: Scope, receive: Receive, send: Send) -> None:
            headers = scrub_request_headers(scope["headers"])
            headers.append((b"accept-encoding", b"identity"))
            headers.extend(backend.auth)
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
            exchange = Exchange(
                self.shared.route_for(backend.proxy_url),
                url=backend.url(raw_path, scope.get("query_string", b"")),
                headers=headers,
                max_body_size=self.max_body_size,
                fail=failed,
            )
            await exchange.run(scope, receive, send)

        return to_backend


def fails_over(status: int) -> bool:
    """Whether a backend's reply with ``status`` failed before any output, so that the call may
    go to a pool's next name: a timeout, a rate limit, or a server error. A 4xx about the request
    itself would fail under any name."""
    return status in (408, 429) or status >= 500


class _FailingOver:
    """``send`` for an attempt a pool's next name may repeat: a backend's failed reply
    (``fails_over``) is dropped whole, and ``failed`` keeps its status; any other reply, and one
    ampbridge makes itself once ``keep`` was called, passes."""

    __slots__ = ("failed", "kept", "send")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.failed: int | None = None
        self.kept = False

    def keep(self) -> None:
        self.kept = True

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and not self.kept and fails_over(message["status"]):
            self.failed = message["status"]
        if self.failed is None:
            await self.send(message)


def estimate_tokens(body: bytes) -> int:
    """A rough input-token count for a request that no backend can count: its size / 4."""
    return max(1, len(body) // BYTES_PER_TOKEN)


def model_list(wire_format: WireFormat, models: list[tuple[str, AnyBackend]]) -> dict[str, Any]:
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
