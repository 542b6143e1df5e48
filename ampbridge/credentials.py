"""Client credentials: where a request presents a key, how it is removed, how logs mask it.

The one place that knows these rules, so the client-key gate, the proxies and the log filter can
never disagree about what a credential is. A query parameter counts by its *decoded* name, so
``?k%65y=SECRET`` is the same ``key`` for the gate, for scrubbing and for masking. Scrubbing touches
only the pairs it removes: the rest of a query string keeps its exact bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_plus

from starlette.types import Scope

# Where a client puts its key; replaced by the upstream's or the backend's own credentials.
CREDENTIAL_HEADERS = frozenset({b"authorization", b"x-api-key", b"x-goog-api-key"})
# Query parameters that may carry a key (by decoded name).
CREDENTIAL_QUERY_PARAMS = frozenset({"key", "auth_token"})
# Query parameters a log line never shows: the keys, and Amp's actor routing token.
MASKED_QUERY_PARAMS = CREDENTIAL_QUERY_PARAMS | {"rvt-token"}


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be sent in an HTTP header (so cannot be used), or None when it can."""
    if any(ch.isspace() for ch in key):
        return "a key must not contain spaces"
    if not all(ch.isprintable() for ch in key):
        return "a key must not contain control characters"
    try:
        key.encode("latin-1")
    except UnicodeEncodeError:
        return "a key must be plain text that fits in an HTTP header (no typographic quotes or emoji)"
    return None


def _decode(part: bytes) -> str:
    return unquote_plus(part.decode("latin-1"), encoding="utf-8", errors="replace")


def _pairs(query: bytes) -> Iterable[tuple[bytes, str, str]]:
    """Each ``name=value`` pair: its raw bytes, decoded name, decoded value."""
    for raw in query.split(b"&"):
        if raw:
            name, _, value = raw.partition(b"=")
            yield raw, _decode(name), _decode(value)


def query_keys(query: bytes) -> list[str]:
    """Keys in ``?key=`` / ``?auth_token=`` pairs, under any percent-encoding of the name."""
    return [value for _, name, value in _pairs(query) if name in CREDENTIAL_QUERY_PARAMS and value]


def header_keys(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Keys in ``Authorization: Bearer``, ``X-Api-Key`` and ``X-Goog-Api-Key``."""
    found: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                found.append(token.strip())
        elif lower in (b"x-api-key", b"x-goog-api-key") and value.strip():
            found.append(value.decode("latin-1").strip())
    return found


def presented_keys(scope: Scope) -> list[str]:
    """Every key a request offers, headers first."""
    return header_keys(scope["headers"]) + query_keys(scope.get("query_string", b""))


def scrub_query(query: bytes, keys: frozenset[str] | None = None) -> bytes:
    """``query`` without its credential pairs: those whose value is one of ``keys``, or every one
    when ``keys`` is None. The pairs kept keep their bytes."""
    if not query or (keys is not None and not keys):
        return query
    kept = [
        raw
        for raw, name, value in _pairs(query)
        if not (name in CREDENTIAL_QUERY_PARAMS and (keys is None or value in keys))
    ]
    return b"&".join(kept)


_QUERY_PAIR = re.compile(r"([?&])([^=&\s\"'#]+)=([^&\s\"'#]*)")


def _mask_pair(match: re.Match[str]) -> str:
    name = unquote_plus(match[2], errors="replace").lower()
    if name in MASKED_QUERY_PARAMS:
        return f"{match[1]}{match[2]}=[redacted]"
    return match[0]


def redact(text: str) -> str:
    """``text`` with every credential (and routing-token) query value masked, for log lines."""
    return _QUERY_PAIR.sub(_mask_pair, text) if "=" in text else text
