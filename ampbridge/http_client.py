"""The outbound HTTP clients of an app: one per proxy route, opened on first use, all closed together.

Outbound proxies work the way httpx applies them by default (``HTTP_PROXY``, ``HTTPS_PROXY``,
``ALL_PROXY``, ``NO_PROXY``), except that the environment is a mapping handed in by the app's edge
and read once, here. httpx reads the environment only when it builds its own transport, and
ampbridge brings its own pool, so the routes are wired with httpx's public ``mounts``. A
``proxy-url`` setting (global, or per provider) overrides the environment: a proxy URL sends
everything through it, ``direct`` or ``none`` sends everything straight to the target.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import AsyncIterator, Mapping
from http.cookiejar import DefaultCookiePolicy
from types import TracebackType
from urllib.parse import urlsplit

import httpx

from .pool import StackPoolTransport

RequestContent = bytes | AsyncIterator[bytes] | None

# Model turns stream for minutes with long silent stretches (thinking); Amp's own SDKs wait 600 s.
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=30.0)
# Idle connections are dropped after 4 s, before the 5 s idle timeout of uvicorn and Node.js (the
# usual local model servers and gateways) can close them under a request that reuses one.
DEFAULT_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=4.0)

NO_PROXY_VALUES = frozenset({"direct", "none"})
PROXY_SCHEMES = frozenset({"http", "https", "socks5", "socks5h"})
_ENVIRONMENT = ""  # the route key of "whatever the environment says"
_DIRECT = "direct"


def check_proxy_url(value: str) -> str:
    """``value`` as a route: ``""`` (no setting), ``"direct"``, or a proxy URL of a supported
    scheme. Raises ``ValueError`` naming the problem, never the URL (it may hold a password)."""
    value = value.strip()
    if value.lower() in NO_PROXY_VALUES:
        return _DIRECT
    if not value:
        return _ENVIRONMENT
    parts = urlsplit(value)
    if parts.scheme.lower() not in PROXY_SCHEMES or not parts.hostname:
        raise ValueError(
            "proxy-url must be direct, none, or a URL like http://host:port "
            f"(schemes: {', '.join(sorted(PROXY_SCHEMES))})"
        )
    return value


def environment_routes(environ: Mapping[str, str]) -> dict[str, str | None]:
    """The proxy routes the environment asks for, as httpx URL patterns: a proxy URL, or ``None``
    for a target ``NO_PROXY`` sends direct. Read as curl and httpx read it: a lowercase variable
    wins over its uppercase twin, and a ``NO_PROXY`` of ``*`` turns every proxy off."""
    found: dict[str, str] = {}
    for name in sorted(environ, key=lambda name: name.islower()):  # lowercase last, so it wins
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") and environ[name]:
            found[name.lower().removesuffix("_proxy")] = environ[name].strip()
    if "REQUEST_METHOD" in environ:  # a CGI script: HTTP_PROXY may come from a request's Proxy header
        found.pop("http", None)
    routes: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        if found.get(scheme):
            url = found[scheme]
            routes[f"{scheme}://"] = url if "://" in url else f"http://{url}"
    for host in (entry.strip() for entry in found.get("no", "").split(",")):
        if host == "*":
            return {}
        if host:
            routes[_no_proxy_pattern(host)] = None
    return routes


def _no_proxy_pattern(host: str) -> str:
    if "://" in host:
        return host
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"all://{host}" if host.lower() == "localhost" else f"all://*{host.lstrip('*')}"
    return f"all://[{address}]" if address.version == 6 else f"all://{address}"


class TargetUrls:
    """URLs below ``base`` by raw target (path and query). Parsing a URL costs more than the rest
    of building a request, and Amp sends the same few paths over and over: recent short targets
    are kept parsed."""

    SIZE = 1024
    MAX_TARGET = 1024

    def __init__(self, base: httpx.URL) -> None:
        self.base = base
        self._known: dict[bytes, httpx.URL] = {}

    def __call__(self, target: bytes) -> httpx.URL:
        url = self._known.get(target)
        if url is None:
            url = self.base.copy_with(raw_path=target)
            if len(target) <= self.MAX_TARGET:
                if len(self._known) >= self.SIZE:
                    self._known.clear()
                self._known[target] = url
        return url


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # without a body, these say Content-Length: 0


class _Streamed(httpx.AsyncByteStream):
    """A body streamed from ``pieces``, iterated directly (a generator around it would hold each
    piece until the next one arrives)."""

    def __init__(self, pieces: AsyncIterator[bytes]) -> None:
        self.pieces = pieces

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.pieces


SEND_SLICE = 256 * 1024


class SlicedBody(httpx.ByteStream):
    """A body held in memory, sent slice by slice without copying it whole (still replayable)."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        view = memoryview(self.body)
        for start in range(0, len(view), SEND_SLICE):
            yield view[start : start + SEND_SLICE]  # type: ignore[misc]  # h11 writes any bytes-like


class Route:
    """One way out, for the requests ampbridge relays: built with the client's timeouts, and
    sent straight to the pool when no proxy applies to any target. httpx's client adds per request
    what a relay has no use for (auth, redirects, cookies, event hooks, default headers), about a
    tenth of a small request's cost; with a proxy in play the client picks the route."""

    def __init__(self, client: httpx.AsyncClient, direct: StackPoolTransport | None) -> None:
        self.client = client
        self.direct = direct
        self.timeout = client.timeout.as_dict()

    def build(
        self,
        method: str,
        url: httpx.URL,
        headers: list[tuple[bytes, bytes]],
        content: RequestContent,
        length: int | None = None,
    ) -> httpx.Request:
        """The request, framed here: ``headers`` hold no Host, Content-Length or Transfer-Encoding
        (a relay drops the client's). A streamed body of a known ``length`` says so, else it goes
        chunked. (httpx's own framing, with ``content=``, costs four times as much.)"""
        framing = [(b"host", url.netloc)]
        stream: httpx.AsyncByteStream
        if content is None:
            stream = httpx.ByteStream(b"")
            if method in BODY_METHODS:
                framing.append((b"content-length", b"0"))
        elif isinstance(content, bytes):
            # The pool writes a large body in slices itself; httpx's transport (through a proxy)
            # would join it whole with its framing, a second copy, unless handed slices.
            large = self.direct is None and len(content) > SEND_SLICE
            stream = SlicedBody(content) if large else httpx.ByteStream(content)
            framing.append((b"content-length", b"%d" % len(content)))
        else:
            stream = _Streamed(content)
            if length is not None:
                framing.append((b"content-length", b"%d" % length))
            else:
                framing.append((b"transfer-encoding", b"chunked"))
        framing += headers
        return httpx.Request(
            method, url, headers=framing, stream=stream, extensions={"timeout": self.timeout}
        )

    async def send(self, request: httpx.Request) -> httpx.Response:
        """The response, its body not yet read (close it)."""
        if self.direct is not None:
            return await self.direct.handle_async_request(request)
        return await self.client.send(request, stream=True)


class SharedClient:
    """The app's outbound clients. ``client`` is the default one (the global ``proxy-url``, else
    the environment); ``client_for(proxy_url)`` the one for a provider's own ``proxy-url``, and
    ``route_for(proxy_url)`` its way out for relayed requests."""

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        proxy_url: str = "",
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.default_route = check_proxy_url(proxy_url)
        self.environment = environment_routes(environ or {})
        self.timeout = timeout
        self.limits = limits
        self.ssl_context = ssl_context or httpx.create_ssl_context(trust_env=False)
        self._routes: dict[str, Route] = {}

    @property
    def client(self) -> httpx.AsyncClient:
        return self.client_for(None)

    def client_for(self, proxy_url: str | None) -> httpx.AsyncClient:
        """The client for a provider's ``proxy-url`` (``None`` or ``""``: the default), created
        on first use and kept until ``aclose``."""
        return self.route_for(proxy_url).client

    def route_for(self, proxy_url: str | None) -> Route:
        route = check_proxy_url(proxy_url or "") or self.default_route
        found = self._routes.get(route)
        if found is None:
            found = self._routes[route] = self._open(route)
        return found

    def _open(self, route: str) -> Route:
        direct = StackPoolTransport(
            keepalive_expiry=self.limits.keepalive_expiry or 0.0,
            max_idle_per_origin=self.limits.max_keepalive_connections or 0,
            ssl_context=self.ssl_context,
        )
        mounts: dict[str, httpx.AsyncBaseTransport] = {}
        if route == _ENVIRONMENT:
            for pattern, proxy in self.environment.items():
                mounts[pattern] = direct if proxy is None else self._through(proxy)
        elif route != _DIRECT:
            mounts["all://"] = self._through(route)
        client = httpx.AsyncClient(
            transport=direct, mounts=mounts, timeout=self.timeout, follow_redirects=False, trust_env=False
        )
        # One client serves every user: it must never keep a cookie that a response sets and send
        # it with a later request. Cookies travel only as each client's own header.
        client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        all_direct = all(transport is direct for transport in mounts.values())
        return Route(client, direct if all_direct else None)

    def _through(self, proxy_url: str) -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(
            proxy=proxy_url, verify=self.ssl_context, limits=self.limits, trust_env=False
        )

    async def aclose(self) -> None:
        """Close every client; the next use opens new ones."""
        routes = list(self._routes.values())
        self._routes.clear()
        for route in routes:
            await route.client.aclose()

    async def __aenter__(self) -> SharedClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
