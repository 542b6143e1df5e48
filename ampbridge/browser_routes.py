"""The pages Amp's login and web links open in a browser (``/auth``, ``/threads``, ...), SPEC §17.

By default they are answered with a redirect to the same path and query on the Amp upstream's
own origin: the browser logs in there, with its own session, and the upstream sends it on to the
CLI's loopback callback. Nothing of the browser's passes through ampbridge.

``browser-routes: proxy`` serves them through ampbridge instead (for set-ups where the browser
cannot reach the upstream): then the browser's ``Origin``/``Referer`` naming ampbridge are
rewritten to the upstream's origin on the way in, and ``Location``/``Set-Cookie`` naming the
upstream are rewritten to ampbridge's on the way out. The Amp key is never attached (the
upstream proxy for these routes is built without it).
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body, send_json
from .headers import header_value


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of an absolute URL."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


class BrowserRedirect:
    """302 (GET/HEAD) or 307 (other methods) to the same path and query on ``upstream_url``."""

    def __init__(self, upstream_url: str) -> None:
        self.origin = origin_of(upstream_url).encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        query: bytes = scope.get("query_string", b"")
        location = self.origin + raw_path + (b"?" + query if query else b"")
        status = 302 if scope.get("method") in ("GET", "HEAD") else 307
        body = error_body("moved", "This page lives on the Amp upstream's own site")
        await send_json(send, status, body, [(b"location", location), (b"cache-control", b"no-store")])


def own_origin(scope: Scope) -> bytes | None:
    """The origin the browser reached ampbridge at (``http://`` + its Host header)."""
    host = header_value(scope["headers"], b"host")
    return b"http://" + host if host else None


class BrowserProxyRewrite:
    """Around the upstream proxy of browser routes: the browser sees one origin, ampbridge's."""

    def __init__(self, app: ASGIApp, *, upstream_url: str) -> None:
        self.app = app
        self.upstream_origin = origin_of(upstream_url).encode("latin-1")
        self.upstream_host = self.upstream_origin.split(b"://", 1)[1].split(b":", 1)[0]
        self._cookie_domain = re.compile(
            rb";\s*domain=\.?" + re.escape(self.upstream_host) + rb"(?=;|$)", re.I
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ours = own_origin(scope)
        if scope["type"] != "http" or ours is None:
            await self.app(scope, receive, send)
            return
        headers = [(name, self._inbound(name.lower(), value, ours)) for name, value in scope["headers"]]

        async def outbound(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [
                        (name, self._outbound(name, value, ours)) for name, value in message["headers"]
                    ],
                }
            await send(message)

        await self.app({**scope, "headers": headers}, receive, outbound)

    def _inbound(self, name: bytes, value: bytes, ours: bytes) -> bytes:
        if name in (b"origin", b"referer") and (value == ours or value.startswith(ours + b"/")):
            return self.upstream_origin + value[len(ours) :]
        return value

    def _outbound(self, name: bytes, value: bytes, ours: bytes) -> bytes:
        if name == b"location" and (
            value == self.upstream_origin or value.startswith(self.upstream_origin + b"/")
        ):
            return ours + value[len(self.upstream_origin) :]
        if name == b"set-cookie":
            return self._cookie_domain.sub(b"", value)
        return value
