"""A model call served by a backend of another dialect (SPEC §14): the request is translated
before the backend sees it, and the reply on its way back, event by event for streams.

``TranslatedCall`` is plain data worked out from the client's request; ``run`` hands the
translated request to whatever serves the target dialect's standard path (an HTTP backend's
exchange, or an ASGI backend such as ChatGPT's) and wraps ``send`` in a ``TranslatingSend``.
The client gets the reply in the dialect it asked for, under the model name it asked for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Scope, Send

from .fallback import replay
from .headers import RawHeaders
from .jsonutil import dump_json
from .routes import Endpoint
from .translate import Dialect, ReplyTranslator, TranslatingSend, translate_request

ANTHROPIC_VERSION = b"2023-06-01"
# Headers that describe the client's own request and are rebuilt for the translated one.
_REBUILT = frozenset({b"content-type", b"content-length", b"accept", b"transfer-encoding"})
# Vendor-specific request headers: they travel only to a backend of that vendor's dialect.
_VENDOR_PREFIXES: dict[bytes, frozenset[Dialect]] = {
    b"anthropic-": frozenset({Dialect.ANTHROPIC}),
    b"x-stainless-": frozenset(),  # SDK telemetry about the client's SDK, not the backend's
    b"openai-": frozenset({Dialect.CHAT, Dialect.RESPONSES}),
    b"x-goog-": frozenset({Dialect.GEMINI}),
}
DIALECT_ENDPOINT = {
    Dialect.ANTHROPIC: Endpoint.MESSAGES,
    Dialect.CHAT: Endpoint.CHAT,
    Dialect.RESPONSES: Endpoint.RESPONSES,
    Dialect.GEMINI: Endpoint.GEMINI,
}
GEMINI_CONVERSATION_ACTIONS = frozenset({"generateContent", "streamGenerateContent"})

Relay = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TranslatedCall:
    """One call to translate: from the client's dialect to the backend's."""

    source: Dialect
    target: Dialect
    requested_model: str  # the name the reply carries (as the client asked for it)
    sent_model: str  # the backend's name for it, with any thinking suffix (it becomes effort)
    stream: bool  # the client asked for a stream
    gemini_sse: bool = True  # a Gemini client's stream is SSE (``alt=sse``), else a JSON array


def client_streams(source: Dialect, payload: dict[str, Any], action: str | None) -> bool:
    """Whether the client asked for a stream: the body's ``stream``, or a Gemini path's action."""
    if source is Dialect.GEMINI:
        return action == "streamGenerateContent"
    return payload.get("stream") is True


def gemini_wants_sse(query: bytes) -> bool:
    return any(part.strip() == b"alt=sse" for part in query.split(b"&"))


def translated_headers(headers: RawHeaders, target: Dialect, length: int, stream: bool) -> RawHeaders:
    """The client's headers (already scrubbed of credentials and hop-by-hop ones) for a request
    of ``target``: its own content headers, and no other vendor's headers."""
    kept: RawHeaders = []
    for name, value in headers:
        lower = name.lower()
        if lower in _REBUILT:
            continue
        vendor = next((d for prefix, d in _VENDOR_PREFIXES.items() if lower.startswith(prefix)), None)
        if vendor is not None and target not in vendor:
            continue
        kept.append((lower, value))
    kept.append((b"content-type", b"application/json"))
    kept.append((b"content-length", str(length).encode()))
    kept.append((b"accept", b"text/event-stream" if stream else b"application/json"))
    if target is Dialect.ANTHROPIC and not any(name == b"anthropic-version" for name, _ in kept):
        kept.append((b"anthropic-version", ANTHROPIC_VERSION))
    return kept


async def run(
    call: TranslatedCall,
    payload: dict[str, Any],
    scope: Scope,
    receive: Receive,
    send: Send,
    relay: Relay,
) -> None:
    """Translate ``payload`` for ``call.target``, hand it to ``relay`` as a request on the
    target's standard path, and translate the reply back for the client."""
    translated = translate_request(
        payload, source=call.source, target=call.target, model=call.sent_model, stream=call.stream
    )
    del payload
    body = dump_json(translated.body)
    path, _, query = translated.path.partition("?")
    backend_scope = {
        **scope,
        "method": "POST",
        "path": path,
        "raw_path": path.encode("latin-1"),  # translate.target_path quotes the model
        "query_string": query.encode("latin-1"),
        "headers": translated_headers(scope["headers"], call.target, len(body), call.stream),
    }
    translator = ReplyTranslator(
        backend=call.target,
        client=call.source,
        model=call.requested_model,
        stream=call.stream,
        gemini_sse=call.gemini_sse,
    )
    await relay(backend_scope, replay(body, receive), TranslatingSend(send, translator))
