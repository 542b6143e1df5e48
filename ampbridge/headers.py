"""Which headers cross ampbridge and which do not: the one place that knows."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode

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
# Where a client puts its key; replaced by the upstream's or the backend's own credentials.
CLIENT_CREDENTIALS = frozenset({b"authorization", b"x-api-key", b"x-goog-api-key"})
# Query parameters that may carry a client key.
CREDENTIAL_QUERY_PARAMS = frozenset({"key", "auth_token"})
# Set by ampbridge itself for the next hop.
REBUILT = frozenset({b"host", b"accept-encoding", b"content-length"})

REQUEST_DROP = HOP_BY_HOP | PROXY_IDENTITY | CLIENT_CREDENTIALS | REBUILT
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
    headers: Iterable[tuple[bytes, bytes]], extra_drop: frozenset[bytes] = frozenset()
) -> RawHeaders:
    """Drop credentials, hop-by-hop, proxy-identity and rebuilt headers from a client request."""
    headers = list(headers)
    named = connection_named(headers)
    drop = REQUEST_DROP | extra_drop | named if (named or extra_drop) else REQUEST_DROP
    return [
        (name, value)
        for name, value in headers
        if (lower := name.lower()) not in drop and not lower.startswith(PROXY_IDENTITY_PREFIX)
    ]


def scrub_response_headers(headers: Iterable[tuple[bytes, bytes]], *, strip_cors: bool) -> RawHeaders:
    """Drop hop-by-hop headers (and, on control-plane routes, CORS grants) from a response."""
    headers = list(headers)
    named = connection_named(headers)
    drop = HOP_BY_HOP | named if named else HOP_BY_HOP
    return [
        (name, value)
        for name, value in headers
        if (lower := name.lower()) not in drop
        and not (strip_cors and lower.startswith(b"access-control-allow-"))
    ]


def scrub_query(query_string: bytes, client_keys: frozenset[str]) -> bytes:
    """Remove ``key``/``auth_token`` values that equal a client key; leave the rest byte for byte."""
    if not client_keys or not query_string:
        return query_string
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if not (k in CREDENTIAL_QUERY_PARAMS and v in client_keys)]
    if len(kept) == len(pairs):
        return query_string
    return urlencode(kept).encode("latin-1")


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of ``name`` (lower-case) in a raw header list."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None
