"""Reply translation for one call: the backend's reply (JSON or SSE, in any chunking) becomes the
reply the client asked for — its dialect, streamed or not, with the model name it requested."""

from __future__ import annotations

import json
from typing import Any, Protocol

from ampbridge.translate import reply_anthropic, reply_chat, reply_gemini, reply_responses
from ampbridge.translate.dialect import Dialect
from ampbridge.translate.error_shapes import backend_error_message, error_json
from ampbridge.translate.events import Event, Failure, Reply
from ampbridge.translate.sse import SSEReader


class _Decoder(Protocol):
    def event(self, name: str, data: str) -> list[Event]: ...
    def end(self) -> list[Event]: ...
    def whole(self, body: Any) -> list[Event]: ...


class _Encoder(Protocol):
    def encode(self, event: Event) -> bytes: ...
    def end(self) -> bytes: ...


_DECODERS: dict[Dialect, type[_Decoder]] = {
    Dialect.ANTHROPIC: reply_anthropic.Decoder,
    Dialect.CHAT: reply_chat.Decoder,
    Dialect.RESPONSES: reply_responses.Decoder,
    Dialect.GEMINI: reply_gemini.Decoder,
}
_RENDER = {
    Dialect.ANTHROPIC: reply_anthropic.render,
    Dialect.CHAT: reply_chat.render,
    Dialect.RESPONSES: reply_responses.render,
    Dialect.GEMINI: reply_gemini.render,
}


def _encoder(client: Dialect, model: str, gemini_sse: bool) -> _Encoder:
    if client is Dialect.ANTHROPIC:
        return reply_anthropic.Encoder(model)
    if client is Dialect.CHAT:
        return reply_chat.Encoder(model)
    if client is Dialect.RESPONSES:
        return reply_responses.Encoder(model)
    return reply_gemini.Encoder(model, sse=gemini_sse)


class ReplyTranslator:
    """Translates one call's reply. ``model`` is the name the client asked for; ``stream`` whether
    it asked for a stream; ``gemini_sse`` whether a Gemini client's stream is SSE (``alt=sse``) or a
    JSON array.

    The backend's reply is given either whole (:meth:`translate_json`) or as SSE bytes
    (:meth:`feed` ... :meth:`finish`); either way the output is in the client's mode, and a streamed
    output is written as each backend event completes.
    """

    def __init__(
        self, *, backend: Dialect, client: Dialect, model: str, stream: bool, gemini_sse: bool = True
    ) -> None:
        self.backend, self.client, self.model, self.stream = backend, client, model, stream
        self.gemini_sse = gemini_sse
        self.failed = False  # the backend reported an error inside a 2xx reply
        self._decoder: _Decoder = _DECODERS[backend]()
        self._encoder = _encoder(client, model, gemini_sse)
        self._reader = SSEReader()
        self._reply = Reply()

    @property
    def media_type(self) -> str:
        """The content type of what this translator writes."""
        if self.stream and (self.client is not Dialect.GEMINI or self.gemini_sse):
            return "text/event-stream"
        return "application/json"

    def _write(self, events: list[Event]) -> bytes:
        out = b""
        for event in events:
            self.failed = self.failed or isinstance(event, Failure)
            if self.stream:
                out += self._encoder.encode(event)
            else:
                self._reply.add(event)
        return out

    def _end(self) -> bytes:
        if self.stream:
            return self._encoder.end()
        if self._reply.failure is not None:
            return json.dumps(error_json(self.client, 502, self._reply.failure.message)).encode()
        return json.dumps(_RENDER[self.client](self._reply, self.model), ensure_ascii=False).encode()

    def _decode(self, pairs: list[tuple[str, str]]) -> list[Event]:
        events: list[Event] = []
        for name, data in pairs:
            try:
                events.extend(self._decoder.event(name, data))
            except (ValueError, KeyError, TypeError, AttributeError):
                events.append(Failure("the backend sent an event that could not be read"))
        return events

    def feed(self, chunk: bytes) -> bytes:
        """SSE bytes from the backend, cut anywhere; returns what the client can be sent now."""
        return self._write(self._decode(self._reader.feed(chunk)))

    def finish(self) -> bytes:
        """At the end of the backend's stream: the rest of the client's reply."""
        out = self._write(self._decode(self._reader.close()))
        return out + self._write(self._decoder.end()) + self._end()

    def translate_json(self, body: bytes) -> bytes:
        """A whole backend reply (JSON) as the client's whole reply."""
        try:
            events = self._decoder.whole(json.loads(body))
        except (ValueError, KeyError, TypeError, AttributeError):
            events = [Failure("the backend's reply could not be read")]
        return self._write(events) + self._end()

    def translate_error(self, status: int, body: bytes) -> bytes:
        """A backend error reply in the client's error shape."""
        return json.dumps(error_json(self.client, status, backend_error_message(body))).encode()
