"""The Codex backend's dialect of the OpenAI Responses API (reference §5 and §7), as pure data
functions: the request reshaped to what the backend accepts, its SSE reply read event by event,
a whole response assembled for callers that did not stream, and its errors classified.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..models import split_thinking_suffix
from .plans import REASONING_EFFORTS

ENCRYPTED_REASONING = "reasoning.encrypted_content"
# Fields the backend rejects ("Unsupported parameter: ...") or that make no sense statelessly.
REMOVED_FIELDS = (
    "max_output_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "truncation",
    "user",
    "previous_response_id",
    "prompt_cache_retention",
    "safety_identifier",
    "stream_options",
    "context_management",
)


class DialectError(ValueError):
    """The client's request cannot be sent (not a Responses request)."""


@dataclass(frozen=True)
class Reshaped:
    body: dict[str, Any]
    model: str
    streamed: bool  # whether the client asked for a stream
    session_id: str


def _message_role_to_developer(item: Any) -> Any:
    if isinstance(item, dict) and item.get("role") == "system" and item.get("type", "message") == "message":
        return {**item, "role": "developer"}
    return item


def reshape_request(payload: dict[str, Any], *, session_hint: str | None = None) -> Reshaped:
    """A Responses request as the Codex backend wants it: always streamed, never stored,
    ``instructions`` present, ``input`` a list with system messages as developer ones, encrypted
    reasoning included, unsupported fields removed, a ``model(effort)`` suffix made
    ``reasoning.effort``, and a prompt cache key (the session id the headers carry too)."""
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise DialectError("the request names no model")
    base, suffix = split_thinking_suffix(model)
    body = {k: v for k, v in payload.items() if k not in REMOVED_FIELDS}
    body["model"] = base
    effort = suffix[1:-1].strip().lower()
    if effort in REASONING_EFFORTS:
        reasoning = body.get("reasoning")
        body["reasoning"] = {**(reasoning if isinstance(reasoning, dict) else {}), "effort": effort}
    streamed = payload.get("stream") is True
    body["stream"] = True
    body["store"] = False
    if not isinstance(body.get("instructions"), str):
        body["instructions"] = ""
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        body["input"] = [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw_input}]}
        ]
    elif isinstance(raw_input, list):
        body["input"] = [_message_role_to_developer(item) for item in raw_input]
    elif raw_input is None:
        body["input"] = []
    else:
        raise DialectError("input must be a string or a list of items")
    include = body.get("include")
    include = [x for x in include if isinstance(x, str)] if isinstance(include, list) else []
    body["include"] = include if ENCRYPTED_REASONING in include else [*include, ENCRYPTED_REASONING]
    if body.get("tools"):
        body["parallel_tool_calls"] = body.get("parallel_tool_calls", True) is not False
    else:
        body.pop("parallel_tool_calls", None)
    if body.get("service_tier") != "priority":
        body.pop("service_tier", None)
    key = body.get("prompt_cache_key")
    if not isinstance(key, str) or not key:
        key = str(uuid.uuid5(uuid.NAMESPACE_URL, session_hint)) if session_hint else str(uuid.uuid4())
        body["prompt_cache_key"] = key
    return Reshaped(body=body, model=base, streamed=streamed, session_id=key)


# --- the SSE reply ----------------------------------------------------------------------


@dataclass
class SseEvent:
    raw: bytes  # the event as received, with its blank line
    name: str
    data: Any  # the parsed ``data`` JSON, or None

    @property
    def type(self) -> str:
        kind = self.data.get("type") if isinstance(self.data, dict) else None
        return kind if isinstance(kind, str) else self.name


class SseReader:
    """Splits a byte stream into SSE events (blank-line separated; LF or CRLF)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> Iterator[SseEvent]:
        self._buffer += chunk
        while True:
            cut = _event_end(self._buffer)
            if cut is None:
                return
            raw, self._buffer = self._buffer[:cut], self._buffer[cut:]
            yield _parse_event(raw)

    def finish(self) -> Iterator[SseEvent]:
        rest, self._buffer = self._buffer, b""
        if rest.strip():
            yield _parse_event(rest + b"\n\n")


def _event_end(buffer: bytes) -> int | None:
    ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n") if (i := buffer.find(sep)) >= 0]
    return min(ends) if ends else None


def _parse_event(raw: bytes) -> SseEvent:
    name, data_lines = "message", []
    for line in raw.decode("utf-8", "replace").splitlines():
        field_name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field_name == "event":
            name = value
        elif field_name == "data":
            data_lines.append(value)
    data: Any = None
    if data_lines:
        try:
            data = json.loads("\n".join(data_lines))
        except ValueError:
            data = None
    return SseEvent(raw=raw, name=name, data=data)


def encode_event(data: dict[str, Any]) -> bytes:
    return (
        f"event: {data.get('type', 'message')}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
    )


# --- errors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamError:
    status: int
    type: str
    code: str | None
    message: str
    resets_at: float | None = None  # usage limits: when the account may be used again

    @property
    def usage_limit(self) -> bool:
        return self.type == "usage_limit_reached" or self.code == "usage_limit_reached"


def _status_for(kind: str, code: str | None, message: str) -> int:
    text = f"{kind} {code or ''}".lower()
    if "usage_limit" in text or "rate_limit" in text or "at capacity" in message.lower():
        return 429
    if "context_length" in text or "invalid_request" in text:
        return 400
    if "auth" in text or "invalid_api_key" in text:
        return 401
    if "permission" in text or "forbidden" in text:
        return 403
    if "not_found" in text:
        return 404
    if "overloaded" in text or "service_unavailable" in text:
        return 503
    return 502


def error_from_object(error: Any, *, status: int | None, now: float) -> UpstreamError:
    """An ``{"type","code","message",...}`` error object (HTTP body or SSE event) classified."""
    error = error if isinstance(error, dict) else {}
    kind = str(error.get("type") or "")
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = str(error.get("message") or kind or code or "the ChatGPT backend reported an error")
    resets_at: float | None = None
    if isinstance(error.get("resets_at"), int | float):
        resets_at = float(error["resets_at"])
    elif isinstance(error.get("resets_in_seconds"), int | float):
        resets_at = now + float(error["resets_in_seconds"])
    return UpstreamError(
        status=status or _status_for(kind, code, message),
        type=kind or "api_error",
        code=code,
        message=message,
        resets_at=resets_at,
    )


def error_from_reply(status: int, body: bytes, *, now: float) -> UpstreamError:
    """A non-2xx reply: ``{"error": {...}}``, FastAPI's ``{"detail": ...}``, or anything else."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return error_from_object(data["error"], status=status, now=now)
    if isinstance(data, dict) and "detail" in data:
        detail = data["detail"]
        text = detail if isinstance(detail, str) else json.dumps(detail)[:500]
        return UpstreamError(status, "invalid_request_error" if status == 400 else "api_error", None, text)
    kind = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(
        status, "api_error"
    )
    return UpstreamError(status, kind, None, f"the ChatGPT backend answered HTTP {status}")


def error_from_event(event: SseEvent, *, now: float) -> UpstreamError | None:
    """The failure an SSE event reports (``error`` or ``response.failed``), else None."""
    data = event.data if isinstance(event.data, dict) else {}
    if event.type == "error":
        inner = data.get("error")
        return error_from_object(inner if isinstance(inner, dict) else data, status=None, now=now)
    if event.type == "response.failed":
        response = data.get("response")
        inner = response.get("error") if isinstance(response, dict) else None
        return error_from_object(inner, status=None, now=now)
    return None


def openai_error(message: str, kind: str, code: str | None = None, **extra: Any) -> bytes:
    """An error body in the OpenAI shape the SDKs read (``error.message``)."""
    body = {"error": {"message": message, "type": kind, "code": code, "param": None, **extra}}
    return json.dumps(body, separators=(",", ":")).encode()


# --- a whole response for a caller that did not stream ----------------------------------


@dataclass
class ResponseAssembler:
    """Collects a streamed reply into the final Responses object."""

    items: dict[int, Any] = field(default_factory=dict)
    final: dict[str, Any] | None = None
    failure: UpstreamError | None = None

    def add(self, event: SseEvent, *, now: float) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == "response.output_item.done" and isinstance(data.get("item"), dict):
            index = data.get("output_index")
            self.items[index if isinstance(index, int) else len(self.items)] = data["item"]
        elif event.type in ("response.completed", "response.incomplete") and isinstance(
            data.get("response"), dict
        ):
            self.final = dict(data["response"])
        elif self.failure is None:
            self.failure = error_from_event(event, now=now)

    def result(self) -> dict[str, Any] | UpstreamError:
        if self.final is not None:
            if not self.final.get("output") and self.items:
                self.final["output"] = [self.items[i] for i in sorted(self.items)]
            return self.final
        if self.failure is not None:
            return self.failure
        return UpstreamError(408, "api_error", "stream_incomplete", "stream closed before response.completed")
