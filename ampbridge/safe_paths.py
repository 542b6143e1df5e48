"""``SafePaths``: refuse request targets that could mean another path once decoded.

Dot segments, encoded dots, slashes, backslashes and control characters, raw non-ASCII bytes and
malformed percent-escapes (or escapes that are not UTF-8) are rejected with 400 before any routing, so
no rule (the localhost gate, the provider prefix) can be sidestepped by a path that some server
on the way would normalise differently.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import refuse

_ENCODED_SEPARATOR = re.compile(rb"%(2e|2f|5c|[01][0-9a-f]|7f)", re.IGNORECASE)
_MALFORMED_ESCAPE = re.compile(rb"%(?![0-9a-fA-F]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def _decodes_as_utf8(raw_path: bytes) -> bool:
    try:
        unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# Paths up to this long have their verdict kept (a client asks for a handful, again and again);
# a longer one is judged each time, so no client can fill the cache with large keys.
MAX_KEPT_PATH = 512


def is_safe_path(path: str, raw_path: bytes | None) -> bool:
    """False for dot segments, backslashes, control characters, and encoded ``.``, ``/``, ``\\``
    or control characters."""
    if len(path) <= MAX_KEPT_PATH and (raw_path is None or len(raw_path) <= MAX_KEPT_PATH):
        return _kept_verdict(path, raw_path)
    return _judged(path, raw_path)


@functools.lru_cache(maxsize=1024)
def _kept_verdict(path: str, raw_path: bytes | None) -> bool:
    return _judged(path, raw_path)


def _judged(path: str, raw_path: bytes | None) -> bool:
    if not path.startswith("/") or _CONTROL.search(path):
        return False
    if raw_path is not None and (
        not raw_path.isascii()
        or _ENCODED_SEPARATOR.search(raw_path)
        or _MALFORMED_ESCAPE.search(raw_path)
        or not _decodes_as_utf8(raw_path)
    ):
        return False
    return not any(segment in (".", "..") for segment in path.split("/"))


class SafePaths:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not is_safe_path(scope["path"], scope.get("raw_path")):
            await refuse(scope, receive, send, 400, "invalid_path", "The request path is not allowed")
            return
        await self.app(scope, receive, send)
