"""One shape for every error ampbridge itself answers: ``{"error": ..., "message": ...}``."""

from __future__ import annotations

from starlette.responses import JSONResponse


def error_response(status: int, error: str, message: str | None = None) -> JSONResponse:
    """A JSON error; ``message`` is added only when there is something to explain."""
    body = {"error": error} if message is None else {"error": error, "message": message}
    return JSONResponse(body, status_code=status)


class ResponseAborted(Exception):
    """Raised by a wrapped ``send`` to stop a response that must not go on (it may already have
    been answered with an error). Whoever streams the body stops and closes its source."""
