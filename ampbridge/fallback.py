"""``AmpFallback``: serve a model call locally, or forward it to the Amp upstream (SPEC §4.1).

It reads the request body once (bounded), takes the model from it (or from a Gemini path; a body
``json`` cannot read is scanned for its top-level ``"model"``, so an odd body for a local model
is still served locally, bytes unchanged), and decides LOCAL / MAPPED / AMP_CREDITS /
NO_PROVIDER. Upstream-bound requests are replayed byte for byte; local ones get the
compatibility fixes of ``rewrite``. A large body is never parsed to be forwarded, and parsed for
a local call only when its bytes do not prove that the fixes leave all but the model unchanged
(the model is then renamed in place). A large body that starts with its model is instead sent
on while it arrives, along that model's route, and routed again whole if its end names another
(``speculation``). One log line per call records the decision, the models, the status and the
time taken.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import scope_keys
from .call_log import ROUTED_CALL
from .headers import RawHeaders, with_content_length
from .mapping import ModelMapper, RouteDecision, decide
from .models import (
    BodyStreamingModels,
    LocalModelsLike,
    WireFormat,
    as_local_models,
    describe_model,
    model_to_send,
)
from .provider_alias import ProviderCall, provider_call
from .proxy import ReplyBroken
from .request_body import RequestBody, answered_if_unread, read_request_body
from .rewrite import (
    ResponseFixer,
    RewritingSend,
    anthropic_request_may_change,
    call_with_fixes,
    requested_tool_names,
    sanitize_anthropic_request,
)
from .routes import CallKind, dialect_of, with_path_model
from .settings import ModelMapping
from .speculation import Refuted, RouteCheck, Speculation
from .translate.dialect import Dialect
from .vendor_errors import send_vendor_error

logger = logging.getLogger("ampbridge.routing")

DROPPED_BETAS = frozenset({b"context-1m-2025-08-07"})  # needs a plan local keys rarely have


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that first hands over ``body`` (already read), then defers to ``receive``.
    It keeps no reference to the body once handed over."""
    pending = [body]

    async def replayed() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replayed


def local_headers(headers: RawHeaders, body_length: int | None) -> RawHeaders:
    """Headers for the local app: ``Anthropic-Beta`` without entries local keys cannot use, and
    the length of a rewritten body."""
    result: RawHeaders = []
    for name, value in headers:
        if name.lower() == b"anthropic-beta":
            kept = [v.strip() for v in value.split(b",") if v.strip() and v.strip() not in DROPPED_BETAS]
            if kept:
                result.append((name, b",".join(kept)))
        else:
            result.append((name, value))
    return result if body_length is None else with_content_length(result, body_length)


@dataclass(frozen=True, slots=True)
class ModelCall:
    """What a watcher learns about one model call, once it is decided."""

    decision: RouteDecision
    provider: str
    requested: str
    served: str
    dialect: Dialect | None  # the dialect of the reply the client gets
    client_key: str | None


class WatchedSend(Protocol):
    """A ``send`` that observes a reply (token usage, timing) and is told when the call ends."""

    async def __call__(self, message: Message) -> None: ...

    def finish(self) -> None: ...


CallWatcher = Callable[[ModelCall, Send], WatchedSend]


class AmpFallback:
    """Wraps the app that serves models locally.

    ``local_models`` says what that app serves: names and globs, a ``predicate(model)``, or a
    ``LocalModels`` (which also sees the wire format). ``upstream`` receives what is not local,
    exactly as Amp sent it; without it such calls get a 404 naming the model (SDKs do not retry
    a 404). ``upstream_refused``: there is an upstream, but the settings forbid spending Amp
    credits on model calls (``amp-fallback: never``); the error says so. ``watch``, if given,
    wraps the reply's ``send`` of every decided call (token accounting, metrics).

    A large call whose body starts with its model is sent on while the body arrives
    (``speculation``): to the upstream, and to the local app when ``local_models`` is a
    ``BodyStreamingModels`` that says the app streams that call.
    Errors ampbridge answers itself are shaped like the route's vendor API (SPEC §12).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        local_models: LocalModelsLike,
        upstream: ASGIApp | None = None,
        mappings: Sequence[ModelMapping] = (),
        force_mappings: bool = False,
        max_body_size: int = 64 * 1024 * 1024,
        upstream_refused: bool = False,
        watch: CallWatcher | None = None,
    ) -> None:
        self.app = app
        self.watch = watch
        self.upstream_refused = upstream_refused
        self.local = as_local_models(local_models)
        self.streams_body = self.local.streams_body if isinstance(self.local, BodyStreamingModels) else None
        self.upstream = upstream
        self.mapper = ModelMapper(mappings)
        self.force_mappings = force_mappings
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = provider_call(scope) if scope["type"] == "http" else None
        if call is None or call.kind is not CallKind.MODEL:
            await self.app(scope, receive, send)
            return
        speculation = Speculation.of(scope, receive, self.max_body_size)
        if speculation is None:
            body = await read_request_body(scope, receive, send, self.max_body_size, lazy=True)
        else:
            reading = self._speculate(call, scope, speculation, send)
            body = await answered_if_unread(scope, receive, send, self.max_body_size, reading)
        if body is not None:
            await self._route(call, scope, body, receive, send)

    async def _route(
        self, call: ProviderCall, scope: Scope, body: RequestBody, receive: Receive, send: Send
    ) -> None:
        """Route a call whose body has been read whole."""
        model = body.payload.get("model") if body.payload is not None else None
        if body.payload is None:  # large, not JSON, or a number too long to parse: scan for it
            model = (await body.scan()).model
        if not isinstance(model, str) or not model:
            model = call.path_model
        logged = logger.isEnabledFor(logging.INFO)
        recorder = _StatusRecorder(send, logged=logged)
        started = time.perf_counter()
        if model is None:
            decision, resolved = RouteDecision.AMP_CREDITS, None
            if self.upstream is None:
                decision = RouteDecision.NO_PROVIDER
                message = 'Could not read the model of this request (no JSON body with a "model")'
                await send_vendor_error(recorder, call.wire_format, 400, "invalid_request", message)
            else:
                await self._forward(call, scope, replay(body.take_bytes(), receive), recorder)
        else:
            decision, resolved = self._decide(model, call)
            watched = self._watched(call, scope, decision, model, resolved, recorder)
            reply: Send = watched or recorder
            try:
                if decision is RouteDecision.AMP_CREDITS:
                    await self._forward(call, scope, replay(body.take_bytes(), receive), reply)
                elif decision is RouteDecision.NO_PROVIDER:
                    message = _no_provider_message(model, upstream_refused=self.upstream_refused)
                    await send_vendor_error(reply, call.wire_format, 404, "model_not_found", message)
                else:
                    await self._serve_locally(call, scope, body, model, resolved, decision, receive, reply)
            finally:
                if watched is not None:
                    watched.finish()
        if logged:
            _log_decision(decision, call, model, resolved, recorder, started, scope)

    def _decide(self, model: str, call: ProviderCall) -> tuple[RouteDecision, str]:
        return decide(
            model,
            call.wire_format,
            self.local,
            self.mapper,
            force_mappings=self.force_mappings,
            upstream_available=self.upstream is not None,
        )

    async def _speculate(
        self, call: ProviderCall, scope: Scope, speculation: Speculation, send: Send
    ) -> RequestBody | None:
        """Serve a large call along the route of its body's first model while the body arrives
        (see ``speculation``). The whole body, when that route could not be taken or the whole
        body refuted it (then the client has been sent nothing); None once the call is served."""
        model = await speculation.leading_model()
        if model is not None:
            decision, resolved = self._decide(model, call)
            if decision is RouteDecision.AMP_CREDITS or (
                decision is RouteDecision.LOCAL
                and model_to_send(resolved) == model
                and self.streams_body is not None
                and self.streams_body(model, call.wire_format, call.endpoint)
            ):
                if await self._serve_speculatively(call, scope, speculation, model, decision, send):
                    return None
                logger.debug("%s: the whole body changed the route its first model named", call.original_path)
        return await speculation.whole()

    async def _serve_speculatively(
        self,
        call: ProviderCall,
        scope: Scope,
        speculation: Speculation,
        model: str,
        decision: RouteDecision,
        send: Send,
    ) -> bool:
        """The call sent on as it arrives, to the upstream or to the local app with the model
        unchanged. False when the whole body refuted the route: nothing reached the client."""
        logged = logger.isEnabledFor(logging.INFO)
        recorder = _StatusRecorder(send, logged=logged)
        started = 0.0
        watched: WatchedSend | None = None
        fixer: ResponseFixer | None = None
        if decision is RouteDecision.AMP_CREDITS:
            keeps_route = _keeps_model(model)
        else:
            fixer = ResponseFixer(wire_format=call.wire_format, requested_model=None, tool_names={})
            keeps_route = _unchanged_locally(call.wire_format, model, fixer)

        async def confirmed(body: RequestBody) -> bool:
            nonlocal started, watched
            if not await keeps_route(body):
                return False
            # The call starts now, as another starts once its body is read: its time taken,
            # latency and time to first byte leave out the upload.
            started = time.perf_counter()
            watched = self._watched(call, scope, decision, model, model, recorder)
            return True

        async def reply(message: Message) -> None:
            await (watched or recorder)(message)

        speculation.check = confirmed
        try:
            if fixer is None:
                await self._forward(call, scope, speculation.receive, speculation.gate(reply))
            else:
                await self._serve_locally_as_arriving(call, scope, speculation, model, fixer, reply)
            if not await speculation.settled():  # a next hop that returned without the whole body
                return False
        except Refuted:
            return False
        except ReplyBroken:
            # The hop's reply broke off after a part that holds replies back (GzipUnwrap, the
            # reply fixes) took its head, before the route was confirmed: nothing reached the
            # client. It goes as the whole body says; a confirmed route's broken reply is the
            # dispatcher's to answer.
            if speculation.confirmed is None and not await speculation.settled():
                return False
            raise
        finally:
            if watched is not None:  # made once the route was confirmed
                watched.finish()
        if logged:
            _log_decision(decision, call, model, model, recorder, started, scope)
        return True

    async def _serve_locally_as_arriving(
        self,
        call: ProviderCall,
        scope: Scope,
        speculation: Speculation,
        model: str,
        fixer: ResponseFixer,
        send: Send,
    ) -> None:
        """The local app gets the body as it arrives, the model served as asked."""
        local_scope = {**scope, "headers": local_headers(scope["headers"], None), scope_keys.MODEL: model}
        # The gate sits before the fixes: by the reply's start they know the request's tools.
        rewriting = RewritingSend(send, fixer, max_json_size=self.max_body_size)
        await self.app(local_scope, speculation.receive, speculation.gate(rewriting))
        await rewriting.finish()

    def _watched(
        self, call: ProviderCall, scope: Scope, decision: RouteDecision, model: str, resolved: str, send: Send
    ) -> WatchedSend | None:
        if self.watch is None:
            return None
        info = ModelCall(
            decision=decision,
            provider=call.provider,
            requested=model,
            served=resolved,
            dialect=dialect_of(call.wire_format, call.endpoint),
            client_key=scope.get(scope_keys.CLIENT_KEY),
        )
        return self.watch(info, send)

    async def _forward(self, call: ProviderCall, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the request to the Amp upstream exactly as Amp sent it (``receive`` gives its body)."""
        assert self.upstream is not None
        original = {
            **scope,
            "path": call.original_path,
            "raw_path": call.original_raw_path,
            "root_path": call.original_root_path,
        }
        await self.upstream(original, receive, send)

    async def _serve_locally(
        self,
        call: ProviderCall,
        scope: Scope,
        body: RequestBody,
        requested: str,
        resolved: str,
        decision: RouteDecision,
        receive: Receive,
        send: Send,
    ) -> None:
        """Hand the request to the local app with the compatibility fixes applied."""
        mapped = decision is RouteDecision.MAPPED
        resolved = model_to_send(resolved)  # an empty thinking suffix "()" is dropped
        renamed = resolved != requested
        sanitized = call.wire_format is WireFormat.ANTHROPIC
        if _fixable_in_place(body, sanitized=sanitized, renamed=renamed):
            data, changed, tool_names = await _fixed_in_place(body, resolved if renamed else None)
        else:
            await body.parse()
            data, changed, tool_names = _fixed_by_parsing(body, resolved if renamed else None, sanitized)
        local_scope = {
            **scope,
            "headers": local_headers(scope["headers"], len(data) if changed else None),
            scope_keys.MODEL: resolved,
        }
        if renamed and call.path_model is not None:
            path, raw_path = with_path_model(scope["path"], call.local_raw_path, resolved)
            local_scope.update(path=path, raw_path=raw_path)
        fixer = ResponseFixer(
            wire_format=call.wire_format,
            requested_model=requested if mapped else None,
            tool_names=tool_names,
        )
        replayed = replay(data, receive)
        del data  # the replay holds the only reference, and lets go once it is read
        await call_with_fixes(self.app, local_scope, replayed, send, fixer, max_json_size=self.max_body_size)


def _keeps_model(model: str) -> RouteCheck:
    """A check that the whole body is a JSON object whose top-level model is still ``model``."""

    async def keeps(body: RequestBody) -> bool:
        scanned = await body.scan()
        return scanned.is_object and scanned.model == model

    return keeps


def _unchanged_locally(wire_format: WireFormat, model: str, fixer: ResponseFixer) -> RouteCheck:
    """A check that a local call's whole body keeps ``model`` and needs no fix that would change
    a byte (sanitizing, for Anthropic); it tells ``fixer`` the request's tools."""
    sanitized = wire_format is WireFormat.ANTHROPIC
    keeps_model = _keeps_model(model)

    async def unchanged(body: RequestBody) -> bool:
        if not await keeps_model(body) or not _fixable_in_place(body, sanitized=sanitized, renamed=False):
            return False
        fixer.add_tool_names(requested_tool_names({"tools": await body.member("tools")}))
        return True

    return unchanged


def _fixable_in_place(body: RequestBody, *, sanitized: bool, renamed: bool) -> bool:
    """Whether the fixes can be made without parsing the body: it is large and unparsed, its
    bytes prove sanitizing changes nothing, and a rename has one ``model`` member to change."""
    if not body.unparsed or (renamed and body.member_count("model") > 1):
        return False
    messages = body.raw_member("messages") if sanitized else None
    return messages is None or not anthropic_request_may_change(*messages)


async def _fixed_in_place(body: RequestBody, model: str | None) -> tuple[bytes, bool, dict[str, str]]:
    """A large body whose only possible change is its model: read its ``tools``, rename its
    ``model`` where it lies. (data, changed, tool names)"""
    tool_names = requested_tool_names({"tools": await body.member("tools")})
    if model is not None and body.member_count("model"):
        return body.take_with_member("model", model), True, tool_names
    return body.take_bytes(), False, tool_names


def _fixed_by_parsing(
    body: RequestBody, model: str | None, sanitized: bool
) -> tuple[bytes, bool, dict[str, str]]:
    """The fixes applied to the parsed payload (none when the body is not a JSON object)."""
    payload = body.payload
    if payload is None:
        return body.take_bytes(), False, {}
    changed = sanitized and sanitize_anthropic_request(payload)
    tool_names = requested_tool_names(payload)
    if model is not None and "model" in payload:
        payload["model"] = model
        changed = True
    del payload
    return (body.take_rewritten() if changed else body.take_bytes()), changed, tool_names


def _no_provider_message(model: str, *, upstream_refused: bool) -> str:
    if upstream_refused:
        return (
            f"No local backend serves model '{describe_model(model)}', and amp-fallback is 'never' so "
            "it is not sent to Amp (which would use Amp credits). Add a provider that serves it, "
            "map it with amp-model-mappings, or set amp-fallback: allowed."
        )
    return (
        f"No local backend serves model '{describe_model(model)}' and no Amp upstream is configured. "
        "Add a provider that serves it, map it with amp-model-mappings, or set amp-upstream-url."
    )


def _log_decision(
    decision: RouteDecision,
    call: ProviderCall,
    model: str | None,
    resolved: str | None,
    recorder: _StatusRecorder,
    started: float,
    scope: Scope,
) -> None:
    client: tuple[str, int] | None = scope.get("client")
    hint = ""
    if decision is RouteDecision.AMP_CREDITS and model:
        hint = (
            " (uses Amp credits; to serve it locally add a mapping:"
            f" amp-model-mappings: [{{from: '{describe_model(model)}', to: <local model>}}])"
        )
    logger.info(
        "%s model=%s resolved=%s provider=%s path=%s status=%s %.1fms client=%s%s",
        decision,
        describe_model(model),
        describe_model(resolved),
        call.provider,
        call.original_path,
        recorder.status,
        (time.perf_counter() - started) * 1000,
        f"{client[0]}:{client[1]}" if client else "-",
        hint,
    )


class _StatusRecorder:
    """Passes messages on and remembers the response status, for the routing log line. When that
    line will be logged (``logged``), the reply starts with ``ROUTED_CALL`` set."""

    __slots__ = ("logged", "send", "status")

    def __init__(self, send: Send, *, logged: bool) -> None:
        self.send = send
        self.logged = logged
        self.status: int | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self.logged:
                marker = ROUTED_CALL.set(True)
                try:
                    await self.send(message)
                finally:
                    ROUTED_CALL.reset(marker)
                return
        await self.send(message)
