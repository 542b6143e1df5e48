"""Which headers cross ampbridge and which do not: the one place that knows.

ASGI header names are lowercase bytes. Servers on the other side of a hop (Go's net/http, nginx)
send canonical-case names (``Content-Type``), which httpx keeps; ``response_headers`` is where
every reply's names are lowercased before they enter an ASGI message, so the parts behind it
(``MutableHeaders`` lookups, the compatibility fixes, ``GzipUnwrap``) see one spelling.
"""

from __future__ import annotations

from collections.abc import Iterable

from .credentials import CREDENTIAL_HEADERS

RawHeaders = list[tuple[bytes, bytes]]

# RFC 9110 §7.6.1 connection-specific fields, plus the proxy ones that must never cross a hop.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Headers that claim where a request came from: never trusted, never passed on.
PROXY_IDENTITY = frozenset({b"forwarded", b"x-real-ip", b"via"})
PROXY_IDENTITY_PREFIX = b"x-forwarded-"
# Set by ampbridge itself for the next hop.
REBUILT = frozenset({b"host", b"accept-encoding", b"content-length"})
# A browser's cookies for localhost belong to every app on it; they go only where a browser
# session is meant to reach (the Amp upstream's own routes), never to a model backend.
COOKIE = b"cookie"
# The ASGI server stamps its own Date on every reply; a relayed one would make two.
RESPONSE_DROP = HOP_BY_HOP | {b"date"}
CORS_PREFIX = b"access-control-"

REQUEST_DROP = HOP_BY_HOP | PROXY_IDENTITY | CREDENTIAL_HEADERS | REBUILT
WEBSOCKET_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
    }
)


def connection_named(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in ``Connection`` (they are hop-by-hop for this message)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return frozenset(named)


def scrub_request_headers(
    headers: Iterable[tuple[bytes, bytes]],
    extra_drop: frozenset[bytes] = frozenset(),
    *,
    keep_cookies: bool = False,
) -> RawHeaders:
    """A client request's headers for the next hop: without credentials, hop-by-hop,
    proxy-identity and rebuilt headers, and without cookies unless ``keep_cookies``."""
    headers = list(headers)
    drop = REQUEST_DROP | extra_drop | connection_named(headers)
    if not keep_cookies:
        drop |= {COOKIE}
    return [
        (name, value)
        for name, value in headers
        if (lower := name.lower()) not in drop and not lower.startswith(PROXY_IDENTITY_PREFIX)
    ]


def response_headers(headers: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    """A reply's headers as an ASGI message carries them: names lowercased; hop-by-hop headers,
    ``Date`` and every CORS grant removed; ``Content-Length`` dropped when the reply was framed
    with ``Transfer-Encoding`` (the length then says nothing about the bytes that follow).
    One pass for the common reply; a second only when ``Connection`` names other headers or
    ``Transfer-Encoding`` came with a length."""
    kept: RawHeaders = []
    also_drop: set[bytes] = set()
    for name, value in headers:
        lower = name.lower()
        if lower in RESPONSE_DROP:
            if lower == b"transfer-encoding":
                also_drop.add(b"content-length")
            elif lower == b"connection":
                also_drop.update(token.strip().lower() for token in value.split(b",") if token.strip())
        elif not lower.startswith(CORS_PREFIX):
            kept.append((lower, value))
    if also_drop - RESPONSE_DROP:
        return [(name, value) for name, value in kept if name not in also_drop]
    return kept


def with_content_length(headers: Iterable[tuple[bytes, bytes]], length: int | None) -> RawHeaders:
    """``headers`` without any ``Content-Length`` (any case), plus one of ``length`` if given."""
    kept = [(name, value) for name, value in headers if name.lower() != b"content-length"]
    if length is not None:
        kept.append((b"content-length", str(length).encode()))
    return kept


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of ``name`` (lower-case) in a raw header list."""
    size = len(name)
    for key, value in headers:
        if key == name or (len(key) == size and key.lower() == name):
            return value
    return None
