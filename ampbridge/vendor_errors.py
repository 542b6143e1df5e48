"""Error bodies in the wire format of a model route (SPEC §12), so an SDK shows our message.

Each vendor's SDK reads its own error shape: Anthropic
``{"type":"error","error":{"type":...,"message":...}}``, OpenAI
``{"error":{"message":...,"type":...,"param":null,"code":...}}``, Gemini
``{"error":{"code":<status>,"message":...,"status":"NOT_FOUND"}}``. The vendor's error type comes
from the HTTP status (404 -> ``not_found_error`` / ``invalid_request_error`` / ``NOT_FOUND``;
502 -> ``api_error`` / ``server_error`` / ``UNAVAILABLE``; 504 -> ``timeout_error`` /
``server_error`` / ``DEADLINE_EXCEEDED``); our own code (``model_not_found``) travels where the
format has room for it (OpenAI's ``code``). The status decides what an SDK retries: 5xx is retried,
so a model nobody serves must be a 404. Without a wire format the control-plane shape
``{"error": code, "message": ...}`` is used.
"""

from __future__ import annotations

import json

from starlette.types import Send

from .errors import error_body, send_json
from .models import WireFormat

CONTENT_TYPE = b"application/json"

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def vendor_error(wire_format: WireFormat | None, status: int, code: str, message: str) -> bytes:
    """The JSON error body for ``status`` in ``wire_format`` (content type ``CONTENT_TYPE``)."""
    if not 400 <= status <= 599:
        raise ValueError(f"an error status is 4xx or 5xx, not {status}")
    body: dict[str, object]
    if wire_format is WireFormat.ANTHROPIC:
        kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
        body = {"type": "error", "error": {"type": kind, "message": message}}
    elif wire_format is WireFormat.OPENAI:
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    elif wire_format is WireFormat.GOOGLE:
        grpc_status = _GOOGLE_STATUSES.get(status, "INVALID_ARGUMENT" if status < 500 else "INTERNAL")
        body = {"error": {"code": status, "message": message, "status": grpc_status}}
    else:
        return error_body(code, message)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


async def send_vendor_error(
    send: Send, wire_format: WireFormat | None, status: int, code: str, message: str
) -> None:
    """Answer an HTTP request with ``vendor_error(...)``: one start and one body message."""
    await send_json(send, status, vendor_error(wire_format, status, code, message))
