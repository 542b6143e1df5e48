"""``CrossSiteGate``: refuse what a web page in the user's browser sends to ampbridge.

Browsers apply no CORS to WebSockets and send "simple" POSTs (forms, ``text/plain``) without a
preflight, so any page the user opens could spend their keys through ampbridge. Browsers mark
what they send: ``Sec-Fetch-Site`` says whose page started the request, ``Origin`` names that
page. A request that comes from another site is refused with 403 on every route (SPEC §10);
the one exception is a top-level navigation (the user following a link, ``amp login`` opening
its page) to a browser route. Amp's CLI, IDE extensions and SDKs send neither header and pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import refuse
from .trusted_hosts import HostAllowlist, header_values, is_host_name, split_authority, split_host

CROSS_SITE_FETCHES = frozenset({b"cross-site", b"same-site"})
DEFAULT_PORTS = {"http": "80", "https": "443"}
NAVIGATION_METHODS = frozenset({"GET", "HEAD"})
DENIED_MESSAGE = "requests from web pages of other sites are refused"


def _normalise_origin(origin: str) -> str:
    return origin.strip().lower().rstrip("/")


class CrossSiteGate:
    """403 JSON (the same status on a WebSocket handshake) for cross-site browser requests.

    Cross-site: ``Sec-Fetch-Site`` is ``cross-site`` or ``same-site``, or ``Origin`` is present and
    is neither ``http(s)://`` + a host of ``allowed_hosts`` with the port of the request's ``Host``
    nor one of ``allowed_origins`` (``Origin: null`` never is). ``is_browser_route(path)`` names
    the paths a top-level GET/HEAD navigation may still open."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Iterable[str] | HostAllowlist = (),
        allowed_origins: Iterable[str] = (),
        is_browser_route: Callable[[str], bool],
    ) -> None:
        self.app = app
        self.hosts = (
            allowed_hosts if isinstance(allowed_hosts, HostAllowlist) else HostAllowlist(allowed_hosts)
        )
        origins = set()
        for origin in allowed_origins:
            scheme, separator, authority = _normalise_origin(origin).partition("://")
            host = split_host(authority)
            if not separator or scheme not in ("http", "https") or host is None or not is_host_name(host):
                raise ValueError(
                    f"allowed-origins entry {origin!r} is not an origin like https://host[:port]"
                )
            origins.add(f"{scheme}://{authority}")
        self.origins = frozenset(origins)
        self.is_browser_route = is_browser_route

    def is_allowed_origin(self, origin: str, request_port: str | None) -> bool:
        """One of ``allowed_origins``, or an allowed host on the port the request came to.
        The port matters: another local app's page (``http://localhost:3000``) is another
        origin, and browsers send no ``Sec-Fetch-Site`` on WebSocket handshakes."""
        normalised = _normalise_origin(origin)
        if normalised in self.origins:
            return True
        scheme, separator, authority = normalised.partition("://")
        parts = split_authority(authority) if separator and scheme in DEFAULT_PORTS else None
        if parts is None or not self.hosts.allows_name(parts[0]):
            return False
        port = None if parts[1] == DEFAULT_PORTS[scheme] else parts[1]
        return port == request_port

    def is_cross_site(self, scope: Scope) -> bool:
        origins: list[bytes] = []
        for name, value in scope.get("headers", ()):  # one pass: most requests carry neither
            if name == b"sec-fetch-site":
                if value.strip().lower() in CROSS_SITE_FETCHES:
                    return True
            elif name == b"origin":
                origins.append(value)
        if not origins:
            return False
        hosts = header_values(scope, b"host")
        request = split_authority(hosts[0].decode("latin-1")) if len(hosts) == 1 else None
        request_port = None if request is None else request[1]
        return any(not self.is_allowed_origin(value.decode("latin-1"), request_port) for value in origins)

    def is_top_level_navigation(self, scope: Scope) -> bool:
        """A link followed or a page opened in a tab or window (not a frame), by GET or HEAD."""
        if scope["type"] != "http" or scope["method"] not in NAVIGATION_METHODS:
            return False
        modes = header_values(scope, b"sec-fetch-mode")
        destinations = header_values(scope, b"sec-fetch-dest")
        return modes == [b"navigate"] and destinations in ([], [b"document"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] not in ("http", "websocket")
            or not self.is_cross_site(scope)
            or (self.is_top_level_navigation(scope) and self.is_browser_route(scope["path"]))
        ):
            await self.app(scope, receive, send)
            return
        await refuse(scope, receive, send, 403, "cross_site_request", DENIED_MESSAGE)
