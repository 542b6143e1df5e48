"""Backend errors in the client's error shape (SPEC §12), whatever shape the backend used."""

from __future__ import annotations

import json
from typing import Any

from ampbridge.translate import reply_anthropic, reply_chat, reply_gemini
from ampbridge.translate.dialect import Dialect

_ANTHROPIC_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
_OPENAI_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
MAX_MESSAGE = 2000


def backend_error_message(body: bytes) -> str:
    """The human message inside an error body of any dialect (or its text)."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:MAX_MESSAGE] or "backend error"
    if isinstance(parsed, list) and parsed:  # Gemini answers some errors as a one-element array
        parsed = parsed[0]
    error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:MAX_MESSAGE]
    if isinstance(error, str):
        return error[:MAX_MESSAGE]
    return json.dumps(parsed)[:MAX_MESSAGE]


def error_json(client: Dialect, status: int, message: str) -> dict[str, Any]:
    """An error body of the client's dialect for an HTTP status."""
    if client is Dialect.ANTHROPIC:
        return reply_anthropic.error_body(_ANTHROPIC_KINDS.get(status, "api_error"), message)
    if client is Dialect.GEMINI:
        default = "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"
        return reply_gemini.error_body(status, message, _GEMINI_STATUSES.get(status, default))
    kind = _OPENAI_KINDS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return reply_chat.error_body(kind, message, "model_not_found" if status == 404 else None)
