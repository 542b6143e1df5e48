"""Native Amp CLIs' thread-actor traffic (``/actors/*``): its credentials and its routing token.

Current native Amp CLIs run their agent in Amp's cloud. After ``POST /api/thread-actors`` they open
a WebSocket at ``/actors/gateway/threadActor/websocket/`` and call
``/actors/gateway/threadActor/request/...``. With a loopback ``AMP_URL`` they send no Amp key
there: their credentials travel in the *conn params*, a JSON object carried either as the
subprotocol ``rivet_conn_params.<urlencoded JSON>`` or in the ``x-rivet-conn-params`` header
(plain or urlencoded JSON). It holds a ``wsToken`` (minted by the upstream for one thread) or, on
the executor connection, an ``apiKey`` (the CLI's own Amp key, a client key when ampbridge has
client keys).

Admission with client keys, and why it keeps no state: a ``wsToken`` is a capability the upstream
minted in reply to an authenticated ``POST /api/thread-actors``. ampbridge cannot verify it (it is
opaque, and remembering the tokens it saw pass by would fail as soon as ``serve`` runs several
workers or instances), and it need not: a request admitted by its ``wsToken`` alone is forwarded
with *no* Amp key injected, so it can do upstream exactly what the token allows and nothing more.
The upstream is the judge; an unknown token is refused there, never turned into the user's key.
A request that presents a client key (header, or the conn params' ``apiKey``) is an ordinary
authenticated request and gets the upstream key that client key maps to.

Everything here is a pure function over ASGI scope data; nothing holds per-request state.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from starlette.types import Scope

logger = logging.getLogger("ampbridge.actors")

ACTORS_PREFIX = "/actors/"
CONN_PARAMS_SUBPROTOCOL = "rivet_conn_params."
CONN_PARAMS_HEADER = b"x-rivet-conn-params"
WEBSOCKET_PROTOCOL_HEADER = b"sec-websocket-protocol"
ROUTING_TOKEN_PARAM = "rvt-token"
ROUTING_TOKEN_SETTING = "amp-actor-routing-token"
# What JavaScript's encodeURIComponent leaves alone beyond Python's always-safe set: the CLI
# encodes its conn params that way, and a rewritten value keeps the same spelling.
URI_COMPONENT_SAFE = "!*'()"


def is_actor_path(path: str) -> bool:
    return path.startswith(ACTORS_PREFIX) or path == ACTORS_PREFIX.rstrip("/")


class ConnParamsEncoding(Enum):
    PLAIN = "plain"
    URLENCODED = "urlencoded"


@dataclass(frozen=True)
class ConnParams:
    """The credentials found in one request's conn params (never shown in a repr)."""

    ws_token: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"ConnParams(ws_token={self.ws_token is not None}, api_key={self.api_key is not None})"


def decode_conn_params(text: str) -> tuple[dict[str, Any], ConnParamsEncoding] | None:
    """A conn params value as an object, with the encoding it was written in; None if it is not one."""
    for encoding, candidate in (
        (ConnParamsEncoding.PLAIN, text),
        (ConnParamsEncoding.URLENCODED, unquote(text)),
    ):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value, encoding
    return None


def encode_conn_params(value: dict[str, Any], encoding: ConnParamsEncoding) -> str:
    """JSON the way ``JSON.stringify`` writes it, urlencoded like ``encodeURIComponent`` if asked."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return quote(text, safe=URI_COMPONENT_SAFE) if encoding is ConnParamsEncoding.URLENCODED else text


def _subprotocols(scope: Scope) -> list[str]:
    return list(scope.get("subprotocols") or ())


def _header_values(scope: Scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope.get("headers", ()) if key.lower() == name]


def _raw_conn_params(scope: Scope) -> list[str]:
    """Every conn params value the request carries: subprotocols first, then the header."""
    prefix = CONN_PARAMS_SUBPROTOCOL
    found = [p[len(prefix) :] for p in _subprotocols(scope) if p.startswith(prefix)]
    return found + _header_values(scope, CONN_PARAMS_HEADER)


def _nonblank(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def conn_params(scope: Scope) -> ConnParams:
    """The ``wsToken`` and ``apiKey`` of a request's conn params (first non-blank of each)."""
    ws_token: str | None = None
    api_key: str | None = None
    for raw in _raw_conn_params(scope):
        decoded = decode_conn_params(raw)
        if decoded is None:
            continue
        params = decoded[0]
        ws_token = ws_token or _nonblank(params.get("wsToken"))
        api_key = api_key or _nonblank(params.get("apiKey"))
    return ConnParams(ws_token=ws_token, api_key=api_key)


class AdmittedBy(Enum):
    CLIENT_KEY = "client_key"
    WS_TOKEN = "ws_token"
    REFUSED = "refused"


@dataclass(frozen=True)
class ActorAdmission:
    """How an ``/actors/*`` request was admitted; ``client_key`` is set for ``CLIENT_KEY`` only."""

    by: AdmittedBy
    client_key: str | None = field(default=None, repr=False)


def _matching_client_key(candidate: str | None, client_keys: Collection[str]) -> str | None:
    if not candidate:
        return None
    encoded = candidate.encode("utf-8")
    matched = [key for key in client_keys if key and hmac.compare_digest(encoded, key.encode("utf-8"))]
    return matched[0] if matched else None


def admit_actor_request(
    scope: Scope, *, header_key: str | None, client_keys: Collection[str]
) -> ActorAdmission:
    """Admission of an ``/actors/*`` request while client keys are configured.

    ``header_key`` is the client key the request presented in a header (``Authorization``,
    ``X-Api-Key``, ...), as found by the credential module; it is checked against ``client_keys``
    again here. Order: a client key in a header, a client key as the conn params' ``apiKey``, then
    a ``wsToken`` (admitted on its presence alone; see the module docstring). Stateless.
    """
    if (key := _matching_client_key(header_key, client_keys)) is not None:
        return ActorAdmission(AdmittedBy.CLIENT_KEY, key)
    params = conn_params(scope)
    if (key := _matching_client_key(params.api_key, client_keys)) is not None:
        return ActorAdmission(AdmittedBy.CLIENT_KEY, key)
    if params.ws_token is not None:
        return ActorAdmission(AdmittedBy.WS_TOKEN)
    return ActorAdmission(AdmittedBy.REFUSED)


def _rewrite_one(
    raw: str, client_keys: Collection[str], upstream_key_for: Callable[[str], str | None]
) -> str:
    decoded = decode_conn_params(raw)
    if decoded is None:
        return raw
    params, encoding = decoded
    client_key = _matching_client_key(_nonblank(params.get("apiKey")), client_keys)
    if client_key is None:
        return raw
    upstream_key = upstream_key_for(client_key)
    if upstream_key:
        params["apiKey"] = upstream_key
    else:
        del params["apiKey"]
    return encode_conn_params(params, encoding)


def rewrite_subprotocols(
    subprotocols: Sequence[str],
    *,
    client_keys: Collection[str],
    upstream_key_for: Callable[[str], str | None],
) -> list[str]:
    """The subprotocol list with a client-key ``apiKey`` replaced by its upstream key (or removed)."""
    rewritten = []
    for protocol in subprotocols:
        if protocol.startswith(CONN_PARAMS_SUBPROTOCOL):
            body = _rewrite_one(protocol[len(CONN_PARAMS_SUBPROTOCOL) :], client_keys, upstream_key_for)
            protocol = CONN_PARAMS_SUBPROTOCOL + body
        rewritten.append(protocol)
    return rewritten


def rewrite_conn_params(
    scope: Scope,
    *,
    client_keys: Collection[str],
    upstream_key_for: Callable[[str], str | None],
) -> Scope:
    """A copy of ``scope`` whose conn params carry the upstream key instead of a client key.

    Applies to ``scope["subprotocols"]``, the ``Sec-WebSocket-Protocol`` header and the
    ``x-rivet-conn-params`` header; each value keeps its encoding (plain or urlencoded JSON) and
    everything else in it. Conn params without a client-key ``apiKey`` are left byte for byte.
    ``upstream_key_for(client_key)`` gives the Amp key for that client (None: the ``apiKey`` is
    removed, so a client key never travels upstream).
    """

    def rewrite(offered: Sequence[str]) -> list[str]:
        return rewrite_subprotocols(offered, client_keys=client_keys, upstream_key_for=upstream_key_for)

    protocols = _subprotocols(scope)
    new_protocols = rewrite(protocols)
    headers: list[tuple[bytes, bytes]] = []
    for name, value in scope.get("headers", ()):
        lower = name.lower()
        if lower == CONN_PARAMS_HEADER:
            text = _rewrite_one(value.decode("latin-1"), client_keys, upstream_key_for)
            value = text.encode("latin-1")
        elif lower == WEBSOCKET_PROTOCOL_HEADER and new_protocols != protocols:
            offered = rewrite([p.strip() for p in value.decode("latin-1").split(",")])
            value = ", ".join(offered).encode("latin-1")
        headers.append((name, value))
    rewritten = {**scope, "headers": headers}
    if "subprotocols" in scope:
        rewritten["subprotocols"] = new_protocols
    return rewritten


def is_loopback_host(host: str) -> bool:
    """``localhost`` (and ``*.localhost``), 127.0.0.0/8, ::1 and ::ffff:127.x; brackets allowed."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def has_routing_token(query: bytes) -> bool:
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return any(name == ROUTING_TOKEN_PARAM for name, _ in pairs)


def with_routing_token(path: str, query: bytes, *, upstream_host: str, token: str | None) -> bytes:
    """The query to send upstream for ``path``: ``rvt-token=<token>`` appended when the path is
    under ``/actors/``, the upstream host is not loopback, a token is known and the query has none.
    Every other byte of the query is kept as it was."""
    if not token or not is_actor_path(path) or is_loopback_host(upstream_host) or has_routing_token(query):
        return query
    addition = f"{ROUTING_TOKEN_PARAM}={quote(token, safe='')}".encode("ascii")
    if not query:
        return addition
    return query + addition if query.endswith(b"&") else query + b"&" + addition


class RoutingTokenSource:
    """The routing token for the upstream: the ``amp-actor-routing-token`` setting, else what
    ``discover()`` finds (the installed Amp CLI, see ``amp_cli.installed_routing_token``), looked
    up once. Logs one warning, naming the setting, when there is none. Never shows the token."""

    def __init__(self, *, configured: str = "", discover: Callable[[], str | None]) -> None:
        self._configured = configured.strip()
        self._discover = discover
        self._lock = threading.Lock()
        self._looked = False
        self._found: str | None = None

    def __repr__(self) -> str:
        return f"RoutingTokenSource(configured={bool(self._configured)})"

    def token(self) -> str | None:
        if self._configured:
            return self._configured
        with self._lock:
            if not self._looked:
                self._looked = True
                self._found = self._discover()
                if self._found is None:
                    logger.warning(
                        "no Amp actor routing token: set %s (Amp's cloud may refuse /actors requests "
                        "relayed without one)",
                        ROUTING_TOKEN_SETTING,
                    )
            return self._found
